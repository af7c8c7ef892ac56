"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_dynamo_cache():
    """Forget compiled frames after each test: every family's models run SkipNet.forward (one
    code object), so the compile tests together would pass dynamo's recompile limit (8 graphs
    per frame) and ``fullgraph=True`` turns that into a hard failure."""
    yield
    torch._dynamo.reset()
