"""Highway networks: the layer against a hand-written Eq. (3), gradient checks, forced gates,
the plain / residual controls, the 19-layer CIFAR net's size, and the common interface."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skiplab import create_model, get_model_entry, list_models
from skiplab.complexity import count_parameters
from skiplab.models.highway import HighwayLayer
from tests.models.model_tester import ModelTester

MLP_NAMES = ("highway_mlp", "residual_mlp", "plain_mlp")


pytestmark = pytest.mark.usefixtures("one_thread")


class TestHighwayModels(ModelTester):
    names = (*MLP_NAMES, "highway_cifar19")


class TestHighwayMLPOtherInput(ModelTester):
    # The paper's MNIST setting: 1x28x28 images, depth 20.
    names = MLP_NAMES
    input_shape = (2, 1, 28, 28)
    overrides = {"input_size": (1, 28, 28), "depth": 20}


def test_registry():
    assert list_models(family="highway") == sorted(["highway_cifar19", *MLP_NAMES])
    for name in MLP_NAMES:
        assert get_model_entry(name).depth == 10
    assert get_model_entry("highway_cifar19").depth == 19


# -- the layer -------------------------------------------------------------------------------
def _reference(layer: HighwayLayer, x: torch.Tensor, spatial: bool) -> torch.Tensor:
    """Eq. (3) written out from the layer's weights: y = T * H + (1 - T) * x."""
    op = (
        (lambda m, v: F.conv2d(v, m.weight, m.bias, padding=1))
        if spatial
        else (lambda m, v: F.linear(v, m.weight, m.bias))
    )
    h = torch.relu(op(layer.h, x))
    if layer.skip_kind == "none":
        return h
    if layer.skip_kind == "residual":
        return x + h
    t = 1.0 / (1.0 + torch.exp(-op(layer.gate.proj, x)))
    return t * h + (1.0 - t) * x


@pytest.mark.parametrize("spatial", [False, True])
@pytest.mark.parametrize("skip", ["highway", "residual", "none"])
def test_layer_matches_equation(skip, spatial):
    layer = HighwayLayer(6, spatial=spatial, skip=skip).double()
    x = (
        torch.randn(3, 6, 5, 5, dtype=torch.float64)
        if spatial
        else torch.randn(3, 6, dtype=torch.float64)
    )
    torch.testing.assert_close(layer(x), _reference(layer, x, spatial), rtol=1e-12, atol=1e-12)
    assert (layer.gate is None) == (skip != "highway")


@pytest.mark.parametrize("spatial", [False, True])
def test_layer_gradcheck(spatial):
    layer = HighwayLayer(4, spatial=spatial).double()
    # A positive gate bias keeps T away from 0 so that H's gradient is well exercised.
    torch.nn.init.constant_(layer.gate.proj.bias, 0.5)
    shape = (2, 4, 3, 3) if spatial else (3, 4)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params = tuple(layer.parameters())
    assert torch.autograd.gradcheck(
        lambda inp, *ps: torch.func.functional_call(
            layer, dict(zip([n for n, _ in layer.named_parameters()], ps, strict=True)), (inp,)
        ),
        (x, *params),
    )


def test_gate_bias_default_and_override():
    assert torch.all(HighwayLayer(8).gate.proj.bias == -2.0)
    model = create_model("highway_mlp", gate_bias=-3.0)
    for _, layer in model.iter_blocks():
        assert torch.all(layer.gate.proj.bias == -3.0)
    model = create_model("highway_cifar19", gate_bias=-1)
    for _, layer in model.iter_blocks():
        assert torch.all(layer.gate.proj.bias == -1.0)


def test_gate_value_is_readable():
    layer = HighwayLayer(16)
    seen = {}
    layer.gate.register_forward_hook(lambda _m, _i, out: seen.setdefault("t", out))
    assert layer.gate.last_mean is None
    layer(torch.randn(32, 16))
    torch.testing.assert_close(layer.gate.last_mean, seen["t"].mean())
    # b_T = -2 with small inputs: T is near sigmoid(-2) = 0.119, far from 0.5.
    assert 0.02 < layer.gate.last_mean.item() < 0.4


@pytest.mark.parametrize("spatial", [False, True])
def test_forced_closed_returns_input_exactly(spatial):
    layer = HighwayLayer(5, spatial=spatial)
    torch.nn.init.constant_(layer.gate.proj.bias, 10.0)  # learned gate would be wide open
    x = torch.randn(2, 5, 4, 4) if spatial else torch.randn(2, 5)
    layer.set_gate("closed")
    assert torch.equal(layer(x), x)
    assert layer.gate.last_mean.item() == 0.0
    layer.set_gate("open")
    torch.testing.assert_close(layer(x), torch.relu(layer.h(x)), rtol=0, atol=0)
    assert layer.gate.last_mean.item() == 1.0
    layer.set_gate("learned")
    assert not torch.equal(layer(x), x)


def test_all_gates_closed_make_the_net_its_projection():
    model = create_model("highway_mlp", depth=6).eval()
    for _, layer in model.iter_blocks():
        layer.set_gate("closed")
    x = torch.randn(3, 3, 32, 32)
    hidden = torch.relu(model.proj(x.flatten(1)))
    torch.testing.assert_close(model(x), model.classifier(hidden), rtol=0, atol=0)


def test_set_gate_errors():
    with pytest.raises(ValueError, match=r"gate mode must be one of \['learned', 'closed', "):
        HighwayLayer(4).set_gate("shut")
    with pytest.raises(ValueError, match="only highway layers have a gate; .*'residual'"):
        HighwayLayer(4, skip="residual").set_gate("closed")


# -- the MLPs --------------------------------------------------------------------------------
def test_mlps_share_everything_but_the_skip():
    width, depth = 50, 20
    models = {n: create_model(n, depth=depth, width=width) for n in MLP_NAMES}
    for name, model in models.items():
        assert [type(m) for _, m in model.iter_blocks()] == [HighwayLayer] * depth
        assert (
            model.cfg.skip
            == {"highway_mlp": "highway", "residual_mlp": "residual", "plain_mlp": "none"}[name]
        )
    # Hand count: projection 3072*50+50, per layer H 50*50+50 (+ gate 50*50+50), head 50*10+10.
    plain = 3072 * 50 + 50 + depth * (50 * 50 + 50) + 50 * 10 + 10
    assert count_parameters(models["plain_mlp"]) == plain
    assert count_parameters(models["residual_mlp"]) == plain
    assert count_parameters(models["highway_mlp"]) == plain + depth * (50 * 50 + 50)


def test_residual_and_plain_nets_compute_their_equations():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    for name, step in (("plain_mlp", lambda h, v: h), ("residual_mlp", lambda h, v: v + h)):
        model = create_model(name, depth=3).eval()
        v = torch.relu(model.proj(x.flatten(1)))
        for layer in model.layers:
            v = step(torch.relu(layer.h(v)), v)
        torch.testing.assert_close(model(x), model.classifier(v), rtol=1e-6, atol=1e-6)


def test_residual_branch_scale_starts_as_identity_and_learns():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    model = create_model("residual_mlp", depth=100, branch_scale=0.0)
    # Every layer is the identity at the start: the net is proj -> classifier, at any depth.
    v = torch.relu(model.proj(x.flatten(1)))
    torch.testing.assert_close(model(x), model.classifier(v))
    model(x).square().sum().backward()
    scales = [layer.branch_scale for layer in model.layers]
    assert all(s.grad is not None and s.grad.abs() > 0 for s in scales)
    assert (
        count_parameters(model) == count_parameters(create_model("residual_mlp", depth=100)) + 100
    )
    # a * H(x) + x with a learned a.
    model = create_model("residual_mlp", depth=2, branch_scale=0.5).eval()
    v = torch.relu(model.proj(x.flatten(1)))
    for layer in model.layers:
        v = 0.5 * torch.relu(layer.h(v)) + v
    torch.testing.assert_close(model(x), model.classifier(v), rtol=1e-6, atol=1e-6)
    for name in ("highway_mlp", "plain_mlp"):
        with pytest.raises(ValueError, match="branch_scale applies to residual nets only"):
            create_model(name, branch_scale=0.0)


def test_mlp_input_checks():
    model = create_model("highway_mlp")
    with pytest.raises(
        ValueError,
        match=r"highway_mlp expects input of shape \(N, 3, 32, 32\); "
        r"got \(2, 3, 28, 28\)",
    ):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"shape \(N, 3, 32, 32\); got \(1, 3, 32, 40"):
        model(torch.randn(1, 3, 32, 40))
    assert model.feature_info[0].reduction == 32 and model.feature_info[0].num_chs == 50


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("highway_mlp", {"deep": 3}, r"unknown option\(s\) \['deep'\].*allowed: .*'depth'"),
        (
            "highway_mlp",
            {"skip": "dense"},
            r"skip must be one of \['highway', 'residual', 'none'\]; got 'dense'",
        ),
        ("highway_mlp", {"depth": 0}, "depth must be a positive integer; got 0"),
        ("highway_mlp", {"width": 2.5}, "width must be a positive integer; got 2.5"),
        ("highway_mlp", {"gate_bias": "low"}, "gate_bias must be a number; got 'low'"),
        ("highway_mlp", {"input_size": (32, 32)}, r"input_size must be \(C, H, W\)"),
        ("highway_cifar19", {"widths": (32, 64)}, "widths and layers need one entry per stage"),
        ("highway_cifar19", {"drop_rate": -0.1}, r"drop_rate must be in \[0, 1\); got -0.1"),
        ("highway_cifar19", {"num_classes": 1.0}, "num_classes must be an integer >= 0"),
        ("highway_cifar19", {"depth": 3}, r"unknown option\(s\) \['depth'\].*'layers'"),
    ],
)
def test_bad_overrides_raise(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, **overrides)


# -- the CIFAR net ---------------------------------------------------------------------------
def test_cifar19_size_and_layout():
    model = create_model("highway_cifar19")

    def conv(cin, cout, k=3):
        return cin * cout * k * k + cout

    def highway(c):
        return 2 * conv(c, c)  # H and T

    expected = (
        conv(3, 32)
        + 4 * highway(32)
        + conv(32, 80)
        + 5 * highway(80)
        + conv(80, 128)
        + 5 * highway(128)
        + conv(128, 100, k=1)
        + 100 * 10
        + 10
    )
    assert count_parameters(model) == expected == 2_256_838  # the paper's "2.3M" (Table 2)
    weighted = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    gates = [layer.gate.proj for _, layer in model.iter_blocks()]
    assert len(weighted) - len(gates) == model.cfg.depth == 19
    assert len(gates) == 14


def test_cifar19_skip_kinds_and_features():
    x = torch.randn(2, 3, 32, 32)
    for skip in ("residual", "none"):
        model = create_model("highway_cifar19", skip=skip)
        assert all(layer.gate is None for _, layer in model.iter_blocks())
        assert model(x).shape == (2, 10)
    model = create_model("highway_cifar19").eval()
    with torch.no_grad():
        feats = model.forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 32, 32), (2, 80, 16, 16), (2, 128, 8, 8)]
    assert model.forward_head(feats[-1], pre_logits=True).shape == (2, 100)


def test_grad_checkpointing_matches_default():
    model = create_model("highway_cifar19", drop_rate=0.0)
    ckpt = create_model("highway_cifar19", drop_rate=0.0)
    ckpt.load_state_dict(model.state_dict())
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 16, 16)
    model(x).square().mean().backward()
    ckpt(x).square().mean().backward()
    for (n, p), q in zip(model.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.parametrize(
    ("name", "shape"), [("highway_cifar19", (2, 3, 16, 16)), ("highway_mlp", (2, 3, 32, 32))]
)
def test_compile_matches_eager(name, shape):
    model = create_model(name).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
