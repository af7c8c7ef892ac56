"""skiplab's networks. Importing this package registers every family.

``create_model``, ``list_models``, ``get_model_entry`` and ``register_model`` are here as well
(and in ``skiplab``): the registry (:mod:`skiplab.registry`) is a table that imports no model,
and this package fills it.
"""

# Each family module registers its models on import.
from skiplab.models import densenet, fpn, highway, resnet, transformer, unet  # noqa: F401
from skiplab.models._base import DropPath, FeatureInfo, SkipNet
from skiplab.models.factory import create_model
from skiplab.models.pretrained import load_pretrained
from skiplab.models.resnet import ResNet, ResNetConfig
from skiplab.models.resnet_blocks import (
    BasicBlock,
    Bottleneck,
    PadShortcut,
    PreActBasic,
    PreActBottleneck,
    ShortcutOptions,
)
from skiplab.registry import get_model_entry, list_models, register_model

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
    "ShortcutOptions",
    "SkipNet",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_pretrained",
    "register_model",
]
