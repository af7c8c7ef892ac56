"""End to end through the command line: train a few steps, evaluate, predict."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skiplab import list_models
from skiplab.cli import main


def write_png(path, array: torch.Tensor) -> None:
    """uint8 (H, W) -> grayscale PNG, (3, H, W) -> RGB PNG."""
    a = array.numpy() if array.ndim == 2 else array.permute(1, 2, 0).numpy()
    Image.fromarray(a).save(path)


def test_train_then_eval_classification(tmp_path, capsys):
    run = tmp_path / "run"
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"recipe": "paper", "lr": 0.05, "label_smoothing": 0.1}))
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--model",
            "resnet20",
            "--model-arg",
            "layers=[1,1,1]",
            "--data",
            "synthetic",
            "--steps",
            "6",
            "--batch-size",
            "16",
            "--lr",
            "0.08",
            "--out",
            str(run),
            "--device",
            "cpu",
            "--progress",
            "off",
        ]
    )
    assert code == 0
    saved = json.loads((run / "config.json").read_text())
    # Resolved: command line over file over recipe; data fills num_classes; auto values decided.
    assert (saved["lr"], saved["label_smoothing"], saved["weight_decay"]) == (0.08, 0.1, 1e-4)
    assert saved["model_args"] == {"num_classes": 10, "layers": [1, 1, 1]}
    assert (saved["warmup"], saved["loss"], saved["val_split"]) == ("none", "ce", "test")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [6]
    metrics_csv = (run / "metrics.csv").read_text().splitlines()
    assert metrics_csv[0] == (
        "step,epoch,lr,train_loss,train_error,val_loss,val_error,val_top5_error,seconds"
    )
    assert len(metrics_csv) == 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-00000006.json",
        "step-00000006.safetensors",
        "step-00000006.state.pt",
    ]
    capsys.readouterr()

    assert main(["eval", "--run", str(run), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    # The same checkpoint on the same split: the trainer's last evaluation, recomputed.
    assert result["samples"] == 1000 and result["split"] == "test"
    for key in ("loss", "error", "top5_error"):
        assert result[key] == pytest.approx(rows[-1][f"val_{key}"], rel=1e-6)
    assert json.loads((run / "eval-test.json").read_text())["error"] == result["error"]

    images = tmp_path / "images"
    images.mkdir()
    for name in ("0.png", 'a,"b".png'):  # a comma and quotes in a file name stay one cell
        write_png(images / name, torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8))
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                str(images),
                "--out",
                str(tmp_path / "pred"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    with open(tmp_path / "pred" / "predictions.csv", newline="") as fh:
        predictions = list(csv.DictReader(fh))
    assert list(predictions[0]) == ["file", "class", "probability"]
    assert sorted(Path(r["file"]).name for r in predictions) == ["0.png", 'a,"b".png']
    assert all(r["class"] and 0 < float(r["probability"]) <= 1 for r in predictions)


def test_cli_errors_are_clear(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--model",
                "resnet20",
                "--data",
                "synthetic",
                "--epochs",
                "1",
                "--steps",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "set either epochs or steps, not both" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path), "--resume", "--lr", "0.5"]) == 2
    assert "remove ['--lr']" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--model",
                "resnet20",
                "--data",
                "synthetic",
                "--amp",
                "fp16",
                "--device",
                "cpu",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "amp 'fp16' needs a CUDA device; got 'cpu'" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "missing")]) == 2
    assert "run folder not found" in capsys.readouterr().err


def _unet_registered() -> bool:
    return "unet" in list_models("unet")


@pytest.mark.skipif(not _unet_registered(), reason="the unet family is not registered yet")
def test_train_eval_predict_segmentation(tmp_path, capsys):
    run = tmp_path / "seg"
    # A segfolder of 16x16 one-channel images: class 1 ("cell") inside a square.
    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.txt").write_text("membrane\ncell\n")
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for sub in ("image", "label"):
            (root / split / sub).mkdir(parents=True)
        for i in range(n):
            label = torch.zeros(32, 32, dtype=torch.uint8)
            y0, x0 = torch.randint(0, 16, (2,), generator=g).tolist()
            label[y0 : y0 + 12, x0 : x0 + 12] = 1
            image = (label * 120 + torch.randint(0, 100, (32, 32), generator=g)).to(torch.uint8)
            write_png(root / split / "image" / f"{i}.png", image)
            write_png(root / split / "label" / f"{i}.png", label)
    code = main(
        [
            "train",
            "--model",
            "unet",
            "--model-arg",
            "base_width=4",
            "--model-arg",
            "depth=2",
            "--data",
            "segfolder",
            "--data-dir",
            str(root),
            "--val-split",
            "val",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--loss",
            "ce+dice",
            "--out",
            str(run),
            "--device",
            "cpu",
            "--progress",
            "off",
            "--crop-size",
            "16",
        ]
    )
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["samples"] == 2
    assert {"iou", "dice", "rand_error", "error"} <= set(result)
    out = tmp_path / "masks"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                str(root / "test" / "image"),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    mask = torch.from_numpy(np.array(Image.open(out / "0.png")))
    assert mask.shape == (32, 32) and set(mask.unique().tolist()) <= {0, 255}


@pytest.mark.slow
def test_eval_public_resnet20_on_shared_cifar10(shared_dir, tmp_path, monkeypatch, capsys):
    # Independent reference: shared/README.md measured this public checkpoint at 81.03% on the
    # JPEG copy of the CIFAR-10 test set (it reports 91.78% on the original).
    monkeypatch.setenv("SKIPLAB_CACHE", str(tmp_path / "cache"))
    code = main(
        [
            "eval",
            "--checkpoint",
            str(shared_dir / "weights" / "resnet20-12fca82f.th"),
            "--model",
            "resnet20",
            "--data",
            "cifar10",
            "--data-dir",
            str(shared_dir / "data" / "cifar10-jpeg.tar.gz"),
            "--mean",
            "0.485",
            "0.456",
            "0.406",
            "--std",
            "0.229",
            "0.224",
            "0.225",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 10000
    assert result["error"] == pytest.approx(1 - 0.8103, abs=5e-5)


def test_max_dataset_bytes_option(tmp_path, capsys, monkeypatch):
    from skiplab.data.limits import ENV_VAR
    from tests.data._fixtures import make_imagefolder

    monkeypatch.delenv(ENV_VAR, raising=False)  # restored after the test
    make_imagefolder(tmp_path / "tree")
    args = ["train", "--model", "resnet20", "--data", "imagefolder", "--data-dir",
            str(tmp_path / "tree"), "--steps", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main([*args, "--max-dataset-bytes", "1KiB"]) == 2
    err = capsys.readouterr().err
    assert "above the bound of 1.0 KiB (1024 bytes) (max_dataset_bytes" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / ".cache").exists()
    assert ENV_VAR not in os.environ  # the bound held for that command only
    with pytest.raises(SystemExit):
        main([*args, "--max-dataset-bytes", "lots"])
    assert "expected a byte count such as 4294967296, 4GiB or 512MiB" in capsys.readouterr().err
