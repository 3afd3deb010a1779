"""Matplotlib figures the notebooks share.

Every function draws on an ``Axes`` it is given (so figures compose) or builds a
``matplotlib.figure.Figure`` without pyplot, so nothing is shown twice and
nothing leaks between widget redraws.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FormatStrFormatter

from qtutor.formats import bit_fields

__all__ = [
    "new_figure",
    "draw_bit_layout",
    "plot_levels",
    "plot_error",
    "plot_sqnr",
    "plot_level_rows",
    "plot_relative_steps",
    "PALETTE",
    "FIELD_COLOURS",
]

# The course's colours, by what they show; every figure of plots and qtutor.figures takes its colours from here.
PALETTE = {
    "values": "#9db4c0",  # histograms of the numbers being quantized
    "levels": "#c44536",  # quantization levels and the range they cover
    "change": "#e76f51",  # clipping error, and what a control changes: differences, gradients, "after"
    "rounding": "#2a9d8f",  # rounding error, its ±S/2 bound, integer codes
    "main": "#264653",  # a panel's main curve, totals
    "error": "#3d405b",  # a quantizer's error or output against its input
    "before": "#adb5bd",  # the unchanged reference: "before", "no smoothing"
    "guide": "grey",  # zero and identity lines
    "picked": "black",  # the point a control picked
    "mantissa": "#e9c46a",  # bit fields (notebook 00)
    "integer": "#8ab17d",
}
FIELD_COLOURS = {
    "sign": PALETTE["change"],
    "exponent": PALETTE["rounding"],
    "mantissa": PALETTE["mantissa"],
    "bits": PALETTE["integer"],
}


def new_figure(width: float = 9, height: float = 3.2, ncols: int = 1, nrows: int = 1, **kwargs):
    """A pyplot-free figure and its axes (``ncols`` x ``nrows``), sized in inches."""
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=True, **kwargs)
    return figure, axes


def draw_bit_layout(ax, value: float, dtype, label: str | None = None) -> None:
    """One row of boxes, one per bit of ``value`` stored as ``dtype``, coloured by field (notebook 00)."""
    fields = bit_fields(value, dtype)
    position = 0
    for field, bits in fields.items():
        for bit in bits:
            ax.add_patch(Rectangle((position, 0), 1, 1, facecolor=FIELD_COLOURS[field], edgecolor="white"))
            ax.text(position + 0.5, 0.5, bit, ha="center", va="center", fontsize=8, family="monospace")
            position += 1
        start = position - len(bits)
        ax.text((start + position) / 2, 1.15, f"{field} ({len(bits)})", ha="center", va="bottom", fontsize=8)
    ax.set_xlim(0, 32)
    ax.set_ylim(0, 1.7)
    ax.set_axis_off()
    ax.set_title(label or f"{value!r} as {str(dtype).replace('torch.', '')}", loc="left", fontsize=9)


def _label_decades_apart(ax, linthresh: float, limit: float) -> None:
    """Ticks at 0 and at +-10**k up to ``limit``, none within half a decade of ``linthresh`` (those would share the
    axis's short linear stretch with 0) and every other decade from the largest down when a side has more than
    three: otherwise their labels overlap. Nothing to place when every value is 0."""
    if limit <= 0:
        return
    first, last = math.ceil(math.log10(linthresh) + 0.5), math.floor(math.log10(limit))
    decades = [10.0**k for k in range(last, first - 1, -1)]
    decades = sorted(decades[:: 1 if len(decades) <= 3 else 2])
    if not decades:  # the values end within half a decade of the linear stretch: 0 and one rounded value a side
        decades = [float(f"{limit:.1g}")]
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xticks([-d for d in reversed(decades)] + [0.0] + decades)


def plot_levels(ax, x, levels, *, title: str = "", max_lines: int = 64, symlog: bool = False) -> None:
    """Histogram of ``x`` with the quantizer's representable ``levels`` as vertical lines (or a rug).

    ``symlog`` draws the value axis linear within the smallest non-zero level
    of zero and logarithmic beyond, so levels crowded near zero stay apart
    (notebooks 03 and 04); the histogram's bins are even on that axis.
    """
    values = x.flatten().numpy()
    levels = levels.flatten().numpy()
    bins = 120
    if symlog:
        nonzero = abs(levels[levels != 0])
        linthresh = float(nonzero.min()) if len(nonzero) else 1.0
        ax.set_xscale("symlog", linthresh=linthresh, linscale=0.5)
        _label_decades_apart(ax, linthresh, max(abs(values).max(), abs(levels).max()))
        transform = ax.xaxis.get_transform()
        ends = transform.transform([min(values.min(), levels.min()), max(values.max(), levels.max())])
        bins = transform.inverted().transform(np.linspace(ends[0], ends[1], bins + 1))
    ax.hist(values, bins=bins, color=PALETTE["values"], edgecolor="none")
    if len(levels) <= max_lines:
        for level in levels:
            ax.axvline(level, color=PALETTE["levels"], linewidth=0.8, alpha=0.8)
    else:
        ax.plot(levels, [0] * len(levels), "|", color=PALETTE["levels"], markersize=10)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("value" + (" (symmetric log axis)" if symlog else ""))
    ax.set_ylabel("count")


def plot_error(ax, x, x_hat, *, title: str = "error = x_hat - x", step: float | None = None) -> None:
    """Quantization error against the input value: sawtooth inside the range, ramps where it clips.

    With ``step`` (the scale S), dashed guide lines mark ±S/2, the most that
    rounding alone can cost (notebook 01).
    """
    order = x.flatten().argsort()
    xs = x.flatten()[order].numpy()
    errors = (x_hat.flatten() - x.flatten())[order].numpy()
    ax.plot(xs, errors, color=PALETTE["error"], linewidth=0.8)
    ax.axhline(0, color=PALETTE["guide"], linewidth=0.5)
    if step is not None:
        for sign in (-1, 1):
            ax.axhline(sign * step / 2, color=PALETTE["rounding"], linewidth=0.9, linestyle="--")
        ax.text(
            0.01,
            0.97,
            f"dashed: ±S/2 = ±{step / 2:.3g}",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            color=PALETTE["rounding"],
        )
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("value")
    ax.set_ylabel("error")


def plot_sqnr(ax, table: dict[str, dict[int, float]], *, title: str = "SQNR by method and bit width") -> None:
    """One line per method: SQNR (dB) against bits, from :func:`qtutor.nonuniform.compare_methods`."""
    markers = "osD^v<>"
    for i, (method, by_bits) in enumerate(table.items()):
        bits = sorted(by_bits)
        ax.plot(bits, [by_bits[b] for b in bits], marker=markers[i % len(markers)], label=method)
    ax.set_xlabel("bits")
    ax.set_ylabel("SQNR (dB, higher is better)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _positive(levels):
    """The distinct positive values of ``levels``, ascending, as a float64 tensor."""
    levels = torch.unique(torch.as_tensor(levels, dtype=torch.float64))
    return levels[levels > 0]


def plot_level_rows(ax, grids: dict, *, title: str = "positive levels (log axis)") -> None:
    """One row of ticks per grid: the positive levels of each number format on a log axis (notebook 11)."""
    for row, levels in enumerate(grids.values()):
        values = _positive(levels).numpy()
        ax.plot(values, [row] * len(values), "|", markersize=12, color=f"C{row}")
    ax.set_xscale("log")
    ax.set_yticks(range(len(grids)), list(grids))
    ax.set_ylim(-0.6, len(grids) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("value")
    ax.set_title(title, fontsize=10)


def plot_relative_steps(ax, grids: dict, *, title: str = "gap to the next level / level") -> None:
    """Relative spacing of each grid's positive levels: flat for floats, falling as 1/x for integers (notebook 11)."""
    for row, (name, levels) in enumerate(grids.items()):
        values = _positive(levels)
        ax.step(values[:-1].numpy(), (values.diff() / values[:-1]).numpy(), where="post", label=name, color=f"C{row}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("level")
    ax.set_ylabel("relative step")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
