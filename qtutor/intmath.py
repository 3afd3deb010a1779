"""Integer-only inference: int8 x int8 products summed in int32, then requantized.

Introduced in notebook 05 (integer arithmetic). A quantized layer computes, with
integers only::

    acc = sum((x_q - x_zp) * (w_q - w_zp)) + bias_q        # int32, bias_q = round(bias / (S_x * S_w))
    y_q = clamp(round(acc * M) + y_zp, 0, 255)              # M = S_x * S_w / S_y

where the real multiplier ``M`` is stored as an int32 ``m0`` and a shift ``n``
(``M = m0 * 2**-n``), so ``round(acc * M)`` is one integer multiply and one
rounding right shift. :func:`int_linear` and :func:`int_conv2d` reproduce
PyTorch's quantized ``Linear`` and ``Conv2d`` on the ``qnnpack`` engine (the
integer-bias engine PyTorch ships for phones) bit for bit; see
:func:`module_params` for reading the numbers out of a PyTorch module.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

__all__ = [
    "quantize_bias",
    "fixed_point_multiplier",
    "rounding_right_shift",
    "requantize",
    "int_linear",
    "int_conv2d",
    "module_params",
    "quantize_module",
    "quantized_engine",
]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_bias(bias, input_scale, weight_scale) -> torch.Tensor:
    """The bias as int32 at scale ``S_x * S_w`` (per output channel when ``weight_scale`` is a vector)."""
    product = torch.as_tensor(input_scale, dtype=torch.float32) * torch.as_tensor(weight_scale, dtype=torch.float32)
    return torch.round(torch.as_tensor(bias, dtype=torch.float32) / product).to(torch.int32)


def fixed_point_multiplier(multiplier, *, mantissa_bits: int = 31) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m0, shift)`` with ``multiplier ~= m0 * 2**-shift`` and ``2**(b-1) <= m0 < 2**b``, ``b = mantissa_bits``.

    With the default 31 bits, ``m0`` holds a float32 multiplier's 24-bit
    mantissa exactly; fewer bits round it (notebook 05 shows what that costs).
    """
    if isinstance(mantissa_bits, bool) or not isinstance(mantissa_bits, int) or not 1 <= mantissa_bits <= 31:
        raise ValueError(f"mantissa_bits={mantissa_bits!r}: expected a whole number from 1 to 31")
    multiplier = torch.as_tensor(multiplier, dtype=torch.float32)
    if not (multiplier > 0).all() or not torch.isfinite(multiplier).all():
        raise ValueError(f"multiplier={multiplier.tolist()}: expected positive finite numbers")
    mantissa, exponent = torch.frexp(multiplier)  # multiplier = mantissa * 2**exponent, mantissa in [0.5, 1)
    m0 = torch.round(mantissa.to(torch.float64) * 2**mantissa_bits).to(torch.int64)
    shift = mantissa_bits - exponent.to(torch.int64)
    carried = m0 == 2**mantissa_bits  # rounding reached the next power of two: halve both
    return torch.where(carried, m0 // 2, m0), torch.where(carried, shift - 1, shift)


def rounding_right_shift(value: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``round(value / 2**shift)`` on integers, ties to even (as ``torch.round`` and ``nearbyint``)."""
    value = value.to(torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64)
    divisor = torch.bitwise_left_shift(torch.ones_like(shift), shift)
    quotient = torch.div(value, divisor, rounding_mode="floor")
    remainder = value - quotient * divisor
    half = divisor // 2
    round_up = (remainder > half) | ((remainder == half) & (quotient % 2 == 1))
    return quotient + round_up.to(torch.int64)


def requantize(acc: torch.Tensor, multiplier, zero_point: int, *, qmin: int = 0, qmax: int = 255,
               channel_axis: int = -1, mantissa_bits: int = 31) -> torch.Tensor:
    """int32 accumulators to output codes: ``clamp(round(acc * M) + zero_point)`` in integers only.

    ``multiplier`` is one number or one per output channel (along ``channel_axis`` of ``acc``);
    ``mantissa_bits`` is the width of its fixed-point form (see :func:`fixed_point_multiplier`).
    """
    m0, shift = fixed_point_multiplier(multiplier, mantissa_bits=mantissa_bits)
    if m0.dim() == 1 and m0.numel() > 1:
        shape = [1] * acc.dim()
        shape[channel_axis] = -1
        m0, shift = m0.reshape(shape), shift.reshape(shape)
    scaled = rounding_right_shift(acc.to(torch.int64) * m0, shift)
    return (scaled + zero_point).clamp(qmin, qmax).to(torch.uint8)


def _check_int32(acc: torch.Tensor) -> torch.Tensor:
    """Raise if an accumulator left the int32 range (it never does for int8 layers of sane size)."""
    if acc.numel() and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise OverflowError("an accumulator left the int32 range")
    return acc


def int_linear(x_q, x_zero_point, w_q, w_zero_point, bias_q, multiplier, y_zero_point) -> torch.Tensor:
    """A quantized linear layer in integers only: uint8 activations, int8 weights, uint8 output.

    ``w_zero_point`` and ``multiplier`` may be per output channel (vectors).
    """
    x = x_q.to(torch.int64) - int(x_zero_point)
    w = w_q.to(torch.int64) - torch.as_tensor(w_zero_point, dtype=torch.int64).reshape(-1, 1)
    acc = _check_int32(x @ w.T + bias_q.to(torch.int64))
    return requantize(acc, multiplier, int(y_zero_point), channel_axis=-1)


def int_conv2d(x_q, x_zero_point, w_q, w_zero_point, bias_q, multiplier, y_zero_point, *,
               stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """A quantized 2-D convolution in integers only (NCHW), as :func:`int_linear` over image patches.

    Padding adds the input's zero-point, i.e. a real 0.
    """
    if groups != 1:
        raise ValueError(f"groups={groups}: only groups=1 is implemented")
    batch, _, height, width = x_q.shape
    out_channels, _, kernel_h, kernel_w = w_q.shape
    x = x_q.to(torch.int64) - int(x_zero_point)
    # unfold only moves values around (float64 holds every int8 difference exactly); the products are integers.
    patches = F.unfold(x.to(torch.float64), (kernel_h, kernel_w), dilation=dilation, padding=padding,
                       stride=stride).to(torch.int64)
    w = w_q.to(torch.int64) - torch.as_tensor(w_zero_point, dtype=torch.int64).reshape(-1, 1, 1, 1)
    acc = _check_int32(w.reshape(out_channels, -1) @ patches + bias_q.to(torch.int64).reshape(-1, 1))
    stride_h, stride_w = (stride, stride) if isinstance(stride, int) else stride
    pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
    dil_h, dil_w = (dilation, dilation) if isinstance(dilation, int) else dilation
    out_h = (height + 2 * pad_h - dil_h * (kernel_h - 1) - 1) // stride_h + 1
    out_w = (width + 2 * pad_w - dil_w * (kernel_w - 1) - 1) // stride_w + 1
    acc = acc.reshape(batch, out_channels, out_h, out_w)
    return requantize(acc, multiplier, int(y_zero_point), channel_axis=1)


def module_params(module, input_scale: float) -> dict:
    """The integers a PyTorch quantized ``Linear``/``Conv2d`` runs on, for :func:`int_linear`/:func:`int_conv2d`.

    Returns the int8 weight codes and zero-points, the int32 bias at scale
    ``S_x * S_w``, the real multiplier ``S_x * S_w / S_y`` and the output
    zero-point.
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
        "multiplier": x_scale * w_scale / y_scale,
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
        module = nnq.Conv2d(float_module.in_channels, float_module.out_channels, float_module.kernel_size,
                            stride=float_module.stride, padding=float_module.padding, dilation=float_module.dilation)
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
