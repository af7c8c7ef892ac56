"""load_pretrained: the public CIFAR checkpoints, safe loading, clear errors."""

from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from skiplab import create_model
from skiplab.models import load_pretrained
from skiplab.models.pretrained import CIFAR_CHECKPOINT_MEAN, CIFAR_CHECKPOINT_STD

# Accuracy of the original checkpoints on the shared JPEG q75 copy of the CIFAR-10 test set,
# as the original code computes it (shared/README.md gives 81.03% for ResNet-20).
CHECKPOINTS = {
    "resnet20": ("resnet20-12fca82f.th", 91.78, 81.03),
    "resnet56": ("resnet56-4bfd9763.th", 93.62, 83.20),
}


def _decode_test_set(archive):
    # Independent of skiplab.data on purpose: tarfile + PIL, sorted class folders.
    images, labels = [], []
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.startswith("test/")]
        classes = sorted({m.name.split("/")[1] for m in members})
        for m in members:
            img = Image.open(io.BytesIO(tf.extractfile(m).read())).convert("RGB")
            images.append(np.asarray(img))
            labels.append(classes.index(m.name.split("/")[1]))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(CIFAR_CHECKPOINT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_CHECKPOINT_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor(labels)


@pytest.mark.slow
def test_public_cifar_checkpoints_reach_their_accuracy(shared_dir):
    x, y = _decode_test_set(shared_dir / "data" / "cifar10-jpeg.tar.gz")
    assert len(y) == 10_000
    for name, (filename, reported, expected) in CHECKPOINTS.items():
        model = create_model(name).eval()
        report = load_pretrained(model, shared_dir / "weights" / filename)
        assert report.reported_accuracy == pytest.approx(reported, abs=0.01)
        assert report.sha256.startswith(filename.split("-")[1].split(".")[0])
        assert any("module." in c for c in report.conversions)
        with torch.no_grad():
            pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
        accuracy = 100 * (pred == y).double().mean().item()
        assert accuracy == pytest.approx(expected, abs=0.05), name


def test_round_trip_through_safetensors(tmp_path):
    model = create_model("resnet20").eval()
    path = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(path))
    other = create_model("resnet20").eval()
    report = load_pretrained(other, path)
    assert report.conversions == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_legacy_layout_is_converted(tmp_path):
    # The layout of the public checkpoints: wrapper dict, module. prefix, 'linear', no counters.
    model = create_model("resnet20")
    state = {
        ("module." + k.replace("fc.", "linear.")): v
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    path = tmp_path / "legacy.th"
    torch.save({"best_prec1": 50.0, "state_dict": state}, path)
    other = create_model("resnet20")
    report = load_pretrained(other, path)
    assert report.reported_accuracy == 50.0
    assert len(report.conversions) == 4
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k


def test_mismatched_architecture_names_the_keys(tmp_path):
    path = tmp_path / "r56.pth"
    torch.save(create_model("resnet56").state_dict(), path)
    with pytest.raises(ValueError, match=r"unexpected keys \['layer1\.3"):
        load_pretrained(create_model("resnet20"), path)
    torch.save(create_model("resnet20", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches, e.g. fc.weight"):
        load_pretrained(create_model("resnet20"), path)


class _Payload:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": _Payload(sentinel)}, fh)
    with pytest.raises(ValueError, match="refusing to load .*evil.pth.*execute code"):
        load_pretrained(create_model("resnet20"), path)
    assert not sentinel.exists()


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(create_model("resnet20"), tmp_path / "nope.pth")
    bad = tmp_path / "half.safetensors"
    save_file(create_model("resnet20").state_dict(), str(bad))
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(ValueError, match="half.safetensors"):
        load_pretrained(create_model("resnet20"), bad)
