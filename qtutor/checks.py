"""Checks for the notebooks' exercises: each compares the learner's function with a reference.

A check calls the learner's function on several inputs (ordinary ones and the
hard cases: rounding midpoints, values out of range, negative numbers), and
compares with PyTorch or with qtutor's tested implementation. It prints a
visible "passed" line, or raises ``AssertionError`` naming the first input
that went wrong, what came back and what was expected. An exercise not yet
answered (``raise NotImplementedError()``) fails too.
"""

from __future__ import annotations

import torch

from qtutor.formats import bit_fields, memory_mb
from qtutor.largemodels import absmax_qparams, smoothing_factors
from qtutor.nonuniform import assign_to_codebook, log_fake_quantize, shift_multiply
from qtutor.packing import pack
from qtutor.uniform import qparams

__all__ = [
    "check_float16_fields",
    "check_model_megabytes",
    "check_qparams",
    "check_quantize",
    "check_percentile_range",
    "check_per_channel_minmax",
    "check_nearest_power_of_two",
    "check_shift_multiply",
    "check_assign_nearest",
    "check_lloyd_step",
    "check_int_accumulate",
    "check_requantize",
    "check_per_token_scales",
    "check_smoothing_factors",
    "check_pack_int4",
]


def _call(exercise: str, function, *args):
    """Call the learner's function, turning 'not answered yet' into a clear failure."""
    try:
        return function(*args)
    except NotImplementedError:
        raise AssertionError(f"{exercise}: not answered yet. Replace `raise NotImplementedError()` "
                             "with your code, run that cell, then this one.") from None


def _same(got, expected, exact: bool = True) -> bool:
    got = torch.as_tensor(got)
    expected = torch.as_tensor(expected)
    if got.shape != expected.shape:
        return False
    if exact:
        return torch.equal(got.to(torch.float64), expected.to(torch.float64))
    return torch.allclose(got.to(torch.float64), expected.to(torch.float64), rtol=1e-5, atol=1e-7)


def _verify(exercise: str, function, cases, reference, *, exact: bool = True, hint: str = "") -> None:
    """Run ``function`` and ``reference`` on every case; raise on the first mismatch, else print passed."""
    for number, args in enumerate(cases, 1):
        got = _call(exercise, function, *args)
        expected = reference(*args)
        if isinstance(expected, tuple):
            ok = isinstance(got, (tuple, list)) and len(got) == len(expected) and all(
                _same(g, e, exact) for g, e in zip(got, expected))
        elif isinstance(expected, dict):
            ok = got == expected
        else:
            ok = _same(got, expected, exact)
        if not ok:
            shown = ", ".join(_short(a) for a in args)
            raise AssertionError(
                f"{exercise}: wrong answer on case {number} of {len(cases)}.\n"
                f"  input:    {shown}\n  got:      {_short(got)}\n  expected: {_short(expected)}"
                + (f"\n  hint: {hint}" if hint else "")
            )
    print(f"✓ {exercise}: passed ({len(cases)} cases)")


def _short(value) -> str:
    """A one-line form of a value for a failure message."""
    if isinstance(value, torch.Tensor) and value.numel() > 8:
        return f"tensor of shape {tuple(value.shape)}, first values {value.flatten()[:6].tolist()}"
    if isinstance(value, torch.Tensor):
        return str(value.tolist())
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return repr(value)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Notebook 00 -----------------------------------------------------------------------------------

def check_float16_fields(float16_fields) -> None:
    """``float16_fields(value) -> {'sign', 'exponent', 'mantissa'}`` bit strings of an FP16 number."""
    cases = [(v,) for v in (1.0, -2.0, 0.1, 65504.0, 6.1e-05, 3.0e-07, -0.0, 1000.5)]
    _verify("float16_fields", float16_fields, cases, lambda v: bit_fields(v, torch.float16),
            hint="view the FP16 tensor as int16 to read its 16 bits; 1 sign, 5 exponent, 10 mantissa bits")


def check_model_megabytes(model_megabytes) -> None:
    """``model_megabytes(parameter_count, dtype) -> float`` in megabytes (10**6 bytes)."""
    cases = [(7_978_856, dtype) for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.int8)]
    cases += [(1_000_000, torch.int8), (3, torch.float64)]
    _verify("model_megabytes", model_megabytes, cases, memory_mb, exact=False,
            hint="bytes per number is dtype.itemsize; a megabyte here is 10**6 bytes")


# Notebook 01 -----------------------------------------------------------------------------------

def check_qparams(my_qparams) -> None:
    """``my_qparams(min_val, max_val) -> (scale, zero_point)``: unsigned 8-bit affine, as PyTorch's MinMaxObserver."""
    ranges = [(-1.0, 1.0), (0.0, 6.0), (-3.2, 0.7), (0.5, 2.0), (-4.0, -1.0), (-0.013, 0.021), (0.0, 0.0)]
    generator = _generator(1)
    ranges += [tuple(sorted(torch.randn(2, generator=generator).mul(5).tolist())) for _ in range(20)]
    cases = [(torch.tensor(a), torch.tensor(b)) for a, b in ranges]
    _verify("my_qparams", my_qparams, cases, lambda a, b: tuple(qparams(a, b)),
            hint="widen the range to include 0; scale = (max - min) / 255 in float32, at least float32 eps; "
                 "zero_point = 0 - round(min / scale), clamped to 0..255")


def check_quantize(my_quantize) -> None:
    """``my_quantize(x, scale, zero_point) -> uint8 codes``, bit for bit as ``torch.quantize_per_tensor``."""
    generator = _generator(2)
    cases = []
    for scale, zero_point in ((0.1, 128), (2 / 255, 127), (0.00214854861, 0), (0.5, 250)):
        midpoints = (torch.arange(-300, 300) + 0.5) * scale
        up = torch.nextafter(midpoints, torch.tensor(float("inf")))  # one float32 step either side
        down = torch.nextafter(midpoints, torch.tensor(float("-inf")))
        x = torch.cat([torch.randn(500, generator=generator) * 3, midpoints, up, down, torch.tensor([-1e4, 1e4])])
        cases.append((x, scale, zero_point))
    _verify("my_quantize", my_quantize, cases,
            lambda x, s, z: torch.quantize_per_tensor(x, s, z, torch.quint8).int_repr(),
            hint="round half to even (torch.round), add the zero-point, clamp to 0..255, return torch.uint8; "
                 "PyTorch multiplies by 1/scale rather than dividing by scale")


# Notebook 02 -----------------------------------------------------------------------------------

def check_percentile_range(my_percentile_range) -> None:
    """``my_percentile_range(x, p) -> (low, high)``: the (100-p)-th and p-th percentiles, as torch.quantile."""
    generator = _generator(3)
    cases = [(torch.randn(n, generator=generator) * s, p)
             for n, s, p in ((1000, 1.0, 99.0), (5001, 3.0, 99.9), (10, 0.5, 90.0), (20000, 2.0, 99.99))]
    reference = lambda x, p: tuple(torch.quantile(x, torch.tensor([1 - p / 100, p / 100])))  # noqa: E731
    _verify("my_percentile_range", my_percentile_range, cases, reference, exact=False,
            hint="torch.quantile takes fractions (0.99), not percents (99)")


def check_per_channel_minmax(per_channel_minmax) -> None:
    """``per_channel_minmax(w) -> (mins, maxs)``, one per output channel (axis 0), as PerChannelMinMaxObserver."""
    from torch.ao.quantization import PerChannelMinMaxObserver

    def reference(w):
        observer = PerChannelMinMaxObserver(ch_axis=0)
        observer(w)
        return observer.min_val, observer.max_val

    generator = _generator(4)
    cases = [(torch.randn(shape, generator=generator),) for shape in ((8, 3, 3, 3), (16, 4), (5, 2, 1, 1))]
    _verify("per_channel_minmax", per_channel_minmax, cases, reference,
            hint="flatten every dimension but the first, then take min and max along dim 1")


# Notebook 03 -----------------------------------------------------------------------------------

def check_nearest_power_of_two(nearest_power_of_two) -> None:
    """``nearest_power_of_two(x)``: each non-zero value replaced by ``±2**e``, the nearest power of two."""
    generator = _generator(5)
    x = torch.randn(2000, generator=generator) * torch.exp2(torch.randint(-10, 10, (2000,), generator=generator))
    x = x[(x != 0) & ((x.abs() / torch.exp2(torch.floor(torch.log2(x.abs())))) != 1.5)]  # no exact ties
    cases = [(x,), (torch.tensor([1.0, -3.0, 0.7, 5.9, -6.1, 1000.0]),)]
    _verify("nearest_power_of_two", nearest_power_of_two, cases,
            lambda v: log_fake_quantize(v, bits=8, max_exponent=40),
            hint="compare |x| with 1.5 * 2**floor(log2|x|): above it, round up to the next power")


def check_shift_multiply(my_shift_multiply) -> None:
    """``my_shift_multiply(a, e)``: integer ``a * 2**e`` with shifts, flooring when ``e < 0``."""
    generator = _generator(6)
    a = torch.randint(-1000, 1000, (500,), generator=generator)
    cases = [(a, e) for e in (0, 1, 3, 7, -1, -2, -5)]
    _verify("my_shift_multiply", my_shift_multiply, cases, shift_multiply,
            hint="a << e for e >= 0; a >> -e for e < 0 (an arithmetic shift floors: -3 >> 1 == -2)")


# Notebook 04 -----------------------------------------------------------------------------------

def check_assign_nearest(assign_nearest) -> None:
    """``assign_nearest(x, codebook) -> indices``: index of the nearest entry of a sorted codebook."""
    generator = _generator(7)
    cases = []
    for entries in (2, 4, 16):
        codebook = torch.sort(torch.randn(entries, generator=generator)).values
        cases.append((torch.randn(3000, generator=generator) * 1.5, codebook))
    _verify("assign_nearest", assign_nearest, cases, assign_to_codebook,
            hint="(x[:, None] - codebook[None, :]).abs().argmin(dim=1) does it in one line")


def _lloyd_step_reference(x, codebook):
    indices = assign_to_codebook(x, codebook)
    sums = torch.zeros(len(codebook), dtype=torch.float64).index_add_(0, indices, x.double())
    counts = torch.bincount(indices, minlength=len(codebook)).double()
    return torch.where(counts > 0, sums / counts.clamp(min=1), codebook.double()).float()


def check_lloyd_step(lloyd_step) -> None:
    """``lloyd_step(x, codebook) -> new codebook``: each entry moves to the mean of its values (empty ones stay)."""
    generator = _generator(8)
    cases = [(torch.randn(5000, generator=generator), torch.tensor([-2.0, -0.5, 0.1, 1.0])),
             (torch.rand(3000, generator=generator), torch.tensor([0.0, 0.5, 5.0]))]  # 5.0 gets no value
    _verify("lloyd_step", lloyd_step, cases, _lloyd_step_reference, exact=False,
            hint="assign each value to its nearest entry, average per entry; keep an entry nobody chose")


# Notebook 05 -----------------------------------------------------------------------------------

def check_int_accumulate(int_accumulate) -> None:
    """``int_accumulate(x_q, x_zp, w_q, w_zp) -> int32``: ``sum_k (x_q[i,k]-x_zp) * (w_q[j,k]-w_zp)``."""
    generator = _generator(9)
    cases = []
    for rows, inner, cols in ((4, 16, 3), (2, 300, 5)):
        x_q = torch.randint(0, 256, (rows, inner), generator=generator, dtype=torch.uint8)
        w_q = torch.randint(-128, 128, (cols, inner), generator=generator).to(torch.int8)
        cases.append((x_q, 128, w_q, 0))
        cases.append((x_q, 3, w_q, -7))

    def reference(x_q, x_zp, w_q, w_zp):
        return ((x_q.double() - x_zp) @ (w_q.double() - w_zp).T).to(torch.int32)

    _verify("int_accumulate", int_accumulate, cases, reference,
            hint="widen to int32 before subtracting zero-points: uint8 arithmetic wraps around at 256")
    got = _call("int_accumulate", int_accumulate, *cases[0])
    if got.dtype != torch.int32:
        raise AssertionError(f"int_accumulate: returned dtype {got.dtype}, expected torch.int32")


def check_requantize(my_requantize) -> None:
    """``my_requantize(acc, multiplier, zero_point) -> uint8``: ``clamp(round(acc * M) + zp, 0, 255)``."""
    generator = _generator(10)
    acc = torch.cat([torch.randint(-200000, 200000, (2000,), generator=generator), torch.tensor([-200, 200, 0])])
    cases = [(acc.to(torch.int32), m, z) for m, z in ((0.0025, 128), (0.0005, 0), (1 / 400, 10), (0.01, 250))]
    def reference(acc, multiplier, zero_point):
        return (torch.round(acc.double() * multiplier) + zero_point).clamp(0, 255).to(torch.uint8)

    _verify("my_requantize", my_requantize, cases, reference,
            hint="compute acc * multiplier in float64, round half to even, add the zero-point, "
                 "clamp to 0..255, return torch.uint8")


# Notebook 11 -----------------------------------------------------------------------------------

def check_per_token_scales(per_token_scales) -> None:
    """``per_token_scales(x) -> scales``: one signed symmetric INT8 scale per row (token) of ``x``."""
    generator = _generator(11)
    loud = torch.randn(16, 64, generator=generator)
    loud[:, 5] *= 60  # an outlier channel: every token's scale grows
    quiet_row = torch.randn(8, 24, generator=generator)
    quiet_row[2] = 0.0  # a row of zeros still gets a usable scale
    cases = [(torch.randn(32, 48, generator=generator),), (loud,), (quiet_row,)]
    _verify("per_token_scales", per_token_scales, cases, lambda x: absmax_qparams(x, axis=0)[0], exact=False,
            hint="max|x| along each row (dim=1) divided by 127.5, at least torch.finfo(torch.float32).eps")


def check_smoothing_factors(my_smoothing_factors) -> None:
    """``my_smoothing_factors(act_absmax, weight, alpha) -> s``: SmoothQuant's factor per input channel."""
    generator = _generator(12)
    cases = []
    for out_features, in_features, alpha in ((24, 40, 0.5), (40, 24, 0.25), (16, 64, 0.85), (8, 8, 1.0)):
        act_absmax = torch.rand(in_features, generator=generator) * 50 + 0.5
        weight = torch.randn(out_features, in_features, generator=generator) * 0.1
        cases.append((act_absmax, weight, alpha))
    _verify("my_smoothing_factors", my_smoothing_factors, cases, smoothing_factors, exact=False,
            hint="s_j = act_absmax[j]**alpha / max_i |weight[i, j]|**(1 - alpha): the weight's largest magnitude "
                 "per input channel is over dim 0 of an nn.Linear weight [out, in]")


def check_pack_int4(pack_int4) -> None:
    """``pack_int4(codes) -> uint8``: 4-bit codes (0..15), two per byte, the first in the low nibble."""
    generator = _generator(13)
    cases = [(torch.tensor([3, 10, 15, 0], dtype=torch.uint8),),
             (torch.randint(0, 16, (1000,), generator=generator).to(torch.uint8),)]
    _verify("pack_int4", pack_int4, cases, lambda codes: pack(codes, 4),
            hint="byte = codes[0::2] | (codes[1::2] << 4), as torch.uint8")
    got = _call("pack_int4", pack_int4, *cases[0])
    if got.dtype != torch.uint8:
        raise AssertionError(f"pack_int4: returned dtype {got.dtype}, expected torch.uint8")
