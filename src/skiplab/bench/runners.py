"""One side of one measurement, built from plain data: ``runner.step()`` runs one batch.

Training, skiplab side: a :class:`~skiplab.train.trainer.Trainer` (what ``skiplab train``
runs: the registered model, DeviceLoader batches of device-resident uint8 images augmented in
batches, its SGD step with the chosen channels_last / autocast / compile), stepped batch by
batch without checkpoints or evaluation. Training, reference side: the reference model, an
eager loop over :func:`~skiplab.bench.reference.reference_loader` and the same SGD settings.
Inference: one fixed random batch, ``model(x)`` without gradients.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from skiplab.bench.config import BenchConfig, Case, FastPath
from skiplab.bench.reference import reference_loader, reference_model
from skiplab.data import ArrayDataset, make_classification
from skiplab.fuse import fuse_bn
from skiplab.models import create_model, get_model_entry
from skiplab.train.config import TrainConfig
from skiplab.train.evaluate import autocast
from skiplab.train.runtime import begin_compiled_step, compile_network
from skiplab.train.trainer import Trainer

LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4  # TrainConfig's defaults, on both sides


@dataclass
class Runner:
    """``step()`` runs one batch of ``batch`` images; ``description`` says what it is."""

    step: object
    batch: int
    description: str
    close: object = lambda: None


def image_input_size(name: str) -> tuple[int, int, int]:
    """(C, H, W) of a registered image model; a model of token ids is refused by name."""
    entry = get_model_entry(name)
    if len(entry.input_size) != 3:
        raise ValueError(
            f"skiplab bench measures image models (input (C, H, W)); {name} is a {entry.task} "
            f"model whose input is {entry.input_size} token ids"
        )
    return entry.input_size


def bench_data(name: str, num_images: int, seed: int) -> ArrayDataset:
    """The training images both sides read: synthetic CIFAR-like shapes for 32x32 models,
    random uint8 noise at the model's input size otherwise (10 classes)."""
    c, h, w = image_input_size(name)
    if (c, h, w) == (3, 32, 32):
        return make_classification("train", seed, num_train=num_images, num_test=1)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, c, h, w), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 10, (num_images,), generator=g)
    classes = tuple(str(k) for k in range(10))
    return ArrayDataset(
        images, targets, classes, "classification", (0.5,) * c, (0.25,) * c, "noise"
    )


def build_runner(cfg: BenchConfig, case: Case, side: str, data: ArrayDataset | None) -> Runner:
    """The runner of ``side`` ("skiplab" or "reference") for ``case``; ``data``: training
    images (made by :func:`bench_data` when None and the mode is "train")."""
    fast = cfg.side_options(side, case.mode)
    device = torch.device(cfg.device)
    if case.mode == "train":
        data = data if data is not None else bench_data(case.model, cfg.num_images, cfg.seed)
        if side == "skiplab":
            return _skiplab_train(cfg, case, fast, data)
        return _reference_train(cfg, case, fast, data, device)
    return _infer(cfg, case, side, fast, device)


def _skiplab_train(cfg: BenchConfig, case: Case, fast: FastPath, data: ArrayDataset) -> Runner:
    folder = tempfile.TemporaryDirectory(prefix="skiplab-bench-")  # never written to
    tcfg = TrainConfig(
        model=case.model, data="bench", out=folder.name, val_split="none", seed=cfg.seed,
        steps=10**9, batch_size=case.batch, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
        amp=fast.amp, channels_last=fast.channels_last, compile=fast.compile,
        compile_mode=fast.compile_mode,
        device=cfg.device, progress="off", warmup="none",
    )  # fmt: skip
    trainer = Trainer(tcfg, train_data=data)

    def step() -> None:
        # Trainer.fit's inner loop without checkpoints, callbacks or the progress bar.
        if trainer.position >= trainer.steps_per_epoch:
            trainer.epoch, trainer.position = trainer.epoch + 1, 0
        trainer.train_next_batch()

    desc = f"skiplab {case.model}: Trainer step + DeviceLoader, {fast.describe()}"
    return Runner(step, case.batch, desc, folder.cleanup)


def _reference_train(
    cfg: BenchConfig, case: Case, fast: FastPath, data: ArrayDataset, device: torch.device
) -> Runner:
    torch.manual_seed(cfg.seed)
    model, what = reference_model(case.model, len(data.classes))
    fmt = torch.channels_last if fast.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt).train()
    net = compile_network(model, fast.compile_mode) if fast.compile else model
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    scaler = torch.amp.GradScaler(device.type, enabled=fast.amp == "fp16")
    loader = reference_loader(data, case.batch, cfg.ref_workers, cfg.seed)
    state = {"it": iter(loader)}

    def step() -> None:
        try:
            x, y = next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            x, y = next(state["it"])
        x, y = x.to(device, memory_format=fmt), y.to(device)
        if fast.compile:
            begin_compiled_step(fast.compile_mode)
        with autocast(device, fast.amp):
            out = net(x)
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    desc = (
        f"{what} + DataLoader(num_workers={cfg.ref_workers}) with torchvision transforms, "
        f"{fast.describe()}"
    )
    return Runner(step, case.batch, desc)


def _infer(cfg: BenchConfig, case: Case, side: str, fast: FastPath, device) -> Runner:
    torch.manual_seed(cfg.seed)
    entry = get_model_entry(case.model)
    image_input_size(case.model)  # token-id models are refused before anything is built
    if side == "skiplab":
        model: nn.Module = create_model(case.model).eval()
        what = f"skiplab {case.model}"
        if fast.fuse_bn:
            model = fuse_bn(model)
    else:
        with torch.device("meta"):  # only to read the default number of classes
            num_classes = create_model(case.model).num_classes
        model, what = reference_model(case.model, num_classes)
    fmt = torch.channels_last if fast.channels_last else torch.contiguous_format
    model = model.eval().to(device, memory_format=fmt)
    net = compile_network(model, fast.compile_mode) if fast.compile else model
    x = torch.randn(case.batch, *entry.input_size, generator=torch.Generator().manual_seed(0))
    x = x.to(device).contiguous(memory_format=fmt)
    grad_off = torch.inference_mode if side == "skiplab" else torch.no_grad

    def step() -> None:
        if fast.compile:
            begin_compiled_step(fast.compile_mode)
        with grad_off(), autocast(device, fast.amp):
            net(x)

    return Runner(step, case.batch, f"{what} eval, {fast.describe()}")
