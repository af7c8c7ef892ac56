"""skiplab's data layer: datasets as uint8 tensors, batches built on the device.

Usage::

    train = load_dataset("cifar10", "train", data_dir="../shared/data/cifar10-jpeg.tar.gz")
    loader = DeviceLoader(train, 128, train=True, seed=0, device="cuda")
    for x, y in loader.epoch(0):
        ...

Nothing here imports training code or the models.
"""

from skiplab.data.archives import safe_extract
from skiplab.data.cifar import download_cifar
from skiplab.data.convert import from_torch_dataset
from skiplab.data.dataset import ArrayDataset, channel_stats
from skiplab.data.datasets import SPLITS, load_dataset
from skiplab.data.download import DownloadError, download_file
from skiplab.data.loader import DeviceLoader
from skiplab.data.synthetic import make_classification, make_segmentation
from skiplab.data.text import (
    TextDataset,
    TextLoader,
    bits_per_char,
    download_tinyshakespeare,
    make_copy_text,
)

__all__ = [
    "SPLITS",
    "ArrayDataset",
    "DeviceLoader",
    "DownloadError",
    "TextDataset",
    "TextLoader",
    "bits_per_char",
    "channel_stats",
    "download_cifar",
    "download_file",
    "download_tinyshakespeare",
    "from_torch_dataset",
    "load_dataset",
    "make_classification",
    "make_copy_text",
    "make_segmentation",
    "safe_extract",
]
