"""The typed training configuration, its recipes, and where its values come from.

A :class:`TrainConfig` is resolved from four layers, later ones winning::

    dataclass defaults  <  recipe row (RECIPES)  <  config file (JSON or TOML)  <  command line

The resolved config is saved as ``config.json`` in the run folder and inside every
checkpoint, so that ``skiplab eval`` and ``--resume`` rebuild exactly the same run.

The ``paper`` recipe is He et al. 2015 (arXiv:1512.03385), section 4.2: SGD with momentum 0.9,
weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k.
For 110 layers and deeper, lr 0.01 "until the training error is below 80% (about 400
iterations)", then back to 0.1. When the user sets fewer epochs or steps the milestones are
kept at the same fractions (0.5 and 0.75) of the run.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from skiplab.config import Config, check_choice, check_int, check_real, choice
from skiplab.hardware import AMPS

SCHEDULES = ("step", "cosine", "onecycle")
WARMUPS = ("auto", "error", "linear", "none")
LOSSES = ("auto", "ce", "dice", "ce+dice")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZERS = ("sgd", "adamw")

# Each recipe is a row of overrides on top of the dataclass defaults (which are the paper's).
RECIPES: dict[str, dict[str, Any]] = {
    # He et al. 2015, section 4.2 (CIFAR-10): 64k iterations of batch 128.
    "paper": {"schedule": "step", "steps": 64000},
    # skiplab choices, not a paper's: cosine decay to 0 over 200 epochs, weight decay 5e-4.
    "cosine": {"schedule": "cosine", "epochs": 200, "weight_decay": 5e-4, "warmup": "none"},
    # Smith & Topin 2019 one-cycle (linear up for 30% of the run, cosine down), 30 epochs.
    "onecycle": {
        "schedule": "onecycle",
        "epochs": 30,
        "weight_decay": 5e-4,
        "nesterov": True,
        "warmup": "none",
    },
    # Time to accuracy for a CIFAR ResNet (see benchmarks/fast_recipe.py): the data already live
    # on the device (DeviceLoader), a large batch, one-cycle, label smoothing, test-time flip,
    # bf16 autocast where the device has it natively ("auto": fp32 elsewhere, see
    # skiplab.hardware), channels_last and torch.compile. skiplab choices, not a paper's.
    "fast": {
        "schedule": "onecycle",
        "epochs": 20,
        "batch_size": 512,
        "lr": 0.4,
        "weight_decay": 5e-4,
        "nesterov": True,
        "label_smoothing": 0.2,
        "warmup": "none",
        "tta_flip": True,
        "amp": "auto",
        "channels_last": True,
        "compile": True,
    },
}
PROGRESS = ("auto", "on", "off")
# Fields that only change where or how fast a run goes, not what it computes on CPU: a resumed
# run may change them.
RUNTIME_FIELDS = ("device", "progress", "dist_timeout")


@dataclass
class TrainConfig(Config):
    """Every setting of a training run.

    Attributes:
        model: Registered model name (None when a module is passed to the trainer directly).
        model_args: Overrides passed to ``create_model`` (``num_classes`` and ``in_chans`` are
            filled in from the data when absent).
        data: Dataset name for ``skiplab.data.load_dataset``.
        data_dir: Where the data lives (folder or archive).
        train_split, val_split: Splits to train and evaluate on (``val_split`` "auto": "val"
            for isbi2012, else "test"; "none": no evaluation).
        out: Run folder (config, metrics, checkpoints).
        seed: Seeds model init, data order, augmentation and dropout.
        recipe: Row of RECIPES applied before the user's values: "paper" (64000 steps),
            "cosine" (200 epochs), "onecycle" (30 epochs) or "fast" (20 epochs of batch 512,
            one-cycle, label smoothing, test-time flip, amp "auto", channels_last, compile).
        epochs, steps: Length of the run; set at most one (either replaces the recipe's).
        batch_size: Global batch size (divided evenly over distributed processes); for text,
            windows of block_size characters.
        block_size: Text: characters per training and evaluation window (None: the model's
            context, its ``block_size``). Not a setting of image runs.
        optimizer: "sgd" (the paper's: momentum, nesterov, weight_decay on every parameter) or
            "adamw" (Loshchilov & Hutter 2019: weight_decay decoupled, on weight matrices and
            embeddings only, none on biases, norms and gains, as nanoGPT does; betas).
        lr: Learning rate (the peak of the one-cycle schedule).
        momentum: SGD momentum.
        nesterov: Nesterov momentum (SGD only).
        betas: AdamW's (beta1, beta2).
        weight_decay: Weight decay (SGD: L2 on every parameter; AdamW: decoupled, matrices only).
        label_smoothing: Cross-entropy label smoothing (Szegedy et al. 2016).
        loss: "ce", "dice", "ce+dice", or "auto" (cross-entropy).
        schedule: "step" (lr * lr_decay at each milestone), "cosine" or "onecycle".
        milestones: Fractions of the run at which the step schedule decays.
        lr_decay: Factor applied at each milestone.
        min_lr: Final lr of the cosine schedule.
        pct_start, div_factor, final_div_factor: One-cycle shape (as torch's OneCycleLR).
        warmup: "error" (paper: warmup_lr until the running training error < warmup_error, or
            warmup_steps), "linear" (warmup_lr -> lr over warmup_steps), "none", or "auto"
            ("error" for the step schedule on registered models of depth >= 110, else "none").
        warmup_lr: lr during the warm-up (paper: 0.01), or where the linear warm-up starts.
        warmup_error: The error-driven warm-up ends when the running training error (a
            fraction) drops below this (paper: 0.8).
        warmup_steps: Cap of the error-driven warm-up; length of the linear one.
        warmup_window: Steps averaged for the running training error.
        augment: Random crop/flip (and rotations for segmentation) during training; images
            only (text windows are always drawn at random offsets).
        tta_flip: Evaluate on each image and its mirror, averaging the logits.
        crop_size: Segmentation training crop (None: full image).
        amp: Autocast precision: "none" (fp32), "bf16", "fp16" (needs CUDA; uses a GradScaler)
            or "auto" (bf16 where the device has native bf16, else fp32; resolved when the
            trainer is built, and saved resolved: ``skiplab.hardware.resolve_amp``).
        channels_last: Model and batches in the channels-last memory format.
        compile: ``torch.compile`` the network.
        compile_mode: ``torch.compile`` mode with ``compile``: "default", "reduce-overhead"
            (CUDA graphs: for small nets that are launch-bound on a GPU), "max-autotune" or
            "max-autotune-no-cudagraphs".
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        eval_every: Evaluate every N epochs (0: only at the end).
        checkpoint_every: Also checkpoint every N steps (0: at epoch ends and at the end only).
        keep_checkpoints: Checkpoints kept on disk (the newest ones).
        eval_batch_size: Batch size for evaluation (None: batch_size).
        progress: tqdm bar, "auto" (when stderr is a terminal), "on" or "off".
        dist_timeout: Distributed runs: seconds a collective may wait for the other ranks, and
            seconds a rank may go without finishing a step, checkpoint or evaluation, before
            the rank fails (naming the ranks that did not arrive) and the whole job stops.
    """

    model: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = "cifar10"
    data_dir: str | None = None
    train_split: str = "train"
    val_split: str = "auto"
    out: str = "runs/default"
    seed: int = 0
    recipe: str = choice("paper", RECIPES)
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 128
    block_size: int | None = None
    optimizer: str = choice("sgd", OPTIMIZERS)
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, ...] = (0.9, 0.999)
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    loss: str = choice("auto", LOSSES)
    schedule: str = choice("step", SCHEDULES)
    milestones: tuple[float, ...] = (0.5, 0.75)
    lr_decay: float = 0.1
    min_lr: float = 0.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    warmup: str = choice("auto", WARMUPS)
    warmup_lr: float = 0.01
    warmup_error: float = 0.8
    warmup_steps: int = 400
    warmup_window: int = 10
    augment: bool = True
    crop_size: int | None = None
    tta_flip: bool = False
    amp: str = choice("none", AMPS)
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = choice("default", COMPILE_MODES)
    device: str = "auto"
    eval_every: int = 1
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    eval_batch_size: int | None = None
    progress: str = choice("auto", PROGRESS)
    dist_timeout: float = 1800.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _coerce(f.name, getattr(self, f.name), _HINTS[f.name])
            object.__setattr__(self, f.name, value)
        self.check_choices()
        check_compile_mode(self.compile, self.compile_mode)
        if self.epochs is not None and self.steps is not None:
            raise ValueError(
                "set either epochs or steps, not both; "
                f"got epochs={self.epochs}, steps={self.steps}"
            )
        for name in ("epochs", "steps", "crop_size", "eval_batch_size", "block_size"):
            check_int(name, getattr(self, name), 1, optional=True)
        for name in ("batch_size", "warmup_window", "keep_checkpoints"):
            check_int(name, getattr(self, name), 1)
        for name in ("eval_every", "checkpoint_every", "warmup_steps", "seed"):
            check_int(name, getattr(self, name), 0)
        for name in ("lr", "warmup_lr", "div_factor", "final_div_factor", "dist_timeout"):
            check_real(name, getattr(self, name), 0, low_open=True)
        for name in ("momentum", "weight_decay", "min_lr"):
            check_real(name, getattr(self, name), 0)
        for name in ("label_smoothing", "warmup_error", "lr_decay", "pct_start"):
            check_real(name, getattr(self, name), 0, 1)
        if list(self.milestones) != sorted(self.milestones) or any(
            not 0.0 < m < 1.0 for m in self.milestones
        ):
            raise ValueError(
                "milestones must be increasing fractions of the run in (0, 1); "
                f"got {self.milestones}"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0; got momentum=0")
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(f"nesterov is an SGD option; got optimizer={self.optimizer!r}")
        if len(self.betas) != 2 or any(not 0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(
                f"betas must be two numbers in [0, 1) (beta1, beta2); got {self.betas}"
            )


def resolve_config(
    file_values: dict[str, Any] | None = None, cli_values: dict[str, Any] | None = None
) -> TrainConfig:
    """Apply the layers: defaults < recipe < config file < command line.

    A run length (epochs or steps) set by the user replaces the recipe's, whichever it is.
    """
    user = {**(file_values or {}), **(cli_values or {})}
    recipe_name = user.get("recipe", TrainConfig.recipe)
    check_choice("recipe", recipe_name, RECIPES)
    recipe = dict(RECIPES[recipe_name])
    if "epochs" in user or "steps" in user:
        recipe.pop("epochs", None)
        recipe.pop("steps", None)
    return TrainConfig.from_dict({**recipe, **user}, where="the settings")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read settings from a ``.json`` or ``.toml`` file (a flat table of TrainConfig fields)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            values = json.loads(path.read_text())
        elif path.suffix == ".toml":
            values = _read_toml(path)
        else:
            raise ValueError(f"config file must end in .json or .toml; got {path}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"cannot parse config file {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a table of settings")
    TrainConfig.from_dict(resolve_config(values).to_dict(), where=str(path))  # validate early
    return values


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        try:
            import tomli as tomllib  # the backport, a dependency on Python 3.10
        except ImportError as exc:
            raise ValueError(
                f"reading {path} needs Python >= 3.11 (tomllib) or `pip install tomli`; "
                "or use a .json file"
            ) from exc
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"cannot parse config file {path}: {exc}") from exc


def field_help() -> dict[str, str]:
    """One help text per field, from the Attributes section of TrainConfig's docstring
    (reST ````code```` marks dropped)."""
    section = inspect.cleandoc(TrainConfig.__doc__).split("Attributes:", 1)[1]
    entries: dict[str, str] = {}
    names: list[str] = []
    for line in section.splitlines():
        if match := re.match(r"^    ([a-z_, ]+): (.*)$", line):
            names = [n.strip() for n in match.group(1).split(",")]
            entries.update({n: match.group(2) for n in names})
        elif line.startswith("        "):
            entries.update({n: entries[n] + " " + line.strip() for n in names})
    return {n: re.sub(r"``([^`]+)``", r"\1", text) for n, text in entries.items()}


def config_diff(a: TrainConfig, b: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Names of the fields whose values differ, as ``"name: a -> b"``."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da[k]!r} -> {db[k]!r}" for k in da if k not in ignore and da[k] != db[k]]


# -- type checking of values from files and the command line -------------------------------------
_HINTS = typing.get_type_hints(TrainConfig)


def check_compile_mode(compile: bool, mode: str) -> None:
    """Raise ValueError unless ``mode`` is one of COMPILE_MODES and, when it is not "default",
    ``compile`` is on (a mode without compilation would be silently ignored)."""
    check_choice("compile_mode", mode, COMPILE_MODES)
    if mode != "default" and not compile:
        raise ValueError(f"compile_mode {mode!r} needs compile=True (--compile); got compile=False")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint; int -> float and list -> tuple only."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if origin is tuple:
        if isinstance(value, list | tuple):
            return tuple(_coerce(name, v, args[0]) for v in value)
    elif origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, hint):
        return value
    raise ValueError(f"setting {name!r} must be {_type_name(hint)}; got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
