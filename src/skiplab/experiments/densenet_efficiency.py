"""Experiment 9, densenet-efficiency: error against parameters, DenseNet-BC against ResNets.

Huang et al. 2017 (arXiv:1608.06993), section 4.3, Fig. 4 and Table 2: DenseNet-BC with
k = 12 and 100 layers (0.8M parameters) reaches a lower CIFAR-10 error than the 110-layer
ResNet (1.7M), i.e. dense connectivity uses parameters more efficiently. The three nets train
with the same schedule, batch and number of epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import torch

from skiplab import create_model
from skiplab.complexity import count_parameters
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import save_figure, subplots
from skiplab.experiments.training import DataPlan, classification_data, train_runs
from skiplab.experiments.verdict import Verdict, make_verdict


@dataclass(frozen=True)
class DenseBudget:
    nets: tuple[tuple[str, dict], ...]
    epochs: int
    batch_size: int
    data: DataPlan


_PAPER_NETS = (("densenet_bc100_k12", {}), ("resnet56", {}), ("resnet110", {}))
BUDGETS = {
    # Narrower nets (growth rate 6, ResNet widths 8/16/32) on 16x16 images: minutes on a CPU.
    "quick": DenseBudget(
        (
            ("densenet_bc100_k12", {"growth_rate": 6, "num_init_features": 12}),
            ("resnet56", {"widths": (8, 16, 32), "stem_width": 8}),
            ("resnet110", {"widths": (8, 16, 32), "stem_width": 8}),
        ),
        3,
        64,
        DataPlan(2000, 500, 16),
    ),
    "standard": DenseBudget(_PAPER_NETS, 20, 64, DataPlan()),
    "paper": DenseBudget(_PAPER_NETS, 300, 64, DataPlan()),
}


class DenseNetEfficiency(Experiment):
    name = "densenet-efficiency"
    title = "DenseNet-BC against ResNets: error against parameters"
    paper = "Huang et al. 2017, section 4.3, Fig. 4 and Table 2"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        train, test = classification_data(settings, budget.data)
        keys, specs = [], []
        for seed in settings.seeds:
            for net, overrides in budget.nets:
                args = {**overrides, "num_classes": len(train.classes)}
                with torch.device("meta"):
                    params = count_parameters(create_model(net, **args))
                keys.append({"net": net, "seed": seed, "params": params})
                specs.append(
                    {
                        "run_dir": settings.out_dir,
                        "name": f"{net}-efficiency-{settings.budget}-seed{seed}",
                        "settings": settings,
                        "model": net,
                        "model_args": args,
                        "train_data": train,
                        "val_data": test,
                        "seed": seed,
                        "epochs": budget.epochs,
                        "batch_size": budget.batch_size,
                        "warmup": "auto",  # the paper's error-driven warm-up for ResNet-110
                    }
                )
        runs = [
            {
                **key,
                "test_error": outcome.final["val_error"],
                "train_error": outcome.final["train_error"],
            }
            for key, outcome in zip(keys, train_runs(settings, specs), strict=True)
        ]
        return {
            "data": train.source,
            "epochs": budget.epochs,
            "runs": runs,
            "nets": [n for n, _ in budget.nets],
        }

    def _errors(self, results, net) -> list[float]:
        return [100 * r["test_error"] for r in results["runs"] if r["net"] == net]

    def _params(self, results, net) -> int:
        return next(r["params"] for r in results["runs"] if r["net"] == net)

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        fig, ax = subplots(figsize=(5.5, 4))
        for net in results["nets"]:
            ax.scatter(self._params(results, net) / 1e6, mean(self._errors(results, net)))
            ax.annotate(
                net,
                (self._params(results, net) / 1e6, mean(self._errors(results, net))),
                fontsize=8,
            )
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        save_figure(fig, folder, "error_vs_params")
        return [Figure("error_vs_params", "Test error against parameters at equal budget.")]

    def verdicts(self, results: dict) -> list[Verdict]:
        dense, res = "densenet_bc100_k12", "resnet110"
        d, r = self._errors(results, dense), self._errors(results, res)
        pd, pr = self._params(results, dense), self._params(results, res)
        return [
            make_verdict(
                "DenseNet-BC-100 has fewer parameters than ResNet-110",
                self.name,
                f"{pd / 1e6:.3f}M vs {pr / 1e6:.3f}M parameters",
                [(pr - pd) / 1e6],
                0.05,
                "Table 2: 0.8M vs 1.7M",
            ),
            make_verdict(
                "... and reaches a lower test error at the same budget",
                self.name,
                f"{dense} {mean(d):.2f}% vs {res} {mean(r):.2f}% test error",
                [b - a for a, b in zip(d, r, strict=True)],
                0.5,
                "Table 2: 4.51% vs 6.41% (C10+)",
            ),
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {results['data']}; {results['epochs']} epochs for every net.",
            "",
            "| net | parameters | test error (%) |",
            "| --- | --- | --- |",
        ]
        for net in results["nets"]:
            lines.append(
                f"| {net} | {self._params(results, net):,} | "
                f"{mean(self._errors(results, net)):.2f} |"
            )
        return "\n".join(lines)
