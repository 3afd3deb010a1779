"""Input checks shared by the quantizers (``uniform``, ``observers``, ``nonuniform``, ``largemodels``, ``intmath``).

Private: the lesson modules keep their notebook's math and call these for the
rest. Every check raises ``ValueError`` with one line that names the bad value
and says what was expected.
"""

from __future__ import annotations

import torch

MIN_BITS = 2  # the widths notebook 01 quantizes to (qtutor.MIN_BITS, qtutor.MAX_BITS)
MAX_BITS = 16


def whole_number(value, name: str, low: int, high: int) -> int:
    """``value`` if it is a whole number (not a bool) from ``low`` to ``high``, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}={value!r}: expected a whole number from {low} to {high}")
    return value


def check_bits(bits: int, low: int = MIN_BITS, high: int = MAX_BITS) -> int:
    """``bits`` if it is a whole number in ``low..high`` (2..16 by default), else ValueError."""
    return whole_number(bits, "bits", low, high)


def show(tensor: torch.Tensor) -> str:
    """A short printable form of a tensor for error messages."""
    if tensor.numel() == 1:
        return repr(tensor.item())
    values = ", ".join(f"{v:g}" for v in tensor.flatten()[:4].tolist())
    return f"[{values}{', ...' if tensor.numel() > 4 else ''}] (shape {tuple(tensor.shape)})"


def finite_tensor(value, name: str) -> torch.Tensor:
    """``value`` (number or tensor) as a float32 tensor whose values are all finite."""
    tensor = torch.as_tensor(value).detach()
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name}={value!r}: expected real numbers")
    tensor = tensor.to(torch.float32)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}={show(tensor)}: expected finite numbers, not NaN or infinity")
    return tensor


def float_input(x) -> torch.Tensor:
    """``x`` as a float32 tensor without NaN values: what ``quantize`` and ``fake_quantize`` accept."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        raise ValueError(f"x has dtype {x.dtype}: expected a floating-point tensor")
    x = x.to(torch.float32)
    if x.numel() and torch.isnan(x.max()):  # max propagates NaN; one pass, no temporary mask
        raise ValueError("x contains NaN: expected numbers (NaN has no quantized code)")
    return x


def finite_values(x) -> torch.Tensor:
    """``x`` as a non-empty float32 tensor of finite values: what a range estimator can work on."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.numel() == 0:
        raise ValueError("x is empty: expected at least one value to estimate a range from")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinity: expected finite values")
    return x


def channel_view(param: torch.Tensor, x: torch.Tensor, axis: int | None, name: str) -> torch.Tensor:
    """Shape a per-channel ``param`` so it broadcasts along ``axis`` of ``x`` (one value when ``axis`` is None)."""
    if axis is None:
        if param.numel() != 1:
            raise ValueError(
                f"{name} has {param.numel()} values but axis=None: expected one value "
                "(pass axis=... for per-channel quantization)"
            )
        return param.reshape(())
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.dim() <= axis < x.dim():
        raise ValueError(
            f"axis={axis!r}: expected an integer from {-x.dim()} to {x.dim() - 1} "
            f"for a tensor of shape {tuple(x.shape)}"
        )
    axis = axis % x.dim()
    channels = x.shape[axis]
    if param.dim() > 1 or param.numel() not in (1, channels):
        raise ValueError(
            f"{name} has shape {tuple(param.shape)}: expected one value or {channels} values, "
            f"one per channel of axis {axis}"
        )
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.reshape(-1).reshape(shape) if param.numel() == channels else param.reshape(())


def affine_params(x: torch.Tensor, scale, zero_point, axis: int | None, *, code_range=None, kind: str = ""):
    """``scale`` and ``zero_point`` checked and shaped to broadcast along ``axis`` of ``x``.

    The scale must be positive and finite, the zero-point whole; with
    ``code_range`` ``(qmin, qmax)`` the zero-point must also lie in it
    (``kind`` names the range in the message, e.g. "unsigned 8-bit").
    """
    scale_t = finite_tensor(scale, "scale")
    if (scale_t <= 0).any():
        raise ValueError(f"scale={show(scale_t)}: expected positive numbers")
    zp_t = torch.as_tensor(zero_point).detach()
    if (
        zp_t.is_complex()
        or zp_t.dtype == torch.bool
        or (zp_t.is_floating_point() and not torch.equal(zp_t, zp_t.round()))
    ):
        raise ValueError(f"zero_point={show(zp_t)}: expected whole numbers")
    zp_t = zp_t.to(torch.int64)
    if code_range is not None:
        qmin, qmax = code_range
        if ((zp_t < qmin) | (zp_t > qmax)).any():
            raise ValueError(f"zero_point={show(zp_t)}: expected values in {qmin}..{qmax}, the {kind} range")
    return channel_view(scale_t, x, axis, "scale"), channel_view(zp_t, x, axis, "zero_point")
