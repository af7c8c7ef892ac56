"""Faults 2 and 3: a crash in the middle of a checkpoint write, and damaged checkpoint files.

Crash (fault 2): a forked child process writes a checkpoint with the real
:func:`~skiplab.train.checkpoint.write_checkpoint`, whose file writes go through a wrapper that
lets exactly N bytes of one file reach the disk and then ends the process with ``os._exit``
(no cleanup, no ``finally``). N is 0%, 1%, 50% or 99% of the weights, state or manifest file,
in turn. Passing means: the checkpoint folder lists only the previous complete checkpoint (its
files' sha256 unchanged) or nothing, no file at a checkpoint's final name is partial, and
after the cleanup the trainer does at start the folder is exactly the previous checkpoint.

Damage (fault 3): files of the newest checkpoint of a real run are cut to 0 bytes, 1 byte,
half, all but one byte, or get one byte flipped in the middle. Passing means: loading names the
file and the reason, and ``resume`` reports it, falls back to the previous checkpoint (saying
so) and finishes; with every checkpoint damaged, resume refuses instead of starting over.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import shutil
from pathlib import Path

import torch

import skiplab.fileio
from skiplab.models import create_model
from skiplab.selftest.common import (
    FaultResult,
    check,
    command_for,
    error_message,
    run_trials,
    sha256_tree,
    tiny_config,
    tiny_data,
)
from skiplab.train import InvalidCheckpoint, Trainer, load_checkpoint
from skiplab.train.checkpoint import clean_leftovers, list_checkpoints, write_checkpoint

CRASH_EXIT = 77
FRACTIONS = (0.0, 0.01, 0.5, 0.99)
ROLES = ("weights", "state", "manifest")  # the order write_checkpoint writes them in
CRASH_TITLE = "process dies after 0/1/50/99% of a checkpoint file's bytes"
DAMAGE_TITLE = "checkpoint file cut to 0 B, 1 B, half, all but 1 B, or 1 byte flipped"


class _CuttingFile:
    """A file whose writes stop the process once ``budget`` bytes have reached the disk."""

    def __init__(self, fh, budget: list[int]) -> None:
        self._fh, self._budget = fh, budget

    def write(self, data: bytes) -> int:
        n = min(len(data), self._budget[0])
        if n:
            self._fh.write(data[:n])
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self._budget[0] -= n
        if n < len(data):  # the budget is spent: die with the rest unwritten
            os._exit(CRASH_EXIT)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)


def _sample_checkpoint(seed: int) -> dict:
    """Weights and training state of a tiny net after one SGD step (different per seed)."""
    torch.manual_seed(seed)
    model = create_model("resnet20", layers=[1, 1, 1], num_classes=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    opt.step()
    return {"weights": model.state_dict(), "optimizer": opt.state_dict()}


def _write(folder: Path, step: int, sample: dict) -> Path:
    state = {"step": step, "optimizer": sample["optimizer"], "rng": [torch.get_rng_state()]}
    return write_checkpoint(
        folder,
        step=step,
        epoch=0,
        position=step,
        weights=sample["weights"],
        state=state,
        meta={},
        keep=2,
    )


def _sizes(step: int, sample: dict, scratch: Path) -> dict[str, int]:
    shutil.rmtree(scratch, ignore_errors=True)
    manifest = _write(scratch, step, sample)
    entry = load_checkpoint(manifest).manifest["files"]
    return {
        "weights": entry["weights"]["bytes"],
        "state": entry["state"]["bytes"],
        "manifest": manifest.stat().st_size,
    }


def _crash_write(folder: Path, step: int, sample: dict, budget: int) -> int:
    """Fork; the child writes the checkpoint and dies after ``budget`` bytes. Its exit code."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            left = [budget]
            skiplab.fileio.open = lambda *a, **k: _CuttingFile(open(*a, **k), left)
            _write(folder, step, sample)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def crash_trial(work: Path, fraction: float, index: int, write=_crash_write) -> str:
    rng = random.Random(f"{fraction}-{index}")
    role = ROLES[index % 3]
    folder = work / f"crash-{fraction}-{index}"
    sample = _sample_checkpoint(rng.randrange(10**6))
    previous = None if index % 5 == 4 else 1  # every fifth trial: the first checkpoint
    if previous:
        _write(folder, previous, sample)
    before = sha256_tree(folder)
    sizes = _sizes(2, sample, work / "scratch")
    offset = sum(sizes[r] for r in ROLES[: ROLES.index(role)])
    cut = int(fraction * sizes[role])
    code = write(folder, 2, sample, offset + cut)
    check(code == CRASH_EXIT, f"the writer did not die at the cut (exit code {code})")
    # The cut was real: a temporary file with exactly the bytes written so far.
    tmps = {p.name: p.stat().st_size for p in folder.iterdir() if p.name.startswith(".tmp-")}
    check(list(tmps.values()) == [cut], f"expected one partial file of {cut} bytes; got {tmps}")
    listed = [p.name for p in list_checkpoints(folder)]
    expected = [f"step-{previous:08d}.json"] if previous else []
    check(listed == expected, f"checkpoints listed after the crash: {listed}, expected {expected}")
    for name, digest in before.items():
        check(sha256_tree(folder).get(name) == digest, f"previous checkpoint file {name} changed")
    if previous:
        load_checkpoint(folder / expected[0])  # still loads
    for p in folder.iterdir():  # anything at a final name of step 2 is complete
        if p.name.startswith("step-00000002."):
            kind = "weights" if p.suffix == ".safetensors" else "state"
            check(p.stat().st_size == sizes[kind], f"partial file at a final name: {p.name}")
    removed = clean_leftovers(folder)
    check(
        sha256_tree(folder) == before,
        f"after cleanup the folder holds {sorted(sha256_tree(folder))}",
    )
    shutil.rmtree(folder)
    return f"{role} cut at {cut}/{sizes[role]} B, {len(removed)} leftover(s) removed"


def run_crash(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    trials = 25 if trials is None else trials
    result = FaultResult("crash-write", CRASH_TITLE, command=command_for("crash-write", trials))
    items = (
        (f"{int(f * 100)}% trial {i}", lambda f=f, i=i: crash_trial(work, f, seed * 1000 + i))
        for f in FRACTIONS
        for i in range(trials)
    )
    result = run_trials(result, items, progress)
    result.details = result.details[:: max(1, trials)]  # one example note per fraction
    return result


# -- damaged files ---------------------------------------------------------------------------------
DAMAGES = {
    "0 bytes": lambda b: b"",
    "1 byte": lambda b: b[:1],
    "half": lambda b: b[: len(b) // 2],
    "all but one byte": lambda b: b[:-1],
    "one flipped byte": lambda b: (
        b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1 :]
    ),
}
REASONS = ("truncated", "sha256 mismatch", "unreadable manifest", "missing")


def _base_run(work: Path) -> Path:
    out = work / "base"
    with contextlib.redirect_stdout(io.StringIO()):
        Trainer(tiny_config(out, steps=4, checkpoint_every=1), train_data=tiny_data()).fit()
    return out


def _resume(out: Path) -> tuple[str, object]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = Trainer(
            tiny_config(out, steps=4, checkpoint_every=1), train_data=tiny_data(), resume=True
        ).fit()
    return buffer.getvalue(), result


def damage_trial(base: Path, work: Path, damage: str, role: str) -> str:
    out = work / f"damage-{role}-{damage.replace(' ', '-')}"
    shutil.copytree(base, out)
    folder = out / "checkpoints"
    newest = folder / "step-00000004.json"
    target = {
        "weights": folder / "step-00000004.safetensors",
        "state": folder / "step-00000004.state.pt",
        "manifest": newest,
    }[role]
    target.write_bytes(DAMAGES[damage](target.read_bytes()))
    message = error_message(
        lambda: load_checkpoint(newest), InvalidCheckpoint, "the damaged checkpoint loaded"
    )
    check(str(target) in message or str(newest) in message, f"error names no file: {message}")
    check(any(r in message for r in REASONS), f"error gives no reason: {message}")
    log, result = _resume(out)
    check(f"checkpoint {newest.name} is invalid: " in log, f"resume did not report it: {log}")
    check("step-00000003.json (an older, valid one)" in log, f"no fallback reported: {log}")
    check(result.status == "finished" and result.step == 4, f"resume ended {result}")
    shutil.rmtree(out)
    return message.replace(str(work), "...")


def all_damaged_trial(base: Path, work: Path) -> str:
    out = work / "damage-all"
    shutil.copytree(base, out)
    for p in (out / "checkpoints").glob("*.safetensors"):
        p.write_bytes(b"")
    message = error_message(
        lambda: _resume(out), ValueError, "resume started although every checkpoint is damaged"
    )
    check("no valid checkpoint in" in message, f"unexpected error: {message}")
    check(not list_checkpoints(out / "checkpoints"), "a new checkpoint was written")
    return "refused: " + message.replace(str(work), "...")[:120]


def run_damage(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult(
        "damaged-checkpoint", DAMAGE_TITLE, command=command_for("damaged-checkpoint", None)
    )
    base = _base_run(work)
    items = [
        (f"{role} {damage}", lambda d=damage, r=role: damage_trial(base, work, d, r))
        for role in ("weights", "state", "manifest")
        for damage in DAMAGES
    ]
    items.append(("every checkpoint damaged", lambda: all_damaged_trial(base, work)))
    return run_trials(result, items[: trials if trials else None], progress)
