"""``skiplab bench``: skiplab against what users would otherwise run, side by side.

    skiplab bench --models resnet20 --modes train --batch-sizes 128 \\
        --channels-last --amp bf16 --threads 2 --out bench.json
    skiplab bench --models resnet50 --modes infer --batch-sizes 1 16 \\
        --fuse-bn --channels-last --compile --threads 2

Each case (model, mode, batch) runs skiplab and its reference in this process, interleaved:
``--warmup`` untimed steps each, then ``--repeats`` timed windows of ``--steps`` steps per
side, alternating which goes first. Reported: images/s per window, medians, the ratio
skiplab/reference, and peak memory (CUDA: max_memory_allocated; CPU: peak RSS of a fresh
child process per side). References: torchvision's model of the same name, or an eager
CIFAR ResNet; for training, a DataLoader with torchvision transforms over the same images.
The fast-path options apply to the skiplab side (and to the reference with
``--reference-fast``). No result is a pass or a fail: the numbers are the output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from skiplab.bench.config import MODES, BenchConfig, FastPath
from skiplab.bench.harness import run_bench
from skiplab.fileio import atomic_write
from skiplab.hardware import AMPS
from skiplab.models import get_model_entry
from skiplab.tables import print_table as print_columns
from skiplab.train.config import COMPILE_MODES


def add_bench_command(sub) -> None:
    """Add ``bench`` to the ``skiplab`` subparsers ``sub``."""
    p = sub.add_parser(
        "bench",
        help="throughput and memory against torchvision / DataLoader references",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = BenchConfig()
    p.add_argument("--models", nargs="+", default=d.models, help="registered model names")
    p.add_argument("--modes", nargs="+", choices=MODES, default=d.modes)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=d.batch_sizes)
    p.add_argument("--device", default=d.device, help="cpu, cuda or cuda:N")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed windows per side")
    p.add_argument("--steps", type=int, default=d.steps, help="steps per timed window")
    p.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps per side first")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--channels-last", action="store_true", help="skiplab side: channels_last")
    p.add_argument(
        "--amp",
        choices=AMPS,
        default="none",
        help="skiplab side: autocast dtype (auto: bf16 where the device has it natively)",
    )
    p.add_argument("--compile", action="store_true", help="skiplab side: torch.compile")
    p.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="default",
        help="torch.compile mode with --compile (reduce-overhead: CUDA graphs on a GPU)",
    )
    p.add_argument("--fuse-bn", action="store_true", help="skiplab inference: fold Conv->BN")
    p.add_argument(
        "--reference-fast",
        action="store_true",
        help="apply --channels-last/--amp/--compile(-mode) to the reference as well",
    )
    p.add_argument("--num-images", type=int, default=d.num_images, help="training images")
    p.add_argument("--ref-workers", type=int, default=d.ref_workers, help="DataLoader workers")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", help="write the JSON record here")
    p.add_argument("--json", action="store_true", help="print the JSON record, not the table")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    for name in args.models:
        get_model_entry(name)  # an unknown name fails before anything is measured
    cfg = BenchConfig(
        models=args.models,
        modes=args.modes,
        batch_sizes=args.batch_sizes,
        device=args.device,
        repeats=args.repeats,
        steps=args.steps,
        warmup=args.warmup,
        threads=args.threads,
        fast=FastPath(args.channels_last, args.amp, args.compile, args.fuse_bn, args.compile_mode),
        reference_fast=args.reference_fast,
        num_images=args.num_images,
        ref_workers=args.ref_workers,
        memory=not args.no_memory,
        seed=args.seed,
    )
    quiet = args.json
    record = run_bench(cfg, log=(lambda _: None) if quiet else print)
    text = json.dumps(record, indent=2) + "\n"
    if args.out:
        atomic_write(Path(args.out), text.encode())
    if args.json:
        print(text, end="")
    else:
        print_table(record)
        if args.out:
            print(f"wrote {args.out}")
    return 0


def table_rows(record: dict) -> list[list[str]]:
    """One row per case: model, mode, batch, medians, ratio, peak MiB of both sides."""
    rows = []
    for r in record["results"]:
        mem = r.get("memory")
        peak = (
            f"{mem['skiplab']['peak_mib']:.0f} / {mem['reference']['peak_mib']:.0f}" if mem else "-"
        )
        rows.append(
            [
                r["model"],
                r["mode"],
                str(r["batch"]),
                f"{r['skiplab']['median']:.1f}",
                f"{r['reference']['median']:.1f}",
                f"{r['ratio']:.2f}x",
                peak,
            ]
        )
    return rows


def print_table(record: dict) -> None:
    m = record["machine"]
    bf16 = m.get("cpu_native_bf16")
    bf16 = "?" if bf16 is None else ("native bf16" if bf16 else "no native bf16")
    print(
        f"{m['cpu']} ({m['cpu_capability']}; {bf16}; {m['torch_threads']} threads), "
        f"torch {m['torch']}, torchvision {m['torchvision']}, device {m['device']}"
    )
    headers = ["model", "mode", "batch", "skiplab img/s", "reference img/s", "ratio"]
    print_columns([*headers, "peak MiB (skiplab / ref)"], table_rows(record), right={2, 3, 4, 5, 6})
    for r in record["results"]:
        print(f"{r['model']} {r['mode']} {r['batch']}: skiplab = {r['skiplab']['description']}")
        print(f"{' ' * len(r['model'])} {r['mode']} {r['batch']}: reference = "
              f"{r['reference']['description']}")  # fmt: skip
