"""Image-folder trees (folder or tar): layout checks, exact pixels, and the checked cache."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import skiplab.data.imagefolder as imagefolder
from skiplab.data import load_dataset
from tests.data._fixtures import make_imagefolder, png_bytes, tar_folder


@pytest.fixture
def tree(tmp_path: Path):
    written = make_imagefolder(tmp_path / "tree")
    return tmp_path / "tree", tmp_path / "cache", written


def _expected(written, split):
    # Classes in sorted folder order ("ant" before "cat"), files in name order.
    classes = sorted(written[split])
    images = [img for c in classes for img in written[split][c]]
    labels = [i for i, c in enumerate(classes) for _ in written[split][c]]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), torch.tensor(labels)


def _forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache should have been used")

    monkeypatch.setattr(imagefolder, "decode_image", fail)


@pytest.mark.parametrize("split", ["train", "test"])
def test_folder_loads_exact_pixels_then_uses_cache(tree, split, monkeypatch):
    root, cache, written = tree
    ds = load_dataset("imagefolder", split, data_dir=root, cache_dir=cache)
    x, y = _expected(written, split)
    assert ds.classes == ("ant", "cat")
    assert torch.equal(ds.images, x) and torch.equal(ds.targets, y)
    assert ds.images.is_contiguous() and "fingerprint" in ds.source
    # Statistics of the train split, computed independently in float64.
    train = _expected(written, "train")[0].double() / 255
    assert ds.mean == pytest.approx(train.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert ds.std == pytest.approx(train.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-9)
    assert len(list(cache.glob("imagefolder-*.safetensors"))) == 2  # both splits cached
    _forbid_decoding(monkeypatch)
    again = load_dataset("imagefolder", split, data_dir=root, cache_dir=cache)
    assert torch.equal(again.images, x) and again.classes == ds.classes and again.mean == ds.mean


def test_archive_equals_folder(tree, tmp_path: Path):
    root, cache, written = tree
    for suffix in (".tar", ".tar.gz"):
        archive = tar_folder(root, tmp_path / f"tree{suffix}")
        ds = load_dataset("imagefolder", "test", data_dir=archive, cache_dir=cache)
        x, y = _expected(written, "test")
        assert torch.equal(ds.images, x) and torch.equal(ds.targets, y)
        assert "sha256" in ds.source


def test_changed_folder_is_decoded_again(tree):
    root, cache, written = tree
    load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
    new = np.full((8, 8, 3), 7, np.uint8)
    (root / "train" / "ant" / "000.png").write_bytes(png_bytes(new))
    ds = load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
    assert torch.equal(ds.images[0], torch.from_numpy(new).permute(2, 0, 1))


@pytest.mark.parametrize("damage", ["flip a byte", "truncate"])
def test_corrupt_cache_is_reported_and_rebuilt(tree, damage, monkeypatch):
    root, cache, written = tree
    load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
    (path,) = cache.glob("imagefolder-*-train.safetensors")
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[-5] ^= 0xFF  # inside the image tensor
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"cache file .*{path.name} is corrupt.*rebuilding"):
        ds = load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
    assert torch.equal(ds.images, _expected(written, "train")[0])
    _forbid_decoding(monkeypatch)  # the rebuilt file is good again
    load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)


def _layout_error(root: Path, cache: Path, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)


LAYOUT = r"expected the image-folder layout train/<class>/\*.*in .*tree; found "


def test_layout_errors(tree):
    root, cache, _ = tree
    (root / "train" / "ant" / "notes.txt").write_text("x")
    _layout_error(root, cache, LAYOUT + r"the file 'train/ant/notes.txt', which is not a")
    os.remove(root / "train" / "ant" / "notes.txt")
    (root / "train" / "loose.png").write_bytes(b"")
    _layout_error(root, cache, LAYOUT + r"the file 'train/loose.png' \(files must sit exactly")
    os.remove(root / "train" / "loose.png")
    (root / "test" / "bee").mkdir()
    _layout_error(root, cache, LAYOUT + r"the empty class folder test/bee/")
    (root / "test" / "bee" / "0.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    _layout_error(root, cache, LAYOUT + r"different classes in train/ \['ant', 'cat'\] and test/")
    shutil.rmtree(root / "test")
    _layout_error(root, cache, LAYOUT + r"no class folders under test/")


def test_image_errors(tree):
    root, cache, _ = tree
    bad = root / "train" / "cat" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _layout_error(root, cache, rf"cannot decode image .*{bad.relative_to(root)}")
    bad.write_bytes(png_bytes(np.zeros((9, 8, 3), np.uint8)))
    _layout_error(root, cache, r"must share one size and mode; .* is 8x8 RGB but .*001.png is 8x9")
    bad.write_bytes(png_bytes(np.zeros((8, 8, 4), np.uint8)))
    _layout_error(root, cache, r"image mode 'RGBA' is not one of \['L', 'RGB'\]")


def test_archive_member_refused_before_decoding(tree, tmp_path: Path, monkeypatch):
    root, cache, _ = tree
    archive = tar_folder(root, tmp_path / "tree.tar")
    info = tarfile.TarInfo("train/cat/link.png")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with tarfile.open(archive, "a") as tf:
        tf.addfile(info)
    _forbid_decoding(monkeypatch)
    with pytest.raises(ValueError, match="member 'train/cat/link.png' is a symbolic link"):
        load_dataset("imagefolder", "train", data_dir=archive, cache_dir=cache)
    assert not cache.exists()


def test_cifar10_name_checks_the_classes(tree):
    root, cache, _ = tree
    with pytest.raises(ValueError, match=r"classes \['ant', 'cat'\], but cifar10 has 10 classes"):
        load_dataset("cifar10", "train", data_dir=root, cache_dir=cache)
