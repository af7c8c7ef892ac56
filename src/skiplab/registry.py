"""Registries: every network, experiment and fault of skiplab is found by name.

Usage::

    @register_model(family="resnet", input_size=(3, 224, 224), depth=50)
    def resnet50(**overrides) -> nn.Module: ...

    model = create_model("resnet50", num_classes=10)   # skiplab.create_model
    list_models("resnet*")

This module is the table of names and nothing else: it imports no model. Each family
registers its names when its module is imported, and :mod:`skiplab.models` imports every family
(as timm's and torchvision's ``models`` packages do); importing ``skiplab`` (or any of its
modules) imports :mod:`skiplab.models`, so the table is complete before anyone reads it.
:func:`~skiplab.models.create_model`, which also fetches published weights, lives in
:mod:`skiplab.models.factory`.

A factory receives the user's overrides and is responsible for validating them (the model
configs do so in their ``__post_init__``); the registry only knows names and metadata.

The table itself is a :class:`Registry`, the one shape of skiplab's plug-in tables: the
experiments of ``skiplab reproduce`` (:data:`skiplab.experiments.cli.EXPERIMENTS`) and the faults
of ``python -m skiplab.selftest`` (:data:`skiplab.selftest.FAULTS`) are registries too. Each is
filled when the package that defines its entries is imported, refuses a name twice, and answers
an unknown name with the closest known ones.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from torch import nn

TASKS = ("classification", "segmentation", "language_modeling")

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A table of names -> entries, in the order they were added.

    Args:
        kind: What an entry is, for messages: ``"model"``, ``"experiment"``, ``"fault"``.
        see: Where a user finds every name, ending the unknown-name message (default: the names
            themselves, for a short table).
        describe: A clause on the entry already registered, for the duplicate-name message.
    """

    def __init__(
        self, kind: str, *, see: str | None = None, describe: Callable[[T], str] | None = None
    ) -> None:
        self.kind = kind
        self._see = see
        self._describe = describe
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; returns the entry.

        Raises:
            ValueError: if the name is already registered.
        """
        if name in self._entries:
            detail = f" ({self._describe(self._entries[name])})" if self._describe else ""
            raise ValueError(f"{self.kind} {name!r} is already registered{detail}")
        self._entries[name] = entry
        return entry

    def unknown(self, name: str) -> str:
        """The message for a name that is not registered, with the closest known names."""
        close = difflib.get_close_matches(name, list(self._entries), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        see = self._see or f"known: {', '.join(self._entries)}"
        return f"unknown {self.kind} {name!r}{hint} ({see})"

    def __getitem__(self, name: str) -> T:
        """The entry of ``name``.

        Raises:
            KeyError: for an unknown name, with :meth:`unknown`'s message.
        """
        if name not in self._entries:
            raise KeyError(self.unknown(name))
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def pop(self, name: str) -> T:
        """Remove ``name`` (for tests that register a throw-away entry)."""
        return self._entries.pop(name)


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model name.

    Attributes:
        name: Registered name, e.g. ``"resnet50"``.
        family: Family the model belongs to, e.g. ``"resnet"``, ``"plain"``, ``"preact_resnet"``.
        build: Factory called as ``build(**overrides)``.
        input_size: Default input ``(C, H, W)``; for a language model ``(T,)``, the length of a
            sequence of token ids.
        depth: Number of weighted layers as the paper counts them (None where not meaningful;
            Transformer blocks for the Transformer families).
        task: ``"classification"``, ``"segmentation"`` or ``"language_modeling"`` (token ids
            (B, T) in, next-token logits (B, T, vocab_size) out).
    """

    name: str
    family: str
    build: Callable[..., nn.Module]
    input_size: tuple[int, ...]
    depth: int | None
    task: str


_REGISTRY: Registry[ModelEntry] = Registry(
    "model",
    see="see `skiplab models` for all names",
    describe=lambda entry: f"family {entry.family}",
)


def register_model(
    name: str | None = None,
    *,
    family: str,
    input_size: tuple[int, ...],
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
        _REGISTRY.add(key, ModelEntry(key, family, fn, tuple(input_size), depth, task))
        return fn

    return decorator


def register_config_model(
    name: str,
    model_cls: Callable[..., nn.Module],
    cfg,
    *,
    family: str,
    input_size: tuple[int, ...],
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


def get_model_entry(name: str) -> ModelEntry:
    """Return the registry entry for ``name``.

    Raises:
        KeyError: for an unknown name, listing the closest known names.
    """
    return _REGISTRY[name]


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Registered names matching a shell-style ``pattern`` (and ``family``), sorted naturally."""
    names = [
        n
        for n, e in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern) and (family is None or e.family == family)
    ]
    return sorted(names, key=_natural_key)


def _natural_key(name: str) -> list:
    # "resnet110" after "resnet56": compare digit runs as numbers.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
