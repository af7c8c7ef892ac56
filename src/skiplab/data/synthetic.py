"""Synthetic datasets generated deterministically from a seed, for tests and quick experiments.

Classification (``"synthetic"``): 32x32 RGB images of one shape in one of 10 classes, each
class a (shape, fill) pair of five shapes and two fills (solid or striped), drawn with random
position, size, aspect, rotation and colours over a noisy, textured background that sometimes
carries stripes of its own. A class's foreground hue is drawn within one class spacing of a
class-specific centre, so any hue fits exactly two neighbouring classes (colour alone gives at
most 50%), and neighbours differ in one detail (disc/ring, square/triangle, solid/striped).
Colour is an early foothold (without it a resnet20 at lr 0.1 stayed near chance for 150
steps); shape and texture are needed for the rest.

Learning curve (``tests/data/synthetic_learning_curve.py``): a resnet20 with SGD at lr 0.1
passes 90% training accuracy only after a few hundred steps (measured: docs/benchmarks.md,
section 'Learning curve of the synthetic dataset').

Segmentation (``"synthetic-seg"``): 64x64 RGB images with 1..4 overlapping shapes; the mask
gives the class of the topmost shape at each pixel (0 = background, 1.. = shape kinds).

Same seed and sizes -> identical bytes; train and test come from unrelated random streams.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from skiplab.config import check_int
from skiplab.data.dataset import ArrayDataset, channel_stats, mix_seed

Tensor = torch.Tensor


# Signed distance (negative inside) in units of the shape's radius, for local coordinates u, v.
def _disc(u: Tensor, v: Tensor) -> Tensor:
    return torch.sqrt(u * u + v * v) - 1.0


def _ring(u: Tensor, v: Tensor) -> Tensor:
    return (torch.sqrt(u * u + v * v) - 0.7).abs() - 0.3  # annulus from 0.4 to 1.0


def _square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) - 0.8


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    k = math.sqrt(3) / 2  # edges with unit normals at -90, 30, 150 degrees, inradius 0.5
    return torch.maximum(torch.maximum(-v, k * u + 0.5 * v), -k * u + 0.5 * v) - 0.5


def _cross(u: Tensor, v: Tensor) -> Tensor:
    a, b = u.abs(), v.abs()
    return torch.minimum(torch.maximum(a - 0.3, b - 1.0), torch.maximum(b - 0.3, a - 1.0))


SHAPES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "disc": _disc, "ring": _ring, "square": _square, "triangle": _triangle, "cross": _cross,
}  # fmt: skip

# The 10 classification classes, (shape, fill), in hue order: class k's foreground hue is
# k / 10 +- 0.1 on the colour circle, so a hue fits two neighbouring classes, and neighbours
# differ in one detail only (shape or fill), except the pair that closes the circle (9, 0).
CLASSES: tuple[tuple[str, str], ...] = (
    ("disc", "solid"), ("ring", "solid"), ("ring", "striped"), ("disc", "striped"),
    ("square", "striped"), ("square", "solid"), ("triangle", "solid"), ("cross", "solid"),
    ("cross", "striped"), ("triangle", "striped"),
)  # fmt: skip
SEG_SHAPES = ("disc", "square", "triangle")  # class k >= 1 of synthetic-seg is SEG_SHAPES[k-1]


@dataclass(frozen=True)
class Style:
    """How hard the images are; the defaults are the ones the learning curve was measured with.

    Attributes:
        radius: Range of the shape radius, as a fraction of the image size.
        stretch: Range of the shape's aspect-ratio factor.
        hue_spread: Half-width of a class's foreground hue range around its centre (the
            class spacing is 0.1; 0.5 makes colour carry no class information).
        min_contrast: Smallest RGB distance (0..1 scale) of the background from the shape.
        blotches: Amplitude of the smooth colour variation of the background.
        background_stripes: Probability that the background carries stripes too.
        stripe_amplitude: Amplitude of those background stripes.
        noise: Standard deviation of the per-pixel Gaussian noise.
    """

    radius: tuple[float, float] = (0.19, 0.34)
    stretch: tuple[float, float] = (0.8, 1.25)
    hue_spread: float = 0.1
    min_contrast: float = 0.45
    blotches: float = 0.12
    background_stripes: float = 0.5
    stripe_amplitude: float = 0.15
    noise: float = 0.06


DEFAULT_STYLE = Style()
SEG_STYLE = Style(radius=(0.08, 0.2), noise=0.05)  # colours: random, not by class


def _uniform(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g)


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(n,) hue, saturation, value in 0..1 -> (n, 3) RGB in 0..1."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + 6 * h[:, None]) % 6
    return v[:, None] * (1 - s[:, None] * torch.minimum(k, 4 - k).clamp(0, 1))


def _class_colours(g: torch.Generator, labels: Tensor, style: Style) -> Tensor:
    """Foreground colours (n, 3): hue around label / 10, saturation and value 0.5..1."""
    n = labels.shape[0]
    hue = (labels / len(CLASSES) + _uniform(g, n, -style.hue_spread, style.hue_spread)) % 1
    return _hsv_to_rgb(hue, _uniform(g, n, 0.5, 1.0), _uniform(g, n, 0.5, 1.0))


def _contrasting(g: torch.Generator, base: Tensor, min_dist: float) -> Tensor:
    """Random colours (n, 3) at least ``min_dist`` (Euclidean, 0..1 scale) from ``base``."""
    out = torch.rand(base.shape, generator=g)
    for _ in range(100):  # rejection sampling, vectorised; each round keeps ~70%
        close = (out - base).norm(dim=1) < min_dist
        if not close.any():
            return out
        out[close] = torch.rand(int(close.sum()), 3, generator=g)
    close = (out - base).norm(dim=1) < min_dist
    return torch.where(close[:, None], 1.0 - base.round(), out)  # the far corner: always far


def _background(g: torch.Generator, colour: Tensor, size: int, style: Style) -> Tensor:
    """(n, 3, size, size) backgrounds of ``colour`` (n, 3) with smooth blotches and, sometimes,
    faint stripes of random period and orientation (so that stripes alone do not give the
    class)."""
    n = colour.shape[0]
    blotches = F.interpolate(
        torch.randn(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear"
    )
    yy, xx = _grid(size)
    theta = _uniform(g, n, 0, math.pi, 1, 1)
    period = _uniform(g, n, 2.5, 6.0, 1, 1)
    phase = _uniform(g, n, 0, 2 * math.pi, 1, 1)
    waves = torch.sin(
        2 * math.pi * (xx * torch.cos(theta) + yy * torch.sin(theta)) / period + phase
    )
    on = (torch.rand(n, 1, 1, generator=g) < style.background_stripes).float()
    stripes = (style.stripe_amplitude * on * waves)[:, None]
    return colour[:, :, None, None] + style.blotches * blotches + stripes


def _grid(size: int) -> tuple[Tensor, Tensor]:
    ar = torch.arange(size, dtype=torch.float32) + 0.5
    return ar.view(1, size, 1), ar.view(1, 1, size)  # yy (1, H, 1), xx (1, 1, W)


def _paint(
    g: torch.Generator,
    canvas: Tensor,
    kinds: list[str],
    fills: Tensor,
    colour: Tensor,
    style: Style,
) -> Tensor:
    """Draw one shape per image onto ``canvas`` (n, 3, S, S) in place; return its coverage
    (n, S, S) in 0..1. ``kinds`` names each image's shape, ``fills`` (n,) is True for stripes,
    ``colour`` (n, 3) is the shape's colour."""
    n, _, size, _ = canvas.shape
    r = _uniform(g, n, style.radius[0] * size, style.radius[1] * size, 1, 1)
    cy = _uniform(g, n, 0.25 * size, 0.75 * size, 1, 1)
    cx = _uniform(g, n, 0.25 * size, 0.75 * size, 1, 1)
    angle = _uniform(g, n, 0, 2 * math.pi, 1, 1)
    stretch = _uniform(g, n, *style.stretch, 1, 1)  # mild anisotropy
    yy, xx = _grid(size)
    dy, dx = yy - cy, xx - cx
    u = (torch.cos(angle) * dx + torch.sin(angle) * dy) / (r * stretch)
    v = (-torch.sin(angle) * dx + torch.cos(angle) * dy) * stretch / r
    sdf = torch.empty(n, size, size)
    for name, fn in SHAPES.items():
        sel = torch.tensor([k == name for k in kinds], dtype=torch.bool)
        if sel.any():
            sdf[sel] = fn(u[sel], v[sel])
    coverage = (0.5 - sdf * r).clamp(0, 1)  # one-pixel anti-aliased edge

    period = _uniform(g, n, 2.6, 4.0, 1, 1)  # pixels
    stripes = 0.5 + 0.5 * torch.tanh(3 * torch.sin(2 * math.pi * u * r / period))
    pattern = torch.where(fills.view(n, 1, 1), stripes, torch.ones_like(stripes))[:, None]
    # Stripes alternate the shape colour with one halfway to the background.
    fg = colour[:, :, None, None]
    halfway = 0.5 * (fg + canvas.mean(dim=(2, 3), keepdim=True))
    paint = fg * pattern + halfway * (1 - pattern)
    canvas.mul_(1 - coverage[:, None]).add_(paint * coverage[:, None])
    return coverage


def _to_uint8(x: Tensor, g: torch.Generator, noise: float) -> Tensor:
    x = x + noise * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()


def _stream(seed: int, split: str, kind: str) -> torch.Generator:
    check_int("seed", seed, 0)
    return torch.Generator().manual_seed(
        mix_seed(seed, {"train": 0, "test": 1}[split], {"cls": 0, "seg": 1}[kind])
    )


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"synthetic datasets have splits 'train' and 'test'; got {split!r}")


def make_classification(
    split: str,
    seed: int = 0,
    *,
    num_train: int = 5000,
    num_test: int = 1000,
    style: Style = DEFAULT_STYLE,
) -> ArrayDataset:
    """Synthetic 10-class shapes-and-fills images, (N, 3, 32, 32), classes balanced.

    Normalisation statistics come from the training split (generated when ``split`` is
    ``"test"``, a second or two).
    """
    _check_split(split)
    check_int("num_train", num_train, 1)
    check_int("num_test", num_test, 1)
    n = num_train if split == "train" else num_test
    images, targets = _classification(split, seed, n, style)
    train = images if split == "train" else _classification("train", seed, num_train, style)[0]
    mean, std = channel_stats(train)
    names = tuple(f"{fill} {shape}" for shape, fill in CLASSES)
    source = f"synthetic seed={seed} (num_train={num_train}, num_test={num_test}) {split}"
    return ArrayDataset(images, targets, names, "classification", mean, std, source)


def _classification(split: str, seed: int, n: int, style: Style) -> tuple[Tensor, Tensor]:
    g = _stream(seed, split, "cls")
    # Balanced: each class n // 10 or n // 10 + 1 times, in a random order.
    labels = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    colour = _class_colours(g, labels, style)
    canvas = _background(g, _contrasting(g, colour, style.min_contrast), 32, style)
    kinds = [CLASSES[k][0] for k in labels.tolist()]
    fills = torch.tensor([CLASSES[k][1] == "striped" for k in labels.tolist()])
    _paint(g, canvas, kinds, fills, colour, style)
    return _to_uint8(canvas, g, style.noise), labels


def make_segmentation(
    split: str,
    seed: int = 0,
    *,
    num_train: int = 1000,
    num_test: int = 200,
    size: int = 64,
    num_classes: int = 3,
) -> ArrayDataset:
    """Synthetic segmentation: (N, 3, size, size) images and (N, size, size) masks.

    Args:
        num_classes: 2..4: background plus the first ``num_classes - 1`` of
            :data:`SEG_SHAPES`.
    """
    _check_split(split)
    check_int("num_train", num_train, 1)
    check_int("num_test", num_test, 1)
    check_int("size", size, 16)
    if num_classes not in (2, 3, 4):
        raise ValueError(f"num_classes must be 2, 3 or 4; got {num_classes!r}")
    args = (seed, size, num_classes)
    images, masks = _segmentation(split, num_train if split == "train" else num_test, *args)
    train = images if split == "train" else _segmentation("train", num_train, *args)[0]
    mean, std = channel_stats(train)
    names = ("background",) + SEG_SHAPES[: num_classes - 1]
    source = (
        f"synthetic-seg seed={seed} (num_train={num_train}, num_test={num_test}, "
        f"size={size}, num_classes={num_classes}) {split}"
    )
    return ArrayDataset(images, masks, names, "segmentation", mean, std, source)


def _segmentation(split: str, n: int, seed: int, size: int, num_classes: int):
    g = _stream(seed, split, "seg")
    background = torch.rand(n, 3, generator=g)
    canvas = _background(g, background, size, SEG_STYLE)
    masks = torch.zeros(n, size, size, dtype=torch.int64)
    count = torch.randint(1, 5, (n,), generator=g)  # 1..4 shapes per image
    for layer in range(4):
        idx = torch.nonzero(count > layer).flatten()  # images that get a shape in this layer
        cls = torch.randint(1, num_classes, (len(idx),), generator=g)
        kinds = [SEG_SHAPES[k - 1] for k in cls.tolist()]
        fills = torch.rand(len(idx), generator=g) < 0.3
        colour = _contrasting(g, background[idx], SEG_STYLE.min_contrast)
        sub = canvas[idx]
        coverage = _paint(g, sub, kinds, fills, colour, SEG_STYLE)
        canvas[idx] = sub
        # A pixel belongs to the topmost shape that covers at least half of it.
        sub_masks = masks[idx]
        hit = coverage >= 0.5
        sub_masks[hit] = cls[:, None, None].expand_as(sub_masks)[hit]
        masks[idx] = sub_masks
    return _to_uint8(canvas, g, SEG_STYLE.noise), masks
