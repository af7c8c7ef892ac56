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

__all__ = [
    "SPLITS",
    "ArrayDataset",
    "DeviceLoader",
    "DownloadError",
    "channel_stats",
    "download_cifar",
    "download_file",
    "from_torch_dataset",
    "load_dataset",
    "make_classification",
    "make_segmentation",
    "safe_extract",
]
