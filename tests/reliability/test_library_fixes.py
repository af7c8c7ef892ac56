"""Focused tests of the library fixes the fault-injection suite led to."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from skiplab.models.pretrained import read_weights_file
from skiplab.selftest.common import CHILD_ENV, Payload, tiny_config, tiny_data
from skiplab.selftest.report import render
from skiplab.train import NonFiniteLoss, NonFiniteWeights, TrainConfig, Trainer
from skiplab.train.checkpoint import list_checkpoints, load_checkpoint
from skiplab.train.distributed import DistInfo, RankFailure, _collective


def test_a_moved_run_folder_resumes(tmp_path):
    first = tmp_path / "first"
    Trainer(tiny_config(first, steps=4, checkpoint_every=1), train_data=tiny_data()).fit()
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    other = Trainer(
        tiny_config(moved, steps=6, checkpoint_every=1), train_data=tiny_data(), resume=True
    )
    with pytest.raises(ValueError, match="steps: 4 -> 6"):  # real differences still refused
        other.fit()
    result = Trainer(
        tiny_config(moved, steps=4, checkpoint_every=1), train_data=tiny_data(), resume=True
    ).fit()
    assert result.status == "finished" and result.checkpoint.parent == moved / "checkpoints"


def test_huge_lr_never_checkpoints_non_finite_weights(tmp_path, capsys):
    cfg = tiny_config(tmp_path, steps=20, lr=1e6, warmup="none", checkpoint_every=1)
    with pytest.raises(NonFiniteWeights, match=r"non-finite weights or buffers .*running_var"):
        Trainer(cfg, train_data=tiny_data()).fit()
    assert issubclass(NonFiniteWeights, NonFiniteLoss)  # `skiplab train` exits 1 with it
    manifests = list_checkpoints(tmp_path / "checkpoints")
    assert manifests
    for m in manifests:
        assert all(bool(t.isfinite().all()) for t in load_checkpoint(m).weights.values())


def test_the_per_step_check_counts_exactly_the_non_finite_tensors(tmp_path):
    # One multi-tensor max-abs norm: NaN and inf count, a huge finite value (a BN running
    # variance in an exploding plain net) does not.
    trainer = Trainer(tiny_config(tmp_path, steps=2), train_data=tiny_data())
    (name, weight), (_, other) = list(trainer.model.named_parameters())[:2]
    assert trainer._non_finite_tensors().item() == 0
    with torch.no_grad():
        weight.view(-1)[0] = 1e38
        other.view(-1)[:] = 3e38
    assert trainer._non_finite_tensors().item() == 0
    for value in (float("nan"), float("inf"), float("-inf")):
        with torch.no_grad():
            weight.view(-1)[0] = value
        assert trainer._non_finite_tensors().item() == 1, value
    # The step's forward pass spreads the inf into BN statistics before the check sees it.
    with pytest.raises(
        NonFiniteWeights, match=rf"tensor\(s\) on rank 0 hold NaN or inf, e\.g\. \['{name}'"
    ):
        trainer.fit()


def test_a_module_that_cannot_take_the_data_fails_with_a_value_error(tmp_path):
    data = tiny_data()
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    cfg = tiny_config(tmp_path, model=None, model_args={}, steps=1)
    with pytest.raises(ValueError, match=r"a batch of shape \(2, 3, 16, 16\).*1 channels"):
        Trainer(cfg, model=net, train_data=data)


def test_refused_weights_file_names_the_global(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"a": Payload(tmp_path / "sentinel")}, protocol=2))
    with pytest.raises(ValueError, match=r"refusing to load .*GLOBAL posix.system"):
        read_weights_file(path)
    assert not (tmp_path / "sentinel").exists()


def test_dist_timeout_setting():
    assert TrainConfig().dist_timeout == 1800.0
    with pytest.raises(ValueError, match="dist_timeout must be > 0; got 0"):
        TrainConfig(dist_timeout=0)


def test_a_failed_collective_names_where_every_rank_is():
    def fail():
        raise RuntimeError("Connection closed by peer\nmore")

    info = DistInfo(rank=0, world_size=2)
    with pytest.raises(RankFailure, match=r"rank 0: all_reduce failed \(Connection closed by "):
        _collective("all_reduce", info, fail)


def test_watchdog_ends_a_process_that_makes_no_progress():
    code = (
        "import time\n"
        "from skiplab.train.distributed import DistInfo, Watchdog\n"
        "with Watchdog(DistInfo(rank=1, world_size=2), 0.5) as w:\n"
        "    w.mark('step 3')\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=CHILD_ENV, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 124
    assert "rank 1: no progress for" in proc.stderr and "after step 3" in proc.stderr


def test_report_renders_from_json():
    record = {
        "started": "today",
        "machine": "a test",
        "docs_command": "python -m skiplab.selftest --docs d.md",
        "json_name": "r.json",
        "faults": [
            {"fault": "kill", "title": "SIGKILL", "trials": 2, "passed": 1, "seconds": 3.0,
             "command": "python -m skiplab.selftest kill", "failures": ["trial 1: lost"],
             "details": ["trial 0: fine"]},
        ],
    }  # fmt: skip
    text = render(record)
    assert "| kill | SIGKILL | 2 | 1 | 3.0 | `python -m skiplab.selftest kill` |" in text
    assert "- kill: trial 1: lost" in text and "- trial 0: fine" in text
