"""Process state the trainer saves and reacts to (random-number generators, stop signals), and
how it compiles the network."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch

from skiplab.train.config import COMPILE_MODES

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The torch.compile modes that replay CUDA graphs on a GPU (one launch for the whole forward, one
# for the backward): what the small CIFAR nets need, as they are launch-bound at batch 128. On
# a CPU no graphs are recorded.
_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_network(net: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``torch.compile(net, mode=mode)``; ``mode`` is one of COMPILE_MODES."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {list(COMPILE_MODES)}; got {mode!r}")
    return torch.compile(net, mode=mode)


def begin_compiled_step(mode: str) -> None:
    """Tell torch that a new training step starts, under a mode that records CUDA graphs.

    Without it the graphs' output buffers of the previous step may still count as in use, and
    torch re-records graphs instead of replaying them. No-op for the other modes and on a CPU.
    """
    if mode in _GRAPH_MODES:
        torch.compiler.cudagraph_mark_step_begin()


def capture_rng(device: torch.device) -> dict:
    """Every generator dropout, drop-path or user code may draw from (tensors and plain values
    only, so that the checkpoint loads with ``weights_only=True``)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "cuda": cuda}


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def stop_signals(on_signal: Callable[[int], None]):
    """While active, SIGTERM and SIGINT call ``on_signal(signum)`` instead of ending the
    process (the trainer then stops at the next step boundary); a second signal of the same
    kind gets the previous handler (Ctrl-C twice interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed from the main thread
        return
    previous = {}

    def handler(signum, frame):
        on_signal(signum)
        signal.signal(signum, previous[signum])

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
