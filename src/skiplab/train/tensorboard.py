"""TensorBoard logging of the metrics rows, as an epoch-end callback of the trainer.

    trainer = Trainer(cfg, callbacks=[TensorBoardLogger()])    # event files in RUN/tensorboard
    skiplab train ... --tensorboard                             # the same from the command line

Needs the optional extra ``pip install 'skiplab[tensorboard]'``; torch's ``SummaryWriter`` is
imported only when the first row is written.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from skiplab.extras import MissingExtra

TENSORBOARD_EXTRA = "pip install 'skiplab[tensorboard]'  (tensorboard)"


def _tag(key: str) -> str:
    # train_loss -> train/loss, val_top5_error -> val/top5_error; lr, epoch, seconds as they are.
    for prefix in ("train_", "val_"):
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix) :]
    return key


class TensorBoardLogger:
    """Writes every number of each metrics row as a scalar at the row's step (rank 0 only).

    Tags: ``train/loss``, ``train/error``, ``val/loss``, ``val/error`` (and ``val/top5_error``
    or ``val/iou``, ``val/dice``, ``val/boundary_f1``, ``val/rand_error``), ``lr``, ``epoch``,
    ``seconds``.

    Args:
        log_dir: Folder of the event files; default ``<run folder>/tensorboard``.

    Raises:
        skiplab.extras.MissingExtra: when the tensorboard package is not installed (at
            construction, before any training).
    """

    def __init__(self, log_dir: str | Path | None = None) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise MissingExtra(f"TensorBoard logging needs tensorboard: {TENSORBOARD_EXTRA}")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer = None

    def on_epoch_end(self, trainer, row: dict) -> None:
        if not trainer.dist.is_main:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # the optional tensorboard extra

            self.log_dir = self.log_dir or Path(trainer.out) / "tensorboard"
            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        step = int(row["step"])
        for key, value in row.items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if key != "step" and number and math.isfinite(value):
                self._writer.add_scalar(_tag(key), value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (a later row opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
