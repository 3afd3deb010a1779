"""The course through nbgrader for real: release every notebook, then autograde a right and an empty submission.

A temporary nbgrader course folder is built from the committed notebooks (tagged on the way by
qtutor.assignments, so this passes before and after the committed notebooks carry the metadata);
``nbgrader generate_assignment "*"`` releases all of them, headless. Two notebooks are autograded,
01 and 05 (the fastest to execute, about 4 s each): the notebooks with their solutions must score full
points, the release versions (nothing answered) zero. Needs the ``instructor`` extra (nbgrader).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from qtutor.assignments import exercises, write_course
from qtutor.student import student_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
AUTOGRADED = ["01_uniform_quantization", "05_integer_arithmetic"]
BIN = Path(sys.executable).parent  # nbgrader, and the alembic it runs as a subprocess, live beside this Python


def nbgrader(course: Path, *args: str, timeout: float) -> str:
    """Run ``nbgrader ARGS`` in ``course``; fail the test with its log when it fails."""
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=environment, text=True,
                            capture_output=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"nbgrader {' '.join(args)} exited with {result.returncode}:\n{result.stdout[-3000:]}"
                    f"\n{result.stderr[-5000:]}")
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder with every notebook released by ``nbgrader generate_assignment "*"``."""
    folder = tmp_path_factory.mktemp("course")
    write_course(NOTEBOOKS, folder)
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
    """``make student`` (qtutor.student) and nbgrader's release versions agree cell for cell."""
    for path in NOTEBOOKS:
        release = released(course, path.stem)
        student = student_notebook(nbformat.read(path, as_version=4))
        assert [(c.cell_type, c.source) for c in release.cells] == \
               [(c["cell_type"], c["source"]) for c in student["cells"]], f"{path.name} differs"


def test_autograde_gives_full_points_to_the_solutions_and_zero_to_an_empty_submission(course):
    for stem in AUTOGRADED:
        for student, version in (("solved", tagged_source), ("unanswered", released)):
            folder = course / "submitted" / student / stem
            folder.mkdir(parents=True)
            nbformat.write(version(course, stem), folder / f"{stem}.ipynb")
    nbgrader(course, "autograde", "*", "--force", timeout=900)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "qtutor") as gradebook:
        for stem in AUTOGRADED:
            solved = gradebook.find_submission_notebook(stem, stem, "solved")
            unanswered = gradebook.find_submission_notebook(stem, stem, "unanswered")
            checks = len(exercises(tagged_source(course, stem)))
            assert solved.max_score == unanswered.max_score == checks >= 2
            assert solved.score == checks, f"{stem}: the solutions scored {solved.score} of {checks}"
            assert unanswered.score == 0, f"{stem}: an unanswered notebook scored {unanswered.score}"
