"""The ``fast`` recipe, test-time flip augmentation, and the time-to-target benchmark."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from skiplab.train import resolve_config
from skiplab.train.evaluate import evaluate
from tests.benchmark_scripts import load_benchmark

from .helpers import tiny_classification, tiny_segmentation


def _load_script():
    return load_benchmark("fast_recipe")


def test_fast_recipe_row():
    cfg = resolve_config(cli_values={"model": "resnet20", "recipe": "fast"})
    assert (cfg.schedule, cfg.batch_size, cfg.label_smoothing) == ("onecycle", 512, 0.2)
    # amp "auto": bf16 only where the device has it natively (skiplab.hardware).
    assert cfg.tta_flip and cfg.compile and cfg.channels_last and cfg.amp == "auto"
    # The user's values win over the recipe's.
    cfg = resolve_config(cli_values={"recipe": "fast", "compile": False, "tta_flip": False})
    assert not cfg.compile and not cfg.tta_flip


class _LeftHalf(nn.Module):
    """Class 0 logit = mean of the left half of the image, class 1 = the right half."""

    def forward(self, x):
        w = x.shape[-1] // 2
        return torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], dim=1)


def test_tta_flip_averages_an_image_and_its_mirror():
    data = tiny_classification(n=8, classes=2)
    plain = evaluate(_LeftHalf(), data)
    flipped = evaluate(_LeftHalf(), data, tta_flip=True)
    # Mirroring swaps the halves, so the averaged logits of both classes are equal: the loss
    # is exactly ln 2 whatever the plain logits were.
    assert flipped["loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert plain["loss"] != pytest.approx(flipped["loss"], abs=1e-4)


class _Shift(nn.Module):
    """Segmentation logits that are not mirror-symmetric: class 1 where x > its left neighbour."""

    def forward(self, x):
        d = x[:, :1] - torch.roll(x[:, :1], 1, dims=-1)
        return torch.cat([-d, d], dim=1)


def test_tta_flip_flips_segmentation_maps_back():
    data = tiny_segmentation(n=4)
    model = _Shift()
    x = (data.images.float() / 255 - 0.3) / 0.3  # the loader's normalisation
    expected = (model(x) + model(x.flip(-1)).flip(-1)) / 2
    wrong = (model(x) + model(x.flip(-1))) / 2  # without flipping the mirrored map back
    assert not torch.allclose(expected, wrong)
    result = evaluate(model, data, tta_flip=True)
    pred_error = (expected.argmax(1) != data.targets).float().mean().item()
    wrong_error = (wrong.argmax(1) != data.targets).float().mean().item()
    assert abs(pred_error - wrong_error) > 0.01  # the test can tell the two apart
    assert result["error"] == pytest.approx(pred_error, abs=1e-6)


def test_time_to_target_counts_seconds_until_the_first_epoch_that_reaches_it():
    script = _load_script()
    curve = [
        {"epoch": 1, "seconds": 2.0, "val_error": 0.5},
        {"epoch": 2, "seconds": 3.0, "val_error": 0.09},
        {"epoch": 3, "seconds": 4.0, "val_error": 0.05},
    ]
    assert script.time_to_target(curve, 0.9) == (5.0, 2)
    assert script.time_to_target(curve, 0.95) == (9.0, 3)
    assert script.time_to_target(curve, 0.99) == (None, None)


def test_fast_recipe_benchmark_end_to_end(tmp_path, capsys):
    script = _load_script()
    argv = ["--data", "synthetic", "--target", "0.99", "--seeds", "1", "--out", str(tmp_path)]
    argv += ["--set", "epochs=1", "--set", "compile=false", "--set", "amp=none"]
    argv += ["--set", "batch_size=64", "--set", 'model_args={"layers": [1, 1, 1]}']
    missed = script.main(argv)
    record = json.loads((tmp_path / "fast_recipe.json").read_text())
    (run,) = record["runs"]
    assert run["status"] == "finished" and len(run["curve"]) == 1
    assert record["config"]["tta_flip"] and record["config"]["label_smoothing"] == 0.2
    # One epoch of a tiny net does not reach 99%: reported as missed, with a non-zero status.
    assert missed == 1 and run["seconds_to_target"] is None
    assert "1 of 1 seeds missed it" in capsys.readouterr().out


def test_a_stopped_seed_keeps_its_record_and_ends_the_benchmark(tmp_path, monkeypatch, capsys):
    script = _load_script()

    class StopsAtOnce(script.Trainer):  # as a SIGTERM would: stop at the next step's end
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.callbacks.append(lambda trainer: trainer.request_stop())

    monkeypatch.setattr(script, "Trainer", StopsAtOnce)
    argv = ["--data", "synthetic", "--target", "0.99", "--seeds", "3", "--out", str(tmp_path)]
    argv += ["--set", "epochs=1", "--set", "compile=false", "--set", "amp=none"]
    argv += ["--set", "batch_size=64", "--set", 'model_args={"layers": [1, 1, 1]}']
    assert script.main(argv) == 1
    record = json.loads((tmp_path / "fast_recipe.json").read_text())
    (run,) = record["runs"]  # seeds 1 and 2 never started
    assert run["status"] == "stopped" and run["seconds_to_target"] is None
    assert "(stopped early)" in capsys.readouterr().out
