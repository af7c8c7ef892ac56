"""Plain-text tables for the command line (``skiplab models``, ``summary`` and ``bench``)."""

from __future__ import annotations


def print_table(headers: list[str], rows: list[list[str]], right: set[int]) -> None:
    """Print ``rows`` under ``headers`` in aligned columns, two spaces apart, with a dashed
    rule under the header; the columns whose indices are in ``right`` are right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
