"""deploy/: the Zero to JupyterHub values are sized from the measured course, and say what a class needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = yaml.safe_load((ROOT / "deploy" / "z2jh-values.yaml").read_text())
COURSE = json.loads((ROOT / "benchmarks" / "results" / "course.json").read_text())["notebooks"]
SERVER_MB = 200  # a student's JupyterLab server: 0.17 GB measured by tests/hub, rounded up
UNITS = {"": 1e-6, "K": 1e-3, "M": 1, "G": 1e3, "T": 1e6, "Ki": 1.024e-3, "Mi": 1.048576, "Gi": 1073.741824}


def megabytes(quantity: str) -> float:
    """A Kubernetes memory quantity ('3.5G', '2Gi') in MB (10^6 bytes, as benchmarks/course.py counts)."""
    number, unit = re.fullmatch(r"([0-9.]+)([KMGT]i?)?", str(quantity)).groups()
    return float(number) * UNITS[unit or ""]


def test_memory_limit_holds_the_heaviest_notebook_and_a_concept_notebook_beside_it():
    heaviest = max(notebook["peak MB"] for notebook in COURSE)
    concept = max(
        notebook["peak MB"] for notebook in COURSE if notebook["notebook"][:2] in {"00", "01", "02", "03", "04", "05"}
    )
    needed = heaviest + concept + SERVER_MB
    limit = megabytes(VALUES["singleuser"]["memory"]["limit"])
    assert limit >= needed, (
        f"singleuser.memory.limit {limit:.0f} MB is below the {needed:.0f} MB the measured "
        "course needs (benchmarks/results/course.json); raise it and the sizing notes"
    )
    assert megabytes(VALUES["singleuser"]["memory"]["guarantee"]) <= limit


def test_the_notes_quote_the_measured_peak():
    """README and deploy/README.md state the heaviest notebook's peak; it must be the one measured."""
    peak = f"{max(notebook['peak MB'] for notebook in COURSE) / 1000:.2f} GB"
    for path in (ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / "deploy" / "z2jh-values.yaml"):
        assert peak in path.read_text(), f"{path.name} does not quote the measured peak {peak}"


def test_values_set_what_a_class_needs():
    singleuser = VALUES["singleuser"]
    assert singleuser["defaultUrl"] == "/lab"
    assert singleuser["cpu"]["limit"] and singleuser["cpu"]["guarantee"]
    assert singleuser["image"]["name"] and singleuser["image"]["tag"]
    assert singleuser["lifecycleHooks"]["postStart"]["exec"]["command"][0] == "gitpuller"
    assert VALUES["cull"]["enabled"] is True and VALUES["cull"]["timeout"] > 0
    assert VALUES["hub"]["config"]["KubeSpawner"]["working_dir"] == "/home/jovyan"
