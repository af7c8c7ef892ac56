"""Shortcut variants of He et al. 2016 ("Identity Mappings in Deep Residual Networks", section 3.1,
Fig. 2, Table 1) as an option of the ResNet family: every variant on a tiny net, each unit's
output against the formula written out from its own weights, parameter counts computed by hand,
the identity variant's exact equality with the default net, and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from skiplab import create_model
from skiplab.analysis.lesion import lesioned
from skiplab.models import BasicBlock, Bottleneck, PreActBasic, ShortcutOptions
from skiplab.models.resnet_blocks import SHORTCUT_VARIANTS, make_shortcut

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"widths": (4, 8, 16), "stem_width": 4}  # resnet20 at widths 4/8/16: 3 units a stage
VARIANTS = SHORTCUT_VARIANTS


def _tiny(name: str = "resnet20", **overrides) -> nn.Module:
    return create_model(name, **{**TINY, **overrides})


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    # Non-trivial BN statistics and affine parameters, so that eval-mode BN is not the identity.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


# -- every variant on a tiny net ------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("resnet20", TINY),  # original BasicBlock, option A
        ("resnet50", {"widths": (2, 4, 8, 16), "stem_width": 4, "layers": (1, 2, 1, 1)}),
        ("preact_resnet110", {**TINY, "layers": (2, 2, 2)}),  # pre-activation, option B
    ],
)
def test_forward_backward_shapes(name, overrides, variant):
    torch.manual_seed(0)
    model = create_model(name, shortcut_variant=variant, **overrides).train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert all(u.shortcut_variant == variant for _, u in model.iter_blocks())
    with torch.no_grad():  # inference (the identity variant adds in place there)
        assert model.eval()(x).shape == (2, model.num_classes)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fx_trace_gives_the_eager_output(variant):
    model = _tiny(shortcut_variant=variant).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


# -- the formula, written out from one unit's own submodules ------------------------------------
def _bn(bn: nn.BatchNorm2d, v: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(v, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _branch(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """F(x) of an original BasicBlock (eval mode), from its weights."""
    out = F.relu(_bn(unit.bn1, F.conv2d(x, unit.conv1.weight, stride=unit.conv1.stride, padding=1)))
    return _bn(unit.bn2, F.conv2d(out, unit.conv2.weight, padding=1))


def _plain_shortcut(unit: nn.Module, x: torch.Tensor, variant: str) -> torch.Tensor:
    """h(x): identity, option A (subsample by 2, pad channels evenly), or the 1x1 conv + BN."""
    if variant == "conv":
        conv, bn = unit.downsample[0], unit.downsample[1]
        return _bn(bn, F.conv2d(x, conv.weight, stride=conv.stride))
    if unit.downsample is None:
        return x
    sub = x[:, :, ::2, ::2]
    extra = unit.bn2.num_features - x.shape[1]
    return F.pad(sub, (0, 0, 0, 0, extra // 2, extra - extra // 2))


def _gate(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    conv = unit.shortcut_gate
    return 1.0 / (1.0 + torch.exp(-F.conv2d(x, conv.weight, conv.bias, stride=conv.stride)))


EXPECTED = {
    # variant: (output before the ReLU, skip(x) = the unit with its branch deleted)
    "identity": lambda f, h, g: (h + f, h),
    "constant": lambda f, h, g: (0.5 * h + 0.5 * f, 0.5 * h),
    "exclusive_gating": lambda f, h, g: ((1 - g) * h + g * f, (1 - g) * h),
    "shortcut_gating": lambda f, h, g: ((1 - g) * h + f, (1 - g) * h),
    "conv": lambda f, h, g: (h + f, h),
    "dropout": lambda f, h, g: (h + f, h),  # eval mode: dropout is the identity
}


@pytest.mark.parametrize("unit_name", ["layer1.1", "layer2.0"])  # identity / option A shortcut
@pytest.mark.parametrize("variant", VARIANTS)
def test_unit_computes_the_papers_formula(variant, unit_name):
    torch.manual_seed(1)
    gate = {"gate_bias": 0.5} if variant in ("exclusive_gating", "shortcut_gating") else {}
    model = _tiny(shortcut_variant=variant, **gate).double().eval()
    _randomise_bn(model)
    unit = dict(model.iter_blocks())[unit_name]
    x = torch.randn(2, unit.conv1.in_channels, 8, 8, dtype=torch.float64)
    f, h = _branch(unit, x), _plain_shortcut(unit, x, variant)
    g = _gate(unit, x) if gate else None
    if g is not None:  # a gate far from 0 and 1, so that a mix-up of g and 1-g would show
        assert 0.2 < g.mean() < 0.9
    before_relu, deleted = EXPECTED[variant](f, h, g)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), F.relu(before_relu), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(unit.skip(x), deleted, rtol=1e-12, atol=1e-12)
    with torch.enable_grad():  # the autograd path computes the same numbers
        torch.testing.assert_close(unit(x), F.relu(before_relu), rtol=1e-12, atol=1e-12)


def test_constant_without_branch_scaling_and_another_lambda():
    model = _tiny(shortcut_variant="constant", shortcut_scale=0.25, scale_branch=False)
    model = model.double().eval()
    _randomise_bn(model)
    unit = model.layer1[1]
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = F.relu(0.25 * x + _branch(unit, x))  # λ·x + F(x): the branch unscaled
        torch.testing.assert_close(unit(x), expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(unit.skip(x), 0.25 * x)


@pytest.mark.parametrize("variant", ["constant", "exclusive_gating", "conv", "dropout"])
def test_preact_unit_computes_the_formula_with_nothing_after_the_addition(variant):
    torch.manual_seed(2)
    gate = {"gate_bias": 0.5} if variant == "exclusive_gating" else {}
    model = create_model(
        "preact_resnet110", layers=(2, 1, 1), shortcut_variant=variant, **TINY, **gate
    )
    model = model.double().eval()
    _randomise_bn(model)
    unit = model.layer1[1]
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    pre = F.relu(_bn(unit.bn1, x))
    f = F.conv2d(F.relu(_bn(unit.bn2, F.conv2d(pre, unit.conv1.weight, padding=1))),
                 unit.conv2.weight, padding=1)  # fmt: skip
    h = F.conv2d(pre, unit.downsample[0].weight) if variant == "conv" else x  # no BN: preact
    g = _gate(unit, x) if gate else None  # the gate reads the raw input x
    with torch.no_grad():
        torch.testing.assert_close(unit(x), EXPECTED[variant](f, h, g)[0], rtol=1e-12, atol=1e-12)


def test_lesion_leaves_the_gated_shortcut():
    # Deleting the residual branch of an exclusive-gating unit leaves (1 - g(x))·x, not x.
    torch.manual_seed(3)
    model = _tiny(shortcut_variant="exclusive_gating", gate_bias=0.0).eval()
    unit, seen = model.layer1[1], {}
    unit.register_forward_hook(lambda m, a, out: seen.update(x=a[0], out=out))
    with torch.no_grad(), lesioned(model, ["layer1.1"]):
        model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(seen["out"], (1 - _gate(unit, seen["x"])) * seen["x"])


# -- the identity variant is the default net, exactly -------------------------------------------
def test_identity_variant_is_the_default_net():
    torch.manual_seed(4)
    default = _tiny().eval()
    torch.manual_seed(4)
    identity = _tiny(shortcut_variant="identity").eval()
    assert list(identity.state_dict()) == list(default.state_dict())
    for (_, a), (_, b) in zip(
        default.state_dict().items(), identity.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(identity(x), default(x))
    for (_, unit), (_, ref) in zip(identity.iter_blocks(), default.iter_blocks(), strict=True):
        assert set(unit.__dict__) == set(ref.__dict__)
        assert set(unit._modules) == set(ref._modules)  # nothing added to the unit
        assert set(unit._modules) <= {
            "conv1",
            "bn1",
            "relu",
            "conv2",
            "bn2",
            "downsample",
            "drop_path",
        }


def test_identity_variant_keeps_torchvision_parity():
    tv = torchvision.models.resnet18(weights=None).eval()
    _randomise_bn(tv)
    ours = create_model("resnet18", shortcut_variant="identity").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=1e-5)


# -- parameter counts ---------------------------------------------------------------------------
def _units(widths=(4, 8, 16), stem=4, n=3):
    """(in_ch, out_ch) of every unit of a CIFAR basic net."""
    units, inplanes = [], stem
    for w in widths:
        for _ in range(n):
            units.append((inplanes, w))
            inplanes = w
    return units


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("variant", ["exclusive_gating", "shortcut_gating"])
def test_gate_adds_exactly_its_1x1_convolutions(variant):
    base = _count(_tiny())
    gated = _tiny(shortcut_variant=variant)
    # One 1x1 convolution with bias per unit, in_ch -> out_ch: in*out weights + out biases.
    by_hand = sum(i * o + o for i, o in _units())
    assert by_hand == 3 * (16 + 4) + (32 + 8) + 2 * (64 + 8) + (128 + 16) + 2 * (256 + 16) == 932
    assert _count(gated) - base == by_hand
    for _, unit in gated.iter_blocks():
        i, o = unit.conv1.in_channels, unit.bn2.num_features
        assert unit.shortcut_gate.weight.shape == (o, i, 1, 1)
        assert unit.shortcut_gate.stride == unit.conv1.stride
        assert torch.equal(unit.shortcut_gate.bias, torch.full((o,), -6.0))  # b_g's default


def test_conv_variant_is_option_c_and_other_variants_add_no_parameters():
    base = _count(_tiny())
    conv = _tiny(shortcut_variant="conv")
    # A 1x1 convolution (in*out) and a BN (2*out) on every unit; option A had none.
    assert _count(conv) - base == sum(i * o + 2 * o for i, o in _units()) == 1016
    option_c = _tiny(shortcut="C")
    assert list(conv.state_dict()) == list(option_c.state_dict())
    for variant in ("constant", "dropout", "identity"):
        model = _tiny(shortcut_variant=variant)
        assert _count(model) == base
        assert list(model.state_dict()) == list(_tiny().state_dict())


# -- dropout on the shortcut --------------------------------------------------------------------
def test_dropout_shortcut_is_identity_in_eval_and_random_in_training():
    torch.manual_seed(5)
    model = _tiny(shortcut_variant="dropout")
    reference = _tiny()
    reference.load_state_dict(model.state_dict(), strict=True)  # same keys, same weights
    x = torch.randn(4, 3, 32, 32)
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        unit = model.layer1[1]
        v = torch.randn(4, 4, 8, 8)
        assert torch.equal(unit.skip(v), v)
        unit.train()
        kept = unit.skip(v)
        # nn.Dropout(0.5): each value zeroed or doubled, about half of each.
        zero = kept == 0
        assert 0.35 < zero.float().mean() < 0.65
        torch.testing.assert_close(kept[~zero], 2 * v[~zero])
        assert not torch.equal(unit.skip(v), kept)  # a new mask each call
    assert unit.shortcut_dropout.p == 0.5
    assert (
        _tiny(shortcut_variant="dropout", shortcut_dropout=0.2).layer1[0].shortcut_dropout.p == 0.2
    )


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"shortcut_variant": "gated"},
            r"shortcut_variant must be one of \['identity', 'constant', 'exclusive_gating', "
            r"'shortcut_gating', 'conv', 'dropout'\]; got 'gated'",
        ),
        (
            {"shortcut_variant": "constant", "shortcut_scale": 0},
            r"shortcut_scale must be in \(0, 1\); got 0",
        ),
        (
            {"shortcut_variant": "constant", "shortcut_scale": 1.5},
            r"shortcut_scale must be in \(0, 1\); got 1.5",
        ),
        (
            {"shortcut_variant": "constant", "shortcut_scale": -1, "scale_branch": False},
            "shortcut_scale must be > 0; got -1",
        ),
        (
            {"shortcut_variant": "constant", "scale_branch": "no"},
            "scale_branch must be True or False; got 'no'",
        ),
        (
            {"shortcut_variant": "exclusive_gating", "gate_bias": "low"},
            "gate_bias must be a number; got 'low'",
        ),
        (
            {"shortcut_variant": "shortcut_gating", "gate_bias": float("inf")},
            "gate_bias must be a finite number",
        ),
        (
            {"shortcut_variant": "dropout", "shortcut_dropout": 1.0},
            r"shortcut_dropout must be in \[0, 1\); got 1.0",
        ),
        (
            {"shortcut_scale": 0.3},
            r"shortcut_scale applies to shortcut_variant in \['constant'\] only; got "
            r"shortcut_scale=0.3 with shortcut_variant='identity'",
        ),
        (
            {"shortcut_variant": "constant", "gate_bias": -2.0},
            r"gate_bias applies to shortcut_variant in "
            r"\['exclusive_gating', 'shortcut_gating'\] only",
        ),
        ({"shortcut_variant": "conv", "shortcut_dropout": 0.1}, "shortcut_dropout applies to"),
        (
            {"shortcut_variant": "constant", "shortcut": "none"},
            r"shortcut='none' \(plain net\) has none",
        ),
        (
            {"shortcut_varient": "constant"},
            r"unknown option\(s\) \['shortcut_varient'\].*did you mean",
        ),
    ],
)
def test_bad_options_name_the_allowed_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**overrides)


def test_plain_registered_net_refuses_a_variant():
    with pytest.raises(ValueError, match=r"shortcut_variant='dropout' varies the shortcut"):
        create_model("plain20", shortcut_variant="dropout")


def test_units_refuse_what_they_cannot_build():
    with pytest.raises(
        ValueError, match=r"BasicBlock: shortcut_variant='constant' needs the residual"
    ):
        BasicBlock(4, 4, residual=False, shortcut_options=ShortcutOptions("constant"))
    with pytest.raises(ValueError, match=r"Bottleneck: shortcut_variant='conv' needs a 1x1 conv"):
        Bottleneck(16, 4, shortcut_options=ShortcutOptions("conv"))
    with pytest.raises(ValueError, match=r"PreActBasic: shortcut_variant='conv'.*PadShortcut"):
        PreActBasic(
            4, 8, 2, make_shortcut("A", 4, 8, 2, None), shortcut_options=ShortcutOptions("conv")
        )
    with pytest.raises(ValueError, match="shortcut_options must be a ShortcutOptions; got str"):
        BasicBlock(4, 4, shortcut_options="constant")
    # Built directly, with a projection, "conv" works on any unit.
    unit = Bottleneck(16, 4, downsample=make_shortcut("C", 16, 16, 1, nn.BatchNorm2d),
                      shortcut_options=ShortcutOptions("conv"))  # fmt: skip
    assert unit(torch.randn(1, 16, 4, 4)).shape == (1, 16, 4, 4)
