"""skiplab.config: one from_dict/to_dict/with_overrides and one error style for every config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skiplab.bench.config import BenchConfig, FastPath
from skiplab.config import Config, check_choice, check_int, check_real, choices_of
from skiplab.experiments.base import Settings
from skiplab.hardware import AMPS, check_amp_device
from skiplab.models.densenet import DENSENET_VARIANTS, DenseNetConfig
from skiplab.models.fpn import FPN_VARIANTS, FPNConfig
from skiplab.models.highway import HIGHWAY_VARIANTS, HighwayCNNConfig, HighwayMLPConfig
from skiplab.models.resnet import RESNET_VARIANTS, ResNetConfig
from skiplab.models.unet import UNET_VARIANTS, UNetConfig
from skiplab.train.config import TrainConfig

MODEL_CONFIGS = [
    row.config
    for table in (RESNET_VARIANTS, DENSENET_VARIANTS, UNET_VARIANTS, FPN_VARIANTS, HIGHWAY_VARIANTS)
    for row in table.values()
]


def _every_config(tmp_path: Path) -> list[Config]:
    return [
        *MODEL_CONFIGS,
        TrainConfig(model="resnet20", milestones=(0.3, 0.6), model_args={"widths": [8, 16, 32]}),
        Settings(out_dir=tmp_path, data_dir=tmp_path / "data", seeds=[3, 5], amp="auto"),
        BenchConfig(fast=FastPath(channels_last=True), batch_sizes=[2, 4]),
    ]


def test_every_config_class_derives_from_the_base():
    classes = {type(c) for c in MODEL_CONFIGS}
    assert classes == {
        ResNetConfig,
        DenseNetConfig,
        UNetConfig,
        FPNConfig,
        HighwayMLPConfig,
        HighwayCNNConfig,
    }
    for cls in (*classes, TrainConfig, Settings, BenchConfig, FastPath):
        assert issubclass(cls, Config)
        assert "with_overrides" not in vars(cls) and "from_dict" not in vars(cls)


def test_from_dict_inverts_to_dict_through_json(tmp_path):
    for cfg in _every_config(tmp_path):
        plain = json.loads(json.dumps(cfg.to_dict()))  # as config.json / results.json hold it
        back = type(cfg).from_dict(plain)
        assert back.to_dict() == plain
        if not isinstance(cfg, Settings):  # Settings keeps the out_dir it was given (a Path)
            assert back == cfg, type(cfg).__name__


def test_to_dict_writes_the_keys_results_files_have_always_held(tmp_path):
    s = Settings(out_dir=tmp_path, seeds=2, amp="auto")
    assert list(s.to_dict()) == [
        "out_dir",
        "budget",
        "data",
        "data_dir",
        "device",
        "seeds",
        "amp",
        "channels_last",
        "jobs",
        "amp_asked",
    ]
    assert s.to_dict()["seeds"] == [0, 1] and s.to_dict()["out_dir"] == str(tmp_path)
    assert s.to_dict()["amp_asked"] == "auto"
    assert BenchConfig().to_dict()["fast"]["amp"] == "none"


def test_with_overrides_takes_json_lists_as_tuples():
    cfg = RESNET_VARIANTS["resnet20"].config.with_overrides(
        {"layers": [1, 1, 1], "widths": [4, 8, 8]}
    )
    assert cfg.layers == (1, 1, 1) and cfg.widths == (4, 8, 8)
    assert FPN_VARIANTS["fpn_resnet18"].config.with_overrides({"levels": [2, 3]}).levels == (2, 3)
    mlp = HIGHWAY_VARIANTS["highway_mlp"].config.with_overrides({"input_size": [1, 8, 8]})
    assert mlp.input_size == (1, 8, 8)


@pytest.mark.parametrize(
    ("cfg", "key", "close"),
    [
        (RESNET_VARIANTS["resnet20"].config, "layer", "layers"),
        (DENSENET_VARIANTS["densenet121"].config, "growth", "growth_rate"),
        (HIGHWAY_VARIANTS["highway_mlp"].config, "widht", "width"),
        (TrainConfig(), "lrate", "lr"),
    ],
)
def test_unknown_key_names_the_class_the_key_and_the_close_names(cfg, key, close):
    name = type(cfg).__name__
    pattern = rf"unknown option\(s\) \['{key}'\] for {name} \(did you mean \[.*'{close}'.*\]\?\)"
    with pytest.raises(ValueError, match=pattern + r"; allowed: \["):
        cfg.with_overrides({key: 1})
    with pytest.raises(ValueError, match=rf"for {name} in run/config.json"):
        type(cfg).from_dict({**cfg.to_dict(), key: 1}, where="run/config.json")


def test_unknown_key_without_a_close_name_lists_every_name():
    with pytest.raises(ValueError, match=r"\['zzz'\] for FPNConfig; allowed: \['encoder', "):
        FPN_VARIANTS["fpn_resnet18"].config.with_overrides({"zzz": 1})


def test_from_dict_refuses_what_is_not_a_table():
    with pytest.raises(ValueError, match="TrainConfig must be a table of settings; got list"):
        TrainConfig.from_dict([1, 2])


@pytest.mark.parametrize(
    ("cfg", "field", "value"),
    [
        (RESNET_VARIANTS["resnet20"].config, "stem", "tiny"),
        (RESNET_VARIANTS["resnet20"].config, "block", "wide"),
        (DENSENET_VARIANTS["densenet121"].config, "stem", "tiny"),
        (UNET_VARIANTS["unet"].config, "upsample", "nearest"),
        (HIGHWAY_VARIANTS["highway_cifar19"].config, "skip", "dense"),
        (TrainConfig(), "schedule", "linear"),
        (TrainConfig(), "amp", "fp8"),
        (FastPath(), "amp", "fp8"),
    ],
)
def test_every_choice_field_raises_one_error_style(cfg, field, value):
    allowed = list(choices_of(type(cfg), field))
    message = f"{field} must be one of {allowed}; got {value!r}"
    with pytest.raises(ValueError) as info:
        cfg.with_overrides({field: value})
    assert str(info.value) == message


def test_amp_choices_are_the_hardware_ones(tmp_path):
    for cls in (TrainConfig, Settings, FastPath):
        assert choices_of(cls, "amp") == AMPS
    with pytest.raises(ValueError, match=r"amp must be one of \['auto', 'none', 'bf16', 'fp16'\]"):
        Settings(out_dir=tmp_path, amp="fp8")


def test_fp16_needs_cuda_everywhere_with_one_message(tmp_path):
    message = "amp 'fp16' needs a CUDA device; got 'cpu' (use 'bf16' or 'auto' there)"
    for make in (
        lambda: check_amp_device("fp16", "cpu"),
        lambda: Settings(out_dir=tmp_path, amp="fp16"),
        lambda: BenchConfig(fast=FastPath(amp="fp16")),
    ):
        with pytest.raises(ValueError) as info:
            make()
        assert str(info.value) == message
    check_amp_device("fp16", "auto")  # may become CUDA: decided when the device is
    check_amp_device("bf16", "cpu")


def test_checkers_one_error_style():
    check_choice("mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"^mode must be one of \['a', 'b'\]; got 'c'$"):
        check_choice("mode", "c", ("a", "b"))
    cases = [
        (lambda: check_int("n", 0, 1), "n must be a positive integer; got 0"),
        (lambda: check_int("n", True, 1), "n must be a positive integer; got True"),
        (lambda: check_int("n", -1, 0), "n must be an integer >= 0; got -1"),
        (lambda: check_int("i", 6, 0, 5), r"i must be an integer in \[0, 5\]; got 6"),
        (lambda: check_int("e", 0, 1, optional=True), "e must be a positive integer or None"),
        (lambda: check_real("p", 1.0, 0, 1, high_open=True), r"p must be in \[0, 1\); got 1.0"),
        (lambda: check_real("lr", 0.0, 0, low_open=True), "lr must be > 0; got 0.0"),
        (lambda: check_real("g", "x"), "g must be a number; got 'x'"),
        (lambda: check_real("g", False), "g must be a number; got False"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=f"^{message}"):
            call()
    check_int("e", None, 1, optional=True)
    check_real("p", 0, 0, 1, high_open=True)
