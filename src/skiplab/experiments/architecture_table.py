"""Experiment 6, architecture-table: parameters and MACs of the landmark ImageNet nets.

AlexNet, VGG-19 and GoogLeNet come from torchvision's definitions; ResNet-18..152 from
skiplab. Every count is measured (``FlopCounterMode`` on the meta device, 224x224 input); the
top-5 errors are *cited* numbers from the papers, marked as such, never measured here.

Claims (all exact: counts of a fixed architecture, no seeds):
    - ResNet-152 has fewer parameters than VGG-19 (He et al. 2015, section 1: "8x deeper than
      VGG nets but still having lower complexity"); the section also reports the share of
      VGG-19's parameters in its fully connected layers.
    - ResNet-152 needs fewer FLOPs (multiply-adds) than VGG-19 (He et al. 2015, section 4.1 and
      Table 1: 11.3 against 19.6 billion FLOPs).
    - The 256-d bottleneck unit (1x1 64, 3x3 64, 1x1 256) has about the same time complexity as
      the 64-d basic unit (two 3x3 64) (He et al. 2015, section 4.1 and Fig. 5: "similar time
      complexity"), within the factor ``SIMILAR_FACTOR``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skiplab.complexity import count_macs, count_parameters, model_row
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.verdict import Claim, Verdict
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
BASIC64, BASIC256, BOTTLENECK = "basic, 64-d", "basic, 256-d", "bottleneck, 256-d (64-d 3x3)"

# "About the same" time complexity: the two units' multiply-adds within this factor either way.
SIMILAR_FACTOR = 1.2

FEWER_PARAMS = Claim(
    "ResNet-152 has fewer parameters than VGG-19",
    'He et al. 2015, section 1 ("8x deeper than VGG nets but still having lower complexity")',
    0.0,
    "an exact count (no noise): any positive difference, in millions of parameters, is fewer",
    paper="lower complexity than VGG nets (section 1)",
    exact=True,
)
FEWER_FLOPS = Claim(
    "ResNet-152 needs fewer FLOPs (multiply-adds) than VGG-19 at 224x224",
    "He et al. 2015, section 4.1 and Table 1",
    0.0,
    "an exact count (no noise): any positive difference, in billions of multiply-adds, is fewer",
    paper="11.3 vs 19.6 billion FLOPs (multiply-adds)",
    exact=True,
)
BOTTLENECK_SIMILAR = Claim(
    "The 256-d bottleneck unit (1x1 64, 3x3 64, 1x1 256) has about the same time complexity "
    "(multiply-adds) as the 64-d basic unit (two 3x3 64)",
    'He et al. 2015, section 4.1 (Deeper Bottleneck Architectures: "both designs have similar '
    'time complexity") and Fig. 5',
    0.0,
    f"the margin is ln {SIMILAR_FACTOR} - |ln(bottleneck MACs / basic MACs)|, so 0 is the edge "
    f"of the tolerance: a factor {SIMILAR_FACTOR} either way. The paper's own swap of every "
    "basic unit of ResNet-34 (3.6 GFLOPs) for a bottleneck unit gives ResNet-50 at 3.8 GFLOPs "
    "(section 4.1, Table 1), 6% apart; a factor 1.2 admits differences of that order and "
    "rejects a unit of another cost class, such as the 256-d basic unit ((256/64)^2 = 16 "
    "times the 64-d one)",
    paper="similar time complexity (Fig. 5); ResNet-34 3.6 vs ResNet-50 3.8 GFLOPs (Table 1)",
    exact=True,
)


def _torchvision_row(name: str) -> dict:
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
    fc = sum(count_parameters(m) for m in model.modules() if isinstance(m, nn.Linear))
    return {
        "name": name,
        "source": "torchvision",
        "params": count_parameters(model),
        "fc_params": fc,
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
    """He et al. 2015 Fig. 5 at 56x56: the 64-d basic unit against the bottleneck unit with
    256-d input and output (the pair the paper compares), and a 256-d basic unit for scale."""
    with torch.device("meta"):
        basic64 = BasicBlock(64, 64)
        basic256 = BasicBlock(256, 256)
        bottleneck = Bottleneck(256, 64)
    rows = {}
    for name, unit, ch in (
        (BASIC64, basic64, 64),
        (BASIC256, basic256, 256),
        (BOTTLENECK, bottleneck, 256),
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
        vgg, r152 = by["vgg19"], by["resnet152"]
        units = results["units"]
        basic, bott = units[BASIC64]["macs"], units[BOTTLENECK]["macs"]
        log_ratio = math.log(bott / basic)
        return [
            FEWER_PARAMS.verdict(
                self.name,
                f"ResNet-152 {r152['params'] / 1e6:.1f}M vs VGG-19 {vgg['params'] / 1e6:.1f}M "
                f"parameters (VGG-19 has {_fc_share(vgg)})",
                [(vgg["params"] - r152["params"]) / 1e6],
            ),
            FEWER_FLOPS.verdict(
                self.name,
                f"ResNet-152 {r152['macs'] / 1e9:.2f} vs VGG-19 {vgg['macs'] / 1e9:.2f} billion "
                f"multiply-adds ({r152['macs'] / vgg['macs']:.2f} of VGG-19; paper: "
                f"{11.3 / 19.6:.2f})",
                [(vgg["macs"] - r152["macs"]) / 1e9],
            ),
            BOTTLENECK_SIMILAR.verdict(
                self.name,
                f"multiply-adds per unit at 56x56: bottleneck {bott / 1e6:.0f}M vs 64-d basic "
                f"{basic / 1e6:.0f}M (ratio {bott / basic:.3f}; tolerance a factor "
                f"{SIMILAR_FACTOR})",
                [math.log(SIMILAR_FACTOR) - abs(log_ratio)],
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
                f"| {md_text(name)} | {u['params']:,} | {u['macs'] / 1e6:.0f} M | "
                f"{u['macs_3x3'] / 1e6:.0f} M |"
            )
        vgg = next(r for r in results["models"] if r["name"] == "vgg19")
        lines += [
            "",
            "The paper compares the 256-d bottleneck unit with the 64-d basic unit (similar "
            "cost); the 256-d basic unit is shown only for scale. VGG-19 has "
            f"{_fc_share(vgg)}, while its multiply-adds are almost all in the convolutions. "
            "MACs count the multiply-adds of convolutions and linear layers (normalisation, "
            "activations and additions left out); the paper's FLOPs are multiply-adds as well.",
        ]
        return "\n".join(lines)


def _fc_share(row: dict) -> str:
    """How many of a torchvision row's parameters lie in its fully connected layers, in words."""
    fc = row["fc_params"]
    share = 100 * fc / row["params"]
    return f"{fc / 1e6:.1f}M of its parameters ({share:.1f}%) in its fully connected layers"
