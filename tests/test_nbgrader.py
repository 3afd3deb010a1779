"""The course through nbgrader for real: release every notebook, then autograde a right and an empty submission.

A temporary nbgrader course folder is built from the committed notebooks (tagged on the way by
qtutor.assignments, so this passes before and after the committed notebooks carry the metadata);
``nbgrader generate_assignment "*"`` releases all of them, headless. Two notebooks are autograded,
01 and 05 (the fastest to execute, about 4 s each): the notebooks with their solutions must score full
points, the release versions (nothing answered) zero. One of them also goes the way a shared hub's class
would: nbgrader's exchange (a folder here) hands it out, the student fetches, answers and submits it, and
the instructor collects it. Notebook 01's second check carries the hidden tests that README's instructors'
section shows, taken from README itself: released without them, run by autograde. Needs the ``instructor``
extra (nbgrader).
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_student import AUTOGRADED  # tests/ is on sys.path: pytest's default import mode, no __init__.py there

from qtutor.assignments import exercises, write_course
from qtutor.student import student_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BIN = Path(sys.executable).parent  # nbgrader, and the alembic it runs as a subprocess, live beside this Python


def nbgrader(folder: Path, *args: str, timeout: float = 120, **environment: str) -> str:
    """Run ``nbgrader ARGS`` in ``folder``; fail the test with its log when it fails."""
    environment = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **environment,
    }
    result = subprocess.run(
        [str(BIN / "nbgrader"), *args], cwd=folder, env=environment, text=True, capture_output=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(
            f"nbgrader {' '.join(args)} exited with {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-5000:]}"
        )
    return result.stdout + result.stderr


HIDDEN_IN = ("01_uniform_quantization", "01-quantize-check")  # the check cell README's example extends


def readme_hidden_tests() -> str:
    """The check cell with hidden tests that README shows instructors (its Python block holding the markers)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if "### BEGIN HIDDEN TESTS" in b]
    return block.rstrip("\n")


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder with every notebook released by ``nbgrader generate_assignment "*"``."""
    folder = tmp_path_factory.mktemp("course")
    write_course(NOTEBOOKS, folder)
    stem, grade_id = HIDDEN_IN
    source = folder / "source" / stem / f"{stem}.ipynb"
    book = nbformat.read(source, as_version=4)
    (cell,) = [c for c in book.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    cell.source = readme_hidden_tests()
    nbformat.write(book, source)
    nbgrader(folder, "generate_assignment", "*", "--force", timeout=600)
    return folder


def released(course: Path, stem: str):
    return nbformat.read(course / "release" / stem / f"{stem}.ipynb", as_version=4)


def tagged_source(course: Path, stem: str):
    return nbformat.read(course / "source" / stem / f"{stem}.ipynb", as_version=4)


def test_every_notebook_is_released_without_solutions_with_checks_locked(course):
    for path in NOTEBOOKS:
        release = released(course, path.stem)
        text = nbformat.writes(release)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text
        pairs = exercises(tagged_source(course, path.stem), path.name)
        for answer, check in ((release.cells[a], release.cells[c]) for a, c, _ in pairs):
            assert "raise NotImplementedError()" in answer.source
            assert check.metadata["editable"] is False and check.metadata["deletable"] is False
        assert all(not cell.get("outputs") for cell in release.cells if cell.cell_type == "code")


def test_make_student_gives_the_same_cells_as_nbgrader(course):
    """``make student`` (qtutor.student) and nbgrader's release versions agree cell for cell, hidden tests too."""
    assert "### BEGIN HIDDEN TESTS" in nbformat.writes(tagged_source(course, HIDDEN_IN[0]))
    for path in NOTEBOOKS:
        release = released(course, path.stem)
        student = student_notebook(tagged_source(course, path.stem))
        assert [(c.cell_type, c.source) for c in release.cells] == [
            (c["cell_type"], c["source"]) for c in student["cells"]
        ], f"{path.name} differs"


def hand_out_and_collect(course: Path, stem: str, tmp_path: Path) -> str:
    """Release ``stem`` to an exchange folder, fetch it as a student, answer it, submit it, collect it.

    Returns the student id nbgrader recorded (the Unix user running the test).
    """
    exchange, home = tmp_path / "exchange", tmp_path / "student"
    exchange.mkdir(mode=0o777)
    home.mkdir()
    exchange_root = f"--Exchange.root={exchange}"
    nbgrader(course, "release_assignment", stem, exchange_root)
    student = {"JUPYTER_DATA_DIR": str(tmp_path / "student-data")}  # the student's nbgrader cache
    nbgrader(home, "fetch_assignment", stem, "--course", "qtutor", exchange_root, **student)
    fetched = home / stem / f"{stem}.ipynb"
    assert nbformat.read(fetched, as_version=4) == released(course, stem), "the student did not get the release"
    nbformat.write(tagged_source(course, stem), fetched)  # the student's answers: the solutions
    nbgrader(home, "submit", stem, "--course", "qtutor", exchange_root, **student)
    nbgrader(course, "collect", stem, exchange_root)
    student_id = pwd.getpwuid(os.getuid()).pw_name  # nbgrader's student id on a hub: the Unix user name
    assert (course / "submitted" / student_id / stem / f"{stem}.ipynb").is_file(), "collect brought nothing"
    return student_id


def test_autograde_gives_full_points_to_the_solutions_and_zero_to_an_empty_submission(
    course, tmp_path, only_checks_fail
):
    """Notebook 01's solutions come through the exchange, 05's are placed in submitted/ directly.

    The unanswered submissions are the student copies (the release), executed by autograde: only their checks may
    fail (tests/test_student.py leaves these two to this test).
    """
    submissions = {("unanswered", stem): released for stem in AUTOGRADED} | {("solved", AUTOGRADED[1]): tagged_source}
    for (student, stem), version in submissions.items():
        folder = course / "submitted" / student / stem
        folder.mkdir(parents=True)
        nbformat.write(version(course, stem), folder / f"{stem}.ipynb")
    exchanged = hand_out_and_collect(course, AUTOGRADED[0], tmp_path)
    solved = {AUTOGRADED[0]: exchanged, AUTOGRADED[1]: "solved"}
    nbgrader(course, "autograde", "*", "--force", timeout=900)
    stem = HIDDEN_IN[0]
    graded = nbformat.read(course / "autograded" / solved[stem] / stem / f"{stem}.ipynb", as_version=4)
    assert "### BEGIN HIDDEN TESTS" in nbformat.writes(graded), "autograde did not run the hidden tests"
    for stem in AUTOGRADED:
        unanswered = nbformat.read(course / "autograded" / "unanswered" / stem / f"{stem}.ipynb", as_version=4)
        only_checks_fail(unanswered, {check for _, check, _ in exercises(tagged_source(course, stem))})
    from nbgrader.api import Gradebook  # here, not at the top: every worker imports this file, one runs it

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "qtutor") as gradebook:
        for stem in AUTOGRADED:
            checks = len(exercises(tagged_source(course, stem)))
            scores = {
                student: gradebook.find_submission_notebook(stem, stem, student)
                for student in ("unanswered", solved[stem])
            }
            assert all(notebook.max_score == checks >= 2 for notebook in scores.values())
            unanswered = scores["unanswered"].score
            assert unanswered == 0, f"{stem}: an unanswered notebook scored {unanswered}"
            for student in scores.keys() - {"unanswered"}:
                assert scores[student].score == checks, f"{stem}: {student}'s solutions scored {scores[student].score}"
