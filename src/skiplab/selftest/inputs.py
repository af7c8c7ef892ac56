"""Fault 7: bad inputs, each refused with a clear error before the first training step.

Every case goes through :class:`~skiplab.train.Trainer` construction (which loads the data,
builds the model and runs one checked forward pass) with a run folder that must stay without
checkpoints. Passing means: a ``ValueError`` is raised, it names what was expected and what was
found (checked with the words of each case), and no checkpoint or metrics file was written.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from skiplab.selftest.common import (
    FaultResult,
    check,
    command_for,
    error_message,
    run_trials,
    tiny_config,
    tiny_data,
)
from skiplab.train import Trainer

TITLE = "wrong channels, too-small images, bad U-Net size, mask/label/folder/image errors"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_imagefolder(root: Path, per_class: int = 4, classes: int = 2, size: int = 16) -> Path:
    """``root/{train,test}/c<k>/<i>.png`` RGB images."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                (folder / f"{i}.png").write_bytes(_png(image))
    return root


def write_segfolder(root: Path, size: int = 16, mask_size: int | None = None, value: int = 1):
    """``classes.txt`` (2 classes) and train/val/test pairs; ``value`` is a mask pixel value."""
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("background\nobject\n")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for sub in ("image", "label"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            image = rng.integers(0, 256, (size, size), dtype=np.uint8)
            m = mask_size or size
            mask = np.zeros((m, m), dtype=np.uint8)
            mask[: m // 2] = value
            (root / split / "image" / f"{i}.png").write_bytes(_png(image))
            (root / split / "label" / f"{i}.png").write_bytes(_png(mask))
    return root


class Trials:
    def __init__(self, work: Path) -> None:
        self.work = work

    def _refused(self, name: str, words: tuple[str, ...], make=None, module=None, **cfg) -> str:
        """Build a Trainer (data from ``make()`` or by name); it must refuse with ``words``."""
        out = self.work / name
        values = {"steps": 2, "checkpoint_every": 1, **cfg}
        if module is not None:
            values.update(model=None, model_args={})

        def start() -> None:
            train = make() if make is not None else None
            Trainer(tiny_config(out, **values), model=module, train_data=train)

        message = error_message(start, ValueError, "no error: the bad input was accepted")
        for w in words:
            check(w in message, f"the error does not say {w!r}: {message}")
        check(not (out / "checkpoints").exists(), "a checkpoint folder was written")
        check(not (out / "metrics.jsonl").exists(), "a metrics file was written")
        return message.replace(str(self.work), "...")[:200]

    @staticmethod
    def _gray():
        data = tiny_data()
        return replace(data, images=data.images[:, :1].contiguous(), mean=(0.5,), std=(0.25,))

    def channels_model_arg(self) -> str:
        args = {"layers": [1, 1, 1], "in_chans": 3}
        return self._refused(
            "chan-arg", ("(N, 3, H, W)", "(2, 1, 16, 16)"), self._gray, model_args=args
        )

    def channels_module(self) -> str:
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        words = ("(2, 1, 16, 16)", "to have 3 channels, but got 1")
        return self._refused("chan-module", words, self._gray, module=net)

    def too_small(self) -> str:
        return self._refused("too-small", (">= 4", "(2, 3, 2, 2)"), lambda: tiny_data(size=2))

    def _seg(self, name: str, words: tuple[str, ...], **folder) -> str:
        root = write_segfolder(self.work / f"{name}-data", **folder)
        return self._refused(
            name,
            words,
            model="unet",
            model_args={},
            data="segfolder",
            data_dir=str(root),
            batch_size=2,
        )

    def unet_too_small(self) -> str:
        return self._seg("unet-small", (">= 16", "(2, 1, 8, 8)"), size=8)

    def unet_not_multiple(self) -> str:
        return self._seg("unet-24", ("input H=24", "multiple of 16"), size=24)

    def mask_size(self) -> str:
        return self._seg("mask-size", ("is 8x8 but its image", "is 16x16"), mask_size=8)

    def mask_values(self) -> str:
        return self._seg("mask-values", ("pixel values [5]", "allowed values [0, 1]"), value=5)

    def labels(self) -> str:
        def make():
            data = tiny_data()
            return replace(data, targets=data.targets + 3)

        return self._refused("labels", ("[0, 3] (4 classes)", "[3, 6]"), make)

    def empty_class(self) -> str:
        root = write_imagefolder(self.work / "empty-class-data")
        for p in (root / "train" / "c1").iterdir():
            p.unlink()
        words = ("expected the image-folder layout", "empty class folder train/c1/")
        return self._refused(
            "empty-class", words, data="imagefolder", data_dir=str(root), val_split="none"
        )

    def corrupt_image(self) -> str:
        root = write_imagefolder(self.work / "corrupt-data")
        bad = root / "train" / "c0" / "2.png"
        bad.write_bytes(bad.read_bytes()[:40])
        return self._refused(
            "corrupt-image",
            ("cannot decode image", str(bad)),
            data="imagefolder",
            data_dir=str(root),
            val_split="none",
        )


def run(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("bad-input", TITLE, command=command_for("bad-input", None))
    t = Trials(work)
    items = [
        ("wrong channel count (model_args)", t.channels_model_arg),
        ("wrong channel count (plain module)", t.channels_module),
        ("images too small for the depth", t.too_small),
        ("U-Net input below its minimum", t.unet_too_small),
        ("U-Net input not a multiple of its stride", t.unet_not_multiple),
        ("mask size differs from its image", t.mask_size),
        ("mask value out of range", t.mask_values),
        ("label out of range", t.labels),
        ("empty class folder", t.empty_class),
        ("corrupt image file", t.corrupt_image),
    ]
    return run_trials(result, items[: trials if trials else None], progress)
