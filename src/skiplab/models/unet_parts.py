"""U-Net building blocks: the paper's double convolution, the encoder and the decoder.

Ronneberger et al. 2015 (arXiv:1505.04597), Fig. 1. The decoder follows
segmentation_models_pytorch's shape: it takes the encoder's channels, and each
:class:`DecoderBlock` shows its ``skip_channels`` (0: no skip, the ablation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from skiplab.models._base import FeatureInfo, SkipNet, check_choice, maybe_checkpointed

UPSAMPLING = ("transpose", "bilinear")


# -- layers ---------------------------------------------------------------------------------------
def _conv_relu(in_ch: int, out_ch: int, padding: bool, batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1 if padding else 0, bias=not batch_norm)
    # Paper section 3: Gaussian, std sqrt(2 / N) with N = 9 * in_ch incoming nodes.
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    norm = [nn.BatchNorm2d(out_ch)] if batch_norm else []
    return [conv, *norm, nn.ReLU(inplace=True)]


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (BatchNorm and) ReLU: one U-Net level.

    Unpadded: (N, in_ch, H, W) -> (N, out_ch, H - 4, W - 4); padded: same H, W.
    """

    def __init__(self, in_ch: int, out_ch: int, *, padding: bool, batch_norm: bool) -> None:
        super().__init__(
            *_conv_relu(in_ch, out_ch, padding, batch_norm),
            *_conv_relu(out_ch, out_ch, padding, batch_norm),
        )


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip (centre-cropped when unpadded), :class:`DoubleConv`.

    Shapes: x (N, in_channels, h, w), skip (N, skip_channels, >= 2h, >= 2w) -> (N,
    out_channels, 2h, 2w) padded, (2h - 4, 2w - 4) unpadded. ``skip_channels=0``: no skip.

    Args:
        upsample: "transpose" (the paper's 2x2 up-convolution, in_channels -> out_channels) or
            "bilinear" (parameter-free, keeps in_channels; the convolutions reduce them).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        padding: bool = True,
        batch_norm: bool = True,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        check_choice("upsample", upsample, UPSAMPLING)
        self.skip_channels = skip_channels
        self.crop = not padding
        if upsample == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
            # A 2x2 stride-2 up-convolution gives each output pixel one tap per input channel,
            # so the paper's N (incoming nodes) is in_channels.
            nn.init.normal_(self.up.weight, std=math.sqrt(2.0 / in_channels))
            nn.init.zeros_(self.up.bias)
            up_channels = out_channels
        else:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_channels = in_channels
        self.conv = DoubleConv(
            up_channels + skip_channels, out_channels, padding=padding, batch_norm=batch_norm
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if (skip is None) != (self.skip_channels == 0):
            given = "None" if skip is None else f"a map of {skip.shape[1]} channels"
            raise ValueError(f"this block takes {self.skip_channels} skip channels; got {given}")
        x = self.up(x)
        if skip is not None:
            if self.crop:  # the paper's "copy and crop": the central window of the skip
                top = (skip.shape[-2] - x.shape[-2]) // 2
                left = (skip.shape[-1] - x.shape[-1]) // 2
                skip = skip[..., top : top + x.shape[-2], left : left + x.shape[-1]]
            x = torch.cat([skip, x], dim=1)  # Fig. 1: the copied map first, then the upsampled
        return self.conv(x)


class UNetDecoder(nn.Module):
    """The expansive path over ``encoder_channels`` (shallowest first, deepest last).

    The deepest feature enters; the others, deepest first, are the skips of the first blocks.
    Blocks beyond them (a backbone whose first feature is at stride 2) have no skip.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        *,
        skip: bool = True,
        padding: bool = True,
        batch_norm: bool = True,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if len(decoder_channels) < len(encoder_channels) - 1:
            raise ValueError(
                f"need a decoder block per skip ({len(encoder_channels) - 1}); "
                f"got decoder_channels={tuple(decoder_channels)}"
            )
        self.num_features = len(encoder_channels)
        skips = list(encoder_channels[:-1])[::-1]
        in_ch = encoder_channels[-1]
        self.blocks = nn.ModuleList()
        for j, out_ch in enumerate(decoder_channels):
            skip_ch = skips[j] if skip and j < len(skips) else 0
            self.blocks.append(
                DecoderBlock(
                    in_ch,
                    skip_ch,
                    out_ch,
                    padding=padding,
                    batch_norm=batch_norm,
                    upsample=upsample,
                )
            )
            in_ch = out_ch
        self.out_channels = in_ch
        self.grad_checkpointing = False  # recompute each block in backward (the owner sets it)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != self.num_features:
            raise ValueError(f"decoder expects {self.num_features} features; got {len(features)}")
        x = features[-1]
        skips = list(features[:-1])[::-1]
        recompute = self.grad_checkpointing and self.training
        for j, block in enumerate(self.blocks):
            skip = skips[j] if block.skip_channels else None
            x = maybe_checkpointed(block, x, skip, enabled=recompute)
        return x


class UNetEncoder(SkipNet):
    """The paper's contracting path: one :class:`DoubleConv` per level, 2x2 max pool between.

    Features: level i has ``widths[i]`` channels at nominal stride 2**i (unpadded maps are also
    smaller by the borders the convolutions trim; the owning :class:`UNet` checks sizes).
    """

    def __init__(
        self,
        in_chans: int,
        widths: Sequence[int],
        *,
        padding: bool,
        batch_norm: bool,
        model_name: str = "unet_encoder",
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.in_chans = in_chans
        self.min_input_size = 2 ** (len(widths) - 1)
        self.pool = nn.MaxPool2d(2)
        self.stages = nn.ModuleList()
        self.feature_info = []
        prev = in_chans
        for i, width in enumerate(widths):
            self.stages.append(DoubleConv(prev, width, padding=padding, batch_norm=batch_norm))
            self.feature_info.append(FeatureInfo(f"stages.{i}", width, 2**i))
            prev = width

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        return iter(())  # plain convolutions: no unit here owns a skip

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x)
        feats = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.pool(x)
            x = self.run_block(stage, x)
            feats.append(x)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x)[-1]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return x
