"""skiplab's networks. Importing this package registers every family."""

# Each family module registers its models on import.
from skiplab.models import densenet, fpn, highway, resnet, unet  # noqa: F401
from skiplab.models._base import DropPath, FeatureInfo, SkipNet
from skiplab.models.pretrained import load_pretrained
from skiplab.models.resnet import ResNet, ResNetConfig
from skiplab.models.resnet_blocks import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasic,
    PreActBottleneck,
)

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "DropPath",
    "FeatureInfo",
    "PadShortcut",
    "PreActBasic",
    "PreActBottleneck",
    "ResNet",
    "ResNetConfig",
    "SkipNet",
    "load_pretrained",
]
