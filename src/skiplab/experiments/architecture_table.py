"""Experiment 6, architecture-table: parameters and MACs of the landmark ImageNet nets.

AlexNet, VGG-19 and GoogLeNet come from torchvision's definitions; ResNet-18..152 from
skiplab. Every count is measured (``FlopCounterMode`` on the meta device, 224x224 input); the
top-5 errors are *cited* numbers from the papers, marked as such, never measured here.

Claims:
    - ResNet-152 has fewer parameters than VGG-19 (He et al. 2015, section 1: "8x deeper than
      VGG nets but still having lower complexity").
    - The bottleneck makes the 3x3 convolution cheaper (He et al. 2015, section 4.1, Fig. 5):
      in a unit with 256-d input and output, the bottleneck's 3x3 works on 64 channels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skiplab.complexity import count_macs, count_parameters, model_row
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import save_figure, subplots
from skiplab.experiments.verdict import Verdict, make_verdict
from skiplab.fileio import atomic_write_csv
from skiplab.models.resnet_blocks import BasicBlock, Bottleneck

# Cited ImageNet top-5 errors (%), with their source. Not measured by skiplab.
CITED_TOP5 = {
    "alexnet": (16.4, "Krizhevsky et al. 2012: ILSVRC-2012 test, average of 5 CNNs"),
    "vgg19": (8.43, "He et al. 2015 Table 4: VGG (ILSVRC'14), single model, val"),
    "googlenet": (7.89, "He et al. 2015 Table 4: GoogLeNet (ILSVRC'14), single model, val"),
    "resnet34": (5.71, "He et al. 2015 Table 4: ResNet-34 B, single model, val"),
    "resnet50": (5.25, "He et al. 2015 Table 4: single model, val"),
    "resnet101": (4.60, "He et al. 2015 Table 4: single model, val"),
    "resnet152": (4.49, "He et al. 2015 Table 4: single model, val"),
}
TORCHVISION_NETS = ("alexnet", "vgg19", "googlenet")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
SIZE = (3, 224, 224)


def _torchvision_row(name: str) -> dict:
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
    return {
        "name": name,
        "source": "torchvision",
        "params": count_parameters(model),
        "macs": count_macs(model, SIZE),
    }


def _conv3x3_macs(unit: nn.Module, x_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs of the unit's 3x3 convolutions, MACs of the whole unit) for one input."""
    with torch.device("meta"):
        x = torch.zeros(x_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unit.eval()(x)
    per_module = counter.get_flop_counts()
    root = type(unit).__name__
    three = sum(
        sum(per_module.get(f"{root}.{n}", {}).values())
        for n, m in unit.named_modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
    )
    return three // 2, counter.get_total_flops() // 2


def unit_costs() -> dict:
    """He et al. 2015 Fig. 5 at 56x56: basic units (64-d, and 256-d for equal width) against
    the bottleneck unit with 256-d input and output."""
    with torch.device("meta"):
        basic64 = BasicBlock(64, 64)
        basic256 = BasicBlock(256, 256)
        bottleneck = Bottleneck(256, 64)
    rows = {}
    for name, unit, ch in (
        ("basic, 64-d", basic64, 64),
        ("basic, 256-d", basic256, 256),
        ("bottleneck, 256-d (64-d 3x3)", bottleneck, 256),
    ):
        three, total = _conv3x3_macs(unit, (1, ch, 56, 56))
        rows[name] = {"params": count_parameters(unit), "macs": total, "macs_3x3": three}
    return rows


class ArchitectureTable(Experiment):
    name = "architecture-table"
    title = "Parameters and cost of the landmark ImageNet networks"
    paper = "He et al. 2015, section 1, section 4.1 and Table 1"

    def run(self, settings: Settings, folder: Path) -> dict:
        rows = [_torchvision_row(n) for n in TORCHVISION_NETS]
        for n in RESNETS:
            r = model_row(n)
            rows.append({"name": n, "source": "skiplab", "params": r.params, "macs": r.macs})
        for r in rows:
            cited = CITED_TOP5.get(r["name"])
            r["cited_top5"] = None if cited is None else cited[0]
            r["cited_source"] = None if cited is None else cited[1]
        columns = ("name", "source", "params", "macs", "cited_top5")
        atomic_write_csv(folder / "table.csv", columns, ([r[c] for c in columns] for r in rows))
        return {"input_size": list(SIZE), "models": rows, "units": unit_costs()}

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        rows = results["models"]
        fig, axes = subplots(1, 2, figsize=(11, 3.8))
        names = [r["name"] for r in rows]
        colors = ["#888888" if r["source"] == "torchvision" else "#1f77b4" for r in rows]
        axes[0].bar(names, [r["params"] / 1e6 for r in rows], color=colors)
        axes[0].set_ylabel("parameters (M)")
        axes[1].bar(names, [r["macs"] / 1e9 for r in rows], color=colors)
        axes[1].set_ylabel("MACs at 224x224 (G)")
        for ax in axes:
            ax.tick_params(axis="x", rotation=45)
            ax.grid(axis="y", alpha=0.3)
        save_figure(fig, folder, "params_macs")
        cited = [r for r in rows if r["cited_top5"] is not None]
        fig, ax = subplots(figsize=(5.5, 4))
        for r in cited:
            ax.scatter(r["macs"] / 1e9, r["cited_top5"], s=20 + r["params"] / 1e6 * 3)
            ax.annotate(r["name"], (r["macs"] / 1e9, r["cited_top5"]), fontsize=8)
        ax.set_xlabel("MACs at 224x224 (G, measured)")
        ax.set_ylabel("top-5 error (%, cited)")
        ax.grid(alpha=0.3)
        save_figure(fig, folder, "cost_vs_cited_error")
        return [
            Figure("params_macs", "Parameters and MACs (grey: torchvision, blue: skiplab)."),
            Figure(
                "cost_vs_cited_error",
                "Measured MACs against cited top-5 error; marker area grows with parameters.",
            ),
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        by = {r["name"]: r for r in results["models"]}
        vgg, r152 = by["vgg19"]["params"], by["resnet152"]["params"]
        units = results["units"]
        basic = units["basic, 256-d"]["macs_3x3"]
        bott = units["bottleneck, 256-d (64-d 3x3)"]["macs_3x3"]
        return [
            make_verdict(
                "ResNet-152 has fewer parameters than VGG-19",
                self.name,
                f"ResNet-152 {r152 / 1e6:.1f}M vs VGG-19 {vgg / 1e6:.1f}M parameters",
                [(vgg - r152) / 1e6],
                min_effect=1.0,
                paper="lower complexity than VGG (section 1); 11.3 vs 19.6 GFLOPs (Table 1, "
                "section 4.1)",
            ),
            make_verdict(
                "The bottleneck makes the 3x3 convolution cheaper",
                self.name,
                f"3x3 MACs per 256-d unit at 56x56: basic {basic / 1e6:.0f}M vs bottleneck "
                f"{bott / 1e6:.0f}M ({basic / bott:.1f}x)",
                [basic / bott - 1.0],
                min_effect=0.5,
                paper="Fig. 5: the 3x3 layer works on reduced (64-d) dimensions",
            ),
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            "| model | definition | parameters | MACs (the paper's FLOPs) | top-5 error (cited) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in results["models"]:
            cited = "—" if r["cited_top5"] is None else f"{r['cited_top5']}% ({r['cited_source']})"
            lines.append(
                f"| {r['name']} | {r['source']} | {r['params']:,} | {r['macs'] / 1e9:.2f} G "
                f"| {cited} |"
            )
        lines += [
            "",
            "Cost of one unit at 56x56 (He et al. 2015, Fig. 5):",
            "",
            "| unit | parameters | MACs | MACs in 3x3 convolutions |",
            "| --- | --- | --- | --- |",
        ]
        for name, u in results["units"].items():
            lines.append(
                f"| {name} | {u['params']:,} | {u['macs'] / 1e6:.0f} M | "
                f"{u['macs_3x3'] / 1e6:.0f} M |"
            )
        return "\n".join(lines)
