"""Rows of dicts as aligned text tables: what the notebooks, ``qtutor --task evaluate`` and ``benchmarks/`` print.

Introduced in notebook 06 (accuracy, size and latency side by side).
"""

from __future__ import annotations

__all__ = ["text_table"]


def text_table(rows: list[dict], formats: dict[str, str] | None = None) -> str:
    """Rows of dicts as an aligned text table; ``formats`` maps a column to a format spec such as ``".1%"``.

    The first column is aligned left, the others right. Text values are shown
    as they are, whatever the column's format.

    >>> print(text_table([{"model": "FP32", "accuracy": 0.996}, {"model": "INT8", "accuracy": "-"}],
    ...                  {"accuracy": ".1%"}))
    model  accuracy
    -----  --------
    FP32      99.6%
    INT8          -
    """
    formats = formats or {}
    columns = list(rows[0])
    cells = [
        [row[c] if isinstance(row[c], str) else format(row[c], formats.get(c, "")) for c in columns] for row in rows
    ]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values):
        aligned = (v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True)))
        return "  ".join(aligned)

    return "\n".join([line(columns), "  ".join("-" * w for w in widths), *(line(row) for row in cells)])
