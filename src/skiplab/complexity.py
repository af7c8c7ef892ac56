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

from skiplab.models import create_model, get_model_entry


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-accumulates of one forward pass (per batch of ``batch_size``) in eval mode.

    Args:
        input_size: (C, H, W) of one sample; (T,) for a language model, whose input is token
            ids (``model.input_dtype``, e.g. torch.long).
    """
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    dtype = getattr(model, "input_dtype", None) or dtype
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
    input_size: tuple[int, ...]
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


def _summary_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Direct children of the model, with any child that holds a ``feature_info`` stage
    (e.g. DenseNet's ``features``) replaced by its own children, so that stages get rows."""
    stage_paths = [f.module for f in getattr(model, "feature_info", [])]
    rows = []
    for name, child in model.named_children():
        if any(p.startswith(name + ".") for p in stage_paths):
            rows += [(f"{name}.{sub}", m) for sub, m in child.named_children()]
        else:
            rows.append((name, child))
    return rows


def stage_summary(
    name: str, input_size: tuple[int, int, int] | None = None, **overrides
) -> list[StageRow]:
    """Per-module output shape, parameters and MACs of one registered model.

    Rows are the model's top-level modules in execution order (for a ResNet: conv1, bn1, relu,
    maxpool, layer1..4, avgpool, fc); a container that holds the stages (DenseNet's
    ``features``) is shown one level deeper. Rows follow module registration order. Modules
    that never run are left out, and their parameters are reported in a last row
    ``(not run)`` so that the column still sums up.
    """
    entry = get_model_entry(name)
    size = tuple(input_size or entry.input_size)
    with torch.device("meta"):
        model = create_model(name, **overrides)
    model.eval()
    modules = _summary_modules(model)
    order: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for module_name, module in modules:

        def hook(_m, _inp, out, module_name=module_name):
            if module_name not in shapes:
                order.append(module_name)
            shapes[module_name] = tuple(out.shape) if isinstance(out, torch.Tensor) else ()

        hooks.append(module.register_forward_hook(hook))
    x = torch.zeros((1, *size), device="meta", dtype=getattr(model, "input_dtype", None))
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    # MACs per row from the leaf modules (convs, linears) under it: a container that the model
    # iterates instead of calling (a DenseNet block) has no count of its own.
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    leaf_macs = {
        n: sum(per_module.get(f"{root}.{n}", {}).values()) // 2
        for n, m in model.named_modules()
        if n and not list(m.children())
    }
    # Stages that ran piecewise get their shape from forward_intermediates.
    if any(n not in shapes for n, _ in modules) and hasattr(model, "forward_intermediates"):
        with torch.no_grad():
            feats = model.forward_intermediates(x)
        for info, f in zip(model.feature_info, feats, strict=True):
            if info.module in dict(modules) and info.module not in shapes:
                shapes[info.module] = tuple(f.shape)
    rows = []
    for module_name, module in modules:
        macs = sum(
            v for n, v in leaf_macs.items() if n == module_name or n.startswith(module_name + ".")
        )
        if module_name not in shapes and macs == 0:
            continue
        rows.append(
            StageRow(module_name, shapes.get(module_name, ()), count_parameters(module), macs)
        )
    idle = sum(count_parameters(m) for n, m in modules if n not in {r.name for r in rows})
    if idle:
        rows.append(StageRow("(not run)", (), idle, 0))
    return rows
