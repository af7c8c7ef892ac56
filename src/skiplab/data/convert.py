"""Any map-style PyTorch dataset (torchvision's MNIST, SVHN, ...) as an :class:`ArrayDataset`.

Each item must be ``(image, target)`` as torchvision returns it without transforms: the image a
PIL image (mode L or RGB), a uint8 array ``(H, W)`` / ``(H, W, C)``, or a tensor ``(C, H, W)``
(uint8, or float in [0, 1] as ``ToTensor`` makes); the target a class index (classification)
or an ``(H, W)`` mask of class indices (segmentation). Every image must have the same size.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset, IterableDataset

from skiplab.data.dataset import ArrayDataset, channel_stats


def from_torch_dataset(
    dataset: Dataset,
    *,
    classes: tuple[str, ...] | None = None,
    task: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    source: str | None = None,
) -> ArrayDataset:
    """Read every item of ``dataset`` into an :class:`ArrayDataset`.

    Args:
        dataset: A map-style dataset (``len`` and integer indexing) of ``(image, target)``.
        classes: Class names; default ``dataset.classes`` when it has them, else "0", "1", ...
            up to the largest target.
        task: "classification" or "segmentation"; default from the first target (a number or
            an (H, W) mask).
        mean, std: Per-channel normalisation on 0..1; default the statistics of these images
            (pass the training split's for a test split).
        source: Origin recorded in results files; default the dataset's class and size.

    Raises:
        ValueError: for an iterable or empty dataset, an item that is not (image, target), or
            an image or target of another type, mode or size, naming the index.

    Example:
        >>> mnist = torchvision.datasets.MNIST(root, train=True)
        >>> train = from_torch_dataset(mnist)
    """
    if isinstance(dataset, ArrayDataset):
        return dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise ValueError(
            f"expected a map-style dataset (len and dataset[i]); got {type(dataset).__name__}"
        )
    n = len(dataset)
    if n == 0:
        raise ValueError(f"{type(dataset).__name__} is empty")
    images = targets = None
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(
                f"item {i} of {type(dataset).__name__}: expected (image, target); "
                f"got {type(item).__name__}"
            )
        image, target = _image(item[0], i), _target(item[1], i)
        if images is None:
            images = torch.empty((n, *image.shape), dtype=torch.uint8)
            targets = torch.empty((n, *target.shape), dtype=torch.int64)
        if image.shape != images.shape[1:] or target.shape != targets.shape[1:]:
            raise ValueError(
                f"item {i}: image {tuple(image.shape)} and target {tuple(target.shape)}; item 0 "
                f"had {tuple(images.shape[1:])} and {tuple(targets.shape[1:])} (all must match)"
            )
        images[i], targets[i] = image, target
    if task is None:
        task = "classification" if targets.ndim == 1 else "segmentation"
    if classes is None:
        classes = getattr(dataset, "classes", None)
    if classes is None:
        classes = tuple(str(k) for k in range(int(targets.max()) + 1))
    if mean is None or std is None:
        mean, std = channel_stats(images)
    if source is None:
        source = f"{type(dataset).__name__} ({n} samples)"
    return ArrayDataset(images, targets, tuple(classes), task, mean, std, source)


def _image(image, i: int) -> torch.Tensor:
    if isinstance(image, PIL.Image.Image):
        if image.mode not in ("L", "RGB"):
            raise ValueError(
                f"item {i}: a PIL image of mode {image.mode!r}; expected L or RGB "
                "(convert it in the dataset's transform)"
            )
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                f"item {i}: expected a uint8 array (H, W) or (H, W, C); "
                f"got {image.dtype} {image.shape}"
            )
        image = torch.from_numpy(image.copy())
        return image[None] if image.ndim == 2 else image.permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise ValueError(f"item {i}: expected an image tensor (C, H, W); got {image.shape}")
        if image.is_floating_point():
            if image.numel() and (float(image.min()) < 0 or float(image.max()) > 1):
                raise ValueError(
                    f"item {i}: a float image must lie in [0, 1] (ToTensor); got values in "
                    f"[{float(image.min()):.3g}, {float(image.max()):.3g}] (normalised already?)"
                )
            return (image * 255).round().to(torch.uint8)
        if image.dtype != torch.uint8:
            raise ValueError(f"item {i}: expected a uint8 or float image; got {image.dtype}")
        return image
    raise ValueError(
        f"item {i}: expected a PIL image, uint8 array or tensor; got {type(image).__name__}"
    )


def _target(target, i: int) -> torch.Tensor:
    if isinstance(target, PIL.Image.Image):  # a mask
        target = np.asarray(target)
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return torch.tensor(int(target))
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target.copy())
    if isinstance(target, torch.Tensor) and not target.is_floating_point():
        if target.ndim in (0, 2):
            return target.to(torch.int64)
    raise ValueError(
        f"item {i}: expected a class index or an (H, W) mask of class indices as target; "
        f"got {type(target).__name__}"
        + (f" {target.dtype} {tuple(target.shape)}" if isinstance(target, torch.Tensor) else "")
    )
