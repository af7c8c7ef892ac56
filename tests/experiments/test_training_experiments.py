"""degradation and gradient-flow end to end at a tiny budget, and their verdicts on edited
(made-up) results."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from skiplab.experiments import (
    degradation,
    densenet_efficiency,
    ensemble_paths,
    gradient_flow,
    highway_vs_residual,
    preact_vs_original,
    segmentation_skips,
)
from skiplab.experiments.base import Settings, load_results, run_one
from skiplab.experiments.report import build_report
from skiplab.experiments.training import (
    DataPlan,
    classification_data,
    train_in_parallel,
    train_runs,
)

TINY_DATA = DataPlan(train_size=64, test_size=32, resolution=16)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_degradation):
    patch = pytest.MonkeyPatch()
    patch.setitem(
        gradient_flow.BUDGETS,
        "quick",
        gradient_flow.GradientBudget((8, 14), 2, 16, TINY_DATA, True, None),
    )
    patch.setitem(ensemble_paths.BUDGETS, "quick", ensemble_paths.PathsBudget(2, 2, 1, 16))
    out = tmp_path_factory.mktemp("run")
    settings = Settings(out_dir=out)
    run_one(degradation.Degradation(), settings)
    run_one(gradient_flow.GradientFlow(), settings)
    run_one(ensemble_paths.EnsembleOfPaths(), settings)
    patch.setitem(
        preact_vs_original.BUDGETS,
        "quick",
        preact_vs_original.PreactBudget(
            (("preact_resnet110", 1), ("preact_resnet164", 1)),
            1,
            16,
            TINY_DATA,
            {"widths": (4, 8, 16), "stem_width": 4},
        ),
    )
    run_one(preact_vs_original.PreactVsOriginal(), settings)
    patch.setitem(
        highway_vs_residual.BUDGETS,
        "quick",
        highway_vs_residual.HighwayBudget(
            (2, 4), {"plain": 8, "residual": 8, "highway": 8}, 1, 16, (0.05, 0.1), TINY_DATA
        ),
    )
    run_one(highway_vs_residual.HighwayVsResidual(), settings)
    patch.setitem(
        segmentation_skips.BUDGETS,
        "quick",
        segmentation_skips.SegBudget(1, 4, 0.05, 8, 4, {"base_width": 4, "depth": 3}, None),
    )
    run_one(segmentation_skips.UNetSkips(), settings)
    run_one(segmentation_skips.FPNLaterals(), settings)
    patch.setitem(
        densenet_efficiency.BUDGETS,
        "quick",
        densenet_efficiency.DenseBudget(
            (
                ("densenet_bc100_k12", {"growth_rate": 2, "block_config": (1, 1, 1)}),
                ("resnet56", {"layers": (1, 1, 1), "widths": (4, 8, 16), "stem_width": 4}),
                ("resnet110", {"layers": (2, 2, 2), "widths": (4, 8, 16), "stem_width": 4}),
            ),
            1,
            16,
            TINY_DATA,
        ),
    )
    run_one(densenet_efficiency.DenseNetEfficiency(), settings)
    yield out
    patch.undo()


def test_degradation_writes_curves_figures_and_verdicts(run_dir):
    record = load_results(run_dir / "degradation")
    runs = record.results["runs"]
    assert {(r["kind"], r["depth"]) for r in runs} == {
        (k, d) for k in ("plain", "residual") for d in (8, 14)
    }
    assert all(len(r["curve"]) == 1 and 0 <= r["curve"][0]["train_error"] <= 1 for r in runs)
    csv = (run_dir / "degradation" / "curves.csv").read_text().splitlines()
    assert csv[0] == "kind,depth,seed,step,train_error,test_error" and len(csv) == 5
    report = build_report(run_dir, [degradation.Degradation()]).read_text()
    assert report.count("| degradation |") == 2
    assert (run_dir / "degradation" / "degradation_curves.png").stat().st_size > 1000


def test_degradation_with_two_jobs_trains_the_same_nets(run_dir, tmp_path):
    # Workers train the runs; the experiment's own loop then only reads them.
    record = run_one(degradation.Degradation(), Settings(out_dir=tmp_path, jobs=2))
    serial = load_results(run_dir / "degradation").results["runs"]
    parallel = record.results["runs"]
    # The same nets, steps and settings. A worker computes with cores // jobs threads, so its
    # float sums may differ from a process with more threads in the last bits: the numbers
    # agree closely, not bit for bit (bit-identical with OMP_NUM_THREADS=1).
    strip = [{k: v for k, v in r.items() if k != "curve"} for r in parallel]
    assert strip == [{k: v for k, v in r.items() if k != "curve"} for r in serial]
    for a, b in zip(parallel, serial, strict=True):
        assert [row["step"] for row in a["curve"]] == [row["step"] for row in b["curve"]]
        for ra, rb in zip(a["curve"], b["curve"], strict=True):
            assert ra["lr"] == rb["lr"]
            assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-3)
            assert ra["train_error"] == pytest.approx(rb["train_error"], abs=0.05)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        f"{net}{d}-quick-seed0" for net in ("plain", "resnet") for d in (14, 8)
    ]


def test_a_failing_parallel_task_is_raised_with_its_name(tmp_path):
    data = classification_data(Settings(out_dir=tmp_path), TINY_DATA)
    budget = degradation.DegradationBudget((8,), 1, 16, 0.1, TINY_DATA, {})
    settings = Settings(out_dir=tmp_path, jobs=2)
    tasks = [(settings, budget, kind, 8, 0, *data) for kind in ("residual", "no-such-kind")]
    with pytest.raises(RuntimeError, match=r"train_net\('no-such-kind', 8, 0\) failed"):
        train_in_parallel(settings, degradation.train_net, tasks)


def _edit(run_dir, tmp_path, name, change):
    data = json.loads((run_dir / name / "results.json").read_text())
    change(data["results"])
    (tmp_path / name).mkdir(parents=True)
    (tmp_path / name / "results.json").write_text(json.dumps(data))


def _three_seeds(results, error):
    """The runs of seed 0 copied to seeds 0, 1, 2 with final training error
    ``error(kind, depth, seed)`` (a fraction)."""
    import copy

    base = [r for r in results["runs"] if r["seed"] == 0]
    results["runs"] = []
    for seed in range(3):
        for r in copy.deepcopy(base):
            r["seed"] = seed
            r["curve"][-1]["train_error"] = error(r["kind"], r["depth"], seed)
            results["runs"].append(r)


@pytest.mark.parametrize(
    ("plain", "residual", "expected"),
    [
        # error at depth 8 and 14 (fractions), per kind; a seed-dependent wobble of 1 point
        ((0.2, 0.5), (0.5, 0.3), ["REPRODUCED", "REPRODUCED"]),  # both claims hold
        ((0.5, 0.2), (0.3, 0.5), ["NOT REPRODUCED", "NOT REPRODUCED"]),  # both reversed
    ],
)
def test_degradation_verdicts_follow_made_up_numbers(run_dir, tmp_path, plain, residual, expected):
    def error(kind, depth, seed):
        pair = plain if kind == "plain" else residual
        return pair[0 if depth == 8 else 1] + 0.01 * seed

    _edit(run_dir, tmp_path, "degradation", lambda results: _three_seeds(results, error))
    results = load_results(tmp_path / "degradation").results
    for r in results["runs"]:
        r["curve"][-1]["train_loss"] = 0.5  # every net trained
    verdicts = degradation.Degradation().verdicts(results)
    assert [v.status for v in verdicts] == expected and {v.n for v in verdicts} == {3}
    # plain: (14 - 8) layers, 30 points -> 50 points per 10 layers
    sign = 1 if expected[0] == "REPRODUCED" else -1
    assert verdicts[0].margin == pytest.approx(sign * 50.0)

    # One seed only: never decided, whatever the numbers.
    results["runs"] = [r for r in results["runs"] if r["seed"] == 0]
    assert {v.status for v in degradation.Degradation().verdicts(results)} == {"INCONCLUSIVE"}

    # The shallowest net of a kind is the control: at chance (loss above 0.9 ln 10) it makes its
    # claim INCONCLUSIVE, naming it. A deeper net at chance is a measurement, not a guard.
    _edit(run_dir, tmp_path / "chance", "degradation", lambda results: _three_seeds(results, error))
    results = load_results(tmp_path / "chance" / "degradation").results
    for r in results["runs"]:
        r["curve"][-1]["train_loss"] = 2.3 if (r["model"], r["seed"]) == ("plain8", 1) else 0.5
    plain_verdict, residual_verdict = degradation.Degradation().verdicts(results)
    assert plain_verdict.status == "INCONCLUSIVE" and "plain8 seed 1" in plain_verdict.note
    assert residual_verdict.status == expected[1]
    for r in results["runs"]:
        r["curve"][-1]["train_loss"] = 2.3 if r["model"] == "plain14" else 0.5
    assert degradation.Degradation().verdicts(results)[0].status == expected[0]


def test_slope_by_least_squares():
    assert degradation.slope_per([20, 32, 44, 56], [1, 2, 3, 4], 10) == pytest.approx(10 / 12)
    with pytest.raises(ValueError, match="two distinct x values"):
        degradation.slope_per([20, 20], [1, 2])


def test_gradient_flow_measures_every_net_before_and_after_training(run_dir):
    results = load_results(run_dir / "gradient-flow").results
    nets = results["nets"]
    assert results["seeds"] == [0] and {n["seed"] for n in nets} == {0}
    assert {(n["kind"], n["depth"]) for n in nets} == {
        (k, d) for k in gradient_flow.KINDS for d in (8, 14)
    }
    for n in nets:
        assert n["run"] == f"{n['kind']}{n['depth']}-seed0" and n["train_loss"] > 0
        for when in ("init", "trained"):
            grads = n[when]["block_grad"]
            assert len(grads) == len(n[when]["blocks"]) and all(g > 0 for g in grads)
            assert n[when]["ratio"] == pytest.approx(grads[0] / grads[-1])
    report = build_report(run_dir, [gradient_flow.GradientFlow()]).read_text()
    assert report.count("| gradient-flow |") == 4
    assert (run_dir / "gradient-flow" / "gradient_ratio_vs_depth.png").stat().st_size > 1000


def test_gradient_flow_measures_the_degradation_nets_after_training(run_dir, tmp_path, monkeypatch):
    # The standard and paper budgets: no runs of its own, the degradation nets of every seed.
    shutil.copytree(run_dir / "runs", tmp_path / "runs")
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    monkeypatch.setitem(
        gradient_flow.BUDGETS,
        "quick",
        gradient_flow.GradientBudget((8,), None, 16, TINY_DATA, True, None),
    )
    results = run_one(gradient_flow.GradientFlow(), Settings(out_dir=tmp_path)).results
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before  # nothing trained
    assert results["trained_by"] == "degradation" and results["steps"] == 4  # 64 images / 16
    trained = {(n["kind"], n["depth"]): n for n in results["nets"] if "trained" in n}
    assert set(trained) == {(k, d) for k in ("plain", "residual") for d in (8, 14)}
    for (kind, depth), n in trained.items():
        assert n["run"] == f"{'plain' if kind == 'plain' else 'resnet'}{depth}-quick-seed0"
        assert n["train_loss"] > 0 and n["trained"]["ratio"] > 0
        # measured at initialisation on the very architecture the degradation run trained
        assert len(n["init"]["blocks"]) == len(n["trained"]["blocks"]) == 3 * ((depth - 2) // 6)
    init_only = {(n["kind"], n["depth"]) for n in results["nets"] if "trained" not in n}
    assert init_only == {("preact", 8), ("highway", 8)}
    deviations = gradient_flow.GradientFlow().deviations(results)
    assert any("degradation experiment's plain and residual nets" in d for d in deviations)

    monkeypatch.setitem(
        gradient_flow.BUDGETS,
        "quick",
        gradient_flow.GradientBudget((8,), None, 16, DataPlan(32, 16, 16), True, None),
    )
    with pytest.raises(ValueError, match="differs from degradation's"):
        gradient_flow.GradientFlow().run(Settings(out_dir=tmp_path), tmp_path / "gf")


def test_ensemble_of_paths_reuses_the_degradation_nets(run_dir):
    results = load_results(run_dir / "ensemble-of-paths").results
    runs = sorted(p.name for p in (run_dir / "runs").iterdir())
    assert runs.count("resnet14-quick-seed0") == 1  # trained once, used by both experiments
    (run,) = results["runs"]
    res, plain = run["residual"], run["plain"]
    assert run["seed"] == 0 and res["run"] == "resnet14-quick-seed0"
    assert len(res["single"]) == 6 and res["downsampling"] == ["layer2.0", "layer3.0"]
    assert plain["skipped"] == ["layer2.0", "layer3.0"] and len(plain["single"]) == 4
    assert sorted(res["random"]) == ["1", "2"] and all(len(v) == 2 for v in res["random"].values())
    for key in ("paths", "untrained_paths"):  # the trained net and its untrained control
        paths = run[key]
        assert paths["units"] == 6 and len(paths["total_gradient"]) == 7
        assert 0 <= paths["mean_length"] <= 6
    with open(run_dir / "ensemble-of-paths" / "single_lesions.csv", newline="") as fh:
        table = [
            (r["net"], int(r["seed"]), r["block"], float(r["error"])) for r in csv.DictReader(fh)
        ]
    assert table == [
        (kind, 0, row["block"], row["error"])
        for kind in ("residual", "plain")
        for row in run[kind]["single"]
    ]
    report = build_report(run_dir, [ensemble_paths.EnsembleOfPaths()]).read_text()
    assert report.count("| ensemble-of-paths |") == 4


def test_ensemble_of_paths_trains_its_own_deeper_residual_net(tmp_path, monkeypatch):
    # Degradation nets of depth 8 only; the lesions need a deeper residual net of their own.
    tiny = {"widths": (4, 8, 16), "stem_width": 4}
    monkeypatch.setitem(
        degradation.BUDGETS,
        "quick",
        degradation.DegradationBudget((8,), 1, 16, 0.1, TINY_DATA, tiny),
    )
    monkeypatch.setitem(
        ensemble_paths.BUDGETS,
        "quick",
        ensemble_paths.PathsBudget(
            1, 1, 1, 16, ensemble_paths.LesionNet(14, 0.05, DataPlan(48, 24, 12))
        ),
    )
    settings = Settings(out_dir=tmp_path, seeds=(3,))
    results = run_one(ensemble_paths.EnsembleOfPaths(), settings).results
    residual, plain = results["nets"]["residual"], results["nets"]["plain"]
    assert (residual["depth"], residual["lr"]) == (14, 0.05)
    assert (plain["depth"], plain["lr"]) == (8, 0.1)
    (run,) = results["runs"]
    assert (run["seed"], run["residual"]["run"], run["plain"]["run"]) == (
        3,
        "resnet14-lesion-quick-seed3",
        "plain8-quick-seed3",
    )
    # Each net is lesioned on the test data of its own plan.
    assert "subset of 24, 12x12" in residual["data"] and "16x16" in plain["data"]
    assert len(run["residual"]["single"]) == 6 and len(run["plain"]["single"]) == 1
    assert run["paths"]["units"] == 6
    config = json.loads(
        (tmp_path / "runs" / "resnet14-lesion-quick-seed3" / "config.json").read_text()
    )
    assert config["lr"] == 0.05 and config["seed"] == 3
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "plain8-quick-seed3",
        "resnet14-lesion-quick-seed3",
    ]
    section = ensemble_paths.EnsembleOfPaths().section(results, [], [])
    assert "residual 14 layers (lr 0.05, runs `resnet14-lesion-quick-seed3`, test data" in section


def test_preact_vs_original_trains_both_orders_of_the_same_net(run_dir):
    results = load_results(run_dir / "preact-vs-original").results
    assert [s["depth"] for s in results["nets"]] == [8, 11]  # 6n+2 basic, 9n+2 bottleneck, n=1
    assert {(r["net"], r["order"], r["depth"]) for r in results["runs"]} == {
        (n, o, d)
        for n, d in (("preact_resnet110", 8), ("preact_resnet164", 11))
        for o in ("original", "preact")
    }
    assert all(set(r["curve"][-1]) == {"step", "lr", "train_loss", "val_error"}
               for r in results["runs"])  # fmt: skip
    verdicts = preact_vs_original.PreactVsOriginal().verdicts(results)
    # One seed decides nothing; the 1001-layer pair is not in the budget.
    assert [v.status for v in verdicts] == ["INCONCLUSIVE"] * 3
    assert "does not train preact_resnet1001" in verdicts[2].note
    report = build_report(run_dir, [preact_vs_original.PreactVsOriginal()]).read_text()
    assert "preact-vs-original/preact_test_error.png" in report


def test_highway_vs_residual_records_losses_gates_and_lesions(run_dir):
    results = load_results(run_dir / "highway-vs-residual").results
    assert {(r["kind"], r["depth"], r["seed"]) for r in results["runs"]} == {
        (k, d, 0) for k in ("plain", "residual", "highway") for d in (2, 4)
    }
    for r in results["runs"]:
        if r["kind"] == "highway":  # every seed's highway nets
            assert len(r["gate_means"]) == r["depth"] == len(r["lesion_errors"])
            assert all(0 < g < 1 for g in r["gate_means"])
    params = results["params"]
    assert params["highway"]["per_layer"] == 2 * params["plain"]["per_layer"] == 2 * (8 * 8 + 8)
    assert params["residual"]["per_layer"] == params["plain"]["per_layer"] + 1  # SkipInit scalar
    verdicts = highway_vs_residual.HighwayVsResidual().verdicts(results)
    assert len(verdicts) == 3 and {v.status for v in verdicts} == {"INCONCLUSIVE"}  # one seed
    # The search: every kind and depth at both lrs on its own seed; each judged net at the lr
    # whose search run ended lowest.
    search = results["lr_search"]
    assert sorted((r["kind"], r["depth"], r["lr"]) for r in search) == sorted(
        (k, d, lr) for k in ("plain", "residual", "highway") for d in (2, 4) for lr in (0.05, 0.1)
    )
    assert results["search_seed"] == highway_vs_residual.SEARCH_SEED
    for r in results["runs"]:
        rows = [s for s in search if s["kind"] == r["kind"] and s["depth"] == r["depth"]]
        assert r["lr"] == min(rows, key=lambda s: s["train_loss"])["lr"]
        assert results["chosen_lr"][r["kind"]][str(r["depth"])] == r["lr"]
    report = build_report(run_dir, [highway_vs_residual.HighwayVsResidual()]).read_text()
    assert "the lr searched over 0.05, 0.1 for every kind and depth" in report
    assert "Learning-rate search (seed 1000" in report and report.count("**") >= 12
    assert (run_dir / "highway-vs-residual" / "highway_depth.png").stat().st_size > 1000


def test_segmentation_ablations_score_objects_and_draw_predictions(run_dir):
    for exp, n_variants, n_verdicts in (
        (segmentation_skips.UNetSkips(), 2, 2),
        (segmentation_skips.FPNLaterals(), 3, 2),
    ):
        results = load_results(run_dir / exp.name).results
        assert len(results["variants"]) == n_variants and results["seeds"] == [0]
        assert len(results["runs"]) == n_variants
        for r in results["runs"]:
            assert r["seed"] == 0 and r["run"].endswith("-quick-seed0")
            assert {"error", "dice", "iou"} <= set(r["metrics"])
            assert r["objects"] and all(0 <= o["recall"] <= 1 for o in r["objects"])
            assert sum(map(sum, r["confusion"])) == 4 * 64 * 64  # every held-out pixel
        verdicts = exp.verdicts(results)
        assert len(verdicts) == n_verdicts
        assert {v.status for v in verdicts} == {"INCONCLUSIVE"}  # one seed never decides
    report = build_report(run_dir, [segmentation_skips.UNetSkips()]).read_text()
    assert "| with skips |" in report and "Deviations from the paper" in report
    assert (run_dir / "unet-skips" / "predictions.png").stat().st_size > 1000
    assert (run_dir / "unet-skips" / "object_recall.png").stat().st_size > 1000


def test_densenet_efficiency_compares_error_and_parameters(run_dir):
    results = load_results(run_dir / "densenet-efficiency").results
    assert results["nets"] == ["densenet_bc100_k12", "resnet56", "resnet110"]
    assert set(results["params"]) == set(results["nets"])
    assert {(r["net"], r["seed"]) for r in results["runs"]} == {(n, 0) for n in results["nets"]}
    assert all(0 <= r["train_loss"] < float("inf") for r in results["runs"])
    params, error = densenet_efficiency.DenseNetEfficiency().verdicts(results)
    assert params.exact and params.status in {"REPRODUCED", "NOT REPRODUCED"}
    assert error.n == 1 and error.status == "INCONCLUSIVE"  # one seed never decides
    report = build_report(run_dir, [densenet_efficiency.DenseNetEfficiency()]).read_text()
    assert "| densenet_bc100_k12 |" in report and "schedule: 1 epochs of batch 16" in report


def test_train_runs_in_two_jobs_returns_tolerated_errors_in_place(tmp_path):
    from skiplab.train import NonFiniteLoss

    settings = Settings(out_dir=tmp_path, jobs=2)
    train, test = classification_data(settings, TINY_DATA)

    def spec(name, lr):
        return {
            "run_dir": tmp_path,
            "name": name,
            "settings": settings,
            "model": "plain_mlp",
            "model_args": {"depth": 2, "width": 8, "input_size": (3, 16, 16)},
            "train_data": train,
            "val_data": test,
            "seed": 0,
            "steps": 4,
            "batch_size": 16,
            "lr": lr,
            "warmup": "none",
        }

    specs = [spec("fine", 0.01), spec("diverges", 1e12)]
    fine, diverged = train_runs(settings, specs, tolerate=(NonFiniteLoss,))
    assert fine.final["step"] == 4 and isinstance(diverged, NonFiniteLoss)
    with pytest.raises(
        RuntimeError, match=r"_train_spec\('diverges-again',\) failed: non-finite training loss"
    ):
        train_runs(settings, [spec("fine", 0.01), spec("diverges-again", 1e12)])
