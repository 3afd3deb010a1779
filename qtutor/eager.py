"""Eager-mode quantization of the DenseNet: QuantStub/DeQuantStub, module fusion, FloatFunctional (notebook 09).

Eager mode quantizes modules, not operations, so the model must be written for
it: a ``QuantStub`` where float becomes INT8, a ``DeQuantStub`` where it turns
back, fusable Conv/BN/ReLU modules named for ``fuse_modules``, and
concatenations done by a ``FloatFunctional`` (which owns the output's
quantization parameters). :func:`quantizable_densenet` rewires torchvision's
DenseNet-121 that way, sharing its weights.
"""

from __future__ import annotations

import copy
import types

import torch
from torch.ao.nn.quantized import FloatFunctional
from torch.ao.quantization import DeQuantStub, QuantStub, fuse_modules, get_default_qconfig

from qtutor.session import quietly

__all__ = ["quantizable_densenet", "fuse", "quantize_eager"]


def _dense_layer_forward(self, inputs):
    features = self.cat.cat(inputs if isinstance(inputs, list) else [inputs], 1)
    output = self.relu1(self.norm1(features))
    output = self.relu2(self.norm2(self.conv1(output)))
    return self.conv2(output)


def _dense_block_forward(self, features):
    collected = [features]
    for name, layer in self.items():
        if name != "cat":  # the block is a ModuleDict: its FloatFunctional is one of its items
            collected.append(layer(collected))
    return self.cat.cat(collected, 1)


class QuantizableDenseNet(torch.nn.Module):
    """DenseNet-121 with stubs at both ends and a ReLU module where torchvision calls ``F.relu``."""

    def __init__(self, densenet):
        super().__init__()
        self.quant, self.dequant = QuantStub(), DeQuantStub()
        self.features, self.classifier = densenet.features, densenet.classifier
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.relu(self.features(self.quant(x)))
        return self.dequant(self.classifier(torch.flatten(self.pool(x), 1)))


def quantizable_densenet(densenet: torch.nn.Module) -> QuantizableDenseNet:
    """A copy of a torchvision DenseNet rewired for eager-mode quantization (same weights, same outputs)."""
    densenet = copy.deepcopy(densenet).eval()
    for module in densenet.modules():
        kind = type(module).__name__
        if kind == "_DenseLayer":
            module.cat = FloatFunctional()
            module.forward = types.MethodType(_dense_layer_forward, module)
        elif kind == "_DenseBlock":
            module.cat = FloatFunctional()
            module.forward = types.MethodType(_dense_block_forward, module)
    return QuantizableDenseNet(densenet).eval()


def fuse(model: QuantizableDenseNet) -> QuantizableDenseNet:
    """Fuse conv0+norm0+relu0, each dense layer's conv1+norm2+relu2 and norm1+relu1, each transition's norm+relu."""
    groups = [["features.conv0", "features.norm0", "features.relu0"]]
    for name, module in model.named_modules():
        kind = type(module).__name__
        if kind == "_DenseLayer":
            groups += [[f"{name}.conv1", f"{name}.norm2", f"{name}.relu2"], [f"{name}.norm1", f"{name}.relu1"]]
        elif kind == "_Transition":
            groups.append([f"{name}.norm", f"{name}.relu"])
    return fuse_modules(model, groups)


def quantize_eager(densenet: torch.nn.Module, loader, *, batches: int = 20) -> torch.nn.Module:
    """The eager flow: rewire, fuse, set the x86 qconfig, ``prepare``, calibrate, ``convert``."""
    from qtutor.ptq import calibrate

    model = fuse(quantizable_densenet(densenet))
    model.qconfig = get_default_qconfig("x86")
    with quietly():
        prepared = torch.ao.quantization.prepare(model)
        calibrate(prepared, loader, batches, progress=False)
        return torch.ao.quantization.convert(prepared)
