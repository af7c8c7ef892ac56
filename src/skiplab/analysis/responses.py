"""Residual responses: how large is what each unit adds to its input?

He, Zhang, Ren & Sun 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385),
Section 4.2, "Analysis of Layer Responses", Fig. 7: the standard deviations of the layer
responses on CIFAR-10, "the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)". ResNets have smaller responses than their plain counterparts, and deeper
ResNets smaller ones still: the residual functions are "generally closer to zero than the
non-residual functions", and each unit modifies the signal less.

:func:`residual_responses` measures, for every unit of ``model.iter_blocks()``, the response of
its branch F(x), the tensor the unit adds to its shortcut:

- ``response_std``: the standard deviation of all entries of F(x) over the batch (Fig. 7);
- ``norm_ratio``: ||F(x)|| / ||s||, per sample, averaged over the batch, where ``s =
  block.skip(x)`` is the shortcut the unit adds F(x) to (the identity, option A padding or a
  projection: the contract's ``skip``, the shortcut path alone). How much a unit changes the
  signal it passes on.

For a plain unit (``residual=False``: the same layers, no addition) F(x) is the same tensor (the
branch's last layer, before the unit's final ReLU) and ``s`` is the unit's input x.

Where the branch ends (the unit contract, :mod:`skiplab.models._base`): a
:class:`~skiplab.models._base.ZeroInitUnit` names the last scale of its branch through
``zero_init_last()`` (the last BN's gamma, or the last convolution where no BN follows it). The
module that owns that parameter is the branch's last layer, and its output is F(x): ``bn2`` of a
BasicBlock, ``bn3`` of a Bottleneck, ``conv2`` / ``conv3`` of the pre-activation units, for
residual and plain units alike. It is found on a copy of the unit, so the model is never
changed. Units without ``zero_init_last`` (highway layers, dense layers, decoder blocks) need
``branch_layer``, a function naming the module whose output is their F(x).

The statistics are computed inside the hooks, when each tensor is produced: the original units
add the shortcut in place when autograd is off, so a kept reference to F(x) would later hold the
sum. The shortcut is computed from the unit's input in a forward pre-hook (one extra 1x1
convolution for a projection unit; nothing for the identity).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from skiplab.analysis.lesion import named_blocks, select_blocks
from skiplab.models._base import SkipUnit, ZeroInitUnit, frozen_bn_stats

BranchLayer = Callable[[str, nn.Module], nn.Module]


@dataclass(frozen=True)
class UnitResponse:
    """The branch response of one unit, over one batch.

    Attributes:
        name: The unit's name in ``iter_blocks()``.
        residual: False for a plain unit (no addition); its ``shortcut_norm`` is then that of
            the unit's input.
        branch_layer: The module (relative to the unit) whose output is F(x), e.g. ``"bn2"``.
        response_std: Standard deviation of all entries of F(x) (population, over N*C*H*W).
        branch_norm: Mean over samples of ||F(x_n)||_2.
        shortcut_norm: Mean over samples of ||s_n||_2 (s: the shortcut, or x for a plain unit).
        norm_ratio: Mean over samples of ||F(x_n)|| / ||s_n||.
    """

    name: str
    residual: bool
    branch_layer: str
    response_std: float
    branch_norm: float
    shortcut_norm: float
    norm_ratio: float


def branch_output_layer(name: str, block: nn.Module) -> str:
    """The name (relative to ``block``) of the module whose output is the unit's branch F(x).

    Found through the unit contract: on a copy of the unit whose parameters are all set to 1,
    ``zero_init_last()`` zeroes the last scale of the branch; the module holding it is the
    branch's last layer.

    Raises:
        ValueError: for a unit without ``zero_init_last()``, or one whose last scale is not held
            by a submodule (pass ``branch_layer`` to :func:`residual_responses` instead).
    """
    if not isinstance(block, ZeroInitUnit):
        raise ValueError(
            f"block {name} ({type(block).__name__}) has no zero_init_last(), so the end of its "
            "branch is unknown; pass branch_layer=lambda name, block: <the submodule whose "
            "output is F(x)>, or choose other blocks"
        )
    probe = copy.deepcopy(block)
    with torch.no_grad():
        for p in probe.parameters():
            p.fill_(1.0)
        probe.zero_init_last()
    zeroed = [n for n, p in probe.named_parameters() if not p.detach().any()]
    owners = sorted({n.rpartition(".")[0] for n in zeroed})
    if len(owners) != 1 or owners[0] == "":
        raise ValueError(
            f"block {name} ({type(block).__name__}): zero_init_last() zeroed {zeroed}, not the "
            "parameters of one submodule; pass branch_layer to name the module whose output "
            "is F(x)"
        )
    return owners[0]


def _sample_norms(t: torch.Tensor) -> torch.Tensor:
    # (N, ...) -> (N,): the L2 norm of each sample, in float64.
    return t.detach().double().flatten(1).norm(dim=1)


def residual_responses(
    model: nn.Module,
    x: torch.Tensor,
    blocks: str | Iterable[str] | None = None,
    branch_layer: BranchLayer | None = None,
) -> list[UnitResponse]:
    """Measure the branch response of every unit (He et al. 2015, Section 4.2, Fig. 7).

    Runs ``model(x)`` once, without autograd and without changing BatchNorm running
    statistics, in the model's current mode: call ``model.eval()`` first for the paper's
    measurement of a trained net (BN with its running statistics).

    Args:
        model: Any skiplab model (``iter_blocks()``).
        x: One input batch, (N, C, H, W) for the image models.
        blocks: Unit names to measure (default: all units, forward order).
        branch_layer: ``branch_layer(name, block) -> module``: the submodule whose output is
            the unit's F(x), for units outside the ``zero_init_last`` contract (for a residual
            highway layer, ``lambda n, b: b.act``). Default: :func:`branch_output_layer`.

    Returns:
        One :class:`UnitResponse` per unit, in the order of ``blocks`` (forward order).

    Raises:
        ValueError: for a non-tensor or empty ``x``, unknown blocks, a unit whose branch cannot
            be located, or a ``branch_layer`` that returns no submodule of the unit.
        RuntimeError: if a unit did not run, or its branch layer ran other than once per call
            of the unit.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
            "x must be a non-empty batch tensor (N, ...); got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}"
        )
    chosen = list(named_blocks(model).items()) if blocks is None else select_blocks(model, blocks)
    layers: list[tuple[str, nn.Module, str, nn.Module]] = []
    for name, block in chosen:
        if branch_layer is None:
            rel = branch_output_layer(name, block)
            layer = block.get_submodule(rel)
        else:
            layer = branch_layer(name, block)
            rel = next((n for n, m in block.named_modules() if m is layer and n), None)
            if rel is None:
                raise ValueError(
                    f"branch_layer({name!r}, block) must return a submodule of the block "
                    f"({type(block).__name__}); got {type(layer).__name__}"
                )
        layers.append((name, block, rel, layer))

    # Per unit: per-sample norms (N,) of its input, its shortcut and its F(x), and the std.
    stats: dict[str, dict[str, list]] = {
        name: {"input": [], "skip": [], "branch": [], "std": []} for name, *_ in layers
    }

    def on_input(block, args, name):
        x_in = args[0]  # the unit's input, (N, C, H, W)
        stats[name]["input"].append(_sample_norms(x_in))
        if isinstance(block, SkipUnit) and block.residual:
            # The shortcut s = skip(x), same shape as F(x): what the unit adds F(x) to (the
            # contract's skip is the shortcut path alone, so this is the tensor of the sum).
            stats[name]["skip"].append(_sample_norms(block.skip(x_in)))

    def on_branch(_module, _args, out, name):
        # F(x): (N, C', H', W'). Reduced at once: the unit may add the shortcut in place later.
        stats[name]["branch"].append(_sample_norms(out))
        stats[name]["std"].append(float(out.detach().double().std(correction=0)))

    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(frozen_bn_stats(model))  # a measurement must not move BN statistics
        for name, block, _rel, layer in layers:
            pre = block.register_forward_pre_hook(lambda m, a, name=name: on_input(m, a, name))
            post = layer.register_forward_hook(lambda m, a, o, name=name: on_branch(m, a, o, name))
            stack.callback(pre.remove)
            stack.callback(post.remove)
        model(x)

    results = []
    for name, block, rel, _layer in layers:
        s = stats[name]
        calls = len(s["input"])
        if calls == 0:
            raise RuntimeError(f"block {name} did not run in the forward pass")
        if len(s["branch"]) != calls:
            raise RuntimeError(
                f"block {name}: its branch layer {rel!r} ran {len(s['branch'])} times in "
                f"{calls} call(s) of the unit; expected once per call"
            )
        residual = isinstance(block, SkipUnit) and block.residual
        if residual:
            shortcut = torch.cat(s["skip"])
        else:
            shortcut = torch.cat(s["input"])  # a plain unit: compare F(x) with its input
        branch = torch.cat(s["branch"])
        results.append(
            UnitResponse(
                name=name,
                residual=residual,
                branch_layer=rel,
                response_std=sum(s["std"]) / len(s["std"]),
                branch_norm=float(branch.mean()),
                shortcut_norm=float(shortcut.mean()),
                norm_ratio=float((branch / shortcut).mean()),
            )
        )
    return results
