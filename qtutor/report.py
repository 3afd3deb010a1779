"""Size, latency and accuracy comparisons, as text tables (notebook 06 and ``qtutor --task evaluate``)."""

from __future__ import annotations

import os
import statistics
import time

import torch

__all__ = ["file_size_mb", "latency_ms", "format_table"]


def file_size_mb(path) -> float:
    """Size of a file on disk in megabytes (10**6 bytes)."""
    return os.path.getsize(path) / 1e6


@torch.no_grad()
def latency_ms(model, example: torch.Tensor, *, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``model(example)`` in milliseconds, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        model(example)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def format_table(rows: list[dict], formats: dict[str, str] | None = None) -> str:
    """Rows of dicts as an aligned text table; ``formats`` maps a column to a format spec such as ``".1%"``.

    Text values are shown as they are, whatever the column's format.
    """
    formats = formats or {}
    columns = list(rows[0])
    cells = [[row[c] if isinstance(row[c], str) else format(row[c], formats.get(c, "")) for c in columns]
             for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)
