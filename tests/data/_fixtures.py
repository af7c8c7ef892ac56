"""Builders of small on-disk datasets for the data tests (written from scratch, no downloads)."""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2 wrote the CIFAR batch files: protocol 2, byte strings as
    ``BINSTRING`` (a Python 3 pickler would call ``_codecs.encode`` instead, which the CIFAR
    reader rightly refuses), text as ``BINSTRING`` too when it is latin-1."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _binstring(self, data: bytes) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    def save_bytes(self, obj: bytes) -> None:
        self._binstring(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self._binstring(obj.encode("latin1"))
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(obj, numpy_module: str = "numpy._core.multiarray") -> bytes:
    """``obj`` pickled like Python 2 did; ``numpy_module`` names the array reconstructor's
    module (``numpy.core.multiarray`` in files written with numpy 1)."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue()
    for old in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        data = data.replace(old, numpy_module.encode() + b"\n")
    return data


CIFAR_LAYOUT = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "labels",
        "label_names",
        10,
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
    ),
}


def cifar_arrays(n: int, num_classes: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, num_classes, n).tolist()


def make_cifar_folder(
    root: Path,
    name: str = "cifar10",
    per_batch: int = 6,
    numpy_module: str = "numpy._core.multiarray",
) -> dict:
    """Write an official-format folder under ``root``; return what each split should hold."""
    folder, train_files, test_files, meta_file, label_key, names_key, k = CIFAR_LAYOUT[name]
    d = root / folder
    d.mkdir(parents=True)
    expected = {"train": ([], []), "test": ([], [])}
    for i, f in enumerate(train_files + test_files):
        data, labels = cifar_arrays(per_batch, k, seed=i)
        batch = {
            "batch_label": f"batch {i}",
            "data": data,
            label_key: labels,
            "filenames": [f"img_{j}.png" for j in range(per_batch)],
        }
        if name == "cifar100":
            batch["coarse_labels"] = [0] * per_batch
        (d / f).write_bytes(py2_pickle(batch, numpy_module))
        split = "train" if f in train_files else "test"
        expected[split][0].append(data)
        expected[split][1].extend(labels)
    meta = {names_key: [f"class_{j}" for j in range(k)], "num_cases_per_batch": per_batch}
    (d / meta_file).write_bytes(py2_pickle(meta, numpy_module))
    return {
        s: (np.concatenate(a).reshape(-1, 3, 32, 32), np.array(b)) for s, (a, b) in expected.items()
    }


def tar_folder(src: Path, archive: Path, arcname: str = "") -> Path:
    """Pack the contents of ``src`` into ``archive`` (.tar or .tar.gz), sorted, no root entry."""
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode) as tf:
        for path in sorted(src.rglob("*")):
            rel = path.relative_to(src).as_posix()
            tf.add(path, arcname=f"{arcname}/{rel}" if arcname else rel, recursive=False)
    return archive


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def make_imagefolder(
    root: Path, classes=("cat", "ant"), per_class=(3, 2), size: int = 8, seed: int = 0
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Write ``root/{train,test}/<class>/<i>.png`` RGB images; return the arrays by split,
    class and file order."""
    rng = np.random.default_rng(seed)
    written: dict[str, dict[str, list[np.ndarray]]] = {}
    for split, n in zip(("train", "test"), per_class, strict=True):
        written[split] = {}
        for cls in classes:
            d = root / split / cls
            d.mkdir(parents=True)
            written[split][cls] = []
            for i in range(n):
                img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                (d / f"{i:03d}.png").write_bytes(png_bytes(img))
                written[split][cls].append(img)
    return written


def add_tar_member(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    """Append one hand-made member (e.g. a symlink) to an uncompressed tar."""
    with tarfile.open(archive, "a") as tf:
        info.size = len(data) if info.isreg() else 0
        tf.addfile(info, io.BytesIO(data) if info.isreg() else None)


def snapshot(folder: Path) -> list[tuple[str, int]]:
    """Every path under ``folder`` with its size (0 for folders), to prove nothing changed."""
    return sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size if p.is_file() else 0)
        for p in folder.rglob("*")
    )
