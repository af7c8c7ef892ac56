"""The report: verdict table with n, interval, guard and source; the quick-budget statement;
HTML rendered by a real Markdown library, with hostile text shown literally."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path
from statistics import mean, stdev

import pytest

from skiplab.experiments.base import Experiment, Figure, Settings, run_one
from skiplab.experiments.report import build_report, md_text, mean_sd
from skiplab.experiments.verdict import Claim, Guard

HOSTILE = '![x](a" onerror="alert(1)) <script>alert(2)</script> a|b *c* `d`'
CLAIM = Claim("the claim holds for {what}", "Paper 2015, Table 1", 0.5, "the paper's effect")


class _Fake(Experiment):
    name, title, paper = "fake", "A fake experiment", "Paper 2015"

    def run(self, settings: Settings, folder: Path) -> dict:
        return {"margins": [1.0, 1.2, 1.1], "text": HOSTILE, "deviations": ["widths 8/16/32"]}

    def verdicts(self, results: dict) -> list:
        return [
            CLAIM.verdict(self.name, results["text"], results["margins"], what="three seeds"),
            CLAIM.verdict(self.name, "one seed", results["margins"][:1], what="one seed"),
            CLAIM.verdict(
                self.name, "guarded", results["margins"], [Guard("plain56", False, "at chance")],
                what="a failed guard",
            ),
        ]  # fmt: skip

    def section(self, results: dict, figures: list[Figure], verdicts: list) -> str:
        return f"Embedded: {md_text(results['text'])}"


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _report(tmp_path: Path) -> tuple[str, str]:
    settings = Settings(out_dir=tmp_path, data_dir=Path(HOSTILE), seeds=3)
    run_one(_Fake(), settings)
    text = build_report(tmp_path, [_Fake()]).read_text()
    return text, (tmp_path / "report.html").read_text()


def test_rows_show_n_interval_guard_and_source(tmp_path):
    text, _ = _report(tmp_path)
    assert text.startswith("# skiplab") and "**What this report can show.**" in text
    rows = [line for line in text.splitlines() if line.startswith("| **")]
    assert len(rows) == 3
    three, one, guarded = rows
    assert three.startswith("| **REPRODUCED** | the claim holds for three seeds | fake |")
    assert "+1.1 [+0.852, +1.35]" in three and "| 3 | none | Paper 2015, Table 1 |" in three
    assert one.startswith("| **INCONCLUSIVE**") and "n=1 < 3 seeds" in one
    assert guarded.startswith("| **INCONCLUSIVE**") and "failed: plain56 (at chance)" in guarded
    assert "**REPRODUCED** 1 · **NOT REPRODUCED** 0 · **INCONCLUSIVE** 2 of 3 claims" in text
    assert "- widths 8/16/32" in text and "the paper's effect" in text  # deviation, why min
    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    assert [v["status"] for v in verdicts] == ["REPRODUCED", "INCONCLUSIVE", "INCONCLUSIVE"]


def test_hostile_text_stays_text(tmp_path):
    _, html = _report(tmp_path)
    parser = _Tags()
    parser.feed(html)
    assert not [t for t, _ in parser.tags if t in ("script", "img")]  # no figure in _Fake
    assert not [a for _, a in parser.tags if any(k.startswith("on") for k in a)]
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
    # Every table row has the header's number of cells: a '|' in text does not split a cell.
    body = html[html.index("<table>") : html.index("</table>")]
    widths = {row.count("<td") for row in body.split("<tr>")[2:]}
    assert widths == {9}
    assert '<strong class="v ok">REPRODUCED</strong>' in html


def test_mean_sd_cells():
    assert mean_sd([1.0, 2.0]) == "1.5 ± 0.707"  # the sample sd (n - 1), not 0.5
    assert mean_sd([0.1234, 0.5678, 2.0]) == "0.897 ± 0.981"
    assert mean_sd([10.0, 12.0, 14.0], ".1f", "%", each=True) == "12.0 ± 2.0% (10.0, 12.0, 14.0)"
    assert mean_sd([2.0]) == "2" and mean_sd([12.34], ".1f", "%", each=True) == "12.3%"
    assert mean_sd([]) == "—"
    assert mean_sd([math.nan]) == "nan" and mean_sd([math.nan], ".1f", "%") == "nan%"


def test_mean_sd_passes_nan_on_as_the_statistics_module_takes_it():
    # Not filtered: among several values a NaN goes to statistics.stdev, which (depending on
    # the Python version) returns nan or raises; the cell does what the expression does.
    values = [1.0, math.nan, 3.0]
    try:
        expected = f"{mean(values):.3g} ± {stdev(values):.3g}"
    except Exception as exc:
        with pytest.raises(type(exc)):
            mean_sd(values)
    else:
        assert mean_sd(values) == expected
