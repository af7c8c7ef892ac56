"""Experiment, transformer-lesion: delete single blocks (attention, MLP, or both) of trained
Pre-LN and Post-LN Transformers at test time, as Veit et al. did for ResNets.

Veit, Wilber & Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (arXiv:1605.06431), section 4: deleting one residual unit of a trained ResNet barely
changes its error, because the net behaves like an ensemble of the 2^n paths through its n
units, most of them short; a plain net, which has one path, is destroyed. Whether this carries
over to the Transformer is not assumed here: it is measured. In a Pre-LN block both branches
are residual units with a clean identity path (``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``),
so a net of L blocks has 2L units and 2^(2L) paths, their lengths Binomial(2L, 1/2). In a
Post-LN block every shortcut passes through a LayerNorm (``ln(x + F(x))``): no path skips a
block untouched, and the ensemble reading does not apply as such.

The nets are transformer-residual's (the deep Pre-LN and Post-LN nets trained with warm-up,
every seed; reused from ``<run>/runs/`` or trained here with the same settings). A block's
"attention" or "MLP" lesion makes that branch output zero
(:func:`skiplab.analysis.lesion.replaced_method`); "both" keeps only the block's shortcut,
``block.skip(x)`` (:func:`skiplab.analysis.lesion.lesioned`): ``x`` for Pre-LN,
``ln_2(ln_1(x))`` for Post-LN. Damage: validation bits per character with the lesion minus
intact, on the first characters of the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import torch

from skiplab.analysis.lesion import lesioned, replaced_method
from skiplab.analysis.paths import path_length_distribution
from skiplab.data.text import TextDataset
from skiplab.experiments import transformer_residual as tr
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, plot_mean_range, save_figure, subplots
from skiplab.experiments.training import train_in_parallel
from skiplab.experiments.verdict import Claim, Guard, Verdict
from skiplab.train import evaluate

NORMS = ("pre", "post")
PARTS = ("attn", "mlp", "both")


@dataclass(frozen=True)
class LesionBudget:
    eval_chars: int  # validation characters every lesion is measured on
    batch_size: int  # windows per forward pass


BUDGETS = {
    "quick": LesionBudget(4000, 32),
    "standard": LesionBudget(20000, 64),
    "paper": LesionBudget(100000, 64),
}

PRE_ROBUST = Claim(
    "Deleting a single block of a trained Pre-LN Transformer ({deep} blocks) leaves it working: "
    "the mean damage over all blocks is less than a quarter of what the net gained over the "
    "unigram model (margin: a quarter of that gain minus the mean damage)",
    "Veit et al. 2016, section 4.2 and Fig. 3 (ResNets), tested on the Transformer",
    0.0,
    "0: the margin is already a quarter of the net's gain over the unigram model minus the "
    "mean damage, so any positive margin holds; a quarter because Veit et al.'s single "
    "deletions cost a ResNet a few percent of its gain over chance, and a loss of a quarter "
    "would no longer 'barely change' it; fixed before any run",
    paper="ResNet-110 on CIFAR-10: deleting one unit raises the test error slightly, except "
    "the downsampling units; VGG: to chance",
)
POST_FRAGILE = Claim(
    "Without a clean identity path, single-block deletions hurt more: the mean damage over "
    "blocks is larger for the trained Post-LN Transformer than for Pre-LN ({deep} blocks)",
    "Veit et al. 2016, section 4 (the identity path is what makes deletions cheap), with "
    "Xiong et al. 2020's Post-LN (every shortcut through a LayerNorm)",
    0.15,
    "0.15 bits per character (about 0.1 nats): the clear-change rule of transformer-residual; "
    "fixed before any run",
    paper="no number: the papers do not lesion Transformers",
)


def head_of(data: TextDataset, chars: int) -> TextDataset:
    """The first ``chars`` characters of ``data`` (all of it when shorter)."""
    return TextDataset(data.tokens[:chars].clone(), data.vocab, f"{data.source}, first {chars}")


def lesion_damage(
    model: torch.nn.Module, data: TextDataset, block_size: int, batch_size: int
) -> dict:
    """Bits per character of ``model`` on ``data`` intact and with each block's attention, MLP
    or both branches deleted: ``{"intact": b, "attn": [..], "mlp": [..], "both": [..]}``, one
    entry per block in forward order."""

    def bits(m) -> float:
        return evaluate(m, data, batch_size=batch_size, block_size=block_size)["bits_per_char"]

    model.eval()
    out: dict = {"intact": bits(model), **{part: [] for part in PARTS}}
    for name, block in model.iter_blocks():
        for part in ("attn", "mlp"):
            with replaced_method(getattr(block, part), "forward", torch.zeros_like):
                out[part].append(bits(model))
        with lesioned(model, name):
            out["both"].append(bits(model))
    return out


class TransformerLesion(Experiment):
    name = "transformer-lesion"
    title = "Lesion studies on trained Transformers: deleting single blocks of Pre-LN and Post-LN"
    paper = "Veit et al. 2016, section 4 (ResNets), applied to the Transformer"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget, trained = BUDGETS[settings.budget], tr.BUDGETS[settings.budget]
        deep = max(trained.depths)
        train, val = tr.text_data(settings)
        tasks = [
            (settings, norm, True, deep, seed, train, val)
            for seed in settings.seeds
            for norm in NORMS
        ]
        train_in_parallel(settings, tr.train_gpt, tasks)  # reuses transformer-residual's runs
        subset = head_of(val, budget.eval_chars)
        nets = []
        for task in tasks:
            outcome = tr.train_gpt(*task)
            _, norm, _, _, seed, _, _ = task
            final = outcome.final.get("val_bits_per_char")
            nets.append(
                {
                    "norm": norm,
                    "seed": seed,
                    "run": outcome.name,
                    "final_val_bits": final,
                    **lesion_damage(outcome.model, subset, trained.block_size, budget.batch_size),
                }
            )
        return {
            "budget": settings.budget,
            "depth": deep,
            "block_size": trained.block_size,
            "eval_chars": len(subset),
            "unigram_bits": tr.unigram_bits(train),
            "data": {"train": train.source, "val": subset.source},
            "seeds": list(settings.seeds),
            "nets": nets,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _nets(results: dict, norm: str) -> list[dict]:
        return sorted((n for n in results["nets"] if n["norm"] == norm), key=lambda n: n["seed"])

    @staticmethod
    def damage(net: dict, part: str) -> list[float]:
        return [v - net["intact"] for v in net[part]]

    @staticmethod
    def _guards(results: dict, nets: list[dict]) -> list[Guard]:
        """The nets' own guard, as transformer-residual judges them (final validation loss on
        the whole split against the unigram model)."""
        return [
            tr.text_guard(
                f"{'Pre' if n['norm'] == 'pre' else 'Post'}-LN-{results['depth']} warm-up "
                f"seed {n['seed']}",
                n["final_val_bits"],
                results["unigram_bits"],
            )
            for n in nets
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        deep = results["depth"]
        pre, post = self._nets(results, "pre"), self._nets(results, "post")
        if [n["seed"] for n in pre] != [n["seed"] for n in post]:
            raise ValueError("the Pre-LN and Post-LN nets have different seeds")
        mean_both = lambda n: mean(self.damage(n, "both"))  # noqa: E731
        robust = [0.25 * (results["unigram_bits"] - n["intact"]) - mean_both(n) for n in pre]
        fragile = [mean_both(p) - mean_both(q) for p, q in zip(post, pre, strict=True)]
        pre_text = ", ".join(f"{mean_both(n):.3f}" for n in pre)
        post_text = ", ".join(f"{mean_both(n):.3f}" for n in post)
        gain = ", ".join(f"{results['unigram_bits'] - n['intact']:.3f}" for n in pre)
        return [
            PRE_ROBUST.verdict(
                self.name,
                f"Pre-LN mean damage of deleting one block {pre_text} bits/char per seed; its "
                f"gain over the unigram model {gain}",
                robust,
                self._guards(results, pre),
                deep=deep,
            ),
            POST_FRAGILE.verdict(
                self.name,
                f"mean damage of deleting one block, Post-LN {post_text}, Pre-LN {pre_text} "
                "bits/char per seed",
                fragile,
                self._guards(results, pre + post),
                deep=deep,
            ),
        ]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        deep = results["depth"]
        fig, axes = subplots(1, 3, figsize=(16, 4.2))
        colors = {"attn": "tab:orange", "mlp": "tab:purple", "both": "black"}
        blocks = list(range(1, deep + 1))
        top = 0.0
        for ax, norm in zip(axes[:2], NORMS, strict=True):
            nets = self._nets(results, norm)
            for part in PARTS:
                per_block = list(zip(*(self.damage(n, part) for n in nets), strict=True))
                if not per_block:
                    continue
                names = {"attn": "attention deleted", "mlp": "MLP deleted",
                         "both": "whole block deleted"}  # fmt: skip
                plot_mean_range(ax, blocks, per_block, colors[part], names[part], ms=3)
                top = max(top, max(max(v) for v in per_block))
            ax.set_title(f"{'Pre' if norm == 'pre' else 'Post'}-LN, {deep} blocks", fontsize=9)
            ax.set_xlabel("block deleted")
            ax.set_ylabel("damage: bits/char lesioned minus intact")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in axes[:2]:
            ax.set_ylim(min(0.0, ax.get_ylim()[0]), max(top * 1.05, 0.05))
        units = 2 * deep
        axes[2].bar(range(units + 1), path_length_distribution(units), color="tab:blue")
        axes[2].set_xlabel(f"path length (branches taken, of {units})")
        axes[2].set_ylabel("fraction of the 2^n paths")
        axes[2].set_title(f"Pre-LN: paths through {units} residual branches", fontsize=9)
        axes[2].grid(alpha=0.3)
        fig.tight_layout()
        save_figure(fig, folder, "transformer_lesion")
        return [
            Figure(
                "transformer_lesion",
                "Damage (validation bits per character with the lesion minus intact) of deleting "
                "each block's attention, MLP or both branches, for Pre-LN (left) and Post-LN "
                "(middle), mean over seeds with their range; right: how the 2^(2L) paths "
                "through a Pre-LN net's 2L residual branches are distributed over lengths "
                "(Binomial(2L, 1/2)); Post-LN has no such paths (every shortcut through a "
                "LayerNorm).",
            )
        ]

    def deviations(self, results: dict) -> list[str]:
        return [
            "nets: transformer-residual's deep Pre-LN and Post-LN character models (with "
            f"warm-up), {results['depth']} blocks (Veit et al.: ResNet-110 and ResNet-200 on "
            "CIFAR-10 and ImageNet)",
            f"damage measured on {md_text(results['data']['val'])} ({results['eval_chars']} "
            "characters, windows of the training context), in bits per character (paper: "
            "test error)",
            "a branch is deleted by making it output zero; a whole block keeps only its "
            "shortcut (Post-LN: both LayerNorms stay)",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Validation bits per character on {md_text(results['data']['val'])}; unigram "
            f"model {results['unigram_bits']:.3f}. Per net: intact, and the mean / largest "
            "damage of deleting one block's attention, MLP or both (block of the largest in "
            "brackets).",
            "",
            "| net | seed | intact | attention: mean / max | MLP: mean / max | whole block: "
            "mean / max |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for norm in NORMS:
            for n in self._nets(results, norm):
                cells = []
                for part in PARTS:
                    d = self.damage(n, part)
                    worst = max(range(len(d)), key=d.__getitem__)
                    cells.append(f"{mean(d):.3f} / {d[worst]:.3f} (block {worst + 1})")
                lines.append(
                    f"| {'Pre' if norm == 'pre' else 'Post'}-LN-{results['depth']} | {n['seed']} "
                    f"| {n['intact']:.3f} | " + " | ".join(cells) + " |"
                )
        return "\n".join(lines)
