"""Where a result came from: the machine, the software and the git revision of the skiplab
source that produced it, recorded one way (:func:`environment`) by every writer of results
(``skiplab reproduce``'s results.json, ``skiplab bench``, the self-test, benchmarks/)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch
import torchvision

from skiplab.hardware import processor

PACKAGE = Path(__file__).resolve().parent


def git_revision() -> str | None:
    """The commit of the checkout skiplab runs from, with ``+dirty`` when tracked files differ;
    None when skiplab is not run from a git checkout of itself.

    An installed wheel may sit inside some other repository (a virtual environment in a
    project's folder): that repository's commit says nothing about skiplab's code, so the
    checkout counts only when its top level holds this very package at ``src/skiplab``.
    """

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or (Path(top) / "src" / "skiplab").resolve() != PACKAGE:
        return None
    rev = git("rev-parse", "HEAD")
    if not rev:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return rev + ("+dirty" if dirty else "")


def environment(device: str | None = None) -> dict:
    """The machine and software a result comes from, as one dict; each writer keeps the keys its
    files have always had, taken from this one.

    Keys: python, torch, torchvision, cuda (torch's CUDA version) and cudnn; platform, system,
    machine, processor (``platform``'s words); cpu (:meth:`Processor.as_dict`), cpu_count,
    cpus_usable (the cores this process may run on), torch_threads; device (as given), gpu (the
    CUDA device's name for a "cuda..." device or None given, where CUDA is available; else None);
    git_revision (:func:`git_revision`); time_utc.
    """
    gpu = None
    if torch.cuda.is_available() and (device is None or device.startswith("cuda")):
        gpu = torch.cuda.get_device_name(None if device is None else torch.device(device))
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu": processor().as_dict(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": gpu,
        "git_revision": git_revision(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
