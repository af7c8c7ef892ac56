"""Experiment 3, ensemble-of-paths: residual nets behave like ensembles of short paths.

Veit, Wilber & Belongie 2016 (arXiv:1605.06431): deleting a single residual unit at test time
(keeping its shortcut) barely changes the error, except for downsampling units (Fig. 3);
error grows smoothly with the number of deleted units (Fig. 5a); removing a layer from a plain
net destroys it (Fig. 3); and most of the gradient comes from short paths (Fig. 6).

The nets are the degradation experiment's deepest residual and plain nets (same run folders:
they are trained once), unless the budget names a deeper residual net of its own
(``PathsBudget.residual_net``): a 12-unit ResNet-26 is too shallow to be an ensemble of many
paths. The plain net is always the degradation experiment's deepest: deeper plain nets do not
train at these budgets, and a net at chance has nothing to lose.

Damage is measured relative to chance: D = (error_lesioned - error_intact) / (chance -
error_intact), 0 for no harm and 1 for a net reduced to chance. "Barely hurts" means mean
D < 0.2; "destroys" means mean D > 0.5. Paths are "short" when the gradient-weighted mean
path length is below n/2, the mean length of all 2^n paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean

from skiplab.analysis.lesion import lesion_random_blocks, lesion_single_blocks
from skiplab.analysis.paths import (
    effective_path_range,
    gradient_per_path_length,
    path_length_distribution,
    total_gradient,
)
from skiplab.data import DeviceLoader
from skiplab.experiments import degradation
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import save_figure, subplots
from skiplab.experiments.training import DataPlan, classification_data
from skiplab.experiments.verdict import Verdict, make_verdict, undecidable_verdict
from skiplab.fileio import atomic_write_csv
from skiplab.train import evaluate

BARELY, DESTROYS = 0.2, 0.5
AT_CHANCE = 0.05  # an intact net within 5 points of chance has nothing a lesion could destroy


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
    # The quick degradation nets stop at ResNet-26 (12 units), whose single-unit lesions cost
    # 0.26 of the way to chance. A full-width ResNet-56 (27 units) trains in the same 390
    # steps, at lr <= 0.05 (at 0.1 it stays at chance). Calibrated, seed 0, bf16, two threads:
    # on 24x24 images at lr 0.05 (2.3x the cost of 16x16): 37% training error, damage 0.16,
    # downsampling +0.03; on 16x16 at lr 0.02 / 0.03 / 0.05: 52 / 51 / 81% training error,
    # damage 0.17 / 0.16 / 0.15, downsampling -0.03 / +0.06 / +0.04 over the other units.
    # "Barely hurts" holds throughout; the downsampling excess is at the size of this spread.
    "quick": PathsBudget(10, 3, 3, 64, LesionNet(56, 0.03, DataPlan(5000, 500, 16))),
    "standard": PathsBudget(10, 3, 10, 128),
    "paper": PathsBudget(20, 10, 20, 128),
}


def _damage(error: float, intact: float, chance: float) -> float:
    """Relative damage; nan for a net at or below chance (see ``AT_CHANCE``)."""
    if chance - intact <= 0:
        return math.nan
    return (error - intact) / (chance - intact)


class EnsembleOfPaths(Experiment):
    name = "ensemble-of-paths"
    title = "Residual networks as ensembles of relatively shallow paths"
    paper = "Veit et al. 2016, Figs. 3, 5 and 6"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        deg = degradation.BUDGETS[settings.budget]
        train, test = classification_data(settings, deg.data)
        chance = 1 - 1 / len(train.classes)
        depth = max(deg.depths)  # the degradation experiment's nets, trained once for both
        # Each net with the data it trained on: (outcome, train, test).
        plain = degradation.train_net(settings, deg, "plain", depth, 0, train, test)
        nets = {"plain": (plain, train, test)}
        own = budget.residual_net
        if own:
            own_deg = replace(deg, depths=(own.depth,), lr=own.lr, data=own.data or deg.data)
            own_train, own_test = (
                classification_data(settings, own.data) if own.data else (train, test)
            )
            outcome = degradation.train_net(
                settings, own_deg, "residual", own.depth, 0, own_train, own_test, tag="lesion"
            )
            nets["residual"] = (outcome, own_train, own_test)
        else:
            outcome = degradation.train_net(settings, deg, "residual", depth, 0, train, test)
            nets["residual"] = (outcome, train, test)

        def error_on(data):
            def error(model) -> float:
                return evaluate(
                    model,
                    data,
                    batch_size=256,
                    device=settings.device,
                    amp=settings.amp,
                    channels_last=settings.channels_last,
                )["error"]

            return error

        out = {
            "depth": depth,
            "nets": {
                "residual": {
                    "depth": own.depth if own else depth,
                    "lr": own.lr if own else deg.lr,
                    "run": nets["residual"][0].name,
                    "data": nets["residual"][2].source,
                },
                "plain": {
                    "depth": depth,
                    "lr": deg.lr,
                    "run": nets["plain"][0].name,
                    "data": test.source,
                },
            },
            "chance_error": chance,
            "data": test.source,
        }
        for kind, mode in (("residual", "lesion"), ("plain", "remove")):
            outcome, net_train, net_test = nets[kind]
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
                seed=0,
                mode=mode,
                exclude_downsampling=True,
            )
            out[kind] = {
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
                n = len(list(model.iter_blocks()))
                per_length = gradient_per_path_length(
                    model, x, y, range(n + 1), budget.path_samples, seed=0
                )
                total = total_gradient(per_length, n)
                lo, hi = effective_path_range(total, n)
                out["paths"] = {
                    "units": n,
                    "distribution": path_length_distribution(n),
                    "gradient_per_length": [per_length[k] for k in range(n + 1)],
                    "total_gradient": [total[k] for k in range(n + 1)],
                    "effective_range": [lo, hi],
                }
        atomic_write_csv(
            folder / "single_lesions.csv",
            ("net", "block", "error"),
            (
                (kind, row["block"], row["error"])
                for kind in ("residual", "plain")
                for row in out[kind]["single"]
            ),
        )
        return out

    def _damages(self, results: dict, kind: str) -> tuple[list[float], list[float]]:
        r, chance = results[kind], results["chance_error"]
        normal, down = [], []
        for row in r["single"]:
            d = _damage(row["error"], r["intact"], chance)
            (down if row["block"] in r["downsampling"] else normal).append(d)
        return normal, down

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        fig, axes = subplots(1, 3, figsize=(15, 3.8))
        for kind, color in (("residual", "#1f77b4"), ("plain", "#d62728")):
            r = results[kind]
            names = [row["block"] for row in r["single"]]
            axes[0].plot(
                range(len(names)),
                [100 * row["error"] for row in r["single"]],
                "o-",
                color=color,
                markersize=3,
                label=f"{kind} ({r['mode']})",
            )
            axes[0].axhline(100 * r["intact"], color=color, linestyle=":", linewidth=1)
            ks = sorted(int(k) for k in r["random"])
            axes[1].errorbar(
                ks,
                [100 * mean(r["random"][str(k)]) for k in ks],
                yerr=[100 * (max(r["random"][str(k)]) - min(r["random"][str(k)])) / 2 for k in ks],
                color=color,
                label=kind,
                capsize=2,
            )
        axes[0].set_xlabel("deleted block (index)")
        axes[0].set_ylabel("test error (%)")
        axes[0].legend(fontsize=8)
        axes[1].set_xlabel("blocks deleted at random")
        axes[1].set_ylabel("test error (%)")
        axes[1].legend(fontsize=8)
        p = results["paths"]
        ks = range(p["units"] + 1)
        ax = axes[2]
        ax.plot(ks, p["distribution"], label="share of paths (binomial)")
        total = p["total_gradient"]
        s = sum(total)
        ax.plot(ks, [t / s for t in total], label="share of total gradient")
        ax.axvspan(*p["effective_range"], alpha=0.15, label="90% of the gradient")
        ax.set_xlabel("path length (units on the residual branch)")
        ax.legend(fontsize=8)
        for a in axes:
            a.grid(alpha=0.3)
        save_figure(fig, folder, "lesions_and_paths")
        return [
            Figure(
                "lesions_and_paths",
                "Left: test error after deleting one block (dotted: intact). Middle: "
                "deleting k random non-downsampling blocks (bars: range over trials). "
                "Right: path lengths and the gradient they carry.",
            )
        ]

    @staticmethod
    def _at_chance(results: dict, kind: str) -> str | None:
        """Why the ``kind`` net's lesions cannot be judged (it is at chance), or None."""
        intact, chance = results[kind]["intact"], results["chance_error"]
        if chance - intact >= AT_CHANCE:
            return None
        return (
            f"the intact {kind} net is at chance ({100 * intact:.1f}% test error, chance "
            f"{100 * chance:.0f}%): it has nothing a lesion could destroy, so the damage is "
            "undefined"
        )

    def verdicts(self, results: dict) -> list[Verdict]:
        normal, down = self._damages(results, "residual")
        plain, _ = self._damages(results, "plain")
        p = results["paths"]
        n = p["units"]
        total = p["total_gradient"]
        weighted = sum(k * t for k, t in enumerate(total)) / sum(total)
        untrained = {kind: self._at_chance(results, kind) for kind in ("residual", "plain")}

        def damage_verdict(claim, kind, measured, margin, min_effect, paper):
            if untrained[kind]:
                return undecidable_verdict(claim, self.name, untrained[kind], min_effect, paper)
            return make_verdict(claim, self.name, measured, [margin], min_effect, paper)

        return [
            damage_verdict(
                "Deleting one (non-downsampling) block barely hurts a residual net",
                "residual",
                f"mean relative damage {mean(normal):.3f} over {len(normal)} blocks "
                f"(barely: < {BARELY})",
                BARELY - mean(normal),
                0.02,
                "Veit et al. Fig. 3: small error increase",
            ),
            damage_verdict(
                "... except downsampling blocks, which hurt more",
                "residual",
                f"mean relative damage {mean(down):.3f} (downsampling) vs {mean(normal):.3f}",
                mean(down) - mean(normal),
                0.05,
                "Veit et al. Fig. 3: spikes at downsampling",
            ),
            damage_verdict(
                "Removing a layer from a plain net destroys it",
                "plain",
                f"mean relative damage {mean(plain):.3f} over {len(plain)} layers "
                f"(destroys: > {DESTROYS})",
                mean(plain) - DESTROYS,
                0.02,
                "Veit et al. Fig. 3: plain VGG at chance",
            ),
            make_verdict(
                "The effective paths are short",
                self.name,
                f"gradient-weighted mean path length {weighted:.1f} of {n} units (all paths: "
                f"{n / 2:.1f}); 90% of the gradient in lengths {p['effective_range']}",
                [n / 2 - weighted],
                1.0,
                "Veit et al.: 5-17 of 54 units in ResNet-110",
            ),
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        r, pl = results["residual"], results["plain"]
        depth = results["depth"]  # results written before "nets" lesioned this pair
        nets = results.get("nets", {k: {"depth": depth} for k in ("residual", "plain")})
        described = []
        for kind in ("residual", "plain"):
            net = nets[kind]
            line = f"{kind} {net['depth']} layers"
            if "run" in net:
                line += f" (lr {net['lr']:g}, run `{net['run']}`, test data {net['data']})"
            described.append(line)
        return "\n".join(
            [
                f"Nets: {'; '.join(described)}; the plain net is the degradation experiment's "
                f"deepest. Chance error {100 * results['chance_error']:.0f}%."
                + ("" if "nets" in results else f" Test data {results['data']}."),
                "",
                "| net | intact error | mean error, one block deleted | downsampling blocks |",
                "| --- | --- | --- | --- |",
                f"| residual (lesion) | {100 * r['intact']:.2f}% | "
                f"{100 * mean(x['error'] for x in r['single']):.2f}% | "
                f"{', '.join(r['downsampling'])} |",
                f"| plain (remove) | {100 * pl['intact']:.2f}% | "
                f"{100 * mean(x['error'] for x in pl['single']):.2f}% | skipped: "
                f"{', '.join(pl['skipped']) or '—'} |",
            ]
        )
