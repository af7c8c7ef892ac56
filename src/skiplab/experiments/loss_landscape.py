"""Experiment, loss-landscape: the training loss around trained plain and residual nets.

Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets"
(arXiv:1712.09913), section 5 and Fig. 5: with filter-normalised random directions, the loss
surface of ResNet-56 around its minimum looks convex while that of the same net without skip
connections (plain-56) is chaotic, with many non-convex regions; section 6 and Fig. 7 measure
the non-convexity by the ratio |lambda_min / lambda_max| of the Hessian's extreme eigenvalues
(near 0: locally convex; large: strong negative curvature).

The nets are the degradation experiment's trained nets of the deepest depth of the same budget
(every seed, the same run folders). For each net, in eval mode (BN with its running
statistics), on a fixed subset of training images without augmentation:
:func:`skiplab.analysis.landscape.loss_surface` on the plane theta + alpha d1 + beta d2 spanned
by two filter-normalised directions
(:func:`~skiplab.analysis.landscape.filter_normalized_direction`, BN parameters and biases
held fixed, Li et al.'s ``--xignore biasbn``), and
:func:`~skiplab.analysis.landscape.hessian_extreme_eigenvalues` (Lanczos) at theta.

Claim: the plain net's landscape is markedly less convex around its minimum than the ResNet's:
its |lambda_min / lambda_max| is at least twice the ResNet's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import torch
import torch.nn.functional as F

from skiplab.analysis.landscape import (
    filter_normalized_direction,
    hessian_extreme_eigenvalues,
    loss_surface,
)
from skiplab.experiments import degradation
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.degradation import label as _name
from skiplab.experiments.report import md_text, mean_sd, save_figure, subplots
from skiplab.experiments.training import classification_data, train_in_parallel
from skiplab.experiments.verdict import Claim, Verdict, trained_guard


@dataclass(frozen=True)
class LandscapeBudget:
    points: int  # grid points per axis on [-span, span]
    images: int  # training images the loss is averaged over
    lanczos_iters: int  # Hessian-vector products for the extreme eigenvalues
    span: float = 1.0
    batch: int = 500  # images per forward pass (memory only)


# The nets, data and schedule are the degradation experiment's of the same budget.
BUDGETS = {
    "quick": LandscapeBudget(7, 128, 10),
    # 11 x 11 points on 500 images and 20 Hessian-vector products: sized from the quick row's
    # measured time to about 3 minutes per 56-layer net on one CPU core (6 nets: ~18 min).
    "standard": LandscapeBudget(11, 500, 20),
    # Li et al.: 51 x 51 points on [-1, 1], the whole training set.
    "paper": LandscapeBudget(51, 50000, 50),
}
KINDS = ("plain", "residual")
DIRECTION_SEEDS = (1001, 1002)  # offset by the net's seed

LESS_CONVEX = Claim(
    "The plain net's loss landscape is markedly less convex than the ResNet's around their "
    "minima: |lambda_min / lambda_max| of the Hessian of plain-{deep} is at least twice that "
    "of ResNet-{deep}",
    "Li et al. 2018, sections 5-6, Figs. 5 and 7",
    1.0,
    "1 = log2 of a factor 2: 'markedly' read as at least twice the ResNet's ratio (Li et al.'s "
    "maps differ by far more: near 0 for ResNet-56, large over much of plain-56's plane); the "
    "margin of a seed is log2(ratio(plain) / ratio(ResNet)); fixed before these runs",
    paper="ResNet-56: convex-looking, ratio near 0; plain-56: chaotic, large ratios",
)


class LossLandscape(Experiment):
    name = "loss-landscape"
    title = "Loss landscapes of trained plain and residual nets"
    paper = "Li et al. 2018, sections 4-6, Figs. 5 and 7"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        deg = degradation.BUDGETS[settings.budget]
        train, test = classification_data(settings, deg.data)
        deep = max(deg.depths)
        tasks = {
            (kind, seed): (settings, deg, kind, deep, seed, train, test)
            for seed in settings.seeds
            for kind in KINDS
        }
        train_in_parallel(settings, degradation.train_net, list(tasks.values()))
        device = settings.device
        x, y = degradation.training_subset(train, budget.images, device)
        n = x.shape[0]
        batches = [(x[i : i + budget.batch], y[i : i + budget.batch])
                   for i in range(0, n, budget.batch)]  # fmt: skip
        grid = torch.linspace(-budget.span, budget.span, budget.points)
        rows = []
        for seed in settings.seeds:
            for kind in KINDS:
                outcome = degradation.train_net(*tasks[(kind, seed)])
                model = outcome.model.to(device).eval()
                directions = [
                    filter_normalized_direction(model, seed=s + seed) for s in DIRECTION_SEEDS
                ]
                surface = loss_surface(model, F.cross_entropy, batches, directions, (grid, grid))
                eig = hessian_extreme_eigenvalues(
                    model, F.cross_entropy, batches, iters=budget.lanczos_iters, seed=seed
                )
                rows.append(
                    {
                        "kind": kind,
                        "seed": seed,
                        "run": outcome.name,
                        "train_loss": outcome.final["train_loss"],
                        "steps": outcome.final["step"],
                        "losses": surface.losses.tolist(),
                        "center_loss": float(
                            surface.losses[budget.points // 2, budget.points // 2]
                        ),  # fmt: skip
                        "lambda_max": eig.max,
                        "lambda_min": eig.min,
                        "ratio": eig.ratio,
                        "hvp": eig.iterations,
                    }
                )
        return {
            "budget": settings.budget,
            "deep": deep,
            "epochs": deg.epochs,
            "batch_size": deg.batch_size,
            "steps": rows[0]["steps"],
            "images": n,
            "grid": grid.tolist(),
            "lanczos_iters": budget.lanczos_iters,
            "model_args": {
                k: list(v) if isinstance(v, tuple) else v for k, v in deg.model_args.items()
            },
            "data": train.source,
            "num_classes": len(train.classes),
            "seeds": list(settings.seeds),
            "nets": rows,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _rows(results: dict, kind: str) -> list[dict]:
        return [r for r in results["nets"] if r["kind"] == kind]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        grid = results["grid"]
        seed = results["seeds"][0]
        pair = [next((r for r in self._rows(results, k) if r["seed"] == seed), None) for k in KINDS]
        pair = [r for r in pair if r is not None]
        fig, axes = subplots(1, len(pair) + 1, figsize=(5.2 * (len(pair) + 1), 4.4))
        # Li et al.'s contours: the same levels for both nets, from the lower of the two minima.
        lo = min(min(map(min, r["losses"])) for r in pair)
        hi = lo + 5.0
        levels = [lo + (hi - lo) * i / 20 for i in range(21)]
        for ax, row in zip(axes, pair, strict=False):
            z = torch.tensor(row["losses"]).clamp(max=hi).T  # rows: beta, columns: alpha
            cs = ax.contour(grid, grid, z.numpy(), levels=levels, cmap="viridis", linewidths=0.9)
            ax.clabel(cs, cs.levels[::4], fontsize=6, fmt="%.2f")
            ax.plot(0, 0, "k+", markersize=8)
            ax.set_title(
                f"{_name(row['kind'], results['deep'])} seed {seed}: "
                f"|λmin/λmax| = {row['ratio']:.3f}",
                fontsize=9,
            )
            ax.set_xlabel("α (direction 1)")
            ax.set_ylabel("β (direction 2)")
            ax.set_aspect("equal")
        ax = axes[-1]
        for i, (kind, color) in enumerate((("plain", "#c05621"), ("residual", "#2b6cb0"))):
            ratios = [r["ratio"] for r in self._rows(results, kind)]
            if ratios:
                ax.bar(i, mean(ratios), color=color, alpha=0.8, width=0.6)
                ax.scatter([i] * len(ratios), ratios, color="black", s=14, zorder=3)
        ax.set_xticks(range(2), [_name(k, results["deep"]) for k in KINDS])
        ax.set_ylabel("|λmin / λmax| at the trained weights")
        ax.set_title("bars: mean over seeds; dots: each seed", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        save_figure(fig, folder, "loss_landscape")
        return [
            Figure(
                "loss_landscape",
                "Training loss on the plane through the trained weights spanned by two "
                "filter-normalised random directions (Li et al. 2018, Fig. 5 style; the same "
                f"contour levels for both nets, clipped 5 nats above the lower minimum; seed "
                f"{seed}), and the Hessian's |λmin/λmax| at the trained weights, every seed.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        deep = results["deep"]
        chance = math.log(results.get("num_classes", 10))
        guards, margins, measured = [], [], []
        for seed in results["seeds"]:
            pair = [
                next((r for r in self._rows(results, k) if r["seed"] == seed), None) for k in KINDS
            ]
            if None in pair:
                continue
            own = [
                trained_guard(f"{_name(r['kind'], deep)} seed {seed}", r["train_loss"], chance)
                for r in pair
            ]
            guards += own
            plain, res = pair
            margins.append(math.log2(max(plain["ratio"], 1e-6) / max(res["ratio"], 1e-6)))
            measured.append(
                f"seed {seed}: plain {plain['ratio']:.3g} (λmin {plain['lambda_min']:.3g}, λmax "
                f"{plain['lambda_max']:.3g}), ResNet {res['ratio']:.3g} (λmin "
                f"{res['lambda_min']:.3g}, λmax {res['lambda_max']:.3g})"
            )
        if not margins:
            return [LESS_CONVEX.undecidable(self.name, "no seed has both nets", guards, deep=deep)]
        return [
            LESS_CONVEX.verdict(
                self.name, "|λmin/λmax|: " + "; ".join(measured), margins, guards, deep=deep
            )
        ]

    def deviations(self, results: dict) -> list[str]:
        g = results["grid"]
        return [
            f"nets: the degradation experiment's trained plain-{results['deep']} and "
            f"ResNet-{results['deep']} of this budget ({results['steps']} steps of batch "
            f"{results['batch_size']}, its error-driven warm-up; not at a minimum) (paper: "
            "ResNet-56 and plain-56 trained for 300 epochs)",
            f"loss on {results['images']} training images in eval mode, {len(g)} x {len(g)} "
            f"points on [{g[0]:g}, {g[-1]:g}]^2 (paper: the whole training set, 51 x 51)",
            f"the eigenvalue ratio at the trained weights only, {results['lanczos_iters']} "
            "Lanczos steps (paper: a map of the ratio over the plane, implicitly restarted "
            "Lanczos)",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {results['images']} training images of {md_text(results['data'])}; the "
            "degradation experiment's trained nets. Mean ± sd over seeds, then every seed.",
            "",
            "| net | loss at θ | λmax | λmin | abs(λmin/λmax) | per seed | final training loss |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            rows = self._rows(results, kind)
            if not rows:
                continue
            each = ", ".join(f"{r['ratio']:.3g}" for r in rows)
            center, top, bottom, ratio, loss = (
                mean_sd([r[key] for r in rows])
                for key in ("center_loss", "lambda_max", "lambda_min", "ratio", "train_loss")
            )
            lines.append(
                f"| {_name(kind, results['deep'])} | {center} | {top} | {bottom} | {ratio} | "
                f"{each} | {loss} |"
            )
        return "\n".join(lines)
