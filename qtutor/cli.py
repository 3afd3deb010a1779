"""The ``qtutor`` command line (``python -m qtutor``).

It will quantize a user's DenseNet checkpoint and predict on their images, flag
for flag compatible with the original article's script (``--task quantize`` and
``--task predict``; see README.md). Until those tasks land it only reports its
version and the core API it exposes.
"""

from __future__ import annotations

import argparse
import sys

import qtutor


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; the original script's flags are added as their tasks land."""
    parser = argparse.ArgumentParser(
        prog="qtutor",
        description="qtutor: a hands-on course on neural-network quantization.",
    )
    parser.add_argument("--version", action="version", version=f"qtutor {qtutor.__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    build_parser().parse_args(argv)
    print(f"qtutor {qtutor.__version__}: the core API is {', '.join(qtutor.__all__)}.")
    print("The DenseNet tasks (--task quantize|predict) are not part of this release yet.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
