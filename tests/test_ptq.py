"""The FX flow helpers (notebook 06) on a tiny network with a concatenation, fast enough for every run."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qtutor import ptq
from qtutor.figures import layer_figure
from qtutor.widgets import layer_explorer


@pytest.fixture(scope="module")
def flow(tiny_dense):
    model = tiny_dense()  # conftest's TinyDense: a conv, a dense layer concatenated with its input, a classifier
    images = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(images, torch.zeros(32, dtype=torch.long)), batch_size=4)
    example = (images[:1],)
    prepared = ptq.prepare(model, example)
    ptq.calibrate(prepared, loader, batches=None, progress=False)
    activations = ptq.observed_activations(prepared, images[:4])
    converted = ptq.convert(prepared)
    return model, loader, example, converted, activations, images


def test_prepare_leaves_the_model_alone(flow):
    model = flow[0]
    assert not any(hasattr(module, "qconfig") for module in model.modules())


def test_converted_model_is_close_to_float(flow):
    model, _, _, converted, _, images = flow
    assert (converted(images) - model(images)).abs().max() < 0.05


def test_concatenation_inputs_share_qparams(flow):
    rows = ptq.concat_qparams(flow[3])
    assert len(rows) == 1 and rows[0]["inputs"] == 2 and rows[0]["distinct_input_qparams"] == 1


def test_observed_activations_are_what_each_layer_outputs(flow):
    model, *_, activations, images = flow
    assert torch.allclose(activations["stem"], torch.relu(model.stem(images[:4])), atol=1e-5)


def test_quantized_layers_table(flow):
    rows = {r["layer"]: r for r in ptq.quantized_layers(flow[3])}
    assert rows["layer"]["channels"] == 4 and rows["layer"]["weight_scale_min"] > 0


def test_simulated_bits(flow):
    model, loader, example, *_, images = flow
    errors = {}
    for bits in (8, 4, 2):
        simulated = ptq.simulate(model, ptq.fake_quant_mapping(bits), loader, example, batches=None)
        errors[bits] = (simulated(images) - model(images)).abs().mean().item()
    assert errors[8] < errors[4] < errors[2]


def test_fake_quant_mapping_only_and_skip(flow):
    model, loader, example, *_ = flow

    def fake_quantized_weights(mapping):
        simulated = ptq.simulate(model, mapping, loader, example, batches=1)
        return {name for name, module in simulated.named_modules() if hasattr(module, "weight_fake_quant")}

    everywhere = fake_quantized_weights(ptq.fake_quant_mapping(4))
    assert everywhere == {"stem", "layer", "classifier"}
    assert fake_quantized_weights(ptq.fake_quant_mapping(4, only="layer")) == {"layer"}
    assert fake_quantized_weights(ptq.fake_quant_mapping(4, skip="layer")) == {"stem", "classifier"}


def test_rebuild_from_state_dict(flow, tmp_path):
    model, _, example, converted, _, images = flow
    torch.save(converted.state_dict(), tmp_path / "int8.pth")
    rebuilt = ptq.rebuild_from_state_dict(model, example, tmp_path / "int8.pth")
    assert torch.equal(rebuilt(images), converted(images))


def test_x86_mapping_is_pytorchs_default_and_rejects_unknown():
    """reduce_range=True and the histogram observer are what get_default_qconfig_mapping('x86') uses."""
    from torch.ao.quantization import get_default_qconfig_mapping

    default = get_default_qconfig_mapping("x86").global_qconfig.activation()
    ours = ptq.x86_mapping().global_qconfig.activation()
    assert type(ours) is type(default) and (ours.quant_min, ours.quant_max) == (default.quant_min, default.quant_max)
    assert (ours.quant_min, ours.quant_max) == (0, 127)
    full = ptq.x86_mapping(reduce_range=False).global_qconfig.activation()
    assert (full.quant_min, full.quant_max) == (0, 255)
    with pytest.raises(ValueError, match="activation='percentile'"):
        ptq.x86_mapping("percentile")
    with pytest.raises(ValueError, match="observer='kmeans'"):
        ptq.fake_quant_qconfig(4, observer="kmeans")


def test_weight_and_activation_bits_are_set_apart(flow):
    model, loader, example, *_ = flow
    simulated = ptq.simulate(model, ptq.fake_quant_mapping(4, 8, observer="minmax"), loader, example, batches=2)
    weight_ranges = {
        (m.weight_fake_quant.quant_min, m.weight_fake_quant.quant_max)
        for m in simulated.modules()
        if hasattr(m, "weight_fake_quant")
    }
    activation_ranges = {
        (m.quant_min, m.quant_max) for n, m in simulated.named_children() if n.startswith("activation_post_process_")
    }
    assert weight_ranges == {(-7, 7)} and activation_ranges == {(0, 255)}


def test_mse_observer_clips_to_notebook_02s_range():
    from qtutor.observers import mse_range

    x = torch.randn(20000, generator=torch.Generator().manual_seed(0)) ** 3  # heavy tails
    observer = ptq.MSEObserver(quant_min=0, quant_max=15, dtype=torch.quint8, sample_size=1 << 16)
    observer(x[:10000])
    observer(x[10000:])
    observer.search()
    low, high = mse_range(x, bits=4)
    assert observer.min_val.item() == pytest.approx(low.item())
    assert observer.max_val.item() == pytest.approx(high.item())
    assert observer.max_val < x.max()  # it clipped: at 4 bits the outliers are not worth their rounding error


def test_per_channel_mse_observer_beats_min_max_per_channel():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 256, generator=generator) * torch.linspace(0.1, 2, 8)[:, None]
    weight[0] = torch.randn(256, generator=generator) ** 3  # heavy tails in channel 0: clipping pays off there
    errors = {}
    for cls in (torch.ao.quantization.PerChannelMinMaxObserver, ptq.PerChannelMSEObserver):
        observer = cls(ch_axis=0, quant_min=-7, quant_max=7, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        observer(weight)
        if hasattr(observer, "search"):
            observer.search()
        scale, zero_point = observer.calculate_qparams()
        fake = torch.fake_quantize_per_channel_affine(weight, scale, zero_point.int(), 0, -7, 7)
        errors[cls.__name__] = ((fake - weight) ** 2).mean(dim=1)
    assert (errors["PerChannelMSEObserver"] <= errors["PerChannelMinMaxObserver"] + 1e-9).all()
    assert errors["PerChannelMSEObserver"][0] < 0.9 * errors["PerChannelMinMaxObserver"][0]


def test_keep_in_float_leaves_the_named_layer_unquantized(flow):
    model, loader, example, *_ = flow
    converted = ptq.quantize_fx(
        model,
        loader,
        example,
        batches=2,
        progress=False,
        qconfig_mapping=ptq.keep_in_float(ptq.x86_mapping(), ["layer"]),
    )
    assert type(converted.layer) is torch.nn.Conv2d  # FP32, between a dequantize and a quantize
    assert type(converted.stem).__module__.startswith("torch.ao.nn.intrinsic.quantized")


def test_layer_figure_and_explorer(flow):
    *_, converted, activations, _ = flow
    layers = ptq.quantized_layers(converted)
    stats = [layer_figure(activations, layers, layer=name)[1] for name in ("stem", "layer")]
    assert stats[0] != stats[1] and all(0 < s["codes_used"] <= 256 for s in stats)
    box = layer_explorer(activations, layers)
    picker = box.controls["layer"]
    before = (box.last_stats, box.picture.value)
    picker.value = picker.options[-1]
    assert box.last_stats != before[0] and box.picture.value != before[1]
    with pytest.raises(ValueError, match="layer='nope'"):
        layer_figure(activations, layers, layer="nope")


def test_layer_figure_uses_each_rows_code_range(flow):
    *_, converted, activations, _ = flow
    full = [r for r in ptq.quantized_layers(converted) if r["layer"] == "stem"]  # codes 0..255
    assert (full[0]["quant_min"], full[0]["quant_max"]) == (0, 255)
    zero_point = min(full[0]["zero_point"], 127)
    half = [dict(full[0], quant_min=0, quant_max=127, zero_point=zero_point)]  # as reduce_range plans it
    signed = [dict(full[0], quant_min=-128, quant_max=127, zero_point=zero_point - 128)]
    drawn = {
        name: layer_figure(activations, rows, layer="stem")
        for name, rows in (("full", full), ("half", half), ("signed", signed))
    }
    stats = {name: result[1] for name, result in drawn.items()}
    assert (stats["full"]["codes"], stats["half"]["codes"], stats["signed"]["codes"]) == (256, 128, 256)
    assert [figure.axes[1].get_xlabel() for figure, _ in drawn.values()] == [
        "code (0..255)",
        "code (0..127)",
        "code (-128..127)",
    ]
    assert stats["half"]["codes_used"] <= stats["full"]["codes_used"] and stats["half"]["clipped"] >= 0
    assert stats["signed"]["codes_used"] == stats["full"]["codes_used"]  # the same grid, its codes shifted by 128
    assert stats["signed"]["clipped"] == stats["full"]["clipped"]
    with pytest.raises(ValueError, match="codes 0..100"):
        layer_figure(activations, [dict(full[0], quant_min=0, quant_max=100)], layer="stem")
