"""Reliability tests run on one CPU thread (several processes share small machines)."""

from __future__ import annotations

from tests.train.conftest import _one_thread  # noqa: F401 (the same autouse fixture)


def assert_all_passed(result) -> None:
    """Every trial of a FaultResult passed (the failures are shown otherwise)."""
    assert result.trials > 0
    assert result.failures == [], "\n".join(result.failures)
    assert result.passed == result.trials
