"""Installed from a wheel, qtutor works and says how to get the course's data, which ships with the repository.

The digits (20 MB in 5,000 files) and the course model (28 MB) stay out of the package: a clone installed with
`pip install -e .` finds them beside it, any other install where QTUTOR_DATA points.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qtutor import data
from qtutor.errors import MissingDataError

ROOT = Path(__file__).resolve().parents[1]

# Run from the unpacked wheel alone: the course's data and the repository are nowhere on the path. `import qtutor`
# loads no PyTorch (the command line answers --help and bad flags at once); the core API arrives on first use.
IMPORT_FROM_WHEEL = """
import sys
sys.path.insert(0, sys.argv[1])
import qtutor
assert qtutor.__file__.startswith(sys.argv[1]), qtutor.__file__
assert "torch" not in sys.modules, "import qtutor loaded PyTorch"
import torch
print(qtutor.quantize(torch.tensor([0.5]), 0.25, 0).tolist())  # the core needs no data
import qtutor.data, qtutor.errors
try:
    qtutor.data.course_data()
except qtutor.errors.MissingDataError as error:
    print(error)
"""


def test_a_wheel_ships_no_data_and_says_how_to_get_it(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    (source / "qtutor").mkdir()
    for path in (ROOT / "qtutor").glob("*.py"):
        (source / "qtutor" / path.name).write_bytes(path.read_bytes())
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("qtutor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "qtutor/_validate.py" in names and not any(name.startswith("data/") or ".png" in name for name in names)
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "QTUTOR_DATA")}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_FROM_WHEEL, str(tmp_path / "site")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    codes, message = result.stdout.splitlines()
    assert codes == "[2]"
    assert message.startswith(f"{tmp_path / 'site' / 'data'}: the course's data folder is not there")
    assert "pip install -e ." in message and "QTUTOR_DATA" in message


def test_qtutor_data_points_at_a_data_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("QTUTOR_DATA", str(tmp_path))
    assert data._data_dir() == tmp_path
    monkeypatch.delenv("QTUTOR_DATA")
    assert data._data_dir() == ROOT / "data" == data.DATA_DIR  # a clone: data/ beside the package


def test_the_command_line_says_so_in_one_line(monkeypatch, tmp_path, capsys):
    from qtutor.cli import main

    monkeypatch.setattr(data, "DATA_DIR", tmp_path / "nowhere")
    with pytest.raises(MissingDataError, match="nowhere: the course's data folder is not there"):
        data.bundled_stats()
    assert main(["--task", "train", "--dst_model", str(tmp_path / "model.pth")]) == 2
    assert capsys.readouterr().err.startswith("qtutor: error: ") and not (tmp_path / "model.pth").exists()
