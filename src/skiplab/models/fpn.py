"""Feature Pyramid Network neck and a Panoptic-FPN semantic segmentation net on any backbone.

Lin et al. 2017, "Feature Pyramid Networks for Object Detection" (arXiv:1612.03144), section 3
and Fig. 3: a 1x1 lateral convolution per backbone stage C2..C5, a top-down path that upsamples
the coarser merged map x2 (nearest) and adds the lateral, and a 3x3 convolution on every merged
map to give P2..P5 (d = 256 channels); P6 for the RPN is P5 subsampled with stride 2 (section
4.1). Section 5.1.1 / Table 1 ablates the lateral connections ("top-down pyramid, w/o lateral",
``lateral=False``) and the pyramid itself ("only finest level", ``levels=(2,)``).

Kirillov et al. 2019, "Panoptic Feature Pyramid Networks" (arXiv:1901.02446), section 3.1 and
Fig. 3: semantic segmentation branch. Every level goes through stages of 3x3 conv (128 ch),
GroupNorm, ReLU and x2 bilinear upsampling until it is at stride 4 (P2: one stage without
upsampling); the maps are summed, a 1x1 convolution gives the classes, x4 bilinear upsampling
the input resolution.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from skiplab.config import Config, check_bool
from skiplab.models._base import FeatureInfo, SkipNet, check_positive_int, is_fx_proxy
from skiplab.models.backbones import create_backbone, nearest_sizes
from skiplab.models.variants import Variant, register_variants

COMMON_STRIDE = 4  # the semantic branch merges the levels at P2's stride (Kirillov et al. 2019)
GN_GROUPS = 32


def _fpn_conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    # Sequential(conv) gives the keys "N.0.weight" of torchvision's Conv2dNormActivation.
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
    # Detectron's c2_xavier_fill, also torchvision's: uniform Kaiming with a=1, zero bias.
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv)


class FeaturePyramid(nn.Module):
    """FPN neck: C2..C5 (shallowest first) -> P2..P5 (+ P6), all with ``out_channels``.

    With the defaults the state_dict is that of ``torchvision.ops.FeaturePyramidNetwork(
    in_channels_list, out_channels, extra_blocks=LastLevelMaxPool() if extra_p6 else None)``
    (``inner_blocks.N.0.weight``, ``layer_blocks.N.0.weight``, ...) and the outputs are equal.

    Args:
        in_channels_list: Channels of each input level, shallowest first.
        out_channels: d, the pyramid's channels (256 in the paper).
        extra_p6: Append P6 = P5 subsampled by a 1x1 max pool with stride 2.
        lateral: False: only the top level enters (its 1x1 conv), and the top-down path carries
            it down with no additions; C2..C4 then only set the map sizes and do not affect
            the output (Table 1 (e)).
        out_indices: Which levels to output (indices into ``in_channels_list``; default all).
            Only the modules these outputs need are built (``inner_blocks.i`` and
            ``layer_blocks.i`` keep the level index i in their names).
    """

    def __init__(
        self,
        in_channels_list: Sequence[int],
        out_channels: int,
        extra_p6: bool = False,
        *,
        lateral: bool = True,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not in_channels_list:
            raise ValueError("in_channels_list needs at least one level; got []")
        for flag, value in (("extra_p6", extra_p6), ("lateral", lateral)):
            if not isinstance(value, bool):
                raise ValueError(f"{flag} must be True or False; got {value!r}")
        for c in (*in_channels_list, out_channels):
            check_positive_int("FPN channels", c)
        top = len(in_channels_list) - 1
        outs = tuple(range(top + 1)) if out_indices is None else tuple(out_indices)
        if not outs or list(outs) != sorted(set(outs)) or not set(outs) <= set(range(top + 1)):
            raise ValueError(
                f"out_indices must be increasing level indices in 0..{top}; got {outs}"
            )
        if extra_p6 and outs[-1] != top:
            raise ValueError(f"extra_p6 subsamples the top level, so out_indices needs {top}")
        self.in_channels_list = tuple(in_channels_list)
        self.extra_p6 = extra_p6
        self.lateral = lateral
        self.out_indices = outs
        # The top-down path runs from the top level down to the lowest output.
        lateral_levels = range(outs[0], top + 1) if lateral else [top]
        self.inner_blocks = nn.ModuleDict(
            {str(i): _fpn_conv(in_channels_list[i], out_channels, 1) for i in lateral_levels}
        )
        self.layer_blocks = nn.ModuleDict(
            {str(i): _fpn_conv(out_channels, out_channels, 3) for i in outs}
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Features C_i (N, in_channels_list[i], h_i, w_i) -> P_i (N, out_channels, h_i, w_i)."""
        if is_fx_proxy(*features):
            pass  # symbolic tracing: no concrete shapes to check
        elif len(features) != len(self.in_channels_list) or any(
            f.ndim != 4 or f.shape[1] != c
            for f, c in zip(features, self.in_channels_list, strict=True)
        ):
            got = [tuple(f.shape) for f in features]
            raise ValueError(
                f"FeaturePyramid expects {len(self.in_channels_list)} maps (N, C, H, "
                f"W) with C = {list(self.in_channels_list)}; got shapes {got}"
            )
        top = len(features) - 1
        last_inner = self.inner_blocks[str(top)](features[top])
        results = {}
        if top in self.out_indices:
            results[top] = self.layer_blocks[str(top)](last_inner)
        for i in range(top - 1, self.out_indices[0] - 1, -1):
            # Nearest upsampling to C_i's size (not x2: torchvision's rule for odd sizes).
            top_down = F.interpolate(last_inner, size=features[i].shape[-2:], mode="nearest")
            if self.lateral:
                last_inner = self.inner_blocks[str(i)](features[i]) + top_down
            else:
                last_inner = top_down
            if i in self.out_indices:
                results[i] = self.layer_blocks[str(i)](last_inner)
        pyramid = [results[i] for i in self.out_indices]
        if self.extra_p6:
            pyramid.append(F.max_pool2d(pyramid[-1], kernel_size=1, stride=2))
        return pyramid


def _stage(in_ch: int, out_ch: int, upsample: bool) -> list[nn.Module]:
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # Detectron2 MSRA
    layers = [conv, nn.GroupNorm(GN_GROUPS, out_ch), nn.ReLU(inplace=True)]
    if upsample:
        layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
    return layers


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch without its classifier: pyramid -> (N, channels, H/4, W/4).

    Args:
        in_channels: The pyramid's channels (every level has the same).
        strides: Stride of each level fed in (4, 8, 16, 32 for P2..P5).
        channels: Width of the conv-GN-ReLU stages (128 in the paper).
    """

    def __init__(self, in_channels: int, strides: Sequence[int], channels: int = 128) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        for stride in strides:
            n_up = stride.bit_length() - COMMON_STRIDE.bit_length()  # log2(stride / 4)
            if stride & (stride - 1) or n_up < 0:
                raise ValueError(f"level strides must be powers of two >= 4; got {list(strides)}")
            layers = []
            for k in range(max(n_up, 1)):
                layers += _stage(in_channels if k == 0 else channels, channels, n_up > 0)
            self.stages.append(nn.Sequential(*layers))

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.stages[0](pyramid[0])
        for stage, p in zip(self.stages[1:], pyramid[1:], strict=True):
            out = out + stage(p)
        return out


@dataclass(frozen=True)
class FPNConfig(Config):
    """An FPN semantic segmentation net. Defaults: RGB in (COCO, the papers' data), 2 classes
    out; pass ``in_chans=1`` for grayscale data such as ISBI 2012.

    Attributes:
        encoder: A registered backbone with stages at strides 4, 8, ... (C2, C3, ...).
        pyramid_channels: d, the FPN's width (256 in both papers).
        segmentation_channels: Width of the semantic branch (128, Kirillov et al. 2019); a
            multiple of 32 for GroupNorm's 32 groups.
        lateral: Lateral connections (False: the top-down path alone, Lin et al. Table 1 (e)).
        levels: Pyramid levels k (P_k at stride 2**k) that feed the head, e.g. (2, 3, 4, 5);
            (2,) is Table 1 (f), "only finest level"; (5,) the top level alone.
        in_chans, num_classes: Input channels, output classes.
    """

    encoder: str = "resnet34"
    pyramid_channels: int = 256
    segmentation_channels: int = 128
    lateral: bool = True
    levels: tuple[int, ...] = (2, 3, 4, 5)
    in_chans: int = 3
    num_classes: int = 2

    def __post_init__(self) -> None:
        check_bool("lateral", self.lateral)
        for what in ("pyramid_channels", "segmentation_channels", "in_chans", "num_classes"):
            check_positive_int(what, getattr(self, what))
        if self.segmentation_channels % GN_GROUPS:
            raise ValueError(
                f"segmentation_channels must be a multiple of {GN_GROUPS} (GroupNorm "
                f"groups); got {self.segmentation_channels}"
            )
        lv = self.levels
        if (
            not lv
            or any(isinstance(k, bool) or not isinstance(k, int) for k in lv)
            or (list(lv) != sorted(set(lv)) or lv[0] < 2)
        ):
            raise ValueError(f"levels must be increasing integers >= 2 (P2 = stride 4); got {lv}")


class FPN(SkipNet):
    """Backbone -> :class:`FeaturePyramid` -> :class:`SemanticFPNHead` -> 1x1 conv, x4 upsample.

    Shapes for a ResNet-34 at 64x64: C2..C5 (64, 128, 256, 512 ch at 16, 8, 4, 2); P2..P5
    (256 ch); head (N, 128, 16, 16); logits (N, num_classes, 64, 64).
    """

    def __init__(self, cfg: FPNConfig, model_name: str = "fpn") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        self.encoder = create_backbone(cfg.encoder, cfg.in_chans)
        info = self.encoder.feature_info
        # C2, C3, ...: the stages at stride >= 4 (the paper leaves out the stride-2 conv1 map).
        self.pyramid_indices = [i for i, f in enumerate(info) if f.reduction >= COMMON_STRIDE]
        available = [info[i].reduction.bit_length() - 1 for i in self.pyramid_indices]
        if not available or available[0] != 2 or not set(cfg.levels) <= set(available):
            raise ValueError(
                f"levels {cfg.levels} need backbone stages at strides "
                f"{[2**k for k in cfg.levels]}; {cfg.encoder!r} has "
                f"{[f.reduction for f in info]}"
            )
        self.stride = info[-1].reduction
        self.neck = FeaturePyramid(
            [info[i].num_chs for i in self.pyramid_indices],
            cfg.pyramid_channels,
            lateral=cfg.lateral,
            out_indices=[available.index(k) for k in cfg.levels],
        )
        self.decoder = SemanticFPNHead(
            cfg.pyramid_channels, [2**k for k in cfg.levels], cfg.segmentation_channels
        )
        classifier = nn.Conv2d(cfg.segmentation_channels, cfg.num_classes, 1)
        nn.init.normal_(classifier.weight, std=0.001)  # Detectron2's SemSegFPNHead predictor
        nn.init.zeros_(classifier.bias)
        self.segmentation_head = nn.Sequential(
            classifier,
            nn.Upsample(scale_factor=COMMON_STRIDE, mode="bilinear", align_corners=False),
        )
        self.feature_info = [
            FeatureInfo(f"encoder.{f.module}", f.num_chs, f.reduction) for f in info
        ]
        self.min_input_size = self.stride

    def _check_input(self, x: torch.Tensor) -> None:
        super()._check_input(x)
        for what, size in (("H", x.shape[-2]), ("W", x.shape[-1])):
            if size % self.stride:
                raise ValueError(
                    f"{self.model_name}: input {what}={size} must be a multiple of {self.stride} "
                    "(the backbone's total stride, so that the pyramid levels align); "
                    + nearest_sizes(size, lambda s: s % self.stride == 0)
                )

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """Backbone units with residual skips, then the lateral 1x1 convs (the FPN's skips)."""
        for name, block in self.encoder.iter_blocks():
            yield f"encoder.{name}", block
        top = str(len(self.pyramid_indices) - 1)
        for key, block in self.neck.inner_blocks.items():
            if key != top:
                yield f"neck.inner_blocks.{key}", block

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        super().set_grad_checkpointing(enable)
        self.encoder.set_grad_checkpointing(enable)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features, one per ``feature_info`` entry."""
        self.check_input(x)
        return self.encoder.forward_intermediates(x)

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone features -> semantic branch output (N, segmentation_channels, H/4, W/4)."""
        return self.decoder(self.neck([features[i] for i in self.pyramid_indices]))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.forward_intermediates(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.segmentation_head(x)

    def detection_backbone(self) -> FPNBackbone:
        """This net's backbone and pyramid as a detection backbone (see :class:`FPNBackbone`);
        the modules are shared, not copied."""
        return FPNBackbone(self)


class FPNBackbone(nn.Module):
    """Backbone + FPN neck in the form of torchvision's ``BackboneWithFPN``, to serve as the
    backbone of ``torchvision.models.detection.FasterRCNN`` (or MaskRCNN, RetinaNet-style heads
    that take a feature dict): ``forward(images)`` returns an ``OrderedDict`` of P2..P5 under
    the keys ``"0"``, ``"1"``, ... and P6 under ``"pool"`` (P5 subsampled with stride 2, Lin et
    al. 2017 section 4.1, torchvision's ``LastLevelMaxPool``), all with ``out_channels``.

    With an FPN built with every level (the default ``levels=(2, 3, 4, 5)``) the dict holds the
    five maps that torchvision's default anchor generator expects. ``body`` and ``fpn`` are the
    FPN's ``encoder`` and ``neck`` (shared modules).
    """

    def __init__(self, model: FPN) -> None:
        super().__init__()
        if not isinstance(model, FPN):
            raise ValueError(f"FPNBackbone wraps an FPN model; got {type(model).__name__}")
        self.body = model.encoder
        self.fpn = model.neck
        self.pyramid_indices = list(model.pyramid_indices)
        self.out_channels = model.cfg.pyramid_channels
        self.model_name = f"{model.model_name} detection backbone"
        self.stride = model.stride

    def check_input(self, x: torch.Tensor) -> None:
        """The backbone's checks, and H, W multiples of its total stride (torchvision's
        detection transform pads batches to multiples of 32, ``size_divisible``)."""
        if is_fx_proxy(x):
            return
        self.body.check_input(x)
        for what, size in (("H", x.shape[-2]), ("W", x.shape[-1])):
            if size % self.stride:
                raise ValueError(
                    f"{self.model_name}: input {what}={size} must be a multiple of {self.stride} "
                    "(the backbone's total stride); "
                    + nearest_sizes(size, lambda s: s % self.stride == 0)
                )

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        self.check_input(x)
        features = self.body.forward_intermediates(x)
        pyramid = self.fpn([features[i] for i in self.pyramid_indices])
        out = OrderedDict((str(i), p) for i, p in enumerate(pyramid))
        out["pool"] = F.max_pool2d(pyramid[-1], kernel_size=1, stride=2)
        return out


# name: Variant(family, default input, config); RGB 512 x 512 (the chapter's ISBI 2012 runs pass
# in_chans=1)
FPN_VARIANTS: dict[str, Variant] = {
    f"fpn_{bb}": Variant("fpn", (3, 512, 512), FPNConfig(encoder=bb), task="segmentation")
    for bb in ("resnet18", "resnet34", "resnet50")
}

register_variants(FPN_VARIANTS, FPN)
