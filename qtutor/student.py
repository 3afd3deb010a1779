"""Student copies of the notebooks: solutions removed, outputs cleared (``make student``).

Solutions sit between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines
(the nbgrader convention). Each block becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError()`` at the same indentation, so the exercise's check
cell fails until the learner writes an answer.

    python -m qtutor.student notebooks build/student
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

__all__ = ["strip_source", "student_notebook", "write_student_copies", "main"]


def strip_source(source: str) -> str:
    """``source`` with every solution block replaced by a placeholder that raises."""
    lines, kept, inside = source.splitlines(), [], False
    for number, line in enumerate(lines, 1):
        if line.strip() == BEGIN:
            if inside:
                raise ValueError(f"line {number}: {BEGIN} inside another solution block")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            kept += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif line.strip() == END:
            if not inside:
                raise ValueError(f"line {number}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            kept.append(line)
    if inside:
        raise ValueError(f"{BEGIN} without {END}")
    return "\n".join(kept)


def student_notebook(notebook: dict) -> dict:
    """A copy of a notebook (nbformat JSON) without solutions, outputs or execution counts."""
    copy = json.loads(json.dumps(notebook))
    for cell in copy["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = strip_source(source)
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
