"""Running experiments in time-limited slices: a deadline for ``skiplab reproduce --time-limit``,
and the state of a run folder packed into a few files and unpacked on the next machine.

A slice ends at the deadline: every training run stops at a step boundary with a checkpoint
(:meth:`skiplab.train.Trainer.request_stop`), the experiment being run writes no
``results.json``, and ``reproduce`` exits with :data:`EXIT_RESUMABLE`. Running the same command
again on the same run folder resumes every stopped run and reuses every finished one.

:func:`pack_state` writes the run folder, with only the newest checkpoint of each run, as one
tar file split into parts of a bounded size; :func:`unpack_state` rebuilds the folder from the
parts. ``benchmarks/paper_lease.py`` chains the three on a GPU lease.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

from skiplab.train.checkpoint import list_checkpoints

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry".
EXIT_RESUMABLE = 75
DEADLINE_ENV = "SKIPLAB_DEADLINE"
PART_BYTES = 16 * 2**20
ARCHIVE = "state.tar"

# Tests replace it with a fake clock; the deadline is absolute (seconds since the epoch) so
# that worker processes (``--jobs``), which inherit the environment, share it.
clock: Callable[[], float] = time.time


class TimeLimitReached(RuntimeError):
    """The ``--time-limit`` of ``skiplab reproduce`` ran out; the stopped runs are resumable."""


def set_deadline(seconds: float) -> float:
    """Start a time limit of ``seconds`` from now for this process and its children; returns
    the deadline."""
    if not seconds > 0:
        raise ValueError(f"time limit must be a positive number of seconds; got {seconds!r}")
    deadline = clock() + seconds
    os.environ[DEADLINE_ENV] = repr(deadline)
    return deadline


def clear_deadline() -> None:
    os.environ.pop(DEADLINE_ENV, None)


def deadline() -> float | None:
    """The deadline set by :func:`set_deadline` (here or in a parent process), or None."""
    value = os.environ.get(DEADLINE_ENV)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(
            f"${DEADLINE_ENV} must be seconds since the epoch; got {value!r}"
        ) from None


def time_is_up() -> bool:
    end = deadline()
    return end is not None and clock() >= end


def stop_at_deadline(trainer) -> None:
    """Trainer callback (called after every step): request a stop once the deadline passed."""
    if time_is_up():
        trainer.request_stop()


# -- packing -----------------------------------------------------------------------------------
def _newest_only(run_dir: Path) -> set[Path]:
    """Files of every checkpoint but the newest one of each run (left out of the pack)."""
    older = set()
    for ckpts in run_dir.glob("runs/*/checkpoints"):
        for manifest in list_checkpoints(ckpts)[1:]:
            stem = manifest.name[: -len(".json")]
            older.update(manifest.parent.glob(f"{stem}.*"))
    return older


def pack_state(
    run_dir: Path, out_dir: Path, *, part_bytes: int = PART_BYTES, max_parts: int = 7
) -> list[Path]:
    """Write ``run_dir`` (older checkpoints left out) as ``out_dir/state.tar``, split into
    ``state.tar.00``, ``state.tar.01``, ... when it is larger than ``part_bytes``.

    Returns:
        The files written, in order.

    Raises:
        ValueError: when the state needs more than ``max_parts`` parts (nothing is written).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise ValueError(f"no run folder at {run_dir}")
    skip = _newest_only(run_dir)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(run_dir.rglob("*")):
            if path.is_file() and not path.is_symlink() and path not in skip:
                tar.add(path, arcname=path.relative_to(run_dir).as_posix(), recursive=False)
    data = buffer.getvalue()
    parts = max(1, -(-len(data) // part_bytes))
    if parts > max_parts:
        raise ValueError(
            f"the state of {run_dir} is {len(data) / 2**20:.1f} MiB: {parts} parts of "
            f"{part_bytes / 2**20:g} MiB, more than the {max_parts} allowed; run fewer nets "
            "per chain (fewer seeds or experiments)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if parts == 1:
        names = [out_dir / ARCHIVE]
    else:
        names = [out_dir / f"{ARCHIVE}.{i:02d}" for i in range(parts)]
    for i, name in enumerate(names):
        name.write_bytes(data[i * part_bytes : (i + 1) * part_bytes])
    return names


def state_parts(folder: Path) -> list[Path]:
    """The parts of a packed state in ``folder``, in order (``state.tar`` or its pieces)."""
    folder = Path(folder)
    whole = folder / ARCHIVE
    pieces = sorted(folder.glob(f"{ARCHIVE}.[0-9][0-9]"))
    if whole.is_file() and pieces:
        raise ValueError(f"{folder} holds both {ARCHIVE} and its parts; keep one state only")
    if whole.is_file():
        return [whole]
    expected = [folder / f"{ARCHIVE}.{i:02d}" for i in range(len(pieces))]
    if pieces != expected:
        raise ValueError(
            f"the parts of {folder / ARCHIVE} are not numbered 00..{len(pieces) - 1:02d}: "
            f"{[p.name for p in pieces]}"
        )
    if not pieces:
        raise ValueError(f"no packed state ({ARCHIVE} or {ARCHIVE}.00, ...) in {folder}")
    return pieces


def unpack_state(folder: Path, run_dir: Path) -> int:
    """Extract the packed state of ``folder`` into ``run_dir`` (which must not hold runs yet).

    Members must be plain files or folders with relative paths inside ``run_dir``; anything
    else is refused before a file is written. Returns the number of files written.
    """
    run_dir = Path(run_dir)
    if (run_dir / "runs").exists():
        raise ValueError(f"{run_dir} already holds runs; unpack into a new folder")
    data = b"".join(p.read_bytes() for p in state_parts(folder))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or ".." in parts:
                raise ValueError(f"refusing member {m.name!r} of the packed state in {folder}")
        run_dir.mkdir(parents=True, exist_ok=True)
        count = 0
        for m in members:
            target = run_dir / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(m).read())
            count += 1
    return count


def progress(run_dir: Path) -> list[dict]:
    """Every training run of ``run_dir``: its name, the step and epoch of its newest checkpoint,
    and the epochs (or steps) it is to train."""
    rows = []
    for run in sorted(Path(run_dir).glob("runs/*")):
        manifests = list_checkpoints(run / "checkpoints")
        newest = json.loads(manifests[0].read_text()) if manifests else {}
        config = run / "config.json"
        cfg = json.loads(config.read_text()) if config.is_file() else {}
        rows.append(
            {
                "run": run.name,
                "step": newest.get("step", 0),
                "epoch": newest.get("epoch", 0),
                "epochs": cfg.get("epochs"),
                "steps": cfg.get("steps"),
            }
        )
    return rows
