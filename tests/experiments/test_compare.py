"""``skiplab compare``: two runs' verdicts, claim by claim, from hand-written verdict lists."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from skiplab.cli import main
from skiplab.experiments.compare import compare_runs, load_verdicts

ROOT = Path(__file__).resolve().parents[2]


def _claim(experiment, claim, status, margin, ci, values, *, guards=(), exact=False, n=None):
    return {
        "claim": claim,
        "experiment": experiment,
        "measured": "numbers in words",
        "status": status,
        "margin": margin,
        "ci": ci,
        "min_effect": 0.25,
        "n": len(values) if n is None else n,
        "values": values,
        "guards": [{"net": net, "passed": ok, "detail": "loss vs chance"} for net, ok in guards],
        "exact": exact,
        "note": "",
        "guard": "",
    }


TRAINED = "Plain nets train worse as they deepen: training error rises with depth (plain-20/32)"


def _reference() -> list[dict]:
    return [
        _claim(
            "alpha",
            TRAINED,
            "REPRODUCED",
            5.0,
            [4.0, 6.0],
            [4.5, 5.0, 5.5],
            guards=[("plain20 seed 0", True), ("plain20 seed 1", True)],
        ),
        _claim("alpha", "one seed only", "INCONCLUSIVE", 1.5, None, [1.5]),
        _claim(
            "beta",
            "ResNet-152 has fewer parameters",
            "REPRODUCED",
            83.47,
            None,
            [83.47],
            exact=True,
        ),
        _claim("beta", "no margin can be measured", "INCONCLUSIVE", 0.0, None, [], n=0),
    ]


def _write(folder: Path, records) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "verdicts.json").write_text(json.dumps(records, indent=2))
    return folder


def _pair(tmp_path: Path, change=None) -> tuple[Path, Path]:
    """The reference run and a copy, changed in place by ``change`` (a function of the list)."""
    new = copy.deepcopy(_reference())
    if change is not None:
        change(new)
    return _write(tmp_path / "ref", _reference()), _write(tmp_path / "new", new)


def test_identical_runs_agree_and_lie_within(tmp_path, capsys):
    ref, new = _pair(tmp_path)
    result = compare_runs(ref, new)
    assert result.exit_status == 0
    assert [r.missing for r in result.rows] == ["", "", "", ""]
    trained, one_seed, exact, undecided = result.rows
    assert trained.within is True and trained.ref_in_new is True and trained.max_abs_diff == 0
    assert trained.guards_agree is True
    assert one_seed.within is None and one_seed.max_abs_diff == 0  # no interval to test
    assert exact.within is True and exact.max_abs_diff == 0
    assert undecided.margin_ref is None and undecided.within is None
    assert result.summary().startswith(
        "4 claims: 2 agree in status and lie within the reference interval, 0 differ; "
        "2 agree in status with no reference interval to test"
    )
    # End to end: the same through the command line, the folders or the files themselves.
    assert main(["compare", str(ref), str(new / "verdicts.json")]) == 0
    out = capsys.readouterr().out
    assert "| alpha | Plain nets train worse as they deepen: training error ris... |" in out
    assert "REPRODUCED -> REPRODUCED" in out
    assert "+5 [+4, +6] -> +5 | yes | yes | 0 | agree |" in out
    assert "n/a -> n/a | n/a | n/a | n/a (no values) |" in out  # the undecidable claim
    assert out.rstrip().endswith("missing: 0 reference-only, 0 new-only.")


def test_margin_outside_the_interval_is_flagged(tmp_path, capsys):
    def shift(records):
        records[0]["margin"], records[0]["ci"] = 6.5, [6.0, 7.0]
        records[0]["values"] = [6.0, 6.5, 7.0]

    ref, new = _pair(tmp_path, shift)
    result = compare_runs(ref, new)
    row = result.rows[0]
    assert row.status_agrees and row.within is False and row.ref_in_new is False
    assert row.problems == ["outside the reference interval"]
    assert row.max_abs_diff == pytest.approx(1.5)
    assert [r.ok for r in result.rows[1:]] == [True, True, True]
    assert result.exit_status == 1
    assert main(["compare", str(ref), str(new)]) == 1
    out = capsys.readouterr().out
    assert "+5 [+4, +6] -> +6.5 | **no** | no | 1.5 |" in out
    assert "1 differ (1 outside the reference interval)" in out


def test_margin_inside_the_interval_passes_with_its_seed_differences(tmp_path):
    def nudge(records):
        records[0]["margin"], records[0]["values"] = 5.9, [5.4, 5.9, 6.4]
        records[0]["ci"] = [3.0, 8.0]

    result = compare_runs(*_pair(tmp_path, nudge))
    assert result.rows[0].within is True and result.rows[0].ref_in_new is True
    assert result.rows[0].max_abs_diff == pytest.approx(0.9)
    assert result.exit_status == 0


def test_a_status_change_is_flagged(tmp_path, capsys):
    def demote(records):
        records[0]["status"] = "INCONCLUSIVE"

    ref, new = _pair(tmp_path, demote)
    result = compare_runs(ref, new)
    assert result.rows[0].problems == ["status"] and result.rows[0].within is True
    assert result.exit_status == 1
    assert main(["compare", str(ref), str(new)]) == 1
    out = capsys.readouterr().out
    assert "**REPRODUCED -> INCONCLUSIVE**" in out
    assert (
        "4 claims: 1 agree in status and lie within the reference interval, 1 differ (1 status)"
        in out
    )


def test_a_claim_in_one_run_only_is_listed(tmp_path, capsys):
    def swap(records):
        records[1]["claim"] = "one seed only, reworded"

    ref, new = _pair(tmp_path, swap)
    result = compare_runs(ref, new)
    missing = [(r.missing, r.claim) for r in result.rows if r.missing]
    assert missing == [
        ("reference-only", "one seed only"),
        ("new-only", "one seed only, reworded"),
    ]
    assert result.exit_status == 1  # a claim that was not reproduced at all is no pass
    assert main(["compare", str(ref), str(new)]) == 1
    out = capsys.readouterr().out
    assert "| alpha | one seed only | **reference-only**: INCONCLUSIVE | +1.5 -> — |" in out
    assert "**new-only**: INCONCLUSIVE | — -> +1.5 |" in out
    assert out.startswith("| experiment |")
    assert "3 claims: 2 agree" in out and "missing: 1 reference-only, 1 new-only." in out


def test_experiment_filter_and_unknown_names(tmp_path, capsys):
    def break_beta(records):
        records[2]["margin"] = 80.0  # an exact claim of beta no longer matches

    ref, new = _pair(tmp_path, break_beta)
    assert compare_runs(ref, new).exit_status == 1
    only_alpha = compare_runs(ref, new, ["alpha"])
    assert {r.experiment for r in only_alpha.rows} == {"alpha"} and len(only_alpha.rows) == 2
    assert only_alpha.exit_status == 0
    assert main(["compare", str(ref), str(new), "--experiment", "alpha"]) == 0
    assert main(["compare", str(ref), str(new), "--experiment", "beta"]) == 1
    capsys.readouterr()
    with pytest.raises(ValueError, match=r"experiment\(s\) gamma in either run.*alpha, beta"):
        compare_runs(ref, new, ["alpha", "gamma"])
    assert main(["compare", str(ref), str(new), "--experiment", "gamma"]) == 2
    err = capsys.readouterr().err
    assert "skiplab: error: no claims of experiment(s) gamma" in err and "alpha, beta" in err


def test_exact_claims_compare_by_equality(tmp_path):
    def tweak(records):
        records[2]["margin"] = records[2]["values"][0] = 83.47 + 1e-9

    result = compare_runs(*_pair(tmp_path, tweak))
    row = result.rows[2]
    assert row.exact and row.within is False and row.problems == ["not equal (exact)"]
    assert row.max_abs_diff == pytest.approx(1e-9)
    assert result.exit_status == 1


def test_nan_and_missing_margins_are_na_and_never_within(tmp_path, capsys):
    def no_margin(records):
        records[0]["margin"] = float("nan")  # json.dumps writes NaN, json.loads reads it
        records[0]["values"] = [4.5, float("nan"), 5.5]
        records[1]["margin"] = None

    ref, new = _pair(tmp_path, no_margin)
    result = compare_runs(ref, new)
    trained, one_seed = result.rows[:2]
    assert trained.margin_new is None and trained.within is False
    assert trained.problems == ["no new margin"] and trained.max_abs_diff is None
    assert one_seed.margin_new is None and one_seed.within is None and one_seed.ok
    assert result.exit_status == 1
    out_json = tmp_path / "out" / "compare.json"
    assert main(["compare", str(ref), str(new), "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert "+5 [+4, +6] -> n/a | **no** | yes | n/a (a non-finite value) |" in out
    data = json.loads(out_json.read_text())  # strict JSON: no NaN
    assert "NaN" not in out_json.read_text()
    assert data["exit_status"] == 1 and data["summary"].startswith("4 claims: 1 agree")
    assert data["rows"][0]["margin_new"] is None and data["rows"][0]["within"] is False
    assert data["rows"][0]["ok"] is False and data["rows"][1]["ok"] is True


def test_json_rows_and_seed_counts(tmp_path):
    def more_seeds(records):
        records[0]["values"] = [4.5, 5.0, 5.5, 5.0, 5.0]
        records[0]["n"] = 5
        records[0]["ci"] = [4.6, 5.4]

    ref, new = _pair(tmp_path, more_seeds)
    out_json = tmp_path / "compare.json"
    assert main(["compare", str(ref), str(new), "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["reference"] == str(ref / "verdicts.json") and data["experiments"] is None
    row = data["rows"][0]
    assert row["within"] is True and row["ref_in_new"] is True and row["max_abs_diff"] is None
    assert row["ci_ref"] == [4.0, 6.0] and row["n_ref"] == 3 and row["n_new"] == 5
    assert [r["claim"] for r in data["rows"]] == [r["claim"] for r in _reference()]


def test_guard_differences_are_reported(tmp_path, capsys):
    def fail_guard(records):
        records[0]["guards"][1]["passed"] = False

    ref, new = _pair(tmp_path, fail_guard)
    row = compare_runs(ref, new).rows[0]
    assert row.guards_agree is False and row.guards_detail == "plain20 seed 1 passed -> failed"
    main(["compare", str(ref), str(new)])
    out = capsys.readouterr().out
    assert "differ: plain20 seed 1 passed -> failed |" in out and "guards differ in 1" in out


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    good = _write(tmp_path / "good", _reference())
    expected = "expected a run folder holding verdicts.json"
    with pytest.raises(ValueError, match=f"{expected}.*nowhere, which does not exist"):
        load_verdicts(tmp_path / "nowhere")
    run = tmp_path / "unreported"
    (run / "degradation").mkdir(parents=True)
    (run / "degradation" / "results.json").write_text("{}")
    with pytest.raises(ValueError, match=r"which has none; .*`skiplab report .*unreported`"):
        load_verdicts(run)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"claim": ')
    with pytest.raises(ValueError, match=f"{expected}.*broken.json is not valid JSON"):
        load_verdicts(broken)
    (tmp_path / "dict.json").write_text('{"claim": "x"}')
    with pytest.raises(ValueError, match="a JSON list of claim records; .*holds a dict"):
        load_verdicts(tmp_path / "dict.json")
    record = _reference()[0]
    for key, value, message in [
        ("status", "MAYBE", "status must be one of"),
        ("claim", None, "'claim' must be a string"),
        ("margin", "5", "'margin' must be a number or null"),
        ("ci", [1.0], r"'ci' must be \[lo, hi\] or null"),
        ("guards", [{"net": "x"}], "'guards' must be a list"),
    ]:
        path = tmp_path / f"bad-{key}.json"
        path.write_text(json.dumps([{**record, key: value}]))
        with pytest.raises(ValueError, match=f"bad-{key}.json, record 0: {message}"):
            load_verdicts(path)
    (tmp_path / "twice.json").write_text(json.dumps([record, record]))
    with pytest.raises(ValueError, match="appears twice"):
        load_verdicts(tmp_path / "twice.json")
    capsys.readouterr()
    assert main(["compare", str(good), str(tmp_path / "nowhere")]) == 2
    assert main(["compare", str(broken), str(good)]) == 2
    err = capsys.readouterr().err
    assert err.count(f"skiplab: error: {expected}") == 2


def test_committed_text_run_against_itself(capsys):
    run = ROOT / "docs" / "results" / "standard-text"
    if not (run / "verdicts.json").is_file():
        pytest.skip(f"no committed verdicts at {run}")
    assert main(["compare", str(run), str(run / "verdicts.json")]) == 0
    out = capsys.readouterr().out
    n = len(json.loads((run / "verdicts.json").read_text()))
    assert f"{n} claims: {n} agree in status and lie within the reference interval, 0 differ" in out
