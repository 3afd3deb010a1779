"""Where the INT8 model goes next: ONNX export, ONNX Runtime static QDQ, OpenVINO with NNCF (notebook 10).

Introduced in notebook 10 and shared with ``qtutor --task export`` (and ``--task predict`` /
``--task evaluate`` on ``.onnx`` files) and ``benchmarks/inference.py``. One exported ONNX graph feeds
both runtimes: ONNX Runtime runs it in FP32 or quantized by its own ``quantize_static`` (QDQ format),
and OpenVINO reads the same file in FP32 or quantized by NNCF, so two paths differ only in runtime and
quantizer. Every runtime is wrapped to be called like a torch model (a float batch in, logits out), so
``qtutor.metrics.predict`` and ``time_in_turns`` work on it unchanged; each runs with torch's thread
count (``torch.get_num_threads()``) unless told otherwise. The last section reads one layer's scale and
zero-point out of each form of the model: the FX model, the ONNX QDQ graph and the OpenVINO model.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import io
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from qtutor.errors import InputError
from qtutor.files import save_atomically

__all__ = [
    "PACKAGES",
    "require",
    "export_onnx",
    "calibration_batches",
    "quantize_onnx",
    "OnnxRuntimeModel",
    "load_onnx",
    "optimized_op_types",
    "profile_op_types",
    "to_openvino",
    "quantize_openvino",
    "save_openvino",
    "openvino_files",
    "OpenVinoModel",
    "default_precision",
    "runtime_op_types",
    "QParams",
    "LayerQParams",
    "fx_qparams",
    "onnx_qparams",
    "openvino_qparams",
]

# The runtimes and their tools, pinned in pyproject.toml and environment.yml (checked beside torch 2.14.1).
PACKAGES = {"onnx": "1.23.2", "onnxscript": "0.7.2", "onnxruntime": "1.32.0", "openvino": "2026.4.1", "nncf": "3.4.0"}


def require(*packages: str) -> None:
    """Raise :class:`InputError` naming the install command if any of ``packages`` (default: all) is missing."""
    missing = [name for name in packages or PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pins = " ".join(f"{name}=={PACKAGES[name]}" for name in missing)
        raise InputError(
            f"{', '.join(missing)} not installed; the deployment runtimes need them: "
            f"pip install {pins} (or run `make lab`, which installs the course's pinned environment)"
        )


# ONNX export ------------------------------------------------------------------------------------------------


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path) -> None:
    """Export ``model`` to one self-contained ONNX file at ``path`` (weights inside), with a dynamic batch size.

    ``torch.onnx.export`` with the default ``dynamo=True``: ``torch.export`` captures the program, which
    is translated to ONNX and optimized (each BatchNorm that follows a convolution is folded into it).
    ``example`` is a batch of at least 2 images (``torch.export`` specializes a batch of 1). Written atomically.
    """
    require("onnx", "onnxscript")
    if example.ndim != 4 or len(example) < 2:
        raise ValueError(f"example of shape {tuple(example.shape)}: expected a batch of at least 2 images (N, C, H, W)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, verbose=False, dynamic_shapes=({0: torch.export.Dim("batch")},)
        )
    save_atomically(lambda temporary: program.save(temporary, external_data=False), Path(path))


# ONNX Runtime -----------------------------------------------------------------------------------------------


def calibration_batches(loader, batches: int | None = 20) -> list[torch.Tensor]:
    """The first ``batches`` image batches of ``loader`` (all if None): the one calibration set every quantizer gets."""
    taken = []
    for number, (images, _) in enumerate(loader):
        if batches is not None and number >= batches:
            break
        taken.append(images)
    return taken


def _reader(batches: list[torch.Tensor], input_name: str):
    """An ONNX Runtime ``CalibrationDataReader`` that hands out ``batches`` one by one, then None."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(batches)

        def get_next(self):
            images = next(self.remaining, None)
            return None if images is None else {input_name: images.numpy()}

    return Reader()


def quantize_onnx(
    fp32_path, int8_path, batches: list[torch.Tensor], *, per_channel: bool = True, activations: str = "uint8"
) -> None:
    """ONNX Runtime's ``quantize_static``: QDQ format, min-max calibration on ``batches``; written atomically.

    Weights are signed INT8, symmetric (codes -127..127), per output channel by default; activations are
    ``activations`` ("uint8", affine 0..255, what ``quantize_static``'s docstring advises for x86, or
    "int8", its default) with each tensor's range the minimum and maximum over all calibration images.
    """
    require("onnx", "onnxruntime")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    if activations not in types:
        raise ValueError(f"activations={activations!r}: expected one of {list(types)}")
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    def write(temporary):
        # quantize_static warns through the root logger that the model was not pre-processed; for this graph
        # ONNX Runtime's pre-processing (quant_pre_process) changes no node, so the warning is left out.
        logging.disable(logging.WARNING)
        try:
            quantize_static(
                str(fp32_path),
                temporary,
                _reader(batches, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=types[activations],
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            logging.disable(logging.NOTSET)

    save_atomically(write, Path(int8_path))


def _session_options(threads: int | None, config: dict | None = None):
    """Session options: ``threads`` intra-op threads (torch's count by default), no spinning, errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # By default the worker threads keep spinning after each call, and take the CPU from whatever runs next.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.log_severity_level = 3
    return options


class OnnxRuntimeModel:
    """An ONNX model in an ONNX Runtime CPU session, called like a torch model: ``model(images) -> logits``.

    ``config`` adds session config entries (such as ``{"session.qdqisint8allowed": "1"}``).
    """

    def __init__(self, path, *, threads: int | None = None, config: dict | None = None):
        require("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(self.path), _session_options(threads, config), providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0]

    @property
    def image_size(self) -> int | None:
        """The height the model was exported for (None if it takes any)."""
        height = self.input.shape[2]
        return height if isinstance(height, int) else None

    def eval(self) -> OnnxRuntimeModel:
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.session.run(None, {self.input.name: images.detach().float().contiguous().numpy()})
        return torch.from_numpy(outputs[0])


def load_onnx(path, *, threads: int | None = None) -> OnnxRuntimeModel:
    """:class:`OnnxRuntimeModel` for a file the command line was given; :class:`InputError` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file {path}: does not exist; expected an .onnx model (qtutor --task export writes one)")
    require("onnxruntime")
    try:
        return OnnxRuntimeModel(path, threads=threads)
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise InputError(
            f"ONNX file {path}: not an ONNX model ONNX Runtime can load ({error.__class__.__name__}); "
            "expected an .onnx model (qtutor --task export writes one)"
        ) from None


def optimized_op_types(path, *, config: dict | None = None) -> collections.Counter:
    """How many nodes of each type ONNX Runtime runs after its graph optimizations (what was fused, what was not)."""
    require("onnx", "onnxruntime")
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = _session_options(1, config)
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    return collections.Counter(node.op_type for node in graph.node)


def profile_op_types(path, images: torch.Tensor, *, runs: int = 5, threads: int | None = None) -> dict[str, float]:
    """Share of ONNX Runtime's kernel time spent in each node type over ``runs`` calls, largest first.

    Uses ONNX Runtime's own profiler (``enable_profiling``): one event per node per call, with the node's
    type (``op_name``) and duration.
    """
    require("onnxruntime")
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = _session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: images.numpy()}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            durations[event["args"]["op_name"]] += event["dur"]
    total = sum(durations.values())
    return {kind: duration / total for kind, duration in durations.most_common()}


# OpenVINO and NNCF ------------------------------------------------------------------------------------------


def to_openvino(onnx_path):
    """The OpenVINO model (``ov.Model``) of an ONNX file: ``openvino.convert_model``."""
    require("openvino")
    import openvino as ov

    return ov.convert_model(str(onnx_path))


@contextlib.contextmanager
def _quiet_nncf():
    """Silence NNCF's log lines and progress bars (drawn by rich on its global console) while the block runs."""
    import rich
    import rich.console

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # a CUDA note when nncf imports torch
    import nncf

    console = rich.get_console()
    # rich has no public way to swap its global console; in Jupyter it would draw into the notebook unless told not to
    rich._console = rich.console.Console(file=io.StringIO(), force_jupyter=False)
    level = logging.getLogger("nncf").level
    nncf.set_log_level(logging.ERROR)
    try:
        yield nncf
    finally:
        rich._console = console
        nncf.set_log_level(level or logging.INFO)


def quantize_openvino(model, batches: list[torch.Tensor]):
    """NNCF's ``nncf.quantize`` on an OpenVINO model, calibrated on every image of ``batches``, one at a time.

    NNCF's defaults for a CNN (the "performance" preset): weights signed, symmetric, per output channel;
    activations symmetric per tensor (unsigned where the tensor cannot be negative), each range the mean
    over the calibration images of each image's minimum and maximum; then its fast bias correction.
    """
    require("openvino", "nncf")
    images = [image[None].numpy() for batch in batches for image in batch]
    with _quiet_nncf() as nncf:
        return nncf.quantize(model, nncf.Dataset(images), subset_size=len(images))


def save_openvino(model, path) -> None:
    """Write ``path`` (.xml, the graph) and its .bin (the weights), keeping FP32 weights in FP32.

    ``openvino.save_model`` would otherwise store FP32 weights as FP16 (``compress_to_fp16=True`` by default).
    """
    require("openvino")
    import openvino as ov

    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"path {path}: expected an .xml file name (OpenVINO writes the graph there, weights beside)")
    ov.save_model(model, str(path), compress_to_fp16=False)


def openvino_files(path) -> list[Path]:
    """The two files of a saved OpenVINO model: the .xml graph and the .bin weights."""
    path = Path(path)
    return [path, path.with_suffix(".bin")]


def default_precision() -> str:
    """The precision OpenVINO's CPU plugin computes a float model in unless told otherwise (bf16 where supported)."""
    require("openvino")
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


class OpenVinoModel:
    """An OpenVINO model compiled for the CPU, called like a torch model: ``model(images) -> logits``.

    ``precision`` is the CPU plugin's inference precision hint: "f32" computes float layers in FP32; None
    keeps the plugin's default, which is bf16 on CPUs with BF16 instructions (:func:`default_precision`).
    """

    def __init__(self, model, *, threads: int | None = None, precision: str | None = "f32"):
        require("openvino")
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = ov.Core().compile_model(
            model if not isinstance(model, (str, Path)) else str(model), "CPU", config
        )
        self.request = self.compiled.create_infer_request()

    def eval(self) -> OpenVinoModel:
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        result = self.request.infer({0: images.detach().float().contiguous().numpy()})
        return torch.from_numpy(result[self.compiled.output(0)].copy())


def runtime_op_types(model: OpenVinoModel) -> collections.Counter:
    """How many layers of each (type, precision) the CPU plugin runs after compiling: its executable graph."""
    operations = model.compiled.get_runtime_model().get_ops()
    return collections.Counter(
        (op.get_rt_info()["layerType"].astype(str), op.get_rt_info()["runtimePrecision"].astype(str))
        for op in operations
    )


# One layer's quantization parameters in each form ---------------------------------------------------------


@dataclass(frozen=True)
class QParams:
    """One activation's quantization: ``real = scale * (code - zero_point)`` for codes ``qmin..qmax``."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int

    @property
    def codes(self) -> int:
        return self.qmax - self.qmin + 1

    @property
    def low(self) -> float:
        """The smallest real value the codes cover."""
        return self.scale * (self.qmin - self.zero_point)

    @property
    def high(self) -> float:
        """The largest real value the codes cover (larger values are clipped to it)."""
        return self.scale * (self.qmax - self.zero_point)


@dataclass(frozen=True)
class LayerQParams:
    """A convolution's quantization in one form of the model: its input, its output, its per-channel weight scales."""

    input: QParams
    output: QParams
    weight_scales: torch.Tensor
    weight_zero_points: torch.Tensor


def fx_qparams(converted: torch.fx.GraphModule, prepared: torch.fx.GraphModule, layer: str) -> LayerQParams:
    """Layer ``layer``'s quantization in PyTorch's FX INT8 model (code ranges from the observers of ``prepared``)."""
    from qtutor.ptq import _producer_qparams

    node = next((n for n in converted.graph.nodes if n.op == "call_module" and n.target == layer), None)
    if node is None:
        raise ValueError(f"layer {layer!r}: not a module of the converted model")
    module = converted.get_submodule(layer)
    observed = next(n for n in prepared.graph.nodes if n.op == "call_module" and n.target == layer)
    incoming = prepared.get_submodule(observed.args[0].target)
    outgoing = observed
    while not (outgoing.op == "call_module" and "activation_post_process" in str(outgoing.target)):
        outgoing = next(iter(outgoing.users))  # a concatenation's inputs share the observer after it
    outgoing = prepared.get_submodule(outgoing.target)
    scale, zero_point = _producer_qparams(converted, node.args[0])
    weight = module.weight()
    return LayerQParams(
        QParams(scale, zero_point, incoming.quant_min, incoming.quant_max),
        QParams(float(module.scale), int(module.zero_point), outgoing.quant_min, outgoing.quant_max),
        weight.q_per_channel_scales().float(),
        weight.q_per_channel_zero_points(),
    )


def _code_range(dtype) -> tuple[int, int]:
    import numpy as np

    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def onnx_qparams(path, layer: str) -> LayerQParams:
    """Layer ``layer``'s quantization in an ONNX QDQ graph: the Q/DQ nodes around the node that reads its weight.

    The layer is found by its weight, which the exporter names ``<layer>.weight`` (``quantize_static``
    stores it quantized as ``<layer>.weight_quantized``).
    """
    require("onnx")
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    weight_dq = next(
        (
            n
            for n in graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in (f"{layer}.weight_quantized", f"{layer}.weight")
        ),
        None,
    )
    if weight_dq is None:
        raise ValueError(
            f"layer {layer!r}: {path} has no quantized weight {layer}.weight; expected a QDQ model from quantize_onnx"
        )
    target = next(n for n in graph.node if weight_dq.output[0] in n.input)
    quantize = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == target.output[0])

    def activation(node) -> QParams:
        zero_point = constants[node.input[2]]
        return QParams(float(constants[node.input[1]]), int(zero_point), *_code_range(zero_point.dtype))

    return LayerQParams(
        activation(producers[target.input[0]]),
        activation(quantize),
        torch.from_numpy(constants[weight_dq.input[1]].astype("float32")),
        torch.from_numpy(constants[weight_dq.input[2]].astype("int32")),
    )


def _fake_quantize_qparams(node) -> QParams:
    """An OpenVINO FakeQuantize as scale and zero-point: ``levels`` codes spread evenly over [input_low, input_high]."""
    low, high = (float(node.input_value(i).get_node().get_data().item()) for i in (1, 2))
    levels = node.get_attributes()["levels"]
    scale = (high - low) / (levels - 1)
    return QParams(scale, round(-low / scale), 0, levels - 1)


def openvino_qparams(model, layer: str, onnx_path) -> LayerQParams:
    """Layer ``layer``'s quantization in an NNCF-quantized OpenVINO model converted from the ONNX file ``onnx_path``.

    The convolution keeps the ONNX node's name. Its input and output pass through FakeQuantize operations
    (``levels`` codes over [input_low, input_high]); its weights are INT8 constants times a per-channel scale.
    """
    require("onnx", "openvino")
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    name = next((n.name for n in graph.node if f"{layer}.weight" in n.input), None)
    operation = next((op for op in model.get_ordered_ops() if op.get_friendly_name() == name), None)
    if name is None or operation is None:
        raise ValueError(f"layer {layer!r}: not found in {onnx_path} and the OpenVINO model converted from it")
    fake_quantize = operation.input_value(0).get_node()
    output = next(
        (
            t.get_node()
            for t in operation.output(0).get_target_inputs()
            if t.get_node().get_type_name() == "FakeQuantize"
        ),
        None,
    )
    multiply = operation.input_value(1).get_node()
    if fake_quantize.get_type_name() != "FakeQuantize" or output is None or multiply.get_type_name() != "Multiply":
        raise ValueError(f"layer {layer!r}: its convolution is not quantized (expected a model from quantize_openvino)")
    scales = torch.from_numpy(multiply.input_value(1).get_node().get_data().reshape(-1).copy()).float()
    return LayerQParams(
        _fake_quantize_qparams(fake_quantize),
        _fake_quantize_qparams(output),
        scales,
        torch.zeros(len(scales), dtype=torch.int32),
    )
