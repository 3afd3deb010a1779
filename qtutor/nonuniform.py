"""Non-uniform quantizers: logarithmic (powers of two), k-means codebooks, mu-law companding.

Logarithmic quantization is introduced in notebook 03, k-means and companding
in notebook 04, which also compares every method on one tensor with
:func:`compare_methods`. All quantizers are vectorised: no Python loop runs
over elements (k-means loops over its iterations only).
"""

from __future__ import annotations

import math

import torch

from qtutor._validate import check_bits, finite_values
from qtutor.observers import mse_range
from qtutor.uniform import fake_quantize, qparams, sqnr_db

__all__ = [
    "log_quantize",
    "log_dequantize",
    "log_fake_quantize",
    "shift_multiply",
    "power_of_two_scale",
    "lloyd_step",
    "uniform_codebook",
    "kmeans_codebook",
    "assign_to_codebook",
    "lut_dequantize",
    "kmeans_fake_quantize",
    "mulaw_fake_quantize",
    "METHODS",
    "compare_methods",
]


def log_quantize(x, *, bits: int = 4, max_exponent: int | None = None):
    """Sign and exponent codes of ``x`` rounded to the nearest of ``±2**e`` or 0.

    One bit holds the sign; the other ``bits - 1`` bits hold ``2**(bits-1)``
    codes: code 0 means zero, code ``k >= 1`` means magnitude
    ``2**(max_exponent - (levels - 1) + k - 1)``, so the largest magnitude is
    ``2**max_exponent`` (by default the power of two nearest ``max|x|``).
    Magnitudes round to the nearest level in linear distance.
    Returns ``(sign, code, max_exponent)`` with ``sign`` in {-1, 0, 1}.
    Introduced in notebook 03.
    """
    check_bits(bits, 2, 8)
    x = finite_values(x)
    levels = 2 ** (bits - 1) - 1  # non-zero magnitudes
    magnitude = x.abs()
    if max_exponent is None:
        top = magnitude.max().item()
        max_exponent = round(math.log2(top)) if top > 0 else 0
    min_exponent = max_exponent - levels + 1
    exponent = torch.floor(torch.log2(magnitude.clamp(min=torch.finfo(torch.float32).tiny)))
    # Round up to the next power when the value is past the midpoint 1.5 * 2**e.
    exponent = exponent + (magnitude > 1.5 * torch.exp2(exponent)).float()
    exponent = exponent.clamp(max=max_exponent)
    code = (exponent - min_exponent + 1).clamp(min=0)
    # Below the smallest level: zero when nearer 0 than 2**min_exponent.
    code = torch.where(magnitude < 0.5 * 2.0**min_exponent, 0, code.clamp(min=1)).to(torch.int64)
    sign = torch.sign(x).to(torch.int64) * (code > 0)
    return sign, code, max_exponent


def log_dequantize(sign, code, max_exponent: int, *, bits: int = 4) -> torch.Tensor:
    """Values of logarithmic codes: ``sign * 2**(min_exponent + code - 1)``, 0 for code 0."""
    check_bits(bits, 2, 8)
    min_exponent = max_exponent - (2 ** (bits - 1) - 1) + 1
    magnitude = torch.exp2((min_exponent + code - 1).to(torch.float32))
    return torch.where(code > 0, sign.to(torch.float32) * magnitude, 0.0)


def log_fake_quantize(x, *, bits: int = 4, max_exponent: int | None = None) -> torch.Tensor:
    """``x`` snapped to the nearest power-of-two level (see :func:`log_quantize`)."""
    sign, code, top = log_quantize(x, bits=bits, max_exponent=max_exponent)
    return log_dequantize(sign, code, top, bits=bits)


def shift_multiply(a: torch.Tensor, exponent: int) -> torch.Tensor:
    """``a * 2**exponent`` for integer ``a`` with a bit shift instead of a multiplier.

    A left shift for ``exponent >= 0``; an arithmetic right shift (which
    rounds toward minus infinity, like ``floor``) for ``exponent < 0``.
    Introduced in notebook 03.
    """
    if a.is_floating_point():
        raise ValueError(f"a has dtype {a.dtype}: expected an integer tensor")
    if exponent >= 0:
        return torch.bitwise_left_shift(a, exponent)
    return torch.bitwise_right_shift(a, -exponent)


def power_of_two_scale(max_abs, *, bits: int = 8) -> torch.Tensor:
    """The smallest power-of-two scale whose signed symmetric ``bits``-wide grid reaches ``max_abs``.

    ``2**ceil(log2(max_abs / (2**(bits-1) - 1)))``, computed exactly with
    ``frexp``. With such a scale, rescaling an integer result is a shift, as in
    notebook 03's multiplier-free layer. Introduced in notebook 03 (its exercise 2).
    """
    check_bits(bits, 2, 16)
    ratio = torch.as_tensor(max_abs, dtype=torch.float64) / (2 ** (bits - 1) - 1)
    if not (ratio > 0).all() or not torch.isfinite(ratio).all():
        raise ValueError(f"max_abs={max_abs!r}: expected positive finite numbers")
    mantissa, exponent = torch.frexp(ratio)  # ratio = mantissa * 2**exponent, mantissa in [0.5, 1)
    return torch.exp2(torch.where(mantissa == 0.5, exponent - 1, exponent).to(torch.float64)).to(torch.float32)


def assign_to_codebook(x, codebook) -> torch.Tensor:
    """Index of the nearest codebook entry for every element (ties go to the lower entry).

    ``codebook`` must be sorted ascending. Introduced in notebook 04.
    """
    x = finite_values(x)
    codebook = torch.as_tensor(codebook, dtype=torch.float32)
    if codebook.dim() != 1 or codebook.numel() == 0 or (codebook.diff() < 0).any():
        raise ValueError("codebook: expected a non-empty 1-D tensor sorted ascending")
    midpoints = (codebook[1:] + codebook[:-1]) / 2
    return torch.bucketize(x, midpoints, right=False)


def lut_dequantize(indices, codebook) -> torch.Tensor:
    """Values of codebook indices: a look-up table, ``codebook[indices]``. Introduced in notebook 04."""
    return torch.as_tensor(codebook, dtype=torch.float32)[torch.as_tensor(indices, dtype=torch.int64)]


def lloyd_step(x, codebook) -> torch.Tensor:
    """One Lloyd iteration: assign every value to its nearest entry, move each entry to the mean of its values.

    An entry that no value chose keeps its place. Returns the new codebook,
    sorted ascending. Introduced in notebook 04 (its exercise 2).
    """
    x = finite_values(x).flatten()
    codebook = torch.as_tensor(codebook, dtype=torch.float32)
    indices = assign_to_codebook(x, codebook)
    sums = torch.zeros(len(codebook), dtype=torch.float64).index_add_(0, indices, x.to(torch.float64))
    counts = torch.bincount(indices, minlength=len(codebook)).to(torch.float64)
    updated = torch.where(counts > 0, sums / counts.clamp(min=1), codebook.to(torch.float64))
    return torch.sort(updated.to(torch.float32)).values


def uniform_codebook(x, *, bits: int) -> torch.Tensor:
    """The levels of notebook 01's unsigned affine min-max grid for ``x`` (0 is one). Introduced in notebook 04."""
    x = finite_values(x)
    scale, zero_point = qparams(x.min(), x.max(), bits=bits)
    return (torch.arange(2**bits, dtype=torch.float32) - zero_point) * scale


def kmeans_codebook(
    x,
    *,
    bits: int = 4,
    iterations: int | None = None,
    tolerance: float = 1e-6,
    max_iterations: int = 1000,
    return_iterations: bool = False,
):
    """A ``2**bits``-entry codebook from Lloyd-Max (1-D k-means) iterations, and each element's index.

    Starts from notebook 01's uniform grid (:func:`uniform_codebook`, which has
    a level at exactly 0), so it begins at uniform quantization's error; each
    :func:`lloyd_step` can only lower the squared error. With ``iterations``
    it runs exactly that many steps; otherwise it stops when a step lowers the
    mean squared error by less than ``tolerance`` of itself (or after
    ``max_iterations``). Lloyd's algorithm stops at a local optimum, not
    necessarily the best codebook. Returns ``(codebook, indices)``, plus the
    number of steps run when ``return_iterations``. Introduced in notebook 04.
    """
    check_bits(bits, 1, 8)
    x = finite_values(x).flatten()
    codebook = uniform_codebook(x, bits=bits) if bits >= 2 else torch.stack([x.min(), x.max()])
    # The same steps as lloyd_step, on sorted values with running sums: each step costs O(2**bits log n), not O(n).
    ordered = torch.sort(x).values.to(torch.float64)
    sums = torch.cat([torch.zeros(1, dtype=torch.float64), ordered.cumsum(0)])
    squares = torch.cat([torch.zeros(1, dtype=torch.float64), (ordered**2).cumsum(0)])
    zero = torch.zeros(1, dtype=torch.int64)

    def cells(book):
        """Start and end (in sorted order) of the values nearest each entry; ties go to the lower entry."""
        edges = torch.searchsorted(ordered, (book[1:] + book[:-1]).to(torch.float64) / 2, right=True)
        return torch.cat([zero, edges]), torch.cat([edges, torch.tensor([len(ordered)])])

    def error(book):
        start, end = cells(book)
        count, total, total_sq = end - start, sums[end] - sums[start], squares[end] - squares[start]
        centre = book.to(torch.float64)
        return ((total_sq - 2 * centre * total + count * centre**2).sum() / len(ordered)).item()

    previous, steps = error(codebook), 0
    while steps < (max_iterations if iterations is None else iterations):
        start, end = cells(codebook)
        count = (end - start).to(torch.float64)
        means = (sums[end] - sums[start]) / count.clamp(min=1)
        codebook = torch.sort(torch.where(count > 0, means, codebook.to(torch.float64)).to(torch.float32)).values
        steps += 1
        if iterations is None:
            current = error(codebook)
            if previous - current <= tolerance * previous:
                break
            previous = current
    indices = assign_to_codebook(x, codebook)
    return (codebook, indices, steps) if return_iterations else (codebook, indices)


def kmeans_fake_quantize(x, *, bits: int = 4) -> torch.Tensor:
    """``x`` replaced by its nearest entry of a converged k-means codebook, in the shape of ``x``."""
    x = finite_values(x)
    codebook, indices = kmeans_codebook(x, bits=bits)
    return lut_dequantize(indices, codebook).reshape(x.shape)


def mulaw_fake_quantize(x, *, bits: int = 8, mu: float = 255.0) -> torch.Tensor:
    """mu-law companding: compress, quantize uniformly, expand.

    ``y = sign(x) * ln(1 + mu |x| / m) / ln(1 + mu)`` with ``m = max|x|`` maps
    values to [-1, 1] with more levels near zero; ``y`` is quantized with a
    signed uniform quantizer whose outermost levels are exactly ±1, and expanded back. Introduced in notebook 04.
    """
    check_bits(bits, 2, 16)
    if not mu > 0:
        raise ValueError(f"mu={mu!r}: expected a positive number")
    x = finite_values(x)
    peak = x.abs().max()
    if peak == 0:
        return x.clone()
    compressed = torch.sign(x) * torch.log1p(mu * x.abs() / peak) / math.log1p(mu)
    scale = 1.0 / (2 ** (bits - 1) - 1)  # levels -1..1 in steps of scale: the peak stays exact
    snapped = fake_quantize(compressed, scale, 0, bits=bits, signed=True)
    return torch.sign(snapped) * peak * torch.expm1(snapped.abs() * math.log1p(mu)) / mu


def _uniform(x, bits):
    scale, zero_point = qparams(x.min(), x.max(), bits=bits)
    return fake_quantize(x, scale, zero_point, bits=bits)


def _clipped(x, bits):
    scale, zero_point = qparams(*mse_range(x, bits=bits), bits=bits)
    return fake_quantize(x, scale, zero_point, bits=bits)


# Every method of notebooks 01-04 as (x, bits) -> x_hat; compare_methods and the method explorer use it.
METHODS = {
    "uniform": _uniform,
    "clipped": _clipped,
    "log": lambda x, bits: log_fake_quantize(x, bits=bits),
    "kmeans": lambda x, bits: kmeans_fake_quantize(x, bits=bits),
    "mulaw": lambda x, bits: mulaw_fake_quantize(x, bits=bits),
}


def compare_methods(x, bit_widths=(2, 3, 4, 8)) -> dict[str, dict[int, float]]:
    """SQNR in dB of every method at every bit width, on the same tensor ``x``.

    Methods (:data:`METHODS`): ``uniform`` (min-max), ``clipped`` (uniform over
    the MSE-optimal clipped range), ``log`` (powers of two), ``kmeans``
    (Lloyd-Max codebook) and ``mulaw`` (companding). Introduced in notebook 04.
    """
    x = finite_values(x)
    return {name: {bits: sqnr_db(x, method(x, bits)) for bits in bit_widths} for name, method in METHODS.items()}
