"""Filter normalisation, loss surfaces and Hessian eigenvalues against closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skiplab import create_model
from skiplab.analysis import (
    filter_normalize,
    filter_normalized_direction,
    hessian_extreme_eigenvalues,
    hessian_vector_product,
    loss_surface,
)
from skiplab.models._base import frozen_bn_stats

pytestmark = pytest.mark.usefixtures("one_thread")


class _Quadratic(nn.Module):
    """A "model" whose output is its own loss 0.5 w^T A w (the input is ignored)."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.w = nn.Parameter(torch.randn(a.shape[0], dtype=torch.float64))

    def forward(self, x):
        return 0.5 * self.w @ self.a @ self.w


def _own_output(out, _y):
    return out


def _sym(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (m + m.T) / 2  # indefinite: eigenvalues of both signs


ONE_BATCH = [(torch.zeros(1), torch.zeros(1))]


def test_filter_norms_match_the_weights_and_bn_bias_are_zero():
    model = create_model("resnet20", layers=(1, 1, 1))
    d = filter_normalized_direction(model, seed=3)
    params = dict(model.named_parameters())
    assert set(d) == set(params)
    for name, p in params.items():
        if p.ndim <= 1:  # BN gamma/beta, fc bias
            assert not d[name].any(), name
            continue
        # One norm per filter (output channel / neuron): (out,)
        got = d[name].flatten(1).norm(dim=1)
        want = p.detach().flatten(1).norm(dim=1)
        assert torch.allclose(got, want, rtol=1e-5), name
    # Filter normalisation of an explicit direction only rescales each filter.
    raw = {"fc.weight": torch.randn_like(params["fc.weight"])}
    out = filter_normalize(raw, model)["fc.weight"]
    ratio = out / raw["fc.weight"]  # constant along each row
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
    assert not torch.equal(filter_normalized_direction(model, seed=4)["fc.weight"], d["fc.weight"])


def test_surface_matches_the_quadratic_and_restores_the_weights():
    a = _sym(5, 0)
    model = _Quadratic(a)
    w0 = model.w.detach().clone()
    g = torch.Generator().manual_seed(1)
    d1 = {"w": torch.randn(5, generator=g, dtype=torch.float64)}
    d2 = {"w": torch.randn(5, generator=g, dtype=torch.float64)}
    xs, ys = torch.linspace(-1, 1, 5), torch.tensor([-0.3, 0.0, 0.25, 2.0])
    surf = loss_surface(model, _own_output, ONE_BATCH, [d1, d2], [xs, ys])
    assert surf.losses.shape == (5, 4)
    for i, alpha in enumerate(xs.double()):
        for j, beta in enumerate(ys.double()):
            w = w0 + alpha * d1["w"] + beta * d2["w"]
            assert surf.losses[i, j].item() == pytest.approx((0.5 * w @ a @ w).item(), rel=1e-12)
    assert torch.equal(model.w.detach(), w0)  # bit for bit

    line = loss_surface(model, _own_output, ONE_BATCH, [d1], [xs])
    assert torch.equal(line.losses, surf.losses[:, 1])  # beta = 0 column
    assert torch.equal(model.w.detach(), w0)


def test_weights_restored_after_surface_and_after_an_error():
    model = create_model("resnet20", layers=(1, 1, 1)).double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    batches = [(x[:2], torch.tensor([0, 1])), (x[2:], torch.tensor([2, 3]))]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dirs = [filter_normalized_direction(model, seed=s) for s in (0, 1)]
    surf = loss_surface(model, F.cross_entropy, batches, dirs, [[-0.5, 0.0, 0.5], [0.0, 0.5]])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # parameters and BN running statistics
    with torch.no_grad(), frozen_bn_stats(model):
        # At the origin the surface is the plain loss (train mode, batch statistics).
        base = sum(F.cross_entropy(model(bx), by) * 2 for bx, by in batches) / 4
    assert surf.losses[1, 0].item() == pytest.approx(base.item(), rel=1e-12)

    def failing(out, y):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        loss_surface(model, failing, batches, dirs[:1], [[0.7]])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_hessian_extremes_match_eigvalsh(method):
    a = _sym(6, 2)
    model = _Quadratic(a)
    eig = torch.linalg.eigvalsh(a)
    iters = 6 if method == "lanczos" else 3000
    h = hessian_extreme_eigenvalues(
        model, _own_output, ONE_BATCH, iters=iters, method=method, tol=1e-13
    )
    tol = 1e-10 if method == "lanczos" else 1e-6
    assert h.max == pytest.approx(eig[-1].item(), abs=tol)
    assert h.min == pytest.approx(eig[0].item(), abs=tol)
    assert h.ratio == pytest.approx(abs(eig[0] / eig[-1]).item(), rel=1e-5)


def test_hessian_vector_product_matches_finite_differences():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # unequal batches: weights 4/6 and 2/6
    g = torch.Generator().manual_seed(7)
    v = {
        n: torch.randn(p.shape, generator=g, dtype=torch.float64)
        for n, p in model.named_parameters()
    }
    hv = hessian_vector_product(model, F.mse_loss, batches, v)

    def grad_at(step: float) -> dict:
        shifted = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        shifted.load_state_dict(model.state_dict())
        with torch.no_grad():
            for n, p in shifted.named_parameters():
                p.add_(v[n], alpha=step)
        loss = (F.mse_loss(shifted(x[:4]), y[:4]) * 4 + F.mse_loss(shifted(x[4:]), y[4:]) * 2) / 6
        names, ps = zip(*shifted.named_parameters(), strict=True)
        return dict(zip(names, torch.autograd.grad(loss, ps), strict=True))

    eps = 1e-5
    plus, minus = grad_at(eps), grad_at(-eps)
    for n in v:
        fd = (plus[n] - minus[n]) / (2 * eps)
        assert torch.allclose(hv[n], fd, rtol=1e-6, atol=1e-9), n


def test_bad_arguments_name_expected_and_given():
    model = _Quadratic(_sym(3, 0))
    with pytest.raises(ValueError, match=r"w: expected \(3,\), got \(4,\)"):
        loss_surface(model, _own_output, ONE_BATCH, [{"w": torch.zeros(4)}], [[0.0]])
    with pytest.raises(ValueError, match="unknown parameter"):
        loss_surface(model, _own_output, ONE_BATCH, [{"v": torch.zeros(3)}], [[0.0]])
    with pytest.raises(ValueError, match="one grid per direction"):
        loss_surface(model, _own_output, ONE_BATCH, [{"w": torch.zeros(3)}], [[0.0], [1.0]])
    with pytest.raises(ValueError, match="re-iterable"):
        loss_surface(model, _own_output, iter(ONE_BATCH), [{"w": torch.zeros(3)}], [[0.0]])
    with pytest.raises(ValueError, match="empty"):
        loss_surface(model, _own_output, [], [{"w": torch.zeros(3)}], [[0.0]])
    with pytest.raises(ValueError, match="method"):
        hessian_extreme_eigenvalues(model, _own_output, ONE_BATCH, method="arnoldi")
