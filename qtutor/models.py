"""The course's DenseNet-121: built as the original script builds it, trained on the bundled digits, shipped.

First used in notebook 00 (its memory in each format) and 01-04 (real weights
and activations, :func:`layer_outputs`); the model of notebooks 06-11 and the
command line. No pretrained weights can be
downloaded here, so the course trains its own ten-class digit classifier at
64x64 with :class:`Recipe` (about 20 minutes on 2 CPU cores, done once by
``tools/train_course_model.py``) and ships the ``state_dict`` in
``data/models/`` with its training record, so a learner loads it in seconds.
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qtutor.data import COURSE_IMAGE_SIZE, DATA_DIR, bundled, bundled_stats, checked_image_folder, image_transform
from qtutor.errors import InputError
from qtutor.session import quietly, seed_everything

__all__ = [
    "COURSE_MODEL",
    "COURSE_IMAGE_SIZE",
    "Recipe",
    "course_model",
    "training_record",
    "build_densenet",
    "load_checkpoint",
    "evaluate",
    "train",
    "train_epoch",
    "course_checkpoint",
    "layer_outputs",
]

COURSE_MODEL = DATA_DIR / "models" / f"densenet121_digits_{COURSE_IMAGE_SIZE}px.pth"


def build_densenet(classes_number: int = 2) -> torch.nn.Module:
    """``torchvision.models.densenet121(weights=None)`` with a ``classes_number``-way linear classifier."""
    model = torchvision.models.densenet121(weights=None)
    model.classifier = torch.nn.Linear(model.classifier.in_features, classes_number)
    return model


def load_checkpoint(path, classes_number: int = 2, *, builder=build_densenet) -> torch.nn.Module:
    """A DenseNet-121 (or ``builder(classes_number)``) with the ``state_dict`` saved at ``path``, in eval mode.

    Loads with ``weights_only=True``, so a pickle that would run code is
    refused. Raises :class:`InputError` for a missing or unreadable file, a
    file that is not a state_dict of the model ``builder`` makes, or a
    classifier whose size is not ``classes_number``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path}: does not exist; expected a DenseNet-121 state_dict (.pth)")
    try:
        with quietly("Detected pickle protocol"):  # torch's note on files saved with another pickle protocol
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for unsafe or corrupt files
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        reason = (
            f"it holds code or objects that weights_only loading refuses ({found.group(1)})"
            if found
            else f"it is not a readable PyTorch file ({error.__class__.__name__})"
        )
        raise InputError(
            f"model file {path}: not loaded, {reason}; expected a state_dict saved with "
            "torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"model file {path}: holds a {type(state).__name__}, not a state_dict of tensors")
    weight = state.get("classifier.weight")
    if weight is not None and weight.shape[0] != classes_number:
        raise InputError(
            f"model file {path}: its classifier has {weight.shape[0]} outputs but "
            f"classes_number={classes_number}; expected them to match"
        )
    model = builder(classes_number)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        kind = "DenseNet-121" if builder is build_densenet else type(model).__name__
        raise InputError(f"model file {path}: not a {kind} state_dict ({first[:160]})") from None
    return model.eval()


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


def train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer,
    *,
    schedule=None,
    description: str = "train",
    progress: bool = True,
) -> float:
    """One pass of cross-entropy training over ``loader`` (model already in train mode); returns the mean loss.

    ``schedule``, a learning-rate scheduler, steps after every batch.
    """
    running, seen = 0.0, 0
    bar = tqdm(loader, desc=description, disable=not progress, leave=False)
    for images, targets in bar:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        running += loss.item() * len(targets)
        seen += len(targets)
        bar.set_postfix(loss=f"{running / seen:.3f}")
    return running / seen


@dataclass(frozen=True)
class Recipe:
    """How the course model is trained: AdamW with a one-cycle (cosine) learning rate, light augmentation.

    ``data/models/README.md`` records the recipe the shipped checkpoint was
    trained with and the command that reproduces it.
    """

    epochs: int = 20
    batch_size: int = 64
    peak_learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.25  # share of the steps spent ramping up to the peak
    augment: bool = True  # data.AUGMENTATION on training images
    seed: int = 0


@torch.no_grad()
def _validate(model: torch.nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``loader``."""
    model.eval()
    loss = correct = total = 0
    for images, targets in loader:
        logits = model(images)
        loss += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        correct += (logits.argmax(1) == targets).sum().item()
        total += len(targets)
    return loss / total, correct / total


def train(
    dataset_path,
    *,
    image_size: int = COURSE_IMAGE_SIZE,
    recipe: Recipe = Recipe(),
    mean=None,
    std=None,
    classes_number: int = 10,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Train a fresh DenseNet-121 on ``dataset_path/train`` with ``recipe``; return the last epoch's weights.

    Returns ``(state_dict, history)``: history holds, per epoch, the learning
    rate at its end, the training loss, the validation loss and accuracy, and
    the seconds it took. The last epoch is kept (the schedule has annealed the
    learning rate to almost zero by then); ``val`` is only watched, never used
    to pick an epoch. ``mean``/``std`` default to the bundled dataset's.
    """
    if mean is None or std is None:
        mean, std = bundled_stats()
    generator = seed_everything(recipe.seed)
    train_set, _ = checked_image_folder(
        Path(dataset_path) / "train", image_transform(mean, std, image_size, augment=recipe.augment)
    )
    val_set, _ = checked_image_folder(Path(dataset_path) / "val", image_transform(mean, std, image_size))
    if len(train_set.classes) != classes_number:
        raise InputError(
            f"dataset {dataset_path}: {len(train_set.classes)} classes in train/ but "
            f"classes_number={classes_number}; expected them to match"
        )
    train_loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True, generator=generator)
    val_loader = DataLoader(val_set, batch_size=100)
    model = build_densenet(classes_number)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.peak_learning_rate, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=recipe.peak_learning_rate,
        total_steps=recipe.epochs * len(train_loader),
        pct_start=recipe.warmup_fraction,
    )
    history = {key: [] for key in ("learning_rate", "train_loss", "val_loss", "val_accuracy", "seconds")}
    for epoch in range(recipe.epochs):
        start = time.perf_counter()
        model.train()
        loss = train_epoch(
            model,
            train_loader,
            optimizer,
            schedule=schedule,
            description=f"epoch {epoch + 1}/{recipe.epochs}",
            progress=progress,
        )
        val_loss, val_accuracy = _validate(model, val_loader)
        for key, value in zip(
            history, (schedule.get_last_lr()[0], loss, val_loss, val_accuracy, time.perf_counter() - start), strict=True
        ):
            history[key].append(value)
        if progress:
            print(
                f"epoch {epoch + 1}/{recipe.epochs}: train loss {loss:.4f}, val loss {val_loss:.4f}, "
                f"val accuracy {val_accuracy:.4f}",
                flush=True,
            )
    return model.eval().state_dict(), history


def course_checkpoint() -> Path:
    """The shipped checkpoint of the course's DenseNet-121 (``data/models/``)."""
    if not bundled(COURSE_MODEL).is_file():
        raise FileNotFoundError(
            f"{COURSE_MODEL}: the course model is missing; it ships with the repository "
            "(git checkout data/models), or retrain it: python tools/train_course_model.py"
        )
    return COURSE_MODEL


def course_model() -> torch.nn.Module:
    """The course's trained ten-class DenseNet-121, FP32, in eval mode."""
    return load_checkpoint(course_checkpoint(), classes_number=10)


def layer_outputs(
    model: torch.nn.Module, names, inputs: torch.Tensor, *, float64: bool = False
) -> dict[str, torch.Tensor]:
    """What the submodules ``names`` of ``model`` output for ``inputs``: ``{name: tensor}``, without gradients.

    Forward hooks, removed again before returning. Each output is copied the moment its module returns it:
    torchvision's DenseNet runs its ReLUs in place, so a batch-norm's output (negative values included) would
    otherwise be overwritten by the ReLU that follows.

    With ``float64``, a float64 copy of the model computes them and they are rounded back to float32: the same
    bits on every machine and at any thread count. A float32 convolution sums in an order that depends on both,
    so its outputs differ in their last bits from one setup to the next. Introduced in notebook 01, where the
    concept notebooks start taking real activations from the course model.
    """
    names = [names] if isinstance(names, str) else list(names)
    if float64:
        outputs = layer_outputs(copy.deepcopy(model).double(), names, inputs.double())
        return {name: output.float() for name, output in outputs.items()}
    modules = dict(model.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise ValueError(
            f"no submodule named {missing[0]!r} in {type(model).__name__}: expected a name from "
            "model.named_modules(), such as 'features.denseblock1.denselayer1.norm1'"
        )
    outputs, handles = {}, []
    for name in names:
        handles.append(
            modules[name].register_forward_hook(
                lambda _module, _inputs, output, name=name: outputs.__setitem__(name, output.detach().clone())
            )
        )
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: outputs[name] for name in names}


def training_record() -> dict:
    """How the shipped model was trained: recipe, per-epoch curve, test accuracy, SHA-256 (its ``.json`` file)."""
    return json.loads(bundled(COURSE_MODEL.with_suffix(".json")).read_text())
