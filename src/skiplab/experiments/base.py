"""What every experiment shares: settings, the results file, and the run/report protocol.

An experiment runs in four steps, each reading only what the previous one wrote:

1. ``run(settings, folder)`` trains/measures and returns raw results (JSON-serialisable); the
   runner writes them to ``folder/results.json`` together with the settings, software versions,
   git revision, device and wall time. Curves also go to CSV files in ``folder``.
2. ``figures(results, folder)`` draws PNG and SVG figures from those results only.
3. ``verdicts(results)`` computes each claim's verdict from the numbers.
4. ``section(results, figures, verdicts)`` writes the experiment's part of ``report.md``.

Steps 2-4 run again, without training, in ``skiplab report RUN_DIR``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from skiplab.config import Config, check_int, choice
from skiplab.experiments.verdict import Verdict
from skiplab.fileio import atomic_write
from skiplab.hardware import AMPS, resolve_amp
from skiplab.provenance import environment

BUDGETS = ("quick", "standard", "paper")


@dataclass(frozen=True)
class Settings(Config):
    """How ``skiplab reproduce`` was asked to run.

    Attributes:
        out_dir: Run folder; each experiment writes into ``out_dir/<name>/``.
        budget: "quick" (synthetic data, small nets, minutes on CPU), "standard" (CIFAR-10,
            minutes on a GPU) or "paper" (the papers' schedules).
        data: Dataset name for ``skiplab.data.load_dataset`` (e.g. "synthetic", "cifar10").
        data_dir: Where the dataset lives (None for synthetic data).
        device: "cpu" or "cuda".
        seeds: The seeds every trained or randomly initialised measurement is repeated with:
            a count N (seeds 0..N-1) or an explicit list (``--seed-list 100 101 102``); stored
            as a tuple. Results keep every seed's numbers; verdicts need at least three.
        amp: Mixed precision for training and evaluation: "none", "bf16", "fp16" (CUDA), or
            "auto" (bf16 where the device has it natively, else fp32). Resolved at
            construction (:func:`skiplab.hardware.resolve_amp`); ``amp_asked`` keeps what was
            asked, so that the report can say what was chosen and why.
        channels_last: Train and evaluate in the channels-last memory format.
        jobs: Training runs trained at the same time, in worker processes that share the CPU
            cores (experiments with several independent runs use it).
    """

    out_dir: Path
    budget: str = choice("quick", BUDGETS)
    data: str = "synthetic"
    data_dir: Path | None = None
    device: str = choice("cpu", ("cpu", "cuda"))
    seeds: int | tuple[int, ...] = 1
    amp: str = choice("none", AMPS)
    channels_last: bool = False
    jobs: int = 1
    amp_asked: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.check_choices()
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
        object.__setattr__(self, "seeds", seed_tuple(self.seeds))
        check_int("jobs", self.jobs, 1)
        object.__setattr__(self, "amp_asked", self.amp_asked or self.amp)
        # resolve_amp checks that the device runs it (fp16 needs CUDA) and resolves "auto"
        object.__setattr__(self, "amp", resolve_amp(self.amp, self.device))


def seed_tuple(seeds) -> tuple[int, ...]:
    """Seeds from a count N (0..N-1) or a sequence of distinct non-negative integers."""
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a positive count or a list of seeds; got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count or a list of seeds; got {seeds}")
        return tuple(range(seeds))
    values = tuple(seeds)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"seeds must be a positive count or a list of seeds; got {seeds!r}")
    if any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"seeds must be distinct non-negative integers; got {list(values)}")
    return values


@dataclass
class Figure:
    """A figure written by an experiment: file stem (PNG and SVG beside it) and caption."""

    stem: str
    caption: str


class Experiment:
    """Base class; subclasses set ``name``, ``title`` and ``paper`` and implement the steps."""

    name: str = ""
    title: str = ""
    paper: str = ""

    def run(self, settings: Settings, folder: Path) -> dict:
        raise NotImplementedError

    def figures(self, results: dict, folder: Path) -> list[Figure]:
        return []

    def verdicts(self, results: dict) -> list[Verdict]:
        return []

    def section(self, results: dict, figures: list[Figure], verdicts: list[Verdict]) -> str:
        raise NotImplementedError

    def deviations(self, results: dict) -> list[str]:
        """How this run differs from the paper (data, resolution, widths, schedule, warm-up
        actually applied, task substitutions), one line each; the report lists them beside the
        results. The data and precision shared by every experiment are added by the report."""
        return list(results.get("deviations", []))


@dataclass
class ResultsFile:
    """The content of ``<run>/<experiment>/results.json``."""

    experiment: str
    settings: dict
    environment: dict
    seconds: float
    results: dict = field(default_factory=dict)


def environment_info(device: str) -> dict:
    """Software versions, git revision and device, recorded with every result (the keys of
    :func:`skiplab.provenance.environment` that results.json has always held)."""
    env = environment(device)
    keys = ("python", "torch", "torchvision", "platform", "cpu_count", "torch_threads", "device")
    info = {k: env[k] for k in keys}
    info["cpu"] = env["cpu"]
    info["git_revision"] = env["git_revision"] or "unknown (not run from a git checkout of skiplab)"
    if device == "cuda":
        info["cuda_device"] = env["gpu"]
    return info


def write_json_atomic(path: Path, data) -> None:
    """Write JSON atomically, so that a crash leaves the old file or the new one."""
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def run_one(
    experiment: Experiment, settings: Settings, environment: dict | None = None
) -> ResultsFile:
    """Run ``experiment`` and write its ``results.json`` (step 1).

    Args:
        environment: :func:`environment_info` taken when the code was loaded (``skiplab
            reproduce`` takes it once at its start, so that a commit made during a long run
            is not recorded as the code that ran); None takes it now, before running.
    """
    environment = environment or environment_info(settings.device)
    folder = settings.out_dir / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = experiment.run(settings, folder)
    record = ResultsFile(
        experiment=experiment.name,
        settings=settings.to_dict(),
        environment=environment,
        seconds=round(time.perf_counter() - start, 2),
        results=results,
    )
    write_json_atomic(folder / "results.json", asdict(record))
    return record


def load_results(folder: Path) -> ResultsFile:
    """Read ``folder/results.json``; a missing or malformed file raises naming the path."""
    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}: run the experiment first")
    try:
        data = json.loads(path.read_text())
        return ResultsFile(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"malformed results file {path}: {exc}") from exc
