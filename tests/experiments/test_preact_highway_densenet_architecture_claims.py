"""The claims of architecture-table, densenet-efficiency, preact-vs-original and
highway-vs-residual on made-up results: each claim where it holds, where it fails and where a
guard fires; trained claims with fewer than three seeds are never decided."""

from __future__ import annotations

import math

import pytest

from skiplab.experiments.architecture_table import (
    BASIC64,
    BASIC256,
    BOTTLENECK,
    ArchitectureTable,
)

HOLDS, FAILS, OPEN = "REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE"


# -- architecture-table: exact claims ---------------------------------------------------------
def _table(r152_params=60e6, r152_macs=11.5e9, bottleneck_macs=218e6) -> dict:
    row = {"source": "torchvision", "cited_top5": None, "cited_source": None}
    return {
        "models": [
            {**row, "name": "vgg19", "params": 143.7e6, "fc_params": 123.6e6, "macs": 19.6e9},
            {**row, "name": "resnet152", "params": r152_params, "macs": r152_macs},
        ],
        "units": {
            BASIC64: {"params": 73984, "macs": 231e6, "macs_3x3": 231e6},
            BASIC256: {"params": 1180672, "macs": 3699e6, "macs_3x3": 3699e6},
            BOTTLENECK: {"params": 70400, "macs": bottleneck_macs, "macs_3x3": 116e6},
        },
    }


def test_architecture_claims_hold_on_one_exact_measurement():
    verdicts = ArchitectureTable().verdicts(_table())
    assert [v.status for v in verdicts] == [HOLDS] * 3
    assert all(v.exact and v.n == 1 and not v.guards for v in verdicts)  # no seeds, no guards
    assert verdicts[0].margin == pytest.approx(83.7)  # millions of parameters
    assert "123.6M of its parameters (86.0%) in its fully connected layers" in verdicts[0].measured
    assert verdicts[1].margin == pytest.approx(8.1)  # billions of multiply-adds
    assert verdicts[2].margin == pytest.approx(math.log(1.2) - abs(math.log(218 / 231)))


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"r152_params": 150e6}, 0),  # more parameters than VGG-19
        ({"r152_macs": 20e9}, 1),  # more multiply-adds than VGG-19
        ({"bottleneck_macs": 3 * 231e6}, 2),  # three times the 64-d basic unit: not "similar"
        ({"bottleneck_macs": 231e6 / 1.3}, 2),  # the tolerance is two-sided
    ],
)
def test_architecture_claims_fail_on_made_up_counts(change, failing):
    statuses = [v.status for v in ArchitectureTable().verdicts(_table(**change))]
    assert statuses == [FAILS if i == failing else HOLDS for i in range(3)]


# -- densenet-efficiency: exact parameter claim, per-seed guarded error claim ------------------
def _dense(errors: dict, seeds=(0, 1, 2), loss=0.5, params=(0.8e6, 1.7e6)) -> dict:
    """Made-up results: ``errors[net]`` the test error (fraction) of seed 0, +0.002 per seed."""
    from skiplab.experiments.densenet_efficiency import DENSE, RESNET

    nets = [DENSE, "resnet56", RESNET]
    return {
        "num_classes": 10,
        "data": {"train": "made up", "test": "made up"},
        "epochs": 1,
        "params": {DENSE: params[0], "resnet56": 0.85e6, RESNET: params[1]},
        "nets": nets,
        "runs": [
            {
                "net": net,
                "seed": seed,
                "test_error": errors.get(net, 0.07) + 0.002 * seed * (net == DENSE),
                "train_loss": loss(net, seed) if callable(loss) else loss,
            }
            for seed in seeds
            for net in nets
        ],
    }


@pytest.mark.parametrize(
    ("errors", "params", "expected"),
    [
        ({"densenet_bc100_k12": 0.045, "resnet110": 0.064}, (0.8e6, 1.7e6), [HOLDS, HOLDS]),
        ({"densenet_bc100_k12": 0.07, "resnet110": 0.064}, (1.8e6, 1.7e6), [FAILS, FAILS]),
    ],
)
def test_densenet_claims_follow_made_up_numbers(errors, params, expected):
    from skiplab.experiments.densenet_efficiency import DenseNetEfficiency

    verdicts = DenseNetEfficiency().verdicts(_dense(errors, params=params))
    assert [v.status for v in verdicts] == expected
    assert verdicts[0].exact and verdicts[0].n == 1
    assert verdicts[1].n == 3 and len(verdicts[1].guards) == 6  # both nets, every seed
    # One or two seeds: the error claim is never decided; the exact count still is.
    for seeds in ((0,), (0, 1)):
        verdicts = DenseNetEfficiency().verdicts(_dense(errors, seeds, params=params))
        assert [v.status for v in verdicts] == [expected[0], OPEN]


def test_densenet_error_claim_is_open_when_a_net_is_at_chance():
    from skiplab.experiments.densenet_efficiency import DenseNetEfficiency

    def loss(net, seed):  # ResNet-110 of seed 2 never left chance (ln 10 = 2.30)
        return 2.29 if (net, seed) == ("resnet110", 2) else 0.5

    errors = {"densenet_bc100_k12": 0.045, "resnet110": 0.064}
    params, error = DenseNetEfficiency().verdicts(_dense(errors, loss=loss))
    assert params.status == HOLDS  # exact: no guard
    assert error.status == OPEN and "resnet110 seed 2" in error.note
    section = DenseNetEfficiency().section(_dense(errors, loss=loss), [], [])
    assert "| 2 of 3 |" in section
