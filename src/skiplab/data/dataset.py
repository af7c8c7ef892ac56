"""The in-memory dataset every skiplab loader returns: uint8 images and int64 targets.

A whole dataset lives in two tensors (CIFAR-10 train: 50,000 x 3 x 32 x 32 uint8 = 154 MB), so
the :class:`~skiplab.data.loader.DeviceLoader` can move it to the GPU once and cut, augment
and normalise batches there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

TASKS = ("classification", "segmentation")


@dataclass
class ArrayDataset(Dataset):
    """A labelled image dataset held as tensors; also a PyTorch map-style ``Dataset`` whose
    item ``i`` is ``(images[i], targets[i])`` (uint8 ``(C, H, W)``, int64 target), so it works
    with ``DataLoader`` (skiplab's own :class:`~skiplab.data.DeviceLoader` is faster).

    Attributes:
        images: uint8 ``(N, C, H, W)``, on the CPU, contiguous.
        targets: int64; ``(N,)`` class indices for classification, ``(N, H, W)`` masks of class
            indices for segmentation.
        classes: Class names; ``targets`` index into them.
        task: ``"classification"`` or ``"segmentation"``.
        mean: Per-channel mean on the 0..1 scale, for normalisation.
        std: Per-channel standard deviation on the 0..1 scale.
        source: Human-readable origin for results files (path and content hash, or the seed).

    Raises:
        ValueError: if any field does not have the type, shape or range described above.
    """

    images: torch.Tensor
    targets: torch.Tensor
    classes: tuple[str, ...]
    task: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        x, y = self.images, self.targets
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {_describe(x)}")
        if x.device.type != "cpu" or not x.is_contiguous():
            raise ValueError(f"images must be a contiguous CPU tensor; got {_describe(x)}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}; got {self.task!r}")
        n, c, h, w = x.shape
        expected = (n,) if self.task == "classification" else (n, h, w)
        if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or tuple(y.shape) != expected:
            raise ValueError(
                f"{self.task} targets must be an int64 tensor of shape {expected}; "
                f"got {_describe(y)}"
            )
        self.classes = tuple(self.classes)
        if not self.classes or not all(isinstance(k, str) for k in self.classes):
            raise ValueError(f"classes must be a non-empty tuple of names; got {self.classes!r}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise ValueError(
                f"targets must lie in [0, {len(self.classes) - 1}] ({len(self.classes)} classes); "
                f"got values in [{int(y.min())}, {int(y.max())}]"
            )
        self.mean, self.std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise ValueError(
                f"mean and std need {c} entries (one per channel), std > 0; "
                f"got mean={self.mean}, std={self.std}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.targets[index]

    def __repr__(self) -> str:
        return (
            f"ArrayDataset({self.task}, images={tuple(self.images.shape)}, "
            f"{len(self.classes)} classes, source={self.source!r})"
        )


def _describe(t) -> str:
    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    return f"{t.dtype} tensor of shape {tuple(t.shape)} on {t.device}"


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and (population) std of uint8 ``(N, C, H, W)`` images, on 0..1.

    Sums are accumulated exactly in int64 over chunks, so 50,000 CIFAR images never need a
    1.2 GB float copy.
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.int64)
    squares = torch.zeros(c, dtype=torch.int64)
    for start in range(0, images.shape[0], chunk):
        part = images[start : start + chunk].to(torch.int64)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = images.numel() // c
    mean = total.double() / count
    var = squares.double() / count - mean.square()
    mean, std = mean / 255.0, var.clamp_min(0).sqrt() / 255.0
    return tuple(mean.tolist()), tuple(std.tolist())


def mix_seed(*parts: int) -> int:
    """A 63-bit generator seed from integers; different tuples give unrelated streams.

    A hash, not arithmetic, so that e.g. (seed 1, epoch 0) and (seed 0, epoch 1) never share
    a stream.
    """
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1)
