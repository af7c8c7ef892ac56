"""Highway networks and their plain and residual controls, fully connected and convolutional.

Srivastava, Greff & Schmidhuber 2015, "Training Very Deep Networks" (NeurIPS,
arXiv:1507.06228), Section 2, Eq. (3): a highway layer computes

    y = T(x) * H(x) + (1 - T(x)) * x,   T(x) = sigmoid(W_T x + b_T),   H(x) = ReLU(W_H x + b_H)

with the transform gate bias b_T started negative (Section 2.2 suggests -1, -3 etc.; -2 here and in
the authors' CIFAR code) so that a fresh layer mostly carries its input. The same layer with
``skip="residual"`` computes ``y = H(x) + x`` (He et al. 2015) and with ``skip="none"``
``y = H(x)`` (a plain layer), so that the three kinds compare at equal depth and width.

Models (family "highway"):

- ``highway_mlp``, ``residual_mlp``, ``plain_mlp``: the fully connected nets of Section 3.1
  (the optimisation sweep over depths 10/20/50/100 at width 50). Image tensors (N, C, H, W)
  are flattened; ``proj`` (Linear + ReLU) maps them to ``width``; ``depth`` stacked skip
  layers follow; ``classifier`` maps to the classes. ``depth`` counts the stacked layers only.
  The paper matched parameters by giving plain nets 71 units per layer; here all three kinds
  share ``width`` (override ``width`` to match parameters instead). All three also share
  their initialisation (He normal weights, zero biases): without normalisation a residual ReLU
  layer then multiplies the mean square of its input by about 3, so ``residual_mlp``'s hidden
  activations grow with depth at initialisation (RMS about 1e2 at depth 10, 1e11 at depth 50,
  overflowing float32 at depth 100), while plain and highway nets stay below 1.
- ``highway_cifar19``: the 19-layer CIFAR-10 net of Section 3.2 / Table 2 (about 2.3M
  parameters), following the authors' published Caffe definition (github.com/flukeskywalker/
  highway-networks, ``examples/highways/cifar10-19layers``): three stages of one plain 3x3 conv
  (32, 80, 128 maps) followed by 4, 5, 5 highway 3x3 conv layers, 2x2 max pooling after stages
  1 and 2, then a 1x1 conv to 100 maps + ReLU, global average pooling and the classifier
  (3 + 14 + 1 + 1 = 19 weighted layers); dropout 0.2 on the input, after each pooling and
  before the classifier.

Feature maps: the MLPs have a single ``feature_info`` entry, the last layer's output as a
(N, width, 1, 1) map with ``reduction`` = input height (one "pixel" for the whole image).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from skiplab.config import Config, check_int, check_real, choice
from skiplab.models._base import FeatureInfo, SkipNet, check_choice, check_positive_int
from skiplab.models.variants import Variant, register_variants

SKIPS = ("highway", "residual", "none")
GATE_MODES = ("learned", "closed", "open")


def _init(layer: nn.Linear | nn.Conv2d) -> nn.Linear | nn.Conv2d:
    # He et al. 2015 normal init (fan_in, ReLU gain) for weights, zero biases.
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


def _affine(width: int, spatial: bool) -> nn.Linear | nn.Conv2d:
    """W x + b: a width-preserving linear map, or a 3x3 "same" convolution on feature maps."""
    return _init(nn.Conv2d(width, width, 3, padding=1) if spatial else nn.Linear(width, width))


class TransformGate(nn.Module):
    """T(x) = sigmoid(W_T x + b_T), one value in (0, 1) per unit (paper Eq. 3).

    ``mode`` lets analysis code force the gate: "learned" (normal), "closed" (T = 0: the layer
    only carries its input) or "open" (T = 1: the layer is plain). ``last_mean`` holds the mean
    of T over the last batch (a detached scalar tensor; None before the first forward).
    """

    def __init__(self, width: int, spatial: bool, bias: float) -> None:
        super().__init__()
        self.proj = _affine(width, spatial)
        nn.init.constant_(self.proj.bias, bias)
        self.mode = "learned"
        self.last_mean: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "learned":
            t = torch.sigmoid(self.proj(x))
        else:
            t = torch.full_like(x, 0.0 if self.mode == "closed" else 1.0)
        self.last_mean = t.detach().mean()
        return t


class HighwayLayer(nn.Module):
    """One width-preserving layer with a highway, residual or no skip connection.

    Args:
        width: Units (features) or channels (maps) in and out.
        spatial: 3x3 convolutions on (N, width, H, W) maps instead of linear maps on (N, width).
        skip: "highway" (gated, paper Eq. 3), "residual" (``H(x) + x``) or "none" (``H(x)``).
        gate_bias: Initial transform gate bias b_T (highway only).
        branch_scale: Residual layers only: None for ``H(x) + x``; a number for ``a * H(x) + x``
            with ``a`` a learned scalar that starts at this value (SkipInit, De & Smith 2020,
            arXiv:2002.10444, with 0: the layer starts as the identity, which lets a residual
            net without normalisation train at any depth).
    """

    def __init__(
        self,
        width: int,
        *,
        spatial: bool = False,
        skip: str = "highway",
        gate_bias: float = -2.0,
        branch_scale: float | None = None,
    ) -> None:
        super().__init__()
        check_choice("skip", skip, SKIPS)
        if branch_scale is not None and skip != "residual":
            raise ValueError(f"branch_scale applies to skip='residual' only; got skip={skip!r}")
        self.skip_kind = skip
        self.h = _affine(width, spatial)
        self.act = nn.ReLU()
        self.gate = TransformGate(width, spatial, gate_bias) if skip == "highway" else None
        self.branch_scale = (
            None if branch_scale is None else nn.Parameter(torch.tensor(float(branch_scale)))
        )

    @property
    def residual(self) -> bool:
        """Whether the layer has a shortcut at all (False for the plain layer)."""
        return self.skip_kind != "none"

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut path alone (the carry, or the identity of a residual layer): what the
        layer computes when its transform is deleted."""
        return x

    def set_gate(self, mode: str) -> None:
        """Force the transform gate "closed" (T = 0), "open" (T = 1) or back to "learned"."""
        if self.gate is None:
            raise ValueError(
                f"only highway layers have a gate; this layer has skip={self.skip_kind!r}"
            )
        check_choice("gate mode", mode, GATE_MODES)
        self.gate.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is None:
            h = self.act(self.h(x))
            if self.skip_kind == "none":
                return h
            return (h if self.branch_scale is None else self.branch_scale * h) + x
        t = self.gate(x)
        if self.gate.mode == "closed":
            return x  # pure carry: exactly the input, H is not even computed
        h = self.act(self.h(x))
        if self.gate.mode == "open":
            return h
        return t * h + (1.0 - t) * x


def _check_common(cfg: HighwayMLPConfig | HighwayCNNConfig) -> None:
    cfg.check_choices()
    check_real("gate_bias", cfg.gate_bias)
    check_int("num_classes", cfg.num_classes, 0)


@dataclass(frozen=True)
class HighwayMLPConfig(Config):
    """A fully connected skip network (paper Section 3.1).

    Attributes:
        depth: Stacked skip layers between the input projection and the classifier.
        width: Units per layer (50 in the paper's sweep).
        skip: "highway", "residual" or "none" (plain).
        gate_bias: Initial transform gate bias.
        branch_scale: Residual nets only: start value of a learned scalar on every layer's
            branch (None: no scalar); see :class:`HighwayLayer`.
        input_size: (C, H, W) of the images; the net flattens them, so this is fixed.
        num_classes: Classifier outputs (0: no classifier).
    """

    depth: int = 10
    width: int = 50
    skip: str = choice("highway", SKIPS)
    gate_bias: float = -2.0
    branch_scale: float | None = None
    input_size: tuple[int, int, int] = (3, 32, 32)
    num_classes: int = 10

    def __post_init__(self) -> None:
        check_positive_int("depth", self.depth)
        check_positive_int("width", self.width)
        _check_common(self)
        if self.branch_scale is not None and self.skip != "residual":
            raise ValueError(
                f"branch_scale applies to residual nets only; this one has skip={self.skip!r}"
            )
        if not isinstance(self.input_size, tuple) or len(self.input_size) != 3:
            raise ValueError(f"input_size must be (C, H, W); got {self.input_size!r}")
        for v in self.input_size:
            check_positive_int("input_size entries", v)


class HighwayMLP(SkipNet):
    """Flatten -> Linear + ReLU to ``width`` -> ``depth`` skip layers -> classifier.

    Shapes for the default (3, 32, 32) input, width 50: (N, 3072) -> (N, 50) -> ... -> (N, 50)
    -> (N, num_classes). ``forward_features`` returns the last layer's output as (N, 50, 1, 1).
    """

    def __init__(self, cfg: HighwayMLPConfig, model_name: str = "highway_mlp") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        c, h, w = cfg.input_size
        self.in_chans = c
        self.min_input_size = 1  # check_input requires exactly (H, W), with its own message
        self.num_classes = cfg.num_classes
        self.proj = _init(nn.Linear(c * h * w, cfg.width))
        self.proj_act = nn.ReLU()
        self.layers = nn.ModuleList(
            HighwayLayer(
                cfg.width, skip=cfg.skip, gate_bias=cfg.gate_bias, branch_scale=cfg.branch_scale
            )
            for _ in range(cfg.depth)
        )
        self.num_features = cfg.width
        self.classifier = (
            nn.Linear(cfg.width, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        )
        self.feature_info = [FeatureInfo(f"layers.{cfg.depth - 1}", cfg.width, h)]

    def _check_input(self, x: torch.Tensor) -> None:
        """Also require exactly the configured H and W: the projection's size depends on them."""
        super()._check_input(x)
        if tuple(x.shape[1:]) != self.cfg.input_size:
            raise ValueError(
                f"{self.model_name} expects input of shape "
                f"(N, {', '.join(map(str, self.cfg.input_size))}); "
                f"got {tuple(x.shape)} (set input_size to change it)"
            )

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        for i, layer in enumerate(self.layers):
            yield f"layers.{i}", layer

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The last skip layer's output, (N, width, 1, 1)."""
        self.check_input(x)
        x = self.proj_act(self.proj(torch.flatten(x, 1)))
        for layer in self.layers:
            x = self.run_block(layer, x)
        return [x[:, :, None, None]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(x, 1)
        return x if pre_logits else self.classifier(x)


@dataclass(frozen=True)
class HighwayCNNConfig(Config):
    """A convolutional skip network after the paper's 19-layer CIFAR-10 design.

    Attributes:
        widths: Maps per stage (32, 80, 128).
        layers: Highway (or residual / plain) 3x3 layers per stage, after one plain 3x3 conv
            that sets the stage's width (4, 5, 5).
        head_width: Maps of the 1x1 conv before global pooling (100).
        skip: "highway", "residual" or "none" (plain).
        gate_bias: Initial transform gate bias (-2).
        drop_rate: Dropout on the input, after each pooling and before the classifier (0.2).
        num_classes: Classifier outputs (0: no classifier).
        in_chans: Input channels.
    """

    widths: tuple[int, ...] = (32, 80, 128)
    layers: tuple[int, ...] = (4, 5, 5)
    head_width: int = 100
    skip: str = choice("highway", SKIPS)
    gate_bias: float = -2.0
    drop_rate: float = 0.2
    num_classes: int = 10
    in_chans: int = 3

    def __post_init__(self) -> None:
        if (
            not isinstance(self.widths, tuple)
            or not isinstance(self.layers, tuple)
            or (len(self.widths) != len(self.layers) or not self.widths)
        ):
            raise ValueError(
                f"widths and layers need one entry per stage; "
                f"got {self.widths!r} and {self.layers!r}"
            )
        for v in self.widths + self.layers:
            check_positive_int("widths and layers entries", v)
        check_positive_int("head_width", self.head_width)
        check_positive_int("in_chans", self.in_chans)
        _check_common(self)
        check_real("drop_rate", self.drop_rate, 0, 1, high_open=True)

    @property
    def depth(self) -> int:
        """Weighted layers: stage convs + skip layers + 1x1 head conv + classifier."""
        return len(self.widths) + sum(self.layers) + 2


class HighwayStage(nn.Module):
    """One plain 3x3 conv + ReLU to the stage's width, then the skip layers (``layers.j``)."""

    def __init__(self, in_ch: int, width: int, n_layers: int, skip: str, gate_bias: float) -> None:
        super().__init__()
        self.conv = _init(nn.Conv2d(in_ch, width, 3, padding=1))
        self.act = nn.ReLU()
        self.layers = nn.ModuleList(
            HighwayLayer(width, spatial=True, skip=skip, gate_bias=gate_bias)
            for _ in range(n_layers)
        )


class HighwayCNN(SkipNet):
    """Convolutional highway network; ``highway_cifar19`` at 32x32 (widths 32, 80, 128):
    stage1 -> (N, 32, 32, 32), pool, stage2 -> (N, 80, 16, 16), pool, stage3 -> (N, 128, 8, 8);
    head: 1x1 conv -> (N, 100, 8, 8), global average pool -> (N, 100), classifier.
    """

    def __init__(self, cfg: HighwayCNNConfig, model_name: str = "highway_cnn") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        self.drop = nn.Dropout(cfg.drop_rate)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.stages = nn.ModuleList()
        self.feature_info = []
        in_ch, reduction = cfg.in_chans, 1
        for i, (width, n_layers) in enumerate(zip(cfg.widths, cfg.layers, strict=True)):
            reduction *= 1 if i == 0 else 2
            self.stages.append(HighwayStage(in_ch, width, n_layers, cfg.skip, cfg.gate_bias))
            self.feature_info.append(FeatureInfo(f"stages.{i}", width, reduction))
            in_ch = width
        self.head_conv = _init(nn.Conv2d(in_ch, cfg.head_width, 1))
        self.head_act = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = cfg.head_width
        self.classifier = (
            nn.Linear(cfg.head_width, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        )
        self.min_input_size = reduction  # the total stride: smaller inputs vanish

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        for i, stage in enumerate(self.stages):
            for j, layer in enumerate(stage.layers):
                yield f"stages.{i}.layers.{j}", layer

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output (after its last skip layer), in ``feature_info`` order."""
        self.check_input(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = self.drop(x if i == 0 else self.pool(x))
            x = stage.act(stage.conv(x))
            for layer in stage.layers:
                x = self.run_block(layer, x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Last stage map -> 1x1 conv + ReLU -> global average pool (N, head_width) -> logits."""
        x = torch.flatten(self.avgpool(self.head_act(self.head_conv(x))), 1)
        return x if pre_logits else self.classifier(self.drop(x))


# -- the registered variants, as rows of data -----------------------------------------------------
CIFAR = (3, 32, 32)

# name: Variant(family, default input, config); depth from the config
HIGHWAY_VARIANTS: dict[str, Variant] = {
    "highway_mlp": Variant("highway", CIFAR, HighwayMLPConfig(skip="highway")),
    "residual_mlp": Variant("highway", CIFAR, HighwayMLPConfig(skip="residual")),
    "plain_mlp": Variant("highway", CIFAR, HighwayMLPConfig(skip="none")),
    "highway_cifar19": Variant("highway", CIFAR, HighwayCNNConfig()),
}


register_variants(
    HIGHWAY_VARIANTS,
    {HighwayMLPConfig: HighwayMLP, HighwayCNNConfig: HighwayCNN},
    depth=lambda cfg: cfg.depth,
)
