"""Fault 8: a NaN loss at step k, and a learning rate of 1e6.

Passing means: training raises :class:`~skiplab.train.NonFiniteLoss` (or its subclass for
weights) with a message naming the step and the last checkpoint; it stops in the step where
the NaN appears (before that step's update), or at most one step after the weights or buffers
first hold NaN/inf; the checkpoint folder is byte-identical (sha256) to what it was after the
last good step; and every checkpoint left holds only finite values.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
from pathlib import Path

import torch
from torch import nn

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
from skiplab.train import NonFiniteLoss, Trainer, load_checkpoint
from skiplab.train.checkpoint import list_checkpoints

TITLE = "NaN in the loss at step k; learning rate 1e6"


class NaNAt(nn.Module):
    """Wraps a net; its ``k``-th training forward returns NaN (an injected divergence)."""

    def __init__(self, net: nn.Module, k: int) -> None:
        super().__init__()
        self.net, self.k, self.calls = net, k, 0

    def forward(self, x):
        out = self.net(x)
        if self.training:
            self.calls += 1
            if self.calls == self.k:
                out = out * float("nan")
        return out


def _finite(model: nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    return all(bool(t.isfinite().all()) for t in tensors if t.is_floating_point())


def trial(work: Path, name: str, nan_at: int | None, every: int, **cfg) -> str:
    out = work / name
    module = None
    values = {"steps": 30, "checkpoint_every": every, "keep_checkpoints": 100, **cfg}
    if nan_at is not None:
        torch.manual_seed(0)
        net = create_model("resnet20", layers=[1, 1, 1], num_classes=4)
        module = NaNAt(net, nan_at)
        values.update(model=None, model_args={})
    seen: dict[int, tuple[bool, dict]] = {}  # step -> (state finite, checkpoint files)

    def watch(trainer: Trainer) -> None:
        ok = _finite(trainer.model) and math.isfinite(trainer.last_loss)
        seen[trainer.step] = (ok, sha256_tree(out / "checkpoints"))

    trainer = Trainer(
        tiny_config(out, **values), model=module, train_data=tiny_data(), callbacks=[watch]
    )
    with contextlib.redirect_stdout(io.StringIO()):
        message = error_message(
            trainer.fit, NonFiniteLoss, "training finished without a non-finite error"
        )
    stopped = trainer.step  # updates done when it stopped
    check("non-finite" in message and "last checkpoint is" in message, f"message: {message}")
    if nan_at is not None:
        check(stopped == nan_at - 1, f"NaN at step {nan_at}, but {stopped} updates were made")
        check(f"at step {nan_at} " in message, f"the message does not name step {nan_at}")
    bad = [s for s, (ok, _) in sorted(seen.items()) if not ok]
    if bad:
        check(stopped <= bad[0] + 1 and stopped == bad[0], f"NaN/inf seen after step {bad[0]}, "
              f"still training at step {stopped}")  # fmt: skip
    last_good = max((s for s, (ok, _) in seen.items() if ok), default=None)
    before = seen[last_good][1] if last_good is not None else {}
    after = sha256_tree(out / "checkpoints")
    changed = sorted(n for n in before if after.get(n) != before[n])
    check(not changed, f"checkpoint files changed or removed after step {last_good}: {changed}")
    # At an epoch end the step's checkpoint is written after the callbacks ran: the only new
    # files may be that (last good) step's.
    new = sorted(n for n in after if n not in before)
    last = f"step-{last_good or 0:08d}."
    check(all(n.startswith(last) for n in new), f"written after step {last_good}: {new}")
    for manifest in list_checkpoints(out / "checkpoints"):
        ckpt = load_checkpoint(manifest)
        for key, t in ckpt.weights.items():
            check(bool(t.isfinite().all()), f"{manifest.name} holds non-finite {key}")
    shutil.rmtree(out)
    return f"stopped after {stopped} updates: {message[:110]}"


def run(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("non-finite", TITLE, command=command_for("non-finite", None))
    items = [
        (f"NaN at step {k}, checkpoint every {e or 'epoch'}",
         lambda k=k, e=e: trial(work, f"nan-{k}-{e}", k, e))
        for k, e in ((1, 1), (2, 1), (4, 1), (5, 0), (7, 1))
    ] + [
        (f"lr 1e6 seed {s}, checkpoint every {e or 'epoch'}",
         lambda s=s, e=e: trial(work, f"lr-{s}-{e}", None, e, lr=1e6, warmup="none", seed=s))
        for s, e in ((0, 1), (1, 0), (2, 1))
    ]  # fmt: skip
    return run_trials(result, items[: trials if trials else None], progress)
