"""Static post-training quantization with PyTorch's FX mode: the original article's flow.

Introduced in notebook 06 and shared with the command line: ``prepare_fx``
with the x86 default qconfig mapping, calibration on a few batches,
``convert_fx``, and TorchScript for saving, exactly the calls the original
script makes (all deprecated in PyTorch 2.14; notebook 09 shows their
replacements).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qtutor.models import save_atomically

__all__ = ["prepare", "calibrate", "convert", "quantize_fx", "save_torchscript", "load_torchscript"]


def _quietly(function, *args, **kwargs):
    """Call a deprecated torch.ao / torch.jit function without repeating its deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*deprecated.*")
        return function(*args, **kwargs)


def prepare(model: torch.nn.Module, example_inputs: tuple, qconfig_mapping=None) -> torch.fx.GraphModule:
    """``prepare_fx`` with the x86 default qconfig mapping (or ``qconfig_mapping``): observers inserted."""
    mapping = get_default_qconfig_mapping("x86") if qconfig_mapping is None else qconfig_mapping
    return _quietly(prepare_fx, model.eval(), mapping, example_inputs)


@torch.no_grad()
def calibrate(prepared: torch.nn.Module, loader: DataLoader, batches: int | None = 20, *,
              progress: bool = True) -> int:
    """Run up to ``batches`` batches (all if None) through the observers; returns the number of images seen."""
    seen = 0
    total = len(loader) if batches is None else min(batches, len(loader))
    for number, (images, _) in enumerate(tqdm(loader, total=total, desc="calibrate", disable=not progress,
                                               leave=False)):
        if batches is not None and number >= batches:
            break
        prepared(images)
        seen += len(images)
    return seen


def convert(prepared: torch.nn.Module) -> torch.nn.Module:
    """``convert_fx``: observers replaced by quantize/dequantize steps and INT8 kernels."""
    return _quietly(convert_fx, prepared)


def quantize_fx(model: torch.nn.Module, loader: DataLoader, example_inputs: tuple, *, batches: int | None = 20,
                qconfig_mapping=None, progress: bool = True) -> torch.nn.Module:
    """The whole static flow: prepare, calibrate on ``batches`` batches of ``loader``, convert."""
    prepared = prepare(model, example_inputs, qconfig_mapping)
    calibrate(prepared, loader, batches, progress=progress)
    return convert(prepared)


def save_torchscript(model: torch.nn.Module, path) -> None:
    """``torch.jit.script(model).save(path)``, as the original saves; written atomically."""
    scripted = _quietly(torch.jit.script, model)
    save_atomically(lambda temporary: _quietly(scripted.save, temporary), Path(path))


def load_torchscript(path) -> torch.jit.ScriptModule:
    """``torch.jit.load(path)``, as the original loads, in eval mode."""
    return _quietly(torch.jit.load, str(path), map_location="cpu").eval()
