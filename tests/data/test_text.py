"""Character-level text: the generated copy task, tinyshakespeare from a path or a download
(against a local server, with the pinned checksum swapped for a small body's), the loader's
windows, and the real file in ../shared (skipped when absent)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from skiplab.data import DownloadError, TextDataset, TextLoader, bits_per_char, load_dataset
from skiplab.data import text as text_module
from skiplab.data.text import (
    SYNTHETIC_TEXT_BITS_PER_CHAR,
    TINYSHAKESPEARE_BYTES,
    TINYSHAKESPEARE_SHA256,
    download_tinyshakespeare,
    make_copy_text,
)
from tests.data.test_download import Handler, server  # noqa: F401  (the local server fixture)

# -- the generated task ---------------------------------------------------------------------------


def test_synthetic_text_is_the_copy_task():
    train = load_dataset("synthetic-text", "train")
    val = load_dataset("synthetic-text", "val")
    assert isinstance(train, TextDataset) and train.task == "language_modeling"
    assert (len(train), len(val)) == (200_000, 20_000)
    assert train.vocab == tuple("\n" + "abcdefghij" + "|") == val.classes
    lines = train.decode(train.tokens[:5000]).split("\n")[:-1]  # the last one may be cut
    assert len(lines) > 300
    for line in lines:
        first, second = line.split("|")
        assert first == second and 3 <= len(first) <= 6 and set(first) <= set("abcdefghij")
    lengths = torch.tensor([len(line.split("|")[0]) for line in lines]).bincount(minlength=7)
    assert (lengths[3:] > 40).all()  # every length occurs
    assert not torch.equal(train.tokens[:1000], val.tokens[:1000])  # unrelated streams


def test_synthetic_text_is_a_function_of_the_seed():
    a, b = make_copy_text("val", seed=3), make_copy_text("val", seed=3)
    assert torch.equal(a.tokens, b.tokens) and a.source == "synthetic-text val: seed 3"
    assert not torch.equal(a.tokens, make_copy_text("val", seed=4).tokens)
    assert len(make_copy_text("train", chars=1001)) == 1001
    with pytest.raises(
        ValueError, match=r"synthetic-text has splits \['train', 'val'\]; got 'test'"
    ):
        load_dataset("synthetic-text", "test")
    with pytest.raises(ValueError, match="takes no data_dir"):
        load_dataset("synthetic-text", "train", data_dir="somewhere")


def test_the_floor_of_the_copy_task():
    # (4.5 letters * log2(10) + log2(4) for the length) per 11 characters.
    assert SYNTHETIC_TEXT_BITS_PER_CHAR == pytest.approx((4.5 * math.log2(10) + 2) / 11)
    assert SYNTHETIC_TEXT_BITS_PER_CHAR == pytest.approx(1.5408, abs=1e-4)
    # The empirical entropy of the letters given nothing (unigram) is far above the floor.
    ds = make_copy_text("val")
    p = ds.tokens.bincount(minlength=len(ds.vocab)).double() / len(ds)
    unigram = -(p[p > 0] * p[p > 0].log2()).sum().item()
    assert unigram > SYNTHETIC_TEXT_BITS_PER_CHAR + 1.5
    assert bits_per_char(math.log(2)) == 1.0


def test_text_dataset_checks_and_round_trip():
    ds = TextDataset(torch.tensor([0, 1, 2, 1]), ("a", "b", "c"), "test")
    assert ds.decode(ds.tokens) == "abcb" and torch.equal(ds.encode("cab"), torch.tensor([2, 0, 1]))
    with pytest.raises(ValueError, match=r"characters \['z'\] are not in the vocabulary"):
        ds.encode("az")
    with pytest.raises(
        ValueError, match=r"tokens must lie in \[0, 2\] \(3 characters\); got .*3\]"
    ):
        TextDataset(torch.tensor([0, 3]), ("a", "b", "c"), "test")
    with pytest.raises(ValueError, match=r"tokens must be an int64 tensor \(N,\); got torch.int32"):
        TextDataset(torch.tensor([0, 1], dtype=torch.int32), ("a", "b"), "test")
    with pytest.raises(ValueError, match="vocab must be distinct characters"):
        TextDataset(torch.tensor([0]), ("a", "a"), "test")


# -- the loader -----------------------------------------------------------------------------------
def test_loader_windows_and_targets():
    ds = TextDataset(torch.arange(101) % 7, tuple("abcdefg"), "ramp")
    loader = TextLoader(ds, 4, 10, train=True, seed=1)
    assert len(loader) == 2  # 10 windows of 10, 4 per batch
    x, y = loader.batch(0, 1)
    assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], (x[:, -1] + 1) % 7)
    assert torch.equal(loader.batch(0, 1)[0], x)  # a pure function of (seed, epoch, index)
    assert not torch.equal(loader.batch(1, 1)[0], x)
    ev = TextLoader(ds, 4, 10, train=False)
    batches = list(ev.epoch(0))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    starts = torch.cat([b[0][:, 0] for b in batches])
    assert torch.equal(starts, (torch.arange(10) * 10) % 7)  # consecutive windows, once
    with pytest.raises(ValueError, match="block_size 200 needs at least 201 characters"):
        TextLoader(ds, 4, 200, train=True)
    with pytest.raises(ValueError, match="dataset must be a TextDataset"):
        TextLoader(torch.zeros(3), 4, 2, train=True)


# -- tinyshakespeare: path and download -----------------------------------------------------------
@pytest.fixture
def fake_shakespeare(monkeypatch) -> bytes:
    """A small stand-in body, with the pinned size and SHA-256 swapped for its own."""
    body = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40).encode()
    monkeypatch.setattr(text_module, "TINYSHAKESPEARE_SHA256", hashlib.sha256(body).hexdigest())
    monkeypatch.setattr(text_module, "TINYSHAKESPEARE_BYTES", len(body))
    return body


def test_download_then_load(server, tmp_path: Path, monkeypatch, fake_shakespeare):  # noqa: F811
    Handler.files = {"/input.txt": fake_shakespeare}
    monkeypatch.setattr(text_module, "TINYSHAKESPEARE_URL", f"{server}/input.txt")
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="pass download=True to fetch it from http://127.0.0.1"):
        load_dataset("tinyshakespeare", "train", data_dir=root)
    train = load_dataset("tinyshakespeare", "train", data_dir=root, download=True)
    path = root / "tinyshakespeare" / "input.txt"
    assert path.read_bytes() == fake_shakespeare
    val = load_dataset("tinyshakespeare", "val", data_dir=path)  # the file itself
    n = len(fake_shakespeare)
    assert (len(train), len(val)) == (int(n * 0.9), n - int(n * 0.9))
    assert train.vocab == tuple(sorted(set(fake_shakespeare.decode()))) == val.vocab
    assert train.decode(train.tokens[:14]) == "First Citizen:"
    assert train.decode(train.tokens) + val.decode(val.tokens) == fake_shakespeare.decode()


def test_download_is_checked_against_the_pinned_sha256(server, tmp_path: Path):  # noqa: F811
    with pytest.raises(DownloadError, match=TINYSHAKESPEARE_SHA256):
        download_tinyshakespeare(tmp_path, url=f"{server}/good")
    assert list((tmp_path / "tinyshakespeare").iterdir()) == []  # nothing left behind


def test_a_local_file_that_is_not_tinyshakespeare_is_refused(tmp_path: Path, fake_shakespeare):
    wrong = tmp_path / "input.txt"
    wrong.write_bytes(fake_shakespeare[:-1] + b"?")  # the right size, another checksum
    with pytest.raises(ValueError, match="is not tinyshakespeare: expected sha256 .*, got "):
        load_dataset("tinyshakespeare", "train", data_dir=tmp_path)
    wrong.write_bytes(b"short")
    with pytest.raises(ValueError, match=r"is not tinyshakespeare: expected .*, got 5 bytes$"):
        load_dataset("tinyshakespeare", "train", data_dir=wrong)
    with pytest.raises(ValueError, match=r"tinyshakespeare has splits \['train', 'val'\]"):
        load_dataset("tinyshakespeare", "test", data_dir=wrong)


# -- the real file --------------------------------------------------------------------------------
def test_tinyshakespeare_in_shared(shared_dir: Path):
    path = shared_dir / "data" / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        pytest.skip(f"tinyshakespeare not found at {path}")
    train = load_dataset("tinyshakespeare", "train", data_dir=path.parent)
    val = load_dataset("tinyshakespeare", "val", data_dir=shared_dir / "data")
    assert len(train) + len(val) == TINYSHAKESPEARE_BYTES == 1_115_394  # ASCII: bytes = chars
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert len(train.vocab) == 65 and train.vocab == val.vocab
    assert train.vocab[:3] == ("\n", " ", "!") and train.vocab[-1] == "z"
    assert train.decode(train.tokens[:14]) == "First Citizen:"
    assert f"sha256 {TINYSHAKESPEARE_SHA256[:8]}" in train.source
