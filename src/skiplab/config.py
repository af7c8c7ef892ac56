"""One base for every settings dataclass, and the checks their ``__post_init__`` share.

Every config of skiplab (each model family's config, ``TrainConfig``, the experiments'
``Settings``, the bench's ``BenchConfig`` and ``FastPath``) is a dataclass that derives from
:class:`Config`, which gives it, written once here:

- ``from_dict(values)``, ``to_dict()`` (plain JSON values: tuples as lists, paths as strings)
  and ``with_overrides(overrides)``; an unknown key raises a ``ValueError`` naming the config
  class, the unknown key(s), the close valid names and every valid name;
- choice fields, declared with their allowed values (``stem: str = choice("imagenet", STEMS)``)
  and checked by ``check_choices()``, which each config's ``__post_init__`` calls first.

The checkers below (:func:`check_choice`, :func:`check_int`, :func:`check_real`,
:func:`check_bool`) raise one error style, ``"<what> must be <rule>; got <value>"``, e.g.
``stem must be one of ['imagenet', 'cifar']; got 'tiny'``. Cross-field rules stay in each
config's own ``__post_init__``.

A base module: it imports the standard library only, and anything in skiplab may import it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C", bound="Config")


# -- the checkers ----------------------------------------------------------------------------------
def check_choice(what: str, value: Any, allowed: Iterable) -> None:
    """Raise ``ValueError`` naming the allowed values when ``value`` is not one of them."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}; got {value!r}")


def check_bool(what: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is True or False (not 0, 1 or "no")."""
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be True or False; got {value!r}")


def check_int(
    what: str, value: Any, low: int | None = None, high: int | None = None, *, optional=False
) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer (not a bool) in ``[low, high]``.

    ``low=1`` reads "a positive integer"; ``optional`` also accepts None ("or None").
    """
    if optional and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if high is not None:
            rule = f"an integer in [{low}, {high}]"
        elif low == 1:
            rule = "a positive integer"
        else:
            rule = "an integer" if low is None else f"an integer >= {low}"
        raise ValueError(f"{what} must be {rule}{' or None' if optional else ''}; got {value!r}")


def check_real(
    what: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``value`` is a real number (int or float, not a bool) within
    the bounds: ``check_real("drop_rate", p, 0, 1, high_open=True)`` is ``0 <= p < 1`` and
    reads "drop_rate must be in [0, 1)"; one bound reads "lr must be > 0"."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if ok:
        return
    if low is not None and high is not None:
        rule = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"{'>' if low_open else '>='} {low}"
    elif high is not None:
        rule = f"{'<' if high_open else '<='} {high}"
    else:
        rule = "a number"
    raise ValueError(f"{what} must be {rule}; got {value!r}")


# -- the base --------------------------------------------------------------------------------------
# The default of a choice field that has none: ``block: str = choice(REQUIRED, BLOCKS)``.
REQUIRED: Any = dataclasses.MISSING


def choice(default: Any, allowed: Iterable) -> Any:
    """A dataclass field whose value must be one of ``allowed`` (:meth:`Config.check_choices`)."""
    return dataclasses.field(default=default, metadata={"choices": tuple(allowed)})


def choices_of(cls: type, name: str) -> tuple:
    """The allowed values of the choice field ``name`` of config class ``cls``."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata["choices"]


class Config:
    """Base of every skiplab settings dataclass: ``from_dict``, ``to_dict``, ``with_overrides``
    and the check of its choice fields, written once."""

    def check_choices(self) -> None:
        """Check every field declared with :func:`choice` (its field name is the "what")."""
        for f in dataclasses.fields(self):
            if "choices" in f.metadata:
                check_choice(f.name, getattr(self, f.name), f.metadata["choices"])

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], *, where: str | None = None) -> C:
        """Build from plain values (as :meth:`to_dict` writes them), refusing unknown keys.

        Lists become tuples in tuple fields, strings paths in path fields and dicts the nested
        config in config fields; everything else is checked by the class itself. Fields that
        ``__init__`` does not take (``init=False``) are set after construction.
        """
        if not isinstance(values, Mapping):
            raise ValueError(
                f"{where or cls.__name__} must be a table of settings; got {type(values).__name__}"
            )
        _refuse_unknown(cls, values, where)
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        plain = _from_plain(cls, values)
        obj = cls(**{k: v for k, v in plain.items() if k in init})
        for k, v in plain.items():
            if k not in init:
                object.__setattr__(obj, k, v)
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: tuples become lists, paths strings, nested configs dicts."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def with_overrides(self: C, overrides: Mapping[str, Any]) -> C:
        """Copy with ``overrides`` (values as :meth:`from_dict` takes them); an unknown key
        raises naming the close valid ones."""
        _refuse_unknown(type(self), overrides, None)
        return dataclasses.replace(self, **_from_plain(type(self), overrides))


def _refuse_unknown(cls: type, values: Mapping[str, Any], where: str | None) -> None:
    allowed = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(values) - set(allowed))
    if not unknown:
        return
    close = sorted({c for k in unknown for c in difflib.get_close_matches(k, allowed, 3, 0.5)})
    place = f" in {where}" if where else ""
    hint = f" (did you mean {close}?)" if close else ""
    raise ValueError(
        f"unknown option(s) {unknown} for {cls.__name__}{place}{hint}; allowed: {allowed}"
    )


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_plain(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    hints = _hints(cls)
    return {k: _convert(v, hints.get(k)) for k, v in values.items()}


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as the field type ``hint`` holds it, where JSON has no such type (tuples,
    paths, nested configs); anything else is left for the class to check."""
    options = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    for option in options:
        if typing.get_origin(option) is tuple and isinstance(value, list):
            return tuple(value)
        if option is Path and isinstance(value, str):
            return Path(value)
        if isinstance(option, type) and issubclass(option, Config) and isinstance(value, Mapping):
            return option.from_dict(value)
    return value
