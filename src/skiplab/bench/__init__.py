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
    # The harness is imported on first use only: it imports skiplab.bench.memory, which runs
    # as ``python -m skiplab.bench.memory`` in the memory children and must not be loaded by
    # its own package before it runs (runpy warns, and the module would exist twice).
    if name in ("measure_case", "run_bench"):
        from skiplab.bench import harness

        return getattr(harness, name)
    raise AttributeError(f"module 'skiplab.bench' has no attribute {name!r}")
