"""The torchrun environment as the trainer reads it, and the command that relaunches a run."""

from __future__ import annotations

import pytest

from skiplab.train.distributed import (
    DistInfo,
    dist_info_from_env,
    relaunch_command,
    resolve_device,
)


def test_environment_and_relaunch_command(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert dist_info_from_env() == DistInfo()
    assert relaunch_command(DistInfo(), "runs/a b") == "skiplab train --out 'runs/a b' --resume"
    env = {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    info = dist_info_from_env()
    assert (info.rank, info.world_size, info.local_rank, info.nnodes) == (9, 16, 1, 2)
    assert relaunch_command(info, "runs/x") == (
        "torchrun --nnodes=2 (plus your rendezvous options) --nproc-per-node=8 -m skiplab train "
        "--out runs/x --resume"
    )
    monkeypatch.setenv("RANK", "16")
    with pytest.raises(ValueError, match="inconsistent distributed environment: RANK=16"):
        dist_info_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK must be an integer; got 'x'"):
        dist_info_from_env()


def test_device_names():
    assert str(resolve_device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
