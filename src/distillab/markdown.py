"""Markdown tables: the one place a ``| a | b |`` row is built (retention, reports, stage tables, diffs)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table; cells are written with ``str``, every row as wide as ``head``."""
    lines = [_row(head), "|" + "---|" * len(head)]
    for cells in rows:
        if len(cells) != len(head):
            raise ValueError(f"a row has {len(cells)} cells for {len(head)} columns: {list(cells)!r}")
        lines.append(_row(cells))
    return "\n".join(lines)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
