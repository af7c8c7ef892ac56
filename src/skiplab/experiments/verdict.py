"""Verdicts computed from measured numbers, never written in advance.

Every claim is phrased so that a positive *margin* means the claim holds (e.g. "the deeper plain
net has the higher training error": margin = err(deep plain) - err(shallow plain), in points).
A claim whose numbers come from training or random initialisation is judged on the mean of its
per-seed margins and that mean's two-sided 95% confidence interval with Student-t quantiles
(n - 1 degrees of freedom):

- REPRODUCED: the whole interval lies above ``min_effect``;
- NOT REPRODUCED: the whole interval lies below ``min_effect`` (the effect is absent, reversed,
  or smaller than what counts);
- INCONCLUSIVE: the interval contains ``min_effect``, fewer than :data:`MIN_SEEDS` seeds were
  run (the measured direction is shown, never decided), or a net the claim rests on failed its
  guard (for example it never left chance; the net is named).

A claim about a deterministic quantity (parameter counts, multiply-adds, an exact construction)
is ``exact``: one measurement decides, against ``min_effect`` alone.

``min_effect`` is the smallest margin that counts, in the margin's unit; each claim states why
that value (``why_min``: the paper's effect size, a measured seed spread, ...), so that no value
is chosen to make a row pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

REPRODUCED = "REPRODUCED"
NOT_REPRODUCED = "NOT REPRODUCED"
INCONCLUSIVE = "INCONCLUSIVE"
STATUSES = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
MIN_SEEDS = 3  # fewer seeds never decide a trained claim
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Guard:
    """A check that a net a claim rests on is fit to be judged (it trained, it is not all
    background, ...). ``detail`` says what was measured against what threshold."""

    net: str
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    """One claim, its measurement and the verdict.

    Attributes:
        claim: The claim in words.
        experiment: The experiment that tested it.
        measured: The numbers, in words (e.g. "plain56 12.3% vs plain20 8.1% train error").
        status: REPRODUCED, NOT REPRODUCED or INCONCLUSIVE.
        margin: Mean margin (positive: in favour of the claim).
        ci: The 95% Student-t interval of the mean margin; None with fewer than two values.
        min_effect: The smallest margin that counts.
        n: Number of seeds (or samples) the margin is averaged over.
        paper: The paper's number for comparison, where one exists.
        source: Where the claim is stated (paper, section, figure or table).
        why_min: Why ``min_effect`` has its value.
        values: The per-seed margins.
        guards: The guards of the nets the claim rests on.
        exact: A deterministic quantity (one measurement decides).
        note: Why the verdict is INCONCLUSIVE (too few seeds, a failed guard, ...), or "".
    """

    claim: str
    experiment: str
    measured: str
    status: str
    margin: float
    ci: tuple[float, float] | None
    min_effect: float
    n: int
    paper: str | None = None
    source: str = ""
    why_min: str = ""
    values: list[float] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    exact: bool = False
    note: str = ""

    @property
    def guard_text(self) -> str:
        """ "passed (N nets)", "failed: NET (detail); ..." or "none" (no trained net)."""
        if not self.guards:
            return "none"
        failed = [g for g in self.guards if not g.passed]
        if failed:
            return "failed: " + "; ".join(f"{g.net} ({g.detail})" for g in failed)
        n = len(self.guards)
        return f"passed ({n} net{'s' if n > 1 else ''})"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = None if self.ci is None else list(self.ci)
        d["guard"] = self.guard_text
        return d


# -- Student-t quantiles ---------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1); got {p}")
    if df <= 0:
        raise ValueError(f"df must be > 0; got {df}")
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of ``values`` (at least two)."""
    n = len(values)
    if n < 2:
        raise ValueError(f"an interval needs at least two values; got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


# -- judging --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Judgement:
    status: str
    mean: float
    ci: tuple[float, float] | None
    note: str


def judge(margins: Sequence[float], min_effect: float, *, exact: bool = False) -> Judgement:
    """The status of a claim from its per-seed margins (see the module docstring).

    Raises:
        ValueError: for no margins, a non-finite margin or a negative ``min_effect``.
    """
    if not margins:
        raise ValueError("judge needs at least one margin")
    if min_effect < 0:
        raise ValueError(f"min_effect must be >= 0; got {min_effect}")
    if not all(math.isfinite(m) for m in margins):
        raise ValueError(f"margins must be finite; got {list(margins)}")
    n = len(margins)
    mean = sum(margins) / n
    ci = t_interval(margins) if n >= 2 else None
    if exact:
        status = REPRODUCED if mean > min_effect else NOT_REPRODUCED
        return Judgement(status, mean, ci, "")
    direction = "for" if mean > 0 else ("against" if mean < 0 else "neither for nor against")
    if n < MIN_SEEDS:
        note = (
            f"n={n} < {MIN_SEEDS} seeds: never decisive; the measured direction is "
            f"{direction} the claim (mean margin {mean:+.3g})"
        )
        return Judgement(INCONCLUSIVE, mean, ci, note)
    lo, hi = ci
    if lo > min_effect:
        return Judgement(REPRODUCED, mean, ci, "")
    if hi < min_effect:
        return Judgement(NOT_REPRODUCED, mean, ci, "")
    note = f"the interval [{lo:+.3g}, {hi:+.3g}] contains the minimum effect {min_effect:g}"
    return Judgement(INCONCLUSIVE, mean, ci, note)


def make_verdict(
    claim: str,
    experiment: str,
    measured: str,
    margins: Sequence[float],
    min_effect: float,
    paper: str | None = None,
    *,
    source: str = "",
    why_min: str = "",
    guards: Sequence[Guard] = (),
    exact: bool = False,
) -> Verdict:
    """Judge ``margins`` and return the verdict; a failed guard makes it INCONCLUSIVE (the
    margins are still shown, the net is named)."""
    j = judge(margins, min_effect, exact=exact)
    status, note = j.status, j.note
    failed = [g for g in guards if not g.passed]
    if failed:
        status = INCONCLUSIVE
        note = "a net it rests on failed its guard: " + ", ".join(g.net for g in failed)
        note += f"; {j.note}" if j.note else ""
    return Verdict(
        claim, experiment, measured, status, j.mean, j.ci, min_effect, len(margins), paper,
        source, why_min, [float(m) for m in margins], list(guards), exact, note,
    )  # fmt: skip


def undecidable_verdict(
    claim: str,
    experiment: str,
    why: str,
    min_effect: float,
    paper: str | None = None,
    *,
    source: str = "",
    why_min: str = "",
    guards: Sequence[Guard] = (),
) -> Verdict:
    """INCONCLUSIVE for a claim the measurement cannot decide: no margin exists (``why`` stands
    where the numbers would, and is the note)."""
    return Verdict(
        claim, experiment, why, INCONCLUSIVE, 0.0, None, min_effect, 0, paper, source, why_min,
        [], list(guards), False, why,
    )  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """A claim as its source states it, declared once at the top of an experiment's module.

    ``text`` may hold ``str.format`` fields (``"plain-{deep} trains worse than plain-{shallow}"``)
    filled in when it is judged, so that a claim names the depths a budget actually ran.

    Attributes:
        text: The claim in words, phrased so that a positive margin supports it.
        source: Where it is stated: paper, section, figure or table.
        min_effect: The smallest margin that counts (the margin's unit).
        why_min: Why ``min_effect`` has that value.
        paper: The paper's own number, for comparison.
        exact: A deterministic quantity: one measurement decides.
    """

    text: str
    source: str
    min_effect: float
    why_min: str
    paper: str | None = None
    exact: bool = False

    def verdict(
        self,
        experiment: str,
        measured: str,
        margins: Sequence[float],
        guards: Sequence[Guard] = (),
        **fields,
    ) -> Verdict:
        """Judge per-seed ``margins`` (see :func:`make_verdict`)."""
        return make_verdict(
            self.text.format(**fields), experiment, measured, margins, self.min_effect,
            self.paper, source=self.source, why_min=self.why_min, guards=guards,
            exact=self.exact,
        )  # fmt: skip

    def undecidable(
        self, experiment: str, why: str, guards: Sequence[Guard] = (), **fields
    ) -> Verdict:
        """INCONCLUSIVE because no margin can be measured; ``why`` says so."""
        return undecidable_verdict(
            self.text.format(**fields), experiment, why, self.min_effect, self.paper,
            source=self.source, why_min=self.why_min, guards=guards,
        )  # fmt: skip


def trained_guard(net: str, loss: float, chance: float, fraction: float = 0.9) -> Guard:
    """A classifier trained when its loss is clearly below chance: ``loss < fraction * chance``
    (chance: the cross-entropy of the uniform prediction, ln C)."""
    bound = fraction * chance
    ok = math.isfinite(loss) and loss < bound
    return Guard(
        net, ok, f"loss {loss:.4g} {'<' if ok else '>='} {bound:.4g} = {fraction} x chance"
    )
