"""CSV files written by skiplab read back cell for cell, whatever the cells hold."""

from __future__ import annotations

import csv

import pytest

from skiplab.fileio import atomic_write_csv, csv_text

AWKWARD = [
    ("images/a,b.png", 'class "with, comma"', 0.5),
    ("multi\nline.png", "plain", None),
]


def test_csv_round_trip_with_commas_quotes_and_newlines(tmp_path):
    path = tmp_path / "out" / "table.csv"
    atomic_write_csv(path, ("file", "class", "probability"), AWKWARD)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["file", "class", "probability"]
    assert rows[1:] == [
        ["images/a,b.png", 'class "with, comma"', "0.5"],
        ["multi\nline.png", "plain", ""],
    ]
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_csv_row_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        csv_text(("a", "b", "c"), [(1, 2)])
