"""Gradient flow through skip connections.

For a residual unit H(x) = x + F(x) the Jacobian is dH/dx = I + dF/dx (He et al. 2016, eq. 5):
the identity term carries the gradient from any unit straight back to any earlier one, so it
cannot vanish with depth however small dF/dx is. A plain unit has only dF/dx, and the product
of many such factors shrinks (or explodes) geometrically.

This module measures both things on any skiplab model through ``iter_blocks()``:

- :func:`gradient_norms`: the norm of dL/dx at the input of every block, and of every weight
  gradient, for one batch;
- :func:`block_jacobian_terms`: for each block, ||(dH/dx) v|| and ||(dH/dx) v - v|| for random
  directions v (the second is ||(dF/dx) v|| for an identity-shortcut unit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from skiplab.models._base import frozen_bn_stats


@dataclass
class GradientNorms:
    """Gradient norms of one backward pass.

    Attributes:
        block_names: Names of the blocks in forward order (``iter_blocks()``).
        block_input: ||dL/dx|| at the input of each block, same order.
        weight_names: Names of the weight tensors (parameters with ndim > 1), forward order.
        weight: ||dL/dW|| for each of them.
        loss: The loss value.
    """

    block_names: list[str]
    block_input: list[float]
    weight_names: list[str]
    weight: list[float]
    loss: float


def gradient_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> GradientNorms:
    """Run one forward/backward pass and collect the gradient norms (the model's grads are
    left as computed; zero them before an optimiser step if needed).

    Each block input is captured by a forward pre-hook and asked to retain its gradient, so the
    norm reported is that of the gradient reaching the block through all paths.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    blocks = list(model.iter_blocks())
    if not blocks:
        raise ValueError(f"{type(model).__name__}.iter_blocks() yielded no blocks")
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for name, block in blocks:

        def capture(_module, args, name=name):
            t = args[0]
            if t.requires_grad:
                t.retain_grad()
            inputs[name] = t

        handles.append(block.register_forward_pre_hook(capture))
    try:
        model.zero_grad(set_to_none=True)
        with frozen_bn_stats(model):  # a measurement must not move BN running statistics
            loss = loss_fn(model(x), y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    block_norms = []
    for name, _ in blocks:
        t = inputs.get(name)
        if t is None:
            raise RuntimeError(f"block {name} did not run in the forward pass")
        block_norms.append(float(t.grad.norm()) if t.grad is not None else 0.0)
    weight_names, weight_norms = [], []
    for pname, p in model.named_parameters():
        if p.ndim > 1 and p.grad is not None:
            weight_names.append(pname)
            weight_norms.append(float(p.grad.norm()))
    return GradientNorms(
        [n for n, _ in blocks], block_norms, weight_names, weight_norms, float(loss.detach())
    )


@dataclass
class JacobianTerms:
    """Per-block Jacobian-vector measurements (mean over random unit directions).

    Attributes:
        block_names: Blocks whose input and output shapes agree (identity shortcut).
        total: ||(dH/dx) v|| for unit-norm v.
        residual: ||(dH/dx) v - v||: the dF/dx term when the shortcut is the identity.
    """

    block_names: list[str]
    total: list[float]
    residual: list[float]


def block_jacobian_terms(
    model: nn.Module, x: torch.Tensor, n_directions: int = 4, seed: int = 0
) -> JacobianTerms:
    """Measure how close each shape-preserving block's Jacobian is to the identity.

    Runs the model once (in its current train/eval mode) to capture each block's input, then
    differentiates the block alone (Jacobian-vector products; BatchNorm statistics are not
    changed). Blocks that
    change the shape (downsampling units) are left out: their Jacobian is not square.
    Transformer blocks work too (their attention is differentiated on SDPA's math kernel).
    """
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    blocks = list(model.iter_blocks())
    for name, block in blocks:

        def capture(_module, args, name=name):
            inputs[name] = args[0].detach()

        handles.append(block.register_forward_pre_hook(capture))
    try:
        with torch.no_grad(), frozen_bn_stats(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    g = torch.Generator(device="cpu").manual_seed(seed)
    names, totals, residuals = [], [], []
    for name, block in blocks:
        xin = inputs[name]
        with torch.no_grad():
            out = block(xin)
        if out.shape != xin.shape:
            continue
        tot, res = 0.0, 0.0
        for _ in range(n_directions):
            v = torch.randn(xin.shape, generator=g).to(xin)
            v = v / v.norm()
            # autograd's double-backward JVP: works with BN in train mode, whose running
            # statistics frozen_bn_stats keeps unchanged. Attention runs on SDPA's math kernel:
            # the fused CPU kernel has no double backward (a Transformer block would fail).
            with frozen_bn_stats(block), sdpa_kernel(SDPBackend.MATH):
                _, jv = torch.autograd.functional.jvp(block, xin, v)
            tot += float(jv.norm())
            res += float((jv - v).norm())
        names.append(name)
        totals.append(tot / n_directions)
        residuals.append(res / n_directions)
    return JacobianTerms(names, totals, residuals)
