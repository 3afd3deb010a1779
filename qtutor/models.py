"""The course's DenseNet-121: built as the original script builds it, trained on the bundled digits, cached.

Introduced for notebook 06 and the command line. No pretrained weights exist
offline, so the course trains its own binary classifier at a reduced input size
(64x64 by default: about a minute on 2 CPU cores) and caches the best
checkpoint as a ``state_dict`` under ``.cache/`` (git-ignored), where later
notebooks and commands find it.
"""

from __future__ import annotations

import copy
import os
import re
import random
import tempfile
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qtutor.data import DIGITS_DIR, InputError, bundled_stats, checked_image_folder, image_transform

__all__ = [
    "CACHE_DIR",
    "COURSE_IMAGE_SIZE",
    "build_densenet",
    "load_checkpoint",
    "save_atomically",
    "evaluate",
    "train",
    "train_epoch",
    "course_checkpoint",
]

CACHE_DIR = Path(os.environ.get("QTUTOR_CACHE", Path(__file__).resolve().parents[1] / ".cache"))
COURSE_IMAGE_SIZE = 64


def build_densenet(classes_number: int = 2) -> torch.nn.Module:
    """``torchvision.models.densenet121(weights=None)`` with a ``classes_number``-way linear classifier."""
    model = torchvision.models.densenet121(weights=None)
    model.classifier = torch.nn.Linear(model.classifier.in_features, classes_number)
    return model


def load_checkpoint(path, classes_number: int = 2) -> torch.nn.Module:
    """A DenseNet-121 with the ``state_dict`` saved at ``path``, in eval mode.

    Loads with ``weights_only=True``, so a pickle that would run code is
    refused. Raises :class:`InputError` for a missing or unreadable file, a
    file that is not a DenseNet-121 state_dict, or a classifier whose size is
    not ``classes_number``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path}: does not exist; expected a DenseNet-121 state_dict (.pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for unsafe or corrupt files
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        reason = (f"it holds code or objects that weights_only loading refuses ({found.group(1)})" if found
                  else f"it is not a readable PyTorch file ({error.__class__.__name__})")
        raise InputError(f"model file {path}: not loaded, {reason}; expected a state_dict saved with "
                         "torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"model file {path}: holds a {type(state).__name__}, not a state_dict of tensors")
    weight = state.get("classifier.weight")
    if weight is not None and weight.shape[0] != classes_number:
        raise InputError(f"model file {path}: its classifier has {weight.shape[0]} outputs but --classes_number is "
                         f"{classes_number}; expected them to match")
    model = build_densenet(classes_number)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise InputError(f"model file {path}: not a DenseNet-121 state_dict ({first[:160]})") from None
    return model.eval()


def save_atomically(save, path) -> None:
    """Call ``save(temporary_path)`` then rename it to ``path``: a failure leaves nothing half-written."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        save(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, *, progress: bool = False) -> float:
    """Top-1 accuracy (0..1) of ``model`` over ``loader``."""
    try:
        model.eval()
    except NotImplementedError:  # an exported module (notebook 09) is switched to eval by qtutor.pt2e.to_eval
        pass
    correct = total = 0
    for images, targets in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        correct += (model(images).argmax(dim=1) == targets).sum().item()
        total += len(targets)
    return correct / total


def train_epoch(model: torch.nn.Module, loader: DataLoader, optimizer, *, description: str = "train",
                progress: bool = True) -> float:
    """One pass of cross-entropy training over ``loader`` (model already in train mode); returns the mean loss."""
    running, seen = 0.0, 0
    bar = tqdm(loader, desc=description, disable=not progress, leave=False)
    for images, targets in bar:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        running += loss.item() * len(targets)
        seen += len(targets)
        bar.set_postfix(loss=f"{running / seen:.3f}")
    return running / seen


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train(dataset_path, *, image_size: int = COURSE_IMAGE_SIZE, epochs: int = 3, batch_size: int = 32,
          learning_rate: float = 1e-3, mean=None, std=None, classes_number: int = 2, seed: int = 0,
          progress: bool = True) -> tuple[dict, dict]:
    """Train a fresh DenseNet-121 on ``dataset_path/train``; keep the epoch with the best ``val`` accuracy.

    Returns ``(state_dict, history)`` where history lists per-epoch loss and
    validation accuracy. Adam, cross-entropy, a fixed seed; ``mean``/``std``
    default to the bundled dataset's.
    """
    if mean is None or std is None:
        mean, std = bundled_stats()
    generator = _seed_everything(seed)
    transform = image_transform(mean, std, image_size)
    train_set, _ = checked_image_folder(Path(dataset_path) / "train", transform)
    val_set, _ = checked_image_folder(Path(dataset_path) / "val", transform)
    if len(train_set.classes) != classes_number:
        raise InputError(f"dataset {dataset_path}: {len(train_set.classes)} classes in train/ but "
                         f"--classes_number is {classes_number}; expected them to match")
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(val_set, batch_size=64)
    model = build_densenet(classes_number)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    history = {"loss": [], "val_accuracy": []}
    best_accuracy, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        loss = train_epoch(model, train_loader, optimizer, description=f"epoch {epoch + 1}/{epochs}",
                           progress=progress)
        accuracy = evaluate(model, val_loader)
        history["loss"].append(loss)
        history["val_accuracy"].append(accuracy)
        if accuracy > best_accuracy:
            best_accuracy, best_state = accuracy, copy.deepcopy(model.state_dict())
    return best_state, history


def course_checkpoint(image_size: int = COURSE_IMAGE_SIZE, *, epochs: int = 3, progress: bool = True) -> Path:
    """The cached checkpoint of the course's DenseNet on the bundled digits, trained first if missing."""
    path = CACHE_DIR / f"densenet121_digits_{image_size}px_{epochs}ep.pth"
    if not path.is_file():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        state, _ = train(DIGITS_DIR, image_size=image_size, epochs=epochs, progress=progress)
        save_atomically(lambda temporary: torch.save(state, temporary), path)
    return path
