"""Adaptation round 10's rule (benchmarks/adapt_round10.py), on generated run summaries and generated runs."""

from __future__ import annotations

import json

import pytest

from benchmarks import adapt_round10 as r10
from tests.support import round_runs
from tests.support import round_summary as summary

V2, V1, W4 = r10.CANDIDATES


DEFAULT = summary(r10.DEFAULT, 130, 30)


@pytest.mark.parametrize("candidates, order", [
    ([summary(V2, 125, 30)], []),  # 5 fewer line-B errors: not enough
    ([summary(V2, 120, 30)], [V2]),  # exactly 10 fewer
    ([summary(V2, 100, 36)], []),  # line A: one error over the slack
    ([summary(V2, 100, 35)], [V2]),  # ... at the slack
    ([summary(V2, 100, 30, seconds=300)], [V2]),  # the shared job's time is not judged
    ([summary(V2, 115, 30), summary(V1, 110, 30)], [V1, V2]),  # fewest errors on both lines first
    ([summary(V2, 115, 30), summary(V1, 110, 35)], [V2, V1]),  # 145 against 145: the protocol's order
    ([summary(V2, 125, 30), summary(V1, 90, 40), summary(W4, 119, 35)], [W4]),  # only one qualifies
])
def test_the_rule_ranks_the_qualifying_candidates_by_errors(candidates, order):
    assert r10.ranking(DEFAULT, candidates) == order


def _runs(variant, missed_b, seconds=100.0, alarms_a=0):
    return round_runs(variant, missed_b, range(130, 135), seconds, alarms_a)


def test_report_end_to_end_on_generated_runs(tmp_path):
    runs = (_runs(r10.DEFAULT, 3) + _runs(V2, 1) + _runs(V1, 0, seconds=500.0, alarms_a=2) + _runs(W4, 0))
    (tmp_path / "all.json").write_text(json.dumps({"runs": runs}))
    assert r10.main([str(tmp_path / "all.json"), "--out", str(tmp_path / "r10")]) == 0
    out = json.loads((tmp_path / "r10.json").read_text())
    assert out["default"]["line_b_errors"] == 15 and out["candidates"][2]["line_b_errors"] == 0
    # V1 makes 10 line-A errors more than the default (2 a seed): out; W4 makes fewer errors than V2
    assert out["ranking"] == [W4, V2] and out["winner"] == W4
    assert out["checks"][V1][f"line-A errors at most the default's + {r10.LINE_A_SLACK}"] is False
    md = (tmp_path / "r10.md").read_text()
    assert f"Decision: **{W4} becomes the default if it passes the time gate (else, in turn: {V2})**" in md
    assert "| 130 |" in md


def test_runs_on_other_seeds_are_refused(tmp_path):
    runs = _runs(r10.DEFAULT, 3) + [dict(r, seed=r["seed"] + 10) for r in _runs(V2, 1)] + _runs(V1, 0) + _runs(W4, 0)
    (tmp_path / "all.json").write_text(json.dumps({"runs": runs}))
    with pytest.raises(SystemExit, match="same seeds"):
        r10.main([str(tmp_path / "all.json"), "--out", str(tmp_path / "r10")])
