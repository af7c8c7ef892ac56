"""Metrics on hand-made masks with known answers, and against brute-force definitions."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
import torch

from skiplab.train.metrics import (
    ClassificationMeter,
    SegmentationMeter,
    boundary_f1,
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


def classes(rows: list[str]) -> torch.Tensor:
    """A class map: each character a class index ('.' = 0, '#' = 1, digits as they are,
    'v' = 255)."""
    code = {".": 0, "#": 1, "v": 255}
    return torch.tensor([[code[c] if c in code else int(c) for c in r] for r in rows])


def boundary_f1_by_loops(
    pred: torch.Tensor, target: torch.Tensor, tolerance: int, ignore_index: int | None = None
) -> float:
    """The definition pixel by pixel: boundary pixels are scored pixels with a scored
    4-neighbour of another class; each boundary pixel's distance to the nearest boundary pixel
    of the other map (Chebyshev) decides whether it is matched."""
    h, w = target.shape

    def scored(y: int, x: int) -> bool:
        return ignore_index is None or int(target[y, x]) != ignore_index

    def boundary(m: torch.Tensor) -> list[tuple[int, int]]:
        out = []
        for y, x in itertools.product(range(h), range(w)):
            if not scored(y, x):
                continue
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and scored(ny, nx) and m[ny, nx] != m[y, x]:
                    out.append((y, x))
                    break
        return out

    def matched(points: list[tuple[int, int]], others: list[tuple[int, int]]) -> int:
        return sum(
            min(max(abs(y - oy), abs(x - ox)) for oy, ox in others) <= tolerance for y, x in points
        )

    bp, bt = boundary(pred), boundary(target)
    if not bp and not bt:
        return 1.0
    if not bp or not bt:
        return 0.0
    precision, recall = matched(bp, bt) / len(bp), matched(bt, bp) / len(bt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


# A 3x3 square of class 1 and the same square one pixel to the right. Boundary pixels of each:
# the 8 edge pixels of the square (not its centre) and the 12 outside pixels that share a side
# with it, 20 in all. Common to both: column 2 rows 2-4 (target edge, prediction's outer ring),
# (2, 3), (4, 3), (2, 4), (4, 4) (edges of both), column 5 rows 2-4 (target's outer ring,
# prediction's edge), (1, 3), (1, 4), (5, 3), (5, 4) (outer rings of both): 3 + 4 + 3 + 4 = 14.
SQUARE = classes(["........",
                  "........",
                  "..###...",
                  "..###...",
                  "..###...",
                  "........",
                  "........"])  # fmt: skip
SHIFTED = SQUARE.roll(1, dims=1)


def test_boundary_f1_identical_maps_score_one():
    assert boundary_f1(SQUARE, SQUARE) == 1.0
    assert boundary_f1(SQUARE, SQUARE, tolerance=0) == 1.0
    three = classes(["0012", "0112", "2222"])
    assert boundary_f1(three, three.clone(), 0) == 1.0
    assert boundary_f1(SQUARE.bool(), SQUARE.bool()) == 1.0  # boolean masks


def test_boundary_f1_of_a_boundary_shifted_by_one_pixel():
    # Tolerance 0: P = R = 14/20 (see SQUARE), F = 0.7. Tolerance 1 or more: every boundary
    # pixel of either map is at most one pixel from one of the other's.
    assert boundary_f1(SHIFTED, SQUARE, tolerance=0) == pytest.approx(0.7)
    assert boundary_f1(SHIFTED, SQUARE, tolerance=1) == 1.0
    assert boundary_f1(SHIFTED, SQUARE, tolerance=2) == 1.0
    assert boundary_f1(SHIFTED, SQUARE) == 1.0  # default tolerance 2


def test_boundary_f1_precision_and_recall_differ():
    # Target: one pixel of class 1 at (2, 2): boundary = it and its 4 neighbours, 5 pixels.
    # Prediction grows it to (2, 2)-(2, 3): boundary = those 2 and their 6 side neighbours, 8
    # pixels, containing all 5 true ones. Tolerance 0: P = 5/8, R = 1, F = 2 (5/8) / (13/8)
    # = 10/13. Tolerance 1: (1, 3), (3, 3), (2, 4) are one pixel from (2, 3): F = 1.
    target = classes([".....", ".....", "..#..", ".....", "....."])
    pred = classes([".....", ".....", "..##.", ".....", "....."])
    assert boundary_f1(pred, target, 0) == pytest.approx(10 / 13)
    assert boundary_f1(target, pred, 0) == pytest.approx(10 / 13)  # P and R swap
    assert boundary_f1(pred, target, 1) == 1.0
    # A corner pixel: predicted boundary (0, 3), (0, 4), (1, 4), none of them a true one, so 0
    # at tolerance 0. Tolerance 1: (0, 3) is next to (1, 2) and (1, 4) to (2, 3), (0, 4) to
    # none: P = 2/3; of the true ones only (1, 2) and (2, 3) have a predicted one next to them:
    # R = 2/5; F = 2 (2/3) (2/5) / (2/3 + 2/5) = 1/2.
    far = classes(["....#", ".....", ".....", ".....", "....."])
    assert boundary_f1(far, target, 0) == 0.0
    assert boundary_f1(far, target, 1) == pytest.approx(0.5)


def test_boundary_f1_edge_cases():
    zeros, ones = torch.zeros(4, 5, dtype=torch.long), torch.ones(4, 5, dtype=torch.long)
    assert boundary_f1(zeros, zeros) == 1.0  # neither has a boundary
    assert boundary_f1(ones, zeros) == 1.0  # other classes, but still no boundary in either
    square = classes([".....", ".##..", ".##..", "....."])
    assert boundary_f1(zeros, square) == 0.0  # the prediction has none, the target has
    assert boundary_f1(square, zeros) == 0.0  # the target has none, the prediction has
    # Every pixel ignored but one: no pair of scored neighbours, so no boundary in either map.
    void = torch.full((4, 5), 255)
    void[0, 0] = 1
    assert boundary_f1(square, void, ignore_index=255) == 1.0


def test_boundary_f1_ignore_index():
    # Target 0 0 1 v 1 1: its only boundary is (0, 1)-(0, 2); the pairs with the void pixel
    # make none. Prediction 0 0 1 0 1 1: (0, 1)-(0, 2) likewise; its boundary at the void pixel
    # (0, 3) and the one it makes at (0, 4) are not scored. F = 1 even at tolerance 0.
    target = classes(["001v11"])
    pred = classes(["001011"])
    assert boundary_f1(pred, target, 0, ignore_index=255) == 1.0
    # Without ignore_index, 255 is a class: true boundary (0, 1)-(0, 4), predicted
    # (0, 1)-(0, 4) too: identical.
    assert boundary_f1(pred, target, 0) == 1.0
    # A predicted boundary between scored pixels is scored: 0 1 1 v 1 1 against the target,
    # tolerance 0: predicted (0, 0), (0, 1); true (0, 1), (0, 2): P = R = 1/2.
    assert boundary_f1(classes(["011011"]), target, 0, ignore_index=255) == pytest.approx(0.5)


def test_boundary_f1_rejects_bad_input():
    a = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(
        ValueError,
        match=r"expected pred and target of the same \(H, W\) shape; "
        r"got \(3, 4\) and \(3, 5\)",
    ):
        boundary_f1(a, torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(1, 3, 4\) and \(1, 3, 4\)"):
        boundary_f1(a[None], a[None])
    with pytest.raises(
        ValueError, match=r"tolerance must be a whole number of pixels >= 0; got -1"
    ):
        boundary_f1(a, a, tolerance=-1)
    with pytest.raises(ValueError, match=r"got 1.5"):
        boundary_f1(a, a, tolerance=1.5)
    with pytest.raises(ValueError, match=r"expected pred as an integer or boolean map; got "):
        boundary_f1(a.float(), a)
    with pytest.raises(ValueError, match="tolerance"):
        SegmentationMeter(2, boundary_tolerance=-2)


@pytest.mark.parametrize("tolerance", [0, 1, 2, 3])
def test_boundary_f1_matches_loops(tolerance):
    g = torch.Generator().manual_seed(4 + tolerance)

    def blocky(k: int, cell: int, h: int = 11, w: int = 13) -> torch.Tensor:
        m = torch.randint(0, k, (h // cell + 1, w // cell + 1), generator=g)
        return m.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:h, :w]

    for k, ignore_index in ((2, None), (3, None), (3, 255)):
        for _ in range(3):
            # Blocks of 4x4 pixels; the prediction: the target moved by up to 2 pixels, with
            # some of its 3x3 cells replaced by other 2x2-blocky classes (scores of about 0.4 to
            # 0.65 at tolerance 0, 0.7 to 1 at 1 and 2, nearly all 1 at 3).
            target = blocky(k, 4)
            shift = tuple(torch.randint(-2, 3, (2,), generator=g).tolist())
            moved = target.roll(shift, (0, 1))
            other = (blocky(2, 3) == 0) & (torch.rand(11, 13, generator=g) < 0.3)
            pred = torch.where(other, blocky(k, 2), moved)
            if ignore_index is not None:
                target[torch.rand(11, 13, generator=g) < 0.1] = ignore_index
            expected = boundary_f1_by_loops(pred, target, tolerance, ignore_index)
            got = boundary_f1(pred, target, tolerance, ignore_index=ignore_index)
            assert got == pytest.approx(expected)


def test_segmentation_meter_boundary_f1_is_the_mean_over_images():
    meter = SegmentationMeter(2, boundary_tolerance=0)
    assert meter.result()["boundary_f1"] != meter.result()["boundary_f1"]  # NaN, no image yet
    # Batch 1: SHIFTED for SQUARE (0.7) and an exact copy (1.0); batch 2: one image with no
    # boundary predicted (0.0).
    meter.update(onehot_logits(torch.stack([SHIFTED, SQUARE]), 2), torch.stack([SQUARE] * 2), 0)
    meter.update(onehot_logits(torch.zeros_like(SQUARE)[None], 2), SQUARE[None], 0)
    assert meter.result()["boundary_f1"] == pytest.approx((0.7 + 1.0 + 0.0) / 3)
    # Default tolerance 2; any number of classes (no foreground, no Rand error).
    three = SegmentationMeter(3, foreground=None)
    target = SQUARE + 2 * (SQUARE.roll(3, dims=1))  # classes 0, 1 and 2
    three.update(onehot_logits(target.roll(1, dims=1)[None], 3), target[None], 0)
    assert set(three.result()) == {"loss", "error", "iou", "dice", "boundary_f1"}
    assert three.result()["boundary_f1"] == 1.0
    # ignore_index: as boundary_f1(..., ignore_index=255).
    void = SegmentationMeter(2, ignore_index=255, boundary_tolerance=0)
    void.update(onehot_logits(classes(["011011"])[None], 2), classes(["001v11"])[None], 0)
    assert void.result()["boundary_f1"] == pytest.approx(0.5)


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
