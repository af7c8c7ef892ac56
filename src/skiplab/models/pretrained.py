"""Loading published weights into skiplab models, safely.

Files are read with ``torch.load(weights_only=True)`` (or safetensors), never with unsafe
unpickling: a file that needs it is refused. Known layouts are converted explicitly and the
conversion is reported:

- ``{"state_dict": {...}, "best_prec1": ...}`` wrappers (the public CIFAR ResNet checkpoints of
  Yerlan Idelbayev, option A, trained on the original CIFAR-10);
- a ``module.`` prefix left by ``DataParallel``;
- a classifier named ``linear`` (skiplab and torchvision call it ``fc``);
- BatchNorm ``num_batches_tracked`` buffers missing from files saved before PyTorch 0.4.1.

Models with published weights have a :class:`PretrainedCfg` in ``PRETRAINED_CFGS`` (URL,
SHA-256, licence, input size and the normalisation they were trained with), attached by
``create_model`` as ``model.pretrained_cfg``; ``create_model(name, pretrained=True)`` downloads
the file into the cache, verified against its SHA-256, and never downloads a file whose
SHA-256 is unknown.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from skiplab.data.cache import default_cache_dir
from skiplab.data.download import download_file
from skiplab.fileio import sha256_file

# Input normalisation those public CIFAR checkpoints were trained with (ImageNet statistics).
CIFAR_CHECKPOINT_MEAN = (0.485, 0.456, 0.406)
CIFAR_CHECKPOINT_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedCfg:
    """Published weights of one model, and how to feed it (timm's ``pretrained_cfg``).

    Attributes:
        url: Where the file is published.
        sha256: SHA-256 of that file; None when unknown, and then it is never downloaded.
        file_name: Name of the file in the cache.
        num_classes: Classifier outputs of the weights.
        input_size: ``(C, H, W)`` the weights were trained at.
        mean, std: Input normalisation the weights were trained with (0..1 scale).
        dataset: What they were trained on.
        license: Licence of the weights (SPDX identifier).
        source: Who published them, and where.
        reported_top1: Top-1 accuracy (%) their authors report (None when not known here).
        note: Anything a user must know (e.g. why ``sha256`` is None).
    """

    url: str
    sha256: str | None
    file_name: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    license: str
    source: str
    reported_top1: float | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models"


def _akamaster(file_name: str, sha256: str | None, top1: float | None, note: str = ""):
    return PretrainedCfg(
        url=f"{_AKAMASTER}/{file_name}",
        sha256=sha256,
        file_name=file_name,
        num_classes=10,
        input_size=(3, 32, 32),
        mean=CIFAR_CHECKPOINT_MEAN,
        std=CIFAR_CHECKPOINT_STD,
        dataset="CIFAR-10 (original), 50,000 training images",
        license="BSD-2-Clause",
        source="Yerlan Idelbayev, github.com/akamaster/pytorch_resnet_cifar10",
        reported_top1=top1,
        note=note,
    )


_UNKNOWN = (
    "sha256 unknown: only the first 8 hex digits, in the file name, are published, and skiplab "
    "has not hashed this file; it is never downloaded. Download it yourself, check it, and pass "
    "pretrained=PATH."
)
# SHA-256 of resnet20/56: hashed from the copies in ../shared/weights; each digest begins with
# the 8 hex digits of its published file name (torch.hub's convention).
PRETRAINED_CFGS: dict[str, PretrainedCfg] = {
    "resnet20": _akamaster(
        "resnet20-12fca82f.th",
        "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
        91.78,
    ),
    "resnet32": _akamaster("resnet32-d509ac18.th", None, None, _UNKNOWN),
    "resnet44": _akamaster("resnet44-014dd654.th", None, None, _UNKNOWN),
    "resnet56": _akamaster(
        "resnet56-4bfd9763.th",
        "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
        93.62,
    ),
    "resnet110": _akamaster("resnet110-1d1ed7c2.th", None, None, _UNKNOWN),
}


def get_pretrained_cfg(name: str) -> PretrainedCfg | None:
    """The published weights of model ``name``, or None."""
    return PRETRAINED_CFGS.get(name)


def fetch_pretrained(name: str, cache_dir: str | Path | None = None) -> Path:
    """The verified weights file of ``name``: from the cache, or downloaded into it.

    The file lives in ``<cache>/weights/`` (cache: ``skiplab.data.cache.default_cache_dir``).
    A cached file is re-hashed before use; one that does not match is downloaded again.

    Raises:
        ValueError: when ``name`` has no published weights, or their SHA-256 is unknown
            (nothing is downloaded then).
        skiplab.data.DownloadError: when the download fails or does not match its SHA-256.
    """
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(
            f"{name} has no published weights in skiplab; models with weights: "
            f"{sorted(PRETRAINED_CFGS)} (or pass pretrained=PATH to a weights file)"
        )
    if cfg.sha256 is None:
        raise ValueError(f"refusing to download {cfg.url} for {name}: {cfg.note}")
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "weights"
    path = path / cfg.file_name
    if path.is_file() and sha256_file(path) == cfg.sha256:
        return path
    return download_file(cfg.url, path, sha256=cfg.sha256)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        path: The file loaded.
        sha256: Its SHA-256 digest.
        conversions: Human-readable list of the key conversions applied.
        metadata: Non-tensor entries stored beside the weights (e.g. ``best_prec1``).
    """

    path: Path
    sha256: str
    conversions: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    @property
    def reported_accuracy(self) -> float | None:
        """Top-1 accuracy (%) the checkpoint's authors recorded, when the file carries it."""
        value = self.metadata.get("best_prec1")
        return None if value is None else float(value)


def read_weights_file(path: str | Path) -> dict:
    """Read a ``.safetensors`` or torch file without executing code from it.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a plain tensor file (it would need unsafe unpickling,
            or it is corrupt), naming the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"cannot read safetensors file {path}: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is long; the line naming the refused global is the one that matters.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = next((line for line in lines if "GLOBAL" in line or "global" in line), lines[0])
        raise ValueError(
            f"refusing to load {path}: it is not a plain weights file and loading it would "
            f"execute code from the file (weights_only=True rejected it: {why})"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read weights file {path}: {exc}") from exc


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Load weights from ``path`` into ``model`` strictly, converting known layouts.

    Args:
        model: A skiplab (or torchvision) model whose architecture matches the file.
        path: ``.safetensors``, ``.pth``/``.pt``/``.th`` torch file.

    Returns:
        A :class:`LoadReport` with the digest, the conversions applied and any metadata.

    Raises:
        ValueError: for an unsafe or unreadable file, or when keys or shapes do not match
            (the message lists missing and unexpected keys).

    Example:
        >>> model = create_model("resnet20")
        >>> report = load_pretrained(model, "../shared/weights/resnet20-12fca82f.th")
        >>> report.reported_accuracy
        91.78...
    """
    path = Path(path)
    raw = read_weights_file(path)
    report = LoadReport(path=path, sha256=sha256_file(path))
    if not isinstance(raw, dict):
        raise ValueError(f"{path} holds a {type(raw).__name__}, not a dict of weights")
    state = raw
    if "state_dict" in raw and isinstance(raw["state_dict"], dict):
        state = raw["state_dict"]
        report.metadata = {k: v for k, v in raw.items() if k != "state_dict"}
        report.conversions.append("unwrapped the 'state_dict' entry")
    non_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise ValueError(f"{path}: entries that are not tensors: {non_tensors[:5]}")

    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
        report.conversions.append("stripped the DataParallel 'module.' prefix")
    own = model.state_dict()
    if any(k.startswith("linear.") for k in state) and "fc.weight" in own:
        state = {
            ("fc." + k[len("linear.") :] if k.startswith("linear.") else k): v
            for k, v in state.items()
        }
        report.conversions.append("renamed classifier 'linear' to 'fc'")
    missing_counters = [k for k in own if k.endswith("num_batches_tracked") and k not in state]
    if missing_counters:
        state = dict(state)
        for k in missing_counters:
            state[k] = torch.zeros_like(own[k])
        report.conversions.append(
            f"added {len(missing_counters)} BatchNorm num_batches_tracked counters "
            "(absent from files saved before PyTorch 0.4.1)"
        )

    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match {type(model).__name__}: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        k, got, want = wrong[0]
        raise ValueError(
            f"{path}: {len(wrong)} shape mismatches, e.g. {k}: file {got}, model {want}"
        )
    model.load_state_dict(state, strict=True)
    return report
