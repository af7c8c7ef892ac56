"""Experiment, transformer-residual: Post-LN, Pre-LN, ReZero and no-residual Transformers,
trained with and without a learning-rate warm-up, at a shallow and a deep depth.

Sources of the claims:

- Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"
  (arXiv:2002.04745), section 3 and Figs. 2-3: the original Post-LN Transformer (add, then
  LayerNorm) needs the learning-rate warm-up (without it, at the same lr, it trains to a much
  worse loss); the Pre-LN Transformer (LayerNorm inside the branch, a clean identity path) trains
  without warm-up.
- Liu et al. 2020, "Understanding the Difficulty of Training Transformers" (arXiv:2004.08249),
  section 3: Post-LN becomes harder to train as it deepens (their 18-layer Post-LN nets fail
  where 6-layer ones train), Pre-LN does not.
- Bachlechner et al. 2020, "ReZero is All You Need" (arXiv:2003.04887), section 5: ReZero (no
  LayerNorm, ``x + α·F(x)`` with α started at 0) converges faster than Pre-LN (56% fewer
  iterations to 1.2 bits per character on enwik8 for 12 layers).
- The chapter: residual connections were "baked in" to the Transformer; without them a deep
  Transformer does not train.

Every net is the registry's character language model (``gpt_d*``, one code path; the variants
are rows of :data:`VARIANTS`), trained by :class:`skiplab.train.Trainer` with AdamW and a
cosine schedule, with the linear warm-up over the first tenth of the run or none. Results are
in bits per character on the validation split. The runs live in ``<run>/runs/`` and
transformer-lesion reuses the trained Pre-LN and Post-LN nets (:func:`train_gpt`).

Guards: a net trained when its final validation loss is below 0.9 times the entropy of the
training text's character frequencies (a unigram model, which uses no context at all); the
nets a claim rests on must pass, except those whose failure the claim predicts.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from skiplab.data.text import TextDataset
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, mean_sd, plot_mean_range, save_figure, subplots
from skiplab.experiments.training import RunOutcome, run_rows, train_run, train_runs
from skiplab.experiments.transformer_gradients import text_data
from skiplab.experiments.verdict import Claim, Guard, Verdict
from skiplab.train import NonFiniteLoss

# The variants: rows of model options on the same registered net.
VARIANTS: dict[str, dict] = {
    "post": {"norm": "post"},  # Vaswani et al. 2017: x = LN(x + F(x))
    "pre": {"norm": "pre"},  # Xiong et al. 2020: x = x + F(LN(x))
    "rezero": {"norm": "none", "rezero": True},  # Bachlechner et al. 2020: x = x + a F(x)
    "plain": {"norm": "pre", "residual": False},  # no residual: x = F(LN(x))
}
LABELS = {"post": "Post-LN", "pre": "Pre-LN", "rezero": "ReZero", "plain": "no residual"}
# (variant, warm-up) pairs trained at every depth: the warm-up ablation for the two LayerNorm
# orders, ReZero and the plain control with the warm-up (the setting the controls get).
PLAN: tuple[tuple[str, bool], ...] = (
    ("post", True),
    ("post", False),
    ("pre", True),
    ("pre", False),
    ("rezero", True),
    ("plain", True),
)
WARMUP_FRACTION = 0.1  # the linear warm-up's length, a tenth of the run (fixed before any run)
GUARD_FRACTION = 0.9  # of the unigram entropy
CURVE_KEYS = ("step", "lr", "train_loss", "val_loss", "val_bits_per_char")


@dataclass(frozen=True)
class ResidualBudget:
    depths: tuple[int, int]  # (shallow, deep) Transformer blocks
    steps: int
    batch_size: int  # sequences per step
    block_size: int  # characters per sequence
    lr: float  # AdamW's peak lr
    model_args: dict  # width and heads (the gpt rows' defaults where empty)


BUDGETS = {
    # Seconds: narrow nets on the generated copy task.
    "quick": ResidualBudget((2, 4), 60, 16, 32, 1e-3, {"n_embd": 32, "n_head": 2}),
    # tinyshakespeare at width 64, 4 heads, 128 characters of context, 3 and 12 blocks; 400
    # steps of 32 sequences (1.6M characters, about 1.6 passes over the training split). Sized
    # from a timed step (one thread: 0.65 s at 12 blocks, 0.16 s at 3): about 50 minutes for
    # the 36 runs on two CPU cores (docs/results/calibration.md).
    "standard": ResidualBudget((3, 12), 400, 32, 128, 1e-3, {"n_embd": 64, "n_head": 4}),
    # The gpt rows (width 128, 4 heads, context 256) at 6 and 24 blocks, 5,000 steps of 64
    # sequences: for a GPU lease.
    "paper": ResidualBudget((6, 24), 5000, 64, 256, 1e-3, {}),
}
BETAS = (0.9, 0.99)  # nanoGPT's shakespeare_char
WEIGHT_DECAY = 0.1
MIN_LR_FRACTION = 0.1  # the cosine ends at lr / 10 (nanoGPT)

_BITS = 0.15
_WHY_BITS = (
    "0.15 bits per character (about 0.1 nats): the clear change in loss that highway-vs-"
    "residual and normalisation-free also use; fixed before any run"
)
NO_RESIDUAL = Claim(
    "Without residual connections a deep Transformer does not train: at {deep} blocks the "
    "no-residual net ends at a higher validation loss than Pre-LN (both with warm-up)",
    "the chapter (residual connections baked into the Transformer); Vaswani et al. 2017, "
    "section 3.1",
    _BITS,
    _WHY_BITS,
    paper="no number: the Transformer was never published without them",
)
POST_NEEDS_WARMUP = Claim(
    "Post-LN needs the warm-up: at {deep} blocks, Post-LN without warm-up ends at a higher "
    "validation loss than with it",
    "Xiong et al. 2020, section 3.1 and Fig. 2",
    _BITS,
    _WHY_BITS,
    paper="Post-LN without warm-up: BLEU 8.45 against 34 with it (IWSLT14, lr 5e-4)",
)
PRE_NO_WARMUP = Claim(
    "Pre-LN does not need the warm-up: at {deep} blocks, Pre-LN without warm-up ends within "
    "0.15 bits per character of Pre-LN with it (margin: 0.15 minus the loss it pays)",
    "Xiong et al. 2020, sections 1 and 4, Figs. 4-5",
    0.0,
    "0: the margin is 0.15 bits minus what Pre-LN without warm-up pays, positive when it "
    "pays less than the clear change that the Post-LN claim asks for; fixed before any run",
    paper="Pre-LN without warm-up reaches Post-LN-with-warm-up BLEU, in fewer steps",
)
POST_DEGRADES = Claim(
    "Post-LN degrades with depth: Post-LN with warm-up ends at a higher validation loss at "
    "{deep} blocks than at {shallow}",
    "Liu et al. 2020, section 3 and Table 1; Xiong et al. 2020, section 1",
    0.0,
    "0: any loss that the deeper Post-LN net pays over the shallower one, at the same "
    "schedule (the papers report failure to train, not an effect size); fixed before any run",
    paper="18-layer Post-LN diverges on WMT14 En-De where 6-layer trains (Liu et al.)",
)
PRE_IMPROVES = Claim(
    "Pre-LN does not degrade with depth: Pre-LN with warm-up ends at a lower validation loss "
    "at {deep} blocks than at {shallow}",
    "Xiong et al. 2020, section 1; Liu et al. 2020, section 3",
    0.0,
    "0: the deeper Pre-LN net is better by any amount at the same schedule; fixed before any run",
    paper="deeper Pre-LN nets train and improve (Liu et al. Table 1)",
)
REZERO_FASTER = Claim(
    "ReZero converges faster than Pre-LN: at {deep} blocks (both with warm-up), its training "
    "loss averaged over the run is lower",
    "Bachlechner et al. 2020, section 5 and Table 3",
    0.02,
    "0.02 bits per character averaged over the run (about 1% of a trained character model's "
    "loss; the paper's effect, 56% fewer iterations to 1.2 BPC, is far larger); fixed before "
    "any run",
    paper="ReZero: 56% fewer iterations than Pre-LN to 1.2 BPC (enwik8, 12 layers)",
)


def unigram_bits(data: TextDataset) -> float:
    """Entropy in bits of the character frequencies of ``data``: the loss of a model that
    predicts every character from the frequencies alone, using no context."""
    counts = Counter(data.tokens.tolist())
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def text_guard(net: str, bits: float, unigram: float) -> Guard:
    """A character model trained when its final validation loss (bits per character) is below
    GUARD_FRACTION x the unigram entropy ``unigram``."""
    bound = GUARD_FRACTION * unigram
    ok = math.isfinite(bits) and bits < bound
    return Guard(
        net,
        ok,
        f"val {bits:.3f} bits/char {'<' if ok else '>='} {bound:.3f} = "
        f"{GUARD_FRACTION} x unigram entropy",
    )


def warmup_steps(budget: ResidualBudget) -> int:
    """The linear warm-up's length: a tenth of the run, at least one step."""
    return max(1, round(WARMUP_FRACTION * budget.steps))


def run_name(variant: str, warm: bool, depth: int, budget: str, seed: int) -> str:
    return f"gpt-{variant}{depth}-{'warm' if warm else 'nowarm'}-{budget}-seed{seed}"


def train_spec(
    settings: Settings,
    budget: ResidualBudget,
    variant: str,
    warm: bool,
    depth: int,
    seed: int,
    train: TextDataset,
    val: TextDataset,
) -> dict:
    """The :func:`skiplab.experiments.training.train_run` arguments of one net."""
    return {
        "run_dir": settings.out_dir,
        "name": run_name(variant, warm, depth, settings.budget, seed),
        "settings": settings,
        "model": "gpt_d6",
        "model_args": {
            **budget.model_args,
            **VARIANTS[variant],
            "n_layer": depth,
            "block_size": budget.block_size,
            "vocab_size": len(train.vocab),
        },
        "train_data": train,
        "val_data": val,
        "seed": seed,
        "batch_size": budget.batch_size,
        "steps": budget.steps,
        "optimizer": "adamw",
        "lr": budget.lr,
        "betas": BETAS,
        "weight_decay": WEIGHT_DECAY,
        "schedule": "cosine",
        "min_lr": budget.lr * MIN_LR_FRACTION,
        "warmup": "linear" if warm else "none",
        "warmup_lr": budget.lr / 100,
        "warmup_steps": warmup_steps(budget),
        "channels_last": False,  # token ids have no channels
        "augment": False,
    }


def train_gpt(
    settings: Settings,
    variant: str,
    warm: bool,
    depth: int,
    seed: int,
    train: TextDataset,
    val: TextDataset,
) -> RunOutcome:
    """Train (or reuse) one net of this experiment's budget (transformer-lesion reads them)."""
    budget = BUDGETS[settings.budget]
    return train_run(**train_spec(settings, budget, variant, warm, depth, seed, train, val))


class TransformerResidual(Experiment):
    name = "transformer-residual"
    title = "Residual connections in the Transformer: Post-LN, Pre-LN, ReZero, none; warm-up"
    paper = "Xiong et al. 2020; Liu et al. 2020; Bachlechner et al. 2020"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        train, val = text_data(settings)
        keys, specs = [], []
        # Deepest first: the longest runs are handed out first.
        for depth in sorted(budget.depths, reverse=True):
            for seed in settings.seeds:
                for variant, warm in PLAN:
                    keys.append({"variant": variant, "warm": warm, "depth": depth, "seed": seed})
                    specs.append(
                        train_spec(settings, budget, variant, warm, depth, seed, train, val)
                    )
        outcomes = train_runs(settings, specs, tolerate=(NonFiniteLoss,))
        runs = run_rows(keys, outcomes, CURVE_KEYS)
        runs.sort(key=lambda r: (r["seed"], PLAN.index((r["variant"], r["warm"])), r["depth"]))
        return {
            "budget": settings.budget,
            "depths": list(budget.depths),
            "steps": budget.steps,
            "batch_size": budget.batch_size,
            "block_size": budget.block_size,
            "lr": budget.lr,
            "betas": list(BETAS),
            "weight_decay": WEIGHT_DECAY,
            "min_lr": budget.lr * MIN_LR_FRACTION,
            "warmup_steps": warmup_steps(budget),
            "model_args": dict(budget.model_args),
            "vocab": len(train.vocab),
            "uniform_bits": math.log2(len(train.vocab)),
            "unigram_bits": unigram_bits(train),
            "data": {"train": train.source, "val": val.source},
            "seeds": list(settings.seeds),
            "runs": runs,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _runs(results: dict, variant: str, warm: bool, depth: int) -> list[dict]:
        runs = [
            r
            for r in results["runs"]
            if (r["variant"], r["warm"], r["depth"]) == (variant, warm, depth)
        ]
        return sorted(runs, key=lambda r: r["seed"])

    @staticmethod
    def final_bits(results: dict, run: dict) -> float:
        """Final validation bits per character; a diverged run counts as the uniform
        prediction (log2 of the vocabulary): it has not trained."""
        if run["diverged"]:
            return results["uniform_bits"]
        return run["curve"][-1]["val_bits_per_char"]

    @staticmethod
    def mean_train_bits(run: dict, results: dict) -> float:
        """Training loss in bits averaged over every step of the run (each logged row is the
        mean over its steps, weighted by them): lower means faster convergence."""
        if run["diverged"]:
            return results["uniform_bits"]
        total, last = 0.0, 0
        for row in run["curve"]:
            total += row["train_loss"] * (row["step"] - last)
            last = row["step"]
        return total / last / math.log(2)

    @staticmethod
    def guard(results: dict, run: dict) -> Guard:
        net = (
            f"{LABELS[run['variant']]}-{run['depth']} "
            f"{'warm-up' if run['warm'] else 'no warm-up'} seed {run['seed']}"
        )
        if run["diverged"]:
            return Guard(net, False, f"diverged: {run['diverged']}")
        return text_guard(net, run["curve"][-1]["val_bits_per_char"], results["unigram_bits"])

    def verdicts(self, results: dict) -> list[Verdict]:
        shallow, deep = results["depths"]
        final = lambda r: self.final_bits(results, r)  # noqa: E731
        speed = lambda r: self.mean_train_bits(r, results)  # noqa: E731
        final_unit, speed_unit = "final val bits/char", "training bits/char averaged over the run"
        # One row per claim: cell a and cell b (variant, warm-up, depth) with their labels, the
        # quantity, whose guards count ("a", "b" or both), and the per-seed margin from
        # a_value - b_value.
        rows = [
            (NO_RESIDUAL, ("plain", True, deep), f"no-residual-{deep}", ("pre", True, deep),
             f"Pre-LN-{deep}", final, final_unit, "b", lambda d: d),
            (POST_NEEDS_WARMUP, ("post", False, deep), "no warm-up", ("post", True, deep),
             "warm-up", final, final_unit, "b", lambda d: d),
            (PRE_NO_WARMUP, ("pre", False, deep), "Pre-LN no warm-up", ("pre", True, deep),
             "warm-up", final, final_unit, "b", lambda d: _BITS - d),
            (POST_DEGRADES, ("post", True, deep), f"Post-LN-{deep}", ("post", True, shallow),
             f"Post-LN-{shallow}", final, final_unit, "b", lambda d: d),
            (PRE_IMPROVES, ("pre", True, shallow), f"Pre-LN-{shallow}", ("pre", True, deep),
             f"Pre-LN-{deep}", final, final_unit, "ab", lambda d: d),
            (REZERO_FASTER, ("pre", True, deep), f"Pre-LN-{deep}", ("rezero", True, deep),
             f"ReZero-{deep}", speed, speed_unit, "ab", lambda d: d),
        ]  # fmt: skip
        out = []
        for claim, a, label_a, b, label_b, fn, unit, guarded, margin in rows:
            ra, rb = self._runs(results, *a), self._runs(results, *b)
            if [r["seed"] for r in ra] != [r["seed"] for r in rb]:
                raise ValueError(f"cells {a} and {b} have different seeds")
            margins = [margin(fn(x) - fn(y)) for x, y in zip(ra, rb, strict=True)]
            measured = (
                f"{unit}: {label_a} {mean_sd([fn(r) for r in ra], '.3f')}, "
                f"{label_b} {mean_sd([fn(r) for r in rb], '.3f')}"
            )
            runs = (ra if "a" in guarded else []) + (rb if "b" in guarded else [])
            guards = [self.guard(results, r) for r in runs]
            out.append(
                claim.verdict(self.name, measured, margins, guards, deep=deep, shallow=shallow)
            )
        return out

    # -- figures and report ---------------------------------------------------------------------
    def figures(self, results: dict, folder: Path) -> list[Figure]:
        depths = results["depths"]
        colors = {"post": "tab:red", "pre": "tab:blue", "rezero": "tab:green", "plain": "tab:gray"}
        fig, axes = subplots(1, len(depths) + 1, figsize=(5.2 * (len(depths) + 1), 4.2))
        # The axis spans the measured values and the unigram line (a diverged run sits at the
        # uniform prediction, above it: clipped, and said so in the caption).
        finals = [self.final_bits(results, r) for r in results["runs"]]
        curve = [row["val_bits_per_char"] for r in results["runs"] for row in r["curve"]]
        values = [v for v in finals + curve if v is not None and math.isfinite(v)]
        bottom = min(values + [results["unigram_bits"]]) - 0.15
        top = max(values + [results["unigram_bits"]]) + 0.15
        for ax, depth in zip(axes, depths, strict=False):
            for variant, warm in PLAN:
                runs = [r for r in self._runs(results, variant, warm, depth) if not r["diverged"]]
                if not runs:
                    continue
                steps = [row["step"] for row in runs[0]["curve"]]
                per = [
                    [r["curve"][i]["val_bits_per_char"] for r in runs] for i in range(len(steps))
                ]
                plot_mean_range(
                    ax, steps, per, colors[variant],
                    f"{LABELS[variant]}{'' if warm else ', no warm-up'}",
                    "-o" if warm else "--x", alpha=0.12, ms=5,
                )  # fmt: skip
            ax.axhline(results["unigram_bits"], color="grey", ls=":", label="unigram model")
            ax.set_ylim(bottom, top)
            ax.set_title(f"{depth} blocks", fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("validation bits per character")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax = axes[-1]
        offsets = {pair: (i - (len(PLAN) - 1) / 2) * 0.12 for i, pair in enumerate(PLAN)}
        for variant, warm in PLAN:
            xs, ys = [], []
            for j, depth in enumerate(depths):
                for r in self._runs(results, variant, warm, depth):
                    xs.append(j + offsets[(variant, warm)])
                    ys.append(self.final_bits(results, r))
            ax.scatter(
                xs,
                ys,
                color=colors[variant],
                marker="o" if warm else "x",
                s=22,
                label=f"{LABELS[variant]}{'' if warm else ', no warm-up'}",
            )
        ax.set_xticks(range(len(depths)), [f"{d} blocks" for d in depths])
        ax.axhline(results["unigram_bits"], color="grey", ls=":")
        ax.set_ylim(bottom, top)
        ax.set_ylabel("final validation bits per character (every seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, folder, "transformer_residual")
        return [
            Figure(
                "transformer_residual",
                "Validation bits per character during training at each depth (mean over seeds, "
                "range shaded; dashed with crosses: without warm-up; one point per evaluation), "
                "and the final value of every seed (right; a diverged run counts at the uniform "
                "prediction, off the axis). Dotted: the unigram model (character frequencies, "
                "no context).",
            )
        ]

    def deviations(self, results: dict) -> list[str]:
        args = results["model_args"] or {"n_embd": 128, "n_head": 4}
        warm = ", ".join(
            f"{LABELS[r['variant']]}-{r['depth']} seed {r['seed']}"
            for r in results["runs"]
            if r["diverged"]
        )
        return [
            f"task: character language modelling on {md_text(results['data']['train'])} "
            "(Xiong et al.: translation and BERT; Liu et al.: translation; Bachlechner et al.: "
            "enwik8 character modelling, the closest)",
            f"width {args.get('n_embd', 128)}, {args.get('n_head', 4)} heads, context "
            f"{results['block_size']} characters, depths {results['depths'][0]} and "
            f"{results['depths'][1]} blocks (papers: width 512-1024, 6-18 layers per side; "
            "ReZero: 12 layers on enwik8)",
            f"schedule: {results['steps']} steps of {results['batch_size']} sequences, AdamW "
            f"(betas {tuple(results['betas'])}, weight decay {results['weight_decay']} on "
            f"matrices), lr {results['lr']:g} with cosine decay to {results['min_lr']:g}; "
            f"warm-up: linear from lr/100 over the first {results['warmup_steps']} steps (a "
            "tenth of the run) or none (papers: Adam, inverse-square-root decay after 4,000 "
            "warm-up steps of 100,000+)",
            "initialisation: the gpt rows' (GPT-2: N(0, 0.02), output projections scaled by "
            "1/sqrt(2 x blocks)), not Xavier as in Xiong et al.; learned positions; no "
            "dropout",
            "ReZero here: no LayerNorm at all and no final norm, alpha started at 0 on every "
            "branch, as the paper's ReZero Transformer",
            f"diverged runs (counted at the uniform prediction): {warm or 'none'}",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {md_text(results['data']['train'])} (train), "
            f"{md_text(results['data']['val'])} (validation). Final validation bits per "
            "character and training bits per character averaged over the run (mean ± "
            "standard deviation over seeds, every seed listed). Unigram model "
            f"{results['unigram_bits']:.3f} bits/char, uniform prediction "
            f"{results['uniform_bits']:.3f}; a net trained when it ends below "
            f"{GUARD_FRACTION * results['unigram_bits']:.3f}.",
            "",
            "| net | warm-up | blocks | final val bits/char | per seed | mean training "
            "bits/char | trained | diverged |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for variant, warm in PLAN:
            for depth in results["depths"]:
                runs = self._runs(results, variant, warm, depth)
                if not runs:
                    continue
                finals = [self.final_bits(results, r) for r in runs]
                speeds = [self.mean_train_bits(r, results) for r in runs]
                ok = sum(self.guard(results, r).passed for r in runs)
                lost = sum(bool(r["diverged"]) for r in runs)
                lines.append(
                    f"| {LABELS[variant]} | {'yes' if warm else 'no'} | {depth} | "
                    f"{mean_sd(finals, '.3f')} | {', '.join(f'{v:.3f}' for v in finals)} | "
                    f"{mean_sd(speeds, '.3f')} | {ok} of {len(runs)} | {lost} of {len(runs)} |"
                )
        return "\n".join(lines)
