"""Evaluation metrics: top-k error for classification; IoU, Dice, pixel error, the Rand error
of the ISBI 2012 challenge and the boundary F-score for segmentation.

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

Boundary F-score (Csurka et al. 2013, "What is a good evaluation measure for semantic
segmentation?", BMVC; the "BF score"): a pixel is a boundary pixel of a class map when one of
its 4-neighbours has another class. Precision is the share of predicted boundary pixels within
``tolerance`` pixels (Chebyshev distance) of a true boundary pixel, recall the share of true
boundary pixels within ``tolerance`` of a predicted one, and the score is their harmonic mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

BOUNDARY_TOLERANCE = 2  # pixels: the boundary F-score's default tolerance


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


def _boundaries(labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Boundary pixels of class maps (N, H, W): both pixels of every pair of 4-neighbours
    whose classes differ, among the pairs of ``valid`` pixels only (all pixels when None)."""
    out = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    down = labels[:, 1:, :] != labels[:, :-1, :]  # pixel (y, x) vs (y + 1, x)
    right = labels[:, :, 1:] != labels[:, :, :-1]  # pixel (y, x) vs (y, x + 1)
    if valid is not None:
        down &= valid[:, 1:, :] & valid[:, :-1, :]
        right &= valid[:, :, 1:] & valid[:, :, :-1]
    out[:, 1:, :] |= down
    out[:, :-1, :] |= down
    out[:, :, 1:] |= right
    out[:, :, :-1] |= right
    return out


def _within(boundary: torch.Tensor, tolerance: int) -> torch.Tensor:
    """Pixels (N, H, W) within Chebyshev distance ``tolerance`` of a ``boundary`` pixel: a
    (2t+1) x (2t+1) max-pool dilation."""
    if tolerance == 0:
        return boundary
    x = boundary[:, None].to(torch.float32)
    return F.max_pool2d(x, 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0] > 0


def _check_tolerance(tolerance: int) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be a whole number of pixels >= 0; got {tolerance!r}")


def boundary_f1_scores(
    pred: torch.Tensor,
    target: torch.Tensor,
    tolerance: int = BOUNDARY_TOLERANCE,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The boundary F-score of each of a batch of class maps (N, H, W): float64 (N,).

    Same definition and edge cases as :func:`boundary_f1`; ``valid`` (bool (N, H, W), or None
    for all pixels) marks the scored pixels: only pairs of valid 4-neighbours make boundary
    pixels, in either map.
    """
    _check_tolerance(tolerance)
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target of the same (N, H, W) shape; got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if valid is not None and valid.shape != target.shape:
        raise ValueError(f"expected valid of shape {tuple(target.shape)}; got {tuple(valid.shape)}")
    pred_b = _boundaries(pred, valid)
    true_b = _boundaries(target, valid)
    n_pred = pred_b.sum((1, 2)).double()
    n_true = true_b.sum((1, 2)).double()
    hit_pred = (pred_b & _within(true_b, tolerance)).sum((1, 2)).double()
    hit_true = (true_b & _within(pred_b, tolerance)).sum((1, 2)).double()
    precision = hit_pred / n_pred.clamp_min(1)
    recall = hit_true / n_true.clamp_min(1)
    f = 2 * precision * recall / (precision + recall).clamp_min(1e-300)
    f = torch.where(precision + recall > 0, f, torch.zeros_like(f))
    # No boundary in either map: they agree (1); in exactly one: nothing matches (0).
    f = torch.where((n_pred == 0) & (n_true == 0), torch.ones_like(f), f)
    return torch.where((n_pred == 0) != (n_true == 0), torch.zeros_like(f), f)


def boundary_f1(
    pred: torch.Tensor,
    target: torch.Tensor,
    tolerance: int = BOUNDARY_TOLERANCE,
    *,
    ignore_index: int | None = None,
) -> float:
    """Boundary F-score ("BF score", Csurka et al. 2013) of a predicted (H, W) class map.

    Pixel error, IoU and Dice count pixels: a prediction whose borders are off by one pixel all
    round loses little, and one that misses a thin membrane between two cells loses just as
    little, though it merges them. This scores where the borders between classes are and
    nothing else: for ISBI 2012, the boundaries between cells and membrane (each membrane's two
    edges), which decide the segmentation the Rand error judges.

    A pixel is a boundary pixel of a map when one of its 4-neighbours has another class (both
    pixels of such a pair are; the image border is not a boundary). Precision: the share of
    predicted boundary pixels within ``tolerance`` pixels (Chebyshev distance, a
    (2t+1) x (2t+1) square) of a true boundary pixel; recall: the share of true boundary pixels
    within ``tolerance`` of a predicted one; the score is 2PR / (P + R) (0 when P = R = 0).

    Args:
        pred, target: Integer class maps or boolean masks, (H, W) each.
        tolerance: Distance in pixels (>= 0) at which a boundary pixel counts as found.
        ignore_index: Target value of unscored pixels ("void"): they are no boundary pixels
            and make none of their neighbours one, in either map; only pairs of scored
            4-neighbours count, as if the ignored pixels were cut out of the image.

    Returns:
        The score in [0, 1]. Edge cases: neither map has a boundary pixel (e.g. both a single
        class, not necessarily the same one) -> 1.0; exactly one of them has none -> 0.0.
    """
    if pred.ndim != 2 or pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target of the same (H, W) shape; got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    _check_tolerance(tolerance)
    for name, t in (("pred", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex():
            raise ValueError(f"expected {name} as an integer or boolean map; got {t.dtype}")
    valid = None if ignore_index is None else (target != ignore_index)[None]
    return float(boundary_f1_scores(pred[None], target[None], tolerance, valid)[0])


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


class LanguageModelMeter:
    """Accumulates the next-token loss and error over batches of logits (B, T, V) and targets
    (B, T), weighting every token alike; ``bits_per_char`` is the loss (nats) over ln 2."""

    def __init__(self) -> None:
        self.tokens = 0
        self.loss_sum = 0.0
        self.wrong = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float) -> None:
        n = target.numel()
        self.tokens += n
        self.loss_sum += loss * n  # loss: the batch's mean over its tokens
        self.wrong += int((logits.argmax(dim=-1) != target).sum())

    def result(self) -> dict[str, float]:
        n = max(self.tokens, 1)
        loss = self.loss_sum / n
        return {"loss": loss, "error": self.wrong / n, "bits_per_char": loss / math.log(2)}


class SegmentationMeter:
    """Accumulates a confusion matrix (for IoU, Dice, pixel error), per-image Rand errors and
    per-image boundary F-scores.

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
            means (torchmetrics does the same). For the boundary F-score they are no boundary
            pixels, in the target or the prediction, and make none of their neighbours one
            (:func:`boundary_f1`). None: every target pixel must be a class index.
        boundary_tolerance: Tolerance in pixels of the boundary F-score.

    ``result()`` gives ``boundary_f1``, the mean over images of :func:`boundary_f1` of the
    argmax map (every class boundary, any number of classes; NaN before any image), besides
    ``loss``, ``error`` (pixel error), ``iou``, ``dice`` and, with a foreground class,
    ``rand_error`` (also a mean over images).
    """

    def __init__(
        self,
        num_classes: int,
        foreground: int | None = 1,
        ignore_index: int | None = None,
        boundary_tolerance: int = BOUNDARY_TOLERANCE,
    ) -> None:
        if ignore_index is not None and ignore_index == foreground:
            raise ValueError(f"ignore_index {ignore_index} is the Rand error's foreground class")
        _check_tolerance(boundary_tolerance)
        self.num_classes = num_classes
        self.foreground = foreground
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [true, pred]
        self.loss_sum = 0.0
        self.images = 0
        self.rand_sum = 0.0
        self.boundary_tolerance = boundary_tolerance
        self.boundary_sum = 0.0

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
        scores = boundary_f1_scores(pred, target, self.boundary_tolerance, valid)
        self.boundary_sum += float(scores.sum())
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
            "boundary_f1": self.boundary_sum / self.images if self.images else math.nan,
        }
        if self.foreground is not None:
            out["rand_error"] = self.rand_sum / max(self.images, 1)
        return out


def make_meter(
    task: str, num_classes: int, ignore_index: int | None = None
) -> ClassificationMeter | SegmentationMeter | LanguageModelMeter:
    """The meter for a task; the Rand error is computed for two-class segmentation only."""
    if task == "classification":
        return ClassificationMeter()
    if task == "language_modeling":
        return LanguageModelMeter()
    return SegmentationMeter(
        num_classes, foreground=1 if num_classes == 2 else None, ignore_index=ignore_index
    )
