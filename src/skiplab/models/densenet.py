"""The DenseNet family: torchvision's ImageNet nets and the paper's CIFAR nets.

One network class, :class:`DenseNet`, built from a :class:`DenseNetConfig`; every registered
variant is a row of data below. The state_dict names follow torchvision (``features.conv0``,
``features.norm0``, ``features.denseblockN.denselayerM.norm1/conv1/norm2/conv2``,
``features.transitionN.norm/conv``, ``features.norm5``, ``classifier``) so that torchvision
weights load strictly. The final BatchNorm is ``features.norm{B+1}`` for B dense blocks
(``norm5`` on ImageNet, ``norm4`` for the three-block CIFAR nets).

Papers:
    Huang, Liu, van der Maaten & Weinberger 2017, "Densely Connected Convolutional Networks"
    (arXiv:1608.06993): Section 3 (dense connectivity, composite function BN-ReLU-Conv,
    transition layers, growth rate k, bottleneck "B", compression "C"), Table 1 (ImageNet
    DenseNet-121/169/201, torchvision's 161 with k=48), Section 4.2 and Table 2 (CIFAR:
    DenseNet L=40 k=12, DenseNet-BC L=100 k=12, L=250 k=24, L=190 k=40).
    Pleiss et al. 2017, "Memory-Efficient Implementation of DenseNets" (arXiv:1707.06990):
    recompute the concatenation and the first BN-ReLU-Conv in backward.

Ablation ``dense=False`` (no dense connectivity; every width and parameter is kept):
    A layer l of a block normally sees ``cat(x_0, ..., x_{l-1})``. Without dense connections
    it sees the same-width tensor ``cat(0, ..., 0, x_{l-1})``: the maps of all earlier layers
    are replaced by zeros and only its predecessor's maps stay (for the first layer of a block
    the predecessor is the block input, so it is unchanged). The block output handed to the
    transition (or to the final BN) is likewise ``cat(0, ..., 0, x_L)``. The result is a plain
    chain of layers; the zero channels reach BN-ReLU-Conv as constants, so their weights act
    only as a learned bias. The state_dict is identical to the dense net's.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from skiplab.config import Config, check_bool, check_int, check_real, choice
from skiplab.models._base import (
    FeatureInfo,
    SkipNet,
    check_positive_int,
    frozen_bn_stats,
    maybe_checkpointed,
)
from skiplab.models.variants import Variant, register_variants

STEMS = ("imagenet", "cifar")


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
    # torchvision's DenseNet init: He normal, fan_in (He et al. 2015).
    nn.init.kaiming_normal_(conv.weight)
    return conv


def _only_last(features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The ``dense=False`` control: every map but the last replaced by zeros of its shape (see
    the module docstring), so that widths and parameters stay those of the dense net."""
    return (*(torch.zeros_like(f) for f in features[:-1]), features[-1])


class DenseLayer(nn.Module):
    """H_l of the paper: BN-ReLU-Conv1x1(bn_size*k) - BN-ReLU-Conv3x3(k) (DenseNet-B,
    Section 3 "Bottleneck layers"), or BN-ReLU-Conv3x3(k) without the bottleneck.

    Input: the sequence ``(x_0, ..., x_{l-1})`` of all earlier maps of the block, each
    (N, C_i, H, W), not modified afterwards (recomputation reads it again); output: the k
    new maps (N, k, H, W). Dropout (``drop_rate``) follows the last convolution, as in
    torchvision.

    ``memory_efficient``: the concatenation and the first BN-ReLU-Conv (``norm1, conv1``) are
    recomputed in backward instead of stored (Pleiss et al. 2017), with BatchNorm running
    statistics frozen during the recomputation so that they are updated exactly once.
    """

    def __init__(
        self,
        in_ch: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float = 0.0,
        *,
        memory_efficient: bool = False,
        dense: bool = True,
    ) -> None:
        super().__init__()
        first_out = growth_rate if bn_size is None else bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        if bn_size is None:
            self.conv1 = _conv(in_ch, growth_rate, 3, padding=1)
        else:
            self.conv1 = _conv(in_ch, first_out, 1)
            self.norm2 = nn.BatchNorm2d(first_out)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = _conv(first_out, growth_rate, 3, padding=1)
        self.bottleneck = bn_size is not None
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient
        self.dense = dense

    def _first(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        # cat -> (N, sum C_i, H, W) -> BN-ReLU-Conv -> (N, bn_size*k or k, H, W). The wide
        # concatenation and its BN and ReLU outputs are what memory_efficient avoids storing.
        x = torch.cat(features if self.dense else _only_last(features), 1)  # (N, sum C_i, H, W)
        return self.conv1(self.relu1(self.norm1(x)))

    def _recompute_contexts(self):
        # Forward runs normally; the recomputation in backward must not update BN statistics.
        return contextlib.nullcontext(), frozen_bn_stats(self)

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """(conv1, norm2) in a bottleneck layer; norm1 reads the concatenation, not a conv."""
        return (("conv1", "norm2"),) if self.bottleneck else ()

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and torch.is_grad_enabled():
            out = checkpoint(
                self._first, features, use_reentrant=False, context_fn=self._recompute_contexts
            )
        else:
            out = self._first(features)
        if self.bottleneck:
            out = self.conv2(self.relu2(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleDict):
    """``denselayer1..n``; layer j sees ``in_ch + (j - 1) * k`` channels and adds k more.

    forward: (N, in_ch, H, W) -> (N, in_ch + n * k, H, W), every layer's maps concatenated to
    the block's input (the dense connections, paper eq. 2), as torchvision's ``_DenseBlock``.
    ``grad_checkpointing`` (set by :meth:`DenseNet.set_grad_checkpointing`) recomputes each
    layer in backward; the layers are called as modules either way, so hooks see each one.
    """

    def __init__(
        self,
        n_layers: int,
        in_ch: int,
        growth_rate: int,
        bn_size: int | None,
        drop_rate: float,
        *,
        memory_efficient: bool,
        dense: bool,
    ) -> None:
        super().__init__()
        for j in range(n_layers):
            self[f"denselayer{j + 1}"] = DenseLayer(
                in_ch + j * growth_rate,
                growth_rate,
                bn_size,
                drop_rate,
                memory_efficient=memory_efficient,
                dense=dense,
            )
        self.dense = dense
        self.out_ch = in_ch + n_layers * growth_rate
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: tuple[torch.Tensor, ...] = (x,)  # x_0, then x_1 .. x_n: (N, k, H, W) each
        for layer in self.values():
            # A new tuple per layer, never a list grown in place: checkpointing recomputes a
            # layer in backward from the very maps it saw in forward.
            enabled = self.grad_checkpointing and self.training
            features = (*features, maybe_checkpointed(layer, features, enabled=enabled))
        # The dense connections: the block's output is [x_0, x_1, ..., x_n] (paper eq. 2).
        return torch.cat(features if self.dense else _only_last(features), 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1-AvgPool2x2 between dense blocks (paper Section 3, "Pooling layers");
    ``out_ch = floor(compression * in_ch)`` ("Compression")."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            OrderedDict(
                norm=nn.BatchNorm2d(in_ch),
                relu=nn.ReLU(inplace=True),
                conv=_conv(in_ch, out_ch, 1),
                pool=nn.AvgPool2d(kernel_size=2, stride=2),
            )
        )


@dataclass(frozen=True)
class DenseNetConfig(Config):
    """Everything that distinguishes one DenseNet from another.

    Attributes:
        growth_rate: k, maps each layer adds.
        block_config: Layers per dense block, e.g. (6, 12, 24, 16) for DenseNet-121.
        num_init_features: Channels after the stem convolution (2k for BC nets, 16 for the
            basic CIFAR net, 64 / 96 on ImageNet).
        bottleneck: BN-ReLU-1x1 to ``bn_size * k`` maps before the 3x3 ("B").
        bn_size: Bottleneck width multiplier (4 in the paper).
        compression: theta, transition output = floor(theta * input) ("C": 0.5; 1 = none).
        stem: "imagenet" (7x7/2 conv, BN-ReLU, 3x3/2 max pool) or "cifar" (one 3x3 conv).
        drop_rate: Dropout after each layer's last convolution (0 in the registered nets).
        num_classes: Classifier outputs (0: no classifier, forward returns pooled features).
        in_chans: Input channels.
        memory_efficient: Recompute concatenation + first BN-ReLU-Conv in backward.
        dense: False removes the dense connections (see the module docstring).
    """

    growth_rate: int
    block_config: tuple[int, ...]
    num_init_features: int
    bottleneck: bool = True
    bn_size: int = 4
    compression: float = 0.5
    stem: str = choice("imagenet", STEMS)
    drop_rate: float = 0.0
    num_classes: int = 1000
    in_chans: int = 3
    memory_efficient: bool = False
    dense: bool = True

    def __post_init__(self) -> None:
        self.check_choices()
        check_positive_int("growth_rate", self.growth_rate)
        if not isinstance(self.block_config, tuple) or not self.block_config:
            raise ValueError(
                f"block_config must be a non-empty tuple of layer counts; got {self.block_config!r}"
            )
        for n in self.block_config:
            check_positive_int("layers per dense block", n)
        check_positive_int("num_init_features", self.num_init_features)
        check_positive_int("bn_size", self.bn_size)
        check_positive_int("in_chans", self.in_chans)
        check_int("num_classes", self.num_classes, 0)
        check_real("compression", self.compression, 0, 1, low_open=True)
        check_real("drop_rate", self.drop_rate, 0, 1, high_open=True)
        for flag in ("bottleneck", "memory_efficient", "dense"):
            check_bool(flag, getattr(self, flag))
        if min(self.transition_widths(), default=1) < 1:
            raise ValueError(
                f"compression {self.compression} leaves a transition with no "
                f"channels (widths {self.transition_widths()})"
            )

    def transition_widths(self) -> list[int]:
        """Output channels of each transition (one fewer than the blocks)."""
        widths, ch = [], self.num_init_features
        for n in self.block_config[:-1]:
            ch = math.floor(self.compression * (ch + n * self.growth_rate))
            widths.append(ch)
        return widths

    @property
    def depth(self) -> int:
        """L as the paper counts it: convs in the layers + stem conv + transitions + fc."""
        per_layer = 2 if self.bottleneck else 1
        return per_layer * sum(self.block_config) + len(self.block_config) + 1


class DenseNet(SkipNet):
    """Densely connected network (or its chain control, with ``dense=False``).

    Shapes for DenseNet-121 at 224x224: stem -> (N, 64, 112, 112); blocks 1..4 at strides
    4, 8, 16, 32 with 256, 512, 1024, 1024 channels; pooled features (N, 1024).
    For DenseNet-BC-100 (k=12) at 32x32: stem -> (N, 24, 32, 32); blocks 1..3 at strides
    1, 2, 4 with 216, 300, 342 channels; pooled features (N, 342).
    """

    def __init__(self, cfg: DenseNetConfig, model_name: str = "densenet") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        n_blocks = len(cfg.block_config)
        ch = cfg.num_init_features

        features: OrderedDict[str, nn.Module] = OrderedDict()
        if cfg.stem == "imagenet":
            features["conv0"] = _conv(cfg.in_chans, ch, 7, stride=2, padding=3)
            features["norm0"] = nn.BatchNorm2d(ch)
            features["relu0"] = nn.ReLU(inplace=True)
            features["pool0"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.feature_info = [FeatureInfo("features.relu0", ch, 2)]
            reduction = 4
        else:
            # CIFAR: one 3x3 conv; the first layer's BN-ReLU normalises its output.
            features["conv0"] = _conv(cfg.in_chans, ch, 3, padding=1)
            self.feature_info = [FeatureInfo("features.conv0", ch, 1)]
            reduction = 1

        bn_size = cfg.bn_size if cfg.bottleneck else None
        transition_widths = cfg.transition_widths()
        for i, n_layers in enumerate(cfg.block_config):
            block = DenseBlock(
                n_layers,
                ch,
                cfg.growth_rate,
                bn_size,
                cfg.drop_rate,
                memory_efficient=cfg.memory_efficient,
                dense=cfg.dense,
            )
            features[f"denseblock{i + 1}"] = block
            ch = block.out_ch
            self.feature_info.append(FeatureInfo(f"features.denseblock{i + 1}", ch, reduction))
            if i < n_blocks - 1:
                features[f"transition{i + 1}"] = Transition(ch, transition_widths[i])
                ch = transition_widths[i]
                reduction *= 2
        # torchvision's numbering: norm5 after four blocks (norm4 after three).
        self.final_norm_name = f"norm{n_blocks + 1}"
        features[self.final_norm_name] = nn.BatchNorm2d(ch)
        self.features = nn.ModuleDict(features)
        self.final_act = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = ch
        self.classifier = nn.Linear(ch, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        if cfg.num_classes > 0:
            nn.init.zeros_(self.classifier.bias)  # torchvision's init
        self.min_input_size = reduction  # the total stride: smaller inputs vanish

    # -- structure ---------------------------------------------------------------------------
    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """Every dense layer: each owns its incoming concatenation (its skip connections)."""
        for i in range(len(self.cfg.block_config)):
            block_name = f"denseblock{i + 1}"
            for layer_name, layer in self.features[block_name].items():
                yield f"features.{block_name}.{layer_name}", layer

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """The ImageNet stem's (conv0, norm0) (see skiplab.fuse); dense layers name theirs."""
        return (("features.conv0", "features.norm0"),) if self.cfg.stem == "imagenet" else ()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every dense layer in backward instead of storing its activations."""
        super().set_grad_checkpointing(enable)
        for i in range(len(self.cfg.block_config)):
            self.features[f"denseblock{i + 1}"].grad_checkpointing = self.grad_checkpointing

    # -- forward -----------------------------------------------------------------------------

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem output and every dense block's output, in ``feature_info`` order."""
        outs: list[torch.Tensor] = []
        self._trunk(x, outs)
        return outs

    def _trunk(self, x: torch.Tensor, outs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Stem, dense blocks and transitions; appends the stem's and every block's output to
        ``outs`` when given (forward_features keeps none of them, as in ResNet._trunk)."""
        self.check_input(x)
        f = self.features
        x = f["conv0"](x)
        if self.cfg.stem == "imagenet":
            x = f["relu0"](f["norm0"](x))
        if outs is not None:
            outs.append(x)
        if self.cfg.stem == "imagenet":
            x = f["pool0"](x)
        n_blocks = len(self.cfg.block_config)
        for i in range(n_blocks):
            x = f[f"denseblock{i + 1}"](x)
            if outs is not None:
                outs.append(x)
            if i < n_blocks - 1:
                x = f[f"transition{i + 1}"](x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) image -> final BN-ReLU map, (N, num_features, H/32, W/32) on ImageNet."""
        x = self._trunk(x)
        return self.final_act(self.features[self.final_norm_name](x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.classifier(x)


# -- the registered variants, as rows of data -----------------------------------------------------
IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)


def _cifar(depth: int, k: int, bc: bool) -> DenseNetConfig:
    # Paper Section 4.2: three blocks of equal size; L = 3n + 4 (basic) or 6n + 4 (BC).
    n = (depth - 4) // (6 if bc else 3)
    return DenseNetConfig(
        growth_rate=k,
        block_config=(n, n, n),
        num_init_features=2 * k if bc else 16,
        bottleneck=bc,
        compression=0.5 if bc else 1.0,
        stem="cifar",
        num_classes=10,
    )


# name: Variant(family, default input, config); depth from the config
DENSENET_VARIANTS: dict[str, Variant] = {
    # Paper Table 1 (DenseNet-BC, k=32) and torchvision's densenet161 (k=48, 96 stem maps).
    "densenet121": Variant("densenet", IMAGENET, DenseNetConfig(32, (6, 12, 24, 16), 64)),
    "densenet161": Variant("densenet", IMAGENET, DenseNetConfig(48, (6, 12, 36, 24), 96)),
    "densenet169": Variant("densenet", IMAGENET, DenseNetConfig(32, (6, 12, 32, 32), 64)),
    "densenet201": Variant("densenet", IMAGENET, DenseNetConfig(32, (6, 12, 48, 32), 64)),
    # Paper Table 2: 1.0M, 0.8M, 15.3M, 25.6M parameters.
    "densenet40_k12": Variant("cifar_densenet", CIFAR, _cifar(40, 12, bc=False)),
    "densenet_bc100_k12": Variant("cifar_densenet", CIFAR, _cifar(100, 12, bc=True)),
    "densenet_bc250_k24": Variant("cifar_densenet", CIFAR, _cifar(250, 24, bc=True)),
    "densenet_bc190_k40": Variant("cifar_densenet", CIFAR, _cifar(190, 40, bc=True)),
}


register_variants(DENSENET_VARIANTS, DenseNet, depth=lambda cfg: cfg.depth)
