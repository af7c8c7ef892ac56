"""Gradient-flow measurements against direct computation."""

from __future__ import annotations

import torch

from skiplab import create_model
from skiplab.analysis.gradient_flow import block_jacobian_terms, gradient_norms


def test_block_input_gradients_match_autograd():
    model = create_model("resnet20").double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = gradient_norms(model, x, y)
    assert norms.block_names == [n for n, _ in model.iter_blocks()]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"measurement changed {k}"

    # Independent: split the net by hand at layer2.0 and differentiate w.r.t. its input.
    stem = model.relu(model.bn1(model.conv1(x)))
    h = model.layer1(stem).detach().requires_grad_(True)
    out = model.forward_head(model.layer3(model.layer2(h)))
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), h)
    assert abs(norms.block_input[norms.block_names.index("layer2.0")] - grad.norm().item()) < 1e-9
    fc = norms.weight_names.index("fc.weight")
    assert norms.weight[fc] == model.fc.weight.grad.norm().item()


def test_identity_units_pass_the_gradient_through_unchanged():
    # dH/dx = I + dF/dx with dF/dx = 0 (zero-initialised pre-activation units): the gradient at
    # the input of every unit of a stage is the same vector.
    model = create_model("preact_resnet110", layers=(4, 4, 4), zero_init_residual=True).double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (4,))
    norms = gradient_norms(model, x, y)
    stage1 = [
        v
        for n, v in zip(norms.block_names, norms.block_input, strict=True)
        if n.startswith("layer1.") and n != "layer1.0"
    ]
    # Every unit is an identity map, so its input gradient equals its output gradient exactly.
    assert max(stage1) - min(stage1) < 1e-12 * max(stage1)


def test_jacobian_of_zero_init_preact_block_is_identity():
    model = create_model("preact_resnet110", layers=(2, 2, 2), zero_init_residual=True).double()
    terms = block_jacobian_terms(model, torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert terms.block_names and "layer2.0" not in terms.block_names  # downsampling left out
    assert max(terms.residual) < 1e-12
    assert all(abs(t - 1.0) < 1e-12 for t in terms.total)


def test_jacobian_matches_finite_differences():
    model = create_model("resnet20").double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    terms = block_jacobian_terms(model, x, n_directions=1, seed=3)
    # Recompute the first block's J v by central differences with the same direction.
    block = model.layer1[0]
    xin = model.relu(model.bn1(model.conv1(x))).detach()
    v = torch.randn(xin.shape, generator=torch.Generator().manual_seed(3)).to(xin)
    v = v / v.norm()
    eps = 1e-6
    with torch.no_grad():
        jv = (block(xin + eps * v) - block(xin - eps * v)) / (2 * eps)
    assert abs(terms.total[0] - jv.norm().item()) < 1e-5
    assert abs(terms.residual[0] - (jv - v).norm().item()) < 1e-5
