"""Interactive explorers: ipywidgets controls wired to pure figure functions.

Each explorer has two halves. A ``*_figure`` function takes plain arguments and
returns ``(figure, stats)``; it is what the unit tests call at the controls'
extremes. A ``*_explorer`` function builds the sliders and redraws the figure
whenever one moves.
"""

from __future__ import annotations

import ipywidgets as widgets
import torch
from IPython.display import display

from qtutor.observers import clip_errors
from qtutor.plots import new_figure, plot_error, plot_levels
from qtutor.uniform import dequantize, fake_quantize, mse, qparams, qrange, sqnr_db

__all__ = ["uniform_figure", "uniform_explorer", "clipping_figure", "clipping_explorer", "format_stats"]


def format_stats(stats: dict) -> str:
    """One line of ``name=value`` pairs, numbers rounded for reading."""
    parts = []
    for name, value in stats.items():
        parts.append(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}")
    return "  ".join(parts)


def uniform_figure(x, *, bits: int = 8, low: float = -1.0, high: float = 1.0, zero_point: int | None = None,
                   signed: bool = False):
    """Quantize ``x`` over ``[low, high]`` at ``bits``; draw histogram + levels and the error (notebook 01).

    ``zero_point`` overrides the one :func:`qtutor.qparams` derives (clamped
    into the code range), to show what a shifted grid does. Returns
    ``(figure, stats)`` with the scale, zero-point, MSE, SQNR and the fraction
    of values that were clipped.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    low, high = min(low, high), max(low, high)
    scale, derived_zero_point = qparams(low, high, bits=bits, signed=signed)
    qmin, qmax = qrange(bits, signed)
    zp = derived_zero_point if zero_point is None else torch.tensor(min(max(int(zero_point), qmin), qmax))
    x_hat = fake_quantize(x, scale, zp, bits=bits, signed=signed)
    levels = dequantize(torch.arange(qmin, qmax + 1), scale, zp)
    figure, (left, right) = new_figure(10, 3.2, ncols=2)
    plot_levels(left, x, levels, title=f"{bits}-bit grid: scale={scale.item():.4g}, zero-point={zp.item()}")
    plot_error(right, x, x_hat)
    stats = {
        "scale": scale.item(),
        "zero_point": int(zp.item()),
        "mse": mse(x, x_hat),
        "sqnr_db": sqnr_db(x, x_hat),
        "clipped": ((x < levels[0] - scale / 2) | (x > levels[-1] + scale / 2)).float().mean().item(),
    }
    return figure, stats


def _show(box: widgets.VBox, figure_function, **kwargs) -> None:
    """Redraw the box's last child (an Output) with a fresh figure and its stats line.

    The figure and stats are kept on the box as ``last_figure`` and
    ``last_stats``, so tests (and curious learners) can read what was drawn.
    """
    out = box.children[-1]
    figure, stats = figure_function(**kwargs)
    box.last_figure, box.last_stats = figure, stats
    with out:
        out.clear_output(wait=True)
        display(figure)
        print(format_stats(stats))


def uniform_explorer(x) -> widgets.VBox:
    """Sliders for bits, range and zero-point over :func:`uniform_figure` (notebook 01)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    top = max(float(x.abs().max()), 1e-3)
    bits = widgets.IntSlider(value=3, min=2, max=8, description="bits")
    value_range = widgets.FloatRangeSlider(value=(float(x.min()), float(x.max())), min=-1.5 * top, max=1.5 * top,
                                           step=top / 100, description="range", readout_format=".2f")
    auto = widgets.Checkbox(value=True, description="derive zero-point from range")
    zero_point = widgets.IntSlider(value=0, min=0, max=7, description="zero-point")
    box = widgets.VBox([widgets.HBox([bits, value_range]), widgets.HBox([auto, zero_point]), widgets.Output()])

    def redraw(_change=None):
        zero_point.max = 2**bits.value - 1
        zero_point.disabled = auto.value
        low, high = value_range.value
        _show(box, uniform_figure, x=x, bits=bits.value, low=low, high=high,
              zero_point=None if auto.value else zero_point.value)

    for control in (bits, value_range, auto, zero_point):
        control.observe(redraw, names="value")
    redraw()
    return box


def clipping_figure(x, *, clip: float = 1.0, bits: int = 4, points: int = 40):
    """Clip ``x`` at ``clip * max|x|`` and show how clipping and rounding error trade off (notebook 02).

    Left: the histogram with the clipping range. Right: clipping, rounding and
    total MSE as the clipping fraction sweeps (0, 1], with the chosen one marked.
    Returns ``(figure, stats)``.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    top = float(x.abs().max())
    clip = min(max(float(clip), 1e-3), 1.0)
    fractions = torch.linspace(1.0 / points, 1.0, points).tolist()
    curves = [clip_errors(x, -f * top, f * top, bits=bits, signed=True) for f in fractions]
    chosen = clip_errors(x, -clip * top, clip * top, bits=bits, signed=True)
    figure, (left, right) = new_figure(10, 3.2, ncols=2)
    left.hist(x.flatten().numpy(), bins=150, color="#9db4c0")
    for edge in (-clip * top, clip * top):
        left.axvline(edge, color="#c44536")
    left.set_yscale("log")
    left.set_title(f"clip at ±{clip * top:.3g} ({chosen['clipped_fraction']:.2%} of values clipped)", fontsize=10)
    for name, colour in (("clipping", "#e76f51"), ("rounding", "#2a9d8f"), ("total", "#264653")):
        right.plot(fractions, [c[name] for c in curves], label=name, color=colour)
    right.plot([clip], [chosen["total"]], "o", color="black")
    right.set_yscale("symlog", linthresh=1e-12)
    right.set_xlabel("clipping range as a fraction of max|x|")
    right.set_ylabel("MSE")
    right.set_title(f"{bits}-bit symmetric: error against clipping range", fontsize=10)
    right.legend(fontsize=8)
    stats = {"clip": clip * top, **chosen}
    return figure, stats


def clipping_explorer(x) -> widgets.VBox:
    """A slider for the clipping range and one for bits over :func:`clipping_figure` (notebook 02)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    clip = widgets.FloatSlider(value=1.0, min=0.02, max=1.0, step=0.02, description="clip")
    bits = widgets.IntSlider(value=4, min=2, max=8, description="bits")
    box = widgets.VBox([widgets.HBox([clip, bits]), widgets.Output()])

    def redraw(_change=None):
        _show(box, clipping_figure, x=x, clip=clip.value, bits=bits.value)

    for control in (clip, bits):
        control.observe(redraw, names="value")
    redraw()
    return box
