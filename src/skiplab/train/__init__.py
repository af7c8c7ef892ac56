"""Training, evaluation and prediction for any registered skiplab model (or any nn.Module).

Usage::

    from skiplab.train import TrainConfig, Trainer, resolve_config

    cfg = resolve_config(cli_values={"model": "resnet56", "data": "cifar10",
                                     "data_dir": "../shared/data/cifar10-jpeg.tar.gz",
                                     "out": "runs/resnet56"})
    result = Trainer(cfg).fit()

``skiplab.models`` never imports this package.
"""

from skiplab.train.checkpoint import (
    InvalidCheckpoint,
    LoadedCheckpoint,
    load_checkpoint,
    load_latest,
)
from skiplab.train.config import RECIPES, TrainConfig, read_config_file, resolve_config
from skiplab.train.evaluate import evaluate, load_run
from skiplab.train.losses import Loss, dice_loss
from skiplab.train.metrics import boundary_f1, connected_components, rand_error
from skiplab.train.schedule import LRSchedule
from skiplab.train.trainer import FitResult, NonFiniteLoss, NonFiniteWeights, Trainer

__all__ = [
    "RECIPES",
    "FitResult",
    "InvalidCheckpoint",
    "LRSchedule",
    "LoadedCheckpoint",
    "Loss",
    "NonFiniteLoss",
    "NonFiniteWeights",
    "TrainConfig",
    "Trainer",
    "boundary_f1",
    "connected_components",
    "dice_loss",
    "evaluate",
    "load_checkpoint",
    "load_latest",
    "load_run",
    "rand_error",
    "read_config_file",
    "resolve_config",
]
