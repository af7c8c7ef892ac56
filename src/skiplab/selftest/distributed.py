"""Fault 9: distributed faults on two gloo processes (``torchrun`` on 127.0.0.1, CPU).

The job is ``torchrun --nproc-per-node=2 -m skiplab.selftest.child`` with ``--dist-timeout``.
One rank raises at step 3; one rank hangs (sleeps forever) after step 3; or the job (the
``torchrun`` process) gets SIGTERM. Passing means: the job exits non-zero within the timeout
plus 30 s of the fault, no process of the job is left alive, every report line is whole (the
ranks share one pipe), and the log names the failing rank; after SIGTERM, every rank
checkpoints and stops at the same step (the checkpoint's).
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from skiplab.selftest.common import CHILD_ENV, FaultResult, check, command_for, run_trials
from skiplab.train import load_latest

TITLE = "2 gloo ranks: one raises at step 3, one hangs, SIGTERM to the job"
TIMEOUT = 15.0  # --dist-timeout of the job (seconds)
FAULT_STEP = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in map(int, (task / "children").read_text().split()):
                found |= {child, *_descendants(child)}
    except OSError:
        pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _launch(out: Path, *extra: str) -> subprocess.Popen:
    command = [
        "python", "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
        "--master-addr=127.0.0.1", f"--master-port={_free_port()}",
        "-m", "skiplab.selftest.child", "--out", str(out), "--steps", "100000",
        "--dist-timeout", str(TIMEOUT), *extra,
    ]  # fmt: skip
    command[0] = sys.executable
    env = {**CHILD_ENV, "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _watch(proc: subprocess.Popen, until, limit: float) -> tuple[list[str], float, set[int]]:
    """Read the job's output; call ``until(line)`` per line until it returns True.

    Returns the lines, the monotonic time ``until`` fired, and every process of the job seen.
    """
    lines: list[str] = []
    pids: set[int] = set()
    fired: list[float] = []
    done = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line.rstrip())
            if not fired and until(line):
                fired.append(time.monotonic())
        done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + limit
    while not done.is_set() and time.monotonic() < deadline:
        pids |= _descendants(proc.pid)
        time.sleep(0.2)
    if not done.is_set():
        proc.kill()
        for pid in pids:
            with_suppress_kill(pid)
        thread.join(5)
    proc.wait()
    return lines, (fired[0] if fired else float("nan")), pids


def with_suppress_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _finish_checks(proc, lines, fired, pids, ended: float) -> None:
    torn = [line for line in lines if len(re.findall(r"(?:STEP|RESULT|HANG) \d", line)) > 1]
    check(not torn, f"ranks' reports share a line (interleaved writes): {torn[:3]}")
    check(proc.returncode != 0, f"the job exited 0: {lines[-5:]}")
    check(not math.isnan(fired), f"the fault never happened: {lines[-8:]}")
    took = ended - fired
    check(took <= TIMEOUT + 30, f"the job took {took:.1f} s after the fault (limit {TIMEOUT + 30})")
    time.sleep(0.5)
    left = sorted(p for p in pids if _alive(p))
    check(not left, f"processes left behind: {left}")


def fault_trial(work: Path, mode: str) -> str:
    out = work / f"ddp-{mode}"
    proc = _launch(out, "--fail-rank", "1", "--fail-step", str(FAULT_STEP), "--fail-mode", mode)
    marker = f"STEP 1 {FAULT_STEP} " if mode == "raise" else f"HANG 1 {FAULT_STEP}"
    lines, fired, pids = _watch(proc, lambda line: line.startswith(marker), 240)
    ended = time.monotonic()
    _finish_checks(proc, lines, fired, pids, ended)
    named = [line for line in lines if "rank 1" in line or "rank: 1" in line]
    check(named, f"the log does not name rank 1: {lines[-10:]}")
    progress = [
        line.split("Last progress recorded: ")[1] for line in lines if "Last progress" in line
    ]
    return (
        f"exit {proc.returncode} {ended - fired:.1f} s after the fault; named in: "
        + "; ".join(line.strip()[:90] for line in named[:2])
        + (f"; rank 0 saw {progress[0]}" if progress else "")
    )


def sigterm_trial(work: Path) -> str:
    out = work / "ddp-sigterm"
    proc = _launch(out)
    seen: set[str] = set()

    def ready(line: str) -> bool:
        if line.startswith("STEP ") and int(line.split()[2]) >= FAULT_STEP:
            seen.add(line.split()[1])
        if seen == {"0", "1"}:
            proc.send_signal(signal.SIGTERM)
            return True
        return False

    lines, fired, pids = _watch(proc, ready, 240)
    ended = time.monotonic()
    _finish_checks(proc, lines, fired, pids, ended)
    results = {r.split()[1]: r.split()[2:] for r in lines if r.startswith("RESULT ")}
    reports = [line for line in lines if line.startswith(("RESULT", "STEP"))][-6:]
    check(
        set(results) == {"0", "1"},
        f"not every rank reported its stop: {reports} {lines[-8:]}",
    )
    steps = {rank: int(step) for rank, (status, step) in results.items()}
    check(all(s == "stopped" for s, _ in results.values()), f"ranks ended {results}")
    check(len(set(steps.values())) == 1, f"ranks stopped at different steps: {steps}")
    ckpt = load_latest(out / "checkpoints", lambda _: None, set_aside=False)
    check(ckpt.step == steps["0"], f"checkpoint at step {ckpt.step}, ranks stopped at {steps}")
    check(len(ckpt.state["rng"]) == 2, "the checkpoint lacks a rank's RNG state")
    return f"both ranks stopped at step {ckpt.step} with its checkpoint; exit {proc.returncode}"


def run(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("distributed", TITLE, command=command_for("distributed", None))
    items = [
        ("rank 1 raises at step 3", lambda: fault_trial(work, "raise")),
        (f"rank 1 hangs after step 3 (timeout {TIMEOUT:g} s)", lambda: fault_trial(work, "hang")),
        ("SIGTERM to torchrun", lambda: sigterm_trial(work)),
    ]
    return run_trials(result, items[: trials if trials else None], progress)
