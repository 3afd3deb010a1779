"""qtutor.deploy: ONNX export, ONNX Runtime static QDQ, OpenVINO + NNCF on a tiny DenseNet; PyTorch is the reference."""

import copy
import importlib.util

import onnx
import pytest
import torch

from qtutor import deploy, ptq
from qtutor.checks import _tiny_densenet
from qtutor.errors import InputError

LAYER = "features.denseblock1.denselayer1.conv2"  # a 3x3 convolution: no BatchNorm is folded into it


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny model, its calibration batches, and its FP32 ONNX, ONNX Runtime INT8 and OpenVINO forms."""
    folder = tmp_path_factory.mktemp("runtimes")
    model = _tiny_densenet(block_config=(1, 1))
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    batches = list(images.split(4))
    deploy.export_onnx(model, images[:2], folder / "fp32.onnx")
    deploy.quantize_onnx(folder / "fp32.onnx", folder / "int8.onnx", batches)
    openvino_fp32 = deploy.to_openvino(folder / "fp32.onnx")
    openvino_int8 = deploy.quantize_openvino(openvino_fp32, batches)
    return dict(
        folder=folder,
        model=model,
        images=images,
        batches=batches,
        openvino_fp32=openvino_fp32,
        openvino_int8=openvino_int8,
    )


def relu_outputs(model, images) -> torch.Tensor:
    """The float input of ``LAYER`` (its dense layer's ReLU output) for each image, as PyTorch computes it."""
    seen = []
    handle = model.get_submodule(LAYER).register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen[0]


@torch.no_grad()
def test_fp32_onnx_equals_pytorch_in_both_runtimes(built):
    expected = built["model"](built["images"])
    for runtime in (
        deploy.OnnxRuntimeModel(built["folder"] / "fp32.onnx"),
        deploy.OpenVinoModel(built["openvino_fp32"], precision="f32"),
    ):
        for batch in (built["images"][:1], built["images"]):  # the batch size is dynamic
            assert torch.allclose(runtime(batch), built["model"](batch), atol=1e-5, rtol=1e-5)
    assert expected.shape == (16, 3)


@torch.no_grad()
def test_int8_models_stay_close_to_fp32(built):
    expected = built["model"](built["images"])
    bound = 0.05 * expected.abs().max()  # 5% of the largest logit; 8-bit rounding of a few layers stays well inside
    for runtime in (
        deploy.OnnxRuntimeModel(built["folder"] / "int8.onnx"),
        deploy.OpenVinoModel(built["openvino_int8"]),
    ):
        got = runtime(built["images"])
        assert (got - expected).abs().max() < bound
        assert not torch.equal(got, expected)  # quantized for real


def test_onnx_runtime_fuses_every_convolution_with_unsigned_activations(built):
    types = deploy.optimized_op_types(built["folder"] / "int8.onnx")
    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in built["model"].modules())
    assert types["QLinearConv"] == convolutions and "Conv" not in types
    assert types["BatchNormalization"] == 4  # the pre-activation BatchNorms stay in float: no INT8 kernel
    shares = deploy.profile_op_types(built["folder"] / "int8.onnx", built["images"][:4], runs=2)
    assert set(shares) <= set(types) and sum(shares.values()) == pytest.approx(1.0)


def test_onnx_qparams_are_what_quantize_static_computes(built):
    """Min-max over every calibration image, unsigned activations; weights symmetric, max|w| / 127 per channel."""
    read = deploy.onnx_qparams(built["folder"] / "int8.onnx", LAYER)
    activations = relu_outputs(built["model"], built["images"])
    assert (read.input.qmin, read.input.qmax, read.input.zero_point) == (0, 255, 0)  # a ReLU output: min is 0
    assert read.input.scale == pytest.approx(activations.max().item() / 255, rel=1e-6)
    weight = built["model"].get_submodule(LAYER).weight
    assert torch.allclose(read.weight_scales, weight.abs().amax(dim=(1, 2, 3)) / 127, rtol=1e-6)
    assert not read.weight_zero_points.any()
    assert read.output.zero_point not in (0, 128)  # affine: the output of a convolution feeding a concatenation


def test_openvino_qparams_are_what_nncf_computes(built):
    """NNCF: the mean over images of each image's maximum; symmetric (zero-point 128 for signed tensors)."""
    read = deploy.openvino_qparams(built["openvino_int8"], LAYER, built["folder"] / "fp32.onnx")
    activations = relu_outputs(built["model"], built["images"])
    per_image_max = activations.amax(dim=(1, 2, 3)).mean().item()
    assert (read.input.zero_point, read.input.codes) == (0, 256)
    assert read.input.high == pytest.approx(per_image_max, rel=1e-5)
    weight = built["model"].get_submodule(LAYER).weight
    assert torch.allclose(read.weight_scales, weight.abs().amax(dim=(1, 2, 3)) / 127, rtol=1e-5)
    assert read.output.zero_point == 128 and read.output.low == pytest.approx(-read.output.high * 128 / 127)


def test_fx_qparams_read_the_converted_model(built):
    prepared = ptq.prepare(built["model"], (built["images"][:1],))
    for batch in built["batches"]:
        prepared(batch)
    converted = ptq.convert(copy.deepcopy(prepared))
    read = deploy.fx_qparams(converted, prepared, LAYER)
    assert (read.input.qmin, read.input.qmax) == (0, 127)  # the x86 default's reduce_range
    module = converted.get_submodule(LAYER)
    assert (read.output.scale, read.output.zero_point) == (float(module.scale), int(module.zero_point))
    weight = built["model"].get_submodule(LAYER).weight
    assert torch.allclose(read.weight_scales, weight.abs().amax(dim=(1, 2, 3)) / 127.5, rtol=1e-6)


def test_sessions_use_torch_threads_and_do_not_spin(built):
    session = deploy.OnnxRuntimeModel(built["folder"] / "fp32.onnx").session
    options = session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert deploy.OpenVinoModel(built["openvino_fp32"], threads=1).compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_saved_openvino_model_keeps_fp32_weights(built, tmp_path):
    deploy.save_openvino(built["openvino_fp32"], tmp_path / "model.xml")
    xml, weights = deploy.openvino_files(tmp_path / "model.xml")
    parameters = sum(p.numel() for p in built["model"].parameters())
    assert xml.is_file() and weights.stat().st_size >= 4 * parameters * 0.9  # four bytes per weight, not two
    loaded = deploy.OpenVinoModel(xml)
    with torch.no_grad():
        assert torch.allclose(loaded(built["images"]), built["model"](built["images"]), atol=1e-5)


def test_bad_input(built, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        deploy.load_onnx(tmp_path / "missing.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"not a model")
    with pytest.raises(InputError, match="not an ONNX model ONNX Runtime can load"):
        deploy.load_onnx(tmp_path / "garbage.onnx")
    with pytest.raises(ValueError, match="batch of at least 2"):
        deploy.export_onnx(built["model"], built["images"][:1], tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="activations='int4'"):
        deploy.quantize_onnx(built["folder"] / "fp32.onnx", tmp_path / "x.onnx", built["batches"], activations="int4")
    with pytest.raises(ValueError, match="expected a QDQ model"):
        deploy.onnx_qparams(built["folder"] / "fp32.onnx", LAYER)
    with pytest.raises(ValueError, match="not quantized"):
        deploy.openvino_qparams(built["openvino_fp32"], LAYER, built["folder"] / "fp32.onnx")
    with pytest.raises(ValueError, match="not found"):
        deploy.openvino_qparams(built["openvino_int8"], "features.nowhere", built["folder"] / "fp32.onnx")
    with pytest.raises(ValueError, match="expected an .xml"):
        deploy.save_openvino(built["openvino_fp32"], tmp_path / "model.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.onnx"]  # nothing half-written


def test_require_names_the_install_command(monkeypatch):
    deploy.require()  # all installed here
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "openvino" else real(name))
    with pytest.raises(InputError, match=r"openvino not installed.*pip install openvino==2026\.4\.1"):
        deploy.require()


def test_exported_graph_folds_the_batch_norms_that_follow_a_convolution(built):
    graph = onnx.load(str(built["folder"] / "fp32.onnx")).graph
    kinds = [node.op_type for node in graph.node]
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in built["model"].modules())
    convolutions = kinds.count("Conv")
    # norm0 follows conv0 and each dense layer's norm2 follows its conv1: those fold; the rest follow a concatenation
    assert kinds.count("BatchNormalization") == norms - 3 and convolutions == 6


def test_pins_match_pyproject():
    from tests.test_environment import pyproject_requirements

    pins = pyproject_requirements()
    assert {name: pins[name] for name in deploy.PACKAGES} == {n: f"=={v}" for n, v in deploy.PACKAGES.items()}
