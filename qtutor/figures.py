"""The explorers' figures: pure functions from plain arguments to ``(figure, stats)``, and their one-line readouts.

Each ``*_figure`` function draws a ``matplotlib.figure.Figure`` without pyplot
(with the pieces of :mod:`qtutor.plots` and its :data:`~qtutor.plots.PALETTE`)
and returns it with a dict of the numbers it shows; a ``describe_*`` function
turns those numbers into the line printed under the picture. The unit tests
call them at the controls' extremes; :mod:`qtutor.widgets` wires sliders to
them. Each names the notebook it serves.
"""

from __future__ import annotations

import torch
from matplotlib.ticker import MaxNLocator

from qtutor.formats import FORMATS
from qtutor.intmath import fixed_point_multiplier, requantize
from qtutor.largemodels import smooth, smoothing_factors, w8a8_linear
from qtutor.nonuniform import METHODS
from qtutor.observers import clip_errors, grid_errors
from qtutor.plots import PALETTE, draw_bit_layout, new_figure, plot_error, plot_levels
from qtutor.uniform import dequantize, fake_quantize, mse, qparams, qrange, quantize, sqnr_db

__all__ = [
    "format_stats",
    "describe_format",
    "describe_uniform",
    "describe_clipping",
    "describe_method",
    "describe_requantize",
    "format_figure",
    "uniform_figure",
    "clipping_figure",
    "method_figure",
    "requantize_figure",
    "layer_figure",
    "precision_figure",
    "ste_figure",
    "smoothquant_figure",
    "qparams_figure",
    "describe_qparams",
]


def format_stats(stats: dict) -> str:
    """One line of ``name=value`` pairs, numbers rounded for reading."""
    parts = []
    for name, value in stats.items():
        parts.append(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}")
    return "  ".join(parts)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g} %"


def describe_format(stats: dict) -> str:
    """The format explorer's readout (notebook 00)."""
    return (
        f"stored as {stats['stored']!r}  ·  absolute error {stats['abs_error']:.3g}  ·  "
        f"relative error {_percent(stats['rel_error'])}"
    )


def describe_uniform(stats: dict) -> str:
    """The uniform explorer's readout (notebook 01)."""
    return (
        f"scale {stats['scale']:.4g}  ·  zero-point {stats['zero_point']}  ·  MSE {stats['mse']:.4g}  ·  "
        f"SQNR {stats['sqnr_db']:.1f} dB  ·  {_percent(stats['clipped'])} of values clipped"
    )


def describe_clipping(stats: dict) -> str:
    """The clipping explorer's readout (notebook 02)."""
    return (
        f"clip at ±{stats['clip']:.3g}  ·  clipping MSE {stats['clipping']:.3g} + rounding MSE "
        f"{stats['rounding']:.3g} = {stats['total']:.3g}  ·  {_percent(stats['clipped_fraction'])} of values "
        "clipped"
    )


def describe_method(stats: dict) -> str:
    """The method explorer's readout (notebooks 03, 04)."""
    return f"SQNR {stats['sqnr_db']:.1f} dB  ·  MSE {stats['mse']:.3g}  ·  {stats['levels_used']} levels used"


def describe_requantize(stats: dict) -> str:
    """The requantization explorer's readout (notebook 05)."""
    return (
        f"m0 keeps {stats['mantissa_bits']} significant bits  ·  multiplier off by "
        f"{_percent(stats['multiplier_rel_error'])}  ·  {_percent(stats['outputs_changed'])} of outputs change, "
        f"by at most {stats['max_change']} code{'s' if stats['max_change'] != 1 else ''}"
    )


def format_figure(value: float = 0.1, format_name: str = "FP16"):
    """Store ``value`` in one of :data:`qtutor.formats.FORMATS`; draw its bits and report the error (notebook 00).

    Integer formats round to the nearest whole number and saturate at their
    limits; float formats round to the nearest representable value, overflow
    to infinity and underflow to zero. Returns ``(figure, stats)``.
    """
    dtype = FORMATS[format_name]
    if dtype.is_floating_point:
        stored = torch.tensor(value, dtype=torch.float64).to(dtype).item()
    else:
        info = torch.iinfo(dtype)
        stored = float(min(max(round(value), info.min), info.max))
    figure, ax = new_figure(9, 1.3)
    draw_bit_layout(ax, stored, dtype, label=f"{value!r} stored as {format_name}: {stored!r}")
    error = abs(stored - value)
    stats = {"stored": stored, "abs_error": error, "rel_error": error / abs(value) if value else 0.0}
    return figure, stats


def uniform_figure(
    x, *, bits: int = 8, low: float = -1.0, high: float = 1.0, zero_point: int | None = None, signed: bool = False
):
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
    plot_error(right, x, x_hat, step=scale.item())
    stats = {
        "scale": scale.item(),
        "zero_point": int(zp.item()),
        "mse": mse(x, x_hat),
        "sqnr_db": sqnr_db(x, x_hat),
        "clipped": grid_errors(x, scale, zp, bits=bits, signed=signed)["clipped_fraction"],
    }
    return figure, stats


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
    left.hist(x.flatten().numpy(), bins=150, color=PALETTE["values"])
    for edge in (-clip * top, clip * top):
        left.axvline(edge, color=PALETTE["levels"])
    left.set_yscale("log")
    left.set_xlabel("value")
    left.set_ylabel("count (log scale)")
    left.set_title(f"clip at ±{clip * top:.3g} ({chosen['clipped_fraction']:.2%} of values clipped)", fontsize=10)
    # A log axis, with anything below a thousandth of the smallest total (zero included) drawn at that floor.
    floor = max(min(c["total"] for c in curves) / 1e3, 1e-30)
    for name, role in (("clipping", "change"), ("rounding", "rounding"), ("total", "main")):
        right.plot(fractions, [max(c[name], floor) for c in curves], label=name, color=PALETTE[role])
    right.plot([clip], [max(chosen["total"], floor)], "o", color=PALETTE["picked"])
    right.set_yscale("log")
    right.set_xlabel("clipping range as a fraction of max|x|")
    right.set_ylabel("MSE")
    right.set_title(f"{bits}-bit signed affine grid over ±clip: error against clipping range", fontsize=10)
    right.legend(fontsize=8)
    stats = {"clip": clip * top, **chosen}
    return figure, stats


def method_figure(x, *, method: str = "uniform", bits: int = 3):
    """Quantize ``x`` with one of :data:`METHODS`; draw the levels it used and the error (notebooks 03, 04).

    The levels are drawn on a symmetric-log axis (linear near zero), so that
    levels crowded near zero stay apart. Returns ``(figure, stats)`` with the
    SQNR, MSE and number of distinct levels used.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {list(METHODS)}")
    x = torch.as_tensor(x, dtype=torch.float32)
    x_hat = METHODS[method](x, bits)
    levels = torch.unique(x_hat)
    figure, (left, right) = new_figure(10, 3.2, ncols=2)
    plot_levels(left, x, levels, title=f"{method}, {bits} bits: {len(levels)} levels used", symlog=True)
    plot_error(right, x, x_hat)
    stats = {"sqnr_db": sqnr_db(x, x_hat), "mse": mse(x, x_hat), "levels_used": len(levels)}
    return figure, stats


def requantize_figure(acc, *, multiplier: float, zero_point: int, mantissa_bits: int = 24):
    """Requantize with ``m0`` cut to ``mantissa_bits`` significant bits, against the full one (notebook 05).

    A float32 multiplier has 24 significant bits, so any width from 24 up
    gives the same outputs. Uses the fixed-point :func:`requantize`. Returns
    ``(figure, stats)``: how many outputs change, by how much, and the
    multiplier's relative error.
    """
    exact = requantize(acc, multiplier, zero_point).to(torch.int64)
    approx = requantize(acc, multiplier, zero_point, mantissa_bits=mantissa_bits).to(torch.int64)
    difference = approx - exact
    m0, shift = fixed_point_multiplier(multiplier, mantissa_bits=mantissa_bits)
    represented = m0.double() * torch.exp2(-shift.double())
    relative = abs(represented.item() - float(multiplier)) / float(multiplier)
    figure, (left, right) = new_figure(10, 3.0, ncols=2)
    left.scatter(acc.flatten().numpy(), approx.flatten().numpy(), s=2, color=PALETTE["error"])
    left.xaxis.set_major_locator(MaxNLocator(5))
    left.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    left.set_xlabel("int32 accumulator")
    left.set_ylabel("uint8 output")
    left.set_title(f"M = {float(multiplier):.6g} as {m0.item()} * 2^-{shift.item()}", fontsize=10)
    values, counts = torch.unique(difference, return_counts=True)
    right.bar(values.numpy(), counts.numpy(), color=PALETTE["change"], width=0.6)
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_yscale("log")
    right.set_xlabel(f"output change, {mantissa_bits}-bit m0 against the full one (codes)")
    right.set_ylabel("outputs")
    stats = {
        "mantissa_bits": mantissa_bits,
        "multiplier_rel_error": relative,
        "outputs_changed": (difference != 0).float().mean().item(),
        "max_change": int(difference.abs().max()),
    }
    return figure, stats


def layer_figure(activations: dict, layers: list[dict], *, layer: str):
    """One layer's float activations against the range its quantization parameters cover (notebook 06).

    ``activations`` maps layer names to the float tensors its observer saw
    (:func:`qtutor.ptq.observed_activations`); ``layers`` are the rows of
    :func:`qtutor.ptq.quantized_layers`, whose ``quant_min``/``quant_max`` give
    the codes the observer planned for (0..127 with ``reduce_range``, -128..127
    for a signed type). Returns ``(figure, stats)``.
    """
    row = next((r for r in layers if r["layer"] == layer), None)
    if row is None or layer not in activations:
        raise ValueError(f"layer={layer!r}: expected one of the quantized layers with recorded activations")
    x = activations[layer].flatten().to(torch.float32)
    scale, zero_point = row["scale"], row["zero_point"]
    low, high = row["quant_min"], row["quant_max"]
    bits, signed = (high - low + 1).bit_length() - 1, low < 0
    if (low, high) != qrange(bits, signed):
        raise ValueError(f"codes {low}..{high}: expected the range of a signed or unsigned whole number of bits")
    levels = dequantize(torch.arange(low, high + 1), scale, zero_point)
    codes = quantize(x, scale, zero_point, bits=bits, signed=signed)  # codes within the planned range
    x_hat = dequantize(codes, scale, zero_point)
    used = torch.unique(codes)
    figure, (left, right) = new_figure(10, 3.2, ncols=2)
    left.axvspan(levels[0].item(), levels[-1].item(), color=PALETTE["levels"], alpha=0.12, label=f"codes {low}..{high}")
    left.hist(x.numpy(), bins=120, color=PALETTE["values"])
    left.set_yscale("log")
    left.set_title(f"{layer} ({row['kind']})", fontsize=10)
    left.set_xlabel("float activation")
    left.set_ylabel("count")
    left.legend(fontsize=8)
    right.hist(codes.numpy(), bins=high - low + 1, range=(low - 0.5, high + 0.5), color=PALETTE["rounding"])
    right.set_yscale("log")
    right.set_xlabel(f"code ({low}..{high})")
    right.set_ylabel("count")
    right.set_title(
        f"scale {scale:.4g}, zero-point {zero_point}: {len(used)} of {high - low + 1} codes used", fontsize=10
    )
    stats = {
        "scale": scale,
        "zero_point": zero_point,
        "codes": high - low + 1,
        "codes_used": len(used),
        "sqnr_db": sqnr_db(x, x_hat),
        "clipped": grid_errors(x, scale, zero_point, bits=bits, signed=signed)["clipped_fraction"],
    }
    return figure, stats


def precision_figure(outputs: dict, *, variant: str, reference: str = "FP32"):
    """How far one numeric variant's outputs (logits) move from the reference's (notebook 07).

    ``outputs`` maps a variant name ("FP32", "BF16", "INT8 static", ...) to
    the same inputs' output tensors. Returns ``(figure, stats)`` with the
    largest and mean absolute difference and the share of top-1 predictions
    that agree with the reference.
    """
    if variant not in outputs or reference not in outputs:
        raise ValueError(f"variant={variant!r}: expected one of {list(outputs)}")
    base, other = outputs[reference].to(torch.float32), outputs[variant].to(torch.float32)
    difference = (other - base).flatten()
    figure, (left, right) = new_figure(10, 3.0, ncols=2)
    left.hist(difference.numpy(), bins=60, color=PALETTE["change"])
    left.set_xlabel(f"{variant} - {reference} (logit difference)")
    left.set_ylabel("logits (count)")
    left.set_title(f"{variant}: output differences", fontsize=10)
    right.scatter(base.flatten().numpy(), other.flatten().numpy(), s=4, color=PALETTE["main"])
    right.set_xlabel(f"{reference} logit")
    right.set_ylabel(f"{variant} logit")
    stats = {
        "max_abs_diff": difference.abs().max().item(),
        "mean_abs_diff": difference.abs().mean().item(),
        "top1_agreement": (other.argmax(1) == base.argmax(1)).float().mean().item(),
    }
    right.set_title(f"top-1 agreement {stats['top1_agreement']:.1%}", fontsize=10)
    return figure, stats


def ste_figure(*, bits: int = 3, high: float = 1.0):
    """The fake-quantize function over [-2, 2] and the gradient the straight-through estimator passes (notebook 08).

    The grid is signed and symmetric over ``[-high, high]`` as PyTorch computes
    it, so its levels run from ``-2**(bits-1) * scale`` to
    ``(2**(bits-1) - 1) * scale``. Returns ``(figure, stats)``.
    """
    from qtutor.qat import ste_fake_quantize

    x = torch.linspace(-2, 2, 801, requires_grad=True)
    scale, zero_point = qparams(-high, high, bits=bits, signed=True, symmetric=True)
    qmin, qmax = qrange(bits, signed=True)
    low_level, high_level = (qmin - zero_point.item()) * scale.item(), (qmax - zero_point.item()) * scale.item()
    y = ste_fake_quantize(x, scale, zero_point, bits=bits, signed=True)
    y.sum().backward()
    figure, (left, right) = new_figure(10, 3.0, ncols=2)
    left.plot(x.detach().numpy(), x.detach().numpy(), color=PALETTE["guide"], linewidth=0.8, label="identity")
    left.plot(x.detach().numpy(), y.detach().numpy(), color=PALETTE["main"], label="fake_quantize")
    left.set_xlabel("input x")
    left.set_ylabel("fake_quantize(x)")
    left.legend(fontsize=8)
    left.set_title(f"forward: {bits} bits, levels {low_level:.2f} .. {high_level:.2f} (range ±{high:.2f})", fontsize=10)
    right.plot(x.detach().numpy(), x.grad.numpy(), color=PALETTE["change"])
    right.set_ylim(-0.1, 1.1)
    right.set_xlabel("input x")
    right.set_ylabel("gradient passed back")
    right.set_title("backward: straight-through inside the range, zero where clamped", fontsize=10)
    stats = {
        "bits": bits,
        "scale": scale.item(),
        "lowest_level": low_level,
        "highest_level": high_level,
        "gradient_passes": x.grad.mean().item(),
        "levels": len(torch.unique(y.detach())),
    }
    return figure, stats


def _smoothed_w8a8(x, weight, alpha):
    """SmoothQuant at ``alpha`` (None: no smoothing), then W8A8: ``(x, weight, output)`` after smoothing."""
    if alpha is not None:
        x, weight = smooth(x, weight, smoothing_factors(x.abs().amax(dim=0), weight, alpha))
    return x, weight, w8a8_linear(x, weight)


def smoothquant_figure(x, weight, channels, *, outlier_size: float = 50.0, alpha: float = 0.5, points: int = 21):
    """SmoothQuant on a toy layer: ``x``'s ``channels`` scaled by ``outlier_size``, smoothed at ``alpha`` (notebook 11).

    Left and middle: every input channel's ``max|X_j|`` and ``max|W_j|`` before (grey) and after smoothing.
    Right: the W8A8 output's SQNR (per-tensor activations, per-channel weights) against alpha, without
    smoothing as a dashed line, the chosen alpha as a dot. Returns ``(figure, stats)``.
    """
    x = torch.as_tensor(x, dtype=torch.float32).clone()
    x[:, channels] *= outlier_size
    reference = torch.nn.functional.linear(x, weight)
    alphas = torch.linspace(0, 1, points).tolist()
    curve = [sqnr_db(reference, _smoothed_w8a8(x, weight, a)[2]) for a in alphas]
    plain = sqnr_db(reference, _smoothed_w8a8(x, weight, None)[2])
    x_smooth, w_smooth, output = _smoothed_w8a8(x, weight, alpha)
    figure, (left, middle, right) = new_figure(12, 3.2, ncols=3)
    for ax, before, after, name in (
        (left, x, x_smooth, "activations max|X_j|"),
        (middle, weight, w_smooth, "weights max|W_j|"),
    ):
        ax.plot(before.abs().amax(dim=0).numpy(), color=PALETTE["before"], linewidth=0.8, label="before")
        ax.plot(after.abs().amax(dim=0).numpy(), color=PALETTE["change"], linewidth=0.8, label=f"alpha {alpha:.2f}")
        ax.set_yscale("log")
        ax.set_xlabel("input channel j")
        ax.set_title(f"{name}: largest {after.abs().max().item():.3g}", fontsize=10)
        ax.legend(fontsize=8)
    right.plot(alphas, curve, color=PALETTE["main"])
    right.axhline(plain, color=PALETTE["before"], linestyle="--", label="no smoothing")
    right.plot([alpha], [sqnr_db(reference, output)], "o", color=PALETTE["change"])
    right.set_xlabel("alpha (migration strength)")
    right.set_ylabel("W8A8 output SQNR (dB)")
    right.set_title(f"outliers {outlier_size:g}x: output error", fontsize=10)
    right.legend(fontsize=8)
    stats = {
        "act_max": x_smooth.abs().max().item(),
        "weight_max": w_smooth.abs().max().item(),
        "sqnr_db": sqnr_db(reference, output),
        "sqnr_db_unsmoothed": plain,
    }
    return figure, stats


def _range_bars(ax, rows: dict, title: str) -> None:
    """Horizontal bars of the real range each form's codes cover, labelled with its scale, zero-point and codes."""
    for y, q in enumerate(rows.values()):
        ax.barh(y, q.high - q.low, left=q.low, color=PALETTE["values"], height=0.6)
        ax.text(q.low, y + 0.38, f"S={q.scale:.4g}  zp={q.zero_point}  {q.codes} codes", fontsize=7)
    ax.axvline(0, color=PALETTE["guide"], linewidth=0.8)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_ylim(-0.5, len(rows))
    ax.set_xlabel("real values the codes cover")
    ax.set_title(title, fontsize=10)


def qparams_figure(forms: dict, *, layer: str):
    """One convolution's quantization in several forms of the model, side by side (notebook 10).

    ``forms`` maps a form's name ("PyTorch FX", "ONNX Runtime", ...) to a function that reads a layer's
    :class:`qtutor.deploy.LayerQParams` out of it; the first form is the reference for the weight scales.
    Returns ``(figure, stats)``: the figure draws the range each form's input and output codes cover and each
    output channel's weight scale divided by the reference's.
    """
    read = {name: reader(layer) for name, reader in forms.items()}
    reference = next(iter(read.values())).weight_scales
    figure, (left, middle, right) = new_figure(12, 3.0, ncols=3)
    _range_bars(left, {name: q.input for name, q in read.items()}, f"{layer}: input")
    _range_bars(middle, {name: q.output for name, q in read.items()}, "output")
    stats = {}
    for name, q in read.items():
        ratio = q.weight_scales / reference
        right.plot(ratio.numpy(), ".", label=name, markersize=4)
        stats[name] = {"input": q.input, "output": q.output, "weight_scale_ratio": ratio.median().item()}
    right.set_xlabel("output channel")
    right.set_ylabel(f"weight scale / {next(iter(read))}'s")
    right.set_title("per-channel weight scales", fontsize=10)
    right.legend(fontsize=7)
    return figure, stats


def describe_qparams(stats: dict) -> str:
    """One line per form: input and output scale and zero-point, weight scales against the first form's."""
    return "  |  ".join(
        f"{name}: input {s['input'].scale:.4g}/{s['input'].zero_point}, output "
        f"{s['output'].scale:.4g}/{s['output'].zero_point}, weights x{s['weight_scale_ratio']:.4f}"
        for name, s in stats.items()
    )
