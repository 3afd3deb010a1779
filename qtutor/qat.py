"""Quantization-aware training: fake quantization with a straight-through estimator, and the FX QAT flow.

Introduced in notebook 08. :class:`FakeQuantizeSTE` is the from-scratch
version: forward rounds (with :func:`qtutor.fake_quantize`), backward lets the
gradient through unchanged inside the range and stops it where values were
clamped, as PyTorch's own fake-quantize kernels do. :func:`prepare_qat` and
:func:`fine_tune` are the framework version on the DenseNet (``prepare_qat_fx``,
then the same fine-tuning loop the FP32 control gets).
"""

from __future__ import annotations

import copy

import torch
from torch.ao.quantization import get_default_qat_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_qat_fx
from torch.utils.data import DataLoader

from qtutor.models import train_epoch
from qtutor.ptq import fake_quant_mapping
from qtutor.session import quietly
from qtutor.uniform import fake_quantize, qrange

__all__ = ["FakeQuantizeSTE", "ste_fake_quantize", "qat_mapping", "prepare_qat", "fine_tune"]


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


def qat_mapping(bits: int = 8, activation_bits: int | None = None):
    """PyTorch's x86 QAT defaults at 8 bits; at other widths, fake quantization at those widths everywhere.

    Below 8 bits the ranges follow a moving average of each batch's min and
    max, as PyTorch's own QAT observers do, so they track the weights as they train.
    """
    activation_bits = bits if activation_bits is None else activation_bits
    if bits == activation_bits == 8:
        return get_default_qat_qconfig_mapping("x86")
    return fake_quant_mapping(bits, activation_bits, observer="moving_average")


def prepare_qat(
    model: torch.nn.Module, example_inputs: tuple, bits: int = 8, activation_bits: int | None = None
) -> torch.fx.GraphModule:
    """``prepare_qat_fx`` on a copy of ``model``: fused modules with fake quantization, ready to train."""
    with quietly():
        return prepare_qat_fx(copy.deepcopy(model).train(), qat_mapping(bits, activation_bits), example_inputs)


def fine_tune(
    model: torch.nn.Module, loader: DataLoader, *, epochs: int = 1, learning_rate: float = 1e-4, progress: bool = False
) -> list[float]:
    """Fine-tune ``model`` in place (a QAT-prepared one, or a plain FP32 model) with Adam and cross-entropy.

    The same loop serves QAT and its control (FP32 fine-tuning with the same
    effort), so that a comparison measures quantization in the loop and not
    extra training. From the second epoch on, QAT modules freeze their
    batch-norm statistics (a common recipe: the ranges settle on stable
    statistics); plain batch norms are not affected. Leaves the model in eval
    mode and returns each epoch's mean training loss.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    losses = []
    for epoch in range(epochs):
        model.train()
        if epoch >= 1:
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        losses.append(
            train_epoch(
                model, loader, optimizer, description=f"fine-tune epoch {epoch + 1}/{epochs}", progress=progress
            )
        )
    model.eval()
    return losses
