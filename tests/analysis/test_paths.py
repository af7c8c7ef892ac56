"""Path counting and per-path-length gradients against brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from skiplab import create_model
from skiplab.analysis.paths import (
    effective_path_range,
    gradient_for_subset,
    gradient_per_path_length,
    path_counts,
    path_length_distribution,
    routed,
    sample_subsets,
    total_gradient,
)
from skiplab.models._base import frozen_bn_stats

pytestmark = pytest.mark.usefixtures("one_thread")


# -- path counting --------------------------------------------------------------------------------
def test_distribution_matches_enumerating_every_path_of_six_units():
    counts = [0] * 7
    for path in itertools.product((0, 1), repeat=6):  # 1 = through the unit's residual branch
        counts[sum(path)] += 1
    assert path_counts(6) == counts == [1, 6, 15, 20, 15, 6, 1]
    assert path_length_distribution(6) == [c / 64 for c in counts]
    assert sum(path_length_distribution(6)) == 1.0


def test_distribution_for_a_thousand_units():
    p = path_length_distribution(1000)
    assert len(p) == 1001 and all(math.isfinite(v) and v > 0 for v in p)
    assert abs(sum(p) - 1.0) < 1e-12
    assert p[0] == p[1000] == 2.0**-1000
    assert p == p[::-1] and max(p) == p[500]
    for k in (1, 137, 500):
        log_p = math.lgamma(1001) - math.lgamma(k + 1) - math.lgamma(1001 - k) - 1000 * math.log(2)
        assert abs(p[k] / math.exp(log_p) - 1) < 1e-9
    assert path_length_distribution(0) == [1.0]
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="integer >= 0"):
            path_length_distribution(bad)


# -- a linear residual net: every path's gradient in closed form ----------------------------------
class LinearUnit(nn.Module):
    """x -> x + x W^T: a residual unit whose branch is linear."""

    residual = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim, bias=False)
        nn.init.normal_(self.lin.weight, std=0.6 / math.sqrt(dim))

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.skip(x)


class LinearResNet(nn.Module):
    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(LinearUnit(dim) for _ in range(n))

    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        for i, unit in enumerate(self.units):
            yield f"units.{i}", unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.units:
            x = unit(x)
        return x


def _dot_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out * y).sum()  # dL/d(out) = y


def _linear_net(n: int = 6, dim: int = 5):
    net = LinearResNet(n, dim).double()
    x = torch.randn(3, dim, dtype=torch.float64)
    y = torch.randn(3, dim, dtype=torch.float64)
    return net, x, y


def _exact_path_gradient(net: LinearResNet, y: torch.Tensor, subset) -> torch.Tensor:
    # Backward through unit i is g -> g W_i on the branch and g -> g on the skip; a path that
    # takes the branches of `subset` multiplies only those, last unit first.
    g = y
    for i in reversed(range(len(net.units))):
        if i in subset:
            g = g @ net.units[i].lin.weight
    return g


def test_gradient_of_every_path_subset_matches_the_closed_form():
    net, x, y = _linear_net()
    n = len(net.units)
    names = [name for name, _ in net.iter_blocks()]
    for k in range(n + 1):
        for subset in itertools.combinations(range(n), k):
            got = gradient_for_subset(net, x, y, [names[i] for i in subset], _dot_loss)
            exact = _exact_path_gradient(net, y, subset).norm().item()
            assert abs(got - exact) <= 1e-12 * exact, subset
    assert all(p.grad is None for p in net.parameters())


def test_per_length_gradient_is_the_mean_over_the_sampled_paths():
    net, x, y = _linear_net()
    n = len(net.units)
    result = gradient_per_path_length(net, x, y, range(n + 1), samples=4, seed=3, loss_fn=_dot_loss)
    assert list(result) == list(range(n + 1))
    for k, got in result.items():
        subsets = sample_subsets(n, k, 4, 3)
        assert len(subsets) == (1 if k in (0, n) else 4)
        exact = sum(_exact_path_gradient(net, y, s).norm().item() for s in subsets) / len(subsets)
        assert abs(got - exact) <= 1e-12 * exact, k
    # Length 0 (all skips) leaves the gradient untouched; length n is the one longest path.
    assert abs(result[0] - y.norm().item()) <= 1e-12 * result[0]
    longest = _exact_path_gradient(net, y, range(n)).norm().item()
    assert abs(result[n] - longest) <= 1e-12 * longest


def test_sampled_per_length_gradient_converges_to_the_mean_over_all_paths():
    net, x, y = _linear_net()
    got = gradient_per_path_length(net, x, y, [2, 3], samples=300, seed=0, loss_fn=_dot_loss)
    for k in (2, 3):
        norms = [
            _exact_path_gradient(net, y, s).norm().item()
            for s in itertools.combinations(range(6), k)
        ]
        mean = sum(norms) / len(norms)
        spread = max(norms) - min(norms)
        # 300 draws: the standard error is below spread / (2 sqrt(300)) < 0.03 spread.
        assert abs(got[k] - mean) < 0.1 * spread, (k, got[k], mean)
    # Exhaustive when there are no more subsets than samples: exactly the mean over all paths.
    exact = gradient_per_path_length(net, x, y, [2], samples=15, seed=0, loss_fn=_dot_loss)
    norms = [
        _exact_path_gradient(net, y, s).norm().item() for s in itertools.combinations(range(6), 2)
    ]
    assert abs(exact[2] - sum(norms) / 15) < 1e-12


def test_subset_sampling_is_seeded():
    assert sample_subsets(10, 4, 6, seed=1) == sample_subsets(10, 4, 6, seed=1)
    assert sample_subsets(10, 4, 6, seed=1) != sample_subsets(10, 4, 6, seed=2)
    assert all(len(set(s)) == 4 and list(s) == sorted(s) for s in sample_subsets(10, 4, 6, 1))
    assert sample_subsets(4, 2, 6, seed=1) == list(itertools.combinations(range(4), 2))
    with pytest.raises(ValueError, match="path length must be an integer in 0..4"):
        sample_subsets(4, 5, 6, seed=1)


# -- real residual nets: the path gradients partition the true gradient ---------------------------
@pytest.mark.parametrize(
    "name, overrides",
    [
        ("resnet20", {}),  # post-activation: ReLU after the addition; option A shortcuts
        ("preact_resnet110", {}),  # pre-activation; projections see BN-ReLU(x)
        # He et al. 2016 shortcut variants: skip(x) is the whole shortcut term, e.g. (1-g)·x
        ("resnet20", {"shortcut_variant": "exclusive_gating", "gate_bias": 0.0}),
        ("resnet20", {"shortcut_variant": "constant"}),
        ("preact_resnet110", {"shortcut_variant": "shortcut_gating", "gate_bias": 0.0}),
    ],
)
def test_path_gradients_sum_to_the_true_gradient(name, overrides):
    # Each unit's Jacobian P (J_b + J_s) is split into P J_b and P J_s, so summing the routed
    # gradients over all 2^n subsets must give back the ordinary gradient (train mode, BN
    # batch statistics included).
    model = create_model(name, layers=(1, 1, 1), **overrides).double().train()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 4, 7])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model.eval()(x)
    model.train()
    names = [n for n, _ in model.iter_blocks()]
    total = torch.zeros_like(x)
    for k in range(len(names) + 1):
        for subset in itertools.combinations(names, k):
            with routed(model, subset):
                (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
            total += g
    with frozen_bn_stats(model):
        (full,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    torch.testing.assert_close(total, full, rtol=1e-10, atol=1e-14)
    assert all(
        "forward" not in b.__dict__ and "skip" not in b.__dict__ for _, b in model.iter_blocks()
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference)


def test_routing_leaves_forward_outputs_and_bn_statistics_unchanged():
    model = create_model("resnet20", layers=(2, 2, 2)).double().train()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad(), routed(model, []):
        pass
    model.eval()
    with torch.no_grad():
        intact = model(x)
        for subset in (
            [],
            ["layer1.0"],
            ["layer2.0", "layer3.1"],
            [n for n, _ in model.iter_blocks()],
        ):
            with routed(model, subset):
                assert torch.equal(model(x), intact), subset
    model.train()
    gradient_for_subset(model, x, torch.tensor([0, 1, 2, 3]), ["layer1.1"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_path_analysis_refuses_plain_nets_and_stochastic_units():
    plain = create_model("plain20", layers=(1, 1, 1))
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    with pytest.raises(ValueError, match="needs every block to be a residual unit"):
        gradient_per_path_length(plain, x, y, [0], samples=1, seed=0)
    model = create_model("resnet20", layers=(1, 1, 1), drop_path_rate=0.5).train()
    with pytest.raises(RuntimeError, match="different outputs in two identical forward passes"):
        gradient_for_subset(model, x, y, [])
    assert gradient_for_subset(model.eval(), x, y, []) > 0
    with pytest.raises(ValueError, match=r"unknown block\(s\) \['layer4.0'\]"):
        gradient_for_subset(model, x, y, ["layer4.0"])
    with pytest.raises(ValueError, match="lengths must be integers in 0..3; got 4"):
        gradient_per_path_length(model, x, y, [4], samples=1, seed=0)


# -- total gradient and effective paths -----------------------------------------------------------
def test_total_gradient_and_effective_range():
    assert total_gradient({0: 1.0, 1: 0.5, 2: 0.25}, 2) == {0: 1.0, 1: 1.0, 2: 0.25}
    totals = {0: 0.0, 1: 1.0, 2: 8.0, 3: 1.0, 4: 0.0}
    assert effective_path_range(totals, 4, fraction=0.8) == (2, 2)
    assert effective_path_range(totals, 4, fraction=0.9) == (1, 2)  # ties: the shorter lengths
    assert effective_path_range(totals, 4, fraction=1.0) == (1, 3)
    with pytest.raises(ValueError, match=r"every length 0..4; missing \[4\]"):
        effective_path_range({k: 1.0 for k in range(4)}, 4)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        effective_path_range(totals, 4, fraction=0.0)


def test_effective_paths_of_a_linear_net_are_shorter_than_the_typical_path():
    # Branches that shrink the gradient (weights of norm < 1) make long paths carry little: the
    # total gradient peaks below n / 2, the peak of the path count (Veit et al. 2016, Fig. 6).
    net, x, y = _linear_net(n=10, dim=6)
    per_length = gradient_per_path_length(
        net, x, y, range(11), samples=8, seed=0, loss_fn=_dot_loss
    )
    totals = total_gradient(per_length, 10)
    lo, hi = effective_path_range(totals, 10, fraction=0.9)
    assert max(totals, key=totals.get) < 5 and hi < 10 and lo <= max(totals, key=totals.get) <= hi
