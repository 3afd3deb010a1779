"""What every benchmark shares: timing with warm-up, a description of the machine, writing results."""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cpu_name() -> str:
    """The CPU's model name, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """Where and how a benchmark ran: CPU, its matrix extensions, threads, library versions, date."""
    extensions = sorted(flag for flag in cpu_flags()
                        if flag in {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                                    "amx_tile", "amx_int8", "amx_bf16", "amx_fp16"})
    return {"cpu": cpu_name(), "extensions": extensions, "threads": torch.get_num_threads(),
            "torch": torch.__version__.split("+")[0], "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def describe(info: dict) -> str:
    """One line for the top of a results table."""
    return (f"{info['cpu']} ({', '.join(info['extensions']) or 'no vector extensions found'}), "
            f"{info['threads']} threads, torch {info['torch']}, Python {info['python']}, {info['date']}")


def command_line() -> str:
    """The command that is running, as a person would type it."""
    return "python " + shlex.join([str(Path(sys.argv[0]).as_posix()), *sys.argv[1:]])


def time_once(function) -> float:
    """Seconds one call of ``function()`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def timed_runs(function, repeats: int, *, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls of ``function()``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    return [time_once(function) for _ in range(repeats)]


def median_seconds(function, repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` runs after one untimed warm-up."""
    return statistics.median(timed_runs(function, repeats))


def spread(times: list[float]) -> dict:
    """Median and interquartile range (25th to 75th percentile) of a list of times, in milliseconds."""
    milliseconds = sorted(t * 1e3 for t in times)
    if len(milliseconds) < 2:
        return {"median ms": milliseconds[0], "IQR ms": 0.0}
    low, _, high = statistics.quantiles(milliseconds, n=4, method="inclusive")
    return {"median ms": statistics.median(milliseconds), "IQR ms": high - low}


def write_results(out: Path, name: str, markdown: str, data: dict) -> None:
    """Write ``name.md`` and ``name.json`` into ``out`` and print the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(markdown)
