"""The verdict logic on made-up results."""

from __future__ import annotations

import pytest

from skiplab.experiments.verdict import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    judge,
    make_verdict,
)


def test_clear_effect_in_favour_is_reproduced():
    assert judge([3.0, 2.5, 3.5], min_effect=0.5)[0] == REPRODUCED


def test_results_where_the_claim_fails_are_not_reproduced():
    # e.g. the deeper plain net has the *lower* training error by 3 points on every seed.
    status, mean, needed = judge([-3.0, -2.8, -3.1], min_effect=0.5)
    assert status == NOT_REPRODUCED and mean < -needed


def test_effect_within_noise_or_tolerance_is_inconclusive():
    assert judge([0.2], min_effect=0.5)[0] == INCONCLUSIVE
    # Mean 1.0 but the seeds disagree: 2 standard errors exceed the mean.
    assert judge([4.0, -2.0, 1.0], min_effect=0.5)[0] == INCONCLUSIVE


def test_single_seed_uses_min_effect_only():
    status, mean, needed = judge([0.6], min_effect=0.5)
    assert (status, mean, needed) == (REPRODUCED, 0.6, 0.5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least one"):
        judge([], 0.1)
    with pytest.raises(ValueError, match="finite"):
        judge([float("nan")], 0.1)
    with pytest.raises(ValueError, match="min_effect"):
        judge([1.0], -1)


def test_make_verdict_carries_the_numbers():
    v = make_verdict("deeper plain trains worse", "degradation", "x", [2.0, 2.2], 0.5, "Fig. 6")
    assert v.status == REPRODUCED and v.n == 2 and v.paper == "Fig. 6"
    assert v.as_dict()["margin"] == pytest.approx(2.1)
