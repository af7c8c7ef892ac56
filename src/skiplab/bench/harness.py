"""The measurement loop: both sides of every case, interleaved, medians and ratios.

For each case both runners are built in this process and warmed up (``cfg.warmup`` untimed
steps each, where ``torch.compile`` compiles); then ``cfg.repeats`` times, alternating which
side goes first, each side runs ``cfg.steps`` timed steps. Throughput is images per wall
second over a window (on CUDA the window ends with a synchronisation). The result reports
every window, the medians and ``ratio = skiplab median / reference median``.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from skiplab.bench.config import SIDES, BenchConfig, Case, all_cases
from skiplab.bench.memory import child_peak
from skiplab.bench.runners import Runner, bench_data, build_runner
from skiplab.hardware import processor
from skiplab.provenance import git_revision


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_window(runner: Runner, steps: int, device: torch.device) -> float:
    """Images per second over ``steps`` steps of ``runner``."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        runner.step()
    _sync(device)
    return runner.batch * steps / (time.perf_counter() - start)


def measure_case(cfg: BenchConfig, case: Case, log: Callable[[str], None] = print) -> dict:
    """Both sides of ``case``: descriptions, every window's images/s, medians, ratio, and
    peak memory (when ``cfg.memory``)."""
    device = torch.device(cfg.device)
    data = bench_data(case.model, cfg.num_images, cfg.seed) if case.mode == "train" else None
    runners = {side: build_runner(cfg, case, side, data) for side in SIDES}
    try:
        for side, runner in runners.items():
            started = time.perf_counter()
            for _ in range(cfg.warmup):
                runner.step()
            _sync(device)
            log(f"  {side}: warm-up {time.perf_counter() - started:.1f} s")
        windows: dict[str, list[float]] = {side: [] for side in SIDES}
        cuda_peak: dict[str, int] = dict.fromkeys(SIDES, 0)
        for r in range(cfg.repeats):
            for side in SIDES if r % 2 else SIDES[::-1]:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                windows[side].append(time_window(runners[side], cfg.steps, device))
                if device.type == "cuda":
                    cuda_peak[side] = max(cuda_peak[side], torch.cuda.max_memory_allocated(device))
    finally:
        for runner in runners.values():
            runner.close()
    result = {"model": case.model, "mode": case.mode, "batch": case.batch}
    for side in SIDES:
        result[side] = {
            "description": runners[side].description,
            "images_per_s": windows[side],
            "median": statistics.median(windows[side]),
        }
    result["ratio"] = result["skiplab"]["median"] / result["reference"]["median"]
    result["window_ratios"] = [
        s / r for s, r in zip(windows["skiplab"], windows["reference"], strict=True)
    ]
    if cfg.memory:
        if device.type == "cuda":
            result["memory"] = {
                side: {"peak_mib": cuda_peak[side] / 2**20, "kind": "cuda max_memory_allocated"}
                for side in SIDES
            }
        else:
            result["memory"] = {
                side: {**child_peak(cfg, case, side), "kind": "child process VmHWM"}
                for side in SIDES
            }
    return result


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Measure every case of ``cfg``; returns the JSON-able record (machine, config, results)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cases = all_cases(cfg)
    record = {"machine": machine_info(cfg.device), "command": _command(), "config": cfg.to_dict()}
    results = []
    show = sys.stderr.isatty()
    for case in tqdm(cases, disable=not show, desc="bench", file=sys.stderr):
        log(f"{case.model} {case.mode} batch {case.batch}")
        results.append(measure_case(cfg, case, log))
    record["results"] = results
    return record


def machine_info(device: str) -> dict:
    """Where the numbers come from: CPU, cores, versions, GPU, git revision."""
    import torchvision  # here, not at the top: torchvision is slow to import

    cpu = processor()
    info = {
        "cpu": cpu.model,
        "cpu_native_bf16": cpu.native_bf16,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device,
        "git_revision": git_revision(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _command() -> str:
    prog = Path(sys.argv[0]).name
    prog = "python -m skiplab" if prog == "__main__.py" else prog
    return " ".join([prog, shlex.join(sys.argv[1:])])
