"""Student copies: solutions removed, and every exercise check fails on the stripped notebook."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from qtutor.student import BEGIN, END, strip_source, student_notebook, write_student_copies

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CONCEPT_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] in {"00", "01", "02", "03", "04", "05"}]
# Every notebook has at least two exercises.
EXERCISE_NOTEBOOKS = NOTEBOOKS
WITH_EXERCISES = [p for p in NOTEBOOKS if BEGIN in p.read_text()]
# Student copies are executed where that takes seconds (00-05, 11), except the two that tests/test_nbgrader.py
# autogrades: its unanswered submissions are the same copies (nbgrader's release, checked cell for cell there),
# executed, and it makes the same assertion on them. Running 06-10 again would double the test run (minutes each);
# their checks are fed right, wrong and missing answers directly in tests/test_checks.py.
AUTOGRADED = ["01_uniform_quantization", "05_integer_arithmetic"]
EXECUTED = [
    p for p in WITH_EXERCISES if (p in CONCEPT_NOTEBOOKS or p.name.startswith("11_")) and p.stem not in AUTOGRADED
]


def test_strip_source_keeps_indentation_and_the_rest():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\nprint(f)"
    assert strip_source(source) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nprint(f)"


def test_strip_source_removes_hidden_tests_with_their_markers():
    source = "check_f(f)\n### BEGIN HIDDEN TESTS\nassert f(2) == 3\n### END HIDDEN TESTS\n"
    assert strip_source(source) == "check_f(f)\n"


@pytest.mark.parametrize("source", [f"{BEGIN}\nx = 1", f"x = 1\n{END}", f"{BEGIN}\n{BEGIN}\n{END}"])
def test_strip_source_rejects_unbalanced_markers(source):
    with pytest.raises(ValueError):
        strip_source(source)


def exercise_cells(notebook):
    """Indices of (solution cell, check cell) pairs: a check cell is the code cell right after a solution."""
    code = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"]
    pairs = []
    for position, index in enumerate(code[:-1]):
        if BEGIN in "".join(notebook["cells"][index]["source"]):
            pairs.append((index, code[position + 1]))
    return pairs


def test_the_six_concept_notebooks_are_there():
    assert len(CONCEPT_NOTEBOOKS) == 6


def test_every_notebook_with_exercises_is_stripped_or_executed():
    assert set(EXERCISE_NOTEBOOKS) <= set(WITH_EXERCISES) and "11_large_models.ipynb" in {p.name for p in EXECUTED}


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=[p.stem for p in EXERCISE_NOTEBOOKS])
def test_every_notebook_has_two_exercises_with_checks(path):
    notebook = json.loads(path.read_text())
    pairs = exercise_cells(notebook)
    assert len(pairs) >= 2
    for _, check in pairs:
        source = "".join(notebook["cells"][check]["source"])
        outputs = "".join("".join(o.get("text", "")) for o in notebook["cells"][check]["outputs"])
        assert source.startswith("check_") and "passed" in outputs


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=[p.stem for p in WITH_EXERCISES])
def test_student_copy_has_no_solutions_and_no_outputs(path):
    original = json.loads(path.read_text())
    notebook = student_notebook(original)
    text = json.dumps(notebook)
    assert "BEGIN SOLUTION" not in text and text.count("raise NotImplementedError()") >= len(exercise_cells(original))
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_student_copy_runs_and_only_its_checks_fail(path, only_checks_fail):
    original = json.loads(path.read_text())
    node = nbformat.from_dict(student_notebook(original))
    NotebookClient(
        node,
        timeout=300,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
        shutdown_kernel="immediate",  # every cell has run: the kernel is killed rather than asked (0.7 s saved)
    ).execute()
    only_checks_fail(node, {check for _, check in exercise_cells(original)})


def test_write_student_copies(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.ipynb").write_text(
        json.dumps(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"x = 1\n{BEGIN}\nx = 2\n{END}")]))
    )
    written = write_student_copies(source, tmp_path / "out")
    assert [p.name for p in written] == ["a.ipynb"]
    assert "x = 2" not in written[0].read_text()
