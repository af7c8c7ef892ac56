"""Model registry: every network in skiplab is created by name.

Usage::

    @register_model(family="resnet", input_size=(3, 224, 224), depth=50)
    def resnet50(**overrides) -> nn.Module: ...

    model = create_model("resnet50", num_classes=10)
    list_models("resnet*")

A factory receives the user's overrides and is responsible for validating them (the model
configs do so in their ``__post_init__``); the registry only knows names and metadata.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

TASKS = ("classification", "segmentation")


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name.

    Attributes:
        name: Registered name, e.g. ``"resnet50"``.
        family: Family the model belongs to, e.g. ``"resnet"``, ``"plain"``, ``"preact_resnet"``.
        build: Factory called as ``build(**overrides)``.
        input_size: Default input ``(C, H, W)``.
        depth: Number of weighted layers as the paper counts them (None where not meaningful).
        task: ``"classification"`` or ``"segmentation"``.
    """

    name: str
    family: str
    build: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    depth: int | None
    task: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str | None = None,
    *,
    family: str,
    input_size: tuple[int, int, int],
    depth: int | None = None,
    task: str = "classification",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model factory under ``name`` (default: the function's name).

    Raises:
        ValueError: if the name is already registered or the task is unknown.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}; got {task!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(
                f"model {key!r} is already registered (family {_REGISTRY[key].family})"
            )
        _REGISTRY[key] = ModelEntry(key, family, fn, tuple(input_size), depth, task)
        return fn

    return decorator


def register_config_model(
    name: str,
    model_cls: Callable[..., nn.Module],
    cfg,
    *,
    family: str,
    input_size: tuple[int, int, int],
    depth: int | None = None,
    task: str = "classification",
) -> None:
    """Register ``name`` as ``model_cls(cfg.with_overrides(overrides), model_name=name)``:
    a model family whose variants are rows of a config dataclass with ``with_overrides``."""

    def build(**overrides) -> nn.Module:
        return model_cls(cfg.with_overrides(overrides), model_name=name)

    build.__name__ = name
    build.__doc__ = (
        f"{name}: {model_cls.__name__} ({family}). Overrides: any {type(cfg).__name__} field."
    )
    register_model(name, family=family, input_size=input_size, depth=depth, task=task)(build)


def _ensure_loaded() -> None:
    # Importing the models package runs every family's @register_model.
    import skiplab.models  # noqa: F401


def get_model_entry(name: str) -> ModelEntry:
    """Return the registry entry for ``name``.

    Raises:
        KeyError: for an unknown name, listing the closest known names.
    """
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} (see `skiplab models` for all names)")
    return _REGISTRY[name]


def create_model(name: str, pretrained: bool | str | Path = False, **overrides) -> nn.Module:
    """Build a registered model, passing ``overrides`` (num_classes, shortcut, ...) through.

    Args:
        name: Registered model name (see :func:`list_models`).
        pretrained: False (random initialisation); True: the model's published weights
            (``model.pretrained_cfg``), downloaded into the cache and verified against their
            SHA-256; or the path of a weights file, loaded with
            :func:`skiplab.models.load_pretrained`. With another ``num_classes`` than the
            weights', the classifier is replaced (``reset_classifier``) after loading.
        overrides: Options of the model family.

    The model's ``pretrained_cfg`` attribute is the dict of its
    :class:`~skiplab.models.pretrained.PretrainedCfg` (None when it has no published weights).

    Raises:
        KeyError: for an unknown name.
        ValueError: for ``pretrained=True`` without published weights or a known SHA-256, or
            weights that do not fit the model.

    Example:
        >>> model = create_model("resnet20", num_classes=100, shortcut="B")
        >>> model = create_model("resnet56", pretrained=True)  # CIFAR-10 weights
    """
    from skiplab.models.pretrained import fetch_pretrained, get_pretrained_cfg, load_pretrained

    entry = get_model_entry(name)
    cfg = get_pretrained_cfg(name)
    if not pretrained:
        model = entry.build(**overrides)
    else:
        if not isinstance(pretrained, (bool, str, Path)):
            raise ValueError(f"pretrained must be a bool or a path; got {pretrained!r}")
        path = fetch_pretrained(name) if pretrained is True else Path(pretrained)
        num_classes = overrides.get("num_classes")
        if cfg is not None and num_classes is not None:
            overrides = {**overrides, "num_classes": cfg.num_classes}
        model = entry.build(**overrides)
        load_pretrained(model, path)
        if num_classes is not None and cfg is not None and num_classes != cfg.num_classes:
            model.reset_classifier(num_classes)
    model.pretrained_cfg = None if cfg is None else cfg.to_dict()
    return model


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Registered names matching a shell-style ``pattern`` (and ``family``), sorted naturally."""
    _ensure_loaded()
    names = [
        n
        for n, e in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern) and (family is None or e.family == family)
    ]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list:
    # "resnet110" after "resnet56": compare digit runs as numbers.
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
