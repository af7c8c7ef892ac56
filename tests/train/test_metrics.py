"""Metrics on hand-made masks with known answers, and against brute-force definitions."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
import torch

from skiplab.train.metrics import (
    ClassificationMeter,
    SegmentationMeter,
    connected_components,
    rand_error,
    topk_wrong,
)


def mask(rows: list[str]) -> torch.Tensor:
    """'#' = foreground."""
    return torch.tensor([[c == "#" for c in r] for r in rows], dtype=torch.bool)


def flood_fill(m: torch.Tensor, connectivity: int) -> torch.Tensor:
    """Reference labelling: breadth-first search from each unlabelled pixel in raster order."""
    h, w = m.shape
    labels = torch.zeros(h, w, dtype=torch.int64)
    steps = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        steps += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    count = 0
    for y, x in itertools.product(range(h), range(w)):
        if m[y, x] and labels[y, x] == 0:
            count += 1
            labels[y, x] = count
            queue = deque([(y, x)])
            while queue:
                cy, cx = queue.popleft()
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and m[ny, nx] and labels[ny, nx] == 0:
                        labels[ny, nx] = count
                        queue.append((ny, nx))
    return labels


def rand_error_by_pairs(pred: torch.Tensor, target: torch.Tensor) -> float:
    """The definition, pair by pair: over ordered pairs (with repetition) of ground-truth
    foreground pixels, precision = P(same true segment | same proposed segment), recall =
    P(same proposed | same true), error = 1 - 2PR/(P+R). Proposed background pixels are
    segments of their own."""
    t = flood_fill(target, 4).flatten().tolist()
    s = flood_fill(pred, 4).flatten().tolist()
    pixels = [i for i, v in enumerate(t) if v > 0]
    s = [s[i] if s[i] > 0 else -1 - i for i in range(len(s))]  # unique ids for background
    both = same_s = same_t = 0
    for i, j in itertools.product(pixels, pixels):
        ss, st = s[i] == s[j], t[i] == t[j]
        both += ss and st
        same_s += ss
        same_t += st
    precision, recall = both / same_s, both / same_t
    return 1 - 2 * precision * recall / (precision + recall)


def test_connected_components_hand_made():
    m = mask(["##.#",
              ".#.#",
              "#..#",
              "####"])  # fmt: skip
    four = torch.tensor([[1, 1, 0, 2], [0, 1, 0, 2], [2, 0, 0, 2], [2, 2, 2, 2]])
    assert torch.equal(connected_components(m, 4), four)
    # With diagonals, (1, 1) touches (2, 0): one component.
    assert torch.equal(connected_components(m, 8), (four > 0).long())
    assert connected_components(torch.zeros(3, 3, dtype=torch.bool)).eq(0).all()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_match_flood_fill(connectivity):
    g = torch.Generator().manual_seed(1)
    for density in (0.3, 0.55, 0.7):
        m = torch.rand(23, 31, generator=g) < density
        assert torch.equal(connected_components(m, connectivity), flood_fill(m, connectivity))


def test_connected_components_long_snake():
    # A one-pixel-wide serpentine: one component whose path visits every row (the worst case
    # for plain label propagation).
    m = torch.zeros(41, 40, dtype=torch.bool)
    m[::2] = True
    m[1::4, -1] = True
    m[3::4, 0] = True
    assert connected_components(m).max() == 1


def test_connected_components_reject_bad_input():
    with pytest.raises(ValueError, match="boolean"):
        connected_components(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(torch.zeros(3, 3, dtype=torch.bool), 6)


def test_rand_error_known_answers():
    target = mask(["##.##"])  # two true segments of 2 pixels
    assert rand_error(target, target) == 0.0
    # Merge: one proposed segment over both. sum p^2 = 8, sum s^2 = 16, sum t^2 = 8 (x 1/16):
    # V = 8 / (0.5 * 16 + 0.5 * 8) = 2/3.
    assert rand_error(mask(["#####"]), target) == pytest.approx(1 / 3)
    # Split: one true segment of 5 cut in 2 + 2 by a proposed border pixel (a singleton):
    # sum p^2 = 4 + 1 + 4, sum s^2 = 9, sum t^2 = 25: V = 18 / 34.
    assert rand_error(mask(["##.##"]), mask(["#####"])) == pytest.approx(1 - 18 / 34)
    # Proposed background inside the true segment: pixels 2 and 3 are singletons.
    # sum p^2 = 4 + 1 + 1, sum s^2 = 4 + 1 + 1, sum t^2 = 16: V = 6 / 11.
    assert rand_error(mask(["##.."]), mask(["####"])) == pytest.approx(1 - 6 / 11)
    # Nothing but true background: not scored.
    assert rand_error(mask(["###"]), mask(["..."])) == 0.0
    # Relabelling does not matter, the membrane pixels of the truth are ignored.
    assert rand_error(mask(["#.##"]), mask(["#..#"])) == 0.0


def test_rand_error_matches_pair_counting():
    g = torch.Generator().manual_seed(2)
    for _ in range(6):
        target = torch.rand(7, 9, generator=g) < 0.6
        pred = torch.rand(7, 9, generator=g) < 0.6
        assert rand_error(pred, target) == pytest.approx(rand_error_by_pairs(pred, target))


def test_segmentation_meter_hand_made():
    # target [[0, 1], [1, 1]], prediction [[1, 1], [0, 1]]:
    # class 0: tp 0, fp 1, fn 1 -> IoU 0, Dice 0; class 1: tp 2, fp 1, fn 1 -> IoU 1/2, Dice 2/3.
    target = torch.tensor([[[0, 1], [1, 1]]])
    pred = torch.tensor([[[1, 1], [0, 1]]])
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    meter = SegmentationMeter(2)
    meter.update(logits, target, loss=0.5)
    r = meter.result()
    assert r["error"] == pytest.approx(0.5)
    assert r["iou"] == pytest.approx(0.25)
    assert r["dice"] == pytest.approx(1 / 3)
    assert r["loss"] == pytest.approx(0.5)
    # Foreground components: truth one L-shaped segment of 3, proposal one of 2 inside it plus a
    # singleton at (1, 0): sum p^2 = 4 + 1, sum s^2 = 4 + 1, sum t^2 = 9 -> V = 10 / 14.
    assert r["rand_error"] == pytest.approx(1 - 10 / 14)


def onehot_logits(pred: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, k).permute(0, 3, 1, 2).float()


def test_segmentation_meter_skips_a_class_absent_from_target_and_prediction():
    # 4 classes, class 3 in neither mask. Classes 0..2 as in the hand-made two-class case:
    # IoU 0 (class 0), 1/2 (class 1), 1 (class 2): mean over the 3 present classes, not 4.
    target = torch.tensor([[[0, 1, 2], [1, 1, 2]]])
    pred = torch.tensor([[[1, 1, 2], [0, 1, 2]]])
    meter = SegmentationMeter(4, foreground=None)
    meter.update(onehot_logits(pred, 4), target, loss=0.0)
    r = meter.result()
    assert r["iou"] == pytest.approx((0 + 1 / 2 + 1) / 3)
    assert r["dice"] == pytest.approx((0 + 2 / 3 + 1) / 3)
    assert SegmentationMeter(4).result()["iou"] != SegmentationMeter(4).result()["iou"]  # NaN


def test_segmentation_meter_ignore_index():
    # The 255 pixels are left out of IoU, Dice and pixel error whatever was predicted there.
    target = torch.tensor([[[0, 1, 255], [1, 1, 255]]])
    pred = torch.tensor([[[1, 1, 0], [0, 1, 1]]])
    meter = SegmentationMeter(2, ignore_index=255)
    meter.update(onehot_logits(pred, 2), target, loss=0.0)
    r = meter.result()
    assert r["error"] == pytest.approx(0.5) and r["iou"] == pytest.approx(0.25)
    assert r["dice"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"0..1 or be ignore_index 255; got values from 0 to 7"):
        meter.update(onehot_logits(pred, 2), torch.tensor([[[0, 7, 255], [1, 1, 1]]]), 0.0)
    with pytest.raises(ValueError, match=r"indices must lie in 0..1; got values from 0 to 255"):
        SegmentationMeter(2).update(onehot_logits(pred, 2), target, 0.0)
    with pytest.raises(ValueError, match="foreground"):
        SegmentationMeter(2, foreground=1, ignore_index=1)


@pytest.mark.parametrize("ignore_index", [None, 255, 0])
def test_segmentation_meter_matches_torchmetrics(ignore_index):
    tm = pytest.importorskip("torchmetrics.classification")  # the dev extra
    k = 5
    g = torch.Generator().manual_seed(3)
    jaccard = tm.MulticlassJaccardIndex(k, average="macro", ignore_index=ignore_index)
    # Per class: torchmetrics' macro F1 keeps an ignore_index class in its mean (its Jaccard
    # index does not); skiplab leaves it out of both.
    f1 = tm.MulticlassF1Score(k, average="none", ignore_index=ignore_index)
    meter = SegmentationMeter(k, foreground=None, ignore_index=ignore_index)
    for _ in range(3):
        # Classes 0..2 only (3 and 4 absent from both), some pixels ignored.
        target = torch.randint(0, 3, (2, 6, 7), generator=g)
        pred = torch.where(torch.rand(2, 6, 7, generator=g) < 0.6, target, 2 - target)
        if ignore_index is not None:
            target[torch.rand(2, 6, 7, generator=g) < 0.2] = ignore_index
        meter.update(onehot_logits(pred, k), target, loss=0.0)
        jaccard.update(pred, target)
        f1.update(pred, target)
    r = meter.result()
    assert r["iou"] == pytest.approx(float(jaccard.compute()), abs=1e-6)
    scored = [c for c in range(3) if c != ignore_index]  # present, not ignored
    assert r["dice"] == pytest.approx(float(f1.compute()[scored].mean()), abs=1e-6)


def test_classification_meter_and_topk():
    logits = torch.tensor([[5.0, 1, 2, 3, 4, 0], [0.0, 1, 2, 3, 4, 5], [0.0, 6, 2, 3, 4, 5]])
    target = torch.tensor([0, 0, 2])
    assert topk_wrong(logits, target, 1) == 2
    assert topk_wrong(logits, target, 5) == 1  # sample 1: class 0 is the smallest of six
    meter = ClassificationMeter()
    meter.update(logits, target, loss=1.5)
    assert meter.result() == pytest.approx({"loss": 1.5, "error": 2 / 3, "top5_error": 1 / 3})
