"""Experiment, normalisation-free: deep nets without BatchNorm, plain against a residual branch
that starts at zero.

De & Smith 2020 (SkipInit, arXiv:2002.10444), Zhang et al. 2019 (Fixup, arXiv:1901.09321) and
Bachlechner et al. 2020 (ReZero, arXiv:2003.04887): what batch normalisation does for a deep
residual net at initialisation is to shrink each residual branch against the skip path, so
that the net starts close to the identity; a learned scalar on each branch started at 0 does
the same without normalisation, and deep residual nets then train without BatchNorm. A plain
net has no skip path to start from.

Here every net is a CIFAR ResNet with ``norm="none"`` (no BatchNorm anywhere): plain
(``shortcut="none"``) against residual with ``branch_scale=0`` (h(x) + α·F(x), α learned,
started at 0), same layers, same schedule, at every depth of the budget, once per seed. The
claim compares, within a seed, the final training loss of the deepest plain net with the deepest
residual one. A run whose loss becomes non-finite is recorded as diverged, and its loss counts
as chance (ln C) in the margin: it has not trained. The shallowest net of each kind is the
control that shows the setup trains without normalisation (:func:`trained_guard`).

The mechanism is measured at initialisation, without training: the standard deviation of the
logits on a batch of training images, per kind and depth, including a residual net without the
scalar (``branch_scale=None``), whose branches add variance at every unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

import torch

from skiplab.data.dataset import channel_stats
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.training import DataPlan, classification_data, run_rows, train_runs
from skiplab.experiments.verdict import Claim, Guard, Verdict, trained_guard
from skiplab.models import create_model
from skiplab.train import NonFiniteLoss

# The trained kinds; every net has norm="none".
KINDS = {
    "plain": {"shortcut": "none"},
    "residual": {"shortcut": "A", "branch_scale": 0.0},
}
# Measured at initialisation only: the residual net without a branch scalar.
INIT_KINDS = {**KINDS, "residual-unscaled": {"shortcut": "A"}}
INIT_BATCH = 256  # training images for the logit scale at initialisation

TRAINS_DEEP = Claim(
    "Without normalisation, a residual branch that starts at zero lets a deep net train where "
    "the plain net cannot: plain-{deep} ends at a higher training loss than residual-{deep} "
    "(no BatchNorm in either)",
    "De & Smith 2020 (SkipInit), sections 1 and 4; Zhang et al. 2019 (Fixup), section 3; "
    "Bachlechner et al. 2020 (ReZero)",
    0.1,
    "0.1 nats (about 4% of ln 10): the rule for a clear change in training loss that "
    "highway-vs-residual also uses; the papers show the normalisation-free plain or "
    "unscaled nets failing outright (no number of the same setup to take)",
    paper="SkipInit/Fixup: deep residual nets without normalisation train to the accuracy of "
    "BatchNorm nets; plain deep nets without it do not",
)


@dataclass(frozen=True)
class NormFreeBudget:
    depths: tuple[int, ...]  # 6n + 2
    epochs: int
    batch_size: int
    lr: float
    data: DataPlan
    model_args: dict
    warmup_steps: int = 400  # cap of the error-driven warm-up (lr 0.01 until error < 80%)


BUDGETS = {
    # A demo of seconds: depths 8 and 20 at widths 4/8/16 on 512 synthetic images at 16x16.
    "quick": NormFreeBudget(
        (8, 20), 1, 64, 0.05, DataPlan(512, 128, 16), {"widths": (4, 8, 16), "stem_width": 4}, 4
    ),  # fmt: skip
    # 10,000 CIFAR-10 images at 16x16, depths 8 to 110 at half the paper's widths, 4 epochs of
    # batch 64 (624 steps), warm-up capped at 60 steps. Sized from a timed step: 0.30
    # CPU-seconds per step of 64 for the 110-layer net (one thread, process time), the four
    # depths together 31/18 of it, so 2 kinds x 3 seeds ~ 1,900 CPU-s plus evaluation: about
    # 18 minutes on two CPU cores (--jobs 2).
    "standard": NormFreeBudget(
        (8, 20, 56, 110),
        4,
        64,
        0.05,
        DataPlan(10000, 2000, 16),
        {"widths": (8, 16, 32), "stem_width": 8},
        60,
    ),
    # He et al.'s CIFAR schedule (64k steps of batch 128) at the paper's widths.
    "paper": NormFreeBudget((20, 56, 110), 164, 128, 0.1, DataPlan(), {}),
}
CURVE_KEYS = ("step", "lr", "train_loss", "train_error", "val_error")


def net_args(budget: NormFreeBudget, kind: str, depth: int, num_classes: int) -> dict:
    """``create_model("resnet20", **net_args(...))``: the ``kind`` net of ``depth`` layers."""
    n = (depth - 2) // 6
    return {
        **budget.model_args,
        **INIT_KINDS[kind],
        "layers": (n, n, n),
        "norm": "none",
        "num_classes": num_classes,
    }


def logit_scale(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Standard deviation of the logits of ``model`` (eval mode, no gradient) on ``x``."""
    model.eval()
    with torch.no_grad():
        return float(model(x).double().std())


class NormalisationFree(Experiment):
    name = "normalisation-free"
    title = "Without normalisation: plain nets against residual branches that start at zero"
    paper = "De & Smith 2020 (SkipInit); Zhang et al. 2019 (Fixup); Bachlechner et al. 2020"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        if any((d - 2) % 6 for d in budget.depths):
            raise ValueError(f"depths must be 6n+2; got {budget.depths}")
        train, test = classification_data(settings, budget.data)
        classes = len(train.classes)

        # 1. The mechanism at initialisation: logit scale per kind, depth and seed.
        images = train.images[:INIT_BATCH]
        mu, sd = channel_stats(train.images)
        x = (images.float() / 255 - torch.tensor(mu)[:, None, None]) / torch.tensor(sd)[
            :, None, None
        ]
        init = []
        for seed in settings.seeds:
            for kind in INIT_KINDS:
                for depth in budget.depths:
                    torch.manual_seed(seed)
                    model = create_model("resnet20", **net_args(budget, kind, depth, classes))
                    init.append(
                        {"kind": kind, "depth": depth, "seed": seed,
                         "logit_std": logit_scale(model, x)}
                    )  # fmt: skip

        # 2. Training, deepest first (they take longest).
        keys, specs = [], []
        order = sorted(((s, k, d) for s in settings.seeds for k in KINDS for d in budget.depths),
                       key=lambda t: -t[2])  # fmt: skip
        for seed, kind, depth in order:
            keys.append({"kind": kind, "depth": depth, "seed": seed})
            specs.append(
                {
                    "run_dir": settings.out_dir,
                    "name": f"nf-{kind}{depth}-{settings.budget}-seed{seed}",
                    "settings": settings,
                    "model": "resnet20",
                    "model_args": net_args(budget, kind, depth, classes),
                    "train_data": train,
                    "val_data": test,
                    "seed": seed,
                    "epochs": budget.epochs,
                    "batch_size": budget.batch_size,
                    "lr": budget.lr,
                    "warmup": "error",
                    "warmup_steps": budget.warmup_steps,
                }
            )
        outcomes = train_runs(settings, specs, tolerate=(NonFiniteLoss,))
        runs = run_rows(keys, outcomes, CURVE_KEYS)
        runs.sort(key=lambda r: (r["seed"], list(KINDS).index(r["kind"]), r["depth"]))
        return {
            "budget": settings.budget,
            "depths": list(budget.depths),
            "num_classes": classes,
            "chance_loss": math.log(classes),
            "epochs": budget.epochs,
            "batch_size": budget.batch_size,
            "lr": budget.lr,
            "warmup_steps": budget.warmup_steps,
            "data": {"train": train.source, "test": test.source},
            "model_args": {
                k: list(v) if isinstance(v, tuple) else v for k, v in budget.model_args.items()
            },
            "init_batch": int(images.shape[0]),
            "init": init,
            "runs": runs,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _runs(results: dict, kind: str, depth: int) -> list[dict]:
        runs = [r for r in results["runs"] if r["kind"] == kind and r["depth"] == depth]
        return sorted(runs, key=lambda r: r["seed"])

    @staticmethod
    def train_loss(results: dict, run: dict) -> float:
        """Final training loss; a diverged run counts as chance, ln C."""
        return results["chance_loss"] if run["diverged"] else run["curve"][-1]["train_loss"]

    @staticmethod
    def _guard(results: dict, run: dict) -> Guard:
        net = f"{run['kind']}-{run['depth']} seed {run['seed']}"
        if run["diverged"]:
            return Guard(net, False, f"diverged: {run['diverged']}")
        return trained_guard(net, run["curve"][-1]["train_loss"], results["chance_loss"])

    def _losses(self, results: dict, kind: str, depth: int) -> list[float]:
        return [self.train_loss(results, r) for r in self._runs(results, kind, depth)]

    def _init(self, results: dict, kind: str, depth: int) -> list[float]:
        rows = [r for r in results["init"] if r["kind"] == kind and r["depth"] == depth]
        return [r["logit_std"] for r in sorted(rows, key=lambda r: r["seed"])]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        depths = results["depths"]
        colors = {"plain": "tab:red", "residual": "tab:blue", "residual-unscaled": "tab:gray"}
        fig, axes = subplots(1, 3, figsize=(15, 4))
        for kind in KINDS:
            for d in depths:
                losses = self._losses(results, kind, d)
                axes[0].scatter([d] * len(losses), losses, color=colors[kind], alpha=0.5, s=14)
            axes[0].plot(depths, [mean(self._losses(results, kind, d)) for d in depths], "-o",
                         color=colors[kind], label=f"{kind} (mean)")  # fmt: skip
        axes[0].axhline(results["chance_loss"], color="grey", ls=":", label="chance")
        axes[0].set_xlabel("depth (layers)")
        axes[0].set_ylabel("final training loss (axis cut at 1.5 x chance)")
        deep = max(depths)
        for kind in KINDS:
            runs = [r for r in self._runs(results, kind, deep) if not r["diverged"]]
            if not runs:
                continue
            steps = [row["step"] for row in runs[0]["curve"]]
            per_step = [[r["curve"][i]["train_loss"] for r in runs] for i in range(len(steps))]
            axes[1].plot(steps, [mean(v) for v in per_step], "-o", ms=3, color=colors[kind],
                         label=f"{kind}-{deep}")  # fmt: skip
            if len(runs) > 1:
                axes[1].fill_between(steps, [min(v) for v in per_step],
                                     [max(v) for v in per_step], color=colors[kind], alpha=0.15,
                                     lw=0)  # fmt: skip
        axes[1].axhline(results["chance_loss"], color="grey", ls=":")
        axes[1].set_xlabel("iterations")
        axes[1].set_ylabel("training loss (axis cut at 1.5 x chance)")
        # A net that blows up without a non-finite loss (1e12) would flatten every other point.
        for ax in axes[:2]:
            ax.set_ylim(0, 1.5 * results["chance_loss"])
        for kind in INIT_KINDS:
            values = [self._init(results, kind, d) for d in depths]
            for d, v in zip(depths, values, strict=True):
                axes[2].scatter([d] * len(v), v, color=colors[kind], alpha=0.5, s=14)
            axes[2].plot(depths, [mean(v) for v in values], "-o", color=colors[kind], label=kind)
        axes[2].set_yscale("log")
        axes[2].set_xlabel("depth (layers)")
        axes[2].set_ylabel("std of the logits at initialisation")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        save_figure(fig, folder, "normalisation_free")
        return [
            Figure(
                "normalisation_free",
                "Left: final training loss against depth without normalisation, each dot one "
                "seed (a diverged run at chance), lines the means. Middle: training loss of the "
                "deepest nets, mean over the seeds that did not diverge, range shaded. Right: "
                "standard deviation of the logits at initialisation (log scale), including the "
                "residual net without a branch scalar.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        depths = results["depths"]
        deep, shallow = max(depths), min(depths)
        plain, res = self._runs(results, "plain", deep), self._runs(results, "residual", deep)
        if [r["seed"] for r in plain] != [r["seed"] for r in res]:
            raise ValueError(f"plain-{deep} and residual-{deep} have different seeds")
        guards = [self._guard(results, r) for kind in KINDS
                  for r in self._runs(results, kind, shallow)]  # fmt: skip
        margins = [self.train_loss(results, p) - self.train_loss(results, r)
                   for p, r in zip(plain, res, strict=True)]  # fmt: skip
        measured = (
            f"final training loss plain-{deep} {_fmt(self._losses(results, 'plain', deep))}, "
            f"residual-{deep} {_fmt(self._losses(results, 'residual', deep))}"
        )
        lost = [f"{r['kind']}-{r['depth']} seed {r['seed']}" for r in plain + res if r["diverged"]]
        if lost:
            measured += f"; diverged (counted at chance, ln C): {', '.join(lost)}"
        return [TRAINS_DEEP.verdict(self.name, measured, margins, guards, deep=deep)]

    def deviations(self, results: dict) -> list[str]:
        warm = ", ".join(
            f"{r['kind']}-{r['depth']} (seed {r['seed']}) "
            + ("diverged" if r["diverged"] else
               "never warmed up" if r.get("warmup_ended_at") is None else
               f"{r['warmup_ended_at']}")
            for r in results["runs"]
        )  # fmt: skip
        done = [r for r in results["runs"] if r["curve"]]
        steps = done[0]["curve"][-1]["step"] if done else None
        return [
            "nets: He et al.'s CIFAR ResNets (original units, option A shortcuts) with every "
            "BatchNorm removed and no added biases (SkipInit: Wide-ResNets; Fixup: ResNet-110 "
            "with scalar biases and a multiplier; ReZero: mostly Transformers)",
            f"depths {', '.join(str(d) for d in results['depths'])}",
            f"data: {md_text(results['data']['train'])} (papers: all 50,000 CIFAR-10 training "
            "images at 32x32)",
            f"schedule: {results['epochs']} epochs of batch {results['batch_size']}"
            + (f" ({steps} steps)" if steps else "")
            + f", lr {results['lr']} divided by 10 at 50% and 75% of the run, the same for "
            "both kinds and every depth",
            "warm-up: every net starts at lr 0.01 until its running training error is below "
            f"80%, capped at {results['warmup_steps']} steps; the step at which it ended, per "
            f"run: {md_text(warm)}",
            f"model overrides: {md_text(results['model_args'] or 'none')} (paper widths 16/32/64)",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        depths = results["depths"]
        lines = [
            f"Data: {md_text(results['data']['train'])} (train), "
            f"{md_text(results['data']['test'])} (test); no BatchNorm in any net. Final "
            "training loss (mean over the last epoch), mean ± standard deviation over seeds, "
            "every seed listed; a diverged run counts at chance "
            f"({results['chance_loss']:.3f}); a net trained when its loss is below "
            f"{0.9 * results['chance_loss']:.3f}. The logit scale is the standard deviation of "
            f"the logits at initialisation on {results['init_batch']} training images.",
            "",
            "| net | depth | final training loss | per seed | final test error (%) | "
            "diverged | trained | logit std at init |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            for d in depths:
                runs = self._runs(results, kind, d)
                losses = self._losses(results, kind, d)
                tests = [100 * r["curve"][-1]["val_error"] for r in runs if not r["diverged"]]
                ok = sum(self._guard(results, r).passed for r in runs)
                lost = sum(bool(r["diverged"]) for r in runs)
                lines.append(
                    f"| {kind} | {d} | {_fmt(losses)} | "
                    + ", ".join(f"{v:.3f}" for v in losses)
                    + f" | {_fmt(tests, 2) if tests else '—'} | {lost} of {len(runs)} | "
                    f"{ok} of {len(runs)} | {_fmt(self._init(results, kind, d), 3, 'g')} |"
                )
        lines += [
            "",
            "Logit scale at initialisation of the residual net without a branch scalar "
            "(measured, not trained): "
            + ", ".join(
                f"depth {d} {_fmt(self._init(results, 'residual-unscaled', d), 3, 'g')}"
                for d in depths
            )
            + ".",
        ]
        return "\n".join(lines)


def _fmt(values: list[float], digits: int = 3, kind: str = "f") -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}{kind}}"
    return f"{mean(values):.{digits}{kind}} ± {stdev(values):.{digits}{kind}}"
