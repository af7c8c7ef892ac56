"""Parameter and multiply-accumulate counts, and the model tables of the CLI.

MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix
products; it counts 2 FLOPs per multiply-accumulate, so MACs = FLOPs / 2). The papers' "FLOPs"
column (e.g. 3.8e9 for ResNet-50 in He et al. 2015, Table 1) counts multiply-adds, i.e. MACs.

Models are built and run on the ``meta`` device, so no memory is allocated and the table of
every registered model takes seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from skiplab.registry import create_model, get_model_entry


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-accumulates of one forward pass (per batch of ``batch_size``) in eval mode.

    Args:
        input_size: (C, H, W) of one sample.
    """
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.zeros((batch_size, *input_size), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass
class ModelRow:
    name: str
    family: str
    depth: int | None
    input_size: tuple[int, int, int]
    params: int
    macs: int

    def as_dict(self) -> dict:
        return asdict(self)


def model_row(name: str, input_size: tuple[int, int, int] | None = None, **overrides) -> ModelRow:
    """Parameters and MACs of a registered model, built on the meta device."""
    entry = get_model_entry(name)
    size = tuple(input_size or entry.input_size)
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return ModelRow(
        name, entry.family, entry.depth, size, count_parameters(model), count_macs(model, size)
    )


@dataclass
class StageRow:
    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def stage_summary(
    name: str, input_size: tuple[int, int, int] | None = None, **overrides
) -> list[StageRow]:
    """Per-top-level-module output shape, parameters and MACs of one registered model.

    Each direct child of the model that runs in the forward pass gets a row, in execution
    order (for a ResNet: conv1, bn1, relu, maxpool, layer1..4, avgpool, fc).
    """
    entry = get_model_entry(name)
    size = tuple(input_size or entry.input_size)
    with torch.device("meta"):
        model = create_model(name, **overrides)
    model.eval()
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for child_name, child in model.named_children():

        def hook(_m, _inp, out, child_name=child_name):
            if child_name not in shapes:
                order.append(child_name)
            shapes[child_name] = tuple(out.shape) if isinstance(out, torch.Tensor) else ()

        hooks.append(child.register_forward_hook(hook))
    x = torch.zeros((1, *size), device="meta")
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    per_module = counter.get_flop_counts()
    rows = []
    for child_name in order:
        key = f"{type(model).__name__}.{child_name}"
        flops = sum(per_module.get(key, {}).values())
        params = count_parameters(getattr(model, child_name))
        rows.append(StageRow(child_name, shapes[child_name], params, flops // 2))
    return rows
