"""The FX flow helpers (notebook 06) on a tiny network with a concatenation, fast enough for every run."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qtutor import ptq
from qtutor.widgets import layer_explorer, layer_figure


class TinyDense(torch.nn.Module):
    """A stem, one 'dense layer' whose output is concatenated with its input, and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.layer = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Linear(8, 2)

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = torch.cat([x, self.layer(x)], 1)
        return self.classifier(torch.flatten(self.pool(x), 1))


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    model = TinyDense().eval()
    images = torch.randn(32, 3, 8, 8)
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
    model, loader, example, *_ , images = flow
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


def test_observer_mapping_rejects_unknown():
    with pytest.raises(ValueError, match="activation='percentile'"):
        ptq.observer_mapping("percentile")


def test_layer_figure_and_explorer(flow):
    *_, converted, activations, _ = flow
    layers = ptq.quantized_layers(converted)
    stats = [layer_figure(activations, layers, layer=name)[1] for name in ("stem", "layer")]
    assert stats[0] != stats[1] and all(0 < s["codes_used"] <= 256 for s in stats)
    box = layer_explorer(activations, layers)
    picker = box.children[0].children[0]
    before = (box.last_stats, box.children[-2].value)
    picker.value = picker.options[-1]
    assert box.last_stats != before[0] and box.children[-2].value != before[1]
    with pytest.raises(ValueError, match="layer='nope'"):
        layer_figure(activations, layers, layer="nope")


def test_format_table():
    from qtutor.report import format_table

    table = format_table([{"model": "FP32", "accuracy": 0.996}, {"model": "INT8", "accuracy": "-"}],
                         {"accuracy": ".1%"})
    assert table.splitlines() == ["model  accuracy", "-----  --------", "FP32      99.6%", "INT8          -"]
