"""``reproduce --time-limit`` and the lease state (pack, unpack, resume) at a tiny size.

The time limit runs on a fake clock that advances one second each time it is read (about once
per training step), so where a run stops does not depend on the CPU's speed.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import tarfile

import pytest

from skiplab.cli import main
from skiplab.experiments import degradation, lease
from skiplab.experiments.base import Settings
from skiplab.experiments.training import DataPlan, classification_data, train_in_parallel
from skiplab.train.checkpoint import list_checkpoints
from tests.benchmark_scripts import load_benchmark

TINY = degradation.DegradationBudget(
    (8, 14), 2, 16, 0.1, DataPlan(64, 32, 16), {"widths": (4, 8, 16), "stem_width": 4}, 4
)  # 4 steps per epoch, 8 per run; plain and resnet, 8 and 14 layers


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(degradation.BUDGETS, "quick", TINY)
    ticks = itertools.count()
    monkeypatch.setattr(lease, "clock", lambda: float(next(ticks)))
    monkeypatch.delenv(lease.DEADLINE_ENV, raising=False)


def reproduce(out, *extra):
    args = ["reproduce", "degradation", "--amp", "none", "--seeds", "1", "--out", str(out)]
    return main([*args, *extra])


def final_weights(run_dir) -> dict[str, tuple]:
    """Each run's newest checkpoint: step and weights digest."""
    found = {}
    for ckpts in sorted(run_dir.glob("runs/*/checkpoints")):
        manifest = json.loads(list_checkpoints(ckpts)[0].read_text())
        found[ckpts.parent.name] = (manifest["step"], manifest["files"]["weights"])
    return found


def test_time_limit_stops_resumably_without_results(tiny, tmp_path):
    assert reproduce(tmp_path / "run", "--time-limit", "5") == lease.EXIT_RESUMABLE
    assert not (tmp_path / "run" / "degradation" / "results.json").exists()
    assert not (tmp_path / "run" / "report.md").exists()
    rows = lease.progress(tmp_path / "run")
    assert [r["run"] for r in rows] == ["plain8-quick-seed0"]  # the others never started
    assert 0 < rows[0]["step"] < 8
    assert lease.DEADLINE_ENV not in os.environ  # cleared for the rest of the process


def test_leases_resume_to_the_uninterrupted_result(tiny, tmp_path):
    assert reproduce(tmp_path / "whole") == 0
    script = load_benchmark("paper_lease")
    common = ["degradation", "--budget", "quick", "--data", "synthetic", "--seeds", "1"]
    common += [
        "--device",
        "cpu",
        "--amp",
        "none",
        "--time-limit",
        "8",
        "--part-mib",
        "0.05",
        "--max-parts",
        "30",
    ]
    state, leases = None, 0
    while True:
        leases += 1
        out = tmp_path / f"out{leases}"
        argv = [*common, "--work", str(tmp_path / f"work{leases}"), "--out", str(out)]
        assert script.main(argv + (["--state", str(state)] if state else [])) == 0
        summary = json.loads((out / "progress.json").read_text())
        assert len(summary["parts"]) > 1  # split at 0.05 MiB
        assert summary["fits_next_lease"]
        if summary["finished"]:
            break
        assert "--state STATE_FOLDER" in summary["next"]
        state = out
        assert leases < 20
    assert leases >= 5  # 32 steps, stopped every few steps
    work = tmp_path / f"work{leases}"
    whole = json.loads((tmp_path / "whole" / "degradation" / "results.json").read_text())
    sliced = json.loads((work / "degradation" / "results.json").read_text())
    assert sliced["results"]["runs"] == whole["results"]["runs"]  # curves, bit for bit
    assert final_weights(work) == final_weights(tmp_path / "whole")
    assert (work / "report.md").is_file()


def test_parallel_workers_pass_the_time_limit_on(monkeypatch, tmp_path):
    # A deadline in the past, inherited by the spawned workers: each refuses to start its run.
    monkeypatch.setenv(lease.DEADLINE_ENV, "0")
    settings = Settings(out_dir=tmp_path, jobs=2)
    train, test = classification_data(settings, TINY.data)
    tasks = [(settings, TINY, k, 8, 0, train, test) for k in degradation.KINDS]
    with pytest.raises(lease.TimeLimitReached, match="before training run"):
        train_in_parallel(settings, degradation.train_net, tasks)
    assert not (tmp_path / "runs").exists()


def test_a_failed_slice_still_packs_its_state(tiny, monkeypatch, tmp_path):
    script = load_benchmark("paper_lease")

    def crash(argv):
        (tmp_path / "work" / "runs" / "net").mkdir(parents=True)
        (tmp_path / "work" / "runs" / "net" / "metrics.jsonl").write_text("{}\n")
        raise RuntimeError("training run stopped by SIGTERM")

    monkeypatch.setattr(script, "skiplab_main", crash)
    argv = ["degradation", "--seeds", "1", "--work", str(tmp_path / "work")]
    assert script.main([*argv, "--out", str(tmp_path / "out")]) == 1
    summary = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert (summary["finished"], summary["reproduce_status"]) == (False, 1)
    assert [r["run"] for r in summary["runs"]] == ["net"]


def test_pack_keeps_only_the_newest_checkpoint(tmp_path):
    ckpts = tmp_path / "run" / "runs" / "net" / "checkpoints"
    ckpts.mkdir(parents=True)
    for step in (10, 20):
        for ext in ("json", "safetensors", "state.pt"):
            (ckpts / f"step-{step:08d}.{ext}").write_text(f"{step}{ext}")
    (tmp_path / "run" / "runs" / "net" / "metrics.jsonl").write_text("{}\n")
    parts = lease.pack_state(tmp_path / "run", tmp_path / "out")
    assert [p.name for p in parts] == ["state.tar"]
    assert lease.unpack_state(tmp_path / "out", tmp_path / "back") == 4
    names = sorted(p.name for p in (tmp_path / "back" / "runs" / "net" / "checkpoints").iterdir())
    assert names == ["step-00000020.json", "step-00000020.safetensors", "step-00000020.state.pt"]


def test_pack_refuses_too_many_parts(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "big").write_bytes(bytes(50_000))
    with pytest.raises(ValueError, match="more than the 2 allowed"):
        lease.pack_state(tmp_path / "run", tmp_path / "out", part_bytes=10_000, max_parts=2)
    assert not (tmp_path / "out").exists()


def _tar_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.tar").write_bytes(buffer.getvalue())


@pytest.mark.parametrize("name", ["../escape", "/abs/file"])
def test_unpack_refuses_paths_outside(tmp_path, name):
    _tar_with(tmp_path, tarfile.TarInfo(name), b"x")
    with pytest.raises(ValueError, match="refusing member"):
        lease.unpack_state(tmp_path / "state", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_unpack_refuses_links(tmp_path):
    link = tarfile.TarInfo("runs/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _tar_with(tmp_path, link)
    with pytest.raises(ValueError, match="refusing member 'runs/link'"):
        lease.unpack_state(tmp_path / "state", tmp_path / "back")


def test_state_parts_must_be_complete(tmp_path):
    for name in ("state.tar.00", "state.tar.02"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="not numbered 00..01"):
        lease.state_parts(tmp_path)
    with pytest.raises(ValueError, match="no packed state"):
        lease.state_parts(tmp_path / "empty")


def test_unpack_refuses_a_folder_with_runs(tmp_path):
    (tmp_path / "run" / "runs").mkdir(parents=True)
    (tmp_path / "run" / "runs" / "x").write_text("x")
    lease.pack_state(tmp_path / "run", tmp_path / "out")
    with pytest.raises(ValueError, match="already holds runs"):
        lease.unpack_state(tmp_path / "out", tmp_path / "run")


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan")])
def test_time_limit_must_be_positive(monkeypatch, seconds):
    monkeypatch.delenv(lease.DEADLINE_ENV, raising=False)
    with pytest.raises(ValueError, match="time limit must be a positive number of seconds"):
        lease.set_deadline(seconds)
