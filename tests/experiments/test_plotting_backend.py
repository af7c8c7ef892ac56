"""Importing skiplab (any experiment, the report) and drawing its figures leaves the process's
matplotlib backend alone, as a notebook needs (its inline backend must survive)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import skiplab

SRC = Path(skiplab.__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys, tempfile
    from pathlib import Path

    import matplotlib

    before = matplotlib.get_backend()
    import skiplab, skiplab.cli, skiplab.experiments

    for info in pkgutil.iter_modules(skiplab.experiments.__path__):
        importlib.import_module(f"skiplab.experiments.{info.name}")
    from skiplab.experiments.report import save_figure, subplots

    fig, axes = subplots(1, 2, figsize=(4, 2))
    axes[0].plot([0, 1], [1, 0])
    with tempfile.TemporaryDirectory() as tmp:
        save_figure(fig, Path(tmp), "f")
        sizes = [(Path(tmp) / n).stat().st_size for n in ("f.png", "f.svg")]
    print(before, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, min(sizes))
    """
)


def test_importing_skiplab_keeps_the_matplotlib_backend():
    # MPLBACKEND stands for a notebook's backend: 'pdf' is not Agg, and headless.
    env = {**os.environ, "MPLBACKEND": "pdf", "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    before, after, pyplot_loaded, smallest = out.stdout.split()
    assert before == after == "pdf"
    assert pyplot_loaded == "False"  # skiplab draws on Figure objects, never through pyplot
    assert int(smallest) > 1000  # both files were rendered
