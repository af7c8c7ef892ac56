"""DistributedDataParallel on two gloo processes (torchrun on 127.0.0.1) against one process.

Two ranks with batch 8 (global 16) must end where one process ends that runs the same steps on
batch 16, computing BatchNorm per 8-sample chunk (the loss is the mean of the two chunks'
losses, and, as DDP broadcasts rank 0's buffers, only the first chunk updates the running
statistics). The run is stopped by a SIGTERM sent to rank 1 alone: rank 0 must stop at the same
step and write the checkpoint.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from skiplab import create_model
from skiplab.data import DeviceLoader, load_dataset
from skiplab.models._base import frozen_bn_stats
from skiplab.train import load_latest
from tests.train.helpers import SUBPROCESS_ENV, write_imagefolder

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="finds the rank-1 worker through /proc (Linux)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in map(int, children):
            out += [child, *_descendants(child)]
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in env:
        if entry.startswith(b"RANK="):
            return int(entry[5:])
    return None


def _reference(data, steps: int) -> dict[str, torch.Tensor]:
    """One process, batch 16, BatchNorm per chunk of 8: a hand-written SGD loop."""
    loader = DeviceLoader(data, 16, train=True, seed=0)
    torch.manual_seed(0)
    model = create_model("resnet20", layers=[1, 1, 1], num_classes=len(data.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for step in range(steps):
        x, y = loader.batch(*divmod(step, len(loader)))
        opt.zero_grad()
        loss = F.cross_entropy(model(x[:8]), y[:8])
        with frozen_bn_stats(model):
            loss = (loss + F.cross_entropy(model(x[8:]), y[8:])) / 2
        loss.backward()
        opt.step()
    return model.state_dict()


def test_two_gloo_ranks_match_one_process(tmp_path):
    data_dir = write_imagefolder(tmp_path / "data", per_class=16)  # 64 images: 4 batches of 16
    run = tmp_path / "run"
    env = {**SUBPROCESS_ENV, "SKIPLAB_CACHE": str(tmp_path / "cache"), "GLOO_SOCKET_IFNAME": "lo"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        "-m",
        "skiplab",
        "train",
        "--model",
        "resnet20",
        "--model-arg",
        "layers=[1,1,1]",
        "--data",
        "imagefolder",
        "--data-dir",
        str(data_dir),
        "--val-split",
        "none",
        "--steps",
        "4000",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "2",
        "--out",
        str(run),
        "--device",
        "cpu",
        "--progress",
        "off",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "step-00000002.json").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no checkpoint after 240 s"
            time.sleep(0.05)
        ranks = {_rank_of(p): p for p in _descendants(proc.pid)}
        assert {0, 1} <= set(ranks), ranks
        os.kill(ranks[1], signal.SIGTERM)  # rank 1 only
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    ckpt = load_latest(run / "checkpoints", lambda _: None)
    k = ckpt.step
    assert 2 <= k < 2000  # lr stays 0.1 before the first milestone (2000)
    assert f"stopped by SIGTERM at step {k}" in output, output
    assert "Resume with: torchrun --nproc-per-node=2 -m skiplab train --out" in output
    assert len(ckpt.state["rng"]) == 2 and ckpt.state["world_size"] == 2

    data = load_dataset("imagefolder", "train", data_dir=data_dir, cache_dir=tmp_path / "cache")
    expected = _reference(data, k)
    assert ckpt.weights.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(ckpt.weights[name], value, rtol=0, atol=1e-5, msg=name)
