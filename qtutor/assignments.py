"""nbgrader metadata for the course's exercises, and an nbgrader course folder built from the notebooks.

Every exercise in the course is a code cell holding a solution between ``### BEGIN SOLUTION`` and
``### END SOLUTION``, followed (as the next code cell) by a cell calling one of
:mod:`qtutor.checks`' ``check_*`` functions. nbgrader needs to be told which cell is which
(without it, ``nbgrader generate_assignment`` stops at "Solution region detected in a
non-solution cell"). :func:`tag_notebook` writes that metadata from the markers alone, so it is
deterministic and running it twice changes nothing:

- the solution cell: ``solution: true, grade: false, locked: false``, grade id
  ``<notebook number>-<exercise>-answer``;
- the check cell: ``grade: true, locked: true``, one point, grade id ``<notebook number>-<exercise>-check``,

where ``<exercise>`` is the name of the check function without ``check_`` (``01-qparams-check``).
Cells that are not exercises are left as they are, so an instructor's own nbgrader cells survive.

    python -m qtutor.assignments notebooks                   # add the metadata to every notebook, in place
    python -m qtutor.assignments --check notebooks           # exit 1 if any notebook lacks it (changes nothing)
    python -m qtutor.assignments --course course notebooks
        # an nbgrader course folder: nbgrader_config.py and source/<notebook>/<notebook>.ipynb (tagged copies),
        # one assignment per notebook, ready for `nbgrader generate_assignment "*"` (``make assignments``)

Introduced for instructors (README, "For instructors"); the student copies of ``make student``
(:mod:`qtutor.student`) are the same as nbgrader's release versions, which tests/test_nbgrader.py checks.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

from qtutor.cli import _Parser as OneLineParser  # a bad command line gets one line and exit code 2
from qtutor.errors import InputError
from qtutor.student import BEGIN, source_text

__all__ = ["exercises", "grade_id_prefix", "tag_notebook", "tag_file", "write_course", "main"]

CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")
POINTS = 1  # each check is worth one point
SCHEMA_VERSION = 3  # nbgrader 0.9's cell metadata schema
COURSE_CONFIG = '''"""nbgrader's configuration for the qtutor course (from python -m qtutor.assignments --course)."""
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "qtutor"
# The course's notebooks import qtutor (installed) and read no files beside them.
c.Execute.timeout = 1800  # seconds per cell when autograding (nbgrader's default, 30, is too short for 06-09)
'''


def grade_id_prefix(path: Path) -> str:
    """``01`` for ``01_uniform_quantization.ipynb``; the whole stem, made id-safe, when it has no number."""
    match = re.match(r"\d+", path.stem)
    return match.group(0) if match else re.sub(r"[^A-Za-z0-9_-]", "_", path.stem)


def exercises(notebook, name: str = "notebook") -> list[tuple[int, int, str]]:
    """``(solution cell, check cell, exercise name)`` for every exercise, in order.

    The check cell is the first code cell after the solution cell and must call a ``check_*``
    function; the exercise is named after it. Raises :class:`InputError` otherwise.
    """
    cells = notebook["cells"]
    code = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code"]
    found, names = [], []
    for position, index in enumerate(code):
        if not any(line.strip() == BEGIN for line in source_text(cells[index]).splitlines()):
            continue
        if position + 1 == len(code):
            raise InputError(
                f"{name}: cell {index} holds a solution but no code cell follows it; "
                "expected a cell calling a qtutor.checks check_* function"
            )
        check = code[position + 1]
        match = CHECK_CALL.search(source_text(cells[check]))
        if match is None:
            raise InputError(
                f"{name}: cell {check}, after the solution in cell {index}, calls no check_* "
                f"function (it starts {source_text(cells[check])[:40]!r}); expected the exercise's check"
            )
        exercise = match.group(1)
        count = names.count(exercise)
        names.append(exercise)
        found.append((index, check, exercise if count == 0 else f"{exercise}-{count + 1}"))
    return found


def tag_notebook(notebook, name: str = "notebook", prefix: str = "nb"):
    """Give every exercise of ``notebook`` (an nbformat node, changed in place) its nbgrader metadata."""
    for solution, check, exercise in exercises(notebook, name):
        notebook.cells[solution].metadata["nbgrader"] = {
            "grade": False,
            "grade_id": f"{prefix}-{exercise}-answer",
            "locked": False,
            "schema_version": SCHEMA_VERSION,
            "solution": True,
            "task": False,
        }
        notebook.cells[check].metadata["nbgrader"] = {
            "grade": True,
            "grade_id": f"{prefix}-{exercise}-check",
            "locked": True,
            "points": POINTS,
            "schema_version": SCHEMA_VERSION,
            "solution": False,
            "task": False,
        }
    return notebook


def _read(path: Path):
    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises JSON, validation and OS errors
        raise InputError(
            f"{path}: not a readable notebook ({error.__class__.__name__}); expected a Jupyter notebook (.ipynb)"
        ) from None


def tag_file(path: Path, target: Path | None = None, *, write: bool = True) -> bool:
    """Tag the notebook at ``path`` and write it to ``target`` (default: in place) if that changes the file.

    Returns whether the file at ``target`` differs (or would differ, with ``write=False``) from the tagged text.
    """
    target = path if target is None else target
    text = nbformat.writes(tag_notebook(_read(path), str(path), grade_id_prefix(path))) + "\n"
    changed = not target.is_file() or target.read_text(encoding="utf-8") != text
    if changed and write:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return changed


def notebooks_in(paths: list[Path]) -> list[Path]:
    """The notebooks named by ``paths`` (folders give their ``*.ipynb``), or :class:`InputError`."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.glob("*.ipynb"))
        elif path.is_file() and path.suffix == ".ipynb":
            found.append(path)
        else:
            raise InputError(f"{path}: not a notebook or a folder; expected a folder of .ipynb files or a .ipynb file")
    if not found:
        raise InputError(f"{' '.join(map(str, paths))}: no notebooks found; expected .ipynb files")
    return found


def write_course(notebooks: list[Path], course: Path) -> list[Path]:
    """An nbgrader course folder: ``nbgrader_config.py`` and one assignment per notebook, each tagged.

    ``source/<stem>/<stem>.ipynb`` for each notebook (replaced: notebooks/ is the source of truth); an
    existing ``nbgrader_config.py`` is kept, with the instructor's changes. Returns the notebooks written.
    """
    course.mkdir(parents=True, exist_ok=True)
    if not (course / "nbgrader_config.py").exists():
        (course / "nbgrader_config.py").write_text(COURSE_CONFIG)
    written = []
    for path in notebooks:
        target = course / "source" / path.stem / path.name
        tag_file(path, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m qtutor.assignments [--check | --course DIR] NOTEBOOK_OR_FOLDER...``; 2 on bad input."""
    parser = OneLineParser(prog="python -m qtutor.assignments", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing; exit 1 if any notebook lacks metadata")
    mode.add_argument("--course", type=Path, help="write an nbgrader course folder here instead of tagging in place")
    args = parser.parse_args(argv)
    try:
        notebooks = notebooks_in(args.paths)
        if args.course:
            for path in write_course(notebooks, args.course):
                print(f"wrote {path}")
            return 0
        changed = [path for path in notebooks if tag_file(path, write=not args.check)]
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check:
        for path in changed:
            print(f"{path}: exercises without their nbgrader metadata (run python -m qtutor.assignments on it)")
        return 1 if changed else 0
    for path in notebooks:
        print(f"{'tagged' if path in changed else 'unchanged'} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
