"""Training tests run on one CPU thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Session scope: module-scoped fixtures (reference runs) must see the same thread count as
    # the tests that compare with them bit for bit. And under load, the intra-op threads of a
    # small conv net spin against each other (measured here: 2.7 s per step with 2 threads on a
    # busy 2-core machine, 0.06 s with 1).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
