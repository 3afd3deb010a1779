"""Model files on disk: written atomically, measured in megabytes.

Introduced for notebook 06 (a saved INT8 model against its FP32 original) and
shared with the command line, ``tools/`` and ``benchmarks/``: every file the
course writes goes through :func:`save_atomically`, and every size it reports
comes from :func:`file_size_mb`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["save_atomically", "file_size_mb"]


def save_atomically(save: Callable[[str], object], path) -> None:
    """Call ``save(temporary_path)`` then rename it to ``path``: a failure leaves nothing half-written."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private (0600); a saved model is an ordinary file
    try:
        save(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def file_size_mb(path: str | os.PathLike) -> float:
    """Size of a file on disk in megabytes (10**6 bytes)."""
    return os.path.getsize(path) / 1e6
