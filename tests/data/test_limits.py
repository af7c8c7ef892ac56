"""Size bounds: declared sizes are refused before anything is read, decoded or allocated.

Bombs here are headers that declare huge sizes, or small real ones (zeros compressed in
repeated blocks); no test writes more than a few MiB.
"""

from __future__ import annotations

import json
import pickle
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from skiplab.data import load_dataset, safe_extract
from skiplab.data.archives import validate_tar
from skiplab.data.cache import load_cached, save_cached
from skiplab.data.cifar import read_pickle
from skiplab.data.imagefolder import decode_image, stack_images
from skiplab.data.limits import (
    DEFAULT_MAX_DATASET_BYTES,
    ENV_VAR,
    check_pickle_lengths,
    check_safetensors,
    check_torch_zip,
    max_dataset_bytes,
    parse_bytes,
)
from skiplab.selftest.bombs import cifar_pickle, forged_zip, zero_png, zero_tar_gz, zero_zip
from tests.data._fixtures import make_imagefolder, png_bytes, snapshot, tar_folder

MiB, GiB = 2**20, 2**30


def _header_only_tar(path: Path, name: str, declared: int) -> Path:
    """A tar whose first member's header declares ``declared`` bytes; no data follows."""
    info = tarfile.TarInfo(name)
    info.size = declared
    path.write_bytes(info.tobuf(tarfile.GNU_FORMAT) + bytes(1024))
    return path


def test_parse_bytes_and_the_setting(monkeypatch):
    assert parse_bytes("4GiB") == 4 * GiB and parse_bytes("512M") == 512 * MiB
    assert parse_bytes(1000) == 1000 and parse_bytes("1.5k") == 1536
    for bad in ("lots", "0", "-1GiB"):
        with pytest.raises(ValueError, match="byte count|positive"):
            parse_bytes(bad)
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert max_dataset_bytes() == DEFAULT_MAX_DATASET_BYTES
    monkeypatch.setenv(ENV_VAR, "8GiB")
    assert max_dataset_bytes() == 8 * GiB and max_dataset_bytes("1MiB") == MiB
    monkeypatch.setenv(ENV_VAR, "huge")
    with pytest.raises(ValueError, match=f"\\${ENV_VAR}: expected a byte count"):
        max_dataset_bytes()


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_tar_member_declaring_3_gib_is_refused_at_its_header(tmp_path, suffix):
    raw = _header_only_tar(tmp_path / "h.tar", "train/cat/0.png", 3 * GiB).read_bytes()
    archive = tmp_path / f"bomb{suffix}"
    if suffix == ".tar.gz":
        import gzip

        raw = gzip.compress(raw)
    archive.write_bytes(raw)
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path / "out")
    with pytest.raises(ValueError, match=r"member 'train/cat/0.png' declares 3.0 GiB .* 64.0 MiB"):
        safe_extract(archive, tmp_path / "out" / "x")
    assert snapshot(tmp_path / "out") == before
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"member 'train/cat/0.png' declares 3.0 GiB"):
        load_dataset("imagefolder", "train", data_dir=archive, cache_dir=cache)
    assert not cache.exists()


def test_real_zero_bomb_tar_gz_is_refused_before_decompressing(tmp_path):
    # 80 MiB of real zeros in 80 KB: refused at the header, the data is never inflated.
    bomb = zero_tar_gz(tmp_path / "b.tar.gz", [("train/c/0.png", 80 * MiB), ("test/c/0.png", 10)])
    assert bomb.stat().st_size < MiB
    with tarfile.open(bomb) as tf:  # really 80 MiB inside
        assert len(tf.extractfile("train/c/0.png").read()) == 80 * MiB
    with tarfile.open(bomb) as tf, pytest.raises(ValueError, match="declares 80.0 MiB"):
        validate_tar(tf, bomb)


def test_archive_total_above_the_bound_names_the_member_and_the_option(tmp_path, monkeypatch):
    members = [(f"train/c/{i}.png", 40 * 1024) for i in range(4)] + [("test/c/0.png", 10)]
    bomb = zero_tar_gz(tmp_path / "many.tar.gz", members)
    pattern = r"member 'train/c/2.png' .* above the bound of 100.0 KiB .*--max-dataset-bytes"
    with pytest.raises(ValueError, match=pattern):
        load_dataset("imagefolder", "train", data_dir=bomb, cache_dir=tmp_path / "c",
                     max_dataset_bytes="100KiB")  # fmt: skip
    monkeypatch.setenv(ENV_VAR, "100KiB")
    with pytest.raises(ValueError, match="above the bound of 100.0 KiB"):
        safe_extract(bomb, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    safe_extract(bomb, tmp_path / "x", max_bytes="1MiB")  # raised: accepted
    assert (tmp_path / "x" / "train" / "c" / "3.png").stat().st_size == 40 * 1024


def test_zip_bombs_are_refused_from_the_directory(tmp_path):
    real = zero_zip(tmp_path / "r.zip", [("data/zeros.bin", 2 * MiB)])
    with zipfile.ZipFile(real) as zf:  # a valid zip: 2 MiB of zeros in about 2 KB
        assert zf.read("data/zeros.bin") == bytes(2 * MiB)
    with pytest.raises(ValueError, match=r"'data/zeros.bin' declares 2.0 MiB .* ratio of \d+:1"):
        safe_extract(real, tmp_path / "out")
    forged = forged_zip(tmp_path / "f.zip", "train/a.png", 3 * GiB)
    with pytest.raises(ValueError, match=r"'train/a.png' declares 3.0 GiB .* 64.0 MiB"):
        safe_extract(forged, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    ok = zero_zip(tmp_path / "ok.zip", [("small.bin", MiB - 1)])  # below the ratio floor
    assert (safe_extract(ok, tmp_path / "out") / "small.bin").stat().st_size == MiB - 1


def test_zip_member_longer_than_declared_is_refused_while_extracting(tmp_path):
    # The directory says 10 bytes; the data holds 1000: extraction stops at 10, the CRC fails.
    path = tmp_path / "short.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", b"x" * 1000)
        zf.filelist[-1].file_size = 10
    with pytest.raises(ValueError, match="cannot extract member 'a.txt'"):
        safe_extract(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pickle_lengths_are_checked_before_unpickling():
    good = cifar_pickle()
    check_pickle_lengths(good, "good")
    assert read_pickle(good, "good")["data"].shape == (1, 3072)
    bad = cifar_pickle(declared=3 * GiB)
    with pytest.raises(ValueError, match=r"refusing f: a BINBYTES argument .* declares 3.0 GiB"):
        read_pickle(bad, "f")
    huge = b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc."  # MemoryError in pickle itself
    with pytest.raises(ValueError, match="declares 4194304.0 TiB"):
        read_pickle(huge, "f")
    with pytest.raises(ValueError, match="ends without a STOP"):
        check_pickle_lengths(good[:-1], "f")
    with pytest.raises(ValueError, match=r"asks numpy for an array of shape \(1000000, 3072\)"):
        read_pickle(cifar_pickle(shape=(1_000_000, 3072)), "f")


def test_numpy_size_mismatch_is_a_value_error_naming_the_file():
    # State (1, (4, 3072), uint8, False, 3072 bytes): numpy refuses the mismatch.
    data = pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}, protocol=3)
    data = data.replace(b"K\x01M\x00\x0c\x86", b"K\x04M\x00\x0c\x86")
    with pytest.raises(ValueError, match="f is not a readable CIFAR pickle"):
        read_pickle(data, "f")


def test_oversized_cifar_file_in_a_folder_is_refused_unread(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"x")
    with open(folder / "data_batch_3", "wb") as fh:
        fh.truncate(300 * MiB)  # sparse: no disk used
    with pytest.raises(ValueError, match=r"data_batch_3: it is 300.0 MiB .* 256.0 MiB"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_images_above_the_pixel_bound_are_refused_from_the_header(tmp_path):
    mid = zero_png(tmp_path / "mid.png", 10000, 10000).read_bytes()  # Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no DecompressionBombWarning escapes
        with pytest.raises(ValueError, match=r"refusing image m: 10000x10000 = 100000000 pixels"):
            decode_image(mid, "m")
    big = zero_png(tmp_path / "big.png", 20000, 20000).read_bytes()
    assert len(big) < 500 * 1024
    with pytest.raises(ValueError, match=r"refusing image b: .*400000000 pixels.*89478485"):
        decode_image(big, "b")
    small = zero_png(tmp_path / "s.png", 7, 5).read_bytes()  # the builder makes valid PNGs
    assert np.array_equal(decode_image(small, "s"), np.zeros((5, 7), np.uint8))


def test_images_in_every_path_are_refused(tmp_path):
    from skiplab.selftest.inputs import write_segfolder

    bomb = zero_png(tmp_path / "bomb.png", 20000, 20000).read_bytes()
    root = tmp_path / "tree"
    make_imagefolder(root)
    (root / "train" / "cat" / "001.png").write_bytes(bomb)
    for data_dir in (root, tar_folder(root, tmp_path / "tree.tar.gz")):
        with pytest.raises(ValueError, match=r"refusing image .*train/cat/001.png"):
            load_dataset("imagefolder", "train", data_dir=data_dir, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    seg = write_segfolder(tmp_path / "seg")
    (seg / "val" / "label" / "2.png").write_bytes(bomb)
    with pytest.raises(ValueError, match=r"refusing image .*val/label/2.png"):
        load_dataset("segfolder", "val", data_dir=seg)


def test_decoded_size_is_bounded_before_allocation(tmp_path):
    root = tmp_path / "tree"
    for split in ("train", "test"):  # 10 black 8x8 RGB images: 192 bytes each, 70 as PNG
        for k in range(5):
            (root / split / "c").mkdir(parents=True, exist_ok=True)
            (root / split / "c" / f"{k}.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(ValueError, match=r"10 images of 8x8 RGB .* decode to 1.9 KiB .* bound"):
        load_dataset("imagefolder", "train", data_dir=root, cache_dir=tmp_path / "c",
                     max_dataset_bytes=1000)  # fmt: skip
    a = np.zeros((4, 5), np.uint8)
    with pytest.raises(ValueError, match="must share one size and mode; a is 5x4 L but b is"):
        stack_images([a, np.zeros((4, 5, 3), np.uint8)], ["a", "b"], tmp_path)
    x = stack_images([a, a + 1], ["a", "b"], tmp_path)
    assert x.shape == (2, 1, 4, 5) and x.is_contiguous() and int(x[1].max()) == 1


def test_safetensors_header_declaring_more_than_the_file(tmp_path):
    path = tmp_path / "c.safetensors"
    save_cached(path, {"images": torch.zeros(2, 3, dtype=torch.uint8)}, {"a": 1})
    check_safetensors(path)
    assert load_cached(path) is not None
    with pytest.raises(ValueError, match="tensors total 6 bytes, above the bound of 5 bytes"):
        check_safetensors(path, 5)
    header = json.dumps({"x": {"dtype": "U8", "shape": [3 * GiB], "data_offsets": [0, 3 * GiB]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(8))
    with pytest.raises(ValueError, match=r"tensor 'x' declares 3.0 GiB .* holds 8 bytes"):
        check_safetensors(path)
    with pytest.warns(UserWarning, match=r"is corrupt .*declares 3.0 GiB.*; rebuilding it"):
        assert load_cached(path) is None
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(ValueError, match="its header declares 1.0 TiB"):
        check_safetensors(path)


def test_torch_zip_record_declaring_more_than_the_file(tmp_path):
    path = tmp_path / "s.pt"
    torch.save({"step": 3, "w": torch.zeros(100)}, path)
    check_torch_zip(path)
    data = bytearray(path.read_bytes())
    # Forge the central directory's uncompressed size of the tensor record to 3 GiB.
    at = data.find(b"PK\x01\x02")
    while not bytes(data[at + 46 : at + 46 + data[at + 28]]).endswith(b"data/0"):
        at = data.find(b"PK\x01\x02", at + 4)
    data[at + 24 : at + 28] = struct.pack("<I", 3 * GiB)
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"record '.*data/0' declares 3.0 GiB"):
        check_torch_zip(path)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    check_torch_zip(legacy)  # not a zip: left to torch.load


def test_cache_file_is_streamed_as_a_standard_safetensors_file(tmp_path):
    from safetensors.torch import load_file

    path = tmp_path / "c.safetensors"
    tensors = {
        "images": torch.arange(2 * 3 * 5, dtype=torch.int64).to(torch.uint8).view(2, 3, 5),
        "targets": torch.tensor([7, -1]),
    }
    save_cached(path, tensors, {"classes": ["a", "b"]})
    loaded = load_file(str(path))  # safetensors' own reader
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    cached = load_cached(path)
    assert cached is not None and cached[1] == {"classes": ["a", "b"]}
