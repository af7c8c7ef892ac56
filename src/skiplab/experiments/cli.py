"""``skiplab reproduce``, ``skiplab report`` and ``skiplab compare``.

skiplab reproduce [EXPERIMENT ...] --budget quick --data synthetic --out runs/demo
skiplab reproduce degradation --budget paper ... --time-limit 480   # exit 75: run it again
skiplab report runs/demo
skiplab compare docs/results/standard-text runs/std-text   # exit 1 when a claim moved
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skiplab.experiments import compare
from skiplab.experiments.architecture_table import ArchitectureTable
from skiplab.experiments.base import BUDGETS, Experiment, Settings, environment_info, run_one
from skiplab.experiments.degradation import Degradation
from skiplab.experiments.densenet_efficiency import DenseNetEfficiency
from skiplab.experiments.ensemble_paths import EnsembleOfPaths
from skiplab.experiments.gradient_flow import GradientFlow
from skiplab.experiments.highway_vs_residual import HighwayVsResidual
from skiplab.experiments.identity_construction import IdentityConstruction
from skiplab.experiments.lease import (
    EXIT_RESUMABLE,
    TimeLimitReached,
    clear_deadline,
    set_deadline,
)
from skiplab.experiments.loss_landscape import LossLandscape
from skiplab.experiments.normalisation_free import NormalisationFree
from skiplab.experiments.preact_vs_original import PreactVsOriginal
from skiplab.experiments.report import build_report
from skiplab.experiments.residual_responses import ResidualResponses
from skiplab.experiments.segmentation_skips import FPNLaterals, UNetSkips
from skiplab.experiments.shattered_gradients import ShatteredGradients
from skiplab.experiments.shortcut_variants import ShortcutVariants
from skiplab.experiments.transformer_gradients import TransformerGradients
from skiplab.experiments.transformer_lesion import TransformerLesion
from skiplab.experiments.transformer_residual import TransformerResidual
from skiplab.hardware import AMPS, describe_precision
from skiplab.registry import Registry

# Every experiment class, by name, in report order (the order `skiplab reproduce` runs them).
EXPERIMENTS: Registry[type[Experiment]] = Registry(
    "experiment", describe=lambda cls: f"by {cls.__module__}.{cls.__qualname__}"
)
for _experiment in (
    Degradation,
    GradientFlow,
    ShatteredGradients,
    EnsembleOfPaths,
    ResidualResponses,
    IdentityConstruction,
    LossLandscape,
    PreactVsOriginal,
    HighwayVsResidual,
    UNetSkips,
    FPNLaterals,
    DenseNetEfficiency,
    ArchitectureTable,
    ShortcutVariants,
    NormalisationFree,
    TransformerResidual,
    TransformerGradients,
    TransformerLesion,
):
    EXPERIMENTS.add(_experiment.name, _experiment)


def add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    names = list(EXPERIMENTS)
    p = sub.add_parser(
        "reproduce",
        help="run the chapter's experiments and write report.md",
        description="Run experiments (default: all), write each one's results.json, figures "
        "and verdicts, then report.md and report.html in --out.",
    )
    p.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help=f"any of {names}")
    p.add_argument("--budget", choices=BUDGETS, default="quick")
    p.add_argument("--data", default="synthetic", help="dataset name (synthetic, cifar10, ...)")
    p.add_argument("--data-dir", type=Path, help="folder or archive of the dataset")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds", type=int, default=1, help="number of seeds, 0..N-1 (at least 3 to decide)"
    )
    seeds.add_argument(
        "--seed-list", type=int, nargs="+", metavar="SEED", help="explicit seeds instead"
    )
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument(
        "--amp",
        choices=AMPS,
        default="auto",
        help="autocast precision (auto: bf16 where the device has it natively, else fp32)",
    )
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    p.add_argument(
        "--jobs", type=int, default=1, help="training runs at the same time (worker processes)"
    )
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop every training run at a step boundary (checkpointed) after this long, keep "
        f"the experiments already finished, and exit with status {EXIT_RESUMABLE}; the same "
        "command resumes",
    )
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="rebuild report.md from a run folder without training")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "compare",
        help="does a re-run reproduce a run's numbers within their intervals?",
        description="Match the claims of two runs (folders or verdicts.json files) and show, "
        "per claim, both statuses, the reference margin and 95% CI against the new margin, "
        "whether it lies within, and the per-seed differences. Exit status 0 when every claim "
        "is in both, agrees in status and lies within the reference interval; 1 otherwise.",
    )
    p.add_argument("reference", type=Path, help="the run to reproduce (e.g. docs/results/...)")
    p.add_argument("new", type=Path, help="the re-run")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON here")
    p.add_argument(
        "--experiment",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="compare only these experiments' claims (repeatable)",
    )
    p.set_defaults(func=cmd_compare)


def cmd_reproduce(args: argparse.Namespace) -> int:
    unknown = [n for n in args.experiments if n not in EXPERIMENTS]
    if unknown:
        raise ValueError("; ".join(EXPERIMENTS.unknown(n) for n in unknown))
    known = {name: experiment() for name, experiment in EXPERIMENTS.items()}
    chosen = args.experiments or list(known)
    settings = Settings(
        out_dir=args.out,
        budget=args.budget,
        data=args.data,
        data_dir=args.data_dir,
        device=args.device,
        seeds=tuple(args.seed_list) if args.seed_list else args.seeds,
        amp=args.amp,
        channels_last=args.channels_last,
        jobs=args.jobs,
    )
    environment = environment_info(settings.device)  # the code as loaded, before any run
    precision = describe_precision(settings.amp, settings.channels_last, settings.device)
    print(f"precision: {precision} (amp {settings.amp_asked!r})", file=sys.stderr, flush=True)
    if args.time_limit is not None:
        set_deadline(args.time_limit)
    try:
        for i, name in enumerate(chosen, 1):
            print(f"[{i}/{len(chosen)}] {name} ({args.budget} budget)", file=sys.stderr, flush=True)
            try:
                record = run_one(known[name], settings, environment)
            except TimeLimitReached as exc:
                print(
                    f"[{i}/{len(chosen)}] {name}: {exc}\n"
                    f"time limit of {args.time_limit:g} s reached: {i - 1} of {len(chosen)} "
                    "experiment(s) finished, no report written; the same command resumes "
                    f"(exit status {EXIT_RESUMABLE})",
                    file=sys.stderr,
                    flush=True,
                )
                return EXIT_RESUMABLE
            print(
                f"[{i}/{len(chosen)}] {name}: {record.seconds:.0f} s", file=sys.stderr, flush=True
            )
    finally:
        clear_deadline()
    path = build_report(args.out, list(known.values()))
    print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(build_report(args.run_dir, [experiment() for experiment in EXPERIMENTS.values()]))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    result = compare.compare_runs(args.reference, args.new, args.experiment)
    print(compare.markdown_table(result.rows))
    print()
    print(result.summary())
    if args.json:
        compare.write_json(result, args.json)
    return result.exit_status
