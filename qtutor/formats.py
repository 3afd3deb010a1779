"""Number formats: bit layouts, ranges and precision of float and integer types.

Introduced in notebook 00 (number formats); the FP8 formats E4M3 and E5M2
(:data:`FP8_FORMATS`, :func:`fp8_decode`, :func:`fp8_encode`) in notebook 11
(today's large models). Every number comes from ``torch.finfo`` /
``torch.iinfo`` or from the bits of a real tensor, never from a table typed by
hand.
"""

from __future__ import annotations

import torch

__all__ = [
    "FORMATS",
    "FP8_FORMATS",
    "float_layout",
    "bit_fields",
    "dtype_facts",
    "memory_mb",
    "model_memory",
    "fp8_decode",
    "fp8_levels",
    "fp8_encode",
    "fp8_table",
]

# The formats the course compares, in the order notebook 00 shows them.
FORMATS = {
    "FP32": torch.float32,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
}

# Integer dtypes with the same width, used to read a float's raw bits.
_SAME_WIDTH_INT = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def float_layout(dtype: torch.dtype) -> tuple[int, int, int]:
    """``(sign, exponent, mantissa)`` bit counts of a float dtype, derived from ``torch.finfo``.

    >>> float_layout(torch.float16), float_layout(torch.bfloat16)
    ((1, 5, 10), (1, 8, 7))
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype}: expected a floating-point dtype")
    info = torch.finfo(dtype)
    mantissa = -round(torch.log2(torch.tensor(info.eps, dtype=torch.float64)).item())
    return 1, info.bits - 1 - mantissa, mantissa


def bit_fields(value: float, dtype: torch.dtype) -> dict[str, str]:
    """The bits that store ``value`` in ``dtype``, split into fields.

    Floats give ``{'sign', 'exponent', 'mantissa'}``; integers give
    ``{'bits'}`` (two's complement for signed types).

    >>> bit_fields(-1.5, torch.float16)
    {'sign': '1', 'exponent': '01111', 'mantissa': '1000000000'}
    >>> bit_fields(-3, torch.int8)
    {'bits': '11111101'}
    """
    tensor = torch.tensor([value]).to(dtype)
    if dtype.is_floating_point:
        width = torch.finfo(dtype).bits
        raw = tensor.view(_SAME_WIDTH_INT[dtype]).item() & ((1 << width) - 1)
        bits = format(raw, f"0{width}b")
        _, exponent, _ = float_layout(dtype)
        return {"sign": bits[0], "exponent": bits[1 : 1 + exponent], "mantissa": bits[1 + exponent :]}
    width = torch.iinfo(dtype).bits
    return {"bits": format(int(tensor.item()) & ((1 << width) - 1), f"0{width}b")}


def dtype_facts() -> list[dict]:
    """One row per format of :data:`FORMATS`: bits, range, smallest normal, machine epsilon.

    Integer formats have no smallest normal; their "epsilon" is the step, 1. Introduced in notebook 00.
    """
    rows = []
    for name, dtype in FORMATS.items():
        if dtype.is_floating_point:
            info = torch.finfo(dtype)
            rows.append(
                dict(
                    format=name,
                    bits=info.bits,
                    min=info.min,
                    max=info.max,
                    smallest_normal=info.smallest_normal,
                    eps=info.eps,
                )
            )
        else:
            info = torch.iinfo(dtype)
            rows.append(dict(format=name, bits=info.bits, min=info.min, max=info.max, smallest_normal=None, eps=1))
    return rows


def memory_mb(parameter_count: int, dtype: torch.dtype) -> float:
    """Megabytes (10**6 bytes) that ``parameter_count`` numbers take in ``dtype``."""
    return parameter_count * dtype.itemsize / 1e6


def model_memory(model: torch.nn.Module) -> dict[str, float]:
    """Megabytes of a model's parameters in each format of :data:`FORMATS`."""
    count = sum(p.numel() for p in model.parameters())
    return {name: memory_mb(count, dtype) for name, dtype in FORMATS.items()}


# The two FP8 formats of notebook 11, as PyTorch names them: E4M3 "fn" (finite: no infinity, one NaN code per
# sign) and E5M2 (IEEE-like: infinities and NaNs).
FP8_FORMATS = {"E4M3": torch.float8_e4m3fn, "E5M2": torch.float8_e5m2}


def _fp8_dtype(name: str) -> torch.dtype:
    if name not in FP8_FORMATS:
        raise ValueError(f"format {name!r}: expected one of {list(FP8_FORMATS)}")
    return FP8_FORMATS[name]


def _fp8_fields(name: str) -> tuple[int, int, int]:
    """``(exponent bits, mantissa bits, bias)`` of an FP8 format, from ``torch.finfo``."""
    dtype = _fp8_dtype(name)
    _, exponent, mantissa = float_layout(dtype)
    bias = 1 - round(torch.log2(torch.tensor(torch.finfo(dtype).smallest_normal, dtype=torch.float64)).item())
    return exponent, mantissa, bias


def fp8_decode(codes, name: str = "E4M3") -> torch.Tensor:
    """The float32 values of 8-bit FP8 ``codes`` (any integer tensor of 0..255), read from their bit fields.

    ``sign | exponent | mantissa``; a normal number is ``(-1)^s 2^(e - bias) (1 + m / 2^M)``, a subnormal
    (exponent field 0) ``(-1)^s 2^(1 - bias) (m / 2^M)``. E4M3 (``float8_e4m3fn``) spends only its all-ones
    code on NaN and has no infinity; E5M2 keeps IEEE's all-ones exponent for infinity (mantissa 0) and NaN.
    Equals ``codes.view(torch.float8_...).float()`` (tests/test_formats.py). Introduced in notebook 11.
    """
    exponent_bits, mantissa_bits, bias = _fp8_fields(name)
    codes = torch.as_tensor(codes)
    if (
        codes.is_floating_point()
        or codes.dtype == torch.bool
        or (codes.numel() and (codes.min() < 0 or codes.max() > 255))
    ):
        raise ValueError(f"codes: expected integers from 0 to 255 (one byte each), got dtype {codes.dtype}")
    codes = codes.to(torch.int64)
    sign = torch.where(codes >> 7 == 1, -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & (2**exponent_bits - 1)
    mantissa = (codes & (2**mantissa_bits - 1)).to(torch.float64) / 2**mantissa_bits
    normal = torch.exp2((exponent - bias).to(torch.float64)) * (1 + mantissa)
    subnormal = 2.0 ** (1 - bias) * mantissa
    values = sign * torch.where(exponent == 0, subnormal, normal)
    top = exponent == 2**exponent_bits - 1
    if name == "E4M3":  # only S.1111.111 is special: NaN
        values = torch.where(top & (mantissa == 1 - 2.0**-mantissa_bits), torch.nan, values)
    else:  # S.11111.00 is infinity, the other three all-ones-exponent codes NaN
        values = torch.where(top, torch.where(mantissa == 0, sign * torch.inf, torch.nan), values)
    return values.to(torch.float32)


def fp8_levels(name: str = "E4M3") -> torch.Tensor:
    """The non-negative finite values of an FP8 format, ascending; a level's index is its code (notebook 11)."""
    values = fp8_decode(torch.arange(128), name)
    return values[torch.isfinite(values)]


def fp8_encode(x, name: str = "E4M3") -> torch.Tensor:
    """FP8 codes (``uint8``) of ``x`` rounded to the nearest level, ties to the even code, as PyTorch rounds.

    ``x`` is read as float32. The sign is kept (also on zero). Past the largest finite value
    :data:`FP8_FORMATS` behave differently in torch 2.14.1 (``torch/include/torch/headeronly/util/``
    ``Float8_e4m3fn.h``, ``Float8_e5m2.h``): E4M3 saturates at its largest value (448), infinity included;
    E5M2 rounds on towards the next power of two, which is its infinity code. Equals
    ``x.to(torch.float8_...).view(torch.uint8)`` bit for bit (tests/test_formats.py). Introduced in notebook 11.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.numel() and torch.isnan(x).any():
        raise ValueError("x contains NaN: expected numbers (NaN has no FP8 level to round to)")
    levels = fp8_levels(name).to(torch.float64)
    if name == "E5M2":  # the code after the largest finite value is infinity, which sits where 2^16 would
        levels = torch.cat([levels, 2 * levels[-1:] / (2 - 2.0 ** -_fp8_fields(name)[1])])
    magnitude = x.abs().to(torch.float64)
    below = (torch.searchsorted(levels, magnitude, right=True) - 1).clamp(0, len(levels) - 1)
    above = (below + 1).clamp(max=len(levels) - 1)
    middle = (levels[below] + levels[above]) / 2
    code = torch.where((magnitude > middle) | ((magnitude == middle) & (below % 2 == 1)), above, below)
    return (code | (torch.signbit(x).to(torch.int64) << 7)).to(torch.uint8)


def fp8_table() -> list[dict]:
    """One row per FP8 format: bits of each field, bias, largest value, smallest normal and subnormal, levels."""
    rows = []
    for name, dtype in FP8_FORMATS.items():
        exponent, mantissa, bias = _fp8_fields(name)
        info, levels = torch.finfo(dtype), fp8_levels(name)
        rows.append(
            dict(
                format=name,
                dtype=str(dtype).replace("torch.", ""),
                exponent_bits=exponent,
                mantissa_bits=mantissa,
                bias=bias,
                max=info.max,
                smallest_normal=info.smallest_normal,
                smallest_subnormal=levels[1].item(),
                finite_values=2 * len(levels) - 1,
                eps=info.eps,
            )
        )
    return rows
