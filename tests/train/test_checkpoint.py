"""Checkpoint files: atomic writes, pruning, leftovers, corruption, and unsafe content."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from skiplab.cli import main
from skiplab.train.checkpoint import (
    InvalidCheckpoint,
    atomic_write,
    clean_leftovers,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    write_checkpoint,
)


def _write(folder: Path, step: int, keep: int = 5) -> Path:
    weights = {"w": torch.full((3, 3), float(step)), "b": torch.arange(step + 1.0)}
    state = {
        "step": step,
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}},
        "rng": [{"torch": torch.get_rng_state()}],
        "config": {"lr": 0.1},
    }
    return write_checkpoint(
        folder, step=step, epoch=0, position=step, weights=weights, state=state, meta={}, keep=keep
    )


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    digest = atomic_write(tmp_path / "a.bin", b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
    atomic_write(tmp_path / "a.bin", b"bye")  # replaces
    assert (tmp_path / "a.bin").read_bytes() == b"bye"


def test_round_trip_keep_last_and_leftovers(tmp_path):
    for step in (1, 2, 3):
        _write(tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-00000003.json",
        "step-00000002.json",
    ]
    ckpt = load_checkpoint(tmp_path / "step-00000003.json")
    assert torch.equal(ckpt.weights["w"], torch.full((3, 3), 3.0))
    assert torch.equal(ckpt.state["optimizer"]["state"][0]["momentum_buffer"], torch.ones(2))
    with safe_open(str(tmp_path / "step-00000003.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt"}  # what transformers/timm loaders check
    # A write cut off after the data files but before the manifest, and a temporary file.
    (tmp_path / "step-00000004.safetensors").write_bytes(b"partial")
    (tmp_path / ".tmp-step-00000004.state.pt.123").write_bytes(b"partial")
    removed = clean_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == [
        ".tmp-step-00000004.state.pt.123",
        "step-00000004.safetensors",
    ]
    assert len(list(tmp_path.iterdir())) == 6  # two complete checkpoints untouched


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_invalid_checkpoint_falls_back_to_previous(tmp_path, damage):
    _write(tmp_path, 1)
    newest = _write(tmp_path, 2)
    weights = tmp_path / "step-00000002.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-10])
        reason = "truncated"
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
        reason = "sha256 mismatch"
    elif damage == "manifest":
        newest.write_text(newest.read_text()[:20])
        reason = "unreadable manifest"
    else:
        (tmp_path / "step-00000002.state.pt").unlink()
        reason = "missing"
    lines = []
    ckpt = load_latest(tmp_path, lines.append)
    assert ckpt.step == 1
    assert f"checkpoint step-00000002.json is invalid: {tmp_path}" in lines[0]
    assert reason in lines[0]
    assert (
        "using checkpoint" in lines[-1] and "step-00000001.json (an older, valid one)" in lines[-1]
    )
    # Set aside, never considered again.
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000001.json"]
    assert any(p.name.endswith(".invalid") for p in tmp_path.iterdir())


def test_no_valid_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        load_latest(tmp_path)
    _write(tmp_path, 1)
    (tmp_path / "step-00000001.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="no valid checkpoint in .*truncated"):
        load_latest(tmp_path, lambda _: None)


class _Payload:
    """Unpickling this calls open(path, "w"): it creates the sentinel file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _malicious_state(tmp_path: Path) -> tuple[bytes, Path]:
    sentinel = tmp_path / "sentinel"
    data = pickle.dumps({"step": 2, "optimizer": _Payload(sentinel)}, protocol=2)
    # Control: unsafe unpickling really runs the payload (so the tests below can fail).
    control = tmp_path / "control-sentinel"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()
    return data, sentinel


def test_malicious_state_file_is_not_executed(tmp_path):
    folder = tmp_path / "checkpoints"
    _write(folder, 1)
    manifest = _write(folder, 2)
    data, sentinel = _malicious_state(tmp_path)
    state = folder / "step-00000002.state.pt"
    state.write_bytes(data)
    # An attacker who can write the file can also fix the digest: the checksum passes.
    entry = json.loads(manifest.read_text())
    entry["files"]["state"].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest.write_text(json.dumps(entry))
    with pytest.raises(InvalidCheckpoint, match="refusing to load .*would execute code"):
        load_checkpoint(manifest)
    lines = []
    assert load_latest(folder, lines.append).step == 1
    assert "would execute code" in lines[0]
    assert not sentinel.exists()


def test_eval_refuses_malicious_weights_file(tmp_path, capsys):
    data, sentinel = _malicious_state(tmp_path)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(data)
    code = main(
        [
            "eval",
            "--checkpoint",
            str(evil),
            "--model",
            "resnet20",
            "--data",
            "synthetic",
            "--device",
            "cpu",
        ]
    )
    assert code == 2
    assert "refusing to load" in capsys.readouterr().err
    assert not sentinel.exists()
