"""Process-group set-up for ``torchrun`` launches, and the few collectives the trainer uses.

``torchrun --nproc-per-node=N -m skiplab train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; a plain ``skiplab train`` sets none of them and runs as a world of
one without any process group. NCCL is used on CUDA, gloo on CPU.

A distributed job must never wait forever on a rank that crashed or hangs. Every collective
runs under the process group's ``timeout``; each rank records the step it has reached in the
job's key-value store, so that a collective that fails (a timeout, or a peer that died) raises
:class:`RankFailure` naming the ranks that did not arrive; and a :class:`Watchdog` ends a rank
whose training makes no progress for ``timeout`` seconds (a hang in user code, data loading or
a collective), so that ``torchrun`` stops the whole job instead of waiting for it.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    nnodes: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer; got {value!r}") from None


def dist_info_from_env() -> DistInfo:
    """Read RANK, WORLD_SIZE, LOCAL_RANK (and LOCAL_WORLD_SIZE) as torchrun sets them."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise ValueError(
            f"inconsistent distributed environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_world}"
        )
    return DistInfo(rank, world, local_rank, local_world, max(world // max(local_world, 1), 1))


def relaunch_command(info: DistInfo, out: str) -> str:
    """The command that continues run folder ``out`` with the same launch (for messages)."""
    out = shlex.quote(out)
    if not info.enabled:
        return f"skiplab train --out {out} --resume"
    nodes = f" --nnodes={info.nnodes} (plus your rendezvous options)" if info.nnodes > 1 else ""
    return (
        f"torchrun{nodes} --nproc-per-node={info.local_world_size} -m skiplab train "
        f"--out {out} --resume"
    )


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" -> this process's GPU when CUDA is available, else the CPU; "cuda" -> the GPU
    of LOCAL_RANK; "cpu" and "cuda:N" as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {name!r}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {name!r}")
    return device


class RankFailure(RuntimeError):
    """A collective failed (timed out, or a peer died); the message names the ranks that did
    not arrive and the step each one last reached."""


def setup(device_name: str, timeout: float | None = None) -> tuple[DistInfo, torch.device, bool]:
    """Initialise the process group when launched by torchrun.

    Args:
        device_name: As :func:`resolve_device` takes it.
        timeout: Seconds a collective may wait for the other ranks before it fails (None:
            torch's default).

    Returns:
        (info, device, owns_group): ``owns_group`` is True when this call created the group
        (and :func:`teardown` should destroy it).
    """
    info = dist_info_from_env()
    device = resolve_device(device_name, info.local_rank)
    if not info.enabled or dist.is_initialized():
        return info, device, False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"timeout": timedelta(seconds=timeout)} if timeout is not None else {}
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size, **kwargs)
    return info, device, True


def teardown(owns_group: bool) -> None:
    """Destroy the process group this process created.

    Runs in the trainer's ``finally``: an error here (a peer that already closed its side)
    is reported on stderr rather than raised, so that it neither replaces the exception that
    is ending the run nor turns a finished or cleanly stopped run into a crash.
    """
    if owns_group and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except (RuntimeError, OSError) as exc:
            print(
                f"skiplab: destroying the process group failed ({type(exc).__name__}: {exc})",
                file=sys.stderr,
                flush=True,
            )


_PROGRESS_KEY = "skiplab/progress/{}"


_store_warned = False


def mark_progress(info: DistInfo, where: str) -> None:
    """Record in the job's store where this rank is (e.g. "step 12"), for :class:`RankFailure`
    messages of the other ranks (a no-op in a world of one).

    The record is diagnostic only: when the store cannot be reached (``torchrun`` hosts it and
    closes it while a SIGTERM stops the job, as the ranks write their last checkpoint) this
    says so once on stderr and training goes on.
    """
    global _store_warned
    if not info.enabled:
        return
    try:
        dist.distributed_c10d._get_default_store().set(_PROGRESS_KEY.format(info.rank), where)
    except (RuntimeError, OSError, ValueError) as exc:
        if not _store_warned:
            _store_warned = True
            print(
                f"skiplab: rank {info.rank}: could not record progress in the job's store "
                f"({type(exc).__name__}: {exc}); failure messages will lack it",
                file=sys.stderr,
                flush=True,
            )


def _progress_of_others(info: DistInfo) -> str:
    try:
        store = dist.distributed_c10d._get_default_store()
        found = []
        for rank in range(info.world_size):
            key = _PROGRESS_KEY.format(rank)
            where = store.get(key).decode() if store.check([key]) else "not started"
            found.append(f"rank {rank}: {where}")
        return "; ".join(found)
    except Exception as exc:  # the store itself may be gone with the job
        return f"progress of the other ranks unknown ({type(exc).__name__}: {exc})"


def _collective(what: str, info: DistInfo, call: Callable[[], object]):
    """Run one collective; a failure becomes a RankFailure naming where every rank is."""
    try:
        return call()
    except RuntimeError as exc:  # DistBackendError, gloo timeouts and closed connections
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankFailure(
            f"rank {info.rank}: {what} failed ({first}); ranks that did not arrive have crashed "
            f"or hang. Last progress recorded: {_progress_of_others(info)}"
        ) from exc


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op in a world of one)."""
    if info.enabled:
        _collective("all_reduce", info, lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM))
    return t


def all_gather_objects(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (pickled in memory between live processes)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    _collective("all_gather_object", info, lambda: dist.all_gather_object(out, obj))
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        _collective("barrier", info, dist.barrier)


class Watchdog:
    """Ends this process when it makes no progress for ``timeout`` seconds.

    A rank that hangs (in user code, data loading, or a collective whose own timeout does not
    fire) would otherwise keep a distributed job alive: ``torchrun`` stops the other ranks
    when one exits, but waits for this one. The watchdog prints one line naming the rank, the
    last progress and the limit to stderr, then calls ``os._exit(exit_code)``.

    Args:
        info: This rank.
        timeout: Seconds without a call to :meth:`mark` before the process is ended.
        exit_code: Exit status of the ended process.
    """

    def __init__(self, info: DistInfo, timeout: float, exit_code: int = 124) -> None:
        self.info, self.timeout, self.exit_code = info, float(timeout), exit_code
        self._where, self._last = "start", time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="skiplab-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def mark(self, where: str) -> None:
        """Record progress (``where``, e.g. "step 12") now."""
        self._where, self._last = where, time.monotonic()

    def _watch(self) -> None:
        poll = min(1.0, self.timeout / 10)
        while not self._stopped.wait(poll):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                print(
                    f"skiplab: rank {self.info.rank}: no progress for {idle:.1f} s after "
                    f"{self._where} (dist_timeout {self.timeout:g} s); ending this process so "
                    "that the whole job stops",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(self.exit_code)
