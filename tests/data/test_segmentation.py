"""ISBI 2012 and segfolder layouts: pairing, label mapping, the seeded split and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skiplab.data import load_dataset
from skiplab.data.segmentation import isbi_split
from tests.data._fixtures import png_bytes


def _write_pairs(folder: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> None:
    (folder / "image").mkdir(parents=True)
    (folder / "label").mkdir(parents=True)
    for i, (img, mask) in enumerate(zip(images, masks, strict=True)):
        (folder / "image" / f"{i}.png").write_bytes(png_bytes(img))
        (folder / "label" / f"{i}.png").write_bytes(png_bytes(mask))


@pytest.fixture
def isbi(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (12, 10), dtype=np.uint8) for _ in range(30)]
    masks = [np.where(rng.random((12, 10)) < 0.7, 255, 0).astype(np.uint8) for _ in range(30)]
    _write_pairs(tmp_path / "isbi" / "train", images, masks)
    return tmp_path / "isbi", images, masks


def test_isbi_split_and_label_mapping(isbi):
    root, images, masks = isbi
    train = load_dataset("isbi2012", "train", data_dir=root)
    val = load_dataset("isbi2012", "val", data_dir=root)
    train_idx, val_idx = isbi_split(0)
    assert len(train) == 25 and len(val) == 5
    assert sorted(train_idx + val_idx) == list(range(30))
    assert f"validation images {val_idx}" in val.source
    # Natural order: image i of a split is file str(i).png, not "10.png" after "1.png".
    for ds, idx in ((train, train_idx), (val, val_idx)):
        assert ds.images.shape == (len(idx), 1, 12, 10) and ds.targets.shape == (len(idx), 12, 10)
        for k, i in enumerate(idx):
            assert torch.equal(ds.images[k, 0], torch.from_numpy(images[i]))
            assert torch.equal(ds.targets[k], torch.from_numpy(masks[i] // 255).long())
    assert train.classes == ("membrane", "cell") and train.task == "segmentation"
    pixels = np.stack([images[i] for i in train_idx]).astype(np.float64) / 255
    assert train.mean == pytest.approx((pixels.mean(),)) and val.mean == train.mean
    assert train.std == pytest.approx((pixels.std(),))


def test_isbi_split_is_fixed_per_seed():
    assert isbi_split(0)[1] == [0, 13, 16, 20, 27]  # pinned: results files name this split
    assert isbi_split(0)[1] != isbi_split(1)[1]
    assert len(set(isbi_split(3)[1])) == 5


def test_isbi_errors(isbi):
    root, _, _ = isbi
    label = root / "train" / "label"
    (label / "3.png").write_bytes(png_bytes(np.full((12, 10), 128, np.uint8)))
    with pytest.raises(
        ValueError,
        match=r"label .*3\.png has pixel values \[128\] outside the "
        r"classes \['membrane', 'cell'\]",
    ):
        load_dataset("isbi2012", "train", data_dir=root)
    (label / "3.png").write_bytes(png_bytes(np.zeros((11, 10), np.uint8)))
    with pytest.raises(ValueError, match=r"mask .*3\.png is 10x11 but its image .*3\.png is 10x12"):
        load_dataset("isbi2012", "train", data_dir=root)
    (label / "3.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"cannot decode image .*label/3\.png"):
        load_dataset("isbi2012", "train", data_dir=root)
    (label / "3.png").unlink()
    with pytest.raises(ValueError, match=r"missing pair: .*image/3\.png has no matching .*label/3"):
        load_dataset("isbi2012", "train", data_dir=root)
    (root / "train" / "image" / "3.png").unlink()
    with pytest.raises(
        ValueError,
        match=r"expected the layout train/image/\{0\.\.29\}\.png .* "
        r"\(29 files\)",
    ):
        load_dataset("isbi2012", "val", data_dir=root)
    with pytest.raises(ValueError, match=r"expected the layout .*isbi/nowhere/train/image is not"):
        load_dataset("isbi2012", "train", data_dir=root / "nowhere")


def test_segfolder(tmp_path: Path):
    rng = np.random.default_rng(1)
    root = tmp_path / "seg"
    for split, n in (("train", 4), ("test", 2)):
        imgs = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(n)]
        masks = [rng.integers(0, 3, (6, 5), dtype=np.uint8) for _ in range(n)]
        _write_pairs(root / split, imgs, masks)
        if split == "test":
            test_imgs, test_masks = imgs, masks
    with pytest.raises(ValueError, match=r"expected the layout classes\.txt, .* found \['test', "):
        load_dataset("segfolder", "test", data_dir=root)
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    ds = load_dataset("segfolder", "test", data_dir=root)
    assert ds.classes == ("sky", "road", "car") and ds.images.shape == (2, 3, 6, 5)
    assert torch.equal(ds.images, torch.from_numpy(np.stack(test_imgs)).permute(0, 3, 1, 2))
    assert torch.equal(ds.targets, torch.from_numpy(np.stack(test_masks)).long())
    assert ds.mean == load_dataset("segfolder", "train", data_dir=root).mean  # train stats
    (root / "classes.txt").write_text("sky\nroad\n")
    with pytest.raises(ValueError, match=r"pixel values \[2\] outside the classes \['sky', 'road'"):
        load_dataset("segfolder", "test", data_dir=root)
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    (root / "train" / "label" / "0.png").unlink()
    (root / "train" / "label" / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"expected only \.png files in .*label .*\['x\.jpg'\]"):
        load_dataset("segfolder", "train", data_dir=root)
    for f in (root / "train" / "label").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=r"train/label is empty"):
        load_dataset("segfolder", "train", data_dir=root)
