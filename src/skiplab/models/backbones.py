"""Backbones as encoders, and the size hints of error messages, shared by U-Net and FPN."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from skiplab.models._base import SkipNet
from skiplab.registry import get_model_entry


def nearest_sizes(size: int, is_valid: Callable[[int], bool]) -> str:
    """The "nearest valid sizes: a and b" of an error message (the smallest if none is below)."""
    below = next((s for s in range(size - 1, 0, -1) if is_valid(s)), None)
    above = next(s for s in itertools.count(size + 1) if is_valid(s))
    if below is None:
        return f"the smallest valid size is {above}"
    return f"nearest valid sizes: {below} and {above}"


def create_backbone(name: str, in_chans: int) -> SkipNet:
    """A registered classification model without classifier, to serve as an encoder.

    Raises:
        ValueError: for an unknown name, a non-classification model, or a model whose
            ``feature_info`` strides are not powers of two doubling from one stage to the next.
    """
    if not isinstance(name, str):
        raise ValueError(f"encoder must be a registered model name; got {name!r}")
    try:
        entry = get_model_entry(name)
    except KeyError as exc:
        raise ValueError(f"encoder: {exc.args[0]}") from None
    if entry.task != "classification":
        raise ValueError(f"encoder must be a classification backbone; {name!r} is {entry.task}")
    model = entry.build(num_classes=0, in_chans=in_chans)
    info = getattr(model, "feature_info", None)
    if not isinstance(model, SkipNet) or not info:
        raise ValueError(f"encoder {name!r} has no feature_info / forward_intermediates")
    strides = [f.reduction for f in info]
    doubling = all(b == 2 * a for a, b in itertools.pairwise(strides))
    if not doubling or strides[0] & (strides[0] - 1):
        raise ValueError(
            f"encoder {name!r}: feature strides must be powers of two, doubling from one feature "
            f"to the next; got {strides}"
        )
    return model
