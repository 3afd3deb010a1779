"""qtutor: a hands-on course on neural-network quantization, and the helpers its notebooks import.

The core API (notebook 01) is exported here and matches PyTorch's kernels bit for bit::

    from qtutor import qparams, quantize, dequantize, fake_quantize
"""

from qtutor.uniform import (
    MAX_BITS,
    MIN_BITS,
    dequantize,
    fake_quantize,
    integer_dtype,
    mse,
    qparams,
    qrange,
    quantize,
    sqnr_db,
)

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
