"""``benchmarks/gpu_suite.py``: its projection arithmetic, and every part run at a tiny size on
the CPU (``--smoke``), so that the one command a GPU lease runs is known to work beforehand."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load_benchmark


def _load_script():
    return load_benchmark("gpu_suite")


def test_projection_leaves_out_the_first_epoch():
    suite = _load_script()
    rows = [
        {"step": 391, "seconds": 30.0},  # compilation
        {"step": 782, "seconds": 2.0},
        {"step": 1173, "seconds": 2.0, "val_error": 0.3},
    ]
    numbers = suite.per_step_seconds(rows)
    per_step = 4.0 / 782
    assert numbers["steady_steps_per_second"] == pytest.approx(1 / per_step, abs=0.1)
    assert numbers["projected_paper_seconds"] == pytest.approx(
        30.0 + (64000 - 391) * per_step, abs=0.1
    )
    assert numbers["steady_seconds_per_epoch"] == pytest.approx(2.0, abs=0.01)
    assert (numbers["epochs"], numbers["steps"], numbers["last_val_error"]) == (3, 1173, 0.3)
    assert suite.per_step_seconds([]) == {"epochs": 0}


def test_refuses_a_missing_data_dir_and_unknown_parts(tmp_path, capsys):
    suite = _load_script()
    with pytest.raises(SystemExit):
        suite.main(["--out", str(tmp_path)])
    assert "--data-dir is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite.main(["--out", str(tmp_path), "--data-dir", str(tmp_path / "nowhere.tar.gz")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite.main(["--smoke", "--out", str(tmp_path), "--only", "resnet99"])
    assert "unknown part(s) ['resnet99']" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a guard against a hang: the smoke run is sized in steps, not seconds
def test_smoke_run_of_every_part(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    suite = _load_script()
    assert suite.main(["--smoke", "--out", str(tmp_path), "--budget", "3600"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    parts = summary["parts"]
    assert list(parts) == [
        "gpu-tests", "resnet56-paper", "fast-recipe", "resnet50-train", "resnet56-eager",
        "resnet56-bench",
    ]  # fmt: skip
    assert {name: r["status"] for name, r in parts.items()} == dict.fromkeys(parts, "ok")
    assert parts["resnet56-paper"]["numbers"]["steps"] == 24
    assert parts["resnet50-train"]["numbers"]["resnet50 train b8"]["ratio"] > 0
    assert parts["fast-recipe"]["numbers"]["seed 1"]["seconds_to_target"] > 0
    assert "resnet56 train b16" in parts["resnet56-bench"]["numbers"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8  # what a device lease brings back
    assert "suite.log" in files and "r56_paper_metrics.jsonl" in files
    assert summary["environment"]["torch"]
