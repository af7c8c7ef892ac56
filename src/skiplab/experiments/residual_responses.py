"""Experiment, residual-responses: are the residual functions closer to zero than plain ones?

He et al. 2015 (arXiv:1512.03385), section 4.2, "Analysis of Layer Responses", Fig. 7: the
standard deviations of the layer responses (after BN, before the ReLU or the addition) of
trained CIFAR-10 nets. ResNets have generally smaller responses than their plain counterparts,
which supports the idea that residual functions are closer to zero than non-residual ones; and
the deeper the ResNet, the smaller its responses: with more layers, each layer of a ResNet
modifies the signal less.

The nets are the degradation experiment's trained plain and residual nets of the same budget
(every depth, every seed, the same run folders: they are trained once for both experiments;
when this experiment runs first it trains them through the same mechanism). For each net we
measure, on a batch of test images in eval mode, every unit's branch response F(x)
(:func:`skiplab.analysis.responses.residual_responses`: the output of the branch's last BN,
before the addition, or before the final ReLU of a plain unit): its standard deviation (the
paper's Fig. 7) and ||F(x)|| / ||x||, how much the unit changes the signal it passes on. A net
enters a claim only when it trained (its final training loss clearly below chance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import matplotlib

from skiplab.analysis.responses import residual_responses
from skiplab.data import DeviceLoader
from skiplab.experiments import degradation
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.degradation import label as _name
from skiplab.experiments.report import md_text, mean_sd, save_figure, subplots
from skiplab.experiments.training import classification_data, train_in_parallel
from skiplab.experiments.verdict import Claim, Guard, Verdict, trained_guard


@dataclass(frozen=True)
class ResponsesBudget:
    images: int  # test images measured (one batch)


# The nets, data and schedule are the degradation experiment's of the same budget; this row
# only says how many test images each net is measured on.
BUDGETS = {
    "quick": ResponsesBudget(128),
    "standard": ResponsesBudget(500),
    "paper": ResponsesBudget(1000),
}
KINDS = ("plain", "residual")

_WHY_MIN = (
    "0.1: a response std a tenth below the other net's; a smaller relative difference is "
    "within what a change of seed moves a response (the BN scales of two runs differ by "
    "that much); a rule fixed before these runs, not fitted to them"
)
RESIDUAL_SMALLER = Claim(
    "Residual nets respond less than plain nets of the same depth: the mean response std of "
    "ResNet-{depths} is below that of plain-{depths} (the worst depth of a seed decides it)",
    "He et al. 2015, section 4.2 and Fig. 7",
    0.1,
    _WHY_MIN + "; the margin of a seed is min over depths d of 1 - std(ResNet-d) / "
    "std(plain-d), std the mean over units of the response std",
    paper="ResNets have generally smaller responses than their plain counterparts",
)
DEEPER_SMALLER = Claim(
    "The deeper the ResNet, the smaller its responses: the mean response std of ResNet-{deep} "
    "is below that of ResNet-{shallow}",
    "He et al. 2015, section 4.2 and Fig. 7",
    0.1,
    _WHY_MIN + "; the margin of a seed is 1 - std(ResNet-{deep}) / std(ResNet-{shallow})",
    paper="the deeper ResNet has smaller magnitudes of responses (ResNet-20, 56, 110)",
)


class ResidualResponses(Experiment):
    name = "residual-responses"
    title = "Layer responses of trained plain and residual nets"
    paper = "He et al. 2015, section 4.2, Fig. 7"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        deg = degradation.BUDGETS[settings.budget]
        train, test = classification_data(settings, deg.data)
        nc = len(train.classes)
        # Train (or find on disk) the degradation nets, deepest first, as degradation does.
        tasks = {
            (kind, depth, seed): (settings, deg, kind, depth, seed, train, test)
            for seed in settings.seeds
            for depth in sorted(deg.depths, reverse=True)
            for kind in KINDS
        }
        train_in_parallel(settings, degradation.train_net, list(tasks.values()))
        x, _ = DeviceLoader(
            test, min(budget.images, len(test)), train=False, device=settings.device
        ).batch(0, 0)
        rows = []
        for seed in settings.seeds:
            for kind in KINDS:
                for depth in deg.depths:
                    # On disk now: read one trained net at a time.
                    outcome = degradation.train_net(*tasks[(kind, depth, seed)])
                    model = outcome.model.to(settings.device).eval()
                    units = residual_responses(model, x)
                    rows.append(
                        {
                            "kind": kind,
                            "depth": depth,
                            "seed": seed,
                            "run": outcome.name,
                            "train_loss": outcome.final["train_loss"],
                            "steps": outcome.final["step"],
                            "blocks": [u.name for u in units],
                            "branch_layer": sorted({u.branch_layer for u in units}),
                            "response_std": [u.response_std for u in units],
                            "norm_ratio": [u.norm_ratio for u in units],
                        }
                    )
        return {
            "budget": settings.budget,
            "depths": list(deg.depths),
            "epochs": deg.epochs,
            "batch_size": deg.batch_size,
            "steps": rows[0]["steps"],
            "images": int(x.shape[0]),
            "model_args": {
                k: list(v) if isinstance(v, tuple) else v for k, v in deg.model_args.items()
            },
            "data": test.source,
            "num_classes": nc,
            "seeds": list(settings.seeds),
            "nets": rows,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _row(results: dict, kind: str, depth: int, seed: int) -> dict | None:
        found = [
            r for r in results["nets"] if (r["kind"], r["depth"], r["seed"]) == (kind, depth, seed)
        ]
        return found[0] if found else None

    @staticmethod
    def _rows(results: dict, kind: str, depth: int) -> list[dict]:
        return [r for r in results["nets"] if (r["kind"], r["depth"]) == (kind, depth)]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        depths = results["depths"]
        cmap = matplotlib.colormaps["viridis"]
        fig, axes = subplots(1, 3, figsize=(16, 4))
        for i, depth in enumerate(depths):
            color = cmap(i / max(len(depths) - 1, 1))
            for kind, style in (("plain", "--"), ("residual", "-")):
                rows = self._rows(results, kind, depth)
                if not rows:
                    continue
                stds = [mean(v) for v in zip(*(r["response_std"] for r in rows), strict=True)]
                ratios = [mean(v) for v in zip(*(r["norm_ratio"] for r in rows), strict=True)]
                label = _name(kind, depth)
                idx = list(range(1, len(stds) + 1))
                axes[0].plot(idx, stds, style, color=color, label=label, linewidth=1.2)
                axes[1].plot(idx, sorted(stds, reverse=True), style, color=color, label=label,
                             linewidth=1.2)  # fmt: skip
                axes[2].plot(idx, ratios, style, color=color, label=label, linewidth=1.2)
        axes[0].set_xlabel("unit index (original order)")
        axes[1].set_xlabel("unit index (sorted by magnitude)")
        axes[2].set_xlabel("unit index (original order)")
        axes[0].set_ylabel("response std")
        axes[1].set_ylabel("response std")
        axes[2].set_ylabel("||F(x)|| / ||x||")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        save_figure(fig, folder, "layer_responses")
        return [
            Figure(
                "layer_responses",
                "Standard deviation of each unit's branch response (after its last BN, before "
                "the addition or the ReLU), in the units' order and sorted by magnitude (He et "
                "al. 2015, Fig. 7 style), and ||F(x)||/||x|| per unit; plain nets dashed, "
                "ResNets solid, mean over seeds.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        depths = results["depths"]
        chance = math.log(results.get("num_classes", 10))
        seeds = results["seeds"]

        def guard(row: dict) -> Guard:
            net = f"{_name(row['kind'], row['depth'])} seed {row['seed']}"
            return trained_guard(net, row.get("train_loss", math.nan), chance)

        # (a) residual below plain at every depth: the worst depth decides each seed.
        guards, margins, measured = [], [], []
        for seed in seeds:
            per_depth = []
            for depth in depths:
                pair = [self._row(results, k, depth, seed) for k in ("plain", "residual")]
                if None in pair:
                    continue
                own = [guard(r) for r in pair]
                guards += own
                if all(g.passed for g in own):
                    plain, res = (net_std(r) for r in pair)
                    per_depth.append((1 - res / plain, depth, plain, res))
            if per_depth:
                margin, depth, plain, res = min(per_depth)
                margins.append(margin)
                measured.append(f"seed {seed} depth {depth}: plain {plain:.3g}, ResNet {res:.3g}")
        names = "/".join(str(d) for d in depths)
        out = [
            RESIDUAL_SMALLER.verdict(
                self.name,
                "mean response std at the worst depth per seed: " + "; ".join(measured),
                margins,
                guards,
                depths=names,
            )
            if margins
            else RESIDUAL_SMALLER.undecidable(self.name, _no_net_why(), guards, depths=names)
        ]

        # (b) the deepest ResNet against the shallowest.
        shallow, deep = min(depths), max(depths)
        guards, margins, measured = [], [], []
        for seed in seeds:
            pair = [self._row(results, "residual", d, seed) for d in (shallow, deep)]
            if None in pair:
                continue
            own = [guard(r) for r in pair]
            guards += own
            if all(g.passed for g in own):
                lo, hi = (net_std(r) for r in pair)
                margins.append(1 - hi / lo)
                measured.append(f"seed {seed}: ResNet-{shallow} {lo:.3g}, ResNet-{deep} {hi:.3g}")
        fields = {"shallow": shallow, "deep": deep}
        out.append(
            DEEPER_SMALLER.verdict(
                self.name, "mean response std: " + "; ".join(measured), margins, guards, **fields
            )
            if margins
            else DEEPER_SMALLER.undecidable(self.name, _no_net_why(), guards, **fields)
        )
        return out

    def deviations(self, results: dict) -> list[str]:
        return [
            "nets: the degradation experiment's trained plain and residual nets of this budget "
            f"(depths {', '.join(str(d) for d in results['depths'])}; {results['steps']} steps "
            f"of batch {results['batch_size']}, its error-driven warm-up) (paper: plain-20/56 "
            "and ResNet-20/56/110 trained for 64k steps)",
            "responses: the output of the last BN of each unit's branch (before the addition "
            "or the unit's ReLU), one per unit (paper: every 3x3 layer, so also the first BN "
            "of each unit)",
            f"measured on {results['images']} test images of {md_text(results['data'])} in "
            "eval mode (BN with its running statistics)",
            "the claims compare the mean over units of the response std (the paper compares "
            "the curves of Fig. 7 by eye)",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        chance = math.log(results.get("num_classes", 10))
        lines = [
            f"Data: {results['images']} test images of {md_text(results['data'])}; the "
            "degradation experiment's trained nets, seeds "
            f"{', '.join(str(s) for s in results['seeds'])}. Response std: mean over units of "
            "the std of the unit's branch response; ‖F(x)‖/‖x‖: mean over units. Mean ± sd "
            f"over seeds, then every seed; chance loss ln C = {chance:.3f}.",
            "",
            "| net | depth | response std | per seed | ‖F(x)‖/‖x‖ | per seed | final training "
            "loss |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            for depth in results["depths"]:
                rows = self._rows(results, kind, depth)
                stds = [net_std(r) for r in rows]
                ratios = [mean(r["norm_ratio"]) for r in rows]
                losses = [r["train_loss"] for r in rows]
                lines.append(
                    f"| {_name(kind, depth)} | {depth} | {mean_sd(stds)} | {_each(stds)} | "
                    f"{mean_sd(ratios)} | {_each(ratios)} | {mean_sd(losses)} |"
                )
        return "\n".join(lines)


def net_std(row: dict) -> float:
    """The mean over units of the response std of one net."""
    return mean(row["response_std"])


def _no_net_why() -> str:
    return (
        "no net it compares trained (final training loss at chance): the responses of a net "
        "that never trained say nothing about the claim"
    )


def _each(values: list[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values) or "—"
