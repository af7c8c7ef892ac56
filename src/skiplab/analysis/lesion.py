"""Lesion studies: take units out of a trained network at test time.

Veit, Wilber & Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (arXiv:1605.06431), Section 4: deleting one residual unit of a trained ResNet barely
changes its test error, except for the downsampling units (Fig. 3), while removing one layer of
a plain (VGG-style) network destroys it; the error grows smoothly with the number of units
deleted at random (Fig. 5a). Srivastava, Greff & Schmidhuber 2015 (arXiv:1507.06228,
Section 4.1, Fig. 4) lesion highway networks the same way, by closing all transform gates of
one layer.

Everything works through ``model.iter_blocks()``, without knowing the architecture:

- :func:`lesioned`: the named units keep only their shortcut. A unit of the contract
  :class:`skiplab.models._base.SkipUnit` computes ``block.skip(x)`` (the shortcut path alone); a
  gated unit (:class:`~skiplab.models._base.GatedUnit`, a highway layer) gets its transform gate
  closed (``set_gate("closed")``), so that it carries its input.
- :func:`removed`: the named units become identity maps (the plain-net comparison); possible
  only where a unit's input and output shapes agree.
- :func:`lesion_single_blocks`, :func:`lesion_random_blocks`: the experiments, with a
  caller-supplied ``evaluate(model) -> float`` (for example the test error on a loader; it
  should put the model in eval mode itself). Results mark the shape-changing (downsampling)
  units, which is where the paper's claim has its exception.

Mechanism (:func:`replaced_method`): a unit's ``forward`` is replaced on the instance
(``block.forward = fn``). ``nn.Module.__call__`` looks up ``self.forward``, so hooks still fire
and no parameter, buffer or submodule changes; on exit, in a ``finally``, the instance
attribute is deleted again (or the previous one put back, for nested use), so the model is
exactly as before even when the body raised. The replacements are plain closures: they work
under ``torch.no_grad`` and autograd alike, but a model inside the context cannot be pickled.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from skiplab.models._base import (
    GatedUnit,
    SkipUnit,
    check_choice,
    check_positive_int,
    frozen_bn_stats,
)

MODES = ("lesion", "remove")
Evaluate = Callable[[nn.Module], float]


# -- the mechanism --------------------------------------------------------------------------------
@contextmanager
def replaced_method(module: nn.Module, name: str, fn: Callable) -> Iterator[None]:
    """Temporarily replace the method ``name`` (e.g. ``"forward"``) of one module instance.

    The class and every other instance are untouched. On exit the instance attribute is removed
    (or the one that was there before is put back), whatever happened inside.

    Raises:
        ValueError: if ``module.<name>`` is not a method (nothing to replace).
    """
    if not callable(getattr(module, name, None)) or isinstance(getattr(module, name), nn.Module):
        raise ValueError(
            f"{type(module).__name__}.{name} is not a method; got {getattr(module, name, None)!r}"
        )
    had_own = name in module.__dict__
    previous = module.__dict__.get(name)
    setattr(module, name, fn)  # a plain function: nn.Module stores it in the instance __dict__
    try:
        yield
    finally:
        if had_own:
            setattr(module, name, previous)
        else:
            delattr(module, name)


def named_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """``dict(model.iter_blocks())``, in forward order.

    Raises:
        ValueError: if the model has no ``iter_blocks()`` or it yields nothing.
    """
    if not callable(getattr(model, "iter_blocks", None)):
        raise ValueError(
            f"expected a model with iter_blocks() (a skiplab SkipNet); got {type(model).__name__}"
        )
    blocks = dict(model.iter_blocks())
    if not blocks:
        raise ValueError(f"{type(model).__name__}.iter_blocks() yielded no blocks")
    return blocks


def select_blocks(
    model: nn.Module, block_names: str | Iterable[str]
) -> list[tuple[str, nn.Module]]:
    """Look up blocks by name (one name or several), in the order given.

    Raises:
        ValueError: naming the unknown block(s) and the available ones, or repeated names.
    """
    blocks = named_blocks(model)
    names = [block_names] if isinstance(block_names, str) else list(block_names)
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise ValueError(f"unknown block(s) {unknown}; available blocks: {list(blocks)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"block(s) named more than once: {repeated}")
    return [(n, blocks[n]) for n in names]


# -- lesion: keep the shortcut --------------------------------------------------------------------
def _shortcut_of(name: str, block: nn.Module) -> Callable | None:
    """The function a lesioned unit computes: its ``skip``; None for a gate to close.

    Raises:
        ValueError: for a unit without a shortcut (a plain unit).
    """
    # A gated unit is lesioned the highway paper's way, by closing its gate (same output).
    if isinstance(block, GatedUnit) and block.gate is not None:
        return None
    if isinstance(block, SkipUnit):
        if not block.residual:
            raise ValueError(
                f"block {name} ({type(block).__name__}) has residual=False: a plain net has no "
                "shortcut to keep; use removed() to take the whole unit out"
            )
        return block.skip
    raise ValueError(
        f"block {name} ({type(block).__name__}) has neither a skip(x) method nor a transform "
        "gate, so there is no shortcut to keep (a plain unit); use removed() to take the whole "
        "unit out"
    )


@contextmanager
def _gate_closed(block: nn.Module) -> Iterator[None]:
    previous = block.gate.mode
    block.set_gate("closed")
    try:
        yield
    finally:
        block.set_gate(previous)


@contextmanager
def lesioned(model: nn.Module, block_names: str | Iterable[str]) -> Iterator[nn.Module]:
    """Delete the residual branch of the named units, keeping their shortcut (Veit et al.
    2016, Section 4).

    Inside the context a residual unit computes ``block.skip(x)`` (identity, or the
    downsampling shortcut) instead of its forward; a highway layer has its transform gate
    closed. Every name is checked before anything changes; the model is restored on exit.

    Example:
        >>> with torch.no_grad(), lesioned(model, ["layer2.1"]):
        ...     logits = model(x)

    Raises:
        ValueError: for an unknown or repeated name, or a unit with no shortcut (plain net).
    """
    chosen = [
        (name, block, _shortcut_of(name, block))
        for name, block in select_blocks(model, block_names)
    ]
    with ExitStack() as stack:
        for _name, block, shortcut in chosen:
            if shortcut is None:
                stack.enter_context(_gate_closed(block))
            else:
                stack.enter_context(replaced_method(block, "forward", shortcut))
        yield model


# -- removal: the whole unit becomes the identity -------------------------------------------------
Shapes = dict[str, set[tuple[tuple[int, ...] | None, tuple[int, ...] | None]]]


@contextmanager
def _recorded_shapes(model: nn.Module) -> Iterator[Shapes]:
    """Record the (input, output) shapes every block sees while the body runs the model.

    A block whose input is not a single tensor (a dense layer reads a list) records None.
    """
    shapes: Shapes = {}
    handles = []
    for name, block in named_blocks(model).items():

        def record(_module, args, output, name=name):
            x = args[0] if args else None
            pair = (
                tuple(x.shape) if isinstance(x, torch.Tensor) else None,
                tuple(output.shape) if isinstance(output, torch.Tensor) else None,
            )
            shapes.setdefault(name, set()).add(pair)

        handles.append(block.register_forward_hook(record))
    try:
        yield shapes
    finally:
        for h in handles:
            h.remove()


def _shape_changing(blocks: dict[str, nn.Module], shapes: Shapes) -> list[str]:
    """Blocks whose output shape differed from their input shape, in forward order.

    Raises:
        RuntimeError: if a block never ran (its shapes, hence its kind, are unknown).
    """
    missing = [n for n in blocks if n not in shapes]
    if missing:
        raise RuntimeError(f"block(s) {missing} did not run, so their shapes are unknown")
    return [n for n in blocks if any(i is None or i != o for i, o in shapes[n])]


def block_shapes(model: nn.Module, x: torch.Tensor) -> Shapes:
    """Run ``model(x)`` once (no grad, BatchNorm statistics untouched) and return, per block,
    the set of (input shape, output shape) pairs it saw."""
    with _recorded_shapes(model) as shapes, torch.no_grad(), frozen_bn_stats(model):
        model(x)
    _shape_changing(named_blocks(model), shapes)  # every block must have run
    return shapes


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextmanager
def _identity_maps(chosen: list[tuple[str, nn.Module]], changing: list[str]) -> Iterator[None]:
    bad = [name for name, _ in chosen if name in changing]
    if bad:
        raise ValueError(
            f"cannot remove shape-changing (downsampling) block(s) {bad}: their input and "
            "output shapes differ, so there is no identity map to replace them with"
        )
    with ExitStack() as stack:
        for _name, block in chosen:
            stack.enter_context(replaced_method(block, "forward", _identity))
        yield


@contextmanager
def removed(
    model: nn.Module, block_names: str | Iterable[str], example_input: torch.Tensor
) -> Iterator[nn.Module]:
    """Remove the named units altogether: each becomes an identity map (Veit et al. 2016,
    Section 4.1, removing a layer from a plain VGG-style net; works for residual units too).

    ``example_input`` is run once first (no grad, BatchNorm statistics untouched) to learn which
    units change the shape of their input: those cannot be replaced by the identity.

    Raises:
        ValueError: for an unknown or repeated name, or a shape-changing unit.
    """
    chosen = select_blocks(model, block_names)
    changing = _shape_changing(named_blocks(model), block_shapes(model, example_input))
    with _identity_maps(chosen, changing):
        yield model


# -- the experiments ------------------------------------------------------------------------------
def _evaluate(evaluate: Evaluate, model: nn.Module) -> float:
    value = evaluate(model)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"evaluate(model) must return a number (e.g. the test error); got {value!r} "
            "(use .item() on a tensor)"
        )
    return float(value)


@contextmanager
def _taken_out(model, names, mode: str, changing: list[str]) -> Iterator[None]:
    if mode == "lesion":
        with lesioned(model, names):
            yield
    else:
        with _identity_maps(select_blocks(model, names), changing):
            yield


def _prepare(model: nn.Module, evaluate: Evaluate, mode: str) -> dict[str, nn.Module]:
    """Checks done before any evaluation: mode, evaluate, and (lesion) every unit's shortcut."""
    check_choice("mode", mode, MODES)
    if not callable(evaluate):
        raise ValueError(f"evaluate must be a function evaluate(model) -> float; got {evaluate!r}")
    blocks = named_blocks(model)
    if mode == "lesion":
        for name, block in blocks.items():
            _shortcut_of(name, block)
    return blocks


def _intact(model: nn.Module, evaluate: Evaluate) -> tuple[float, list[str]]:
    """The intact error, and the shape-changing blocks seen while computing it."""
    with _recorded_shapes(model) as shapes:
        error = _evaluate(evaluate, model)
    return error, _shape_changing(named_blocks(model), shapes)


@dataclass(frozen=True)
class SingleLesions:
    """Errors with one unit taken out at a time (Veit et al. 2016, Fig. 3).

    Attributes:
        mode: "lesion" (residual branch deleted) or "remove" (whole unit removed).
        intact: Error of the intact model.
        errors: (block name, error) for every unit taken out, in forward order.
        downsampling: Units whose output shape differs from their input (forward order).
        skipped: Units not taken out: in "remove" mode the downsampling units, which have no
            identity replacement; empty in "lesion" mode.
    """

    mode: str
    intact: float
    errors: list[tuple[str, float]]
    downsampling: list[str]
    skipped: list[str]


def lesion_single_blocks(
    model: nn.Module, evaluate: Evaluate, mode: str = "lesion"
) -> SingleLesions:
    """Evaluate the model intact and with each unit taken out in turn.

    Args:
        model: Any model with ``iter_blocks()``.
        evaluate: ``evaluate(model) -> float``, e.g. the test error; called 1 + units times.
        mode: "lesion" (:func:`lesioned`, residual nets) or "remove" (:func:`removed`, plain
            nets; the downsampling units are skipped and listed in ``skipped``).

    Raises:
        ValueError: for a bad mode or evaluate, or (lesion) a unit without a shortcut.
    """
    blocks = _prepare(model, evaluate, mode)
    intact, changing = _intact(model, evaluate)
    skipped = changing if mode == "remove" else []
    errors = []
    for name in blocks:
        if name in skipped:
            continue
        with _taken_out(model, [name], mode, changing):
            errors.append((name, _evaluate(evaluate, model)))
    return SingleLesions(mode, intact, errors, changing, skipped)


@dataclass(frozen=True)
class RandomLesions:
    """Errors with k random units taken out at once (Veit et al. 2016, Fig. 5a).

    Attributes:
        mode: "lesion" or "remove".
        intact: Error of the intact model.
        errors: For each k, the error of each trial.
        block_sets: For each k, the units taken out in each trial (same order as ``errors``).
        downsampling: Units whose output shape differs from their input.
        excluded: Units never drawn: the downsampling ones in "remove" mode or with
            ``exclude_downsampling``; otherwise empty.
    """

    mode: str
    intact: float
    errors: dict[int, list[float]]
    block_sets: dict[int, list[tuple[str, ...]]]
    downsampling: list[str]
    excluded: list[str]


def lesion_random_blocks(
    model: nn.Module,
    evaluate: Evaluate,
    k_values: Iterable[int],
    trials: int,
    seed: int,
    mode: str = "lesion",
    exclude_downsampling: bool = False,
) -> RandomLesions:
    """Evaluate the model with ``trials`` random sets of k units taken out, for each k.

    The sets for one k are drawn from ``random.Random`` seeded by (seed, k): the same seed gives
    the same sets whatever other k values are asked for. Draws are independent across trials
    (a set can repeat).

    Args:
        k_values: Numbers of units taken out together, each in 1..(eligible units).
        trials: Random sets per k.
        seed: Integer seed.
        mode: "lesion" or "remove" (downsampling units are then excluded and listed).
        exclude_downsampling: Also exclude downsampling units in "lesion" mode.

    Raises:
        ValueError: for bad arguments; a k larger than the eligible units is only known after
            the intact evaluation (which finds the downsampling units) and raises then.
    """
    blocks = _prepare(model, evaluate, mode)
    ks = list(k_values)
    for k in ks:
        check_positive_int("each k", k)
        if k > len(blocks):
            raise ValueError(f"k must be at most the {len(blocks)} units; got k={k}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"k_values must not repeat; got {ks}")
    check_positive_int("trials", trials)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if not isinstance(exclude_downsampling, bool):
        raise ValueError(
            f"exclude_downsampling must be True or False; got {exclude_downsampling!r}"
        )

    intact, changing = _intact(model, evaluate)
    excluded = changing if (mode == "remove" or exclude_downsampling) else []
    eligible = [n for n in blocks if n not in excluded]
    too_big = [k for k in ks if k > len(eligible)]
    if too_big:
        raise ValueError(
            f"k_values {too_big} exceed the {len(eligible)} eligible units "
            f"(excluded downsampling units: {excluded})"
        )
    errors: dict[int, list[float]] = {}
    block_sets: dict[int, list[tuple[str, ...]]] = {}
    for k in ks:
        rng = random.Random(f"skiplab.lesion:{seed}:{k}")
        errors[k], block_sets[k] = [], []
        for _ in range(trials):
            names = tuple(sorted(rng.sample(eligible, k), key=eligible.index))
            with _taken_out(model, names, mode, changing):
                errors[k].append(_evaluate(evaluate, model))
            block_sets[k].append(names)
    return RandomLesions(mode, intact, errors, block_sets, changing, excluded)
