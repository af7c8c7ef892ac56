"""shattered-gradients and residual-responses: end to end at a tiny budget (residual-responses
on the degradation experiment's nets), and their claims on made-up results."""

from __future__ import annotations

import math

import pytest

from skiplab.experiments import degradation, residual_responses, shattered_gradients
from skiplab.experiments.base import Settings, load_results, run_one
from skiplab.experiments.report import build_report
from skiplab.experiments.residual_responses import ResidualResponses
from skiplab.experiments.shattered_gradients import ShatteredGradients
from skiplab.experiments.training import DataPlan

SEEDS = (0, 1, 2)
TRAINED, AT_CHANCE = 0.5, 2.3  # final training losses; chance is ln 10 = 2.303


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_degradation):
    patch = pytest.MonkeyPatch()
    patch.setitem(
        shattered_gradients.BUDGETS,
        "quick",
        shattered_gradients.ShatterBudget(
            (8, 14), 8, DataPlan(20, 20, 8), tiny_degradation.model_args
        ),
    )
    patch.setitem(residual_responses.BUDGETS, "quick", residual_responses.ResponsesBudget(16))
    out = tmp_path_factory.mktemp("run")
    settings = Settings(out_dir=out)
    run_one(degradation.Degradation(), settings)
    run_one(ShatteredGradients(), settings)
    run_one(ResidualResponses(), settings)
    yield out
    patch.undo()


# -- end to end -----------------------------------------------------------------------------------
def test_shattered_gradients_measures_every_net_at_initialisation(run_dir):
    results = load_results(run_dir / "shattered-gradients").results
    assert results["seeds"] == [0] and results["points"] == 8
    assert {(n["kind"], n["depth"]) for n in results["nets"]} == {
        (k, d) for k in ("plain", "residual") for d in (8, 14)
    }
    for n in results["nets"]:
        assert -1 <= n["r1"] <= 1 and n["correlation"][0] == pytest.approx(1.0)
        assert n["correlation"][1] == pytest.approx(n["r1"]) and len(n["correlation"]) == 5
        assert len(n["directional"]) == 8 and 0 <= n["whiteness"] <= 1
    assert not (run_dir / "runs" / "plain8-quick-seed0-shatter").exists()  # trains nothing
    verdicts = ShatteredGradients().verdicts(results)
    assert [v.status for v in verdicts] == ["INCONCLUSIVE"] * 2  # one seed never decides
    report = build_report(run_dir, [ShatteredGradients()]).read_text()
    assert report.count("| shattered-gradients |") == 2 and "| plain | 14 |" in report
    for stem in ("shattering_vs_depth", "gradients_along_line"):
        assert (run_dir / "shattered-gradients" / f"{stem}.png").stat().st_size > 1000


def test_residual_responses_reads_the_degradation_nets(run_dir):
    results = load_results(run_dir / "residual-responses").results
    runs = sorted(p.name for p in (run_dir / "runs").iterdir())
    assert runs == [f"{n}{d}-quick-seed0" for n in ("plain", "resnet") for d in (14, 8)]
    assert results["images"] == 16 and results["depths"] == [8, 14]
    for n in results["nets"]:
        units = 3 * ((n["depth"] - 2) // 6)
        assert n["run"] == f"{'plain' if n['kind'] == 'plain' else 'resnet'}{n['depth']}" + (
            "-quick-seed0"
        )
        assert len(n["blocks"]) == len(n["response_std"]) == len(n["norm_ratio"]) == units
        assert n["branch_layer"] == ["bn2"] and all(s > 0 for s in n["response_std"])
        assert n["train_loss"] > 0
    verdicts = ResidualResponses().verdicts(results)
    assert len(verdicts) == 2 and {v.status for v in verdicts} == {"INCONCLUSIVE"}
    report = build_report(run_dir, [ResidualResponses()]).read_text()
    assert report.count("| residual-responses |") == 2 and "| ResNet-14 | 14 |" in report
    assert (run_dir / "residual-responses" / "layer_responses.png").stat().st_size > 1000


# -- shattered-gradients claims on made-up results -------------------------------------------------
def shatter_results(r1, seeds=SEEDS) -> dict:
    """Made-up results: ``r1(kind, depth, seed)`` is R(1)."""
    nets = [
        {
            "kind": kind,
            "depth": depth,
            "seed": seed,
            "image": seed,
            "r1": r1(kind, depth, seed),
            "whiteness": 0.1,
            "correlation": [1.0, r1(kind, depth, seed), 0.5],
            "directional_acf": [1.0, 0.5, 0.2],
            "directional": [0.0, 1.0, -1.0, 0.5],
        }
        for seed in seeds
        for kind in ("plain", "residual")
        for depth in (20, 56, 110)
    ]
    return {
        "budget": "standard",
        "depths": [20, 56, 110],
        "points": 4,
        "span": 2.0,
        "model_args": {},
        "data": "made up",
        "num_classes": 10,
        "seeds": list(seeds),
        "nets": nets,
    }


def test_shattering_claims_hold_where_deep_plain_gradients_decorrelate():
    def r1(kind, depth, seed):
        return 0.99 if kind == "residual" or depth == 20 else 0.6 + 0.01 * seed

    verdicts = ShatteredGradients().verdicts(shatter_results(r1))
    assert [v.status for v in verdicts] == ["REPRODUCED", "REPRODUCED"]
    assert verdicts[0].values == pytest.approx([0.39 - 0.01 * s for s in SEEDS])
    assert "plain-110" in verdicts[0].claim and "plain-20" in verdicts[0].claim
    assert "ResNet-110" in verdicts[1].claim and {v.min_effect for v in verdicts} == {0.1}


def test_shattering_claims_fail_where_every_net_stays_smooth():
    def r1(kind, depth, seed):
        return 0.95 + 0.01 * seed

    verdicts = ShatteredGradients().verdicts(shatter_results(r1))
    assert [v.status for v in verdicts] == ["NOT REPRODUCED", "NOT REPRODUCED"]


@pytest.mark.parametrize("seeds", [(0,), (3, 5)])
def test_shattering_claims_are_never_decided_by_fewer_than_three_seeds(seeds):
    def r1(kind, depth, seed):
        return 0.99 if kind == "residual" or depth == 20 else 0.2

    verdicts = ShatteredGradients().verdicts(shatter_results(r1, seeds))
    assert [v.status for v in verdicts] == ["INCONCLUSIVE"] * 2
    assert all("never decisive" in v.note for v in verdicts)


def test_a_net_without_a_finite_correlation_is_named_and_enters_no_margin(tmp_path):
    def r1(kind, depth, seed):
        if (kind, depth, seed) == ("plain", 110, 1):
            return math.nan  # e.g. a gradient that is zero everywhere on the line
        return 0.99 if kind == "residual" or depth == 20 else 0.5

    results = shatter_results(r1)
    verdicts = ShatteredGradients().verdicts(results)
    assert [v.status for v in verdicts] == ["INCONCLUSIVE"] * 2
    assert all("plain-110 seed 1" in v.note for v in verdicts) and verdicts[0].n == 2
    section = ShatteredGradients().section(results, [], [])
    assert "| plain | 20 | 0.990 ± 0.000 | 0.990, 0.990, 0.990 |" in section
    figures = ShatteredGradients().figures(results, tmp_path)
    assert all((tmp_path / f"{f.stem}.png").stat().st_size > 1000 for f in figures)
    assert any("eval mode" in d for d in ShatteredGradients().deviations(results))


# -- residual-responses claims on made-up results --------------------------------------------------
def response_results(std, loss=lambda kind, depth, seed: TRAINED, seeds=SEEDS) -> dict:
    """Made-up results: every unit of the ``kind`` net of ``depth`` has response std
    ``std(kind, depth, seed)``."""
    nets = [
        {
            "kind": kind,
            "depth": depth,
            "seed": seed,
            "run": f"{kind}{depth}-seed{seed}",
            "train_loss": loss(kind, depth, seed),
            "steps": 100,
            "blocks": ["layer1.0", "layer2.0", "layer3.0"],
            "branch_layer": ["bn2"],
            "response_std": [std(kind, depth, seed)] * 3,
            "norm_ratio": [0.5] * 3,
        }
        for seed in seeds
        for kind in ("plain", "residual")
        for depth in (20, 56)
    ]
    return {
        "budget": "standard",
        "depths": [20, 56],
        "epochs": 3,
        "batch_size": 128,
        "steps": 100,
        "images": 500,
        "model_args": {},
        "data": "made up",
        "num_classes": 10,
        "seeds": list(seeds),
        "nets": nets,
    }


def test_response_claims_hold_where_residual_responses_are_small_and_shrink_with_depth():
    def std(kind, depth, seed):
        if kind == "plain":
            return 2.0
        return (1.0 if depth == 20 else 0.5) + 0.01 * seed

    verdicts = ResidualResponses().verdicts(response_results(std))
    assert [v.status for v in verdicts] == ["REPRODUCED", "REPRODUCED"]
    # The worst depth of a seed decides: depth 20, 1 - (1 + 0.01 s) / 2.
    assert verdicts[0].values == pytest.approx([1 - (1 + 0.01 * s) / 2 for s in SEEDS])
    assert verdicts[1].values == pytest.approx(
        [1 - (0.5 + 0.01 * s) / (1 + 0.01 * s) for s in SEEDS]
    )
    assert "ResNet-56" in verdicts[1].claim and "ResNet-20" in verdicts[1].claim


def test_response_claims_fail_where_residual_responses_are_larger():
    def std(kind, depth, seed):
        if kind == "plain":
            return 1.0
        return (1.0 if depth == 20 else 2.0) + 0.01 * seed

    verdicts = ResidualResponses().verdicts(response_results(std))
    assert [v.status for v in verdicts] == ["NOT REPRODUCED", "NOT REPRODUCED"]


def test_response_claims_rest_only_on_trained_nets_and_three_seeds(tmp_path):
    def std(kind, depth, seed):
        return 2.0 if kind == "plain" else (1.0 if depth == 20 else 0.5)

    def loss(kind, depth, seed):
        return AT_CHANCE if (kind, depth, seed) == ("residual", 56, 2) else TRAINED

    results = response_results(std, loss)
    verdicts = ResidualResponses().verdicts(results)
    assert [v.status for v in verdicts] == ["INCONCLUSIVE"] * 2
    assert all("ResNet-56 seed 2" in v.note for v in verdicts)
    assert verdicts[0].n == 3 and verdicts[1].n == 2  # seed 2 still has its depth-20 pair

    verdicts = ResidualResponses().verdicts(response_results(std, lambda *_: AT_CHANCE))
    assert [v.n for v in verdicts] == [0, 0] and "never trained" in verdicts[0].measured

    verdicts = ResidualResponses().verdicts(response_results(std, seeds=(0, 1)))
    assert [v.status for v in verdicts] == ["INCONCLUSIVE"] * 2
    assert all("never decisive" in v.note for v in verdicts)

    section = ResidualResponses().section(results, [], [])
    assert "| plain-20 | 20 | 2 ± 0 | 2, 2, 2 |" in section
    figures = ResidualResponses().figures(results, tmp_path)
    assert (tmp_path / f"{figures[0].stem}.png").stat().st_size > 1000
    assert any("last BN" in d for d in ResidualResponses().deviations(results))
