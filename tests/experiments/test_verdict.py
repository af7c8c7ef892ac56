"""Verdicts: Student-t intervals, the three-seed rule, guards, exact claims, and the quantiles
checked against published table values."""

from __future__ import annotations

import math

import pytest

from skiplab.experiments.verdict import (
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_REPRODUCED,
    REPRODUCED,
    Claim,
    Guard,
    judge,
    make_verdict,
    t_interval,
    t_quantile,
    trained_guard,
)


@pytest.mark.parametrize(
    ("df", "value"),
    # Two-sided 95% critical values of Student's t (any statistics table).
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045), (1000, 1.962)],
)
def test_t_quantiles_match_the_tables(df, value):
    assert t_quantile(0.975, df) == pytest.approx(value, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-value, abs=1e-3)


def test_interval_by_hand():
    # mean 2, sd 1, n 3: 2 +- 4.303 / sqrt(3)
    lo, hi = t_interval([1.0, 2.0, 3.0])
    half = 4.3027 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half), abs=1e-3)


CLAIM = Claim(
    "plain-{deep} trains worse than plain-{shallow}", "He et al. 2015, Fig. 6", 0.5, "paper"
)


def test_claim_holds():
    v = CLAIM.verdict("degradation", "x", [3.0, 2.5, 3.5], deep=56, shallow=20)
    assert v.status == REPRODUCED and v.claim == "plain-56 trains worse than plain-20"
    assert v.ci[0] > 0.5 and v.n == 3 and v.source == "He et al. 2015, Fig. 6"


def test_claim_fails():
    v = CLAIM.verdict("degradation", "x", [-3.0, -2.8, -3.1], deep=56, shallow=20)
    assert v.status == NOT_REPRODUCED and v.ci[1] < 0.5
    # An effect that is there but confidently smaller than what counts does not reproduce either.
    assert judge([0.1, 0.15, 0.12], 0.5).status == NOT_REPRODUCED


def test_a_guard_fires():
    guards = [Guard("plain56", False, "loss 2.30 >= 2.07"), Guard("plain20", True, "ok")]
    v = CLAIM.verdict("degradation", "x", [3.0, 2.5, 3.5], guards, deep=56, shallow=20)
    assert v.status == INCONCLUSIVE and "plain56" in v.note and "plain20" not in v.note
    assert v.guard_text.startswith("failed: plain56")
    assert trained_guard("n", 2.2, math.log(10)).passed is False
    assert trained_guard("n", 1.0, math.log(10)).passed is True
    assert trained_guard("n", float("nan"), math.log(10)).passed is False


@pytest.mark.parametrize("n", range(1, MIN_SEEDS))
def test_fewer_than_three_seeds_never_decide(n):
    for margins in ([100.0] * n, [-100.0] * n):
        j = judge(margins, 0.5)
        assert j.status == INCONCLUSIVE and f"n={n} < 3 seeds" in j.note
    assert "for the claim" in judge([100.0] * n, 0.5).note
    assert "against the claim" in judge([-100.0] * n, 0.5).note


def test_one_seed_changing_enough_changes_the_verdict():
    base = [2.0, 2.2, 1.9]
    assert judge(base, 0.5).status == REPRODUCED
    assert judge([2.0, 2.2, -1.5], 0.5).status == INCONCLUSIVE  # the interval now spans 0.5
    assert judge([-2.0, -2.2, -1.9], 0.5).status == NOT_REPRODUCED


def test_seeds_that_disagree_are_inconclusive():
    j = judge([4.0, -2.0, 1.0], min_effect=0.5)
    assert j.status == INCONCLUSIVE and "contains the minimum effect" in j.note


def test_exact_claims_are_decided_by_one_measurement():
    exact = Claim("fewer parameters", "Table 2", 0.05, "a 5% difference", exact=True)
    assert exact.verdict("x", "y", [0.3]).status == REPRODUCED
    assert exact.verdict("x", "y", [0.01]).status == NOT_REPRODUCED


def test_bad_margins_raise():
    with pytest.raises(ValueError, match="at least one margin"):
        judge([], 0.1)
    with pytest.raises(ValueError, match="finite"):
        judge([float("nan")], 0.1)
    with pytest.raises(ValueError, match="min_effect must be >= 0"):
        judge([1.0], -1)


def test_verdict_as_dict_carries_everything():
    v = make_verdict("deeper plain trains worse", "degradation", "x", [2.0, 2.2, 2.1], 0.5, "p")
    d = v.as_dict()
    assert d["margin"] == pytest.approx(2.1) and d["values"] == [2.0, 2.2, 2.1]
    assert len(d["ci"]) == 2 and d["guard"] == "none" and d["n"] == 3
