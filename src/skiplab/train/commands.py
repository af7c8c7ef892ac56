"""The ``skiplab train``, ``skiplab eval`` and ``skiplab predict`` subcommands.

    skiplab train --model resnet56 --data cifar10 --data-dir PATH --out runs/NAME [--config F]
    skiplab train --model gpt_d6 --data tinyshakespeare --data-dir PATH --out runs/NAME
        --optimizer adamw --lr 1e-3 --schedule cosine --warmup linear --warmup-steps 100
    skiplab train --out runs/NAME --resume
    skiplab eval --run runs/NAME [--split test]          (or --checkpoint FILE)
    skiplab predict --run runs/NAME IMAGE_OR_FOLDER ... --out DIR

Every :class:`TrainConfig` field is an option of ``train`` (``--weight-decay 5e-4``,
``--nesterov/--no-nesterov``, ``--milestones 0.5 0.75``, ``--model-arg drop_path_rate=0.1``).
``--max-dataset-bytes`` (``train`` and ``eval``) is not a setting of the run: it raises the
bound on what the data may expand to (default 4 GiB, see :mod:`skiplab.data.limits`) by setting
``$SKIPLAB_MAX_DATASET_BYTES`` for this process and its workers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import typing
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skiplab.data import load_dataset
from skiplab.data.imagefolder import check_image_file, read_image
from skiplab.data.limits import ENV_VAR, parse_bytes
from skiplab.data.text import TASK as TEXT_TASK
from skiplab.fileio import atomic_write, atomic_write_csv
from skiplab.models import create_model
from skiplab.models.pretrained import load_pretrained, read_weights_file
from skiplab.train.build import head_args
from skiplab.train.config import (
    AMPS,
    COMPILE_MODES,
    LOSSES,
    OPTIMIZERS,
    PROGRESS,
    RECIPES,
    RUNTIME_FIELDS,
    SCHEDULES,
    WARMUPS,
    TrainConfig,
    field_help,
    read_config_file,
    resolve_config,
)
from skiplab.train.distributed import resolve_device
from skiplab.train.evaluate import evaluate, load_run, write_results
from skiplab.train.tensorboard import TensorBoardLogger
from skiplab.train.trainer import NonFiniteLoss, Trainer

# The options whose values are a fixed set: argparse refuses others at once, and shell
# completion can offer them. Taken from the constants TrainConfig checks against.
CHOICES = {
    "recipe": tuple(RECIPES),
    "schedule": SCHEDULES,
    "warmup": WARMUPS,
    "loss": LOSSES,
    "optimizer": OPTIMIZERS,
    "amp": AMPS,
    "compile_mode": COMPILE_MODES,
    "progress": PROGRESS,
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def text_data(data) -> bool:
    return data.task == TEXT_TASK


def add_train_commands(sub) -> None:
    """Add ``train``, ``eval`` and ``predict`` to the ``skiplab`` subparsers ``sub``."""
    p = sub.add_parser(
        "train",
        help="train a registered model (resumable, distributed)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="JSON or TOML file of settings (command line wins)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest valid checkpoint",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write the metrics rows as TensorBoard scalars to OUT/tensorboard "
        "(pip install 'skiplab[tensorboard]')",
    )
    _add_config_options(p)
    _add_max_bytes(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a run (or a weights file) on a data split")
    p.add_argument("--run", help="run folder (its newest valid checkpoint)")
    p.add_argument(
        "--checkpoint",
        help="a checkpoint manifest step-N.json, or a weights file "
        "(.safetensors/.pth/.th, then --model and --data are needed)",
    )
    p.add_argument("--model", help="registered model, for a plain weights file")
    p.add_argument("--data", help="dataset name (default: the run's)")
    p.add_argument("--data-dir", help="data location (default: the run's)")
    p.add_argument("--split", help="split to evaluate (default: the run's validation split)")
    p.add_argument("--mean", type=float, nargs="+", help="override the input normalisation mean")
    p.add_argument("--std", type=float, nargs="+", help="override the input normalisation std")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--tta-flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average each image's logits with its mirror's (default: the run's tta_flip)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_max_bytes(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="predict images with a run (segmentation: PNG masks)")
    p.add_argument("inputs", nargs="+", help="image files or folders of .png/.jpg images")
    p.add_argument("--run", help="run folder (its newest valid checkpoint)")
    p.add_argument("--checkpoint", help="a checkpoint manifest step-N.json")
    p.add_argument("--out", required=True, help="folder for the masks / predictions.csv")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)


def _add_max_bytes(p: argparse.ArgumentParser) -> None:
    def parse(text: str) -> int:
        try:
            return parse_bytes(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    p.add_argument(
        "--max-dataset-bytes",
        type=parse,
        metavar="BYTES",
        help=f"bound on what the data may expand to, e.g. 8GiB (default: ${ENV_VAR} or 4GiB); "
        "not saved with the run",
    )


@contextlib.contextmanager
def _max_bytes(args: argparse.Namespace):
    """``--max-dataset-bytes`` as ``$SKIPLAB_MAX_DATASET_BYTES`` while the command runs (read by
    load_dataset, inherited by distributed workers), then the environment as it was: a command
    run in-process (``skiplab.cli.main``) leaves no bound behind for the next one."""
    value = getattr(args, "max_dataset_bytes", None)
    if value is None:
        yield
        return
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(value)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before


# -- train ----------------------------------------------------------------------------------------
def _add_config_options(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    docs = field_help()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint, default = hints[f.name], getattr(defaults, f.name)
        text = f"{docs[f.name]} (default: {default})".replace("%", "%%")
        kw = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if f.name in CHOICES:
            kw["choices"] = CHOICES[f.name]
        if f.name == "model_args":
            p.add_argument(
                "--model-arg",
                action="append",
                type=key_value,
                metavar="KEY=VALUE",
                dest=f.name,
                default=argparse.SUPPRESS,
                help="option passed to create_model, VALUE read as JSON when it "
                "parses (e.g. drop_path_rate=0.1, layers=[1,1,1]); repeatable",
            )
        elif hint is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(hint) is tuple:
            p.add_argument(flag, type=float, nargs="+", **kw)
        else:
            args = typing.get_args(hint)
            base = [a for a in args if a is not type(None)] or [hint]
            p.add_argument(flag, type=_parser(base[0], optional=type(None) in args), **kw)


def _parser(kind, optional: bool):
    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}; got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def key_value(text: str) -> tuple[str, object]:
    """argparse type of ``--model-arg KEY=VALUE`` (``train``, ``export``): VALUE read as JSON
    when it parses, else kept as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string, e.g. shortcut=B


def cmd_train(args: argparse.Namespace) -> int:
    with _max_bytes(args):
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names}
    if "model_args" in values:
        values["model_args"] = dict(values["model_args"])
    if args.resume:
        if "out" not in values:
            raise ValueError("--resume needs --out RUN_FOLDER")
        extra = sorted(set(values) - {"out", *RUNTIME_FIELDS})
        if extra or args.config:
            given = ["--" + k.replace("_", "-") for k in extra] + (["--config"] * bool(args.config))
            raise ValueError(
                f"--resume continues a run with its saved settings; remove {given} "
                f"(only {', '.join('--' + k.replace('_', '-') for k in RUNTIME_FIELDS)} may "
                "change)"
            )
        saved = Path(values["out"]) / "config.json"
        if not saved.is_file():
            raise ValueError(f"nothing to resume: {saved} not found")
        cfg = TrainConfig.from_dict({**json.loads(saved.read_text()), **values}, where=str(saved))
    else:
        cfg = resolve_config(read_config_file(args.config) if args.config else {}, values)
        if cfg.model is None:
            raise ValueError("--model is required (see `skiplab models`)")
    callbacks = []
    if args.tensorboard:
        callbacks.append(TensorBoardLogger())
    trainer = Trainer(cfg, resume=args.resume, callbacks=callbacks)
    try:
        result = trainer.fit()
    except NonFiniteLoss as exc:
        print(f"skiplab: error: {exc}", file=sys.stderr)
        return 1
    if result.status == "stopped":
        return 128 + result.signal if result.signal else 1
    return 0


# -- eval -----------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    with _max_bytes(args):
        return _eval(args)


def _eval(args: argparse.Namespace) -> int:
    if (args.run is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --run RUN_FOLDER or --checkpoint FILE")
    plain = args.checkpoint is not None and not args.checkpoint.endswith(".json")
    if plain:
        if not (args.model and args.data):
            raise ValueError(f"{args.checkpoint} is a plain weights file: give --model and --data")
        read_weights_file(args.checkpoint)  # refuses an unsafe file before any other work
        split = args.split or "test"
        data = load_dataset(args.data, split, data_dir=args.data_dir)
        model = create_model(args.model, **head_args(data))
        report = load_pretrained(model, args.checkpoint)
        where, loss, source = str(args.checkpoint), "ce", f"sha256 {report.sha256}"
        tta_flip = bool(args.tta_flip)
        block_size = getattr(model, "block_size", None) if text_data(data) else None
    else:
        run = load_run(args.run or Path(args.checkpoint).parent.parent, args.checkpoint)
        cfg = run.config
        split = args.split or cfg.val_split
        if split == "none":
            raise ValueError("the run has no validation split; pass --split")
        data = load_dataset(
            args.data or cfg.data, split, data_dir=args.data_dir or cfg.data_dir, seed=cfg.seed
        )
        model, where, loss, source = run.model, str(run.checkpoint), cfg.loss, str(run.checkpoint)
        tta_flip = cfg.tta_flip if args.tta_flip is None else args.tta_flip
        block_size = cfg.block_size
    if text_data(data) and (args.mean or args.std or args.tta_flip):
        raise ValueError("--mean, --std and --tta-flip apply to images; the data are text")
    if args.mean or args.std:
        data = replace(data, mean=tuple(args.mean or data.mean), std=tuple(args.std or data.std))
    device = resolve_device(args.device)
    results = evaluate(
        model.to(device),
        data,
        batch_size=args.batch_size,
        block_size=block_size,
        device=device,
        loss=loss,
        tta_flip=tta_flip,
    )
    record = {
        "checkpoint": where,
        "tta_flip": tta_flip,
        "weights": source,
        "data": data.source,
        "split": split,
        "samples": len(data),
        **({"block_size": block_size} if text_data(data) else {}),
        **({} if text_data(data) else {"mean": list(data.mean), "std": list(data.std)}),
        **results,
    }
    if args.run:
        write_results(Path(args.run) / f"eval-{split}.json", record)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(f"{where} on {data.source} ({len(data)} samples)")
        for k, v in results.items():
            print(f"  {k:12s} {100 * v:.2f}%" if "error" in k else f"  {k:12s} {v:.4f}")
    return 0


# -- predict --------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    if (args.run is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --run RUN_FOLDER or --checkpoint step-N.json")
    run = load_run(args.run or Path(args.checkpoint).parent.parent, args.checkpoint)
    meta = run.meta
    if meta["task"] == TEXT_TASK:
        raise ValueError(
            f"{run.checkpoint} is a language model: predict takes images. Sample text with "
            "skiplab.train.load_run(RUN).model.generate(token_ids, max_new_tokens)"
        )
    files = _image_files(args.inputs)
    # The mode the network was trained on; another one is refused, not converted.
    mode = "L" if meta["in_chans"] == 1 else "RGB"
    for path in files:  # size, pixels and mode of every input, before anything is written
        check_image_file(path, modes=(mode,))
    device = resolve_device(args.device)
    model = run.model.to(device)
    mean = torch.tensor(meta["mean"], device=device).view(-1, 1, 1)
    std = torch.tensor(meta["std"], device=device).view(-1, 1, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classes = meta["classes"]
    rows = []
    with torch.no_grad():
        for path in files:
            array = read_image(path, modes=(mode,))
            image = torch.tensor(array, device=device)  # a copy: PIL's array is read-only
            image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)  # (C, H, W)
            x = ((image.float() / 255.0 - mean) / std)[None]
            probs = model(x).float().softmax(dim=1)[0]
            if meta["task"] == "segmentation":
                # Class index scaled to 0..255 (two classes: 0 and 255, the ISBI convention).
                scale = 255 // max(len(classes) - 1, 1)
                mask = (probs.argmax(dim=0) * scale).to(torch.uint8).cpu().numpy()
                buffer = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(mask), mode="L").save(buffer, format="PNG")
                atomic_write(out / f"{path.stem}.png", buffer.getvalue())
                print(f"{path} -> {out / (path.stem + '.png')}")
            else:
                p, k = probs.max(dim=0)
                rows.append((str(path), classes[int(k)], f"{float(p):.4f}"))
                print(f"{path}\t{classes[int(k)]}\t{float(p):.4f}")
    if meta["task"] == "classification":
        atomic_write_csv(out / "predictions.csv", ("file", "class", "probability"), rows)
    return 0


def _image_files(inputs: list[str]) -> list[Path]:
    files = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"no {'/'.join(IMAGE_SUFFIXES)} images in folder {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"input not found: {path}")
    return files
