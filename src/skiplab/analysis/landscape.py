"""Loss landscapes: filter-normalised directions, loss surfaces and Hessian extreme eigenvalues.

Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets"
(NeurIPS 2018, arXiv:1712.09913):

- Section 4, "Proposed Visualization: Filter-Wise Normalization": a random Gaussian direction
  d, the same shape as the parameters theta, is rescaled filter by filter,
  d_ij <- d_ij / ||d_ij|| * ||theta_ij||, where d_ij is the j-th filter of layer i (for a
  convolution the weights that produce one output channel; a fully connected layer is a 1x1
  convolution, a filter being the weights into one neuron). This removes the scale invariance
  of ReLU nets that otherwise distorts comparisons between plots. The directions of the BN
  parameters and biases are set to zero (Li et al.'s code, ``--xignore biasbn``).
  :func:`filter_normalized_direction`, :func:`filter_normalize`.
- Figs. 1, 5 and 6: the loss on the plane theta + alpha d1 + beta d2 (contour and surface
  plots; skip connections keep the landscape of deep ResNets convex-looking, where the plain
  nets' becomes chaotic). :func:`loss_surface`.
- Section 6, Fig. 7: the minimum and maximum eigenvalues of the Hessian of the loss at each
  point, and the map of |lambda_min / lambda_max|, which shows how much negative curvature
  (non-convexity) there is. :func:`hessian_extreme_eigenvalues`, from Hessian-vector products
  (:func:`hessian_vector_product`) by Lanczos iteration (the paper used implicitly restarted
  Lanczos) or shifted power iteration.

A direction is a dict from parameter names (``model.named_parameters()``) to tensors of the
parameters' shapes; a parameter it leaves out does not move. Losses are averages over
``batches``, an iterable of (input, target) pairs that can be iterated again for each grid
point (a list or a DataLoader), weighted by batch size; ``loss_fn(model(x), y)`` must return the
mean loss of a batch. Everything runs in the model's current mode with BatchNorm running
statistics left untouched: call ``model.eval()`` first to use the running statistics.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from skiplab.config import check_choice
from skiplab.models._base import check_positive_int, frozen_bn_stats

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Direction = dict[str, torch.Tensor]
IGNORE = ("biasbn", "none")


# -- directions -----------------------------------------------------------------------------------
def _is_bias_or_bn(p: torch.Tensor) -> bool:
    """Biases and BN scales/shifts: every parameter with fewer than 2 dimensions (Li et al.'s
    code ignores exactly these with ``biasbn``)."""
    return p.ndim <= 1


def filter_normalize(
    direction: Mapping[str, torch.Tensor], model: nn.Module, ignore: str = "biasbn"
) -> Direction:
    """Rescale ``direction`` filter by filter to the norms of the model's filters (Li et al.
    2018, Section 4): for a parameter W of shape (out, ...), each slice d[j] becomes
    d[j] / ||d[j]|| * ||W[j]||; with ``ignore="biasbn"`` the 1-D parameters (biases, BN) get a
    zero direction, with ``"none"`` a 1-D parameter is rescaled as a whole to its norm.

    Filters are slices along dimension 0: output channels of a convolution, rows (neurons) of
    a linear layer. A zero filter of d stays zero.

    Raises:
        ValueError: for a name that is not a parameter, a shape mismatch or a bad ``ignore``.
    """
    check_choice("ignore", ignore, IGNORE)
    params = dict(model.named_parameters())
    _check_direction(direction, params)
    out: Direction = {}
    for name, d in direction.items():
        w = params[name].detach()
        if _is_bias_or_bn(w):
            # A 1-D parameter is one "filter": zero (biasbn), or scaled as a whole to ||W||.
            d_norm = d.norm()
            zero = ignore == "biasbn" or d_norm == 0
            out[name] = torch.zeros_like(d) if zero else d * (w.norm() / d_norm)
            continue
        # (out, k) views: one row per filter; norms (out, 1).
        d2, w2 = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
        d_norm = d2.norm(dim=1, keepdim=True)
        scale = torch.where(d_norm > 0, w2.norm(dim=1, keepdim=True) / d_norm, 0.0)
        out[name] = (d2 * scale).reshape(d.shape)
    return out


def filter_normalized_direction(
    model: nn.Module, seed: int = 0, ignore: str = "biasbn"
) -> Direction:
    """A random Gaussian direction over all parameters, filter-normalised (Li et al. 2018,
    Section 4; :func:`filter_normalize`). Two calls with different seeds give the two axes
    of a surface plot (nearly orthogonal in high dimension)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    g = torch.Generator().manual_seed(seed)
    raw = {
        name: torch.randn(p.shape, generator=g, dtype=torch.float64).to(p)
        for name, p in model.named_parameters()
    }
    return filter_normalize(raw, model, ignore)


def _check_direction(direction: Mapping[str, torch.Tensor], params: Mapping) -> None:
    if not isinstance(direction, Mapping) or not direction:
        raise ValueError(
            f"a direction must be a non-empty dict of parameter name -> tensor; got {direction!r}"
        )
    unknown = [n for n in direction if n not in params]
    if unknown:
        raise ValueError(
            f"direction names unknown parameter(s) {unknown}; expected names "
            f"from model.named_parameters(), e.g. {list(params)[:3]}"
        )
    bad = [
        f"{n}: expected {tuple(params[n].shape)}, got "
        f"{tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__}"
        for n, d in direction.items()
        if not isinstance(d, torch.Tensor) or d.shape != params[n].shape
    ]
    if bad:
        raise ValueError(f"direction shapes do not match the parameters: {bad}")


# -- data -----------------------------------------------------------------------------------------
def _check_batches(batches: Iterable) -> None:
    if iter(batches) is batches:
        raise ValueError(
            "batches must be re-iterable (a list of (x, y) pairs or a DataLoader), not an "
            f"iterator or generator ({type(batches).__name__}): it is read once per evaluation"
        )


def _sized_batches(batches: Iterable) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """(x, y, n) for each batch, n = x.shape[0]; the batches are read once, never stored."""
    for pair in batches:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"each batch must be an (x, y) pair; got {type(pair).__name__}")
        x, y = pair
        yield x, y, x.shape[0]


def _mean_loss(model: nn.Module, loss_fn: LossFn, batches: Iterable) -> float:
    # sum_b n_b * loss_b / N: the mean over samples when loss_fn returns each batch's mean.
    total, count = 0.0, 0
    for x, y, n in _sized_batches(batches):
        total += n * float(loss_fn(model(x), y))
        count += n
    if count == 0:
        raise ValueError("batches is empty (no samples to evaluate the loss on)")
    return total / count


def dataset_loss(model: nn.Module, loss_fn: LossFn, batches: Iterable) -> float:
    """The loss over all ``batches`` (sample-weighted mean of the batch losses), no grad, in
    the model's current mode, BatchNorm statistics untouched."""
    _check_batches(batches)
    with torch.no_grad(), frozen_bn_stats(model):
        return _mean_loss(model, loss_fn, batches)


# -- surfaces -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossSurface:
    """The loss at theta + sum_k coords[k][i_k] * directions[k] (Li et al. 2018, Figs. 1, 5, 6).

    Attributes:
        coords: The grid along each direction, 1-D tensors (float64).
        losses: (len(coords[0]),) or (len(coords[0]), len(coords[1])): losses[i, j] is at
            alpha = coords[0][i], beta = coords[1][j].
    """

    coords: tuple[torch.Tensor, ...]
    losses: torch.Tensor


def loss_surface(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable,
    directions: Sequence[Mapping[str, torch.Tensor]],
    coords: Sequence[Sequence[float] | torch.Tensor],
) -> LossSurface:
    """Evaluate the loss on a 1-D line or a 2-D plane through the current weights.

    Each grid point's parameters are set from the saved weights (theta + alpha d1 + beta d2,
    never by accumulating steps), and the saved weights are copied back in a ``finally``, so
    the model is bit-for-bit as before, even after an error.

    Args:
        directions: One or two directions (e.g. from :func:`filter_normalized_direction`).
        coords: One grid per direction, e.g. ``(torch.linspace(-1, 1, 51),) * 2``.

    Raises:
        ValueError: for 0 or more than 2 directions, a coords count that differs, an empty or
            non-1-D grid, a bad direction, or non-re-iterable or empty batches.
    """
    if not isinstance(directions, Sequence) or not 1 <= len(directions) <= 2:
        raise ValueError(
            f"directions must be a list of 1 or 2 directions; got {type(directions).__name__}"
            + (f" of {len(directions)}" if isinstance(directions, Sequence) else "")
        )
    if not isinstance(coords, Sequence) or len(coords) != len(directions):
        raise ValueError(
            f"coords must hold one grid per direction ({len(directions)}); got "
            f"{len(coords) if isinstance(coords, Sequence) else type(coords).__name__}"
        )
    grids = tuple(torch.as_tensor(c, dtype=torch.float64).flatten() for c in coords)
    for c, grid in zip(coords, grids, strict=True):
        if torch.as_tensor(c).ndim != 1 or grid.numel() == 0:
            raise ValueError(f"each grid must be a non-empty 1-D sequence; got {c!r}")
    params = dict(model.named_parameters())
    for d in directions:
        _check_direction(d, params)
    _check_batches(batches)

    names = sorted({n for d in directions for n in d}, key=list(params).index)
    saved = {n: params[n].detach().clone() for n in names}
    losses = torch.empty(tuple(g.numel() for g in grids), dtype=torch.float64)
    try:
        with torch.no_grad(), frozen_bn_stats(model):
            for index in itertools.product(*(range(g.numel()) for g in grids)):
                steps = [float(g[i]) for g, i in zip(grids, index, strict=True)]
                for n in names:
                    # theta + sum_k step_k * d_k, from the saved theta (no drift over the grid).
                    new = saved[n].clone()
                    for step, d in zip(steps, directions, strict=True):
                        if n in d:
                            new.add_(d[n].to(new), alpha=step)
                    params[n].copy_(new)
                losses[index] = _mean_loss(model, loss_fn, batches)
    finally:
        with torch.no_grad():
            for n in names:
                params[n].copy_(saved[n])
    return LossSurface(grids, losses)


# -- Hessian --------------------------------------------------------------------------------------
def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no parameters that require grad")
    return named


def hessian_vector_product(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable,
    vector: Mapping[str, torch.Tensor],
) -> Direction:
    """H v for the Hessian H of the loss over ``batches`` w.r.t. the parameters that require
    grad (Pearlmutter's trick: the gradient of <grad L, v>, by double backward; each batch's
    graph is freed before the next). ``vector`` maps parameter names to tensors (missing
    names: 0); the result has an entry for every such parameter.

    Raises:
        ValueError: for a bad vector or batches.
    """
    named = _trainable(model)
    _check_direction(vector, dict(named))
    _check_batches(batches)
    names = [n for n, _ in named]
    ps = [p for _, p in named]
    v = [vector[n].to(p) if n in vector else torch.zeros_like(p) for n, p in named]
    hv = [torch.zeros_like(p) for p in ps]  # sum_b n_b H_b v, divided by N at the end
    count = 0
    with frozen_bn_stats(model), torch.enable_grad():
        for x, y, n in _sized_batches(batches):
            count += n
            loss = loss_fn(model(x), y) * n
            grads = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
            pairs = [(g, vi, p) for g, vi, p in zip(grads, v, ps, strict=True) if g is not None]
            if not pairs:
                continue
            dot = sum((g * vi).sum() for g, vi, _ in pairs)  # <grad L_b, v>
            hvs = torch.autograd.grad(dot, ps, allow_unused=True)
            for acc, h in zip(hv, hvs, strict=True):
                if h is not None:
                    acc.add_(h)
    if count == 0:
        raise ValueError("batches is empty (no samples to evaluate the loss on)")
    return {n: h / count for n, h in zip(names, hv, strict=True)}


@dataclass(frozen=True)
class HessianEigen:
    """The extreme eigenvalues of the loss Hessian (Li et al. 2018, Section 6, Fig. 7).

    Attributes:
        max: The largest eigenvalue (algebraically).
        min: The smallest eigenvalue (negative where the loss is locally non-convex).
        ratio: |min / max|, the paper's measure of non-convexity (inf when max is 0).
        iterations: Hessian-vector products used.
        method: "lanczos" or "power".
    """

    max: float
    min: float
    ratio: float
    iterations: int
    method: str


def hessian_extreme_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable,
    iters: int = 30,
    method: str = "lanczos",
    seed: int = 0,
    tol: float = 1e-6,
) -> HessianEigen:
    """lambda_max and lambda_min of the Hessian of the loss over ``batches`` w.r.t. all
    parameters that require grad, from Hessian-vector products (:func:`hessian_vector_product`).

    ``method="lanczos"``: ``iters`` Lanczos steps with full reorthogonalisation, in float64;
    the extreme Ritz values of the tridiagonal matrix converge first, and with ``iters`` at
    least the number of parameters they are exact. Stores ``iters`` vectors of the parameters'
    size. ``method="power"``: power iteration for the eigenvalue of largest magnitude, then on
    H - lambda_1 I for the opposite end of the spectrum (Li et al.'s code does this shift);
    each stops when the Rayleigh quotient changes by less than ``tol`` (relative), or after
    ``iters`` products. Needs O(1) vectors, but converges slowly when eigenvalues cluster.

    Raises:
        ValueError: for a bad method, iters, seed or batches.
    """
    check_choice("method", method, ("lanczos", "power"))
    check_positive_int("iters", iters)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    named = _trainable(model)
    _check_batches(batches)
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    device = named[0][1].device

    def hvp(flat: torch.Tensor) -> torch.Tensor:
        # (P,) float64 -> (P,): unflatten into the parameters' shapes, H v, flatten back.
        parts = flat.split(sizes)
        vec = {n: part.view(s) for n, part, s in zip(names, parts, shapes, strict=True)}
        hv = hessian_vector_product(model, loss_fn, batches, vec)
        return torch.cat([hv[n].reshape(-1).double() for n in names])

    g = torch.Generator().manual_seed(seed)
    start = torch.randn(sum(sizes), generator=g, dtype=torch.float64).to(device)
    start /= start.norm()
    if method == "lanczos":
        lo, hi, used = _lanczos(hvp, start, iters)
    else:
        lo, hi, used = _power(hvp, start, iters, tol)
    ratio = abs(lo / hi) if hi != 0 else math.inf
    return HessianEigen(hi, lo, ratio, used, method)


def _lanczos(hvp, q: torch.Tensor, iters: int) -> tuple[float, float, int]:
    basis = [q]  # orthonormal Krylov vectors, each (P,)
    alphas: list[float] = []
    betas: list[float] = []
    steps = min(iters, q.numel())
    for k in range(steps):
        w = hvp(basis[k])
        alphas.append(float(w @ basis[k]))
        # Full reorthogonalisation (twice: "twice is enough") keeps the basis orthogonal in
        # floating point, so no spurious copies of converged eigenvalues appear.
        for _ in range(2):
            for b in basis:
                w -= (w @ b) * b
        beta = float(w.norm())
        if k == steps - 1 or beta < 1e-12 * max(1.0, abs(alphas[-1])):
            break  # the Krylov space is exhausted (invariant subspace): its Ritz values are exact
        betas.append(beta)
        basis.append(w / beta)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(t)  # ascending
    return float(ritz[0]), float(ritz[-1]), len(alphas)


def _power(hvp, start: torch.Tensor, iters: int, tol: float) -> tuple[float, float, int]:
    def dominant(op) -> tuple[float, int]:
        v, lam = start.clone(), None
        for i in range(1, iters + 1):
            w = op(v)
            new = float(v @ w)  # Rayleigh quotient, v of unit norm
            norm = w.norm()
            if norm == 0:
                return 0.0, i
            v = w / norm
            if lam is not None and abs(new - lam) <= tol * max(abs(new), 1e-30):
                return new, i
            lam = new
        return lam, iters

    lam1, n1 = dominant(hvp)
    # On H - lam1 I the dominant eigenvalue is the one farthest from lam1: the other end.
    mu, n2 = dominant(lambda v: hvp(v) - lam1 * v)
    lam2 = mu + lam1
    return min(lam1, lam2), max(lam1, lam2), n1 + n2
