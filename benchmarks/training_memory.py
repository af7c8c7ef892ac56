"""Peak memory of one training step on CPU: default vs ``memory_efficient=True`` (DenseNet)
vs activation checkpointing (any model with ``set_grad_checkpointing``).

Every configuration runs in its own child process, so that peaks do not mix: the child builds
the model, reads its resident set size (VmRSS) as the baseline, runs one forward + backward pass
in train mode on a random batch, and reports the peak resident set size (VmHWM) from
``/proc/self/status`` (Linux). The parent prints both numbers, the peak above the baseline
(what the training step itself needed) and the ratios to the default implementation.

Usage (from the project root):

    python benchmarks/training_memory.py                       # densenet_bc100_k12, batch 64
    python benchmarks/training_memory.py --batch-size 32 --threads 2
    python benchmarks/training_memory.py --model preact_resnet1001 --batch-size 128 \
        --configs grad_checkpointing --checkpoint-every 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from skiplab.bench.memory import proc_status_kib, run_json_child

# name: model overrides (and whether to switch on whole-layer gradient checkpointing)
CONFIGS: dict[str, tuple[dict, bool]] = {
    "default": ({}, False),
    "memory_efficient": ({"memory_efficient": True}, False),
    "grad_checkpointing": ({}, True),
}


def _proc_status_kib(field: str) -> int:
    try:
        return proc_status_kib(field)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def run_child(
    config: str, model_name: str, batch_size: int, size: int, threads: int, every: int
) -> None:
    """Measure one configuration in this process and print one JSON line."""
    import torch

    from skiplab import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    overrides, grad_ckpt = CONFIGS[config]
    model = create_model(model_name, **overrides).train()
    if every == 1:
        model.set_grad_checkpointing(grad_ckpt)
    else:  # segments of `every` units (the ResNets)
        model.set_grad_checkpointing(grad_ckpt, every=every)
    x = torch.randn(batch_size, 3, size, size)
    target = torch.randint(0, model.num_classes, (batch_size,))
    baseline = _proc_status_kib("VmRSS")
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "config": config,
                "baseline_kib": baseline,
                "peak_kib": _proc_status_kib("VmHWM"),
                "seconds": seconds,
                "loss": loss.item(),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="densenet_bc100_k12")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        help="grad_checkpointing: units per checkpointed segment (ResNets)",
    )
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(
            args.child, args.model, args.batch_size, args.size, args.threads, args.checkpoint_every
        )
        return 0

    results = []
    for config in args.configs:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            config,
            "--model",
            args.model,
            "--batch-size",
            str(args.batch_size),
            "--size",
            str(args.size),
            "--threads",
            str(args.threads),
            "--checkpoint-every",
            str(args.checkpoint_every),
        ]
        try:
            results.append(run_json_child(cmd))
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1

    print(
        f"{args.model}, batch {args.batch_size}, input 3x{args.size}x{args.size}, "
        f"{args.threads} thread(s), one forward + backward in train mode (CPU); "
        f"checkpoint segments of {args.checkpoint_every} unit(s)"
    )
    print(
        f"{'config':<20} {'baseline MiB':>12} {'peak MiB':>10} {'step MiB':>10} "
        f"{'step ratio':>10} {'seconds':>8}"
    )
    ref = results[0]["peak_kib"] - results[0]["baseline_kib"]
    for r in results:
        step = r["peak_kib"] - r["baseline_kib"]
        print(
            f"{r['config']:<20} {r['baseline_kib'] / 1024:>12.0f} {r['peak_kib'] / 1024:>10.0f} "
            f"{step / 1024:>10.0f} {step / ref:>10.2f} {r['seconds']:>8.1f}"
        )
    if len({r["loss"] for r in results}) != 1:
        print("warning: the configurations computed different losses", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
