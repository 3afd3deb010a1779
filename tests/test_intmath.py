"""Integer-only linear/conv against PyTorch's quantized modules on the qnnpack engine, bit for bit."""

import pytest
import torch
import torch.ao.nn.quantized as nnq

from qtutor.intmath import (
    fixed_point_multiplier,
    int_conv2d,
    int_linear,
    module_params,
    pair_sums_int16,
    quantized_engine,
    requantize,
    requantize_float32,
    rounding_right_shift,
)


def quantized_weight(shape, per_channel, generator):
    w = torch.randn(shape, generator=generator) * 0.1
    if per_channel:
        scales = w.flatten(1).abs().amax(1) / 127
        return torch.quantize_per_channel(w, scales, torch.zeros(shape[0], dtype=torch.long), 0, torch.qint8)
    return torch.quantize_per_tensor(w, w.abs().max().item() / 127, 0, torch.qint8)


@pytest.mark.parametrize("per_channel", [False, True])
def test_int_linear_matches_qnnpack(per_channel):
    generator = torch.Generator().manual_seed(int(per_channel))
    with quantized_engine("qnnpack"):
        for trial in range(20):
            layer = nnq.Linear(48, 24)
            layer.set_weight_bias(
                quantized_weight((24, 48), per_channel, generator), torch.randn(24, generator=generator)
            )
            layer.scale, layer.zero_point = 0.02 + trial * 0.01, 40 + trial
            x_scale, x_zero_point = 0.03 + trial * 0.002, 100 + trial
            x = torch.randn(16, 48, generator=generator)
            x_q = torch.quantize_per_tensor(x, x_scale, x_zero_point, torch.quint8)
            expected = layer(x_q).int_repr()
            p = module_params(layer, x_scale)
            got = int_linear(
                x_q.int_repr(),
                x_zero_point,
                p["w_q"],
                p["w_zero_point"],
                p["bias_q"],
                p["multiplier"],
                p["y_zero_point"],
            )
            assert got.equal(expected)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
def test_int_conv2d_matches_qnnpack(per_channel, stride, padding):
    generator = torch.Generator().manual_seed(7)
    with quantized_engine("qnnpack"):
        for trial in range(6):
            conv = nnq.Conv2d(6, 10, 3, stride=stride, padding=padding)
            conv.set_weight_bias(
                quantized_weight((10, 6, 3, 3), per_channel, generator), torch.randn(10, generator=generator) * 0.1
            )
            conv.scale, conv.zero_point = 0.05 + trial * 0.01, 60 + trial
            x_scale, x_zero_point = 0.03, 120
            x_q = torch.quantize_per_tensor(
                torch.randn(2, 6, 9, 9, generator=generator), x_scale, x_zero_point, torch.quint8
            )
            expected = conv(x_q).int_repr()
            p = module_params(conv, x_scale)
            got = int_conv2d(
                x_q.int_repr(),
                x_zero_point,
                p["w_q"],
                p["w_zero_point"],
                p["bias_q"],
                p["multiplier"],
                p["y_zero_point"],
                stride=stride,
                padding=padding,
            )
            assert got.equal(expected)


@pytest.mark.parametrize("dilation,padding", [(2, 0), (2, 2), ((1, 3), (0, 3))])
def test_int_conv2d_with_dilation_matches_qnnpack(dilation, padding):
    generator = torch.Generator().manual_seed(8)
    with quantized_engine("qnnpack"):
        conv = nnq.Conv2d(4, 6, 3, padding=padding, dilation=dilation)
        conv.set_weight_bias(quantized_weight((6, 4, 3, 3), True, generator), torch.randn(6, generator=generator) * 0.1)
        conv.scale, conv.zero_point = 0.07, 64
        x_q = torch.quantize_per_tensor(torch.randn(2, 4, 11, 13, generator=generator), 0.03, 120, torch.quint8)
        expected = conv(x_q).int_repr()
    p = module_params(conv, 0.03)
    got = int_conv2d(
        x_q.int_repr(),
        120,
        p["w_q"],
        p["w_zero_point"],
        p["bias_q"],
        p["multiplier"],
        p["y_zero_point"],
        padding=padding,
        dilation=dilation,
    )
    assert got.shape == expected.shape and got.equal(expected)


def test_fixed_point_multiplier_is_exact():
    multipliers = torch.rand(1000, generator=torch.Generator().manual_seed(3)) * 4 + 1e-4
    m0, shift = fixed_point_multiplier(multipliers)
    assert ((m0 >= 2**30) & (m0 < 2**31)).all()
    assert (m0.to(torch.float64) * torch.exp2(-shift.to(torch.float64))).equal(multipliers.to(torch.float64))


def test_rounding_right_shift_rounds_half_to_even_like_torch_round():
    values = torch.arange(-1000, 1000)
    for shift in (1, 2, 3, 5):
        expected = torch.round(values.to(torch.float64) / 2**shift).to(torch.int64)
        assert rounding_right_shift(values, torch.tensor(shift)).equal(expected)


def gemmlowp_reference(acc: int, m0: int, right_shift: int) -> int:
    """gemmlowp's SaturatingRoundingDoublingHighMul then RoundingDivideByPOT, transcribed to Python integers."""
    product = acc * m0
    nudge = 2**30 if product >= 0 else 1 - 2**30
    numerator = product + nudge
    high = abs(numerator) // 2**31 * (1 if numerator >= 0 else -1)  # C division truncates toward zero
    mask = (1 << right_shift) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right_shift) + (1 if remainder > threshold else 0)


def test_requantize_is_gemmlowp_fixed_point():
    generator = torch.Generator().manual_seed(5)
    acc = torch.cat([torch.randint(-(2**24), 2**24, (3000,), generator=generator), torch.arange(-300, 300)])
    for multiplier in (0.0025, 0.00097, 0.3, 0.7071):
        m0, shift = fixed_point_multiplier(multiplier)
        expected = torch.tensor([gemmlowp_reference(a, m0.item(), shift.item() - 31) for a in acc.tolist()])
        got = requantize(acc, multiplier, 0, qmin=-(2**31), qmax=2**31 - 1)
        assert got.dtype == torch.int32 and got.to(torch.int64).equal(expected)


def test_requantize_breaks_ties_away_from_zero_and_float32_to_even():
    acc = torch.tensor([-6, -2, 2, 6, 10])  # times 0.25: -1.5, -0.5, 0.5, 1.5, 2.5
    assert requantize(acc, 0.25, 0, qmin=-128, qmax=127).tolist() == [-2, -1, 1, 2, 3]
    assert requantize_float32(acc, 0.25, 0, qmin=-128, qmax=127).tolist() == [-2, 0, 0, 2, 2]


def test_requantize_signed_range_gives_int8():
    acc = torch.tensor([-100000, -400, 0, 400, 100000])
    for function in (requantize, requantize_float32):
        got = function(acc, 0.01, -3, qmin=-128, qmax=127)
        assert got.dtype == torch.int8 and got.tolist() == [-128, -7, -3, 1, 127]
        assert function(acc, 0.01, 128).dtype == torch.uint8


def test_float32_requantization_loses_accumulator_bits_above_2_to_24():
    acc = torch.tensor([2**24 + 1])
    assert acc.to(torch.float32).to(torch.int64).item() == 2**24  # the +1 is gone before the multiply
    assert requantize_float32(acc, 0.5, 0, qmin=0, qmax=2**31 - 1).item() == 2**23
    assert requantize(acc, 0.5, 0, qmin=0, qmax=2**31 - 1).item() == 2**23 + 1  # 8388608.5, away from zero


def test_pair_sums_int16_saturate_only_above_127():
    generator = torch.Generator().manual_seed(2)
    w = torch.randint(-128, 128, (8, 64), generator=generator)
    for high, saturates in ((255, True), (127, False)):
        x = torch.full((3, 64), high)
        exact = x @ w.T
        assert pair_sums_int16(x, w).equal(exact) != saturates
    worst = torch.tensor([[255, 255]]), torch.tensor([[127, 127]])
    assert pair_sums_int16(*worst).item() == 32767 and (worst[0] @ worst[1].T).item() == 64770


@pytest.mark.parametrize("requantizer", ["float32", "fixed_point"])
def test_int_linear_requantizers_agree_within_one_code(requantizer):
    generator = torch.Generator().manual_seed(4)
    with quantized_engine("qnnpack"):
        layer = nnq.Linear(48, 24)
        layer.set_weight_bias(quantized_weight((24, 48), True, generator), torch.randn(24, generator=generator))
        layer.scale, layer.zero_point = 0.05, 128
        x_q = torch.quantize_per_tensor(torch.randn(64, 48, generator=generator), 0.03, 120, torch.quint8)
        expected = layer(x_q).int_repr()
    p = module_params(layer, 0.03)
    got = int_linear(
        x_q.int_repr(),
        120,
        p["w_q"],
        p["w_zero_point"],
        p["bias_q"],
        p["multiplier"],
        p["y_zero_point"],
        requantizer=requantizer,
    )
    difference = (got.to(torch.int32) - expected.to(torch.int32)).abs()
    assert difference.max() <= 1 and (requantizer == "fixed_point" or difference.max() == 0)
    with pytest.raises(ValueError, match="requantizer='double'"):
        int_linear(
            x_q.int_repr(), 120, p["w_q"], p["w_zero_point"], p["bias_q"], p["multiplier"], 0, requantizer="double"
        )


def test_bad_multiplier_and_engine():
    with pytest.raises(ValueError, match="expected positive finite numbers"):
        fixed_point_multiplier(torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="engine='tpu'"):
        with quantized_engine("tpu"):
            pass


def test_mantissa_bits_beyond_24_change_nothing():
    # A float32 multiplier has 24 significant bits: m0 wider than that only gains trailing zeros.
    acc = torch.randint(-100_000, 100_000, (20000,), generator=torch.Generator().manual_seed(6))
    multiplier = torch.tensor(0.00123456, dtype=torch.float32)
    reference = requantize(acc, multiplier, 128)
    assert all(requantize(acc, multiplier, 128, mantissa_bits=b).equal(reference) for b in range(24, 32))
    assert not requantize(acc, multiplier, 128, mantissa_bits=12).equal(reference)


def test_rounding_right_shift_away_from_zero():
    values = torch.tensor([-7, -6, -5, -2, -1, 0, 1, 2, 5, 6, 7])
    assert rounding_right_shift(values, 2, ties="away").tolist() == [-2, -2, -1, -1, 0, 0, 0, 1, 1, 2, 2]
    assert rounding_right_shift(values, 0, ties="away").equal(values)


def test_fewer_mantissa_bits_round_the_multiplier():
    multipliers = torch.tensor([0.0025, 0.7, 0.999999, 1.5])
    for bits in (4, 8, 16):
        m0, shift = fixed_point_multiplier(multipliers, mantissa_bits=bits)
        assert ((m0 >= 2 ** (bits - 1)) & (m0 < 2**bits)).all()
        approx = m0.double() * torch.exp2(-shift.double())
        assert ((approx - multipliers.double()).abs() / multipliers.double() <= 2.0**-bits).all()
    with pytest.raises(ValueError, match="mantissa_bits=0"):
        fixed_point_multiplier(0.5, mantissa_bits=0)


@pytest.mark.parametrize("engine", ["qnnpack", "x86"])
def test_quantize_module_matches_float_within_a_step(engine):
    from qtutor.intmath import quantize_module

    float_conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    images = torch.randn(2, 4, 8, 8)
    with quantized_engine(engine):
        conv, x_scale, x_zero_point = quantize_module(float_conv, images)
        x_q = torch.quantize_per_tensor(images, x_scale, x_zero_point, torch.quint8)
        out = conv(x_q)
    expected = float_conv(x_q.dequantize()).detach()
    assert (out.dequantize() - expected).abs().max() <= 2 * conv.scale
    if engine == "qnnpack":
        p = module_params(conv, x_scale)
        ours = int_conv2d(
            x_q.int_repr(),
            x_zero_point,
            p["w_q"],
            p["w_zero_point"],
            p["bias_q"],
            p["multiplier"],
            p["y_zero_point"],
            padding=1,
        )
        assert ours.equal(out.int_repr())
    with pytest.raises(ValueError, match="expected torch.nn.Linear or torch.nn.Conv2d"):
        quantize_module(torch.nn.ReLU(), images)
