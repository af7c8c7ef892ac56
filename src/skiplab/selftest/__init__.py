"""Fault injection and hostile input: the harness behind ``docs/reliability.md``.

    python -m skiplab.selftest [FAULT ...] [--trials N] [--json PATH] [--docs PATH]

runs each fault family (all by default) on the CPU with tiny models and synthetic data, and
writes the results as JSON (per fault: trials, passed, failures with reasons, seconds, the
command); ``--docs`` then renders the markdown table from that JSON. The tests in
``tests/reliability/`` call the same functions at small trial counts.

=====================  ========================================================  =============
fault                  what is injected                                          module
=====================  ========================================================  =============
kill                   SIGKILL of the training process at 1-3 random steps       kill
crash-write            death after 0/1/50/99% of a checkpoint file's bytes       checkpoint_faults
damaged-checkpoint     checkpoint files cut or with a flipped byte               checkpoint_faults
malicious-pickle       pickles that run a command, through every loader          hostile_files
hostile-archive        escaping members, links, devices, FIFOs, zip ../x         archives
bad-download           wrong, truncated and reset downloads (local HTTP)         downloads
bad-input              wrong channels, sizes, masks, labels, folders, images     inputs
non-finite             NaN loss at step k, lr 1e6                                nonfinite
distributed            2 gloo ranks: a raise, a hang, SIGTERM                    distributed
size-bomb              tar.gz/zip members of 3 GiB of zeros, forged sizes,       bombs
                       CIFAR batch declaring 3 GiB, forged cache header
image-bomb             20000x20000 PNG in every image input path                 bombs
=====================  ========================================================  =============

``--trials N`` sets the number of trials of ``kill`` (default 10) and the trials per fraction
of ``crash-write`` (default 25); for the other families, whose trials are a fixed list of
cases, it runs the first N cases.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from skiplab.provenance import environment
from skiplab.registry import Registry
from skiplab.selftest import (
    archives,
    bombs,
    checkpoint_faults,
    distributed,
    downloads,
    hostile_files,
    inputs,
    kill,
    nonfinite,
)
from skiplab.selftest.common import FaultResult, command_for
from skiplab.selftest.report import write_docs

# Every fault family, by name, in the order of the table above (and of docs/reliability.md):
# name -> run(work, trials, seed, progress) -> FaultResult.
FAULTS: Registry[Callable[..., FaultResult]] = Registry(
    "fault", describe=lambda run: f"by {run.__module__}.{run.__qualname__}"
)
for _name, _run in (
    ("kill", kill.run),
    ("crash-write", checkpoint_faults.run_crash),
    ("damaged-checkpoint", checkpoint_faults.run_damage),
    ("malicious-pickle", hostile_files.run),
    ("hostile-archive", archives.run),
    ("bad-download", downloads.run),
    ("bad-input", inputs.run),
    ("non-finite", nonfinite.run),
    ("distributed", distributed.run),
    ("size-bomb", bombs.run_archives),
    ("image-bomb", bombs.run_images),
):
    FAULTS.add(_name, _run)


def run_fault(name: str, work: Path, trials: int | None = None, seed: int = 0, progress=None):
    """Run one fault family in folder ``work``; returns its FaultResult."""
    run = FAULTS[name]
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(work, trials, seed, progress or (lambda: None))
    except Exception as exc:  # the family's set-up failed: reported, never skipped
        result = FaultResult(name, name, command=command_for(name, trials))
        result.failures.append(f"set-up failed: {type(exc).__name__}: {exc}")
        return result


def _machine() -> str:
    env = environment()
    return (
        f"{env['system']} {env['machine']}, {env['cpu_count']} CPU core(s), Python "
        f"{env['python']}, torch {env['torch']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m skiplab.selftest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("faults", nargs="*", metavar="FAULT", help=f"any of {list(FAULTS)} (all)")
    p.add_argument("--trials", type=int, help="see above (default: the issue's counts)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random steps and cuts")
    p.add_argument("--out", help="work folder (default: a temporary folder, removed after)")
    p.add_argument("--json", help="results file (default: OUT/reliability.json)")
    p.add_argument("--docs", help="render this markdown file from the JSON afterwards")
    p.add_argument("--render", metavar="JSON", help="only render --docs from this JSON")
    args = p.parse_args(argv)
    if args.render:
        if not args.docs:
            p.error("--render needs --docs")
        print(f"wrote {write_docs(Path(args.render), Path(args.docs))}")
        return 0
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown:
        p.error("; ".join(FAULTS.unknown(f) for f in unknown))
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="skiplab-selftest-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        json_path = Path(args.json) if args.json else work / "reliability.json"
        started = time.strftime("%Y-%m-%d %H:%M %Z")
        results = []
        for name in args.faults or list(FAULTS):
            with tqdm(desc=name, unit="trial", disable=not sys.stderr.isatty(), leave=True) as bar:
                result = run_fault(name, work / name, args.trials, args.seed, bar.update)
            results.append(result)
            status = "ok" if result.passed == result.trials and not result.failures else "FAILED"
            print(
                f"{name:20s} {result.passed:4d}/{result.trials:<4d} passed  "
                f"{result.seconds:6.1f} s  {status}",
                flush=True,
            )
            for failure in result.failures:
                print(f"    {failure}", flush=True)
        command = "python -m skiplab.selftest " + shlex.join(sys.argv[1:] if argv is None else argv)
        record = {
            "started": started,
            "machine": _machine(),
            "docs_command": command.strip(),
            "json_name": str(json_path),
            "faults": [r.to_dict() for r in results],
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {json_path}")
        if args.docs:
            print(f"wrote {write_docs(json_path, Path(args.docs))}")
    failed = any(r.failures or r.passed != r.trials for r in results)
    return 1 if failed else 0
