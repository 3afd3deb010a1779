"""What every benchmark shares: a description of the machine, timing columns, writing results.

Timing itself is ``qtutor.metrics.time_in_turns``, the helper the notebooks and the command line use.
"""

from __future__ import annotations

import datetime
import json
import platform
import shlex
import sys
from pathlib import Path

import torch

from qtutor.hardware import cpu_name, extensions
from qtutor.metrics import Timing

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """Where and how a benchmark ran: CPU, its matrix extensions, threads, library versions, date."""
    return {
        "cpu": cpu_name(),
        "extensions": extensions(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    }


def describe(info: dict) -> str:
    """One line for the top of a results table."""
    return (
        f"{info['cpu']} ({', '.join(info['extensions']) or 'no vector extensions found'}), "
        f"{info['threads']} threads, torch {info['torch']}, Python {info['python']}, {info['date']}"
    )


def command_line() -> str:
    """The command that is running, as a person would type it."""
    return "python " + shlex.join([str(Path(sys.argv[0]).as_posix()), *sys.argv[1:]])


def timing_row(timing: Timing) -> dict:
    """A timing's median and interquartile range in milliseconds, as table columns."""
    low, high = timing.iqr
    return {"median ms": timing.median, "IQR ms": high - low}


def write_results(out: Path, name: str, markdown: str, data: dict) -> None:
    """Write ``name.md`` and ``name.json`` into ``out`` and print the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    print(markdown)
