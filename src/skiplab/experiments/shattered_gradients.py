"""Experiment, shattered-gradients: do input gradients of deep plain nets turn to white noise?

Balduzzi et al. 2017, "The Shattered Gradients Problem: If resnets are the answer, then what is
the question?" (ICML 2017, arXiv:1702.08591), abstract and Figs. 1-2: at initialisation the
correlation between the gradients at nearby inputs decays exponentially with depth in
feedforward nets (the gradients come to resemble white noise), and far more slowly, sublinearly,
with skip connections. The paper feeds a 1-D input on a grid of 256 points; here the input is
an image, and the grid lies on a line x0 + t d through input space
(:func:`skiplab.analysis.shattering.gradient_shattering`): x0 a test image, d a random unit
direction, t on [-2, 2] (the data are standardised per channel, so the projection of the data on
a random unit direction has a spread of about one: the grid spans about two of those spreads
either side of x0, the range where the data lie). The scalar output is the logit of x0's
class.

The nets are the degradation experiment's family (``create_model("resnet20",
**degradation.net_args(...))``): plain (``shortcut="none"``) and residual (option A) nets of
several depths, freshly initialised with each seed and measured in eval mode. Every seed draws
its own weights, its own image x0 and its own direction.

The summary number of a net is R(1), the correlation between the input gradients at
neighbouring grid points (1: the gradient is smooth along the line; 0: neighbours are
independent, white noise). The spectral whiteness of the gradients (1: white noise, near 0:
smooth) and the autocorrelation R(k) are recorded and drawn as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean, stdev

import torch

from skiplab.analysis.shattering import gradient_shattering
from skiplab.data import DeviceLoader
from skiplab.experiments import degradation
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.training import DataPlan, classification_data
from skiplab.experiments.verdict import Claim, Guard, Verdict
from skiplab.models import create_model


@dataclass(frozen=True)
class ShatterBudget:
    depths: tuple[int, ...]  # 6n+2 layers, plain and residual at each
    points: int  # grid points on the line (the paper: 256)
    data: DataPlan  # where x0 comes from; the resolution of the nets' input
    model_args: dict  # overrides of degradation.net_args (e.g. narrower widths)


BUDGETS = {
    # quick: widths 8/16/32, 64 points, 16x16 images: well under a second of measurement on a
    # CPU core (the demo's time; docs/results/calibration.md).
    "quick": ShatterBudget(
        (8, 20, 56), 64, DataPlan(100, 100, 16), {"widths": (8, 16, 32), "stem_width": 8}
    ),
    # standard and paper: the paper's CIFAR depths and widths 16/32/64, 256 points, at the
    # resolution the degradation experiment of the same budget trains at.
    "standard": ShatterBudget(
        (20, 32, 44, 56, 110),
        256,
        DataPlan(100, 100, degradation.BUDGETS["standard"].data.resolution),
        {},
    ),
    "paper": ShatterBudget(
        (20, 32, 44, 56, 110),
        256,
        DataPlan(100, 100, degradation.BUDGETS["paper"].data.resolution),
        {},
    ),
}
KINDS = ("plain", "residual")
SPAN = 2.0  # t in [-SPAN, SPAN] along a unit direction
MAX_LAG = 16  # R(k) recorded for k = 0..MAX_LAG (at most points // 2)

_WHY_MIN = (
    "0.1, a tenth of the range of a correlation between gradients that are smooth (1) and "
    "independent (0): smaller differences are within what a change of image, direction or "
    "grid spacing moves; a rule fixed before these runs, not fitted to them"
)
PLAIN_SHATTERS = Claim(
    "Without skip connections the gradients shatter with depth: the correlation R(1) of the "
    "input gradients at neighbouring points is lower in plain-{deep} than in plain-{shallow}",
    "Balduzzi et al. 2017 (ICML, arXiv:1702.08591), abstract and Figs. 1-2",
    0.1,
    _WHY_MIN + "; the margin of a seed is R(1) of plain-{shallow} minus R(1) of plain-{deep}",
    paper="correlations between gradients decay exponentially with depth in feedforward nets",
)
RESIDUAL_RESISTS = Claim(
    "With skip connections the gradients stay correlated: R(1) of ResNet-{deep} is above "
    "that of plain-{deep}",
    "Balduzzi et al. 2017 (ICML, arXiv:1702.08591), abstract and Figs. 1-2",
    0.1,
    _WHY_MIN + "; the margin of a seed is R(1) of ResNet-{deep} minus R(1) of plain-{deep}",
    paper="with skip connections the correlations decay sublinearly, far more slowly",
)


def net_args(budget: ShatterBudget, kind: str, depth: int, num_classes: int) -> dict:
    """The degradation experiment's ``kind`` net of ``depth`` layers with this budget's
    overrides (``create_model("resnet20", **net_args(...))``)."""
    # degradation.net_args reads only the budget's model_args: this budget's overrides.
    deg = replace(degradation.BUDGETS["quick"], model_args=budget.model_args)
    return degradation.net_args(deg, kind, depth, num_classes)


def _label(row: dict) -> str:
    return f"{row['kind']}-{row['depth']}"


def _r1_guard(row: dict) -> Guard:
    r1 = row["r1"]
    ok = math.isfinite(r1)
    net = f"{_label(row)} seed {row['seed']}"
    return Guard(net, ok, f"R(1) {r1:.3g} {'is' if ok else 'is not'} finite (non-zero gradients)")


class ShatteredGradients(Experiment):
    name = "shattered-gradients"
    title = "Shattered gradients: correlation of input gradients at neighbouring inputs"
    paper = "Balduzzi et al. 2017 (ICML), Figs. 1-2"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        if any((d - 2) % 6 for d in budget.depths):
            raise ValueError(f"depths must be 6n+2; got {budget.depths}")
        _, test = classification_data(settings, budget.data)
        nc = len(test.classes)
        seeds = list(settings.seeds)
        # One test image per seed (the seed's position in the test split, wrapping round).
        loader = DeviceLoader(test, len(test), train=False, device=settings.device)
        x_all, y_all = loader.batch(0, 0)
        ts = torch.linspace(-SPAN, SPAN, budget.points)
        max_lag = min(MAX_LAG, budget.points // 2)
        rows = []
        for seed in seeds:
            i = seed % len(test)
            x0, label = x_all[i], int(y_all[i])
            for kind in KINDS:
                for depth in budget.depths:
                    torch.manual_seed(seed)
                    args = net_args(budget, kind, depth, nc)
                    model = create_model("resnet20", **args).to(settings.device).eval()
                    s = gradient_shattering(
                        model, x0, ts=ts, output=label, max_lag=max_lag, seed=seed
                    )
                    rows.append(
                        {
                            "kind": kind,
                            "depth": depth,
                            "seed": seed,
                            "image": i,
                            "r1": s.neighbour_correlation,
                            "whiteness": s.whiteness,
                            "correlation": [float(v) for v in s.correlation],
                            "directional_acf": [float(v) for v in s.directional_acf],
                            "directional": [float(v) for v in s.line.directional],
                        }
                    )
        return {
            "budget": settings.budget,
            "depths": list(budget.depths),
            "points": budget.points,
            "span": SPAN,
            "model_args": {
                k: list(v) if isinstance(v, tuple) else v for k, v in budget.model_args.items()
            },
            "data": test.source,
            "num_classes": nc,
            "seeds": seeds,
            "nets": rows,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _rows(results: dict, kind: str, depth: int) -> list[dict]:
        return [r for r in results["nets"] if (r["kind"], r["depth"]) == (kind, depth)]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        depths = results["depths"]
        colors = {"plain": "tab:red", "residual": "tab:blue"}
        fig, axes = subplots(1, 3, figsize=(15, 4))
        for ax, key, ylabel in (
            (axes[0], "r1", "R(1): gradient correlation of neighbours"),
            (axes[1], "whiteness", "spectral whiteness (1 = white noise)"),
        ):
            for kind in KINDS:
                means = []
                for depth in depths:
                    values = [_finite(r[key]) for r in self._rows(results, kind, depth)]
                    ax.scatter([depth] * len(values), values, s=14, alpha=0.5, color=colors[kind])
                    means.append(_mean(values))
                ax.plot(depths, means, "-o", markersize=3, color=colors[kind], label=kind)
            ax.set_xlabel("depth (layers)")
            ax.set_ylabel(ylabel)
            ax.set_xticks(depths)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        deep = max(depths)
        ax = axes[2]
        for kind in KINDS:
            rows = self._rows(results, kind, deep)
            curves = list(zip(*(r["correlation"] for r in rows), strict=True))
            lags = list(range(len(curves)))
            ax.plot(lags, [_mean(v) for v in curves], color=colors[kind], label=f"{kind}-{deep}")
            if len(rows) > 1:
                ax.fill_between(lags, [min(v) for v in curves], [max(v) for v in curves],
                                color=colors[kind], alpha=0.15, linewidth=0)  # fmt: skip
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set_xlabel("lag k (grid steps)")
        ax.set_ylabel("R(k)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, folder, "shattering_vs_depth")

        # Fig. 1 style: the directional derivative along the line, first seed.
        seed = results["seeds"][0]
        shallow = min(depths)
        picks = [("plain", shallow), ("plain", deep), ("residual", deep)]
        fig, axes = subplots(1, 3, figsize=(15, 3.2), sharey=True)
        span = results["span"]
        for ax, (kind, depth) in zip(axes, picks, strict=True):
            (row,) = [r for r in self._rows(results, kind, depth) if r["seed"] == seed]
            g = row["directional"]
            scale = max(abs(v) for v in g) or 1.0
            ts = [-span + 2 * span * i / (len(g) - 1) for i in range(len(g))]
            ax.plot(ts, [v / scale for v in g], color=colors[kind], linewidth=1)
            ax.set_title(f"{kind}-{depth}: R(1) {row['r1']:.3f}")
            ax.set_xlabel("t along the line")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("f'(t) / max |f'|")
        save_figure(fig, folder, "gradients_along_line")
        return [
            Figure(
                "shattering_vs_depth",
                "Left: R(1), the correlation of the input gradients at neighbouring points of "
                "the line, against depth; middle: the spectral whiteness of those gradients; "
                "each point one seed, lines the means. Right: R(k) of the deepest nets, mean "
                "over seeds with their range shaded (Balduzzi et al. 2017, Fig. 2 style).",
            ),
            Figure(
                "gradients_along_line",
                f"The derivative of the logit along the line x0 + t d (seed {seed}), scaled to "
                "its largest value: Balduzzi et al. 2017, Fig. 1 style.",
            ),
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        depths = results["depths"]
        shallow, deep = min(depths), max(depths)
        out = []
        for claim, first, second in (
            (PLAIN_SHATTERS, ("plain", shallow), ("plain", deep)),
            (RESIDUAL_RESISTS, ("residual", deep), ("plain", deep)),
        ):
            # margin of a seed: R(1) of `first` minus R(1) of `second`
            a = {r["seed"]: r for r in self._rows(results, *first)}
            b = {r["seed"]: r for r in self._rows(results, *second)}
            seeds = sorted(set(a) & set(b))
            guards = [_r1_guard(r) for s in seeds for r in (a[s], b[s])]
            usable = [s for s in seeds if math.isfinite(a[s]["r1"]) and math.isfinite(b[s]["r1"])]
            margins = [a[s]["r1"] - b[s]["r1"] for s in usable]
            fields = {"shallow": shallow, "deep": deep}
            if not margins:
                out.append(
                    claim.undecidable(
                        self.name, "no seed has a finite R(1) for both nets", guards, **fields
                    )
                )
                continue
            measured = "R(1) per seed: " + "; ".join(
                f"seed {s} {_label(a[s])} {a[s]['r1']:.3f}, {_label(b[s])} {b[s]['r1']:.3f}"
                for s in usable
            )
            out.append(claim.verdict(self.name, measured, margins, guards, **fields))
        return out

    def deviations(self, results: dict) -> list[str]:
        out = [
            "nets: the degradation experiment's CIFAR plain and residual nets (3x3 convolutions, "
            "BatchNorm, option-A shortcuts) at depths "
            f"{', '.join(str(d) for d in results['depths'])} (paper, Figs. 1-2: fully connected "
            "rectifier nets with a 1-D input)",
            "input: a line x0 + t d through image space, x0 a test image of "
            f"{md_text(results['data'])} (one per seed), d a random unit direction, t on "
            f"[-{results['span']:g}, {results['span']:g}] in {results['points']} points (paper: "
            "a 1-D input on a grid of 256 points); the scalar is the logit of x0's class",
            "BatchNorm in eval mode with its running statistics at initialisation (mean 0, "
            "variance 1), so that every point's gradient is its own: BN is then the identity "
            "up to its epsilon and the nets measured are effectively unnormalised (in training "
            "mode BN would normalise over the points of the grid)",
            "the correlation is that of the vector input gradients (uncentred, at lag 1 of the "
            "grid); the paper's Fig. 2 shows the autocorrelation of the 1-D gradient (recorded "
            "here too, as the centred autocorrelation of the directional derivative)",
        ]
        if results.get("model_args"):
            out.append(f"model overrides: {results['model_args']} (paper CIFAR nets: widths "
                       "16/32/64)")  # fmt: skip
        return out

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        seeds = results["seeds"]
        lines = [
            f"Data: {md_text(results['data'])}; one test image and one random direction per "
            f"seed (seeds {', '.join(str(s) for s in seeds)}), {results['points']} points on the "
            "line; every net freshly initialised with the seed, in eval mode. R(1): correlation "
            "of the input gradients at neighbouring points; whiteness: spectral flatness of "
            "those gradients along the line. Mean ± sd over seeds, then every seed.",
            "",
            "| net | depth | R(1) | R(1) per seed | whiteness | whiteness per seed |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            for depth in results["depths"]:
                rows = self._rows(results, kind, depth)
                r1 = [r["r1"] for r in rows]
                white = [r["whiteness"] for r in rows]
                lines.append(
                    f"| {kind} | {depth} | {_mean_sd(r1)} | {_each(r1)} | {_mean_sd(white)} | "
                    f"{_each(white)} |"
                )
        return "\n".join(lines)


def _finite(v: float) -> float:
    return v if math.isfinite(v) else math.nan


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _each(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values) or "—"


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{mean(values):.3f} ± {stdev(values):.3f}"
