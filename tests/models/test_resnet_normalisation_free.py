"""Normalisation-free ResNets (``norm="none"``) and a learned scalar on the residual branch
(``branch_scale``, SkipInit / ReZero): no BatchNorm anywhere, identity at initialisation with a
scalar started at 0, the default nets unchanged, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skiplab import create_model
from skiplab.fuse import conv_bn_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"widths": (4, 8, 16), "stem_width": 4}


def test_defaults_keep_the_state_dict():
    torch.manual_seed(0)
    default = create_model("resnet20", **TINY)
    torch.manual_seed(0)
    explicit = create_model("resnet20", norm="bn", branch_scale=None, **TINY)
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert not any("branch_gain" in k for k in default.state_dict())
    x = torch.randn(2, 3, 16, 16)
    default.eval(), explicit.eval()
    assert torch.equal(default(x), explicit(x))


@pytest.mark.parametrize("name", ["resnet20", "plain20", "preact_resnet110", "resnet50"])
def test_norm_none_removes_every_batchnorm(name):
    overrides = {"layers": (1, 1, 1)} if name == "preact_resnet110" else {}
    if name == "resnet50":
        overrides = {"widths": (2, 4, 8, 16), "stem_width": 4, "layers": (1, 1, 1, 1)}
    else:
        overrides = {**TINY, **overrides}
    model = create_model(name, norm="none", **overrides)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert conv_bn_pairs(model) == []  # nothing to fold
    assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


@pytest.mark.parametrize(
    ("name", "layers"), [("resnet20", (2, 2, 2)), ("preact_resnet110", (2, 1, 1))]
)
def test_branch_scale_zero_is_the_shortcut_path_at_init(name, layers):
    """With α = 0 every unit computes its shortcut alone: the net is stem -> skips -> head."""
    torch.manual_seed(0)
    model = create_model(name, norm="none", branch_scale=0.0, **{**TINY, "layers": layers}).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        h = model._stem(x)
        for _, unit in model.iter_blocks():
            h = unit.skip(h)
            if not model.cfg.preact:
                h = torch.relu(h)  # the ReLU after the addition (h >= 0 already: a no-op)
        expected = model.forward_head(model.final_act(model.norm(h)) if model.cfg.preact else h)
        assert torch.equal(model(x), expected)
    gains = [p for n, p in model.named_parameters() if n.endswith("branch_gain")]
    assert len(gains) == sum(layers) and all(g.item() == 0.0 and g.requires_grad for g in gains)


def test_branch_scale_is_learned_and_multiplies_the_branch():
    torch.manual_seed(0)
    model = create_model("resnet20", norm="none", branch_scale=0.0, **TINY)
    loss = model(torch.randn(4, 3, 16, 16)).square().sum()
    loss.backward()
    assert model.layer1[0].branch_gain.grad is not None
    unit = create_model("resnet20", branch_scale=0.5, **TINY).layer1[0].eval()
    x = torch.rand(2, 4, 8, 8)
    with torch.no_grad():
        f = unit.bn2(unit.conv2(unit.relu(unit.bn1(unit.conv1(x)))))
        assert torch.allclose(unit(x), torch.relu(x + 0.5 * f))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"shortcut": "none", "branch_scale": 0.0}, "branch_scale scales the residual branch"),
        ({"shortcut_variant": "constant", "branch_scale": 0.0}, "identity shortcut"),
        ({"branch_scale": float("nan")}, "finite"),
        ({"norm": "none", "zero_init_residual": True}, "use branch_scale=0"),
        ({"norm": "layer"}, "norm"),
    ],
)
def test_clear_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model("resnet20", **{**TINY, **overrides})
