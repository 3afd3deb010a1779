"""Quantization-aware training: fake quantization with a straight-through estimator, and the FX QAT flow.

Introduced in notebook 08. :class:`FakeQuantizeSTE` is the from-scratch
version: forward rounds (with :func:`qtutor.fake_quantize`), backward lets the
gradient through unchanged inside the range and stops it where values were
clamped, as PyTorch's own fake-quantize kernels do. :func:`train_qat` is the
framework version on the DenseNet (``prepare_qat_fx``, fine-tune, evaluate).
"""

from __future__ import annotations

import copy

import torch
from torch.ao.quantization import get_default_qat_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_qat_fx
from torch.utils.data import DataLoader

from qtutor.models import train_epoch
from qtutor.ptq import _quietly, fake_quant_mapping
from qtutor.uniform import fake_quantize, qrange

__all__ = ["FakeQuantizeSTE", "ste_fake_quantize", "qat_mapping", "prepare_qat", "train_qat"]


class FakeQuantizeSTE(torch.autograd.Function):
    """Fake quantization whose backward pass is the clipped straight-through estimator."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, bits, signed):
        qmin, qmax = qrange(bits, signed)
        codes = torch.round(x * torch.reciprocal(torch.as_tensor(scale, dtype=torch.float32))) + zero_point
        ctx.save_for_backward((codes >= qmin) & (codes <= qmax))
        return fake_quantize(x.detach(), scale, zero_point, bits=bits, signed=signed)

    @staticmethod
    def backward(ctx, grad_output):
        (inside,) = ctx.saved_tensors
        return grad_output * inside, None, None, None, None


def ste_fake_quantize(x, scale, zero_point, *, bits: int = 8, signed: bool = False) -> torch.Tensor:
    """:func:`qtutor.fake_quantize` that gradients can flow through (straight-through inside the range)."""
    return FakeQuantizeSTE.apply(x, scale, zero_point, bits, signed)


def qat_mapping(bits: int = 8):
    """PyTorch's x86 QAT defaults at 8 bits; at other widths, fake quantization at ``bits`` everywhere."""
    return get_default_qat_qconfig_mapping("x86") if bits == 8 else fake_quant_mapping(bits)


def prepare_qat(model: torch.nn.Module, example_inputs: tuple, bits: int = 8) -> torch.fx.GraphModule:
    """``prepare_qat_fx`` on a copy of ``model``: fused modules with fake quantization, ready to train."""
    return _quietly(prepare_qat_fx, copy.deepcopy(model).train(), qat_mapping(bits), example_inputs)


def train_qat(prepared: torch.nn.Module, loader: DataLoader, *, epochs: int = 1, learning_rate: float = 1e-4,
              progress: bool = True) -> list[float]:
    """Fine-tune a QAT-prepared model with Adam and cross-entropy; returns the mean loss of each epoch.

    Batch-norm statistics are frozen after the first epoch (a common QAT
    recipe: the ranges settle on stable statistics).
    """
    optimizer = torch.optim.Adam(prepared.parameters(), lr=learning_rate)
    losses = []
    for epoch in range(epochs):
        prepared.train()
        if epoch >= 1:
            prepared.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        losses.append(train_epoch(prepared, loader, optimizer, description=f"QAT epoch {epoch + 1}/{epochs}",
                                  progress=progress))
    prepared.eval()
    return losses
