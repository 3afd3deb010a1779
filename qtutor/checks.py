"""Checks for the notebooks' exercises: each compares the learner's function with a reference.

A check calls the learner's function on several inputs (ordinary ones and the
hard cases: rounding midpoints, values out of range, negative numbers), and
compares with PyTorch or with qtutor's tested implementation. It prints a
visible "passed" line, or raises ``AssertionError`` naming the first input
that went wrong, what came back and what was expected. An exercise not yet
answered (``raise NotImplementedError()``) fails too.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

from qtutor.formats import bit_fields
from qtutor.intmath import fixed_point_multiplier, rounding_right_shift
from qtutor.largemodels import absmax_qparams, smoothing_factors
from qtutor.nonuniform import assign_to_codebook, lloyd_step, log_fake_quantize, power_of_two_scale
from qtutor.observers import mse_range
from qtutor.packing import pack
from qtutor.uniform import fake_quantize_per_group, qparams

__all__ = [
    "check_float16_fields",
    "check_float16_value",
    "check_qparams",
    "check_quantize",
    "check_mse_range",
    "check_per_group",
    "check_nearest_power_of_two",
    "check_power_of_two_scale",
    "check_assign_nearest",
    "check_lloyd_step",
    "check_int_accumulate",
    "check_fixed_point_requantize",
    "check_requantization_scales",
    "check_keep_in_float_mapping",
    "check_saved_megabytes",
    "check_choose_precision",
    "check_ste_backward",
    "check_fold_batch_norm",
    "check_dense_layer_fusions",
    "check_pt2e_flow",
    "check_ort_weight_scales",
    "check_fake_quantize_qparams",
    "check_per_token_scales",
    "check_smoothing_factors",
    "check_pack_int4",
]


def _call(exercise: str, function, *args):
    """Call the learner's function, turning 'not answered yet' into a clear failure."""
    try:
        return function(*args)
    except NotImplementedError:
        raise AssertionError(
            f"{exercise}: not answered yet. Replace `raise NotImplementedError()` "
            "with your code, run that cell, then this one."
        ) from None


def _same(got, expected, exact: bool = True) -> bool:
    got = torch.as_tensor(got)
    expected = torch.as_tensor(expected)
    if got.shape != expected.shape:
        return False
    if exact:
        return torch.equal(got.to(torch.float64), expected.to(torch.float64))
    return torch.allclose(got.to(torch.float64), expected.to(torch.float64), rtol=1e-5, atol=1e-7)


def _verify(
    exercise: str, function, cases, reference, *, exact: bool = True, hint: str = "", dtype: torch.dtype | None = None
) -> None:
    """Run ``function`` and ``reference`` on every case; raise on the first mismatch, else print passed.

    Values are compared as float64, so ``dtype``, where the exercise promises one, is checked on its own:
    every answer must be a tensor of that dtype.
    """
    for number, args in enumerate(cases, 1):
        got = _call(exercise, function, *args)
        if dtype is not None and getattr(got, "dtype", None) != dtype:
            raise AssertionError(
                f"{exercise}: returned dtype {getattr(got, 'dtype', type(got).__name__)} on case "
                f"{number} of {len(cases)}, expected {dtype}" + (f"\n  hint: {hint}" if hint else "")
            )
        expected = reference(*args)
        if isinstance(expected, tuple):
            ok = (
                isinstance(got, (tuple, list))
                and len(got) == len(expected)
                and all(_same(g, e, exact) for g, e in zip(got, expected, strict=True))
            )
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


def _seeded(build, seed: int = 0):
    """``build()`` with torch's global generator at ``seed``, put back after: a check never reseeds a notebook."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def _student_t(count: int, generator: torch.Generator, degrees: int = 3) -> torch.Tensor:
    """``count`` heavy-tailed samples of Student's t from ``generator``: a normal over sqrt(chi-square / degrees)."""
    normal = torch.randn(count, generator=generator)
    chi_square = torch.randn(count, degrees, generator=generator).pow(2).sum(dim=1)
    return normal / torch.sqrt(chi_square / degrees)


# Notebook 00 -----------------------------------------------------------------------------------


def check_float16_fields(float16_fields) -> None:
    """``float16_fields(value) -> {'sign', 'exponent', 'mantissa'}`` bit strings of an FP16 number."""
    cases = [(v,) for v in (1.0, -2.0, 0.1, 65504.0, 6.1e-05, 3.0e-07, -0.0, 1000.5)]
    _verify(
        "float16_fields",
        float16_fields,
        cases,
        lambda v: bit_fields(v, torch.float16),
        hint="view the FP16 tensor as int16 to read its 16 bits; 1 sign, 5 exponent, 10 mantissa bits",
    )


def _float16_reference(pattern: int) -> float:
    signed = pattern - 65536 if pattern >= 32768 else pattern
    return torch.tensor([signed], dtype=torch.int16).view(torch.float16).item()


def check_float16_value(float16_value) -> None:
    """``float16_value(pattern) -> float``: the number a 16-bit pattern (an int 0..65535) stands for in FP16."""
    generator = _generator(11)
    patterns = [0x3C00, 0x2E66, 0x7BFF, 0x0400, 0x0001, 0x03FF, 0x0200, 0x8001, 0xC500, 0x7C00, 0xFC00, 0x8000, 0x0000]
    random = torch.randint(0, 65536, (200,), generator=generator).tolist()
    patterns += [p for p in random if (p >> 10) & 0x1F != 0x1F]  # no NaN patterns: NaN never equals NaN
    _verify(
        "float16_value",
        float16_value,
        [(pattern,) for pattern in patterns],  # one case each: a wrong answer names its pattern
        _float16_reference,
        hint="an all-zeros exponent field means no implicit leading 1, and its exponent is 1 - bias, "
        "not 0 - bias; an all-ones field with mantissa 0 is infinity; the sign applies to every case",
    )


# Notebook 01 -----------------------------------------------------------------------------------


def check_qparams(my_qparams) -> None:
    """``my_qparams(min_val, max_val) -> (scale, zero_point)``: unsigned 8-bit affine, as PyTorch's MinMaxObserver."""
    ranges = [(-1.0, 1.0), (0.0, 6.0), (-3.2, 0.7), (0.5, 2.0), (-4.0, -1.0), (-0.013, 0.021), (0.0, 0.0)]
    generator = _generator(1)
    ranges += [tuple(sorted(torch.randn(2, generator=generator).mul(5).tolist())) for _ in range(20)]
    cases = [(torch.tensor(a), torch.tensor(b)) for a, b in ranges]
    _verify(
        "my_qparams",
        my_qparams,
        cases,
        lambda a, b: tuple(qparams(a, b)),
        hint="widen the range to include 0; scale = (max - min) / 255 in float32, at least float32 eps; "
        "zero_point = 0 - round(min / scale), clamped to 0..255",
    )


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
    _verify(
        "my_quantize",
        my_quantize,
        cases,
        lambda x, s, z: torch.quantize_per_tensor(x, s, z, torch.quint8).int_repr(),
        dtype=torch.uint8,
        hint="round half to even (torch.round), add the zero-point, clamp to 0..255, return torch.uint8; "
        "PyTorch multiplies by 1/scale rather than dividing by scale",
    )


# Notebook 02 -----------------------------------------------------------------------------------


def check_mse_range(my_mse_range) -> None:
    """``my_mse_range(x, bits) -> (low, high)``: the clipped min-max range of least MSE, as ``observers.mse_range``."""
    generator = _generator(3)
    skewed = torch.cat([_student_t(4000, generator), torch.rand(1000, generator=generator) * 30])
    cases = [
        (_student_t(5000, generator), 4),
        (skewed, 4),
        (skewed, 8),
        (torch.randn(3000, generator=generator), 3),
        (torch.relu(torch.randn(3000, generator=generator)), 2),
    ]
    _verify(
        "my_mse_range",
        my_mse_range,
        cases,
        lambda x, bits: mse_range(x, bits=bits),
        hint="for a in torch.linspace(0.01, 1, 100): candidate range (a * x.min(), a * x.max()); quantize with "
        "qparams(..., bits=bits) and fake_quantize; keep the candidate with the least mean squared error",
    )


def check_per_group(my_fake_quantize_per_group) -> None:
    """``my_fake_quantize_per_group(w, group_size, bits)``: signed symmetric qparams per group of the last dim."""
    generator = _generator(4)
    rows = torch.logspace(-2, 0, 8).reshape(-1, 1)
    cases = [
        (torch.randn(8, 64, generator=generator) * rows, 32, 4),
        (torch.randn(8, 64, generator=generator), 16, 3),
        (torch.randn(4, 2, 96, generator=generator), 32, 8),
        (torch.randn(3, 128, generator=generator) * rows[:3], 128, 4),
    ]
    _verify(
        "my_fake_quantize_per_group",
        my_fake_quantize_per_group,
        cases,
        lambda w, g, bits: fake_quantize_per_group(w, g, bits=bits),
        hint="w.reshape(-1, group_size) gives one row per group; per-row min and max, "
        "qparams(..., signed=True, symmetric=True), fake_quantize(..., axis=0), then reshape back",
    )


# Notebook 03 -----------------------------------------------------------------------------------


def check_nearest_power_of_two(nearest_power_of_two) -> None:
    """``nearest_power_of_two(x)``: each non-zero value replaced by ``±2**e``, the nearest power of two."""
    generator = _generator(5)
    x = torch.randn(2000, generator=generator) * torch.exp2(torch.randint(-10, 10, (2000,), generator=generator))
    x = x[(x != 0) & ((x.abs() / torch.exp2(torch.floor(torch.log2(x.abs())))) != 1.5)]  # no exact ties
    cases = [(x,), (torch.tensor([1.0, -3.0, 0.7, 5.9, -6.1, 1000.0]),)]
    _verify(
        "nearest_power_of_two",
        nearest_power_of_two,
        cases,
        lambda v: log_fake_quantize(v, bits=8, max_exponent=40),
        hint="compare |x| with 1.5 * 2**floor(log2|x|): above it, round up to the next power",
    )


def check_power_of_two_scale(my_power_of_two_scale) -> None:
    """``my_power_of_two_scale(max_abs, bits) -> float``: the least ``2**k`` whose signed grid reaches ``max_abs``."""
    generator = _generator(6)
    exponents = torch.randint(-8, 8, (60,), generator=generator)
    values = (torch.rand(60, generator=generator) * 2 + 0.05) * torch.exp2(exponents)
    cases = [(v, bits) for v, bits in zip(values.tolist(), [8, 4, 3, 6] * 15, strict=True)]
    cases += [(127.0, 8), (0.5 * 127, 8), (7.0, 4), (7.5, 4), (1.0, 2), (0.99, 2)]  # exact powers and near them
    _verify(
        "my_power_of_two_scale",
        my_power_of_two_scale,
        cases,
        lambda m, bits: power_of_two_scale(m, bits=bits).item(),
        hint="the scale must be at least max_abs / (2**(bits-1) - 1); round its exponent up, not to nearest",
    )


# Notebook 04 -----------------------------------------------------------------------------------


def check_assign_nearest(assign_nearest) -> None:
    """``assign_nearest(x, codebook) -> indices``: index of the nearest entry of a sorted codebook."""
    generator = _generator(7)
    cases = []
    for entries in (2, 4, 16):
        codebook = torch.sort(torch.randn(entries, generator=generator)).values
        cases.append((torch.randn(3000, generator=generator) * 1.5, codebook))
    _verify(
        "assign_nearest",
        assign_nearest,
        cases,
        assign_to_codebook,
        hint="(x[:, None] - codebook[None, :]).abs().argmin(dim=1) does it in one line",
    )


def check_lloyd_step(learner_lloyd_step) -> None:
    """``lloyd_step(x, codebook) -> new codebook``: each entry moves to the mean of its values (empty ones stay)."""
    generator = _generator(8)
    cases = [
        (torch.randn(5000, generator=generator), torch.tensor([-2.0, -0.5, 0.1, 1.0])),
        (torch.rand(3000, generator=generator), torch.tensor([0.0, 0.5, 5.0])),
    ]  # 5.0 gets no value
    _verify(
        "lloyd_step",
        learner_lloyd_step,
        cases,
        lloyd_step,
        exact=False,
        hint="assign each value to its nearest entry, average per entry; keep an entry nobody chose",
    )


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

    _verify(
        "int_accumulate",
        int_accumulate,
        cases,
        reference,
        dtype=torch.int32,
        hint="widen to int32 before subtracting zero-points: uint8 arithmetic wraps around at 256",
    )


def _fixed_point_reference(acc, m0, shift, zero_point):
    scaled = rounding_right_shift(acc.to(torch.int64) * m0, shift, ties="away")
    return (scaled + zero_point).clamp(0, 255).to(torch.uint8)


def check_fixed_point_requantize(my_requantize) -> None:
    """``my_requantize(acc, m0, shift, zero_point) -> uint8``: ``clamp(round(acc * m0 / 2**shift) + zp, 0, 255)``.

    Integers only: one 64-bit product and one rounding right shift that breaks
    ties away from zero.
    """
    generator = _generator(10)
    cases = []
    for multiplier, zero_point in ((0.0025, 128), (0.000731, 0), (0.0123, 10), (0.25, 250)):
        m0, shift = (t.item() for t in fixed_point_multiplier(multiplier))
        acc = torch.randint(-200000, 200000, (2000,), generator=generator)
        ties = (torch.arange(-40, 40) * 2 + 1) * 2 ** (shift - 1)  # acc * m0 = odd * 2**(shift-1): exactly .5
        exact_ties = ties[ties % m0 == 0] // m0
        acc = torch.cat([acc, exact_ties, torch.tensor([-6, -2, 2, 6])]).to(torch.int32)
        cases.append((acc, m0, shift, zero_point))
    _verify(
        "my_requantize",
        my_requantize,
        cases,
        _fixed_point_reference,
        dtype=torch.uint8,
        hint="widen acc to int64 before multiplying by m0; shifting right by `shift` floors, so add half of "
        "2**shift first for values >= 0 (and just under half for negative ones) to round half away from "
        "zero; clamp to 0..255 and return torch.uint8",
    )


# Notebook 07 -----------------------------------------------------------------------------------


def _tiny_models():
    """Small models with every kind of state a saved model holds: weights, biases, BN statistics, counters."""

    def build():
        conv = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(8 * 6 * 6, 10),
        )
        mlp = torch.nn.Sequential(torch.nn.Linear(100, 300), torch.nn.GELU(), torch.nn.Linear(300, 100, bias=False))
        return [conv, mlp]

    return _seeded(build)


def check_saved_megabytes(saved_megabytes) -> None:
    """``saved_megabytes(model, dtype)``: megabytes of the tensors of ``model.to(dtype).state_dict()``."""
    import copy

    def reference(model, dtype):
        converted = copy.deepcopy(model).to(dtype)
        return sum(t.numel() * t.element_size() for t in converted.state_dict().values()) / 1e6

    cases = [(model, dtype) for model in _tiny_models() for dtype in (torch.float32, torch.bfloat16, torch.float16)]
    _verify(
        "saved_megabytes",
        saved_megabytes,
        cases,
        reference,
        exact=False,
        hint="bytes = numel x bytes per element for every state_dict tensor; .to(dtype) converts "
        "floating-point tensors only (num_batches_tracked stays int64, 8 bytes); 1 MB = 10**6 bytes",
    )


# (scenario, expected answer, why): the rules of notebook 07's "Which one, when" table.
PRECISION_SCENARIOS = [
    (
        {"layers": "conv", "calibration_data": True, "batch": 32, "cpu": {"avx2", "avx512_vnni"}},
        "static INT8",
        "a CNN with calibration images: integer kernels end to end",
    ),
    (
        {"layers": "linear", "calibration_data": False, "batch": 1, "cpu": {"avx2"}},
        "dynamic INT8",
        "linear layers at batch 1 are memory-bound and need no calibration with dynamic INT8",
    ),
    (
        {"layers": "conv", "calibration_data": False, "batch": 32, "cpu": {"avx512_bf16", "avx512_vnni"}},
        "BF16",
        "no calibration data rules out static INT8, dynamic INT8 does not cover convolutions, and this CPU has BF16",
    ),
    (
        {"layers": "conv", "calibration_data": False, "batch": 1, "cpu": {"avx2"}},
        "FP32",
        "no calibration data, no dynamic INT8 for convolutions, and no BF16 instructions: BF16 would be emulated",
    ),
    (
        {"layers": "conv", "calibration_data": True, "batch": 1, "cpu": {"amx_int8", "amx_bf16"}},
        "static INT8",
        "calibration images and INT8 matrix units",
    ),
    (
        {"layers": "linear", "calibration_data": False, "batch": 1, "cpu": {"amx_bf16", "amx_int8"}},
        "dynamic INT8",
        "linear-heavy and no calibration data: dynamic INT8 quarters the bytes each call reads",
    ),
]


def check_choose_precision(choose_precision) -> None:
    """``choose_precision(scenario) -> "static INT8" | "dynamic INT8" | "BF16" | "FP32"`` for six deployments."""
    for number, (scenario, expected, why) in enumerate(PRECISION_SCENARIOS, 1):
        got = _call("choose_precision", choose_precision, dict(scenario, cpu=set(scenario["cpu"])))
        if got != expected:
            raise AssertionError(
                f"choose_precision: wrong answer on scenario {number} of {len(PRECISION_SCENARIOS)}:"
                f" {scenario}\n"
                f"  got:      {got!r}\n  expected: {expected!r} ({why})"
            )
    print(f"✓ choose_precision: passed ({len(PRECISION_SCENARIOS)} cases)")


# Notebook 06 -----------------------------------------------------------------------------------


def _layer_scales(converted) -> list[tuple]:
    """(input scale, per-channel weight scales, output scale) of every quantized conv/linear of a converted model."""
    from qtutor.ptq import _producer_qparams

    cases = []
    for node in converted.graph.nodes:
        if node.op != "call_module":
            continue
        module = converted.get_submodule(node.target)
        weight = getattr(module, "weight", None)
        if not callable(weight) or not hasattr(module, "scale"):
            continue
        w = weight()
        scales = (
            w.q_per_channel_scales()
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
            else torch.tensor([w.q_scale()], dtype=torch.float64)
        )
        cases.append((_producer_qparams(converted, node.args[0])[0], scales, float(module.scale)))
    return cases


def check_requantization_scales(requantization_scales, converted) -> None:
    """``requantization_scales(S_x, S_w, S_y) -> S_x * S_w / S_y``, on real layers of the converted model."""
    real = _layer_scales(converted)
    generator = _generator(11)
    cases = real[:: max(1, len(real) // 12)] + [
        (0.02, torch.rand(5, generator=generator, dtype=torch.float64) / 100, 0.1)
    ]
    _verify(
        "requantization_scales",
        requantization_scales,
        cases,
        lambda sx, sw, sy: sx * sw / sy,
        exact=False,
        hint="the int32 sum counts units of S_x * S_w[c]; the output counts units of S_y",
    )
    print(
        f"  (the real layers: {len(real)} conv/linear layers of the converted model; checked every "
        f"{max(1, len(real) // 12)}th)"
    )


class _TinyNet(torch.nn.Module):
    """A stem, a block and a classifier: names for the qconfig-mapping exercise."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def _quantized_modules(mapping) -> set[str]:
    """Names of the modules that come out of FX prepare/convert as quantized modules with ``mapping``."""
    import copy

    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from qtutor.session import quietly

    model, example = _seeded(lambda: (_TinyNet().eval(), (torch.randn(2, 3, 8, 8),)))
    with quietly():
        prepared = prepare_fx(copy.deepcopy(model), mapping, example)
        prepared(*example)
        converted = convert_fx(prepared)
    return {name for name, module in converted.named_modules() if "quantized" in type(module).__module__}


def check_keep_in_float_mapping(keep_in_float_mapping) -> None:
    """``keep_in_float_mapping(names) -> QConfigMapping``: x86 defaults, the named modules left in FP32."""
    from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping

    def reference(names):
        mapping = get_default_qconfig_mapping("x86")
        for name in names:
            mapping.set_module_name(name, None)
        return _quantized_modules(mapping)

    for number, names in enumerate((["block"], ["stem", "classifier"], [], ["block.0"]), 1):
        mapping = _call("keep_in_float_mapping", keep_in_float_mapping, list(names))
        if not isinstance(mapping, QConfigMapping):
            raise AssertionError(
                f"keep_in_float_mapping: wrong answer on case {number}: returned a "
                f"{type(mapping).__name__}, expected a QConfigMapping"
            )
        got, expected = _quantized_modules(mapping), reference(names)
        if got != expected:
            raise AssertionError(
                f"keep_in_float_mapping: wrong answer on case {number}, names={names}\n"
                f"  quantized modules: {sorted(got)}\n  expected:          {sorted(expected)}\n"
                "  hint: start from get_default_qconfig_mapping('x86'), then "
                "set_module_name(name, None) for each name"
            )
    print("✓ keep_in_float_mapping: passed (4 cases)")


# Notebook 08 -----------------------------------------------------------------------------------


def check_ste_backward(ste_backward) -> None:
    """``ste_backward(grad_output, x, scale, zero_point, qmin, qmax)``: the gradient PyTorch's fake quantize passes."""

    def reference(grad_output, x, scale, zero_point, qmin, qmax):
        x = x.clone().requires_grad_()
        torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax).backward(grad_output)
        return x.grad

    generator = _generator(12)
    cases = []
    for scale, zero_point, qmin, qmax in ((0.1, 0, -8, 7), (0.05, 128, 0, 255), (0.3, 3, 0, 15), (1 / 7, 0, -7, 7)):
        edges = (torch.tensor([qmin - 0.5, qmin, qmax, qmax + 0.5, qmax + 0.49, qmin - 0.51]) - zero_point) * scale
        x = torch.cat([torch.randn(400, generator=generator) * scale * (qmax - qmin) / 2, edges])
        cases.append((torch.randn(len(x), generator=generator), x, scale, zero_point, qmin, qmax))
    _verify(
        "ste_backward",
        ste_backward,
        cases,
        reference,
        hint="the gradient passes (times grad_output) where round(x / scale) + zero_point is within "
        "[qmin, qmax] and is 0 where the value was clamped; PyTorch computes x * (1 / scale)",
    )


def check_fold_batch_norm(fold_batch_norm) -> None:
    """``fold_batch_norm(w, b, mean, var, gamma, beta, eps) -> (w', b')``, as ``fuse_conv_bn_weights``."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    def reference(weight, bias, mean, var, gamma, beta, eps):
        folded_weight, folded_bias = fuse_conv_bn_weights(weight, bias, mean, var, eps, gamma, beta)
        return folded_weight.detach(), folded_bias.detach()

    generator = _generator(13)
    cases = []
    for shape in ((8, 3, 3, 3), (4, 16, 1, 1), (6, 2, 5, 5)):
        channels = shape[0]
        cases.append(
            (
                torch.randn(shape, generator=generator),
                torch.randn(channels, generator=generator),
                torch.randn(channels, generator=generator),
                torch.rand(channels, generator=generator) + 0.1,
                torch.randn(channels, generator=generator),
                torch.randn(channels, generator=generator),
                1e-5,
            )
        )
    cases.append((*cases[0][:3], torch.full((8,), 1e-6), *cases[0][4:6], 1e-3))  # eps matters when var is tiny
    _verify(
        "fold_batch_norm",
        fold_batch_norm,
        cases,
        reference,
        exact=False,
        hint="factor = gamma / sqrt(var + eps), one per output channel; scale the weight along dim 0 "
        "(reshape the factor to (-1, 1, 1, 1)); bias' = (bias - mean) * factor + beta",
    )


# Notebook 09 -----------------------------------------------------------------------------------


def _tiny_densenet(block_config: tuple[int, ...] = (2,)):
    """A torchvision DenseNet with ``block_config`` dense layers and random batch-norm statistics, in eval mode.

    Also the tiny model of tests/test_runtimes.py (two blocks of one layer: a transition, two concatenations).
    """
    import torchvision

    def build():
        model = torchvision.models.DenseNet(
            growth_rate=4, block_config=block_config, num_init_features=8, bn_size=2, num_classes=3
        )
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        return model.eval()

    return _seeded(build)


def check_dense_layer_fusions(dense_layer_fusions) -> None:
    """``dense_layer_fusions(prefix)``: the module-name groups ``fuse_modules`` needs for one dense layer."""
    import copy

    from torch.ao.quantization import fuse_modules

    model = _tiny_densenet()
    images = torch.randn(2, 3, 32, 32, generator=_generator(14))
    expected = {
        "norm1": "BNReLU2d",
        "relu1": "Identity",
        "conv1": "ConvReLU2d",
        "norm2": "Identity",
        "relu2": "Identity",
        "conv2": "Conv2d",
    }
    for number, prefix in enumerate(("features.denseblock1.denselayer1", "features.denseblock1.denselayer2"), 1):
        groups = _call("dense_layer_fusions", dense_layer_fusions, prefix)
        try:
            fused = fuse_modules(copy.deepcopy(model), groups)
        except Exception as error:  # fuse_modules refuses unknown names and unsupported patterns
            raise AssertionError(
                f"dense_layer_fusions: wrong answer on case {number}: fuse_modules refused {groups}: {error}"
            ) from None
        layer = fused.get_submodule(prefix)
        got = {name: type(getattr(layer, name)).__name__ for name in expected}
        with torch.no_grad():
            same = torch.allclose(fused(images), model(images), atol=1e-5)
        if got != expected or not same:
            raise AssertionError(
                f"dense_layer_fusions: wrong answer on case {number} ({prefix})\n"
                f"  modules after fusion: {got}\n  expected:             {expected}\n"
                f"  outputs equal the float model's: {same}\n"
                "  hint: conv1 is followed by norm2 and relu2; norm1 by relu1; conv2 by nothing"
            )
    print("✓ dense_layer_fusions: passed (2 cases)")


def check_pt2e_flow(my_quantize_pt2e) -> None:
    """``my_quantize_pt2e(model, example, batches)``: export, prepare_pt2e, calibrate, convert_pt2e."""
    from torch.utils.data import DataLoader, TensorDataset

    from qtutor.pt2e import quantize_pt2e

    model = _TinyNet().eval()
    generator = _generator(15)
    batches = [torch.randn(2, 3, 8, 8, generator=generator) for _ in range(4)]  # the example's batch size
    loader = DataLoader(TensorDataset(torch.cat(batches), torch.zeros(8)), batch_size=2)
    expected = quantize_pt2e(model, loader, batches[0], batches=None)
    got = _call("my_quantize_pt2e", my_quantize_pt2e, model, batches[0], batches)
    test = torch.randn(2, 3, 8, 8, generator=generator)
    with torch.no_grad():
        got_out, expected_out = got(test), expected(test)
    if not torch.equal(got_out, expected_out):
        raise AssertionError(
            "my_quantize_pt2e: wrong answer: its outputs differ from qtutor.pt2e.quantize_pt2e's "
            f"by up to {(got_out - expected_out).abs().max().item():.3g}\n"
            "  hint: export, prepare_pt2e(exported.module(), pt2e.quantizer()), run every batch "
            "through the prepared model (calibration), then convert_pt2e"
        )
    print("✓ my_quantize_pt2e: passed (outputs equal qtutor.pt2e.quantize_pt2e's bit for bit)")


# Notebook 10 -----------------------------------------------------------------------------------


@functools.cache
def _ort_weight_scales() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(FP32 weight, the per-channel scales ONNX Runtime wrote for it) for each convolution of a small model."""
    from qtutor import deploy

    torch.manual_seed(0)
    model = _TinyNet().eval()
    with torch.no_grad():
        model.block[0].weight[1] *= 20  # channels of very different ranges, as real layers have
    images = torch.randn(8, 3, 8, 8, generator=_generator(16))
    with tempfile.TemporaryDirectory() as folder:
        deploy.export_onnx(model, images[:2], Path(folder) / "fp32.onnx")
        deploy.quantize_onnx(Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx", list(images.split(4)))
        return [
            (
                model.get_submodule(layer).weight.detach().clone(),
                deploy.onnx_qparams(Path(folder) / "int8.onnx", layer).weight_scales,
            )
            for layer in ("stem", "block.0")
        ]


def check_ort_weight_scales(ort_weight_scales) -> None:
    """``ort_weight_scales(weight) -> scales``: the per-output-channel scales ONNX Runtime writes for INT8 weights."""
    cases = _ort_weight_scales()
    for number, (weight, written) in enumerate(cases, 1):
        got = _call("ort_weight_scales", ort_weight_scales, weight.clone())
        if not _same(got, written, exact=False):
            raise AssertionError(
                f"ort_weight_scales: wrong answer on case {number} (a weight of shape "
                f"{tuple(weight.shape)})\n  got:      {_short(got)}\n  expected: {_short(written)}"
                "\n  (read out of the model quantize_static wrote)\n"
                "  hint: one scale per output channel (dim 0); symmetric signed codes -127..127, "
                "so the largest magnitude of the channel maps to 127"
            )
    print(f"✓ ort_weight_scales: passed ({len(cases)} convolutions quantized by ONNX Runtime)")


def _openvino_fake_quantize(x: torch.Tensor, levels: int, low: float, high: float) -> torch.Tensor:
    """OpenVINO's FakeQuantize operation (input and output range [low, high]) run on ``x`` by the CPU plugin."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    parameter = ops.parameter(list(x.shape), ov.Type.f32)
    low_c, high_c = ops.constant(np.float32(low)), ops.constant(np.float32(high))
    model = ov.Model([ops.fake_quantize(parameter, low_c, high_c, low_c, high_c, levels)], [parameter])
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return torch.from_numpy(compiled(x.numpy())[0].copy())


def check_fake_quantize_qparams(fake_quantize_qparams) -> None:
    """``fake_quantize_qparams(levels, low, high) -> (scale, zero_point)`` of an OpenVINO FakeQuantize.

    The check runs OpenVINO's own FakeQuantize on random values and compares it with PyTorch's fake quantization
    at the learner's scale and zero-point (codes 0..levels-1).
    """
    x = torch.randn(4000, generator=_generator(17)) * 3
    cases = [
        (256, 0.0, 6.2),  # a ReLU output: unsigned
        (256, -2.5 * 128 / 127, 2.5),  # NNCF's symmetric signed activations
        (255, -1.3, 1.3),  # NNCF's symmetric weights: 255 levels
        (16, 0.0, 4.0),
    ]  # 4 bits
    for number, (levels, low, high) in enumerate(cases, 1):
        got = _call("fake_quantize_qparams", fake_quantize_qparams, levels, low, high)
        expected = _openvino_fake_quantize(x, levels, low, high)
        try:
            scale, zero_point = float(got[0]), int(got[1])
            simulated = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, levels - 1)
        except (TypeError, ValueError, IndexError, RuntimeError) as error:
            raise AssertionError(
                f"fake_quantize_qparams: wrong answer on case {number}: returned {got!r}, "
                f"expected (scale, zero_point) ({error.__class__.__name__})"
            ) from None
        if not torch.allclose(simulated, expected, atol=1e-5):
            raise AssertionError(
                f"fake_quantize_qparams: wrong answer on case {number}: levels={levels}, "
                f"low={low:.4f}, high={high:.4f}\n  got: scale {scale:.6g}, zero-point {zero_point}; "
                "PyTorch's fake quantization with them differs from OpenVINO's FakeQuantize by up "
                f"to {(simulated - expected).abs().max().item():.3g}\n"
                "  hint: levels codes 0..levels-1 spread evenly from low to high; the zero-point is "
                "the code that stands for 0.0"
            )
    print(f"✓ fake_quantize_qparams: passed ({len(cases)} FakeQuantize ranges, against OpenVINO's own operation)")


# Notebook 11 -----------------------------------------------------------------------------------


def check_per_token_scales(per_token_scales) -> None:
    """``per_token_scales(x) -> scales``: one signed symmetric INT8 scale per row (token) of ``x``."""
    generator = _generator(11)
    loud = torch.randn(16, 64, generator=generator)
    loud[:, 5] *= 60  # an outlier channel: every token's scale grows
    quiet_row = torch.randn(8, 24, generator=generator)
    quiet_row[2] = 0.0  # a row of zeros still gets a usable scale
    cases = [(torch.randn(32, 48, generator=generator),), (loud,), (quiet_row,)]
    _verify(
        "per_token_scales",
        per_token_scales,
        cases,
        lambda x: absmax_qparams(x, axis=0)[0],
        exact=False,
        hint="max|x| along each row (dim=1) divided by 127.5, at least torch.finfo(torch.float32).eps",
    )


def check_smoothing_factors(my_smoothing_factors) -> None:
    """``my_smoothing_factors(act_absmax, weight, alpha) -> s``: SmoothQuant's factor per input channel."""
    generator = _generator(12)
    cases = []
    for out_features, in_features, alpha in ((24, 40, 0.5), (40, 24, 0.25), (16, 64, 0.85), (8, 8, 1.0)):
        act_absmax = torch.rand(in_features, generator=generator) * 50 + 0.5
        weight = torch.randn(out_features, in_features, generator=generator) * 0.1
        cases.append((act_absmax, weight, alpha))
    _verify(
        "my_smoothing_factors",
        my_smoothing_factors,
        cases,
        smoothing_factors,
        exact=False,
        hint="s_j = act_absmax[j]**alpha / max_i |weight[i, j]|**(1 - alpha): the weight's largest magnitude "
        "per input channel is over dim 0 of an nn.Linear weight [out, in]",
    )


def check_pack_int4(pack_int4) -> None:
    """``pack_int4(codes) -> uint8``: 4-bit codes (0..15), two per byte, the first in the low nibble."""
    generator = _generator(13)
    cases = [
        (torch.tensor([3, 10, 15, 0], dtype=torch.uint8),),
        (torch.randint(0, 16, (1000,), generator=generator).to(torch.uint8),),
    ]
    _verify(
        "pack_int4",
        pack_int4,
        cases,
        lambda codes: pack(codes, 4),
        dtype=torch.uint8,
        hint="byte = codes[0::2] | (codes[1::2] << 4), as torch.uint8",
    )
