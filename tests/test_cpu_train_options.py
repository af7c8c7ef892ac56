"""benchmarks/cpu_train_options.py at a tiny size: the record's shape, not its speed."""

from __future__ import annotations

import json

import pytest

from tests.benchmark_scripts import load_benchmark


def test_every_option_set_is_timed_against_the_first(tmp_path, capsys):
    bench = load_benchmark("cpu_train_options")
    out = tmp_path / "record.json"
    argv = ["--batch", "4", "--num-images", "16", "--repeats", "2", "--steps", "1"]
    argv += ["--warmup", "1", "--resolution", "16", "--options", "eager", "channels_last"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["reference"] == "eager" and record["resolution"] == 16
    sets = record["sets"]
    assert list(sets) == ["eager", "channels_last"]
    assert sets["eager"]["ratio"] == 1.0
    for s in sets.values():
        assert len(s["windows"]) == 2 and all(w > 0 for w in s["windows"])
        assert s["img_per_s"] > 0 and s["warmup_s"] >= 0
    assert sets["channels_last"]["ratio"] == pytest.approx(
        sets["channels_last"]["img_per_s"] / sets["eager"]["img_per_s"]
    )
    assert record["environment"]["cpu"]["model"]
    assert "channels_last" in capsys.readouterr().out


def test_bad_counts_are_refused_before_any_work(capsys):
    bench = load_benchmark("cpu_train_options")
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    assert "--steps must be >= 1; got 0" in capsys.readouterr().err
