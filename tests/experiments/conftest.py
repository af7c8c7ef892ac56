"""Set-up shared by the experiment tests."""

from __future__ import annotations

import pytest

from skiplab.experiments import degradation
from skiplab.experiments.training import DataPlan


@pytest.fixture(scope="module")
def tiny_degradation():
    """The degradation experiment's quick budget shrunk to seconds, for the whole test module:
    plain and residual nets of 8 and 14 layers at widths 4/8/16, one epoch of batch 16 on 64
    training and 32 test images at 16x16. Yields the budget."""
    budget = degradation.DegradationBudget(
        (8, 14),
        1,
        16,
        0.1,
        DataPlan(train_size=64, test_size=32, resolution=16),
        {"widths": (4, 8, 16), "stem_width": 4},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(degradation.BUDGETS, "quick", budget)
        yield budget
