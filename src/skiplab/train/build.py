"""Building a run's parts from its config: the data, the model, and the checks between them.

Every check here runs before any training step, so a wrong setting fails in seconds with a
message naming what was expected and what was given.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from skiplab.data import ArrayDataset, TextDataset, load_dataset
from skiplab.data.text import TASK as TEXT_TASK
from skiplab.hardware import check_amp_device
from skiplab.models import create_model, get_model_entry
from skiplab.train.checkpoint import list_checkpoints
from skiplab.train.config import TrainConfig
from skiplab.train.schedule import resolve_warmup


def check_run_folder(out: Path, resume: bool) -> None:
    """A fresh run needs a folder without checkpoints; a resumed one needs checkpoints."""
    found = list_checkpoints(Path(out) / "checkpoints")
    if resume and not found:
        raise ValueError(f"no checkpoint to resume from in {Path(out) / 'checkpoints'}")
    if not resume and found:
        raise ValueError(
            f"{out} already holds checkpoints; pass --resume to continue that run, or choose "
            "another --out"
        )


def check_settings(cfg: TrainConfig, model: nn.Module | None) -> None:
    if cfg.model is not None and model is not None:
        raise ValueError(
            f"pass a model name in cfg.model or a module, not both; got cfg.model={cfg.model!r} "
            f"and a {type(model).__name__}"
        )
    if cfg.model is None and model is None:
        raise ValueError("no model: set cfg.model to a registered name or pass a module")
    check_amp_device(cfg.amp, cfg.device)


Data = ArrayDataset | TextDataset


def load_data(
    cfg: TrainConfig, train: Data | None, val: Data | None
) -> tuple[Data, Data | None, TrainConfig]:
    """The training and validation data (given, or loaded by name); ``val_split`` resolved
    ("auto": "val" for isbi2012 and text, else "test")."""
    if train is None:
        train = load_dataset(cfg.data, cfg.train_split, data_dir=cfg.data_dir, seed=cfg.seed)
    split = cfg.val_split
    if split == "auto":
        split = "val" if cfg.data == "isbi2012" or train.task == TEXT_TASK else "test"
    if val is None and split != "none":
        val = load_dataset(cfg.data, split, data_dir=cfg.data_dir, seed=cfg.seed)
    if val is not None and (val.task, val.classes) != (train.task, train.classes):
        raise ValueError(
            f"validation data ({val.task}, classes {val.classes}) does not match training data "
            f"({train.task}, classes {train.classes})"
        )
    return train, val, replace(cfg, val_split=split)


def check_data_settings(cfg: TrainConfig, data: Data) -> None:
    """Settings that only make sense for images (or only for text) are refused for the other."""
    if data.task == TEXT_TASK:
        image_only = {
            "channels_last": cfg.channels_last,
            "tta_flip": cfg.tta_flip,
            "crop_size": cfg.crop_size is not None,
        }
        given = [name for name, on in image_only.items() if on]
        if given:
            raise ValueError(
                f"{given} apply to images; the data {data.source!r} are text (set them off)"
            )
    elif cfg.block_size is not None:
        raise ValueError(
            f"block_size is the window length of text data; the data {data.source!r} are "
            f"{data.task} images (leave block_size unset); got block_size={cfg.block_size}"
        )


def head_args(data: Data) -> dict:
    """The model argument the data decide: ``vocab_size`` for text, else ``num_classes``."""
    if data.task == TEXT_TASK:
        return {"vocab_size": len(data.vocab)}
    return {"num_classes": len(data.classes)}


def model_and_config(
    cfg: TrainConfig, data: Data, model: nn.Module | None
) -> tuple[nn.Module, TrainConfig]:
    """The network (seeded init of ``cfg.model``, or the given module) and the config with its
    data-dependent values filled in: ``num_classes`` (and ``in_chans`` when the data's channels
    differ from the model's default), or for text ``vocab_size``, in ``model_args``; for text
    ``block_size`` (the model's context unless set); ``warmup`` and ``loss`` decided."""
    depth = None
    text = data.task == TEXT_TASK
    if model is None:
        entry = get_model_entry(cfg.model)
        if entry.task != data.task:
            raise ValueError(
                f"model {cfg.model!r} is a {entry.task} model; the data {data.source!r} is for "
                f"{data.task}"
            )
        args = {**head_args(data), **cfg.model_args}
        if not text:
            in_chans = data.images.shape[1]
            if entry.input_size[0] != in_chans:
                args.setdefault("in_chans", in_chans)
        cfg = replace(cfg, model_args=args)
        depth = entry.depth
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, **args)
    if text:
        cfg = _resolve_block_size(cfg, model)
    cfg = resolve_warmup(cfg, depth)
    return model, replace(cfg, loss="ce" if cfg.loss == "auto" else cfg.loss)


def _resolve_block_size(cfg: TrainConfig, model: nn.Module) -> TrainConfig:
    """block_size: the model's context (its ``block_size`` attribute) unless set, never more."""
    context = getattr(model, "block_size", None)
    if cfg.block_size is None:
        if not isinstance(context, int):
            raise ValueError(
                f"set block_size (characters per window): the {type(model).__name__} passed in "
                "has no integer block_size attribute to take it from"
            )
        return replace(cfg, block_size=context)
    if isinstance(context, int) and cfg.block_size > context:
        raise ValueError(
            f"block_size {cfg.block_size} is longer than the model's context of {context} "
            "characters (its learned positions); set block_size <= the model's block_size"
        )
    return cfg


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (the paper's) or AdamW with decay on tensors of 2+ dimensions only (see
    :class:`TrainConfig`)."""
    if cfg.optimizer == "adamw":
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=cfg.lr, betas=tuple(cfg.betas), foreach=True
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        # The multi-tensor update: bit-identical to the per-parameter loop, which torch picks
        # on a CPU, and faster there for nets of many small tensors (measured:
        # docs/benchmarks.md, section 'Per-step overheads of the trainer').
        foreach=True,
    )


def check_output(model: nn.Module, x: torch.Tensor, y: torch.Tensor, data: Data) -> None:
    """One forward pass on two samples in eval mode (no state changes): a model whose input or
    output does not fit the data fails here with a ValueError, naming both shapes."""
    k = len(data.classes)
    if data.task == "classification":
        expected: tuple[int, ...] = (2, k)
    elif data.task == TEXT_TASK:
        expected = (2, x.shape[1], k)  # logits (B, T, vocab)
    else:
        expected = (2, k, *y.shape[-2:])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except RuntimeError as exc:  # e.g. a plain module whose first layer wants other channels
        first = str(exc).strip().splitlines()[0]
        raise ValueError(
            f"{type(model).__name__} cannot take the data {data.source!r}: a batch of shape "
            f"{tuple(x[:2].shape)} ({'B, T' if data.task == TEXT_TASK else 'N, C, H, W'}) "
            f"failed in the forward pass: {first}"
        ) from exc
    finally:
        model.train(was_training)
    if tuple(out.shape) != expected:
        raise ValueError(
            f"model output {tuple(out.shape)} does not fit the data: expected {expected} "
            f"({data.task}, {k} classes)"
        )
