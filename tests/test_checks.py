"""Every exercise check passes a right answer and fails a wrong or missing one."""

import pytest
import torch
from torch.ao.quantization import PerChannelMinMaxObserver

from qtutor import checks, qparams, quantize
from qtutor.formats import bit_fields, memory_mb
from qtutor.intmath import requantize
from qtutor.largemodels import absmax_qparams, smoothing_factors
from qtutor.nonuniform import assign_to_codebook, log_fake_quantize, shift_multiply
from qtutor.observers import minmax_range, percentile_range
from qtutor.packing import pack


def lloyd(x, codebook):
    indices = assign_to_codebook(x, codebook)
    means = [x[indices == i].mean() if (indices == i).any() else codebook[i] for i in range(len(codebook))]
    return torch.stack(means)


def accumulate(x_q, x_zp, w_q, w_zp):
    return ((x_q.int() - x_zp) @ (w_q.int() - w_zp).T).int()


def requantize_float64(acc, multiplier, zero_point):
    return (torch.round(acc.double() * multiplier) + zero_point).clamp(0, 255).to(torch.uint8)


def per_channel(w):
    return minmax_range(w, axis=0)


# check, a right answer, wrong answers (each a typical mistake)
CASES = [
    (checks.check_float16_fields, lambda v: bit_fields(v, torch.float16),
     [lambda v: bit_fields(v, torch.bfloat16), lambda v: bit_fields(abs(v), torch.float16)]),
    (checks.check_model_megabytes, memory_mb,
     [lambda n, d: n * d.itemsize / 2**20, lambda n, d: n * 4 / 1e6]),
    (checks.check_qparams, lambda a, b: qparams(a, b),
     [lambda a, b: qparams(a, b, symmetric=True),
      lambda a, b: ((b - a) / 255, torch.round(-a / ((b - a) / 255)).long()),  # no widening to 0, no eps
      lambda a, b: (qparams(a, b)[0], torch.floor(-torch.minimum(a, torch.tensor(0.0)) / qparams(a, b)[0]).long())]),
    (checks.check_quantize, lambda x, s, z: quantize(x, s, z),
     [lambda x, s, z: torch.floor(x / s + 0.5 + z).clamp(0, 255).to(torch.uint8),  # half up, not to even
      lambda x, s, z: (torch.round(x / s) + z).clamp(0, 255).to(torch.uint8),  # divides instead of 1/scale
      lambda x, s, z: (torch.round(x * (1 / torch.tensor(s))) + z).to(torch.uint8)]),  # no clamp: wraps
    (checks.check_percentile_range, percentile_range,
     [lambda x, p: tuple(torch.quantile(x, torch.tensor([1 - p, p]).clamp(0, 1))),
      lambda x, p: (x.min(), x.max())]),
    (checks.check_per_channel_minmax, per_channel,
     [lambda w: minmax_range(w.transpose(0, 1), axis=0), lambda w: minmax_range(w)]),
    (checks.check_nearest_power_of_two, lambda x: log_fake_quantize(x, bits=8, max_exponent=40),
     [lambda x: torch.sign(x) * torch.exp2(torch.floor(torch.log2(x.abs()))),
      lambda x: torch.sign(x) * torch.exp2(torch.ceil(torch.log2(x.abs())))]),
    (checks.check_shift_multiply, shift_multiply,
     [lambda a, e: a * 2**e if e >= 0 else torch.div(a, 2**-e, rounding_mode="trunc"),
      lambda a, e: torch.bitwise_left_shift(a, abs(e))]),
    (checks.check_assign_nearest, assign_to_codebook,
     [lambda x, c: torch.bucketize(x, c).clamp(max=len(c) - 1), lambda x, c: (x[:, None] - c).argmin(1)]),
    (checks.check_lloyd_step, lloyd,
     [lambda x, c: torch.stack([x[assign_to_codebook(x, c) == i].median() if (assign_to_codebook(x, c) == i).any()
                                else c[i] for i in range(len(c))]),
      lambda x, c: torch.nan_to_num(torch.stack([x[assign_to_codebook(x, c) == i].mean() for i in range(len(c))]))]),
    (checks.check_int_accumulate, accumulate,
     [lambda xq, xz, wq, wz: ((xq - xz).int() @ (wq.int() - wz).T).int(),  # uint8 wraps before widening
      lambda xq, xz, wq, wz: (xq.double() - xz) @ (wq.double() - wz).T]),  # not int32
    (checks.check_requantize, requantize_float64,
     [lambda a, m, z: (torch.floor(a.double() * m + 0.5) + z).clamp(0, 255).to(torch.uint8),
      lambda a, m, z: (torch.round(a.double() * m) + z).to(torch.uint8)]),
    (checks.check_per_token_scales, lambda x: (x.abs().amax(dim=1) / 127.5).clamp(min=torch.finfo(torch.float32).eps),
     [lambda x: x.abs().amax(dim=1) / 127,  # LLM.int8()'s 127, not the course's (qmax - qmin) / 2
      lambda x: x.abs().amax(dim=1) / 127.5,  # a row of zeros gets scale 0
      lambda x: x.abs().amax(dim=0) / 127.5,  # per channel
      lambda x: absmax_qparams(x)[0]]),  # per tensor
    (checks.check_smoothing_factors,
     lambda a, w, alpha: a ** alpha / w.abs().amax(dim=0) ** (1 - alpha),
     [lambda a, w, alpha: a ** (1 - alpha) / w.abs().amax(dim=0) ** alpha,  # exponents swapped
      lambda a, w, alpha: a ** alpha / w.abs().max() ** (1 - alpha),  # one weight maximum for every channel
      lambda a, w, alpha: a ** alpha / w.amax(dim=0) ** (1 - alpha)]),  # no magnitude
    (checks.check_pack_int4, lambda c: (c[0::2] | (c[1::2] << 4)).to(torch.uint8),
     [lambda c: ((c[0::2] << 4) | c[1::2]).to(torch.uint8),  # high nibble first
      lambda c: c[0::2].long() + 16 * c[1::2].long()]),  # right bytes, wrong dtype
]


@pytest.mark.parametrize("check,right,wrongs", CASES, ids=[c[0].__name__ for c in CASES])
def test_check_passes_right_and_fails_wrong_and_missing(check, right, wrongs, capsys):
    check(right)
    assert "passed" in capsys.readouterr().out
    for wrong in wrongs:
        with pytest.raises(AssertionError, match="wrong answer|returned dtype"):
            check(wrong)

    def missing(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not answered yet"):
        check(missing)


def test_requantize_check_agrees_with_fixed_point_on_its_cases():
    # The check's float64 reference and the integer-only requantize agree on the multipliers it uses.
    acc = torch.randint(-200000, 200000, (5000,), generator=torch.Generator().manual_seed(0))
    for multiplier in (0.0025, 0.0005, 0.01):
        m32 = torch.tensor(multiplier, dtype=torch.float32).item()
        assert requantize(acc, m32, 128).equal(requantize_float64(acc, m32, 128))


def test_every_check_is_tested():
    names = {c[0].__name__ for c in CASES}
    assert names == set(checks.__all__)


def test_notebook_11_references_are_the_library():
    x = torch.randn(6, 10)
    assert torch.allclose(absmax_qparams(x, axis=0)[0], x.abs().amax(dim=1) / 127.5)
    codes = torch.randint(0, 16, (8,), dtype=torch.uint8)
    assert torch.equal(pack(codes, 4), (codes[0::2] | (codes[1::2] << 4)).to(torch.uint8))
    a, w = torch.rand(10) + 0.1, torch.randn(4, 10)
    assert torch.allclose(smoothing_factors(a, w, 0.5), a.sqrt() / w.abs().amax(dim=0).sqrt())


def test_per_channel_reference_is_pytorch():
    w = torch.randn(4, 3, 2, 2)
    observer = PerChannelMinMaxObserver(ch_axis=0)
    observer(w)
    assert per_channel(w)[0].equal(observer.min_val)
