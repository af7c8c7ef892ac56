"""The row type of every family's variant table, and the call that registers a table.

A family lists its registered names as data, one row per name with the paper it comes from in
a comment above it::

    RESNET_VARIANTS = {
        # He et al. 2015, Table 1
        "resnet18": Variant("resnet", IMAGENET, ResNetConfig("basic", (2, 2, 2, 2))),
        ...
    }
    register_variants(RESNET_VARIANTS, ResNet, depth=lambda cfg: cfg.depth)

and each name then builds ``ResNet(cfg.with_overrides(overrides), model_name=name)``
(:func:`skiplab.registry.register_config_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from skiplab.config import Config
from skiplab.registry import register_config_model


@dataclass(frozen=True)
class Variant:
    """One registered name of a family's variant table.

    Attributes:
        family: Registry family, e.g. ``"resnet"``, ``"cifar_resnet"``, ``"unet"``.
        input_size: Default input ``(C, H, W)`` (``(T,)`` for a language model).
        config: The family's config; the user's overrides replace its fields.
        depth: Weighted layers as the paper counts them, where the table gives it per row
            (None: not meaningful, or computed from the config by :func:`register_variants`).
        task: ``"classification"``, ``"segmentation"`` or ``"language_modeling"``.
    """

    family: str
    input_size: tuple[int, ...]
    config: Config
    depth: int | None = None
    task: str = "classification"


def register_variants(
    table: Mapping[str, Variant],
    model: type[nn.Module] | Mapping[type, type[nn.Module]],
    *,
    depth: Callable[[Config], int | None] | None = None,
) -> None:
    """Register every row of ``table`` under its name, in the table's order.

    Args:
        table: name -> :class:`Variant`.
        model: The network class built from a row's config, or config class -> network class
            where a table mixes configs of several networks.
        depth: The paper's depth of a config, for families whose config knows it; rows then
            give no ``depth`` of their own.

    Raises:
        ValueError: a row that gives a depth the config already determines, or a name that is
            already registered.
    """
    for name, row in table.items():
        if depth is not None and row.depth is not None:
            raise ValueError(f"{name}: depth comes from the config; the row gives {row.depth}")
        model_cls = model[type(row.config)] if isinstance(model, Mapping) else model
        register_config_model(
            name,
            model_cls,
            row.config,
            family=row.family,
            input_size=row.input_size,
            depth=depth(row.config) if depth is not None else row.depth,
            task=row.task,
        )
