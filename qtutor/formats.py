"""Number formats: bit layouts, ranges and precision of float and integer types.

Introduced in notebook 00 (number formats). Every number comes from
``torch.finfo`` / ``torch.iinfo`` or from the bits of a real tensor, never
from a table typed by hand.
"""

from __future__ import annotations

import torch

__all__ = ["FORMATS", "float_layout", "bit_fields", "format_table", "memory_mb", "model_memory"]

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


def format_table() -> list[dict]:
    """One row per format of :data:`FORMATS`: bits, range, smallest normal, machine epsilon.

    Integer formats have no smallest normal; their "epsilon" is the step, 1.
    """
    rows = []
    for name, dtype in FORMATS.items():
        if dtype.is_floating_point:
            info = torch.finfo(dtype)
            rows.append(dict(format=name, bits=info.bits, min=info.min, max=info.max,
                             smallest_normal=info.smallest_normal, eps=info.eps))
        else:
            info = torch.iinfo(dtype)
            rows.append(dict(format=name, bits=info.bits, min=info.min, max=info.max,
                             smallest_normal=None, eps=1))
    return rows


def memory_mb(parameter_count: int, dtype: torch.dtype) -> float:
    """Megabytes (10**6 bytes) that ``parameter_count`` numbers take in ``dtype``."""
    return parameter_count * dtype.itemsize / 1e6


def model_memory(model: torch.nn.Module) -> dict[str, float]:
    """Megabytes of a model's parameters in each format of :data:`FORMATS`."""
    count = sum(p.numel() for p in model.parameters())
    return {name: memory_mb(count, dtype) for name, dtype in FORMATS.items()}
