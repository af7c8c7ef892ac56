"""The references skiplab is measured against: what users write without skiplab.

- ImageNet-sized nets: torchvision's model of the same name (``torchvision.models``).
- CIFAR ResNets (6n+2): :class:`CifarResNet`, a straightforward eager ResNet with option A
  shortcuts, the widely copied public implementation.
- Training data: a ``torch.utils.data.DataLoader`` over a Dataset of HWC uint8 arrays, turned
  into PIL images and through torchvision transforms (``RandomCrop(size, padding=4)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``), as ``torchvision.datasets.CIFAR10``
  does: the same images and the same augmentation as skiplab's DeviceLoader.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skiplab.data import ArrayDataset
from skiplab.models import get_model_entry


class _Block(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - in_planes) // 2
        self.stride = stride

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs, He et al. 2015 section 4.2, option A shortcuts."""

    def __init__(self, depth: int = 20, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2; got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(_Block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.avg_pool2d(out, out.size()[3]).flatten(1)
        return self.linear(out)


def reference_model(name: str, num_classes: int) -> tuple[nn.Module, str]:
    """The reference network for skiplab model ``name`` and a one-line description.

    Raises:
        ValueError: when there is no reference for ``name``, naming the kinds there are.
    """
    import torchvision  # here, not at the top: torchvision is slow to import

    entry = get_model_entry(name)
    if entry.family == "cifar_resnet":
        return CifarResNet(entry.depth, num_classes), f"eager CifarResNet-{entry.depth}"
    if name in torchvision.models.list_models(module=torchvision.models):
        model = torchvision.models.get_model(name, num_classes=num_classes)
        return model, f"torchvision.models.{name}"
    raise ValueError(
        f"no reference for {name!r}: references exist for the CIFAR ResNets (family "
        "cifar_resnet) and for the models torchvision has under the same name "
        "(resnet18/34/50/101/152, resnext*, wide_resnet*, densenet121/161/169/201)"
    )


class ImageArrays(Dataset):
    """The images of an :class:`ArrayDataset` as HWC uint8 arrays, read through PIL and
    ``transform`` one at a time (the layout and path of ``torchvision.datasets.CIFAR10``)."""

    def __init__(self, data: ArrayDataset, transform) -> None:
        self.images = np.ascontiguousarray(data.images.permute(0, 2, 3, 1).numpy())
        self.targets = data.targets.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.targets[i]


def reference_loader(data: ArrayDataset, batch_size: int, workers: int, seed: int) -> DataLoader:
    """A shuffling DataLoader with the standard torchvision CIFAR training transforms."""
    from torchvision import transforms  # here, not at the top: torchvision is slow to import

    size = tuple(data.images.shape[-2:])
    transform = transforms.Compose(
        [
            transforms.RandomCrop(size, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ]
    )
    return DataLoader(
        ImageArrays(data, transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
