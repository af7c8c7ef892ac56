"""DenseNet: torchvision equivalence, the paper's parameter counts, memory-efficient
recomputation, the dense=False ablation, and the common interface."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from skiplab import create_model, get_model_entry, list_models
from skiplab.complexity import count_parameters
from skiplab.models.densenet import DenseNet, DenseNetConfig
from tests.models.model_tester import ModelTester

pytestmark = pytest.mark.usefixtures("one_thread")


IMAGENET_NAMES = ("densenet121", "densenet161", "densenet169", "densenet201")
CIFAR_NAMES = ("densenet40_k12", "densenet_bc100_k12", "densenet_bc250_k24", "densenet_bc190_k40")

# torchvision's counts (ImageNet, 1000 classes) and the paper's Table 2 nets at 10 classes
# (1.0M, 0.8M, 15.3M, 25.6M), exact.
PARAMS = {
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet40_k12": 1_019_722,
    "densenet_bc100_k12": 769_162,
    "densenet_bc250_k24": 15_324_406,
    "densenet_bc190_k40": 25_624_430,
}
DEPTHS = {
    "densenet121": 121,
    "densenet161": 161,
    "densenet169": 169,
    "densenet201": 201,
    "densenet40_k12": 40,
    "densenet_bc100_k12": 100,
    "densenet_bc250_k24": 250,
    "densenet_bc190_k40": 190,
}


class TestImageNetDenseNets(ModelTester):
    names = IMAGENET_NAMES
    input_shape = (2, 3, 32, 32)  # the smallest input (total stride 32) keeps this cheap


class TestCifarDenseNets(ModelTester):
    names = CIFAR_NAMES
    input_shape = (2, 3, 8, 8)  # total stride 4


def test_registered_names_and_families():
    assert list_models(family="densenet") == list(IMAGENET_NAMES)
    assert list_models(family="cifar_densenet") == [
        "densenet40_k12",
        "densenet_bc100_k12",
        "densenet_bc190_k40",
        "densenet_bc250_k24",
    ]
    for name in IMAGENET_NAMES:
        assert get_model_entry(name).input_size == (3, 224, 224)
    for name in CIFAR_NAMES:
        assert get_model_entry(name).input_size == (3, 32, 32)


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_depth(name):
    with torch.device("meta"):
        model = create_model(name)
    assert count_parameters(model) == PARAMS[name]
    assert get_model_entry(name).depth == DEPTHS[name] == model.cfg.depth
    if name in CIFAR_NAMES:
        assert model.num_classes == 10


def _randomize(module: nn.Module, seed: int) -> None:
    # Random weights *and* BN statistics, so that a key mapped to the wrong tensor shows.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            elif t.ndim == 1:  # BN weight
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen) * (2.0 / fan_in) ** 0.5)


@pytest.mark.parametrize("name", IMAGENET_NAMES)
def test_torchvision_state_dict_round_trip(name):
    tv = getattr(torchvision.models, name)(weights=None).eval()
    ours = create_model(name).eval()
    assert count_parameters(tv) == count_parameters(ours) == PARAMS[name]
    x = torch.randn(2, 3, 64, 64)

    # torchvision -> skiplab
    _randomize(tv, seed=1)
    ours.load_state_dict(tv.state_dict(), strict=True)
    with torch.no_grad():
        ref, out = tv(x), ours(x)
    assert ref.abs().max() > 1e-3  # the comparison is not between two near-zero tensors
    assert (out - ref).abs().max().item() <= 1e-5

    # skiplab -> torchvision
    _randomize(ours, seed=2)
    tv.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        ref, out = tv(x), ours(x)
    assert (out - ref).abs().max().item() <= 1e-5


def _small_bc(**overrides) -> DenseNet:
    # DenseNet-BC-100's layers with 3 layers per block: the same code paths, much cheaper.
    return create_model("densenet_bc100_k12", block_config=(3, 3, 3), **overrides)


def _train_step(model: nn.Module, x: torch.Tensor):
    model.train()
    out = model(x)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return out.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}


def _assert_same_step(a, b) -> None:
    out_a, grads_a, bufs_a = a
    out_b, grads_b, bufs_b = b
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-5, atol=1e-6, msg=n)
    assert bufs_a.keys() == bufs_b.keys()
    for n in bufs_a:
        # BN running statistics and batch counters: updated exactly once in both.
        torch.testing.assert_close(bufs_a[n], bufs_b[n], rtol=0, atol=0, msg=n)


@pytest.mark.parametrize("bottleneck", [True, False])
def test_memory_efficient_matches_default(bottleneck):
    overrides = {} if bottleneck else {"bottleneck": False, "compression": 1.0}
    default = _small_bc(**overrides)
    efficient = _small_bc(memory_efficient=True, **overrides)
    efficient.load_state_dict(default.state_dict(), strict=True)
    x = torch.randn(4, 3, 16, 16)
    before = {n: b.clone() for n, b in default.named_buffers()}

    # The recomputation really happens: norm1 of every layer runs twice per step.
    calls = []
    hooks = [
        layer.norm1.register_forward_hook(lambda *_: calls.append(1))
        for _, layer in efficient.iter_blocks()
    ]
    step_eff = _train_step(efficient, x)
    for h in hooks:
        h.remove()
    assert len(calls) == 2 * len(list(efficient.iter_blocks()))

    step_def = _train_step(default, x)
    _assert_same_step(step_def, step_eff)
    changed = [n for n, b in default.named_buffers() if not torch.equal(b, before[n])]
    assert any(n.endswith("running_mean") for n in changed)  # the step did update BN stats
    assert default.features["norm4"].num_batches_tracked.item() == 1


def test_grad_checkpointing_matches_default():
    default = _small_bc()
    ckpt = _small_bc()
    ckpt.load_state_dict(default.state_dict(), strict=True)
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 16, 16)
    _assert_same_step(_train_step(default, x), _train_step(ckpt, x))


def test_memory_efficient_with_grad_checkpointing():
    default = _small_bc()
    both = _small_bc(memory_efficient=True)
    both.load_state_dict(default.state_dict(), strict=True)
    both.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 16, 16)
    _assert_same_step(_train_step(default, x), _train_step(both, x))


@pytest.mark.parametrize("dense", [True, False])
def test_ablation_cuts_direct_paths(dense):
    """Layer 3 of a block (and the block output) must not depend on layer 1's maps once layer
    2's output is held fixed: exactly what the removed concatenation would have carried."""
    model = _small_bc(dense=dense).eval()
    block = model.features["denseblock2"]
    leaf = {}

    def replace_with_leaf(_m, _inp, out):
        leaf["x1"] = out.detach().requires_grad_(True)
        return leaf["x1"]

    h1 = block["denselayer1"].register_forward_hook(replace_with_leaf)
    h2 = block["denselayer2"].register_forward_hook(lambda _m, _i, out: out.detach())
    try:
        model(torch.randn(2, 3, 16, 16)).sum().backward()
    finally:
        h1.remove()
        h2.remove()
    grad = leaf["x1"].grad
    if dense:
        assert grad is not None and grad.abs().sum() > 0
    else:
        assert grad is None or torch.count_nonzero(grad) == 0


def test_ablation_layer_sees_only_its_predecessor():
    model = _small_bc(dense=False)
    layer = model.features["denseblock1"]["denselayer3"]
    c0, k = model.cfg.num_init_features, model.cfg.growth_rate
    maps = [torch.randn(2, c, 4, 4, requires_grad=True) for c in (c0, k, k)]
    layer(maps).square().sum().backward()
    assert maps[0].grad is None and maps[1].grad is None
    assert maps[2].grad.abs().sum() > 0


def test_ablation_keeps_parameters_and_keys():
    dense, chain = _small_bc(), _small_bc(dense=False)
    assert dense.state_dict().keys() == chain.state_dict().keys()
    for n, t in dense.state_dict().items():
        assert chain.state_dict()[n].shape == t.shape, n
    x = torch.randn(2, 3, 16, 16)
    chain.load_state_dict(dense.state_dict())
    with torch.no_grad():
        assert not torch.allclose(dense.eval()(x), chain.eval()(x))


def test_iter_blocks_yields_every_dense_layer():
    model = create_model("densenet121")
    names = [n for n, _ in model.iter_blocks()]
    assert len(names) == 6 + 12 + 24 + 16
    assert names[0] == "features.denseblock1.denselayer1"
    assert names[-1] == "features.denseblock4.denselayer16"


def test_input_too_small_raises_before_compute():
    model = create_model("densenet121")
    with pytest.raises(ValueError, match=r"densenet121 needs H and W >= 32"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"growth": 12}, r"unknown option\(s\) \['growth'\].*allowed: .*growth_rate"),
        ({"compression": 0.0}, r"compression must be in \(0, 1\]; got 0.0"),
        ({"compression": 1.5}, r"compression must be in \(0, 1\]; got 1.5"),
        ({"growth_rate": 0}, "growth_rate must be a positive integer; got 0"),
        ({"block_config": ()}, "block_config must be a non-empty tuple"),
        ({"block_config": (3, 0, 3)}, "layers per dense block must be a positive integer"),
        ({"dense": "no"}, "dense must be True or False; got 'no'"),
        ({"stem": "tiny"}, r"stem must be one of \['imagenet', 'cifar'\]; got 'tiny'"),
        ({"drop_rate": 1.0}, r"drop_rate must be in \[0, 1\); got 1.0"),
        ({"num_classes": -1}, "num_classes must be an integer >= 0; got -1"),
    ],
)
def test_bad_overrides_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        create_model("densenet_bc100_k12", **overrides)


def test_list_block_config_and_headless_model():
    model = create_model("densenet40_k12", block_config=[2, 2, 2], num_classes=0)
    assert model.cfg.block_config == (2, 2, 2)
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, model.num_features) == (2, 16 + 3 * 2 * 12)


def test_config_is_typed_and_frozen():
    cfg = DenseNetConfig(12, (2, 2), 24)
    with pytest.raises(AttributeError):
        cfg.growth_rate = 4  # type: ignore[misc]
    assert cfg.transition_widths() == [(24 + 24) // 2]


def test_compile_matches_eager():
    model = create_model("densenet40_k12", block_config=(2, 2, 2)).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)
