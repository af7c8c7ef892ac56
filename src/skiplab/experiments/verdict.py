"""Verdicts computed from measured numbers, never written in advance.

Every claim is phrased so that a positive *margin* means the claim holds (e.g. "the deeper plain
net has the higher training error": margin = err(deep plain) - err(shallow plain), in points).
With several seeds the margin is judged against its standard error:

- REPRODUCED: mean margin > max(min_effect, 2 standard errors);
- NOT REPRODUCED: mean margin < -max(min_effect, 2 standard errors);
- INCONCLUSIVE: anything in between (the effect is smaller than the noise or the tolerance).

``min_effect`` is the smallest difference that counts (in the margin's unit), so that one seed
with a tiny difference is not taken as evidence either way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

REPRODUCED = "REPRODUCED"
NOT_REPRODUCED = "NOT REPRODUCED"
INCONCLUSIVE = "INCONCLUSIVE"


@dataclass
class Verdict:
    """One claim, its measurement and the verdict.

    Attributes:
        claim: The claim in words.
        experiment: The experiment that tested it.
        measured: The numbers, in words (e.g. "plain56 12.3% vs plain20 8.1% train error").
        status: REPRODUCED, NOT REPRODUCED or INCONCLUSIVE.
        margin: Mean margin (positive: in favour of the claim).
        needed: The margin needed for a decision: max(min_effect, 2 standard errors).
        n: Number of seeds (or samples) the margin is averaged over.
        paper: The paper's number for comparison, where one exists.
    """

    claim: str
    experiment: str
    measured: str
    status: str
    margin: float
    needed: float
    n: int
    paper: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def judge(margins: list[float], min_effect: float) -> tuple[str, float, float]:
    """Status, mean margin and the margin needed, from per-seed margins.

    Raises:
        ValueError: for no margins, a non-finite margin or a negative ``min_effect``.
    """
    if not margins:
        raise ValueError("judge needs at least one margin")
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0; got {min_effect}")
    if not all(math.isfinite(m) for m in margins):
        raise ValueError(f"margins must be finite; got {margins}")
    n = len(margins)
    mean = sum(margins) / n
    se = 0.0
    if n > 1:
        var = sum((m - mean) ** 2 for m in margins) / (n - 1)
        se = math.sqrt(var / n)
    needed = max(min_effect, 2.0 * se)
    if mean > needed:
        return REPRODUCED, mean, needed
    if mean < -needed:
        return NOT_REPRODUCED, mean, needed
    return INCONCLUSIVE, mean, needed


def make_verdict(
    claim: str,
    experiment: str,
    measured: str,
    margins: list[float],
    min_effect: float,
    paper: str | None = None,
) -> Verdict:
    status, mean, needed = judge(margins, min_effect)
    return Verdict(claim, experiment, measured, status, mean, needed, len(margins), paper)


def undecidable_verdict(
    claim: str, experiment: str, why: str, min_effect: float, paper: str | None = None
) -> Verdict:
    """INCONCLUSIVE for a claim the measurement cannot decide (e.g. the nets it compares never
    left chance): the margin is 0 and ``why`` stands where the numbers would."""
    return make_verdict(claim, experiment, why, [0.0], min_effect, paper)
