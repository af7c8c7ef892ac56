"""Time to a target test accuracy with the ``fast`` training recipe, mean over seeds.

Each seed trains ``--model`` with ``recipe="fast"`` (plus any ``--set KEY=VALUE`` overrides) on
``--data``, evaluating after every epoch, and records the cumulative seconds (training steps and
the per-epoch evaluation; checkpoint writes and the one-off data loading are not counted) until
the first epoch whose test accuracy reaches ``--target``. A seed that never reaches it is
reported as such, never dropped. The first epoch includes torch.compile's compilation.

Results go to ``OUT/fast_recipe.json`` first (every epoch of every seed), then the summary is
printed from that file.

    python benchmarks/fast_recipe.py --data cifar10 --data-dir ../shared/data/cifar10-jpeg.tar.gz \\
        --model resnet20 --target 0.907 --seeds 3 --out runs/fast-recipe
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean, stdev

from skiplab.data import load_dataset
from skiplab.provenance import environment
from skiplab.train import TrainConfig, Trainer
from skiplab.train.commands import key_value
from skiplab.train.config import resolve_config


def time_to_target(curve: list[dict], target: float) -> tuple[float | None, int | None]:
    """Cumulative seconds and epoch at which the test accuracy first reaches ``target``."""
    seconds = 0.0
    for row in curve:
        seconds += row["seconds"]
        if "val_error" in row and 1 - row["val_error"] >= target:
            return seconds, int(round(row["epoch"]))
    return None, None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--data-dir")
    p.add_argument("--target", type=float, required=True, help="test accuracy, e.g. 0.907")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="TrainConfig override on top of the fast recipe (repeatable)",
    )
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be >= 1; got {args.seeds}")
    if not 0 < args.target < 1:
        raise SystemExit(f"--target is an accuracy in (0, 1); got {args.target}")
    overrides = dict(args.set)
    unknown = sorted(set(overrides) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise SystemExit(f"unknown TrainConfig fields in --set: {unknown}")

    train = load_dataset(args.data, "train", data_dir=args.data_dir)
    test = load_dataset(args.data, "test", data_dir=args.data_dir)
    runs: list[dict] = []
    env = environment()
    record = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "model": args.model,
        "data": test.source,
        "target": args.target,
        "torch": env["torch"],
        "machine": env["processor"] or env["machine"],
        "cuda": env["gpu"],
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fast_recipe.json"
    for seed in range(args.seeds):
        out = args.out / f"seed{seed}"
        cfg = resolve_config(
            cli_values={
                "model": args.model,
                "data": args.data,
                "data_dir": args.data_dir,
                "recipe": "fast",
                "seed": seed,
                "device": args.device,
                "out": str(out),
                "eval_every": 1,
                "keep_checkpoints": 1,
                **overrides,
            }
        )
        started = time.perf_counter()
        trainer = Trainer(cfg, train_data=train, val_data=test)
        result = trainer.fit()
        wall = time.perf_counter() - started
        curve = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        seconds, epoch = time_to_target(curve, args.target)
        runs.append(
            {
                "seed": seed,
                "status": result.status,
                "seconds_to_target": seconds,
                "epoch_reached": epoch,
                "final_accuracy": 1 - curve[-1]["val_error"] if curve else None,
                "wall_seconds": wall,
                "curve": curve,
            }
        )
        record["config"] = {k: v for k, v in vars(cfg).items() if k not in ("out", "seed")}
        record["device"] = str(trainer.device)
        # Written after every seed: a job stopped later keeps the seeds it finished.
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        if result.status == "stopped":  # a signal or a stop request: no further seeds
            break
    return summarise(path)


def summarise(path: Path) -> int:
    """Print the summary of a ``fast_recipe.json``; non-zero when a seed missed the target."""
    record = json.loads(path.read_text())
    runs = record["runs"]
    reached = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
    print(f"{record['model']} on {record['data']}, fast recipe, target {record['target']:.3f}")
    for r in runs:
        when = (
            f"{r['seconds_to_target']:.1f} s (epoch {r['epoch_reached']})"
            if r["seconds_to_target"] is not None
            else "not reached"
        )
        accuracy = "none" if r["final_accuracy"] is None else f"{r['final_accuracy']:.4f}"
        stopped = " (stopped early)" if r["status"] == "stopped" else ""
        print(f"  seed {r['seed']}: {when}; final accuracy {accuracy}{stopped}")
    if len(reached) == len(runs):
        spread = f" ± {stdev(reached):.1f}" if len(reached) > 1 else ""
        print(f"time to target: {mean(reached):.1f}{spread} s over {len(runs)} seeds")
        return 0
    print(f"time to target: {len(runs) - len(reached)} of {len(runs)} seeds missed it")
    return 1


if __name__ == "__main__":
    sys.exit(main())
