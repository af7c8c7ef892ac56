"""One slice of a long ``skiplab reproduce`` run, sized for a device lease, resumable on the next.

    # first lease (carry [".gpu-data"]):
    python3 benchmarks/paper_lease.py degradation --data cifar10 \\
        --data-dir .gpu-data/cifar10-jpeg.tar.gz --seed-list 0 --out $OUT
    # next leases: put the parts it brought back into .gpu-data/state/, then
    python3 benchmarks/paper_lease.py ... --state .gpu-data/state --out $OUT

Steps: unpack the state of the previous lease (``--state``: ``state.tar`` or ``state.tar.00``,
``.01``, ...) into ``--work``; run ``skiplab reproduce EXPERIMENT --budget paper
--time-limit T`` in this process (every training run stops at a step boundary with a
checkpoint when the time is up, and resumes from it on the next lease); pack the run folder
with only the newest checkpoint of each run into ``--out`` (at most 7 parts of 16 MiB), and
write ``progress.json`` beside it: the steps each net has done, whether the experiments
finished, whether the state fits what the next lease can carry (``--carry-mib``), and the
command for the next lease. Exit status 0 whether finished or not (the
state is what matters); ``progress.json`` says which.

A script rather than a ``skiplab`` subcommand: the packing answers the limits of this
project's device leases (files brought back, their size, what travels), as
``benchmarks/gpu_suite.py`` does; the general part, ``reproduce --time-limit``, is in skiplab.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from skiplab.cli import main as skiplab_main  # noqa: E402
from skiplab.experiments.lease import (  # noqa: E402
    EXIT_RESUMABLE,
    pack_state,
    progress,
    unpack_state,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT")
    p.add_argument("--budget", default="paper")
    p.add_argument("--data", default="cifar10")
    p.add_argument("--data-dir", type=Path)
    seeds = p.add_mutually_exclusive_group(required=True)
    seeds.add_argument("--seeds", type=int)
    seeds.add_argument("--seed-list", type=int, nargs="+")
    p.add_argument("--device", default="cuda")
    p.add_argument("--amp", default="auto")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=480.0, help="seconds of training")
    p.add_argument("--state", type=Path, help="folder holding the previous lease's state parts")
    p.add_argument("--work", type=Path, default=Path("runs/lease"), help="run folder (new)")
    p.add_argument("--out", type=Path, required=True, help="where the state goes ($OUT)")
    p.add_argument("--part-mib", type=float, default=16.0)
    p.add_argument("--max-parts", type=int, default=7)
    p.add_argument(
        "--carry-mib",
        type=float,
        default=41.0,
        help="state the next lease can carry: 64 MiB less the working tree and the data",
    )
    return p.parse_args(argv)


def reproduce_argv(args: argparse.Namespace) -> list[str]:
    argv = ["reproduce", *args.experiments, "--budget", args.budget, "--data", args.data]
    if args.data_dir is not None:
        argv += ["--data-dir", str(args.data_dir)]
    if args.seeds is not None:
        argv += ["--seeds", str(args.seeds)]
    else:
        argv += ["--seed-list", *map(str, args.seed_list)]
    argv += ["--device", args.device, "--amp", args.amp, "--jobs", str(args.jobs)]
    return argv + ["--out", str(args.work), "--time-limit", f"{args.time_limit:g}"]


def next_command(argv: list[str] | None, state: str) -> str:
    """This script's command line with ``--state`` replaced by ``state``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--state" in argv:
        i = argv.index("--state")
        del argv[i : i + 2]
    return shlex.join(["python3", "benchmarks/paper_lease.py", *argv, "--state", state])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.work / "runs").exists():
        raise SystemExit(f"--work {args.work} already holds runs; give a new folder")
    if args.state is not None:
        count = unpack_state(args.state, args.work)
        print(f"unpacked {count} files of {args.state} into {args.work}", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        status = skiplab_main(reproduce_argv(args))
    except Exception:  # a crash (or SIGTERM) must not lose what this lease trained
        traceback.print_exc()
        status = 1
    if status not in (0, EXIT_RESUMABLE):
        print(f"skiplab reproduce failed (exit status {status}); state packed as it is")
    parts = pack_state(
        args.work, args.out, part_bytes=int(args.part_mib * 2**20), max_parts=args.max_parts
    )
    rows = progress(args.work)
    finished = status == 0
    summary = {
        "finished": finished,
        "reproduce_status": status,
        "parts": [p.name for p in parts],
        "mib": round(sum(p.stat().st_size for p in parts) / 2**20, 2),
        "fits_next_lease": sum(p.stat().st_size for p in parts) <= args.carry_mib * 2**20,
        "runs": rows,
        "next": None if finished else next_command(argv, "STATE_FOLDER"),
    }
    (args.out / "progress.json").write_text(json.dumps(summary, indent=2) + "\n")
    for r in rows:
        length = f"{r['epochs']} epochs" if r["steps"] is None else f"{r['steps']} steps"
        print(f"{r['run']}: step {r['step']} (epoch {r['epoch']} of {length})")
    print(f"state: {summary['parts']} ({summary['mib']} MiB) in {args.out}")
    if not finished and not summary["fits_next_lease"]:
        print(
            f"warning: the state is more than --carry-mib {args.carry_mib:g} MiB: the next "
            "lease cannot carry it with the data (see docs/benchmarks.md, the paper budget)"
        )
    if finished:
        print("finished: the report is in the packed run folder")
    else:
        print("not finished; next lease, with the parts copied to STATE_FOLDER:")
        print(summary["next"])
    return 0 if status in (0, EXIT_RESUMABLE) else status


if __name__ == "__main__":
    raise SystemExit(main())
