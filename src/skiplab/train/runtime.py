"""Process state the trainer saves and reacts to: random-number generators and stop signals."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
