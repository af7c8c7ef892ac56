"""Config layering and validation; lr schedules against the paper's numbers and torch's own
schedulers."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import replace

import pytest
import torch

from skiplab.cli import build_parser
from skiplab.train import config
from skiplab.train.config import TrainConfig, read_config_file, resolve_config
from skiplab.train.schedule import LRSchedule, resolve_warmup


# -- config ---------------------------------------------------------------------------------------
def test_recipe_defaults_and_layering(tmp_path):
    paper = resolve_config()
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert paper.steps == 64000 and paper.milestones == (0.5, 0.75)
    # A user-set length replaces the recipe's; the file sets, the command line wins.
    path = tmp_path / "run.toml"
    path.write_text(
        'recipe = "cosine"\nlr = 0.05\nepochs = 3\nmodel_args = { drop_path_rate = 0.1 }\n'
    )
    cfg = resolve_config(read_config_file(path), {"lr": 0.2})
    assert (cfg.schedule, cfg.weight_decay, cfg.lr, cfg.epochs, cfg.steps) == (
        "cosine",
        5e-4,
        0.2,
        3,
        None,
    )
    assert cfg.model_args == {"drop_path_rate": 0.1}
    assert resolve_config({"recipe": "paper", "epochs": 10}).steps is None
    # The resolved config round-trips through JSON (config.json).
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) \['lrate'\] for TrainConfig.*did you mean \['lr'\]"
    ):
        resolve_config({"lrate": 0.1})
    with pytest.raises(ValueError, match="'lr' must be float; got 'fast'"):
        resolve_config({"lr": "fast"})
    with pytest.raises(ValueError, match="either epochs or steps"):
        resolve_config({"epochs": 1, "steps": 5})
    with pytest.raises(ValueError, match="recipe must be one of"):
        resolve_config({"recipe": "fancy"})
    with pytest.raises(ValueError, match="milestones must be increasing"):
        resolve_config({"milestones": [0.75, 0.5]})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot parse config file"):
        read_config_file(bad)
    with pytest.raises(ValueError, match=r"must end in \.json or \.toml"):
        (tmp_path / "c.yaml").write_text("lr: 1")
        read_config_file(tmp_path / "c.yaml")


def test_every_field_is_a_command_line_option():
    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "resnet20",
            "--lr",
            "0.05",
            "--no-augment",
            "--nesterov",
            "--milestones",
            "0.3",
            "0.6",
            "--model-arg",
            "drop_path_rate=0.1",
            "--model-arg",
            "shortcut=B",
            "--crop-size",
            "none",
            "--amp",
            "bf16",
        ]
    )
    values = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    assert values == {
        "model": "resnet20",
        "lr": 0.05,
        "augment": False,
        "nesterov": True,
        "milestones": [0.3, 0.6],
        "model_args": [("drop_path_rate", 0.1), ("shortcut", "B")],
        "crop_size": None,
        "amp": "bf16",
    }


def _train_options() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions}


def test_options_with_a_fixed_set_of_values_offer_them_as_choices(capsys):
    options = _train_options()
    expected = {
        "amp": config.AMPS,
        "schedule": config.SCHEDULES,
        "warmup": config.WARMUPS,
        "loss": config.LOSSES,
        "recipe": tuple(config.RECIPES),
        "compile_mode": config.COMPILE_MODES,
        "progress": config.PROGRESS,
    }
    for name, values in expected.items():
        assert tuple(options[name].choices) == values, name  # the constants, not a copy
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--model", "resnet20", "--amp", "fp32"])
    assert exit_info.value.code == 2
    assert "argument --amp: invalid choice: 'fp32'" in capsys.readouterr().err


def test_help_texts_describe_their_own_option():
    options = _train_options()
    assert "torch.compile" not in options["channels_last"].help
    assert "memory format" in options["channels_last"].help
    assert options["compile"].help.startswith("torch.compile the network")
    assert "weight decay" not in options["momentum"].help
    assert "Nesterov" in options["nesterov"].help and "L2" in options["weight_decay"].help
    assert not [a.dest for a in options.values() if a.help and "``" in a.help]


def test_toml_without_tomllib_uses_the_tomli_backport(tmp_path, monkeypatch):
    path = tmp_path / "run.toml"
    path.write_text('recipe = "cosine"\nlr = 0.05\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    if importlib.util.find_spec("tomli") is not None:
        assert read_config_file(path) == {"recipe": "cosine", "lr": 0.05}
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(
        ValueError, match=r"needs Python >= 3.11 \(tomllib\) or `pip install tomli`"
    ):
        read_config_file(path)


# -- schedules ------------------------------------------------------------------------------------
def test_paper_step_schedule_and_scaled_milestones():
    cfg = replace(resolve_config(), warmup="none")
    full = LRSchedule(cfg, 64000)  # He et al. 2015: /10 at 32k and 48k of 64k iterations
    assert [full.lr(s) for s in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    short = LRSchedule(cfg, 640)  # the same shape on a 100x shorter run
    assert short.milestones == [320, 480]
    ref = torch.optim.lr_scheduler.MultiStepLR(
        torch.optim.SGD([torch.zeros(1)], lr=0.1), milestones=[320, 480], gamma=0.1
    )
    for step in range(640):
        assert short.lr(step) == pytest.approx(ref.get_last_lr()[0], rel=1e-12), step
        ref.optimizer.step()
        ref.step()


def test_error_driven_warmup():
    cfg = resolve_config({"warmup": "error", "warmup_window": 3, "warmup_steps": 400})
    s = LRSchedule(cfg, 64000)
    for step in range(5):
        assert s.lr(step) == 0.01
        s.observe(step, 0.9)
    # The running error (mean of the last 3) drops below 80% only at the third low value.
    for step, err in zip(range(5, 8), (0.76, 0.76, 0.76), strict=True):
        assert s.lr(step) == 0.01
        s.observe(step, err)
    assert s.lr(8) == 0.1 and s.warmup_ended_at == 8
    # Never below 80%: the cap ends it.
    capped = LRSchedule(replace(cfg, warmup_steps=20), 64000)
    for step in range(20):
        assert capped.lr(step) == 0.01
        capped.observe(step, 0.95)
    assert capped.lr(20) == 0.1
    # State survives a checkpoint.
    again = LRSchedule(cfg, 64000)
    again.load_state_dict(s.state_dict())
    assert again.lr(9) == 0.1 and again.warmup_ended_at == 8


def test_warmup_auto_by_depth():
    cfg = resolve_config()
    assert resolve_warmup(cfg, 110).warmup == "error"  # He et al.: 110 layers and deeper
    assert resolve_warmup(cfg, 56).warmup == "none"
    assert resolve_warmup(cfg, None).warmup == "none"
    assert resolve_warmup(replace(cfg, schedule="cosine"), 1202).warmup == "none"
    with pytest.raises(ValueError, match="resolve warmup='auto'"):
        LRSchedule(cfg, 10)


def test_cosine_matches_torch():
    cfg = resolve_config({"recipe": "cosine", "min_lr": 0.001})
    s = LRSchedule(cfg, 50)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.SGD([torch.zeros(1)], lr=0.1), T_max=50, eta_min=0.001
    )
    for step in range(50):
        assert s.lr(step) == pytest.approx(ref.get_last_lr()[0], rel=1e-9), step
        ref.optimizer.step()
        ref.step()


def test_onecycle_matches_torch():
    cfg = resolve_config({"recipe": "onecycle", "lr": 0.4})
    s = LRSchedule(cfg, 100)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.SGD([torch.zeros(1)], lr=0.4),
        max_lr=0.4,
        total_steps=100,
        pct_start=0.3,
        div_factor=25.0,
        final_div_factor=1e4,
        cycle_momentum=False,
    )
    for step in range(100):
        assert s.lr(step) == pytest.approx(ref.get_last_lr()[0], rel=1e-9), step
        ref.optimizer.step()
        ref.step()


def test_linear_warmup():
    s = LRSchedule(resolve_config({"recipe": "cosine", "warmup": "linear", "warmup_steps": 4}), 100)
    assert [s.lr(k) for k in range(4)] == pytest.approx([0.01, 0.0325, 0.055, 0.0775])
    assert s.lr(4) == pytest.approx(s.main_lr(4))
