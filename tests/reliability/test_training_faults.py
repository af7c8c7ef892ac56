"""Faults 1, 8 and 9: SIGKILL and resume, non-finite training, distributed faults."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skiplab.selftest import distributed, kill, nonfinite
from skiplab.selftest.common import TrialFailed
from skiplab.train import Trainer
from tests.reliability.conftest import assert_all_passed


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    result = kill.run(tmp_path, trials=1, seed=3)
    assert_all_passed(result)
    assert "killed after step" in result.details[0]


def test_bit_comparison_catches_one_changed_value():
    a = {"w": torch.zeros(3), "opt": [{"m": torch.ones(2)}]}
    b = {"w": torch.zeros(3), "opt": [{"m": torch.tensor([1.0, 1.0 + 2**-23])}]}
    kill._same(a, a, "state")
    with pytest.raises(TrialFailed, match=r"state.opt\[0\].m differs"):
        kill._same(a, b, "state")


def test_non_finite_training_stops_and_keeps_checkpoints(tmp_path):
    result = nonfinite.run(tmp_path)
    assert result.trials == 8
    assert_all_passed(result)


def test_harness_detects_a_checkpoint_with_non_finite_weights(tmp_path, monkeypatch):
    # Without the weight checks (the trainer before this suite), lr 1e6 wrote checkpoints of
    # NaN/inf BatchNorm statistics while the training loss was still finite.
    monkeypatch.setattr(Trainer, "_non_finite_tensors", lambda self: torch.zeros(()))
    monkeypatch.setattr(Trainer, "_check_finite", lambda self, when: None)
    with pytest.raises(TrialFailed, match="holds non-finite|NaN/inf seen"):
        nonfinite.trial(tmp_path, "lr", None, 1, lr=1e6, warmup="none")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_distributed_faults_end_the_whole_job(tmp_path):
    result = distributed.run(tmp_path)
    assert result.trials == 3
    assert_all_passed(result)
