"""Tiny data and configs for the training tests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from skiplab.data import ArrayDataset
from skiplab.selftest.common import tiny_data as tiny_classification  # noqa: F401 (re-export)
from skiplab.train import TrainConfig, Trainer, resolve_config

# resnet20 with one unit per stage (8 layers): the smallest registered net, in milliseconds.
TINY_MODEL = {"model": "resnet20", "model_args": {"layers": [1, 1, 1]}}
# Subprocesses: one thread each (several CPU-bound test processes share two cores).
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def tiny_segmentation(n: int = 8, size: int = 16, seed: int = 0) -> ArrayDataset:
    """One-channel images of bright squares on a dark background; mask 1 inside the squares."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    for i in range(n):
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[i, y0 : y0 + size // 3, x0 : x0 + size // 3] = 1
    noise = torch.randint(0, 60, (n, 1, size, size), generator=g)
    images = (noise + 150 * masks[:, None]).to(torch.uint8).contiguous()
    return ArrayDataset(
        images, masks, ("membrane", "cell"), "segmentation", (0.3,), (0.3,), f"tiny-seg seed={seed}"
    )


def tiny_config(out: Path, **values) -> TrainConfig:
    return resolve_config(
        cli_values={**TINY_MODEL, "out": str(out), "batch_size": 8, "progress": "off", **values}
    )


def sha256_tree(folder: Path) -> dict[str, str]:
    """{file name: sha256} of every file in ``folder``."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
    }


def write_imagefolder(root: Path, per_class: int = 8, classes: int = 4, size: int = 16) -> Path:
    """An image-folder tree (train/<class>/*.png, test/<class>/*.png) of tiny_classification
    images, for command-line runs that should not spend seconds generating data."""
    from PIL import Image

    for split, seed in (("train", 0), ("test", 1)):
        data = tiny_classification(per_class * classes, size, classes, seed)
        for i, (image, target) in enumerate(zip(data.images, data.targets, strict=True)):
            folder = root / split / data.classes[int(target)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


def stop_at(step: int):
    """A trainer callback that asks for a stop after ``step`` (agreed, and so done, one step
    later, as for a signal)."""

    def callback(trainer: Trainer) -> None:
        if trainer.step == step:
            trainer.request_stop()

    return callback
