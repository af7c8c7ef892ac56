"""Experiment, identity-construction: the deeper net that should do at least as well, built.

He et al. 2015 (arXiv:1512.03385), section 1: "There exists a solution by construction to the
deeper model: the added layers are identity mapping, and the other layers are copied from the
learned shallower model. The existence of this constructed solution indicates that a deeper
model should produce no higher training error than its shallower counterpart. But experiments
show that our current solvers on hand are unable to find solutions that are comparably good or
better than the constructed solution." The chapter states the same argument ("in theory a
deeper network should perform at least as well: the extra layers could learn the identity").

Here the argument is made concrete on the degradation experiment's trained nets of the same
budget (every seed, the same run folders): the shallowest plain net and ResNet are copied into
nets of the deepest depth whose added units are set to the identity
(:func:`skiplab.analysis.identity.deepen_with_identity`); the construction is checked
numerically (the deep net's logits against the shallow net's, eval mode, on test images); then
its training error is set beside that of the same deep net trained from scratch with the same
recipe. Training errors are measured here, in eval mode and without augmentation, on the same
training images for all three nets.

Claims: the constructed net computes the shallow net's function (exact); the plain net trained
from scratch ends above its constructed solution (SGD does not find it, the degradation
problem); the ResNet trained from scratch ends below its constructed solution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import torch
import torch.nn.functional as F

from skiplab.analysis.identity import deepen_with_identity, max_output_difference
from skiplab.data import DeviceLoader
from skiplab.experiments import degradation
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.degradation import label as _name
from skiplab.experiments.report import md_text, mean_sd, save_figure, subplots
from skiplab.experiments.training import classification_data, train_in_parallel
from skiplab.experiments.verdict import Claim, Guard, Verdict, trained_guard
from skiplab.models import create_model


@dataclass(frozen=True)
class IdentityBudget:
    train_images: int  # training images the three nets' errors are measured on
    check_images: int  # test images the construction is checked on


# The nets, data and schedule are the degradation experiment's of the same budget.
BUDGETS = {
    "quick": IdentityBudget(500, 64),
    "standard": IdentityBudget(5000, 500),
    "paper": IdentityBudget(50000, 1000),
}
KINDS = ("plain", "residual")
DIGITS = 5.0

SAME_FUNCTION = Claim(
    "The {deep}-layer net built from the trained {shallow}-layer net plus identity units "
    "computes the shallow net's function (plain and residual, every seed)",
    "He et al. 2015, section 1",
    DIGITS,
    "5 significant digits: the margin is -log10(max |logit difference| / max |logit|) over "
    "every constructed net (the worst decides); float32 rounding through 56 layers of BN "
    "arithmetic stays near 1e-6, a misplaced or missing unit changes the logits at the first "
    "digit",
    paper="a solution by construction exists",
    exact=True,
)
_WHY_POINT = (
    "1 point of training error: about the degradation experiment's 0.9-point minimum between "
    "20 and 56 layers; a smaller gap is within what a change of seed moves the error at this "
    "budget; fixed before these runs"
)
PLAIN_MISSES = Claim(
    "Trained from scratch, plain-{deep} ends above its constructed solution (plain-{shallow} "
    "plus identity units) in training error: SGD does not find the solution that exists",
    "He et al. 2015, section 1 and Fig. 1",
    1.0,
    _WHY_POINT + "; the margin of a seed is err(deep plain net from scratch) - err(constructed), "
    "in points",
    paper="plain-56 above plain-20 in training error (Fig. 1)",
)
RESIDUAL_FINDS = Claim(
    "Trained from scratch, ResNet-{deep} ends below its constructed solution (ResNet-{shallow} "
    "plus identity units) in training error",
    "He et al. 2015, sections 1 and 4.2, Fig. 6",
    0.0,
    "0: the claim is that SGD finds a solution at least as good as the constructed one, so any "
    "gap counts once the interval lies above 0; the margin of a seed is err(constructed) - "
    "err(deep ResNet from scratch), in points",
    paper="ResNet-56 below ResNet-20 in training error (Fig. 6)",
)


@torch.no_grad()
def _error_and_loss(model, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> tuple:
    model.eval()
    wrong, loss = 0, 0.0
    for i in range(0, x.shape[0], batch):
        logits = model(x[i : i + batch]).float()
        wrong += int((logits.argmax(1) != y[i : i + batch]).sum())
        loss += float(F.cross_entropy(logits, y[i : i + batch], reduction="sum"))
    return 100.0 * wrong / x.shape[0], loss / x.shape[0]


class IdentityConstruction(Experiment):
    name = "identity-construction"
    title = "The identity construction: a deeper net as good as the shallow one, and what SGD finds"
    paper = "He et al. 2015, section 1 (the constructed solution)"

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        deg = degradation.BUDGETS[settings.budget]
        train, test = classification_data(settings, deg.data)
        nc = len(train.classes)
        shallow, deep = min(deg.depths), max(deg.depths)
        # Train (or find on disk) the degradation nets of the two depths, deepest first.
        tasks = {
            (kind, depth, seed): (settings, deg, kind, depth, seed, train, test)
            for seed in settings.seeds
            for depth in (deep, shallow)
            for kind in KINDS
        }
        train_in_parallel(settings, degradation.train_net, list(tasks.values()))
        device = settings.device
        x_check, _ = DeviceLoader(
            test, min(budget.check_images, len(test)), train=False, device=device
        ).batch(0, 0)
        x_train, y_train = degradation.training_subset(train, budget.train_images, device)
        rows = []
        for seed in settings.seeds:
            for kind in KINDS:
                small = degradation.train_net(*tasks[(kind, shallow, seed)])
                big = degradation.train_net(*tasks[(kind, deep, seed)])
                small_model = small.model.to(device).eval()
                torch.manual_seed(seed)
                built = create_model("resnet20", **degradation.net_args(deg, kind, deep, nc)).to(
                    device
                )
                deepen_with_identity(small_model, built)
                diff, scale = max_output_difference(small_model, built, x_check)
                err = {
                    "shallow": _error_and_loss(small_model, x_train, y_train),
                    "constructed": _error_and_loss(built, x_train, y_train),
                    "scratch": _error_and_loss(big.model.to(device), x_train, y_train),
                }
                rows.append(
                    {
                        "kind": kind,
                        "seed": seed,
                        "shallow_run": small.name,
                        "deep_run": big.name,
                        "max_logit_diff": diff,
                        "max_logit": scale,
                        **{f"{k}_train_error": v[0] for k, v in err.items()},
                        **{f"{k}_train_loss": v[1] for k, v in err.items()},
                        # the training logs' last-epoch losses, for the guards
                        "shallow_final_loss": small.final["train_loss"],
                        "scratch_final_loss": big.final["train_loss"],
                    }
                )
        return {
            "budget": settings.budget,
            "shallow": shallow,
            "deep": deep,
            "epochs": deg.epochs,
            "batch_size": deg.batch_size,
            "steps": small.final["step"],
            "train_images": int(x_train.shape[0]),
            "check_images": int(x_check.shape[0]),
            "model_args": {
                k: list(v) if isinstance(v, tuple) else v for k, v in deg.model_args.items()
            },
            "data": {"train": train.source, "test": test.source},
            "num_classes": nc,
            "seeds": list(settings.seeds),
            "nets": rows,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _rows(results: dict, kind: str) -> list[dict]:
        return [r for r in results["nets"] if r["kind"] == kind]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        fig, axes = subplots(1, 2, figsize=(11, 4))
        shallow, deep = results["shallow"], results["deep"]
        labels = (
            f"{{k}}-{shallow}\n(trained)",
            f"{{k}}-{deep}\nconstructed",
            f"{{k}}-{deep}\nfrom scratch",
        )
        keys = ("shallow_train_error", "constructed_train_error", "scratch_train_error")
        colors = ("#8fa8c8", "#2b6cb0", "#c05621")
        top = max((r[key] for r in results["nets"] for key in keys), default=1.0)
        for ax, kind in zip(axes, KINDS, strict=True):
            rows = self._rows(results, kind)
            k = "ResNet" if kind == "residual" else "plain"
            for i, (key, color) in enumerate(zip(keys, colors, strict=True)):
                values = [r[key] for r in rows]
                if not values:
                    continue
                ax.bar(i, mean(values), color=color, alpha=0.8, width=0.6)
                ax.scatter([i] * len(values), values, color="black", s=14, zorder=3)
            ax.set_xticks(range(3), [lab.format(k=k) for lab in labels], fontsize=8)
            ax.set_ylabel("training error (%), eval mode")
            ax.set_title(f"{k} nets: bars mean over seeds, dots each seed", fontsize=9)
            ax.set_ylim(0, 1.1 * top)  # the same scale for both panels
            ax.grid(axis="y", alpha=0.3)
        save_figure(fig, folder, "identity_construction")
        return [
            Figure(
                "identity_construction",
                f"Training error of the trained {shallow}-layer net, of the {deep}-layer net "
                "built from it with identity units (the same function), and of the "
                f"{deep}-layer net trained from scratch with the same recipe; measured in eval "
                f"mode on {results['train_images']} training images without augmentation.",
            )
        ]

    def verdicts(self, results: dict) -> list[Verdict]:
        shallow, deep = results["shallow"], results["deep"]
        chance = math.log(results.get("num_classes", 10))
        fields = {"shallow": shallow, "deep": deep}
        rows = results["nets"]
        # (a) exact: the worst constructed net decides.
        worst = max(rows, key=lambda r: r["max_logit_diff"] / max(r["max_logit"], 1e-30))
        rel = worst["max_logit_diff"] / max(worst["max_logit"], 1e-30)
        out = [
            SAME_FUNCTION.verdict(
                self.name,
                f"max |logit difference| / max |logit| over {len(rows)} constructed nets: "
                f"{rel:.2g} ({_name(worst['kind'], deep)} seed {worst['seed']}; "
                f"{results['check_images']} test images)",
                [-math.log10(max(rel, 1e-12))],
                **fields,
            )
        ]

        def guards(row: dict) -> list[Guard]:
            k = row["kind"]
            return [
                trained_guard(f"{_name(k, shallow)} seed {row['seed']}",
                              row["shallow_final_loss"], chance),
                trained_guard(f"{_name(k, deep)} seed {row['seed']}",
                              row["scratch_final_loss"], chance),
            ]  # fmt: skip

        for claim, kind, sign in ((PLAIN_MISSES, "plain", 1.0), (RESIDUAL_FINDS, "residual", -1.0)):
            own = self._rows(results, kind)
            if not own:
                continue
            margins = [
                sign * (r["scratch_train_error"] - r["constructed_train_error"]) for r in own
            ]
            measured = "; ".join(
                f"seed {r['seed']}: constructed {r['constructed_train_error']:.1f}%, from "
                f"scratch {r['scratch_train_error']:.1f}%"
                for r in own
            )
            out.append(
                claim.verdict(
                    self.name,
                    "training error: " + measured,
                    margins,
                    [g for r in own for g in guards(r)],
                    **fields,
                )
            )
        return out

    def deviations(self, results: dict) -> list[str]:
        return [
            "nets: the degradation experiment's trained nets of this budget "
            f"({results['shallow']} and {results['deep']} layers; {results['steps']} steps of "
            f"batch {results['batch_size']}, its error-driven warm-up) (paper: 20 and 56 layers, "
            "64k steps; the paper states the construction as an argument and shows the "
            "training curves of Fig. 1, it builds no net)",
            "added units: appended at the end of each stage (the downsampling units line up); "
            "the construction holds in eval mode (BN with its running statistics)",
            f"training error measured in eval mode on {results['train_images']} training images "
            "without augmentation (the same images for every net), not the training log's "
            "running error",
        ]

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        shallow, deep = results["shallow"], results["deep"]
        lines = [
            f"Data: {md_text(results['data']['train'])}; training error and loss in eval mode "
            f"on {results['train_images']} training images; the construction checked on "
            f"{results['check_images']} test images. Mean ± sd over seeds, then every seed.",
            "",
            f"| nets | {shallow} layers, trained | {deep} layers, constructed | max ‖Δlogit‖ / "
            f"max ‖logit‖ | {deep} layers, from scratch |",
            "| --- | --- | --- | --- | --- |",
        ]
        for kind in KINDS:
            rows = self._rows(results, kind)
            if not rows:
                continue
            shallow_net, built, scratch = (
                mean_sd([r[f"{key}_train_error"] for r in rows], ".1f", "%", each=True)
                for key in ("shallow", "constructed", "scratch")
            )
            rel = max(r["max_logit_diff"] / max(r["max_logit"], 1e-30) for r in rows)
            lines.append(
                f"| {'ResNet' if kind == 'residual' else 'plain'} | {shallow_net} | {built} | "
                f"{rel:.2g} | {scratch} |"
            )
        return "\n".join(lines)
