"""qtutor: a hands-on course on neural-network quantization, and the helpers its notebooks import.

The core API (notebook 01) is exported here and matches PyTorch's kernels bit for bit::

    from qtutor import qparams, quantize, dequantize, fake_quantize

They are imported from :mod:`qtutor.uniform` on first use, so ``import qtutor`` alone does not load PyTorch: the
command line answers ``--help`` and a bad flag in a fraction of a second.
"""

import importlib as _importlib

__version__ = "0.1.0"

__all__ = [
    "MAX_BITS",
    "MIN_BITS",
    "dequantize",
    "fake_quantize",
    "integer_dtype",
    "mse",
    "qparams",
    "qrange",
    "quantize",
    "sqnr_db",
]


def __getattr__(name: str):
    """The core API, imported from :mod:`qtutor.uniform` the first time one of its names is asked for."""
    if name in __all__:
        value = getattr(_importlib.import_module("qtutor.uniform"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qtutor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*(name for name in globals() if not name.startswith("_")), *__all__, "__version__"})
