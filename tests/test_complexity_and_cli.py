"""MAC counts against the papers, the model table and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from skiplab import create_model
from skiplab.cli import main
from skiplab.complexity import count_macs, model_row, stage_summary


@pytest.mark.parametrize(
    ("name", "gmacs"),
    [("resnet18", 1.814), ("resnet50", 4.089), ("resnet152", 11.514)],
)
def test_macs_match_published_numbers(name, gmacs):
    assert model_row(name).macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_macs_count_convolutions_by_hand():
    # One 3x3 conv 3->16 on 32x32 (no padding change): 3*16*9*32*32 MACs, plus fc 64*10.
    model = create_model("resnet20")
    stem = 3 * 16 * 9 * 32 * 32
    row = model_row("resnet20")
    assert row.macs > stem
    assert count_macs(torch.nn.Conv2d(3, 16, 3, padding=1, bias=False), (3, 32, 32)) == stem
    assert row.params == sum(p.numel() for p in model.parameters())


def test_stage_summary_shapes_and_totals():
    rows = stage_summary("resnet50")
    by_name = {r.name: r for r in rows}
    assert by_name["layer1"].output_shape == (1, 256, 56, 56)
    assert by_name["layer4"].output_shape == (1, 2048, 7, 7)
    assert by_name["fc"].output_shape == (1, 1000)
    total = model_row("resnet50")
    assert sum(r.params for r in rows) == total.params
    assert sum(r.macs for r in rows) == total.macs


def test_cli_models_table_and_json(capsys):
    assert main(["models", "resnet5*"]) == 0
    out = capsys.readouterr().out
    assert "MACs (the paper's FLOPs)" in out
    assert "25,557,032" in out and "4.089 G" in out and "853,018" in out
    assert main(["models", "resnet20", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {
            "name": "resnet20",
            "family": "cifar_resnet",
            "depth": 20,
            "input_size": [3, 32, 32],
            "params": 269_722,
            "macs": rows[0]["macs"],
        }
    ]


def test_cli_summary_and_errors(capsys):
    assert main(["summary", "resnet20"]) == 0
    out = capsys.readouterr().out
    assert "269,722 parameters" in out and "layer3" in out and "1x64x8x8" in out
    assert main(["summary", "resnet65"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["models", "nothing*"]) == 1


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "skiplab", "models", "plain2*"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "plain20" in proc.stdout and "269,722" in proc.stdout


def test_stage_summary_expands_containers_that_hold_stages():
    rows = stage_summary("densenet_bc100_k12")
    by_name = {r.name: r for r in rows}
    assert by_name["features.denseblock1"].output_shape == (1, 216, 32, 32)
    total = model_row("densenet_bc100_k12")
    assert sum(r.params for r in rows) == total.params == 769_162
    assert sum(r.macs for r in rows) == total.macs
