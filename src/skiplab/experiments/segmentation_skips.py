"""Experiments 7 and 8: the skips of segmentation networks, with and without them.

unet-skips (Ronneberger et al. 2015, section 1): the U-Net's copy-and-crop skips bring the
encoder's high-resolution maps to the decoder, for precise localisation. ``unet`` against the
same net with ``skip=False``.

fpn-laterals (Lin et al. 2017, section 3 and Table 1): lateral connections add the backbone's
high-resolution maps to the top-down path, which helps small objects. ``fpn_resnet18`` against
``lateral=False`` (top-down path only) and a single-scale head (``levels=(5,)``, the coarsest
map only).

Data: synthetic shapes with masks (quick) or ISBI 2012 membranes (``--data isbi2012``). Besides
the usual metrics, every ground-truth object (a connected component of a foreground class) is
scored by the share of its pixels predicted as its class; objects are split at the median area
into small and large.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean, median

import torch

from skiplab.data import ArrayDataset, DeviceLoader, load_dataset
from skiplab.experiments.base import Experiment, Figure, Settings
from skiplab.experiments.report import save_figure, subplots
from skiplab.experiments.training import train_runs
from skiplab.experiments.verdict import Verdict, make_verdict
from skiplab.train import evaluate
from skiplab.train.metrics import connected_components


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


BUDGETS = {
    # FPN at a quarter of its width (d = 64, head 32): the ResNet-18 encoder at 64x64 is the cost.
    "quick": SegBudget(
        4,
        16,
        0.05,
        300,
        100,
        {"base_width": 8, "depth": 4},
        None,
        {"pyramid_channels": 64, "segmentation_channels": 32},
    ),
    "standard": SegBudget(40, 8, 0.05, None, None, {"base_width": 32}, 256),
    "paper": SegBudget(100, 4, 0.05, None, None, {}, 256),
}


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


def object_recall(model, data: ArrayDataset, device: str) -> list[dict]:
    """Area and recall (share of its pixels predicted as its class) of every ground-truth
    object: each connected component of each foreground class (class 0 is background)."""
    model.eval()
    objects = []
    loader = DeviceLoader(data, 1, train=False, device=device)
    with torch.no_grad():
        for x, y in loader.epoch(0):
            pred = model(x).argmax(1)[0].cpu()
            truth = y[0].cpu()
            for cls in range(1, len(data.classes)):
                comps = connected_components(truth == cls)
                for k in range(1, int(comps.max()) + 1):
                    region = comps == k
                    objects.append(
                        {
                            "class": cls,
                            "area": int(region.sum()),
                            "recall": float((pred[region] == cls).float().mean()),
                        }
                    )
    return objects


class _SegmentationAblation(Experiment):
    """Train each variant on the same data, evaluate, score objects, draw predictions."""

    variants: tuple[tuple[str, str, dict], ...] = ()  # (label, registered model, overrides)

    def model_args(self, budget: SegBudget, label: str, base: dict) -> dict:
        return base

    def run(self, settings: Settings, folder: Path) -> dict:
        budget = BUDGETS[settings.budget]
        train, test = segmentation_data(settings, budget)
        results = {
            "data": {"train": train.source, "test": test.source},
            "classes": list(train.classes),
            "epochs": budget.epochs,
            "variants": {},
        }
        specs = []
        for label, model, overrides in self.variants:
            args = {
                **self.model_args(budget, label, overrides),
                "in_chans": train.images.shape[1],
                "num_classes": len(train.classes),
            }
            specs.append(
                {
                    "run_dir": settings.out_dir,
                    "name": f"{self.name}-{label}-{settings.budget}",
                    "settings": settings,
                    "model": model,
                    "model_args": args,
                    "train_data": train,
                    "val_data": test,
                    "seed": 0,
                    "epochs": budget.epochs,
                    "batch_size": budget.batch_size,
                    "lr": budget.lr,
                    "recipe": "cosine",
                    "loss": "ce+dice",
                    "crop_size": budget.crop_size,
                    "warmup": "none",
                }
            )
        models = {}
        outcomes = train_runs(settings, specs)
        for (label, model, _), spec, outcome in zip(self.variants, specs, outcomes, strict=True):
            net = outcome.model.eval()
            metrics = evaluate(net, test, batch_size=8, device=settings.device)
            results["variants"][label] = {
                "model": model,
                "args": dict(spec["model_args"]),
                "metrics": metrics,
                "objects": object_recall(net, test, settings.device),
            }
            models[label] = net
        # Predictions on the first images, stored as data before any figure is drawn.
        loader = DeviceLoader(test, 1, train=False, device=settings.device)
        samples = []
        with torch.no_grad():
            for i, (x, y) in enumerate(loader.epoch(0)):
                if i == 3:
                    break
                samples.append(
                    {
                        "image": test.images[i].permute(1, 2, 0).squeeze(-1).contiguous(),
                        "truth": y[0].cpu(),
                        **{label: m(x).argmax(1)[0].cpu() for label, m in models.items()},
                    }
                )
        torch.save({"samples": samples}, folder / "predictions.pt")
        return results

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        samples = torch.load(folder / "predictions.pt", weights_only=True)["samples"]
        labels = list(results["variants"])
        cols = ["image", "truth", *labels]
        fig, axes = subplots(len(samples), len(cols), figsize=(2.6 * len(cols), 2.6 * len(samples)))
        for r, sample in enumerate(samples):
            for c, key in enumerate(cols):
                ax = axes[r][c] if len(samples) > 1 else axes[c]
                img = sample[key]
                cmap = "gray" if key == "image" else "viridis"
                ax.imshow(img.numpy(), cmap=cmap if img.ndim == 2 else None)
                ax.set_title(key, fontsize=9)
                ax.axis("off")
        save_figure(fig, folder, "predictions")
        return [
            Figure("predictions", "Held-out images, ground truth and each variant's prediction.")
        ]

    @staticmethod
    def _split_recall(objects: list[dict], threshold: float) -> tuple[float, float]:
        small = [o["recall"] for o in objects if o["area"] <= threshold]
        large = [o["recall"] for o in objects if o["area"] > threshold]
        return (mean(small) if small else float("nan"), mean(large) if large else float("nan"))

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        some = next(iter(results["variants"].values()))
        threshold = median(o["area"] for o in some["objects"]) if some["objects"] else 0
        lines = [
            f"Data: {results['data']['train']} (train), {results['data']['test']} (held out); "
            f"{results['epochs']} epochs, cross-entropy + Dice. Objects split at the median "
            f"area ({threshold:g} px).",
            "",
            "| variant | pixel error | Dice | IoU | Rand error | recall, small objects | "
            "recall, large objects |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for label, v in results["variants"].items():
            m = v["metrics"]
            small, large = self._split_recall(v["objects"], threshold)
            rand = f"{m['rand_error']:.4f}" if "rand_error" in m else "—"
            lines.append(
                f"| {label} | {m['error']:.4f} | {m['dice']:.4f} | {m['iou']:.4f} | "
                f"{rand} | {small:.3f} | {large:.3f} |"
            )
        return "\n".join(lines)


class UNetSkips(_SegmentationAblation):
    name = "unet-skips"
    title = "U-Net with and without its skip connections"
    paper = "Ronneberger et al. 2015, section 1 and Fig. 1"
    variants = (("with skips", "unet", {"skip": True}), ("no skips", "unet", {"skip": False}))

    def model_args(self, budget: SegBudget, label: str, base: dict) -> dict:
        return {**budget.unet_args, **base}

    def verdicts(self, results: dict) -> list[Verdict]:
        a, b = results["variants"]["with skips"], results["variants"]["no skips"]
        return [
            make_verdict(
                "The U-Net's skips give more accurate segmentations (Dice)",
                self.name,
                f"Dice {a['metrics']['dice']:.4f} with skips vs {b['metrics']['dice']:.4f} without",
                [a["metrics"]["dice"] - b["metrics"]["dice"]],
                0.01,
                "section 1: skips for precise localisation",
            ),
            make_verdict(
                "... and fewer wrong pixels (pixel error)",
                self.name,
                f"pixel error {a['metrics']['error']:.4f} with skips vs "
                f"{b['metrics']['error']:.4f} without",
                [b["metrics"]["error"] - a["metrics"]["error"]],
                0.002,
                "ISBI 2012: pixel error of the U-Net 0.0611 (Table 1)",
            ),
        ]


class FPNLaterals(_SegmentationAblation):
    name = "fpn-laterals"
    title = "FPN with and without lateral connections"
    paper = "Lin et al. 2017, section 3, Table 1"
    variants = (
        ("laterals", "fpn_resnet18", {}),
        ("no laterals", "fpn_resnet18", {"lateral": False}),
        ("single scale (P5)", "fpn_resnet18", {"levels": (5,)}),
    )

    def model_args(self, budget: SegBudget, label: str, base: dict) -> dict:
        return {**budget.fpn_args, **base}

    def verdicts(self, results: dict) -> list[Verdict]:
        v = results["variants"]
        threshold = median(o["area"] for o in v["laterals"]["objects"])
        with_l, _ = self._split_recall(v["laterals"]["objects"], threshold)
        without, _ = self._split_recall(v["no laterals"]["objects"], threshold)
        single, _ = self._split_recall(v["single scale (P5)"]["objects"], threshold)
        return [
            make_verdict(
                "Lateral connections help at small scales",
                self.name,
                f"recall of small objects (<= {threshold:g} px): {with_l:.3f} with laterals, "
                f"{without:.3f} without, {single:.3f} single-scale",
                [with_l - without],
                0.01,
                "Table 1: AR_s 12.9 -> 30.5 with laterals",
            ),
        ]
