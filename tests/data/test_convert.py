"""ArrayDataset as a PyTorch Dataset, and torch/torchvision datasets turned into one."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from skiplab.cli import main
from skiplab.data import ArrayDataset, from_torch_dataset, load_dataset, make_classification


def test_array_dataset_is_a_torch_dataset():
    ds = make_classification("test", 0)
    assert isinstance(ds, torch.utils.data.Dataset)
    image, target = ds[3]
    assert torch.equal(image, ds.images[3]) and int(target) == int(ds.targets[3])
    assert torch.equal(ds[-1][0], ds.images[len(ds) - 1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert x.shape == (4, *ds.images.shape[1:]) and x.dtype == torch.uint8
    assert torch.equal(y, ds.targets[:4])


def test_torchvision_fakedata_pil_images():
    fake = torchvision.datasets.FakeData(size=6, image_size=(3, 8, 10), num_classes=4)
    ds = from_torch_dataset(fake)
    assert ds.images.shape == (6, 3, 8, 10) and ds.task == "classification"
    image, target = fake[2]
    assert torch.equal(ds.images[2], torch.from_numpy(np.array(image)).permute(2, 0, 1))
    assert int(ds.targets[2]) == int(target)
    assert ds.classes == tuple(str(k) for k in range(int(ds.targets.max()) + 1))
    assert ds.source == "FakeData (6 samples)" and len(ds.mean) == 3


def test_float_tensors_and_segmentation_masks():
    uint8 = torch.randint(0, 256, (5, 1, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1, 0])
    ds = from_torch_dataset(TensorDataset(uint8.float() / 255, labels), classes=("a", "b", "c"))
    assert torch.equal(ds.images, uint8) and torch.equal(ds.targets, labels)  # ToTensor undone
    masks = torch.randint(0, 2, (5, 4, 4))
    seg = from_torch_dataset([(uint8[i], masks[i].numpy()) for i in range(5)])  # a list works
    assert seg.task == "segmentation" and torch.equal(seg.targets, masks)
    assert seg.classes == ("0", "1")


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(1, 2, 2), 0


def test_bad_datasets_are_refused_with_the_index():
    with pytest.raises(ValueError, match="map-style dataset.*got Stream"):
        from_torch_dataset(Stream())
    with pytest.raises(ValueError, match=r"item 1: a float image must lie in \[0, 1\]"):
        from_torch_dataset([(torch.zeros(1, 2, 2), 0), (torch.full((1, 2, 2), 3.0), 1)])
    with pytest.raises(ValueError, match=r"item 1: image \(1, 3, 3\).*item 0 had \(1, 2, 2\)"):
        from_torch_dataset([(torch.zeros(1, 2, 2), 0), (torch.zeros(1, 3, 3), 1)])
    with pytest.raises(ValueError, match="item 0: a PIL image of mode 'P'; expected L or RGB"):
        from_torch_dataset([(Image.new("P", (2, 2)), 0)])
    with pytest.raises(
        ValueError, match="item 0 of list: expected \\(image, target\\); got Tensor"
    ):
        from_torch_dataset([torch.zeros(1, 2, 2)])


def write_mnist(root, rng) -> dict[str, np.ndarray]:
    """The four IDX files torchvision.datasets.MNIST reads (root/MNIST/raw), made up."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", 12), ("t10k", 5)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">4i", 2051, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">2i", 2049, n) + labels.tobytes()
        )
        out[prefix] = images
    return out


def test_torchvision_mnist_by_name_and_through_the_cli(tmp_path, capsys):
    written = write_mnist(tmp_path / "data", np.random.default_rng(0))
    train = load_dataset("torchvision:MNIST", "train", data_dir=tmp_path / "data")
    test = load_dataset("torchvision:MNIST", "test", data_dir=tmp_path / "data")
    assert train.images.shape == (12, 1, 28, 28) and len(test) == 5
    assert torch.equal(test.images[:, 0], torch.from_numpy(written["t10k"]))
    assert train.classes[0] == "0 - zero" and test.mean == train.mean  # train statistics
    assert train.mean[0] == pytest.approx(written["train"].mean() / 255)
    with pytest.raises(ValueError, match="torchvision.datasets has no dataset class 'MNSIT'"):
        load_dataset("torchvision:MNSIT", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="torchvision:MNIST train not found under"):
        load_dataset("torchvision:MNIST", "train", data_dir=tmp_path / "empty")
    args = ["train", "--model", "resnet20", "--model-arg", "layers=[1,1,1]"]
    args += ["--data", "torchvision:MNIST", "--data-dir", str(tmp_path / "data"), "--steps", "2"]
    args += ["--batch-size", "4", "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*args, "--progress", "off"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 2
    assert isinstance(train, ArrayDataset)
