"""Integer-only linear/conv against PyTorch's quantized modules on the qnnpack engine, bit for bit."""

import pytest
import torch
import torch.ao.nn.quantized as nnq

from qtutor.intmath import (
    fixed_point_multiplier,
    int_conv2d,
    int_linear,
    module_params,
    quantized_engine,
    requantize,
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
            layer.set_weight_bias(quantized_weight((24, 48), per_channel, generator), torch.randn(24, generator=generator))
            layer.scale, layer.zero_point = 0.02 + trial * 0.01, 40 + trial
            x_scale, x_zero_point = 0.03 + trial * 0.002, 100 + trial
            x_q = torch.quantize_per_tensor(torch.randn(16, 48, generator=generator), x_scale, x_zero_point, torch.quint8)
            expected = layer(x_q).int_repr()
            p = module_params(layer, x_scale)
            got = int_linear(x_q.int_repr(), x_zero_point, p["w_q"], p["w_zero_point"], p["bias_q"],
                             p["multiplier"], p["y_zero_point"])
            assert got.equal(expected)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
def test_int_conv2d_matches_qnnpack(per_channel, stride, padding):
    generator = torch.Generator().manual_seed(7)
    with quantized_engine("qnnpack"):
        for trial in range(6):
            conv = nnq.Conv2d(6, 10, 3, stride=stride, padding=padding)
            conv.set_weight_bias(quantized_weight((10, 6, 3, 3), per_channel, generator),
                                 torch.randn(10, generator=generator) * 0.1)
            conv.scale, conv.zero_point = 0.05 + trial * 0.01, 60 + trial
            x_scale, x_zero_point = 0.03, 120
            x_q = torch.quantize_per_tensor(torch.randn(2, 6, 9, 9, generator=generator), x_scale, x_zero_point,
                                            torch.quint8)
            expected = conv(x_q).int_repr()
            p = module_params(conv, x_scale)
            got = int_conv2d(x_q.int_repr(), x_zero_point, p["w_q"], p["w_zero_point"], p["bias_q"],
                             p["multiplier"], p["y_zero_point"], stride=stride, padding=padding)
            assert got.equal(expected)


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


def test_requantize_equals_float_rounding_when_exact():
    acc = torch.arange(-50000, 50000, 37)
    got = requantize(acc, 0.0025, 128)
    expected = (torch.round(acc.to(torch.float64) * torch.tensor(0.0025, dtype=torch.float32).double()) + 128)
    assert got.equal(expected.clamp(0, 255).to(torch.uint8))


def test_bad_multiplier_and_engine():
    with pytest.raises(ValueError, match="expected positive finite numbers"):
        fixed_point_multiplier(torch.tensor([0.5, 0.0]))
    with pytest.raises(ValueError, match="engine='tpu'"):
        with quantized_engine("tpu"):
            pass


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

    torch.manual_seed(0)
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
        ours = int_conv2d(x_q.int_repr(), x_zero_point, p["w_q"], p["w_zero_point"], p["bias_q"], p["multiplier"],
                          p["y_zero_point"], padding=1)
        assert ours.equal(out.int_repr())
    with pytest.raises(ValueError, match="expected torch.nn.Linear or torch.nn.Conv2d"):
        quantize_module(torch.nn.ReLU(), images)
