"""The interface every skiplab network shares, and the small parts several families use.

Every model is a :class:`SkipNet`:

- ``forward(x) == forward_head(forward_features(x))``;
- ``feature_info``: one :class:`FeatureInfo` per stage (channels, reduction), in the order of
  ``forward_intermediates(x)``, so that U-Net and FPN decoders can sit on any backbone; each
  entry also reads as timm's dict (``feature_info[0]["num_chs"]``);
- classification nets have ``get_classifier()`` and ``reset_classifier(num_classes)``;
- ``iter_blocks()`` yields ``(name, block)`` for every unit that owns a skip connection, so
  that analysis code can hook or lesion blocks without knowing the architecture; what a unit
  offers that code is declared once, below, as the unit contract (:class:`SkipUnit`,
  :class:`GatedUnit`, :class:`ZeroInitUnit`, :class:`FusableUnit`);
- ``set_grad_checkpointing(True)`` recomputes blocks in backward to save memory;
- a wrong input raises ``ValueError`` naming the expected and the given shape before any
  convolution runs; under ``torch.fx`` symbolic tracing (a ``Proxy`` input, e.g.
  torchvision's ``create_feature_extractor``) the check is skipped, since a proxy has no
  concrete shape to check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from skiplab.config import check_choice as check_choice  # re-exported for the families
from skiplab.config import check_int


@dataclass(frozen=True)
class FeatureInfo(Mapping):
    """One stage of a backbone: the module that produces it, its channels and its stride.

    Read as attributes (``info.num_chs``) or, like timm's feature_info dicts, by key
    (``info["num_chs"]``, ``dict(info)``).
    """

    module: str
    num_chs: int
    reduction: int

    def __getitem__(self, key: str):
        if key not in self._keys():
            raise KeyError(f"FeatureInfo has keys {list(self._keys())}; got {key!r}")
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


# -- the unit contract ----------------------------------------------------------------------------
# What the blocks of ``iter_blocks()`` may offer, declared once. Analysis code (skiplab.analysis,
# skiplab.fuse) asks ``isinstance(block, SkipUnit)`` and never probes for attributes; a new family
# takes part by implementing these methods (structural typing: no base class needed).
@runtime_checkable
class SkipUnit(Protocol):
    """A unit whose output is branch + shortcut: ResNet units, residual and highway layers.

    ``residual``: False for the plain control unit built from the same code (same layers and
    parameter names, no addition). ``skip(x)``: the shortcut path alone, what the unit computes
    when its branch is deleted (Veit et al. 2016 lesion; the identity, or the option A padding /
    option B projection of He et al. 2015 where shapes change; with a shortcut variant of He et
    al. 2016 the whole shortcut term, e.g. ``(1 - g(x))·x`` for exclusive gating).
    """

    residual: bool

    def skip(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class GatedUnit(Protocol):
    """A unit whose shortcut is gated (highway layers, Srivastava et al. 2015): ``gate`` is the
    transform gate (None for the layer's ungated forms) and ``set_gate("closed")`` makes the unit
    carry its input, which is how the highway paper lesions a layer."""

    gate: nn.Module | None

    def set_gate(self, mode: str) -> None: ...


@runtime_checkable
class ZeroInitUnit(Protocol):
    """A unit that can start as its shortcut: ``zero_init_last()`` zeroes the last scale of its
    branch (the last BN's gamma, or the last convolution without a BN after it), so that the
    branch outputs 0 at initialisation (Goyal et al. 2017)."""

    def zero_init_last(self) -> None: ...


@runtime_checkable
class FusableUnit(Protocol):
    """A module that names its (conv, bn) pairs whose BN reads only the conv's output, relative
    to itself, so that skiplab.fuse can fold them for inference."""

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]: ...


class SkipNet(nn.Module):
    """Base class: input checks, block iteration and gradient checkpointing.

    Subclasses set ``model_name``, ``in_chans``, ``min_input_size`` (smallest H and W the net
    accepts), ``input_dtype`` where the input is not an image, and ``feature_info``, and
    implement ``forward_features``, ``forward_head``, ``forward_intermediates`` and
    ``iter_blocks``.
    """

    model_name: str = "skipnet"
    in_chans: int = 3
    min_input_size: int = 1
    # dtype of the input: None for images (the parameters' floating dtype), torch.long for token
    # ids (a language model); what skiplab.complexity feeds the model.
    input_dtype: torch.dtype | None = None
    feature_info: list[FeatureInfo]

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    # -- input -------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a float batch (N, in_chans, H, W) large enough.

        Skipped for a ``torch.fx.Proxy`` (symbolic tracing); subclasses add their own checks by
        overriding :meth:`_check_input`.
        """
        if is_fx_proxy(x):
            return
        self._check_input(x)

    def _check_input(self, x: torch.Tensor) -> None:
        expected = f"(N, {self.in_chans}, H, W)"
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"{self.model_name} expects a tensor {expected}; got {type(x).__name__}"
            )
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{self.model_name} expects input of shape {expected}; got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{self.model_name} expects a floating-point input; got dtype {x.dtype} "
                "(convert and normalise images first, e.g. x.float() / 255)"
            )
        h, w = x.shape[-2], x.shape[-1]
        if h < self.min_input_size or w < self.min_input_size:
            raise ValueError(
                f"{self.model_name} needs H and W >= {self.min_input_size} "
                "(its smallest valid input); "
                f"got input of shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- structure ---------------------------------------------------------------------------
    def iter_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        raise NotImplementedError

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block in backward instead of storing its activations."""
        self.grad_checkpointing = bool(enable)

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when built with ``num_classes=0``)."""
        raise NotImplementedError(f"{self.model_name} has no classifier (it is not a classifier)")

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a new ``nn.Linear(num_features, num_classes)`` (default
        initialisation), or by ``nn.Identity`` for ``num_classes=0`` (pooled features out).

        Raises:
            ValueError: for a negative or non-integer ``num_classes``.
            NotImplementedError: for a model without a classifier (U-Net, FPN).
        """
        check_int("num_classes", num_classes, 0)
        old = self.get_classifier()
        name = next(n for n, m in self.named_children() if m is old)
        new = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if isinstance(old, nn.Linear):
            new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        setattr(self, name, new)
        self.num_classes = num_classes
        cfg = getattr(self, "cfg", None)
        if dataclasses.is_dataclass(cfg) and hasattr(cfg, "num_classes"):
            self.cfg = dataclasses.replace(cfg, num_classes=num_classes)

    def run_block(self, block: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
        """Apply ``block``, through activation checkpointing when it is switched on."""
        return maybe_checkpointed(block, *inputs, enabled=self.grad_checkpointing and self.training)


def is_fx_proxy(*xs) -> bool:
    """True when any of ``xs`` is a ``torch.fx.Proxy``: the model is being symbolically traced,
    and its input checks (which need concrete shapes) must not run."""
    return any(isinstance(x, torch.fx.Proxy) for x in xs)


def maybe_checkpointed(block: nn.Module, *inputs, enabled: bool) -> torch.Tensor:
    """``block(*inputs)``, recomputed in backward (:func:`checkpointed`) when ``enabled`` (the
    caller's switch and training mode) and autograd is on; the one place that decides it for
    every container that checkpoints its blocks."""
    if enabled and torch.is_grad_enabled():
        return checkpointed(block, *inputs)
    return block(*inputs)


def checkpointed(block: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    """``block(*inputs)`` with its activations recomputed in backward instead of stored
    (non-reentrant ``torch.utils.checkpoint``; BatchNorm statistics updated once)."""
    return checkpoint(
        block, *inputs, use_reentrant=False, context_fn=lambda: _forward_and_recompute(block)
    )


def _forward_and_recompute(block: nn.Module):
    # The first context runs the real forward; the second the recomputation in backward, which
    # must not update BatchNorm running statistics a second time.
    return _noop(), frozen_bn_stats(block)


@contextmanager
def _noop():
    yield


@contextmanager
def frozen_bn_stats(module: nn.Module):
    """Run ``module`` in train mode without changing any BatchNorm running statistic.

    Used for recomputation under gradient checkpointing: momentum 0 keeps running_mean/var
    exactly as they are, and the batch counter is restored on exit.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    try:
        for m in norms:
            m.momentum = 0.0
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample in training.

    Kept branches are scaled by 1 / (1 - p) so that the expectation is unchanged.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1); got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def check_positive_int(what: str, value) -> None:
    """``skiplab.config.check_int(what, value, 1)``: "<what> must be a positive integer"."""
    check_int(what, value, 1)
