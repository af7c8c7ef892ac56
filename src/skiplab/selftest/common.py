"""What every fault family shares: trial bookkeeping, tiny data and configs, and the payload.

A fault family is a function ``run(work, trials, seed) -> FaultResult``. Each trial either
passes (the promise held) or fails with a reason; a trial that raises anything unexpected fails
with that exception as its reason, so a broken harness never passes silently.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from skiplab.data import ArrayDataset
from skiplab.train import TrainConfig, resolve_config

# resnet20 with one unit per stage (8 layers), drop-path 0.3 (so results depend on every RNG
# state) on 24 images of 16x16 in 4 classes, batch 8: 3 steps per epoch, milliseconds a step.
TINY_SETTINGS = {
    "model": "resnet20",
    "model_args": {"layers": [1, 1, 1], "drop_path_rate": 0.3},
    "batch_size": 8,
    "progress": "off",
    "device": "cpu",
    "val_split": "none",
    "nesterov": True,
    "label_smoothing": 0.1,
}
# Child processes: one thread each (the harness runs on small shared machines).
# PYTHONUNBUFFERED=1 is the worst case for output shared between ranks (every print becomes
# separate writes): the children must report in whole lines even then.
CHILD_ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


class TrialFailed(AssertionError):
    """A promise did not hold in one trial; the message says which and how."""


def check(condition: bool, reason: str) -> None:
    """Fail the current trial with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise TrialFailed(reason)


def error_message(
    call: Callable[[], object],
    errors: type[Exception] | tuple[type[Exception], ...],
    accepted: str,
) -> str:
    """The message of the error (one of ``errors``) that ``call`` must raise; the trial fails
    with ``accepted`` when it raises none."""
    try:
        call()
    except errors as exc:
        return str(exc)
    raise TrialFailed(accepted)


@dataclass
class FaultResult:
    """The outcome of one fault family.

    Attributes:
        fault: Short name (e.g. "kill").
        title: What was injected, for the report table.
        trials: Trials run.
        passed: Trials in which nothing was lost and every promise held.
        failures: ``"trial name: reason"`` for every other trial.
        seconds: Wall time of the family.
        command: The command that reproduces these numbers.
        details: Per-trial notes (e.g. the steps at which a process was killed).
    """

    fault: str
    title: str
    trials: int = 0
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    command: str = ""
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def command_for(fault: str, trials: int | None) -> str:
    extra = f" --trials {trials}" if trials is not None else ""
    return f"python -m skiplab.selftest{extra} {fault}"


def run_trials(
    result: FaultResult,
    trials: Iterable[tuple[str, Callable[[], str | None]]],
    progress: Callable[[], None] = lambda: None,
) -> FaultResult:
    """Run ``(name, trial)`` pairs into ``result``; a trial returns an optional note."""
    started = time.perf_counter()
    for name, trial in trials:
        result.trials += 1
        try:
            note = trial()
        except TrialFailed as exc:
            result.failures.append(f"{name}: {exc}")
        except Exception as exc:  # an unexpected error is a failed trial, with its reason
            where = traceback.format_exception(exc)[-2].strip().splitlines()[0]
            result.failures.append(f"{name}: unexpected {type(exc).__name__}: {exc} ({where})")
        else:
            result.passed += 1
            if note:
                result.details.append(f"{name}: {note}")
        progress()
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def tiny_data(n: int = 24, size: int = 16, classes: int = 4, seed: int = 0) -> ArrayDataset:
    """Random uint8 images whose class is written into their mean brightness."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % classes
    images = torch.randint(0, 128, (n, 3, size, size), generator=g, dtype=torch.uint8)
    images = (images + (targets * (127 // classes)).to(torch.uint8).view(n, 1, 1, 1)).contiguous()
    names = tuple(f"c{k}" for k in range(classes))
    return ArrayDataset(
        images, targets, names, "classification", (0.5,) * 3, (0.25,) * 3, f"tiny seed={seed}"
    )


def tiny_config(out: Path, **values) -> TrainConfig:
    return resolve_config(cli_values={**TINY_SETTINGS, "out": str(out), **values})


def sha256_tree(folder: Path) -> dict[str, str]:
    """{name: sha256} of every file directly in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


class Payload:
    """Unpickling this runs the shell command ``touch SENTINEL`` (through ``os.system``)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = Path(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.sentinel))}",))


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]
