"""Static post-training quantization with PyTorch's FX mode: the original article's flow.

Introduced in notebook 06 and shared with the command line: ``prepare_fx``
with the x86 default qconfig mapping, calibration on a few batches,
``convert_fx``, and TorchScript for saving, exactly the calls the original
script makes (all deprecated in PyTorch 2.14; notebook 09 shows their
replacements).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch.ao.quantization import (FakeQuantize, HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
                                   MovingAveragePerChannelMinMaxObserver, PerChannelMinMaxObserver, QConfig,
                                   QConfigMapping, disable_fake_quant, disable_observer, enable_fake_quant,
                                   get_default_qconfig_mapping)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qtutor.models import save_atomically

__all__ = [
    "prepare",
    "calibrate",
    "convert",
    "quantize_fx",
    "save_torchscript",
    "load_torchscript",
    "observer_mapping",
    "fake_quant_mapping",
    "quantized_layers",
    "concat_qparams",
    "simulate",
    "observed_activations",
    "rebuild_from_state_dict",
]


def _quietly(function, *args, **kwargs):
    """Call a deprecated torch.ao / torch.jit function without repeating its deprecation warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecations, and TorchScript's notes on type annotations
        return function(*args, **kwargs)


def prepare(model: torch.nn.Module, example_inputs: tuple, qconfig_mapping=None) -> torch.fx.GraphModule:
    """``prepare_fx`` with the x86 default qconfig mapping (or ``qconfig_mapping``) on a copy of ``model``."""
    mapping = get_default_qconfig_mapping("x86") if qconfig_mapping is None else qconfig_mapping
    # prepare_fx writes a qconfig attribute into every submodule of the model it is given; a later prepare of
    # the same model would inherit them (a None entry would not clear them), so it gets a copy.
    return _quietly(prepare_fx, copy.deepcopy(model).eval(), mapping, example_inputs)


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


def rebuild_from_state_dict(model: torch.nn.Module, example_inputs: tuple, path, qconfig_mapping=None):
    """An INT8 model re-built from a saved ``state_dict``: prepare and convert ``model`` again, then load.

    Without calibration the fresh observers hold no ranges (PyTorch warns and
    uses defaults); the loaded state_dict then supplies every scale and zero-point.
    """
    converted = _quietly(lambda: convert(prepare(model, example_inputs, qconfig_mapping)))
    converted.load_state_dict(_quietly(torch.load, path, weights_only=True))
    return converted


def observer_mapping(activation: str = "histogram") -> QConfigMapping:
    """The x86 defaults (per-channel int8 weights) with the activation observer chosen: "minmax" or "histogram"."""
    observers = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
    if activation not in observers:
        raise ValueError(f"activation={activation!r}: expected one of {list(observers)}")
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    qconfig = QConfig(activation=observers[activation].with_args(reduce_range=True), weight=weight)
    return get_default_qconfig_mapping("x86").set_global(qconfig)


def fake_quant_qconfig(bits: int) -> QConfig:
    """Fake quantization at ``bits``: unsigned affine activations, signed symmetric per-channel weights."""
    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=2**bits - 1,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver,
                                    quant_min=-(2 ** (bits - 1)) + 1, quant_max=2 ** (bits - 1) - 1,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=activation, weight=weight)


def fake_quant_mapping(bits: int, *, only: str | None = None, skip: str | None = None) -> QConfigMapping:
    """A mapping that fake-quantizes at ``bits``: everywhere, ``only`` in one submodule, or everywhere but ``skip``."""
    qconfig = fake_quant_qconfig(bits)
    if only is not None:
        return QConfigMapping().set_global(None).set_module_name(only, qconfig)
    mapping = QConfigMapping().set_global(qconfig)
    return mapping.set_module_name(skip, None) if skip is not None else mapping


def simulate(model: torch.nn.Module, mapping: QConfigMapping, loader: DataLoader, example_inputs: tuple, *,
             batches: int = 20) -> torch.nn.Module:
    """Prepare with a fake-quant ``mapping``, calibrate (observers only), then freeze: a float model that rounds.

    The result runs in float but every quantized tensor (weights and
    activations) is snapped to its levels, so any bit width can be evaluated
    on any CPU (notebook 06).
    """
    # prepare_qat_fx (not prepare_fx) so that weights are fake-quantized too; eval mode keeps BN statistics fixed.
    prepared = _quietly(prepare_qat_fx, copy.deepcopy(model).train(), mapping, example_inputs).eval()
    prepared.apply(disable_fake_quant)
    calibrate(prepared, loader, batches, progress=False)
    prepared.apply(disable_observer)
    prepared.apply(enable_fake_quant)
    return prepared.eval()


def quantized_layers(converted: torch.nn.Module) -> list[dict]:
    """One row per quantized module of a converted model: output scale and zero-point, weight scales."""
    rows = []
    for name, module in converted.named_modules():
        if not hasattr(module, "scale") or not hasattr(module, "zero_point"):
            continue
        row = {"layer": name, "kind": type(module).__name__, "scale": float(module.scale),
               "zero_point": int(module.zero_point)}
        weight = getattr(module, "weight", None)
        if callable(weight):
            scales = weight().q_per_channel_scales() if weight().qscheme() in (
                torch.per_channel_affine, torch.per_channel_symmetric) else torch.tensor([weight().q_scale()])
            row.update(weight_scale_min=scales.min().item(), weight_scale_max=scales.max().item(),
                       channels=len(scales))
        rows.append(row)
    return rows


def _producer_qparams(converted, node):
    """(scale, zero_point) of the quantized tensor a graph node produces."""
    if node.op == "call_module":
        module = converted.get_submodule(node.target)
        if hasattr(module, "scale"):
            return float(module.scale), int(module.zero_point)
        return _producer_qparams(converted, node.args[0])
    if node.op == "call_function" and node.target == torch.quantize_per_tensor:
        scale = getattr(converted, node.args[1].target)
        zero_point = getattr(converted, node.args[2].target)
        return float(scale), int(zero_point)
    if node.op == "call_function" and node.target == torch.cat:
        return _producer_qparams(converted, node.args[0][0])
    raise ValueError(f"cannot trace qparams through {node.op} {node.target}")


def concat_qparams(converted: torch.fx.GraphModule) -> list[dict]:
    """For every ``torch.cat`` in a converted graph: the qparams of each input and of the output's consumer.

    A quantized concatenation copies integer codes side by side, so all its
    inputs must share one scale and zero-point; reading them out shows it.
    """
    rows = []
    for node in converted.graph.nodes:
        if node.op == "call_function" and node.target == torch.cat:
            inputs = [_producer_qparams(converted, arg) for arg in node.args[0]]
            rows.append({"node": node.name, "inputs": len(inputs),
                         "distinct_input_qparams": len(set(inputs)), "qparams": inputs[0]})
    return rows


class _Recorder(torch.fx.Interpreter):
    """Runs a graph node by node and keeps the output of every ``call_module`` node that is a layer."""

    def __init__(self, module):
        super().__init__(module)
        self.outputs: dict[str, torch.Tensor] = {}

    def run_node(self, node):
        result = super().run_node(node)
        if node.op == "call_module" and "activation_post_process" not in str(node.target):
            if isinstance(result, torch.Tensor):
                self.outputs[node.target] = result.detach()
        return result


@torch.no_grad()
def observed_activations(prepared: torch.fx.GraphModule, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The float output of every layer of a prepared (observed) model for ``images``, keyed by layer name.

    These are the tensors the converted model quantizes with that layer's
    ``scale`` and ``zero_point`` (notebook 06's layer inspector). It runs a
    copy, so the observers' calibrated ranges do not move.
    """
    recorder = _Recorder(copy.deepcopy(prepared))
    recorder.run(images)
    return recorder.outputs
