"""Experiment 2, gradient-flow: does the gradient reach the first layers of deep nets?

He et al. 2016 (arXiv:1603.05027), section 3, eq. 5: with identity shortcuts, dL/dx_l = dL/dx_L
(1 + d/dx_l sum F), so the gradient of the last unit reaches every earlier unit directly and
neither vanishes nor explodes with depth; without shortcuts it is a product of Jacobians. We
measure, on one batch per seed, the norm of dL/dx at the input of every block
(``skiplab.analysis.gradient_flow``) for plain, residual, pre-activation and highway nets of
growing depth, at initialisation and after training (a few steps of its own at the quick budget;
the degradation experiment's trained plain and residual nets at the standard and paper budgets),
and the per-block Jacobian
terms ||(dH/dx) v|| and ||(dH/dx) v - v|| (the dF/dx term). Every seed initialises, trains and
measures every net anew.

The summary number of a net is the ratio g_first / g_last of the gradient norms at the input
of its first and its last block: it "vanishes" below 1/10 (an order of magnitude) and
"explodes" above 10. A net measured after training enters a claim only when it trained (its
final training loss clearly below chance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

import torch

from skiplab.analysis.gradient_flow import block_jacobian_terms, gradient_norms
from skiplab.data import DeviceLoader
from skiplab.experiments import degradation
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.training import (
    DataPlan,
    classification_data,
    train_in_parallel,
    train_runs,
)
from skiplab.experiments.verdict import Claim, Guard, Verdict, trained_guard
from skiplab.models import create_model


@dataclass(frozen=True)
class GradientBudget:
    depths: tuple[int, ...]
    # Training before the second measurement: this many steps of the experiment's own runs, or
    # None for the degradation experiment's trained plain and residual nets (every seed, the
    # same run folders), so that the after-training claims rest on nets trained to that budget.
    steps: int | None
    batch_size: int
    data: DataPlan
    narrow: bool  # widths 8/16/32 instead of 16/32/64
    deepest_preact: int | None  # pre-activation depth measured at initialisation only


BUDGETS = {
    # quick: 10 steps (its nets stay at chance at any step count the demo's time allows; see
    # docs/results/calibration.md), so the after-training claims are left to the other budgets.
    "quick": GradientBudget((20, 56, 110), 10, 64, DataPlan(2000, 500, 16), True, 1001),
    # standard and paper: the degradation experiment's nets, on its data (the batch measured
    # must have the resolution those nets were trained at).
    "standard": GradientBudget(
        (20, 56, 110), None, 128, degradation.BUDGETS["standard"].data, False, 1001
    ),
    "paper": GradientBudget(
        (20, 56, 110), None, 128, degradation.BUDGETS["paper"].data, False, 1001
    ),
}
KINDS = ("plain", "residual", "preact", "highway")
SHORTCUT_KINDS = ("residual", "preact")  # identity shortcuts: the nets of He et al. 2016, eq. 5
VANISH = 0.1  # g_first / g_last below 1/10 vanishes, above 10 explodes
LR = 0.1
WHEN = {"init": "at initialisation", "trained": "after training"}

_WHY_MIN = (
    "0.1 decade (a factor 1.26) past the edge of the band: a tenth of the band's half-width "
    "of one decade (an order of magnitude, the usual meaning of vanishing or exploding), so "
    "that a ratio on the edge counts for neither side; a rule fixed before these runs"
)
SHORTCUT_BOUNDED = Claim(
    "With identity shortcuts the gradient reaching the first block neither vanishes nor "
    "explodes with depth ({when}): g_first/g_last within [1/10, 10] for every residual and "
    "pre-activation net ({nets})",
    "He et al. 2016, section 3, eq. 5 (arXiv:1603.05027)",
    0.1,
    _WHY_MIN + "; the margin of a seed is its worst net's distance inside the band, in decades",
    paper="eq. 5: the identity term carries dL/dx_L to every earlier unit unchanged",
)
PLAIN_VANISHES = Claim(
    "Without shortcuts the gradient reaching the first block vanishes with depth ({when}): "
    "g_first/g_last of plain-{depth} below 1/10",
    "the chapter's claim (its motivation for skip connections)",
    0.1,
    _WHY_MIN + "; the margin of a seed is how far below 1/10 the deepest plain net's ratio "
    "lies, in decades",
    paper="He et al. 2015, section 4.1, report healthy backward norms in plain nets with BN",
)


def net_spec(kind: str, depth: int, narrow: bool, num_classes: int) -> tuple[str, dict]:
    """(registered name, overrides) of a ``kind`` net with ``depth`` weighted layers.

    CIFAR ResNets have 6n+2 layers (n units of two 3x3 convs per stage); the highway net gets
    the same number of transform layers, 2n highway convolutions per stage. Pre-activation nets
    deeper than 200 layers are bottleneck nets of 9n+2 layers, as the paper's 1001-layer net.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    widths = (8, 16, 32) if narrow else (16, 32, 64)
    base = {"num_classes": num_classes}
    if kind == "preact" and depth > 200:
        if (depth - 2) % 9:
            raise ValueError(f"bottleneck depth must be 9n+2; got {depth}")
        m = (depth - 2) // 9
        return "preact_resnet1001", {
            **base,
            "layers": (m,) * 3,
            "widths": widths,
            "stem_width": widths[0],
        }
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 for these nets; got {depth}")
    n = (depth - 2) // 6
    if kind == "highway":
        return "highway_cifar19", {**base, "layers": (2 * n,) * 3, "widths": widths}
    resnet = {**base, "layers": (n,) * 3, "widths": widths, "stem_width": widths[0]}
    if kind == "plain":
        return "resnet20", {**resnet, "shortcut": "none"}
    if kind == "residual":
        return "resnet20", resnet
    return "preact_resnet110", resnet


def _measure(model, x, y, seed: int) -> dict:
    g = gradient_norms(model, x, y)
    entry = {
        "blocks": g.block_names,
        "block_grad": g.block_input,
        "ratio": g.block_input[0] / g.block_input[-1] if g.block_input[-1] > 0 else math.inf,
        "first_weight_grad": g.weight[0],
        "loss": g.loss,
    }
    j = block_jacobian_terms(model, x[:8], n_directions=2, seed=seed)
    if j.block_names:  # shape-preserving blocks only
        entry["jacobian_total"] = sum(j.total) / len(j.total)
        entry["jacobian_residual"] = sum(j.residual) / len(j.residual)
    model.zero_grad(set_to_none=True)
    return entry


def _label(row: dict) -> str:
    return f"{row['kind']}-{row['depth']}"


def decades_inside(ratio: float) -> float:
    """Distance of ``ratio`` inside the band [1/10, 10], in decades: 1 at ratio 1, 0 on either
    edge, negative outside (vanishing or exploding)."""
    return -math.log10(VANISH) - abs(math.log10(ratio))


def decades_below(ratio: float) -> float:
    """How far ``ratio`` lies below 1/10, in decades (negative above it)."""
    return math.log10(VANISH) - math.log10(ratio)


def _ratio_guard(net: str, ratio: float) -> Guard:
    ok = math.isfinite(ratio) and ratio > 0
    return Guard(net, ok, f"g_first/g_last {ratio:.3g} {'is' if ok else 'is not'} finite and > 0")


def check_results(results: dict) -> None:
    """Raise a clear error for results written before the per-seed format.

    Raises:
        ValueError: when the results lack every net measured per seed.
    """
    if not (all("seed" in r for r in results.get("nets", [{}]))):
        raise ValueError(
            "these results were written by an older skiplab (one seed, no per-seed "
            "measurements): run the experiment again to judge its claims"
        )


class GradientFlow(Experiment):
    name = "gradient-flow"
    title = "Gradient flow through identity shortcuts"
    paper = "He et al. 2016, section 3 (eq. 5); He et al. 2015, section 4.1"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        deg = degradation.BUDGETS[settings.budget] if budget.steps is None else None
        if deg is not None and deg.data != budget.data:
            raise ValueError(
                f"gradient-flow measures the degradation nets on their own data; its plan "
                f"{budget.data} differs from degradation's {deg.data}"
            )
        train, test = classification_data(settings, budget.data)
        nc = len(train.classes)
        # (kind, depth, how it is trained: None (init only), "own" or "degradation") of every
        # net measured, each kind's depths in increasing order.
        how = {(k, d): ("own" if deg is None else None) for k in KINDS for d in budget.depths}
        if deg is not None:
            how.update({(k, d): "degradation" for k in degradation.KINDS for d in deg.depths})
        nets = [
            (k, d, how[(k, d)], *net_spec(k, d, budget.narrow, nc))
            if how[(k, d)] != "degradation"
            else (k, d, "degradation", "resnet20", degradation.net_args(deg, k, d, nc))
            for k in KINDS
            for d in sorted(d for kk, d in how if kk == k)
        ]
        if budget.deepest_preact:
            depth = budget.deepest_preact
            nets.append(("preact", depth, None, *net_spec("preact", depth, budget.narrow, nc)))
        trained = self._train(settings, folder, budget, deg, nets, train, test)
        rows = []
        for seed in settings.seeds:
            x, y = DeviceLoader(
                train, budget.batch_size, train=True, seed=seed, device=settings.device
            ).batch(0, 0)
            for kind, depth, trained_by, name, args in nets:
                # The trainer initialises with torch.manual_seed(seed) too: the same weights.
                torch.manual_seed(seed)
                model = create_model(name, **args).to(settings.device)
                row = {
                    "kind": kind,
                    "depth": depth,
                    "seed": seed,
                    "model": name,
                    "init": _measure(model, x, y, seed),
                }
                if trained_by is not None:
                    outcome = trained[(kind, depth, seed)]()
                    row["run"] = outcome.name
                    row["train_loss"] = outcome.final["train_loss"]
                    row["steps"] = outcome.final["step"]
                    row["trained"] = _measure(outcome.model.to(settings.device), x, y, seed)
                rows.append(row)
        steps = sorted({r["steps"] for r in rows if "steps" in r})
        return {
            "budget": settings.budget,
            "trained_by": "own runs" if deg is None else "degradation",
            "steps": steps[0] if len(steps) == 1 else steps,
            "batch_size": budget.batch_size if deg is None else deg.batch_size,
            "lr": LR if deg is None else deg.lr,
            "warmup_steps": None if deg is None else deg.warmup_steps,
            "narrow": budget.narrow,
            "deepest_preact": budget.deepest_preact,
            "data": train.source,
            "num_classes": nc,
            "seeds": list(settings.seeds),
            "nets": rows,
        }

    @staticmethod
    def _train(settings, folder, budget, deg, nets, train, test) -> dict:
        """Train (or find on disk) every net measured after training.

        Returns:
            {(kind, depth, seed): a function returning its RunOutcome}: the degradation runs
            are read one at a time, so that only one trained model is held at once.
        """
        if deg is not None:
            tasks = {
                (kind, depth, seed): (settings, deg, kind, depth, seed, train, test)
                for seed in settings.seeds
                for kind, depth, trained_by, _, _ in sorted(nets, key=lambda t: -t[1])
                if trained_by == "degradation"
            }
            train_in_parallel(settings, degradation.train_net, list(tasks.values()))
            return {
                key: (lambda task=task: degradation.train_net(*task)) for key, task in tasks.items()
            }
        specs = {
            (kind, depth, seed): {
                "run_dir": folder,
                "name": f"{kind}{depth}-seed{seed}",
                "settings": settings,
                "model": name,
                "model_args": args,
                "train_data": train,
                "val_data": None,
                "seed": seed,
                "steps": budget.steps,
                "batch_size": budget.batch_size,
                "lr": LR,
                "warmup": "none",
                "augment": True,
            }
            for seed in settings.seeds
            for kind, depth, trained_by, name, args in sorted(nets, key=lambda t: -t[1])
            if trained_by == "own"
        }
        outcomes = train_runs(settings, list(specs.values()))
        return {
            key: (lambda outcome=outcome: outcome)
            for key, outcome in zip(specs, outcomes, strict=True)
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _nets(results: dict) -> list[tuple[str, int]]:
        """(kind, depth) of every net measured, in the order of the results."""
        seen: dict[tuple[str, int], None] = {}
        for r in results["nets"]:
            seen.setdefault((r["kind"], r["depth"]), None)
        return list(seen)

    @staticmethod
    def _rows(results: dict, kind: str, depth: int, when: str) -> list[dict]:
        return [
            r for r in results["nets"] if (r["kind"], r["depth"]) == (kind, depth) and when in r
        ]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        check_results(results)
        figs = []
        steps = results["steps"]
        for when in WHEN:
            fig, axes = subplots(1, len(KINDS), figsize=(14, 3.6), sharey=True)
            for ax, kind in zip(axes, KINDS, strict=True):
                for k, depth in self._nets(results):
                    rows = self._rows(results, k, depth, when)
                    if k != kind or not rows:
                        continue
                    per_block = list(zip(*(r[when]["block_grad"] for r in rows), strict=True))
                    pos = [i / max(len(per_block) - 1, 1) for i in range(len(per_block))]
                    (line,) = ax.semilogy(
                        pos, [_geomean(v) for v in per_block], label=f"depth {depth}"
                    )
                    if len(rows) > 1:  # the spread over seeds: lowest to highest
                        ax.fill_between(
                            pos,
                            [min(v) for v in per_block],
                            [max(v) for v in per_block],
                            color=line.get_color(),
                            alpha=0.15,
                            linewidth=0,
                        )
                ax.set_title(kind)
                ax.set_xlabel("block position (0 = first)")
                ax.grid(alpha=0.3, which="both")
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=8)
                else:  # e.g. no trained nets of this kind (the degradation nets are plain/residual)
                    ax.text(0.5, 0.5, f"not measured {WHEN[when]}", ha="center", va="center",
                            transform=ax.transAxes, color="tab:gray")  # fmt: skip
            axes[0].set_ylabel("||dL/dx|| at block input")
            stem = f"block_gradients_{when}"
            save_figure(fig, folder, stem)
            label = WHEN[when] if when == "init" else f"after {steps} training steps"
            figs.append(
                Figure(
                    stem,
                    f"Gradient norm at the input of every block, {label}: geometric mean over "
                    "seeds, the range of the seeds shaded.",
                )
            )

        # The claims' own measure: g_first/g_last against depth, every seed a point.
        fig, axes = subplots(1, 2, figsize=(11, 4), sharey=True)
        colors = dict(zip(KINDS, ("tab:red", "tab:blue", "tab:green", "tab:purple"), strict=True))
        all_depths = sorted({d for _, d in self._nets(results)})
        for ax, when in zip(axes, WHEN, strict=True):
            ax.axhspan(VANISH, 1 / VANISH, color="tab:gray", alpha=0.1, label="[1/10, 10]")
            for kind in KINDS:
                depths, means = [], []
                for k, depth in self._nets(results):
                    rows = self._rows(results, k, depth, when)
                    if k != kind or not rows:
                        continue
                    ratios = [_plottable(r[when]["ratio"]) for r in rows]
                    ax.scatter([depth] * len(ratios), ratios, s=14, alpha=0.5, color=colors[kind])
                    depths.append(depth)
                    means.append(_geomean(ratios))
                if depths:
                    ax.plot(depths, means, "-o", markersize=3, color=colors[kind], label=kind)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(all_depths, [str(d) for d in all_depths])
            ax.minorticks_off()
            ax.set_title(WHEN[when] if when == "init" else f"after {steps} steps")
            ax.set_xlabel("depth (layers)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        axes[0].set_ylabel("g_first / g_last")
        save_figure(fig, folder, "gradient_ratio_vs_depth")
        return [
            Figure(
                "gradient_ratio_vs_depth",
                "g_first/g_last against depth: each point one seed, lines the geometric means; "
                "the shaded band is [1/10, 10] (neither vanishing nor exploding). After "
                "training, nets that failed their guard are shown but enter no claim.",
            ),
            *figs,
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        check_results(results)
        chance = math.log(results.get("num_classes", 10))
        out = []
        for when, label in WHEN.items():
            # Residual and pre-activation nets: the worst net of a seed decides that seed.
            skip = [r for r in results["nets"] if r["kind"] in SHORTCUT_KINDS and when in r]
            names = ", ".join(sorted({_label(r) for r in skip}, key=_order))
            margins, guards, worst = self._per_seed(skip, when, chance, decades_inside, min)
            measured = "worst g_first/g_last per seed: " + "; ".join(
                f"seed {s} {_label(r)} {r[when]['ratio']:.3g} ({_trend(r[when]['ratio'])})"
                for s, r in worst.items()
            )
            out.append(
                self._judge(
                    SHORTCUT_BOUNDED, when, measured, margins, guards, when=label, nets=names
                )
            )

            plain = [r for r in results["nets"] if r["kind"] == "plain" and when in r]
            if not plain:
                continue
            deepest = max(r["depth"] for r in plain)
            plain = [r for r in plain if r["depth"] == deepest]
            margins, guards, used = self._per_seed(plain, when, chance, decades_below, min)
            measured = f"g_first/g_last of plain-{deepest} per seed: " + "; ".join(
                f"seed {s} {r[when]['ratio']:.3g} ({_trend(r[when]['ratio'])})"
                for s, r in used.items()
            )
            out.append(
                self._judge(
                    PLAIN_VANISHES, when, measured, margins, guards, when=label, depth=deepest
                )
            )
        return out

    def _judge(self, claim, stage, measured, margins, guards, **fields) -> Verdict:
        """The claim's verdict at ``stage`` ("init" or "trained"); undecidable when no net of
        any seed passed its guard."""
        if margins:
            return claim.verdict(self.name, measured, margins, guards, **fields)
        return claim.undecidable(self.name, _no_net_why(stage), guards, **fields)

    @staticmethod
    def _per_seed(rows, when, chance, margin_of, pick):
        """Per seed, the margin of the net that ``pick`` chooses by ``margin_of(ratio)``.

        Every net is guarded (a finite, non-zero ratio; after training also a final training
        loss clearly below chance); a net that failed its guard enters no margin.

        Returns:
            (margins, guards, {seed: the row chosen}), margins in seed order.
        """
        guards, usable = [], {}
        for r in rows:
            net = f"{_label(r)} seed {r['seed']}"
            own = [_ratio_guard(net, r[when]["ratio"])]
            if when == "trained":
                own.insert(0, trained_guard(net, r.get("train_loss", math.nan), chance))
            guards += own
            if all(g.passed for g in own):
                usable.setdefault(r["seed"], []).append(r)
        chosen = {
            seed: pick(rs, key=lambda r: margin_of(r[when]["ratio"]))
            for seed, rs in sorted(usable.items())
        }
        margins = [margin_of(r[when]["ratio"]) for r in chosen.values()]
        return margins, guards, chosen

    def deviations(self, results: dict) -> list[str]:
        check_results(results)
        out = [
            f"data: {results['data']} (paper: CIFAR-10 at 32x32); the gradients are measured on "
            f"one batch of {results.get('batch_size', '?')} training images per seed",
            _training_text(results),
            "highway nets: 2n highway layers per stage, the residual net's count of transform "
            "layers (no paper measures highway nets at these depths)",
        ]
        if results.get("narrow"):
            out.append("widths 8/16/32 (paper: 16/32/64)")
        if results.get("deepest_preact"):
            out.append(
                f"pre-activation {results['deepest_preact']}-layer bottleneck net measured at "
                "initialisation only (the paper trains it)"
            )
        return out

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        check_results(results)
        seeds = results.get("seeds", sorted({r["seed"] for r in results["nets"]}))
        lines = [
            f"Data: {md_text(results['data'])}; one batch per seed (seeds "
            f"{', '.join(str(s) for s in seeds)}); {results['steps']} training steps between "
            "the two measurements. g_first/g_last: gradient norm at the first block's input "
            "over the last block's, every seed listed. Jacobian: mean over shape-preserving "
            "blocks of ‖(dH/dx)v‖ and ‖(dH/dx)v - v‖ for unit v, mean over seeds. Final "
            "training loss: mean ± sd over seeds (chance ln C = "
            f"{math.log(results.get('num_classes', 10)):.3f}).",
            "",
            "| net | depth | g_first/g_last at init | after training | final training loss | "
            "Jacobian ‖(dH/dx)v‖ / ‖(dH/dx)v - v‖ at init |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for kind, depth in self._nets(results):
            init = self._rows(results, kind, depth, "init")
            trained = self._rows(results, kind, depth, "trained")
            tr = ", ".join(f"{r['trained']['ratio']:.3g}" for r in trained) or "—"
            losses = [r["train_loss"] for r in trained if "train_loss" in r]
            jac = [r["init"] for r in init if "jacobian_total" in r["init"]]
            jac_text = (
                f"{mean(j['jacobian_total'] for j in jac):.3f} / "
                f"{mean(j['jacobian_residual'] for j in jac):.3f}"
                if jac
                else "—"
            )
            at_init = ", ".join(f"{r['init']['ratio']:.3g}" for r in init)
            lines.append(
                f"| {kind} | {depth} | {at_init} | {tr} | {_mean_sd(losses)} | {jac_text} |"
            )
        plain = [r for r in results["nets"] if r["kind"] == "plain"]
        if plain:
            deepest = max(r["depth"] for r in plain)
            rows = [r for r in plain if r["depth"] == deepest]
            lines += [
                "",
                f"Reading the plain nets: at initialisation the gradient at the first block of "
                f"plain-{deepest} {_trends([r['init']['ratio'] for r in rows])} relative to the "
                "last block. With BatchNorm a deep plain net's backward signal can grow, not "
                "shrink, at initialisation (He et al. 2015, section 4.1, report healthy norms "
                "with BN; Yang et al. 2019, arXiv:1902.08129, prove that BN makes gradients "
                "explode with depth at initialisation). After training a ratio means something "
                "only for a net that trained (its guard).",
            ]
        return "\n".join(lines)


def _training_text(results: dict) -> str:
    """What happened between the two measurements, as a deviation from the paper."""
    if results.get("trained_by") == "degradation":
        return (
            f"after training: the degradation experiment's plain and residual nets of this budget "
            f"(every seed; {results['steps']} steps of batch {results['batch_size']} at lr "
            f"{results['lr']:g}, the paper recipe's step schedule, its error-driven warm-up "
            f"capped at {results['warmup_steps']} steps); pre-activation and highway nets, which "
            "that experiment does not train, are measured at initialisation only (He et al. "
            "2016 analyse eq. 5; their nets train for 64k steps)"
        )
    return (
        f"training between the two measurements: {results['steps']} steps of batch "
        f"{results.get('batch_size', '?')} at lr {results.get('lr', LR):g} with the paper "
        "recipe's step schedule and no warm-up (He et al. 2016 analyse eq. 5; their nets "
        "train for 64k steps)"
    )


def _trend(ratio: float) -> str:
    if ratio < VANISH:
        return "vanishes"
    return "explodes" if ratio > 1 / VANISH else "neither vanishes nor explodes"


def _trends(ratios: list[float]) -> str:
    """ "vanishes (seeds: 1e-3, 2e-3)" or, when the seeds disagree, each seed's trend."""
    trends = {_trend(r) for r in ratios}
    values = ", ".join(f"{r:.3g}" for r in ratios)
    if len(trends) == 1:
        return f"{trends.pop()} ({values})"
    return "differs between seeds (" + ", ".join(f"{r:.3g}: {_trend(r)}" for r in ratios) + ")"


def _no_net_why(when: str) -> str:
    return (
        f"no net measured {WHEN[when]} passed its guard, so no seed has a margin"
        if when == "init"
        else "no net trained (every final training loss at chance): a gradient ratio of a net "
        "that never trained says nothing about the claim"
    )


def _order(label: str) -> tuple[str, int]:
    kind, depth = label.rsplit("-", 1)
    return kind, int(depth)


def _plottable(ratio: float) -> float:
    return ratio if math.isfinite(ratio) and ratio > 0 else math.nan


def _geomean(values) -> float:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if not finite:
        return math.nan
    return math.exp(sum(math.log(v) for v in finite) / len(finite))


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{mean(values):.3f} ± {stdev(values):.3f}"
