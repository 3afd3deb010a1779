"""Measurements that resolve small effects: accuracy with an interval, agreement, KL, per-layer SQNR, time.

Introduced in notebook 06 and used by notebooks 06-10, ``qtutor --task evaluate``
and ``benchmarks/``. At 8 bits a quantized CNN's top-1 accuracy often moves by
less than one test image; what still moves is how often it agrees with the
FP32 model, how far its probabilities drift (KL divergence), and how much
noise each layer adds (SQNR). One timing helper serves every comparison: the
models take turns, call by call, so a busy machine slows them all alike. File
sizes come from :func:`qtutor.files.file_size_mb`.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

__all__ = [
    "Estimate",
    "Outputs",
    "wilson_interval",
    "predict",
    "accuracy",
    "agreement",
    "kl_divergence",
    "compare",
    "layer_sqnr",
    "layer_sensitivity",
    "Timing",
    "time_in_turns",
]

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval


@dataclass(frozen=True)
class Estimate:
    """A proportion measured on ``count`` trials, with its 95% Wilson score interval ``[low, high]``."""

    value: float
    low: float
    high: float
    count: int

    def __format__(self, spec: str) -> str:
        spec = spec or ".1%"
        return f"{self.value:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"

    def overlaps(self, other: Estimate) -> bool:
        """Whether the two intervals overlap (then the difference is not resolved by this many trials)."""
        return self.low <= other.high and other.low <= self.high


def wilson_interval(successes: int, trials: int, z: float = Z95) -> Estimate:
    """The proportion ``successes / trials`` with its Wilson score interval (95% by default).

    Unlike the normal approximation p +- z*sqrt(p(1-p)/n), Wilson's interval
    stays inside [0, 1] and does not collapse to a point at 0% or 100%.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"successes={successes}, trials={trials}: expected 0 <= successes <= trials, trials >= 1")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # (the min/max guard against rounding at p = 0 or 1, where an end equals p exactly)
    return Estimate(p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)), trials)


@dataclass(frozen=True)
class Outputs:
    """What a classifier said about a dataset: its logits (N x classes, float32) and the true labels (N)."""

    logits: torch.Tensor
    targets: torch.Tensor

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)


@torch.no_grad()
def predict(model: Callable, loader: DataLoader) -> Outputs:
    """Run ``model`` over ``loader`` once and keep every logit (float32) and label."""
    logits, targets = [], []
    for images, labels in loader:
        logits.append(model(images).float())
        targets.append(labels)
    return Outputs(torch.cat(logits), torch.cat(targets))


def accuracy(outputs: Outputs) -> Estimate:
    """Top-1 accuracy with its 95% interval."""
    return wilson_interval(int((outputs.predictions == outputs.targets).sum()), len(outputs.targets))


def agreement(reference: Outputs, other: Outputs) -> Estimate:
    """How often ``other``'s top-1 class equals ``reference``'s (labels play no part), with its 95% interval."""
    _same_images(reference, other)
    return wilson_interval(int((reference.predictions == other.predictions).sum()), len(reference.targets))


def kl_divergence(reference: Outputs, other: Outputs) -> float:
    """Mean over images of KL(p_reference || p_other) of the softmax probabilities, in nats (0 when equal)."""
    _same_images(reference, other)
    log_p = torch.log_softmax(reference.logits.double(), dim=1)
    log_q = torch.log_softmax(other.logits.double(), dim=1)
    return float((log_p.exp() * (log_p - log_q)).sum(dim=1).mean())


def _same_images(reference: Outputs, other: Outputs) -> None:
    if reference.logits.shape != other.logits.shape or not torch.equal(reference.targets, other.targets):
        raise ValueError(
            f"outputs of shape {tuple(reference.logits.shape)} and {tuple(other.logits.shape)}: "
            "expected both models' outputs on the same images in the same order"
        )


def compare(reference: Outputs, other: Outputs) -> dict:
    """One table row: ``other``'s accuracy (with interval), its agreement with ``reference``, and the KL from it."""
    return {
        "accuracy": accuracy(other),
        "agreement": agreement(reference, other),
        "KL": kl_divergence(reference, other),
    }


def _sqnr_rows(results: dict, key: str) -> list[dict]:
    """Rows (layer, kind, sqnr_db) from numeric-suite results: every logged output that carries SQNRs under ``key``.

    The suite keeps its results in graph order, and so do the rows. A layer is
    named by its module, or by its graph node where it is a function such as
    ``torch.cat``; a layer logged over several batches gets the mean of their SQNRs.
    """
    rows = []
    for result in results.values():
        for entries in result["node_output"].values():
            for entry in entries:
                if entry.get(key):
                    rows.append(
                        {
                            "layer": entry["fqn"] or entry["ref_node_name"],
                            "kind": entry["ref_node_target_type"].rsplit(".", 1)[-1],
                            "sqnr_db": float(torch.stack([torch.as_tensor(v) for v in entry[key]]).mean()),
                        }
                    )
    return rows


@torch.no_grad()
def layer_sqnr(prepared: torch.nn.Module, converted: torch.nn.Module, images: torch.Tensor) -> list[dict]:
    """SQNR (dB) of each quantized layer's output against FP32's, both models run end to end on ``images``.

    ``prepared`` is the FX-prepared (observed, calibrated) model, ``converted``
    its converted INT8 model. PyTorch's numeric suite for FX (``add_loggers``)
    pairs the layers and logs their outputs; a row's SQNR is the error
    accumulated up to that layer, every earlier layer's included (for each
    layer's own error see :func:`layer_sensitivity`). Rows in graph order.
    """
    import torch.ao.ns._numeric_suite_fx as ns
    from torch.ao.ns.fx.utils import compute_sqnr

    a, b = ns.add_loggers("fp32", copy.deepcopy(prepared), "int8", copy.deepcopy(converted), ns.OutputLogger)
    a(images)
    b(images)
    results = ns.extract_logger_info(a, b, ns.OutputLogger, "int8")
    ns.extend_logger_results_with_comparison(results, "fp32", "int8", compute_sqnr, "sqnr")
    return _sqnr_rows(results, "sqnr")


@torch.no_grad()
def layer_sensitivity(
    model: torch.nn.Module,
    example_inputs: tuple,
    calibration: list[torch.Tensor],
    images: torch.Tensor,
    qconfig_mapping=None,
) -> list[dict]:
    """Each layer's own quantization error: SQNR (dB) of its INT8 copy fed the FP32 model's input to it.

    PyTorch's numeric suite for FX (``prepare_n_shadows_model``) wraps every
    quantizable subgraph (a conv with its ReLU, a concatenation, the
    classifier, ...) of the float ``model`` with a quantized shadow copy,
    calibrated on the ``calibration`` batches and converted; running
    ``images`` compares each shadow's output with the float subgraph's on the
    same input, so errors do not accumulate from layer to layer. The lowest
    SQNR marks the layer that is hardest to quantize on its own. Rows in graph order.
    """
    import torch.ao.ns._numeric_suite_fx as ns
    from torch.ao.ns.fx.qconfig_multi_mapping import QConfigMultiMapping
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.backend_config.x86 import get_x86_backend_config

    mapping = get_default_qconfig_mapping("x86") if qconfig_mapping is None else qconfig_mapping
    shadowed = ns.prepare_n_shadows_model(
        copy.deepcopy(model).eval(),
        example_inputs,
        QConfigMultiMapping.from_list_qconfig_mapping([mapping]),
        get_x86_backend_config(),
    )
    for batch in calibration:
        shadowed(batch)
    ns.convert_n_shadows_model(shadowed)
    ns.loggers_set_enabled(shadowed, True)  # prepare leaves them off, so calibration logs nothing
    shadowed(images)
    return _sqnr_rows(ns.extract_results_n_shadows_model(shadowed), "comparisons")


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls, in milliseconds: median and interquartile range (25th to 75th percentile)."""

    times_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def iqr(self) -> tuple[float, float]:
        if len(self.times_ms) < 2:
            return self.times_ms[0], self.times_ms[0]
        low, _, high = statistics.quantiles(self.times_ms, n=4, method="inclusive")
        return low, high

    def __format__(self, spec: str) -> str:
        low, high = self.iqr
        spec = spec or ".1f"
        return f"{self.median:{spec}} ms [{low:{spec}}, {high:{spec}}]"


@torch.no_grad()
def time_in_turns(calls: dict[str, Callable[[], object]], *, repeats: int = 20, warmup: int = 2) -> dict[str, Timing]:
    """Time each zero-argument callable: ``warmup`` untimed calls each, then ``repeats`` rounds, one call each.

    Taking turns call by call, rather than timing one model's repeats and then
    the next's, means a change in the machine's load (another process, CPU
    frequency) hits every model alike, so their ratio stays meaningful.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: Timing(tuple(values)) for name, values in times.items()}


def timing_note() -> str:
    """The line every timing table is printed under: threads and what the numbers are."""
    return (
        f"{torch.get_num_threads()} threads; median of repeated calls taken in turns, [interquartile range]; "
        "times move with the machine and its load, ratios much less"
    )
