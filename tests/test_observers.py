"""Range estimators (notebook 02) against PyTorch's observers and torch.quantile."""

import pytest
import torch
from torch.ao.quantization import MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver

from qtutor import fake_quantize, mse, qparams
from qtutor.observers import (
    MovingAverageMinMax,
    clip_errors,
    entropy_range,
    minmax_range,
    mse_range,
    percentile_range,
    pytorch_histogram_range,
)


def generator(seed):
    return torch.Generator().manual_seed(seed)


def test_minmax_equals_pytorch_observers():
    x = torch.randn(8, 3, 5, 5, generator=generator(0))
    observer = MinMaxObserver()
    observer(x)
    low, high = minmax_range(x)
    assert low.equal(observer.min_val) and high.equal(observer.max_val)
    for axis in (0, 1):
        observer = PerChannelMinMaxObserver(ch_axis=axis)
        observer(x)
        low, high = minmax_range(x, axis=axis)
        assert low.equal(observer.min_val) and high.equal(observer.max_val)


def test_moving_average_equals_pytorch_observer():
    ours, theirs = MovingAverageMinMax(), MovingAverageMinMaxObserver()
    for i in range(30):
        batch = torch.randn(64, generator=generator(i)) * (1 + i % 5) + i * 0.1
        ours.update(batch)
        theirs(batch)
    assert ours.range[0].equal(theirs.min_val) and ours.range[1].equal(theirs.max_val)


@pytest.mark.parametrize("p", [99.0, 99.9, 99.99, 75.0, 100.0])
def test_percentile_equals_torch_quantile(p):
    x = torch.randn(30001, generator=generator(1)) * 3
    low, high = percentile_range(x, p)
    expected = torch.quantile(x.double(), torch.tensor([1 - p / 100, p / 100], dtype=torch.float64)).float()
    assert torch.allclose(torch.stack([low, high]), expected, rtol=0, atol=1e-6)


def with_outliers():
    x = torch.randn(50_000, generator=generator(2))
    x[:5] = torch.tensor([40.0, -35.0, 50.0, 30.0, -45.0])
    return x


def test_clipping_ranges_beat_minmax_on_outliers():
    x = with_outliers()
    bits = 4
    errors = {}
    for name, (low, high) in {
        "minmax": minmax_range(x),
        "mse": mse_range(x, bits=bits),
        "entropy": entropy_range(x, bits=bits),
        "percentile": percentile_range(x, 99.99),
    }.items():
        scale, zero_point = qparams(low, high, bits=bits)
        errors[name] = mse(x, fake_quantize(x, scale, zero_point, bits=bits))
    assert errors["mse"] < errors["minmax"] / 5
    assert errors["entropy"] < errors["minmax"] / 5
    assert errors["percentile"] < errors["minmax"] / 5


@pytest.mark.parametrize("bits", [4, 8])
def test_mse_range_at_least_as_good_as_pytorch_histogram_observer(bits):
    x = with_outliers()
    errors = []
    for low, high in (mse_range(x, bits=bits), pytorch_histogram_range(x, bits=bits)):
        scale, zero_point = qparams(low, high, bits=bits)
        errors.append(mse(x, fake_quantize(x, scale, zero_point, bits=bits)))
    assert errors[0] <= errors[1] * 1.05


def test_clip_errors_split_adds_up():
    x = with_outliers()
    parts = clip_errors(x, -3.0, 3.0, bits=4, signed=True)
    assert parts["clipping"] + parts["rounding"] == pytest.approx(parts["total"], rel=1e-6)
    assert parts["clipped_fraction"] == pytest.approx((x.abs() > 3.0).float().mean().item(), abs=2e-3)
    assert clip_errors(x, x.min(), x.max())["clipping"] == 0


def test_bad_input():
    with pytest.raises(ValueError, match="x is empty"):
        minmax_range(torch.tensor([]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        percentile_range(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="percentile=40"):
        percentile_range(torch.ones(3), 40)
    with pytest.raises(ValueError, match="no batch seen yet"):
        _ = MovingAverageMinMax().range
    with pytest.raises(ValueError, match="bins=16"):
        entropy_range(torch.ones(3), bits=8, bins=16)
