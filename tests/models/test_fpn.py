"""The FPN family: interface, parity of the neck with torchvision's FeaturePyramidNetwork, the
lateral ablation and single-level heads proved with gradients, clear errors, torch.compile.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from skiplab import create_model
from skiplab.models.fpn import FeaturePyramid

from .model_tester import ModelTester


class TestFPNs(ModelTester):
    names = ("fpn_resnet18", "fpn_resnet34", "fpn_resnet50")
    input_shape = (2, 3, 32, 32)  # RGB by default (COCO); ISBI 2012 runs pass in_chans=1

    def expected_output_shape(self, model, x):
        return (x.shape[0], model.num_classes, *x.shape[-2:])


# -- the neck against torchvision -----------------------------------------------------------------
IN_CHANNELS = [8, 16, 24, 32]
# Odd sizes on purpose: the top-down path must upsample to each lateral's size, not x2.
SIZES = [25, 13, 7, 4]


def _features(batch: int = 2) -> list[torch.Tensor]:
    return [torch.randn(batch, c, s, s + 3) for c, s in zip(IN_CHANNELS, SIZES, strict=True)]


def _randomise(module: nn.Module) -> None:
    # Non-zero biases too: both libraries initialise them to 0, which would hide a swap.
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.2)


@pytest.mark.parametrize("extra_p6", [False, True])
def test_neck_matches_torchvision_both_directions(extra_p6):
    tv = FeaturePyramidNetwork(
        IN_CHANNELS, 16, extra_blocks=LastLevelMaxPool() if extra_p6 else None
    )
    ours = FeaturePyramid(IN_CHANNELS, 16, extra_p6)
    # The key names of the installed torchvision (inner_blocks.N.0.weight since 0.13).
    assert list(ours.state_dict()) == list(tv.state_dict())
    assert "inner_blocks.0.0.weight" in tv.state_dict()

    feats = _features()
    named = OrderedDict((f"c{i + 2}", f) for i, f in enumerate(feats))
    _randomise(tv)
    ours.load_state_dict(tv.state_dict(), strict=True)
    with torch.no_grad():
        expected, got = list(tv(named).values()), ours(feats)
    assert len(got) == len(expected) == 4 + extra_p6
    for e, g in zip(expected, got, strict=True):
        assert e.shape == g.shape and (e - g).abs().max().item() <= 1e-5
    if extra_p6:
        assert got[-1].shape[-2:] == (2, 4)  # P5 (4 x 7) subsampled with stride 2

    # And back: our weights into a fresh torchvision module.
    _randomise(ours)
    tv2 = FeaturePyramidNetwork(
        IN_CHANNELS, 16, extra_blocks=LastLevelMaxPool() if extra_p6 else None
    )
    tv2.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        for e, g in zip(tv2(named).values(), ours(feats), strict=True):
            assert (e - g).abs().max().item() <= 1e-5


def test_neck_rejects_wrong_features_before_compute():
    neck = FeaturePyramid(IN_CHANNELS, 16)
    feats = _features()
    with pytest.raises(ValueError, match=r"expects 4 maps .*C = \[8, 16, 24, 32\]; got shapes"):
        neck(feats[:3])
    feats[1] = torch.randn(2, 17, 13, 16)
    with pytest.raises(ValueError, match=r"got shapes \[\(2, 8, 25, 28\), \(2, 17, 13, 16\)"):
        neck(feats)
    with pytest.raises(ValueError, match="out_indices"):
        FeaturePyramid(IN_CHANNELS, 16, out_indices=(2, 1))
    with pytest.raises(ValueError, match="extra_p6 subsamples the top level"):
        FeaturePyramid(IN_CHANNELS, 16, True, out_indices=(0,))


# -- ablations, proved with gradients -------------------------------------------------------------
def _feature_gradients(model) -> list[torch.Tensor | None]:
    """d(logits)/d(backbone feature), the features fed in as independent leaves."""
    model.eval()
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 32, 32))
    feats = [f.detach().requires_grad_() for f in feats]
    out = model.forward_head(model.decode(feats))
    assert out.shape == (1, 2, 32, 32)
    return list(torch.autograd.grad((out * torch.randn_like(out)).sum(), feats, allow_unused=True))


def _affects(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.any())


# Backbone features: [relu (stride 2), C2, C3, C4, C5]. The stride-2 map is not in the pyramid.
@pytest.mark.parametrize(
    ("overrides", "affecting"),
    [
        ({}, [False, True, True, True, True]),
        ({"lateral": False}, [False, False, False, False, True]),  # Lin et al. Table 1 (e)
        ({"levels": (2,)}, [False, True, True, True, True]),  # (f): P2 carries the top-down path
        ({"levels": (5,)}, [False, False, False, False, True]),  # the top level alone
        ({"levels": (4, 5), "lateral": False}, [False, False, False, False, True]),
    ],
)
def test_which_backbone_features_reach_the_output(overrides, affecting):
    grads = _feature_gradients(create_model("fpn_resnet18", **overrides))
    assert [_affects(g) for g in grads] == affecting


def test_ablations_build_only_what_they_use():
    # Every parameter gets a gradient (no dead lateral or output convolutions are built).
    for overrides in ({"lateral": False}, {"levels": (2,)}, {"levels": (5,)}):
        model = create_model("fpn_resnet18", **overrides)
        model(torch.randn(2, 3, 32, 32)).square().mean().backward()
        assert all(p.grad is not None for p in model.parameters()), overrides
    model = create_model("fpn_resnet18", lateral=False)
    assert list(model.neck.inner_blocks) == ["3"]
    assert [n for n, _ in model.iter_blocks() if n.startswith("neck")] == []
    model = create_model("fpn_resnet18", levels=(5,))
    assert list(model.neck.inner_blocks) == ["3"] and list(model.neck.layer_blocks) == ["3"]


def test_semantic_branch_upsampling_stages_follow_panoptic_fpn():
    # Kirillov et al. 2019, Fig. 3: P2 one conv stage, P3 one, P4 two, P5 three x2 upsamplings.
    model = create_model("fpn_resnet34").eval()
    convs = [sum(isinstance(m, nn.Conv2d) for m in s.modules()) for s in model.decoder.stages]
    ups = [sum(isinstance(m, nn.Upsample) for m in s.modules()) for s in model.decoder.stages]
    norms = [m for m in model.decoder.modules() if isinstance(m, nn.GroupNorm)]
    assert convs == [1, 1, 2, 3] and ups == [0, 1, 2, 3]
    assert len(norms) == 7 and all(n.num_groups == 32 and n.num_channels == 128 for n in norms)
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 128, 8, 8)


# -- errors, overrides, compile -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"levels": (1, 2)}, r"levels must be increasing integers >= 2"),
        ({"levels": (3, 2)}, r"levels must be increasing integers >= 2"),
        ({"levels": (2, 6)}, r"levels \(2, 6\) need backbone stages at strides \[4, 64\]"),
        ({"segmentation_channels": 100}, "multiple of 32"),
        ({"lateral": "no"}, "lateral must be True or False"),
        ({"encoder": "resnet20"}, "strides must be powers of two, doubling"),  # CIFAR net
        ({"extra_p6": True}, r"unknown option\(s\) \['extra_p6'\].*allowed: \["),
    ],
)
def test_bad_options_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message), torch.device("meta"):
        create_model("fpn_resnet18", **overrides)


def test_sizes_off_the_stride_raise_naming_the_nearest_valid_ones():
    with pytest.raises(
        ValueError, match=r"fpn_resnet18: input W=80 .*nearest valid sizes: 64 and 96"
    ):
        create_model("fpn_resnet18")(torch.zeros(1, 3, 64, 80))


def test_overrides_reach_the_backbone_and_the_head():
    # in_chans=1: how the chapter's ISBI 2012 runs (grayscale) build it.
    model = create_model("fpn_resnet18", in_chans=1, num_classes=5, pyramid_channels=64).eval()
    assert model.encoder.conv1.in_channels == 1
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 5, 32, 32)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, H, W\); got \(1, 3"):
        model(torch.randn(1, 3, 32, 32))


def test_torch_compile_fullgraph_matches_eager():
    model = create_model("fpn_resnet18").eval()
    x = torch.randn(1, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
