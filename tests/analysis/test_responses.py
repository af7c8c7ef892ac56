"""Residual responses against the branch computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skiplab import create_model
from skiplab.analysis import residual_responses
from skiplab.models import Bottleneck, PreActBasic

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_bn(model: nn.Module) -> nn.Module:
    # Non-trivial eval-mode BatchNorm: running statistics and affine terms away from 0 / 1.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g, dtype=torch.float64) * 0.2)
    return model


def _bn(h: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    # Eval-mode BatchNorm written out: (h - mean) / sqrt(var + eps) * gamma + beta, per channel.
    c = (-1, 1, 1)
    scale = (bn.running_var + bn.eps).rsqrt().view(c)
    return (h - bn.running_mean.view(c)) * scale * bn.weight.view(c) + bn.bias.view(c)


def _basic_branch(unit, h: torch.Tensor) -> torch.Tensor:
    # F(x) = bn2(conv2(relu(bn1(conv1(x))))), He et al. 2015 Fig. 2, by hand.
    h1 = F.relu(_bn(F.conv2d(h, unit.conv1.weight, stride=unit.conv1.stride, padding=1), unit.bn1))
    return _bn(F.conv2d(h1, unit.conv2.weight, padding=1), unit.bn2)


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


def test_basic_units_match_the_branch_by_hand():
    model = _randomise_bn(create_model("resnet20", layers=(1, 1, 1)).double().eval())
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = {r.name: r for r in residual_responses(model, x)}
    assert list(out) == ["layer1.0", "layer2.0", "layer3.0"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k

    with torch.no_grad():
        stem = F.relu(_bn(F.conv2d(x, model.conv1.weight, padding=1), model.bn1))
        f1 = _basic_branch(model.layer1[0], stem)
        h1 = F.relu(f1 + stem)
        f2 = _basic_branch(model.layer2[0], h1)
        s2 = F.pad(h1[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))  # option A: subsample, pad 16 -> 32
    for name, f, s in (("layer1.0", f1, stem), ("layer2.0", f2, s2)):
        r = out[name]
        assert r.residual and r.branch_layer == "bn2"
        assert r.response_std == pytest.approx(f.std(correction=0).item(), rel=1e-12)
        ratio = (_per_sample_norm(f) / _per_sample_norm(s)).mean().item()
        assert r.norm_ratio == pytest.approx(ratio, rel=1e-12)
        assert r.branch_norm == pytest.approx(_per_sample_norm(f).mean().item(), rel=1e-12)
        assert r.shortcut_norm == pytest.approx(_per_sample_norm(s).mean().item(), rel=1e-12)


def test_plain_unit_reports_the_same_branch_before_its_relu():
    # A plain net has the residual net's parameter names: with the same weights its first unit
    # sees the same input and computes the same branch; the ratio compares F(x) with x.
    res = _randomise_bn(create_model("resnet20", layers=(1, 1, 1)).double().eval())
    plain = create_model("plain20", layers=(1, 1, 1)).double().eval()
    plain.load_state_dict(res.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    r_res = residual_responses(res, x, blocks="layer1.0")[0]
    (r_plain,) = residual_responses(plain, x, blocks=["layer1.0"])
    assert not r_plain.residual and r_plain.branch_layer == "bn2"
    assert r_plain.response_std == r_res.response_std
    assert r_plain.norm_ratio == pytest.approx(r_res.norm_ratio, rel=1e-12)  # identity: s = x


class _Units(nn.Module):
    """A chain of units with iter_blocks(), for units no registered CIFAR net has."""

    def __init__(self, *units: nn.Module) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)

    def iter_blocks(self):
        yield from ((f"units.{i}", u) for i, u in enumerate(self.units))

    def forward(self, x):
        for u in self.units:
            x = u(x)
        return x


def test_bottleneck_and_preact_projection_units():
    # Bottleneck: F(x) = bn3(conv3(...)); pre-activation unit with a projection: F(x) is conv2's
    # output and the shortcut projects relu(bn1(x)). Independent: preact has no ReLU after the
    # sum, so F(x) = unit(x) - skip(x) exactly.
    bottleneck = Bottleneck(8, 2, downsample=None)
    proj = nn.Sequential(nn.Conv2d(8, 6, 1, stride=2, bias=False))
    preact = PreActBasic(8, 6, stride=2, downsample=proj)
    model = _randomise_bn(_Units(bottleneck, preact).double().eval())
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    r_b, r_p = residual_responses(model, x)
    assert (r_b.branch_layer, r_p.branch_layer) == ("bn3", "conv2")
    with torch.no_grad():
        u = bottleneck
        h = F.relu(u.bn1(u.conv1(x)))
        fb = u.bn3(u.conv3(F.relu(u.bn2(u.conv2(h)))))
        hb = bottleneck(x)
        fp = preact(hb) - proj(F.relu(_bn(hb, preact.bn1)))
        sp = proj(F.relu(_bn(hb, preact.bn1)))
    assert r_b.response_std == pytest.approx(fb.std(correction=0).item(), rel=1e-12)
    assert r_b.norm_ratio == pytest.approx(
        (_per_sample_norm(fb) / _per_sample_norm(x)).mean().item(), rel=1e-12
    )
    assert r_p.response_std == pytest.approx(fp.std(correction=0).item(), rel=1e-10)
    assert r_p.norm_ratio == pytest.approx(
        (_per_sample_norm(fp) / _per_sample_norm(sp)).mean().item(), rel=1e-10
    )


def test_units_outside_the_contract_need_branch_layer():
    model = create_model("residual_mlp", depth=3, width=8, input_size=(3, 4, 4)).double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="no zero_init_last"):
        residual_responses(model, x)
    r = residual_responses(model, x, branch_layer=lambda n, b: b.act)
    assert [u.branch_layer for u in r] == ["act"] * len(r)
    with pytest.raises(ValueError, match="must return a submodule"):
        residual_responses(model, x, branch_layer=lambda n, b: nn.ReLU())
    with pytest.raises(ValueError, match="non-empty batch"):
        residual_responses(model, x[:0])
