"""``skiplab compare REFERENCE NEW``: does a re-run reproduce committed numbers?

Why this exists: the claim "``skiplab reproduce --budget standard`` on the same data reproduces
the committed numbers within the stated intervals" should be checked by a command, not by
reading two reports side by side. This module reads the ``verdicts.json`` of two runs (a
committed one, e.g. ``docs/results/standard-cifar10``, and a fresh one), matches their claims by
experiment and claim text, and says for each one whether the re-run agrees.

For every claim present in both runs a :class:`Row` holds:

- both statuses and whether they agree;
- the reference's mean margin and 95% interval, the new margin and interval; **within** means
  that the new mean margin lies inside the reference's interval, ends included
  (``lo <= new <= hi``). It is not decided (``None``, shown "n/a") when the reference has no
  interval (fewer than two seeds); a missing or non-finite margin (a claim no measurement could
  decide, ``n == 0``, or NaN) is shown "n/a" and never counts as within. The same test the other
  way round (the reference margin inside the new interval) is reported too, for information;
- an *exact* claim (a deterministic quantity such as a parameter count) has no interval: it is
  within only when its margin and its values are equal to the reference's;
- the largest absolute difference between the per-seed values, when both runs have the same
  number of them (0 for bit-identical runs);
- whether every guard (the nets a claim rests on) passed or failed alike in both runs.

A claim found in only one run is listed as missing (reference-only or new-only), never dropped.
The comparison passes (exit status 0) when no claim is missing and every claim agrees in status
and, where the reference has an interval (or the claim is exact), lies within it; guards that
differ are reported but do not decide (a failed guard already changes the status).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skiplab.experiments.report import md_text
from skiplab.experiments.verdict import STATUSES
from skiplab.fileio import atomic_write

VERDICTS = "verdicts.json"
REFERENCE_ONLY = "reference-only"
NEW_ONLY = "new-only"
CLAIM_CHARS = 60  # the claim as shown in the table: its first CLAIM_CHARS characters

_EXPECTED = (
    f"a run folder holding {VERDICTS} (written by `skiplab reproduce` or `skiplab report`) or a "
    f"{VERDICTS} file"
)


@dataclass
class Row:
    """One claim of the comparison (see the module docstring).

    Attributes:
        experiment: The experiment that tested the claim.
        claim: The claim in words (the matching key, with ``experiment``).
        missing: "" when both runs have the claim, else "reference-only" or "new-only".
        status_ref / status_new: The statuses (None on the side that lacks the claim).
        status_agrees: Both statuses are the same.
        exact: The claim is a deterministic quantity (in either run).
        margin_ref / margin_new: The mean margins; None when there is none (n == 0, NaN).
        ci_ref / ci_new: The 95% intervals, or None.
        n_ref / n_new: The number of per-seed values each margin is the mean of.
        within: The new margin lies in the reference interval (exact: is equal to the
            reference); None when that cannot be tested (no reference interval).
        ref_in_new: The reference margin lies in the new interval; None without one.
        max_abs_diff: max |new - reference| over the per-seed values, when both runs have the
            same number of finite values (at least one); else None.
        guards_agree: Every guard passed or failed alike; ``guards_detail`` says what differs.
        problems: Why the row fails the comparison ([] when it passes).
    """

    experiment: str
    claim: str
    missing: str = ""
    status_ref: str | None = None
    status_new: str | None = None
    status_agrees: bool = False
    exact: bool = False
    margin_ref: float | None = None
    margin_new: float | None = None
    ci_ref: list[float] | None = None
    ci_new: list[float] | None = None
    n_ref: int | None = None
    n_new: int | None = None
    within: bool | None = None
    ref_in_new: bool | None = None
    max_abs_diff: float | None = None
    guards_agree: bool | None = None
    guards_detail: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass
class Comparison:
    """The rows of a comparison, where they came from, and the verdict on the whole."""

    reference: Path
    new: Path
    rows: list[Row]
    experiments: list[str] | None = None

    @property
    def compared(self) -> list[Row]:
        return [r for r in self.rows if not r.missing]

    @property
    def exit_status(self) -> int:
        """0 when every claim is in both runs and passes, else 1."""
        return 0 if all(r.ok for r in self.rows) else 1

    def summary(self) -> str:
        return summary_line(self.rows)

    def as_dict(self) -> dict:
        return {
            "reference": str(self.reference),
            "new": str(self.new),
            "experiments": self.experiments,
            "summary": self.summary(),
            "exit_status": self.exit_status,
            "rows": [r.as_dict() for r in self.rows],
        }


# -- reading ----------------------------------------------------------------------------------
def verdicts_path(path: str | Path) -> Path:
    """The ``verdicts.json`` of a run folder, or ``path`` itself when it is such a file.

    Raises:
        ValueError: ``path`` is neither (with a hint when it is a run folder without a report).
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / VERDICTS
        if candidate.is_file():
            return candidate
        hint = ""
        if any(path.glob("*/results.json")):
            hint = f"; it holds results, so `skiplab report {path}` writes its {VERDICTS}"
        raise ValueError(f"expected {_EXPECTED}; got the folder {path}, which has none{hint}")
    what = "is neither a file nor a folder" if path.exists() else "does not exist"
    raise ValueError(f"expected {_EXPECTED}; got {path}, which {what}")


def _number(value, what: str, allow_none: bool = True) -> float | None:
    """A JSON number as a float (NaN kept); None where allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(
            f"{what} must be a number{' or null' if allow_none else ''}; got {value!r}"
        )
    return float(value)


def _finite(value: float | None) -> float | None:
    """``value`` when it is a finite number, else None (no margin to compare)."""
    return value if value is not None and math.isfinite(value) else None


def _check_record(record, where: str) -> dict:
    """One claim record, its fields type-checked; optional fields get their defaults."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a claim record (a JSON object); got {record!r}")
    for key in ("claim", "experiment", "status"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{where}: {key!r} must be a string; got {record.get(key)!r}")
    if record["status"] not in STATUSES:
        raise ValueError(
            f"{where}: status must be one of {list(STATUSES)}; got {record['status']!r}"
        )
    ci = record.get("ci")
    if ci is not None:
        if not isinstance(ci, list) or len(ci) != 2:
            raise ValueError(f"{where}: 'ci' must be [lo, hi] or null; got {ci!r}")
        ci = [_number(x, f"{where}: 'ci'", allow_none=False) for x in ci]
    values = record.get("values", [])
    if not isinstance(values, list):
        raise ValueError(f"{where}: 'values' must be a list of numbers; got {values!r}")
    guards = record.get("guards", [])
    if not isinstance(guards, list) or not all(
        isinstance(g, dict) and isinstance(g.get("net"), str) and isinstance(g.get("passed"), bool)
        for g in guards
    ):
        raise ValueError(
            f"{where}: 'guards' must be a list of {{'net': str, 'passed': bool, ...}}; "
            f"got {guards!r}"
        )
    n = record.get("n", len(values))
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"{where}: 'n' must be an integer; got {n!r}")
    margin = _number(record.get("margin"), f"{where}: 'margin'")
    return {
        "claim": record["claim"],
        "experiment": record["experiment"],
        "status": record["status"],
        # A claim no measurement could decide (n == 0) carries a placeholder margin of 0.
        "margin": None if n == 0 else _finite(margin),
        "ci": ci,
        "n": n,
        "values": [_number(x, f"{where}: 'values'", allow_none=False) for x in values],
        "guards": [(g["net"], g["passed"]) for g in guards],
        "exact": bool(record.get("exact", False)),
    }


def load_verdicts(path: str | Path) -> tuple[Path, list[dict]]:
    """The claim records of a run folder or ``verdicts.json`` file, checked.

    Returns:
        The file read and its records (see :func:`_check_record` for the fields kept).

    Raises:
        ValueError: not a run folder or verdicts file, malformed JSON, a record without the
            fields a claim has, or the same claim twice in one experiment.
    """
    file = verdicts_path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"expected {_EXPECTED}; {file} is not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected {_EXPECTED}; {file} is not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(
            f"expected {_EXPECTED}: a JSON list of claim records; {file} holds a "
            f"{type(data).__name__}"
        )
    records, seen = [], set()
    for i, record in enumerate(data):
        checked = _check_record(record, f"{file}, record {i}")
        key = (checked["experiment"], checked["claim"])
        if key in seen:
            raise ValueError(
                f"{file}, record {i}: the claim {checked['claim']!r} of {checked['experiment']!r} "
                "appears twice, so it cannot be matched"
            )
        seen.add(key)
        records.append(checked)
    return file, records


# -- comparing --------------------------------------------------------------------------------
def _inside(value: float | None, ci: list[float] | None) -> bool | None:
    """``value`` in ``ci`` (ends included); None without an interval; False without a finite
    value or with a non-finite interval."""
    if ci is None:
        return None
    if value is None or not all(math.isfinite(x) for x in ci):
        return False
    return ci[0] <= value <= ci[1]


def _max_abs_diff(ref: list[float], new: list[float]) -> float | None:
    if not ref or len(ref) != len(new):
        return None
    if not all(math.isfinite(x) for x in ref + new):
        return None
    return max(abs(a - b) for a, b in zip(ref, new, strict=True))


def _guards(ref: list[tuple[str, bool]], new: list[tuple[str, bool]]) -> tuple[bool, str]:
    """Whether the guards passed and failed alike, and (if not) which nets differ."""
    if sorted(ref) == sorted(new):
        return True, ""
    ref_by, new_by = dict(ref), dict(new)
    parts = []
    for net in dict.fromkeys([n for n, _ in ref] + [n for n, _ in new]):
        if net not in new_by:
            parts.append(f"{net} only in the reference")
        elif net not in ref_by:
            parts.append(f"{net} only in the new run")
        elif ref_by[net] != new_by[net]:
            word = {True: "passed", False: "failed"}
            parts.append(f"{net} {word[ref_by[net]]} -> {word[new_by[net]]}")
    return False, "; ".join(parts) or "the same nets, listed a different number of times"


def compare_claim(ref: dict, new: dict) -> Row:
    """The row of one claim present in both runs (records as :func:`load_verdicts` gives)."""
    exact = ref["exact"] or new["exact"]
    row = Row(
        experiment=ref["experiment"],
        claim=ref["claim"],
        status_ref=ref["status"],
        status_new=new["status"],
        status_agrees=ref["status"] == new["status"],
        exact=exact,
        margin_ref=ref["margin"],
        margin_new=new["margin"],
        ci_ref=ref["ci"],
        ci_new=new["ci"],
        n_ref=ref["n"],
        n_new=new["n"],
        max_abs_diff=_max_abs_diff(ref["values"], new["values"]),
    )
    row.guards_agree, row.guards_detail = _guards(ref["guards"], new["guards"])
    if exact:
        both = row.margin_ref is not None and row.margin_new is not None
        row.within = both and row.margin_ref == row.margin_new and ref["values"] == new["values"]
        row.ref_in_new = row.within
    else:
        row.within = _inside(row.margin_new, row.ci_ref)
        row.ref_in_new = _inside(row.margin_ref, row.ci_new)
    if not row.status_agrees:
        row.problems.append("status")
    if row.within is False:
        if exact:
            row.problems.append("not equal (exact)")
        elif row.margin_new is None:
            row.problems.append("no new margin")
        else:
            row.problems.append("outside the reference interval")
    return row


def compare_verdicts(
    reference: Sequence[dict], new: Sequence[dict], experiments: Sequence[str] | None = None
) -> list[Row]:
    """One row per claim of either run, matched by (experiment, claim): the reference's order,
    then the claims only the new run has.

    Raises:
        ValueError: a name in ``experiments`` that neither run has (the message lists those
            that exist).
    """
    if experiments:
        present = list(dict.fromkeys(r["experiment"] for r in [*reference, *new]))
        unknown = [e for e in experiments if e not in present]
        if unknown:
            raise ValueError(
                f"no claims of experiment(s) {', '.join(unknown)} in either run; the experiments "
                f"there: {', '.join(present) or 'none'}"
            )
        wanted = set(experiments)
        reference = [r for r in reference if r["experiment"] in wanted]
        new = [r for r in new if r["experiment"] in wanted]
    new_by_key = {(r["experiment"], r["claim"]): r for r in new}
    ref_keys = {(r["experiment"], r["claim"]) for r in reference}
    rows = []
    for ref in reference:
        other = new_by_key.get((ref["experiment"], ref["claim"]))
        if other is None:
            rows.append(_missing_row(ref, REFERENCE_ONLY))
        else:
            rows.append(compare_claim(ref, other))
    rows += [
        _missing_row(r, NEW_ONLY) for r in new if (r["experiment"], r["claim"]) not in ref_keys
    ]
    return rows


def _missing_row(record: dict, which: str) -> Row:
    side = "ref" if which == REFERENCE_ONLY else "new"
    row = Row(
        experiment=record["experiment"],
        claim=record["claim"],
        missing=which,
        exact=record["exact"],
        problems=[which],
    )
    for name in ("status", "margin", "ci", "n"):
        setattr(row, f"{name}_{side}", record[name])
    return row


def compare_runs(
    reference: str | Path, new: str | Path, experiments: Sequence[str] | None = None
) -> Comparison:
    """Compare two run folders (or ``verdicts.json`` files); see the module docstring."""
    ref_file, ref_records = load_verdicts(reference)
    new_file, new_records = load_verdicts(new)
    rows = compare_verdicts(ref_records, new_records, experiments)
    return Comparison(ref_file, new_file, rows, list(experiments) if experiments else None)


# -- showing ----------------------------------------------------------------------------------
def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4g}"


def _margin_cell(row: Row) -> str:
    ref = _num(row.margin_ref)
    if row.ci_ref is not None:
        ref += f" [{row.ci_ref[0]:+.4g}, {row.ci_ref[1]:+.4g}]"
    if row.missing == REFERENCE_ONLY:
        return f"{ref} -> —"
    if row.missing == NEW_ONLY:
        return f"— -> {_num(row.margin_new)}"
    return f"{ref} -> {_num(row.margin_new)}"


def _yes_no(value: bool | None, flag: bool = True) -> str:
    if value is None:
        return "n/a"
    return "yes" if value else ("**no**" if flag else "no")


def _short(claim: str) -> str:
    return claim if len(claim) <= CLAIM_CHARS else claim[: CLAIM_CHARS - 3].rstrip() + "..."


def _why_no_diff(row: Row) -> str:
    """Why no per-seed difference: the counts of values (or a non-finite one)."""
    if row.n_ref == row.n_new:
        return "no values" if not row.n_ref else "a non-finite value"
    return f"{row.n_ref} vs {row.n_new} values"


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (failures in bold)."""
    lines = [
        "| experiment | claim | status ref -> new | margin ref [95% CI] -> new | within? "
        "| ref in new CI? | max \\|Δ\\| per seed | guards |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row.missing:
            status = f"**{row.missing}**: {row.status_ref or row.status_new}"
            within = ref_in_new = diff = guards = "—"
        else:
            status = f"{row.status_ref} -> {row.status_new}"
            if not row.status_agrees:
                status = f"**{status}**"
            within, ref_in_new = _yes_no(row.within), _yes_no(row.ref_in_new, flag=False)
            if row.max_abs_diff is not None:
                diff = f"{row.max_abs_diff:.3g}"
            else:
                diff = f"n/a ({_why_no_diff(row)})"
            guards = "agree" if row.guards_agree else f"differ: {md_text(row.guards_detail)}"
        lines.append(
            f"| {md_text(row.experiment)} | {md_text(_short(row.claim))} | {status} | "
            f"{_margin_cell(row)} | {within} | {ref_in_new} | {diff} | {guards} |"
        )
    return "\n".join(lines)


def summary_line(rows: Sequence[Row]) -> str:
    """The summary: "N claims: A agree in status and lie within the reference interval, B
    differ: ...", then the claims with no reference interval, differing guards and missing
    claims."""
    compared = [r for r in rows if not r.missing]
    within = sum(r.ok and r.within is True for r in compared)
    untested = sum(r.ok and r.within is None for r in compared)
    failing = [r for r in compared if not r.ok]
    kinds: dict[str, int] = {}
    for r in failing:
        for p in r.problems:
            kinds[p] = kinds.get(p, 0) + 1
    line = (
        f"{len(compared)} claims: {within} agree in status and lie within the reference "
        f"interval, {len(failing)} differ"
    )
    if failing:
        line += " (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")"
    line += f"; {untested} agree in status with no reference interval to test"
    guards = sum(r.guards_agree is False for r in compared)
    if guards:
        line += f"; guards differ in {guards}"
    ref_only = sum(r.missing == REFERENCE_ONLY for r in rows)
    new_only = sum(r.missing == NEW_ONLY for r in rows)
    line += f"; missing: {ref_only} reference-only, {new_only} new-only."
    return line


def write_json(comparison: Comparison, path: str | Path) -> None:
    """The comparison as data (non-finite numbers as null)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    text = json.dumps(clean(comparison.as_dict()), indent=2, allow_nan=False) + "\n"
    atomic_write(path, text.encode())


__all__ = [
    "Comparison",
    "Row",
    "compare_claim",
    "compare_runs",
    "compare_verdicts",
    "load_verdicts",
    "markdown_table",
    "summary_line",
    "verdicts_path",
    "write_json",
]
