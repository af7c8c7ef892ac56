"""Which speed options make skiplab's training step faster on this CPU?

Times the real training path (``Trainer.train_next_batch`` over a ``DeviceLoader``, as
``skiplab bench``'s skiplab side) under several option sets, all built in this process and
interleaved: after ``--warmup`` untimed steps each (torch.compile compiles there), ``--repeats``
rounds in which every option set runs ``--steps`` timed steps, the order rotating from round to
round. Reported: the median images/s of each set and its ratio to the first set (eager,
contiguous, fp32), measured in the same run, so that a machine that is slower or busier at one
moment shifts every set alike. No result is a pass or a fail.

    python benchmarks/cpu_train_options.py --model resnet20 --batch 128 --threads 2 \\
        --json cpu_train_options.json
    python benchmarks/cpu_train_options.py --model resnet56 --resolution 16 --threads 1

``--resolution`` trains on images area-downsampled to that size (the degradation experiment's
standard budget trains at 16x16). The compiled sets' warm-up time is reported too: on a short
run it can cost more than compile saves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from skiplab.bench.config import BenchConfig, Case, FastPath
from skiplab.bench.runners import bench_data, build_runner
from skiplab.provenance import environment

OPTION_SETS = {
    "eager": FastPath(),
    "channels_last": FastPath(channels_last=True),
    "compile": FastPath(compile=True),
    "channels_last+compile": FastPath(channels_last=True, compile=True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--resolution", type=int, help="train at this image size (area downsampled)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=4, help="timed rounds")
    p.add_argument("--steps", type=int, default=8, help="timed steps per set and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per set first")
    p.add_argument("--num-images", type=int, default=2048)
    p.add_argument(
        "--options",
        nargs="+",
        choices=list(OPTION_SETS),
        default=list(OPTION_SETS),
        help="option sets to time; the first is the reference of the ratios",
    )
    p.add_argument("--json", help="write the record here")
    args = p.parse_args(argv)
    for name in ("batch", "repeats", "steps", "num_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0; got {args.warmup}")
    return args


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    data = bench_data(args.model, args.num_images, seed=0)
    if args.resolution:
        size = (args.resolution, args.resolution)
        images = F.interpolate(data.images.float(), size=size, mode="area")
        data = replace(data, images=images.round().clamp_(0, 255).to(torch.uint8))
    case = Case(args.model, "train", args.batch)
    runners, warm = {}, {}
    for name in args.options:
        cfg = BenchConfig(models=[args.model], batch_sizes=[args.batch], fast=OPTION_SETS[name])
        runners[name] = build_runner(cfg, case, "skiplab", data)
        start = time.perf_counter()
        for _ in range(args.warmup):
            runners[name].step()
        warm[name] = time.perf_counter() - start
        print(f"{name}: warm-up {warm[name]:.1f} s", file=sys.stderr, flush=True)
    windows: dict[str, list[float]] = {name: [] for name in args.options}
    for r in range(args.repeats):
        order = args.options[r % len(args.options) :] + args.options[: r % len(args.options)]
        for name in order:
            start = time.perf_counter()
            for _ in range(args.steps):
                runners[name].step()
            windows[name].append(args.steps * args.batch / (time.perf_counter() - start))
    for runner in runners.values():
        runner.close()
    first = args.options[0]
    medians = {name: statistics.median(v) for name, v in windows.items()}
    return {
        "model": args.model,
        "batch": args.batch,
        "resolution": args.resolution or data.images.shape[-1],
        "threads": torch.get_num_threads(),
        "precision": "fp32",  # bf16 is a separate question: see docs/benchmarks.md
        "reference": first,
        "sets": {
            name: {
                "img_per_s": medians[name],
                "ratio": medians[name] / medians[first],
                "windows": windows[name],
                "warmup_s": warm[name],
            }
            for name in args.options
        },
        "environment": environment("cpu"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    record = run(args)
    env = record["environment"]
    print(
        f"{env['cpu']['model']}, {record['threads']} thread(s), torch {env['torch']}: "
        f"{record['model']} training, batch {record['batch']}, "
        f"{record['resolution']}x{record['resolution']}"
    )
    print(f"{'options':<24}{'img/s':>8}{'ratio':>8}{'warm-up s':>11}  windows")
    for name, s in record["sets"].items():
        windows = " ".join(f"{w:.0f}" for w in s["windows"])
        print(
            f"{name:<24}{s['img_per_s']:>8.1f}{s['ratio']:>7.2f}x{s['warmup_s']:>11.1f}  {windows}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
