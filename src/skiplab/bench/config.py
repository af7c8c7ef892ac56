"""What one ``skiplab bench`` run measures: its settings and its cases."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from skiplab.config import Config, check_choice, check_int, choice
from skiplab.hardware import AMPS, resolve_amp
from skiplab.train.config import COMPILE_MODES, check_compile_mode

MODES = ("train", "infer")
SIDES = ("reference", "skiplab")


@dataclass
class FastPath(Config):
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
    amp: str = choice("none", AMPS)
    compile: bool = False
    fuse_bn: bool = False
    compile_mode: str = choice("default", COMPILE_MODES)

    def __post_init__(self) -> None:
        self.check_choices()
        check_compile_mode(self.compile, self.compile_mode)

    def describe(self) -> str:
        on = [n for n in ("channels_last", "compile", "fuse_bn") if getattr(self, n)]
        if self.compile and self.compile_mode != "default":
            on[on.index("compile")] = f"compile({self.compile_mode})"
        return ", ".join([*on, self.amp if self.amp != "none" else "fp32"])


@dataclass
class BenchConfig(Config):
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
            check_choice("mode", mode, MODES)
        for name in ("repeats", "steps", "num_images"):
            check_int(name, getattr(self, name), 1)
        for name in ("warmup", "ref_workers"):
            check_int(name, getattr(self, name), 0)
        for b in self.batch_sizes:
            check_int("batch size", b, 1)
        if not self.models or not self.modes or not self.batch_sizes:
            raise ValueError("give at least one model, one mode and one batch size")
        check_int("threads", self.threads, 1, optional=True)
        # "auto" becomes what the device runs natively; fp16 off CUDA raises; an emulated bf16
        # warns (still measured).
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


@dataclass(frozen=True)
class Case:
    """One row of results: a model, a mode and a batch size."""

    model: str
    mode: str
    batch: int


def all_cases(cfg: BenchConfig) -> list[Case]:
    """Every (model, mode, batch) of ``cfg``, models outermost."""
    return [Case(m, mode, b) for m in cfg.models for mode in cfg.modes for b in cfg.batch_sizes]
