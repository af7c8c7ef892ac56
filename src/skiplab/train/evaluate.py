"""Evaluation and prediction with a trained network, and rebuilding one from its run folder.

Nothing here knows a particular model: a run is rebuilt from its saved config through the
registry (``create_model(cfg.model, **cfg.model_args)``) and its newest valid checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from skiplab.data import ArrayDataset, DeviceLoader, TextDataset, TextLoader
from skiplab.fileio import atomic_write
from skiplab.hardware import resolve_amp
from skiplab.models import create_model, get_model_entry
from skiplab.train.checkpoint import load_checkpoint, load_latest
from skiplab.train.config import TrainConfig
from skiplab.train.losses import Loss
from skiplab.train.metrics import make_meter

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str):
    """The autocast context for ``amp`` ("none", "bf16", "fp16", or "auto": what ``device``
    runs natively, :func:`skiplab.hardware.resolve_amp`)."""
    amp = resolve_amp(amp, device) if amp == "auto" else amp
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ArrayDataset | TextDataset,
    *,
    batch_size: int = 256,
    block_size: int | None = None,
    device: str | torch.device = "cpu",
    loss: str = "ce",
    amp: str = "none",
    channels_last: bool = False,
    tta_flip: bool = False,
) -> dict[str, float]:
    """Loss and error metrics of ``model`` on all of ``data`` (in eval mode, no augmentation).

    Args:
        batch_size: Images, or text windows, per forward pass.
        block_size: Text only (and needed for it): characters per window; the split is read
            once in consecutive windows, every character after the first predicted once.
        tta_flip: Test-time augmentation: average the logits of each image and of its
            horizontal mirror (for segmentation the mirrored prediction is flipped back first).

    Returns:
        Classification: ``loss``, ``error`` (top-1), ``top5_error``. Segmentation: ``loss``,
        ``error`` (pixel error), ``iou`` and ``dice`` (means over classes), ``boundary_f1``
        (the boundary F-score at 2 pixels, mean over images) and, for two classes,
        ``rand_error`` (see :mod:`skiplab.train.metrics`). Text: ``loss`` (nats per
        character), ``error`` (next-character error), ``bits_per_char``. Errors are fractions.
    """
    device = torch.device(device)
    if isinstance(data, TextDataset):
        if block_size is None:
            raise ValueError(
                f"evaluating text ({data.source}) needs block_size (characters per window)"
            )
        if tta_flip or channels_last:
            raise ValueError("tta_flip and channels_last apply to images; the data are text")
        loader = TextLoader(data, batch_size, block_size, train=False, device=device)
    else:
        if block_size is not None:
            raise ValueError(f"block_size is for text; {data.source} holds images")
        loader = DeviceLoader(data, batch_size, train=False, device=device)
    loss_fn = Loss(loss, data.task)  # no label smoothing: the plain loss
    meter = make_meter(data.task, len(data.classes))
    was_training = model.training
    model.eval()
    try:
        for x, y in loader.epoch(0):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = model(x).float()
                if tta_flip:
                    mirrored = model(x.flip(-1)).float()
                    # (N, C) class logits need no flip back; (N, C, H, W) maps do.
                    logits = (logits + (mirrored.flip(-1) if mirrored.dim() == 4 else mirrored)) / 2
            meter.update(logits, y, float(loss_fn(logits, y)))
    finally:
        model.train(was_training)
    return meter.result()


@dataclass
class RunModel:
    """A network rebuilt from a run: the model (eval mode, on CPU), its config and metadata."""

    model: nn.Module
    config: TrainConfig
    meta: dict
    checkpoint: Path


def load_run(run: str | Path, checkpoint: str | Path | None = None, report=None) -> RunModel:
    """Rebuild the network of run folder ``run`` from its newest valid checkpoint (or from
    ``checkpoint``, a manifest ``step-N.json`` of that run)."""
    run = Path(run)
    if checkpoint is not None:
        ckpt = load_checkpoint(Path(checkpoint))
    else:
        if not run.is_dir():
            raise ValueError(f"run folder not found: {run}")
        # Reports (which checkpoint, any invalid newer one) go to stderr: stdout is the result.
        report = report or (lambda line: print(line, file=sys.stderr))
        ckpt = load_latest(run / "checkpoints", report, set_aside=False)
    cfg = TrainConfig.from_dict(ckpt.state["config"], where=f"{ckpt.manifest_path}")
    if cfg.model is None:
        raise ValueError(
            f"{ckpt.manifest_path}: this run trained a module passed in from Python, not a "
            "registered model; rebuild it yourself and load the .safetensors weights"
        )
    model = create_model(cfg.model, **cfg.model_args)
    try:
        model.load_state_dict(ckpt.weights, strict=True)
    except RuntimeError as exc:
        if "in_chans" in cfg.model_args:
            raise
        # A run saves in_chans only where the data's channels differed from the registered
        # input then; a registered input that changed since (the FPN nets became RGB) leaves
        # the weights of a grayscale run unable to load. Say so instead of a size mismatch.
        raise ValueError(
            f"{ckpt.manifest_path}: the weights do not fit {cfg.model!r} as registered now "
            f"(input {get_model_entry(cfg.model).input_size}); the run recorded no in_chans, so "
            "it was trained when the registered input had other channels (the FPN nets were "
            "1-channel before they became RGB). Rebuild it with create_model(name, "
            "in_chans=C, ...) and load the run's weights. "
            f"torch said: {str(exc).strip().splitlines()[0]}"
        ) from exc
    return RunModel(model.eval(), cfg, ckpt.manifest["meta"], ckpt.manifest_path)


def write_results(path: Path, results: dict) -> None:
    """Write ``results`` as indented JSON (atomically)."""
    atomic_write(Path(path), (json.dumps(results, indent=2) + "\n").encode())
