"""identity-construction and loss-landscape: end to end on the degradation experiment's nets at a
tiny budget, and their claims on made-up results."""

from __future__ import annotations

import math

import pytest
import torch

from skiplab.data import ArrayDataset
from skiplab.experiments import degradation, identity_construction, loss_landscape
from skiplab.experiments.base import Settings, load_results, run_one
from skiplab.experiments.identity_construction import IdentityConstruction
from skiplab.experiments.loss_landscape import LossLandscape
from skiplab.experiments.report import build_report

TRAINED, AT_CHANCE = 0.5, 2.3  # final training losses; chance is ln 10 = 2.303


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_degradation):
    patch = pytest.MonkeyPatch()
    patch.setitem(
        identity_construction.BUDGETS, "quick", identity_construction.IdentityBudget(40, 16)
    )
    patch.setitem(loss_landscape.BUDGETS, "quick", loss_landscape.LandscapeBudget(3, 24, 4))
    out = tmp_path_factory.mktemp("run")
    settings = Settings(out_dir=out)
    run_one(IdentityConstruction(), settings)  # trains the degradation nets it needs
    run_one(LossLandscape(), settings)  # reads the deep ones, trains nothing
    yield out
    patch.undo()


# -- end to end -----------------------------------------------------------------------------------
def test_identity_construction_builds_the_shallow_function_on_the_degradation_nets(run_dir):
    results = load_results(run_dir / "identity-construction").results
    runs = sorted(p.name for p in (run_dir / "runs").iterdir())
    assert runs == [f"{n}{d}-quick-seed0" for n in ("plain", "resnet") for d in (14, 8)]
    assert (results["shallow"], results["deep"]) == (8, 14)
    assert results["train_images"] == 40 and results["check_images"] == 16
    for row in results["nets"]:
        assert row["max_logit_diff"] <= 1e-5 * row["max_logit"]
        # The constructed net is the shallow one: the same errors on the same images.
        assert row["constructed_train_error"] == pytest.approx(row["shallow_train_error"])
        assert row["constructed_train_loss"] == pytest.approx(row["shallow_train_loss"], rel=1e-4)
        assert 0 <= row["scratch_train_error"] <= 100
    verdicts = IdentityConstruction().verdicts(results)
    assert [v.status for v in verdicts][0] == "REPRODUCED"  # exact: one measurement decides
    assert {v.status for v in verdicts[1:]} == {"INCONCLUSIVE"}  # one seed never decides
    report = build_report(run_dir, [IdentityConstruction(), LossLandscape()]).read_text()
    assert report.count("| identity-construction |") == 3
    assert report.count("| loss-landscape |") == 1
    assert (run_dir / "identity-construction" / "identity_construction.png").stat().st_size > 1000


def test_loss_landscape_measures_the_deepest_degradation_nets(run_dir):
    results = load_results(run_dir / "loss-landscape").results
    assert results["deep"] == 14 and results["images"] == 24 and results["grid"] == [-1, 0, 1]
    assert len(list((run_dir / "runs").iterdir())) == 4  # nothing more trained
    for row in results["nets"]:
        assert len(row["losses"]) == 3 and all(len(r) == 3 for r in row["losses"])
        assert row["center_loss"] == row["losses"][1][1] > 0
        assert row["lambda_max"] >= row["lambda_min"]
        assert row["ratio"] == pytest.approx(abs(row["lambda_min"] / row["lambda_max"]))
    assert (run_dir / "loss-landscape" / "loss_landscape.png").stat().st_size > 1000


# -- the training images measured -----------------------------------------------------------------
# The indices that identity-construction and loss-landscape drew from 50 training images, 12 of
# them, before the draw moved into degradation.training_subset (skiplab 07c5b69: each
# experiment's own DeviceLoader(train, 12, train=True, augment=False, seed=SUBSET_SEED = 7)).
SUBSET_OF_50 = [41, 12, 9, 29, 49, 16, 38, 17, 45, 39, 7, 26]


def test_training_subset_draws_the_images_it_always_drew():
    n = 50  # one-pixel images whose label is their index: the labels are the indices drawn
    data = ArrayDataset(
        images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).contiguous(),
        targets=torch.arange(n),
        classes=tuple(str(i) for i in range(n)),
        task="classification",
        mean=(0.0,),
        std=(1.0,),
        source="indices",
    )
    x, y = degradation.training_subset(data, 12)
    assert y.tolist() == SUBSET_OF_50
    assert torch.equal(x.flatten(), torch.tensor(SUBSET_OF_50) / 255.0)  # not augmented
    _, every = degradation.training_subset(data, 100)  # more than there are: all of them
    assert every[:12].tolist() == SUBSET_OF_50 and sorted(every.tolist()) == list(range(n))


# -- claims on made-up results --------------------------------------------------------------------
def _identity_results(scratch: dict, diff: float = 1e-7, loss: float = TRAINED) -> dict:
    nets = [
        {
            "kind": kind,
            "seed": seed,
            "max_logit_diff": diff,
            "max_logit": 10.0,
            "shallow_train_error": 30.0,
            "constructed_train_error": 30.0,
            "scratch_train_error": scratch[kind] + 0.1 * seed,
            "shallow_final_loss": TRAINED,
            "scratch_final_loss": loss,
        }  # fmt: skip
        for kind in ("plain", "residual")
        for seed in (0, 1, 2)
    ]
    return {"shallow": 20, "deep": 56, "num_classes": 10, "check_images": 8, "nets": nets}


def test_identity_claims_follow_the_errors():
    v = IdentityConstruction().verdicts(_identity_results({"plain": 40.0, "residual": 25.0}))
    assert [x.status for x in v] == ["REPRODUCED"] * 3
    assert v[0].values == [pytest.approx(-math.log10(1e-8))]
    assert v[1].values[0] == pytest.approx(10.0) and v[2].values[0] == pytest.approx(5.0)
    # Reversed: the plain net finds better than the construction, the ResNet worse.
    v = IdentityConstruction().verdicts(_identity_results({"plain": 20.0, "residual": 35.0}))
    assert [x.status for x in v[1:]] == ["NOT REPRODUCED"] * 2
    # A construction that changes the function is refused, whatever the training gave.
    v = IdentityConstruction().verdicts(_identity_results({"plain": 40, "residual": 25}, 0.5))
    assert v[0].status == "NOT REPRODUCED"


def test_identity_claims_rest_on_trained_nets_only():
    v = IdentityConstruction().verdicts(
        _identity_results({"plain": 40.0, "residual": 25.0}, loss=AT_CHANCE)
    )
    assert v[0].status == "REPRODUCED"  # the construction needs no training
    assert [x.status for x in v[1:]] == ["INCONCLUSIVE"] * 2
    assert "plain-56 seed 0" in v[1].note and "ResNet-56 seed 0" in v[2].note


def test_identity_table_shows_mean_sd_and_every_seed():
    # The rows as the experiment's own cell formatter wrote them (skiplab 07c5b69).
    results = _identity_results({"plain": 40.0, "residual": 25.0})
    results.update(data={"train": "synthetic"}, train_images=40)
    lines = IdentityConstruction().section(results, [], []).splitlines()
    assert lines[-2:] == [
        "| plain | 30.0 ± 0.0% (30.0, 30.0, 30.0) | 30.0 ± 0.0% (30.0, 30.0, 30.0) | 1e-08 | "
        "40.1 ± 0.1% (40.0, 40.1, 40.2) |",
        "| ResNet | 30.0 ± 0.0% (30.0, 30.0, 30.0) | 30.0 ± 0.0% (30.0, 30.0, 30.0) | 1e-08 | "
        "25.1 ± 0.1% (25.0, 25.1, 25.2) |",
    ]
    results["nets"] = [n for n in results["nets"] if n["seed"] == 0]
    lines = IdentityConstruction().section(results, [], []).splitlines()
    assert lines[-1] == "| ResNet | 30.0% | 30.0% | 1e-08 | 25.0% |"


def _landscape_results(plain: float, res: float, loss: float = TRAINED) -> dict:
    nets = [
        {
            "kind": kind,
            "seed": s,
            "ratio": r * (1 + 0.05 * s),
            "lambda_min": -r,
            "lambda_max": 1.0,
            "train_loss": loss,
        }  # fmt: skip
        for kind, r in (("plain", plain), ("residual", res))
        for s in (0, 1, 2)
    ]
    return {"deep": 56, "num_classes": 10, "seeds": [0, 1, 2], "nets": nets}


@pytest.mark.parametrize(
    ("plain", "res", "status"),
    [(0.4, 0.02, "REPRODUCED"), (0.03, 0.02, "NOT REPRODUCED"), (0.01, 0.2, "NOT REPRODUCED")],
)
def test_landscape_claim_needs_a_factor_two(plain, res, status):
    (v,) = LossLandscape().verdicts(_landscape_results(plain, res))
    assert v.status == status
    assert v.values[0] == pytest.approx(math.log2(plain / res))


def test_landscape_claim_rests_on_trained_nets_only():
    (v,) = LossLandscape().verdicts(_landscape_results(0.4, 0.02, loss=AT_CHANCE))
    assert v.status == "INCONCLUSIVE" and "plain-56 seed 0" in v.note


def test_landscape_table_shows_mean_sd_and_every_seed():
    # The rows as the experiment's own cell formatter wrote them (skiplab 07c5b69).
    results = {**_landscape_results(0.4, 0.02), "images": 24, "data": "synthetic"}
    for n in results["nets"]:
        n["center_loss"] = 0.5 + 0.01 * n["seed"]
    lines = LossLandscape().section(results, [], []).splitlines()
    assert lines[-2:] == [
        "| plain-56 | 0.51 ± 0.01 | 1 ± 0 | -0.4 ± 0 | 0.42 ± 0.02 | 0.4, 0.42, 0.44 | 0.5 ± 0 |",
        "| ResNet-56 | 0.51 ± 0.01 | 1 ± 0 | -0.02 ± 0 | 0.021 ± 0.001 | 0.02, 0.021, 0.022 | "
        "0.5 ± 0 |",
    ]
    results["nets"] = [n for n in results["nets"] if n["seed"] == 0]
    results["nets"][0]["train_loss"] = math.nan
    lines = LossLandscape().section(results, [], []).splitlines()
    assert lines[-2:] == [
        "| plain-56 | 0.5 | 1 | -0.4 | 0.4 | 0.4 | nan |",
        "| ResNet-56 | 0.5 | 1 | -0.02 | 0.02 | 0.02 | 0.5 |",
    ]
