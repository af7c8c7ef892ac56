"""Experiment, transformer-gradients: per-layer gradient norms of Post-LN and Pre-LN at init.

Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture" (arXiv:2002.04745),
section 3 and Fig. 3: at initialisation, the gradient norm of the FFN sub-layers' second weight
matrix (W^2, here ``mlp.c_proj``) grows with the layer index in the original Post-LN
Transformer (add, then LayerNorm), largest next to the output, which is why it needs a small
learning rate and a warm-up; in the Pre-LN Transformer (LayerNorm inside the branch, a clean
identity path: the pre-activation order of He et al. 2016) it stays about the same in every
layer (their Theorem 1: the last layer's gradient is O(d sqrt(ln d)) for Post-LN and
O(d sqrt(ln d / L)) for Pre-LN).

Measured here on the registry's character language model (``gpt_d*``, the same code for both
orders, ``norm="post"`` or ``"pre"``) at several depths, every seed its own initialisation and
its own batches of text: the synthetic copy task at the quick budget, tinyshakespeare at the
others (``--data tinyshakespeare``). The gradients come from the same analysis the CNNs use,
:func:`skiplab.analysis.gradient_flow.gradient_norms` (weight gradients and the gradient at each
block's input), averaged over a few batches.

Claims (judged at every depth; a seed's margin is its worst depth): Post-LN's W^2 gradient norms
grow towards the output; Pre-LN's stay flat. Both from the least-squares line of log2 ||grad||
against the layer index, as the fitted ratio of the last layer to the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator

from skiplab.analysis.gradient_flow import gradient_norms
from skiplab.data import load_dataset
from skiplab.data.text import TextDataset, TextLoader
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.verdict import Claim, Verdict
from skiplab.models import create_model


@dataclass(frozen=True)
class GradBudget:
    depths: tuple[int, ...]  # Transformer blocks
    batches: int  # batches the gradient norms are averaged over, per net
    batch_size: int
    block_size: int  # characters per sequence
    model_args: dict  # width and heads (the gpt rows' defaults where empty)


BUDGETS = {
    # Seconds: narrow nets on the generated copy task.
    "quick": GradBudget((2, 6), 2, 8, 64, {"n_embd": 64, "n_head": 4}),
    # The gpt rows (width 128, 4 heads, context 256) on tinyshakespeare, 6/12/24 blocks;
    # 4 batches of 16 sequences per net (a few minutes on two CPU cores with three seeds).
    "standard": GradBudget((6, 12, 24), 4, 16, 256, {}),
    "paper": GradBudget((6, 12, 24), 32, 64, 256, {}),
}
NORMS = ("post", "pre")
WEIGHT = "mlp.c_proj.weight"  # Xiong et al.'s W^2 of the FFN sub-layer

POST_GROWS = Claim(
    "At initialisation, Post-LN's FFN weight gradients grow towards the output: the fitted "
    "ratio of the last block's ||grad W^2|| to the first's is at least 2 (depths {depths})",
    "Xiong et al. 2020, section 3.2 and Fig. 3",
    1.0,
    "1 = log2 of a factor 2 from the first block to the last, read off the least-squares line "
    "of log2 ||grad W^2|| against the layer index (a seed's worst depth decides it); Xiong et "
    "al.'s Fig. 3 shows Post-LN's norms rising by several times over 6 layers; fixed before "
    "any run",
    paper="Post-LN: gradient norm increases with the layer index",
)
PRE_FLAT = Claim(
    "At initialisation, Pre-LN's FFN weight gradients stay flat across layers: the fitted ratio "
    "of the last block's ||grad W^2|| to the first's lies within a factor 2 (depths {depths})",
    "Xiong et al. 2020, section 3.2 and Fig. 3",
    0.0,
    "0: the margin is 1 - |log2 fitted ratio|, positive when the ratio is within a factor 2 "
    "either way (the same factor as the Post-LN claim); a seed's worst depth decides it",
    paper="Pre-LN: gradient norm stays about the same for all layers",
)


def xavier_init_(model: torch.nn.Module) -> torch.nn.Module:
    """The initialisation Xiong et al. analyse (their section 3.2, Theorem 1; fairseq's
    Transformer): every linear weight of the blocks and the head Xavier-uniform, biases zero,
    token embeddings with unit-variance entries (fairseq draws N(0, 1/d) and multiplies by
    sqrt(d)); the learned positions stay as the model draws them. In place; returns the model."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
        torch.nn.init.normal_(model.wte.weight, std=1.0)
    return model


def text_data(settings: Settings) -> tuple[TextDataset, TextDataset]:
    """Train and validation text: tinyshakespeare with ``--data tinyshakespeare``, else the
    generated copy task (``synthetic-text``), which needs no data_dir."""
    if settings.data == "tinyshakespeare":
        name, data_dir = "tinyshakespeare", settings.data_dir
    else:
        name, data_dir = "synthetic-text", None
    return (
        load_dataset(name, "train", data_dir=data_dir),
        load_dataset(name, "val", data_dir=data_dir),
    )


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Next-character cross-entropy: logits (B, T, V), targets (B, T) -> the mean over B*T."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def fitted_log2_ratio(values: list[float]) -> float:
    """log2 of last/first read off the least-squares line of log2(values) against the index."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a slope needs at least two layers; got {n}")
    ys = [math.log2(v) for v in values]
    xm, ym = (n - 1) / 2, mean(ys)
    slope = sum((i - xm) * (y - ym) for i, y in enumerate(ys)) / sum(
        (i - xm) ** 2 for i in range(n)
    )
    return slope * (n - 1)


class TransformerGradients(Experiment):
    name = "transformer-gradients"
    title = "Gradient norms per layer at initialisation: Post-LN against Pre-LN Transformers"
    paper = "Xiong et al. 2020, section 3, Fig. 3"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        train, _ = text_data(settings)
        rows = []
        for seed in settings.seeds:
            loader = TextLoader(
                train, budget.batch_size, budget.block_size, train=True, seed=seed,
                device=settings.device,
            )  # fmt: skip
            batches = [loader.batch(0, i) for i in range(budget.batches)]
            for depth in budget.depths:
                for norm in NORMS:
                    torch.manual_seed(seed)  # the same initial weights for both orders
                    model = create_model(
                        "gpt_d6",
                        n_layer=depth,
                        norm=norm,
                        vocab_size=len(train.vocab),
                        block_size=budget.block_size,
                        **budget.model_args,
                    )
                    model = xavier_init_(model).to(settings.device)
                    model.train()
                    per_batch = []
                    for x, y in batches:
                        model.zero_grad(set_to_none=True)
                        per_batch.append(gradient_norms(model, x, y, lm_loss))
                    names = per_batch[0].weight_names
                    weight = [mean(v) for v in zip(*(g.weight for g in per_batch), strict=True)]
                    w2 = [w for n, w in zip(names, weight, strict=True) if n.endswith(WEIGHT)]
                    attn = [w for n, w in zip(names, weight, strict=True)
                            if n.endswith("attn.c_proj.weight")]  # fmt: skip
                    rows.append(
                        {
                            "norm": norm,
                            "depth": depth,
                            "seed": seed,
                            "loss": mean(g.loss for g in per_batch),
                            "ffn_w2": w2,
                            "attn_proj": attn,
                            "block_input": [
                                mean(v)
                                for v in zip(*(g.block_input for g in per_batch), strict=True)
                            ],
                        }
                    )
        return {
            "budget": settings.budget,
            "depths": list(budget.depths),
            "batches": budget.batches,
            "batch_size": budget.batch_size,
            "block_size": budget.block_size,
            "model_args": dict(budget.model_args),
            "vocab": len(train.vocab),
            "data": train.source,
            "seeds": list(settings.seeds),
            "nets": rows,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _rows(results: dict, norm: str, depth: int) -> list[dict]:
        return [r for r in results["nets"] if (r["norm"], r["depth"]) == (norm, depth)]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        depths = results["depths"]
        fig, axes = subplots(2, len(depths), figsize=(5.4 * len(depths), 8.6), squeeze=False)
        colors = {"post": "tab:red", "pre": "tab:blue"}
        for j, depth in enumerate(depths):
            for row_i, key in enumerate(("ffn_w2", "block_input")):
                ax = axes[row_i][j]
                for norm in NORMS:
                    rows = self._rows(results, norm, depth)
                    if not rows:
                        continue
                    per_layer = list(zip(*(r[key] for r in rows), strict=True))
                    idx = list(range(1, len(per_layer) + 1))
                    ax.plot(idx, [mean(v) for v in per_layer], "-o", ms=3, color=colors[norm],
                            label=f"{norm.capitalize()}-LN")  # fmt: skip
                    if len(rows) > 1:
                        ax.fill_between(idx, [min(v) for v in per_layer],
                                        [max(v) for v in per_layer], color=colors[norm],
                                        alpha=0.15, lw=0)  # fmt: skip
                ax.set_yscale("log")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlabel("block (input side -> output side)")
                if row_i == 0:
                    ax.set_title(f"{depth} blocks", fontsize=9)
                ax.grid(alpha=0.3, which="both")
                ax.legend(fontsize=7)
            axes[0][j].set_ylabel("||grad W^2|| (FFN mlp.c_proj)")
            axes[1][j].set_ylabel("||dL/dx|| at the block's input")
        fig.tight_layout()
        save_figure(fig, folder, "transformer_gradients")
        return [
            Figure(
                "transformer_gradients",
                "At initialisation: the gradient norm of each block's FFN output weight W^2 "
                "(top; Xiong et al. 2020, Fig. 3) and of the loss with respect to each block's "
                "input (bottom), Post-LN red, Pre-LN blue; mean over seeds (lines) and their "
                f"range (bands), each averaged over {results['batches']} batches.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        depths = results["depths"]
        names = "/".join(str(d) for d in depths)
        out = []
        for claim, norm, margin_of in (
            (POST_GROWS, "post", lambda r: r),
            (PRE_FLAT, "pre", lambda r: 1.0 - abs(r)),
        ):
            margins, measured = [], []
            for seed in results["seeds"]:
                ratios = []
                for depth in depths:
                    row = [r for r in self._rows(results, norm, depth) if r["seed"] == seed]
                    if row:
                        ratio = fitted_log2_ratio(row[0]["ffn_w2"])
                        ratios.append((margin_of(ratio), depth, ratio))
                if ratios:
                    worst = min(ratios)
                    margins.append(worst[0])
                    measured.append(
                        f"seed {seed}: worst at {worst[1]} blocks, last/first {2 ** worst[2]:.3g}"
                    )
            if not margins:
                out.append(claim.undecidable(self.name, "no net measured", depths=names))
                continue
            out.append(
                claim.verdict(
                    self.name,
                    f"{norm.capitalize()}-LN fitted ||grad W^2|| ratio: " + "; ".join(measured),
                    margins,
                    depths=names,
                )
            )
        return out

    def deviations(self, results: dict) -> list[str]:
        args = results["model_args"] or {"n_embd": 128, "n_head": 4}
        return [
            "task: a decoder-only character language model on "
            f"{md_text(results['data'])} (paper: encoder-decoder translation, IWSLT14 De-En "
            "and WMT14 En-De, BERT pre-training)",
            f"width {args.get('n_embd', 128)}, {args.get('n_head', 4)} heads, context "
            f"{results['block_size']} characters, {results['vocab']} tokens (paper: width 512, "
            "8 heads, 6 layers per side)",
            "initialisation: the paper's (Xavier-uniform linear weights, unit-variance token "
            "embeddings; xavier_init_), not the gpt rows' GPT-2 one (std 0.02); learned "
            "positions (paper: sinusoidal); LayerNorm at (1, 0); no dropout",
            f"each norm averaged over {results['batches']} batches of {results['batch_size']} "
            "sequences (paper: the expected norm, estimated over a batch)",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {md_text(results['data'])}. ||grad W^2|| of the first and last block and "
            "the fitted last/first ratio (mean over seeds, then every seed); the loss at "
            "initialisation.",
            "",
            "| order | blocks | first block | last block | fitted last/first | per seed | "
            "initial loss |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for norm in NORMS:
            for depth in results["depths"]:
                rows = self._rows(results, norm, depth)
                if not rows:
                    continue
                ratios = [2 ** fitted_log2_ratio(r["ffn_w2"]) for r in rows]
                lines.append(
                    f"| {norm.capitalize()}-LN | {depth} | "
                    f"{mean(r['ffn_w2'][0] for r in rows):.3g} | "
                    f"{mean(r['ffn_w2'][-1] for r in rows):.3g} | {mean(ratios):.3g} | "
                    f"{', '.join(f'{v:.3g}' for v in ratios)} | "
                    f"{mean(r['loss'] for r in rows):.3f} |"
                )
        return "\n".join(lines)
