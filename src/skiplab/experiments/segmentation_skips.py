"""Experiments 7 and 8: the skips of segmentation networks, with and without them.

unet-skips (Ronneberger et al. 2015, section 1; section 2 and Fig. 1): the U-Net combines the
contracting path's high-resolution features with the upsampled output "in order to localize";
the expansive path concatenates the correspondingly cropped contracting-path map. ``unet``
against the same net with ``skip=False``. The paper trains no net without skips: the ablation
is this experiment's; Table 1 gives the U-Net's own pixel error on ISBI 2012.

fpn-laterals (Lin et al. 2017, section 5.1.1 and Table 1): lateral connections pass precise
locations from the bottom-up maps to the top-down maps (AR^1k_s 44.9 with them, row (c), vs 26.5
without, row (e)); the pyramid beats single-scale RPN baselines on small objects (row (c) vs
(a), (b)). ``fpn_resnet18`` against ``lateral=False`` (top-down path only) and a single-scale
head (``levels=(5,)``, the coarsest map only). The paper measures region proposals on COCO;
here the FPN feeds a semantic segmentation head (Kirillov et al. 2019), a declared task
substitution.

Every net is trained once per seed of ``settings.seeds``. Data: synthetic shapes with masks, or
ISBI 2012 membranes (``--data isbi2012``). Besides pixel error, Dice, IoU, Rand error and the
boundary F-score (reported only: no claim rests on it), every ground-truth object (a connected
component of a foreground class, class 0 being background) is scored by the share of its
pixels predicted as its class; objects are split at the median ground-truth area into small
and large. A net enters a verdict only if it segmented at all (:func:`segmentation_guard`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean, median, stdev

import torch

from skiplab.data import ArrayDataset, DeviceLoader, load_dataset
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import md_text, save_figure, subplots
from skiplab.experiments.training import train_runs
from skiplab.experiments.verdict import Claim, Guard, Verdict
from skiplab.train import evaluate
from skiplab.train.metrics import BOUNDARY_TOLERANCE, connected_components


@dataclass(frozen=True)
class SegBudget:
    epochs: int
    batch_size: int
    lr: float
    train_size: int | None
    test_size: int | None
    unet_args: dict
    crop_size: int | None
    fpn_args: dict = field(default_factory=dict)
    eval_every: int = 1  # epochs between evaluations of the held-out images (0: at the end)


BUDGETS = {
    # FPN at a quarter of its width (d = 64, head 32): the ResNet-18 encoder at 64x64 is the cost.
    # 200 training images, 3 epochs, so that the demo fits its time (docs/results/calibration.md).
    "quick": SegBudget(
        3,
        16,
        0.05,
        200,
        100,
        {"base_width": 8, "depth": 4},
        None,
        {"pyramid_channels": 64, "segmentation_channels": 32},
    ),
    # ISBI 2012 (25 training slices, 5 held out), sized to about 25 minutes per experiment on
    # two CPU cores (docs/results/calibration.md): a quarter-width U-Net (base 16) and a
    # half-width FPN (d = 128, head 64), 50 epochs of one 256x256 crop per slice.
    "standard": SegBudget(
        50,
        4,
        0.05,
        None,
        None,
        {"base_width": 16},
        256,
        {"pyramid_channels": 128, "segmentation_channels": 64},
        10,
    ),
    "paper": SegBudget(100, 4, 0.05, None, None, {}, 256),
}

# -- the claims -----------------------------------------------------------------------------------
_NO_UNET_ABLATION = (
    "Ronneberger et al. train no U-Net without skips, so the paper gives no effect size; the "
    "stated rule, fixed before any seeded run: "
)
UNET_DICE = Claim(
    "The U-Net's skips give more accurate segmentations: higher Dice with skips than without",
    "Ronneberger et al. 2015, section 1 (high-resolution contracting-path features combined "
    "with the upsampled output, to localise) and section 2 / Fig. 1 (copy and crop)",
    0.01,
    _NO_UNET_ABLATION + "one point of mean Dice (0.01), the smallest difference a segmentation "
    "table printed to two decimals shows",
    paper="no net without skips in the paper",
)
UNET_PIXEL_ERROR = Claim(
    "... and fewer wrong pixels: lower pixel error with skips than without",
    "Ronneberger et al. 2015, section 1 and section 2 / Fig. 1; the U-Net's pixel error on "
    "ISBI 2012: Table 1",
    0.002,
    _NO_UNET_ABLATION + "0.002, about 3% of the U-Net's own pixel error on the ISBI 2012 test "
    "slices (0.0611, Table 1)",
    paper="U-Net pixel error 0.0611 on the ISBI 2012 test slices (Table 1); no net without skips",
)
_QUARTER = (
    "a quarter of the paper's AR^1k_s gap for this comparison, in recall (a fraction), rounded "
    "down to a whole point: the task, data and nets differ from the paper's (see the "
    "deviations), so only part of the effect is expected to carry over; the same rule for "
    "both FPN claims, fixed before any seeded run"
)
FPN_LATERALS = Claim(
    "Lateral connections help at small scales: small objects (area <= {small:g} px) are "
    "recalled better with laterals than by the top-down pyramid without them",
    "Lin et al. 2017, section 5.1.1 ('How important are lateral connections?') and Table 1, "
    "rows (c) and (e)",
    0.04,
    f"{_QUARTER}: (44.9 - 26.5) / 4 = 4.6 points -> 0.04",
    paper="AR^1k_s 44.9 with lateral connections (c) vs 26.5 without (e)",
)
FPN_SINGLE_SCALE = Claim(
    "The feature pyramid recalls small objects (area <= {small:g} px) better than a single-scale "
    "map",
    "Lin et al. 2017, section 5.1.1 ('Comparisons with baselines') and Table 1, rows (a) to (c)",
    0.03,
    f"{_QUARTER}: the text's 12.9 points over the single-scale baseline / 4 = 3.2 points -> 0.03",
    paper="AR^1k_s 44.9 with FPN (c) vs 32.0 on C4 alone (a), the text's +12.9; 25.3 on C5 "
    "alone (b), the single map closest to P5 alone here",
)

# -- the guard: a net that predicts no objects cannot be compared -------------------------------
SHARE_FLOOR = 0.25  # predicted foreground share >= SHARE_FLOOR x the true foreground share


def foreground_stats(confusion: list[list[int]]) -> dict[str, float]:
    """The pooled foreground (every class but class 0) of a [true][predicted] confusion matrix
    of pixel counts: its true and predicted shares of the pixels, its Dice (a foreground pixel
    predicted as any foreground class counts as found), and the Dice of marking every pixel
    foreground."""
    k = len(confusion)
    if k < 2 or any(len(row) != k for row in confusion):
        raise ValueError(f"confusion must be a square matrix of 2 or more classes; got {confusion}")
    total = sum(sum(row) for row in confusion)
    if total <= 0:
        raise ValueError("confusion matrix counts no pixels")
    true_fg = sum(sum(row) for row in confusion[1:])
    pred_fg = sum(row[j] for row in confusion for j in range(1, k))
    found = sum(row[j] for row in confusion[1:] for j in range(1, k))
    dice = 2 * found / (true_fg + pred_fg) if true_fg + pred_fg else 0.0
    return {
        "true_share": true_fg / total,
        "pred_share": pred_fg / total,
        "dice": dice,
        # The Dice of marking every pixel foreground, 2p / (1 + p), from the same counts.
        "all_foreground_dice": 2 * true_fg / (true_fg + total),
    }


def segmentation_guard(net: str, confusion: list[list[int]]) -> Guard:
    """A segmentation net segmented when, on the held-out pixels,

    1. it predicts foreground in at least ``SHARE_FLOOR`` times the true foreground share p
       (not all background), and
    2. its foreground Dice is above 2p / (1 + p), the most that a prediction that ignores the
       image reaches in expectation (marking every pixel foreground), so that neither an
       all-background nor an all-foreground map passes.
    """
    s = foreground_stats(confusion)
    p, q, dice, chance = s["true_share"], s["pred_share"], s["dice"], s["all_foreground_dice"]
    share_ok, dice_ok = q >= SHARE_FLOOR * p, dice > chance
    detail = (
        f"foreground predicted in {100 * q:.1f}% of pixels vs {100 * p:.1f}% true "
        f"({'>=' if share_ok else '<'} {SHARE_FLOOR:g} x true); foreground Dice {dice:.3f} "
        f"{'>' if dice_ok else '<='} {chance:.3f}, that of marking every pixel foreground"
    )
    return Guard(net, share_ok and dice_ok, detail)


# -- data and scoring -----------------------------------------------------------------------------
def segmentation_data(settings: Settings, budget: SegBudget) -> tuple[ArrayDataset, ArrayDataset]:
    """Train and held-out splits: synthetic-seg (train/test) unless ``--data isbi2012``."""
    if settings.data == "isbi2012":
        splits = ("train", "val")
        name = "isbi2012"
    else:
        splits = ("train", "test")
        name = "synthetic-seg"
    train = load_dataset(name, splits[0], data_dir=settings.data_dir)
    test = load_dataset(name, splits[1], data_dir=settings.data_dir)

    def first(ds: ArrayDataset, n: int | None) -> ArrayDataset:
        if n is None or n >= len(ds):
            return ds
        return replace(
            ds,
            images=ds.images[:n].contiguous(),
            targets=ds.targets[:n].clone(),
            source=f"{ds.source}, first {n}",
        )

    return first(train, budget.train_size), first(test, budget.test_size)


def score_net(model, data: ArrayDataset, device: str) -> tuple[list[dict], list[list[int]]]:
    """Every ground-truth object's area and recall (the share of its pixels predicted as its
    class; an object is a connected component of a foreground class, class 0 is background),
    and the [true][predicted] confusion matrix of all pixels."""
    model.eval()
    k = len(data.classes)
    objects = []
    confusion = torch.zeros(k, k, dtype=torch.int64)
    loader = DeviceLoader(data, 1, train=False, device=device)
    with torch.no_grad():
        for x, y in loader.epoch(0):
            pred = model(x).argmax(1)[0].cpu()
            truth = y[0].cpu()
            confusion += torch.bincount((truth * k + pred).flatten(), minlength=k * k).view(k, k)
            for cls in range(1, k):
                comps = connected_components(truth == cls)
                for c in range(1, int(comps.max()) + 1):
                    region = comps == c
                    objects.append(
                        {
                            "class": cls,
                            "area": int(region.sum()),
                            "recall": float((pred[region] == cls).float().mean()),
                        }
                    )
    return objects, confusion.tolist()


def predictions(model, data: ArrayDataset, device: str, n: int = 3) -> list[torch.Tensor]:
    """The predicted masks (uint8) of the first ``n`` images of ``data``."""
    model.eval()
    out = []
    loader = DeviceLoader(data, 1, train=False, device=device)
    with torch.no_grad():
        for i, (x, _) in enumerate(loader.epoch(0)):
            if i == n:
                break
            out.append(model(x).argmax(1)[0].to(torch.uint8).cpu())
    return out


def split_recall(objects: list[dict], threshold: float) -> tuple[float, float]:
    """Mean recall of the small (area <= ``threshold``) and the large objects (nan: none)."""
    small = [o["recall"] for o in objects if o["area"] <= threshold]
    large = [o["recall"] for o in objects if o["area"] > threshold]
    return (mean(small) if small else float("nan"), mean(large) if large else float("nan"))


def _fmt(values: list[float], digits: int = 4) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


# -- the experiments ------------------------------------------------------------------------------
class _SegmentationAblation(Experiment):
    """Train each variant once per seed on the same data; evaluate, score the objects, guard
    every net, and draw the first seed's predictions."""

    # (label, run-name key, registered model, overrides)
    variants: tuple[tuple[str, str, str, dict], ...] = ()

    def model_args(self, budget: SegBudget, overrides: dict) -> dict:
        return overrides

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        train, test = segmentation_data(settings, budget)
        variants, specs = {}, []
        for label, key, model, overrides in self.variants:
            args = {
                **self.model_args(budget, overrides),
                "in_chans": train.images.shape[1],
                "num_classes": len(train.classes),
            }
            variants[label] = {"model": model, "args": args}
            for seed in settings.seeds:
                specs.append(
                    {
                        "run_dir": settings.out_dir,
                        "name": f"{self.name}-{key}-{settings.budget}-seed{seed}",
                        "settings": settings,
                        "model": model,
                        "model_args": args,
                        "train_data": train,
                        "val_data": test,
                        "seed": seed,
                        "epochs": budget.epochs,
                        "batch_size": budget.batch_size,
                        "lr": budget.lr,
                        "recipe": "cosine",
                        "loss": "ce+dice",
                        "crop_size": budget.crop_size,
                        "eval_every": budget.eval_every,
                        "warmup": "none",
                    }
                )
        labels = [label for label, *_ in self.variants for _ in settings.seeds]
        runs, shown = [], {}
        for label, spec, outcome in zip(labels, specs, train_runs(settings, specs), strict=True):
            net = outcome.model.eval()
            variants[label]["params"] = sum(p.numel() for p in net.parameters())
            objects, confusion = score_net(net, test, settings.device)
            runs.append(
                {
                    "variant": label,
                    "seed": spec["seed"],
                    "run": spec["name"],
                    "metrics": evaluate(net, test, batch_size=8, device=settings.device),
                    "confusion": confusion,
                    "objects": objects,
                }
            )
            if spec["seed"] == settings.seeds[0]:
                shown[label] = predictions(net, test, settings.device)
        # The first seed's predictions, stored as data before any figure is drawn.
        samples = [
            {
                "image": test.images[i].permute(1, 2, 0).squeeze(-1).contiguous(),
                "truth": test.targets[i].to(torch.uint8),
                **{label: masks[i] for label, masks in shown.items()},
            }
            for i in range(min(3, len(test)))
        ]
        torch.save({"samples": samples}, folder / "predictions.pt")
        areas = [o["area"] for o in runs[0]["objects"]]
        return {
            "budget": settings.budget,
            "data": {
                "name": "isbi2012" if settings.data == "isbi2012" else "synthetic-seg",
                "train": train.source,
                "test": test.source,
                "train_images": len(train),
                "test_images": len(test),
            },
            "image_size": list(train.images.shape[-2:]),
            "classes": list(train.classes),
            "epochs": budget.epochs,
            "batch_size": budget.batch_size,
            "lr": budget.lr,
            "crop_size": budget.crop_size,
            "seeds": list(settings.seeds),
            "prediction_seed": settings.seeds[0],
            "boundary_tolerance": BOUNDARY_TOLERANCE,  # of the metrics' boundary_f1
            "small_area": median(areas) if areas else None,
            "variants": variants,
            "runs": runs,
        }

    # -- analysis -------------------------------------------------------------------------------
    @staticmethod
    def _runs(results: dict, label: str) -> list[dict]:
        if "runs" not in results:
            raise ValueError(
                "these results predate the per-seed runs (no 'runs' entry): run the experiment "
                "again to judge its claims"
            )
        return sorted(
            (r for r in results["runs"] if r["variant"] == label), key=lambda r: r["seed"]
        )

    def _values(self, results: dict, label: str, fn: Callable[[dict], float]) -> list[float]:
        return [fn(r) for r in self._runs(results, label)]

    def _margins(
        self, results: dict, better: str, worse: str, fn: Callable[[dict], float]
    ) -> list[float]:
        """Per seed: ``fn(better's run) - fn(worse's run)``, for the seeds both nets have."""
        a = {r["seed"]: fn(r) for r in self._runs(results, better)}
        b = {r["seed"]: fn(r) for r in self._runs(results, worse)}
        return [a[s] - b[s] for s in sorted(a.keys() & b.keys())]

    def guard_map(self, results: dict, labels: tuple[str, ...]) -> dict[tuple[str, int], Guard]:
        """:func:`segmentation_guard` of every net of the variants ``labels``, by (label, seed)."""
        return {
            (label, r["seed"]): segmentation_guard(f"{label} (seed {r['seed']})", r["confusion"])
            for label in labels
            for r in self._runs(results, label)
        }

    def guards(self, results: dict, labels: tuple[str, ...]) -> list[Guard]:
        return list(self.guard_map(results, labels).values())

    def _small(self, results: dict) -> Callable[[dict], float]:
        return lambda r: split_recall(r["objects"], results["small_area"])[0]

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        labels = list(results["variants"])
        failed = {k for k, g in self.guard_map(results, tuple(labels)).items() if not g.passed}
        out = []
        if results.get("small_area") is not None:
            out.append(self._recall_figure(results, folder, labels, failed))
        out.append(self._prediction_figure(results, folder, labels, failed))
        return out

    def _recall_figure(self, results, folder, labels, failed) -> Figure:
        fig, axes = subplots(1, 2, figsize=(4 + 1.6 * len(labels), 3.8), sharey=True)
        thr = results["small_area"]
        for ax, which, title in ((axes[0], 0, f"small (<= {thr:g} px)"), (axes[1], 1, "large")):
            for i, label in enumerate(labels):
                runs = self._runs(results, label)
                values = [split_recall(r["objects"], thr)[which] for r in runs]
                ax.bar(i, mean(values), color="tab:blue", alpha=0.3, width=0.6)
                for r, v in zip(runs, values, strict=True):
                    bad = (label, r["seed"]) in failed
                    ax.scatter(
                        i, v, marker="x" if bad else "o", color="tab:red" if bad else "black", s=20
                    )
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
            ax.set_title(f"recall, {title} objects", fontsize=9)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3, axis="y")
        save_figure(fig, folder, "object_recall")
        return Figure(
            "object_recall",
            "Recall of the held-out objects, small and large: each point one seed (red crosses: "
            "that net failed its guard), bars the mean over seeds.",
        )

    def _prediction_figure(self, results, folder, labels, failed) -> Figure:
        samples = torch.load(folder / "predictions.pt", weights_only=True)["samples"]
        seed = results["prediction_seed"]
        bad = [label for label in labels if (label, seed) in failed]
        cols = ["image", "truth", *labels]
        fig, axes = subplots(
            len(samples), len(cols), figsize=(2.6 * len(cols), 2.6 * len(samples)), squeeze=False
        )
        for r, sample in enumerate(samples):
            for c, key in enumerate(cols):
                ax = axes[r][c]
                img = sample[key]
                cmap = "gray" if key == "image" else "viridis"
                ax.imshow(img.numpy(), cmap=cmap if img.ndim == 2 else None)
                ax.set_title(key + ("\n(failed its guard)" if key in bad else ""), fontsize=9)
                ax.axis("off")
        save_figure(fig, folder, "predictions")
        caption = f"Held-out images, ground truth and each net's prediction (seed {seed}). "
        if bad:
            caption += (
                f"{', '.join(bad)} failed the guard at this seed (almost no foreground, or no "
                "better than marking every pixel foreground): those columns show a failed net, "
                "not what the architecture does."
            )
        else:
            caption += "Every net shown passed its guard."
        return Figure("predictions", caption)

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        labels = list(results["variants"])
        guards = self.guard_map(results, tuple(labels))
        thr = results.get("small_area")
        tol = results.get("boundary_tolerance", BOUNDARY_TOLERANCE)
        seeds = ", ".join(str(s) for s in results["seeds"])
        lines = [
            f"Data: {md_text(results['data']['train'])} (train), "
            f"{md_text(results['data']['test'])} (held out); {results['epochs']} epochs, "
            f"cross-entropy + Dice; every net trained once per seed ({seeds}), mean ± standard "
            "deviation over seeds; Dice and IoU are means over the classes, background "
            "included. Objects: the connected components of each foreground class "
            "in the held-out masks, split at the median area"
            + (f" ({thr:g} px)." if thr is not None else " (there are none)."),
            "",
            "Guard (every net, every seed): it predicts foreground in at least "
            f"{SHARE_FLOOR:g} x the true foreground share of the held-out pixels (not all "
            "background), and its foreground Dice beats 2p/(1+p), that of marking every pixel "
            "foreground (p: the true foreground share). A claim resting on a net that failed "
            "it is INCONCLUSIVE, naming the net.",
            "",
            "Boundary F1 (reported, not a claim): the boundary F-score of Csurka et al. 2013 "
            f"at a tolerance of {tol} pixels, mean over the held-out images. Precision is the "
            "share of predicted class-boundary pixels within that distance of a true one, "
            "recall the share of true ones within it of a predicted one; it scores where the "
            "borders are (ISBI 2012: between cell and membrane), which pixel counts barely "
            "see. A dash in its column: results from before it was measured.",
            "",
            "| net | pixel error | Dice | IoU | Rand error | boundary F1 | recall, small objects | "
            "recall, large objects | foreground predicted / true | guard |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label in labels:
            runs = self._runs(results, label)
            metric = {
                k: _fmt([r["metrics"][k] for r in runs if k in r["metrics"]])
                for k in ("error", "dice", "iou", "rand_error", "boundary_f1")
            }
            if thr is not None:
                small = _fmt([split_recall(r["objects"], thr)[0] for r in runs], 3)
                large = _fmt([split_recall(r["objects"], thr)[1] for r in runs], 3)
            else:
                small = large = "—"
            stats = [foreground_stats(r["confusion"]) for r in runs]
            shares = (
                f"{_fmt([100 * s['pred_share'] for s in stats], 1)}% / "
                f"{100 * stats[0]['true_share']:.1f}%"
            )
            failed = [s for (lb, s), g in guards.items() if lb == label and not g.passed]
            guard = (
                f"passed ({len(runs)} of {len(runs)} seeds)"
                if not failed
                else "failed: seed " + ", ".join(str(s) for s in failed)
            )
            lines.append(
                f"| {md_text(label)} | {metric['error']} | {metric['dice']} | {metric['iou']} | "
                f"{metric['rand_error']} | {metric['boundary_f1']} | {small} | {large} | "
                f"{shares} | {guard} |"
            )
        return "\n".join(lines)

    # -- deviations -----------------------------------------------------------------------------
    paper_data = ""  # the paper's data, for the deviations
    paper_schedule = ""  # the paper's training, for the deviations

    def deviations(self, results: dict) -> list[str]:
        """The run's departures from the paper, one line each, as literal Markdown."""
        return [md_text(line) for line in self.deviation_lines(results)]

    def deviation_lines(self, results: dict) -> list[str]:
        d = results["data"]
        h, w = results["image_size"]
        crop = f", random {results['crop_size']}px crops" if results.get("crop_size") else ""
        params = ", ".join(
            f"{label} {v['params']:,}" for label, v in results["variants"].items() if "params" in v
        )
        return [
            f"data: {d['train']} ({d['train_images']} images of {h}x{w}, classes "
            f"{', '.join(results['classes'])}), scored on {d['test']} "
            f"({d['test_images']} images) (paper: {self.paper_data})",
            f"schedule: {results['epochs']} epochs of batch {results['batch_size']}{crop}, each "
            "image in one of its 8 flips/rotations, SGD with momentum 0.9 and weight decay "
            f"5e-4, lr {results['lr']:g} with cosine decay, no warm-up, loss cross-entropy + Dice "
            f"(paper: {self.paper_schedule})",
            f"parameters: {params} (the variants are not parameter-matched: each removes "
            "modules from the same net)",
        ]


class UNetSkips(_SegmentationAblation):
    name = "unet-skips"
    title = "U-Net with and without its skip connections"
    paper = "Ronneberger et al. 2015, sections 1 and 2, Fig. 1, Table 1"
    variants = (
        ("with skips", "skips", "unet", {"skip": True}),
        ("no skips", "no-skips", "unet", {"skip": False}),
    )
    paper_data = (
        "the 30 ISBI 2012 training slices of 512x512, membrane vs cell, scored by the challenge "
        "on its 30 test slices"
    )
    paper_schedule = (
        "SGD with momentum 0.99 on one 572x572 tile per step, a cross-entropy weighted to "
        "separate touching cells, shifts, rotations and elastic deformations"
    )

    def model_args(self, budget: SegBudget, overrides: dict) -> dict:
        return {**budget.unet_args, **overrides}

    def verdicts(self, results: dict) -> list[Verdict]:
        a, b = "with skips", "no skips"
        guards = self.guards(results, (a, b))
        out = []
        for claim, key, sign in ((UNET_DICE, "dice", 1), (UNET_PIXEL_ERROR, "error", -1)):

            def metric(r, key=key):
                return r["metrics"][key]

            margins = self._margins(results, a, b, metric)
            what = "Dice" if key == "dice" else "pixel error"
            measured = (
                f"{what} {_fmt(self._values(results, a, metric))} with skips vs "
                f"{_fmt(self._values(results, b, metric))} without"
            )
            out.append(claim.verdict(self.name, measured, [sign * m for m in margins], guards))
        return out

    def deviation_lines(self, results: dict) -> list[str]:
        args = results["variants"]["with skips"]["args"]
        width, depth = args.get("base_width", 64), args.get("depth", 5)
        return [
            f"net: padded ('same') 3x3 convolutions with BatchNorm, base width {width}, {depth} "
            "levels (paper: unpadded convolutions without normalisation, copy-and-crop skips, "
            "width 64, 5 levels; Fig. 1)",
            "ablation: the net without skips is this experiment's (the first convolution of "
            "each decoder block gets narrower); the paper trains none",
            *super().deviation_lines(results),
        ]


class FPNLaterals(_SegmentationAblation):
    name = "fpn-laterals"
    title = "FPN with and without lateral connections"
    paper = "Lin et al. 2017, section 5.1.1, Table 1"
    variants = (
        ("laterals", "laterals", "fpn_resnet18", {}),
        ("no laterals", "no-laterals", "fpn_resnet18", {"lateral": False}),
        ("single scale (P5)", "single-scale-p5", "fpn_resnet18", {"levels": (5,)}),
    )
    paper_data = (
        "COCO trainval35k, scored on minival, images resized to a shorter side of 800 pixels"
    )
    paper_schedule = (
        "synchronized SGD, 2 images per GPU on 8 GPUs, lr 0.02 for 30k mini-batches then "
        "0.002 for 10k, the RPN's losses"
    )

    def model_args(self, budget: SegBudget, overrides: dict) -> dict:
        return {**budget.fpn_args, **overrides}

    def verdicts(self, results: dict) -> list[Verdict]:
        thr = results.get("small_area")
        claims = (
            (FPN_LATERALS, "no laterals", "without laterals"),
            (FPN_SINGLE_SCALE, "single scale (P5)", "single-scale (P5 alone)"),
        )
        out = []
        for claim, other, words in claims:
            guards = self.guards(results, ("laterals", other))
            if thr is None:
                out.append(
                    claim.undecidable(
                        self.name, "no ground-truth objects in the held-out masks", guards, small=0
                    )
                )
                continue
            small = self._small(results)
            measured = (
                f"recall of small objects {_fmt(self._values(results, 'laterals', small), 3)} "
                f"with laterals vs {_fmt(self._values(results, other, small), 3)} {words}"
            )
            margins = self._margins(results, "laterals", other, small)
            out.append(claim.verdict(self.name, measured, margins, guards, small=thr))
        return out

    def deviation_lines(self, results: dict) -> list[str]:
        args = results["variants"]["laterals"]["args"]
        d = args.get("pyramid_channels", 256)
        head = args.get("segmentation_channels", 128)
        return [
            "task: semantic segmentation with a Panoptic-FPN head (Kirillov et al. 2019) in "
            "place of the paper's region proposals (RPN); recall of small objects is the share "
            "of each ground-truth object's pixels predicted as its class, small meaning at most "
            "the median area, in place of AR^1k_s (COCO: area below 32x32)",
            f"net: ResNet-18 backbone from random initialisation, pyramid width d = {d}, head "
            f"width {head} (paper: ResNet-50 pretrained on ImageNet, d = 256; Kirillov et al.: "
            "head width 128)",
            "single scale: P5 alone (the top level, stride 32) through the same FPN convolutions "
            "and head (paper: RPN heads on the single C4 or C5 map, Table 1 (a), (b))",
            *super().deviation_lines(results),
        ]
