"""Uniform (affine) quantization: scale, zero-point, quantize, dequantize.

Introduced in notebook 01 (uniform quantization); every later notebook and the
command line build on it. Each function matches PyTorch's own kernels bit for
bit at 8 bits (``torch.quantize_per_tensor``, ``torch.quantize_per_channel``,
``torch.fake_quantize_per_tensor_affine``,
``torch.fake_quantize_per_channel_affine`` and the ``MinMaxObserver`` family),
and extends them to any bit width from 2 to 16.

The affine map between a real value ``x`` and its integer code ``q`` is::

    q = clamp(round(x / scale) + zero_point, qmin, qmax)
    x_hat = (q - zero_point) * scale

``round`` is round-half-to-even, and ``x / scale`` is computed as
``x * (1 / scale)`` in float32, exactly as PyTorch's kernels do it.
"""

from __future__ import annotations

import math

import torch

from qtutor._validate import MAX_BITS, MIN_BITS, affine_params, check_bits, finite_tensor, float_input

__all__ = [
    "MIN_BITS",
    "MAX_BITS",
    "qrange",
    "integer_dtype",
    "qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_group",
    "mse",
    "sqnr_db",
]

# torch.finfo(torch.float32).eps: PyTorch's observers never return a smaller scale.
_EPS = torch.finfo(torch.float32).eps


def qrange(bits: int = 8, signed: bool = False) -> tuple[int, int]:
    """The integer range ``(qmin, qmax)`` of a ``bits``-wide code.

    Unsigned codes run from 0 to 2**bits - 1, signed ones (two's complement)
    from -2**(bits-1) to 2**(bits-1) - 1. Introduced in notebook 01.

    >>> qrange(8), qrange(8, signed=True), qrange(4)
    ((0, 255), (-128, 127), (0, 15))
    """
    check_bits(bits)
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def integer_dtype(bits: int = 8, signed: bool = False) -> torch.dtype:
    """The smallest torch integer dtype that holds every ``bits``-wide code.

    uint8/int8 up to 8 bits, int16 for signed codes up to 16 bits, int32 for
    unsigned codes of 9 to 16 bits. Introduced in notebook 01.
    """
    check_bits(bits)
    if bits <= 8:
        return torch.int8 if signed else torch.uint8
    return torch.int16 if signed else torch.int32


def qparams(min_val, max_val, *, bits: int = 8, signed: bool = False, symmetric: bool = False):
    """Scale and zero-point that map the range ``[min_val, max_val]`` onto ``bits``-wide codes.

    ``min_val`` and ``max_val`` are numbers (per-tensor) or 1-D tensors of the
    same length (per-channel). The range is first widened to include 0, so that
    a real 0 (zero padding, ReLU outputs) has an exact code.

    - affine (``symmetric=False``): ``scale = (max - min) / (qmax - qmin)`` and
      ``zero_point = qmin - round(min / scale)``, clamped into the code range.
    - symmetric: ``scale = max(|min|, |max|) / ((qmax - qmin) / 2)`` and the
      zero-point is 0 for signed codes, ``2**(bits-1)`` for unsigned ones.

    The scale is never below float32's machine epsilon. Returns
    ``(scale, zero_point)`` as float32 and int64 tensors shaped like the inputs
    (0-d for numbers). At 8 bits the results equal PyTorch's
    ``MinMaxObserver`` / ``PerChannelMinMaxObserver.calculate_qparams`` for
    quint8/qint8, affine/symmetric. Introduced in notebook 01.

    >>> qparams(-1.0, 1.0)  # zero_point 127, not 128: -1 / scale is -127.49999 in float32
    (tensor(0.0078), tensor(127))
    >>> qparams(-1.0, 1.0, symmetric=True)
    (tensor(0.0078), tensor(128))
    """
    qmin, qmax = qrange(bits, signed)
    low = finite_tensor(min_val, "min_val")
    high = finite_tensor(max_val, "max_val")
    if low.shape != high.shape or low.dim() > 1:
        raise ValueError(
            f"min_val shape {tuple(low.shape)} and max_val shape {tuple(high.shape)}: "
            "expected two numbers or two 1-D tensors of the same length"
        )
    if (low > high).any():
        bad = (low > high).nonzero().flatten()[0].item() if low.dim() else None
        where = "" if bad is None else f" at channel {bad}"
        pair = (low, high) if bad is None else (low[bad], high[bad])
        raise ValueError(
            f"min_val={pair[0].item()!r} is above max_val={pair[1].item()!r}{where}: expected min_val <= max_val"
        )
    low = torch.minimum(low, torch.zeros_like(low))
    high = torch.maximum(high, torch.zeros_like(high))
    eps = torch.tensor(_EPS, dtype=torch.float32)
    if symmetric:
        scale = torch.maximum(torch.maximum(-low, high) / (float(qmax - qmin) / 2), eps)
        zero_point = torch.full_like(low, 0 if signed else 2 ** (bits - 1), dtype=torch.int64)
    else:
        scale = torch.maximum((high - low) / float(qmax - qmin), eps)
        zero_point = qmin - torch.round(low / scale).to(torch.int64)
        zero_point = zero_point.clamp(qmin, qmax)
    return scale, zero_point


def _checked(x, scale, zero_point, bits, signed, axis):
    """``x`` as float32, and the scale and zero-point checked against the code range and shaped along ``axis``."""
    qmin, qmax = qrange(bits, signed)
    x = float_input(x)
    kind = f"{'signed' if signed else 'unsigned'} {bits}-bit"
    scale_b, zp_b = affine_params(x, scale, zero_point, axis, code_range=(qmin, qmax), kind=kind)
    return x, scale_b, zp_b, qmin, qmax


BLOCK = 1 << 21  # values per block in quantize: 2M float32 = 8 MB


def _codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int):
    """Integer codes as float32 values: clamp(round(x * (1/scale)) + zero_point)."""
    codes = x * torch.reciprocal(scale)  # one new tensor, then in-place steps: no extra passes over memory
    return codes.round_().add_(zero_point).clamp_(qmin, qmax)


def quantize(x, scale, zero_point, *, bits: int = 8, signed: bool = False, axis: int | None = None):
    """Integer codes of ``x``: ``clamp(round(x / scale) + zero_point, qmin, qmax)``.

    Per-tensor when ``axis`` is None (one scale and zero-point); per-channel
    when ``axis`` names a dimension of ``x`` (one scale and zero-point per index
    along it). Rounding is half-to-even on ``x * (1 / scale)`` in float32, as
    PyTorch does. Returns uint8/int8 codes up to 8 bits and a wider integer
    dtype above (see :func:`integer_dtype`). Bit-exact against
    ``torch.quantize_per_tensor`` / ``torch.quantize_per_channel(...).int_repr()``.
    Introduced in notebook 01.

    >>> quantize(torch.tensor([-1.0, 0.0, 0.5, 1.0]), 2 / 255, 128)
    tensor([  1, 128, 192, 255], dtype=torch.uint8)
    """
    x, scale_b, zp_b, qmin, qmax = _checked(x, scale, zero_point, bits, signed, axis)
    if axis is not None:
        return _codes(x, scale_b, zp_b, qmin, qmax).to(integer_dtype(bits, signed))
    # Per tensor, block by block: each float32 intermediate is 8 MB and stays in cache (4x faster on 16M values).
    codes = torch.empty(x.shape, dtype=integer_dtype(bits, signed))
    flat_x, flat_codes = x.reshape(-1), codes.view(-1)
    for start in range(0, flat_x.numel(), BLOCK):
        flat_codes[start : start + BLOCK] = _codes(flat_x[start : start + BLOCK], scale_b, zp_b, qmin, qmax)
    return codes


def dequantize(q, scale, zero_point, *, axis: int | None = None) -> torch.Tensor:
    """Real values of integer codes ``q``: ``(q - zero_point) * scale`` in float32.

    ``axis`` as in :func:`quantize`; the scale and zero-point are checked as
    there (a zero-point of 1.5 is refused, not truncated), except that any
    whole zero-point is accepted: the codes' width is not known here.
    Bit-exact against ``Tensor.dequantize()`` of PyTorch's quantized tensors.
    Introduced in notebook 01.
    """
    q = torch.as_tensor(q)
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise ValueError(f"q has dtype {q.dtype}: expected an integer tensor of codes")
    scale_b, zp_b = affine_params(q, scale, zero_point, axis)
    # float32 holds every code of up to 16 bits exactly, so subtracting there equals integer subtraction.
    return q.to(torch.float32).sub_(zp_b).mul_(scale_b)


def fake_quantize(
    x, scale, zero_point, *, bits: int = 8, signed: bool = False, axis: int | None = None
) -> torch.Tensor:
    """``dequantize(quantize(x))`` in one float32 step: ``x`` snapped to the nearest level.

    Used to simulate quantization inside a float model (notebooks 06 and 08).
    Bit-exact against ``torch.fake_quantize_per_tensor_affine`` and
    ``torch.fake_quantize_per_channel_affine``. Introduced in notebook 01.
    """
    x, scale_b, zp_b, qmin, qmax = _checked(x, scale, zero_point, bits, signed, axis)
    return (_codes(x, scale_b, zp_b, qmin, qmax) - zp_b) * scale_b


def fake_quantize_per_group(
    x, group_size: int, *, bits: int = 4, signed: bool = True, symmetric: bool = True
) -> torch.Tensor:
    """``x`` fake-quantized with one min-max range per group of ``group_size`` consecutive values of its last dimension.

    The last dimension (a weight matrix's input dimension) is cut into groups;
    each group gets its own scale (and zero-point, unless symmetric) from
    :func:`qparams`, as per-channel quantization does for whole rows. Weight-only
    INT4 formats use groups of 32 to 128. Introduced in notebook 02.
    """
    x = float_input(x)
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or group_size < 1
        or x.dim() == 0
        or x.shape[-1] % group_size
    ):
        raise ValueError(
            f"group_size={group_size!r}: expected a whole number that divides the last dimension "
            f"({x.shape[-1] if x.dim() else 'none'})"
        )
    groups = x.reshape(-1, group_size)
    low, high = torch.aminmax(groups, dim=1)
    scale, zero_point = qparams(low, high, bits=bits, signed=signed, symmetric=symmetric)
    return fake_quantize(groups, scale, zero_point, bits=bits, signed=signed, axis=0).reshape(x.shape)


def mse(x, x_hat) -> float:
    """Mean squared error between a tensor and its quantized version. Introduced in notebook 01."""
    x, x_hat = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(x_hat, dtype=torch.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"x shape {tuple(x.shape)} and x_hat shape {tuple(x_hat.shape)}: expected equal shapes")
    return torch.mean((x - x_hat) ** 2).item()


def sqnr_db(x, x_hat) -> float:
    """Signal-to-quantization-noise ratio in decibels: ``10 log10(sum x^2 / sum (x - x_hat)^2)``.

    Higher is better; each extra bit of a uniform quantizer adds about 6 dB.
    ``inf`` when the reconstruction is exact. Introduced in notebook 01.
    """
    x, x_hat = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(x_hat, dtype=torch.float64)
    if x.shape != x_hat.shape:
        raise ValueError(f"x shape {tuple(x.shape)} and x_hat shape {tuple(x_hat.shape)}: expected equal shapes")
    noise = torch.sum((x - x_hat) ** 2).item()
    signal = torch.sum(x**2).item()
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)
