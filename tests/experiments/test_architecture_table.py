"""architecture-table end to end, and the report rebuilt from (edited) results files."""

from __future__ import annotations

import csv
import json

import pytest

from skiplab.experiments.architecture_table import ArchitectureTable
from skiplab.experiments.base import Settings, load_results, run_one
from skiplab.experiments.report import build_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_one(ArchitectureTable(), Settings(out_dir=out))
    return out


def test_results_file_records_counts_and_environment(run_dir):
    record = load_results(run_dir / "architecture-table")
    by = {r["name"]: r for r in record.results["models"]}
    assert by["vgg19"]["params"] == 143_667_240  # torchvision's VGG-19
    assert by["vgg19"]["fc_params"] == 123_642_856  # its three fully connected layers
    assert by["resnet152"]["params"] == 60_192_808
    assert by["resnet50"]["macs"] / 1e9 == pytest.approx(4.089, rel=0.01)
    assert record.environment["torch"] and record.environment["git_revision"]
    with open(run_dir / "architecture-table" / "table.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["name"] for r in table] == [r["name"] for r in record.results["models"]]
    by_csv = {r["name"]: r for r in table}
    assert int(by_csv["vgg19"]["params"]) == 143_667_240
    assert float(by_csv["resnet50"]["cited_top5"]) == by["resnet50"]["cited_top5"] == 5.25
    assert by_csv["vgg19"]["cited_top5"] in ("", str(by["vgg19"]["cited_top5"]))


def test_report_has_the_claims_and_figures(run_dir):
    report = build_report(run_dir, [ArchitectureTable()]).read_text()
    assert report.count("| **REPRODUCED** |") == 3
    assert "ResNet-152 has fewer parameters than VGG-19" in report
    assert "in its fully connected layers" in report
    for stem in ("params_macs", "cost_vs_cited_error"):
        assert (run_dir / "architecture-table" / f"{stem}.png").stat().st_size > 1000
        assert (run_dir / "architecture-table" / f"{stem}.svg").is_file()
    html = (run_dir / "report.html").read_text()
    assert "<table>" in html and 'src="architecture-table/params_macs.png"' in html


def test_verdict_follows_the_numbers_not_the_paper(tmp_path, run_dir):
    # Made-up results in which ResNet-152 is the bigger net: the claim must fail.
    src = run_dir / "architecture-table" / "results.json"
    data = json.loads(src.read_text())
    for row in data["results"]["models"]:
        if row["name"] == "resnet152":
            row["params"] = 200_000_000
    (tmp_path / "architecture-table").mkdir()
    (tmp_path / "architecture-table" / "results.json").write_text(json.dumps(data))
    report = build_report(tmp_path, [ArchitectureTable()]).read_text()
    assert "| **NOT REPRODUCED** | ResNet-152 has fewer parameters than VGG-19 |" in report


def test_report_without_results_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no experiment results"):
        build_report(tmp_path, [ArchitectureTable()])
