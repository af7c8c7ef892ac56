"""The training process the kill and distributed faults run, kill and relaunch.

    python -m skiplab.selftest.child --out DIR --steps N [--resume]
        [--fail-rank R --fail-step S --fail-mode raise|hang] [--dist-timeout SECONDS]

It trains the tiny network of :mod:`skiplab.selftest.common` with a checkpoint after every
step and prints, on every rank, one line per step, ``STEP <rank> <step> <loss as repr>`` (after
that step's checkpoint, or just before it at the end of an epoch), and at the end
``RESULT <rank> <status> <step>``. Under
``torchrun`` it runs distributed. ``--fail-*`` injects a fault on one rank after step S: an
exception, or a hang (a sleep that never ends).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from skiplab.selftest.common import tiny_config, tiny_data
from skiplab.train import Trainer


def say(line: str) -> None:
    """Print one line with a single ``write`` to fd 1, so ranks sharing a pipe never interleave.

    ``print`` writes the text and its newline separately when stdout is unbuffered
    (``PYTHONUNBUFFERED=1``, common in CI), and two ranks then produce ``STEP 0 3 ..STEP 1 3 ..``
    on one line. A pipe write of at most ``PIPE_BUF`` (4096) bytes is atomic (POSIX).
    """
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m skiplab.selftest.child")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--fail-rank", type=int)
    p.add_argument("--fail-step", type=int)
    p.add_argument("--fail-mode", choices=("raise", "hang"))
    p.add_argument("--dist-timeout", type=float, default=1800.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = tiny_config(
        args.out,
        steps=args.steps,
        checkpoint_every=1,
        keep_checkpoints=2,
        dist_timeout=args.dist_timeout,
    )

    def report(trainer: Trainer) -> None:
        rank = trainer.dist.rank
        say(f"STEP {rank} {trainer.step} {trainer.last_loss!r}")
        if rank == args.fail_rank and trainer.step == args.fail_step:
            if args.fail_mode == "raise":
                raise RuntimeError(f"injected failure on rank {rank} at step {trainer.step}")
            say(f"HANG {rank} {trainer.step}")
            while True:
                time.sleep(3600)

    trainer = Trainer(cfg, train_data=tiny_data(), callbacks=[report], resume=args.resume)
    result = trainer.fit()
    say(f"RESULT {trainer.dist.rank} {result.status} {result.step}")
    if result.status == "stopped":
        return 128 + result.signal if result.signal else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
