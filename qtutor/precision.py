"""Half precision and mixed precision on a CPU: FP16/BF16 models, autocast, and what runs in which type.

Introduced in notebook 07 and used by ``benchmarks/inference.py``. A model cast
with ``.to(torch.bfloat16)`` wants its inputs in that type too
(:class:`CastInputs`); autocast keeps FP32 weights and picks a type per
operation (:class:`Autocast`), and :func:`dtypes_under_autocast` records which
type each ATen operation really ran in, rather than quoting a list.
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["CastInputs", "Autocast", "feed_forward", "dtypes_under_autocast"]


class CastInputs(torch.nn.Module):
    """Runs ``module`` (already converted to ``dtype``) on inputs cast to ``dtype``; returns float32 outputs."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.to(self.dtype)).float()


class Autocast(torch.nn.Module):
    """Runs an FP32 ``module`` under ``torch.autocast("cpu", dtype)``; returns float32 outputs."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.module, self.dtype = module, dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype):
            return self.module(images).float()


def feed_forward(width: int, expansion: int = 4) -> torch.nn.Sequential:
    """A transformer's feed-forward block: ``Linear(d, 4d)``, GELU, ``Linear(4d, d)`` (``8 d^2`` weights)."""
    return torch.nn.Sequential(
        torch.nn.Linear(width, expansion * width), torch.nn.GELU(), torch.nn.Linear(expansion * width, width)
    )


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _RecordDtypes(TorchDispatchMode):
    """Counts every ATen operation by (name, input floating types, output type)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        first = result[0] if isinstance(result, (tuple, list)) and result else result
        if isinstance(first, torch.Tensor) and first.is_floating_point():
            inputs = sorted(
                {
                    _dtype_name(a.dtype)
                    for a in tree_leaves(args)
                    if isinstance(a, torch.Tensor) and a.is_floating_point()
                }
            )
            self.counts[(func.overloadpacket.__name__, " + ".join(inputs) or "-", _dtype_name(first.dtype))] += 1
        return result


@torch.no_grad()
def dtypes_under_autocast(
    model: torch.nn.Module,
    images: torch.Tensor,
    dtype: torch.dtype = torch.bfloat16,
    *,
    then=lambda logits: torch.softmax(logits, dim=1),
) -> list[dict]:
    """Which type each ATen operation of ``model(images)`` (then ``then`` of its output) ran in under autocast.

    One row per (operation, input types, output type) with how many times it
    ran; only operations with a floating-point result are listed.
    """
    recorder = _RecordDtypes()
    with torch.autocast("cpu", dtype=dtype), recorder:
        then(model(images))
    return [
        {"operation": name, "inputs": inputs, "output": output, "calls": count}
        for (name, inputs, output), count in sorted(recorder.counts.items())
    ]
