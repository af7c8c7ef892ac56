"""Evaluation metrics: top-k error for classification; IoU, Dice, pixel error and the Rand
error of the ISBI 2012 challenge for segmentation.

Rand error (Arganda-Carreras et al. 2015, "Crowdsourcing the creation of image segmentation
algorithms for connectomics", Front. Neuroanat. 9:142, the paper of the ISBI 2012 challenge):
both masks are turned into segmentations by labelling the connected components of their
foreground (4-connectivity); the score is restricted to pixels that are foreground in the
ground truth, where proposed background pixels count as segments of one pixel each. With
``p_ij`` the fraction of those pixels in proposed segment i and true segment j, and ``s_i``,
``t_j`` its row and column sums,

    V_rand = sum_ij p_ij^2 / (0.5 * sum_i s_i^2 + 0.5 * sum_j t_j^2),   Rand error = 1 - V_rand

i.e. 1 - the F-score of the Rand split and merge scores. The challenge's final ranking also
thins the borders of the proposal and takes the best threshold of a probability map; this is
the score of one binary mask, without thinning.
"""

from __future__ import annotations

import math

import torch


# -- classification --------------------------------------------------------------------------------
def topk_wrong(logits: torch.Tensor, target: torch.Tensor, k: int) -> int:
    """Number of samples whose target is not among the ``k`` largest logits (N, K)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices  # (N, k)
    return int((top != target[:, None]).all(dim=1).sum())


# -- segmentation ----------------------------------------------------------------------------------
def connected_components(mask: torch.Tensor, connectivity: int = 4) -> torch.Tensor:
    """Label the connected components of a boolean (H, W) mask.

    Returns:
        int64 (H, W): 0 on background, 1..K on the K components, numbered in raster order of
        their first pixel.

    Union-find in whole-tensor steps: every edge between two foreground neighbours hooks the
    larger of its two roots onto the smaller one, then every pixel follows its parent pointers
    to the root ("pointer jumping"). Each round merges every tree with at least one neighbour,
    so the number of trees at least halves: O(log(H * W)) rounds.
    """
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(f"expected a boolean (H, W) mask; got {mask.dtype} {tuple(mask.shape)}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8; got {connectivity}")
    h, w = mask.shape
    index = torch.arange(h * w, device=mask.device).view(h, w)
    # Edges to the right, down (and the two downward diagonals) between foreground pixels.
    shifts = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    us, vs = [], []
    for dy, dx in shifts:
        a = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
        b = (slice(dy, h), slice(max(0, dx), w + min(0, dx)))
        both = mask[a] & mask[b]
        us.append(index[a][both])
        vs.append(index[b][both])
    u, v = torch.cat(us), torch.cat(vs)
    parent = torch.arange(h * w, device=mask.device)
    while True:
        ru, rv = parent[u], parent[v]
        differ = ru != rv
        if not differ.any():
            break
        lo = torch.minimum(ru, rv)[differ]
        hi = torch.maximum(ru, rv)[differ]
        parent.scatter_reduce_(0, hi, lo, reduce="amin")  # hook: pointers only decrease
        while True:  # pointer jumping until every pixel points at its root
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped
    roots = parent.view(h, w)
    _, dense = torch.unique(roots[mask], return_inverse=True)  # roots in raster order
    labels = torch.zeros(h, w, dtype=torch.int64, device=mask.device)
    labels[mask] = dense + 1
    return labels


def rand_error(pred: torch.Tensor, target: torch.Tensor, connectivity: int = 4) -> float:
    """Foreground-restricted Rand error of a binary (H, W) prediction (see module docstring).

    Args:
        pred, target: Boolean (H, W) foreground masks (ISBI 2012: True = cell interior).

    Returns:
        1 - Rand F-score, in [0, 1]; 0 when the target has no foreground (nothing to score).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    true_seg = connected_components(target, connectivity)
    pred_seg = connected_components(pred, connectivity)
    keep = true_seg > 0
    n = int(keep.sum())
    if n == 0:
        return 0.0
    t = true_seg[keep]
    s = pred_seg[keep]
    # Proposed background inside true foreground: one segment per pixel.
    background = s == 0
    s = s.clone()
    s[background] = int(s.max()) + 1 + torch.arange(int(background.sum()), device=s.device)
    joint = torch.unique(s * (int(t.max()) + 1) + t, return_counts=True)[1]  # n * p_ij
    sum_joint = int((joint * joint).sum())
    sum_s = int((torch.bincount(s) ** 2).sum())
    sum_t = int((torch.bincount(t) ** 2).sum())
    return 1.0 - 2.0 * sum_joint / (sum_s + sum_t)


class ClassificationMeter:
    """Accumulates loss, top-1 and top-5 errors over batches."""

    def __init__(self) -> None:
        self.n = 0
        self.loss_sum = 0.0
        self.wrong1 = 0
        self.wrong5 = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float) -> None:
        b = target.shape[0]
        self.n += b
        self.loss_sum += loss * b
        self.wrong1 += topk_wrong(logits, target, 1)
        self.wrong5 += topk_wrong(logits, target, 5)

    def result(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"loss": self.loss_sum / n, "error": self.wrong1 / n, "top5_error": self.wrong5 / n}


class SegmentationMeter:
    """Accumulates a confusion matrix (for IoU, Dice, pixel error) and per-image Rand errors.

    IoU and Dice are per-class scores averaged over the classes present in the target or the
    prediction of what was seen: a class absent from both has no score (not 0), as in
    torchmetrics' ``MulticlassJaccardIndex`` / ``MulticlassF1Score`` with ``average="macro"``.
    They are NaN before any pixel is counted.

    Args:
        num_classes: Classes of the masks.
        foreground: Class whose connected components the Rand error compares (ISBI: 1,
            "cell"); None skips the Rand error.
        ignore_index: Target value of pixels left out of every metric (e.g. 255 for "void"
            borders); for the Rand error they count as truth background, which it does not
            score. If it is a class index, that class is also left out of the IoU and Dice
            means (torchmetrics does the same). None: every target pixel must be a class index.
    """

    def __init__(
        self, num_classes: int, foreground: int | None = 1, ignore_index: int | None = None
    ) -> None:
        if ignore_index is not None and ignore_index == foreground:
            raise ValueError(f"ignore_index {ignore_index} is the Rand error's foreground class")
        self.num_classes = num_classes
        self.foreground = foreground
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [true, pred]
        self.loss_sum = 0.0
        self.images = 0
        self.rand_sum = 0.0

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float) -> None:
        pred = logits.argmax(dim=1)  # (N, H, W)
        k = self.num_classes
        valid = target != self.ignore_index if self.ignore_index is not None else None
        scored = target if valid is None else target[valid]
        if scored.numel() and (int(scored.min()) < 0 or int(scored.max()) >= k):
            lo, hi = int(scored.min()), int(scored.max())
            raise ValueError(
                f"target class indices must lie in 0..{k - 1}"
                + ("" if valid is None else f" or be ignore_index {self.ignore_index}")
                + f"; got values from {lo} to {hi}"
            )
        pairs = scored * k + (pred if valid is None else pred[valid])
        self.confusion += torch.bincount(pairs.flatten().cpu(), minlength=k * k).view(k, k)
        self.loss_sum += loss * target.shape[0]
        self.images += target.shape[0]
        if self.foreground is not None:
            truth = target == self.foreground  # an ignored pixel is never true foreground
            for p, t in zip(pred.cpu(), truth.cpu(), strict=True):
                self.rand_sum += rand_error(p == self.foreground, t)

    def result(self) -> dict[str, float]:
        c = self.confusion.double()
        tp = c.diag()
        fp = c.sum(0) - tp
        fn = c.sum(1) - tp
        present = (tp + fp + fn) > 0  # in the target or the prediction
        if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            present[self.ignore_index] = False
        iou = tp[present] / (tp + fp + fn)[present]
        dice = 2 * tp[present] / (2 * tp + fp + fn)[present]
        out = {
            "loss": self.loss_sum / max(self.images, 1),
            "error": 1.0 - float(tp.sum() / c.sum().clamp_min(1)),  # pixel error
            "iou": float(iou.mean()) if present.any() else math.nan,
            "dice": float(dice.mean()) if present.any() else math.nan,
        }
        if self.foreground is not None:
            out["rand_error"] = self.rand_sum / max(self.images, 1)
        return out


def make_meter(
    task: str, num_classes: int, ignore_index: int | None = None
) -> ClassificationMeter | SegmentationMeter:
    """The meter for a task; the Rand error is computed for two-class segmentation only."""
    if task == "classification":
        return ClassificationMeter()
    return SegmentationMeter(
        num_classes, foreground=1 if num_classes == 2 else None, ignore_index=ignore_index
    )
