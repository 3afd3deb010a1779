"""``python -m qtutor``: the command line (see :mod:`qtutor.cli`)."""

from qtutor.cli import main

raise SystemExit(main())
