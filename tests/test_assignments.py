"""nbgrader metadata from the exercise markers: stable ids, idempotent, bad input named (qtutor.assignments)."""

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from qtutor.assignments import exercises, main, tag_file, tag_notebook
from qtutor.errors import InputError
from qtutor.student import BEGIN, END

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def notebook(*sources, markdown_between=False):
    """A notebook of code cells (a markdown cell before each when ``markdown_between``)."""
    cells = []
    for source in sources:
        if markdown_between:
            cells.append(nbformat.v4.new_markdown_cell("Some prose."))
        cells.append(nbformat.v4.new_code_cell(source))
    return nbformat.v4.new_notebook(cells=cells)


SOLUTION = f"def f(x):\n    {BEGIN}\n    return x\n    {END}"


def test_solution_and_check_cells_get_their_metadata():
    book = tag_notebook(
        notebook("import torch", SOLUTION, "check_quantize(f)", "print(1)", markdown_between=True), prefix="01"
    )
    answer, check = book.cells[3].metadata["nbgrader"], book.cells[5].metadata["nbgrader"]
    assert answer == {
        "grade": False,
        "grade_id": "01-quantize-answer",
        "locked": False,
        "schema_version": 3,
        "solution": True,
        "task": False,
    }
    assert check == {
        "grade": True,
        "grade_id": "01-quantize-check",
        "locked": True,
        "points": 1,
        "schema_version": 3,
        "solution": False,
        "task": False,
    }
    assert all("nbgrader" not in cell.metadata for i, cell in enumerate(book.cells) if i not in (3, 5))


def test_ids_stay_unique_when_a_check_is_used_twice():
    book = tag_notebook(notebook(SOLUTION, "check_qparams(f)", SOLUTION, "check_qparams(f)"), prefix="02")
    ids = [cell.metadata["nbgrader"]["grade_id"] for cell in book.cells]
    assert ids == ["02-qparams-answer", "02-qparams-check", "02-qparams-2-answer", "02-qparams-2-check"]


def test_other_nbgrader_cells_are_left_alone():
    book = notebook(SOLUTION, "check_qparams(f)", "assert True")
    mine = {"grade": True, "grade_id": "hidden", "locked": True, "points": 3, "schema_version": 3, "solution": False}
    book.cells[2].metadata["nbgrader"] = dict(mine)
    assert tag_notebook(book).cells[2].metadata["nbgrader"] == mine


@pytest.mark.parametrize(
    "sources, expected",
    [
        ((SOLUTION,), "no code cell follows it"),
        ((SOLUTION, "print(f(1))"), r"calls no check_\* function"),
    ],
)
def test_an_exercise_without_its_check_is_refused(sources, expected):
    with pytest.raises(InputError, match=expected):
        exercises(notebook(*sources), "x.ipynb")


def test_tagging_is_idempotent_and_writes_only_on_change(tmp_path):
    path = tmp_path / "03_demo.ipynb"
    path.write_text(nbformat.writes(notebook(SOLUTION, "check_lloyd_step(f)")) + "\n")
    assert tag_file(path) is True
    first = path.read_bytes()
    assert tag_file(path) is False and path.read_bytes() == first
    assert json.loads(first)["cells"][1]["metadata"]["nbgrader"]["grade_id"] == "03-lloyd_step-check"


def test_the_course_is_tagged_the_same_way_twice(tmp_path):
    """The tool on copies of every committed notebook: the second run changes no byte."""
    copies = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", copies)
    assert main([str(copies)]) == 0
    tagged = {path.name: path.read_bytes() for path in copies.glob("*.ipynb")}
    assert main([str(copies)]) == 0 and main(["--check", str(copies)]) == 0
    assert tagged == {path.name: path.read_bytes() for path in copies.glob("*.ipynb")}
    for path in copies.glob("*.ipynb"):
        original, book = nbformat.read(ROOT / "notebooks" / path.name, 4), nbformat.read(path, 4)
        assert [c.source for c in original.cells] == [c.source for c in book.cells], "sources must not change"
        assert len([c for c in book.cells if "nbgrader" in c.metadata]) == 2 * len(exercises(book))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_carry_nbgrader_metadata(path):
    """Fails until `python -m qtutor.assignments notebooks` has been run on the committed notebooks."""
    assert tag_file(path, write=False) is False, (
        f"{path.name}: exercises without nbgrader metadata; run `python -m qtutor.assignments notebooks`"
    )


def test_check_mode_reports_untagged_notebooks_without_writing(tmp_path, capsys):
    path = tmp_path / "a.ipynb"
    text = nbformat.writes(notebook(SOLUTION, "check_qparams(f)")) + "\n"
    path.write_text(text)
    assert main(["--check", str(path)]) == 1
    assert path.read_text() == text and "a.ipynb: exercises without their nbgrader metadata" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("missing", None, "missing: not a notebook or a folder"),
        ("empty", "folder", "no notebooks found"),
        ("bad.ipynb", "{not json", "bad.ipynb: not a readable notebook"),
        (
            "b.ipynb",
            nbformat.writes(notebook(SOLUTION)),
            "b.ipynb: cell 0 holds a solution but no code cell follows it",
        ),
    ],
)
def test_bad_input_gets_one_line_and_exit_code_2(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    assert main([str(path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ") and expected in error


def test_course_folder_has_one_tagged_assignment_per_notebook(tmp_path):
    source = tmp_path / "nb"
    source.mkdir()
    (source / "04_x.ipynb").write_text(nbformat.writes(notebook(SOLUTION, "check_assign_nearest(f)")))
    assert main(["--course", str(tmp_path / "course"), str(source)]) == 0
    copy = nbformat.read(tmp_path / "course" / "source" / "04_x" / "04_x.ipynb", 4)
    assert copy.cells[1].metadata["nbgrader"]["grade_id"] == "04-assign_nearest-check"
    assert 'course_id = "qtutor"' in (tmp_path / "course" / "nbgrader_config.py").read_text()


@pytest.mark.parametrize("argv", [[], ["--check", "--course", "x", "notebooks"]])
def test_a_bad_command_line_gets_one_line_and_exit_code_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.count("\n") == 1 and "error:" in error
