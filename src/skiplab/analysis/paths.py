"""Paths through a residual network, and how much gradient each path length carries.

Veit, Wilber & Belongie 2016, "Residual Networks Behave Like Ensembles of Relatively Shallow
Networks" (arXiv:1605.06431):

- Section 3 (Fig. 1, Eq. 2-3): unravelling n residual units gives 2^n paths, one for each subset
  of units whose residual branch the path goes through; C(n, k) of them have length k, so path
  lengths follow a binomial distribution (Fig. 6). :func:`path_counts`,
  :func:`path_length_distribution`.
- Section 5 (Fig. 6), "the effective paths are short": for a path length k, sample k units;
  in backward, let the gradient through the residual branch of those k units only and through
  the skip only of the other n - k; measure the gradient norm it induces at the first layer;
  average over samples. Times the number of paths of length k, this is the total gradient that
  length carries; in a 54-unit ResNet-110 almost all of it comes from paths of 5-17 units
  (10-34 layers).
  :func:`gradient_per_path_length`, :func:`total_gradient`, :func:`effective_path_range`.

Gradient routing (:func:`routed`). A unit computes ``out = post(b + s)``: ``b`` its residual
branch, ``s = skip(.)`` its shortcut, ``post`` the ReLU after the addition (He et al. 2015) or
nothing (pre-activation units, He et al. 2016). Its Jacobian is ``P (J_b + J_s)`` with ``P`` the
diagonal derivative of ``post`` at the true sum. The decomposition is made at the addition: the
ReLU belongs to the unit, and its mask ``P`` multiplies whichever term carries the gradient, so
the product over units of ``(P J_b + P J_s)`` expands exactly into the 2^n path terms (the
per-path gradients sum to the true gradient; the tests check this). Forward values never change.

- Through the residual branch: the unit's own forward runs with ``self.skip`` replaced by
  ``skip(.).detach()``: value unchanged, backward ``P J_b``.
- Through the skip only: ``full = forward(x)`` and ``b_only = forward(x)`` with the skip detached
  as above; the unit returns ``full + (b_only.detach() - b_only)``, whose value is ``full``
  exactly and whose backward is ``P (J_b + J_s) - P J_b = P J_s``.

Routing inside the unit's own forward (rather than rebuilding ``skip(x) + F(x).detach()``
outside it) leaves to the unit what its shortcut sees (a pre-activation projection sees
BN-ReLU(x), not x) and whether a ReLU follows the addition. It needs only that the forward calls
``self.skip(...)`` once, which is checked at run time. The cost: a unit routed through its
skip runs its forward twice, so the units must be deterministic (the two results are compared;
stochastic depth or dropout in training mode raises). BatchNorm statistics are left untouched.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from skiplab.analysis.lesion import named_blocks, replaced_method, select_blocks
from skiplab.models._base import SkipUnit, check_positive_int, frozen_bn_stats

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# -- counting paths -------------------------------------------------------------------------------
def _check_units(n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of units must be an integer >= 0; got {n!r}")


def path_counts(n: int) -> list[int]:
    """Number of paths of each length k = 0..n through n residual units: C(n, k) (exact)."""
    _check_units(n)
    return [math.comb(n, k) for k in range(n + 1)]


def path_length_distribution(n: int) -> list[float]:
    """Fraction of the 2^n paths that have length k, for k = 0..n: C(n, k) / 2^n.

    Computed as an exact integer ratio (Python's int / int rounds correctly), so it neither
    overflows nor loses precision for n in the thousands; at n = 1000 the smallest entries are
    2^-1000 (about 9e-302). Beyond n = 1074 the smallest underflow to 0.0, as they should.
    """
    _check_units(n)
    total = 2**n
    return [c / total for c in path_counts(n)]


# -- gradient routing -----------------------------------------------------------------------------
def path_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The units that paths go through, in forward order: every block must have a shortcut.

    Raises:
        ValueError: for blocks without a ``skip(x)`` method or with ``residual=False``.
    """
    blocks = named_blocks(model)
    bad = [
        f"{name} ({type(block).__name__})"
        for name, block in blocks.items()
        if not isinstance(block, SkipUnit) or not block.residual
    ]
    if bad:
        raise ValueError(
            "path analysis needs every block to be a residual unit with a skip(x) shortcut; "
            f"these have none (plain units, or gated/dense layers): {bad}"
        )
    return list(blocks.items())


def _branch_only(name: str, block: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The unit's forward with its shortcut's output detached: backward only via the branch."""
    forward, skip = block.forward, block.skip
    calls = []

    def detached_skip(*inputs: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        calls.append(1)  # kwargs: a gate the forward computed already (exclusive gating)
        return skip(*inputs, **kwargs).detach()

    def run(x: torch.Tensor) -> torch.Tensor:
        calls.clear()
        with replaced_method(block, "skip", detached_skip):
            out = forward(x)
        if len(calls) != 1:
            raise RuntimeError(
                f"block {name}: forward called self.skip() {len(calls)} times; gradient "
                "routing needs exactly one call, at the addition"
            )
        return out

    return run


def _skip_only(name: str, block: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The unit's forward, value unchanged, with backward only through the shortcut."""
    forward, branch_only = block.forward, _branch_only(name, block)

    def run(x: torch.Tensor) -> torch.Tensor:
        full = forward(x)
        b_only = branch_only(x)
        if not torch.equal(full, b_only):
            raise RuntimeError(
                f"block {name} gave different outputs in two identical forward passes "
                "(stochastic depth or dropout in training mode, or non-finite values); "
                "call model.eval() first"
            )
        # Value: full + 0 exactly. Gradient: P (J_b + J_s) - P J_b = P J_s.
        return full + (b_only.detach() - b_only)

    return run


@contextmanager
def routed(model: nn.Module, through_branch: str | Iterable[str]) -> Iterator[nn.Module]:
    """Route the gradient of every unit: through the residual branch of the named units only,
    through the skip only of all the others (one path subset of Veit et al. 2016, Section 5).

    Outputs are unchanged; only backward differs. With every unit named, the gradient is that of
    the single longest path; with none, that of the path through all skips (length 0).
    BatchNorm running statistics are not updated inside the context (it is a measurement).

    Raises:
        ValueError: for an unknown or repeated name, or a model with non-residual blocks.
    """
    units = path_units(model)
    chosen = {name for name, _ in select_blocks(model, through_branch)}
    with ExitStack() as stack:
        # Units routed through their skip run twice: BatchNorm must not count either run.
        stack.enter_context(frozen_bn_stats(model))
        for name, block in units:
            run = _branch_only(name, block) if name in chosen else _skip_only(name, block)
            stack.enter_context(replaced_method(block, "forward", run))
        yield model


def gradient_for_subset(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    through_branch: str | Iterable[str],
    loss_fn: LossFn | None = None,
) -> float:
    """||dL/dh|| at the input h of the first unit, for the batch (x, y), with the gradient routed
    by :func:`routed` (the named units' branches, the others' skips).

    The first unit's input is made a leaf, so nothing flows into the stem and no parameter's
    ``.grad`` is touched; BatchNorm statistics are left as they are (:func:`routed`). The model
    runs in its current train/eval mode. ``loss_fn(logits, y)`` defaults to cross-entropy.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    first = path_units(model)[0][1]
    leaves: list[torch.Tensor] = []

    def make_leaf(_module, args):
        leaves.append(args[0].detach().requires_grad_(True))
        return (leaves[-1], *args[1:])

    handle = first.register_forward_pre_hook(make_leaf)
    try:
        with routed(model, through_branch):
            loss = loss_fn(model(x), y)
    finally:
        handle.remove()
    if len(leaves) != 1:
        raise RuntimeError(f"the first unit ran {len(leaves)} times in one forward pass")
    (grad,) = torch.autograd.grad(loss, leaves[0])
    return float(grad.norm())


def sample_subsets(n: int, k: int, samples: int, seed: int) -> list[tuple[int, ...]]:
    """Subsets of k of the units 0..n-1 to route through their branches.

    ``samples`` draws (with replacement across draws) from ``random.Random`` seeded by (seed, k),
    so a length's subsets do not depend on which other lengths are measured. When there are no
    more subsets than ``samples`` (always for k = 0 and k = n), every subset is taken once
    instead: the mean is then exact.
    """
    _check_units(n)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"path length must be an integer in 0..{n}; got {k!r}")
    check_positive_int("samples", samples)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if math.comb(n, k) <= samples:
        return list(itertools.combinations(range(n), k))
    rng = random.Random(f"skiplab.paths:{seed}:{k}")
    return [tuple(sorted(rng.sample(range(n), k))) for _ in range(samples)]


def gradient_per_path_length(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    lengths: Iterable[int],
    samples: int,
    seed: int,
    loss_fn: LossFn | None = None,
) -> dict[int, float]:
    """Mean gradient norm at the first unit's input carried by paths of each length (Veit et al.
    2016, Section 5, Fig. 6: gradient magnitude per path length).

    For each length k, :func:`sample_subsets` picks subsets of k units; for each, one forward and
    backward pass with :func:`gradient_for_subset`; the result is the mean norm.

    Args:
        model: A residual network (every ``iter_blocks()`` unit has a ``skip``).
        x, y: One batch and its targets.
        lengths: Path lengths to measure, each in 0..n (n = number of units), no repeats.
        samples: Subsets per length (all of them when there are fewer).
        seed: Integer seed.
        loss_fn: ``loss_fn(logits, y)``; cross-entropy by default.

    Returns:
        {k: mean ||dL/dh||} in the order of ``lengths``.
    """
    names = [name for name, _ in path_units(model)]
    ks = list(lengths)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(names):
            raise ValueError(f"path lengths must be integers in 0..{len(names)}; got {k!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"lengths must not repeat; got {ks}")
    subsets = {k: sample_subsets(len(names), k, samples, seed) for k in ks}  # checks the rest
    result = {}
    for k in ks:
        norms = [
            gradient_for_subset(model, x, y, [names[i] for i in subset], loss_fn)
            for subset in subsets[k]
        ]
        result[k] = sum(norms) / len(norms)
    return result


def total_gradient(per_length: dict[int, float], n: int) -> dict[int, float]:
    """Total gradient magnitude carried by all paths of each length: the mean per-path
    magnitude times C(n, k) (Veit et al. 2016, Fig. 6: the product of the path-length
    distribution and the per-path gradient). Finite up to n of about 1000."""
    _check_units(n)
    bad = [
        k for k in per_length if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n
    ]
    if bad:
        raise ValueError(f"path lengths must be integers in 0..{n}; got {bad}")
    return {k: g * math.comb(n, k) for k, g in per_length.items()}


def effective_path_range(total: dict[int, float], n: int, fraction: float = 0.9) -> tuple[int, int]:
    """The shortest range of path lengths [lo, hi] that carries at least ``fraction`` of the total
    gradient (Veit et al. 2016, Section 5: "effective paths" of 5-17 units in ResNet-110).

    Args:
        total: {k: total gradient of length k} from :func:`total_gradient`, for every k = 0..n
            (a share of the total needs all of it).
        n: Number of units.
        fraction: Share of the total gradient, in (0, 1].

    Returns:
        (lo, hi), inclusive; the one with the larger share when several are equally short, the
        shorter lengths when also tied.
    """
    _check_units(n)
    missing = [k for k in range(n + 1) if k not in total]
    extra = sorted(set(total) - set(range(n + 1)))
    if missing or extra:
        raise ValueError(
            f"need the total gradient for every length 0..{n}; missing {missing}, extra {extra}"
        )
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction!r}")
    values = [total[k] for k in range(n + 1)]
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) == 0:
        raise ValueError(f"total gradients must be finite, >= 0 and not all 0; got {values}")
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    target = fraction * prefix[-1]
    # Widths from 1 up; the full range (width n + 1) always qualifies, since fraction <= 1.
    for width in range(1, n + 2):
        best = max(range(n + 2 - width), key=lambda lo: prefix[lo + width] - prefix[lo])
        if prefix[best + width] - prefix[best] >= target:
            return best, best + width - 1
    raise AssertionError("unreachable: the full range carries the whole total")
