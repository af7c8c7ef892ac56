"""Synthetic datasets: deterministic from the seed, balanced, masks consistent with images."""

from __future__ import annotations

import pytest
import torch

from skiplab.data import load_dataset, make_classification, make_segmentation
from skiplab.data.synthetic import CLASSES, SEG_SHAPES


def test_classification_is_deterministic_and_balanced():
    a = make_classification("train", seed=0, num_train=200, num_test=50)
    b = make_classification("train", seed=0, num_train=200, num_test=50)
    c = make_classification("train", seed=1, num_train=200, num_test=50)
    assert a.images.shape == (200, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert a.mean == b.mean and a.std == b.std
    assert not torch.equal(a.images, c.images) and not torch.equal(a.targets, c.targets)
    assert torch.bincount(a.targets, minlength=10).tolist() == [20] * 10
    assert len(a.classes) == len(CLASSES) == 10 and len(set(a.classes)) == 10
    assert "seed=0" in a.source
    # Unbalanced sizes differ by at most one per class.
    counts = torch.bincount(make_classification("test", num_train=20, num_test=23).targets)
    assert counts.max() - counts.min() <= 1


def test_train_and_test_are_different_draws():
    train = make_classification("train", num_train=100, num_test=100)
    test = make_classification("test", num_train=100, num_test=100)
    assert not torch.equal(train.images, test.images)
    assert test.mean == train.mean  # normalisation from the training split
    # No test image is a copy of a training image.
    assert (test.images.flatten(1)[:, None] != train.images.flatten(1)[None]).any(-1).all()


def test_images_are_not_trivial():
    ds = make_classification("train", num_train=200)
    # Every class varies in mean colour (random colours), so no single pixel statistic names it.
    per_class_std = torch.stack(
        [ds.images[ds.targets == k].float().mean(dim=(1, 2, 3)).std() for k in range(10)]
    )
    assert (per_class_std > 10).all()


def test_segmentation_masks_follow_the_shapes():
    a = make_segmentation("train", seed=0, num_train=40, size=32, num_classes=4)
    b = make_segmentation("train", seed=0, num_train=40, size=32, num_classes=4)
    c = make_segmentation("train", seed=2, num_train=40, size=32, num_classes=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.targets, c.targets)
    assert a.images.shape == (40, 3, 32, 32) and a.targets.shape == (40, 32, 32)
    assert a.classes == ("background",) + SEG_SHAPES and a.task == "segmentation"
    assert set(a.targets.unique().tolist()) == {0, 1, 2, 3}
    # Every image has some shape pixels and some background.
    fg = (a.targets > 0).flatten(1).float().mean(1)
    assert (fg > 0).all() and (fg < 1).all()


def test_load_dataset_names_and_errors():
    ds = load_dataset("synthetic-seg", "test", seed=3)
    assert ds.images.shape == (200, 3, 64, 64) and len(ds.classes) == 3
    with pytest.raises(ValueError, match="takes no data_dir"):
        load_dataset("synthetic", "train", data_dir="/tmp")
    with pytest.raises(ValueError, match=r"synthetic has splits \['train', 'test'\]; got 'val'"):
        load_dataset("synthetic", "val")
    with pytest.raises(ValueError, match="seed must be an integer >= 0; got -1"):
        load_dataset("synthetic", "train", seed=-1)
    with pytest.raises(ValueError, match="num_classes must be 2, 3 or 4; got 5"):
        make_segmentation("train", num_classes=5)
    with pytest.raises(ValueError, match=r"unknown dataset 'synthetics'; did you mean synthetic"):
        load_dataset("synthetics", "train")
