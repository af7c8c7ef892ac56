"""``metrics.csv`` and ``metrics.jsonl``: one row per epoch (and one at the end of the run).

Columns: step, epoch (fractional for a run that ends in mid-epoch), lr, train_loss,
train_error, the validation metrics (loss, error, top5_error; or loss, error (pixel), iou,
dice, rand_error; or for text loss, error (next character), bits_per_char), seconds (wall time
of the epoch's training steps and evaluation). Errors are fractions in [0, 1]. An epoch
without evaluation leaves the validation cells empty (null in JSON). On resume, rows after the
checkpoint's step are dropped (they are recomputed).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from skiplab.fileio import atomic_write

VAL_COLUMNS = {
    "classification": ("val_loss", "val_error", "val_top5_error"),
    "segmentation": ("val_loss", "val_error", "val_iou", "val_dice", "val_rand_error"),
    "language_modeling": ("val_loss", "val_error", "val_bits_per_char"),
}


class MetricsLog:
    """Appends rows to both files; only the main process writes (``enabled``)."""

    def __init__(self, out: Path, task: str, has_val: bool, *, enabled: bool = True) -> None:
        self.csv_path = Path(out) / "metrics.csv"
        self.jsonl_path = Path(out) / "metrics.jsonl"
        self.enabled = enabled
        self.columns = [
            "step",
            "epoch",
            "lr",
            "train_loss",
            "train_error",
            *(VAL_COLUMNS[task] if has_val else ()),
            "seconds",
        ]

    def open(self, keep_until_step: int | None = None) -> None:
        """Start both files: empty for a new run; for a resumed run, the rows up to the step of
        the checkpoint (``keep_until_step``)."""
        rows = []
        if keep_until_step is not None and self.jsonl_path.is_file():
            for line in self.jsonl_path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row["step"] <= keep_until_step:
                        rows.append(row)
        atomic_write(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in rows).encode())
        atomic_write(self.csv_path, self._csv(rows, header=True).encode())

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        row = {k: row.get(k) for k in self.columns}
        with open(self.jsonl_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        with open(self.csv_path, "a", newline="") as fh:
            fh.write(self._csv([row], header=False))

    def _csv(self, rows: list[dict], header: bool) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if header:
            writer.writerow(self.columns)
        for row in rows:
            writer.writerow(["" if row.get(k) is None else row[k] for k in self.columns])
        return buffer.getvalue()

    @staticmethod
    def line(row: dict, total_steps: int) -> str:
        """The one log line per epoch."""

        def pct(key: str) -> str:
            return f"{100 * row[key]:.2f}%"

        parts = [
            f"epoch {row['epoch']:g}",
            f"step {row['step']}/{total_steps}",
            f"lr {row['lr']:.4g}",
            f"train loss {row['train_loss']:.4f} err {pct('train_error')}",
        ]
        if row.get("val_loss") is not None:
            val = f"val loss {row['val_loss']:.4f} err {pct('val_error')}"
            for key, name in (
                ("val_top5_error", "top5"),
                ("val_iou", "IoU"),
                ("val_dice", "Dice"),
                ("val_rand_error", "Rand err"),
                ("val_bits_per_char", "bits/char"),
            ):
                if row.get(key) is not None and not math.isnan(row[key]):
                    val += f" {name} {pct(key) if 'error' in key else f'{row[key]:.4f}'}"
            parts.append(val)
        parts.append(f"{row['seconds']:.1f} s")
        return " | ".join(parts)
