"""Number formats (notebook 00): layouts and bits against torch.finfo/iinfo and struct."""

import struct

import pytest
import torch

from qtutor.formats import FORMATS, bit_fields, dtype_facts, float_layout, memory_mb, model_memory


def test_float_layouts_follow_ieee_and_bfloat16():
    assert float_layout(torch.float32) == (1, 8, 23)
    assert float_layout(torch.float16) == (1, 5, 10)
    assert float_layout(torch.bfloat16) == (1, 8, 7)
    with pytest.raises(ValueError, match="expected a floating-point dtype"):
        float_layout(torch.int8)


@pytest.mark.parametrize("value", [1.0, -2.5, 0.1, 3.0e38, 1e-40, -0.0, 65504.0])
def test_float32_and_float16_bits_match_struct(value):
    fields = bit_fields(value, torch.float32)
    expected = format(struct.unpack(">I", struct.pack(">f", value))[0], "032b")
    assert fields["sign"] + fields["exponent"] + fields["mantissa"] == expected
    if abs(value) <= 65504:
        fields = bit_fields(value, torch.float16)
        expected = format(struct.unpack(">H", struct.pack(">e", value))[0], "016b")
        assert fields["sign"] + fields["exponent"] + fields["mantissa"] == expected


def test_bfloat16_is_the_top_half_of_float32():
    for value in (1.0, -3.75, 1234.0):  # exactly representable in bfloat16
        fp32 = bit_fields(value, torch.float32)
        bf16 = bit_fields(value, torch.bfloat16)
        assert bf16["exponent"] == fp32["exponent"] and fp32["mantissa"].startswith(bf16["mantissa"])


def test_integer_bits_are_twos_complement():
    assert bit_fields(-1, torch.int8) == {"bits": "11111111"}
    assert bit_fields(5, torch.uint8) == {"bits": "00000101"}


def test_dtype_facts_come_from_finfo_and_iinfo():
    rows = {row["format"]: row for row in dtype_facts()}
    assert list(rows) == list(FORMATS)
    assert rows["FP16"]["max"] == torch.finfo(torch.float16).max == 65504
    assert rows["BF16"]["eps"] == torch.finfo(torch.bfloat16).eps
    assert rows["INT8"]["min"] == -128 and rows["UINT8"]["max"] == 255


def test_memory():
    assert memory_mb(1_000_000, torch.float32) == 4.0
    model = torch.nn.Linear(10, 10)  # 110 parameters
    memory = model_memory(model)
    assert memory["FP32"] == 110 * 4 / 1e6 and memory["INT8"] == 110 / 1e6


# FP8 (notebook 11) -------------------------------------------------------------------------------

from qtutor.formats import FP8_FORMATS, fp8_decode, fp8_encode, fp8_levels, fp8_table  # noqa: E402


@pytest.mark.parametrize("name", list(FP8_FORMATS))
def test_fp8_decode_reads_every_code_as_pytorch_does(name):
    codes = torch.arange(256)
    ours = fp8_decode(codes, name)
    pytorch = codes.to(torch.uint8).view(FP8_FORMATS[name]).to(torch.float32)
    assert torch.equal(torch.isnan(ours), torch.isnan(pytorch))
    assert torch.equal(ours.nan_to_num(0.0), pytorch.nan_to_num(0.0))


def fp8_hard_cases(name):
    """Random values over a wide range, every midpoint between two levels and one float32 step either side."""
    gen = torch.Generator().manual_seed(11)
    spread = torch.randn(20000, generator=gen) * torch.exp2(torch.randint(-30, 24, (20000,), generator=gen).float())
    levels = fp8_levels(name)
    middles = (levels[1:] + levels[:-1]) / 2
    middles = torch.cat([middles, 2 * levels[-1:] - middles[-1:]])  # and the one just past the largest value
    near = [middles.nextafter(torch.tensor(direction)) for direction in (float("inf"), float("-inf"))]
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1e-30, -1e-30, 1e30, 3.4e38])
    cases = torch.cat([spread, middles, *near, special])
    return torch.cat([cases, -cases])


@pytest.mark.parametrize("name", list(FP8_FORMATS))
def test_fp8_encode_equals_pytorchs_cast_bit_for_bit(name):
    x = fp8_hard_cases(name)
    assert torch.equal(fp8_encode(x, name), x.to(FP8_FORMATS[name]).view(torch.uint8))


def test_fp8_overflow_differs_between_the_formats():
    big = torch.tensor([1000.0, float("inf")])
    assert fp8_decode(fp8_encode(big, "E4M3"), "E4M3").tolist() == [448.0, 448.0]  # saturates
    assert fp8_decode(fp8_encode(big * 100, "E5M2"), "E5M2").tolist() == [float("inf")] * 2


def test_fp8_levels_and_table_come_from_finfo():
    rows = {row["format"]: row for row in fp8_table()}
    for name, dtype in FP8_FORMATS.items():
        info, levels = torch.finfo(dtype), fp8_levels(name)
        assert levels[-1].item() == rows[name]["max"] == info.max
        assert rows[name]["smallest_normal"] == info.smallest_normal
        assert (levels.diff() > 0).all() and levels[0] == 0
        assert rows[name]["finite_values"] == torch.unique(fp8_decode(torch.arange(256), name)).isfinite().sum()
    assert (rows["E4M3"]["exponent_bits"], rows["E4M3"]["mantissa_bits"], rows["E4M3"]["bias"]) == (4, 3, 7)
    assert (rows["E5M2"]["exponent_bits"], rows["E5M2"]["mantissa_bits"], rows["E5M2"]["bias"]) == (5, 2, 15)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: fp8_encode(torch.tensor([float("nan")])), "x contains NaN"),
        (lambda: fp8_decode(torch.tensor([256])), "expected integers from 0 to 255"),
        (lambda: fp8_levels("E2M5"), "format 'E2M5': expected one of"),
    ],
)
def test_fp8_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
