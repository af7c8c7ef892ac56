"""The U-Net family: interface, the paper's parameter count and tile sizes, a hand-built
functional reference, the skip ablation proved with gradients, clear size errors, torch.compile.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from skiplab import create_model

from .model_tester import ModelTester


def _segmentation_shape(model, x: torch.Tensor) -> tuple[int, ...]:
    return (x.shape[0], model.num_classes, *x.shape[-2:])


class TestUNets(ModelTester):
    names = ("unet", "unet_resnet18", "unet_resnet34")
    input_shape = (2, 1, 32, 32)  # ISBI 2012 is single-channel: in_chans=1 is the default

    def expected_output_shape(self, model, x):
        return _segmentation_shape(model, x)


class TestUNetOriginal(ModelTester):
    names = ("unet_original",)
    # The smallest valid input. By hand: 188 -4 184 /2 92 -4 88 /2 44 -4 40 /2 20 -4 16 /2 8 -4 4,
    # then x2 -4 four times: 4 -> 4 -> 4 -> 4 -> 4.
    input_shape = (1, 1, 188, 188)

    def expected_output_shape(self, model, x):
        return (1, 2, 4, 4)

    def test_interface(self, name):
        # As the base test, but the unpadded maps are smaller than H / stride by the borders the
        # convolutions trim: sizes from the hand arithmetic above.
        model = self.build(name).eval()
        x = self.make_input(name)
        with torch.no_grad():
            full = model(x)
            split = model.forward_head(model.forward_features(x))
            feats = model.forward_intermediates(x)
        torch.testing.assert_close(full, split, rtol=0, atol=0)
        assert [f.shape[1] for f in feats] == [i.num_chs for i in model.feature_info]
        assert [f.shape[-1] for f in feats] == [184, 88, 40, 16, 4]
        assert model.feature_sizes(188) == [184, 88, 40, 16, 4]
        modules = dict(model.named_modules())
        blocks = list(model.iter_blocks())
        assert [n for n, _ in blocks] == [f"decoder.blocks.{j}" for j in range(4)]
        assert all(modules[n] is b for n, b in blocks)


# -- the paper's numbers --------------------------------------------------------------------------
def test_unet_original_has_the_papers_parameter_count():
    with torch.device("meta"):
        model = create_model("unet_original", in_chans=1, num_classes=2)
    assert sum(p.numel() for p in model.parameters()) == 31_030_658
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert len(convs) == 23  # "In total the network has 23 convolutional layers" (section 2)


def test_unet_original_fig1_map_sizes_on_a_572_tile():
    model = create_model("unet_original")
    assert model.output_size(572) == 388 and model.input_size_for(388) == 572
    # Fig. 1, run on the meta device (shapes only): encoder maps after each level, and the output.
    meta = copy.deepcopy(model).to("meta")
    x = torch.zeros(1, 1, 572, 572, device="meta")
    assert [f.shape[-1] for f in meta.forward_intermediates(x)] == [568, 280, 136, 64, 28]
    assert meta(x).shape == (1, 2, 388, 388)


def test_unet_original_rejects_sizes_that_do_not_divide_naming_the_nearest_valid_ones():
    model = create_model("unet_original")
    # Valid inputs are 16 k + 124 (k >= 4): ..., 492, 508, ...
    with pytest.raises(ValueError, match=r"H=500 does not fit.*nearest valid sizes: 492 and 508"):
        model(torch.zeros(1, 1, 500, 508))
    with pytest.raises(ValueError, match=r"W=190 .*nearest valid sizes: 188 and 204"):
        model(torch.zeros(1, 1, 188, 190))
    with pytest.raises(ValueError, match=r"size=100 .*the smallest valid size is 188"):
        model.output_size(100)
    with pytest.raises(ValueError, match=r"output of size 390; nearest valid sizes: 388 and 404"):
        model.input_size_for(390)


def test_invalid_sizes_raise_before_any_convolution():
    model = create_model("unet_original")
    calls = []
    model.encoder.stages[0].register_forward_pre_hook(lambda *_: calls.append(1))
    with pytest.raises(ValueError, match="nearest valid sizes"):
        model(torch.zeros(1, 1, 200, 200))
    assert not calls


@pytest.mark.parametrize(
    ("name", "message"),
    [("unet", "multiple of 16.*96 and 112"), ("unet_resnet18", "multiple of 32.*96 and 128")],
)
def test_padded_unets_reject_sizes_off_the_stride(name, message):
    with pytest.raises(ValueError, match=rf"{name}: input H=100 must be a {message}"):
        create_model(name)(torch.zeros(1, 1, 100, 64))


# -- a hand-built functional reference ------------------------------------------------------------
def _reference_unet(x, p, depth, padding, batch_norm, upsample):
    """The paper's Fig. 1 written with torch.nn.functional, reading weights by state_dict name."""
    pad = 1 if padding else 0

    def conv_relu(x, prefix, i):  # i: index of the conv in its Sequential
        x = F.conv2d(x, p[f"{prefix}.{i}.weight"], p.get(f"{prefix}.{i}.bias"), padding=pad)
        if batch_norm:
            bn = f"{prefix}.{i + 1}"
            x = F.batch_norm(
                x,
                p[f"{bn}.running_mean"],
                p[f"{bn}.running_var"],
                p[f"{bn}.weight"],
                p[f"{bn}.bias"],
                training=False,
                eps=1e-5,
            )
        return F.relu(x)

    def double(x, prefix):
        return conv_relu(conv_relu(x, prefix, 0), prefix, 3 if batch_norm else 2)

    skips = []
    for level in range(depth):
        x = double(F.max_pool2d(x, 2) if level else x, f"encoder.stages.{level}")
        skips.append(x)
    x = skips.pop()
    for j in range(depth - 1):
        if upsample == "transpose":
            w, b = p[f"decoder.blocks.{j}.up.weight"], p[f"decoder.blocks.{j}.up.bias"]
            x = F.conv_transpose2d(x, w, b, stride=2)
        else:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        skip = TF.center_crop(skips.pop(), list(x.shape[-2:]))  # "copy and crop"
        x = double(torch.cat([skip, x], dim=1), f"decoder.blocks.{j}.conv")
    return F.conv2d(x, p["segmentation_head.weight"], p["segmentation_head.bias"])


@pytest.mark.parametrize(
    ("name", "overrides", "size", "out"),
    [
        # Depth 3 by hand: 60 -> 56 /2 28 -> 24 /2 12 -> 8; up 16 -> 12, 24 -> 20.
        # 76 -> 72 /2 36 -> 32 /2 16 -> 12; up 24 -> 20, 40 -> 36.
        ("unet_original", {"base_width": 4, "depth": 3}, (60, 76), (20, 36)),
        ("unet", {"base_width": 4, "depth": 3, "upsample": "bilinear"}, (16, 24), (16, 24)),
        ("unet", {"base_width": 4, "depth": 4}, (24, 32), (24, 32)),
    ],
)
def test_matches_a_hand_built_functional_reference(name, overrides, size, out):
    model = create_model(name, num_classes=3, **overrides).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so a skipped BN would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    cfg = model.cfg
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        expected = _reference_unet(
            x, model.state_dict(), cfg.depth, cfg.padding, cfg.batch_norm, cfg.upsample
        )
        got = model(x)
    assert got.shape == (2, 3, *out)
    assert (got - expected).abs().max().item() <= 1e-5


# -- the skip ablation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "size"), [("unet_original", 188), ("unet", 32), ("unet_resnet18", 32)]
)
def test_without_skips_the_output_does_not_depend_on_the_skipped_features(name, size):
    # d(output)/d(feature) through the decoder, the features fed in as independent leaves: with
    # skips every feature matters; without, only the deepest (the others would reach the output
    # only through the concatenations).
    for skip in (True, False):
        model = create_model(name, skip=skip).eval()
        with torch.no_grad():
            feats = model.forward_intermediates(torch.randn(1, 1, size, size))
        feats = [f.detach().requires_grad_() for f in feats]
        out = model.forward_head(model.decode(feats))
        grads = torch.autograd.grad((out * torch.randn_like(out)).sum(), feats, allow_unused=True)
        assert grads[-1] is not None and grads[-1].abs().sum() > 0
        for g in grads[:-1]:
            if skip:
                assert g is not None and g.abs().sum() > 0
            else:
                assert g is None or not g.any()
        assert bool(list(model.iter_blocks())) == (skip or name == "unet_resnet18")


@pytest.mark.parametrize("name", ["unet_original", "unet_resnet18"])
def test_without_skips_only_the_concatenating_convolutions_get_narrower(name):
    with torch.device("meta"):
        with_skip = create_model(name).state_dict()
        without = create_model(name, skip=False).state_dict()
    assert list(with_skip) == list(without)
    narrowed = {}
    for key, t in with_skip.items():
        if t.shape != without[key].shape:
            assert t.shape[0] == without[key].shape[0] and t.shape[2:] == without[key].shape[2:]
            narrowed[key] = t.shape[1] - without[key].shape[1]
    if name == "unet_original":  # the concatenated encoder widths, deepest first
        expected = {
            f"decoder.blocks.{j}.conv.0.weight": c for j, c in enumerate([512, 256, 128, 64])
        }
    else:  # layer3, layer2, layer1, the stem's relu; the last block never had a skip
        expected = {
            f"decoder.blocks.{j}.conv.0.weight": c for j, c in enumerate([256, 128, 64, 64])
        }
    assert narrowed == expected


# -- configuration and the rest of the interface --------------------------------------------------
def test_overrides_reach_the_backbone_and_the_head():
    model = create_model("unet_resnet18", in_chans=3, num_classes=5).eval()
    assert model.encoder.conv1.in_channels == 3
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5, 32, 32)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("unet", {"widths": (8, 16)}, r"unknown option\(s\) \['widths'\].*allowed: .*base_width"),
        ("unet", {"upsample": "nearest"}, r"upsample must be one of \['transpose', 'bilinear'\]"),
        ("unet", {"depth": 1}, "depth >= 2"),
        ("unet", {"skip": 0}, "skip must be True or False"),
        ("unet", {"decoder_channels": (8,)}, "decoder_channels=None"),
        ("unet_resnet34", {"base_width": 32}, "base_width=None, depth=None, padding=True"),
        ("unet_resnet34", {"decoder_channels": (8, 8)}, "decoder_channels needs 5 entries"),
        ("unet_resnet34", {"encoder": "resnet35"}, "unknown model 'resnet35'"),
        ("unet_resnet34", {"encoder": "unet"}, "classification backbone"),
    ],
)
def test_bad_options_raise_clear_errors(name, overrides, message):
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        create_model(name, **overrides)


def test_grad_checkpointing_gives_the_same_gradients():
    model = create_model("unet", base_width=8).train()
    ckpt = copy.deepcopy(model)
    ckpt.set_grad_checkpointing(True)
    assert ckpt.encoder.grad_checkpointing and ckpt.decoder.grad_checkpointing
    calls = {"plain": 0, "ckpt": 0}
    for key, net in (("plain", model), ("ckpt", ckpt)):
        block = net.decoder.blocks[0]

        def counted(*args, key=key, forward=block.forward):
            calls[key] += 1
            return forward(*args)

        block.forward = counted  # the recomputation in backward calls forward, not the hooks
    x = torch.randn(2, 1, 32, 32)
    model(x).square().mean().backward()
    ckpt(x).square().mean().backward()
    assert calls == {"plain": 1, "ckpt": 2}  # the decoder block ran again in backward
    for (n, a), b in zip(model.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=n)
    for a, b in zip(model.buffers(), ckpt.buffers(), strict=True):  # BN stats updated once
        torch.testing.assert_close(a, b)


def test_torch_compile_fullgraph_matches_eager():
    model = create_model("unet").eval()
    x = torch.randn(1, 1, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
