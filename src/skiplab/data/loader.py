"""Batches cut, augmented and normalised on the device, as a pure function of their position.

:class:`DeviceLoader` keeps a whole :class:`ArrayDataset` on ``device`` as uint8 and builds
batch ``index`` of ``epoch`` from nothing but ``(seed, epoch, index, rank, world_size)``: no
iterator state, no worker processes. Resuming in mid-epoch is ``loader.epoch(e, start=i)``,
and ``world_size`` ranks with batch ``B`` see exactly the samples (and augmentations) that one
process with batch ``B * world_size`` sees.

Augmentation, on the whole batch at once:
    classification: zero-pad 4 pixels, random crop back to the original size, random
    horizontal flip (He et al. 2015, section 4.2, the standard CIFAR recipe);
    segmentation: random crop to ``crop_size`` (default: the full image, i.e. no crop), then
    one of the 8 flips/90-degree rotations (4 when the crop is not square), applied to image
    and mask together (Ronneberger et al. 2015, section 3.1, without the elastic deformation).
Then ``x = (x / 255 - mean) / std`` per channel.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from skiplab.config import check_int
from skiplab.data.dataset import ArrayDataset, mix_seed

CIFAR_PAD = 4


def _generator(*parts: int) -> torch.Generator:
    # CPU generator: the same numbers on every device and every rank.
    return torch.Generator().manual_seed(mix_seed(*parts))


class DeviceLoader:
    """Deterministic batches of an :class:`ArrayDataset`, on ``device``.

    Args:
        dataset: The data; its tensors are copied to ``device`` once.
        batch_size: Samples per batch on this rank (``B``).
        train: Shuffle with a permutation seeded by ``(seed, epoch)``; otherwise identity order.
        seed: Seed of the permutations and augmentations.
        device: Where batches are built and returned.
        augment: Apply the random augmentation (default: ``train``).
        rank, world_size: This process's slice of each global batch of ``B * world_size``.
        drop_last: Drop the last incomplete global batch (default: ``train``). Without it the
            last global batch is partial, and a rank may get fewer samples there, even none.
        crop_size: Segmentation only: ``(h, w)`` (or one int) of the random training crop;
            default the full image.

    Raises:
        ValueError: for a bad argument, before any data is moved.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        augment: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool | None = None,
        crop_size: int | tuple[int, int] | None = None,
    ) -> None:
        if not isinstance(dataset, ArrayDataset):
            raise ValueError(f"dataset must be an ArrayDataset; got {type(dataset).__name__}")
        check_int("batch_size", batch_size, 1)
        check_int("world_size", world_size, 1)
        check_int("rank", rank, 0, world_size - 1)
        check_int("seed", seed, 0)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.train = bool(train)
        self.augment = self.train if augment is None else bool(augment)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.task = dataset.task
        self.num_samples = len(dataset)
        global_batch = batch_size * world_size
        if self.drop_last and self.num_samples < global_batch:
            raise ValueError(
                f"drop_last with a global batch of {global_batch} ({batch_size} x {world_size} "
                f"ranks) leaves no batch from {self.num_samples} samples"
            )
        _, c, h, w = dataset.images.shape
        self.crop_size = self._check_crop(crop_size, h, w)

        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.targets = dataset.targets.to(self.device)
        self.mean = torch.tensor(dataset.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(dataset.std, dtype=torch.float32, device=self.device)
        self.mean, self.std = self.mean.view(1, c, 1, 1), self.std.view(1, c, 1, 1)

    def _check_crop(self, crop_size, h: int, w: int) -> tuple[int, int]:
        if crop_size is None:
            return h, w
        if self.task != "segmentation":
            raise ValueError(
                "crop_size applies to segmentation data only (classification crops "
                "back to the original size after padding)"
            )
        size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        if len(size) != 2:
            raise ValueError(f"crop_size must be an int or (h, w); got {crop_size!r}")
        check_int("crop height", size[0], 1, h)
        check_int("crop width", size[1], 1, w)
        return size

    def __len__(self) -> int:
        global_batch = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_samples // global_batch
        return -(-self.num_samples // global_batch)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of ``epoch`` for this rank: ``x`` float32 (B, C, H, W), ``y`` int64.

        Global batch ``index`` covers positions ``[index * B * W, (index + 1) * B * W)`` of the
        epoch's order; this rank takes its ``rank``-th slice of ``B``.
        """
        check_int("epoch", epoch, 0)
        check_int("batch index", index, 0, len(self) - 1)
        g_start = index * self.batch_size * self.world_size
        g_stop = min(g_start + self.batch_size * self.world_size, self.num_samples)
        lo = min(g_start + self.rank * self.batch_size, g_stop)
        hi = min(lo + self.batch_size, g_stop)
        if self.train:
            order = torch.randperm(self.num_samples, generator=_generator(self.seed, epoch))
            idx = order[lo:hi]
        else:
            idx = torch.arange(lo, hi)
        idx = idx.to(self.device)
        x, y = self.images[idx], self.targets[idx]
        if self.augment:
            # Random numbers for the whole global batch, then this rank's slice of them.
            g = _generator(self.seed, epoch, index)
            x, y = self._augment(x, y, g, g_stop - g_start, slice(lo - g_start, hi - g_start))
        x = (x.to(torch.float32) / 255.0 - self.mean) / self.std
        return x, y

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start .. len - 1`` of ``epoch`` (``start > 0`` resumes mid-epoch)."""
        check_int("start", start, 0, len(self))
        for index in range(start, len(self)):
            yield self.batch(epoch, index)

    # -- augmentation --------------------------------------------------------------------------
    def _augment(self, x, y, g: torch.Generator, n: int, part: slice):
        if self.task == "classification":
            shift = torch.randint(0, 2 * CIFAR_PAD + 1, (n, 2), generator=g)[part]
            flip = torch.randint(0, 2, (n,), generator=g)[part].bool()
            return crop_flip(x, CIFAR_PAD, shift.to(x.device), flip.to(x.device)), y
        (h, w), (ch, cw) = x.shape[-2:], self.crop_size
        offset = torch.stack(
            [
                torch.randint(0, h - ch + 1, (n,), generator=g),
                torch.randint(0, w - cw + 1, (n,), generator=g),
            ],
            dim=1,
        )[part]
        # Dihedral op as (swap axes, reverse rows, reverse columns): 8 ops, 4 without swap.
        op = torch.randint(0, 8 if ch == cw else 4, (n,), generator=g)[part]
        return crop_dihedral(x, y, offset.to(x.device), op.to(x.device), (ch, cw))


def crop_flip(x: torch.Tensor, pad: int, shift: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Zero-pad ``x`` (b, c, h, w) by ``pad``, crop (h, w) at ``shift`` (b, 2) = (dy, dx) in
    [0, 2 * pad], and mirror the samples where ``flip`` (b,) is True. One gather, any dtype."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (b, c, h + 2p, w + 2p), zeros
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = shift[:, :1] + ar_h  # (b, h)
    cols = shift[:, 1:] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (b, w)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def crop_dihedral(
    x: torch.Tensor, y: torch.Tensor, offset: torch.Tensor, op: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``size`` at ``offset`` (b, 2) from images ``x`` (b, c, h, w) and masks ``y``
    (b, h, w), then apply dihedral op ``op`` (b,) in 0..7 to both with the same index map.

    ``op`` bits: 4 = swap the axes (transpose; square crops only), 2 = reverse rows (vertical
    flip), 1 = reverse columns (horizontal flip). Together these are all 8 flips and
    90-degree rotations, e.g. op 5 (swap, reverse columns) is ``torch.rot90(k=1)``.
    """
    b, c = x.shape[:2]
    ch, cw = size
    i = torch.arange(ch, device=x.device).view(1, ch, 1).expand(b, ch, cw)  # output row
    j = torch.arange(cw, device=x.device).view(1, 1, cw).expand(b, ch, cw)  # output column
    swap, rev_r, rev_c = ((op[:, None, None] >> k) & 1 == 1 for k in (2, 1, 0))
    r, s = torch.where(swap, j, i), torch.where(swap, i, j)  # source position in the crop
    r = torch.where(rev_r, ch - 1 - r, r) + offset[:, 0, None, None]
    s = torch.where(rev_c, cw - 1 - s, s) + offset[:, 1, None, None]
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return x[bi[:, None], ci, r[:, None], s[:, None]], y[bi, r, s]
