"""Number formats (notebook 00): layouts and bits against torch.finfo/iinfo and struct."""

import struct

import pytest
import torch

from qtutor.formats import FORMATS, bit_fields, float_layout, format_table, memory_mb, model_memory


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


def test_format_table_comes_from_finfo_and_iinfo():
    rows = {row["format"]: row for row in format_table()}
    assert list(rows) == list(FORMATS)
    assert rows["FP16"]["max"] == torch.finfo(torch.float16).max == 65504
    assert rows["BF16"]["eps"] == torch.finfo(torch.bfloat16).eps
    assert rows["INT8"]["min"] == -128 and rows["UINT8"]["max"] == 255


def test_memory():
    assert memory_mb(1_000_000, torch.float32) == 4.0
    model = torch.nn.Linear(10, 10)  # 110 parameters
    memory = model_memory(model)
    assert memory["FP32"] == 110 * 4 / 1e6 and memory["INT8"] == 110 / 1e6
