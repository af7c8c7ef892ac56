"""The ResNet family: interface, torchvision parity, paper parameter counts, shortcut options."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from skiplab import create_model, list_models
from skiplab.models import BasicBlock, PadShortcut, PreActBasic, PreActBottleneck
from skiplab.models.resnet import RESNET_VARIANTS

from .model_tester import ModelTester

IMAGENET_NETS = [n for n, v in RESNET_VARIANTS.items() if v.input_size[1] == 224]
CIFAR_NETS = [n for n, v in RESNET_VARIANTS.items() if v.input_size[1] == 32]
HEAVY = {
    "resnext101_32x8d",
    "wide_resnet101_2",
    "wide_resnet50_2",
    "preact_resnet200",
    "resnet1202",
    "preact_resnet1001",
}


class TestImageNetResNets(ModelTester):
    names = tuple(n for n in IMAGENET_NETS if n not in HEAVY)
    input_shape = (1, 3, 64, 64)


class TestCifarResNets(ModelTester):
    names = tuple(n for n in CIFAR_NETS if n not in HEAVY)
    input_shape = (2, 3, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HEAVY))
def test_heavy_nets_forward_backward(name):
    # The biggest nets get forward/backward only; the cheap interface checks add nothing here.
    model = create_model(name)
    x = torch.randn(1, 3, 64, 64) if name in IMAGENET_NETS else torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (x.shape[0], model.num_classes) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# -- torchvision parity ---------------------------------------------------------------------------
TORCHVISION_NETS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    # Non-trivial BN statistics and affine parameters, so that a swapped buffer would show.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


@pytest.mark.parametrize("name", TORCHVISION_NETS)
def test_torchvision_parity_both_directions(name):
    tv = getattr(torchvision.models, name)(weights=None).eval()
    _randomise_bn(tv)
    ours = create_model(name).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tv(x)
        assert (ours(x) - expected).abs().max().item() <= 1e-5

    # And back: our weights into a fresh torchvision model.
    _randomise_bn(ours, seed=1)
    tv2 = getattr(torchvision.models, name)(weights=None).eval()
    tv2.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        assert (tv2(x) - ours(x)).abs().max().item() <= 1e-5


def test_torchvision_parity_at_224():
    tv = torchvision.models.resnet50(weights=None).eval()
    _randomise_bn(tv)
    ours = create_model("resnet50").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (ours(x) - tv(x)).abs().max().item() <= 1e-5


# -- exact parameter counts (He et al. 2015/2016; torchvision for ResNeXt/Wide) -------------------
PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
    "plain18": 11_515_688,
    "plain34": 21_623_848,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
    "preact_resnet164": 1_703_258,
    "preact_resnet1001": 10_327_706,
}


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_matches_paper(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("n", [3, 5, 7, 9, 18])
def test_plain_cifar_nets_have_the_same_parameters_as_option_a(n):
    with torch.device("meta"):
        res, plain = create_model(f"resnet{6 * n + 2}"), create_model(f"plain{6 * n + 2}")
    assert [k for k in res.state_dict()] == [k for k in plain.state_dict()]


def test_option_a_has_no_parameters_and_option_b_adds_2752():
    a = create_model("resnet20", shortcut="A")
    b = create_model("resnet20", shortcut="B")
    pads = [m for m in a.modules() if isinstance(m, PadShortcut)]
    assert len(pads) == 2 and all(not list(p.parameters()) for p in pads)
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(b) - count(a) == 2_752
    c = create_model("resnet20", shortcut="C")
    assert all(blk.downsample is not None for _, blk in c.iter_blocks())


def test_option_a_pads_zero_channels_evenly_and_subsamples():
    pad = PadShortcut(16, 32, stride=2)
    x = torch.randn(1, 16, 8, 8)
    y = pad(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert not y[:, :8].any() and not y[:, 24:].any()


# -- plain control nets ---------------------------------------------------------------------------
class HandWrittenPlainCifarNet(nn.Module):
    """plain20 written out by hand: 19 conv-BN-ReLU layers, global pool, fc (He et al. Fig. 3)."""

    def __init__(self) -> None:
        super().__init__()
        layers, in_ch = [], 3
        plan = [16] + [16] * 6 + [32] * 6 + [64] * 6
        strides = [1] + [1] * 6 + [2, 1, 1, 1, 1, 1] * 2
        for out_ch, stride in zip(plan, strides, strict=True):
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(),
            ]
            in_ch = out_ch
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.body(x))


def test_shortcut_none_equals_hand_written_plain_net():
    ours = create_model("resnet20", shortcut="none")
    ref = HandWrittenPlainCifarNet()
    _randomise_bn(ref)
    # Copy the reference's weights into ours in layer order (convs and BNs, then fc).
    ref_tensors = list(ref.state_dict().values())
    own_keys = list(ours.state_dict().keys())
    assert len(ref_tensors) == len(own_keys)
    ours.load_state_dict(dict(zip(own_keys, ref_tensors, strict=True)), strict=True)
    x = torch.randn(4, 3, 32, 32)
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=1e-6)
    # And it is really different from the residual net with the same weights.
    res = create_model("resnet20").eval()
    res.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (res(x) - ours(x)).abs().max() > 1e-3


# -- blocks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("block_cls", [PreActBasic, PreActBottleneck])
def test_preact_block_puts_nothing_after_the_addition(block_cls):
    planes = 8
    inplanes = planes * block_cls.expansion
    block = block_cls(inplanes, planes).eval()
    x = torch.randn(2, inplanes, 6, 6)
    with torch.no_grad():
        out = block(x)
        pre = block.relu(block.bn1(x))
        branch = block.conv2(block.relu(block.bn2(block.conv1(pre))))
        if block_cls is PreActBottleneck:
            branch = block.conv3(block.relu(block.bn3(branch)))
    torch.testing.assert_close(out, branch + x, rtol=0, atol=0)
    assert (out < 0).any(), "a ReLU after the addition would have removed negative values"


def test_stride_in_1x1_moves_the_stride():
    v15 = create_model("resnet50")
    caffe = create_model("resnet50", stride_in_1x1=True)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet164", "preact_resnet18"])
def test_zero_init_residual_makes_blocks_identity_maps(name):
    model = create_model(name, zero_init_residual=True).eval()
    preact = model.cfg.preact
    checked = 0
    for _, block in model.iter_blocks():
        if block.downsample is not None:
            continue
        c = block.conv1.in_channels
        # A post-activation block ends with ReLU: its inputs (ReLU outputs) are >= 0.
        x = torch.randn(2, c, 8, 8)
        x = x if preact else x.relu()
        with torch.no_grad():
            torch.testing.assert_close(block(x), x, rtol=0, atol=0)
        checked += 1
    assert checked > 0


def test_without_zero_init_blocks_are_not_identity():
    block = create_model("resnet20").eval().layer1[0]
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        assert (block(x) - x).abs().max() > 1e-3


def test_block_refuses_downsample_without_residual():
    with pytest.raises(ValueError, match="without residual"):
        BasicBlock(16, 32, 2, downsample=PadShortcut(16, 32, 2), residual=False)


def test_drop_path_rate_rises_linearly_and_only_acts_in_training():
    model = create_model("resnet20", drop_path_rate=0.2)
    rates = [getattr(b.drop_path, "p", 0.0) for _, b in model.iter_blocks()]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    steps = [b - a for a, b in zip(rates, rates[1:], strict=False)]
    assert max(steps) - min(steps) < 1e-9
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    b = model(x)
    assert (a - b).abs().max() > 0


@pytest.mark.parametrize("every", [1, 2])  # 2: segments of 2 + 1 units in a 3-unit stage
def test_grad_checkpointing_gives_identical_gradients_and_bn_statistics(every):
    torch.manual_seed(0)
    plain = create_model("resnet20", drop_path_rate=0.1)
    ckpt = create_model("resnet20", drop_path_rate=0.1)
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing(True, every=every)
    x = torch.randn(4, 3, 32, 32)
    for model in (plain, ckpt):
        torch.manual_seed(3)
        model(x).logsumexp(1).mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-6, msg=name)
    for (name, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"BatchNorm buffer {name} changed differently"
    with pytest.raises(ValueError, match="every must be a positive integer; got 0"):
        ckpt.set_grad_checkpointing(True, every=0)


def test_stage_hooks_fire_with_grad_checkpointing():
    model = create_model("resnet20", layers=[2, 2, 2]).train()
    model.set_grad_checkpointing(True, every=1)
    assert [model.get_submodule(n).checkpoint_every for n in model.stage_names] == [1, 1, 1]
    seen: list[tuple[int, ...]] = []
    model.layer2.register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape)))
    unit, calls = model.layer2[1], []
    unit.forward = lambda x, forward=unit.forward: (calls.append(1), forward(x))[1]
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    model(x).sum().backward()  # checkpointed: the stage is still one module call
    assert len(calls) == 2  # the unit ran again in backward: checkpointing is on
    with torch.no_grad():
        model.eval()(x)  # not checkpointed
    assert seen == [(2, 32, 16, 16)] * 2 and len(calls) == 3
    model.set_grad_checkpointing(False)
    assert [model.get_submodule(n).checkpoint_every for n in model.stage_names] == [0, 0, 0]


# -- registry and validation ----------------------------------------------------------------------
def test_list_models_has_every_variant():
    names = list_models()
    for n in IMAGENET_NETS + CIFAR_NETS:
        assert n in names
    assert list_models("resnet1*") == [
        "resnet18",
        "resnet101",
        "resnet110",
        "resnet152",
        "resnet1202",
    ]
    assert "plain20" in list_models(family="cifar_plain")


def test_unknown_model_names_closest():
    with pytest.raises(KeyError, match="resnet56"):
        create_model("resnet65")


def test_duplicate_registration_raises():
    from skiplab.registry import register_model

    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet20", family="x", input_size=(3, 32, 32))(lambda: None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"shortcut": "D"}, r"shortcut must be one of \['A', 'B', 'C', 'none'\]; got 'D'"),
        ({"num_classes": -1}, "num_classes"),
        ({"drop_path_rate": 1.5}, "drop_path_rate"),
        ({"in_chans": 0}, "in_chans"),
        ({"zero_init_residual": "yes"}, "zero_init_residual"),
        ({"colour": 3}, r"unknown option\(s\) \['colour'\].*allowed"),
    ],
)
def test_bad_overrides_name_the_allowed_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        create_model("resnet20", **overrides)


def test_overrides_pass_through():
    model = create_model("resnet56", num_classes=100, in_chans=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 100)
    headless = create_model("resnet18", num_classes=0).eval()
    assert headless(torch.randn(1, 3, 64, 64)).shape == (1, 512)


def test_wrong_input_message_is_exact():
    model = create_model("resnet56")
    with pytest.raises(ValueError) as err:
        model(torch.randn(8, 1, 32, 32))
    assert str(err.value) == "resnet56 expects input of shape (N, 3, H, W); got (8, 1, 32, 32)"
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"H and W >= 32"):
        create_model("resnet18")(torch.randn(1, 3, 16, 16))


def test_models_are_dtype_agnostic_and_silent(capsys):
    model = create_model("resnet20").double().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert out.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert create_model("resnet20").eval()(torch.randn(2, 3, 32, 32)).dtype == torch.bfloat16
    assert capsys.readouterr() == ("", "")


# -- compile and export ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "size"), [("resnet20", 32), ("resnet50", 64)])
def test_compile_fullgraph_matches_eager(name, size):
    model = create_model(name).eval()
    x = torch.randn(2, 3, size, size)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "size"), [("resnet20", 32), ("resnet50", 64)])
def test_torch_export_matches_eager(name, size):
    model = create_model(name).eval()
    x = torch.randn(2, 3, size, size)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet20", "resnet50", "preact_resnet18", "plain20"])
def test_inference_without_autograd_computes_what_autograd_mode_computes(name):
    # Without autograd the units add the shortcut in place and forward_features keeps no
    # intermediate maps; the result must be the same numbers.
    torch.manual_seed(0)
    model = create_model(name).eval()
    size = 64 if name in ("resnet50", "preact_resnet18") else 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        quick = model(x)
    with torch.enable_grad():
        tracked = model(x.requires_grad_())
    assert torch.equal(quick, tracked.detach())
    with torch.no_grad():
        last = model.forward_intermediates(x)[-1]
        if model.cfg.preact:  # stage outputs come before the final BN-ReLU
            last = model.final_act(model.norm(last))
        assert torch.equal(model.forward_features(x), last)
