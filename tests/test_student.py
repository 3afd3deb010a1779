"""Student copies: solutions removed, and every exercise check fails on the stripped notebook."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from qtutor.student import BEGIN, END, strip_source, student_notebook, write_student_copies

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# Notebooks 00-05 each have at least two exercises (issue 3); a student copy is executed only where solutions exist.
CONCEPT_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] in {"00", "01", "02", "03", "04", "05"}]
# Notebooks 10 (deployment, issue 14) and 11 (large models, issue 15) have exercises too.
EXERCISE_NOTEBOOKS = CONCEPT_NOTEBOOKS + [p for p in NOTEBOOKS if p.name.startswith(("10_", "11_"))]
WITH_EXERCISES = [p for p in NOTEBOOKS if BEGIN in p.read_text()]


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


def test_notebook_11_is_among_those_with_exercises():
    assert [p.name for p in EXERCISE_NOTEBOOKS if p.name.startswith("11_")] == ["11_large_models.ipynb"]
    assert EXERCISE_NOTEBOOKS[-1] in WITH_EXERCISES


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
def test_student_copy_has_no_solutions_and_its_checks_fail(path, tmp_path):
    original = json.loads(path.read_text())
    notebook = student_notebook(original)
    text = json.dumps(notebook)
    assert "BEGIN SOLUTION" not in text and "raise NotImplementedError()" in text
    assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")
    node = nbformat.from_dict(notebook)
    NotebookClient(node, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = {i for i, cell in enumerate(node.cells) if cell.cell_type == "code"
              and any(o.output_type == "error" for o in cell.outputs)}
    checks = {check for _, check in exercise_cells(original)}
    assert checks and errors == checks, "only the exercise checks may fail in a student copy"
    for index in checks:
        error = next(o for o in node.cells[index].outputs if o.output_type == "error")
        assert error.ename == "AssertionError" and "not answered yet" in error.evalue


def test_write_student_copies(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.ipynb").write_text(json.dumps(nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(f"x = 1\n{BEGIN}\nx = 2\n{END}")])))
    written = write_student_copies(source, tmp_path / "out")
    assert [p.name for p in written] == ["a.ipynb"]
    assert "x = 2" not in written[0].read_text()
