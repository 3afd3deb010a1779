"""Every exercise check passes a right answer and fails a wrong or missing one."""

import functools
import math

import pytest
import torch
from torch.ao.quantization import PerChannelMinMaxObserver, QConfigMapping, get_default_qconfig_mapping

from qtutor import checks, fake_quantize, qparams, quantize
from qtutor.formats import bit_fields
from qtutor.intmath import rounding_right_shift
from qtutor.largemodels import absmax_qparams, smoothing_factors
from qtutor.nonuniform import assign_to_codebook, log_fake_quantize, power_of_two_scale
from qtutor.observers import minmax_range, percentile_range
from qtutor.packing import pack
from qtutor.uniform import fake_quantize_per_group


def lloyd(x, codebook):
    indices = assign_to_codebook(x, codebook)
    means = [x[indices == i].mean() if (indices == i).any() else codebook[i] for i in range(len(codebook))]
    return torch.stack(means)


def accumulate(x_q, x_zp, w_q, w_zp):
    return ((x_q.int() - x_zp) @ (w_q.int() - w_zp).T).int()


def float16_value(pattern, implicit_one_always=False, bias=15, signed=True):
    sign = -1.0 if (pattern >> 15) and signed else 1.0
    exponent, mantissa = (pattern >> 10) & 0x1F, pattern & 0x3FF
    if exponent == 0x1F:
        return sign * float("inf")
    if exponent == 0 and not implicit_one_always:
        return sign * mantissa / 1024 * 2.0 ** (1 - bias)
    return sign * (1 + mantissa / 1024) * 2.0 ** (exponent - bias)


def range_search(x, bits, symmetric=False):
    fractions = torch.linspace(0.01, 1, 100)
    low, high = x.min(), x.max()
    if symmetric:
        high = torch.maximum(-low, high)
        low = -high

    def error(f):
        scale, zero_point = qparams(low * f, high * f, bits=bits)
        return torch.mean((fake_quantize(x, scale, zero_point, bits=bits) - x) ** 2).item()

    best = min(fractions.tolist(), key=error)
    return low * best, high * best


def per_row(w, group_size, bits):
    rows = w.reshape(w.shape[0], -1)
    scale, zero_point = qparams(*minmax_range(rows, axis=0), bits=bits, signed=True, symmetric=True)
    return fake_quantize(rows, scale, zero_point, bits=bits, signed=True, axis=0).reshape(w.shape)


def fixed_point(acc, m0, shift, zero_point, ties="away", clamp=True):
    scaled = rounding_right_shift(acc.long() * m0, shift, ties=ties) + zero_point
    return (scaled.clamp(0, 255) if clamp else scaled).to(torch.uint8)


def per_channel(w):
    return minmax_range(w, axis=0)


def keep_in_float_mapping(names):
    mapping = get_default_qconfig_mapping("x86")
    for name in names:
        mapping.set_module_name(name, None)
    return mapping


def ste_backward(grad_output, x, scale, zero_point, qmin, qmax):
    codes = torch.round(x * (1.0 / scale)) + zero_point
    return grad_output * ((codes >= qmin) & (codes <= qmax))


def fold_batch_norm(weight, bias, mean, var, gamma, beta, eps):
    factor = gamma / torch.sqrt(var + eps)
    return weight * factor.reshape(-1, 1, 1, 1), (bias - mean) * factor + beta


def my_quantize_pt2e(model, example, batches):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from qtutor.pt2e import quantizer

    prepared = prepare_pt2e(torch.export.export(model.eval(), (example,)).module(), quantizer())
    with torch.no_grad():
        for images in batches:
            prepared(images)
    return convert_pt2e(prepared)


def saved_megabytes(model, dtype):
    return (
        sum(
            t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())
            for t in model.state_dict().values()
        )
        / 1e6
    )


def choose_precision(scenario):
    if scenario["layers"] == "linear":
        return "dynamic INT8"
    if scenario["calibration_data"]:
        return "static INT8"
    return "BF16" if {"avx512_bf16", "amx_bf16"} & scenario["cpu"] else "FP32"


# check, a right answer, wrong answers (each a typical mistake)
CASES = [
    (
        checks.check_float16_fields,
        lambda v: bit_fields(v, torch.float16),
        [lambda v: bit_fields(v, torch.bfloat16), lambda v: bit_fields(abs(v), torch.float16)],
    ),
    (
        checks.check_float16_value,
        float16_value,
        [
            lambda p: float16_value(p, implicit_one_always=True),
            lambda p: float16_value(p, bias=16),
            lambda p: float16_value(p, signed=False),
        ],
    ),
    (
        checks.check_qparams,
        lambda a, b: qparams(a, b),
        [
            lambda a, b: qparams(a, b, symmetric=True),
            lambda a, b: ((b - a) / 255, torch.round(-a / ((b - a) / 255)).long()),  # no widening to 0, no eps
            lambda a, b: (
                qparams(a, b)[0],
                torch.floor(-torch.minimum(a, torch.tensor(0.0)) / qparams(a, b)[0]).long(),
            ),
        ],
    ),
    (
        checks.check_quantize,
        lambda x, s, z: quantize(x, s, z),
        [
            lambda x, s, z: torch.floor(x / s + 0.5 + z).clamp(0, 255).to(torch.uint8),  # half up, not to even
            lambda x, s, z: (torch.round(x / s) + z).clamp(0, 255).to(torch.uint8),  # divides instead of 1/scale
            lambda x, s, z: (torch.round(x * (1 / torch.tensor(s))) + z).to(torch.uint8),  # no clamp: wraps
            lambda x, s, z: quantize(x, s, z).long(),
        ],
    ),  # the right codes as int64, not the promised uint8
    (
        checks.check_mse_range,
        range_search,
        [
            lambda x, bits: minmax_range(x),
            lambda x, bits: percentile_range(x, 99.99),
            lambda x, bits: range_search(x, bits, symmetric=True),
        ],
    ),
    (
        checks.check_per_group,
        lambda w, g, bits: fake_quantize_per_group(w, g, bits=bits),
        [
            per_row,
            lambda w, g, bits: (
                fake_quantize_per_group(w.transpose(0, -1).contiguous(), g, bits=bits).transpose(0, -1)
                if w.shape[0] % g == 0
                else w
            ),
            lambda w, g, bits: fake_quantize_per_group(w, g, bits=bits, signed=False, symmetric=False),
        ],
    ),
    (
        checks.check_nearest_power_of_two,
        lambda x: log_fake_quantize(x, bits=8, max_exponent=40),
        [
            lambda x: torch.sign(x) * torch.exp2(torch.floor(torch.log2(x.abs()))),
            lambda x: torch.sign(x) * torch.exp2(torch.ceil(torch.log2(x.abs()))),
        ],
    ),
    (
        checks.check_power_of_two_scale,
        lambda m, bits: power_of_two_scale(m, bits=bits).item(),
        [
            lambda m, bits: 2.0 ** round(math.log2(m / (2 ** (bits - 1) - 1))),
            lambda m, bits: 2.0 ** math.ceil(math.log2(m / 2 ** (bits - 1))),
            lambda m, bits: 2.0 ** math.floor(math.log2(m / (2 ** (bits - 1) - 1))),
        ],
    ),
    (
        checks.check_assign_nearest,
        assign_to_codebook,
        [lambda x, c: torch.bucketize(x, c).clamp(max=len(c) - 1), lambda x, c: (x[:, None] - c).argmin(1)],
    ),
    (
        checks.check_lloyd_step,
        lloyd,
        [
            lambda x, c: torch.stack(
                [
                    x[assign_to_codebook(x, c) == i].median() if (assign_to_codebook(x, c) == i).any() else c[i]
                    for i in range(len(c))
                ]
            ),
            lambda x, c: torch.nan_to_num(
                torch.stack([x[assign_to_codebook(x, c) == i].mean() for i in range(len(c))])
            ),
        ],
    ),
    (
        checks.check_int_accumulate,
        accumulate,
        [
            lambda xq, xz, wq, wz: ((xq - xz).int() @ (wq.int() - wz).T).int(),  # uint8 wraps before widening
            lambda xq, xz, wq, wz: (xq.double() - xz) @ (wq.double() - wz).T,
        ],
    ),  # not int32
    (
        checks.check_fixed_point_requantize,
        fixed_point,
        [
            lambda a, m, s, z: fixed_point(a, m, s, z, ties="even"),
            lambda a, m, s, z: ((a.long() * m >> s) + z).clamp(0, 255).to(torch.uint8),  # floor, no rounding
            lambda a, m, s, z: fixed_point(a, m, s, z, clamp=False),
            lambda a, m, s, z: (torch.round(a.float() * (m / 2**s)) + z).clamp(0, 255).to(torch.uint8),
            lambda a, m, s, z: fixed_point(a, m, s, z).long(),
        ],
    ),  # the right codes as int64, not uint8
    (
        checks.check_requantization_scales,
        lambda sx, sw, sy: sx * sw / sy,
        [
            lambda sx, sw, sy: sw / (sx * sy),
            lambda sx, sw, sy: sx * sw.max() / sy + 0 * sw,
            lambda sx, sw, sy: sy / (sx * sw),
        ],
    ),
    (
        checks.check_keep_in_float_mapping,
        keep_in_float_mapping,
        [
            lambda names: get_default_qconfig_mapping("x86"),  # ignores the names
            lambda names: QConfigMapping().set_global(None),  # quantizes nothing
            lambda names: keep_in_float_mapping(names[:1]),
        ],
    ),  # only the first name
    (
        checks.check_ste_backward,
        ste_backward,
        [
            lambda g, x, s, z, lo, hi: g,  # passes everything
            lambda g, x, s, z, lo, hi: g * ((x / s + z >= lo) & (x / s + z <= hi)),  # no rounding at the edges
            lambda g, x, s, z, lo, hi: torch.zeros_like(g),
        ],
    ),  # the gradient of round itself
    (
        checks.check_fold_batch_norm,
        fold_batch_norm,
        [
            lambda w, b, m, v, g, be, e: (
                w * (g / torch.sqrt(v))[:, None, None, None],
                (b - m) * g / torch.sqrt(v) + be,
            ),
            lambda w, b, m, v, g, be, e: (
                w * (g / torch.sqrt(v + e))[:, None, None, None],
                b * g / torch.sqrt(v + e) + be,
            ),
            lambda w, b, m, v, g, be, e: (w * (g / torch.sqrt(v + e)).mean(), (b - m) * g / torch.sqrt(v + e) + be),
        ],
    ),
    (
        checks.check_dense_layer_fusions,
        lambda p: [[f"{p}.conv1", f"{p}.norm2", f"{p}.relu2"], [f"{p}.norm1", f"{p}.relu1"]],
        [
            lambda p: [[f"{p}.conv1", f"{p}.norm2"], [f"{p}.norm1", f"{p}.relu1"]],  # ReLU left out
            lambda p: [[f"{p}.conv1", f"{p}.norm2", f"{p}.relu2"]],  # norm1 + relu1 forgotten
            lambda p: [[f"{p}.norm1", f"{p}.relu1", f"{p}.conv1"]],
        ],
    ),  # a pattern fuse_modules does not know
    (
        checks.check_pt2e_flow,
        my_quantize_pt2e,
        [
            lambda m, e, b: my_quantize_pt2e(m, e, []),  # no calibration
            lambda m, e, b: my_quantize_pt2e(m, e, b[:1]),  # one batch only
            lambda m, e, b: m,
        ],
    ),  # not quantized at all
    (
        checks.check_ort_weight_scales,
        lambda w: w.abs().amax(dim=(1, 2, 3)) / 127,
        [
            lambda w: w.abs().amax(dim=(1, 2, 3)) / 127.5,  # PyTorch's: codes -128..127 halved
            lambda w: (w.amax(dim=(1, 2, 3)) - w.amin(dim=(1, 2, 3))) / 255,  # affine
            lambda w: w.abs().max() / 127 * torch.ones(w.shape[0]),
        ],
    ),  # one scale for the tensor
    (
        checks.check_fake_quantize_qparams,
        lambda levels, low, high: ((high - low) / (levels - 1), round(-low / ((high - low) / (levels - 1)))),
        [
            lambda levels, low, high: (
                (high - low) / levels,
                round(-low * levels / (high - low)),
            ),  # one level too many
            lambda levels, low, high: ((high - low) / (levels - 1), 0),  # zero-point always 0
            lambda levels, low, high: (high / (levels - 1), 0),
        ],
    ),  # ignores low
    (
        checks.check_saved_megabytes,
        saved_megabytes,
        [
            lambda m, d: sum(p.numel() for p in m.parameters()) * d.itemsize / 1e6,  # forgets the buffers
            lambda m, d: sum(t.numel() for t in m.state_dict().values()) * d.itemsize / 1e6,  # casts the int64 counter
            lambda m, d: sum(t.numel() * t.element_size() for t in m.state_dict().values()) / 1e6,
        ],
    ),  # ignores dtype
    (
        checks.check_choose_precision,
        choose_precision,
        [
            lambda s: "static INT8",
            lambda s: "dynamic INT8" if s["layers"] == "linear" else "BF16",
            lambda s: {"conv": "static INT8", "linear": "dynamic INT8"}[s["layers"]],
        ],
    ),
    (
        checks.check_per_token_scales,
        lambda x: (x.abs().amax(dim=1) / 127.5).clamp(min=torch.finfo(torch.float32).eps),
        [
            lambda x: x.abs().amax(dim=1) / 127,  # LLM.int8()'s 127, not the course's (qmax - qmin) / 2
            lambda x: x.abs().amax(dim=1) / 127.5,  # a row of zeros gets scale 0
            lambda x: x.abs().amax(dim=0) / 127.5,  # per channel
            lambda x: absmax_qparams(x)[0],
        ],
    ),  # per tensor
    (
        checks.check_smoothing_factors,
        lambda a, w, alpha: a**alpha / w.abs().amax(dim=0) ** (1 - alpha),
        [
            lambda a, w, alpha: a ** (1 - alpha) / w.abs().amax(dim=0) ** alpha,  # exponents swapped
            lambda a, w, alpha: a**alpha / w.abs().max() ** (1 - alpha),  # one weight maximum for every channel
            lambda a, w, alpha: a**alpha / w.amax(dim=0) ** (1 - alpha),
        ],
    ),  # no magnitude
    (
        checks.check_pack_int4,
        lambda c: (c[0::2] | (c[1::2] << 4)).to(torch.uint8),
        [
            lambda c: ((c[0::2] << 4) | c[1::2]).to(torch.uint8),  # high nibble first
            lambda c: c[0::2].long() + 16 * c[1::2].long(),
        ],
    ),  # right bytes, wrong dtype
]


@pytest.mark.parametrize("check,right,wrongs", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.filterwarnings("ignore:must run observer:UserWarning")  # the PT2E check's uncalibrated wrong answer
def test_check_passes_right_and_fails_wrong_and_missing(check, right, wrongs, capsys, request):
    if check is checks.check_requantization_scales:  # it reads the layers of a converted model: conftest's tiny one
        check = functools.partial(check, converted=request.getfixturevalue("tiny_fx").converted)
    check(right)
    assert "passed" in capsys.readouterr().out
    for wrong in wrongs:
        with pytest.raises(AssertionError, match="wrong answer|returned dtype"):
            check(wrong)

    def missing(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not answered yet"):
        check(missing)


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
