"""CIFAR-10 and CIFAR-100 in the official "python version" format (Krizhevsky 2009).

The batch files are Python pickles. They are read with :class:`RestrictedUnpickler`, which
can build dicts, lists, strings, ints and numpy arrays and nothing else: any other global a
pickle asks for (``os.system``, ``builtins.eval``, ...) is refused before it is looked up, so a
tampered file cannot run code. Sizes are checked before anything is read or allocated: each
file (or archive member) against 256 MiB, the files together against ``max_dataset_bytes``,
and every length declared inside a pickle against the bytes that follow it (see
:mod:`skiplab.data.limits`); numpy arrays must be pickled the way numpy does it, starting from
an empty array.

Layouts accepted (``root`` is ``data_dir``):
    ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``,
    ``root`` being that folder itself, or ``root/cifar-10-python.tar.gz`` / that archive itself
    (read member by member, nothing extracted); CIFAR-100 likewise with ``cifar-100-python/
    {train, test, meta}`` and the fine labels.
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skiplab.data.archives import fingerprint_dir, open_tar, validate_tar
from skiplab.data.dataset import ArrayDataset
from skiplab.data.download import download_file
from skiplab.data.limits import (
    MAX_CIFAR_FILE_BYTES,
    Budget,
    check_file_size,
    check_pickle_lengths,
    format_bytes,
)
from skiplab.fileio import sha256_file


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant's files live and what its pickles contain."""

    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    # Per-channel statistics of the official training images, as widely published.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        "cifar-10-batches-py", "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        "labels", "label_names", 10,
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarSpec(
        "cifar-100-python", "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        ("train",), ("test",), "meta",
        "fine_labels", "fine_label_names", 100,
        (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    ),
}  # fmt: skip

# The only globals a CIFAR batch needs: numpy's array reconstructor (under its numpy 1 and
# numpy 2 module names), the array class and the dtype class.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class Refused(ValueError):
    """The file asks for something a CIFAR batch never holds."""


def _reconstruct(where: str):
    core = getattr(np, "_core", None)  # numpy >= 2; numpy 1 calls it numpy.core
    reconstruct = (core if core is not None else np.core).multiarray._reconstruct

    def empty_only(subtype, shape, dtype):
        # numpy pickles every array as _reconstruct(ndarray, (0,), b'b') and then sets its
        # shape and bytes, which numpy checks against each other; any other shape would
        # allocate here, from nothing but a number in the file.
        if subtype is not np.ndarray or math.prod(shape) != 0:
            raise Refused(
                f"refusing to unpickle {where}: it asks numpy for an array of shape "
                f"{tuple(shape)} before its data (numpy pickles arrays from shape (0,))"
            )
        return reconstruct(subtype, shape, dtype)

    return empty_only


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals listed in ``_ALLOWED_GLOBALS``."""

    def __init__(self, fh, where: str) -> None:
        super().__init__(fh, encoding="latin1")  # the files were written by Python 2
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise Refused(
                f"refusing to unpickle {self.where}: it asks for the global {module}.{name}, "
                "but a CIFAR batch file holds only dicts, lists, strings, ints and numpy arrays "
                f"(allowed globals: {sorted('.'.join(g) for g in _ALLOWED_GLOBALS)})"
            )
        if name == "_reconstruct":
            return _reconstruct(self.where)
        return getattr(np, name)


def read_pickle(data: bytes, where: str) -> dict:
    """Unpickle one CIFAR file with :class:`RestrictedUnpickler`; it must hold a dict.

    Every length the pickle declares is checked against the data first
    (:func:`~skiplab.data.limits.check_pickle_lengths`).
    """
    check_pickle_lengths(data, where)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), where).load()
    except Refused:
        raise
    except Exception as err:  # numpy's checks raise ValueError/TypeError, pickle its own
        raise ValueError(f"{where} is not a readable CIFAR pickle: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{where} should hold a dict; got {type(obj).__name__}")
    return obj


def _batch_arrays(batch: dict, spec: CifarSpec, where: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get("data"), batch.get(spec.label_key)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3 * 32 * 32)
    ):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
        raise ValueError(f"{where}: 'data' must be a uint8 array (N, 3072); got {found}")
    labels = np.asarray(labels, dtype=np.int64) if isinstance(labels, list) else None
    if labels is None or labels.shape != (data.shape[0],):
        raise ValueError(f"{where}: {spec.label_key!r} must be a list of {data.shape[0]} ints")
    if labels.min() < 0 or labels.max() >= spec.num_classes:
        raise ValueError(
            f"{where}: labels must lie in [0, {spec.num_classes - 1}]; "
            f"got [{labels.min()}, {labels.max()}]"
        )
    return data, labels


def find_official(spec: CifarSpec, root: Path) -> Path | None:
    """The official folder or archive under ``root`` (or ``root`` itself), if there is one."""
    if root.is_dir() and root.name == spec.folder:
        return root
    if root.is_file() and root.name == spec.archive:
        return root
    if (root / spec.folder).is_dir():
        return root / spec.folder
    if (root / spec.archive).is_file():
        return root / spec.archive
    return None


def download_cifar(name: str, root: str | Path, url: str | None = None) -> Path:
    """Fetch the official archive into ``root`` (verified against its pinned MD5).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: Folder to store the archive in.
        url: Override of the official URL (a mirror, or a local server in tests).
    """
    spec = CIFAR[name]
    return download_file(url or spec.url, Path(root) / spec.archive, spec.md5)


def load_official(
    name: str, split: str, source: Path, max_bytes: int | None = None
) -> ArrayDataset:
    """Read one split from the official folder or ``.tar.gz`` found by :func:`find_official`.

    Args:
        max_bytes: ``max_dataset_bytes`` (default: ``$SKIPLAB_MAX_DATASET_BYTES`` or 4 GiB).
    """
    spec = CIFAR[name]
    wanted = (spec.train_files if split == "train" else spec.test_files) + (spec.meta_file,)
    if source.is_dir():
        missing = [f for f in wanted if not (source / f).is_file()]
        if missing:
            raise ValueError(
                f"expected the official {name} folder {spec.folder}/ with files {list(wanted)}; "
                f"{source} lacks {missing}"
            )
        budget = Budget(source, max_bytes)
        for f in wanted:
            size = (source / f).stat().st_size
            check_file_size(source / f, size, MAX_CIFAR_FILE_BYTES, "a CIFAR batch file")
            budget.add(size, f"the file {f!r} ({format_bytes(size)})")
        blobs = {f: (source / f).read_bytes() for f in wanted}
        origin = f"{source} (fingerprint {fingerprint_dir(source, [source / f for f in wanted])})"
    else:
        blobs = _read_from_archive(spec, source, wanted, max_bytes)
        origin = f"{source} (sha256 {sha256_file(source)})"

    meta = read_pickle(blobs[spec.meta_file], f"{source}/{spec.meta_file}")
    classes = meta.get(spec.names_key)
    if not isinstance(classes, list) or len(classes) != spec.num_classes:
        raise ValueError(
            f"{source}/{spec.meta_file}: {spec.names_key!r} must list {spec.num_classes} names"
        )
    images, targets = [], []
    for f in wanted[:-1]:
        data, labels = _batch_arrays(read_pickle(blobs[f], f"{source}/{f}"), spec, f"{source}/{f}")
        images.append(data)
        targets.append(labels)
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each 32x32 row-major.
    x = torch.from_numpy(np.concatenate(images).reshape(-1, 3, 32, 32)).contiguous()
    y = torch.from_numpy(np.concatenate(targets))
    return ArrayDataset(
        x,
        y,
        tuple(str(c) for c in classes),
        "classification",
        spec.mean,
        spec.std,
        f"{name} {split}: {origin}",
    )


def _read_from_archive(
    spec: CifarSpec, archive: Path, wanted: tuple[str, ...], max_bytes: int | None
) -> dict:
    with open_tar(archive) as tf:
        bound = (MAX_CIFAR_FILE_BYTES, "a CIFAR batch file")
        checked = validate_tar(tf, archive, max_bytes, max_member=bound)
        members = {m.path: info for m, info in checked if not m.is_dir}
        names = {f: f"{spec.folder}/{f}" for f in wanted}
        missing = [n for n in names.values() if n not in members]
        if missing:
            found = sorted(members)[:8]
            raise ValueError(
                f"expected the official archive layout {spec.folder}/{{{', '.join(wanted)}}} "
                f"in {archive}; missing {missing}, found members {found}"
            )
        return {f: tf.extractfile(members[n]).read() for f, n in names.items()}
