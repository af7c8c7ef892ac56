"""Experiment 3, ensemble-of-paths: residual nets behave like ensembles of short paths.

Veit, Wilber & Belongie 2016 (arXiv:1605.06431): deleting a single residual unit at test time
(keeping its shortcut) barely changes the error, except for downsampling units (section 4.1,
Fig. 3); error grows smoothly with the number of deleted units (section 4.2, Fig. 5a); removing
a layer from a plain net destroys it (section 4.1, Fig. 3); and the effective paths, those that
carry the gradient, are much shorter than the mean path length n/2 (section 5, Fig. 6).

The nets are the degradation experiment's deepest residual and plain nets (same run folders:
they are trained once per seed), unless the budget names a deeper residual net of its own
(``PathsBudget.residual_net``): a 12-unit ResNet-26 is too shallow to be an ensemble of many
paths. The plain net is always the degradation experiment's deepest. Every seed trains,
lesions and measures its own nets.

Damage is measured relative to chance: D = (error_lesioned - error_intact) / (chance -
error_intact), 0 for no harm and 1 for a net reduced to chance. A net enters a claim only when
it trained (final training loss clearly below chance) and its intact test error is more than
``AT_CHANCE`` below chance (else there is nothing a lesion could destroy).

Controls for the path lengths: the binomial expectation (n units each on a path with
probability 1/2: mean length n/2) and the same measurement on the residual net freshly
initialised with the same seed (BatchNorm statistics estimated on training batches, so that it
is measured in eval mode like the trained net).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean, median, stdev

import torch
from matplotlib.ticker import MaxNLocator
from torch import nn

from skiplab.analysis.lesion import lesion_random_blocks, lesion_single_blocks
from skiplab.analysis.paths import (
    effective_path_range,
    gradient_per_path_length,
    path_length_distribution,
    total_gradient,
)
from skiplab.data import ArrayDataset, DeviceLoader
from skiplab.experiments import degradation
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.training import (
    DataPlan,
    RunOutcome,
    classification_data,
    train_in_parallel,
)
from skiplab.experiments.verdict import Claim, Guard, Verdict, trained_guard
from skiplab.fileio import atomic_write_csv
from skiplab.models import create_model
from skiplab.train import evaluate

BARELY, DESTROYS = 0.2, 0.5
AT_CHANCE = 0.05  # an intact net within 5 points of chance has nothing a lesion could destroy
CALIBRATION_BATCHES = 10  # training batches that estimate the untrained net's BN statistics
KINDS = ("residual", "plain")


@dataclass(frozen=True)
class LesionNet:
    """A residual net trained for the lesions alone, with the degradation budget's epochs and
    batch but its own depth, learning rate and (when given) data."""

    depth: int
    lr: float
    data: DataPlan | None = None  # None: the degradation budget's


@dataclass(frozen=True)
class PathsBudget:
    """The lesion and path budget.

    ``residual_net`` None lesions the degradation budget's deepest ResNet.
    """

    max_deleted: int
    trials: int
    path_samples: int  # subsets per path length for the gradient estimate
    batch_size: int
    residual_net: LesionNet | None = None


BUDGETS = {
    # quick: the degradation budget's deepest nets (ResNet-26, 12 units, and plain-26), no net
    # of its own, so that the demo fits its time (docs/results/calibration.md).
    "quick": PathsBudget(10, 3, 3, 64),
    "standard": PathsBudget(10, 3, 10, 128),
    "paper": PathsBudget(20, 10, 20, 128),
}

_WHY_THRESHOLD = (
    "0.02 of the way to chance, a tenth of the smaller threshold (0.2), so that a value on "
    "a threshold counts for neither side; a rule fixed before these runs"
)
BARELY_HURTS = Claim(
    f"Deleting a single residual unit (not a downsampling one) barely hurts the net: the "
    f"median unit costs less than {BARELY} of the way to chance and no unit more than "
    f"{DESTROYS} (ResNet-{{depth}})",
    "Veit et al. 2016, section 4.1 and Fig. 3",
    0.02,
    _WHY_THRESHOLD + f"; the margin of a seed is min({BARELY} - median D, {DESTROYS} - max D), "
    "so that one unit that destroys the net cannot hide behind the median",
    paper="removing single units barely changes the error (ResNet-110 on CIFAR-10)",
)
DOWNSAMPLING_HURTS = Claim(
    "Deleting a downsampling unit hurts more than deleting another unit (ResNet-{depth})",
    "Veit et al. 2016, section 4.1 and Fig. 3",
    0.05,
    "0.05 of the way to chance, a quarter of the 'barely hurts' threshold: a smaller excess "
    "is within what 'barely hurts' allows any unit; fixed before these runs. The margin of a "
    "seed is the median D of the downsampling units minus the median D of the others",
    paper="the error spikes where a downsampling unit is deleted",
)
PLAIN_DESTROYED = Claim(
    f"Removing a single layer from a plain net destroys it: the median layer removed costs "
    f"more than {DESTROYS} of the way to chance (plain-{{depth}})",
    "Veit et al. 2016, section 4.1 and Fig. 3",
    0.02,
    _WHY_THRESHOLD + f"; the margin of a seed is its median D - {DESTROYS}",
    paper="a plain VGG net falls to chance when any layer is removed",
)
PATHS_SHORT = Claim(
    "The effective paths, those that carry the gradient, are much shorter than the mean path "
    "length n/2 (ResNet-{depth}, n = {units} units)",
    "Veit et al. 2016, section 5 and Fig. 6",
    0.25,
    "a quarter shorter than n/2, less than half the paper's effect (ResNet-110: almost all "
    "gradient from paths of 5-17 of 54 units, whose middle, 11, is 0.59 below n/2 = 27); "
    "fixed from the paper. The margin of a seed is 1 - (gradient-weighted mean path length) "
    "/ (n/2): 0 for the binomial mean of all paths",
    paper="ResNet-110: the gradient comes from paths of 5-17 of 54 units",
)


def _damage(error: float, intact: float, chance: float) -> float:
    """Relative damage; nan for a net at or below chance (see ``AT_CHANCE``)."""
    if chance - intact <= 0:
        return math.nan
    return (error - intact) / (chance - intact)


def mean_path_length(total: list[float]) -> float:
    """Gradient-weighted mean path length: sum k * total_k / sum total_k."""
    s = sum(total)
    if not s > 0:
        raise ValueError(f"the total gradient must be positive; got {total}")
    return sum(k * t for k, t in enumerate(total)) / s


def _paths(model: nn.Module, x, y, samples: int, seed: int) -> dict:
    n = len(list(model.iter_blocks()))
    per_length = gradient_per_path_length(model, x, y, range(n + 1), samples, seed=seed)
    total = total_gradient(per_length, n)
    lo, hi = effective_path_range(total, n)
    totals = [total[k] for k in range(n + 1)]
    return {
        "units": n,
        "gradient_per_length": [per_length[k] for k in range(n + 1)],
        "total_gradient": totals,
        "effective_range": [lo, hi],
        "mean_length": mean_path_length(totals),
    }


def untrained_twin(
    settings: Settings, outcome: RunOutcome, seed: int, data: ArrayDataset, batch_size: int
) -> nn.Module:
    """The net of ``outcome`` as the trainer initialised it (same model, overrides and seed),
    its BatchNorm running statistics estimated on ``CALIBRATION_BATCHES`` training batches
    (weights untouched), in eval mode."""
    config = json.loads((settings.out_dir / "runs" / outcome.name / "config.json").read_text())
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in config["model_args"].items()}
    torch.manual_seed(seed)
    model = create_model(config["model"], **args).to(settings.device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the calibration batches
    loader = DeviceLoader(data, batch_size, train=False, device=settings.device)
    model.train()
    with torch.no_grad():
        for i in range(min(CALIBRATION_BATCHES, len(loader))):
            model(loader.batch(0, i)[0])
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def check_results(results: dict) -> None:
    """Raise a clear error for results written before the per-seed format.

    Raises:
        ValueError: when the results lack the nets of every seed under 'runs'.
    """
    if "runs" not in results:
        raise ValueError(
            "these results were written by an older skiplab (one seed, no per-seed "
            "measurements): run the experiment again to judge its claims"
        )


class EnsembleOfPaths(Experiment):
    name = "ensemble-of-paths"
    title = "Residual networks as ensembles of relatively shallow paths"
    paper = "Veit et al. 2016, sections 4 and 5, Figs. 3, 5 and 6"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        deg = degradation.BUDGETS[settings.budget]
        train, test = classification_data(settings, deg.data)
        chance = 1 - 1 / len(train.classes)
        depth = max(deg.depths)  # the degradation experiment's nets, trained once for both
        own = budget.residual_net
        if own:
            own_deg = replace(deg, depths=(own.depth,), lr=own.lr, data=own.data or deg.data)
            own_train, own_test = (
                classification_data(settings, own.data) if own.data else (train, test)
            )
        data = {
            "residual": (own_train, own_test) if own else (train, test),
            "plain": (train, test),
        }
        # (budget, kind, depth, tag) of each net; the residual one first (the longer run).
        nets = {
            "residual": (own_deg, "residual", own.depth, "lesion")
            if own
            else (deg, "residual", depth, ""),
            "plain": (deg, "plain", depth, ""),
        }

        def task(kind: str, seed: int) -> tuple:
            b, k, d, tag = nets[kind]
            return (settings, b, k, d, seed, *data[kind], tag)

        train_in_parallel(
            settings,
            degradation.train_net,
            [task(kind, seed) for kind in KINDS for seed in settings.seeds],
        )
        runs = []
        for seed in settings.seeds:  # the runs are on disk now: read, lesion and measure them
            outcomes = {kind: degradation.train_net(*task(kind, seed)) for kind in KINDS}
            runs.append(self._measure_seed(settings, budget, seed, outcomes, data))
        atomic_write_csv(
            folder / "single_lesions.csv",
            ("net", "seed", "block", "error"),
            (
                (kind, r["seed"], row["block"], row["error"])
                for r in runs
                for kind in KINDS
                for row in r[kind]["single"]
            ),
        )
        residual_depth = own.depth if own else depth
        return {
            "depth": depth,
            "nets": {
                "residual": {
                    "depth": residual_depth,
                    "lr": own.lr if own else deg.lr,
                    "data": data["residual"][1].source,
                },
                "plain": {"depth": depth, "lr": deg.lr, "data": test.source},
            },
            "epochs": deg.epochs,
            "batch_size": deg.batch_size,
            "warmup_steps": deg.warmup_steps,
            "path_samples": budget.path_samples,
            "trials": budget.trials,
            "chance_error": chance,
            "num_classes": len(train.classes),
            "data": test.source,
            "seeds": list(settings.seeds),
            "runs": runs,
        }

    def _measure_seed(self, settings, budget, seed, outcomes, data) -> dict:
        def error_on(test):
            def error(model) -> float:
                return evaluate(
                    model,
                    test,
                    batch_size=256,
                    device=settings.device,
                    amp=settings.amp,
                    channels_last=settings.channels_last,
                )["error"]

            return error

        out: dict = {"seed": seed}
        for kind, mode in (("residual", "lesion"), ("plain", "remove")):
            outcome = outcomes[kind]
            net_train, net_test = data[kind]
            model = outcome.model.eval()
            error = error_on(net_test)
            single = lesion_single_blocks(model, error, mode=mode)
            random = lesion_random_blocks(
                model,
                error,
                # Up to max_deleted, and never more than the non-downsampling units.
                range(
                    1, min(budget.max_deleted, len(single.errors) - len(single.downsampling)) + 1
                ),
                budget.trials,
                seed=seed,
                mode=mode,
                exclude_downsampling=True,
            )
            out[kind] = {
                "run": outcome.name,
                "train_loss": outcome.final["train_loss"],
                "warmup_ended_at": outcome.warmup_ended_at,
                "mode": mode,
                "intact": single.intact,
                "single": [{"block": b, "error": e} for b, e in single.errors],
                "downsampling": single.downsampling,
                "skipped": single.skipped,
                "random": {str(k): v for k, v in random.errors.items()},
            }
            if kind == "residual":
                x, y = DeviceLoader(
                    net_train, budget.batch_size, train=False, device=settings.device
                ).batch(0, 0)
                out["paths"] = _paths(model, x, y, budget.path_samples, seed)
                twin = untrained_twin(settings, outcome, seed, net_train, budget.batch_size)
                out["untrained_paths"] = _paths(twin, x, y, budget.path_samples, seed)
        return out

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def damages(results: dict, run: dict, kind: str) -> tuple[dict, dict]:
        """({block: D} of the other units, {block: D} of the downsampling units) of one seed."""
        r, chance = run[kind], results["chance_error"]
        normal, down = {}, {}
        for row in r["single"]:
            d = _damage(row["error"], r["intact"], chance)
            (down if row["block"] in r["downsampling"] else normal)[row["block"]] = d
        return normal, down

    def guards(self, results: dict, run: dict, kind: str) -> list[Guard]:
        """The ``kind`` net of one seed trained (final training loss below 0.9 ln C) and its
        intact test error is more than ``AT_CHANCE`` below chance."""
        r, chance = run[kind], results["chance_error"]
        net = f"{_net_name(results, kind)} seed {run['seed']}"
        ok = chance - r["intact"] >= AT_CHANCE
        return [
            trained_guard(net, r.get("train_loss", math.nan), math.log(results["num_classes"])),
            Guard(
                net,
                ok,
                f"intact test error {100 * r['intact']:.1f}% "
                f"{'<' if ok else '>='} chance {100 * chance:.0f}% - {100 * AT_CHANCE:.0f} points",
            ),
        ]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        check_results(results)
        runs = results["runs"]
        fig, axes = subplots(1, 3, figsize=(15, 3.8))
        # Blocks by name on one axis (the plain net's downsampling units are never removed).
        order = [row["block"] for row in runs[0]["residual"]["single"]]
        order += [row["block"] for row in runs[0]["plain"]["single"] if row["block"] not in order]
        for kind, color in (("residual", "#1f77b4"), ("plain", "#d62728")):
            names = [row["block"] for row in runs[0][kind]["single"]]
            per_block = [
                [100 * r[kind]["single"][i]["error"] for r in runs] for i in range(len(names))
            ]
            xs = [order.index(name) for name in names]
            axes[0].plot(
                xs, [mean(v) for v in per_block], "o-", color=color, markersize=3,
                label=f"{kind} ({runs[0][kind]['mode']})",
            )  # fmt: skip
            _band(axes[0], xs, per_block, color)
            axes[0].axhline(
                100 * mean(r[kind]["intact"] for r in runs), color=color, linestyle=":", linewidth=1
            )
            ks = sorted(int(k) for k in runs[0][kind]["random"])
            per_k = [[100 * e for r in runs for e in r[kind]["random"][str(k)]] for k in ks]
            axes[1].plot(ks, [mean(v) for v in per_k], "o-", color=color, markersize=3, label=kind)
            _band(axes[1], ks, per_k, color)
        axes[0].set_xticks(range(len(order)), order, rotation=90, fontsize=6)
        axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0].set_xlabel("deleted block")
        axes[0].set_ylabel("test error (%)")
        axes[0].legend(fontsize=8)
        axes[1].set_xlabel("blocks deleted at random")
        axes[1].set_ylabel("test error (%)")
        axes[1].legend(fontsize=8)
        n = runs[0]["paths"]["units"]
        ks = list(range(n + 1))
        ax = axes[2]
        ax.plot(ks, path_length_distribution(n), color="gray", label="share of paths (binomial)")
        ax.axvline(n / 2, color="gray", linestyle=":", linewidth=1)
        for key, color, label in (
            ("paths", "#1f77b4", "trained"),
            ("untrained_paths", "#ff7f0e", "untrained (same seed)"),
        ):
            shares = [
                [r[key]["total_gradient"][k] / sum(r[key]["total_gradient"]) for r in runs]
                for k in ks
            ]
            ax.plot(ks, [mean(v) for v in shares], color=color, label=f"gradient share, {label}")
            _band(ax, ks, shares, color)
            ax.axvline(
                mean(r[key]["mean_length"] for r in runs), color=color, linestyle="--", linewidth=1
            )
        ax.set_xlabel("path length (units on the residual branch)")
        ax.legend(fontsize=8)
        for a in axes:
            a.grid(alpha=0.3)
        save_figure(fig, folder, "lesions_and_paths")
        return [
            Figure(
                "lesions_and_paths",
                "Left: test error after deleting one block (dotted: intact). Middle: deleting k "
                "random non-downsampling blocks. Right: path lengths (binomial, dotted: n/2) "
                "and the share of the total gradient each length carries, trained and untrained "
                "(dashed: gradient-weighted mean length). Lines are means over seeds (and "
                "trials), the range of the seeds shaded.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        check_results(results)
        runs = results["runs"]
        res_depth = results["nets"]["residual"]["depth"]
        plain_depth = results["nets"]["plain"]["depth"]
        out = []

        def judged(claim, kind, margin_of, describe, prefix="", **fields):
            margins, guards, parts = [], [], []
            for run in runs:
                own = self.guards(results, run, kind)
                guards += own
                if all(g.passed for g in own):
                    margins.append(margin_of(run))
                    parts.append(f"seed {run['seed']}: {describe(run)}")
            if not margins:
                return claim.undecidable(
                    self.name,
                    f"no {kind} net is fit to be judged: every seed's net failed its guard (a net "
                    "at chance has nothing a lesion could destroy and no trained paths)",
                    guards,
                    **fields,
                )
            return claim.verdict(self.name, prefix + "; ".join(parts), margins, guards, **fields)

        def barely(run):
            d = self.damages(results, run, "residual")[0]
            return min(BARELY - median(d.values()), DESTROYS - max(d.values()))

        def describe_barely(run):
            d = self.damages(results, run, "residual")[0]
            worst = max(d, key=d.get)
            above = ", ".join(f"{b} {v:.2f}" for b, v in d.items() if v >= BARELY) or "none"
            return (
                f"D median {median(d.values()):.3f}, mean {mean(d.values()):.3f}, max "
                f"{d[worst]:.3f} ({worst}) over {len(d)} units; units at or above {BARELY}: "
                f"{above}"
            )

        out.append(judged(BARELY_HURTS, "residual", barely, describe_barely, depth=res_depth))

        def excess(run):
            normal, down = self.damages(results, run, "residual")
            return median(down.values()) - median(normal.values())

        def describe_excess(run):
            normal, down = self.damages(results, run, "residual")
            return (
                "D "
                + ", ".join(f"{b} {v:.3f}" for b, v in down.items())
                + f" (downsampling) vs median {median(normal.values()):.3f} (others)"
            )

        if all(self.damages(results, run, "residual")[1] for run in runs):
            out.append(
                judged(DOWNSAMPLING_HURTS, "residual", excess, describe_excess, depth=res_depth)
            )
        else:
            out.append(
                DOWNSAMPLING_HURTS.undecidable(
                    self.name, "the residual net has no downsampling unit", depth=res_depth
                )
            )

        def destroyed(run):
            return median(self.damages(results, run, "plain")[0].values()) - DESTROYS

        def describe_destroyed(run):
            d = self.damages(results, run, "plain")[0]
            return (
                f"D median {median(d.values()):.3f}, min {min(d.values()):.3f}, max "
                f"{max(d.values()):.3f} over {len(d)} layers"
            )

        out.append(
            judged(PLAIN_DESTROYED, "plain", destroyed, describe_destroyed, depth=plain_depth)
        )

        n = runs[0]["paths"]["units"]

        def shorter(run):
            return 1 - run["paths"]["mean_length"] / (n / 2)

        def describe_paths(run):
            p, u = run["paths"], run.get("untrained_paths")
            text = (
                f"gradient-weighted mean length {p['mean_length']:.1f} (90% of the gradient in "
                f"lengths {p['effective_range'][0]}-{p['effective_range'][1]})"
            )
            if u:
                text += (
                    f", untrained net {u['mean_length']:.1f} (margin "
                    f"{1 - u['mean_length'] / (n / 2):+.2f})"
                )
            return text

        out.append(
            judged(
                PATHS_SHORT,
                "residual",
                shorter,
                describe_paths,
                f"binomial mean n/2 = {n / 2:g}; ",
                depth=res_depth,
                units=n,
            )
        )
        return out

    def deviations(self, results: dict) -> list[str]:
        check_results(results)
        nets = results["nets"]
        warm = ", ".join(
            f"{r[kind]['run']} "
            + (
                "never warmed up"
                if r[kind].get("warmup_ended_at") is None
                else f"{r[kind]['warmup_ended_at']}"
            )
            for r in results["runs"]
            for kind in KINDS
        )
        return [
            f"residual net: ResNet-{nets['residual']['depth']} "
            f"({(nets['residual']['depth'] - 2) // 2} units) at lr {nets['residual']['lr']:g}, "
            f"data {nets['residual']['data']} (paper: ResNet-110, 54 units, lr 0.1, CIFAR-10)",
            f"plain net: the degradation experiment's plain-{nets['plain']['depth']} at lr "
            f"{nets['plain']['lr']:g} (paper: a VGG network)",
            f"schedule: {results['epochs']} epochs of batch {results['batch_size']} (paper: "
            "ResNet-110's 64k steps)",
            "warm-up: lr 0.01 until the running training error is below 80%, capped at "
            f"{results['warmup_steps']} steps; the step at which it ended, per net: {warm}",
            f"random deletions: {results['trials']} trials per count; path gradients from "
            f"{results['path_samples']} sampled subsets per path length, one batch per seed",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        check_results(results)
        runs, nets = results["runs"], results["nets"]
        described = "; ".join(
            f"{kind} {nets[kind]['depth']} layers (lr {nets[kind]['lr']:g}, runs "
            + ", ".join(f"`{md_text(r[kind]['run'])}`" for r in runs)
            + f", test data {md_text(nets[kind]['data'])})"
            for kind in KINDS
        )
        lines = [
            f"Nets: {described}; the plain net is the degradation experiment's deepest. Chance "
            f"error {100 * results['chance_error']:.0f}%. Damage D = (lesioned - intact) / "
            "(chance - intact), per block: median, mean and maximum over the non-downsampling "
            "blocks; every seed a row.",
            "",
            "| net | seed | final training loss | intact error | D median | D mean | D max "
            "(block) | downsampling D |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            for run in runs:
                normal, down = self.damages(results, run, kind)
                r = run[kind]
                worst = max(normal, key=normal.get) if normal else None
                lines.append(
                    f"| {kind} ({r['mode']}) | {run['seed']} | {r['train_loss']:.3f} | "
                    f"{100 * r['intact']:.2f}% | "
                    + (
                        f"{median(normal.values()):.3f} | {mean(normal.values()):.3f} | "
                        f"{normal[worst]:.3f} ({worst}) | "
                        if normal
                        else "— | — | — | "
                    )
                    + (", ".join(f"{b} {v:.3f}" for b, v in down.items()) or "—")
                    + " |"
                )
        n = runs[0]["paths"]["units"]
        trained = [r["paths"]["mean_length"] for r in runs]
        untrained = [r["untrained_paths"]["mean_length"] for r in runs]
        lines += [
            "",
            f"Path lengths ({n} units): binomial mean n/2 = {n / 2:g}; gradient-weighted mean "
            f"length, trained {_mean_sd(trained)}, untrained (same seed) {_mean_sd(untrained)}.",
        ]
        return "\n".join(lines)


def _net_name(results: dict, kind: str) -> str:
    depth = results["nets"][kind]["depth"]
    return f"ResNet-{depth}" if kind == "residual" else f"plain-{depth}"


def _band(ax, xs, values, color) -> None:
    """Shade the range (lowest to highest) of ``values[i]`` at each ``xs[i]``."""
    if max(len(v) for v in values) > 1:
        ax.fill_between(
            list(xs), [min(v) for v in values], [max(v) for v in values], color=color,
            alpha=0.15, linewidth=0,
        )  # fmt: skip


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{mean(values):.2f} ± {stdev(values):.2f}"
