"""Range estimators ("observers"): which ``[min, max]`` to quantize a tensor over.

Introduced in notebook 02 (min-max and calibration). Min-max and its moving
average equal PyTorch's ``MinMaxObserver``, ``PerChannelMinMaxObserver`` and
``MovingAverageMinMaxObserver``; the percentile range equals
``torch.quantile``; the MSE-optimal and entropy (KL-divergence) ranges clip
outliers to trade clipping error for rounding error, like PyTorch's
``HistogramObserver`` (which :func:`pytorch_histogram_range` wraps for
comparison).
"""

from __future__ import annotations

import torch

from qtutor._validate import finite_values
from qtutor.uniform import fake_quantize, qparams, qrange

__all__ = [
    "minmax_range",
    "MovingAverageMinMax",
    "percentile_range",
    "mse_range",
    "entropy_range",
    "pytorch_histogram_range",
    "clip_errors",
    "grid_errors",
]


def minmax_range(x, axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest and largest value of ``x``: per tensor, or per channel along ``axis``.

    Equals ``MinMaxObserver`` (and ``PerChannelMinMaxObserver(ch_axis=axis)``) ``min_val``/``max_val``.
    """
    x = finite_values(x)
    if axis is None:
        return torch.aminmax(x)
    flat = x.movedim(axis, 0).flatten(1)
    return torch.aminmax(flat, dim=1)


class MovingAverageMinMax:
    """Min-max smoothed over calibration batches: ``range += c * (batch_range - range)``.

    The first batch sets the range; later ones move it by ``averaging_constant``.
    Equals PyTorch's ``MovingAverageMinMaxObserver`` (same default constant, 0.01).
    """

    def __init__(self, averaging_constant: float = 0.01):
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant={averaging_constant!r}: expected a number in (0, 1]")
        self.averaging_constant = averaging_constant
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None

    def update(self, x) -> MovingAverageMinMax:
        """Fold one batch into the range; returns self so calls can chain."""
        low, high = minmax_range(x)
        if self.min_val is None:
            self.min_val, self.max_val = low, high
        else:
            self.min_val = self.min_val + self.averaging_constant * (low - self.min_val)
            self.max_val = self.max_val + self.averaging_constant * (high - self.max_val)
        return self

    @property
    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current ``(min, max)``; raises if no batch was seen."""
        if self.min_val is None:
            raise ValueError("no batch seen yet: call update(x) at least once")
        return self.min_val, self.max_val


def percentile_range(x, percentile: float = 99.99) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(100 - p)``-th and ``p``-th percentiles of ``x``: a range that ignores rare outliers.

    Linear interpolation between order statistics, as ``torch.quantile`` does
    (but without its 16M-element limit).
    """
    if not 50 < percentile <= 100:
        raise ValueError(f"percentile={percentile!r}: expected a number above 50 and at most 100")
    x = finite_values(x).flatten().to(torch.float64)
    ordered = torch.sort(x).values
    positions = torch.tensor([100 - percentile, percentile], dtype=torch.float64) / 100 * (x.numel() - 1)
    below = positions.floor().long()
    above = positions.ceil().long()
    weight = positions - below
    values = ordered[below] + (ordered[above] - ordered[below]) * weight
    return values[0].to(torch.float32), values[1].to(torch.float32)


def mse_range(x, *, bits: int = 8, signed: bool = False, steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped min-max range ``(a * min, a * max)`` whose fake quantization has the least MSE.

    Tries ``steps`` fractions ``a`` evenly spaced in (0, 1]; ``a = 1`` is plain
    min-max. Smaller ``a`` clips more outliers but rounds the rest more finely.
    """
    x = finite_values(x)
    low, high = torch.aminmax(x)
    best = (float("inf"), low, high)
    for fraction in torch.linspace(1.0 / steps, 1.0, steps):
        candidate_low, candidate_high = low * fraction, high * fraction
        scale, zero_point = qparams(candidate_low, candidate_high, bits=bits, signed=signed)
        error = torch.mean((fake_quantize(x, scale, zero_point, bits=bits, signed=signed) - x) ** 2).item()
        if error < best[0]:
            best = (error, candidate_low, candidate_high)
    return best[1], best[2]


def entropy_range(x, *, bits: int = 8, bins: int = 2048, stride: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric range ``(-t, t)`` whose clipped, quantized histogram of ``|x|`` is closest in KL divergence.

    The calibration TensorRT made popular: build a ``bins``-bin histogram of
    ``|x|``, and for each candidate threshold (every ``stride`` bins) fold the
    tail into the last bin, merge the kept bins into ``2**(bits-1)`` levels,
    and measure how much information the merge loses.
    """
    x = finite_values(x)
    levels = 2 ** (bits - 1)
    if bins < levels:
        raise ValueError(f"bins={bins}: expected at least {levels} bins for {bits} bits")
    magnitude = x.abs().flatten()
    top = magnitude.max()
    if top == 0:
        return top, top
    hist = torch.histc(magnitude, bins=bins, min=0, max=top.item()).to(torch.float64)
    best_kl, best_edge = float("inf"), bins
    for edge in range(levels, bins + 1, stride):
        kl = _clipping_kl(hist, edge, levels)
        if kl < best_kl:
            best_kl, best_edge = kl, edge
    threshold = top * best_edge / bins
    return -threshold, threshold


def _clipping_kl(hist: torch.Tensor, edge: int, levels: int) -> float:
    """KL(P || Q): P keeps ``hist[:edge]`` with the tail folded in, Q is P merged into ``levels`` bins."""
    reference = hist[:edge].clone()
    reference[-1] += hist[edge:].sum()
    kept = hist[:edge]
    group = torch.arange(edge) * levels // edge
    group_sum = torch.zeros(levels, dtype=torch.float64).index_add_(0, group, kept)
    group_nonzero = torch.zeros(levels, dtype=torch.float64).index_add_(0, group, (kept > 0).double())
    expanded = torch.where(kept > 0, group_sum[group] / group_nonzero[group].clamp(min=1), 0.0)
    p = reference / reference.sum()
    q = expanded / expanded.sum().clamp(min=1e-300)
    mask = p > 0
    q = torch.where(mask & (q == 0), 1e-12, q)  # smoothing: a level Q never produces costs a lot, not infinity
    return torch.sum(p[mask] * torch.log(p[mask] / q[mask])).item()


def pytorch_histogram_range(x, *, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The range PyTorch's ``HistogramObserver`` picks for ``x`` (unsigned affine), read back from its qparams."""
    from torch.ao.quantization import HistogramObserver

    qmin, qmax = qrange(bits)
    observer = HistogramObserver(dtype=torch.quint8, quant_min=qmin, quant_max=qmax)
    observer(finite_values(x))
    scale, zero_point = observer.calculate_qparams()
    return (qmin - zero_point[0]) * scale[0], (qmax - zero_point[0]) * scale[0]


def clip_errors(x, low, high, *, bits: int = 8, signed: bool = False) -> dict[str, float]:
    """Split the squared error of quantizing ``x`` over ``[low, high]`` into clipping and rounding parts.

    The grid is :func:`qtutor.qparams`'s for that range; see :func:`grid_errors`
    for what comes back. Introduced in notebook 02 (its clipping explorer).
    """
    scale, zero_point = qparams(low, high, bits=bits, signed=signed)
    return grid_errors(x, scale, zero_point, bits=bits, signed=signed)


def grid_errors(x, scale, zero_point, *, bits: int = 8, signed: bool = False) -> dict[str, float]:
    """The squared error of fake-quantizing ``x`` on the grid ``(scale, zero_point)``, split in two.

    Returns mean squared errors ``clipping`` (from values outside the grid's
    range), ``rounding`` (from values inside, up to half a step past the
    outermost level) and their sum ``total``, plus the ``clipped_fraction`` of
    values outside. The explorers of notebooks 01, 02 and 06 report that fraction.
    """
    x = finite_values(x)
    scale, zero_point = torch.as_tensor(scale, dtype=torch.float32), torch.as_tensor(zero_point)
    squared = (fake_quantize(x, scale, zero_point, bits=bits, signed=signed) - x) ** 2
    # Beyond half a step past the outermost level, rounding alone cannot explain the error.
    qmin, qmax = qrange(bits, signed)
    outside = (x < (qmin - zero_point - 0.5) * scale) | (x > (qmax - zero_point + 0.5) * scale)
    count = x.numel()
    return {
        "clipping": (squared * outside).sum().item() / count,
        "rounding": (squared * ~outside).sum().item() / count,
        "total": squared.mean().item(),
        "clipped_fraction": outside.float().mean().item(),
    }
