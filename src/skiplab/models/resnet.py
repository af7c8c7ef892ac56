"""The ResNet family: original, plain control and pre-activation; ImageNet and CIFAR.

One network class, :class:`ResNet`, built from a :class:`ResNetConfig`; every registered
variant is a row of data below. The state_dict names follow torchvision (``conv1, bn1,
layer1..4, downsample.0/1, fc``) so that torchvision weights load strictly.

Papers:
    He et al. 2015, arXiv:1512.03385: Table 1 (ImageNet 18..152), section 4.2 (CIFAR 6n+2).
    He et al. 2016, arXiv:1603.05027: pre-activation units; CIFAR 110/164/1001 (Table 2/3),
    ImageNet 200 (Table 5).
    Xie et al. 2017 (ResNeXt), Zagoruyko & Komodakis 2016 (Wide ResNet) via torchvision's rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from skiplab.config import REQUIRED, Config, check_bool, check_int, check_real, choice
from skiplab.models._base import (
    FeatureInfo,
    SkipNet,
    check_positive_int,
    checkpointed,
)
from skiplab.models.resnet_blocks import (
    BLOCKS,
    SHORTCUT_VARIANTS,
    SHORTCUTS,
    ShortcutOptions,
    conv3x3,
    make_shortcut,
)
from skiplab.models.variants import Variant, register_variants

STEMS = ("imagenet", "cifar")
NORMS = ("bn", "none")


@dataclass(frozen=True)
class ResNetConfig(Config):
    """Everything that distinguishes one ResNet from another.

    Attributes:
        block: "basic" (3x3, 3x3) or "bottleneck" (1x1, 3x3, 1x1, expansion 4).
        layers: Units per stage, e.g. (3, 4, 6, 3) for ResNet-50, (n, n, n) for CIFAR.
        widths: ``planes`` per stage (block output = planes * expansion).
        stem: "imagenet" (7x7/2 conv + 3x3/2 max pool) or "cifar" (3x3/1 conv).
        stem_width: Channels after the stem convolution.
        preact: Pre-activation units (He et al. 2016) instead of the original ones.
        shortcut: "A", "B", "C" or "none" (plain control network).
        num_classes: Classifier outputs (0: no classifier, forward returns pooled features).
        in_chans: Input channels.
        groups, width_per_group: ResNeXt cardinality and width (bottleneck only).
        stride_in_1x1: Put a downsampling bottleneck's stride on the first 1x1 (Caffe models).
        zero_init_residual: Start every residual branch at zero (last BN gamma or last conv).
        drop_path_rate: Stochastic depth; rate rises linearly from 0 to this over the units.
        shortcut_variant: How every unit weighs its shortcut h(x) (He et al. 2016, Fig. 2):
            "identity" (default, ``h(x) + F(x)``), "constant", "exclusive_gating",
            "shortcut_gating", "conv" (a 1x1 convolution shortcut on every unit, i.e. option C
            whatever ``shortcut`` says) or "dropout"; see
            :class:`~skiplab.models.resnet_blocks.ShortcutOptions`. Where shapes change, h(x)
            is the ``shortcut`` option's padding or projection. Needs a shortcut
            (not ``shortcut="none"``).
        shortcut_scale: λ of "constant" (0.5).
        scale_branch: "constant": scale the branch by 1 - λ (True) or not (False).
        gate_bias: Initial gate bias b_g of the gated variants (-6).
        shortcut_dropout: Dropout probability on the shortcut of "dropout" (0.5).
        norm: "bn" (BatchNorm, the default) or "none": every BatchNorm replaced by
            ``nn.Identity`` (stem, units, projection shortcuts, the final norm of a
            pre-activation net), for normalisation-free nets (De & Smith 2020; Zhang et al. 2019).
        branch_scale: None (default), or the start value of a learned scalar α on every
            residual branch, ``h(x) + α·F(x)``; 0 starts every unit at its shortcut (SkipInit,
            De & Smith 2020; ReZero, Bachlechner et al. 2020). Identity ``shortcut_variant``
            and a shortcut (not ``shortcut="none"``) only.
    """

    block: str = choice(REQUIRED, ("basic", "bottleneck"))
    layers: tuple[int, ...]
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: str = choice("imagenet", STEMS)
    stem_width: int = 64
    preact: bool = False
    shortcut: str = choice("B", SHORTCUTS)
    num_classes: int = 1000
    in_chans: int = 3
    groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = False
    zero_init_residual: bool = False
    drop_path_rate: float = 0.0
    shortcut_variant: str = choice("identity", SHORTCUT_VARIANTS)
    shortcut_scale: float = ShortcutOptions.shortcut_scale
    scale_branch: bool = ShortcutOptions.scale_branch
    gate_bias: float = ShortcutOptions.gate_bias
    shortcut_dropout: float = ShortcutOptions.shortcut_dropout
    norm: str = choice("bn", NORMS)
    branch_scale: float | None = None

    def __post_init__(self) -> None:
        self.check_choices()
        if self.branch_scale is not None:
            check_real("branch_scale", self.branch_scale)
            if not math.isfinite(self.branch_scale):
                raise ValueError(f"branch_scale must be a finite number; got {self.branch_scale!r}")
            if self.shortcut == "none" or self.shortcut_variant != "identity":
                raise ValueError(
                    "branch_scale scales the residual branch of units with an identity shortcut; "
                    f"got shortcut={self.shortcut!r}, shortcut_variant={self.shortcut_variant!r}"
                )
        if self.norm == "none" and self.zero_init_residual and not self.preact:
            raise ValueError(
                "zero_init_residual zeroes the last BatchNorm of original units, and norm='none' "
                "has none; use branch_scale=0 to start every branch at zero"
            )
        _ = self.shortcut_options  # ShortcutOptions checks the variant's parameters
        if self.shortcut == "none" and self.shortcut_variant != "identity":
            raise ValueError(
                f"shortcut_variant={self.shortcut_variant!r} varies the shortcut, and "
                "shortcut='none' (plain net) has none; use shortcut='A', 'B' or 'C'"
            )
        if len(self.layers) != len(self.widths) or not self.layers:
            raise ValueError(
                f"layers and widths need one entry per stage; got {self.layers} and {self.widths}"
            )
        for n in self.layers:
            check_positive_int("units per stage", n)
        check_positive_int("in_chans", self.in_chans)
        check_int("num_classes", self.num_classes, 0)
        check_positive_int("groups", self.groups)
        check_positive_int("width_per_group", self.width_per_group)
        if self.block == "basic" and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError("groups and width_per_group apply to bottleneck blocks only")
        if self.block == "basic" and self.stride_in_1x1:
            raise ValueError("stride_in_1x1 applies to bottleneck blocks only")
        check_real("drop_path_rate", self.drop_path_rate, 0, 1, high_open=True)
        for flag in ("preact", "stride_in_1x1", "zero_init_residual"):
            check_bool(flag, getattr(self, flag))

    @property
    def shortcut_options(self) -> ShortcutOptions:
        """The shortcut variant and its parameters, as every unit takes them."""
        return ShortcutOptions(
            self.shortcut_variant,
            self.shortcut_scale,
            self.scale_branch,
            self.gate_bias,
            self.shortcut_dropout,
        )

    @property
    def depth(self) -> int:
        """Weighted layers as the papers count them: convs in the units + stem conv + fc."""
        per_unit = 2 if self.block == "basic" else 3
        return per_unit * sum(self.layers) + 2


class ResNet(SkipNet):
    """Residual network (or its plain control, with ``shortcut="none"``).

    Shapes for an ImageNet net at 224x224: stem -> (N, 64, 56, 56); layer1..4 at strides
    4, 8, 16, 32; pooled features (N, 512 * expansion); logits (N, num_classes).
    For a CIFAR net at 32x32: stem -> (N, 16, 32, 32); layer1..3 at strides 1, 2, 4.
    """

    def __init__(self, cfg: ResNetConfig, model_name: str = "resnet") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        block_cls = BLOCKS[(cfg.block, cfg.preact)]
        norm = nn.BatchNorm2d if cfg.norm == "bn" else nn.Identity  # Identity(c) ignores c

        # Stem. A pre-activation CIFAR net has no BN after conv1: the first unit's BN-ReLU does it.
        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(cfg.in_chans, cfg.stem_width, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.bn1 = norm(cfg.stem_width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            stem_reduction = 4
            self.feature_info = [FeatureInfo("relu", cfg.stem_width, 2)]
        else:
            self.conv1 = conv3x3(cfg.in_chans, cfg.stem_width)
            if not cfg.preact:
                self.bn1 = norm(cfg.stem_width)
                self.relu = nn.ReLU(inplace=True)
            stem_reduction = 1
            self.feature_info = [
                FeatureInfo("relu" if not cfg.preact else "conv1", cfg.stem_width, 1)
            ]

        # ResNeXt's cardinality and width and the Caffe stride placement: bottlenecks only.
        bottleneck_args = (
            {
                "groups": cfg.groups,
                "base_width": cfg.width_per_group,
                "stride_in_1x1": cfg.stride_in_1x1,
            }
            if cfg.block == "bottleneck"
            else {}
        )
        # Stages. Stochastic depth rises linearly over all units (Huang et al. 2016).
        # He et al. 2016 shortcut variants: "conv" is a projection on every unit (option C).
        shortcut_kind = "C" if cfg.shortcut_variant == "conv" else cfg.shortcut
        total_units = sum(cfg.layers)
        unit_index = 0
        inplanes = cfg.stem_width
        reduction = stem_reduction
        self.stage_names: list[str] = []
        for i, (n_units, planes) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            units = []
            for j in range(n_units):
                s = stride if j == 0 else 1
                out_ch = planes * block_cls.expansion
                rate = cfg.drop_path_rate * unit_index / max(total_units - 1, 1)
                units.append(
                    block_cls(
                        inplanes,
                        planes,
                        s,
                        make_shortcut(
                            shortcut_kind,
                            inplanes,
                            out_ch,
                            s,
                            None if cfg.preact or cfg.norm == "none" else norm,
                        ),
                        norm_layer=norm,
                        residual=cfg.shortcut != "none",
                        drop_path=rate,
                        **bottleneck_args,
                        shortcut_options=cfg.shortcut_options,
                        branch_scale=cfg.branch_scale,
                    )
                )
                inplanes = out_ch
                unit_index += 1
            name = f"layer{i + 1}"
            self.add_module(name, ResNetStage(*units))
            self.stage_names.append(name)
            self.feature_info.append(FeatureInfo(name, inplanes, reduction))

        self.num_features = inplanes
        if cfg.preact:
            # Pre-activation nets end with BN-ReLU before pooling (2016 paper, Appendix).
            self.norm = norm(inplanes)
            self.final_act = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.min_input_size = reduction  # the total stride: smaller inputs vanish
        if cfg.zero_init_residual:
            for _, unit in self.iter_blocks():
                unit.zero_init_last()

    # -- structure ---------------------------------------------------------------------------
    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        for stage in self.stage_names:
            for j, unit in enumerate(getattr(self, stage)):
                yield f"{stage}.{j}", unit

    def get_classifier(self) -> nn.Module:
        return self.fc

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """The stem's (conv1, bn1), where there is a bn1 (see skiplab.fuse); units name theirs."""
        return (("conv1", "bn1"),) if isinstance(getattr(self, "bn1", None), nn.BatchNorm2d) else ()

    # -- forward -----------------------------------------------------------------------------
    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if hasattr(self, "bn1"):
            x = self.relu(self.bn1(x))
        return x

    def set_grad_checkpointing(self, enable: bool = True, every: int = 1) -> None:
        """Recompute units in backward instead of storing their activations.

        Args:
            enable: Switch checkpointing on or off.
            every: Units per checkpointed segment. 1 stores every unit's input; k stores one
                input per k units and, in backward, recomputes k units at a time: the stored
                inputs fall from n to n/k per stage while one segment's activations are held
                (Chen et al. 2016, arXiv:1604.06174). For preact_resnet1001 (111 units per
                stage) at batch 128, segments of 5 to 10 units gave the lowest peak, far
                below every=1 (measured: docs/benchmarks.md, section 'Training memory of
                the deepest ResNet').
        """
        check_positive_int("every", every)
        super().set_grad_checkpointing(enable)
        for name in self.stage_names:
            getattr(self, name).checkpoint_every = every if enable else 0

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stem and of every stage, in ``feature_info`` order.

        Stage outputs of a pre-activation net are taken before the final BN-ReLU.
        """
        outs: list[torch.Tensor] = []
        self._trunk(x, outs)
        return outs

    def _trunk(self, x: torch.Tensor, outs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Stem and stages; appends the stem's and every stage's output to ``outs`` when given.

        forward_features passes no list: holding every stage's output until the end kept
        activation-sized buffers from being reused and made inference measurably slower
        (measured: docs/benchmarks.md, section 'CPU with native bf16: Intel Xeon (AVX-512 BF16)').
        """
        self.check_input(x)
        x = self._stem(x)
        if outs is not None:
            outs.append(x)
        if self.cfg.stem == "imagenet":
            x = self.maxpool(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)  # the stage module itself: hooks on it fire
            if outs is not None:
                outs.append(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) image -> last feature map, (N, num_features, H/32, W/32) on ImageNet."""
        x = self._trunk(x)
        if self.cfg.preact:
            x = self.final_act(self.norm(x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


class ResNetStage(nn.Sequential):
    """The residual units of one stage (``layer1`` ... ``layer4``), applied in order.

    An ``nn.Sequential`` with the same state_dict keys as torchvision's stages
    (``layer1.0.conv1.weight``); it only adds activation checkpointing in segments of
    ``checkpoint_every`` units (0: off), which :meth:`ResNet.set_grad_checkpointing` sets, so that
    the stage is one module call with checkpointing on or off and forward hooks on it fire.
    """

    checkpoint_every: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        every = self.checkpoint_every
        if not (every and self.training and torch.is_grad_enabled()):
            return super().forward(x)
        units = list(self)
        for start in range(0, len(units), every):
            # A segment is an unregistered Sequential of the stage's own units (no copy).
            segment = units[start] if every == 1 else nn.Sequential(*units[start : start + every])
            x = checkpointed(segment, x)
        return x


# -- the registered variants, as rows of data -----------------------------------------------------
IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)


def _cifar(n: int, block: str = "basic", **kw) -> ResNetConfig:
    return ResNetConfig(
        block=block,
        layers=(n, n, n),
        widths=(16, 32, 64),
        stem="cifar",
        stem_width=16,
        num_classes=10,
        **kw,
    )


# name: Variant(family, default input, config); depth from the config
# fmt: off
RESNET_VARIANTS: dict[str, Variant] = {
    # He et al. 2015, Table 1; option B (projection where shapes change) as in torchvision.
    "resnet18": Variant("resnet", IMAGENET, ResNetConfig("basic", (2, 2, 2, 2))),
    "resnet34": Variant("resnet", IMAGENET, ResNetConfig("basic", (3, 4, 6, 3))),
    "resnet50": Variant("resnet", IMAGENET, ResNetConfig("bottleneck", (3, 4, 6, 3))),
    "resnet101": Variant("resnet", IMAGENET, ResNetConfig("bottleneck", (3, 4, 23, 3))),
    "resnet152": Variant("resnet", IMAGENET, ResNetConfig("bottleneck", (3, 8, 36, 3))),
    "resnext50_32x4d": Variant("resnext", IMAGENET,
                               ResNetConfig("bottleneck", (3, 4, 6, 3),
                                            groups=32, width_per_group=4)),
    "resnext101_32x8d": Variant("resnext", IMAGENET,
                                ResNetConfig("bottleneck", (3, 4, 23, 3),
                                             groups=32, width_per_group=8)),
    "wide_resnet50_2": Variant("wide_resnet", IMAGENET,
                               ResNetConfig("bottleneck", (3, 4, 6, 3), width_per_group=128)),
    "wide_resnet101_2": Variant("wide_resnet", IMAGENET,
                                ResNetConfig("bottleneck", (3, 4, 23, 3), width_per_group=128)),
    # Plain controls of He et al. 2015 (Table 2): the same layers, no additions.
    "plain18": Variant("plain", IMAGENET, ResNetConfig("basic", (2, 2, 2, 2), shortcut="none")),
    "plain34": Variant("plain", IMAGENET, ResNetConfig("basic", (3, 4, 6, 3), shortcut="none")),
    # Pre-activation ImageNet nets, He et al. 2016 (Table 5 has 152 and 200).
    "preact_resnet18": Variant("preact_resnet", IMAGENET,
                               ResNetConfig("basic", (2, 2, 2, 2), preact=True)),
    "preact_resnet34": Variant("preact_resnet", IMAGENET,
                               ResNetConfig("basic", (3, 4, 6, 3), preact=True)),
    "preact_resnet50": Variant("preact_resnet", IMAGENET,
                               ResNetConfig("bottleneck", (3, 4, 6, 3), preact=True)),
    "preact_resnet101": Variant("preact_resnet", IMAGENET,
                                ResNetConfig("bottleneck", (3, 4, 23, 3), preact=True)),
    "preact_resnet152": Variant("preact_resnet", IMAGENET,
                                ResNetConfig("bottleneck", (3, 8, 36, 3), preact=True)),
    "preact_resnet200": Variant("preact_resnet", IMAGENET,
                                ResNetConfig("bottleneck", (3, 24, 36, 3), preact=True)),
    # CIFAR, He et al. 2015 section 4.2: 6n+2 layers, option A shortcuts.
    **{f"resnet{6 * n + 2}": Variant("cifar_resnet", CIFAR, _cifar(n, shortcut="A"))
       for n in (3, 5, 7, 9, 18, 200)},
    **{f"plain{6 * n + 2}": Variant("cifar_plain", CIFAR, _cifar(n, shortcut="none"))
       for n in (3, 5, 7, 9, 18)},
    # CIFAR pre-activation, He et al. 2016: 110 (basic), 164 and 1001 (bottleneck, 9n+2).
    "preact_resnet110": Variant("cifar_preact_resnet", CIFAR,
                                _cifar(18, preact=True, shortcut="B")),
    "preact_resnet164": Variant("cifar_preact_resnet", CIFAR,
                                _cifar(18, "bottleneck", preact=True, shortcut="B")),
    "preact_resnet1001": Variant("cifar_preact_resnet", CIFAR,
                                 _cifar(111, "bottleneck", preact=True, shortcut="B")),
}
# fmt: on


register_variants(RESNET_VARIANTS, ResNet, depth=lambda cfg: cfg.depth)
