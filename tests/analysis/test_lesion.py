"""Lesions and removals against networks computed unit by unit by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from skiplab import create_model
from skiplab.analysis.lesion import (
    lesion_random_blocks,
    lesion_single_blocks,
    lesioned,
    removed,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _cifar(name: str, layers=(2, 2, 2), **overrides):
    return create_model(name, layers=layers, **overrides).double().eval()


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, dtype=torch.float64)


def _by_hand(model, x, replace: dict) -> torch.Tensor:
    """A CIFAR ResNet (or plain net) run unit by unit, with some units replaced by functions."""
    h = model.conv1(x)
    if not model.cfg.preact:
        h = model.relu(model.bn1(h))
    for name, unit in model.iter_blocks():
        h = replace[name](h) if name in replace else unit(h)
    if model.cfg.preact:
        h = model.final_act(model.norm(h))
    return model.fc(torch.flatten(model.avgpool(h), 1))


def _pad_shortcut(h: torch.Tensor) -> torch.Tensor:
    # Option A by hand: subsample by 2 and zero-pad the channels evenly (16 -> 32: 8 + 8).
    c = h.shape[1]
    return F.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, c // 2, c // 2))


def _no_instance_forward(model) -> bool:
    return all("forward" not in block.__dict__ for _, block in model.iter_blocks())


def _mse_evaluator(model, x):
    # A continuous "error": distinct lesions give distinct values.
    with torch.no_grad():
        ref = model(x)

    def evaluate(m) -> float:
        with torch.no_grad():
            return float((m(x) - ref).square().mean())

    return evaluate


def test_lesion_changes_the_output_only_through_the_lesioned_units():
    model = _cifar("resnet20")
    x = _x()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        intact = model(x)
        with lesioned(model, ["layer1.1", "layer2.0"]) as same:
            assert same is model
            out = model(x)
        after = model(x)
        expected = _by_hand(model, x, {"layer1.1": lambda h: h, "layer2.0": _pad_shortcut})
    assert torch.equal(out, expected)
    assert not torch.allclose(out, intact)
    assert torch.equal(after, intact)
    assert _no_instance_forward(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_lesion_is_undone_when_the_body_raises():
    model = _cifar("resnet20")
    x = _x()
    with torch.no_grad():
        intact = model(x)
        with pytest.raises(RuntimeError, match="boom"), lesioned(model, ["layer3.1"]):
            raise RuntimeError("boom")
        assert torch.equal(model(x), intact)
    assert _no_instance_forward(model)


def test_zero_init_preact_net_is_unchanged_by_any_lesion():
    # Zero-initialised pre-activation units compute 0 + shortcut, so deleting the branch is
    # exact. Option A shortcuts see the raw input, which is what block.skip(x) gets.
    model = _cifar("preact_resnet110", shortcut="A", zero_init_residual=True)
    x = _x()
    names = [n for n, _ in model.iter_blocks()]
    with torch.no_grad():
        intact = model(x)
        for name in names:
            with lesioned(model, name):
                assert torch.equal(model(x), intact), name
        with lesioned(model, names):
            assert torch.equal(model(x), intact)
    result = lesion_single_blocks(model, _mse_evaluator(model, x))
    assert [n for n, _ in result.errors] == names
    assert all(e == 0.0 for _, e in result.errors)


def test_zero_init_preact_projection_units_are_unchanged_by_lesion():
    model = _cifar("preact_resnet110", shortcut="B", zero_init_residual=True)
    x = _x()
    with torch.no_grad():
        intact = model(x)
        with lesioned(model, ["layer2.0"]):
            assert torch.equal(model(x), intact)


def test_lesion_of_a_plain_net_raises_before_any_work():
    model = _cifar("plain20", layers=(1, 1, 1))
    calls = []
    with pytest.raises(ValueError, match="plain net has no shortcut to keep"):
        with lesioned(model, ["layer1.0"]):
            pass
    with pytest.raises(ValueError, match="plain net has no shortcut to keep"):
        lesion_single_blocks(model, lambda m: calls.append(1) or 0.0)
    assert calls == []


def test_unknown_names_raise_and_change_nothing():
    model = _cifar("resnet20", layers=(1, 1, 1))
    msg = r"unknown block\(s\) \['layer9.9'\]; available blocks: \['layer1.0', 'layer2.0'"
    with pytest.raises(ValueError, match=msg):
        with lesioned(model, ["layer1.0", "layer9.9"]):
            pass
    assert _no_instance_forward(model)
    with pytest.raises(ValueError, match="more than once"):
        with lesioned(model, ["layer1.0", "layer1.0"]):
            pass


def test_removed_makes_shape_preserving_plain_units_identities_and_refuses_downsampling():
    model = _cifar("plain20")
    x = _x()
    with torch.no_grad():
        intact = model(x)
        with removed(model, ["layer1.1", "layer3.1"], x):
            out = model(x)
        expected = _by_hand(model, x, {"layer1.1": lambda h: h, "layer3.1": lambda h: h})
        assert torch.equal(out, expected)
        assert not torch.allclose(out, intact)
        assert torch.equal(model(x), intact)
    with pytest.raises(ValueError, match=r"cannot remove shape-changing .*\['layer2.0'\]"):
        with removed(model, ["layer1.0", "layer2.0"], x):
            pass
    assert _no_instance_forward(model)


def test_single_lesions_match_hand_built_nets_and_mark_downsampling():
    model = _cifar("resnet20")
    x = _x()
    result = lesion_single_blocks(model, _mse_evaluator(model, x))
    names = [n for n, _ in model.iter_blocks()]
    assert result.mode == "lesion" and result.intact == 0.0 and result.skipped == []
    assert [n for n, _ in result.errors] == names
    assert result.downsampling == ["layer2.0", "layer3.0"]
    errors = dict(result.errors)
    with torch.no_grad():
        ref = model(x)
        by_hand = _by_hand(model, x, {"layer3.0": _pad_shortcut})
    assert errors["layer3.0"] == float((by_hand - ref).square().mean())
    assert all(e > 0 for e in errors.values())


def test_single_removals_in_a_plain_net_skip_downsampling_units_explicitly():
    model = _cifar("plain20")
    x = _x()
    result = lesion_single_blocks(model, _mse_evaluator(model, x), mode="remove")
    assert result.skipped == result.downsampling == ["layer2.0", "layer3.0"]
    assert [n for n, _ in result.errors] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1"]
    with torch.no_grad():
        ref = model(x)
        by_hand = _by_hand(model, x, {"layer2.1": lambda h: h})
    assert dict(result.errors)["layer2.1"] == float((by_hand - ref).square().mean())
    assert _no_instance_forward(model)


def test_random_lesions_are_reproducible_and_depend_on_the_seed():
    model = _cifar("resnet20")
    x = _x()
    evaluate = _mse_evaluator(model, x)
    a = lesion_random_blocks(model, evaluate, [1, 2, 3], trials=4, seed=0)
    b = lesion_random_blocks(model, evaluate, [3], trials=4, seed=0)
    c = lesion_random_blocks(model, evaluate, [1, 2, 3], trials=4, seed=1)
    assert a.block_sets[3] == b.block_sets[3] and a.errors[3] == b.errors[3]
    assert a.block_sets != c.block_sets and a.errors != c.errors
    names = [n for n, _ in model.iter_blocks()]
    for k in (1, 2, 3):
        assert len(a.errors[k]) == len(a.block_sets[k]) == 4
        for s, err in zip(a.block_sets[k], a.errors[k], strict=True):
            assert len(set(s)) == k and list(s) == sorted(s, key=names.index)
            with torch.no_grad(), lesioned(model, s):
                assert evaluate(model) == err
    assert a.downsampling == ["layer2.0", "layer3.0"] and a.excluded == []
    kept = lesion_random_blocks(model, evaluate, [4], 5, seed=0, exclude_downsampling=True)
    assert kept.excluded == ["layer2.0", "layer3.0"]
    assert all(set(s).isdisjoint(kept.excluded) for s in kept.block_sets[4])


def test_random_removals_in_a_plain_net_exclude_downsampling_units():
    model = _cifar("plain20")
    x = _x()
    result = lesion_random_blocks(model, _mse_evaluator(model, x), [2], 3, seed=5, mode="remove")
    assert result.excluded == ["layer2.0", "layer3.0"]
    assert all(set(s).isdisjoint(result.excluded) for s in result.block_sets[2])
    with pytest.raises(ValueError, match=r"k_values \[5\] exceed the 4 eligible units"):
        lesion_random_blocks(model, _mse_evaluator(model, x), [5], 3, seed=5, mode="remove")


def test_random_lesion_arguments_are_checked_before_any_evaluation():
    model = _cifar("resnet20", layers=(1, 1, 1))
    calls = []

    def evaluate(m):
        calls.append(1)
        return 0.0

    with pytest.raises(ValueError, match="at most the 3 units; got k=4"):
        lesion_random_blocks(model, evaluate, [4], 1, seed=0)
    with pytest.raises(ValueError, match="trials must be a positive integer"):
        lesion_random_blocks(model, evaluate, [1], 0, seed=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        lesion_random_blocks(model, evaluate, [1], 1, seed=0, mode="delete")
    assert calls == []
    with pytest.raises(ValueError, match="must return a number"):
        lesion_single_blocks(model, lambda m: torch.tensor(0.5))


def test_highway_lesion_closes_the_gate_and_restores_it():
    # Srivastava et al. 2015, Fig. 4: a lesioned highway layer has its transform gate closed.
    model = create_model("highway_mlp", depth=3, width=8, input_size=(1, 4, 4)).double().eval()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    layer = model.layers[1]
    with torch.no_grad():
        intact = model(x)
        layer.set_gate("closed")
        closed = model(x)
        layer.set_gate("learned")
        with lesioned(model, ["layers.1"]):
            out = model(x)
        assert torch.equal(out, closed) and not torch.allclose(out, intact)
        assert layer.gate.mode == "learned" and torch.equal(model(x), intact)
    # A residual MLP layer keeps its identity; a plain MLP layer has nothing to keep.
    residual = create_model("residual_mlp", depth=2, width=8, input_size=(1, 4, 4)).eval()
    with torch.no_grad(), lesioned(residual, ["layers.1"]):
        lesioned_out = residual(x.float())
    with torch.no_grad():
        residual.layers[1].forward = lambda t: t  # the layer taken out by hand
        try:
            expected = residual(x.float())
        finally:
            del residual.layers[1].forward
    assert torch.equal(lesioned_out, expected)
    plain = create_model("plain_mlp", depth=2, width=8, input_size=(1, 4, 4))
    with pytest.raises(ValueError, match="residual=False: a plain net has no shortcut"):
        with lesioned(plain, ["layers.0"]):
            pass
