"""Peak memory: CUDA's allocator peak, or the peak resident set size of a child process.

On the CPU every measurement runs in a fresh child process, so that peaks do not mix: the
child builds what it measures, reads its resident set size (VmRSS) as the baseline, runs the
steps, and reports the peak resident set size (VmHWM) from ``/proc/self/status`` (Linux) as
one JSON line. ``benchmarks/training_memory.py`` uses the same two functions.

Child entry point (used by :func:`child_peak`)::

    python -m skiplab.bench.memory '{"config": {...}, "case": {...}, "side": "skiplab"}'
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from skiplab.bench.config import BenchConfig, Case
from skiplab.bench.runners import build_runner


def proc_status_kib(field: str) -> int:
    """``field`` ("VmRSS", "VmHWM", ...) of ``/proc/self/status``, in KiB.

    Raises:
        RuntimeError: when not on Linux, or the field is missing.
    """
    status = Path("/proc/self/status")
    if not status.exists():
        raise RuntimeError("peak resident set size is read from /proc/self/status (Linux only)")
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # "VmHWM:   123456 kB"
    raise RuntimeError(f"{field} not found in /proc/self/status")


def run_json_child(argv: list[str], timeout: float | None = None) -> dict:
    """Run ``argv`` and return the JSON object on the last line of its stdout.

    Raises:
        RuntimeError: when the child fails, with its stderr.
    """
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"child process {argv[:4]} failed with code {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1])


def child_peak(cfg, case, side: str) -> dict:
    """Peak RSS of ``side`` of ``case`` measured in a fresh child: ``baseline_mib`` (after
    building model and data), ``peak_mib`` (VmHWM after warm-up and ``cfg.steps`` steps)."""
    spec = json.dumps({"config": cfg.to_dict(), "case": asdict(case), "side": side})
    return run_json_child([sys.executable, "-m", "skiplab.bench.memory", spec])


def _child_main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    cfg, case = BenchConfig.from_dict(spec["config"]), Case(**spec["case"])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runner = build_runner(cfg, case, spec["side"], None)
    baseline = proc_status_kib("VmRSS")
    for _ in range(cfg.warmup + cfg.steps):
        runner.step()
    runner.close()
    peak = proc_status_kib("VmHWM")
    print(json.dumps({"baseline_mib": baseline / 1024, "peak_mib": peak / 1024}))


if __name__ == "__main__":
    _child_main(sys.argv[1])
