"""``skiplab bench``: throughput and peak memory of skiplab against the alternatives.

Usage::

    from skiplab.bench import BenchConfig, FastPath, run_bench
    record = run_bench(BenchConfig(models=["resnet20"], modes=["train"], batch_sizes=[128],
                                   fast=FastPath(channels_last=True, amp="bf16")))
    record["results"][0]["ratio"]   # skiplab images/s over the reference's, medians

See :mod:`skiplab.bench.cli` for the command and docs/benchmarks.md for recorded numbers.
"""

from skiplab.bench.config import BenchConfig, Case, FastPath

__all__ = ["BenchConfig", "Case", "FastPath", "measure_case", "run_bench"]


def __getattr__(name: str):
    # The harness (torch, the trainer) is imported on first use only, so that
    # ``skiplab.bench.memory`` stays light for child processes and scripts.
    if name in ("measure_case", "run_bench"):
        from skiplab.bench import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'skiplab.bench' has no attribute {name!r}")
