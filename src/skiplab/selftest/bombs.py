"""Faults 10 and 11: size bombs in archives and dataset files, and oversized images.

The bombs are real, and cheap to make: a run of zeros is compressed once in 1 MiB blocks and
the identical compressed block is repeated (concatenated gzip members; deflate blocks ending
at a full flush), so a ``.tar.gz`` of two 3 GiB members (the bomb of issue 19) takes 6 MB and
milliseconds to write, and a 20000x20000 PNG 390 KB. Forged headers are used only where the
attack is a forged header (a zip directory, a pickle or safetensors length).

Every trial runs in a forked child whose peak resident memory is reset at the start
(``/proc/self/clear_refs``) and read at the end (``VmHWM``). Passing means: a ``ValueError``
(or, for a cache file, a warning and a rebuild) whose message has the words of the case (the
member or file, its declared size, the bound); the peak grew by less than
:data:`PEAK_GROWTH_BOUND`; nothing was written (the destination's parent, the cache folder and
the run or output folder are as they were) and nothing lost (the input's sha256 unchanged).
The seconds each refusal took are recorded, not checked (a generous hang guard kills a child
after :data:`HANG_GUARD_S`).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import pickle
import select
import shutil
import signal
import struct
import tarfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from skiplab.cli import main
from skiplab.data import load_dataset, safe_extract
from skiplab.selftest.common import (
    FaultResult,
    TrialFailed,
    check,
    command_for,
    run_trials,
    tiny_config,
    tiny_data,
)
from skiplab.selftest.inputs import _png, write_imagefolder, write_segfolder
from skiplab.train import Trainer

ARCHIVE_TITLE = (
    "size bombs: 2 x 3 GiB tar.gz and zip members, forged zip sizes, absurd zip ratio, "
    "archive above the bound, CIFAR batch declaring 3 GiB, forged cache header"
)
IMAGE_TITLE = "a 20000x20000 PNG (and 10000x10000, 65 MiB file) in every image input path"
MiB, GiB = 2**20, 2**30
PEAK_GROWTH_BOUND = 256 * MiB
HANG_GUARD_S = 300.0
_BLOCK = MiB


# -- bombs ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _zero_gzip(nbytes: int) -> bytes:
    """A gzip stream (concatenated members) of ``nbytes`` zeros, built from one 1 MiB member."""
    block = gzip.compress(bytes(_BLOCK), compresslevel=9, mtime=0)
    whole, rest = divmod(nbytes, _BLOCK)
    return block * whole + (gzip.compress(bytes(rest), mtime=0) if rest else b"")


@functools.lru_cache(maxsize=8)
def _zero_deflate(nbytes: int) -> bytes:
    """A raw deflate stream of ``nbytes`` zeros: one full-flush block repeated."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    co.compress(bytes(_BLOCK))
    co.flush(zlib.Z_FULL_FLUSH)  # the first block may differ (empty history); later ones do not
    block = co.compress(bytes(_BLOCK)) + co.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(nbytes, _BLOCK)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    return block * whole + tail.compress(bytes(rest)) + tail.flush()


@functools.lru_cache(maxsize=8)
def _zero_crc32(nbytes: int) -> int:
    crc, block = 0, bytes(_BLOCK)
    whole, rest = divmod(nbytes, _BLOCK)
    for _ in range(whole):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(bytes(rest), crc)


def zero_tar_gz(path: Path, members: list[tuple[str, int]]) -> Path:
    """A ``.tar.gz`` whose members ``(name, size)`` hold ``size`` zeros each, really."""
    with open(path, "wb") as out:
        for name, size in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = size, 0o644
            out.write(gzip.compress(info.tobuf(tarfile.GNU_FORMAT), mtime=0))
            out.write(_zero_gzip(size))
            out.write(gzip.compress(bytes(-size % tarfile.BLOCKSIZE), mtime=0))
        out.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE), mtime=0))  # end of archive
    return path


def zero_zip(path: Path, members: list[tuple[str, int]]) -> Path:
    """A zip whose members ``(name, size)`` deflate ``size`` zeros each, really (no zip64)."""
    central, offset = b"", 0
    with open(path, "wb") as out:
        for name, size in members:
            data, crc, raw = _zero_deflate(size), _zero_crc32(size), name.encode()
            fields = struct.pack("<HHHHHIII", 20, 0, 8, 0, 0x21, crc, len(data), size)
            local = struct.pack("<I", 0x04034B50) + fields + struct.pack("<HH", len(raw), 0)
            out.write(local + raw + data)
            central += (
                struct.pack("<IH", 0x02014B50, 0x031E)
                + fields
                + struct.pack("<HHHHHII", len(raw), 0, 0, 0, 0, 0o100644 << 16, offset)
                + raw
            )
            offset += len(local) + len(raw) + len(data)
        out.write(central)
        out.write(
            struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                        len(central), offset, 0)
        )  # fmt: skip
    return path


def forged_zip(path: Path, name: str, declared: int, data: bytes = b"x" * 1024) -> Path:
    """A zip whose directory declares ``declared`` bytes for a member that holds ``data``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
        zf.filelist[-1].file_size = declared  # written into the central directory at close
    return path


def zero_png(path: Path, width: int, height: int) -> Path:
    """A valid grayscale PNG of ``width`` x ``height`` black pixels."""
    raw = height * (width + 1)  # a filter byte, then the row
    adler = ((raw % 65521) << 16) | 1  # adler32 of zeros: A = 1, B = n mod 65521
    idat = b"\x78\xda" + _zero_deflate(raw) + struct.pack(">I", adler)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def sparse_file(path: Path, head: bytes, size: int) -> Path:
    """``head`` followed by a hole up to ``size`` bytes (no disk blocks for the hole)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def cifar_pickle(declared: int | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    """A CIFAR batch (protocol 3) whose data bytes declare ``declared`` bytes (only 3072
    follow), or whose array is reconstructed with ``shape`` instead of numpy's ``(0,)``."""
    data = pickle.dumps(
        {"batch_label": "b", "labels": [0], "data": np.zeros((1, 3072), np.uint8)}, protocol=3
    )
    if declared is not None:
        old = b"B" + struct.pack("<I", 3072)
        assert data.count(old) == 1
        data = data.replace(old, b"B" + struct.pack("<I", declared))
    if shape is not None:  # _reconstruct's shape argument: BININT1 0, TUPLE1
        old = b"K\x00\x85"
        assert data.count(old) == 1
        new = b"(" + b"".join(b"J" + struct.pack("<i", d) for d in shape) + b"t"
        data = data.replace(old, new)
    return data


# -- running a trial ------------------------------------------------------------------------------
def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measured(call: Callable[[], object]) -> dict:
    """Run ``call`` in a forked child: what it raised or warned, its peak memory, its seconds.

    Returns ``{"error": type name or None, "message": str, "warnings": [...],
    "start": bytes, "peak": bytes, "seconds": float}``.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        out = {"error": None, "message": "", "warnings": []}
        try:
            with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset the peak (VmHWM) to the current resident size
            out["start"] = _status("VmRSS")
            started = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    with contextlib.redirect_stdout(io.StringIO()):
                        call()
                out["warnings"] = [str(w.message) for w in caught]
            except Exception as exc:
                out["error"], out["message"] = type(exc).__name__, str(exc)
                out["value_error"] = isinstance(exc, ValueError)
                if not isinstance(exc, ValueError):
                    out["message"] += " | " + traceback.format_exc(limit=-3)
            out["seconds"] = time.perf_counter() - started
            out["peak"] = _status("VmHWM")
            os.write(write, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks, deadline = [], time.monotonic() + HANG_GUARD_S
    while True:
        ready, _, _ = select.select([read], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            raise TrialFailed(f"no answer after {HANG_GUARD_S:.0f} s (hang guard)")
        chunk = os.read(read, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    check(chunks != [], f"the child died without a report (status {status})")
    return json.loads(b"".join(chunks))


def cli(argv: list[str]) -> None:
    """``skiplab ARGV`` in this process; a non-zero exit raises ValueError with its stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:
        raise ValueError(f"exit {code}: {err.getvalue().strip()}")


def _state(folder: Path) -> list | None:
    """Names and sizes of everything under ``folder`` (None if it does not exist)."""
    if not folder.exists():
        return None
    return sorted((p.relative_to(folder).as_posix(), p.lstat().st_size) for p in folder.rglob("*"))


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            with open(p, "rb") as fh:
                while block := fh.read(MiB):
                    h.update(block)
    return h.hexdigest()


def refused(
    call: Callable[[], object],
    words: tuple[str, ...],
    source: Path,
    watched: tuple[Path, ...],
    warning: bool = False,
) -> str:
    """Run ``call`` measured; it must refuse with ``words`` (in a ValueError, or a warning when
    ``warning``) within the memory bound, leaving ``watched`` folders and ``source`` as they
    were. Returns the trial's note."""
    before = [_state(w) for w in watched]
    digest = _sha(source)
    out = measured(call)
    if warning:
        check(out["error"] is None, f"{out['error']}: {out['message'][:300]}")
        text = " ".join(out["warnings"])
        check(text != "", "no warning: the bad file was used silently")
    else:
        check(out["error"] is not None, "no error: the bomb was accepted")
        check(out.get("value_error"), f"{out['error']}, not a ValueError: {out['message']}")
        text = out["message"]
    for w in words:
        check(w in text, f"the message does not say {w!r}: {text[:400]}")
    growth = out["peak"] - out["start"]
    check(
        growth < PEAK_GROWTH_BOUND,
        f"peak memory grew by {growth / MiB:.0f} MiB (bound {PEAK_GROWTH_BOUND / MiB:.0f} MiB)",
    )
    if not warning:
        for w, b in zip(watched, before, strict=True):
            check(_state(w) == b, f"{w} changed: {str(b)[:150]} -> {str(_state(w))[:150]}")
    check(_sha(source) == digest, f"the input {source} changed")
    size = source.stat().st_size if source.is_file() else sum(s for _, s in _state(source) or [])
    text = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return (
        f"{out['seconds']:.2f} s, peak RSS +{growth / MiB:.0f} MiB (from {out['start'] / MiB:.0f}"
        f" MiB at the call), input {size / MiB:.1f} MiB: "
        + text.replace(str(source.parent), "...")[:240]
    )


def _cifar_folder(case: Path) -> Path:
    """``case/cifar-10-batches-py`` with a valid meta file and one-image batches."""
    folder = case / "cifar-10-batches-py"
    folder.mkdir()
    for f in (*[f"data_batch_{i}" for i in range(1, 6)], "test_batch"):
        (folder / f).write_bytes(cifar_pickle())
    meta = {"label_names": [f"c{k}" for k in range(10)], "num_cases_per_batch": 1}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


# -- fault 10: archives and dataset files ---------------------------------------------------------
class ArchiveTrials:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cache = work / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        (self.cache / "keep.txt").write_text("an existing cache entry")
        # `skiplab train` on a missing folder first: what the command imports and sets up is
        # then in place, so a child's peak growth is what the bomb costs.
        with contextlib.suppress(ValueError):
            cli(["train", "--model", "resnet20", "--data", "imagefolder", "--data-dir",
                 str(work / "missing"), "--steps", "2", "--device", "cpu", "--out",
                 str(work / "warm-up")])  # fmt: skip

    def _case(self, name: str) -> Path:
        case = self.work / name
        case.mkdir(parents=True)
        return case

    def _load(self, name: str, data_dir: Path, **kw) -> Callable[[], object]:
        return lambda: load_dataset(name, "train", data_dir=data_dir, cache_dir=self.cache, **kw)

    def tar_gz_train(self) -> str:
        """The bomb of issue 19, given to ``skiplab train`` as a new user would."""
        case = self._case("tar-gz-train")
        bomb = zero_tar_gz(case / "bomb.tar.gz", [("train/cat/0.png", 3 * GiB),
                                                  ("test/cat/0.png", 3 * GiB)])  # fmt: skip
        run = case / "run"

        def train():
            os.environ["SKIPLAB_CACHE"] = str(self.cache)
            cli(["train", "--model", "resnet20", "--data", "imagefolder", "--data-dir",
                 str(bomb), "--steps", "2", "--device", "cpu", "--out", str(run)])  # fmt: skip

        words = ("exit 2", "member 'train/cat/0.png'", "3.0 GiB", "64.0 MiB")
        return refused(train, words, bomb, (self.cache, run))

    def tar_gz_extract(self) -> str:
        case = self._case("tar-gz-extract")
        bomb = zero_tar_gz(case / "bomb.tar.gz", [("train/cat/0.png", 3 * GiB),
                                                  ("test/cat/0.png", 3 * GiB)])  # fmt: skip
        parent = case / "parent"
        parent.mkdir()
        (parent / "keep.txt").write_text("already here")
        words = ("member 'train/cat/0.png'", "3.0 GiB", "64.0 MiB")
        return refused(lambda: safe_extract(bomb, parent / "dest"), words, bomb, (parent,))

    def zip_extract(self) -> str:
        case = self._case("zip-extract")
        bomb = zero_zip(case / "bomb.zip", [("train/cat/0.png", 3 * GiB),
                                            ("test/cat/0.png", 3 * GiB)])  # fmt: skip
        parent = case / "parent"
        parent.mkdir()
        words = ("member 'train/cat/0.png'", "3.0 GiB", "64.0 MiB")
        return refused(lambda: safe_extract(bomb, parent / "dest"), words, bomb, (parent,))

    def zip_ratio(self) -> str:
        case = self._case("zip-ratio")
        bomb = zero_zip(case / "ratio.zip", [("data/values.bin", 256 * MiB)])
        parent = case / "parent"
        parent.mkdir()
        words = ("member 'data/values.bin'", "256.0 MiB", "a ratio of", "500:1")
        return refused(lambda: safe_extract(bomb, parent / "dest"), words, bomb, (parent,))

    def zip_forged(self) -> str:
        case = self._case("zip-forged")
        bomb = forged_zip(case / "forged.zip", "notes.txt", 5 * GiB)
        parent = case / "parent"
        parent.mkdir()
        words = ("member 'notes.txt'", "5.0 GiB", "500:1")
        return refused(lambda: safe_extract(bomb, parent / "dest"), words, bomb, (parent,))

    def tar_gz_total(self) -> str:
        case = self._case("tar-gz-total")
        members = [(f"{s}/c{k}/0.png", 60 * MiB) for s in ("train", "test") for k in range(3)]
        bomb = zero_tar_gz(case / "many.tar.gz", members)
        call = self._load("imagefolder", bomb, max_dataset_bytes="256MiB")
        words = ("above the bound of 256.0 MiB", "max_dataset_bytes", "member 'test/c1/0.png'")
        return refused(call, words, bomb, (self.cache,))

    def cifar_declared(self) -> str:
        case = self._case("cifar-declared")
        folder = _cifar_folder(case)
        (folder / "data_batch_1").write_bytes(cifar_pickle(declared=3 * GiB))
        words = ("data_batch_1", "declares 3.0 GiB", "follow it")
        return refused(self._load("cifar10", case), words, case, (self.cache,))

    def cifar_shape(self) -> str:
        case = self._case("cifar-shape")
        folder = _cifar_folder(case)
        (folder / "data_batch_1").write_bytes(cifar_pickle(shape=(1_000_000, 3072)))
        words = ("data_batch_1", "shape (1000000, 3072)")
        return refused(self._load("cifar10", case), words, case, (self.cache,))

    def cifar_member(self) -> str:
        case = self._case("cifar-member")
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        members = [(f"cifar-10-batches-py/{n}", 3 * GiB if n == "data_batch_2" else 4096)
                   for n in names]  # fmt: skip
        bomb = zero_tar_gz(case / "cifar-10-python.tar.gz", members)
        words = ("member 'cifar-10-batches-py/data_batch_2'", "3.0 GiB", "256.0 MiB")
        return refused(self._load("cifar10", bomb), words, bomb, (self.cache,))

    def cache_header(self) -> str:
        """A cache file whose safetensors header declares a 3 GiB tensor: reported, rebuilt."""
        case = self._case("cache-header")
        root = write_imagefolder(case / "images")
        cache = case / "cache"
        clean = self._load("imagefolder", root)
        load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
        (planted,) = sorted(cache.glob("*-train.safetensors"))
        header = json.dumps({"images": {"dtype": "U8", "shape": [3 * GiB],
                                        "data_offsets": [0, 3 * GiB]}}).encode()  # fmt: skip
        planted.write_bytes(struct.pack("<Q", len(header)) + header + bytes(64))
        del clean

        def load():
            again = load_dataset("imagefolder", "train", data_dir=root, cache_dir=cache)
            check(again.images.shape[0] == 8, f"rebuilt {tuple(again.images.shape)}")

        words = (f"cache file {planted}", "declares 3.0 GiB", "rebuilding it")
        note = refused(load, words, root, (), warning=True)
        check(planted.stat().st_size > 1024, "the cache file was not rebuilt")
        return note


# -- fault 11: oversized images in every input path -----------------------------------------------
class ImageTrials:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.cache = work / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        self.bomb = zero_png(work / "bomb-20000.png", 20000, 20000)
        self.mid = zero_png(work / "bomb-10000.png", 10000, 10000)
        self._folder = write_imagefolder
        self._seg = write_segfolder

    def _imagefolder(self, name: str, bomb: Path) -> Path:
        root = self._folder(self.work / name)
        shutil.copyfile(bomb, root / "train" / "c0" / "2.png")
        return root

    def _load(self, name: str, root: Path) -> Callable[[], object]:
        return lambda: load_dataset(name, "train", data_dir=root, cache_dir=self.cache)

    def folder(self, bomb: Path | None = None, name: str = "folder") -> str:
        root = self._imagefolder(name, bomb or self.bomb)
        size = "400000000 pixels" if bomb is None else "100000000 pixels"
        words = ("refusing image", "train/c0/2.png", size, "89478485 pixels")
        return refused(self._load("imagefolder", root), words, root, (self.cache,))

    def archive(self) -> str:
        root = self._imagefolder("archive-src", self.bomb)
        archive = self.work / "images.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            for split in ("train", "test"):
                tf.add(root / split, arcname=split)
        words = ("refusing image", "train/c0/2.png", "400000000 pixels")
        return refused(self._load("imagefolder", archive), words, archive, (self.cache,))

    def big_file(self) -> str:
        root = self._folder(self.work / "big-file")
        target = root / "train" / "c1" / "3.png"
        sparse_file(target, target.read_bytes(), 65 * MiB)
        words = ("refusing", "c1/3.png", "65.0 MiB", "64.0 MiB")
        return refused(self._load("imagefolder", root), words, root, (self.cache,))

    def segfolder(self, sub: str) -> str:
        root = self._seg(self.work / f"seg-{sub}")
        shutil.copyfile(self.bomb, root / "train" / sub / "1.png")
        words = ("refusing image", f"train/{sub}/1.png", "400000000 pixels")
        return refused(self._load("segfolder", root), words, root, (self.cache,))

    def isbi(self) -> str:
        root = self.work / "isbi"
        for sub in ("image", "label"):
            (root / "train" / sub).mkdir(parents=True)
            for i in range(30):
                (root / "train" / sub / f"{i}.png").write_bytes(_png(np.zeros((8, 8), np.uint8)))
        shutil.copyfile(self.bomb, root / "train" / "image" / "7.png")
        words = ("refusing image", "train/image/7.png", "400000000 pixels")
        return refused(self._load("isbi2012", root), words, root, (self.cache,))

    def predict(self) -> str:
        run = self.work / "predict-run"
        with contextlib.redirect_stdout(io.StringIO()):
            Trainer(tiny_config(run, steps=1), train_data=tiny_data()).fit()
        inputs = self.work / "predict-inputs"
        inputs.mkdir()
        good = tiny_data().images[0].permute(1, 2, 0).numpy()
        (inputs / "a.png").write_bytes(_png(np.ascontiguousarray(good)))
        shutil.copyfile(self.bomb, inputs / "b.png")
        out = self.work / "predictions"

        def predict():
            cli(["predict", "--run", str(run), str(inputs), "--out", str(out), "--device", "cpu"])

        words = ("exit 2", "refusing image", "b.png", "400000000 pixels")
        return refused(predict, words, inputs, (out, run))


def run_archives(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("size-bomb", ARCHIVE_TITLE, command=command_for("size-bomb", None))
    t = ArchiveTrials(work)
    items = [
        ("tar.gz, 2 x 3 GiB members, `skiplab train`", t.tar_gz_train),
        ("tar.gz, 2 x 3 GiB members, safe_extract", t.tar_gz_extract),
        ("zip, 2 x 3 GiB members, safe_extract", t.zip_extract),
        ("zip, 256 MiB of zeros (ratio about 1000:1), safe_extract", t.zip_ratio),
        ("zip directory forged to 5 GiB, safe_extract", t.zip_forged),
        ("tar.gz, 6 x 60 MiB above a 256 MiB bound, load_dataset", t.tar_gz_total),
        ("CIFAR batch declaring 3 GiB of data (folder)", t.cifar_declared),
        ("CIFAR batch asking numpy for a 3 GB array", t.cifar_shape),
        ("CIFAR .tar.gz member of 3 GiB", t.cifar_member),
        ("cache file whose header declares 3 GiB", t.cache_header),
    ]
    return run_trials(result, items[: trials if trials else None], progress)


def run_images(work: Path, trials: int | None = None, seed: int = 0, progress=lambda: None):
    result = FaultResult("image-bomb", IMAGE_TITLE, command=command_for("image-bomb", None))
    t = ImageTrials(work)
    items = [
        ("imagefolder folder, 20000x20000 PNG", t.folder),
        ("imagefolder folder, 10000x10000 PNG (Pillow only warns)",
         lambda: t.folder(t.mid, "folder-mid")),
        ("imagefolder .tar.gz, 20000x20000 PNG member", t.archive),
        ("imagefolder folder, 65 MiB image file", t.big_file),
        ("segfolder image, 20000x20000", lambda: t.segfolder("image")),
        ("segfolder mask, 20000x20000", lambda: t.segfolder("label")),
        ("isbi2012 image, 20000x20000", t.isbi),
        ("`skiplab predict`, 20000x20000 input", t.predict),
    ]  # fmt: skip
    return run_trials(result, items[: trials if trials else None], progress)
