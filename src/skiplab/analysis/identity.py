"""The identity construction: a deeper net that computes exactly what a shallower one does.

He, Zhang, Ren & Sun 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385),
Section 1: "There exists a solution by construction to the deeper model: the added layers are
identity mapping, and the other layers are copied from the learned shallower model. The
existence of this constructed solution indicates that a deeper model should produce no higher
training error than its shallower counterpart." Their experiments show that SGD does not find a
solution as good for deep plain nets (the degradation problem).

:func:`deepen_with_identity` builds that solution: it copies a trained shallow ResNet (or plain
control) into a deeper one of the same stages and widths, unit ``j`` of each stage into unit
``j`` (the stem and the classifier as they are), and sets every added unit to the identity with
:func:`set_unit_to_identity_`:

- a **residual** unit (any unit with the addition and the identity shortcut): the last scale of
  its branch (the module :func:`~skiplab.analysis.responses.branch_output_layer` names, e.g.
  ``bn2``; weight and bias) is set to zero, so F(x) = 0 and the unit returns relu(x + 0) = x
  for x >= 0 (original units), or x + 0 = x (pre-activation units);
- a **plain** unit (``residual=False``; a :class:`~skiplab.models.resnet_blocks.BasicBlock`
  only): both 3x3 convolutions become the Dirac (identity) kernel and both BNs the identity in
  eval mode (running mean 0, running variance 1, gamma sqrt(1 + eps), beta 0), so the unit
  returns relu(relu(x)) = x for x >= 0. A plain bottleneck cannot carry the identity through
  its 1x1 reduction, and a plain pre-activation unit has a ReLU on an input that may be
  negative; both are refused.

An added unit of an original (post-activation) net sits after a unit (or the stem) that ends in
a ReLU, so its input is non-negative and the construction is exact up to floating-point rounding
of the BN arithmetic; it holds in eval mode (in training mode a BN normalises with the batch's
statistics, which differ from the identity setting). :func:`max_output_difference` measures it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from skiplab.analysis.responses import branch_output_layer
from skiplab.models.resnet import ResNet
from skiplab.models.resnet_blocks import BasicBlock

__all__ = ["deepen_with_identity", "max_output_difference", "set_unit_to_identity_"]


def _identity_bn_(bn: nn.Module) -> None:
    if isinstance(bn, nn.Identity):
        return
    if not isinstance(bn, nn.BatchNorm2d) or not bn.affine or not bn.track_running_stats:
        raise TypeError(
            "the identity construction needs BatchNorm2d (affine, tracking running statistics) "
            f"or no norm; got {bn!r}"
        )
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
        # eval: (x - 0) / sqrt(1 + eps) * sqrt(1 + eps) + 0 = x (up to rounding)
        bn.weight.fill_(float(torch.tensor(1.0 + bn.eps, dtype=bn.weight.dtype).sqrt()))
        bn.bias.zero_()


def _dirac_(conv: nn.Module) -> None:
    if (
        not isinstance(conv, nn.Conv2d)
        or conv.in_channels != conv.out_channels
        or conv.stride != (1, 1)
        or conv.groups != 1
        or conv.kernel_size[0] % 2 == 0
        or conv.kernel_size[1] % 2 == 0
    ):
        raise ValueError(
            "an identity convolution needs a Conv2d with as many output as input channels, "
            f"stride 1, one group and an odd kernel; got {conv!r}"
        )
    with torch.no_grad():
        nn.init.dirac_(conv.weight)
        if conv.bias is not None:
            conv.bias.zero_()


def set_unit_to_identity_(unit: nn.Module) -> nn.Module:
    """Set one unit to the identity on non-negative inputs, in place; returns the unit.

    Raises:
        ValueError: for a unit that changes the shape (a stride or a width change), a shortcut
            variant other than the identity, or a plain unit that is not a BasicBlock.
        TypeError: for a norm other than BatchNorm2d or none.
    """
    residual = getattr(unit, "residual", None)
    if residual is None:
        raise ValueError(
            f"set_unit_to_identity_ needs a residual unit of skiplab's ResNets (with a "
            f"'residual' attribute); got {type(unit).__name__}"
        )
    if getattr(unit, "downsample", None) is not None:
        raise ValueError(
            f"{type(unit).__name__} has a projection or padding shortcut (it changes width or "
            "resolution): only a unit that keeps its input's shape can be the identity"
        )
    if residual:
        if getattr(unit, "shortcut_variant", "identity") != "identity":
            raise ValueError(
                f"the identity construction needs the identity shortcut; got shortcut_variant="
                f"{unit.shortcut_variant!r} (its shortcut alone is not x)"
            )
        # bn2 / bn3 / the last conv of a pre-act unit
        last = unit.get_submodule(branch_output_layer(type(unit).__name__, unit))
        with torch.no_grad():
            last.weight.zero_()
            if getattr(last, "bias", None) is not None:
                last.bias.zero_()
        return unit
    if type(unit) is not BasicBlock:
        raise ValueError(
            "a plain unit can be set to the identity only when it is a post-activation "
            f"BasicBlock (3x3 convolutions between ReLUs); got {type(unit).__name__}"
        )
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        _dirac_(getattr(unit, conv))
        _identity_bn_(getattr(unit, bn))
    return unit


def deepen_with_identity(shallow: ResNet, deep: ResNet) -> ResNet:
    """Copy ``shallow`` into ``deep`` and set ``deep``'s added units to the identity, in place.

    ``deep`` must have the same stages, widths, stem, shortcut option and classifier, and at
    least as many units in every stage. Unit ``j`` of each stage of ``shallow`` goes to unit
    ``j`` of the same stage of ``deep`` (so the downsampling units line up); units ``j >= n``
    of a stage of ``n`` shallow units become the identity. Returns ``deep``.

    Raises:
        ValueError: for nets of different configuration, a stage of ``deep`` with fewer units,
            or an added unit that cannot be the identity (see :func:`set_unit_to_identity_`).
    """
    for name, net in (("shallow", shallow), ("deep", deep)):
        if not isinstance(net, ResNet):
            raise ValueError(f"{name} must be a skiplab ResNet; got {type(net).__name__}")
    a, b = shallow.cfg, deep.cfg
    mismatched = [
        f"{field} {getattr(a, field)!r} vs {getattr(b, field)!r}"
        for field in (
            "block",
            "preact",
            "widths",
            "stem",
            "stem_width",
            "shortcut",
            "norm",
            "num_classes",
            "in_chans",
            "shortcut_variant",
        )  # fmt: skip
        if getattr(a, field) != getattr(b, field)
    ]
    if mismatched:
        raise ValueError(
            "deepen_with_identity needs nets that differ only in units per stage; they differ "
            "in " + ", ".join(mismatched)
        )
    if any(m > n for m, n in zip(a.layers, b.layers, strict=True)):
        raise ValueError(
            f"the deep net needs at least as many units per stage as the shallow one; got "
            f"{tuple(a.layers)} -> {tuple(b.layers)}"
        )
    state = deep.state_dict()
    for key, value in shallow.state_dict().items():
        if key not in state:
            raise ValueError(f"the deep net has no parameter or buffer {key!r}")
        state[key] = value
    deep.load_state_dict(state)
    for name, unit in deep.iter_blocks():
        stage, j = name.split(".")
        if int(j) >= a.layers[deep.stage_names.index(stage)]:
            set_unit_to_identity_(unit)
    return deep


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |a(x) - b(x)|, max |a(x)|) with both nets in eval mode; their modes are restored."""
    modes = (a.training, b.training)
    a.eval()
    b.eval()
    try:
        ya, yb = a(x), b(x)
    finally:
        a.train(modes[0])
        b.train(modes[1])
    return float((ya - yb).abs().max()), float(ya.abs().max())
