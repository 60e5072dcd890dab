"""Adaptation round 9's rule (benchmarks/adapt_round9.py), on generated run summaries and generated runs."""

from __future__ import annotations

import json

import pytest

from benchmarks import adapt_round9 as r9
from tests.support import round_runs
from tests.support import round_summary as summary

DEFAULT = summary(r9.DEFAULT, 130, 30)


@pytest.mark.parametrize("candidates, winner", [
    ([summary("third-dw2", 125, 30)], r9.DEFAULT),  # 5 fewer line-B errors: not enough
    ([summary("third-dw2", 120, 30)], "third-dw2"),  # exactly 10 fewer
    ([summary("third-dw2", 100, 36)], r9.DEFAULT),  # line A: one error over the slack
    ([summary("third-dw2", 100, 35)], "third-dw2"),  # ... at the slack
    ([summary("third-dw2", 100, 30, seconds=106)], r9.DEFAULT),  # too slow
    ([summary("third-dw2", 115, 30), summary("third-dw4", 110, 30)], "third-dw4"),  # fewer errors on both lines
    ([summary("third-dw2", 115, 30), summary("third-dw4", 110, 35)], "third-dw2"),  # 145 against 145: the first
    ([summary("third-dw2", 125, 30), summary("third-dw8", 90, 40)], r9.DEFAULT),  # neither qualifies
])
def test_the_rule_picks_the_qualifying_candidate_with_fewest_errors(candidates, winner):
    assert r9.decide(DEFAULT, candidates) == winner


def _runs(variant, missed_b, seconds):
    return round_runs(variant, missed_b, range(120, 125), seconds)


def test_report_end_to_end_on_generated_runs(tmp_path):
    runs = (_runs(r9.DEFAULT, 3, 100.0) + _runs("third-dw2", 2, 101.0) + _runs("third-dw4", 1, 102.0)
            + _runs("third-dw8", 0, 200.0))
    (tmp_path / "all.json").write_text(json.dumps({"runs": runs}))
    assert r9.main([str(tmp_path / "all.json"), "--out", str(tmp_path / "r9")]) == 0
    out = json.loads((tmp_path / "r9.json").read_text())
    assert out["default"]["line_b_errors"] == 15 and out["candidates"][1]["line_b_errors"] == 5
    assert out["winner"] == "third-dw4"  # dw8 makes fewer errors but takes twice the time
    assert out["checks"]["third-dw2"][f"line-B errors at least {r9.FEWER_LINE_B} fewer"] is False
    md = (tmp_path / "r9.md").read_text()
    assert "Decision: **third-dw4 becomes the default**" in md and "| 120 |" in md
