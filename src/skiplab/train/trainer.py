"""The training loop: one step at a time, resumable at any step boundary.

The trainer knows nothing about any architecture: it takes a registered model name (built
with ``skiplab.create_model``) or an ``nn.Module``, and ``ArrayDataset``s (or loads them by
name). Every batch is ``loader.batch(epoch, index)``, a pure function of its position, and the
checkpoint holds everything else that changes during training (weights, optimizer, schedule,
RNG states of every rank, step, epoch, position in the epoch), so a resumed run on the CPU
ends bit-identical to an uninterrupted one.

Per step: forward, one all-reduce of (loss, wrong, count, non-finite weights, stop flags) so
that every rank agrees on the training error (for the warm-up), on a non-finite loss or weights
(stop before the update, no checkpoint afterwards) and on a signal (checkpoint and stop at the
same step), then backward and the SGD update (:meth:`Trainer._train_step`; the all-reduce's
packing is :mod:`skiplab.train.guard`). Weights and buffers are checked again before every
checkpoint and evaluation, so a checkpoint never holds NaN or infinite values.

In a distributed run every collective fails after ``cfg.dist_timeout`` seconds, naming the
ranks that did not arrive, and a watchdog ends a rank that makes no progress for that long, so
a crashed or hung rank stops the whole job instead of stalling it.

Messages (the run's first line, one line per epoch, checkpoint fall-backs, the stop) go to the
``skiplab.train`` logger at INFO, from rank 0 only. Unless the ``skiplab`` logger already has a
handler, the first Trainer gives it one that writes the bare message to stdout; records also
propagate to the root logger's handlers.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from skiplab.data import ArrayDataset, DeviceLoader, TextDataset, TextLoader
from skiplab.data.text import TASK as TEXT_TASK
from skiplab.hardware import describe_precision, resolve_amp
from skiplab.train import build, distributed, runtime
from skiplab.train.checkpoint import (
    LoadedCheckpoint,
    atomic_write,
    clean_leftovers,
    load_latest,
    write_checkpoint,
)
from skiplab.train.config import RUNTIME_FIELDS, TrainConfig, config_diff
from skiplab.train.evaluate import autocast, evaluate
from skiplab.train.guard import Agreed, StepGuard
from skiplab.train.losses import Loss
from skiplab.train.metrics_log import MetricsLog
from skiplab.train.schedule import LRSchedule

logger = logging.getLogger("skiplab.train")


class _Stdout(logging.StreamHandler):
    """A handler on whatever ``sys.stdout`` is at the time of each record (redirected, or
    replaced by a notebook or a test), writing the bare message."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def _console_logging() -> None:
    """Give the ``skiplab`` logger a stdout handler at INFO, unless it has handlers already."""
    package = logging.getLogger("skiplab")
    if not package.handlers:
        package.addHandler(_Stdout())
        if package.level == logging.NOTSET:
            package.setLevel(logging.INFO)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite; the message names step, epoch and lr."""


class NonFiniteWeights(NonFiniteLoss):
    """The weights or buffers became NaN or infinite (the loss may still be finite, e.g. a
    BatchNorm running variance that overflowed); the message names step, lr and a tensor."""


@dataclass
class FitResult:
    """How a call to :meth:`Trainer.fit` ended.

    Attributes:
        status: "finished" or "stopped" (by a signal or :meth:`Trainer.request_stop`).
        step, epoch, position: Where training stands (position: batches done in ``epoch``).
        checkpoint: Manifest of the last checkpoint written.
        metrics: The last evaluation (empty when there was none).
        message: What happened, with the command that resumes a stopped run.
        signal: The signal number that stopped it, if any.
    """

    status: str
    step: int
    epoch: int
    position: int
    checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    signal: int | None = None


class Trainer:
    """Trains one network as ``cfg`` says.

    Args:
        cfg: The run's settings (see :class:`TrainConfig`).
        model: A module to train instead of ``cfg.model`` (then ``cfg.model`` must be None).
        train_data, val_data: Datasets to use instead of loading ``cfg.data``
            (``ArrayDataset`` images, or ``TextDataset`` characters for a language model).
        callbacks: A callable is called as ``callback(trainer)`` after every step (e.g. to
            stop early); an object with an ``on_epoch_end(trainer, row)`` method has it called
            at the end of every epoch (and of the run) with the metrics row written to
            ``metrics.csv`` (on every rank; the ``val_*`` entries on rank 0 only), e.g.
            :class:`skiplab.train.tensorboard.TensorBoardLogger`.
        resume: Continue from the newest valid checkpoint in ``cfg.out`` (an error when there
            is none); without it, a run folder that holds checkpoints is refused.

    Raises:
        ValueError: for inconsistent settings, data or model, before any training step.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        model: nn.Module | None = None,
        train_data: ArrayDataset | TextDataset | None = None,
        val_data: ArrayDataset | TextDataset | None = None,
        callbacks: Sequence[Callable[[Trainer], None]] = (),
        resume: bool = False,
    ) -> None:
        # Cheap checks first: a wrong --out, --resume or setting fails before data is loaded.
        _console_logging()
        build.check_run_folder(Path(cfg.out), resume)
        build.check_settings(cfg, model)
        self.dist, self.device, self._owns_group = distributed.setup(cfg.device, cfg.dist_timeout)
        try:
            self._build(cfg, model, train_data, val_data)
        except BaseException:
            distributed.teardown(self._owns_group)
            raise
        self.resume, self.callbacks = resume, list(callbacks)
        self.out, self.ckpt_dir = Path(cfg.out), Path(cfg.out) / "checkpoints"
        self.step = self.epoch = self.position = 0  # position: batches done in this epoch
        self.epoch_sums = _new_sums()
        self.lr = self.cfg.lr
        self.last_loss: float | None = None  # mean training loss of the last step, over ranks
        self.stop_signal: int | None = None
        self._stop_requested = False
        self.last_checkpoint: Path | None = None
        self.last_metrics: dict[str, float] = {}
        self._saved_step = -1
        self._watchdog: distributed.Watchdog | None = None

    def _build(self, cfg, model, train_data, val_data) -> None:
        # "auto" becomes what this device runs natively; the saved config holds the choice.
        # fp16 without CUDA (device "auto" on a machine without a GPU) is refused here.
        cfg = replace(cfg, amp=resolve_amp(cfg.amp, self.device))
        world = self.dist.world_size
        if cfg.batch_size % world:
            raise ValueError(
                f"batch_size {cfg.batch_size} (global) does not divide evenly over {world} "
                "processes"
            )
        self.train_data, self.val_data, cfg = build.load_data(cfg, train_data, val_data)
        self.task = self.train_data.task
        build.check_data_settings(cfg, self.train_data)
        model, self.cfg = build.model_and_config(cfg, self.train_data, model)
        cfg = self.cfg
        # Dropout / drop-path draw from the global generator: one stream per rank.
        torch.manual_seed(cfg.seed + 1 + self.dist.rank)
        random.seed(cfg.seed + 1 + self.dist.rank)

        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=memory_format)
        net: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=ids)
        # self.model stays the plain module (evaluation, checkpoints); self.net trains.
        self.net = runtime.compile_network(net, cfg.compile_mode) if cfg.compile else net

        self.loss_fn = Loss(cfg.loss, self.task, cfg.label_smoothing)
        self.loader: DeviceLoader | TextLoader
        if self.task == TEXT_TASK:  # windows of block_size characters at random offsets
            self.loader = TextLoader(
                self.train_data,
                cfg.batch_size // world,
                cfg.block_size,
                train=True,
                seed=cfg.seed,
                device=self.device,
                rank=self.dist.rank,
                world_size=world,
            )
        else:
            self.loader = DeviceLoader(
                self.train_data,
                cfg.batch_size // world,
                train=True,
                seed=cfg.seed,
                device=self.device,
                augment=cfg.augment,
                rank=self.dist.rank,
                world_size=world,
                crop_size=cfg.crop_size,
            )
        build.check_output(self.model, *self.loader.batch(0, 0), self.train_data)
        self.steps_per_epoch = len(self.loader)
        self.total_steps = cfg.steps or cfg.epochs * self.steps_per_epoch
        self.optimizer = build.make_optimizer(cfg, self.model)
        self.schedule = LRSchedule(cfg, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.guard = StepGuard(self.dist, self.device)

    # -- public -----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to checkpoint and stop.

        The request is agreed between ranks in the next step's all-reduce, so the run stops
        after that step (as it does for a signal).
        """
        self._stop_requested = True

    def log(self, message: str) -> None:
        """Log ``message`` at INFO to the ``skiplab.train`` logger (rank 0 only)."""
        if self.dist.is_main:
            logger.info(message)

    def fit(self) -> FitResult:
        """Train until ``total_steps`` (or a stop request); see :class:`FitResult`.

        Raises:
            NonFiniteLoss: when the loss becomes NaN/inf (nothing is written after that step).
            ValueError: for a checkpoint that does not fit this run.
        """
        try:
            self._prepare()
            with runtime.stop_signals(self._on_signal):
                if not self.dist.enabled:
                    return self._loop()
                with distributed.Watchdog(self.dist, self.cfg.dist_timeout) as self._watchdog:
                    return self._loop()
        finally:
            self._watchdog = None
            distributed.teardown(self._owns_group)

    def _on_signal(self, signum: int) -> None:
        self.stop_signal = signum

    # -- set-up -----------------------------------------------------------------------------------
    def _prepare(self) -> None:
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for p in clean_leftovers(self.out) + clean_leftovers(self.ckpt_dir):
                self.log(f"removed leftover of an interrupted write: {p}")
        if self.resume:
            # Rank 0 chooses (and sets invalid checkpoints aside) before the others read.
            ckpt = load_latest(self.ckpt_dir, self.log) if self.dist.is_main else None
            distributed.barrier(self.dist)
            if ckpt is None:
                ckpt = load_latest(self.ckpt_dir, lambda _: None, set_aside=False)
            self._restore(ckpt)
        self.metrics_log = MetricsLog(
            self.out, self.task, self.val_data is not None, enabled=self.dist.is_main
        )
        if self.dist.is_main:
            self.metrics_log.open(keep_until_step=self.step if self.resume else None)
            text = json.dumps(self.cfg.to_dict(), indent=2) + "\n"
            atomic_write(self.out / "config.json", text.encode())

    def _restore(self, ckpt: LoadedCheckpoint) -> None:
        state = ckpt.state
        saved = TrainConfig.from_dict(state["config"], where=str(ckpt.manifest_path))
        # "out" may differ too: a run folder that was moved or copied resumes where it is now.
        diff = config_diff(saved, self.cfg, ignore=(*RUNTIME_FIELDS, "out"))
        if diff:
            raise ValueError(
                f"{ckpt.manifest_path} was made with other settings; a resumed run "
                f"must use the same ones. Differences: {'; '.join(diff)}"
            )
        if state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"{ckpt.manifest_path} was made by {state['world_size']} process(es); "
                f"resume it with the same number (this run has {self.dist.world_size})"
            )
        self.model.load_state_dict(ckpt.weights, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.epoch_sums = dict(state["epoch_sums"])
        self.lr = state["lr"]
        runtime.restore_rng(state["rng"][self.dist.rank], self.device)
        self.last_checkpoint = ckpt.manifest_path

    # -- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> FitResult:
        cfg = self.cfg
        if self.step >= self.total_steps and self.epoch_sums["steps"]:
            # Stopped by the run's last step: its epoch's row and evaluation are still due.
            if self.position >= self.steps_per_epoch:
                self.epoch, self.position = self.epoch + 1, 0
            self._end_epoch()
            return self._result(
                "finished", f"finished {self.total_steps} steps; run folder {self.out}"
            )
        if self.step >= self.total_steps:
            return self._result("finished", f"{self.out} is already complete at step {self.step}")
        self.log(
            f"training {cfg.model or type(self.model).__name__} on {self.train_data.source}: "
            f"{self.total_steps} steps of {cfg.batch_size}"
            f"{f' windows of {cfg.block_size}' if cfg.block_size else ''} "
            f"({self.steps_per_epoch} per epoch) "
            f"on {self.device} x {self.dist.world_size} -> {self.out}; "
            f"{describe_precision(cfg.amp, cfg.channels_last, self.device)}"
        )
        show = self.dist.is_main and (
            cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())
        )
        while self.step < self.total_steps:
            n = self.steps_per_epoch
            bar = tqdm(
                total=n,
                initial=self.position,
                disable=not show,
                leave=False,
                desc=f"epoch {self.epoch + 1}",
                file=sys.stderr,
                dynamic_ncols=True,
            )
            while self.position < n and self.step < self.total_steps:
                started = time.perf_counter()
                stop = self.train_next_batch()
                self.epoch_sums["seconds"] += time.perf_counter() - started
                self._mark(f"step {self.step}")
                bar.update(1)
                if (
                    cfg.checkpoint_every
                    and self.step % cfg.checkpoint_every == 0
                    and (self.position < n)
                ):
                    self._save()
                for callback in self.callbacks:
                    if callable(callback):
                        callback(self)
                if stop:
                    bar.close()
                    return self._stop()
            bar.close()
            if self.position >= n:
                self.epoch, self.position = self.epoch + 1, 0
            self._end_epoch()
        return self._result("finished", f"finished {self.total_steps} steps; run folder {self.out}")

    def train_next_batch(self) -> bool:
        """One optimizer step on the batch at the current position, which then advances.

        The unit of :meth:`fit` without the work around it (progress bar, checkpoints,
        callbacks, the end of an epoch); benchmarks time it. The caller starts the next epoch
        once ``position`` reaches ``steps_per_epoch``. Returns True when some rank got a
        signal or a stop request.
        """
        stop = self._train_step(*self.loader.batch(self.epoch, self.position))
        self.position += 1
        self.step += 1
        return stop

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """One optimizer step on this rank's share of the batch: images ``x`` (B, C, H, W),
        targets ``y`` (B,) or, for segmentation, (B, H, W); or for text token ids ``x`` and
        next tokens ``y``, both (B, T). Returns True when some rank got a signal or a stop
        request.

        The core is the loop of every PyTorch example: forward, loss, backward, update. The
        lines marked "guard" make every rank agree, before the update, on what ends the run
        (:mod:`skiplab.train.guard`); the last lines keep the epoch's sums.
        """
        lr = self.schedule.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # guard: this rank's stop flags (a host-to-device copy, queued first), and its count of
        # tensors the previous update left NaN or inf (before the forward changes BN buffers)
        flags = self.guard.flags(y.numel(), self.stop_signal, self._stop_requested)
        non_finite = self._non_finite_tensors()

        if self.cfg.compile:  # CUDA graphs must be told that a new step begins
            runtime.begin_compiled_step(self.cfg.compile_mode)
        with autocast(self.device, self.cfg.amp):
            logits = self.net(x)  # (B, K); (B, K, H, W) segmentation; (B, T, V) text
        loss = self.loss_fn(logits, y)  # 0-d, float32: Loss upcasts the logits itself
        # guard: loss, errors and flags summed over ranks (queued; read after the backward)
        wrong = _wrong(logits, y, class_dim=-1 if self.task == TEXT_TASK else 1)
        sums = self.guard.all_reduce(loss, wrong, non_finite, flags)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # scale() is the identity unless amp is fp16
        # guard: the step's one wait for the device, after the backward so that forward and
        # backward queue back to back; NaN or inf on any rank raises here, before the update
        agreed = self.guard.read(sums)
        self._raise_if_non_finite(agreed, lr)
        self.scaler.step(self.optimizer)  # optimizer.step(); fp16 skips it on overflowed grads
        self.scaler.update()

        self.schedule.observe(self.step, agreed.error)  # the error-driven warm-up watches it
        self._add_to_epoch(agreed, lr)
        if agreed.signal is not None:  # a signal to any rank stops every rank after this step
            self.stop_signal = agreed.signal
        return agreed.stop

    def _raise_if_non_finite(self, agreed: Agreed, lr: float) -> None:
        """NonFiniteWeights or NonFiniteLoss, on every rank alike, when the ranks saw NaN/inf."""
        if agreed.non_finite > 0:
            self._raise_non_finite_weights(f"in step {self.step + 1}, before its update")
        if not math.isfinite(agreed.loss):
            raise NonFiniteLoss(
                f"non-finite training loss ({agreed.loss}) at step {self.step + 1} (epoch "
                f"{self.epoch}, batch {self.position} of {self.steps_per_epoch}), lr {lr:g}; "
                f"stopped before the update, nothing written after step {self.step}; the last "
                f"checkpoint is {self.last_checkpoint or 'none'}"
            )

    def _add_to_epoch(self, agreed: Agreed, lr: float) -> None:
        """Keep the step's lr and mean loss, and add it to the epoch's sums (its metrics row)."""
        self.lr = lr
        self.last_loss = agreed.loss
        sums = self.epoch_sums
        sums["loss"] += agreed.loss
        sums["wrong"] += agreed.wrong
        sums["count"] += agreed.count
        sums["steps"] += 1

    def _end_epoch(self) -> None:
        cfg = self.cfg
        self._check_finite(f"at the end of epoch {self.epoch}")
        final = self.step >= self.total_steps
        due = cfg.eval_every and self.epoch % cfg.eval_every == 0 and self.position == 0
        val: dict[str, float] = {}
        started = time.perf_counter()
        if self.val_data is not None and (due or final):
            if self.dist.is_main:  # rank 0 evaluates alone; the others wait at the barrier
                val = evaluate(
                    self.model,
                    self.val_data,
                    device=self.device,
                    loss=cfg.loss,
                    batch_size=cfg.eval_batch_size or cfg.batch_size,
                    block_size=cfg.block_size,
                    amp=cfg.amp,
                    channels_last=cfg.channels_last,
                    tta_flip=cfg.tta_flip,
                )
                self.last_metrics = val
            distributed.barrier(self.dist)
            self._mark(f"evaluation after step {self.step}")
        s = self.epoch_sums
        steps = max(s["steps"], 1)
        row = {
            "step": self.step,
            "epoch": round(self.step / self.steps_per_epoch, 4),
            "lr": self.lr,
            "train_loss": s["loss"] / steps,
            "train_error": s["wrong"] / max(s["count"], 1),
            **{f"val_{k}": v for k, v in val.items()},
            "seconds": s["seconds"] + time.perf_counter() - started,
        }
        self.metrics_log.write(row)
        self.log(self.metrics_log.line(row, self.total_steps))
        self.epoch_sums = _new_sums()
        self._save()
        for callback in self.callbacks:
            if hasattr(callback, "on_epoch_end"):
                callback.on_epoch_end(self, row)

    def _stop(self) -> FitResult:
        self._save()
        why = signal.Signals(self.stop_signal).name if self.stop_signal else "a stop request"
        again = distributed.relaunch_command(self.dist, self.cfg.out)
        message = (
            f"stopped by {why} at step {self.step} (epoch {self.epoch}, batch {self.position} of "
            f"{self.steps_per_epoch}); checkpoint {self.last_checkpoint}. Resume with: {again}"
        )
        self.log(message)
        return self._result("stopped", message)

    def _result(self, status: str, message: str) -> FitResult:
        where = (self.step, self.epoch, self.position, self.last_checkpoint)
        return FitResult(status, *where, self.last_metrics, message, self.stop_signal)

    # -- checkpoints ------------------------------------------------------------------------------
    def _save(self) -> None:
        if self._saved_step == self.step:
            return
        self._check_finite(f"before the checkpoint of step {self.step}")
        self._saved_step = self.step
        rngs = distributed.all_gather_objects(runtime.capture_rng(self.device), self.dist)
        if self.dist.is_main:
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": rngs,
                "config": self.cfg.to_dict(),
                "epoch_sums": dict(self.epoch_sums),
                "world_size": self.dist.world_size,
                "lr": self.lr,
            }
            data = self.train_data  # what eval and predict need to know without the data
            meta = {"task": self.task, "classes": list(data.classes),
                    "data_source": data.source, "metrics": self.last_metrics}  # fmt: skip
            if self.task == TEXT_TASK:
                meta["block_size"] = self.cfg.block_size
            else:
                meta.update(mean=list(data.mean), std=list(data.std),
                            in_chans=int(data.images.shape[1]))  # fmt: skip
            self.last_checkpoint = write_checkpoint(
                self.ckpt_dir,
                step=self.step,
                epoch=self.epoch,
                position=self.position,
                weights=self.model.state_dict(),
                state=state,
                meta=meta,
                keep=self.cfg.keep_checkpoints,
            )
        distributed.barrier(self.dist)
        self._mark(f"checkpoint of step {self.step}")

    # -- checks -----------------------------------------------------------------------------------
    def _mark(self, where: str) -> None:
        if self._watchdog is not None:
            self._watchdog.mark(where)
            distributed.mark_progress(self.dist, where)

    def _non_finite_tensors(self) -> torch.Tensor:
        """Number of floating-point parameters and buffers holding a NaN or an infinity (a
        0-d tensor; no host synchronisation).

        One multi-tensor max-abs norm instead of a check per tensor: this runs every step, and
        for nets of many small tensors the per-tensor checks took a large share of a CPU step
        (measured: docs/benchmarks.md, section 'Per-step overheads of the trainer'). The
        max-abs norm is finite exactly when every element is (an L2 norm would also overflow
        for finite values beyond ~1e19, which a BatchNorm running variance can legitimately
        reach in an exploding plain net).
        """
        tensors = [t.detach() for t in self._float_tensors()]
        if not tensors:
            return torch.zeros((), device=self.device)
        return (~torch.stack(torch._foreach_norm(tensors, math.inf)).isfinite()).sum()

    def _float_tensors(self):
        for t in (*self.model.parameters(), *self.model.buffers()):
            if t.is_floating_point():
                yield t

    def _check_finite(self, when: str) -> None:
        """Every rank agrees (one all-reduce) that weights and buffers are finite, or raises."""
        bad = self._non_finite_tensors()[None].float()
        if distributed.all_reduce_sum(bad, self.dist).item() > 0:
            self._raise_non_finite_weights(when)

    def _raise_non_finite_weights(self, when: str) -> None:
        names = [
            name
            for name, t in (*self.model.named_parameters(), *self.model.named_buffers())
            if t.is_floating_point() and not bool(t.detach().isfinite().all())
        ]
        found = (
            f"{len(names)} tensor(s) on rank {self.dist.rank} hold NaN or inf, e.g. {names[:3]}"
            if names
            else f"those of rank {self.dist.rank} are finite, another rank's are not"
        )
        raise NonFiniteWeights(
            f"non-finite weights or buffers {when} (epoch {self.epoch}, lr {self.lr:g}; NaN or "
            f"inf came from the update of step {self.step} or a forward pass that updates "
            f"buffers): {found}; stopped without writing them; the last checkpoint is "
            f"{self.last_checkpoint or 'none'}"
        )


def _wrong(logits: torch.Tensor, y: torch.Tensor, class_dim: int = 1) -> torch.Tensor:
    """Misclassified targets (pixels for segmentation, next tokens for text) of a batch: a 0-d
    tensor. ``class_dim``: where the logits hold the classes (1; -1 for text's (B, T, V))."""
    return (logits.detach().argmax(dim=class_dim) != y).sum()


def _new_sums() -> dict[str, float]:
    # Running sums over the current epoch, for its metrics row (saved in checkpoints).
    return {"loss": 0.0, "wrong": 0.0, "count": 0.0, "steps": 0, "seconds": 0.0}
