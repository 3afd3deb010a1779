"""Figure functions (qtutor.figures) at their controls' extremes, and the explorers (qtutor.widgets) redrawing them."""

import io

import pytest
import torch

from qtutor.figures import clipping_figure, format_stats, uniform_figure
from qtutor.widgets import clipping_explorer, uniform_explorer


def png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def data():
    return torch.randn(5000, generator=torch.Generator().manual_seed(0))


def with_huge_outlier():
    x = data()
    x[0] = 1e6
    return x


UNIFORM_SETTINGS = [
    dict(bits=2, low=-3.0, high=3.0),
    dict(bits=8, low=-3.0, high=3.0),
    dict(bits=3, low=0.0, high=0.0),  # zero range
    dict(bits=3, low=-3.0, high=3.0, zero_point=0),
    dict(bits=3, low=-3.0, high=3.0, zero_point=7),
    dict(bits=3, low=2.0, high=-2.0),  # reversed slider ends
]


def test_uniform_figure_extremes_differ():
    pictures, all_stats = [], []
    for settings in UNIFORM_SETTINGS:
        figure, stats = uniform_figure(data(), **settings)
        pictures.append(png(figure))
        all_stats.append(stats)
    assert len(set(pictures)) == len(pictures), "two settings drew the same picture"
    assert all_stats[1]["sqnr_db"] > all_stats[0]["sqnr_db"] + 20  # 6 more bits buy well over 20 dB
    assert all_stats[2]["clipped"] > 0.99  # a zero range clips everything
    assert all_stats[4]["zero_point"] == 7


def test_uniform_figure_huge_outlier_and_signed():
    figure, stats = uniform_figure(with_huge_outlier(), bits=2, low=-1e6, high=1e6, signed=True)
    assert stats["mse"] > 0 and png(figure)


@pytest.mark.parametrize("x", [data(), with_huge_outlier(), torch.zeros(100)], ids=["normal", "outlier", "zeros"])
def test_clipping_figure_extremes(x):
    pictures = set()
    for clip, bits in ((1.0, 8), (0.02, 2), (1.0, 2), (0.0, 4)):
        figure, stats = clipping_figure(x, clip=clip, bits=bits)
        pictures.add(png(figure))
        assert stats["total"] >= 0
    assert len(pictures) == 4


def test_clipping_tradeoff_has_an_interior_optimum():
    x = torch.distributions.StudentT(3.0).sample((20000,))  # heavy tails
    errors = {clip: clipping_figure(x, clip=clip, bits=4)[1]["total"] for clip in (1.0, 0.2, 0.02)}
    assert errors[0.2] < errors[1.0] and errors[0.2] < errors[0.02]


@pytest.mark.parametrize(
    "explorer,names", [(uniform_explorer, ("bits", "value_range")), (clipping_explorer, ("clip", "bits"))]
)
def test_explorers_redraw_when_a_slider_moves(explorer, names):
    box = explorer(data())
    for slider in (box.controls[name] for name in names):
        before = (box.last_stats, box.picture.value, box.readout.value)
        if isinstance(slider.value, tuple):  # a range slider: move both ends
            slider.value = (slider.min, slider.min / 4)
        else:
            slider.value = slider.min if slider.value != slider.min else slider.max
        after = (box.last_stats, box.picture.value, box.readout.value)
        assert all(b != a for b, a in zip(before, after, strict=True)), slider.description  # numbers, picture, text


def test_uniform_explorer_shows_the_derived_zero_point(monkeypatch):
    import qtutor.figures

    draws = []
    monkeypatch.setattr(
        qtutor.figures,
        "uniform_figure",
        lambda *args, **kwargs: draws.append(kwargs) or uniform_figure(*args, **kwargs),
    )
    box = uniform_explorer(data())
    bits, auto, zero_point = (box.controls[name] for name in ("bits", "auto", "zero_point"))
    assert [[control.description for control in row.children] for row in box.children[:2]] == [
        ["bits", "range"],
        ["derive zero-point from range", "zero-point"],
    ]  # the rows it was asked for
    draws.clear()
    for width in (8, 3, 6):  # 8 -> 3 clamps the shown zero-point (128) to the new maximum (7) on the way
        bits.value = width
        assert zero_point.disabled and zero_point.value == box.last_stats["zero_point"] > 0
    assert len(draws) == 3  # one picture per move: showing the zero-point does not redraw again
    auto.value = False  # now the learner's zero-point rules, starting from the derived one
    zero_point.value = 0
    assert box.last_stats["zero_point"] == 0 and not zero_point.disabled


def test_format_stats():
    assert format_stats({"a": 0.123456, "b": 3}) == "a=0.1235  b=3"
    from qtutor.figures import describe_uniform

    line = describe_uniform({"scale": 0.5714, "zero_point": 3, "mse": 0.02, "sqnr_db": 12.34, "clipped": 0.066})
    assert line == "scale 0.5714  ·  zero-point 3  ·  MSE 0.02  ·  SQNR 12.3 dB  ·  6.6 % of values clipped"


def test_format_figure_extremes():
    from qtutor.figures import format_figure

    pictures = set()
    for value, name in (
        (0.1, "FP32"),
        (0.1, "FP16"),
        (70000.0, "FP16"),
        (1e-9, "FP16"),
        (70000.0, "BF16"),
        (300.0, "INT8"),
        (-300.0, "UINT8"),
        (0.0, "BF16"),
    ):
        figure, stats = format_figure(value, name)
        pictures.add(png(figure))
        if (value, name) == (70000.0, "FP16"):
            assert stats["stored"] == float("inf")
        if (value, name) == (1e-9, "FP16"):
            assert stats["stored"] == 0.0
        if name == "INT8":
            assert stats["stored"] == 127.0
    assert len(pictures) == 8


def test_method_figure_every_method_at_extreme_bits():
    from qtutor.figures import method_figure
    from qtutor.nonuniform import METHODS

    x = with_huge_outlier()
    x[0] = 1e3
    pictures = set()
    for method in METHODS:
        for bits in (2, 8):
            figure, stats = method_figure(x, method=method, bits=bits)
            pictures.add(png(figure))
            assert stats["levels_used"] <= 2**bits
    assert len(pictures) == 2 * len(METHODS)
    with pytest.raises(ValueError, match="method='nope'"):
        method_figure(x, method="nope")


def test_requantize_figure_more_bits_fewer_changes():
    from qtutor.figures import requantize_figure

    acc = torch.randint(-100000, 100000, (20000,), generator=torch.Generator().manual_seed(0))
    changed = [
        requantize_figure(acc, multiplier=0.0013, zero_point=128, mantissa_bits=b)[1]["outputs_changed"]
        for b in (1, 4, 8, 24)
    ]
    assert changed[0] > changed[1] > changed[2] > changed[3] == 0


@pytest.mark.parametrize("name", ["format", "method", "requantize"])
def test_more_explorers_redraw(name):
    from qtutor import widgets

    if name == "format":
        box = widgets.format_explorer(0.1)
    elif name == "method":
        box = widgets.method_explorer(data())
    else:
        acc = torch.randint(-100000, 100000, (2000,), generator=torch.Generator().manual_seed(0))
        box = widgets.requantize_explorer(acc, multiplier=0.0013, zero_point=128)
    for control in box.controls.values():
        before = (box.last_stats, box.picture.value, box.readout.value)
        if hasattr(control, "options"):
            control.value = control.options[-1]
        else:
            control.value = control.min if hasattr(control, "min") and control.value != control.min else 70000.0
        after = (box.last_stats, box.picture.value, box.readout.value)
        assert all(b != a for b, a in zip(before, after, strict=True)), control.description


def test_precision_figure_and_explorer():
    from qtutor.figures import precision_figure
    from qtutor.widgets import precision_explorer

    base = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    outputs = {"FP32": base, "same": base.clone(), "noisy": base + 0.5 * torch.randn(50, 3), "flipped": -base}
    assert precision_figure(outputs, variant="same")[1] == {
        "max_abs_diff": 0.0,
        "mean_abs_diff": 0.0,
        "top1_agreement": 1.0,
    }
    assert precision_figure(outputs, variant="flipped")[1]["top1_agreement"] < 0.2
    box = precision_explorer(outputs)
    before = (box.last_stats, box.picture.value)
    box.controls["variant"].value = "flipped"
    assert box.last_stats != before[0] and box.picture.value != before[1]
    with pytest.raises(ValueError, match="variant='nope'"):
        precision_figure(outputs, variant="nope")


def test_ste_figure_and_explorer():
    from qtutor.figures import ste_figure
    from qtutor.widgets import ste_explorer

    narrow, wide = ste_figure(bits=2, high=0.1)[1], ste_figure(bits=8, high=2.0)[1]
    assert narrow["gradient_passes"] < 0.1 and wide["gradient_passes"] > 0.99
    assert narrow["levels"] < wide["levels"]
    box = ste_explorer()
    for control in box.controls.values():
        before = (box.last_stats, box.picture.value)
        control.value = control.min
        assert box.last_stats != before[0] and box.picture.value != before[1]


def toy_layer():
    from qtutor.largemodels import outlier_activations

    x, channels = outlier_activations(64, 96, outliers=3, size=1.0)
    weight = torch.randn(32, 96, generator=torch.Generator().manual_seed(1)) * 0.05
    return x, weight, channels


def test_smoothquant_figure_extremes():
    from qtutor.figures import smoothquant_figure

    x, weight, channels = toy_layer()
    pictures, results = set(), {}
    for size, alpha in ((1.0, 0.0), (100.0, 0.0), (100.0, 0.5), (100.0, 1.0)):
        figure, stats = smoothquant_figure(x, weight, channels, outlier_size=size, alpha=alpha, points=5)
        pictures.add(png(figure))
        results[size, alpha] = stats
    assert len(pictures) == 4
    assert results[100.0, 0.5]["sqnr_db"] > results[100.0, 0.5]["sqnr_db_unsmoothed"] + 10
    assert results[1.0, 0.0]["sqnr_db_unsmoothed"] > results[100.0, 0.0]["sqnr_db_unsmoothed"] + 5
    assert results[100.0, 1.0]["act_max"] < results[100.0, 0.5]["act_max"] < results[100.0, 0.0]["act_max"]


def test_smoothquant_explorer_redraws_for_each_slider():
    from qtutor.widgets import smoothquant_explorer

    box = smoothquant_explorer(*toy_layer())
    for control in box.controls.values():
        before = (box.last_stats, box.picture.value, box.readout.value)
        control.value = control.min
        after = (box.last_stats, box.picture.value, box.readout.value)
        assert all(b != a for b, a in zip(before, after, strict=True)), control.description


def test_level_figures_draw_every_grid():
    from qtutor.formats import fp8_levels
    from qtutor.plots import new_figure, plot_level_rows, plot_relative_steps

    grids = {"E4M3": fp8_levels("E4M3"), "INT8": torch.arange(0, 128) / 127 * 448}
    figure, (left, right) = new_figure(10, 3, ncols=2)
    plot_level_rows(left, grids)
    plot_relative_steps(right, grids)
    assert len(left.lines) == 2 and len(right.lines) == 2
    relative = right.lines[0].get_ydata()
    assert relative.min() >= 1 / 16 - 1e-9 and relative[-1] <= 1 / 8 + 1e-9  # E4M3's normal range: 3 mantissa bits
    assert png(figure)


def test_qparams_figure_and_explorer():
    from qtutor.deploy import LayerQParams, QParams
    from qtutor.figures import describe_qparams, qparams_figure
    from qtutor.widgets import qparams_explorer

    def reader(weight_scale, zero_point):
        return lambda layer: LayerQParams(
            QParams(0.05, 0, 0, 255),
            QParams(0.1, zero_point, 0, 255),
            torch.full((4,), weight_scale),
            torch.zeros(4, dtype=torch.int32),
        )

    forms = {"a": reader(1.0, 70), "b": reader(1.5, 128)}
    figure, stats = qparams_figure(forms, layer="conv")
    assert stats["a"]["weight_scale_ratio"] == 1.0 and stats["b"]["weight_scale_ratio"] == 1.5
    assert stats["b"]["output"].low == pytest.approx(-12.8) and "b: input 0.05/0" in describe_qparams(stats)
    box = qparams_explorer(forms, ["conv", "other"])
    box.controls["layer"].value = "other"
    assert box.last_stats["a"]["output"].zero_point == 70


def test_method_figure_draws_an_all_zero_tensor():
    """The logarithmic axis has no decade to label when every value is 0: it must still draw."""
    from qtutor.figures import method_figure

    figure, _ = method_figure(torch.zeros(100), method="log", bits=4)
    assert png(figure)
