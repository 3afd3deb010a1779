"""What every test shares: a fixed seed, the course's warning filters, and the tiny models plumbing tests run on.

Tests about plumbing (FX, eager, PT2E flows, numeric-suite helpers, exercise checks) use these tiny networks
(tests/tiny.py), built once per run, instead of a DenseNet-121; tests about the course's real numbers load the shipped
model. This file imports no PyTorch at the top: the browser and hub tests load it too, and their workers never need
PyTorch (importing it, torchvision and qtutor costs each process about 5 s of CPU).
"""

import copy
import os
import sys
from types import SimpleNamespace

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the cores (make test: -n auto for the unit tests, -n 2 for the browser test): one thread each,
    # and in what they start (notebook kernels, command lines, JupyterLab and its kernels), so no worker waits on
    # another's spinning threads. PyTorch, imported later, takes its thread count from OMP_NUM_THREADS (checked by
    # test_harness); ONNX Runtime and OpenVINO sessions take torch's (qtutor.deploy).
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:  # imported already (by a plugin, say): the variable would come too late
        sys.modules["torch"].set_num_threads(1)


# The test files that take longest, longest first: pytest-xdist (make test: -n auto --dist loadfile) hands files to
# workers in collection order, so starting with these keeps one worker from finishing alone with a long file.
# Measured with `pytest -n auto --dist loadfile --durations=0`; a file missing here only costs balance.
LONGEST_FIRST = [
    "test_cli.py",
    "test_nbgrader.py",
    "test_student.py",
    "test_pt2e.py",
    "test_benchmarks.py",
    "test_widgets.py",
    "test_checks.py",
    "test_models.py",
]


def pytest_collection_modifyitems(items):
    """Put the files in LONGEST_FIRST first, in that order (a stable sort: the rest keep pytest's order)."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _seeded_and_quiet(request):
    """Each test starts from seed 0 (unseeded samples do not depend on run order), with the course's filters.

    The filters are qtutor.session.DEPRECATION_FILTERS, the ones the package and the command line apply:
    any other warning still reaches pytest's summary. Browser and hub tests compute nothing in this process
    (JupyterLab's kernels do): they are left alone, and their workers do not import PyTorch.
    """
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("hub"):
        yield
        return
    from qtutor.session import quietly, seed_everything

    seed_everything(0)
    with quietly():
        yield


@pytest.fixture(scope="session")
def tiny_dense():
    """Builds tests/tiny.py's TinyDense in eval mode with the weights ``seed`` gives (the same ones on every call)."""
    import torch
    from tiny import TinyDense

    def build(seed: int = 0) -> TinyDense:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return TinyDense().eval()

    return build


@pytest.fixture(scope="session")
def tiny_fx(tiny_dense):
    """TinyDense, 16 images, and its FX INT8 model: prepared, calibrated on 4 batches of 4, converted.

    Shared by every test module that needs a converted model to read: do not modify it.
    """
    from tiny import images, loader

    from qtutor import ptq

    model, batch = tiny_dense(), images(16)
    prepared = ptq.prepare(model, (batch[:1],))
    ptq.calibrate(prepared, loader(batch), batches=None, progress=False)
    return SimpleNamespace(model=model, images=batch, prepared=prepared, converted=ptq.convert(copy.deepcopy(prepared)))


@pytest.fixture(scope="session")
def tiny_densenet():
    """A torchvision DenseNet (DenseNet-121's class, two blocks of two layers), 16 32x32 images, and a loader."""
    import torch
    import torchvision
    from tiny import images, loader

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torchvision.models.DenseNet(
            growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=2
        ).eval()
    batch = images(16, size=32)
    return SimpleNamespace(model=model, images=batch, loader=loader(batch))


@pytest.fixture(scope="session")
def digits():
    """The bundled digits at the course's 64x64 (qtutor.data.course_data), each split read once per run."""
    from qtutor.data import course_data

    return course_data()


def _only_checks_fail(executed, checks: set[int]) -> None:
    """In an executed student copy, exactly the exercise checks ``checks`` (cell indices) raised, and as unanswered."""
    errors = {
        i
        for i, cell in enumerate(executed.cells)
        if cell.cell_type == "code" and any(o.output_type == "error" for o in cell.outputs)
    }
    assert checks and errors == checks, f"only the exercise checks {sorted(checks)} may fail; {sorted(errors)} did"
    for index in checks:
        error = next(o for o in executed.cells[index].outputs if o.output_type == "error")
        assert error.ename == "AssertionError" and "not answered yet" in error.evalue, (error.ename, error.evalue)


@pytest.fixture(scope="session")
def only_checks_fail():
    """``only_checks_fail(executed notebook, check cell indices)``: fails unless exactly those cells raised."""
    return _only_checks_fail
