"""qtutor's quantize/dequantize/fake_quantize against PyTorch's kernels, and the non-uniform quantizers' cost.

    python benchmarks/primitives.py [--sizes 1000000 16000000] [--repeats 7] [--out benchmarks/results]

Every ratio is qtutor's median time over PyTorch's median time, measured side by side in the same process
(1.0 = as fast; 3.0 = three times slower). Threads are pinned with torch.set_num_threads and stated. Writes
primitives.md and primitives.json into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision

from qtutor import dequantize, fake_quantize, qparams, quantize
from qtutor.metrics import time_in_turns
from qtutor.nonuniform import kmeans_codebook, log_fake_quantize
from qtutor.session import quiet_deprecations
from qtutor.tables import text_table

from common import RESULTS, command_line, describe, machine, write_results


def core_rows(size: int, repeats: int) -> list[dict]:
    """quantize / dequantize / fake_quantize, qtutor against PyTorch, on ``size`` float32 values."""
    x = torch.randn(size, generator=torch.Generator().manual_seed(0))
    scale, zero_point = qparams(x.min(), x.max())
    s, z = scale.item(), zero_point.item()
    reference = torch.quantize_per_tensor(x, s, z, torch.quint8)
    codes = reference.int_repr()
    pairs = {
        "quantize": (lambda: quantize(x, scale, zero_point), lambda: torch.quantize_per_tensor(x, s, z, torch.quint8)),
        "dequantize": (lambda: dequantize(codes, scale, zero_point), lambda: reference.dequantize()),
        "fake_quantize": (
            lambda: fake_quantize(x, scale, zero_point),
            lambda: torch.fake_quantize_per_tensor_affine(x, s, z, 0, 255),
        ),
    }
    rows = []
    for name, (ours, theirs) in pairs.items():
        timings = time_in_turns({"qtutor": ours, "PyTorch": theirs}, repeats=repeats, warmup=1)
        ours_ms, theirs_ms = timings["qtutor"].median, timings["PyTorch"].median
        rows.append(
            {
                "operation": name,
                "elements": size,
                "qtutor ms": ours_ms,
                "PyTorch ms": theirs_ms,
                "ratio": ours_ms / theirs_ms,
            }
        )
    return rows


def nonuniform_rows(repeats: int) -> list[dict]:
    """k-means (4 bits) and logarithmic (4 bits) quantizers on DenseNet-121's largest weight tensor."""
    weights = max(
        (p.detach() for p in torchvision.models.densenet121(weights=None).parameters()), key=lambda p: p.numel()
    )
    rows = []
    calls = {
        "kmeans 4-bit, 50 iterations": lambda: kmeans_codebook(weights, bits=4),
        "log 4-bit": lambda: log_fake_quantize(weights, bits=4),
    }
    for name, timing in time_in_turns(calls, repeats=max(1, repeats // 3), warmup=1).items():
        rows.append({"quantizer": name, "elements": weights.numel(), "ms": timing.median})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 16_000_000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_deprecations()
    core = [row for size in args.sizes for row in core_rows(size, args.repeats)]
    other = nonuniform_rows(args.repeats)
    info = machine()
    markdown = "\n".join(
        [
            "# qtutor primitives against PyTorch",
            "",
            f"Machine: {describe(info)}.",
            f"Command: `{command_line()}`",
            "",
            f"Median of {args.repeats} calls after a warm-up, qtutor's and PyTorch's taken in turns; ratio = qtutor / "
            "PyTorch, measured in the same process.",
            "",
            "```",
            text_table(core, {"qtutor ms": ".2f", "PyTorch ms": ".2f", "ratio": ".2f"}),
            "```",
            "",
            "```",
            text_table(other, {"ms": ".1f"}),
            "```",
            "",
        ]
    )
    write_results(
        args.out,
        "primitives",
        markdown,
        {"machine": info, "command": command_line(), "core": core, "nonuniform": other},
    )


if __name__ == "__main__":
    main()
