"""Image-folder trees ``train/<class>/*`` and ``test/<class>/*``, as a folder or a tar archive.

The images (PNG or JPEG) are decoded once with PIL into uint8 tensors that are cached in
``cache_dir`` under the source's content hash: the SHA-256 of an archive, or for a folder the
hash of its sorted relative paths, sizes and modification times. Later loads read the cache
(safetensors, checksum-verified) and decode nothing. Archives are read member by member with
``tarfile`` after every member has been validated; nothing is extracted.

Class order is the sorted folder names; samples are ordered by class, then by file path.
Both splits are decoded together, because the normalisation statistics come from ``train``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skiplab.data.archives import fingerprint_dir, open_tar, validate_tar
from skiplab.data.cache import load_cached, save_cached
from skiplab.data.dataset import ArrayDataset, channel_stats
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


def decode_image(data: bytes, where: str, modes: tuple[str, ...] = ("L", "RGB")) -> np.ndarray:
    """One image file -> uint8 array (H, W) or (H, W, 3); its PIL mode must be in ``modes``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode, array = im.mode, np.asarray(im)
    except Exception as err:  # PIL raises many types for a damaged file
        raise ValueError(f"cannot decode image {where}: {err}") from err
    if mode not in modes:  # converting would silently change the data
        raise ValueError(f"{where}: image mode {mode!r} is not one of {list(modes)}")
    return array


def stack_images(arrays: list[np.ndarray], names: list[str], where: Path) -> torch.Tensor:
    # Every image must share the first one's size and mode: resizing or converting would
    # silently change the data.
    first = arrays[0].shape
    for a, name in zip(arrays, names, strict=True):
        if a.shape != first:
            raise ValueError(
                f"all images in {where} must share one size and mode; {names[0]} is "
                f"{_shape_str(first)} but {name} is {_shape_str(a.shape)}"
            )
    x = torch.from_numpy(np.stack(arrays))
    return (x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous()


def _shape_str(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} {'RGB' if len(shape) == 3 else 'L'}"


def _read_dir(root: Path) -> tuple[list[str], list[str], str]:
    files, dirs = [], []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        (dirs if path.is_dir() else files).append(rel)
    return files, dirs, fingerprint_dir(root, [root / f for f in files])


def _read_tree(root: Path, files: list[str] | None, dirs: list[str] | None):
    """Check the layout, then read every sample file: (classes, samples, {path: bytes})."""
    if files is not None:  # a folder, listed already
        classes, samples = parse_layout(files, dirs, root)
        wanted = sorted(p for s in SPLITS for p, _ in samples[s])
        return classes, samples, {p: (root / p).read_bytes() for p in wanted}
    with open_tar(root) as tf:
        # Every member is validated and the layout checked before anything is decoded.
        checked = validate_tar(tf, root)
        files = [m.path for m, _ in checked if not m.is_dir]
        dirs = [m.path for m, _ in checked if m.is_dir]
        classes, samples = parse_layout(files, dirs, root)
        contents = {m.path: tf.extractfile(info).read() for m, info in checked if not m.is_dir}
    return classes, samples, contents


def load_imagefolder(root: Path, split: str, cache_dir: Path) -> ArrayDataset:
    """Load ``split`` of the tree at ``root`` (a folder or ``.tar``/``.tar.gz``), via the cache.

    Raises:
        ValueError: if ``root`` does not follow :data:`LAYOUT` (naming what was found), an
            image cannot be decoded (naming it), or images differ in size or mode.
    """
    if root.is_dir():
        files, dirs, key = _read_dir(root)
        kind = "fingerprint"
    elif root.is_file():
        files, dirs, key = None, None, sha256_file(root)
        kind = "sha256"
    else:
        raise ValueError(f"expected an image-folder tree ({LAYOUT}) at {root}; it does not exist")
    origin = f"{root} ({kind} {key})"
    cached = load_cached(cache_dir / f"imagefolder-{key[:32]}-{split}.safetensors")
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

    classes, samples, contents = _read_tree(root, files, dirs)
    built = {}
    for s in SPLITS:
        names = [p for p, _ in samples[s]]
        arrays = [decode_image(contents.pop(p), f"{root}/{p}") for p in names]
        built[s] = (
            stack_images(arrays, names, root),
            torch.tensor([c for _, c in samples[s]], dtype=torch.int64),
        )
    if built["train"][0].shape[1:] != built["test"][0].shape[1:]:
        raise ValueError(
            f"train and test images in {root} differ in shape: "
            f"{tuple(built['train'][0].shape[1:])} vs {tuple(built['test'][0].shape[1:])}"
        )
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
