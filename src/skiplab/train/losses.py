"""Training losses: cross-entropy (with label smoothing), soft Dice, and their sum.

Dice: Milletari et al. 2016 (V-Net, arXiv:1606.04797) introduced the soft Dice loss; here it is
computed from softmax probabilities, per class over the whole batch, averaged over classes:

    dice_k = (2 * sum(p_k * g_k) + eps) / (sum(p_k) + sum(g_k) + eps),   loss = 1 - mean_k dice_k

with ``eps = 1`` so that a class absent from both prediction and target counts as perfect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from skiplab.train.config import LOSSES

DICE_EPS = 1.0


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """Soft Dice loss of logits (N, K, H, W) against class indices (N, H, W)."""
    num_classes = logits.shape[1]
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(probs.dtype)  # (N, K, H, W)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)  # (K,)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * inter + eps) / (denom + eps)).mean()


@dataclass(frozen=True)
class Loss:
    """The training loss: ``Loss(kind, task, label_smoothing)(logits, target) -> scalar``.

    Args:
        kind: "ce", "dice" or "ce+dice" (Dice only for segmentation).
        task: "classification" (logits (N, K), target (N,)), "segmentation" (logits
            (N, K, H, W), target (N, H, W)) or "language_modeling" (logits (B, T, V), target
            (B, T): the mean next-token cross-entropy over all B * T positions).
        label_smoothing: Applied to the cross-entropy term.
    """

    kind: str
    task: str
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LOSSES[1:]:
            raise ValueError(f"loss must be one of {list(LOSSES[1:])}; got {self.kind!r}")
        if self.task != "segmentation" and self.kind != "ce":
            raise ValueError(f"loss {self.kind!r} is for segmentation; {self.task} uses 'ce'")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: the log-softmax of bf16/fp16 logits loses precision.
        logits = logits.float()
        if self.task == "language_modeling":  # (B, T, V), (B, T) -> (B*T, V), (B*T,)
            logits, target = logits.flatten(0, 1), target.flatten()
        loss = logits.new_zeros(())
        if self.kind in ("ce", "ce+dice"):
            loss = loss + F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        if self.kind in ("dice", "ce+dice"):
            loss = loss + dice_loss(logits, target)
        return loss
