"""One plug-in table shape (skiplab.registry.Registry) for models, experiments and faults: each
refuses a name twice, answers an unknown name with the closest known ones, and keeps its order."""

from __future__ import annotations

import pytest

from skiplab import selftest
from skiplab.cli import main
from skiplab.experiments.cli import EXPERIMENTS
from skiplab.experiments.degradation import Degradation
from skiplab.registry import Registry, get_model_entry, register_model
from skiplab.selftest import FAULTS, bombs, checkpoint_faults, kill

# README.md, "The nine experiments" (and the two of issue 17), and the order of report.md.
EXPERIMENT_ORDER = [
    "degradation",
    "gradient-flow",
    "shattered-gradients",
    "ensemble-of-paths",
    "residual-responses",
    "identity-construction",
    "loss-landscape",
    "preact-vs-original",
    "highway-vs-residual",
    "unet-skips",
    "fpn-laterals",
    "densenet-efficiency",
    "architecture-table",
    "shortcut-variants",
    "normalisation-free",
    "transformer-residual",
    "transformer-gradients",
    "transformer-lesion",
]
# The table of skiplab/selftest/__init__.py and docs/reliability.md.
FAULT_ORDER = [
    "kill",
    "crash-write",
    "damaged-checkpoint",
    "malicious-pickle",
    "hostile-archive",
    "bad-download",
    "bad-input",
    "non-finite",
    "distributed",
    "size-bomb",
    "image-bomb",
]


def test_a_registry_keeps_order_refuses_duplicates_and_suggests():
    table: Registry[int] = Registry("thing", describe=lambda n: f"number {n}")
    table.add("beta", 2)
    table.add("alpha", 1)
    assert list(table) == ["beta", "alpha"] and table["alpha"] == 1 and len(table) == 2
    with pytest.raises(ValueError, match=r"^thing 'beta' is already registered \(number 2\)$"):
        table.add("beta", 3)
    assert table["beta"] == 2
    with pytest.raises(KeyError, match=r"unknown thing 'alpah'; did you mean alpha\? \(known: "):
        table["alpah"]
    assert "alpah" not in table and table.get("alpah") is None
    assert table.unknown("zzz") == "unknown thing 'zzz' (known: beta, alpha)"


def test_the_model_registry_messages_are_unchanged():
    with pytest.raises(KeyError) as info:
        get_model_entry("resnet21")
    message = info.value.args[0]
    assert message.startswith("unknown model 'resnet21'; did you mean ") and "resnet20" in message
    assert message.endswith("? (see `skiplab models` for all names)")
    with pytest.raises(ValueError, match=r"^model 'resnet20' is already registered \(family "):
        register_model("resnet20", family="x", input_size=(3, 32, 32))(lambda: None)


def test_the_experiments_in_report_order():
    assert list(EXPERIMENTS) == EXPERIMENT_ORDER
    assert all(EXPERIMENTS[name].name == name for name in EXPERIMENTS)


def test_an_experiment_name_twice_is_refused():
    with pytest.raises(ValueError, match="experiment 'degradation' is already registered"):
        EXPERIMENTS.add("degradation", Degradation)
    assert list(EXPERIMENTS) == EXPERIMENT_ORDER


def test_an_unknown_experiment_gets_a_suggestion(tmp_path, capsys):
    with pytest.raises(KeyError, match="unknown experiment 'degradaton'; did you mean degradation"):
        EXPERIMENTS["degradaton"]
    assert main(["reproduce", "gradient_flow", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "skiplab: error: unknown experiment 'gradient_flow'; did you mean gradient-flow" in err
    assert not (tmp_path / "run").exists()


def test_the_faults_in_order_with_their_functions():
    assert list(FAULTS) == FAULT_ORDER
    assert FAULTS["kill"] is kill.run
    assert FAULTS["crash-write"] is checkpoint_faults.run_crash
    assert FAULTS["image-bomb"] is bombs.run_images


def test_a_fault_name_twice_is_refused():
    with pytest.raises(ValueError, match="fault 'kill' is already registered"):
        FAULTS.add("kill", bombs.run_images)
    assert FAULTS["kill"] is kill.run


def test_an_unknown_fault_gets_a_suggestion(capsys):
    with pytest.raises(KeyError, match="unknown fault 'kil'; did you mean kill"):
        selftest.run_fault("kil", None)
    with pytest.raises(SystemExit) as info:
        selftest.main(["kil"])
    assert info.value.code == 2
    assert "unknown fault 'kil'; did you mean kill" in capsys.readouterr().err
