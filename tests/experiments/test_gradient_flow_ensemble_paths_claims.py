"""The claims of gradient-flow and ensemble-of-paths judged on made-up results (no training):
each claim where it holds, where it fails and where a guard fires, and n < 3 never decides."""

from __future__ import annotations

import math

import pytest

from skiplab.experiments import gradient_flow
from skiplab.experiments.gradient_flow import GradientFlow

SEEDS = (0, 1, 2)
TRAINED, AT_CHANCE = 0.5, 2.3  # final training losses; chance is ln 10 = 2.303


# -- gradient-flow --------------------------------------------------------------------------------
def _entry(ratio: float) -> dict:
    return {
        "blocks": ["layer1.0", "layer3.1"],
        "block_grad": [ratio, 1.0],
        "ratio": ratio,
        "first_weight_grad": 1.0,
        "loss": 1.0,
    }


def gradient_results(ratio, loss=lambda kind, depth, seed: TRAINED, seeds=SEEDS) -> dict:
    """Made-up gradient-flow results: ``ratio(kind, depth, seed, when)`` is g_first/g_last."""
    nets = []
    for seed in seeds:
        for kind in gradient_flow.KINDS:
            for depth in (20, 56):
                nets.append(
                    {
                        "kind": kind,
                        "depth": depth,
                        "seed": seed,
                        "model": "made-up",
                        "init": _entry(ratio(kind, depth, seed, "init")),
                        "run": f"{kind}{depth}-seed{seed}",
                        "train_loss": loss(kind, depth, seed),
                        "trained": _entry(ratio(kind, depth, seed, "trained")),
                    }
                )
        nets.append(
            {
                "kind": "preact",
                "depth": 1001,
                "seed": seed,
                "model": "made-up",
                "init": _entry(ratio("preact", 1001, seed, "init")),
            }
        )
    return {
        "budget": "quick",
        "steps": 5,
        "batch_size": 8,
        "lr": 0.1,
        "narrow": True,
        "deepest_preact": 1001,
        "data": "made up",
        "num_classes": 10,
        "seeds": list(seeds),
        "nets": nets,
    }


def _statuses(verdicts) -> list[str]:
    return [v.status for v in verdicts]


def test_gradient_claims_hold_where_shortcut_ratios_stay_near_one_and_plain_ones_vanish():
    def ratio(kind, depth, seed, when):
        if kind == "plain":
            return 1e-4 * (1 + seed)
        return 2.0 + 0.1 * seed  # highway nets enter no claim

    verdicts = GradientFlow().verdicts(gradient_results(ratio))
    assert _statuses(verdicts) == ["REPRODUCED"] * 4 and {v.n for v in verdicts} == {3}
    # Worst shortcut net of each seed: 1 - log10(2 + 0.1 s) decades inside the band.
    assert verdicts[0].values == pytest.approx([1 - math.log10(2 + 0.1 * s) for s in SEEDS])
    # plain-56: log10(0.1) - log10(1e-4 (1 + s)) decades below 1/10.
    assert verdicts[1].values == pytest.approx([3 - math.log10(1 + s) for s in SEEDS])
    assert "plain-56" in verdicts[1].claim and "preact-1001" in verdicts[0].claim


def test_gradient_claims_fail_where_shortcut_nets_explode_and_plain_nets_explode():
    # The two-sided claim: an exploding pre-activation net counts against it, as a vanishing
    # one would; BN plain nets that explode do not show the chapter's vanishing.
    def ratio(kind, depth, seed, when):
        if kind == "plain":
            return 1e4
        if (kind, depth) == ("preact", 1001):
            return 2.6e5 * (1 + seed)
        return 2.0 if when == "init" else 1e-3 * (1 + seed)  # vanishing after training

    verdicts = GradientFlow().verdicts(gradient_results(ratio))
    assert _statuses(verdicts) == ["NOT REPRODUCED"] * 4
    assert "preact-1001" in verdicts[0].measured and "explodes" in verdicts[0].measured
    assert "explodes" in verdicts[1].measured and "vanishes" in verdicts[2].measured


def test_a_net_that_never_trained_enters_no_after_training_claim():
    # residual-56 of seed 1 stayed at chance with a collapsed gradient: it may not decide
    # anything (the verdict names it), while the claims at initialisation are unaffected.
    def ratio(kind, depth, seed, when):
        if (kind, depth, seed, when) == ("residual", 56, 1, "trained"):
            return 2.4e-10
        return 1e-4 if kind == "plain" else 2.0

    def loss(kind, depth, seed):
        return AT_CHANCE if (kind, depth, seed) == ("residual", 56, 1) else TRAINED

    verdicts = GradientFlow().verdicts(gradient_results(ratio, loss))
    assert _statuses(verdicts) == ["REPRODUCED", "REPRODUCED", "INCONCLUSIVE", "REPRODUCED"]
    assert "residual-56 seed 1" in verdicts[2].note and "2.4e-10" not in verdicts[2].measured
    assert verdicts[2].values == pytest.approx([1 - math.log10(2)] * 3)

    # Every net at chance: no margin at all after training.
    verdicts = GradientFlow().verdicts(gradient_results(ratio, lambda *_: AT_CHANCE))
    assert _statuses(verdicts)[2:] == ["INCONCLUSIVE", "INCONCLUSIVE"]
    assert {v.n for v in verdicts[2:]} == {0} and "never trained" in verdicts[2].measured
    assert "plain-56 seed 2" in verdicts[3].guard_text


@pytest.mark.parametrize("seeds", [(0,), (4, 7)])
def test_gradient_claims_are_never_decided_by_fewer_than_three_seeds(seeds):
    def ratio(kind, depth, seed, when):
        return 1e-4 if kind == "plain" else 2.0

    verdicts = GradientFlow().verdicts(gradient_results(ratio, seeds=seeds))
    assert _statuses(verdicts) == ["INCONCLUSIVE"] * 4
    assert all("never decisive" in v.note for v in verdicts)


def test_gradient_section_and_figures_show_every_seed(tmp_path):
    def ratio(kind, depth, seed, when):
        return 10.0 ** (seed - 1)

    results = gradient_results(ratio)
    section = GradientFlow().section(results, [], [])
    assert "| plain | 20 | 0.1, 1, 10 | 0.1, 1, 10 | 0.500 ± 0.000 |" in section
    figures = GradientFlow().figures(results, tmp_path)
    assert [f.stem for f in figures][0] == "gradient_ratio_vs_depth"
    assert all((tmp_path / f"{f.stem}.png").stat().st_size > 1000 for f in figures)
    assert any("widths 8/16/32" in d for d in GradientFlow().deviations(results))


def test_band_distances_in_decades():
    assert gradient_flow.decades_inside(1.0) == pytest.approx(1.0)
    assert gradient_flow.decades_inside(10.0) == pytest.approx(0.0)
    assert gradient_flow.decades_inside(1e-3) == pytest.approx(-2.0)
    assert gradient_flow.decades_inside(1e3) == pytest.approx(-2.0)  # two-sided
    assert gradient_flow.decades_below(1e-3) == pytest.approx(2.0)
