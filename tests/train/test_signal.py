"""A real SIGTERM to a real ``skiplab train`` process: checkpoint, exact resume command."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time

from skiplab.train import load_latest
from tests.train.helpers import SUBPROCESS_ENV, write_imagefolder


def _start(args: list[str], cwd) -> subprocess.Popen:
    env = {**SUBPROCESS_ENV, "SKIPLAB_CACHE": str(cwd / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "skiplab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
    )


def test_sigterm_checkpoints_and_says_how_to_resume(tmp_path):
    data = write_imagefolder(tmp_path / "data", per_class=16)  # 64 images: 8 batches of 8
    run = tmp_path / "run"
    proc = _start(
        [
            "train",
            "--model",
            "resnet20",
            "--model-arg",
            "layers=[1,1,1]",
            "--data",
            "imagefolder",
            "--data-dir",
            str(data),
            "--val-split",
            "none",
            "--steps",
            "4000",
            "--batch-size",
            "8",
            "--out",
            str(run),
            "--device",
            "cpu",
            "--progress",
            "off",
        ],
        tmp_path,
    )
    try:
        first = proc.stdout.readline()  # printed right before the first step
        assert first.startswith("training resnet20"), first
        time.sleep(0.5)  # some steps
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, rest
    ckpt = load_latest(run / "checkpoints", lambda _: None)
    epoch, position = ckpt.manifest["epoch"], ckpt.manifest["position"]
    assert 0 < ckpt.step < 4000 and ckpt.step == 8 * epoch + position
    expected = (
        f"stopped by SIGTERM at step {ckpt.step} (epoch {epoch}, batch {position} of 8); "
        f"checkpoint {ckpt.manifest_path}. Resume with: skiplab train --out {run} --resume"
    )
    assert expected in rest

    # The command it names continues the run from that checkpoint (stopped again by SIGINT).
    resume = shlex.split(rest.split("Resume with: ")[1].strip())
    assert resume[:2] == ["skiplab", "train"]
    proc = _start(resume[1:], tmp_path)
    try:
        chosen = proc.stdout.readline()
        assert chosen.startswith(f"using checkpoint {ckpt.manifest_path}: step {ckpt.step}"), chosen
        assert proc.stdout.readline().startswith("training resnet20")
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, rest
    assert "stopped by SIGINT at step" in rest
    assert load_latest(run / "checkpoints", lambda _: None).step > ckpt.step
