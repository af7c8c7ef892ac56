"""Shared test set-up: the ModelTester parametrisation and the shared/ data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_generate_tests(metafunc):
    # A ModelTester subclass lists its registered model names in `names`; each of its tests
    # that takes a `name` argument runs once per model.
    cls = metafunc.cls
    if cls is not None and "name" in metafunc.fixturenames and getattr(cls, "names", None):
        metafunc.parametrize("name", list(cls.names))


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory):
    """Decoded-data caches go to a temporary folder, never to ~/.cache/skiplab (the default);
    set in os.environ so that subprocesses inherit it."""
    previous = os.environ.get("SKIPLAB_CACHE")
    os.environ["SKIPLAB_CACHE"] = str(tmp_path_factory.mktemp("skiplab-cache"))
    yield
    if previous is None:
        os.environ.pop("SKIPLAB_CACHE", None)
    else:
        os.environ["SKIPLAB_CACHE"] = previous


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module on one intra-op thread (use with ``pytestmark``).

    Small inputs gain nothing from intra-op threads, and on a busy shared machine their
    barriers cost seconds per call; the previous count is restored for the other modules.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_dir() -> Path:
    """The project's ../shared folder; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED}")
    return SHARED
