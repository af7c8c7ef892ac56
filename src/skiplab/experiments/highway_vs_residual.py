"""Experiment 5, highway-vs-residual: plain, residual and highway MLPs of growing depth.

Srivastava, Greff & Schmidhuber 2015 (arXiv:1507.06228), section 3.1 and Fig. 1: plain nets
become harder to optimise as they deepen (from 10 to 100 layers their training loss worsens),
while highway nets of 10 to 100 layers reach similar training losses; Fig. 2: the mean
transform gate per layer after training; Fig. 4: lesioning a layer (closing its gate). He et
al. 2015 (section 3.1) argue that a deeper net whose added layers can be identities should
train no worse than its shallower counterpart, which ungated identity skips provide. Here
``plain_mlp``, ``residual_mlp`` and ``highway_mlp``, matched in parameters per layer as in the
paper (71 plain or residual units against 50 highway blocks), train on flattened images for the
same number of steps, once per seed, each kind and depth at the learning rate that a search of
the same size for every kind chose on a seed of its own.

Each claim compares, within a seed, the final training loss (mean over the last epoch) of the
deepest net of a kind with its shallowest. A run whose loss becomes non-finite is recorded as
diverged (loss = inf), not dropped. The shallowest net of each kind is the guard: it must
have left chance (:func:`skiplab.experiments.verdict.trained_guard`), else the claim is
INCONCLUSIVE naming it; what the deepest net does is the measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

import torch

from skiplab.analysis.lesion import lesion_single_blocks
from skiplab.complexity import count_parameters
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.training import DataPlan, classification_data, train_runs
from skiplab.experiments.verdict import Claim, Verdict, trained_guard
from skiplab.models import create_model
from skiplab.train import NonFiniteLoss, evaluate

KINDS = {"plain": "plain_mlp", "residual": "residual_mlp", "highway": "highway_mlp"}

# A change in final training loss of 0.1 nats (about 4% of ln 10) is the smallest that counts,
# both for the plain nets' degradation and as the tolerance of "no degradation".
TOLERANCE = 0.1
_WHY_TOL = (
    f"the margin is {TOLERANCE} - (loss at the deepest - loss at the shallowest) per seed, so 0 "
    f"is the edge of a tolerance of {TOLERANCE} nats (about 4% of ln 10): a stated rule for "
    "'similar' losses, of the same size as the plain claim's minimum effect; the paper shows "
    "its curves on a log axis, without a number"
)
PLAIN_DEGRADES = Claim(
    "Plain MLPs train worse as they deepen: plain-{deep} ends at a higher training loss than "
    "plain-{shallow}",
    "Srivastava et al. 2015, section 3.1 and Fig. 1",
    TOLERANCE,
    f"{TOLERANCE} nats (about 4% of ln 10): a stated rule for a clear change in training "
    "loss, of the same size as the tolerance of the two 'no degradation' claims; the paper "
    "shows its curves on a log axis, without a number",
    paper="Fig. 1: plain nets are much harder to optimise at 50 and 100 layers than at 10",
)
HIGHWAY_KEEPS = Claim(
    "Highway MLPs do not degrade with depth: highway-{deep} ends at a training loss at most "
    f"{TOLERANCE} nats above highway-{{shallow}}",
    "Srivastava et al. 2015, section 3.1 and Fig. 1",
    0.0,
    _WHY_TOL,
    paper="Fig. 1: highway nets of 10 to 100 layers reach similar training losses",
)
RESIDUAL_KEEPS = Claim(
    "Residual MLPs do not degrade with depth: residual-{deep} ends at a training loss at most "
    f"{TOLERANCE} nats above residual-{{shallow}}",
    "He et al. 2015, section 3.1: a deeper model whose added layers can be identities "
    '"should have training error no greater than its shallower counterpart" (here on MLPs)',
    0.0,
    _WHY_TOL,
    paper="no higher training error for the deeper net (section 3.1; Fig. 6 middle on CIFAR)",
)
CLAIMS = {"plain": PLAIN_DEGRADES, "highway": HIGHWAY_KEEPS, "residual": RESIDUAL_KEEPS}


def kind_args(kind: str, depth: int) -> dict:
    """How each kind starts, so that its skip path carries the signal at any depth.

    Without normalisation a deep net's forward signal is whatever its skips let through:

    - highway: the carry (1 - T) multiplies the signal at every layer, so a gate bias b_T
      leaves about (1 - sigmoid(b_T))^depth of it after ``depth`` layers. Srivastava et al.
      (section 2.2) choose b_T negative, more negative for deeper nets; here
      b_T = -ln(depth - 1), so that T = 1/depth and about 1/e of the signal crosses the net;
    - residual: He init alone grows the activations about 3x per layer, so each branch is
      scaled by a learned scalar that starts at 0 (SkipInit, De & Smith 2020);
    - plain: He init, as the paper's plain nets.
    """
    if kind == "highway":
        return {"gate_bias": -math.log(max(depth - 1, 1))}
    if kind == "residual":
        return {"branch_scale": 0.0}
    return {}


# Widths matched in parameters per layer as in Srivastava et al. 2015, section 3.1: 50 highway
# blocks (two 50x50 maps, H and T: 5,100 parameters) against 71 plain units (5,112).
MATCHED_WIDTHS = {"plain": 71, "residual": 71, "highway": 50}
# The learning-rate search runs on its own seed, never one of the seeds that are judged, so that
# the runs that choose the lr are not the runs that measure the claim.
SEARCH_SEED = 1000


@dataclass(frozen=True)
class HighwayBudget:
    depths: tuple[int, ...]
    widths: dict[str, int]  # per kind
    epochs: int
    batch_size: int
    lrs: tuple[float, ...]  # the search, the same for every kind and depth (one lr: no search)
    data: DataPlan


BUDGETS = {
    # At lr 0.05 the 20- and 50-layer highway and the 50- and 100-layer residual MLPs diverged
    # within 200 steps (quick budget, measured). quick: one lr, no search, 8 epochs so that the
    # demo fits its time (docs/results/calibration.md).
    "quick": HighwayBudget(
        (10, 20, 50, 100), MATCHED_WIDTHS, 8, 64, (0.01,), DataPlan(2000, 500, 16)
    ),
    # All 50,000 CIFAR-10 images at 32x32, flattened; a search of three lrs (a factor of about 3
    # apart around the quick budget's 0.01) per kind and depth, sized to about 25 minutes on two
    # CPU cores with the three judged seeds (docs/results/calibration.md).
    "standard": HighwayBudget(
        (10, 20, 50, 100), MATCHED_WIDTHS, 4, 128, (0.003, 0.01, 0.03), DataPlan()
    ),
    "paper": HighwayBudget(
        (10, 20, 50, 100), MATCHED_WIDTHS, 100, 128, (0.001, 0.003, 0.01, 0.03, 0.1), DataPlan()
    ),
}


def choose_lr(search: list[dict], kind: str, depth: int) -> float:
    """The lr of the search run of ``kind`` and ``depth`` with the lowest final training loss (a
    diverged run counts as an infinite loss; ties go to the smaller lr)."""
    rows = [r for r in search if r["kind"] == kind and r["depth"] == depth]
    if not rows:
        raise ValueError(f"no search run of {kind}-{depth}")
    return min(rows, key=lambda r: (r["train_loss"], r["lr"]))["lr"]


def parameter_counts(
    depths: tuple[int, ...], widths: dict[str, int], input_size: tuple, classes: int
) -> dict[str, dict]:
    """Per kind: parameters of one skip layer and of the whole net at each depth."""
    out = {}
    for kind, model in KINDS.items():
        with torch.device("meta"):
            nets = {
                d: create_model(
                    model,
                    depth=d,
                    width=widths[kind],
                    input_size=input_size,
                    num_classes=classes,
                    **kind_args(kind, d),
                )
                for d in depths
            }
        first = nets[depths[0]]
        out[kind] = {
            "per_layer": count_parameters(first.layers[0]),
            "total": {str(d): count_parameters(m) for d, m in nets.items()},
        }
    return out


class HighwayVsResidual(Experiment):
    name = "highway-vs-residual"
    title = "Highway, residual and plain MLPs of growing depth"
    paper = "Srivastava et al. 2015, section 3.1, Figs. 1, 2 and 4; He et al. 2015, section 3.1"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        if len(budget.lrs) > 1 and SEARCH_SEED in settings.seeds:
            raise ValueError(
                f"seed {SEARCH_SEED} is the learning-rate search's own seed; judge other seeds "
                f"(got {list(settings.seeds)})"
            )
        train, test = classification_data(settings, budget.data)
        input_size = tuple(train.images.shape[1:])

        def spec(kind: str, depth: int, seed: int, lr: float, name: str) -> dict:
            return {
                "run_dir": settings.out_dir,
                "name": name,
                "settings": settings,
                "model": KINDS[kind],
                "model_args": {
                    "depth": depth,
                    "width": budget.widths[kind],
                    "input_size": input_size,
                    "num_classes": len(train.classes),
                    **kind_args(kind, depth),
                },
                "train_data": train,
                "val_data": test,
                "seed": seed,
                "epochs": budget.epochs,
                "batch_size": budget.batch_size,
                "lr": lr,
                "warmup": "none",
                "augment": False,
            }

        nets = [(kind, depth) for kind in KINDS for depth in budget.depths]
        # 1. The learning-rate search: every kind and depth at every lr of the budget, on the
        #    search seed; the lr with the lowest final training loss is kept per kind and depth.
        search = []
        if len(budget.lrs) > 1:
            keys, specs = [], []
            for kind, depth in nets:
                for lr in budget.lrs:
                    keys.append({"kind": kind, "depth": depth, "lr": lr})
                    name = f"{KINDS[kind]}{depth}-lr{lr:g}-search-{settings.budget}"
                    specs.append(spec(kind, depth, SEARCH_SEED, lr, name))
            outcomes = train_runs(settings, specs, tolerate=(NonFiniteLoss,))
            for row, outcome in zip(keys, outcomes, strict=True):
                failed = isinstance(outcome, NonFiniteLoss)
                row.update(
                    diverged=str(outcome) if failed else None,
                    train_loss=math.inf if failed else outcome.final["train_loss"],
                )
                search.append(row)
        chosen = {
            kind: {
                str(depth): choose_lr(search, kind, depth) if search else budget.lrs[0]
                for depth in budget.depths
            }
            for kind in KINDS
        }
        # 2. The judged runs: every kind and depth at its chosen lr, once per seed.
        keys, specs = [], []
        for seed in settings.seeds:
            for kind, depth in nets:
                lr = chosen[kind][str(depth)]
                keys.append({"kind": kind, "depth": depth, "seed": seed, "lr": lr})
                name = f"{KINDS[kind]}{depth}-{settings.budget}-seed{seed}"
                if search:
                    name = f"{KINDS[kind]}{depth}-lr{lr:g}-{settings.budget}-seed{seed}"
                specs.append(spec(kind, depth, seed, lr, name))
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
            if row["kind"] == "highway":
                row.update(self._gates_and_lesions(outcome.model, test, settings))
            runs.append(row)
        return {
            "budget": settings.budget,
            "chance_loss": math.log(len(train.classes)),
            "data": train.source,
            "depths": list(budget.depths),
            "widths": dict(budget.widths),
            "epochs": budget.epochs,
            "batch_size": budget.batch_size,
            "lrs": list(budget.lrs),
            "search_seed": SEARCH_SEED if search else None,
            "lr_search": search,
            "chosen_lr": chosen,
            "gate_bias": {str(d): kind_args("highway", d)["gate_bias"] for d in budget.depths},
            "params": parameter_counts(
                budget.depths, budget.widths, input_size, len(train.classes)
            ),
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

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _runs(results: dict, kind: str, depth: int) -> list[dict]:
        runs = [r for r in results["runs"] if r["kind"] == kind and r["depth"] == depth]
        return sorted(runs, key=lambda r: r["seed"])

    def _loss(self, results, kind, depth) -> list[float]:
        return [r["train_loss"] for r in self._runs(results, kind, depth)]

    @staticmethod
    def _guard(results: dict, run: dict):
        name = f"{run['kind']}-{run['depth']} seed {run['seed']}"
        return trained_guard(name, run["train_loss"], results["chance_loss"])

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        fig, axes = subplots(1, 3, figsize=(15, 3.8))
        depths = results["depths"]
        for kind, color in zip(KINDS, ("tab:red", "tab:blue", "tab:green"), strict=True):
            means = []
            for d in depths:
                finite = [v for v in self._loss(results, kind, d) if math.isfinite(v)]
                axes[0].scatter([d] * len(finite), finite, color=color, alpha=0.5, s=14)
                means.append(mean(finite) if finite else float("nan"))
            axes[0].plot(depths, means, "-", color=color, label=f"{kind} (mean)")
        axes[0].axhline(results["chance_loss"], color="grey", linestyle=":", label="chance")
        axes[0].set_xscale("log")
        axes[0].set_xlabel("depth (layers)")
        axes[0].set_ylabel("final training loss")
        axes[0].legend(fontsize=8)
        colors = {d: c for d, c in zip(depths, ("C0", "C1", "C2", "C3", "C4", "C5"), strict=False)}
        for d in depths:
            runs = [r for r in self._runs(results, "highway", d) if "gate_means" in r]
            if not runs:
                continue
            for ax, key, scale in ((axes[1], "gate_means", 1), (axes[2], "lesion_errors", 100)):
                per_layer = list(zip(*(r[key] for r in runs), strict=True))
                layers = range(len(per_layer))
                ax.plot(
                    layers,
                    [scale * mean(v) for v in per_layer],
                    "-o",
                    markersize=2,
                    color=colors.get(d),
                    label=f"depth {d}",
                )
                if len(runs) > 1:
                    ax.fill_between(
                        layers,
                        [scale * min(v) for v in per_layer],
                        [scale * max(v) for v in per_layer],
                        color=colors.get(d),
                        alpha=0.15,
                        lw=0,
                    )
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
                "Left: final training loss against depth, each dot one seed (diverged runs left "
                "out), lines the means. Middle: mean transform gate per layer of the trained "
                "highway nets. Right: test error with one highway layer lesioned. Middle and "
                "right: mean over seeds, the range of the seeds shaded.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        deep, shallow = max(results["depths"]), min(results["depths"])
        out = []
        for kind, claim in CLAIMS.items():
            low, high = self._runs(results, kind, shallow), self._runs(results, kind, deep)
            if [r["seed"] for r in low] != [r["seed"] for r in high]:
                raise ValueError(f"{kind}-{shallow} and {kind}-{deep} have different seeds")
            # The shallow net is the control that shows the setup trains; what the deep net of
            # the same kind does is the measurement (a deep net at chance is the degradation
            # the plain claim predicts and what the other two claims deny, not a broken run).
            guards = [self._guard(results, r) for r in low]
            measured = (
                f"final training loss {kind}-{shallow} {_fmt(self._loss(results, kind, shallow))}"
                f", {kind}-{deep} {_fmt(self._loss(results, kind, deep))}"
            )
            names = {"deep": deep, "shallow": shallow}
            diverged = [
                f"{r['kind']}-{r['depth']} seed {r['seed']}"
                for r in low + high
                if not math.isfinite(r["train_loss"])
            ]
            if diverged:
                why = f"{measured}; diverged (non-finite loss): {', '.join(diverged)}"
                out.append(claim.undecidable(self.name, why, guards, **names))
                continue
            rises = [h["train_loss"] - lo["train_loss"] for lo, h in zip(low, high, strict=True)]
            margins = rises if kind == "plain" else [TOLERANCE - r for r in rises]
            out.append(claim.verdict(self.name, measured, margins, guards, **names))
        return out

    def deviations(self, results: dict) -> list[str]:
        params = results["params"]
        per_layer = ", ".join(f"{k} {params[k]['per_layer']:,}" for k in KINDS)
        biases = ", ".join(f"{v:+.2f} at depth {d}" for d, v in results["gate_bias"].items())
        depths = ", ".join(str(d) for d in results["depths"])
        return [
            f"data: {md_text(results['data'])}, flattened (paper: MNIST, section 3.1)",
            f"depths: {depths} skip layers after a first fully connected layer (paper: 10, 20, "
            "50 and 100 layers in all, the first of them plain)",
            _matching_line(results, per_layer),
            _hyperparameter_line(results),
            f"highway gate bias b_T = -ln(depth - 1): {biases} (paper: part of the search, "
            "between -1 and -10)",
            "residual layers only: each branch is scaled by a learned scalar started at 0 "
            "(SkipInit, De & Smith 2020), which the plain and highway layers do not have; "
            "without it the He-initialised residual MLP's activations overflow at depth 100 (He "
            "et al. 2015's residual nets are convolutional and use batch normalisation)",
            "task substitution: He et al. 2015's claim on residual nets is tested on MLPs",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        lines = [
            f"Data: {md_text(results['data'])} (flattened); {results['epochs']} epochs; "
            f"chance-level loss {results['chance_loss']:.3f} (a net trained when its final "
            f"training loss is below {0.9 * results['chance_loss']:.3f}). Final training loss, "
            "mean ± standard deviation over the seeds that did not diverge; the count of nets "
            "that trained per cell.",
            "",
            "| depth | " + " | ".join(KINDS) + " |",
            "| --- |" + " --- |" * len(KINDS),
        ]
        for d in results["depths"]:
            cells = []
            for kind in KINDS:
                runs = self._runs(results, kind, d)
                ok = sum(self._guard(results, r).passed for r in runs)
                cells.append(f"{_fmt([r['train_loss'] for r in runs])} ({ok} of {len(runs)})")
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
        params = results["params"]
        lines += [
            "",
            "| kind | parameters per layer | " + " | ".join(
                f"parameters at depth {d}" for d in results["depths"]
            ) + " |",
            "| --- | --- |" + " --- |" * len(results["depths"]),
        ]  # fmt: skip
        for kind in KINDS:
            totals = " | ".join(f"{params[kind]['total'][str(d)]:,}" for d in results["depths"])
            lines.append(f"| {kind} | {params[kind]['per_layer']:,} | {totals} |")
        if results.get("lr_search"):
            lrs = results["lrs"]
            lines += [
                "",
                f"Learning-rate search (seed {results['search_seed']}, not a judged seed): final "
                "training loss of every kind and depth at every lr; the chosen lr in bold.",
                "",
                "| net | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
                "| --- |" + " --- |" * len(lrs),
            ]
            for kind in KINDS:
                for d in results["depths"]:
                    cells = []
                    for lr in lrs:
                        (row,) = [
                            r
                            for r in results["lr_search"]
                            if r["kind"] == kind and r["depth"] == d and r["lr"] == lr
                        ]
                        text = "diverged" if row["diverged"] else f"{row['train_loss']:.3f}"
                        chosen = results["chosen_lr"][kind][str(d)] == lr
                        cells.append(f"**{text}**" if chosen else text)
                    lines.append(f"| {kind}-{d} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _matching_line(results: dict, per_layer: str) -> str:
    if "widths" not in results:  # results from before the kinds were matched in parameters
        return (
            f"parameter matching: every kind has width {results['width']}, so the layers "
            f"differ in parameters: per layer {per_layer} (paper: 50 highway blocks against 71 "
            "plain units, about 5,000 parameters per layer for both)"
        )
    widths = ", ".join(f"{k} {w}" for k, w in results["widths"].items())
    return (
        f"parameter matching: widths {widths}, so that the layers match in parameters: per "
        f"layer {per_layer} (as the paper: 50 highway blocks against 71 plain units)"
    )


def _hyperparameter_line(results: dict) -> str:
    schedule = (
        "SGD with momentum 0.9 and weight decay 1e-4, lr divided by 10 at 50% and 75% of the "
        f"run, {results['epochs']} epochs of batch {results['batch_size']}, ReLU, no warm-up, "
        "no augmentation"
    )
    paper = (
        "(paper: a random search of 100 runs per configuration over learning rate, momentum, "
        "decay and activation; Fig. 1 shows the best run of each)"
    )
    lrs = results.get("lrs", [results.get("lr")])
    if len(lrs) == 1:
        return f"hyperparameters: one lr {lrs[0]} for every kind and depth, {schedule} {paper}"
    chosen = "; ".join(
        f"{kind} " + ", ".join(f"{lr:g} at {d}" for d, lr in by_depth.items())
        for kind, by_depth in results["chosen_lr"].items()
    )
    return (
        f"hyperparameters: the lr searched over {', '.join(f'{v:g}' for v in lrs)} for every "
        f"kind and depth on a seed of its own ({results['search_seed']}), the lowest final "
        f"training loss kept (chosen: {chosen}); {schedule} {paper}"
    )


def _fmt(values: list[float]) -> str:
    """Mean ± sd of the finite values, with how many diverged."""
    finite = [v for v in values if math.isfinite(v)]
    lost = len(values) - len(finite)
    text = (
        "—"
        if not finite
        else f"{finite[0]:.3f}"
        if len(finite) == 1
        else f"{mean(finite):.3f} ± {stdev(finite):.3f}"
    )
    return text + (f", {lost} diverged" if lost else "")
