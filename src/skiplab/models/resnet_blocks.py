"""Residual units and their shortcuts.

He et al. 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385):
BasicBlock (3x3, 3x3) and Bottleneck (1x1 reduce, 3x3, 1x1 expand), ReLU after the addition.
He et al. 2016, "Identity Mappings in Deep Residual Networks" (arXiv:1603.05027):
PreActBasic and PreActBottleneck, BN -> ReLU -> conv, nothing after the addition.

Every block takes ``(inplanes, planes, stride, downsample, ..., norm_layer)`` as torchvision's do
and has an ``expansion`` attribute; only the bottlenecks take ResNeXt's ``groups`` and
``base_width`` and the Caffe models' ``stride_in_1x1``. The shortcut is a module passed in
(``downsample``; None means identity), and ``residual=False`` removes the addition altogether,
which turns the block into a unit of a plain control network with the same layers and parameter
names. Each block writes its addition in its own ``forward``.

Shortcut options (paper section 3.3): "A" identity, zero-padding + subsampling where shapes
change (no parameters); "B" identity, projection where shapes change; "C" projection
everywhere; "none" no addition (plain net).

Shortcut variants (He et al. 2016, section 3.1, Fig. 2, Table 1), on top of the option above
(h(x) below is the identity, or the option A/B/C shortcut where shapes change), set by
:class:`ShortcutOptions`:

- "identity": ``h(x) + F(x)`` (Fig. 2a; the default: nothing is added to the unit);
- "constant": ``λ·h(x) + (1-λ)·F(x)``, or ``λ·h(x) + F(x)`` with ``scale_branch=False``
  (Fig. 2b; λ = ``shortcut_scale``, 0.5 in the paper);
- "exclusive_gating": ``(1-g(x))·h(x) + g(x)·F(x)``, ``g(x) = sigmoid(W_g x + b_g)`` a 1x1
  convolution of the unit's input with its bias started at ``gate_bias`` (Fig. 2c);
- "shortcut_gating": ``(1-g(x))·h(x) + F(x)``, the same gate on the shortcut only (Fig. 2d);
- "conv": ``W_s x + F(x)``, a 1x1 convolution shortcut (+ BN) on every unit: option C (Fig. 2e);
- "dropout": ``dropout(h(x)) + F(x)``, ``nn.Dropout(shortcut_dropout)`` on the shortcut
  (Fig. 2f; p = 0.5 in the paper).

Normalisation-free units (De & Smith 2020, SkipInit; Zhang et al. 2019, Fixup; Bachlechner et
al. 2020, ReZero): ``norm_layer=nn.Identity`` removes every BatchNorm (a projection shortcut is
then a bare convolution), and ``branch_scale=a`` multiplies the residual branch by a learned
scalar that starts at ``a`` (``h(x) + α·F(x)``; 0 starts every unit at its shortcut). Both apply
to the identity variant; the scalar is a parameter named ``branch_gain``.

``skip(x)`` is the whole shortcut term (``λ·h(x)``, ``(1-g(x))·h(x)``, ``dropout(h(x))``, ...),
so that it stays what the unit computes when its residual branch is deleted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from skiplab.config import check_bool, check_choice, check_real
from skiplab.models._base import DropPath

SHORTCUTS = ("A", "B", "C", "none")
SHORTCUT_VARIANTS = (
    "identity",
    "constant",
    "exclusive_gating",
    "shortcut_gating",
    "conv",
    "dropout",
)
GATED_VARIANTS = ("exclusive_gating", "shortcut_gating")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return _he_init(nn.Conv2d(in_ch, out_ch, 3, stride, padding=1, groups=groups, bias=False))


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return _he_init(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False))


def _he_init(conv: nn.Conv2d) -> nn.Conv2d:
    # He et al. 2015 ("Delving deep into rectifiers") init, fan_out as in torchvision.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the new channels.

    The padding is split evenly before and after the existing channels, the layout of the
    widely used public CIFAR checkpoints (so that their weights keep their accuracy). No
    parameters.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A cannot reduce channels ({in_ch} -> {out_ch}); use 'B'")
        self.stride = stride
        self.pad_before = (out_ch - in_ch) // 2
        self.pad_after = out_ch - in_ch - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


def make_shortcut(
    kind: str,
    in_ch: int,
    out_ch: int,
    stride: int,
    norm_layer: type[nn.Module] | None,
) -> nn.Module | None:
    """Build the ``downsample`` module for one block, or None for a plain identity.

    Args:
        kind: "A", "B", "C" or "none".
        norm_layer: BatchNorm class after a projection; None for pre-activation nets, whose
            projection sees an already normalised input (He et al. 2016 code).
    """
    shape_changes = stride != 1 or in_ch != out_ch
    if kind == "none" or (kind in ("A", "B") and not shape_changes):
        return None
    if kind == "A":
        return PadShortcut(in_ch, out_ch, stride)
    if norm_layer is None:
        return nn.Sequential(conv1x1(in_ch, out_ch, stride))
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))


# The variants each parameter of ShortcutOptions applies to.
_APPLIES_TO = {
    "shortcut_scale": ("constant",),
    "scale_branch": ("constant",),
    "gate_bias": GATED_VARIANTS,
    "shortcut_dropout": ("dropout",),
}


@dataclass(frozen=True)
class ShortcutOptions:
    """How a unit combines its shortcut h(x) and its branch F(x) (He et al. 2016, Fig. 2).

    The fields carry the names of the :class:`~skiplab.models.resnet.ResNetConfig` fields that
    set them, and so do the errors.

    Attributes:
        shortcut_variant: One of ``SHORTCUT_VARIANTS`` (see the module docstring).
        shortcut_scale: λ of "constant": the shortcut is ``λ·h(x)`` (paper: 0.5).
        scale_branch: "constant" only: scale the branch by ``1 - λ`` (True, as Fig. 2b draws
            it: "frozen gates") or leave it ``F(x)`` (False); Table 1 has a row for each.
        gate_bias: Initial bias b_g of the gate's 1x1 convolution ("exclusive_gating",
            "shortcut_gating"; Table 1 tries 0 and negative values). -6 starts ``g(x)`` near
            sigmoid(-6) = 0.0025, so that the unit starts close to its shortcut.
        shortcut_dropout: Dropout probability on the shortcut ("dropout"; paper: 0.5).
            ``nn.Dropout``: kept values are scaled by 1/(1-p) in training, the identity in eval.

    Raises:
        ValueError: for an unknown variant or a value out of range, and for a parameter set
            away from its default for a variant it does not apply to.
    """

    shortcut_variant: str = "identity"
    shortcut_scale: float = 0.5
    scale_branch: bool = True
    gate_bias: float = -6.0
    shortcut_dropout: float = 0.5

    def __post_init__(self) -> None:
        check_choice("shortcut_variant", self.shortcut_variant, SHORTCUT_VARIANTS)
        check_bool("scale_branch", self.scale_branch)
        if self.scale_branch:  # the branch's 1 - λ must stay positive
            check_real("shortcut_scale", self.shortcut_scale, 0, 1, low_open=True, high_open=True)
        else:
            check_real("shortcut_scale", self.shortcut_scale, 0, low_open=True)
        check_real("gate_bias", self.gate_bias)
        if not math.isfinite(self.gate_bias):
            raise ValueError(f"gate_bias must be a finite number; got {self.gate_bias!r}")
        check_real("shortcut_dropout", self.shortcut_dropout, 0, 1, high_open=True)
        for name, variants in _APPLIES_TO.items():
            if self.shortcut_variant not in variants and getattr(self, name) != getattr(
                ShortcutOptions, name
            ):
                raise ValueError(
                    f"{name} applies to shortcut_variant in {list(variants)} only; got "
                    f"{name}={getattr(self, name)!r} with "
                    f"shortcut_variant={self.shortcut_variant!r}"
                )


class _ResidualUnit(nn.Module):
    """What every unit shares: the shortcut path, the addition switch and stochastic depth.

    Implements the unit contract of :mod:`skiplab.models._base` (``SkipUnit``,
    ``ZeroInitUnit``, ``FusableUnit``); each unit writes its own addition in its ``forward``.
    The original units (ReLU after the sum) add in place when autograd is off, as torchvision's
    ``out += identity``: the branch output is read by nothing else, so inference saves one
    activation-sized allocation per unit (``skiplab bench --modes infer`` measures it against
    torchvision). With autograd the sum is a new tensor, so that hooks that kept the branch
    output (residual responses, gradient flow) see it unchanged.
    """

    expansion = 1

    def _setup_skip(
        self,
        downsample: nn.Module | None,
        residual: bool,
        drop_path: float,
        options: ShortcutOptions | None = None,
        *,
        in_ch: int = 0,
        out_ch: int = 0,
        stride: int = 1,
        branch_scale: float | None = None,
    ) -> None:
        """Set the shortcut up; ``in_ch``, ``out_ch`` and ``stride`` size a variant's gate;
        ``branch_scale``: start value of a learned scalar on the branch (None: no scalar)."""
        if not residual and downsample is not None:
            raise ValueError("a block without residual addition cannot have a downsample shortcut")
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        options = options or ShortcutOptions()
        if not isinstance(options, ShortcutOptions):
            raise ValueError(
                f"shortcut_options must be a ShortcutOptions; got {type(options).__name__}"
            )
        self.shortcut_variant = variant = options.shortcut_variant
        name = type(self).__name__
        if branch_scale is None:
            self.register_parameter("branch_gain", None)  # nothing added to the state_dict
        else:
            check_real("branch_scale", branch_scale)
            if not math.isfinite(branch_scale):
                raise ValueError(f"branch_scale must be a finite number; got {branch_scale!r}")
            if not residual or variant != "identity":
                raise ValueError(
                    f"{name}: branch_scale applies to residual units with the identity "
                    f"shortcut_variant; got residual={residual}, shortcut_variant={variant!r}"
                )
            # α of h(x) + α·F(x), learned (SkipInit, De & Smith 2020; ReZero starts it at 0 too)
            self.branch_gain = nn.Parameter(torch.tensor(float(branch_scale)))
        if variant == "identity":
            return  # nothing added: the state_dict and forward of He et al. 2015 / torchvision
        if not residual:
            raise ValueError(
                f"{name}: shortcut_variant={variant!r} needs the residual addition; "
                "a unit with residual=False (plain net) has no shortcut to vary"
            )
        if variant == "conv" and not any(True for _ in (downsample or nn.Identity()).parameters()):
            raise ValueError(
                f"{name}: shortcut_variant='conv' needs a 1x1 convolution shortcut on the unit; "
                f"got downsample={type(downsample).__name__ if downsample else None} "
                "(pass make_shortcut('C', ...))"
            )
        if variant == "constant":
            self.shortcut_scale = options.shortcut_scale  # λ
            self.branch_scale = 1.0 - options.shortcut_scale if options.scale_branch else 1.0
        elif variant in GATED_VARIANTS:
            # g(x) = sigmoid(W_g x + b_g): one gate value per output channel and position, from
            # the unit's input, at the unit's stride (He et al. 2016: a 1x1 convolution).
            self.shortcut_gate = _he_init(nn.Conv2d(in_ch, out_ch, 1, stride, bias=True))
            nn.init.constant_(self.shortcut_gate.bias, options.gate_bias)
        elif variant == "dropout":
            self.shortcut_dropout = nn.Dropout(options.shortcut_dropout)

    def gained(self, f: torch.Tensor) -> torch.Tensor:
        """The branch output F(x) times the learned ``branch_gain`` α, if the unit has one."""
        return f if self.branch_gain is None else self.branch_gain * f

    def _normalised(self, pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        """The (conv, norm) pairs whose norm is a BatchNorm (none in a normalisation-free
        unit, whose norms are ``nn.Identity``)."""
        return tuple(p for p in pairs if isinstance(getattr(self, p[1]), nn.BatchNorm2d))

    def gate_value(self, x: torch.Tensor) -> torch.Tensor:
        """g(x) = sigmoid(W_g x + b_g) of the gated variants, from the unit's input x."""
        return torch.sigmoid(self.shortcut_gate(x))

    def shortcut_term(
        self, h: torch.Tensor, x: torch.Tensor, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The plain shortcut ``h`` (identity, padding or projection of x) as the variant
        weighs it; ``g``: the gate when the forward has computed it already."""
        if self.shortcut_variant == "constant":
            return self.shortcut_scale * h  # λ·h(x)
        if self.shortcut_variant in GATED_VARIANTS:
            return (1.0 - (self.gate_value(x) if g is None else g)) * h  # (1 - g(x))·h(x)
        if self.shortcut_variant == "dropout":
            return self.shortcut_dropout(h)  # dropout(h(x))
        return h  # identity; conv (h is the 1x1 convolution)

    def skip(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        """The shortcut path alone: what the unit computes when its residual branch is deleted
        (Veit et al. 2016 lesion). With a shortcut variant, the whole shortcut term:
        ``λ·h(x)`` (constant), ``(1 - g(x))·h(x)`` (both gatings; the gate is not part of the
        deleted branch), ``dropout(h(x))``, ``W_s x`` (conv)."""
        h = x if self.downsample is None else self.downsample(x)
        return h if self.shortcut_variant == "identity" else self.shortcut_term(h, x, g)

    def merge(self, f: torch.Tensor, x: torch.Tensor, *skip_args: torch.Tensor) -> torch.Tensor:
        """Branch term + shortcut term of a shortcut variant (He et al. 2016, Fig. 2), before
        any activation after the addition; ``f`` is F(x), ``skip_args`` what ``skip`` also takes
        (a pre-activation unit's ``pre``). Stochastic depth drops the branch term."""
        if self.shortcut_variant == "exclusive_gating":  # (1 - g(x))·h(x) + g(x)·F(x)
            g = self.gate_value(x)
            return self.drop_path(g * f) + self.skip(x, *skip_args, g=g)
        if self.shortcut_variant == "constant":  # λ·h(x) + (1 - λ)·F(x), or λ·h(x) + F(x)
            return self.drop_path(self.branch_scale * f) + self.skip(x, *skip_args)
        # shortcut_gating (1 - g(x))·h(x) + F(x); dropout(h(x)) + F(x); conv W_s x + F(x)
        return self.drop_path(f) + self.skip(x, *skip_args)


class BasicBlock(_ResidualUnit):
    """Two 3x3 convolutions; ReLU after the addition (paper Fig. 2, Table 1 18/34 layers)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: type[nn.Module] | None = None,
        *,
        residual: bool = True,
        drop_path: float = 0.0,
        shortcut_options: ShortcutOptions | None = None,
        branch_scale: float | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self._setup_skip(
            downsample,
            residual,
            drop_path,
            shortcut_options,
            in_ch=inplanes,
            out_ch=planes,
            stride=stride,
            branch_scale=branch_scale,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))  # (N, planes, H/stride, W/stride)
        out = self.gained(self.bn2(self.conv2(out)))  # F(x), or α·F(x) with a branch_gain
        if self.shortcut_variant != "identity":  # He et al. 2016, Fig. 2 (see merge)
            out = self.merge(out, x)  # e.g. (1 - g(x))·x + g(x)·F(x)
        elif self.residual and torch.is_grad_enabled():
            out = self.drop_path(out) + self.skip(x)  # the skip connection: F(x) + x
        elif self.residual:
            out = self.drop_path(out).add_(self.skip(x))  # the same sum in place, inference only
        return self.relu(out)

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma: the residual branch starts at 0 (Goyal et al. 2017)."""
        nn.init.zeros_(self.bn2.weight)

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """(conv, bn) pairs where the BN reads only the conv's output (see skiplab.fuse)."""
        return self._normalised((("conv1", "bn1"), ("conv2", "bn2")))


class Bottleneck(_ResidualUnit):
    """1x1 reduce, 3x3, 1x1 expand (x4); ReLU after the addition (paper Fig. 5, Table 1).

    The stride of a downsampling unit sits on the 3x3 convolution by default (torchvision,
    "ResNet v1.5") and on the first 1x1 with ``stride_in_1x1=True`` (the paper's Caffe models).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm_layer: type[nn.Module] | None = None,
        *,
        residual: bool = True,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
        shortcut_options: ShortcutOptions | None = None,
        branch_scale: float | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, s3, groups)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._setup_skip(
            downsample,
            residual,
            drop_path,
            shortcut_options,
            in_ch=inplanes,
            out_ch=planes * self.expansion,
            stride=stride,
            branch_scale=branch_scale,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.gained(self.bn3(self.conv3(out)))  # F(x): (N, planes * 4, H/s, W/s)
        if self.shortcut_variant != "identity":  # He et al. 2016, Fig. 2 (see merge)
            out = self.merge(out, x)  # e.g. (1 - g(x))·x + g(x)·F(x)
        elif self.residual and torch.is_grad_enabled():
            out = self.drop_path(out) + self.skip(x)  # the skip connection: F(x) + x
        elif self.residual:
            out = self.drop_path(out).add_(self.skip(x))  # the same sum in place, inference only
        return self.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        return self._normalised((("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")))


class _PreActUnit(_ResidualUnit):
    """Pre-activation skip: a projection sees the pre-activated input, identity/pad the raw one
    (He et al. 2016 code, ``preresnet.lua``)."""

    def _setup_skip(self, downsample, residual, drop_path, options=None, **sizes) -> None:
        super()._setup_skip(downsample, residual, drop_path, options, **sizes)
        self.project_preact = downsample is not None and any(True for _ in downsample.parameters())

    def skip(
        self, x: torch.Tensor, pre: torch.Tensor | None = None, g: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The shortcut path alone, from the unit's raw input ``x``: a projection applies to the
        pre-activated input relu(bn1(x)) (pass ``pre`` when it is already computed, so that
        BatchNorm runs once per step), identity and option A padding to ``x`` itself. A shortcut
        variant weighs it as :meth:`_ResidualUnit.skip` says (a gate reads the raw ``x``)."""
        if not self.project_preact:
            return super().skip(x, g)
        h = self.downsample(self.relu(self.bn1(x)) if pre is None else pre)
        return h if self.shortcut_variant == "identity" else self.shortcut_term(h, x, g)


class PreActBasic(_PreActUnit):
    """BN-ReLU-3x3, BN-ReLU-3x3, then the addition and nothing after it (2016 paper Fig. 1b)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: type[nn.Module] | None = None,
        *,
        residual: bool = True,
        drop_path: float = 0.0,
        shortcut_options: ShortcutOptions | None = None,
        branch_scale: float | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.bn1 = norm_layer(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU()  # not in-place: the pre-activation may feed the shortcut
        self._setup_skip(
            downsample,
            residual,
            drop_path,
            shortcut_options,
            in_ch=inplanes,
            out_ch=planes,
            stride=stride,
            branch_scale=branch_scale,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))  # the pre-activation; a projection shortcut reads it too
        out = self.conv1(pre)
        out = self.gained(self.conv2(self.relu(self.bn2(out))))  # F(x): (N, planes, H/s, W/s)
        if self.shortcut_variant != "identity":  # He et al. 2016, Fig. 2 (see merge)
            out = self.merge(out, x, pre)  # e.g. (1 - g(x))·x + g(x)·F(x)
        elif self.residual:
            out = self.drop_path(out) + self.skip(x, pre)  # the skip connection: F(x) + x
        return out  # nothing after the addition: a clean identity path (2016 paper, eq. 4)

    def zero_init_last(self) -> None:
        """Zero the last convolution: with no BN after it, this makes the branch output 0."""
        nn.init.zeros_(self.conv2.weight)

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """Only bn2 follows a conv; bn1 reads the unit's input (also the shortcut's)."""
        return self._normalised((("conv1", "bn2"),))


class PreActBottleneck(_PreActUnit):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1(x4), then the addition (2016 paper, Table 2/3)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm_layer: type[nn.Module] | None = None,
        *,
        residual: bool = True,
        drop_path: float = 0.0,
        stride_in_1x1: bool = False,
        shortcut_options: ShortcutOptions | None = None,
        branch_scale: float | None = None,
    ) -> None:
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.bn1 = norm_layer(inplanes)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn2 = norm_layer(width)
        self.conv2 = conv3x3(width, width, s3, groups)
        self.bn3 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.relu = nn.ReLU()
        self._setup_skip(
            downsample,
            residual,
            drop_path,
            shortcut_options,
            in_ch=inplanes,
            out_ch=planes * self.expansion,
            stride=stride,
            branch_scale=branch_scale,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.gained(self.conv3(self.relu(self.bn3(out))))  # F(x): (N, planes*4, H/s, W/s)
        if self.shortcut_variant != "identity":  # He et al. 2016, Fig. 2 (see merge)
            out = self.merge(out, x, pre)  # e.g. (1 - g(x))·x + g(x)·F(x)
        elif self.residual:
            out = self.drop_path(out) + self.skip(x, pre)  # the skip connection: F(x) + x
        return out

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        return self._normalised((("conv1", "bn2"), ("conv2", "bn3")))


BLOCKS: dict[tuple[str, bool], type[_ResidualUnit]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasic,
    ("bottleneck", True): PreActBottleneck,
}
