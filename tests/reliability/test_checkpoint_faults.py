"""Faults 2 and 3 at small trial counts, and proof that the harness catches a broken writer."""

from __future__ import annotations

import os

import pytest

import skiplab.train.checkpoint
from skiplab.selftest import checkpoint_faults as cf
from skiplab.selftest.common import TrialFailed
from tests.reliability.conftest import assert_all_passed


def test_crash_during_checkpoint_write(tmp_path):
    result = cf.run_crash(tmp_path, trials=3)  # 0/1/50/99% x 3: weights, state and manifest
    assert result.trials == 12
    assert_all_passed(result)


def _non_atomic_writer(folder, step, sample, budget):
    """What a naive writer does: write straight to the final names, then die mid-way."""
    pid = os.fork()
    if pid == 0:
        left = [budget]

        def naive(path, data):
            with cf._CuttingFile(open(path, "wb"), left) as fh:
                fh.write(data)
            return "0" * 64

        skiplab.train.checkpoint.atomic_write = naive
        try:
            cf._write(folder, step, sample)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_harness_detects_a_non_atomic_writer(tmp_path):
    with pytest.raises(TrialFailed, match="expected one partial file"):
        cf.crash_trial(tmp_path, 0.5, 1, write=_non_atomic_writer)
    # ...and the partial file really sits at a final name.
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("crash-")]
    assert (folder / "step-00000002.state.pt").is_file()


def test_damaged_checkpoints(tmp_path):
    result = cf.run_damage(tmp_path)
    assert result.trials == 16
    assert_all_passed(result)


def test_harness_detects_an_undamaged_file(tmp_path, monkeypatch):
    monkeypatch.setitem(cf.DAMAGES, "none", lambda b: b)
    base = cf._base_run(tmp_path)
    with pytest.raises(TrialFailed, match="the damaged checkpoint loaded"):
        cf.damage_trial(base, tmp_path, "none", "weights")
