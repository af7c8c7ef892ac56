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


# -- preact-vs-original: per-seed test error at 110 and 164 layers, early loss at 1001 --------
def _preact(error, seeds=(0, 1, 2), final_loss=lambda o, n, s: 0.5, early=None) -> dict:
    """Made-up results: ``error(order, net, seed)`` the final test error (fraction); with
    ``early(order, seed)`` the 1001-layer pair is included, with that training loss over the
    first quarter of its four-epoch run."""
    nets = [("preact_resnet110", 110), ("preact_resnet164", 164)]
    if early is not None:
        nets.append(("preact_resnet1001", 1001))
    runs = []
    for seed in seeds:
        for net, depth in nets:
            for order in ("original", "preact"):
                first = early(order, seed) if net == "preact_resnet1001" else 1.0
                curve = [
                    {"step": step, "lr": 0.1, "train_loss": loss, "val_error": 0.5}
                    for step, loss in ((100, first), (200, 0.9), (300, 0.7), (400, 0.6))
                ]
                curve[-1].update(
                    train_loss=final_loss(order, net, seed), val_error=error(order, net, seed)
                )
                runs.append(
                    {"net": net, "order": order, "depth": depth, "seed": seed, "curve": curve}
                )
    return {
        "budget": "paper",
        "chance_loss": math.log(10),
        "epochs": 4,
        "batch_size": 128,
        "data": {"train": "made up", "test": "made up"},
        "model_args": {},
        "nets": [{"net": n, "depth": d} for n, d in nets],
        "runs": runs,
    }


def _paper_like(order, net, seed):
    """Table 3's errors (made-up ones for 1001 layers), a seed-dependent wobble of 0.05 points."""
    paper = {
        "preact_resnet110": (0.0661, 0.0637),
        "preact_resnet164": (0.0593, 0.0546),
        "preact_resnet1001": (0.08, 0.05),
    }
    return paper[net][order == "preact"] + 0.0005 * seed * (order == "preact")


def test_preact_test_error_claims_hold_and_fail_per_seed():
    from skiplab.experiments.preact_vs_original import PreactVsOriginal

    # 110: 0.24 -> margins 0.24, 0.19, 0.14 (interval straddles 0.2); 164: 0.47, 0.42, 0.37.
    v110, v164, v1001 = PreactVsOriginal().verdicts(_preact(_paper_like))
    assert (v110.status, v164.status) == (OPEN, HOLDS) and v164.n == 3
    assert v110.values == pytest.approx([0.24, 0.19, 0.14])
    assert "ResNet-164 design (164 layers" in v164.claim and len(v164.guards) == 6
    # The 1001-layer pair is not in this budget: INCONCLUSIVE with the reason, never faked.
    assert v1001.status == OPEN and v1001.n == 0
    assert "does not train preact_resnet1001" in v1001.note

    def reversed_(order, net, seed):  # the original units win by a point
        return 0.06 + 0.01 * (order == "preact") + 0.001 * seed

    assert [v.status for v in PreactVsOriginal().verdicts(_preact(reversed_))[:2]] == [FAILS] * 2


def test_preact_claims_are_open_with_few_seeds_or_a_net_at_chance():
    from skiplab.experiments.preact_vs_original import PreactVsOriginal

    big = lambda o, n, s: 0.10 if o == "original" else 0.05  # noqa: E731 (5 points)
    for seeds in ((0,), (3, 7)):
        verdicts = PreactVsOriginal().verdicts(_preact(big, seeds))
        assert {v.status for v in verdicts} == {OPEN}
        assert "never decisive" in verdicts[0].note and verdicts[0].margin == pytest.approx(5)

    def stuck(order, net, seed):  # the original 164-layer net of seed 1 never left chance
        return 2.3 if (order, net, seed) == ("original", "preact_resnet164", 1) else 0.5

    v110, v164, _ = PreactVsOriginal().verdicts(_preact(big, final_loss=stuck))
    assert v110.status == HOLDS
    assert v164.status == OPEN and "original-164 seed 1" in v164.note


def test_preact_1001_claim_on_the_early_training_loss():
    from skiplab.experiments.preact_vs_original import PreactVsOriginal

    def hard(order, seed):  # the original 1001-layer net starts slowly (Fig. 1)
        return 2.0 + 0.01 * seed if order == "original" else 1.0

    results = _preact(_paper_like, early=hard)
    deep = PreactVsOriginal().verdicts(results)[2]
    assert deep.status == HOLDS and deep.values == pytest.approx([1.0, 1.01, 1.02])
    deep = PreactVsOriginal().verdicts(_preact(_paper_like, early=lambda o, s: 2 - hard(o, s)))[2]
    assert deep.status == FAILS
    stuck = lambda o, n, s: 2.3 if n == "preact_resnet1001" else 0.5  # noqa: E731
    deep = PreactVsOriginal().verdicts(_preact(_paper_like, final_loss=stuck, early=hard))[2]
    assert deep.status == OPEN and "original-1001 seed 0" in deep.note
    deep = PreactVsOriginal().verdicts(_preact(_paper_like, seeds=(0, 1), early=hard))[2]
    assert deep.status == OPEN and deep.n == 2


def test_preact_section_and_figures_show_every_seed(tmp_path):
    from skiplab.experiments.preact_vs_original import PreactVsOriginal

    results = _preact(_paper_like)
    section = PreactVsOriginal().section(results, [], [])
    assert (
        "| preact_resnet164 | 164 | preact | 0.500 ± 0.000 | 5.51 ± 0.05% | 5.46, 5.51, 5.56 |"
        in section
    )
    figures = PreactVsOriginal().figures(results, tmp_path)
    assert [f.stem for f in figures] == ["preact_test_error", "preact_curves"]
    assert all((tmp_path / f"{f.stem}.png").stat().st_size > 1000 for f in figures)
    # One epoch-end row per run: no curves to draw, and the section says so.
    for run in results["runs"]:
        run["curve"] = run["curve"][-1:]
    assert [f.stem for f in PreactVsOriginal().figures(results, tmp_path)] == ["preact_test_error"]
    assert "No training curves are drawn" in PreactVsOriginal().section(results, [], [])
    deviations = PreactVsOriginal().deviations(results)
    assert any("paper: 110, 164 and 1001" in d for d in deviations)


# -- highway-vs-residual: each kind's deepest net against its shallowest, per seed -------------
def _highway(loss, seeds=(0, 1, 2), depths=(10, 100)) -> dict:
    """Made-up results: ``loss(kind, depth, seed)`` the final training loss."""
    from skiplab.experiments.highway_vs_residual import KINDS

    return {
        "budget": "quick",
        "chance_loss": math.log(10),
        "data": "made up",
        "depths": list(depths),
        "width": 50,
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.01,
        "gate_bias": {str(d): -math.log(d - 1) for d in depths},
        "params": {
            k: {"per_layer": n, "total": {str(d): 1000 + n * d for d in depths}}
            for k, n in zip(KINDS, (2550, 2551, 5100), strict=True)
        },
        "runs": [
            {"kind": k, "depth": d, "seed": s, "train_loss": loss(k, d, s), "diverged": None}
            for s in seeds
            for k in KINDS
            for d in depths
        ],
    }


def _as_paper(kind, depth, seed):
    """Fig. 1's picture: plain nets degrade by a nat, highway and residual ones do not."""
    if kind == "plain":
        return 0.5 + (1.0 if depth == 100 else 0.0) + 0.02 * seed
    return 0.5 + (0.02 if depth == 100 else 0.0) + 0.01 * seed * (depth == 100)


def test_highway_kinds_are_matched_in_parameters_per_layer_as_the_paper():
    """Srivastava et al. section 3.1: 50 highway blocks against 71 plain units, about 5,000
    parameters per layer; residual adds one SkipInit scalar."""
    from skiplab.experiments.highway_vs_residual import MATCHED_WIDTHS, parameter_counts

    params = parameter_counts((10, 100), MATCHED_WIDTHS, (3, 32, 32), 10)
    assert params["highway"]["per_layer"] == 2 * (50 * 50 + 50) == 5100
    assert params["plain"]["per_layer"] == 71 * 71 + 71 == 5112
    assert params["residual"]["per_layer"] == 5113
    # The totals grow by those amounts per layer.
    for kind in params:
        t = params[kind]["total"]
        assert t["100"] - t["10"] == 90 * params[kind]["per_layer"]


def test_highway_lr_search_keeps_the_lowest_loss_and_refuses_its_seed_being_judged():
    from skiplab.experiments import highway_vs_residual as hw
    from skiplab.experiments.base import Settings

    search = [
        {"kind": "plain", "depth": 10, "lr": 0.01, "train_loss": 1.5},
        {"kind": "plain", "depth": 10, "lr": 0.03, "train_loss": 1.2},
        {"kind": "plain", "depth": 10, "lr": 0.1, "train_loss": math.inf},  # diverged
        {"kind": "plain", "depth": 20, "lr": 0.01, "train_loss": 1.0},
        {"kind": "plain", "depth": 20, "lr": 0.03, "train_loss": 1.0},  # a tie: the smaller lr
    ]
    assert hw.choose_lr(search, "plain", 10) == 0.03
    assert hw.choose_lr(search, "plain", 20) == 0.01
    with pytest.raises(ValueError, match="no search run of highway-10"):
        hw.choose_lr(search, "highway", 10)
    settings = Settings(out_dir="unused", budget="standard", seeds=(0, hw.SEARCH_SEED))
    with pytest.raises(ValueError, match="seed 1000 is the learning-rate search's own seed"):
        hw.HighwayVsResidual().run(settings, None)


def test_highway_claims_hold_on_the_papers_picture():
    from skiplab.experiments.highway_vs_residual import HighwayVsResidual

    plain, highway, residual = HighwayVsResidual().verdicts(_highway(_as_paper))
    assert [v.status for v in (plain, highway, residual)] == [HOLDS] * 3
    assert plain.values == pytest.approx([1.0, 1.0, 1.0]) and plain.n == 3
    assert highway.values == pytest.approx([0.08, 0.07, 0.06])  # 0.1 minus each rise
    assert "highway-100 ends at a training loss at most 0.1 nats above highway-10" in highway.claim
    assert len(residual.guards) == 3  # the shallow net of every seed is the control


def test_highway_claims_fail_when_the_gated_net_degrades_and_plain_does_not():
    from skiplab.experiments.highway_vs_residual import HighwayVsResidual

    def reversed_(kind, depth, seed):  # the example: highway 1.24 -> 1.92
        rise = {"plain": 0.0, "highway": 0.68, "residual": 0.4}[kind]
        return 1.24 + (rise if depth == 100 else 0.0) + 0.01 * seed

    statuses = [v.status for v in HighwayVsResidual().verdicts(_highway(reversed_))]
    assert statuses == [FAILS] * 3


def test_highway_claims_are_open_with_few_seeds_a_net_at_chance_or_divergence():
    from skiplab.experiments.highway_vs_residual import HighwayVsResidual

    for seeds in ((0,), (0, 1)):
        verdicts = HighwayVsResidual().verdicts(_highway(_as_paper, seeds))
        assert {v.status for v in verdicts} == {OPEN}
        assert all("never decisive" in v.note for v in verdicts)

    def stuck(kind, depth, seed):  # the shallow plain net of seed 2 never left chance
        return 2.3 if (kind, depth, seed) == ("plain", 10, 2) else _as_paper(kind, depth, seed)

    plain, highway, residual = HighwayVsResidual().verdicts(_highway(stuck))
    assert plain.status == OPEN and "plain-10 seed 2" in plain.note
    assert (highway.status, residual.status) == (HOLDS, HOLDS)

    def deep_at_chance(kind, depth, seed):  # a deep plain net at chance is the effect itself
        return 2.3 if (kind, depth) == ("plain", 100) else _as_paper(kind, depth, seed)

    plain, highway, residual = HighwayVsResidual().verdicts(_highway(deep_at_chance))
    assert plain.status == HOLDS

    def diverged(kind, depth, seed):
        if (kind, depth, seed) == ("residual", 100, 1):
            return math.inf
        return _as_paper(kind, depth, seed)

    results = _highway(diverged)
    plain, highway, residual = HighwayVsResidual().verdicts(results)
    assert residual.status == OPEN and "diverged (non-finite loss): residual-100 seed 1" in (
        residual.note
    )
    assert residual.guard_text == "passed (3 nets)" and plain.status == HOLDS
    section = HighwayVsResidual().section(results, [], [])
    assert "1 diverged" in section and "| residual | 2,551 |" in section


def test_highway_deviations_declare_lr_skipinit_and_parameters():
    from skiplab.experiments.highway_vs_residual import HighwayVsResidual

    text = "\n".join(HighwayVsResidual().deviations(_highway(_as_paper)))
    assert "one lr 0.01 for every kind and depth" in text
    assert "SkipInit" in text and "per layer plain 2,550, residual 2,551, highway 5,100" in text
    assert "-2.20 at depth 10" in text
