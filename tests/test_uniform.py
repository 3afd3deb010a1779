"""The quantization core against PyTorch's own kernels, bit for bit (qtutor.uniform, notebook 01)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver

from qtutor import dequantize, fake_quantize, integer_dtype, mse, qparams, qrange, quantize, sqnr_db

# (PyTorch dtype, signed, symmetric, PyTorch per-tensor scheme, PyTorch per-channel scheme)
SCHEMES = [
    (torch.quint8, False, False, torch.per_tensor_affine, torch.per_channel_affine),
    (torch.qint8, True, False, torch.per_tensor_affine, torch.per_channel_affine),
    (torch.qint8, True, True, torch.per_tensor_symmetric, torch.per_channel_symmetric),
    (torch.quint8, False, True, torch.per_tensor_symmetric, torch.per_channel_symmetric),
]
SCHEME_IDS = ["quint8-affine", "qint8-affine", "qint8-symmetric", "quint8-symmetric"]


def random_tensors(count, shape=(257,), seed=0):
    """Tensors of many scales and offsets, some all-positive, some all-negative, some constant."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for i in range(count):
        spread = 10 ** torch.empty(1).uniform_(-4, 3, generator=generator)
        offset = torch.randn(1, generator=generator) * spread * 2
        x = torch.randn(shape, generator=generator) * spread + offset
        if i % 17 == 0:
            x = torch.full(shape, offset.item())
        tensors.append(x)
    return tensors


def with_hard_values(x, scale, zero_point):
    """``x`` plus values exactly at rounding midpoints and far outside the range."""
    codes = torch.arange(-300, 300, dtype=torch.float32)
    midpoints = (codes + 0.5 - zero_point) * scale
    far = torch.tensor([-1e6, -1e3, 1e3, 1e6]) * max(scale, 1e-3)
    return torch.cat([x, midpoints, far, -x])


@pytest.mark.parametrize("dtype,signed,symmetric,scheme,_", SCHEMES, ids=SCHEME_IDS)
def test_qparams_match_minmax_observer(dtype, signed, symmetric, scheme, _):
    for x in random_tensors(60):
        observer = MinMaxObserver(dtype=dtype, qscheme=scheme)
        observer(x)
        ref_scale, ref_zero_point = observer.calculate_qparams()
        scale, zero_point = qparams(x.min(), x.max(), signed=signed, symmetric=symmetric)
        assert scale.reshape(1).equal(ref_scale)
        assert zero_point.reshape(1).equal(ref_zero_point.to(torch.int64))


@pytest.mark.parametrize("dtype,signed,symmetric,_,scheme", SCHEMES, ids=SCHEME_IDS)
def test_qparams_match_per_channel_observer(dtype, signed, symmetric, _, scheme):
    for i, w in enumerate(random_tensors(20, shape=(16, 3, 3, 3), seed=1)):
        w = w * torch.linspace(0.01, 5, 16).reshape(-1, 1, 1, 1)  # channels of very different ranges
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=dtype, qscheme=scheme)
        observer(w)
        ref_scale, ref_zero_point = observer.calculate_qparams()
        low, high = w.flatten(1).min(1).values, w.flatten(1).max(1).values
        scale, zero_point = qparams(low, high, signed=signed, symmetric=symmetric)
        assert scale.equal(ref_scale), i
        assert zero_point.equal(ref_zero_point.to(torch.int64)), i


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("signed,symmetric", [(False, False), (True, False), (True, True)])
def test_qparams_match_observer_with_custom_range(bits, signed, symmetric):
    qmin, qmax = qrange(bits, signed)
    dtype = torch.qint8 if signed else torch.quint8
    scheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    for x in random_tensors(30, seed=bits):
        observer = MinMaxObserver(dtype=dtype, qscheme=scheme, quant_min=qmin, quant_max=qmax)
        observer(x)
        ref_scale, ref_zero_point = observer.calculate_qparams()
        scale, zero_point = qparams(x.min(), x.max(), bits=bits, signed=signed, symmetric=symmetric)
        assert scale.reshape(1).equal(ref_scale)
        assert zero_point.reshape(1).equal(ref_zero_point.to(torch.int64))


def test_qparams_range_is_widened_to_include_zero():
    scale, zero_point = qparams(2.0, 4.0)  # as if the range were 0..4
    assert scale.item() == pytest.approx(4 / 255)
    assert zero_point.item() == 0
    scale, zero_point = qparams(-4.0, -2.0)  # as if the range were -4..0
    assert zero_point.item() == 255


def test_the_minus_one_to_one_example():
    # In exact arithmetic -1..1 maps onto 0..255 with zero-point 127.5; float32 decides it.
    x = torch.tensor([-1.0, 0.0, 1.0])
    scale, zero_point = qparams(-1.0, 1.0)
    assert scale.item() == pytest.approx(2 / 255) and zero_point.item() == 127
    codes = quantize(x, scale, zero_point)
    assert codes.tolist() == [0, 127, 254] and codes.dtype == torch.uint8
    assert codes.equal(torch.quantize_per_tensor(x, scale.item(), 127, torch.quint8).int_repr())
    scale, zero_point = qparams(-1.0, 1.0, symmetric=True)
    assert zero_point.item() == 128
    assert quantize(x, scale, zero_point).tolist() == [1, 128, 255]


@pytest.mark.parametrize("dtype,signed,symmetric,scheme,_", SCHEMES, ids=SCHEME_IDS)
def test_per_tensor_bit_exact(dtype, signed, symmetric, scheme, _):
    qmin, qmax = qrange(8, signed)
    for x in random_tensors(60, seed=2):
        scale, zero_point = qparams(x.min(), x.max(), signed=signed, symmetric=symmetric)
        x = with_hard_values(x, scale.item(), zero_point.item())
        reference = torch.quantize_per_tensor(x, scale.item(), zero_point.item(), dtype)
        codes = quantize(x, scale, zero_point, signed=signed)
        assert codes.dtype == reference.int_repr().dtype
        assert codes.equal(reference.int_repr())
        assert dequantize(codes, scale, zero_point).equal(reference.dequantize())
        expected = torch.fake_quantize_per_tensor_affine(x, scale.item(), zero_point.item(), qmin, qmax)
        assert fake_quantize(x, scale, zero_point, signed=signed).equal(expected)


def test_large_tensor_bit_exact_across_blocks():
    """quantize works block by block on large tensors; every block, the last partial one too, must agree."""
    import qtutor.uniform

    x = torch.randn(2, qtutor.uniform.BLOCK + 1000, generator=torch.Generator().manual_seed(7)) * 3
    scale, zero_point = qparams(-4.0, 4.0)
    x.view(-1)[qtutor.uniform.BLOCK - 3 : qtutor.uniform.BLOCK + 3] = 0.5 * scale  # midpoints across a boundary
    reference = torch.quantize_per_tensor(x, scale.item(), zero_point.item(), torch.quint8).int_repr()
    assert quantize(x.t(), scale, zero_point).equal(reference.t())  # non-contiguous input too
    assert quantize(x, scale, zero_point).equal(reference)


@pytest.mark.parametrize("dtype,signed,symmetric,_,scheme", SCHEMES, ids=SCHEME_IDS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_channel_bit_exact(dtype, signed, symmetric, _, scheme, axis):
    qmin, qmax = qrange(8, signed)
    for w in random_tensors(15, shape=(8, 6, 5), seed=3):
        w = w * torch.rand(w.shape[axis]).add(0.01).reshape([-1 if d == axis % 3 else 1 for d in range(3)])
        observer = PerChannelMinMaxObserver(ch_axis=axis % 3, dtype=dtype, qscheme=scheme)
        observer(w)
        scale, zero_point = observer.calculate_qparams()
        reference = torch.quantize_per_channel(w, scale, zero_point, axis % 3, dtype)
        codes = quantize(w, scale, zero_point, signed=signed, axis=axis)
        assert codes.equal(reference.int_repr())
        assert dequantize(codes, scale, zero_point, axis=axis).equal(reference.dequantize())
        expected = torch.fake_quantize_per_channel_affine(w, scale, zero_point.int(), axis % 3, qmin, qmax)
        assert fake_quantize(w, scale, zero_point, signed=signed, axis=axis).equal(expected)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 10, 12, 16])
@pytest.mark.parametrize("signed", [False, True])
def test_any_bit_width_matches_pytorch_fake_quantize(bits, signed):
    qmin, qmax = qrange(bits, signed)
    for x in random_tensors(20, seed=4 + bits):
        scale, zero_point = qparams(x.min(), x.max(), bits=bits, signed=signed)
        x = with_hard_values(x, scale.item(), zero_point.item())
        expected = torch.fake_quantize_per_tensor_affine(x, scale.item(), zero_point.item(), qmin, qmax)
        assert fake_quantize(x, scale, zero_point, bits=bits, signed=signed).equal(expected)
        codes = quantize(x, scale, zero_point, bits=bits, signed=signed)
        assert codes.dtype == integer_dtype(bits, signed)
        assert codes.to(torch.int64).equal(torch.round(expected / scale).to(torch.int64) + zero_point)
        assert dequantize(codes, scale, zero_point).equal(expected)


def test_integer_dtypes_hold_their_range():
    for bits in range(2, 17):
        for signed in (False, True):
            qmin, qmax = qrange(bits, signed)
            info = torch.iinfo(integer_dtype(bits, signed))
            assert info.min <= qmin and qmax <= info.max
            assert qmax - qmin == 2**bits - 1


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(-1e4, 1e4, width=32), min_size=2, max_size=64),
    bits=st.integers(2, 16),
    signed=st.booleans(),
    symmetric=st.booleans(),
)
def test_properties(values, bits, signed, symmetric):
    x = torch.tensor(values, dtype=torch.float32)
    scale, zero_point = qparams(x.min(), x.max(), bits=bits, signed=signed, symmetric=symmetric)
    codes = quantize(x, scale, zero_point, bits=bits, signed=signed)
    # Inside the range, the error is at most half a step (plus float32 rounding of the product).
    error = (x - dequantize(codes, scale, zero_point)).abs()
    assert (error <= scale / 2 * (1 + 1e-5) + 1e-6 * x.abs()).all()
    # Monotone: a larger input never gets a smaller code.
    order = torch.argsort(x)
    assert (codes.to(torch.int64)[order].diff() >= 0).all()
    # Zero is exact.
    assert quantize(torch.zeros(1), scale, zero_point, bits=bits, signed=signed).item() == zero_point.item()


def test_metrics():
    x = torch.tensor([1.0, -2.0, 3.0, 0.5])
    noisy = x + torch.tensor([0.1, -0.1, 0.1, -0.1])
    assert mse(x, noisy) == pytest.approx(0.01)
    assert sqnr_db(x, noisy) == pytest.approx(10 * math.log10(14.25 / 0.04))
    assert sqnr_db(x, x) == math.inf
    # Each extra bit halves the step and buys about 6 dB on a uniform signal: 20 log10(255 / 127).
    u = torch.rand(100_000, generator=torch.Generator().manual_seed(5)) * 2 - 1
    gains = []
    for bits in (7, 8):
        scale, zero_point = qparams(u.min(), u.max(), bits=bits)
        gains.append(sqnr_db(u, fake_quantize(u, scale, zero_point, bits=bits)))
    assert gains[1] - gains[0] == pytest.approx(20 * math.log10(255 / 127), abs=0.1)


BAD_QPARAMS = [
    (dict(min_val=1.0, max_val=-1.0), "min_val=1.0 is above max_val=-1.0"),
    (dict(min_val=float("nan"), max_val=1.0), "min_val=nan: expected finite numbers"),
    (dict(min_val=-1.0, max_val=float("inf")), "max_val=inf: expected finite numbers"),
    (dict(min_val=-1.0, max_val=1.0, bits=1), "bits=1: expected a whole number from 2 to 16"),
    (dict(min_val=-1.0, max_val=1.0, bits=17), "bits=17: expected a whole number from 2 to 16"),
    (dict(min_val=-1.0, max_val=1.0, bits=8.0), "bits=8.0: expected a whole number"),
    (
        dict(min_val=torch.tensor([0.0, 2.0]), max_val=torch.tensor([1.0, 1.0])),
        "min_val=2.0 is above max_val=1.0 at channel 1",
    ),
    (dict(min_val=torch.zeros(2), max_val=torch.ones(3)), "expected two numbers or two 1-D tensors"),
]


@pytest.mark.parametrize("kwargs,message", BAD_QPARAMS)
def test_qparams_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        qparams(**kwargs)


BAD_QUANTIZE = [
    (dict(scale=0.0, zero_point=0), "scale=0.0: expected positive numbers"),
    (dict(scale=-0.1, zero_point=0), "scale=-0.1"),
    (dict(scale=float("nan"), zero_point=0), "scale=nan: expected finite numbers"),
    (dict(scale=0.1, zero_point=256), "zero_point=256: expected values in 0..255, the unsigned 8-bit range"),
    (dict(scale=0.1, zero_point=-129, signed=True), "zero_point=-129: expected values in -128..127"),
    (dict(scale=0.1, zero_point=16, bits=4), "zero_point=16: expected values in 0..15"),
    (dict(scale=0.1, zero_point=1.5), "zero_point=1.5: expected whole numbers"),
    (dict(scale=0.1, zero_point=0, bits=0), "bits=0: expected a whole number from 2 to 16"),
    (dict(scale=0.1, zero_point=0, axis=2), "axis=2: expected an integer from -2 to 1"),
    (dict(scale=torch.ones(3), zero_point=torch.zeros(3)), "scale has 3 values but axis=None"),
    (dict(scale=torch.ones(3), zero_point=torch.zeros(3), axis=1), "expected one value or 5 values"),
]


@pytest.mark.parametrize("kwargs,message", BAD_QUANTIZE)
@pytest.mark.parametrize("function", [quantize, fake_quantize])
def test_quantize_rejects_bad_input(function, kwargs, message):
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        function(x, **kwargs)


def test_quantize_rejects_nan_and_integer_input():
    with pytest.raises(ValueError, match="x contains NaN"):
        quantize(torch.tensor([0.0, float("nan")]), 0.1, 0)
    with pytest.raises(ValueError, match="x has dtype torch.int64: expected a floating-point tensor"):
        quantize(torch.tensor([1, 2]), 0.1, 0)


def test_dequantize_rejects_float_codes_and_bad_scale():
    with pytest.raises(ValueError, match="q has dtype torch.float32: expected an integer tensor"):
        dequantize(torch.tensor([1.0]), 0.1, 0)
    with pytest.raises(ValueError, match="scale=0.0: expected positive numbers"):
        dequantize(torch.tensor([1]), 0.0, 0)


@pytest.mark.parametrize("zero_point", [1.5, torch.tensor([0.0, 2.5]), float("nan"), True])
def test_dequantize_checks_the_zero_point_as_quantize_does(zero_point):
    """A fractional zero-point is refused in one line naming it, not truncated (1.5 used to act as 1)."""
    codes = torch.tensor([0, 1], dtype=torch.uint8)
    axis = 0 if isinstance(zero_point, torch.Tensor) else None
    with pytest.raises(ValueError, match=r"^zero_point=.*: expected whole numbers$"):
        dequantize(codes, 0.1, zero_point, axis=axis)
    with pytest.raises(ValueError, match=r"^zero_point=.*: expected whole numbers$"):
        quantize(torch.tensor([0.0, 0.1]), 0.1, zero_point, axis=axis)
    assert dequantize(codes, 0.5, 2.0).tolist() == [-1.0, -0.5]  # a whole number stored as a float is fine


def test_fake_quantize_per_group_is_per_channel_on_groups():
    from qtutor.uniform import fake_quantize_per_group

    w = torch.randn(6, 64, generator=torch.Generator().manual_seed(9)) * torch.logspace(-2, 0, 64)
    groups = w.reshape(-1, 16)
    observer = torch.ao.quantization.PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric
    )
    observer(groups)
    scale, zero_point = observer.calculate_qparams()
    expected = torch.fake_quantize_per_channel_affine(groups, scale, zero_point.int(), 0, -128, 127).reshape(w.shape)
    assert fake_quantize_per_group(w, 16, bits=8).equal(expected)
    assert fake_quantize_per_group(w, 64, bits=4).equal(
        fake_quantize(
            w, *qparams(*torch.aminmax(w, dim=1), bits=4, signed=True, symmetric=True), bits=4, signed=True, axis=0
        )
    )
    with pytest.raises(ValueError, match="group_size=48"):
        fake_quantize_per_group(w, 48)
