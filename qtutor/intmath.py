"""Integer-only inference: int8 x int8 products summed in int32, then requantized.

Introduced in notebook 05 (integer arithmetic). A quantized layer computes::

    acc = sum((x_q - x_zp) * (w_q - w_zp)) + bias_q        # int32, bias_q = round(bias / (S_x * S_w))
    y_q = clamp(round(acc * M) + y_zp, qmin, qmax)          # M = S_x * S_w / S_y

Engines differ in how they compute ``round(acc * M)``:

- :func:`requantize_float32` is what PyTorch's ``qnnpack`` engine does (its
  q8gemm kernels convert the int32 accumulator to float32, multiply by a
  float32 ``M`` and convert back rounding half to even);
  :func:`int_linear` and :func:`int_conv2d` use it by default and so match
  ``qnnpack`` bit for bit.
- :func:`requantize` is the gemmlowp/TFLite fixed-point scheme: ``M`` stored as
  an int32 ``m0`` in [2**30, 2**31) and a shift, a rounding doubling high
  multiply, then a rounding right shift that breaks ties away from zero.
  Integers only, and the same on every machine.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from qtutor._validate import whole_number

__all__ = [
    "quantize_bias",
    "fixed_point_multiplier",
    "rounding_right_shift",
    "rounding_doubling_high_mul",
    "requantize",
    "requantize_float32",
    "pair_sums_int16",
    "int_linear",
    "conv2d_accumulators",
    "int_conv2d",
    "module_params",
    "quantize_module",
    "quantized_engine",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1


def quantize_bias(bias, input_scale, weight_scale) -> torch.Tensor:
    """The bias as int32 at scale ``S_x * S_w`` (per output channel when ``weight_scale`` is a vector)."""
    product = torch.as_tensor(input_scale, dtype=torch.float32) * torch.as_tensor(weight_scale, dtype=torch.float32)
    return torch.round(torch.as_tensor(bias, dtype=torch.float32) / product).to(torch.int32)


def fixed_point_multiplier(multiplier, *, mantissa_bits: int = 31) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m0, shift)`` with ``multiplier ~= m0 * 2**-shift`` and ``2**(b-1) <= m0 < 2**b``, ``b = mantissa_bits``.

    ``multiplier`` is float32, so it carries 24 significant bits: from 24 bits
    up, ``m0`` holds it exactly (wider ``m0`` only gain trailing zeros); fewer
    bits round it (notebook 05 shows what that costs).
    """
    whole_number(mantissa_bits, "mantissa_bits", 1, 31)
    multiplier = torch.as_tensor(multiplier, dtype=torch.float32)
    if not (multiplier > 0).all() or not torch.isfinite(multiplier).all():
        raise ValueError(f"multiplier={multiplier.tolist()}: expected positive finite numbers")
    mantissa, exponent = torch.frexp(multiplier)  # multiplier = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = torch.round(mantissa.to(torch.float64) * 2**mantissa_bits).to(torch.int64)
    shift = mantissa_bits - exponent.to(torch.int64)
    carried = m0 == 2**mantissa_bits  # rounding reached the next power of two: halve both
    return torch.where(carried, m0 // 2, m0), torch.where(carried, shift - 1, shift)


def rounding_right_shift(value: torch.Tensor, shift, *, ties: str = "even") -> torch.Tensor:
    """``round(value / 2**shift)`` on integers; ``ties`` is ``"even"`` (as ``torch.round``) or ``"away"`` (from zero).

    ``"away"`` is gemmlowp's ``RoundingDivideByPOT``: an arithmetic shift,
    plus one when the bits shifted out are more than half (or exactly half,
    for a positive value).
    """
    if ties not in ("even", "away"):
        raise ValueError(f"ties={ties!r}: expected 'even' or 'away'")
    value = value.to(torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64)
    divisor = torch.bitwise_left_shift(torch.ones_like(shift), shift)
    quotient = torch.div(value, divisor, rounding_mode="floor")  # the arithmetic right shift
    remainder = value - quotient * divisor
    half = divisor // 2
    if ties == "even":
        round_up = (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
    else:
        round_up = (remainder > half) | ((remainder == half) & (value >= 0) & (shift > 0))
    return quotient + round_up.to(torch.int64)


def rounding_doubling_high_mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul``: ``a * b / 2**31`` rounded to nearest, for int32 ``a, b``.

    The 64-bit product plus a nudge of ``2**30`` (``1 - 2**30`` when negative),
    divided by ``2**31`` truncating toward zero. Exact ties therefore round
    toward plus infinity. The one overflow, ``-2**31 * -2**31``, saturates.
    """
    product = a.to(torch.int64) * b.to(torch.int64)
    nudge = torch.where(product >= 0, 2**30, 1 - 2**30)
    high = torch.div(product + nudge, 2**31, rounding_mode="trunc")
    overflow = (a.to(torch.int64) == INT32_MIN) & (b.to(torch.int64) == INT32_MIN)
    return torch.where(overflow, INT32_MAX, high)


def _output_dtype(qmin: int, qmax: int) -> torch.dtype:
    """uint8 for a range inside 0..255, int8 inside -128..127, else int32."""
    if 0 <= qmin and qmax <= 255:
        return torch.uint8
    if -128 <= qmin and qmax <= 127:
        return torch.int8
    return torch.int32


def _per_channel(param: torch.Tensor, acc: torch.Tensor, channel_axis: int) -> torch.Tensor:
    """Shape a per-channel parameter to broadcast along ``channel_axis`` of ``acc``."""
    if param.dim() == 1 and param.numel() > 1:
        shape = [1] * acc.dim()
        shape[channel_axis] = -1
        return param.reshape(shape)
    return param.reshape(())


def requantize(
    acc: torch.Tensor,
    multiplier,
    zero_point: int,
    *,
    qmin: int = 0,
    qmax: int = 255,
    channel_axis: int = -1,
    mantissa_bits: int = 31,
) -> torch.Tensor:
    """int32 accumulators to output codes with gemmlowp/TFLite's fixed-point arithmetic: integers only.

    ``M`` (float32, below 1) becomes ``m0 * 2**-shift`` with ``m0`` in
    [2**30, 2**31) (:func:`fixed_point_multiplier`); then
    ``rounding_right_shift(rounding_doubling_high_mul(acc, m0), shift - 31, ties="away")``,
    plus the zero-point, clamped to ``qmin..qmax``. ``mantissa_bits`` below 31
    keeps only that many significant bits of ``m0``. ``multiplier`` is one
    number or one per channel (along ``channel_axis`` of ``acc``). Returns
    uint8 codes for a range inside 0..255, int8 inside -128..127, else int32.
    """
    m0, shift = fixed_point_multiplier(multiplier, mantissa_bits=mantissa_bits)
    m0, shift = m0 << (31 - mantissa_bits), shift + (31 - mantissa_bits)  # m0 as a Q31 number in [0.5, 1)
    if (shift < 31).any():
        raise ValueError("multiplier: expected values below 1, as a requantization multiplier S_x * S_w / S_y is")
    m0, shift = _per_channel(m0, acc, channel_axis), _per_channel(shift, acc, channel_axis)
    high = rounding_doubling_high_mul(acc.to(torch.int64), m0)
    scaled = rounding_right_shift(high, shift - 31, ties="away")
    return (scaled + zero_point).clamp(qmin, qmax).to(_output_dtype(qmin, qmax))


def requantize_float32(
    acc: torch.Tensor, multiplier, zero_point: int, *, qmin: int = 0, qmax: int = 255, channel_axis: int = -1
) -> torch.Tensor:
    """int32 accumulators to output codes as PyTorch's ``qnnpack`` engine does it: in float32.

    ``round(float32(acc) * float32(M))``, rounding half to even (the kernels'
    ``_mm_cvtepi32_ps``, ``_mm_mul_ps``, ``_mm_cvtps_epi32``), plus the
    zero-point, clamped. Accumulators above 2**24 in magnitude lose low bits on
    the way into float32. Returns the same dtypes as :func:`requantize`.
    """
    multiplier = _per_channel(torch.as_tensor(multiplier, dtype=torch.float32), acc, channel_axis)
    scaled = torch.round(acc.to(torch.float32) * multiplier).to(torch.int64)
    return (scaled + zero_point).clamp(qmin, qmax).to(_output_dtype(qmin, qmax))


def pair_sums_int16(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """``x_q @ w_q.T`` the way x86's ``vpmaddubsw`` builds it: uint8 x int8 products added in pairs, saturated to int16.

    Each adjacent pair of products is summed and clamped to -32768..32767
    (the instruction's saturation); the pair sums are then added in int32.
    With activation codes up to 255 a pair can reach 2 * 255 * 127 = 64770 and
    is clipped; with codes up to 127 (``reduce_range=True``) it never is.
    Introduced in notebook 05.
    """
    products = x_q.to(torch.int64).unsqueeze(-2) * w_q.to(torch.int64)  # (..., out, k)
    if products.shape[-1] % 2:
        products = F.pad(products, (0, 1))
    pairs = products.unflatten(-1, (-1, 2)).sum(-1).clamp(INT16_MIN, INT16_MAX)
    return pairs.sum(-1)


def _check_int32(acc: torch.Tensor) -> torch.Tensor:
    """Raise if an accumulator left the int32 range (it never does for int8 layers of sane size)."""
    if acc.numel() and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("an accumulator left the int32 range")
    return acc


_REQUANTIZERS = {"float32": requantize_float32, "fixed_point": requantize}


def _requantizer(name: str):
    if name not in _REQUANTIZERS:
        raise ValueError(f"requantizer={name!r}: expected one of {list(_REQUANTIZERS)}")
    return _REQUANTIZERS[name]


def int_linear(
    x_q, x_zero_point, w_q, w_zero_point, bias_q, multiplier, y_zero_point, *, requantizer: str = "float32"
) -> torch.Tensor:
    """A quantized linear layer in integers up to the accumulator: uint8 activations, int8 weights, uint8 output.

    ``w_zero_point`` and ``multiplier`` may be per output channel (vectors).
    ``requantizer`` is ``"float32"`` (:func:`requantize_float32`, as ``qnnpack``)
    or ``"fixed_point"`` (:func:`requantize`, gemmlowp's integers-only scheme).
    """
    requantize_with = _requantizer(requantizer)
    x = x_q.to(torch.int64) - int(x_zero_point)
    w = w_q.to(torch.int64) - torch.as_tensor(w_zero_point, dtype=torch.int64).reshape(-1, 1)
    acc = _check_int32(x @ w.T + bias_q.to(torch.int64))
    return requantize_with(acc, multiplier, int(y_zero_point), channel_axis=-1)


def conv2d_accumulators(
    x_q, x_zero_point, w_q, w_zero_point, bias_q, *, stride=1, padding=0, dilation=1
) -> torch.Tensor:
    """The int32 accumulators (as int64, NCHW) of a quantized convolution: patches times weights plus bias.

    Padding adds the input's zero-point, i.e. a real 0. Introduced in notebook 05.
    """
    batch, _, height, width = x_q.shape
    out_channels, _, kernel_h, kernel_w = w_q.shape
    x = x_q.to(torch.int64) - int(x_zero_point)
    # unfold only moves values around (float64 holds every int8 difference exactly); the products are integers.
    patches = F.unfold(x.to(torch.float64), (kernel_h, kernel_w), dilation=dilation, padding=padding, stride=stride).to(
        torch.int64
    )
    w = w_q.to(torch.int64) - torch.as_tensor(w_zero_point, dtype=torch.int64).reshape(-1, 1, 1, 1)
    acc = _check_int32(w.reshape(out_channels, -1) @ patches + bias_q.to(torch.int64).reshape(-1, 1))
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
    dil_h, dil_w = (dilation, dilation) if isinstance(dilation, int) else dilation
    out_h = (height + 2 * pad_h - dil_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width + 2 * pad_w - dil_w * (kernel_w - 1) - 1) // stride_w + 1
    return acc.reshape(batch, out_channels, out_h, out_w)


def int_conv2d(
    x_q,
    x_zero_point,
    w_q,
    w_zero_point,
    bias_q,
    multiplier,
    y_zero_point,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    requantizer: str = "float32",
) -> torch.Tensor:
    """A quantized 2-D convolution (NCHW): :func:`conv2d_accumulators`, then requantized as in :func:`int_linear`."""
    if groups != 1:
        raise ValueError(f"groups={groups}: only groups=1 is implemented")
    requantize_with = _requantizer(requantizer)
    acc = conv2d_accumulators(
        x_q, x_zero_point, w_q, w_zero_point, bias_q, stride=stride, padding=padding, dilation=dilation
    )
    return requantize_with(acc, multiplier, int(y_zero_point), channel_axis=1)


def module_params(module, input_scale: float) -> dict:
    """The integers a PyTorch quantized ``Linear``/``Conv2d`` runs on, for :func:`int_linear`/:func:`int_conv2d`.

    Returns the int8 weight codes and zero-points, the int32 bias at scale
    ``S_x * S_w``, the real multiplier ``S_x * S_w / S_y`` and the output
    zero-point. The multiplier is computed in float32 the way ``qnnpack``
    computes its requantization scales: ``(S_w * S_x) * (1 / S_y)``.
    """
    weight = module.weight()
    if weight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        w_scale = torch.tensor(weight.q_scale(), dtype=torch.float32)
        w_zero_point = torch.tensor(weight.q_zero_point())
    else:
        w_scale = weight.q_per_channel_scales().to(torch.float32)
        w_zero_point = weight.q_per_channel_zero_points()
    x_scale = torch.tensor(input_scale, dtype=torch.float32)
    y_scale = torch.tensor(module.scale, dtype=torch.float32)
    bias = module.bias() if module.bias() is not None else torch.zeros(weight.shape[0])
    return {
        "w_q": weight.int_repr(),
        "w_zero_point": w_zero_point,
        "bias_q": quantize_bias(bias, x_scale, w_scale),
        "multiplier": (w_scale * x_scale) * (1.0 / y_scale),
        "y_zero_point": int(module.zero_point),
    }


def quantize_module(float_module, calibration: torch.Tensor):
    """A PyTorch quantized ``Linear``/``Conv2d`` built from a float one, the way a converter builds it.

    Weights: per output channel, signed 8-bit symmetric. Input and output
    ranges: min-max of ``calibration`` and of the float module's outputs on it
    (unsigned 8-bit affine). Build it inside :func:`quantized_engine`: the
    weights are packed for the engine active at construction time. Returns
    ``(module, input_scale, input_zero_point)``.
    """
    import torch.ao.nn.quantized as nnq

    from qtutor.observers import minmax_range
    from qtutor.uniform import qparams

    if not isinstance(float_module, (torch.nn.Linear, torch.nn.Conv2d)):
        raise ValueError(f"module {type(float_module).__name__}: expected torch.nn.Linear or torch.nn.Conv2d")
    weight = float_module.weight.detach()
    w_scales, w_zero_points = qparams(*minmax_range(weight, axis=0), signed=True, symmetric=True)
    x_scale, x_zero_point = qparams(*minmax_range(calibration))
    with torch.no_grad():
        y_scale, y_zero_point = qparams(*minmax_range(float_module(calibration)))
    if isinstance(float_module, torch.nn.Linear):
        module = nnq.Linear(float_module.in_features, float_module.out_features)
    else:
        module = nnq.Conv2d(
            float_module.in_channels,
            float_module.out_channels,
            float_module.kernel_size,
            stride=float_module.stride,
            padding=float_module.padding,
            dilation=float_module.dilation,
        )
    q_weight = torch.quantize_per_channel(weight, w_scales.double(), w_zero_points, 0, torch.qint8)
    module.set_weight_bias(q_weight, None if float_module.bias is None else float_module.bias.detach())
    module.scale, module.zero_point = y_scale.item(), int(y_zero_point)
    return module, x_scale.item(), int(x_zero_point)


@contextlib.contextmanager
def quantized_engine(name: str):
    """Run a block with ``torch.backends.quantized.engine`` set to ``name``, restoring it after."""
    if name not in torch.backends.quantized.supported_engines:
        raise ValueError(f"engine={name!r}: expected one of {torch.backends.quantized.supported_engines}")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous
