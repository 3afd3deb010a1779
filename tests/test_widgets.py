"""Widget update functions at their controls' extremes: they must not raise and must change the picture."""

import io

import pytest
import torch

from qtutor.widgets import clipping_explorer, clipping_figure, format_stats, uniform_explorer, uniform_figure


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


@pytest.mark.parametrize("explorer", [uniform_explorer, clipping_explorer])
def test_explorers_redraw_when_a_slider_moves(explorer):
    box = explorer(data())
    first_row = box.children[0].children
    for slider in first_row:
        before = (box.last_stats, png(box.last_figure))
        if isinstance(slider.value, tuple):  # a range slider: move both ends
            slider.value = (slider.min, slider.min / 4)
        else:
            slider.value = slider.min if slider.value != slider.min else slider.max
        assert box.last_stats != before[0] and png(box.last_figure) != before[1], slider.description


def test_format_stats():
    assert format_stats({"a": 0.123456, "b": 3}) == "a=0.1235  b=3"
