"""DeviceLoader: pure batches, DDP slicing, aligned segmentation augmentation, normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skiplab.data import ArrayDataset, DeviceLoader
from skiplab.data.loader import crop_dihedral, crop_flip


def _classification(n: int = 50, size: int = 8) -> ArrayDataset:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    targets = torch.arange(n) % 10
    return ArrayDataset(
        images,
        targets,
        tuple("abcdefghij"),
        "classification",
        (0.4, 0.5, 0.6),
        (0.2, 0.25, 0.3),
        "test data",
    )


def _position_coded(n: int = 64, h: int = 10, w: int = 10) -> ArrayDataset:
    # Channel 0 = row, channel 1 = column, channel 2 = sample id; mask = row * w + column.
    rows = torch.arange(h).view(1, h, 1).expand(n, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(n, h, w)
    ids = torch.arange(n).view(n, 1, 1).expand(n, h, w)
    images = torch.stack([rows, cols, ids], dim=1).to(torch.uint8).contiguous()
    return ArrayDataset(
        images,
        (rows * w + cols).contiguous(),
        tuple(map(str, range(h * w))),
        "segmentation",
        (0.0, 0.0, 0.0),
        (1.0, 1.0, 1.0),
        "position code",
    )


def _raw(x: torch.Tensor, ds: ArrayDataset) -> torch.Tensor:
    """Undo the normalisation: back to uint8 pixel values."""
    mean = torch.tensor(ds.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((x.double() * std + mean) * 255).round().to(torch.uint8)


def _all(loader: DeviceLoader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader.epoch(epoch), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_batches_are_a_pure_function():
    ds = _classification()
    a = DeviceLoader(ds, 8, train=True, seed=3)
    x1, y1 = a.batch(2, 3)
    a.batch(0, 0), a.batch(5, 1)  # no hidden state may change what follows
    x2, y2 = a.batch(2, 3)
    x3, y3 = DeviceLoader(ds, 8, train=True, seed=3).batch(2, 3)
    assert torch.equal(x1, x2) and torch.equal(x1, x3) and torch.equal(y1, y3)
    assert not torch.equal(x1, a.batch(1, 3)[0])  # another epoch: another order
    assert not torch.equal(x1, DeviceLoader(ds, 8, train=True, seed=4).batch(2, 3)[0])
    # epoch() yields exactly batch(e, i), and start= resumes mid-epoch.
    batches = list(a.epoch(2))
    assert len(batches) == len(a) == 50 // 8
    assert torch.equal(batches[3][0], x1)
    resumed = list(a.epoch(2, start=4))
    assert len(resumed) == 2 and torch.equal(resumed[0][0], batches[4][0])


def test_train_epoch_is_a_permutation():
    ds = _classification()
    x, y = _all(DeviceLoader(ds, 10, train=True, augment=False), 0)
    ids = [
        int(torch.nonzero((_raw(x[k : k + 1], ds) == ds.images).flatten(1).all(1))[0])
        for k in range(len(x))
    ]
    assert sorted(ids) == list(range(50)) and ids != list(range(50))
    assert torch.equal(y, ds.targets[ids])


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_ddp_ranks_concatenated_equal_one_process(task, drop_last):
    ds = _classification() if task == "classification" else _position_coded(n=50)
    crop = None if task == "classification" else 7
    one = DeviceLoader(ds, 16, train=True, seed=5, drop_last=drop_last, crop_size=crop)
    ranks = [
        DeviceLoader(
            ds, 8, train=True, seed=5, rank=r, world_size=2, drop_last=drop_last, crop_size=crop
        )
        for r in range(2)
    ]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == (3 if drop_last else 4)
    for epoch in (0, 1):
        for i in range(len(one)):
            x, y = one.batch(epoch, i)
            parts = [r.batch(epoch, i) for r in ranks]
            assert torch.equal(x, torch.cat([p[0] for p in parts]))
            assert torch.equal(y, torch.cat([p[1] for p in parts]))
    if not drop_last:  # the last global batch holds 50 - 48 = 2 samples, all on rank 0
        assert len(ranks[0].batch(0, 3)[1]) == 2 and len(ranks[1].batch(0, 3)[1]) == 0


def test_eval_loader_is_in_order_and_not_augmented():
    ds = _classification()
    loader = DeviceLoader(ds, 16, train=False)
    assert len(loader) == 4 and not loader.augment and not loader.drop_last
    x, y = _all(loader, 7)
    assert torch.equal(y, ds.targets)
    # Normalisation, computed independently in float64.
    mean = torch.tensor(ds.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float64).view(1, 3, 1, 1)
    expected = (ds.images.double() / 255 - mean) / std
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert (x.double() - expected).abs().max() < 1e-5


def _reference_crop_flip(img: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    h, w = img.shape[-2:]
    out = F.pad(img, (4, 4, 4, 4))[:, dy : dy + h, dx : dx + w]
    return out.flip(-1) if flip else out


def test_crop_flip_matches_reference():
    ds = _classification(n=20)
    g = torch.Generator().manual_seed(0)
    shift = torch.randint(0, 9, (20, 2), generator=g)
    flip = torch.randint(0, 2, (20,), generator=g).bool()
    out = crop_flip(ds.images, 4, shift, flip)
    for k in range(20):
        ref = _reference_crop_flip(ds.images[k], int(shift[k, 0]), int(shift[k, 1]), bool(flip[k]))
        assert torch.equal(out[k], ref)


def test_classification_augmentation_is_pad_crop_flip():
    ds = _classification(n=32)
    x, y = _all(DeviceLoader(ds, 16, train=True, seed=0), 0)
    seen = set()
    for k in range(len(x)):
        raw = _raw(x[k : k + 1], ds)[0]
        matches = [
            (dy, dx, flip)
            for i in torch.nonzero(ds.targets == y[k]).flatten().tolist()
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if torch.equal(raw, _reference_crop_flip(ds.images[i], dy, dx, flip))
        ]
        assert matches, f"augmented sample {k} is no pad-crop-flip of a source image of its class"
        seen.update(matches)
    assert len(seen) > 15 and {f for *_, f in seen} == {False, True}


def test_crop_dihedral_ops_are_the_documented_flips_and_rotations():
    x = torch.arange(2 * 5 * 5).view(1, 2, 5, 5)
    m = x[:, 0]
    expected = {
        0: lambda t: t,
        1: lambda t: t.flip(-1),
        2: lambda t: t.flip(-2),
        3: lambda t: torch.rot90(t, 2, dims=(-2, -1)),
        4: lambda t: t.transpose(-2, -1),
        5: lambda t: torch.rot90(t, 1, dims=(-2, -1)),
        6: lambda t: torch.rot90(t, -1, dims=(-2, -1)),
        7: lambda t: torch.rot90(t.transpose(-2, -1), 2, dims=(-2, -1)),
    }
    for op, fn in expected.items():
        out_x, out_m = crop_dihedral(
            x, m, torch.zeros(1, 2, dtype=torch.long), torch.tensor([op]), (5, 5)
        )
        assert torch.equal(out_x, fn(x)) and torch.equal(out_m, fn(m)), op


def _dihedral(crop: torch.Tensor) -> list[torch.Tensor]:
    return [torch.rot90(c, k, dims=(-2, -1)) for c in (crop, crop.flip(-1)) for k in range(4)]


@pytest.mark.parametrize("crop", [(6, 6), (5, 8)])
def test_segmentation_augmentation_keeps_image_and_mask_aligned(crop):
    ds = _position_coded(n=96)
    loader = DeviceLoader(ds, 32, train=True, seed=2, crop_size=crop)
    x, y = _all(loader, 0)
    raw = _raw(x, ds).long()
    # Alignment: at every pixel, the mask equals the code of the image pixel that landed there.
    assert torch.equal(y, raw[:, 0] * 10 + raw[:, 1])
    ops = set()
    for k in range(len(x)):
        r0, c0 = int(raw[k, 0].min()), int(raw[k, 1].min())
        h, w = crop if raw[k, 0].max() - r0 + 1 == crop[0] else crop[::-1]
        source = ds.images[int(raw[k, 2, 0, 0]), :, r0 : r0 + h, c0 : c0 + w]
        hits = [
            i
            for i, t in enumerate(_dihedral(source))
            if t.shape == raw[k].shape and torch.equal(t, raw[k].to(torch.uint8))
        ]
        assert hits, f"sample {k} is not a flip/rotation of a crop"
        ops.add(hits[0])
    # Square crops reach all 8 flips/rotations; others the 4 that keep the shape.
    assert len(ops) == (8 if crop[0] == crop[1] else 4)
    assert x.shape[-2:] == crop


def test_segmentation_default_is_full_size_and_eval_untouched():
    ds = _position_coded(n=16)
    x, y = DeviceLoader(ds, 16, train=True).batch(0, 0)
    assert x.shape == (16, 3, 10, 10)
    x, y = DeviceLoader(ds, 16, train=False, crop_size=4).batch(0, 0)
    assert torch.equal(_raw(x, ds), ds.images) and torch.equal(y, ds.targets)


def test_bad_arguments_raise():
    ds = _classification()
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 0"):
        DeviceLoader(ds, 0, train=True)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 1\]; got 2"):
        DeviceLoader(ds, 8, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="crop_size applies to segmentation"):
        DeviceLoader(ds, 8, train=True, crop_size=4)
    with pytest.raises(ValueError, match="leaves no batch from 50 samples"):
        DeviceLoader(ds, 32, train=True, world_size=2)
    with pytest.raises(ValueError, match="crop height must be an integer in"):
        DeviceLoader(_position_coded(), 8, train=True, crop_size=11)
    loader = DeviceLoader(ds, 8, train=True)
    with pytest.raises(ValueError, match=r"batch index must be an integer in \[0, 5\]; got 6"):
        loader.batch(0, 6)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        loader.batch(-1, 0)
    with pytest.raises(ValueError, match="dataset must be an ArrayDataset"):
        DeviceLoader(ds.images, 8, train=True)
