"""The claims of gradient-flow and ensemble-of-paths judged on made-up results (no training):
each claim where it holds, where it fails and where a guard fires, and n < 3 never decides."""

from __future__ import annotations

import math

import pytest

from skiplab.experiments import ensemble_paths, gradient_flow
from skiplab.experiments.ensemble_paths import EnsembleOfPaths
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


# -- ensemble-of-paths ----------------------------------------------------------------------------
RES_BLOCKS = ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1"]
DOWN = ["layer2.0", "layer3.0"]
PLAIN_BLOCKS = ["layer1.0", "layer1.1", "layer2.1", "layer3.1"]
CHANCE = 0.9
SHORT = [1.0, 5.0, 3.0, 1.0, 0.0, 0.0, 0.0]  # gradient-weighted mean length 1.4 of 6 units
BINOMIAL = [1.0, 6.0, 15.0, 20.0, 15.0, 6.0, 1.0]  # mean length 3 = n/2


def _net(intact, damage, blocks, seed, loss, down=()):
    """A lesioned net whose block b has damage ``damage(b, seed)`` (fraction of the way to
    chance)."""
    return {
        "run": f"net-seed{seed}",
        "train_loss": loss,
        "warmup_ended_at": None,
        "mode": "lesion" if down else "remove",
        "intact": intact,
        "single": [
            {"block": b, "error": intact + damage(b, seed) * (CHANCE - intact)} for b in blocks
        ],
        "downsampling": list(down),
        "skipped": [] if down else list(DOWN),
        "random": {"1": [intact + 0.01, intact + 0.02]},
    }


def _paths(total):
    return {
        "units": 6,
        "gradient_per_length": [t / math.comb(6, k) for k, t in enumerate(total)],
        "total_gradient": list(total),
        "effective_range": [0, 3],
        "mean_length": ensemble_paths.mean_path_length(total),
    }


def lesion_results(
    residual_damage,
    plain_damage,
    total=SHORT,
    loss=lambda kind, seed: TRAINED,
    intact=lambda kind, seed: 0.2,
    seeds=SEEDS,
) -> dict:
    runs = []
    for seed in seeds:
        wobble = [0.01 * seed, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        runs.append(
            {
                "seed": seed,
                "residual": _net(
                    intact("residual", seed),
                    residual_damage,
                    RES_BLOCKS,
                    seed,
                    loss("residual", seed),
                    DOWN,
                ),  # fmt: skip
                "plain": _net(
                    intact("plain", seed), plain_damage, PLAIN_BLOCKS, seed, loss("plain", seed)
                ),
                "paths": _paths([t + w for t, w in zip(total, wobble, strict=True)]),
                "untrained_paths": _paths(BINOMIAL),
            }
        )
    return {
        "depth": 14,
        "nets": {
            "residual": {"depth": 14, "lr": 0.03, "data": "made up"},
            "plain": {"depth": 14, "lr": 0.1, "data": "made up"},
        },
        "epochs": 1,
        "batch_size": 16,
        "warmup_steps": 40,
        "path_samples": 1,
        "trials": 2,
        "chance_error": CHANCE,
        "num_classes": 10,
        "data": "made up",
        "seeds": list(seeds),
        "runs": runs,
    }


def _healthy(block, seed):
    return 0.4 + 0.01 * seed if block in DOWN else 0.05 + 0.01 * seed


def _destroyed(block, seed):
    return 0.9 + 0.01 * seed


def test_ensemble_claims_hold_on_made_up_lesions_and_paths():
    verdicts = EnsembleOfPaths().verdicts(lesion_results(_healthy, _destroyed))
    assert _statuses(verdicts) == ["REPRODUCED"] * 4 and {v.n for v in verdicts} == {3}
    # barely: min(0.2 - median, 0.5 - max) = 0.2 - (0.05 + 0.01 s)
    assert verdicts[0].values == pytest.approx([0.15 - 0.01 * s for s in SEEDS])
    assert verdicts[1].values == pytest.approx([0.35] * 3)  # 0.4 + .01s - (0.05 + .01s)
    assert verdicts[2].values == pytest.approx([0.4 + 0.01 * s for s in SEEDS])
    # paths: 1 - 1.4 / 3 for seed 0; the untrained control and n/2 are reported.
    assert verdicts[3].values[0] == pytest.approx(1 - 1.4 / 3)
    assert "binomial mean n/2 = 3" in verdicts[3].measured
    assert "untrained net 3.0 (margin +0.00)" in verdicts[3].measured


def test_ensemble_claims_fail_on_made_up_lesions_and_paths():
    # One unit (layer1.0) destroys the residual net: the median alone would hide it.
    def outlier(block, seed):
        return 0.82 if block == "layer1.0" else 0.05 if block not in DOWN else 0.05

    def barely(block, seed):
        return 0.03 + 0.01 * seed

    results = lesion_results(outlier, barely, total=BINOMIAL)
    verdicts = EnsembleOfPaths().verdicts(results)
    assert _statuses(verdicts) == ["NOT REPRODUCED"] * 4
    assert verdicts[0].values == pytest.approx([0.5 - 0.82] * 3)
    assert "units at or above 0.2: layer1.0 0.82" in verdicts[0].measured
    assert "median 0.050" in verdicts[0].measured


def test_a_net_at_chance_cannot_be_lesioned():
    # plain seed 1 never trained; residual seed 2 trained but tests at chance.
    def loss(kind, seed):
        return AT_CHANCE if (kind, seed) == ("plain", 1) else TRAINED

    def intact(kind, seed):
        return 0.88 if (kind, seed) == ("residual", 2) else 0.2

    verdicts = EnsembleOfPaths().verdicts(
        lesion_results(_healthy, _destroyed, loss=loss, intact=intact)
    )
    assert _statuses(verdicts) == ["INCONCLUSIVE"] * 4
    assert all("ResNet-14 seed 2" in v.note for v in (verdicts[0], verdicts[1], verdicts[3]))
    assert "intact test error 88.0%" in verdicts[0].guard_text
    assert "plain-14 seed 1" in verdicts[2].note and verdicts[2].n == 2

    # Every seed's plain net at chance: no margin, the claim undecidable, the nets named.
    verdicts = EnsembleOfPaths().verdicts(
        lesion_results(_healthy, _destroyed, loss=lambda kind, seed: AT_CHANCE)
    )
    assert verdicts[2].n == 0 and "plain-14 seed 0" in verdicts[2].guard_text


@pytest.mark.parametrize("seeds", [(0,), (0, 1)])
def test_ensemble_claims_are_never_decided_by_fewer_than_three_seeds(seeds):
    verdicts = EnsembleOfPaths().verdicts(lesion_results(_healthy, _destroyed, seeds=seeds))
    assert _statuses(verdicts) == ["INCONCLUSIVE"] * 4
    assert all("never decisive" in v.note for v in verdicts)


def test_ensemble_section_figures_and_deviations(tmp_path):
    results = lesion_results(_healthy, _destroyed)
    section = EnsembleOfPaths().section(results, [], [])
    assert "| residual (lesion) | 1 | 0.500 | 20.00% | 0.060 | 0.060 | 0.060" in section
    assert "binomial mean n/2 = 3" in section and "untrained (same seed) 3.00 ± 0.00" in section
    (figure,) = EnsembleOfPaths().figures(results, tmp_path)
    assert (tmp_path / f"{figure.stem}.png").stat().st_size > 1000
    deviations = EnsembleOfPaths().deviations(results)
    assert any("ResNet-14 (6 units) at lr 0.03" in d for d in deviations)


def test_mean_path_length_is_weighted_by_the_gradient():
    assert ensemble_paths.mean_path_length(BINOMIAL) == pytest.approx(3.0)
    assert ensemble_paths.mean_path_length(SHORT) == pytest.approx(1.4)
    with pytest.raises(ValueError, match="must be positive"):
        ensemble_paths.mean_path_length([0.0, 0.0])


def test_the_untrained_control_is_the_trainers_initial_net_with_estimated_bn_statistics(tmp_path):
    import json

    import torch

    from skiplab import create_model
    from skiplab.experiments.base import Settings
    from skiplab.experiments.training import DataPlan, RunOutcome, classification_data

    settings = Settings(out_dir=tmp_path)
    train, _ = classification_data(settings, DataPlan(64, 32, 16))
    args = {"layers": [1, 1, 1], "widths": [4, 8, 16], "stem_width": 4, "num_classes": 10}
    (tmp_path / "runs" / "net").mkdir(parents=True)
    (tmp_path / "runs" / "net" / "config.json").write_text(
        json.dumps({"model": "resnet20", "model_args": args, "seed": 5})
    )
    outcome = RunOutcome("net", [], {}, None)
    twin = ensemble_paths.untrained_twin(settings, outcome, 5, train, 16)
    torch.manual_seed(5)  # as the trainer initialises (skiplab.train.build)
    fresh = create_model(
        "resnet20", **{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
    )
    weights = {
        k: v for k, v in fresh.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    assert all(torch.equal(twin.state_dict()[k], v) for k, v in weights.items())
    norms = [m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not twin.training and all(m.momentum == 0.1 for m in norms)
    assert all(m.running_mean.abs().sum() > 0 for m in norms)  # estimated, not the defaults


def test_results_of_the_one_seed_format_are_refused_clearly():
    old_gradient = {"nets": [{"kind": "plain", "depth": 20, "init": _entry(1.0)}], "steps": 1}
    with pytest.raises(ValueError, match="older skiplab"):
        GradientFlow().verdicts(old_gradient)
    old_paths = {"residual": {}, "plain": {}, "paths": {}, "chance_error": 0.9}
    with pytest.raises(ValueError, match="run the experiment again"):
        EnsembleOfPaths().section(old_paths, [], [])
