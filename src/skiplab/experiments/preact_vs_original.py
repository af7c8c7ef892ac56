"""Experiment 4, preact-vs-original: the pre-activation unit trains at least as well, more so
the deeper the net.

He et al. 2016 (arXiv:1603.05027), section 4 and Fig. 6 / Table 3: ResNet-110 and ResNet-164 in
the original order (conv-BN-ReLU, ReLU after the addition) against the pre-activation order
(BN-ReLU-conv, nothing after the addition), trained with the same schedule. Both orders use the
same shortcuts (projection where shapes change), widths and depth: the nets differ only in the
unit order (``preact=True/False`` on the same config).

Margins are in training-loss units (mean over the last epoch); "at least as well" allows the
pre-activation net to be worse by at most ``TOLERANCE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import torch

from skiplab import create_model
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import save_figure, subplots
from skiplab.experiments.training import DataPlan, classification_data, train_runs
from skiplab.experiments.verdict import Verdict, make_verdict, undecidable_verdict

TOLERANCE = 0.02

STUCK = 0.9  # a final training loss above 0.9 ln(K) has barely left chance


@dataclass(frozen=True)
class PreactBudget:
    nets: tuple[tuple[str, int], ...]  # (registered pre-activation net, n units per stage)
    epochs: int
    batch_size: int
    data: DataPlan
    model_args: dict


BUDGETS = {
    "quick": PreactBudget(
        (("preact_resnet110", 18), ("preact_resnet164", 18)),
        1,
        64,
        DataPlan(2000, 500, 16),
        {"widths": (8, 16, 32), "stem_width": 8},
    ),
    "standard": PreactBudget(
        (("preact_resnet110", 18), ("preact_resnet164", 18)), 20, 128, DataPlan(), {}
    ),
    "paper": PreactBudget(
        (("preact_resnet110", 18), ("preact_resnet164", 18)), 164, 128, DataPlan(), {}
    ),
}
ORDERS = {"original": False, "preact": True}


def _depth(net: str, n: int) -> int:
    with torch.device("meta"):
        return create_model(net, layers=(n, n, n)).cfg.depth


class PreactVsOriginal(Experiment):
    name = "preact-vs-original"
    title = "Pre-activation against original residual units"
    paper = "He et al. 2016, section 4, Fig. 6 and Table 3"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        train, test = classification_data(settings, budget.data)
        keys, specs = [], []
        for seed in settings.seeds:
            for net, n in budget.nets:
                depth = _depth(net, n)
                for order, preact in ORDERS.items():
                    keys.append({"order": order, "depth": depth, "seed": seed})
                    specs.append(
                        {
                            "run_dir": settings.out_dir,
                            "name": f"{order}{depth}-{settings.budget}-seed{seed}",
                            "settings": settings,
                            "model": net,
                            "model_args": {
                                **budget.model_args,
                                "layers": (n, n, n),
                                "preact": preact,
                                "num_classes": len(train.classes),
                            },
                            "train_data": train,
                            "val_data": test,
                            "seed": seed,
                            "epochs": budget.epochs,
                            "batch_size": budget.batch_size,
                            "warmup": "auto",
                        }
                    )
        runs = [
            {
                **key,
                "curve": [
                    {k: row[k] for k in ("step", "train_loss", "val_error")}
                    for row in outcome.curves
                ],
            }
            for key, outcome in zip(keys, train_runs(settings, specs), strict=True)
        ]
        return {
            "chance_loss": math.log(len(train.classes)),
            "epochs": budget.epochs,
            "data": train.source,
            "runs": runs,
            "depths": sorted({r["depth"] for r in runs}),
        }

    @staticmethod
    def _final(results, order, depth, key) -> list[float]:
        return [
            r["curve"][-1][key]
            for r in results["runs"]
            if r["order"] == order and r["depth"] == depth
        ]

    def _mean_loss(self, results, order, depth) -> float:
        return mean(self._final(results, order, depth, "train_loss"))

    def _gaps(self, results, depth) -> list[float]:
        orig = self._final(results, "original", depth, "train_loss")
        pre = self._final(results, "preact", depth, "train_loss")
        return [o - p for o, p in zip(orig, pre, strict=True)]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        fig, axes = subplots(1, 2, figsize=(11, 4))
        for depth, color in zip(results["depths"], ("#1f77b4", "#d62728"), strict=False):
            for order, style in (("original", "--"), ("preact", "-")):
                runs = [r for r in results["runs"] if r["order"] == order and r["depth"] == depth]
                steps = [row["step"] for row in runs[0]["curve"]]
                for ax, key, scale in ((axes[0], "train_loss", 1), (axes[1], "val_error", 100)):
                    ax.plot(
                        steps,
                        [scale * mean(r["curve"][j][key] for r in runs) for j in range(len(steps))],
                        style,
                        color=color,
                        label=f"{order}-{depth}",
                    )
        axes[0].set_ylabel("training loss")
        axes[1].set_ylabel("test error (%)")
        for ax in axes:
            ax.set_xlabel("iterations")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        save_figure(fig, folder, "preact_curves")
        return [
            Figure(
                "preact_curves",
                "Original (dashed) and pre-activation (solid) units: "
                "training loss and test error, mean over seeds.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        depths = results["depths"]
        deep = max(depths)
        gaps = self._gaps(results, deep)
        claim = f"The pre-activation unit trains at least as well as the original (depth {deep})"
        paper = "Fig. 6: lower training loss for pre-activation"
        stuck_deep = self._stuck(results, deep)
        if stuck_deep:
            out = [undecidable_verdict(claim, self.name, stuck_deep, 0.01, paper)]
        else:
            out = [
                make_verdict(
                    claim,
                    self.name,
                    f"final training loss original "
                    f"{self._mean_loss(results, 'original', deep):.4f} vs pre-activation "
                    f"{self._mean_loss(results, 'preact', deep):.4f} (tolerance {TOLERANCE})",
                    [g + TOLERANCE for g in gaps],
                    0.0,
                    paper,
                )
            ]
        if len(depths) > 1:
            shallow = min(depths)
            claim = "The advantage of pre-activation grows with depth"
            paper = "Table 3: 6.61 -> 6.37 (110), 5.93 -> 5.46 (164) % error"
            why = stuck_deep or self._stuck(results, shallow)
            if why:
                out.append(undecidable_verdict(claim, self.name, why, 0.01, paper))
            else:
                shallow_gaps = self._gaps(results, shallow)
                out.append(
                    make_verdict(
                        claim,
                        self.name,
                        "loss gap (original - pre-activation) "
                        f"{mean(shallow_gaps):+.4f} at {shallow} layers, "
                        f"{mean(gaps):+.4f} at {deep}",
                        [d - s for d, s in zip(gaps, shallow_gaps, strict=True)],
                        0.01,
                        paper,
                    )
                )
        return out

    def _stuck(self, results: dict, depth: int) -> str | None:
        """Why the comparison at ``depth`` cannot be judged (no net left chance), or None."""
        limit = STUCK * results["chance_loss"]
        losses = {o: self._mean_loss(results, o, depth) for o in ORDERS}
        if min(losses.values()) <= limit:
            return None
        shown = ", ".join(f"{o} {v:.3f}" for o, v in losses.items())
        return (
            f"neither order left chance at depth {depth} (final training loss {shown}; "
            f"chance {results['chance_loss']:.3f}, trained: < {limit:.3f}), so the budget "
            "cannot tell them apart"
        )

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {results['data']}; {results['epochs']} epochs, the paper's step schedule "
            "scaled to the run; both unit orders use projection shortcuts where shapes change.",
            "",
            "| net | final training loss | final test error (%) |",
            "| --- | --- | --- |",
        ]
        for depth in results["depths"]:
            for order in ORDERS:
                loss = mean(self._final(results, order, depth, "train_loss"))
                err = 100 * mean(self._final(results, order, depth, "val_error"))
                lines.append(f"| {order}-{depth} | {loss:.4f} | {err:.2f} |")
        return "\n".join(lines)
