"""qtutor.largemodels (notebook 11): each technique against PyTorch's own kernels or an identity it must keep."""

import pytest
import torch
import torch.nn.functional as F

from qtutor import fake_quantize
from qtutor.formats import FP8_FORMATS
from qtutor.largemodels import (
    QuantLinear,
    absmax_fake_quantize,
    absmax_qparams,
    fp8_fake_quantize,
    group_fake_quantize,
    group_qparams,
    int8_decomposed_linear,
    model_nbytes,
    outlier_activations,
    outlier_columns,
    quantize_linears,
    smooth,
    smoothing_factors,
    w8a8_linear,
)
from qtutor.packing import unpack


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def weight(out=48, inputs=96, seed=1):
    return torch.randn(out, inputs, generator=generator(seed)) * 0.05


def test_outlier_activations_inject_the_named_channels():
    x, channels = outlier_activations(64, 128, outliers=3, size=40.0, seed=5)
    clean, same = outlier_activations(64, 128, outliers=3, size=1.0, seed=5)
    assert torch.equal(channels, same) and len(channels) == 3
    assert torch.allclose(x[:, channels], 40 * clean[:, channels])
    rest = torch.ones(128, dtype=torch.bool)
    rest[channels] = False
    assert torch.equal(x[:, rest], clean[:, rest])


@pytest.mark.parametrize("axis", [None, 0])
def test_absmax_quantization_is_pytorchs_symmetric_qint8(axis):
    x = torch.randn(16, 40, generator=generator())
    scale, zero_point = absmax_qparams(x, axis=axis)
    if axis is None:
        observer = torch.ao.quantization.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        observer(x)
        reference = torch.fake_quantize_per_tensor_affine(x, scale.item(), 0, -128, 127)
    else:
        observer = torch.ao.quantization.PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        )
        observer(x)
        reference = torch.fake_quantize_per_channel_affine(x, scale, zero_point.int(), 0, -128, 127)
    assert torch.equal(scale.reshape(-1), observer.calculate_qparams()[0].reshape(-1))
    assert torch.equal(absmax_fake_quantize(x, axis=axis), reference)


def test_per_token_scales_ignore_other_tokens():
    x = torch.randn(8, 32, generator=generator())
    x[3] *= 100  # one loud token
    per_token = absmax_fake_quantize(x, axis=0)
    alone = absmax_fake_quantize(x[:1], axis=0)
    assert torch.equal(per_token[:1], alone)


def test_w8a8_linear_is_linear_of_fake_quantized_operands():
    x, w = torch.randn(10, 96, generator=generator()), weight()
    bias = torch.randn(48, generator=generator(2))
    expected = F.linear(absmax_fake_quantize(x), absmax_fake_quantize(w, axis=0), bias)
    assert torch.equal(w8a8_linear(x, w, bias), expected)
    with pytest.raises(ValueError, match="x has 95 input channels"):
        w8a8_linear(x[:, :95], w)


def test_outlier_columns_and_decomposition():
    x, channels = outlier_activations(32, 96, outliers=2, size=30.0)
    w = weight()
    mask = outlier_columns(x, 6.0)
    assert torch.equal(mask.nonzero().flatten(), channels)
    output, share = int8_decomposed_linear(x, w, threshold=6.0)
    assert share == 2 / 96
    rest = ~mask
    expected = F.linear(x[:, mask], w[:, mask]) + w8a8_linear(x[:, rest], w[:, rest], act_axis=0)
    assert torch.equal(output, expected)
    # A threshold above every value keeps everything in INT8; a tiny one keeps everything in float.
    assert int8_decomposed_linear(x, w, threshold=1e9)[1] == 0.0
    exact, share = int8_decomposed_linear(x, w, threshold=1e-9)
    assert share == 1.0 and torch.equal(exact, F.linear(x, w))
    with pytest.raises(ValueError, match="threshold=0"):
        outlier_columns(x, 0)


def test_smoothing_factors_formula():
    w = weight()
    act = torch.rand(96, generator=generator()) * 10 + 0.1
    for alpha in (0.0, 0.5, 0.85, 1.0):
        expected = act.double() ** alpha / w.abs().max(dim=0).values.double() ** (1 - alpha)
        assert torch.allclose(smoothing_factors(act, w, alpha).double(), expected, rtol=1e-5)
    dead = act.clone()
    dead[0] = 0.0  # a channel that never fires gets the floor, not zero
    assert smoothing_factors(dead, w, 0.5)[0] > 0


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_smoothing_leaves_the_float_product_unchanged(alpha):
    x, _ = outlier_activations(64, 96, outliers=3, size=80.0)
    w = weight()
    factors = smoothing_factors(x.abs().amax(dim=0), w, alpha)
    x_smooth, w_smooth = smooth(x, w, factors)
    reference = F.linear(x.double(), w.double())
    assert torch.allclose(F.linear(x_smooth.double(), w_smooth.double()), reference, rtol=1e-5, atol=1e-5)
    assert torch.allclose(F.linear(x_smooth, w_smooth), F.linear(x, w), rtol=1e-4, atol=1e-4)
    if alpha == 0.5:  # the activation's range shrinks by far more than the weight's grows
        assert x_smooth.abs().max() < x.abs().max() / 5


def test_smoothquant_repairs_per_tensor_int8():
    x, _ = outlier_activations(128, 96, outliers=3, size=80.0)
    w = weight()
    reference = F.linear(x, w)
    before = ((w8a8_linear(x, w) - reference) ** 2).sum()
    x_smooth, w_smooth = smooth(x, w, smoothing_factors(x.abs().amax(dim=0), w, 0.5))
    after = ((w8a8_linear(x_smooth, w_smooth) - reference) ** 2).sum()
    assert after < before / 10


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(act_absmax=torch.ones(5)), "expected 96 non-negative values"),
        (dict(act_absmax=-torch.ones(96)), "expected 96 non-negative values"),
        (dict(alpha=1.5), "alpha=1.5: expected a migration strength from 0 to 1"),
    ],
)
def test_smoothing_factors_refuse_bad_input(bad, message):
    arguments = dict(act_absmax=torch.ones(96), weight=weight(), alpha=0.5) | bad
    with pytest.raises(ValueError, match=message):
        smoothing_factors(**arguments)


def test_smooth_refuses_non_positive_factors():
    with pytest.raises(ValueError, match="expected 96 positive values"):
        smooth(torch.randn(4, 96), weight(), torch.zeros(96))


@pytest.mark.parametrize("group_size", [8, 32, 96])
def test_group_quantization_is_per_channel_quantization_of_the_groups(group_size):
    w = weight()
    groups = w.reshape(-1, group_size)
    scale, zero_point = group_qparams(w, group_size, bits=4)
    assert scale.shape == (48, 96 // group_size)
    ours = fake_quantize(groups, scale.reshape(-1), zero_point.reshape(-1), bits=4, signed=True, axis=0)
    pytorch = torch.fake_quantize_per_channel_affine(groups, scale.reshape(-1), zero_point.reshape(-1).int(), 0, -8, 7)
    assert torch.equal(ours, pytorch)
    assert torch.equal(group_fake_quantize(w, group_size, bits=4), pytorch.reshape(48, 96))


def test_group_quantization_pads_a_short_last_group_and_none_is_per_channel():
    w = weight(inputs=100)  # 100 = 3 groups of 32 and one of 4
    padded = torch.cat([w, torch.zeros(48, 28)], dim=1)
    assert torch.equal(group_fake_quantize(w, 32), group_fake_quantize(padded, 32)[:, :100])
    assert group_qparams(w, 32)[0].shape == (48, 4)
    assert torch.equal(group_fake_quantize(w, None), absmax_fake_quantize(w, bits=4, axis=0))
    with pytest.raises(ValueError, match="group_size=0: expected a positive whole number or None"):
        group_fake_quantize(w, 0)


def test_smaller_groups_quantize_better():
    w = weight(64, 256) * torch.logspace(-1, 1, 256)  # input channels of very different sizes
    errors = [((group_fake_quantize(w, g) - w) ** 2).sum().item() for g in (None, 128, 32, 8)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 4


@pytest.mark.parametrize("group_size", [32, None])
def test_quant_linear_stores_packed_codes_and_fp16_scales(group_size):
    linear = torch.nn.Linear(96, 48)
    quant = QuantLinear.from_linear(linear, group_size)
    groups = 96 // (group_size or 96)
    assert quant.packed.dtype == torch.uint8 and quant.packed.numel() == 48 * 96 // 2
    assert quant.scales.dtype == torch.float16 and quant.scales.shape == (48, groups)
    codes = unpack(quant.packed, 4, 48 * 96, signed=True).reshape(-1, group_size or 96)
    scale = quant.scales.float().reshape(-1, 1)
    expected = torch.clamp(torch.round(linear.weight.detach().reshape(-1, group_size or 96) * (1 / scale)), -8, 7)
    assert torch.equal(codes.float(), expected)
    assert model_nbytes(quant) == 48 * 96 // 2 + 48 * groups * 2 + 48 * 4
    assert model_nbytes(linear) == (48 * 96 + 48) * 4


def test_quant_linear_forward_is_linear_with_the_dequantized_weight():
    linear = torch.nn.Linear(100, 20)  # 100 is no multiple of 32: the last group is short
    quant = QuantLinear.from_linear(linear, 32)
    codes = quant.codes()
    assert codes.shape == (20, 100) and quant.packed.numel() == 20 * 100 // 2  # no padding stored
    padded = torch.cat([codes.float(), torch.zeros(20, 28)], dim=1)
    weight_hat = (padded.reshape(20, 4, 32) * quant.scales.float()[..., None]).reshape(20, 128)[:, :100]
    assert torch.equal(quant.dequantized_weight(), weight_hat)
    x = torch.randn(5, 100, generator=generator())
    assert torch.equal(quant(x), F.linear(x, weight_hat, linear.bias))
    assert (weight_hat - linear.weight).abs().max() <= quant.scales.float().max() / 2 * 1.01


def test_quantize_linears_replaces_every_linear():
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(32, 10, bias=False))
    )
    quantized = quantize_linears(model, 32)
    assert isinstance(quantized[0], QuantLinear) and isinstance(quantized[2][0], QuantLinear)
    assert isinstance(model[0], torch.nn.Linear)  # the original is untouched
    x = torch.randn(3, 64)
    assert quantized(x).shape == (3, 10)
    with pytest.raises(ValueError, match="expected a torch.nn.Linear"):
        QuantLinear.from_linear(torch.nn.ReLU())


@pytest.mark.parametrize("name", list(FP8_FORMATS))
def test_fp8_fake_quantize_is_pytorchs_cast_after_scaling(name):
    dtype = FP8_FORMATS[name]
    x = torch.randn(5000, generator=generator()) * 3
    scale = x.abs().max() / torch.finfo(dtype).max
    expected = (x / scale).to(dtype).to(torch.float32) * scale
    assert torch.equal(fp8_fake_quantize(x, name), expected)
    assert torch.equal(fp8_fake_quantize(torch.zeros(3), name), torch.zeros(3))
    with pytest.raises(ValueError, match="format 'E3M4'"):
        fp8_fake_quantize(x, "E3M4")


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match="expected a 2-D float tensor"):
        w8a8_linear(torch.randn(3), weight())
    with pytest.raises(ValueError, match="contains NaN or infinity"):
        outlier_columns(torch.tensor([[float("nan")]]))
