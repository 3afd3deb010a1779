"""Student copies of the notebooks: solutions removed, outputs cleared (``make student``).

Solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines
(the nbgrader convention). Each block becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError()`` at the same indentation, so the exercise's check
cell fails until the learner writes an answer. An instructor's hidden tests, between
``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``, are removed with their markers.
The code cells come out as nbgrader's release versions of the same notebooks
(``nbgrader generate_assignment``; tests/test_nbgrader.py compares them), without
needing nbgrader, its database or a course folder.

    python -m qtutor.student notebooks build/student
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"

__all__ = ["source_text", "strip_source", "student_notebook", "write_student_copies", "main"]


def source_text(cell) -> str:
    """A cell's source as one string (notebook JSON may hold it as a list of lines)."""
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _replace_blocks(source: str, begin: str, end: str, placeholder: list[str]) -> str:
    """``source`` with every block from a ``begin`` line to an ``end`` line replaced by ``placeholder``.

    The placeholder lines keep the ``begin`` line's indentation; lines are split on newlines only,
    as nbgrader does, so a trailing newline survives.
    """
    kept, inside = [], False
    for number, line in enumerate(source.split("\n"), 1):
        if line.strip() == begin:
            if inside:
                raise ValueError(f"line {number}: {begin} inside another block")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            kept += [indent + text for text in placeholder]
        elif line.strip() == end:
            if not inside:
                raise ValueError(f"line {number}: {end} without {begin}")
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise ValueError(f"{begin} without {end}")
    return "\n".join(kept)


def strip_source(source: str) -> str:
    """``source`` with every solution block replaced by a placeholder that raises, and hidden tests removed."""
    source = _replace_blocks(source, BEGIN, END, ["# YOUR CODE HERE", "raise NotImplementedError()"])
    return _replace_blocks(source, BEGIN_HIDDEN, END_HIDDEN, [])


def student_notebook(notebook: dict) -> dict:
    """A copy of a notebook (nbformat JSON) without solutions, outputs or execution counts."""
    copy = json.loads(json.dumps(notebook))
    for cell in copy["cells"]:
        if cell["cell_type"] != "code":
            continue
        cell["source"] = strip_source(source_text(cell))
        cell["outputs"] = []
        cell["execution_count"] = None
    copy.get("metadata", {}).pop("widgets", None)
    return copy


def write_student_copies(source_dir: Path, target_dir: Path) -> list[Path]:
    """Write a student copy of every ``*.ipynb`` in ``source_dir`` into ``target_dir``."""
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source_dir.glob("*.ipynb")):
        target = target_dir / path.name
        notebook = student_notebook(json.loads(path.read_text()))
        target.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m qtutor.student SOURCE_DIR TARGET_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m qtutor.student SOURCE_DIR TARGET_DIR", file=sys.stderr)
        return 2
    source, target = Path(args[0]), Path(args[1])
    if not source.is_dir():
        print(f"error: {source} is not a folder of notebooks", file=sys.stderr)
        return 2
    for path in write_student_copies(source, target):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
