"""Static post-training quantization with PyTorch's FX mode: the original article's flow.

Introduced in notebook 06 and shared with the command line: ``prepare_fx``
with the x86 default qconfig mapping, calibration on a few batches,
``convert_fx``, and TorchScript for saving, exactly the calls the original
script makes (all deprecated in PyTorch 2.14; notebook 09 shows their
replacements).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch.ao.quantization import (
    FakeQuantize,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from qtutor.files import save_atomically
from qtutor.session import quietly

__all__ = [
    "prepare",
    "calibrate",
    "convert",
    "quantize_fx",
    "save_torchscript",
    "load_torchscript",
    "x86_mapping",
    "MSEObserver",
    "PerChannelMSEObserver",
    "fake_quant_qconfig",
    "fake_quant_mapping",
    "keep_in_float",
    "float_modules",
    "output_observers",
    "quantized_layers",
    "output_codes",
    "concat_qparams",
    "simulate",
    "observed_activations",
    "rebuild_from_state_dict",
]


def prepare(model: torch.nn.Module, example_inputs: tuple, qconfig_mapping=None) -> torch.fx.GraphModule:
    """``prepare_fx`` with the x86 default qconfig mapping (or ``qconfig_mapping``) on a copy of ``model``."""
    mapping = get_default_qconfig_mapping("x86") if qconfig_mapping is None else qconfig_mapping
    # prepare_fx writes a qconfig attribute into every submodule of the model it is given; a later prepare of
    # the same model would inherit them (a None entry would not clear them), so it gets a copy.
    with quietly():
        return prepare_fx(copy.deepcopy(model).eval(), mapping, example_inputs)


@torch.no_grad()
def calibrate(prepared: torch.nn.Module, loader: DataLoader, batches: int | None = 20, *, progress: bool = True) -> int:
    """Run up to ``batches`` batches (all if None) through the observers; returns the number of images seen."""
    seen = 0
    total = len(loader) if batches is None else min(batches, len(loader))
    for number, (images, _) in enumerate(
        tqdm(loader, total=total, desc="calibrate", disable=not progress, leave=False)
    ):
        if batches is not None and number >= batches:
            break
        prepared(images)
        seen += len(images)
    return seen


def convert(prepared: torch.nn.Module) -> torch.nn.Module:
    """``convert_fx``: observers replaced by quantize/dequantize steps and INT8 kernels."""
    with quietly():
        return convert_fx(prepared)


def quantize_fx(
    model: torch.nn.Module,
    loader: DataLoader,
    example_inputs: tuple,
    *,
    batches: int | None = 20,
    qconfig_mapping=None,
    progress: bool = True,
) -> torch.nn.Module:
    """The whole static flow: prepare, calibrate on ``batches`` batches of ``loader``, convert."""
    prepared = prepare(model, example_inputs, qconfig_mapping)
    calibrate(prepared, loader, batches, progress=progress)
    return convert(prepared)


def save_torchscript(model: torch.nn.Module, path) -> None:
    """``torch.jit.script(model).save(path)``, as the original saves; written atomically."""
    with quietly():
        scripted = torch.jit.script(model)
        save_atomically(scripted.save, Path(path))


def load_torchscript(path) -> torch.jit.ScriptModule:
    """``torch.jit.load(path)``, as the original loads, in eval mode."""
    with quietly():
        return torch.jit.load(str(path), map_location="cpu").eval()


def rebuild_from_state_dict(model: torch.nn.Module, example_inputs: tuple, path, qconfig_mapping=None):
    """An INT8 model re-built from a saved ``state_dict``: prepare and convert ``model`` again, then load.

    Without calibration the fresh observers hold no ranges (PyTorch warns and
    uses defaults); the loaded state_dict then supplies every scale and zero-point.
    """
    with quietly("must run observer before calling calculate_qparams"):  # the empty observers' defaults
        converted = convert(prepare(model, example_inputs, qconfig_mapping))
        converted.load_state_dict(torch.load(path, weights_only=True))
    return converted


def x86_mapping(activation: str = "histogram", *, reduce_range: bool = True) -> QConfigMapping:
    """PyTorch's x86 default qconfig mapping, with its two activation choices made explicit.

    ``get_default_qconfig_mapping("x86")`` observes activations with
    ``HistogramObserver(reduce_range=True)`` (codes 0..127 of quint8) and
    weights with a per-channel symmetric int8 min-max observer. ``activation``
    picks "histogram" or "minmax"; ``reduce_range=False`` gives activations the
    full 0..255.
    """
    observers = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
    if activation not in observers:
        raise ValueError(f"activation={activation!r}: expected one of {list(observers)}")
    weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    qconfig = QConfig(activation=observers[activation].with_args(reduce_range=reduce_range), weight=weight)
    return get_default_qconfig_mapping("x86").set_global(qconfig)


class MSEObserver(MinMaxObserver):
    """A min-max observer that, when asked, clips its range to the one with the least squared error.

    Introduced in notebook 06 for a fair low-bit baseline: it keeps a random
    sample of the values it sees (at most ``sample_size``), and :meth:`search`
    replaces ``[min_val, max_val]`` by notebook 02's MSE-optimal range
    (:func:`qtutor.observers.mse_range`) for the observer's own number of
    levels. PyTorch's ``HistogramObserver`` searches its range for 256 levels
    whatever ``quant_max`` says (``dst_nbins = 2 ** torch.iinfo(dtype).bits``
    in torch/ao/quantization/observer.py), so below 8 bits it clips too little.
    """

    def __init__(self, *args, sample_size: int = 1 << 13, **kwargs):
        super().__init__(*args, **kwargs)
        self.sample_size = sample_size
        self.register_buffer("sample", torch.empty(0))
        self._generator = torch.Generator().manual_seed(0)

    def forward(self, x_orig):
        x = x_orig.detach().flatten().float()
        if x.numel() > self.sample_size:  # a random sample of this batch (drawn with replacement: cheap)
            x = x[torch.randint(x.numel(), (self.sample_size,), generator=self._generator)]
        merged = torch.cat([self.sample, x])
        if merged.numel() > self.sample_size:  # keep a random subset of everything seen so far
            merged = merged[torch.randperm(merged.numel(), generator=self._generator)[: self.sample_size]]
        self.sample = merged
        return super().forward(x_orig)

    @torch.no_grad()
    def search(self) -> None:
        """Set ``min_val``/``max_val`` to the MSE-optimal clipped range of the sample, for this observer's levels."""
        from qtutor.observers import mse_range

        bits = int(self.quant_max - self.quant_min + 1).bit_length() - 1
        low, high = mse_range(self.sample, bits=bits, signed=self.quant_min < 0)
        self.min_val.fill_(min(low.item(), 0.0))
        self.max_val.fill_(max(high.item(), 0.0))


class PerChannelMSEObserver(PerChannelMinMaxObserver):
    """Per-channel symmetric weights whose clipping is chosen per channel for the least squared error.

    :meth:`search` tries fractions of each channel's largest magnitude and
    keeps, channel by channel, the one whose fake quantization has the least MSE.
    """

    def forward(self, x_orig):
        self.last_weight = x_orig.detach()
        return super().forward(x_orig)

    @torch.no_grad()
    def search(self, fractions=None) -> None:
        """Shrink each channel's range to the fraction of its magnitude with the least MSE.

        ``fractions`` (default 0.30, 0.32, ..., 1.00) are tried all at once,
        eight at a time, by broadcasting: the rounding is PyTorch's (round half
        to even of ``w * (1 / scale)``), clamped to the observer's codes.
        """
        fractions = torch.arange(0.30, 1.0001, 0.02) if fractions is None else torch.as_tensor(fractions)
        flat = self.last_weight.float().movedim(self.ch_axis, 0).flatten(1)
        magnitude = torch.maximum(-self.min_val, self.max_val).clamp(min=1e-12)
        half_levels = (self.quant_max - self.quant_min) / 2
        errors = []
        for chunk in fractions.split(8):
            scale = (magnitude[None, :] * chunk[:, None] / half_levels)[:, :, None]  # fractions x channels x 1
            codes = torch.round(flat[None] * torch.reciprocal(scale)).clamp_(self.quant_min, self.quant_max)
            errors.append(((codes * scale - flat[None]) ** 2).mean(dim=2))
        best = fractions[torch.cat(errors).argmin(dim=0)]
        self.min_val.copy_(-magnitude * best)
        self.max_val.copy_(magnitude * best)


LOW_BIT_OBSERVERS = {
    "moving_average": (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver),  # QAT's usual choice
    "minmax": (MinMaxObserver, PerChannelMinMaxObserver),
    "histogram": (HistogramObserver, PerChannelMinMaxObserver),
    "mse": (MSEObserver, PerChannelMSEObserver),
}


def fake_quant_qconfig(weight_bits: int, activation_bits: int | None = None, *, observer: str = "mse") -> QConfig:
    """Fake quantization: unsigned affine activations, signed symmetric per-channel weights, any widths.

    ``observer`` picks how ranges are chosen: "moving_average" (min-max
    smoothed over batches, as QAT uses), "minmax" (the whole calibration
    range), "histogram" (PyTorch's, which searches for 256 levels whatever the
    width), or "mse" (the MSE-optimal clipping of notebook 02, for the actual
    width; weights per channel). ``activation_bits`` defaults to ``weight_bits``.
    """
    activation_bits = weight_bits if activation_bits is None else activation_bits
    if observer not in LOW_BIT_OBSERVERS:
        raise ValueError(f"observer={observer!r}: expected one of {list(LOW_BIT_OBSERVERS)}")
    activation_observer, weight_observer = LOW_BIT_OBSERVERS[observer]
    activation = FakeQuantize.with_args(
        observer=activation_observer,
        quant_min=0,
        quant_max=2**activation_bits - 1,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )
    weight = FakeQuantize.with_args(
        observer=weight_observer,
        quant_min=-(2 ** (weight_bits - 1)) + 1,
        quant_max=2 ** (weight_bits - 1) - 1,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )
    return QConfig(activation=activation, weight=weight)


def fake_quant_mapping(
    weight_bits: int,
    activation_bits: int | None = None,
    *,
    observer: str = "mse",
    only: str | None = None,
    skip: str | None = None,
) -> QConfigMapping:
    """A mapping that fake-quantizes everywhere, ``only`` in one submodule, or everywhere but ``skip``."""
    qconfig = fake_quant_qconfig(weight_bits, activation_bits, observer=observer)
    if only is not None:
        return QConfigMapping().set_global(None).set_module_name(only, qconfig)
    mapping = QConfigMapping().set_global(qconfig)
    return mapping.set_module_name(skip, None) if skip is not None else mapping


def keep_in_float(mapping: QConfigMapping, layers) -> QConfigMapping:
    """``mapping`` with each named module in ``layers`` left in FP32 (``set_module_name(name, None)``).

    The mixed-precision recipe of notebook 06: quantize everything but the
    few layers that hurt most; FX puts the dequantize and quantize steps
    around them. It works for convolutions and linear layers; a fused
    BatchNorm + ReLU between two quantized layers is converted to INT8 all the
    same (measured in notebook 06), so check with :func:`float_modules`.
    """
    for layer in layers:
        mapping.set_module_name(layer, None)
    return mapping


def float_modules(converted: torch.nn.Module, layers) -> list[str]:
    """Which of the named ``layers`` came out of ``convert_fx`` still in floating point (not quantized)."""
    return [name for name in layers if "quantized" not in type(converted.get_submodule(name)).__module__]


def _fix_searched_ranges(prepared: torch.nn.Module) -> None:
    """Let every fake-quantize whose observer can search (the MSE observers) pick its range once, now."""
    for module in prepared.modules():
        if isinstance(module, FakeQuantize) and hasattr(module.activation_post_process, "search"):
            module.activation_post_process.search()
            scale, zero_point = module.activation_post_process.calculate_qparams()
            module.scale.resize_(scale.shape).copy_(scale)
            module.zero_point.resize_(zero_point.shape).copy_(zero_point)


def simulate(
    model: torch.nn.Module, mapping: QConfigMapping, loader: DataLoader, example_inputs: tuple, *, batches: int = 20
) -> torch.nn.Module:
    """Prepare with a fake-quant ``mapping``, calibrate (observers only), fix the ranges, then freeze.

    The result runs in float but every quantized tensor (weights and
    activations) is snapped to its levels, so any bit width can be evaluated
    on any CPU (notebook 06).
    """
    # prepare_qat_fx (not prepare_fx) so that weights are fake-quantized too; eval mode keeps BN statistics fixed.
    with quietly():
        prepared = prepare_qat_fx(copy.deepcopy(model).train(), mapping, example_inputs).eval()
    prepared.apply(disable_fake_quant)
    calibrate(prepared, loader, batches, progress=False)
    _fix_searched_ranges(prepared)
    prepared.apply(disable_observer)
    prepared.apply(enable_fake_quant)
    return prepared.eval()


def output_observers(prepared: torch.fx.GraphModule) -> dict[str, torch.nn.Module]:
    """The observer that watches each layer's output in a prepared model, keyed by layer name."""
    found = {}
    for node in prepared.graph.nodes:
        if node.op == "call_module" and "activation_post_process" not in str(node.target):
            for user in node.users:
                if user.op == "call_module" and str(user.target).startswith("activation_post_process"):
                    found[node.target] = prepared.get_submodule(user.target)
    return found


def quantized_layers(converted: torch.nn.Module, prepared: torch.fx.GraphModule | None = None) -> list[dict]:
    """One row per quantized module of a converted model: output scale and zero-point, code range, weight scales.

    The code range (``quant_min``..``quant_max``, ``codes`` of them) is the
    one the layer's observer in ``prepared`` computed its qparams for (0..127
    with ``reduce_range``); without ``prepared`` it is the whole quint8 range.
    """
    observers = output_observers(prepared) if prepared is not None else {}
    rows = []
    for name, module in converted.named_modules():
        if not hasattr(module, "scale") or not hasattr(module, "zero_point"):
            continue
        observer = observers.get(name)
        low, high = (observer.quant_min, observer.quant_max) if observer is not None else (0, 255)
        row = {
            "layer": name,
            "kind": type(module).__name__,
            "scale": float(module.scale),
            "zero_point": int(module.zero_point),
            "quant_min": low,
            "quant_max": high,
            "codes": high - low + 1,
        }
        weight = getattr(module, "weight", None)
        if callable(weight):
            scales = (
                weight().q_per_channel_scales()
                if weight().qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                else torch.tensor([weight().q_scale()])
            )
            row.update(weight_scale_min=scales.min().item(), weight_scale_max=scales.max().item(), channels=len(scales))
        rows.append(row)
    return rows


@torch.no_grad()
def output_codes(converted: torch.nn.Module, images: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """The integer codes (``int_repr``) each named quantized layer outputs for ``images``, flattened."""
    codes, handles = {}, []
    for name in layers:

        def keep(module, inputs, output, name=name):
            codes[name] = output.int_repr().flatten()

        handles.append(converted.get_submodule(name).register_forward_hook(keep))
    try:
        converted(images)
    finally:
        for handle in handles:
            handle.remove()
    return codes


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
    if node.op in ("call_function", "call_method") and node.args and isinstance(node.args[0], torch.fx.Node):
        return _producer_qparams(converted, node.args[0])  # flatten, reshape, pooling: the codes pass through
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
            rows.append(
                {
                    "node": node.name,
                    "inputs": len(inputs),
                    "distinct_input_qparams": len(set(inputs)),
                    "qparams": inputs[0],
                }
            )
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
