"""Adaptation round 11 (benchmarks/adapt_round11.py): round 10's rule with round 10's winner as the default and the
wider augmentations as candidates, end to end on generated runs."""

from __future__ import annotations

import json

import pytest

from benchmarks import adapt_round11 as r11
from benchmarks.adapt_variants import VARIANTS
from tests.support import round_runs

ROT, AUG, BOTH = r11.CANDIDATES


def _runs(variant, missed_b, alarms_a=0):
    return round_runs(variant, missed_b, range(140, 145), 100.0, alarms_a)


def test_the_round_compares_round_10s_winner_with_wider_views_only():
    base = VARIANTS[r11.DEFAULT]
    for name in r11.CANDIDATES:
        changed = {k for k in set(base) | set(VARIANTS[name]) if base.get(k) != VARIANTS[name].get(k)}
        assert changed <= {"aug_rotation", "aug_strength"} and changed, name
    assert VARIANTS[ROT]["aug_rotation"] == 180 and VARIANTS[AUG]["aug_strength"] == 1.5


@pytest.mark.parametrize("missed, alarms, winner, decision", [
    ({ROT: 1, AUG: 1, BOTH: 1}, {}, ROT, f"{ROT} becomes the default if it passes the time gate (else, in turn: "
                                          f"{AUG}, {BOTH})"),  # a three-way tie: the protocol's order
    ({ROT: 3, AUG: 1, BOTH: 0}, {BOTH: 2}, AUG, None),  # BOTH forgets 10 line-A photos more than the default: out
    ({ROT: 3, AUG: 3, BOTH: 2}, {}, None, f"{r11.DEFAULT} (round 10's recipe) stays"),  # 5 fewer: not enough
])
def test_report_end_to_end_on_generated_runs(tmp_path, missed, alarms, winner, decision):
    runs = _runs(r11.DEFAULT, 3) + [r for c in r11.CANDIDATES for r in _runs(c, missed[c], alarms.get(c, 0))]
    (tmp_path / "all.json").write_text(json.dumps({"runs": runs}))
    assert r11.main([str(tmp_path / "all.json"), "--out", str(tmp_path / "r11")]) == 0
    out = json.loads((tmp_path / "r11.json").read_text())
    assert out["winner"] == (winner or r11.DEFAULT)
    md = (tmp_path / "r11.md").read_text()
    assert md.startswith("# Adaptation round 11") and "(adapt_round11_protocol.md)" in md and "| 144 |" in md
    if decision:
        assert f"Decision: **{decision}**" in md
