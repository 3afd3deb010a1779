"""qtutor.packing: every width round-trips bit for bit, the layout is the documented one, the sizes are real."""

import pytest
import torch

from qtutor.packing import pack, packed_nbytes, unpack


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("count", [1, 7, 8, 1001])
def test_round_trip_is_exact(bits, signed, count):
    generator = torch.Generator().manual_seed(bits * 100 + count)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
    codes = torch.randint(low, high, (count,), generator=generator)
    packed = pack(codes, bits, signed=signed)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(count, bits) == -(-count * bits // 8)
    back = unpack(packed, bits, count, signed=signed)
    assert back.dtype == (torch.int8 if signed else torch.uint8)
    assert torch.equal(back.to(torch.int64), codes)


def test_four_bit_layout_is_low_nibble_first():
    assert pack(torch.tensor([0x3, 0xA, 0xF]), 4).tolist() == [0xA3, 0x0F]
    assert pack(torch.tensor([-1, 2]), 4, signed=True).tolist() == [0x2F]  # -1 is 0b1111 in two's complement


def test_three_bit_codes_straddle_bytes():
    # codes 1..8 (mod 8) as a little-endian bit stream: 001 010 011 100 101 110 111 000 -> three bytes
    codes = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])
    packed = pack(codes, 3)
    bits = "".join(format(byte, "08b")[::-1] for byte in packed.tolist())  # each byte's bits, lowest first
    assert bits == "".join(format(code, "03b")[::-1] for code in codes.tolist())
    assert packed.numel() == 3


def test_shape_is_kept_by_the_caller():
    codes = torch.randint(0, 16, (3, 5))
    assert torch.equal(unpack(pack(codes, 4), 4, codes.numel()).view(3, 5).long(), codes)


@pytest.mark.parametrize(
    "codes,bits,signed,message",
    [
        (torch.tensor([16]), 4, False, "codes span 16..16: expected 0..15"),
        (torch.tensor([-1]), 4, False, "expected 0..15"),
        (torch.tensor([8]), 4, True, "expected -8..7 for signed 4-bit codes"),
        (torch.tensor([1.0]), 4, False, "expected an integer tensor"),
        (torch.tensor([1]), 0, False, "bits=0: expected a whole number from 1 to 8"),
    ],
)
def test_bad_codes_are_refused(codes, bits, signed, message):
    with pytest.raises(ValueError, match=message):
        pack(codes, bits, signed=signed)


def test_unpack_refuses_a_count_the_bytes_cannot_hold():
    with pytest.raises(ValueError, match="count=5: 2 bytes hold at most 4 4-bit codes"):
        unpack(torch.zeros(2, dtype=torch.uint8), 4, 5)
    with pytest.raises(ValueError, match="expected torch.uint8"):
        unpack(torch.zeros(2, dtype=torch.int8), 4, 1)
