"""Subsets and settings of the experiments: class balance, resolution, bad values."""

from __future__ import annotations

import pytest
import torch

from skiplab.data import ArrayDataset
from skiplab.experiments.base import Settings
from skiplab.experiments.training import _shrink, balanced_prefix


def test_balanced_prefix_takes_classes_in_turn_and_keeps_order():
    assert balanced_prefix(torch.tensor([0, 0, 0, 1, 1, 1]), 4).tolist() == [0, 1, 3, 4]
    targets = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    assert balanced_prefix(targets, 4).tolist() == [0, 1, 3, 6]
    assert balanced_prefix(targets, 3).tolist() == [0, 3, 6]
    assert balanced_prefix(targets, 7).tolist() == list(range(7))


def _folder_like(per_class: int, classes: int) -> ArrayDataset:
    # Image folders list samples class by class: a plain prefix would hold one class only.
    targets = torch.arange(classes).repeat_interleave(per_class)
    images = torch.arange(len(targets), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)
    return ArrayDataset(
        images=images.contiguous(),
        targets=targets,
        classes=tuple(str(c) for c in range(classes)),
        task="classification",
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        source="folder",
    )


def test_subset_of_a_class_ordered_split_is_balanced_and_resized():
    data = _folder_like(per_class=50, classes=4)
    small = _shrink(data, 20, 4)
    assert small.targets.bincount().tolist() == [5, 5, 5, 5]
    assert small.images.shape == (20, 3, 4, 4) and small.images.dtype == torch.uint8
    # Every image kept is the one its target came with (image value = original index).
    kept = small.images[:, 0, 0, 0].long()
    assert torch.equal(data.targets[kept], small.targets)
    assert "class-balanced subset of 20" in small.source and "4x4" in small.source


def test_subset_larger_than_the_split_raises():
    with pytest.raises(ValueError, match="asked for 500 images of folder; it has 200"):
        _shrink(_folder_like(50, 4), 500, None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("jobs", 0, "jobs must be a positive integer; got 0"),
        ("jobs", True, "jobs must be a positive integer"),
        ("seeds", 0, "seeds must be a positive count or a list of seeds; got 0"),
        ("seeds", (1, 1), r"seeds must be distinct non-negative integers; got \[1, 1\]"),
        ("seeds", (), r"seeds must be a positive count or a list of seeds; got \(\)"),
        ("amp", "fp8", r"amp must be one of \['auto', 'none', 'bf16', 'fp16'\]; got 'fp8'"),
        ("amp", "fp16", "amp 'fp16' needs a CUDA device; got 'cpu'"),
    ],
)
def test_bad_settings_raise(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        Settings(out_dir=tmp_path, **{field: value})


def test_seeds_are_a_count_or_a_list(tmp_path):
    assert Settings(out_dir=tmp_path, seeds=3).seeds == (0, 1, 2)
    s = Settings(out_dir=tmp_path, seeds=[100, 101, 102])
    assert s.seeds == (100, 101, 102) and s.to_dict()["seeds"] == [100, 101, 102]


def test_gradient_flow_nets_have_the_registered_layouts():
    from skiplab import create_model
    from skiplab.complexity import count_parameters
    from skiplab.experiments.gradient_flow import net_spec

    for kind, depth, registered in (
        ("plain", 56, "plain56"),
        ("residual", 110, "resnet110"),
        ("preact", 110, "preact_resnet110"),
        ("preact", 1001, "preact_resnet1001"),  # bottleneck, 9n+2
    ):
        name, args = net_spec(kind, depth, narrow=False, num_classes=10)
        with torch.device("meta"):
            ours, theirs = create_model(name, **args), create_model(registered)
        assert count_parameters(ours) == count_parameters(theirs), (kind, depth)
    with pytest.raises(ValueError, match="bottleneck depth must be 9n\\+2; got 1000"):
        net_spec("preact", 1000, narrow=False, num_classes=10)
    with pytest.raises(ValueError, match="depth must be 6n\\+2 for these nets; got 21"):
        net_spec("plain", 21, narrow=False, num_classes=10)
