"""Quantizing today's large models, on toy tensors: outliers, granularity, LLM.int8(), SmoothQuant, INT4, FP8.

Introduced in notebook 11 (today's large models). The activations of large
transformers carry a few input channels far larger than the rest (Dettmers et
al., 2022, "LLM.int8()"; Xiao et al., 2023, "SmoothQuant"); the notebook
injects such channels into random tensors and shows what each technique here
does about them:

- :func:`absmax_fake_quantize`: symmetric INT8 per tensor, per token (rows) or per channel;
- :func:`int8_decomposed_linear`: LLM.int8()'s split of outlier columns into a float matmul;
- :func:`smoothing_factors` and :func:`smooth`: SmoothQuant's per-channel migration of range from
  activations to weights;
- :func:`group_fake_quantize` and :class:`QuantLinear`: weight-only per-group INT4 (W4A16), codes packed
  two per byte with :mod:`qtutor.packing`;
- :func:`fp8_fake_quantize`: per-tensor scaled FP8 (E4M3, E5M2) with :mod:`qtutor.formats`.

Weights follow ``torch.nn.Linear``: ``weight`` is ``[out_features, in_features]``
and activations are ``[tokens, in_features]``, so an input channel ``j`` is
column ``j`` of both.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from qtutor._validate import check_bits
from qtutor.formats import FP8_FORMATS, fp8_decode, fp8_encode
from qtutor.observers import minmax_range
from qtutor.packing import pack, unpack
from qtutor.uniform import dequantize, fake_quantize, qparams, quantize

__all__ = [
    "outlier_activations",
    "absmax_qparams",
    "absmax_fake_quantize",
    "w8a8_linear",
    "outlier_columns",
    "int8_decomposed_linear",
    "smoothing_factors",
    "smooth",
    "group_qparams",
    "group_fake_quantize",
    "QuantLinear",
    "quantize_linears",
    "model_nbytes",
    "fp8_fake_quantize",
]


def _matrix(x, name: str) -> torch.Tensor:
    """``x`` as a float32 2-D tensor of finite values."""
    x = torch.as_tensor(x).detach()
    if not x.is_floating_point() or x.dim() != 2:
        raise ValueError(f"{name} of dtype {x.dtype} and shape {tuple(x.shape)}: expected a 2-D float tensor")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinity: expected finite values")
    return x


def _check_pair(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} input channels but weight {tuple(weight.shape)} expects "
            f"{weight.shape[1]}: expected x [tokens, in_features] and weight [out_features, in_features]"
        )


def outlier_activations(
    tokens: int = 256, channels: int = 512, *, outliers: int = 4, size: float = 50.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy activations ``[tokens, channels]``: standard normal, with ``outliers`` channels multiplied by ``size``.

    The outliers are injected, in a few fixed channels and every token, which is where the LLM.int8() and
    SmoothQuant papers measure them in real large models. Returns ``(x, outlier channel indices)``;
    the same ``seed`` gives the same tensor and channels.
    """
    if not 0 <= outliers <= channels:
        raise ValueError(f"outliers={outliers!r}: expected a count from 0 to channels={channels}")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, channels, generator=generator)
    where = torch.randperm(channels, generator=generator)[:outliers].sort().values
    x[:, where] *= size
    return x, where


def absmax_qparams(x, *, bits: int = 8, axis: int | None = None):
    """Signed symmetric ``(scale, zero_point)`` from the largest magnitude: per tensor, or one per index of ``axis``.

    For ``[tokens, channels]`` activations ``axis=0`` is per token (one scale per row) and ``axis=1`` per
    channel; for an ``nn.Linear`` weight ``axis=0`` is per output channel. The scale is
    :func:`qtutor.qparams`'s: ``max|x| / ((qmax - qmin) / 2)``, 127.5 at 8 bits.
    """
    low, high = minmax_range(x, axis)
    return qparams(low, high, bits=bits, signed=True, symmetric=True)


def absmax_fake_quantize(x, *, bits: int = 8, axis: int | None = None) -> torch.Tensor:
    """``x`` through signed symmetric ``bits``-wide quantization, scales from :func:`absmax_qparams`."""
    scale, zero_point = absmax_qparams(x, bits=bits, axis=axis)
    return fake_quantize(x, scale, zero_point, bits=bits, signed=True, axis=axis)


def w8a8_linear(x, weight, bias=None, *, act_axis: int | None = None, bits: int = 8) -> torch.Tensor:
    """``F.linear`` with activations and weights both through INT8 fake quantization (simulated W8A8).

    Activations per tensor (``act_axis=None``, static in SmoothQuant's terms) or per token (``act_axis=0``);
    weights per output channel. Both scales stay outside the sum over input channels, so an integer
    matmul kernel can apply them after accumulating.
    """
    x, weight = _matrix(x, "x"), _matrix(weight, "weight")
    _check_pair(x, weight)
    return F.linear(
        absmax_fake_quantize(x, bits=bits, axis=act_axis), absmax_fake_quantize(weight, bits=bits, axis=0), bias
    )


def outlier_columns(x, threshold: float = 6.0) -> torch.Tensor:
    """LLM.int8()'s outlier feature dimensions: a boolean mask of the columns where some ``|x| >= threshold``.

    The paper uses a threshold of 6.0 on the magnitude of the hidden states.
    """
    x = _matrix(x, "x")
    if not threshold > 0:
        raise ValueError(f"threshold={threshold!r}: expected a positive magnitude")
    return (x.abs() >= threshold).any(dim=0)


def int8_decomposed_linear(x, weight, bias=None, *, threshold: float = 6.0) -> tuple[torch.Tensor, float]:
    """LLM.int8(): the outlier columns in float, the rest in INT8 (per token x per output channel).

    ``x @ W.T = x[:, outliers] @ W[:, outliers].T + x[:, rest] @ W[:, rest].T``: the first product stays in
    float (FP16 in the paper; float32 here), the second is simulated INT8 with vector-wise scales.
    Returns ``(output, share of the multiply-adds done in float)``.
    """
    x, weight = _matrix(x, "x"), _matrix(weight, "weight")
    _check_pair(x, weight)
    mask = outlier_columns(x, threshold)
    output = F.linear(x[:, mask], weight[:, mask], bias)
    if (~mask).any():
        output = output + w8a8_linear(x[:, ~mask], weight[:, ~mask], act_axis=0)
    return output, mask.sum().item() / mask.numel()


def smoothing_factors(act_absmax, weight, alpha: float = 0.5) -> torch.Tensor:
    """SmoothQuant's per-input-channel factors ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``.

    ``act_absmax`` holds ``max|X_j|`` per input channel (from calibration); ``max|W_j|`` is taken over
    column ``j`` of the ``nn.Linear`` weight. As in the authors' code (``smooth_ln_fcs``), both maxima and
    the factors are kept at least 1e-5 so that dead channels do not divide by zero.
    """
    weight = _matrix(weight, "weight")
    act_absmax = torch.as_tensor(act_absmax, dtype=torch.float32)
    if act_absmax.shape != (weight.shape[1],) or (act_absmax < 0).any():
        raise ValueError(
            f"act_absmax of shape {tuple(act_absmax.shape)}: expected {weight.shape[1]} "
            "non-negative values, one max|X_j| per input channel"
        )
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r}: expected a migration strength from 0 to 1")
    weight_absmax = weight.abs().amax(dim=0).clamp(min=1e-5)
    return (act_absmax.clamp(min=1e-5).pow(alpha) / weight_absmax.pow(1 - alpha)).clamp(min=1e-5)


def smooth(x, weight, factors) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / s, W * s)``, column by column: the float product ``x @ W.T`` is unchanged.

    In a transformer the division is folded into the preceding LayerNorm, so it costs nothing at run time.
    """
    x, weight = _matrix(x, "x"), _matrix(weight, "weight")
    _check_pair(x, weight)
    factors = torch.as_tensor(factors, dtype=torch.float32)
    if factors.shape != (x.shape[1],) or not (factors > 0).all():
        raise ValueError(f"factors of shape {tuple(factors.shape)}: expected {x.shape[1]} positive values")
    return x / factors, weight * factors


def _groups(weight, group_size: int | None) -> tuple[torch.Tensor, int]:
    """``weight`` ``[out, in]`` as rows of ``group_size`` (zero-padded at the end of each row), and the group size.

    ``group_size=None`` means one group per row: per output channel.
    """
    weight = _matrix(weight, "weight")
    size = weight.shape[1] if group_size is None else group_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"group_size={group_size!r}: expected a positive whole number or None (per channel)")
    padded = F.pad(weight, (0, -weight.shape[1] % size))  # zeros never widen a symmetric range
    return padded.reshape(-1, size), size


def group_qparams(weight, group_size: int | None = 128, *, bits: int = 4):
    """Signed symmetric ``(scale, zero_point)`` per group of ``group_size`` consecutive input channels.

    Both shaped ``[out_features, groups]``. A row whose length is not a multiple of ``group_size`` ends in a
    shorter group.
    """
    groups, _ = _groups(weight, group_size)
    scale, zero_point = absmax_qparams(groups, bits=bits, axis=0)
    return scale.reshape(weight.shape[0], -1), zero_point.reshape(weight.shape[0], -1)


def group_fake_quantize(weight, group_size: int | None = 128, *, bits: int = 4) -> torch.Tensor:
    """``weight`` through per-group signed symmetric quantization (round to nearest), in its own shape."""
    groups, _ = _groups(weight, group_size)
    snapped = absmax_fake_quantize(groups, bits=bits, axis=0)
    return snapped.reshape(weight.shape[0], -1)[:, : weight.shape[1]]


class QuantLinear(torch.nn.Module):
    """A weight-only quantized ``nn.Linear`` (W4A16): packed ``bits``-wide codes and one FP16 scale per group.

    Stores ``packed`` (``uint8``, two 4-bit codes per byte, row after row, :func:`qtutor.packing.pack`), ``scales``
    (``float16``, ``[out_features, groups]``) and the float ``bias``. The forward unpacks, dequantizes and
    calls ``F.linear``: activations stay in float (FP16 on a GPU; float32 on this CPU). Build one with
    :meth:`from_linear`.
    """

    def __init__(
        self,
        packed: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        in_features: int,
        group_size: int,
        bits: int = 4,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, scales.shape[0]
        self.group_size, self.bits = group_size, bits
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, group_size: int | None = 128, *, bits: int = 4) -> QuantLinear:
        """Quantize ``linear``'s weight per group (``None``: per output channel), round to nearest, and pack it."""
        if not isinstance(linear, torch.nn.Linear):
            raise ValueError(f"linear of type {type(linear).__name__}: expected a torch.nn.Linear")
        check_bits(bits, 2, 8)
        groups, size = _groups(linear.weight, group_size)
        scale, _ = absmax_qparams(groups, bits=bits, axis=0)
        scale = scale.to(torch.float16)  # stored in FP16; the codes are computed with the stored scale
        codes = quantize(groups, scale.float(), 0, bits=bits, signed=True, axis=0)
        codes = codes.reshape(linear.out_features, -1)[:, : linear.in_features]  # the padding is not stored
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(
            pack(codes, bits, signed=True),
            scale.reshape(linear.out_features, -1),
            bias,
            in_features=linear.in_features,
            group_size=size,
            bits=bits,
        )

    def codes(self) -> torch.Tensor:
        """The signed integer codes, ``[out_features, in_features]``."""
        count = self.out_features * self.in_features
        return unpack(self.packed, self.bits, count, signed=True).reshape(self.out_features, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the forward uses: each code times its group's scale."""
        padding = self.scales.shape[1] * self.group_size - self.in_features
        codes = F.pad(self.codes(), (0, padding)).reshape(-1, self.group_size)
        weight = dequantize(codes, self.scales.float().reshape(-1), 0, axis=0)
        return weight.reshape(self.out_features, -1)[:, : self.in_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}"
        )


def quantize_linears(model: torch.nn.Module, group_size: int | None = 128, *, bits: int = 4) -> torch.nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` replaced by a :class:`QuantLinear`."""
    model = copy.deepcopy(model)
    for name, child in list(model.named_children()):
        if isinstance(child, torch.nn.Linear):
            setattr(model, name, QuantLinear.from_linear(child, group_size, bits=bits))
        else:
            setattr(model, name, quantize_linears(child, group_size, bits=bits))
    return model


def model_nbytes(model: torch.nn.Module) -> int:
    """Bytes a model's parameters and buffers really take (``Tensor.nbytes``)."""
    return sum(t.nbytes for t in list(model.parameters()) + list(model.buffers()))


def fp8_fake_quantize(x, name: str = "E4M3") -> torch.Tensor:
    """``x`` through FP8 with one per-tensor scale: ``max|x|`` maps to the format's largest value.

    ``scale = max|x| / finfo.max``; ``x / scale`` is rounded to FP8 (:func:`qtutor.formats.fp8_encode`,
    bit-exact with PyTorch's cast) and multiplied back.
    """
    x = torch.as_tensor(x, dtype=torch.float32)
    if name not in FP8_FORMATS:
        raise ValueError(f"format {name!r}: expected one of {list(FP8_FORMATS)}")
    top = x.abs().max() if x.numel() else torch.tensor(0.0)
    if not torch.isfinite(top):
        raise ValueError("x contains NaN or infinity: expected finite values")
    scale = torch.clamp(top / torch.finfo(FP8_FORMATS[name]).max, min=torch.finfo(torch.float32).tiny)
    return fp8_decode(fp8_encode(x / scale, name), name) * scale
