"""Experiment 5, highway-vs-residual: gated and identity skips both keep deep MLPs trainable.

Srivastava, Greff & Schmidhuber 2015 (arXiv:1507.06228), Fig. 1: with the same number of
parameters, plain networks of 50 and 100 layers stop training while highway networks of any
depth train; Fig. 2: the mean transform gate per layer after training; Fig. 4: lesioning a
layer (closing its gate). He et al. 2015 argue the ungated identity of a residual unit is
enough. Here ``plain_mlp``, ``residual_mlp`` and ``highway_mlp`` of equal depth and width (the
paper's 50) train on flattened images for the same number of steps.

A run whose loss becomes non-finite is recorded as diverged (loss = inf), not dropped. The
claims use the training loss over the last epoch; "stops training" means its loss at the
deepest net stays above ``STUCK`` times chance-level loss (ln of the class count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from skiplab.analysis.lesion import lesion_single_blocks
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import save_figure, subplots
from skiplab.experiments.training import DataPlan, classification_data, train_runs
from skiplab.experiments.verdict import Verdict, make_verdict
from skiplab.train import NonFiniteLoss, evaluate

STUCK = 0.9  # loss above 0.9 ln(K): the net has barely left chance
KINDS = {"plain": "plain_mlp", "residual": "residual_mlp", "highway": "highway_mlp"}


def kind_args(kind: str, depth: int) -> dict:
    """How each kind starts, so that its skip path carries the signal at any depth.

    Without normalisation a deep net's forward signal is whatever its skips let through:

    - highway: the carry (1 - T) multiplies the signal at every layer, so a gate bias b_T
      leaves about (1 - sigmoid(b_T))^depth of it after ``depth`` layers (the default -2 keeps
      0.88^100 = 3e-6 at depth 100, and the net starts at chance). Srivastava et al. (section
      2.2) choose b_T negative, "e.g. -1, -3", more negative for deeper nets; here
      b_T = -ln(depth - 1), so that T = 1/depth and about 1/e of the signal crosses the net
      (-2.2 at depth 10, -4.6 at depth 100);
    - residual: He init alone grows the activations about 3x per layer (1e11 at depth 50), so
      each branch is scaled by a learned scalar that starts at 0 (SkipInit, De & Smith 2020);
    - plain: He init, as the paper's plain nets.
    """
    if kind == "highway":
        return {"gate_bias": -math.log(max(depth - 1, 1))}
    if kind == "residual":
        return {"branch_scale": 0.0}
    return {}


@dataclass(frozen=True)
class HighwayBudget:
    depths: tuple[int, ...]
    width: int
    epochs: int
    batch_size: int
    lr: float
    data: DataPlan


BUDGETS = {
    # lr 0.01 for every kind and depth: at 0.05 the 20- and 50-layer highway and the 50- and
    # 100-layer residual MLPs diverged within 200 steps (quick budget, measured).
    "quick": HighwayBudget((10, 20, 50, 100), 50, 12, 64, 0.01, DataPlan(2000, 500, 16)),
    "standard": HighwayBudget((10, 20, 50, 100), 50, 20, 128, 0.01, DataPlan()),
    "paper": HighwayBudget((10, 20, 50, 100), 50, 100, 128, 0.01, DataPlan()),
}


class HighwayVsResidual(Experiment):
    name = "highway-vs-residual"
    title = "Highway, residual and plain MLPs of growing depth"
    paper = "Srivastava et al. 2015, Figs. 1, 2 and 4; He et al. 2015, section 3"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        train, test = classification_data(settings, budget.data)
        input_size = tuple(train.images.shape[1:])
        keys, specs = [], []
        for seed in settings.seeds:
            for kind, model in KINDS.items():
                for depth in budget.depths:
                    keys.append({"kind": kind, "depth": depth, "seed": seed})
                    specs.append(
                        {
                            "run_dir": settings.out_dir,
                            "name": f"{model}{depth}-{settings.budget}-seed{seed}",
                            "settings": settings,
                            "model": model,
                            "model_args": {
                                "depth": depth,
                                "width": budget.width,
                                "input_size": input_size,
                                "num_classes": len(train.classes),
                                **kind_args(kind, depth),
                            },
                            "train_data": train,
                            "val_data": test,
                            "seed": seed,
                            "epochs": budget.epochs,
                            "batch_size": budget.batch_size,
                            "lr": budget.lr,
                            "warmup": "none",
                            "augment": False,
                        }
                    )
        outcomes = train_runs(settings, specs, tolerate=(NonFiniteLoss,))
        runs = []
        for row, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, NonFiniteLoss):
                row.update(diverged=str(outcome), train_loss=math.inf, curve=[])
                runs.append(row)
                continue
            row.update(
                diverged=None,
                train_loss=outcome.final["train_loss"],
                curve=[{k: r[k] for k in ("step", "train_loss")} for r in outcome.curves],
            )
            if row["kind"] == "highway" and row["seed"] == 0:
                row.update(self._gates_and_lesions(outcome.model, test, settings))
            runs.append(row)
        return {
            "chance_loss": math.log(len(train.classes)),
            "data": train.source,
            "depths": list(budget.depths),
            "epochs": budget.epochs,
            "runs": runs,
        }

    @staticmethod
    def _gates_and_lesions(model, test, settings) -> dict:
        model.eval()

        def error(m) -> float:
            return evaluate(m, test, batch_size=256, device=settings.device, amp=settings.amp)[
                "error"
            ]

        intact = error(model)  # also leaves each gate's mean T over the last test batch
        gates = [float(layer.gate.last_mean) for _, layer in model.iter_blocks()]
        lesions = lesion_single_blocks(model, error)
        return {
            "gate_means": gates,
            "intact_error": intact,
            "lesion_errors": [e for _, e in lesions.errors],
        }

    def _loss(self, results, kind, depth) -> list[float]:
        return [
            r["train_loss"] for r in results["runs"] if r["kind"] == kind and r["depth"] == depth
        ]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        fig, axes = subplots(1, 3, figsize=(15, 3.8))
        depths = results["depths"]
        for kind in KINDS:
            vals = [
                sum(self._loss(results, kind, d)) / len(self._loss(results, kind, d))
                for d in depths
            ]
            axes[0].plot(
                depths, [v if math.isfinite(v) else float("nan") for v in vals], "o-", label=kind
            )
        axes[0].axhline(results["chance_loss"], color="grey", linestyle=":", label="chance")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("depth (layers)")
        axes[0].set_ylabel("training loss after the budget")
        axes[0].legend(fontsize=8)
        for r in results["runs"]:
            if "gate_means" in r:
                axes[1].plot(r["gate_means"], label=f"depth {r['depth']}")
                axes[2].plot([100 * e for e in r["lesion_errors"]], label=f"depth {r['depth']}")
        axes[1].set_xlabel("layer")
        axes[1].set_ylabel("mean transform gate T")
        axes[2].set_xlabel("lesioned layer (gate closed)")
        axes[2].set_ylabel("test error (%)")
        for ax in axes:
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        save_figure(fig, folder, "highway_depth")
        return [
            Figure(
                "highway_depth",
                "Left: training loss against depth. Middle: mean "
                "transform gate per layer of the trained highway nets. Right: test error "
                "with one highway layer lesioned.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        deep, shallow = max(results["depths"]), min(results["depths"])
        stuck = STUCK * results["chance_loss"]

        def fmt(v: float) -> str:
            return f"{v:.3f}" if math.isfinite(v) else "diverged"

        plain = self._loss(results, "plain", deep)
        out = [
            make_verdict(
                f"Plain MLPs stop training as depth grows (depth {deep})",
                self.name,
                f"plain-{deep} loss {', '.join(map(fmt, plain))}; stuck: > {stuck:.3f}",
                [min(p, 10.0) - stuck for p in plain],
                0.01,
                "Fig. 1: plain 50/100 do not train",
            )
        ]
        for kind in ("highway", "residual"):
            losses = self._loss(results, kind, deep)
            out.append(
                make_verdict(
                    f"{kind.capitalize()} MLPs keep training at depth {deep}",
                    self.name,
                    f"{kind}-{deep} loss {', '.join(map(fmt, losses))} (plain-{shallow}: "
                    f"{fmt(self._loss(results, 'plain', shallow)[0])}); stuck: > {stuck:.3f}",
                    [stuck - min(v, 10.0) for v in losses],
                    0.01,
                    "Fig. 1: highway nets of 10-100 layers train",
                )
            )
        res, hw = self._loss(results, "residual", deep), self._loss(results, "highway", deep)
        out.append(
            make_verdict(
                "The simpler residual MLP trains at least as well as the gated one",
                self.name,
                f"depth {deep}: residual {', '.join(map(fmt, res))} vs highway "
                f"{', '.join(map(fmt, hw))} (tolerance 0.05)",
                [min(h, 10.0) - min(r, 10.0) + 0.05 for h, r in zip(hw, res, strict=True)],
                0.0,
                "He et al. 2015: identity shortcuts need no gate",
            )
        )
        return out

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {results['data']} (flattened); {results['epochs']} epochs; chance-level loss "
            f"{results['chance_loss']:.3f}.",
            "",
            "| depth | " + " | ".join(KINDS) + " |",
            "| --- |" + " --- |" * len(KINDS),
        ]
        for d in results["depths"]:
            cells = []
            for kind in KINDS:
                vals = self._loss(results, kind, d)
                v = sum(vals) / len(vals)
                cells.append(f"{v:.3f}" if math.isfinite(v) else "diverged")
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
        return "\n".join(lines)
