"""The whole course, timed: every notebook executed once, one at a time, with its wall time and peak memory.

    python benchmarks/course.py [--notebooks notebooks/0*.ipynb] [--out benchmarks/results]

Each notebook runs top to bottom in a fresh kernel, in its own process, in memory (the committed files are not
touched), as a learner's first run does: the course model ships in data/models/, so nothing is trained first.
Peak memory is the kernel's largest resident set size. Writes course.md and course.json into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, command_line, describe, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 600  # the course's target: every notebook in under 10 minutes


def run_one(notebook: Path) -> dict:
    """Execute ``notebook`` in this process with a fresh kernel; the kernel's peak memory comes from rusage."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        book, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the kernel, a child of this process
    cells = sum(cell.cell_type == "code" for cell in book.cells)
    return {"notebook": notebook.name, "code cells": cells, "wall s": seconds, "peak MB": peak_kb * 1024 / 1e6}


def run_in_subprocess(notebook: Path, environment: dict) -> dict:
    """``run_one`` in a new Python process, so each notebook's peak memory is its own."""
    result = subprocess.run(
        [sys.executable, __file__, "--one", str(notebook)], env=environment, text=True, capture_output=True
    )
    if result.returncode != 0:
        sys.exit(f"{notebook.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--notebooks", type=Path, nargs="+", default=sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one notebook, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    rows = []
    for notebook in args.notebooks:
        print(f"executing {notebook.name}", flush=True)
        rows.append(run_in_subprocess(notebook, dict(os.environ)))
    total = sum(row["wall s"] for row in rows)
    rows.append(
        {
            "notebook": "total",
            "code cells": sum(row["code cells"] for row in rows),
            "wall s": total,
            "peak MB": max(row["peak MB"] for row in rows),
        }
    )
    from qtutor.tables import text_table

    info = machine()
    verdict = "met" if total < BUDGET_S else "MISSED"
    page = "\n".join(
        [
            "# The course, timed",
            "",
            f"Machine: {describe(info)}.",
            f"Command: `{command_line()}`",
            "",
            "Each notebook in a fresh kernel, one at a time; peak MB is the kernel's largest resident set.",
            "",
            "```",
            text_table(rows, {"wall s": ".1f", "peak MB": ".0f"}),
            "```",
            "",
            f"- {verdict}: the whole course under {BUDGET_S // 60} minutes ({total / 60:.1f} min)",
            "",
        ]
    )
    write_results(args.out, "course", page, {"machine": info, "command": command_line(), "notebooks": rows})


if __name__ == "__main__":
    main()
