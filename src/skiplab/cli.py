"""The ``skiplab`` command line.

skiplab models [PATTERN] [--family F] [--json]   table of registered models
skiplab summary NAME [--input-size C H W]       per-stage shapes, parameters and MACs
skiplab train / eval / predict                  training engine (see docs/training.md)
skiplab reproduce [EXPERIMENT ...] / report     the chapter's experiments and report
skiplab compare REFERENCE NEW                   does a re-run reproduce a run's numbers?
skiplab bench / export                          benchmarks; models for inference (BN folded, ONNX)
"""

from __future__ import annotations

import argparse
import json
import sys

from skiplab.bench.cli import add_bench_command
from skiplab.complexity import model_row, stage_summary
from skiplab.experiments.cli import add_experiment_commands
from skiplab.export import add_export_command
from skiplab.models import list_models
from skiplab.tables import print_table
from skiplab.train.commands import add_train_commands


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_macs(n: int) -> str:
    return f"{n / 1e9:.3f} G" if n >= 1e8 else f"{n / 1e6:.2f} M"


def cmd_models(args: argparse.Namespace) -> int:
    names = list_models(args.pattern, family=args.family)
    if not names:
        print(f"no registered model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows = [model_row(n) for n in names]
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    print_table(
        ["name", "family", "depth", "input", "params", "MACs (the paper's FLOPs)"],
        [
            [
                r.name,
                r.family,
                str(r.depth or "-"),
                "x".join(map(str, r.input_size)),
                _fmt_int(r.params),
                _fmt_macs(r.macs),
            ]
            for r in rows
        ],
        right={2, 4, 5},
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    size = tuple(args.input_size) if args.input_size else None
    rows = stage_summary(args.name, size)
    total = model_row(args.name, size)
    print(
        f"{args.name}: input {'x'.join(map(str, total.input_size))}, "
        f"{_fmt_int(total.params)} parameters, {_fmt_macs(total.macs)} MACs"
    )
    print_table(
        ["module", "output shape", "params", "MACs"],
        [
            [r.name, "x".join(map(str, r.output_shape)), _fmt_int(r.params), _fmt_macs(r.macs)]
            for r in rows
        ],
        right={2, 3},
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skiplab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list registered models with parameters and MACs")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern")
    p.add_argument("--family", help="only this family (e.g. resnet, plain, cifar_resnet)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-stage output shape, parameters and MACs")
    p.add_argument("name")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    p.set_defaults(func=cmd_summary)

    add_train_commands(sub)
    add_experiment_commands(sub)
    add_bench_command(sub)
    add_export_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"skiplab: error: {msg}", file=sys.stderr)
        return 2
