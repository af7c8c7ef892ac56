"""The two things every training experiment needs: its data at the chosen budget, and runs.

Runs go through :class:`skiplab.train.Trainer` into ``<run>/runs/<name>/``, so each has its
config, ``metrics.jsonl`` and checkpoints; running an experiment again resumes an interrupted
run and reuses a finished one instead of training it again (also across experiments that need
the same net: the name must then stand for the same settings, or the resume is refused).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from skiplab.data import ArrayDataset, load_dataset
from skiplab.experiments.base import Settings
from skiplab.experiments.lease import TimeLimitReached, stop_at_deadline, time_is_up
from skiplab.train import Trainer, resolve_config


@dataclass(frozen=True)
class DataPlan:
    """Which images an experiment trains on: a subset and, for the quick budget, a smaller
    resolution (area downsampling) so that a whole demo fits in minutes on a CPU."""

    train_size: int | None = None
    test_size: int | None = None
    resolution: int | None = None


def classification_data(settings: Settings, plan: DataPlan) -> tuple[ArrayDataset, ArrayDataset]:
    """Train and test splits of ``settings.data`` as the plan says.

    A subset of N images takes the first N/C of each of the C classes (in the split's order), so
    that it stays class-balanced also for image folders, which list the images class by class.
    """
    train = load_dataset(settings.data, "train", data_dir=settings.data_dir)
    test = load_dataset(settings.data, "test", data_dir=settings.data_dir)
    return _shrink(train, plan.train_size, plan.resolution), _shrink(
        test, plan.test_size, plan.resolution
    )


def _shrink(data: ArrayDataset, size: int | None, resolution: int | None) -> ArrayDataset:
    if size is not None and size > len(data):
        raise ValueError(f"asked for {size} images of {data.source}; it has {len(data)}")
    if size is None:
        images, targets = data.images, data.targets
    elif data.task == "classification":
        keep = balanced_prefix(data.targets, size)
        images, targets = data.images[keep], data.targets[keep]
    else:
        images, targets = data.images[:size], data.targets[:size]
    if resolution is not None and resolution != images.shape[-1]:
        if data.task != "classification":
            raise ValueError("resolution changes apply to classification data only")
        images = F.interpolate(images.float(), size=(resolution, resolution), mode="area")
        images = images.round().clamp_(0, 255).to(torch.uint8)
    source = data.source + (f", class-balanced subset of {size}" if size else "")
    source += f", {resolution}x{resolution}" if resolution else ""
    return replace(data, images=images.contiguous(), targets=targets.clone(), source=source)


def balanced_prefix(targets: torch.Tensor, size: int) -> torch.Tensor:
    """Indices of ``size`` samples taken class by class in turn: the first of every class, then
    the second of every class, ... (sorted, so the subset keeps the split's order).

    Example: targets [0, 0, 0, 1, 1, 1], size 4 -> indices [0, 1, 3, 4].
    """
    rank = torch.zeros_like(targets)
    for c in targets.unique():
        where = (targets == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    # Order by (rank within class, position): the key is unique, so the order is total.
    key = rank * len(targets) + torch.arange(len(targets))
    return key.argsort()[:size].sort().values


@dataclass
class RunOutcome:
    """A finished training run: its per-epoch metrics (``final``: the last row) and the
    trained model."""

    name: str
    curves: list[dict]
    final: dict
    model: nn.Module
    warmup_ended_at: int | None = None  # step after which the error-driven warm-up ended


def train_run(
    run_dir: Path,
    name: str,
    settings: Settings,
    *,
    model: str,
    model_args: dict,
    train_data: ArrayDataset,
    val_data: ArrayDataset | None,
    seed: int,
    batch_size: int,
    **train_settings,
) -> RunOutcome:
    """Train one registered model (the paper's step schedule unless ``train_settings`` says
    otherwise) and return its curves.

    Args:
        train_settings: Further :class:`skiplab.train.TrainConfig` fields: the run length
            (``steps`` or ``epochs``), lr, schedule, ...
    """
    out = run_dir / "runs" / name
    cfg = resolve_config(
        cli_values={
            "model": model,
            "model_args": dict(model_args),
            "out": str(out),
            "seed": seed,
            "recipe": "paper",
            # The data are passed in; these fields only record where they came from.
            "data": settings.data,
            "data_dir": None if settings.data_dir is None else str(settings.data_dir),
            "val_split": "auto" if val_data is not None else "none",
            "batch_size": batch_size,
            "device": settings.device,
            "progress": "auto",
            "keep_checkpoints": 1,
            "eval_every": 1,
            "amp": settings.amp,
            "channels_last": settings.channels_last,
            **train_settings,
        }
    )
    resume = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
    if not resume and time_is_up():
        raise TimeLimitReached(f"time limit reached before training run {out} started")
    trainer = Trainer(
        cfg,
        train_data=train_data,
        val_data=val_data,
        resume=resume,
        callbacks=[stop_at_deadline],
    )
    if time_is_up():
        trainer.request_stop()  # a finished run returns at once; another stops after one step
    result = trainer.fit()
    if result.status != "finished" and result.signal is None and time_is_up():
        raise TimeLimitReached(f"time limit reached: {result.message}")
    if result.status != "finished":
        raise RuntimeError(f"training run {out} did not finish: {result.message}")
    curves = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return RunOutcome(name, curves, curves[-1], trainer.model, trainer.schedule.warmup_ended_at)


def _train_and_discard(train_fn: Callable, args: tuple) -> None:
    train_fn(*args)  # the outcome holds the model: leave it in the worker, the run is on disk


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _describe(train_fn: Callable, task: tuple) -> str:
    """``fn('plain', 20, 0)``: the function with the task's plain arguments (and run names)."""
    shown = [a for a in task if isinstance(a, str | int | float)]
    shown += [a["name"] for a in task if isinstance(a, dict) and "name" in a]
    return f"{train_fn.__name__}{tuple(shown)}"


def train_in_parallel(settings: Settings, train_fn: Callable, tasks: list[tuple]) -> None:
    """Run ``train_fn(*task)`` for every task in ``settings.jobs`` worker processes.

    The experiment then runs its usual sequential loop, which finds every run finished in
    ``<run>/runs/`` and only reads it, so results do not depend on ``jobs``. Each worker gets
    ``cores // jobs`` threads (one process per core beats one process with all cores for these
    small nets). Tasks are handed out in the order given: put the longest first. With one job
    or one task nothing happens here.

    Args:
        train_fn: A module-level function (workers are spawned and import it by name).
        tasks: Argument tuples (data included; tensors are pickled to the workers).

    Raises:
        RuntimeError: naming the task that failed (its exception chained), after the pending
            tasks were cancelled and the running ones finished.
    """
    if settings.jobs <= 1 or len(tasks) <= 1:
        return
    threads = max(1, usable_cpus() // settings.jobs)
    with ProcessPoolExecutor(
        max_workers=min(settings.jobs, len(tasks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_set_threads,
        initargs=(threads,),
    ) as pool:
        futures = {pool.submit(_train_and_discard, train_fn, task): task for task in tasks}
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in pending:
            future.cancel()
    for future, task in futures.items():
        if future.done() and not future.cancelled() and future.exception() is not None:
            if isinstance(future.exception(), TimeLimitReached):
                raise future.exception()  # resumable, not a failure
            raise RuntimeError(
                f"parallel training task {_describe(train_fn, task)} failed: {future.exception()}"
            ) from future.exception()


def _train_spec(spec: dict, tolerate: tuple[type[Exception], ...]) -> None:
    try:
        train_run(**spec)
    except tolerate:
        pass  # the sequential pass meets the same error again and records it


def train_runs(
    settings: Settings, specs: list[dict], tolerate: tuple[type[Exception], ...] = ()
) -> list[RunOutcome | Exception]:
    """Train every run of ``specs`` (each a dict of :func:`train_run` arguments), ``settings.jobs``
    at a time, and return their outcomes in the same order.

    Args:
        specs: Keyword arguments of :func:`train_run`, ``run_dir``, ``name`` and ``settings``
            included; put the longest runs first, they are handed out in this order.
        tolerate: Exception types that are returned in the run's place instead of raised (for
            example :class:`skiplab.train.NonFiniteLoss` where divergence is a result).
    """
    train_in_parallel(settings, _train_spec, [(spec, tolerate) for spec in specs])
    outcomes: list[RunOutcome | Exception] = []
    for spec in specs:
        try:
            outcomes.append(train_run(**spec))
        except tolerate as exc:
            outcomes.append(exc)
    return outcomes


def run_rows(keys: list[dict], outcomes: list, curve_keys: tuple[str, ...]) -> list[dict]:
    """One row per trained run: its key, ``diverged`` (the NonFiniteLoss message, or None), its
    curve (``curve_keys`` of every logged row; empty for a diverged run) and where its warm-up
    ended. ``outcomes`` as :func:`train_runs` returns them with ``tolerate=(NonFiniteLoss,)``."""
    rows = []
    for key, outcome in zip(keys, outcomes, strict=True):
        if isinstance(outcome, Exception):
            rows.append({**key, "diverged": str(outcome), "curve": []})
            continue
        rows.append(
            {
                **key,
                "diverged": None,
                "curve": [{k: row[k] for k in curve_keys} for row in outcome.curves],
                "warmup_ended_at": outcome.warmup_ended_at,
            }
        )
    return rows
