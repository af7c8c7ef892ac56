"""unet-skips and fpn-laterals verdicts on made-up results (no training): each claim where it
holds, where it fails, where a net failed its guard, and with fewer than three seeds; the guard
itself; the section, deviations and figures of a run where one net failed."""

from __future__ import annotations

import pytest
import torch

from skiplab.experiments.segmentation_skips import (
    FPN_LATERALS,
    FPN_SINGLE_SCALE,
    UNET_DICE,
    UNET_PIXEL_ERROR,
    FPNLaterals,
    UNetSkips,
    foreground_stats,
    segmentation_guard,
)
from skiplab.experiments.verdict import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

# [true][predicted] pixel counts of 3 classes; 830 background, 85 + 85 foreground pixels.
TRAINED = [[800, 20, 10], [15, 65, 5], [10, 5, 70]]
BLANK = [[830, 0, 0], [85, 0, 0], [85, 0, 0]]  # all background
ALL_FOREGROUND = [[0, 830, 0], [0, 85, 0], [0, 0, 85]]
# Objects: two small (area 5) and two large (area 20); the median area is 12.5.
AREAS = (5, 5, 20, 20)


def made_up(labels, seeds, *, dice, error, small, large=0.9, confusion=lambda label, s: TRAINED):
    """Results of a segmentation experiment: ``dice(label, seed)``, ``error(label, seed)`` and
    ``small(label, seed)`` (recall of the small objects) give each net's numbers."""
    runs = [
        {
            "variant": label,
            "seed": s,
            "run": f"x-{label}-seed{s}",
            "metrics": {"loss": 0.3, "error": error(label, s), "dice": dice(label, s), "iou": 0.5},
            "confusion": confusion(label, s),
            "objects": [
                {"class": 1, "area": a, "recall": small(label, s) if a < 10 else large}
                for a in AREAS
            ],
        }
        for label in labels
        for s in seeds
    ]
    return {
        "budget": "quick",
        "data": {
            "name": "synthetic-seg",
            "train": "synthetic-seg train",
            "test": "synthetic-seg test",
            "train_images": 8,
            "test_images": 4,
        },
        "image_size": [64, 64],
        "classes": ["background", "disc", "square"],
        "epochs": 1,
        "batch_size": 4,
        "lr": 0.05,
        "crop_size": None,
        "seeds": list(seeds),
        "prediction_seed": seeds[0],
        "small_area": 12.5,
        "variants": {label: {"model": "m", "args": {}, "params": 1000} for label in labels},
        "runs": runs,
    }


UNET = ("with skips", "no skips")
FPN = ("laterals", "no laterals", "single scale (P5)")


def unet_results(better: bool, seeds=(0, 1, 2), confusion=lambda label, s: TRAINED):
    good, bad = (0.8, 0.6) if better else (0.6, 0.8)

    def dice(label, s):
        return (good if label == "with skips" else bad) + 0.01 * s

    def error(label, s):
        return (0.05 if (label == "with skips") == better else 0.1) - 0.002 * s

    return made_up(UNET, seeds, dice=dice, error=error, small=lambda *_: 0.5, confusion=confusion)


@pytest.mark.parametrize(("better", "status"), [(True, REPRODUCED), (False, NOT_REPRODUCED)])
def test_unet_claims_follow_made_up_numbers(better, status):
    dice, error = UNetSkips().verdicts(unet_results(better))
    assert (dice.status, error.status) == (status, status)
    assert dice.n == error.n == 3 and dice.guard_text == "passed (6 nets)"
    assert dice.margin == pytest.approx(0.2 if better else -0.2)
    assert error.margin == pytest.approx(0.05 if better else -0.05)
    assert (dice.min_effect, error.min_effect) == (UNET_DICE.min_effect, 0.002)
    assert "Table 1" in error.source and "0.0611" in error.paper
    assert dice.why_min and error.why_min == UNET_PIXEL_ERROR.why_min


def test_unet_claims_with_a_blank_net_are_inconclusive_naming_it():
    def confusion(label, s):
        return BLANK if (label, s) == ("with skips", 1) else TRAINED

    for v in UNetSkips().verdicts(unet_results(True, confusion=confusion)):
        assert v.status == INCONCLUSIVE and "with skips (seed 1)" in v.note
        assert "failed: with skips (seed 1)" in v.guard_text


def test_unet_claims_on_fewer_than_three_seeds_are_never_decided():
    for seeds in ((0,), (0, 1)):
        for v in UNetSkips().verdicts(unet_results(True, seeds)):
            assert v.status == INCONCLUSIVE and v.n == len(seeds)
            assert "never decisive" in v.note and "for the claim" in v.note


def fpn_results(lateral_gain, single_gain, seeds=(0, 1, 2), confusion=lambda label, s: TRAINED):
    """Small-object recall 0.5 with laterals; the others lower by the gains (plus a wobble)."""

    def small(label, s):
        gain = {"laterals": 0.0, "no laterals": lateral_gain, "single scale (P5)": single_gain}
        return 0.5 - gain[label] + 0.005 * s * (label != "laterals")

    return made_up(
        FPN, seeds, dice=lambda *_: 0.5, error=lambda *_: 0.1, small=small, confusion=confusion
    )


@pytest.mark.parametrize(
    ("lateral_gain", "single_gain", "expected"),
    [
        (0.3, 0.2, [REPRODUCED, REPRODUCED]),  # both hold
        (-0.2, -0.1, [NOT_REPRODUCED, NOT_REPRODUCED]),  # both reversed
        (0.3, 0.01, [REPRODUCED, NOT_REPRODUCED]),  # a single-scale gain below 0.03 is too small
    ],
)
def test_fpn_claims_follow_made_up_numbers(lateral_gain, single_gain, expected):
    laterals, single = FPNLaterals().verdicts(fpn_results(lateral_gain, single_gain))
    assert [laterals.status, single.status] == expected and laterals.n == single.n == 3
    assert laterals.margin == pytest.approx(lateral_gain - 0.005)
    assert "12.5 px" in laterals.claim and "12.5 px" in single.claim
    assert laterals.guard_text == single.guard_text == "passed (6 nets)"
    assert (laterals.min_effect, single.min_effect) == (0.04, 0.03)
    assert "44.9" in laterals.paper and "26.5" in laterals.paper and "(e)" in laterals.paper
    assert "12.9" in single.paper and "Table 1" in FPN_SINGLE_SCALE.source
    assert "section 5.1.1" in FPN_LATERALS.source


def test_fpn_claims_with_an_all_background_net_name_it():
    # The run: 'no laterals' and 'single scale' both predicted background only.
    def confusion(label, s):
        return TRAINED if label == "laterals" else BLANK

    laterals, single = FPNLaterals().verdicts(fpn_results(0.3, 0.3, confusion=confusion))
    assert laterals.status == single.status == INCONCLUSIVE
    assert "no laterals (seed 0)" in laterals.note and "single scale" not in laterals.note
    assert "single scale (P5) (seed 2)" in single.note and "no laterals" not in single.note


def test_fpn_claims_on_one_seed_are_never_decided():
    for v in FPNLaterals().verdicts(fpn_results(0.3, 0.3, seeds=(0,))):
        assert v.status == INCONCLUSIVE and v.n == 1 and "never decisive" in v.note


def test_fpn_claims_without_objects_are_undecidable():
    results = fpn_results(0.3, 0.3)
    results["small_area"] = None
    for v in FPNLaterals().verdicts(results):
        assert v.status == INCONCLUSIVE and v.n == 0 and "no ground-truth objects" in v.note


def test_the_guard_catches_blank_and_all_foreground_maps():
    assert segmentation_guard("net", TRAINED).passed
    blank = segmentation_guard("net", BLANK)
    assert not blank.passed and "0.0% of pixels vs 17.0% true" in blank.detail
    assert not segmentation_guard("net", ALL_FOREGROUND).passed  # Dice only equals 2p/(1+p)
    # Two classes with a foreground majority (ISBI 2012: class 1, cell): all-cell is caught.
    assert not segmentation_guard("net", [[0, 22], [0, 78]]).passed
    assert segmentation_guard("net", [[18, 4], [3, 75]]).passed
    # Too little foreground fails even where the pixels it marks are right.
    assert not segmentation_guard("net", [[830, 0, 0], [75, 10, 0], [80, 0, 5]]).passed
    stats = foreground_stats(TRAINED)
    assert stats["true_share"] == pytest.approx(0.17)
    assert stats["dice"] == pytest.approx(2 * 145 / (170 + 175))
    with pytest.raises(ValueError, match="square matrix"):
        foreground_stats([[1, 2]])


def test_section_deviations_and_figures_show_a_failed_net(tmp_path):
    def confusion(label, s):
        return BLANK if (label, s) == ("with skips", 0) else TRAINED

    results = unet_results(True, confusion=confusion)
    results["variants"]["with skips"]["args"] = {"base_width": 8, "depth": 4}
    samples = [
        {
            "image": torch.zeros(8, 8, 3, dtype=torch.uint8),
            "truth": torch.zeros(8, 8, dtype=torch.uint8),
            **{label: torch.zeros(8, 8, dtype=torch.uint8) for label in UNET},
        }
    ]
    torch.save({"samples": samples}, tmp_path / "predictions.pt")
    exp = UNetSkips()
    recall, predictions = exp.figures(results, tmp_path)
    assert "with skips failed the guard at this seed" in predictions.caption
    assert "red crosses" in recall.caption
    assert (tmp_path / "predictions.png").stat().st_size > 1000
    assert (tmp_path / "object_recall.png").stat().st_size > 1000
    section = exp.section(results, [], exp.verdicts(results))
    assert "| with skips |" in section and "failed: seed 0" in section
    assert "passed (3 of 3 seeds)" in section and "0.8100 ± 0.0100" in section
    deviations = exp.deviations(results)
    assert any("base width 8, 4 levels" in d for d in deviations)
    assert any("the paper trains none" in d for d in deviations)
    assert any(d.startswith("schedule: 1 epochs of batch 4") for d in deviations)

    fpn = FPNLaterals().deviations(fpn_results(0.3, 0.3))
    assert fpn[0].startswith("task: semantic segmentation") and "AR^1k\\_s" in fpn[0]
    assert any("ResNet-50 pretrained on ImageNet" in d for d in fpn)


def test_section_reports_the_boundary_f_score_and_a_dash_for_older_results():
    exp = UNetSkips()
    old = unet_results(True)  # results from before boundary_f1: no key, no tolerance
    section = exp.section(old, [], exp.verdicts(old))
    assert "| Rand error | boundary F1 |" in section
    assert "at a tolerance of 2 pixels" in section and "not a claim" in section
    rows = [line for line in section.splitlines() if line.startswith("| with skips |")]
    assert rows[0].split(" | ")[5] == "—"
    new = unet_results(True)
    new["boundary_tolerance"] = 3
    for r in new["runs"]:
        r["metrics"]["boundary_f1"] = 0.7 + 0.1 * r["seed"] if r["variant"] == "with skips" else 0.5
    section = exp.section(new, [], exp.verdicts(new))
    assert "at a tolerance of 3 pixels" in section
    rows = {line.split(" | ")[0]: line.split(" | ") for line in section.splitlines()}
    assert rows["| with skips"][5] == "0.8000 ± 0.1000"
    assert rows["| no skips"][5] == "0.5000 ± 0.0000"
    # No new verdict: the claims stay the two fixed before the runs.
    assert len(exp.verdicts(new)) == 2


def test_every_net_is_trained_once_per_seed(tmp_path, monkeypatch):
    from skiplab.experiments import segmentation_skips
    from skiplab.experiments.base import Settings, load_results, run_one

    monkeypatch.setitem(
        segmentation_skips.BUDGETS,
        "quick",
        segmentation_skips.SegBudget(1, 4, 0.05, 8, 4, {"base_width": 4, "depth": 3}, None),
    )
    run_one(UNetSkips(), Settings(out_dir=tmp_path, seeds=(3, 5)))
    results = load_results(tmp_path / "unet-skips").results
    assert results["seeds"] == [3, 5] and results["prediction_seed"] == 3
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        f"unet-skips-{key}-quick-seed{s}" for key in ("no-skips", "skips") for s in (3, 5)
    ]
    assert sorted((r["variant"], r["seed"]) for r in results["runs"]) == [
        (label, s) for label in ("no skips", "with skips") for s in (3, 5)
    ]
    a, b = (r for r in results["runs"] if r["variant"] == "with skips")
    assert a["metrics"] != b["metrics"]  # two seeds, two different nets
    for v in UNetSkips().verdicts(results):
        assert v.n == 2 and v.status == INCONCLUSIVE and len(v.guards) == 4
    assert results["boundary_tolerance"] == 2
    assert all(0 <= r["metrics"]["boundary_f1"] <= 1 for r in results["runs"])


def test_results_without_per_seed_runs_are_refused_clearly():
    old = unet_results(True)
    del old["runs"]
    with pytest.raises(ValueError, match="predate the per-seed runs"):
        UNetSkips().verdicts(old)
