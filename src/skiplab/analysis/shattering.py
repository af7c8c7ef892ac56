"""Shattered gradients: how correlated are the input gradients at nearby inputs?

Balduzzi, Frean, Leary, Lewis, Ma & McWilliams 2017, "The Shattered Gradients Problem: If
resnets are the answer, then what is the question?" (ICML 2017, arXiv:1702.08591). Fig. 1 plots
the gradient of a network with a 1-D input and output at inputs on a grid: smooth, "brown
noise"-like for a shallow net or a resnet, and like white noise for a deep feedforward net. The
autocorrelation function of those gradients (Fig. 2, compared with white and brown
noise) shows the correlation between gradients at neighbouring inputs decaying exponentially
with depth in feedforward nets and far more slowly with skip connections.

Here the input is an image, so the 1-D input is a line through input space,
x(t) = x0 + t * d for t on a grid t_0 < ... < t_{T-1} (:func:`gradients_along_line`), and the
gradient g_i = grad_x f(x(t_i)) of a scalar output f is a vector. Two signals come out:

- the vector gradients g_i, (T, *x0.shape);
- the directional derivatives f'(t_i) = <g_i, d>, (T,): the gradient of the 1-D function
  t -> f(x0 + t d), exactly the paper's 1-D setting.

:func:`gradient_autocorrelation` measures the correlation at lag k of either signal,

    R(k) = sum_i <u_i, u_{i+k}> / sqrt(sum_i ||u_i||^2 * sum_i ||u_{i+k}||^2),  i = 0..T-1-k,

with u_i = g_i (``center=False``: a linear model, whose gradient is constant, gives R(k) = 1 at
every lag) or u_i = g_i - mean_j g_j (``center=True``: the sample autocorrelation of Fig. 2,
undefined (nan) for a constant gradient). Independent gradients give R(k) near 0 for k >= 1.
A one-number summary, ``whiteness``, is the spectral flatness of the gradients' power
spectrum along t (geometric over arithmetic mean of the periodogram, averaged over the
components of g): 1 for white noise, near 0 for a smooth signal whose power sits at low
frequencies (exactly 0 for a constant uncentred gradient).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from skiplab.models._base import check_positive_int

Output = int | Callable[[torch.Tensor], torch.Tensor] | None


@dataclass(frozen=True)
class LineGradients:
    """Input gradients of a scalar output at the points x0 + t * d of a line.

    Attributes:
        ts: The grid, (T,).
        gradients: grad_x f at each point, (T, *x0.shape).
        directional: f'(t) = <grad_x f, d> at each point, (T,): the derivative of the 1-D
            function t -> f(x0 + t d).
        values: f at each point, (T,).
    """

    ts: torch.Tensor
    gradients: torch.Tensor
    directional: torch.Tensor
    values: torch.Tensor


def _scalar_outputs(out: torch.Tensor, output: Output) -> torch.Tensor:
    """The scalar f per point: (B, ...) model output -> (B,)."""
    if callable(output):
        f = output(out)
        if not isinstance(f, torch.Tensor) or f.shape != out.shape[:1]:
            raise ValueError(
                f"output(model_output) must return one value per point, shape ({out.shape[0]},); "
                f"got {tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}"
            )
        return f
    flat = out.reshape(out.shape[0], -1)  # (B, K)
    if output is None:
        if flat.shape[1] != 1:
            raise ValueError(
                "output=None needs a model with one output per point; got model output of "
                f"shape {tuple(out.shape)} (pass output=<class index> or a function)"
            )
        return flat[:, 0]
    if isinstance(output, bool) or not isinstance(output, int) or not 0 <= output < flat.shape[1]:
        raise ValueError(
            f"output must be an index in [0, {flat.shape[1]}) of the model's {flat.shape[1]} "
            f"outputs, a function or None; got {output!r}"
        )
    return flat[:, output]


def gradients_along_line(
    model: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    direction: torch.Tensor,
    ts: Sequence[float] | torch.Tensor,
    output: Output = None,
    batch_size: int = 64,
) -> LineGradients:
    """Gradients of a scalar output w.r.t. the input at x0 + t * d for every t of a grid
    (Balduzzi et al. 2017, Fig. 1, with the 1-D input replaced by a line).

    The points are run in batches; each point's gradient is its own, which needs a model
    whose output for one point does not depend on the others: BatchNorm in train mode
    normalises over the batch, so a module with any submodule in training mode is refused
    (call ``model.eval()``).

    Args:
        model: A network (or any differentiable function of a batch).
        x0: One input, without the batch dimension, e.g. (C, H, W).
        direction: d, the same shape as ``x0`` (not normalised here: t is in units of d).
        ts: The grid of t, 1-D with at least 2 values.
        output: The scalar f: None (the model has one output), a class index (that logit) or
            ``output(model_output) -> (B,)``.
        batch_size: Points per forward pass.

    Raises:
        ValueError: for mismatched shapes, a grid that is not 1-D with 2+ finite values, a
            bad ``output``, or a model in training mode.
    """
    if isinstance(model, nn.Module) and any(m.training for m in model.modules()):
        raise ValueError(
            "the model must be in eval mode (model.eval()): in training mode BatchNorm and "
            "dropout make one point's output depend on the other points of the batch"
        )
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point():
        raise ValueError(f"x0 must be a floating-point tensor (one input, no batch); got {x0!r}")
    if not isinstance(direction, torch.Tensor) or direction.shape != x0.shape:
        raise ValueError(
            f"direction must be a tensor of x0's shape {tuple(x0.shape)}; got "
            f"{tuple(direction.shape) if isinstance(direction, torch.Tensor) else direction!r}"
        )
    ts = torch.as_tensor(ts, dtype=x0.dtype).to(x0.device)
    if ts.ndim != 1 or ts.numel() < 2 or not torch.isfinite(ts).all():
        raise ValueError(f"ts must be a 1-D grid of at least 2 finite values; got {ts.tolist()}")
    check_positive_int("batch_size", batch_size)
    direction = direction.to(x0)
    grads, values = [], []
    for chunk in ts.split(batch_size):
        # Points x(t) = x0 + t d: (B, *x0.shape), leaves of their own graph.
        shape = (-1,) + (1,) * x0.ndim
        points = (x0.unsqueeze(0) + chunk.view(shape) * direction.unsqueeze(0)).detach()
        points.requires_grad_(True)
        with torch.enable_grad():
            f = _scalar_outputs(model(points), output)  # (B,)
            # Points are independent, so d(sum f)/d(point_i) = grad f(point_i).
            (g,) = torch.autograd.grad(f.sum(), points)
        grads.append(g.detach())
        values.append(f.detach())
    gradients = torch.cat(grads)  # (T, *x0.shape)
    directional = (gradients.flatten(1) * direction.reshape(1, -1)).sum(1)  # (T,)
    return LineGradients(ts, gradients, directional, torch.cat(values))


def _as_signal(gradients: torch.Tensor) -> torch.Tensor:
    """(T,) or (T, ...) -> (T, D) float64."""
    if not isinstance(gradients, torch.Tensor) or gradients.ndim < 1 or gradients.shape[0] < 2:
        raise ValueError(
            "gradients must be a tensor (T,) or (T, ...) with T >= 2 points; got "
            f"{tuple(gradients.shape) if isinstance(gradients, torch.Tensor) else gradients!r}"
        )
    return gradients.detach().double().reshape(gradients.shape[0], -1)


def gradient_autocorrelation(
    gradients: torch.Tensor, max_lag: int | None = None, center: bool = False
) -> torch.Tensor:
    """R(k) for k = 0..max_lag (module docstring): the correlation between the gradients at
    grid points k steps apart, (max_lag + 1,) float64, R(0) = 1.

    Args:
        gradients: (T,) (e.g. ``LineGradients.directional``) or (T, ...) (``.gradients``).
        max_lag: Largest lag, at most T - 1 (default T // 2).
        center: Subtract the mean gradient over the line first (the sample autocorrelation
            function of Balduzzi et al. 2017, Fig. 2); nan where the signal is constant.

    Raises:
        ValueError: for fewer than 2 points or a lag outside 0..T-1.
    """
    u = _as_signal(gradients)  # (T, D)
    n = u.shape[0]
    max_lag = n // 2 if max_lag is None else max_lag
    if isinstance(max_lag, bool) or not isinstance(max_lag, int) or not 0 <= max_lag < n:
        raise ValueError(
            f"max_lag must be an integer in [0, {n - 1}] for {n} points; got {max_lag!r}"
        )
    if center:
        u = u - u.mean(0, keepdim=True)
    out = torch.empty(max_lag + 1, dtype=torch.float64)
    for k in range(max_lag + 1):
        a, b = u[: n - k], u[k:]  # (T-k, D) each: the pairs (i, i + k)
        denom = (a.square().sum() * b.square().sum()).sqrt()
        out[k] = (a * b).sum() / denom if denom > 0 else float("nan")
    return out


def spectral_whiteness(gradients: torch.Tensor, center: bool = False) -> float:
    """Spectral flatness of the gradients along the line: exp(mean log P) / mean P over the
    frequencies of P(f) = mean over components of |DFT_t u|^2 (Wiener entropy). 1 for white
    noise (a flat spectrum), near 0 for a smooth signal; 0 for a constant uncentred one.

    Raises:
        ValueError: for fewer than 2 points.
    """
    u = _as_signal(gradients)
    if center:
        u = u - u.mean(0, keepdim=True)
    power = torch.fft.rfft(u, dim=0).abs().square().mean(1)  # (T // 2 + 1,)
    mean = power.mean()
    if mean == 0:
        return float("nan")
    return float(torch.exp(torch.log(power).mean()) / mean)


@dataclass(frozen=True)
class Shattering:
    """The correlation structure of input gradients along a line.

    Attributes:
        line: The gradients themselves (:class:`LineGradients`).
        correlation: R(k) of the vector gradients, k = 0..max_lag (uncentred).
        directional_acf: The centred autocorrelation of the directional derivatives f'(t)
            (the 1-D function's, as in Balduzzi et al. 2017, Fig. 2).
        neighbour_correlation: R(1), the correlation between gradients at neighbouring points.
        whiteness: :func:`spectral_whiteness` of the vector gradients.
    """

    line: LineGradients
    correlation: torch.Tensor
    directional_acf: torch.Tensor
    neighbour_correlation: float
    whiteness: float


def gradient_shattering(
    model: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    direction: torch.Tensor | None = None,
    ts: Sequence[float] | torch.Tensor | None = None,
    output: Output = None,
    max_lag: int | None = None,
    seed: int = 0,
) -> Shattering:
    """Gradients along a line through ``x0`` and their correlations (Balduzzi et al. 2017,
    Figs. 1-2).

    Args:
        direction: d (default: a random Gaussian direction of unit norm, from ``seed``).
        ts: The grid (default: 256 points on [-1, 1], the paper's grid size).
        output, max_lag: As in :func:`gradients_along_line` and
            :func:`gradient_autocorrelation`.

    Raises:
        ValueError: as :func:`gradients_along_line` and :func:`gradient_autocorrelation`.
    """
    if direction is None:
        g = torch.Generator().manual_seed(seed)
        direction = torch.randn(x0.shape, generator=g, dtype=torch.float64).to(x0)
        direction = direction / direction.norm()
    ts = torch.linspace(-1.0, 1.0, 256) if ts is None else ts
    line = gradients_along_line(model, x0, direction, ts, output)
    corr = gradient_autocorrelation(line.gradients, max_lag)
    acf = gradient_autocorrelation(line.directional, max_lag, center=True)
    return Shattering(line, corr, acf, float(corr[1]), spectral_whiteness(line.gradients))
