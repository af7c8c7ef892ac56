"""Exact resume (bit for bit on the CPU), fallback to a valid checkpoint, and the NaN stop."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from torch import nn

from skiplab.selftest.nonfinite import NaNAt
from skiplab.train import NonFiniteLoss, Trainer, load_checkpoint, load_latest
from tests.train.helpers import (
    sha256_tree,
    stop_at,
    tiny_classification,
    tiny_config,
    tiny_segmentation,
)

# 24 samples, batch 8: 3 steps per epoch; 8 steps end in mid-epoch 3. Drop-path and the
# augmentation make the result depend on every RNG state and on the data position.
SETTINGS = {
    "steps": 8,
    "model_args": {"layers": [1, 1, 1], "drop_path_rate": 0.3},
    "label_smoothing": 0.1,
    "nesterov": True,
}


def _final(out) -> tuple[dict, dict]:
    ckpt = load_latest(out / "checkpoints", lambda _: None)
    return ckpt.weights, ckpt.state


def _assert_identical(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (wa, sa), (wb, sb) = a, b
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    opt_a, opt_b = sa["optimizer"], sb["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for i in opt_a["state"]:
        assert torch.equal(
            opt_a["state"][i]["momentum_buffer"], opt_b["state"][i]["momentum_buffer"]
        ), i
    assert sa["step"] == sb["step"] == 8
    assert torch.equal(sa["rng"][0]["torch"], sb["rng"][0]["torch"])


@pytest.fixture(scope="module")
def data():
    return tiny_classification(24), tiny_classification(8, seed=1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("straight")
    result = Trainer(tiny_config(out, **SETTINGS), train_data=data[0], val_data=data[1]).fit()
    assert result.status == "finished" and result.step == 8
    return out


def _rows(out) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_resume_in_mid_epoch_is_bit_identical(tmp_path, data, uninterrupted):
    cfg = tiny_config(tmp_path, **SETTINGS)
    # A request after step 4 is agreed in step 5's all-reduce: the run stops after step 5.
    stopped = Trainer(cfg, train_data=data[0], val_data=data[1], callbacks=[stop_at(4)]).fit()
    assert (stopped.status, stopped.step, stopped.epoch, stopped.position) == ("stopped", 5, 1, 2)
    assert "Resume with: skiplab train --out" in stopped.message
    resumed = Trainer(cfg, train_data=data[0], val_data=data[1], resume=True).fit()
    assert resumed.status == "finished" and resumed.step == 8
    _assert_identical(_final(tmp_path), _final(uninterrupted))
    # The metrics rows (train loss/error summed across the interruption, validation) agree too.
    assert _rows(tmp_path) == _rows(uninterrupted)


def test_stop_at_the_last_step_resumes_to_the_final_row(tmp_path, data, uninterrupted):
    cfg = tiny_config(tmp_path, **SETTINGS)
    # Stopped by the last step itself: the run's final metrics row and evaluation are still due.
    stopped = Trainer(cfg, train_data=data[0], val_data=data[1], callbacks=[stop_at(7)]).fit()
    assert (stopped.status, stopped.step) == ("stopped", 8)
    resumed = Trainer(cfg, train_data=data[0], val_data=data[1], resume=True).fit()
    assert resumed.status == "finished" and resumed.step == 8
    _assert_identical(_final(tmp_path), _final(uninterrupted))
    assert _rows(tmp_path) == _rows(uninterrupted)


def test_corrupt_newest_checkpoint_falls_back_and_still_matches(
    tmp_path, data, uninterrupted, capsys
):
    cfg = tiny_config(tmp_path, **SETTINGS)
    Trainer(cfg, train_data=data[0], val_data=data[1], callbacks=[stop_at(4)]).fit()
    weights = tmp_path / "checkpoints" / "step-00000005.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    capsys.readouterr()
    Trainer(cfg, train_data=data[0], val_data=data[1], resume=True).fit()
    out = capsys.readouterr().out
    assert f"checkpoint step-00000005.json is invalid: {weights}: truncated" in out
    assert "step-00000003.json (an older, valid one): step 3, epoch 1, batch 0" in out
    _assert_identical(_final(tmp_path), _final(uninterrupted))


def test_fresh_run_refuses_a_folder_with_checkpoints(tmp_path, data, uninterrupted):
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        Trainer(tiny_config(uninterrupted, **SETTINGS))  # before loading any data
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        Trainer(tiny_config(tmp_path, **SETTINGS), resume=True)
    other = tiny_config(uninterrupted, **{**SETTINGS, "lr": 0.05})
    with pytest.raises(ValueError, match="other settings.*lr: 0.1 -> 0.05"):
        Trainer(other, train_data=data[0], val_data=data[1], resume=True).fit()


def test_nan_loss_stops_without_touching_checkpoints(tmp_path, data):
    from skiplab import create_model

    net = NaNAt(create_model("resnet20", layers=[1, 1, 1], num_classes=4), k=5)
    cfg = tiny_config(
        tmp_path, model=None, model_args={}, steps=8, checkpoint_every=1, keep_checkpoints=10
    )
    before = {}

    def snapshot(trainer):
        if trainer.step == 4:
            before.update(sha256_tree(tmp_path / "checkpoints"))

    trainer = Trainer(cfg, model=net, train_data=data[0], val_data=data[1], callbacks=[snapshot])
    with pytest.raises(NonFiniteLoss) as info:
        trainer.fit()
    message = str(info.value)
    assert "non-finite training loss (nan) at step 5 (epoch 1, batch 1 of 3), lr 0.01;" in message
    assert "step-00000004.json" in message
    assert len(before) == 4 * 3  # checkpoints of steps 1..4
    assert sha256_tree(tmp_path / "checkpoints") == before
    assert load_checkpoint(tmp_path / "checkpoints" / "step-00000004.json").step == 4


def test_segmentation_with_a_plain_module(tmp_path):
    # Any nn.Module mapping (N, C, H, W) to (N, classes, H, W) trains on segmentation data.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    cfg = tiny_config(
        tmp_path, model=None, model_args={}, steps=12, loss="ce+dice", lr=0.05, crop_size=12
    )
    train, val = tiny_segmentation(8), tiny_segmentation(4, seed=1)
    result = Trainer(cfg, model=net, train_data=train, val_data=val).fit()
    assert set(result.metrics) == {"loss", "error", "iou", "dice", "boundary_f1", "rand_error"}
    assert result.metrics["error"] < 0.2  # bright squares: an easy task
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == (
        "step,epoch,lr,train_loss,train_error,val_loss,val_error,val_iou,val_dice,"
        "val_rand_error,seconds"
    )
    with pytest.raises(
        ValueError,
        match=r"model output \(2, 2, 16, 16\) does not fit the data: "
        r"expected \(2, 3, 16, 16\)",
    ):
        bad = tiny_segmentation(8)
        bad.classes = ("a", "b", "c")
        Trainer(
            tiny_config(tmp_path / "bad", model=None, model_args={}, steps=1, val_split="none"),
            model=net,
            train_data=bad,
            val_data=None,
        )  # checked on construction


def test_a_run_whose_registered_input_changed_fails_clearly(tmp_path, monkeypatch):
    """A run saves in_chans only where its data differed from the registered input; if the
    registered input changes later (the FPN nets became RGB), loading names the cause."""
    from skiplab import create_model
    from skiplab.selftest.common import tiny_data
    from skiplab.train import TrainConfig, Trainer

    evaluate = importlib.import_module("skiplab.train.evaluate")  # the module, not the function

    cfg = TrainConfig(
        model="resnet20", model_args={"layers": [1, 1, 1]}, data="synthetic", val_split="none",
        steps=1, batch_size=8, device="cpu", progress="off", out=str(tmp_path / "run"),
    )  # fmt: skip
    Trainer(cfg, train_data=tiny_data(n=16, size=8)).fit()
    assert (
        "in_chans" not in json.loads((tmp_path / "run" / "config.json").read_text())["model_args"]
    )
    evaluate.load_run(tmp_path / "run")  # loads as registered
    # The registry's default input now has one channel: the saved weights no longer fit.
    monkeypatch.setattr(
        evaluate, "create_model", lambda name, **kw: create_model(name, in_chans=1, **kw)
    )
    with pytest.raises(ValueError, match=r"recorded no in_chans.*torch said: Error"):
        evaluate.load_run(tmp_path / "run")
