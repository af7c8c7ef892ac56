"""What the processor does natively, and the precision that follows from it: decided here only.

bf16 autocast pays only where the hardware multiplies bf16 natively: x86 CPUs with AVX-512 BF16
or AMX, and GPUs that ``torch.cuda.is_bf16_supported()`` accepts. On other CPUs (AVX2 only, or
AVX-512 without BF16) oneDNN emulates bf16 through fp32, which makes a CIFAR ResNet's training
step several times slower than fp32 itself (measured: docs/benchmarks.md, section 'CPU without
native bf16: AMD EPYC (AVX2)'). So ``amp="auto"``, the default wherever a precision is chosen
for the user (``skiplab reproduce``, ``make demo``, the ``fast`` recipe), picks bf16 only with
native support, and an explicit ``amp="bf16"`` without it still runs, with a
:class:`SlowPrecisionWarning`.

    >>> from skiplab.hardware import processor, resolve_amp
    >>> processor().describe()            # e.g. 'AMD EPYC (AVX2; no native bf16)'
    >>> resolve_amp("auto", "cpu")        # 'bf16' with AVX-512 BF16 / AMX, else 'none'
"""

from __future__ import annotations

import functools
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from skiplab.config import check_choice

# Every place that takes a precision takes one of these ("auto" is resolved by resolve_amp).
AMPS = ("auto", "none", "bf16", "fp16")
# /proc/cpuinfo flags of native bf16 arithmetic: AVX-512 BF16 (Cooper Lake, Zen 4 and later)
# and AMX (Sapphire Rapids and later).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# The slowdown named in the warning, measured on a CPU without them (docs/benchmarks.md,
# section 'CPU without native bf16: AMD EPYC (AVX2)').
EMULATED_BF16_SLOWDOWN = "about 8x slower than fp32"


class SlowPrecisionWarning(UserWarning):
    """An explicit precision that this device only emulates (it runs, slowly)."""


@dataclass(frozen=True)
class Processor:
    """The CPU as the operating system describes it.

    Attributes:
        model: Model name (``/proc/cpuinfo``'s "model name", else ``platform.processor()``).
        flags: Instruction-set flags (``/proc/cpuinfo``; empty where it does not exist).
        capability: The SIMD level torch dispatches to (``torch.backends.cpu``).
    """

    model: str
    flags: frozenset[str]
    capability: str

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in NATIVE_BF16_FLAGS)

    def describe(self) -> str:
        bf16 = (
            "native bf16: " + ", ".join(f for f in NATIVE_BF16_FLAGS if f in self.flags)
            if self.native_bf16
            else "no native bf16"
        )
        return f"{self.model} ({self.capability}; {bf16})"

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "capability": self.capability,
            "native_bf16": self.native_bf16,
            "bf16_flags": [f for f in NATIVE_BF16_FLAGS if f in self.flags],
        }


def parse_cpuinfo(text: str, capability: str = "unknown") -> Processor:
    """A :class:`Processor` from the text of ``/proc/cpuinfo`` (its first processor)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / Arm
            flags = frozenset(value.split())
    return Processor(model or platform.processor() or "unknown CPU", flags, capability)


@functools.cache
def processor() -> Processor:
    """This machine's CPU (read once per process)."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags, so no claim of native bf16
        text = ""
    return parse_cpuinfo(text, capability)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bf16 natively (not emulated through fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return processor().native_bf16
    return False


def resolve_amp(amp: str, device: torch.device | str) -> str:
    """The autocast precision to run with on ``device``: "none", "bf16" or "fp16".

    "auto" gives "bf16" where the device has native bf16, else "none" (fp32). An explicit
    "bf16" without native support is kept, with a :class:`SlowPrecisionWarning`; "fp16" needs
    CUDA (a ValueError elsewhere).
    """
    check_amp_device(amp, device)
    device = torch.device(device)
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    if amp == "bf16" and not native_bf16(device):
        where = processor().describe() if device.type == "cpu" else f"{device}"
        warnings.warn(
            f"bf16 autocast on {where}: the device emulates bf16, {EMULATED_BF16_SLOWDOWN} on "
            "such CPUs; amp 'auto' picks fp32 here",
            SlowPrecisionWarning,
            stacklevel=2,
        )
    return amp


def check_amp_device(amp: str, device: torch.device | str) -> None:
    """Raise ``ValueError`` unless ``amp`` is one of AMPS and runs on ``device``: "fp16" needs
    CUDA. A device still to be chosen ("auto") may become CUDA, so it passes."""
    check_choice("amp", amp, AMPS)
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    if amp == "fp16" and kind not in ("cuda", "auto"):
        raise ValueError(
            f"amp 'fp16' needs a CUDA device; got {kind!r} (use 'bf16' or 'auto' there)"
        )


def precision_name(amp: str) -> str:
    """What a resolved ``amp`` ("none", "bf16", "fp16") computes in, in words."""
    return {"none": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[amp]


def describe_precision(amp: str, channels_last: bool, device: torch.device | str) -> str:
    """One line saying what a run computes in and why, e.g. for the first line of a run."""
    device = torch.device(device)
    where = processor().describe() if device.type == "cpu" else str(device)
    layout = "channels_last" if channels_last else "contiguous"
    return f"{precision_name(amp)}, {layout} on {where}"
