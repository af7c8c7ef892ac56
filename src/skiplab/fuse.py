"""BatchNorm folding for inference: every Conv -> BN pair becomes one convolution.

In eval mode a BatchNorm is a per-channel affine map, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``; when its input is a convolution's output and nothing else reads that output, the
map can be folded into the convolution: ``W' = W * s``, ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)`` per output channel, and the BatchNorm becomes ``nn.Identity``.

Which pairs may be folded is a property of a module's ``forward``, which this module cannot
see, so the pairs come from two places only:

- a module that defines ``conv_bn_pairs()`` (the unit contract
  :class:`skiplab.models._base.FusableUnit`) names its own pairs (dotted paths relative to
  itself), e.g. ``BasicBlock``: ``(("conv1", "bn1"), ("conv2", "bn2"))``; a pre-activation
  unit names only the BatchNorms that follow a convolution (``conv1 -> bn2``), not the one
  that reads the unit's input;
- inside an ``nn.Sequential``, a ``Conv2d`` directly followed by a ``BatchNorm2d`` (the
  Sequential's forward feeds one into the other and nothing else), e.g. a projection shortcut.

Everything else is left as it is. State-dict names are kept: a folded convolution gains a
``bias``, and a folded BatchNorm (an ``nn.Identity``) loses its entries.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from skiplab.models._base import FusableUnit


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Qualified names ``(conv, bn)`` of every pair :func:`fuse_bn` folds in ``model``."""
    pairs: list[tuple[str, str]] = []
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        if isinstance(module, FusableUnit):
            pairs += [(dot + conv, dot + bn) for conv, bn in module.conv_bn_pairs()]
        if isinstance(module, nn.Sequential):
            children = list(module._modules.items())
            for (a, first), (b, second) in zip(children, children[1:], strict=False):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    pairs.append((dot + a, dot + b))
    return pairs


def fuse_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """An eval-mode model with every Conv -> BN pair of :func:`conv_bn_pairs` folded.

    The result computes what ``model.eval()`` computes (up to float rounding) and is meant for
    inference only: training it would train without those BatchNorms.

    Args:
        model: Any module; pairs are found as described in the module docstring.
        inplace: Fold into ``model`` itself instead of a deep copy.

    Raises:
        ValueError: for a declared pair that is not (Conv2d, BatchNorm2d with running
            statistics) or whose channel counts differ.
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for conv_name, bn_name in conv_bn_pairs(fused):
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        if isinstance(bn, nn.Identity):
            continue  # already folded (a model passed twice, or a pair named twice)
        _check_pair(conv_name, conv, bn_name, bn)
        with torch.no_grad():
            _set(fused, conv_name, fuse_conv_bn_eval(conv, bn))
        _set(fused, bn_name, nn.Identity())
    return fused


def _check_pair(conv_name: str, conv: nn.Module, bn_name: str, bn: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d) or isinstance(conv, nn.LazyConv2d):
        raise ValueError(f"cannot fold into {conv_name}: expected nn.Conv2d, got {conv}")
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None:
        raise ValueError(
            f"cannot fold {bn_name}: expected nn.BatchNorm2d with running statistics, got {bn}"
        )
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"cannot fold {bn_name} ({bn.num_features} channels) into {conv_name} "
            f"({conv.out_channels} output channels)"
        )


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)
