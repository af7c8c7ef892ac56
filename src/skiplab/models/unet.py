"""U-Net: the paper's unpadded net, a padded BatchNorm variant, and U-Nets on any backbone.

Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation" (arXiv:1505.04597), section 2 and Fig. 1: a contracting path of levels of two
unpadded 3x3 convolutions + ReLU with a 2x2 max pool between levels (64 -> 1024 channels); an
expansive path of 2x2 up-convolutions that halve the channels, concatenation with the centre crop
of the encoder map of the same level ("copy and crop"), two 3x3 convolutions; a final 1x1
convolution. 23 convolutional layers; a 572x572 tile gives a 388x388 map.

All variants share one decoder (segmentation_models_pytorch style: it takes the encoder's
channels, and a :class:`DecoderBlock` shows its ``skip_channels``). The encoder is the paper's
(:class:`UNetEncoder`) or any registered backbone with ``feature_info`` and
``forward_intermediates``. ``skip=False`` drops the concatenations: the ablation for the paper's
claim (section 1) that the skips carry the high-resolution features needed for precise
localisation. Only the first convolution of each decoder block gets narrower.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from skiplab.config import Config, check_bool, choice
from skiplab.models._base import FeatureInfo, SkipNet, check_positive_int
from skiplab.models.backbones import create_backbone, nearest_sizes
from skiplab.models.unet_parts import UPSAMPLING, UNetDecoder, UNetEncoder
from skiplab.models.variants import Variant, register_variants


# -- size arithmetic ------------------------------------------------------------------------------
def _unpadded_walk(size: int, depth: int) -> tuple[list[int], list[int]] | None:
    """Map sizes of an unpadded U-Net: (after each encoder level, after each decoder block).

    None when a map before a 2x2 max pool is odd (the pool would drop a row, and the skip crop
    would no longer be centred) or a map vanishes. Each level's two 3x3 convolutions trim 4.
    """
    encoder: list[int] = []
    for level in range(depth):
        if level > 0:
            if size % 2:
                return None
            size //= 2
        size -= 4
        if size < 1:
            return None
        encoder.append(size)
    decoder: list[int] = []
    for _ in range(depth - 1):
        size = 2 * size - 4  # 2x2 up-convolution, then two 3x3 convolutions
        if size < 1:
            return None
        decoder.append(size)
    return encoder, decoder


def _unpadded_input_for(output_size: int, depth: int) -> int | None:
    # Undo the expansive path (each block: x2, -4), then climb the contracting path back up.
    size = output_size
    for _ in range(depth - 1):
        size += 4
        if size % 2:
            return None
        size //= 2
    for _ in range(depth - 1):
        size = 2 * (size + 4)
    size += 4
    walk = _unpadded_walk(size, depth)
    return size if walk is not None and walk[1][-1] == output_size else None


# -- the network ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UNetConfig(Config):
    """Everything that distinguishes one U-Net from another. Defaults: ISBI 2012 (1 channel in,
    2 classes out).

    Attributes:
        encoder: None for the paper's encoder; else a registered backbone name ("resnet34").
        base_width, depth: The paper's encoder: widths base_width * 2**i for depth levels
            (64, 5 in the paper). None with a backbone encoder.
        decoder_channels: Output channels of each decoder block with a backbone encoder (one
            block per stride-2 step of the backbone). None for the paper's encoder (it mirrors it).
        padding: "same" 3x3 convolutions (output at input size); False: the paper's unpadded ones.
        batch_norm: BatchNorm after every 3x3 convolution (the paper has none).
        upsample: "transpose" (2x2 up-convolution) or "bilinear".
        skip: Concatenate the encoder features (False: the no-skip ablation).
        in_chans, num_classes: Input channels, output classes.
    """

    encoder: str | None = None
    base_width: int | None = 64
    depth: int | None = 5
    decoder_channels: tuple[int, ...] | None = None
    padding: bool = True
    batch_norm: bool = True
    upsample: str = choice("transpose", UPSAMPLING)
    skip: bool = True
    in_chans: int = 1
    num_classes: int = 2

    def __post_init__(self) -> None:
        for flag in ("padding", "batch_norm", "skip"):
            check_bool(flag, getattr(self, flag))
        self.check_choices()
        check_positive_int("in_chans", self.in_chans)
        check_positive_int("num_classes", self.num_classes)
        if self.encoder is None:  # the paper's encoder; the decoder mirrors it
            check_positive_int("base_width", self.base_width)
            check_positive_int("depth", self.depth)
            if self.depth < 2 or self.decoder_channels is not None:
                raise ValueError(
                    "the paper's encoder needs depth >= 2 and decoder_channels=None (the decoder "
                    f"mirrors it); got depth={self.depth}, decoder_channels={self.decoder_channels}"
                )
        elif (self.base_width, self.depth, self.padding) != (None, None, True):
            raise ValueError(
                f"encoder={self.encoder!r}: base_width, depth and padding=False describe the "
                "paper's encoder; set base_width=None, depth=None, padding=True; got "
                f"{self.base_width}, {self.depth}, {self.padding}"
            )
        elif not self.decoder_channels:
            raise ValueError(f"encoder={self.encoder!r} needs decoder_channels; got None")
        else:
            for c in self.decoder_channels:
                check_positive_int("decoder_channels entries", c)


class UNet(SkipNet):
    """U-Net: encoder features -> :class:`UNetDecoder` -> 1x1 convolution to class logits.

    Shapes: (N, in_chans, H, W) -> (N, num_classes, H, W) padded; unpadded, the output is
    ``output_size(H)`` (572 -> 388). ``forward_intermediates`` gives the encoder features.
    """

    def __init__(self, cfg: UNetConfig, model_name: str = "unet") -> None:
        super().__init__()
        self.cfg = cfg
        self.model_name = model_name
        self.in_chans = cfg.in_chans
        self.num_classes = cfg.num_classes
        if cfg.encoder is None:
            widths = [cfg.base_width * 2**i for i in range(cfg.depth)]
            self.encoder = UNetEncoder(
                cfg.in_chans,
                widths,
                padding=cfg.padding,
                batch_norm=cfg.batch_norm,
                model_name=f"{model_name} encoder",
            )
            decoder_channels = widths[:-1][::-1]
        else:
            self.encoder = create_backbone(cfg.encoder, cfg.in_chans)
            decoder_channels = list(cfg.decoder_channels)
        info = self.encoder.feature_info
        self.stride = info[-1].reduction
        n_blocks = self.stride.bit_length() - 1  # one x2 upsampling per stride-2 step
        if len(decoder_channels) != n_blocks:
            raise ValueError(
                f"encoder {cfg.encoder!r} has total stride {self.stride}: "
                f"decoder_channels needs {n_blocks} entries; got {decoder_channels}"
            )
        self.decoder = UNetDecoder(
            [f.num_chs for f in info],
            decoder_channels,
            skip=cfg.skip,
            padding=cfg.padding,
            batch_norm=cfg.batch_norm,
            upsample=cfg.upsample,
        )
        self.segmentation_head = nn.Conv2d(self.decoder.out_channels, cfg.num_classes, 1)
        nn.init.kaiming_normal_(self.segmentation_head.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.segmentation_head.bias)
        self.feature_info = [
            FeatureInfo(f"encoder.{f.module}", f.num_chs, f.reduction) for f in info
        ]
        self.min_input_size = (
            self.stride
            if cfg.padding
            else next(s for s in itertools.count(1) if self._is_valid_size(s))
        )

    # -- sizes -------------------------------------------------------------------------------
    def _is_valid_size(self, size: int) -> bool:
        if self.cfg.padding:
            return size >= self.stride and size % self.stride == 0
        return _unpadded_walk(size, self.cfg.depth) is not None

    def check_size(self, size: int, what: str = "input size") -> None:
        """Raise ``ValueError`` naming the nearest valid sizes unless ``size`` fits the net."""
        if self._is_valid_size(size):
            return
        if self.cfg.padding:
            rule = f"must be a multiple of {self.stride} (the encoder's total stride)"
        else:
            rule = "does not fit (maps before a 2x2 max pool must be even, none may vanish)"
        raise ValueError(
            f"{self.model_name}: {what}={size} {rule}; " + nearest_sizes(size, self._is_valid_size)
        )

    def output_size(self, input_size: int) -> int:
        """Output H (or W) for input H (or W): 572 -> 388 unpadded; unchanged padded."""
        check_positive_int("input size", input_size)
        self.check_size(input_size)
        return input_size if self.cfg.padding else _unpadded_walk(input_size, self.cfg.depth)[1][-1]

    def input_size_for(self, output_size: int) -> int:
        """Input H (or W) that gives output H (or W): 388 -> 572 unpadded; unchanged padded."""
        check_positive_int("output size", output_size)
        if self.cfg.padding:
            self.check_size(output_size, "output size")
            return output_size
        size = _unpadded_input_for(output_size, self.cfg.depth)
        if size is None:
            raise ValueError(
                f"{self.model_name}: no input gives an output of size {output_size}; "
                + nearest_sizes(output_size, lambda s: _unpadded_input_for(s, self.cfg.depth))
            )
        return size

    def feature_sizes(self, input_size: int) -> list[int]:
        """Spatial size of each ``forward_intermediates`` map for input H (or W)."""
        check_positive_int("input size", input_size)
        self.check_size(input_size)
        if self.cfg.padding:
            return [input_size // f.reduction for f in self.feature_info]
        return _unpadded_walk(input_size, self.cfg.depth)[0]

    def _check_input(self, x: torch.Tensor) -> None:
        super()._check_input(x)
        self.check_size(x.shape[-2], "input H")
        self.check_size(x.shape[-1], "input W")

    # -- structure ---------------------------------------------------------------------------
    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        """Backbone units with residual skips, then the decoder blocks that concatenate one."""
        for name, block in self.encoder.iter_blocks():
            yield f"encoder.{name}", block
        for j, block in enumerate(self.decoder.blocks):
            if block.skip_channels:
                yield f"decoder.blocks.{j}", block

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the encoder's units and the decoder's blocks in backward."""
        super().set_grad_checkpointing(enable)
        self.encoder.set_grad_checkpointing(enable)
        self.decoder.grad_checkpointing = bool(enable)

    # -- forward -----------------------------------------------------------------------------
    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features, one per ``feature_info`` entry."""
        self.check_input(x)
        return self.encoder.forward_intermediates(x)

    def decode(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Encoder features -> decoder output (N, decoder.out_channels, H_out, W_out)."""
        return self.decoder(features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.forward_intermediates(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.segmentation_head(x)


# -- the registered variants, as rows of data -----------------------------------------------------
# segmentation_models_pytorch's Unet decoder widths for a stride-32 backbone.
SMP_DECODER = (256, 128, 64, 32, 16)

# name: Variant(family, default input, config, depth in conv layers as the paper counts them)
# fmt: off
UNET_VARIANTS: dict[str, Variant] = {
    # Ronneberger et al. 2015, Fig. 1: unpadded, no normalisation, 572 -> 388.
    "unet_original": Variant("unet", (1, 572, 572), UNetConfig(padding=False, batch_norm=False),
                             depth=23, task="segmentation"),
    # Padded ("same") with BatchNorm: output at input size; ISBI 2012 tiles are 512x512.
    "unet": Variant("unet", (1, 512, 512), UNetConfig(), depth=23, task="segmentation"),
    # Backbone encoders, decoder of segmentation_models_pytorch's Unet (bilinear upsampling).
    **{f"unet_{bb}": Variant("unet", (1, 512, 512),
                             UNetConfig(encoder=bb, base_width=None, depth=None,
                                        decoder_channels=SMP_DECODER, upsample="bilinear"),
                             task="segmentation")
       for bb in ("resnet18", "resnet34")},
}
# fmt: on


register_variants(UNET_VARIANTS, UNet)
