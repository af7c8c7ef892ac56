"""The trainer's messages on the skiplab logger, epoch-end callbacks, the TensorBoard logger."""

from __future__ import annotations

import importlib.util
import json
import logging

import pytest

from skiplab.export import MissingExtra
from skiplab.train import Trainer
from skiplab.train import trainer as trainer_module
from skiplab.train.tensorboard import TensorBoardLogger
from tests.train.helpers import tiny_classification, tiny_config


class Rows:
    """Records every epoch-end row; also called after every step."""

    def __init__(self) -> None:
        self.rows, self.steps = [], []

    def __call__(self, trainer) -> None:
        self.steps.append(trainer.step)

    def on_epoch_end(self, trainer, row) -> None:
        self.rows.append(dict(row))


class EpochOnly:
    def __init__(self) -> None:
        self.steps = []

    def on_epoch_end(self, trainer, row) -> None:
        self.steps.append(row["step"])


def test_epoch_end_callbacks_get_the_metrics_rows(tmp_path, caplog, capsys):
    both, epoch_only = Rows(), EpochOnly()
    cfg = tiny_config(tmp_path, epochs=2)
    data = (tiny_classification(), tiny_classification(seed=1))
    with caplog.at_level(logging.INFO, logger="skiplab"):
        Trainer(cfg, train_data=data[0], val_data=data[1], callbacks=[both, epoch_only]).fit()
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(written) == 2 and [r["step"] for r in both.rows] == [3, 6]
    for got, row in zip(both.rows, written, strict=True):
        assert got == pytest.approx({k: v for k, v in row.items() if v is not None})
        assert "val_error" in got and "train_loss" in got
    assert both.steps == [1, 2, 3, 4, 5, 6] and epoch_only.steps == [3, 6]
    # Every message is a record of the skiplab.train logger (and still reaches stdout).
    messages = [r.getMessage() for r in caplog.records if r.name == "skiplab.train"]
    assert messages[0].startswith("training resnet20 on tiny seed=0: 6 steps of 8")
    assert sum(m.startswith("epoch ") for m in messages) == 2
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "skiplab.train")
    assert messages[0] in capsys.readouterr().out


def test_console_handler_only_when_the_skiplab_logger_has_none(monkeypatch):
    package = logging.getLogger("skiplab")
    own = logging.NullHandler()
    monkeypatch.setattr(package, "handlers", [own])
    trainer_module._console_logging()
    assert package.handlers == [own]  # configured by the user: nothing added
    monkeypatch.setattr(package, "handlers", [])
    trainer_module._console_logging()
    assert [type(h).__name__ for h in package.handlers] == ["_Stdout"]


def test_tensorboard_logger_writes_each_row(tmp_path):
    pytest.importorskip("tensorboard")  # the tensorboard extra (in dev)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path / "run", epochs=2)
    data = (tiny_classification(), tiny_classification(seed=1))
    Trainer(cfg, train_data=data[0], val_data=data[1], callbacks=[TensorBoardLogger()]).fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("train/loss", "train_loss"), ("val/error", "val_error"), ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [r["step"] for r in rows]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_tensorboard_without_the_extra_says_which(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name)
    )
    with pytest.raises(MissingExtra, match=r"pip install 'skiplab\[tensorboard\]'"):
        TensorBoardLogger()
