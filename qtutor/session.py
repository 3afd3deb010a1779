"""What every session starts with: one seed for every generator, one set of warning filters, print options.

A notebook's Setup cell is :func:`setup`::

    from qtutor.session import setup
    setup()

The command line, the benchmarks and the test run (``tests/conftest.py``) use
the same two helpers: :func:`seed_everything`, and the targeted filters of
:data:`DEPRECATION_FILTERS`, applied to a block with :func:`quietly` or to the
rest of a session with :func:`quiet_deprecations`. Every other warning still shows.
"""

from __future__ import annotations

import contextlib
import logging
import random
import warnings

import numpy as np
import torch

import qtutor

__all__ = ["TORCH_VERSION", "DEPRECATION_FILTERS", "seed_everything", "quietly", "quiet_deprecations", "setup"]

TORCH_VERSION = "2.14.1"  # pinned in pyproject.toml and environment.yml

# PyTorch 2.14 deprecates quantized tensors, torch.ao.quantization and TorchScript; the course teaches them on purpose
# (notebook 09 shows the warnings once, and the replacements). (category, regex the message starts with):
DEPRECATION_FILTERS = (
    (DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
    (UserWarning, r"Please use quant_min and quant_max to specify the range for observers"),  # reduce_range's
    (UserWarning, r".*quantized tensor creation functions"),
    (FutureWarning, r"`torch\.jit\.\w+` is deprecated"),
    (UserWarning, r"The TorchScript type system doesn't support instance-level annotations"),  # scripting observers
    (UserWarning, r"TypedStorage is deprecated"),  # torch.load of a quantized state_dict
)


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators; returns a torch generator seeded alike."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _ignore(extra_messages=()) -> None:
    for category, message in DEPRECATION_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for message in extra_messages:
        warnings.filterwarnings("ignore", message=message)


@contextlib.contextmanager
def quietly(*extra_messages: str):
    """Run a block with :data:`DEPRECATION_FILTERS` (and warnings starting with ``extra_messages``) silenced.

    The filters are restored afterwards. What the course calls deprecated APIs
    through (:mod:`qtutor.ptq`, :mod:`qtutor.eager`, ...) runs inside it.
    """
    with warnings.catch_warnings():
        _ignore(extra_messages)
        yield


def quiet_deprecations() -> None:
    """Silence :data:`DEPRECATION_FILTERS` for the rest of the session (notebooks, benchmarks).

    Also quiets the line torch logs when torchao registers an Enum with its pytree on import.
    """
    _ignore()
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def _inline_figures() -> None:
    """In a notebook, show matplotlib Figure objects as PNG images (the course draws without pyplot)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with jupyterlab
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "kernel"):
        shell.run_line_magic("matplotlib", "inline")


def setup(seed: int = 0) -> None:
    """The Setup cell: check the torch version, seed every generator, set print options, say so in one line."""
    if not torch.__version__.startswith(TORCH_VERSION):
        warnings.warn(
            f"torch {torch.__version__} is installed; the course was checked with {TORCH_VERSION}. "
            "Numbers may differ slightly: run `make lab` to get the pinned environment.",
            stacklevel=2,
        )
    seed_everything(seed)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    quiet_deprecations()
    _inline_figures()
    print(f"torch {torch.__version__.split('+')[0]}, qtutor {qtutor.__version__}, seed {seed}")
