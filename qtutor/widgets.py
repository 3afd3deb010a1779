"""Interactive explorers: ipywidgets controls wired to the figure functions of :mod:`qtutor.figures`.

An explorer is a column of control rows over a picture and a line of numbers.
Moving a control calls its figure function with the controls' values and
shows the ``(figure, stats)`` it returns: the figure as a PNG in an ``Image``
widget, the stats as a readout in an ``HTML`` widget. A redraw changes
widget state only (no output streams), which keeps nbval's comparison of the
notebook stable.

Every explorer carries its parts by name: ``box.controls`` (keyword name ->
widget), ``box.picture``, ``box.readout``, and what it last drew,
``box.last_figure`` and ``box.last_stats``.
"""

from __future__ import annotations

import html
import io

import ipywidgets as widgets
import torch

from qtutor import figures
from qtutor.formats import FORMATS
from qtutor.nonuniform import METHODS

__all__ = [
    "format_explorer",
    "uniform_explorer",
    "clipping_explorer",
    "method_explorer",
    "requantize_explorer",
    "layer_explorer",
    "qparams_explorer",
    "precision_explorer",
    "ste_explorer",
    "smoothquant_explorer",
]


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _explorer(
    figure_function,
    controls: dict,
    *,
    rows=None,
    describe=figures.format_stats,
    before_redraw=None,
    after_redraw=None,
    **fixed,
) -> widgets.VBox:
    """Wire ``controls`` (keyword name -> widget) to ``figure_function(**fixed, **values)``; return the explorer.

    ``rows`` lists the controls' names row by row as they appear (default: one
    row, in the order of ``controls``). ``before_redraw``, if given, receives
    the values and returns them adjusted (for controls that depend on each
    other); ``after_redraw``, if given, receives the stats drawn (to show them
    on controls). Controls they set while drawing do not cause another redraw.
    ``describe`` turns the stats into the readout under the picture.
    """
    rows = [list(controls)] if rows is None else rows
    picture, readout = widgets.Image(format="png"), widgets.HTML()
    box = widgets.VBox([widgets.HBox([controls[name] for name in row]) for row in rows] + [picture, readout])
    box.controls, box.picture, box.readout = controls, picture, readout
    drawing = []  # non-empty while a redraw runs

    def redraw(_change=None):
        if drawing:
            return
        drawing.append(True)
        try:
            values = {name: control.value for name, control in controls.items()}
            if before_redraw is not None:
                values = before_redraw(values)
            box.last_figure, box.last_stats = figure_function(**fixed, **values)
            picture.value = _png(box.last_figure)
            readout.value = f"<code>{html.escape(describe(box.last_stats))}</code>"
            if after_redraw is not None:
                after_redraw(box.last_stats)
        finally:
            drawing.clear()

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    return box


def format_explorer(value: float = 0.1) -> widgets.VBox:
    """A number box and a format picker over :func:`qtutor.figures.format_figure` (notebook 00)."""
    number = widgets.FloatText(value=value, description="value")
    picker = widgets.Dropdown(options=list(FORMATS), value="FP16", description="format")
    return _explorer(figures.format_figure, dict(format_name=picker, value=number), describe=figures.describe_format)


def uniform_explorer(x) -> widgets.VBox:
    """Sliders for bits, range and zero-point over :func:`qtutor.figures.uniform_figure` (notebook 01)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    top = max(float(x.abs().max()), 1e-3)
    bits = widgets.IntSlider(value=3, min=2, max=8, description="bits")
    value_range = widgets.FloatRangeSlider(
        value=(float(x.min()), float(x.max())),
        min=-1.5 * top,
        max=1.5 * top,
        step=top / 100,
        description="range",
        readout_format=".2f",
    )
    auto = widgets.Checkbox(value=True, description="derive zero-point from range")
    zero_point = widgets.IntSlider(value=0, min=0, max=7, description="zero-point")

    def adjust(values):
        zero_point.max = 2 ** values["bits"] - 1
        zero_point.disabled = values.pop("auto")
        values["low"], values["high"] = values.pop("value_range")
        if zero_point.disabled:
            values["zero_point"] = None
        return values

    def show_derived(stats):
        if zero_point.disabled:  # the slider shows the zero-point the range gives, greyed out
            zero_point.value = stats["zero_point"]

    return _explorer(
        figures.uniform_figure,
        dict(bits=bits, value_range=value_range, auto=auto, zero_point=zero_point),
        rows=[["bits", "value_range"], ["auto", "zero_point"]],
        before_redraw=adjust,
        after_redraw=show_derived,
        describe=figures.describe_uniform,
        x=x,
    )


def clipping_explorer(x) -> widgets.VBox:
    """A slider for the clipping range and one for bits over :func:`qtutor.figures.clipping_figure` (notebook 02)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    clip = widgets.FloatSlider(value=1.0, min=0.02, max=1.0, step=0.02, description="clip")
    bits = widgets.IntSlider(value=4, min=2, max=8, description="bits")
    return _explorer(figures.clipping_figure, dict(clip=clip, bits=bits), describe=figures.describe_clipping, x=x)


def method_explorer(x, methods=tuple(METHODS)) -> widgets.VBox:
    """A method picker and a bits slider over :func:`qtutor.figures.method_figure` (notebooks 03, 04)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    picker = widgets.ToggleButtons(options=list(methods), description="method")
    bits = widgets.IntSlider(value=3, min=2, max=8, description="bits")
    return _explorer(figures.method_figure, dict(bits=bits, method=picker), describe=figures.describe_method, x=x)


def requantize_explorer(acc, *, multiplier: float, zero_point: int) -> widgets.VBox:
    """A slider for the multiplier's significant bits over :func:`qtutor.figures.requantize_figure` (notebook 05)."""
    bits = widgets.IntSlider(value=8, min=1, max=31, description="m0 bits")
    return _explorer(
        figures.requantize_figure,
        dict(mantissa_bits=bits),
        describe=figures.describe_requantize,
        acc=acc,
        multiplier=multiplier,
        zero_point=zero_point,
    )


def layer_explorer(activations: dict, layers: list[dict]) -> widgets.VBox:
    """A layer picker over :func:`qtutor.figures.layer_figure` (notebook 06)."""
    names = [r["layer"] for r in layers if r["layer"] in activations]
    picker = widgets.Dropdown(options=names, value=names[0], description="layer", layout=widgets.Layout(width="60%"))
    return _explorer(figures.layer_figure, dict(layer=picker), activations=activations, layers=layers)


def precision_explorer(outputs: dict, reference: str = "FP32") -> widgets.VBox:
    """A picker of numeric variants over :func:`qtutor.figures.precision_figure` (notebook 07)."""
    variants = [name for name in outputs if name != reference]
    picker = widgets.ToggleButtons(options=variants, description="variant")
    return _explorer(figures.precision_figure, dict(variant=picker), outputs=outputs, reference=reference)


def ste_explorer() -> widgets.VBox:
    """Sliders for bits and range over :func:`qtutor.figures.ste_figure` (notebook 08)."""
    bits = widgets.IntSlider(value=3, min=2, max=8, description="bits")
    high = widgets.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.05, description="range ±")
    return _explorer(figures.ste_figure, dict(bits=bits, high=high))


def smoothquant_explorer(x, weight, channels) -> widgets.VBox:
    """Sliders for the outlier size and SmoothQuant's alpha (notebook 11).

    Over :func:`qtutor.figures.smoothquant_figure`.
    """
    size = widgets.FloatSlider(
        value=50.0, min=1.0, max=100.0, step=1.0, description="outlier size", readout_format=".0f"
    )
    alpha = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="alpha")
    return _explorer(
        figures.smoothquant_figure,
        dict(outlier_size=size, alpha=alpha),
        x=torch.as_tensor(x, dtype=torch.float32),
        weight=weight,
        channels=channels,
    )


def qparams_explorer(forms: dict, layers: list[str]) -> widgets.VBox:
    """A layer picker over :func:`qtutor.figures.qparams_figure` (notebook 10)."""
    picker = widgets.Dropdown(options=layers, value=layers[0], description="layer", layout=widgets.Layout(width="60%"))
    return _explorer(figures.qparams_figure, dict(layer=picker), describe=figures.describe_qparams, forms=forms)
