"""Plain-text tables for the command-line tools, aligned like Go's ``tabwriter``."""

from __future__ import annotations

from collections.abc import Sequence

from registryd.base.logs import escape

__all__ = ["format_table"]

GAP = 3  # spaces between columns


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """``header`` and ``rows`` as left-aligned columns, one line each (ending in a
    newline), without trailing spaces.  Every row has as many cells as ``header``.
    Control characters in a cell are escaped (``\\x1b``): cells hold what a server sent,
    and a terminal must not take it for commands."""
    lines = [list(header), *([escape(cell) for cell in r] for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [cell.ljust(width + GAP) for cell, width in zip(line, widths, strict=True)]
        out.append("".join(cells).rstrip() + "\n")
    return "".join(out)
