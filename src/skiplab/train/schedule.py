"""Learning-rate schedules: the paper's step schedule with its error-driven warm-up, cosine and
one-cycle.

The lr is a pure function of the step, except for the warm-up of He et al. 2015 (section 4.2:
"we use 0.01 to warm up the training until the training error is below 80% (about 400
iterations), and then go back to 0.1"), which depends on the training error seen so far. That
state is small (a flag and the last few errors) and is saved in every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import replace

from skiplab.train.config import TrainConfig

# He et al. 2015 use the warm-up for their 110-layer (and 1202-layer) CIFAR nets.
WARMUP_MIN_DEPTH = 110


def resolve_warmup(cfg: TrainConfig, depth: int | None) -> TrainConfig:
    """Replace ``warmup="auto"``: the error-driven warm-up for the step schedule on nets of
    110 layers and deeper (depth from the model registry), no warm-up otherwise."""
    if cfg.warmup != "auto":
        return cfg
    deep = depth is not None and depth >= WARMUP_MIN_DEPTH
    return replace(cfg, warmup="error" if cfg.schedule == "step" and deep else "none")


class LRSchedule:
    """lr for step ``s`` (the number of optimizer steps already taken), 0 <= s < total_steps.

    Args:
        cfg: A resolved config (``warmup`` is not "auto").
        total_steps: Length of the run; the milestones are fractions of it, so a shorter run
            keeps the paper's shape (64k steps: decays at 32k and 48k).
    """

    def __init__(self, cfg: TrainConfig, total_steps: int) -> None:
        if cfg.warmup == "auto":
            raise ValueError(
                "resolve warmup='auto' with resolve_warmup() before building the schedule"
            )
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1; got {total_steps}")
        self.cfg = cfg
        self.total_steps = total_steps
        self.milestones = [round(f * total_steps) for f in cfg.milestones]
        # Error-driven warm-up state.
        self.warming = cfg.warmup == "error" and cfg.warmup_steps > 0
        self.recent_errors: list[float] = []
        self.warmup_ended_at: int | None = None

    # -- the lr ----------------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        cfg = self.cfg
        if self.warming:
            return cfg.warmup_lr
        if cfg.warmup == "linear" and step < cfg.warmup_steps:
            return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / cfg.warmup_steps
        return self.main_lr(step)

    def main_lr(self, step: int) -> float:
        """The schedule without warm-up."""
        cfg, total = self.cfg, self.total_steps
        if cfg.schedule == "step":
            passed = sum(1 for m in self.milestones if step >= m)
            return cfg.lr * cfg.lr_decay**passed
        if cfg.schedule == "cosine":
            return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * step / total))
        # One-cycle (Smith & Topin 2019) with cosine annealing, the shape of torch's OneCycleLR:
        # lr/div_factor -> lr over the first pct_start of the run, then down to
        # lr/div_factor/final_div_factor at the last step.
        start = cfg.lr / cfg.div_factor
        end = start / cfg.final_div_factor
        peak = float(cfg.pct_start * total) - 1
        if step <= peak:
            return _cos_anneal(start, cfg.lr, step / peak if peak > 0 else 1.0)
        last = total - 1
        return _cos_anneal(cfg.lr, end, (step - peak) / (last - peak) if last > peak else 1.0)

    # -- the warm-up's memory --------------------------------------------------------------------
    def observe(self, step: int, train_error: float) -> None:
        """Record the training error (0..1) of step ``step``; may end the warm-up.

        The warm-up ends after the step at which the mean error of the last ``warmup_window``
        steps drops below ``warmup_error``, or after ``warmup_steps`` steps at the latest.
        """
        if not self.warming:
            return
        window = self.cfg.warmup_window
        self.recent_errors = (self.recent_errors + [float(train_error)])[-window:]
        running = sum(self.recent_errors) / len(self.recent_errors)
        full = len(self.recent_errors) == window
        if (full and running < self.cfg.warmup_error) or step + 1 >= self.cfg.warmup_steps:
            self.warming = False
            self.warmup_ended_at = step + 1

    def state_dict(self) -> dict:
        return {
            "warming": self.warming,
            "recent_errors": list(self.recent_errors),
            "warmup_ended_at": self.warmup_ended_at,
            "total_steps": self.total_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["total_steps"] != self.total_steps:
            raise ValueError(
                f"checkpoint was made for a run of {state['total_steps']} steps; this run has "
                f"{self.total_steps} (same config, but a different dataset or world size?)"
            )
        self.warming = bool(state["warming"])
        self.recent_errors = [float(e) for e in state["recent_errors"]]
        self.warmup_ended_at = state["warmup_ended_at"]


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
