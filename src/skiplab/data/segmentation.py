"""Segmentation folders: the ISBI 2012 EM challenge layout and a generic ``segfolder``.

ISBI 2012 (the data of Ronneberger et al. 2015, U-Net, section 3.1)::

    <root>/train/image/{0..29}.png   512x512 grayscale
    <root>/train/label/{0..29}.png   255 = cell interior -> class 1, 0 = membrane -> class 0

The 30 labelled images are split by image into 25 train and 5 validation with a fixed
permutation seeded by ``seed`` (the validation images are named in ``source``).

segfolder::

    <root>/classes.txt               one class name per line; pixel value k = class k
    <root>/<split>/image/<name>.png  grayscale or RGB, all the same size
    <root>/<split>/label/<name>.png  mode L or P, the same size as its image

Images and masks are paired by file name. Normalisation statistics come from the training
images (``train`` of segfolder, the 25 training images of ISBI). Images and masks are read
with :func:`~skiplab.data.imagefolder.read_image` (size and pixel bounds checked first) and the
files of a split together are bounded by ``max_dataset_bytes``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from skiplab.data.archives import fingerprint_dir
from skiplab.data.dataset import ArrayDataset, channel_stats, mix_seed
from skiplab.data.imagefolder import ImageStack, read_image
from skiplab.data.limits import MAX_IMAGE_FILE_BYTES, Budget, check_file_size, format_bytes

ISBI_CLASSES = ("membrane", "cell")
ISBI_VALUES = (0, 255)  # label pixel value of class 0 and class 1
ISBI_NUM_IMAGES = 30
ISBI_NUM_VAL = 5
SEGFOLDER_LAYOUT = "classes.txt, <split>/image/<name>.png and <split>/label/<name>.png"


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_pairs(folder: Path, layout: str) -> list[str]:
    """File names present in both ``folder/image`` and ``folder/label``, naturally sorted.

    Raises:
        ValueError: naming ``layout`` and what was found, when a folder is missing or empty,
            a file is not a PNG, or an image has no mask (or a mask no image).
    """
    listing = {}
    for sub in ("image", "label"):
        d = folder / sub
        if not d.is_dir():
            found = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else None
            raise ValueError(
                f"expected the layout {layout}; {d} is not a folder "
                f"({'found ' + str(found) if found is not None else f'{folder} does not exist'})"
            )
        names = sorted(p.name for p in d.iterdir())
        others = [n for n in names if not n.lower().endswith(".png")]
        if others:
            raise ValueError(f"expected only .png files in {d} ({layout}); found {others[:5]}")
        if not names:
            raise ValueError(f"expected the layout {layout}; {d} is empty")
        listing[sub] = set(names)
    for a, b in (("image", "label"), ("label", "image")):
        missing = sorted(listing[a] - listing[b], key=_natural)
        if missing:
            raise ValueError(
                f"missing pair: {folder / a / missing[0]} has no matching {folder / b / missing[0]}"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
    return sorted(listing["image"], key=_natural)


def read_pairs(
    folder: Path, names: list[str], max_bytes: int | None = None
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Decode images (uint8 ``(N, C, H, W)``) and raw masks (list of ``(H, W)`` uint8).

    Every file's size is checked (and their total against ``max_bytes``) before any is read.
    """
    budget = Budget(folder, max_bytes)
    for name in names:
        for path in (folder / "image" / name, folder / "label" / name):
            size = path.stat().st_size
            check_file_size(path, size, MAX_IMAGE_FILE_BYTES, "an image file")
            budget.add(size, f"the file {path.name!r} ({format_bytes(size)})")
    stack = ImageStack([len(names)], folder, max_bytes)
    masks = []
    for i, name in enumerate(names):
        img_path, lbl_path = folder / "image" / name, folder / "label" / name
        image = read_image(img_path)
        mask = read_image(lbl_path, modes=("L", "P"))
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask {lbl_path} is {mask.shape[1]}x{mask.shape[0]} but its image {img_path} "
                f"is {image.shape[1]}x{image.shape[0]}"
            )
        stack.put(0, i, image, str(img_path))
        masks.append(mask)
    return stack.images[0], masks


def _check_values(mask: np.ndarray, allowed: tuple[int, ...], path: Path, classes) -> None:
    found = np.unique(mask)
    bad = [int(v) for v in found if int(v) not in allowed]
    if bad:
        raise ValueError(
            f"label {path} has pixel values {bad[:10]} outside the classes {list(classes)} "
            f"(allowed values {list(allowed)})"
        )


def isbi_split(seed: int) -> tuple[list[int], list[int]]:
    """(train, val) image indices of the fixed 25/5 split for ``seed``.

    The validation images are the 5 whose hash of ``(seed, index)`` is smallest: a fixed
    function of the seed that no library version can change.
    """
    ranked = sorted(range(ISBI_NUM_IMAGES), key=lambda i: mix_seed(seed, i))
    val = sorted(ranked[:ISBI_NUM_VAL])
    return [i for i in range(ISBI_NUM_IMAGES) if i not in val], val


def load_isbi2012(
    root: Path, split: str, seed: int = 0, max_bytes: int | None = None
) -> ArrayDataset:
    """ISBI 2012 membrane segmentation, ``split`` "train" (25 images) or "val" (5)."""
    layout = "train/image/{0..29}.png and train/label/{0..29}.png (ISBI 2012)"
    folder = root / "train"
    names = find_pairs(folder, layout)
    expected = [f"{i}.png" for i in range(ISBI_NUM_IMAGES)]
    if names != expected:
        raise ValueError(
            f"expected the layout {layout} in {root}; found images {names[:8]}"
            f"{'...' if len(names) > 8 else ''} ({len(names)} files)"
        )
    images, masks = read_pairs(folder, names, max_bytes)
    if images.shape[1] != 1:
        raise ValueError(f"ISBI 2012 images must be grayscale; {folder}/image holds RGB images")
    for name, m in zip(names, masks, strict=True):
        _check_values(m, ISBI_VALUES, folder / "label" / name, ISBI_CLASSES)
    targets = torch.from_numpy(np.stack(masks) == ISBI_VALUES[1]).to(torch.int64)
    train_idx, val_idx = isbi_split(seed)
    mean, std = channel_stats(images[train_idx])
    idx = train_idx if split == "train" else val_idx
    files = [folder / sub / n for sub in ("image", "label") for n in names]
    source = (
        f"isbi2012 {split} (25/5 split by image, seed {seed}, validation images {val_idx}): "
        f"{root} (fingerprint {fingerprint_dir(root, files)})"
    )
    return ArrayDataset(
        images[idx].contiguous(),
        targets[idx].contiguous(),
        ISBI_CLASSES,
        "segmentation",
        mean,
        std,
        source,
    )


def load_segfolder(root: Path, split: str, max_bytes: int | None = None) -> ArrayDataset:
    """A generic segmentation folder (see the module docstring), split "train"/"val"/"test"."""
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        found = sorted(p.name for p in root.iterdir())[:10] if root.is_dir() else "nothing"
        raise ValueError(f"expected the layout {SEGFOLDER_LAYOUT} in {root}; found {found}")
    check_file_size(classes_file, classes_file.stat().st_size, 2**20, "a list of class names")
    classes = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
    if len(classes) < 2 or len(classes) > 256:
        raise ValueError(f"{classes_file} must name 2..256 classes, one per line; got {classes}")
    allowed = tuple(range(len(classes)))

    def read(s: str) -> tuple[torch.Tensor, torch.Tensor, list[Path]]:
        folder = root / s
        names = find_pairs(folder, SEGFOLDER_LAYOUT)
        images, masks = read_pairs(folder, names, max_bytes)
        for name, m in zip(names, masks, strict=True):
            _check_values(m, allowed, folder / "label" / name, classes)
        files = [folder / sub / n for sub in ("image", "label") for n in names]
        return images, torch.from_numpy(np.stack(masks)).to(torch.int64), files

    images, targets, files = read(split)
    train_images = images if split == "train" else read("train")[0]
    if train_images.shape[1] != images.shape[1]:
        raise ValueError(
            f"{split} images in {root} have {images.shape[1]} channels but train images have "
            f"{train_images.shape[1]}"
        )
    mean, std = channel_stats(train_images)
    source = f"segfolder {split}: {root} (fingerprint {fingerprint_dir(root, files)})"
    return ArrayDataset(images, targets, classes, "segmentation", mean, std, source)
