"""Reliability tests run on one CPU thread (several processes share small machines)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def assert_all_passed(result) -> None:
    """Every trial of a FaultResult passed (the failures are shown otherwise)."""
    assert result.trials > 0
    assert result.failures == [], "\n".join(result.failures)
    assert result.passed == result.trials
