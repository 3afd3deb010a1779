"""The two errors qtutor raises for a person to act on: bad input, and the course's data not found.

:mod:`qtutor.data` and :mod:`qtutor.models` raise it (notebook 06 and the
command line read the same files), :mod:`qtutor.assignments` too. Its message
is one line naming the bad value and what was expected, and names a setting
the way Python does, ``classes_number=3``: a notebook caller passed it as an
argument. The command line (:mod:`qtutor.cli`) turns each ``name=value`` of
its own flags into ``--name value``, prints the line and exits with code 2.
It does the same for :class:`MissingDataError`.
"""

from __future__ import annotations

__all__ = ["InputError", "MissingDataError"]


class InputError(ValueError):
    """Bad input from a person: the message names the bad value and what was expected."""


class MissingDataError(FileNotFoundError):
    """The course's data folder is not where qtutor looks: the message says how to get it (qtutor.data.bundled)."""
