"""Process-group set-up for ``torchrun`` launches, and the few collectives the trainer uses.

``torchrun --nproc-per-node=N -m skiplab train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT; a plain ``skiplab train`` sets none of them and runs as a world of
one without any process group. NCCL is used on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

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


def setup(device_name: str) -> tuple[DistInfo, torch.device, bool]:
    """Initialise the process group when launched by torchrun.

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
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size)
    return info, device, True


def teardown(owns_group: bool) -> None:
    if owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks in place (a no-op in a world of one)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (pickled in memory between live processes)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
