"""The real data in ../shared: the CIFAR-10 JPEG archive and ISBI 2012 (skipped when absent)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skiplab.data import load_dataset
from skiplab.data.cifar import CIFAR
from skiplab.data.datasets import CIFAR10_CLASSES
from skiplab.data.segmentation import isbi_split


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("skiplab_cache")


@pytest.mark.slow
def test_cifar10_jpeg_archive(shared_dir: Path, cache_dir: Path, monkeypatch):
    archive = shared_dir / "data" / "cifar10-jpeg.tar.gz"
    train = load_dataset("cifar10", "train", data_dir=archive, cache_dir=cache_dir)
    test = load_dataset("cifar10", "test", data_dir=archive, cache_dir=cache_dir)
    assert train.images.shape == (50000, 3, 32, 32) and test.images.shape == (10000, 3, 32, 32)
    assert train.classes == CIFAR10_CLASSES == test.classes
    assert torch.bincount(train.targets).tolist() == [5000] * 10
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    assert train.mean == CIFAR["cifar10"].mean and "sha256 d34c68f6" in train.source

    # Independent decode: sample 0 of each split is the first file of its first class folder.
    with tarfile.open(archive) as tf:
        for split, ds in (("train", train), ("test", test)):
            names = sorted(m for m in tf.getnames() if m.startswith(f"{split}/airplane/"))
            img = np.array(Image.open(io.BytesIO(tf.extractfile(names[0]).read())))
            assert torch.equal(ds.images[0], torch.from_numpy(img).permute(2, 0, 1))

    # The second load reads the checked cache: no image is opened (decoding would fail here).
    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded although the cache holds the split")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = load_dataset("cifar10", "train", data_dir=archive, cache_dir=cache_dir)
    assert torch.equal(again.images, train.images) and torch.equal(again.targets, train.targets)


@pytest.mark.slow
def test_isbi2012(shared_dir: Path):
    root = shared_dir / "data" / "isbi2012-membrane"
    train = load_dataset("isbi2012", "train", data_dir=root)
    val = load_dataset("isbi2012", "val", data_dir=root)
    assert train.images.shape == (25, 1, 512, 512) and val.images.shape == (5, 1, 512, 512)
    assert train.targets.shape == (25, 512, 512) and train.classes == ("membrane", "cell")
    _, val_idx = isbi_split(0)
    for k, i in enumerate(val_idx):
        label = np.asarray(Image.open(root / "train" / "label" / f"{i}.png"))
        assert torch.equal(val.targets[k], torch.from_numpy(label == 255).long())
    cell = float(train.targets.float().mean())
    assert 0.6 < cell < 0.9, cell  # mostly cell interior, thin membranes
