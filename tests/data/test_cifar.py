"""The official CIFAR python format: layouts, contents, and pickles that must not run code."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from skiplab.data import load_dataset
from skiplab.data.cifar import CIFAR, read_pickle
from tests.data._fixtures import make_cifar_folder, py2_pickle, tar_folder


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar10")
    expected = make_cifar_folder(root, "cifar10", per_batch=5)
    (root.parent / "cifar10_archive").mkdir()
    tar_folder(root, root.parent / "cifar10_archive" / "cifar-10-python.tar.gz")
    return root, expected


def _check(ds, expected, split, name="cifar10"):
    images, labels = expected[split]
    assert ds.images.shape == (len(labels), 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images, torch.from_numpy(images))
    assert torch.equal(ds.targets, torch.from_numpy(labels))
    assert ds.classes == tuple(f"class_{j}" for j in range(CIFAR[name].num_classes))
    assert ds.mean == CIFAR[name].mean and ds.std == CIFAR[name].std
    assert ds.task == "classification" and f"{name} {split}" in ds.source


@pytest.mark.parametrize("split", ["train", "test"])
def test_folder_layouts(cifar10, split):
    root, expected = cifar10
    _check(load_dataset("cifar10", split, data_dir=root), expected, split)
    _check(load_dataset("cifar10", split, data_dir=root / "cifar-10-batches-py"), expected, split)


@pytest.mark.parametrize("split", ["train", "test"])
def test_archive_layouts(cifar10, split):
    root, expected = cifar10
    folder = root.parent / "cifar10_archive"
    for data_dir in (folder, folder / "cifar-10-python.tar.gz"):
        ds = load_dataset("cifar10", split, data_dir=data_dir)
        _check(ds, expected, split)
        assert "sha256" in ds.source


def test_pixel_layout_is_channel_major(tmp_path: Path):
    # The CIFAR page: "the first 1024 entries contain the red channel values, the next 1024
    # the green, and the final 1024 the blue. The image is stored in row-major order".
    make_cifar_folder(tmp_path, "cifar10", per_batch=2)
    data = np.zeros((2, 3072), np.uint8)
    data[1, 1024 + 2 * 32 + 3] = 200  # image 1, green, row 2, column 3
    batch = {"data": data, "labels": [4, 7]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle(batch))
    ds = load_dataset("cifar10", "test", data_dir=tmp_path)
    assert ds.images[1, 1, 2, 3] == 200 and int(ds.images.sum()) == 200
    assert ds.targets.tolist() == [4, 7]


def test_cifar100_fine_labels(tmp_path: Path):
    expected = make_cifar_folder(
        tmp_path, "cifar100", per_batch=7, numpy_module="numpy.core.multiarray"
    )  # numpy-1 era name
    _check(load_dataset("cifar100", "train", data_dir=tmp_path), expected, "train", "cifar100")


def test_missing_batch_names_the_layout(tmp_path: Path):
    make_cifar_folder(tmp_path, "cifar10", per_batch=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(
        ValueError, match=r"cifar-10-batches-py/ with files .* lacks \['data_batch_3'\]"
    ):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_nothing_found_names_layouts_and_download(tmp_path: Path):
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(ValueError) as info:
        load_dataset("cifar10", "train", data_dir=tmp_path)
    msg = str(info.value)
    for part in (
        "cifar-10-batches-py/",
        "cifar-10-python.tar.gz",
        "train/<class>",
        str(tmp_path),
        "stray.txt",
        "download=True",
    ):
        assert part in msg


class _Payload:
    """Unpickling this calls os.system, which would create the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_malicious_pickle_is_not_executed(tmp_path: Path):
    # The payload is live: a plain unpickler runs it.
    live = tmp_path / "live_sentinel"
    pickle.loads(pickle.dumps({"data": _Payload(live)}, protocol=2))
    assert live.exists()

    make_cifar_folder(tmp_path, "cifar10", per_batch=2)
    sentinel = tmp_path / "sentinel"
    evil = pickle.dumps({"data": _Payload(sentinel), "labels": [0]}, protocol=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(evil)
    with pytest.raises(
        ValueError, match=r"refusing to unpickle .*data_batch_1.*global posix\.system"
    ):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        ({"data": np.zeros((2, 3072), np.uint8)}, "numpy._core.numeric._frombuffer"),  # proto 5
        ({"x": bytes(3)}, "_codecs.encode"),  # Python 3 bytes at protocol 2
    ],
)
def test_only_the_allowed_globals(payload, refused):
    protocol = 5 if "data" in payload else 2
    with pytest.raises(ValueError, match=f"global {refused}"):
        read_pickle(pickle.dumps(payload, protocol=protocol), "test.pkl")
    assert read_pickle(py2_pickle(payload), "ok.pkl").keys() == payload.keys()


def test_bad_batch_contents(tmp_path: Path):
    make_cifar_folder(tmp_path, "cifar10", per_batch=2)
    bad = {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle(bad))
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be a uint8 array \(N, 3072\)"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    bad = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle(bad))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]; got \[0, 10\]"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_archive_with_a_link_is_refused(tmp_path: Path):
    make_cifar_folder(tmp_path / "src", "cifar10", per_batch=2)
    archive = tar_folder(tmp_path / "src", tmp_path / "cifar-10-python.tar")
    info = tarfile.TarInfo("cifar-10-batches-py/extra")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with tarfile.open(archive, "a") as tf:
        tf.addfile(info)
    bad = tmp_path / "gz"
    bad.mkdir()
    with tarfile.open(archive) as src, tarfile.open(bad / "cifar-10-python.tar.gz", "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
    with pytest.raises(ValueError, match="member 'cifar-10-batches-py/extra' is a symbolic link"):
        load_dataset("cifar10", "train", data_dir=bad)
