"""``load_dataset``: every dataset skiplab knows, by name.

==================  ==========================  =============================================
name                splits                      data_dir
==================  ==========================  =============================================
``cifar10``         train, test                 official python format (folder or .tar.gz,
``cifar100``                                    see :mod:`skiplab.data.cifar`), or an
                                                image-folder tree / .tar(.gz) of one
``imagefolder``     train, test                 ``train/<class>/*``, ``test/<class>/*``
``isbi2012``        train (25), val (5)         ``train/image/*.png``, ``train/label/*.png``
``segfolder``       train, val, test            ``classes.txt``, ``<split>/{image,label}/``
``synthetic``       train, test                 none (generated from ``seed``)
``synthetic-seg``   train, test                 none (generated from ``seed``)
``tinyshakespeare`` train, val (90% / 10%)      ``input.txt`` (the file, or a folder holding
                                                it); character tokens, see
                                                :mod:`skiplab.data.text`
``synthetic-text``  train, val                  none (a generated copy task, from ``seed``)
``torchvision:X``   train, test                 the ``root`` of ``torchvision.datasets.X``
==================  ==========================  =============================================

The two text datasets return a :class:`~skiplab.data.text.TextDataset` (int64 character
tokens, task ``"language_modeling"``), every other one an :class:`ArrayDataset`.

``torchvision:X`` is any torchvision dataset class X that takes ``train=`` or ``split=``
(MNIST, FashionMNIST, KMNIST, CIFAR10, SVHN, ...), read through :func:`from_torch_dataset`
and normalised with the statistics of its train split.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import replace
from pathlib import Path

from skiplab.config import check_int
from skiplab.data.cache import default_cache_dir
from skiplab.data.cifar import CIFAR, download_cifar, find_official, load_official
from skiplab.data.convert import from_torch_dataset
from skiplab.data.dataset import ArrayDataset
from skiplab.data.imagefolder import LAYOUT, is_imagefolder, load_imagefolder
from skiplab.data.limits import max_dataset_bytes as resolve_max_bytes
from skiplab.data.segmentation import load_isbi2012, load_segfolder
from skiplab.data.synthetic import make_classification, make_segmentation
from skiplab.data.text import TEXT_SPLITS, TextDataset, load_tinyshakespeare, make_copy_text

SPLITS: dict[str, tuple[str, ...]] = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "imagefolder": ("train", "test"),
    "isbi2012": ("train", "val"),
    "segfolder": ("train", "val", "test"),
    "synthetic": ("train", "test"),
    "synthetic-seg": ("train", "test"),
    "tinyshakespeare": TEXT_SPLITS,
    "synthetic-text": TEXT_SPLITS,
}
TORCHVISION = "torchvision:"  # prefix of torchvision dataset classes: "torchvision:MNIST"
TORCHVISION_SPLITS = ("train", "test")
# Sorted folder names of an image-folder copy of CIFAR-10 = the official label order.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")  # fmt: skip


def load_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    max_dataset_bytes: int | str | None = None,
) -> ArrayDataset | TextDataset:
    """Load one split of a dataset (see the table above).

    Args:
        name: Dataset name.
        split: Split name, one of ``SPLITS[name]``.
        data_dir: Where the data is (a folder or an archive). For CIFAR and tinyshakespeare
            it defaults to ``cache_dir``, where ``download=True`` puts the official file.
        download: Fetch the official CIFAR archive, or tinyshakespeare's ``input.txt``, if it
            is not found (never otherwise); for ``torchvision:X``, passed to torchvision.
        seed: Seed of the synthetic data and of the ISBI 2012 train/val split.
        cache_dir: Cache of decoded image folders; default ``$SKIPLAB_CACHE``, else
            ``$XDG_CACHE_HOME/skiplab``, else ``~/.cache/skiplab``.
        max_dataset_bytes: Bound on what the data may expand to: an archive's members, the
            files read, the decoded images (e.g. ``"8GiB"``); default
            ``$SKIPLAB_MAX_DATASET_BYTES`` or 4 GiB. Per-file bounds and the image pixel
            limit are fixed (see :mod:`skiplab.data.limits`).

    Raises:
        ValueError: for an unknown name or split, a data layout that does not match (naming
            the expected layout, the path and what was found), or data above a size bound
            (naming the file, its declared size and the bound).
    """
    if isinstance(name, str) and name.startswith(TORCHVISION):
        return _load_torchvision(name, split, data_dir, download)
    if name not in SPLITS:
        close = difflib.get_close_matches(str(name), list(SPLITS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint} (known: {list(SPLITS)})")
    if split not in SPLITS[name]:
        raise ValueError(f"{name} has splits {list(SPLITS[name])}; got {split!r}")
    check_int("seed", seed, 0)
    limit = resolve_max_bytes(max_dataset_bytes)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = Path(data_dir) if data_dir is not None else None

    if name.startswith("synthetic"):
        if root is not None:
            raise ValueError(
                f"{name} is generated from the seed and takes no data_dir; "
                f"got data_dir={data_dir!r}"
            )
        make = {
            "synthetic": make_classification,
            "synthetic-seg": make_segmentation,
            "synthetic-text": make_copy_text,
        }[name]
        return make(split, seed)
    if name == "tinyshakespeare":
        return load_tinyshakespeare(split, root if root is not None else cache, download=download)
    if name in CIFAR:
        return _load_cifar(name, split, root, cache, download, limit)
    if root is None:
        raise ValueError(f"{name} needs data_dir (the folder or archive that holds it)")
    if name == "imagefolder":
        return load_imagefolder(root, split, cache, limit)
    if name == "isbi2012":
        return load_isbi2012(root, split, seed, limit)
    return load_segfolder(root, split, limit)


def _load_torchvision(name: str, split: str, root, download: bool) -> ArrayDataset:
    import torchvision.datasets  # here, not at the top: torchvision is slow to import

    cls_name = name[len(TORCHVISION) :]
    cls = getattr(torchvision.datasets, cls_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torchvision.datasets.VisionDataset)):
        raise ValueError(f"{name}: torchvision.datasets has no dataset class {cls_name!r}")
    if split not in TORCHVISION_SPLITS:
        raise ValueError(f"{name} has splits {list(TORCHVISION_SPLITS)}; got {split!r}")
    if root is None:
        raise ValueError(f"{name} needs data_dir (the root folder torchvision reads it from)")
    params = inspect.signature(cls).parameters
    if "train" not in params and "split" not in params:
        raise ValueError(f"{name}: {cls_name} takes neither train= nor split=")

    def read(which: str):
        how = {"train": which == "train"} if "train" in params else {"split": which}
        try:
            return cls(str(root), download=download, **how)
        except RuntimeError as exc:  # torchvision: "Dataset not found. ..."
            raise ValueError(f"{name} {which} not found under {root}: {exc}") from exc

    data = from_torch_dataset(read(split), source=f"{name} {split}: {root}")
    if split != "train":  # normalise with the training split's statistics
        stats = from_torch_dataset(read("train"))
        data = replace(data, mean=stats.mean, std=stats.std)
    return data


def _load_cifar(name: str, split: str, root: Path | None, cache: Path, download: bool, limit: int):
    spec = CIFAR[name]
    where = root if root is not None else cache
    official = find_official(spec, where)
    if official is None and root is not None and is_imagefolder(root):
        ds = load_imagefolder(root, split, cache, limit)
        # CIFAR-10's names are checked too (sorted, they are the official label order);
        # for CIFAR-100 the count.
        wrong_names = name == "cifar10" and ds.classes != CIFAR10_CLASSES
        if len(ds.classes) != spec.num_classes or wrong_names:
            expected = f" {list(CIFAR10_CLASSES)}" if name == "cifar10" else ""
            raise ValueError(
                f"{root} is an image-folder tree with classes {list(ds.classes)[:12]}, but "
                f"{name} has {spec.num_classes} classes{expected}"
            )
        # The published normalisation of the dataset, whatever format it comes in.
        return replace(ds, mean=spec.mean, std=spec.std, source=f"{name} {ds.source}")
    if official is None and download:
        if where.exists() and not where.is_dir():
            raise ValueError(f"download=True needs data_dir to be a folder; got the file {where}")
        official = download_cifar(name, where)
    if official is None:
        found = sorted(p.name for p in where.iterdir())[:10] if where.is_dir() else "nothing"
        raise ValueError(
            f"expected {name} at {where}: the official folder {spec.folder}/ or archive "
            f"{spec.archive} (in it, or as data_dir itself), or an image-folder tree or "
            f".tar/.tar.gz ({LAYOUT}); found {found}. Pass download=True to fetch "
            f"{spec.archive} from {spec.url}"
        )
    return load_official(name, split, official, limit)
