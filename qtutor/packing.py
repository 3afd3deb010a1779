"""Bit packing: store b-bit integer codes b bits each, several to a byte, and get them back bit for bit.

Introduced in notebook 04 (non-uniform quantization: a 3-bit code only saves
memory once it is packed) and used by notebook 11 (weight-only INT4, two codes
per byte). A quantizer's codes usually live in a ``uint8`` or even ``int64``
tensor, 8 or 64 bits per code; the savings a table promises exist only after
packing. The layout is little-endian, like the INT4 formats of GPTQ/AWQ-style
kernels: the first code sits in the lowest bits of the first byte, so for 4 bits
``byte = first | (second << 4)``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["pack", "unpack", "packed_nbytes"]


def _check(bits: int) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"bits={bits!r}: expected a whole number from 1 to 8")
    return bits


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits take once packed: ceil(count * bits / 8)."""
    return math.ceil(count * _check(bits) / 8)


def pack(codes: torch.Tensor, bits: int, *, signed: bool = False) -> torch.Tensor:
    """Pack integer ``codes`` (any shape, any integer dtype) into a flat ``uint8`` tensor, ``bits`` bits per code.

    Unsigned codes must lie in ``0 .. 2**bits - 1``; with ``signed``, in
    ``-2**(bits-1) .. 2**(bits-1) - 1`` (stored as two's complement). The last
    byte is padded with zero bits. :func:`unpack` needs the code count back.
    """
    _check(bits)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"codes of dtype {codes.dtype}: expected an integer tensor")
    flat = codes.reshape(-1).to(torch.int64)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if flat.numel() and (flat.min() < low or flat.max() > high):
        raise ValueError(
            f"codes span {flat.min().item()}..{flat.max().item()}: expected {low}..{high} for "
            f"{'signed' if signed else 'unsigned'} {bits}-bit codes"
        )
    flat = flat & (2**bits - 1)  # two's complement bits of a signed code
    if 8 % bits == 0:  # whole codes per byte: shift each into its slot and add them up
        per_byte = 8 // bits
        padded = torch.nn.functional.pad(flat, (0, -flat.numel() % per_byte)).view(-1, per_byte)
        shifts = torch.arange(per_byte) * bits
        return (padded << shifts).sum(dim=1).to(torch.uint8)
    # Otherwise a code may straddle two bytes: write the codes as one stream of bits, then cut it into bytes.
    stream = ((flat.unsqueeze(1) >> torch.arange(bits)) & 1).reshape(-1)
    stream = torch.nn.functional.pad(stream, (0, -stream.numel() % 8)).view(-1, 8)
    return (stream << torch.arange(8)).sum(dim=1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, count: int, *, signed: bool = False) -> torch.Tensor:
    """The first ``count`` codes of a :func:`pack` ed tensor, as ``uint8`` (or ``int8`` when ``signed``)."""
    _check(bits)
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed of dtype {packed.dtype}: expected torch.uint8, as pack returns")
    if packed.numel() < packed_nbytes(count, bits):
        raise ValueError(
            f"count={count}: {packed.numel()} bytes hold at most {packed.numel() * 8 // bits} {bits}-bit codes"
        )
    data = packed.reshape(-1).to(torch.int64)
    if 8 % bits == 0:
        per_byte = 8 // bits
        codes = ((data.unsqueeze(1) >> (torch.arange(per_byte) * bits)) & (2**bits - 1)).reshape(-1)[:count]
    else:
        stream = ((data.unsqueeze(1) >> torch.arange(8)) & 1).reshape(-1)[: count * bits].view(count, bits)
        codes = (stream << torch.arange(bits)).sum(dim=1)
    if signed:  # sign-extend: a set top bit means the code is negative
        codes = codes - ((codes >> (bits - 1)) & 1) * 2**bits
        return codes.to(torch.int8)
    return codes.to(torch.uint8)
