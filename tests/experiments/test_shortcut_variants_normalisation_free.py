"""shortcut-variants and normalisation-free: their claims on made-up results (holds, fails,
fewer than three seeds, a failed guard, a diverged run) and one tiny end-to-end run of each with
patched budgets."""

from __future__ import annotations

import math

import pytest

from skiplab.experiments import normalisation_free, shortcut_variants
from skiplab.experiments.base import Settings, load_results, run_one
from skiplab.experiments.normalisation_free import NormalisationFree
from skiplab.experiments.report import build_report
from skiplab.experiments.shortcut_variants import VARIANTS, ShortcutVariants
from skiplab.experiments.training import DataPlan

HOLDS, FAILS, OPEN = "REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE"
TINY_DATA = DataPlan(train_size=64, test_size=32, resolution=16)


# -- shortcut-variants on made-up results ------------------------------------------------------
def _variants(error, seeds=(0, 1, 2), loss=lambda v, s: 0.5, diverged=()) -> dict:
    """``error(variant, seed)``: final training error (fraction); runs in ``diverged`` have
    no curve."""
    runs = []
    for seed in seeds:
        for v in VARIANTS:
            if (v.key, seed) in diverged:
                runs.append({"variant": v.key, "seed": seed, "diverged": "loss nan", "curve": []})
                continue
            row = {"step": 10, "lr": 0.1, "train_loss": loss(v.key, seed),
                   "train_error": error(v.key, seed), "val_error": 0.3}  # fmt: skip
            runs.append({"variant": v.key, "seed": seed, "diverged": None, "curve": [row]})
    return {
        "budget": "standard",
        "depth": 110,
        "num_classes": 10,
        "chance_loss": math.log(10),
        "epochs": 2,
        "batch_size": 64,
        "warmup_steps": 30,
        "data": {"train": "made up", "test": "made up"},
        "model_args": {},
        "variants": [
            {"key": v.key, "label": v.label, "model_args": v.model_args, "paper": v.paper}
            for v in VARIANTS
        ],
        "runs": runs,
    }


def _paper_like(variant, seed):
    """Identity at 10%, every other variant 5 points higher; a 0.2-point wobble per seed."""
    return (0.10 if variant == "identity" else 0.15) + 0.002 * seed


def test_shortcut_claims_hold_on_made_up_errors():
    verdicts = ShortcutVariants().verdicts(_variants(_paper_like))
    assert len(verdicts) == len(VARIANTS)  # the ranking, then one per manipulation
    assert [v.status for v in verdicts] == [HOLDS] * len(VARIANTS)
    assert verdicts[0].values == pytest.approx([5.0] * 3) and verdicts[0].min_effect == 0
    assert "8 shortcut variants (ResNet-110)" in verdicts[0].claim
    assert "exclusive gating, b_g = -6" in verdicts[3].claim and "8.70%" in verdicts[3].paper
    assert all(len(v.guards) == 3 for v in verdicts)  # the identity net of every seed


def test_shortcut_claims_fail_where_a_variant_trains_as_well():
    def close(variant, seed):  # shortcut-only gating b_g=-6 matches the identity (paper: 6.91%)
        base = {"identity": 0.10, "shortcut-gating-b-6": 0.095}.get(variant, 0.15)
        return base + 0.002 * seed

    verdicts = ShortcutVariants().verdicts(_variants(close))
    by_claim = {v.claim: v.status for v in verdicts}
    assert verdicts[0].status == FAILS  # the closest variant is 0.5 points below the identity
    assert verdicts[0].values == pytest.approx([-0.5] * 3)
    gated = [v for v in verdicts if "shortcut-only gating, b_g = -6" in v.claim]
    assert [v.status for v in gated] == [FAILS]
    assert sum(s == HOLDS for s in by_claim.values()) == len(VARIANTS) - 2


def test_shortcut_claims_are_open_with_few_seeds_or_an_untrained_identity():
    for seeds in ((0,), (0, 1)):
        verdicts = ShortcutVariants().verdicts(_variants(_paper_like, seeds))
        assert {v.status for v in verdicts} == {OPEN}
        assert "never decisive" in verdicts[0].note

    def stuck(variant, seed):  # the identity net of seed 1 never left chance
        return 2.3 if (variant, seed) == ("identity", 1) else 0.5

    verdicts = ShortcutVariants().verdicts(_variants(_paper_like, loss=stuck))
    assert {v.status for v in verdicts} == {OPEN}
    assert all("identity seed 1" in v.note for v in verdicts)


def test_a_diverged_variant_is_recorded_at_chance_not_dropped():
    results = _variants(_paper_like, diverged={("dropout", 1)})
    verdicts = ShortcutVariants().verdicts(results)
    dropout = [v for v in verdicts if "dropout" in v.claim][0]
    assert dropout.n == 3 and dropout.values[1] == pytest.approx(90.0 - 10.2)
    assert "diverged (counted at chance): dropout seed 1" in dropout.measured
    section = ShortcutVariants().section(results, [], verdicts)
    assert "| 1 of 3 |" in section  # the dropout row's diverged column
    # A diverged identity net fails its guard.
    verdicts = ShortcutVariants().verdicts(_variants(_paper_like, diverged={("identity", 0)}))
    assert {v.status for v in verdicts} == {OPEN} and "identity seed 0" in verdicts[0].note


# -- normalisation-free on made-up results -----------------------------------------------------
def _normfree(loss, seeds=(0, 1, 2), depths=(8, 56), diverged=()) -> dict:
    """``loss(kind, depth, seed)``: final training loss."""
    runs, init = [], []
    for seed in seeds:
        for kind in ("plain", "residual"):
            for d in depths:
                if (kind, d, seed) in diverged:
                    runs.append({"kind": kind, "depth": d, "seed": seed, "diverged": "nan",
                                 "curve": []})  # fmt: skip
                    continue
                row = {"step": 10, "lr": 0.05, "train_loss": loss(kind, d, seed),
                       "train_error": 0.5, "val_error": 0.5}  # fmt: skip
                runs.append({"kind": kind, "depth": d, "seed": seed, "diverged": None,
                             "curve": [row]})  # fmt: skip
        for kind in ("plain", "residual", "residual-unscaled"):
            for d in depths:
                init.append({"kind": kind, "depth": d, "seed": seed, "logit_std": 0.1 * d})
    return {
        "budget": "standard",
        "depths": list(depths),
        "num_classes": 10,
        "chance_loss": math.log(10),
        "epochs": 2,
        "batch_size": 64,
        "lr": 0.05,
        "warmup_steps": 30,
        "data": {"train": "made up", "test": "made up"},
        "model_args": {},
        "init_batch": 256,
        "init": init,
        "runs": runs,
    }


def _stuck_plain(kind, depth, seed):
    return 2.30 if (kind, depth) == ("plain", 56) else 1.0 + 0.01 * seed


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (_stuck_plain, HOLDS),
        (lambda k, d, s: 1.0 + 0.01 * s + 0.02 * (k == "plain"), FAILS),  # 0.02 < 0.1 nats
    ],
)
def test_normalisation_free_claim_follows_made_up_losses(loss, expected):
    (verdict,) = NormalisationFree().verdicts(_normfree(loss))
    assert verdict.status == expected and verdict.n == 3
    assert "plain-56 ends at a higher training loss than residual-56" in verdict.claim
    assert len(verdict.guards) == 6  # the shallowest net of both kinds, every seed


def test_normalisation_free_claim_open_with_few_seeds_or_a_failed_control():
    (verdict,) = NormalisationFree().verdicts(_normfree(_stuck_plain, seeds=(0, 1)))
    assert verdict.status == OPEN and "never decisive" in verdict.note

    def broken(kind, depth, seed):  # the shallow plain control of seed 2 never trained
        return 2.3 if (kind, depth, seed) == ("plain", 8, 2) else _stuck_plain(kind, depth, seed)

    (verdict,) = NormalisationFree().verdicts(_normfree(broken))
    assert verdict.status == OPEN and "plain-8 seed 2" in verdict.note


def test_a_diverged_plain_net_counts_at_chance():
    results = _normfree(
        lambda k, d, s: 1.0 + 0.01 * s, diverged={("plain", 56, s) for s in range(3)}
    )
    (verdict,) = NormalisationFree().verdicts(results)
    assert verdict.status == HOLDS
    assert verdict.values == pytest.approx([math.log(10) - 1.0 - 0.01 * s for s in range(3)])
    assert "diverged (counted at chance, ln C): plain-56 seed 0" in verdict.measured
    assert "| plain | 56 |" in NormalisationFree().section(results, [], [verdict])


# -- both end to end at a tiny budget ----------------------------------------------------------
def test_both_experiments_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(shortcut_variants, "VARIANTS", VARIANTS[:1] + VARIANTS[3:4] + VARIANTS[-1:])
    monkeypatch.setitem(
        shortcut_variants.BUDGETS,
        "quick",
        shortcut_variants.VariantsBudget(
            1, 1, 16, TINY_DATA, {"widths": (2, 4, 8), "stem_width": 2}, 2
        ),  # fmt: skip
    )
    monkeypatch.setitem(
        normalisation_free.BUDGETS,
        "quick",
        normalisation_free.NormFreeBudget(
            (8, 14), 1, 16, 0.05, TINY_DATA, {"widths": (2, 4, 8), "stem_width": 2}, 2
        ),  # fmt: skip
    )
    settings = Settings(out_dir=tmp_path)
    run_one(ShortcutVariants(), settings)
    run_one(NormalisationFree(), settings)
    sv = load_results(tmp_path / "shortcut-variants").results
    assert [r["variant"] for r in sv["runs"]] == ["identity", "exclusive-gating-b-6", "dropout"]
    assert all(r["diverged"] or 0 <= r["curve"][-1]["train_error"] <= 1 for r in sv["runs"])
    nf = load_results(tmp_path / "normalisation-free").results
    assert {(r["kind"], r["depth"]) for r in nf["runs"]} == {
        (k, d) for k in ("plain", "residual") for d in (8, 14)
    }
    assert {r["kind"] for r in nf["init"]} == {"plain", "residual", "residual-unscaled"}
    assert all(math.isfinite(r["logit_std"]) and r["logit_std"] > 0 for r in nf["init"])
    report = build_report(tmp_path, [ShortcutVariants(), NormalisationFree()]).read_text()
    assert (
        report.count("| shortcut-variants |") == 3 and report.count("| normalisation-free |") == 1
    )
    for stem in ("shortcut-variants/shortcut_variants_train_error",
                 "shortcut-variants/shortcut_variants_curves",
                 "normalisation-free/normalisation_free"):  # fmt: skip
        assert (tmp_path / f"{stem}.png").stat().st_size > 1000
