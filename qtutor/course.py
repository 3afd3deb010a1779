"""The Setup cell every notebook starts with: versions, one seed, print options.

    from qtutor.course import setup
    setup()
"""

from __future__ import annotations

import logging
import random
import warnings

import torch

import qtutor

__all__ = ["TORCH_VERSION", "setup", "quiet_deprecations"]

TORCH_VERSION = "2.14.1"  # pinned in pyproject.toml and environment.yml


def quiet_deprecations() -> None:
    """Silence PyTorch 2.14's deprecation warnings for quantized tensors and ``torch.ao.quantization``.

    The course teaches these APIs on purpose (notebook 09 shows the warnings
    once and the replacements); repeating them in every cell only adds noise.
    """
    warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
    warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
    # torchao registers an Enum with torch's pytree on import, and torch logs a dated warning line about it.
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
    """Check the torch version, seed every generator, set print options, and say so in one line."""
    if not torch.__version__.startswith(TORCH_VERSION):
        warnings.warn(f"torch {torch.__version__} is installed; the course was checked with {TORCH_VERSION}. "
                      "Numbers may differ slightly: run `make lab` to get the pinned environment.", stacklevel=2)
    random.seed(seed)
    torch.manual_seed(seed)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    quiet_deprecations()
    _inline_figures()
    print(f"torch {torch.__version__.split('+')[0]}, qtutor {qtutor.__version__}, seed {seed}")
