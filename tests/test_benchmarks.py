"""Benchmarks are not tests (nothing here is timed): each one runs at a tiny size so it cannot rot unnoticed."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *arguments) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *map(str, arguments)], capture_output=True, text=True, timeout=600
    )


def test_primitives_writes_its_tables(tmp_path):
    result = run("primitives.py", "--sizes", 1000, "--repeats", 1, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "primitives.json").read_text())
    assert [row["operation"] for row in data["core"]] == ["quantize", "dequantize", "fake_quantize"]
    assert all(row["ratio"] > 0 for row in data["core"]) and len(data["nonuniform"]) == 2
    assert "ratio" in (tmp_path / "primitives.md").read_text()


RUNTIME_VARIANTS = ["ort_fp32", "ort_int8", "openvino_fp32", "openvino_fp32_default", "openvino_int8"]


def test_inference_writes_its_tables(tmp_path):
    result = run(
        "inference.py",
        "--sizes",
        32,
        "--batches",
        2,
        "--repeats",
        1,
        "--small",
        "--variants",
        "fp32",
        "fx_int8",
        *RUNTIME_VARIANTS,
        "--out",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "inference.json").read_text())
    assert [row["variant"] for row in data["latency"]] == ["fp32", "fx_int8", *RUNTIME_VARIANTS]
    files = {row["variant"]: row for row in data["files"]}
    assert files["fp32"]["size vs fp32"] == 1.0 and files["fx_int8"]["size vs fp32"] < 0.35  # INT8 really is smaller
    assert files["ort_fp32"]["file"] == "fp32.onnx" and 0.95 < files["ort_fp32"]["size vs fp32"] < 1.1
    assert files["openvino_fp32"]["size vs fp32"] > 0.95  # its weights stay FP32 (not FP16, OpenVINO's default)
    assert files["ort_int8"]["size vs fp32"] < 0.35 and files["openvino_int8"]["size vs fp32"] < 0.35
    assert data["latency"][0]["speed-up vs fp32"] == 1.0 and all(row["median ms"] > 0 for row in data["latency"])
    assert "accuracy" not in files["fx_int8"]  # the model was trained at 64x64: at 32 only speed and size are measured
    page = (tmp_path / "inference.md").read_text()
    assert "INT8 (TorchScript) file at most 30% of FP32" in page and "run at 32x32 for speed and size only" in page
    assert "a small DenseNet (two blocks of four layers)" in page
    assert "OpenVINO's default inference precision on this CPU is" in page
    assert "no INT8 accuracy was measured on a well-trained FP32 model" in page


def test_fastest_int8_keeps_only_variants_within_half_a_point():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from inference import fastest_int8
    finally:
        sys.path.remove(str(BENCHMARKS))
    latency = [
        {"size": 64, "batch": 1, "variant": v, "median ms": ms, "speed-up vs fp32": 10 / ms}
        for v, ms in (("fp32", 10.0), ("fx_int8", 4.0), ("ort_int8", 3.0), ("openvino_int8", 2.0))
    ]
    files = [
        {"size": 64, "variant": "fp32", "accuracy": 0.99, "accuracy - fp32 (pp)": 0.0},
        {"size": 64, "variant": "fx_int8", "accuracy": 0.99, "accuracy - fp32 (pp)": 0.0},
        {"size": 64, "variant": "ort_int8", "accuracy": 0.987, "accuracy - fp32 (pp)": -0.3},
        {"size": 64, "variant": "openvino_int8", "accuracy": 0.98, "accuracy - fp32 (pp)": -1.0},
    ]
    lines = fastest_int8(latency, files)
    assert lines[0].startswith("- 64px, batch 1: ort_int8 (3.00 ms, 3.33x")  # openvino_int8 is faster but 1 point off
    assert lines[1] == "- more than 0.5 points from FP32, left out: openvino_int8"


def test_inference_reports_a_missed_target():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from inference import targets
    finally:
        sys.path.remove(str(BENCHMARKS))
    latency = [{"size": 224, "batch": 1, "variant": "fx_int8", "speed-up vs fp32": 2.5}]
    files = [
        {"size": 224, "variant": "fp32", "size vs fp32": 1.0, "accuracy": 0.99, "accuracy - fp32 (pp)": 0.0},
        {"size": 224, "variant": "fx_int8", "size vs fp32": 0.28, "accuracy": 0.982, "accuracy - fp32 (pp)": -0.8},
    ]
    lines = targets(latency, files)
    assert [line.split(":")[0] for line in lines] == ["- MISSED", "- met", "- MISSED"]
    files[0]["accuracy"] = 0.66  # an FP32 model that never learned the task: its INT8 difference is not judged
    assert [line.split(":")[0] for line in targets(latency, files)] == ["- MISSED", "- met", "- not judged"]


def test_course_times_each_notebook(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("block = bytearray(50_000_000)")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "00_tiny.ipynb")
    result = run("course.py", "--notebooks", tmp_path / "00_tiny.ipynb", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "course.json").read_text())["notebooks"]
    assert [row["notebook"] for row in rows] == ["00_tiny.ipynb", "total"]
    assert rows[0]["peak MB"] > 50  # the kernel's 50 MB block is counted
    assert rows[1]["wall s"] == pytest.approx(rows[0]["wall s"])


def test_ablations_records_which_run_measured_each_sweep():
    """--only keeps the other sweeps' results and says which command measured which sweep."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from ablations import SWEEPS, runs_after
    finally:
        sys.path.remove(str(BENCHMARKS))
    first = {"command": "python benchmarks/ablations.py", "machine": {"date": "d1"}}
    again = {"command": "python benchmarks/ablations.py --only qat", "sweeps": ["qat"], "date": "d2"}
    runs = runs_after(first, ["qat"], again)
    assert runs == [
        {"command": "python benchmarks/ablations.py", "sweeps": [s for s in SWEEPS if s != "qat"], "date": "d1"},
        again,
    ]
    everything = {"command": "python benchmarks/ablations.py", "sweeps": list(SWEEPS), "date": "d3"}
    assert runs_after({"runs": runs}, list(SWEEPS), everything) == [everything]
    assert runs_after({}, list(SWEEPS), everything) == [everything]
