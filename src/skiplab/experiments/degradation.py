"""Experiment 1, degradation: deeper plain nets train worse; deeper residual nets do not.

He et al. 2015 (arXiv:1512.03385), section 4.2, Fig. 1 and Fig. 6: on CIFAR-10 the 56-layer
plain net has a *higher training error* than the 20-layer one (so the problem is optimisation,
not overfitting), while ResNet-56 has a lower training error than ResNet-20. The plain nets
are the residual nets with ``shortcut="none"``: the same layers and parameters.

Training error is the running error over the last epoch (on augmented batches, as the paper's
curves); test error is measured on the test split at each epoch end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

import matplotlib
import torch

from skiplab.data import ArrayDataset, DeviceLoader
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.training import (
    DataPlan,
    RunOutcome,
    classification_data,
    train_in_parallel,
    train_run,
)
from skiplab.experiments.verdict import Claim, Guard, Verdict, trained_guard
from skiplab.fileio import atomic_write_csv


@dataclass(frozen=True)
class DegradationBudget:
    depths: tuple[int, ...]
    epochs: int  # whole epochs, so that the last training-error row covers a full epoch
    batch_size: int
    lr: float
    data: DataPlan
    model_args: dict
    warmup_steps: int = 400  # cap of the error-driven warm-up (lr 0.01 until error < 80%)


# Each row follows the rule of docs/results/calibration.md (every control net leaves chance; it
# fits its time) and is logged there with every row tried. quick: the paper's widths and 6n+2
# layout at depths 8 and 26 on 16x16 synthetic images, 10 epochs of 5000 images, so that the
# whole demo fits 10 minutes in fp32 on two cores.
BUDGETS = {
    "quick": DegradationBudget((8, 26), 10, 128, 0.1, DataPlan(5000, 500, 16), {}, 40),
    # CIFAR-10: every training image, the paper's widths and depths, area-downsampled to 16x16
    # so that the 24 runs (8 nets, 3 seeds) fit about 90 minutes on two CPU cores; 3 epochs
    # (1170 steps) and a warm-up capped at 100 steps, under a tenth of the run.
    "standard": DegradationBudget((20, 32, 44, 56), 3, 128, 0.1, DataPlan(None, 2000, 16), {}, 100),
    # 164 epochs of 390 batches: the paper's 64k iterations.
    "paper": DegradationBudget((20, 32, 44, 56, 110), 164, 128, 0.1, DataPlan(), {}),
}
KINDS = {"plain": "plain", "residual": "resnet"}
# The training images that experiments measure the trained nets on (identity-construction,
# loss-landscape): a fixed random subset, the same for every net.
SUBSET_SEED = 7
CURVE_KEYS = ("step", "lr", "train_loss", "train_error", "val_error")

# The claims, judged over the whole depth sweep: the margin of one seed is the least-squares
# slope of the final training error (points) against depth, per 10 layers.
_WHY_MIN = (
    "0.25 points per 10 layers, 0.9 points between 20 and 56 layers: smaller than the gaps "
    "between the paper's curves in Fig. 6, fixed from the paper before these runs"
)
PLAIN_DEGRADES = Claim(
    "Plain nets train worse as they deepen: training error rises with depth (plain-{depths})",
    "He et al. 2015, section 4.2 and Fig. 6 (left)",
    0.25,
    _WHY_MIN,
    paper="plain-56 above plain-20 in training error",
)
RESIDUAL_IMPROVES = Claim(
    "Residual nets do not degrade: training error falls with depth (ResNet-{depths})",
    "He et al. 2015, section 4.2 and Fig. 6 (middle)",
    0.25,
    _WHY_MIN,
    paper="ResNet-56 below ResNet-20 in training error",
)


def _name(kind: str, depth: int) -> str:
    return f"{KINDS[kind]}{depth}"


def label(kind: str, depth: int) -> str:
    """How reports name a degradation net: "ResNet-56" or "plain-56"."""
    return f"{'ResNet' if kind == 'residual' else 'plain'}-{depth}"


def net_args(budget: DegradationBudget, kind: str, depth: int, num_classes: int) -> dict:
    """``create_model("resnet20", **net_args(...))`` is the ``kind`` net of ``depth`` layers
    that :func:`train_net` trains (n = (depth - 2) / 6 units per stage)."""
    n = (depth - 2) // 6
    return {
        **budget.model_args,
        "layers": (n, n, n),
        "shortcut": "A" if kind == "residual" else "none",
        "num_classes": num_classes,
    }


def train_net(
    settings: Settings,
    budget: DegradationBudget,
    kind: str,
    depth: int,
    seed: int,
    train: ArrayDataset,
    test: ArrayDataset,
    tag: str = "",
) -> RunOutcome:
    """Train (or reuse) the ``kind`` net of ``depth`` layers of this budget.

    Runs live in ``<run>/runs/`` so that other experiments (ensemble-of-paths) reuse them.
    resnet20 with n units per stage and the chosen shortcut is the registered resnet{6n+2} /
    plain{6n+2}, at any depth. ``tag`` names a run whose budget differs from this experiment's
    own (``resnet56-lesion-quick-seed0``), so that the two never share a folder.
    """
    return train_run(
        settings.out_dir,
        f"{_name(kind, depth)}{f'-{tag}' if tag else ''}-{settings.budget}-seed{seed}",
        settings,
        model="resnet20",
        model_args=net_args(budget, kind, depth, len(train.classes)),
        train_data=train,
        val_data=test,
        seed=seed,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        lr=budget.lr,
        # The paper warms up only ResNet-110 (lr 0.01 until the training error is below 80%).
        # Every net here gets that warm-up: the comparison treats all depths alike, and at
        # lr 0.1 without it a ResNet-56 can diverge in its first steps (seen at batch 64).
        warmup="error",
        warmup_steps=budget.warmup_steps,
    )


def training_subset(
    train: ArrayDataset, size: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``min(size, len(train))`` training images and their labels, on ``device``, to measure
    the trained nets on: a fixed random subset (seeded by :data:`SUBSET_SEED`, the same for
    every net and experiment), normalised, without augmentation."""
    loader = DeviceLoader(
        train, min(size, len(train)), train=True, augment=False, seed=SUBSET_SEED, device=device
    )
    return loader.batch(0, 0)


class Degradation(Experiment):
    name = "degradation"
    title = "The degradation problem: plain against residual nets of growing depth"
    paper = "He et al. 2015, section 4.2, Figs. 1 and 6"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        if any((d - 2) % 6 for d in budget.depths):
            raise ValueError(f"depths must be 6n+2; got {budget.depths}")
        train, test = classification_data(settings, budget.data)
        deepest_first = sorted(
            ((s, k, d) for s in settings.seeds for k in KINDS for d in budget.depths),
            key=lambda t: -t[2],
        )
        train_in_parallel(
            settings,
            train_net,
            [(settings, budget, k, d, s, train, test) for s, k, d in deepest_first],
        )
        runs = []
        for seed in settings.seeds:
            for kind in KINDS:
                for depth in budget.depths:
                    model = _name(kind, depth)
                    outcome = train_net(settings, budget, kind, depth, seed, train, test)
                    runs.append(
                        {
                            "kind": kind,
                            "depth": depth,
                            "seed": seed,
                            "model": model,
                            "curve": [
                                {
                                    k: row[k]
                                    for k in (
                                        "step",
                                        "lr",
                                        "train_loss",
                                        "train_error",
                                        "val_error",
                                    )
                                }
                                for row in outcome.curves
                            ],
                            "warmup_ended_at": outcome.warmup_ended_at,
                        }
                    )
        atomic_write_csv(
            folder / "curves.csv",
            ("kind", "depth", "seed", "step", "train_error", "test_error"),
            (
                [
                    r["kind"],
                    r["depth"],
                    r["seed"],
                    row["step"],
                    row["train_error"],
                    row["val_error"],
                ]
                for r in runs
                for row in r["curve"]
            ),
        )
        return {
            "budget": settings.budget,
            "depths": list(budget.depths),
            "epochs": budget.epochs,
            "batch_size": budget.batch_size,
            "model_args": {
                k: list(v) if isinstance(v, tuple) else v for k, v in budget.model_args.items()
            },
            "data": {"train": train.source, "test": test.source},
            "num_classes": len(train.classes),
            "steps": runs[0]["curve"][-1]["step"],
            "warmup_steps": budget.warmup_steps,
            "runs": runs,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _final(results: dict, kind: str, depth: int, key: str) -> list[float]:
        return [
            100 * r["curve"][-1][key]
            for r in results["runs"]
            if r["kind"] == kind and r["depth"] == depth
        ]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        fig, axes = subplots(1, 2, figsize=(11, 4), sharey=True)
        colors = matplotlib.colormaps["viridis"]
        depths = results["depths"]
        for ax, kind in zip(axes, KINDS, strict=True):
            for i, depth in enumerate(depths):
                color = colors(i / max(len(depths) - 1, 1))
                runs = [r for r in results["runs"] if r["kind"] == kind and r["depth"] == depth]
                steps = [row["step"] for row in runs[0]["curve"]]
                for key, style in (("train_error", "--"), ("val_error", "-")):
                    per_step = [[100 * r["curve"][j][key] for r in runs] for j in range(len(steps))]
                    label = f"{_name(kind, depth)}" if key == "val_error" else None
                    ax.plot(steps, [mean(v) for v in per_step], style, color=color, label=label)
                    if len(runs) > 1:  # the spread over seeds: lowest to highest
                        lows, highs = [min(v) for v in per_step], [max(v) for v in per_step]
                        ax.fill_between(steps, lows, highs, color=color, alpha=0.15, linewidth=0)
            ax.set_title(f"{kind} nets")
            ax.set_xlabel("iterations")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("error (%)")
        save_figure(fig, folder, "degradation_curves")

        # The claims' own measure: final training error against depth, every seed a point.
        fig, ax = subplots(1, 1, figsize=(5.5, 4))
        for kind, color in zip(KINDS, ("tab:red", "tab:blue"), strict=True):
            finals = [self._final(results, kind, d, "train_error") for d in depths]
            for d, values in zip(depths, finals, strict=True):
                ax.scatter([d] * len(values), values, color=color, alpha=0.5, s=16)
            ax.plot(depths, [mean(v) for v in finals], "-o", color=color, label=f"{kind} (mean)")
        ax.set_xlabel("depth (layers)")
        ax.set_ylabel("final training error (%)")
        ax.set_xticks(depths)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save_figure(fig, folder, "degradation_trend")
        return [
            Figure(
                "degradation_trend",
                "Final training error against depth: each point one seed, lines the means. "
                "The claims are judged on the slope of these points.",
            ),
            Figure(
                "degradation_curves",
                "Training error (dashed) and test error (solid), mean over seeds with the range "
                "of the seeds shaded; the paper's Fig. 6 style.",
            ),
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        depths = results["depths"]
        chance = math.log(results.get("num_classes", 10))
        out = []
        for kind, claim, sign in (
            ("plain", PLAIN_DEGRADES, 1),
            ("residual", RESIDUAL_IMPROVES, -1),
        ):
            seeds = sorted({r["seed"] for r in results["runs"] if r["kind"] == kind})
            by_seed = {
                seed: [self._final_of(results, kind, d, seed, "train_error") for d in depths]
                for seed in seeds
            }
            margins = [sign * slope_per(depths, errs, 10) for errs in by_seed.values()]
            # The shallowest net of the kind is the control that shows the setup trains; what
            # the deeper nets do is the measurement (a deep plain net at chance is the
            # degradation itself, a deep residual net at chance counts against its claim).
            guards = [
                _guard(r, chance)
                for r in results["runs"]
                if r["kind"] == kind and r["depth"] == min(depths)
            ]
            measured = "final training error " + ", ".join(
                f"{_name(kind, d)} {_fmt(self._final(results, kind, d, 'train_error'))}"
                for d in depths
            )
            measured += f"; slope {_fmt([sign * m for m in margins], '')} points per 10 layers"
            names = "/".join(str(d) for d in depths)
            out.append(claim.verdict(self.name, measured, margins, guards, depths=names))
        return out

    @staticmethod
    def _final_of(results: dict, kind: str, depth: int, seed: int, key: str) -> float:
        (run,) = [
            r for r in results["runs"] if (r["kind"], r["depth"], r["seed"]) == (kind, depth, seed)
        ]
        return 100 * run["curve"][-1][key]

    def deviations(self, results: dict) -> list[str]:
        warm = ", ".join(
            f"{r['model']} (seed {r['seed']}) "
            + ("never warmed up" if r.get("warmup_ended_at") is None else f"{r['warmup_ended_at']}")
            for r in results["runs"]
        )
        steps = results.get("steps")
        return [
            f"depths {', '.join(str(d) for d in results['depths'])} "
            "(paper: 20, 32, 44, 56 and 110)",
            f"data: {md_text(results['data']['train'])} (paper: all 50,000 CIFAR-10 training "
            "images at 32x32)",
            f"schedule: {results['epochs']} epochs of batch {results['batch_size']}"
            + (f" ({steps} steps)" if steps else "")
            + ", lr 0.1 divided by 10 at 50% and 75% of the run (paper: 64k steps, at 32k and "
            "48k)",
            "warm-up: every net starts at lr 0.01 until its running training error is below 80%, "
            f"capped at {results.get('warmup_steps', 400)} steps (paper: only the 110-layer net); "
            f"the step at which it ended, per net: {warm}",
            f"model overrides: {results['model_args'] or 'none'} (paper: widths 16/32/64)",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {md_text(results['data']['train'])} (train), "
            f"{md_text(results['data']['test'])} (test). Training error is the running error "
            "over the last epoch (augmented batches, as the paper's curves); mean ± standard "
            "deviation over seeds, every seed in the figure.",
            "",
            "| net | depth | final training error (%) | final test error (%) |",
            "| --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            for depth in results["depths"]:
                lines.append(
                    f"| {_name(kind, depth)} | {depth} | "
                    f"{_fmt(self._final(results, kind, depth, 'train_error'))} | "
                    f"{_fmt(self._final(results, kind, depth, 'val_error'))} |"
                )
        return "\n".join(lines)


def _guard(run: dict, chance: float) -> Guard:
    """The run's net trained: final training loss below 0.9 ln C (a run without a recorded
    loss, from before the guards, fails)."""
    net = f"{run['model']} seed {run['seed']}"
    last = run["curve"][-1]
    if "train_loss" not in last:
        return Guard(net, False, "no training loss recorded")
    return trained_guard(net, last["train_loss"], chance)


def slope_per(xs: list[float], ys: list[float], per: float = 1.0) -> float:
    """Least-squares slope of ``ys`` against ``xs``, per ``per`` units of x."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"a slope needs two or more (x, y) pairs; got {len(xs)} and {len(ys)}")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError(f"a slope needs two distinct x values; got {xs}")
    return per * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def _fmt(values: list[float], unit: str = "%") -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}{unit}"
    return f"{mean(values):.2f} ± {stdev(values):.2f}{unit}"
