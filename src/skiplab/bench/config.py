"""What one ``skiplab bench`` run measures: its settings and its cases."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from skiplab.hardware import AMPS, resolve_amp
from skiplab.train.config import check_compile_mode

MODES = ("train", "infer")
SIDES = ("reference", "skiplab")


@dataclass
class FastPath:
    """The speed options applied to one side of a measurement.

    Attributes:
        channels_last: Model and inputs in channels-last memory format.
        amp: Autocast dtype: "none", "bf16", "fp16" (CUDA only; training adds a GradScaler), or
            "auto" (bf16 where the device has it natively, else fp32; resolved by BenchConfig).
        compile: ``torch.compile`` the network (training and inference).
        compile_mode: Its mode (``skiplab.train.config.COMPILE_MODES``); "reduce-overhead"
            replays CUDA graphs on a GPU.
        fuse_bn: Inference only: fold Conv->BN pairs first (:func:`skiplab.fuse.fuse_bn`).
    """

    channels_last: bool = False
    amp: str = "none"
    compile: bool = False
    fuse_bn: bool = False
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        if self.amp not in AMPS:
            raise ValueError(f"amp must be one of {list(AMPS)}; got {self.amp!r}")
        check_compile_mode(self.compile, self.compile_mode)

    def describe(self) -> str:
        on = [n for n in ("channels_last", "compile", "fuse_bn") if getattr(self, n)]
        if self.compile and self.compile_mode != "default":
            on[on.index("compile")] = f"compile({self.compile_mode})"
        return ", ".join([*on, self.amp if self.amp != "none" else "fp32"])


@dataclass
class BenchConfig:
    """Settings of a benchmark run.

    Attributes:
        models: Registered model names.
        modes: "train" (full optimizer steps, data loading included) and/or "infer".
        batch_sizes: Batch sizes, each measured for every model and mode.
        device: "cpu", "cuda" or "cuda:N".
        repeats: Timed windows per side, interleaved with the other side's; medians reported.
        steps: Steps (batches) per timed window.
        warmup: Untimed steps per side before the first window (compilation happens here).
        threads: torch intra-op threads (None: torch's default).
        fast: Options of the skiplab side.
        reference_fast: Apply ``fast`` (except fuse_bn) to the reference too.
        num_images: Training images per dataset (the data both sides read).
        ref_workers: ``num_workers`` of the reference DataLoader.
        memory: Also measure peak memory (CPU: in a child process per side).
        seed: Seed of the data and the models.
    """

    models: list[str] = field(default_factory=lambda: ["resnet20"])
    modes: list[str] = field(default_factory=lambda: ["train"])
    batch_sizes: list[int] = field(default_factory=lambda: [128])
    device: str = "cpu"
    repeats: int = 5
    steps: int = 10
    warmup: int = 3
    threads: int | None = None
    fast: FastPath = field(default_factory=FastPath)
    reference_fast: bool = False
    num_images: int = 5000
    ref_workers: int = 0
    memory: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.fast, dict):
            self.fast = FastPath(**self.fast)
        for mode in self.modes:
            if mode not in MODES:
                raise ValueError(f"mode must be one of {list(MODES)}; got {mode!r}")
        for name in ("repeats", "steps", "num_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        for name in ("warmup", "ref_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if any(b < 1 for b in self.batch_sizes) or not self.batch_sizes:
            raise ValueError(f"batch sizes must be >= 1; got {self.batch_sizes}")
        if not self.models or not self.modes:
            raise ValueError("give at least one model and one mode")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1; got {self.threads}")
        if self.fast.amp == "fp16" and not self.device.startswith("cuda"):
            raise ValueError(f"amp 'fp16' needs CUDA; got device {self.device!r} (use bf16)")
        # "auto" becomes what the device runs natively; an emulated bf16 warns (still measured).
        self.fast = replace(self.fast, amp=resolve_amp(self.fast.amp, self.device))

    def side_options(self, side: str, mode: str) -> FastPath:
        """The fast-path options of ``side`` ("skiplab" or "reference") in ``mode``."""
        if side == "skiplab":
            fast = self.fast
        elif self.reference_fast:
            fast = replace(self.fast, fuse_bn=False)
        else:
            fast = FastPath()
        if mode == "train" and fast.fuse_bn:
            fast = replace(fast, fuse_bn=False)
        return fast

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Case:
    """One row of results: a model, a mode and a batch size."""

    model: str
    mode: str
    batch: int


def all_cases(cfg: BenchConfig) -> list[Case]:
    """Every (model, mode, batch) of ``cfg``, models outermost."""
    return [Case(m, mode, b) for m in cfg.models for mode in cfg.modes for b in cfg.batch_sizes]
