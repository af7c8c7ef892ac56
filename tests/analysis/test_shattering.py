"""Gradient correlations along a line against models with known gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skiplab import create_model
from skiplab.analysis import (
    gradient_autocorrelation,
    gradient_shattering,
    gradients_along_line,
    spectral_whiteness,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Linear(nn.Module):
    """f(x) = <w, x> + 3: its gradient is w everywhere."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, dtype=torch.float64))

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True) + 3.0  # (B, 1)


class _Lookup(nn.Module):
    """f(x) = <V_i, x> with i the grid point nearest to x: gradient V_i, independent noise
    from one point to the next."""

    def __init__(self, x0, d, ts) -> None:
        super().__init__()
        self.register_buffer("points", x0.unsqueeze(0) + ts.view(-1, 1, 1, 1) * d)  # (T, ...)
        self.register_buffer("table", torch.randn(self.points.shape, dtype=torch.float64))

    def forward(self, x):
        dist = (x.unsqueeze(1) - self.points.unsqueeze(0)).flatten(2).norm(dim=2)  # (B, T)
        i = dist.argmin(1).detach()
        return (self.table[i] * x).flatten(1).sum(1)  # (B,)


def test_linear_model_is_perfectly_correlated_at_every_lag():
    x0 = torch.randn(3, 4, 4, dtype=torch.float64)
    model = _Linear(x0.shape).eval()
    s = gradient_shattering(model, x0, ts=torch.linspace(-2, 2, 32), max_lag=31)
    assert torch.allclose(s.line.gradients, model.w.detach().expand(32, 3, 4, 4), atol=0)
    assert torch.allclose(s.correlation, torch.ones(32, dtype=torch.float64), atol=1e-12)
    assert s.neighbour_correlation == pytest.approx(1.0, abs=1e-12)
    assert s.whiteness == 0.0  # all the power at frequency 0
    assert torch.isnan(s.directional_acf[1:]).all()  # centred: a constant has no correlation


def test_independent_random_gradients_are_uncorrelated_and_white():
    x0 = torch.randn(3, 8, 8, dtype=torch.float64)
    d = torch.randn(3, 8, 8, dtype=torch.float64)
    ts = torch.linspace(-1, 1, 64, dtype=torch.float64)
    model = _Lookup(x0, d, ts).eval()
    line = gradients_along_line(model, x0, d, ts, batch_size=10)
    assert torch.equal(line.gradients, model.table)  # each point's own random vector
    r = gradient_autocorrelation(line.gradients, max_lag=10)
    assert r[0] == pytest.approx(1.0)
    # 192 components x (64 - k) pairs: the sample correlation is O(1 / sqrt(12000)) ~ 0.01.
    assert r[1:].abs().max() < 0.05
    assert spectral_whiteness(line.gradients) > 0.95


def test_brown_noise_is_correlated_and_not_white():
    # A random walk (brown noise, Balduzzi et al. Fig. 1-2's other reference signal).
    walk = torch.randn(256, 50, dtype=torch.float64).cumsum(0)
    r = gradient_autocorrelation(walk, max_lag=5, center=True)
    assert r[1] > 0.8
    assert spectral_whiteness(walk, center=True) < 0.3


def test_gradients_match_finite_differences():
    model = create_model("resnet20", layers=(1, 1, 1)).double().eval()
    x0 = torch.randn(3, 8, 8, dtype=torch.float64)
    d = torch.randn(3, 8, 8, dtype=torch.float64)
    ts = torch.tensor([-0.5, 0.0, 0.7], dtype=torch.float64)
    line = gradients_along_line(model, x0, d, ts, output=4)
    g = torch.Generator().manual_seed(5)
    eps = 1e-6
    with torch.no_grad():
        for t, grad, fd in zip(ts, line.gradients, line.directional, strict=True):
            x = x0 + t * d
            # The directional derivative along d, and along a random u, by central differences.
            for u, expected in ((d, fd), (torch.randn(x0.shape, generator=g).double(), None)):
                num = (model((x + eps * u)[None])[0, 4] - model((x - eps * u)[None])[0, 4]) / (
                    2 * eps
                )
                assert (grad * u).sum().item() == pytest.approx(num.item(), rel=1e-6, abs=1e-8)
                if expected is not None:
                    assert expected.item() == pytest.approx(num.item(), rel=1e-6, abs=1e-8)


def test_bad_input_names_expected_and_given():
    model = _Linear((2, 3)).eval()
    x0 = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x0's shape \(2, 3\); got \(3, 2\)"):
        gradients_along_line(model, x0, torch.zeros(3, 2), [0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2 finite"):
        gradients_along_line(model, x0, x0, [0.0])
    with pytest.raises(ValueError, match=r"index in \[0, 1\)"):
        gradients_along_line(model, x0, x0, [0.0, 1.0], output=3)
    with pytest.raises(ValueError, match="eval mode"):
        gradients_along_line(model.train(), x0, x0, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"max_lag must be an integer in \[0, 2\]"):
        gradient_autocorrelation(torch.zeros(3, 2), max_lag=3)
    with pytest.raises(ValueError, match="one output per point"):
        multi = create_model("resnet20", layers=(1, 1, 1)).eval()
        gradients_along_line(multi, torch.zeros(3, 8, 8), torch.ones(3, 8, 8), [0.0, 1.0])
