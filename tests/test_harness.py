"""The test run's own set-up (tests/conftest.py): what make test's parallel stages rely on."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import LONGEST_FIRST  # tests/ is on sys.path: pytest's default import mode

TESTS = Path(__file__).resolve().parent
IN_A_WORKER = """
import sys
sys.path.insert(0, sys.argv[1])
import conftest
print("torch" in sys.modules)
import torch
print(torch.get_num_threads())
"""


def test_a_worker_imports_no_pytorch_for_conftest_and_runs_it_on_one_thread():
    """Browser and hub workers never need PyTorch; two unit-test workers share two cores, one thread each."""
    environment = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-c", IN_A_WORKER, str(TESTS)],
        env={**environment, "PYTEST_XDIST_WORKER": "gw0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "1"]


def test_the_longest_files_named_in_conftest_exist():
    """A renamed file would silently drop out of LONGEST_FIRST and be handed to a worker last."""
    missing = [name for name in LONGEST_FIRST if not (TESTS / name).is_file()]
    assert not missing, f"conftest's LONGEST_FIRST names files that do not exist: {missing}"


def test_this_worker_runs_pytorch_on_one_thread():
    """Inside make test's workers themselves (a run without pytest-xdist has no worker to check)."""
    import torch

    if os.environ.get("PYTEST_XDIST_WORKER"):
        assert torch.get_num_threads() == 1, f"a worker runs PyTorch on {torch.get_num_threads()} threads"
