"""Fault 1: SIGKILL of a real training process at random steps, then resume.

Each trial kills ``python -m skiplab.selftest.child`` (the real trainer, a checkpoint after
every step) with SIGKILL one to three times, each time at a uniformly drawn step and after a
random delay of up to one step (so the kill also lands inside checkpoint writes), and resumes
with ``--resume`` from the newest valid checkpoint. Passing means: the finished run's weights,
optimizer, schedule and RNG states are bit-identical to an uninterrupted run's, every step
loss printed after a resume equals the uninterrupted run's loss of that step (bit for bit), and
no leftover of an interrupted write survives the next start.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import torch

from skiplab.selftest.common import (
    CHILD_ENV,
    FaultResult,
    check,
    command_for,
    python_command,
    run_trials,
)
from skiplab.train import load_latest

STEPS = 12
TITLE = "SIGKILL at 1-3 random steps, resume from the newest valid checkpoint"


def _start(out: Path, resume: bool) -> subprocess.Popen:
    args = ["-m", "skiplab.selftest.child", "--out", str(out), "--steps", str(STEPS)]
    return subprocess.Popen(
        python_command(*args, *(["--resume"] if resume else [])),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=CHILD_ENV,
    )


def _run(out: Path, resume: bool, kill_after: int | None, delay: float, log: list[str]):
    """One launch; SIGKILL it ``delay`` s after it prints step ``kill_after`` (if given).

    Returns ``{step: loss}`` of the steps it printed and whether it was killed.
    """
    proc = _start(out, resume)
    losses: dict[int, str] = {}
    killed = False
    try:
        for line in proc.stdout:
            log.append(line.rstrip())
            if line.startswith("STEP "):
                _, _, step, loss = line.split()
                losses[int(step)] = loss
                if kill_after is not None and int(step) >= kill_after:
                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
        proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    if killed:
        check(
            proc.returncode == -signal.SIGKILL, f"expected death by SIGKILL; rc {proc.returncode}"
        )
    else:
        check(proc.returncode == 0, f"run failed (rc {proc.returncode}): {log[-5:]}")
    return losses, killed


def final_state(out: Path) -> tuple[dict, dict]:
    ckpt = load_latest(out / "checkpoints", lambda _: None, set_aside=False)
    return ckpt.weights, ckpt.state


def _same(a, b, where: str) -> None:
    """Deep, bit-exact comparison of nested dicts/lists of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        check(
            isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b),
            f"{where} differs from the uninterrupted run",
        )
    elif isinstance(a, dict):
        check(isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys differ")
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        check(isinstance(b, list | tuple) and len(a) == len(b), f"{where}: lengths differ")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        check(a == b, f"{where}: {a!r} != {b!r}")


def compare_runs(run: Path, reference: Path) -> None:
    """Weights, optimizer, schedule, RNG states, step and position: bit for bit."""
    (w, s), (rw, rs) = final_state(run), final_state(reference)
    _same(w, rw, "weights")
    for key in ("optimizer", "schedule", "rng", "step", "epoch", "position", "lr", "epoch_sums"):
        if key == "epoch_sums":  # wall-clock seconds differ by nature
            s[key].pop("seconds"), rs[key].pop("seconds")
        _same(s[key], rs[key], key)


def kill_trial(work: Path, reference: Path, ref_losses: dict[int, str], seed: int) -> str:
    rng = random.Random(seed)
    kills = sorted(rng.sample(range(1, STEPS), rng.randint(1, 3)))
    out, log, resume, notes = work / f"trial-{seed}", [], False, []
    for kill_at in kills:
        losses, killed = _run(out, resume, kill_at, rng.uniform(0.0, 0.1), log)
        _check_losses(losses, ref_losses, log)
        if not killed:  # it finished before reaching the step: nothing left to kill
            break
        newest = load_latest(out / "checkpoints", lambda _: None, set_aside=False).step
        notes.append(f"killed after step {max(losses)}, newest valid checkpoint {newest}")
        resume = True
    else:
        losses, _ = _run(out, True, None, 0.0, log)
        _check_losses(losses, ref_losses, log)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    check(not leftovers, f"leftovers of interrupted writes survived the restart: {leftovers}")
    compare_runs(out, reference)
    cleaned = sum(line.startswith("removed leftover") for line in log)
    return "; ".join(notes) + (
        f"; {cleaned} leftover file(s) cleaned at restart" if cleaned else ""
    )


def _check_losses(losses: dict[int, str], ref: dict[int, str], log: list[str]) -> None:
    for step, loss in losses.items():
        check(
            ref.get(step) == loss,
            f"step {step} loss {loss} differs from the uninterrupted run's {ref.get(step)}",
        )


def run(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    trials = 10 if trials is None else trials
    result = FaultResult("kill", TITLE, command=command_for("kill", trials))
    reference = work / "reference"
    log: list[str] = []
    ref_losses, _ = _run(reference, False, None, 0.0, log)
    check(sorted(ref_losses) == list(range(1, STEPS + 1)), f"reference run: {log[-5:]}")
    return run_trials(
        result,
        (
            (f"trial {i}", lambda i=i: kill_trial(work, reference, ref_losses, seed * 1000 + i))
            for i in range(trials)
        ),
        progress,
    )
