"""Image-folder trees ``train/<class>/*`` and ``test/<class>/*``, as a folder or a tar archive.

The images (PNG or JPEG) are decoded once with PIL into uint8 tensors that are cached in
``cache_dir`` under the source's content hash: the SHA-256 of an archive, or for a folder the
hash of its sorted relative paths, sizes and modification times. Later loads read the cache
(safetensors, checksum-verified) and decode nothing. Archives are read member by member with
``tarfile`` after every member has been validated; nothing is extracted.

Sizes are checked before anything is read (see :mod:`skiplab.data.limits`): every image file
or member against 64 MiB, the files together against ``max_dataset_bytes``, each image's
pixel count (from its header) before it is decoded, and the decoded dataset against
``max_dataset_bytes`` before it is allocated. Images are decoded one at a time straight into
one preallocated tensor per split, so only one file's bytes are held at once.

Class order is the sorted folder names; samples are ordered by class, then by file path.
Both splits are decoded together, because the normalisation statistics come from ``train``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skiplab.data.archives import fingerprint_dir, open_tar, validate_tar
from skiplab.data.cache import load_cached, save_cached
from skiplab.data.dataset import ArrayDataset, channel_stats
from skiplab.data.limits import (
    MAX_IMAGE_FILE_BYTES,
    MAX_IMAGE_PIXELS,
    Budget,
    check_file_size,
    check_pixels,
    format_bytes,
    max_dataset_bytes,
)
from skiplab.fileio import sha256_file

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUT = "train/<class>/*.{png,jpg,jpeg} and test/<class>/*.{png,jpg,jpeg}"


def is_imagefolder(root: Path) -> bool:
    """Whether ``root`` looks like an image-folder tree or a tar archive (checked later)."""
    if root.is_dir():
        return all((root / s).is_dir() for s in SPLITS)
    return root.is_file() and root.name.lower().endswith((".tar", ".tar.gz", ".tgz"))


def parse_layout(
    files: list[str], dirs: list[str], where: Path
) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]]]:
    """Check relative paths against :data:`LAYOUT`.

    Args:
        files: Relative POSIX paths of every file.
        dirs: Relative POSIX paths of every folder (to find empty class folders).
        where: The source, for error messages.

    Returns:
        The class names (sorted) and, per split, ``(path, class index)`` sorted by class, path.
    """

    def bad(what: str) -> ValueError:
        return ValueError(f"expected the image-folder layout {LAYOUT} in {where}; found {what}")

    per_split: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for d in dirs:
        parts = d.split("/")
        if parts[0] not in SPLITS or len(parts) > 2:
            raise bad(f"the folder {d!r}")
        if len(parts) == 2:
            per_split[parts[0]].setdefault(parts[1], [])
    for f in files:
        parts = f.split("/")
        if len(parts) != 3 or parts[0] not in SPLITS:
            raise bad(f"the file {f!r} (files must sit exactly at <split>/<class>/<file>)")
        if not parts[2].lower().endswith(IMAGE_SUFFIXES):
            raise bad(f"the file {f!r}, which is not a .png/.jpg/.jpeg image")
        per_split[parts[0]].setdefault(parts[1], []).append(f)
    for split in SPLITS:
        if not per_split[split]:
            raise bad(f"no class folders under {split}/ (top level: {_top(files, dirs)})")
        for cls, paths in per_split[split].items():
            if not paths:
                raise bad(f"the empty class folder {split}/{cls}/")
    classes = tuple(sorted(per_split["train"]))
    if tuple(sorted(per_split["test"])) != classes:
        raise bad(
            f"different classes in train/ {list(classes)} and test/ {sorted(per_split['test'])}"
        )
    index = {c: i for i, c in enumerate(classes)}
    samples = {
        s: sorted(
            ((p, index[c]) for c, paths in per_split[s].items() for p in paths),
            key=lambda pc: (pc[1], pc[0]),
        )
        for s in SPLITS
    }
    return classes, samples


def _top(files: list[str], dirs: list[str]) -> list[str]:
    return sorted({p.split("/")[0] for p in files + dirs})[:10]


def _open_checked(source, where: str, modes: tuple[str, ...] | None = None) -> Image.Image:
    """``Image.open`` (reads the header only), with the pixel bound and the mode checked."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; those are refused just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
    except Image.DecompressionBombError as err:  # above twice Pillow's limit
        raise ValueError(
            f"refusing image {where}: {err} (skiplab's bound: {MAX_IMAGE_PIXELS} pixels)"
        ) from err
    except Exception as err:  # PIL raises many types for a damaged file
        raise ValueError(f"cannot decode image {where}: {err}") from err
    try:
        check_pixels(*im.size, where)
        if modes is not None and im.mode not in modes:  # converting would change the data
            raise ValueError(f"{where}: image mode {im.mode!r} is not one of {list(modes)}")
    except ValueError:
        im.close()
        raise
    return im


def decode_image(data: bytes, where: str, modes: tuple[str, ...] = ("L", "RGB")) -> np.ndarray:
    """One image file -> uint8 array (H, W) or (H, W, 3); its PIL mode must be in ``modes``.

    Every image skiplab reads goes through here: the pixel count in the header is checked
    against :data:`~skiplab.data.limits.MAX_IMAGE_PIXELS` before anything is decoded.
    """
    with _open_checked(io.BytesIO(data), where, modes) as im:
        try:
            im.load()
            mode, array = im.mode, np.asarray(im)
        except Exception as err:
            raise ValueError(f"cannot decode image {where}: {err}") from err
    if mode not in modes:  # loading can change the mode (e.g. some JPEGs)
        raise ValueError(f"{where}: image mode {mode!r} is not one of {list(modes)}")
    return array


def check_image_file(path: Path, modes: tuple[str, ...] = ("L", "RGB")) -> None:
    """The checks of :func:`read_image` (file size, pixels, mode) without decoding."""
    check_file_size(path, path.stat().st_size, MAX_IMAGE_FILE_BYTES, "an image file")
    _open_checked(path, str(path), modes).close()


def read_image(path: Path, modes: tuple[str, ...] = ("L", "RGB")) -> np.ndarray:
    """:func:`decode_image` of a file, refused unread above ``MAX_IMAGE_FILE_BYTES``."""
    check_file_size(path, path.stat().st_size, MAX_IMAGE_FILE_BYTES, "an image file")
    return decode_image(path.read_bytes(), str(path), modes)


class ImageStack:
    """Decoded images written one at a time into uint8 ``(N, C, H, W)`` tensors, one per part
    (e.g. per split), all of the first image's size and mode.

    The tensors are allocated when the first image arrives, after checking that all ``counts``
    images of its size fit in ``max_bytes``; resizing or converting would silently change the
    data, so any other size or mode is refused.
    """

    def __init__(self, counts: list[int], where, max_bytes: int | None = None) -> None:
        self.counts, self.where, self.max_bytes = counts, where, max_dataset_bytes(max_bytes)
        self.first: tuple[str, tuple[int, ...]] | None = None
        self.images: list[torch.Tensor] = []

    def put(self, part: int, i: int, array: np.ndarray, name: str) -> None:
        if self.first is None:
            self.first = (name, array.shape)
            need = sum(self.counts) * array.size
            if need > self.max_bytes:
                raise ValueError(
                    f"refusing {self.where}: {sum(self.counts)} images of "
                    f"{_shape_str(array.shape)} (as {name}) decode to {format_bytes(need)}, "
                    f"above the bound of {format_bytes(self.max_bytes)} (max_dataset_bytes)"
                )
            hw, c = array.shape[:2], (array.shape[2] if array.ndim == 3 else 1)
            self.images = [torch.empty((n, c, *hw), dtype=torch.uint8) for n in self.counts]
            self._views = [x.numpy() for x in self.images]
        elif array.shape != self.first[1]:
            raise ValueError(
                f"all images in {self.where} must share one size and mode; {self.first[0]} is "
                f"{_shape_str(self.first[1])} but {name} is {_shape_str(array.shape)}"
            )
        self._views[part][i] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def stack_images(arrays: list[np.ndarray], names: list[str], where: Path) -> torch.Tensor:
    """Decoded images of one size and mode -> uint8 ``(N, C, H, W)``."""
    stack = ImageStack([len(arrays)], where)
    for i, (a, name) in enumerate(zip(arrays, names, strict=True)):
        stack.put(0, i, a, name)
    return stack.images[0]


def _shape_str(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} {'RGB' if len(shape) == 3 else 'L'}"


def _read_dir(root: Path) -> tuple[list[str], list[str], str]:
    files, dirs = [], []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        (dirs if path.is_dir() else files).append(rel)
    return files, dirs, fingerprint_dir(root, [root / f for f in files])


def _decode_tree(root: Path, files: list[str] | None, dirs: list[str] | None, max_bytes: int):
    """Check the layout and sizes, then decode every sample: (classes, samples, {split: x}).

    Each file is read and decoded in turn (archive members in archive order) into its split's
    :class:`ImageStack`; nothing else is held.
    """
    budget = Budget(root, max_bytes)

    def decode(samples, read, order):
        stack = ImageStack([len(samples[s]) for s in SPLITS], root, max_bytes)
        slot = {p: (k, i) for k, s in enumerate(SPLITS) for i, (p, _) in enumerate(samples[s])}
        for p in order:
            k, i = slot[p]
            stack.put(k, i, decode_image(read(p), f"{root}/{p}"), f"{root}/{p}")
        return dict(zip(SPLITS, stack.images, strict=True))

    if files is not None:  # a folder, listed already
        classes, samples = parse_layout(files, dirs, root)
        wanted = sorted(p for s in SPLITS for p, _ in samples[s])
        for p in wanted:
            size = (root / p).stat().st_size
            check_file_size(root / p, size, MAX_IMAGE_FILE_BYTES, "an image file")
            budget.add(size, f"the file {p!r} ({format_bytes(size)})")
        return classes, samples, decode(samples, lambda p: (root / p).read_bytes(), wanted)
    with open_tar(root) as tf:
        # Every member is validated (sizes included) and the layout checked before anything
        # is decoded.
        checked = validate_tar(tf, root, max_bytes)
        files = [m.path for m, _ in checked if not m.is_dir]
        dirs = [m.path for m, _ in checked if m.is_dir]
        classes, samples = parse_layout(files, dirs, root)
        infos = {m.path: info for m, info in checked if not m.is_dir}
        return classes, samples, decode(samples, lambda p: tf.extractfile(infos[p]).read(), files)


def load_imagefolder(
    root: Path, split: str, cache_dir: Path, max_bytes: int | None = None
) -> ArrayDataset:
    """Load ``split`` of the tree at ``root`` (a folder or ``.tar``/``.tar.gz``), via the cache.

    Args:
        max_bytes: ``max_dataset_bytes`` (default: ``$SKIPLAB_MAX_DATASET_BYTES`` or 4 GiB).

    Raises:
        ValueError: if ``root`` does not follow :data:`LAYOUT` (naming what was found), an
            image cannot be decoded (naming it), images differ in size or mode, or a size
            bound of :mod:`skiplab.data.limits` is exceeded (naming the file and the bound).
    """
    max_bytes = max_dataset_bytes(max_bytes)
    if root.is_dir():
        files, dirs, key = _read_dir(root)
        kind = "fingerprint"
    elif root.is_file():
        files, dirs, key = None, None, sha256_file(root)
        kind = "sha256"
    else:
        raise ValueError(f"expected an image-folder tree ({LAYOUT}) at {root}; it does not exist")
    origin = f"{root} ({kind} {key})"
    cached = load_cached(cache_dir / f"imagefolder-{key[:32]}-{split}.safetensors", max_bytes)
    if cached is not None:
        tensors, meta = cached
        return ArrayDataset(
            tensors["images"],
            tensors["targets"],
            tuple(meta["classes"]),
            "classification",
            meta["mean"],
            meta["std"],
            f"imagefolder {split}: {origin}",
        )

    classes, samples, images = _decode_tree(root, files, dirs, max_bytes)
    built = {
        s: (images[s], torch.tensor([c for _, c in samples[s]], dtype=torch.int64)) for s in SPLITS
    }
    mean, std = channel_stats(built["train"][0])
    for s, (x, y) in built.items():
        meta = {"classes": list(classes), "mean": mean, "std": std}
        save_cached(
            cache_dir / f"imagefolder-{key[:32]}-{s}.safetensors", {"images": x, "targets": y}, meta
        )
    x, y = built[split]
    return ArrayDataset(
        x, y, classes, "classification", mean, std, f"imagefolder {split}: {origin}"
    )
