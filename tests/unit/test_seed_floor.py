"""benchmarks/seed_floor.py: the per-seed floor's chances, against exact sums and on generated curves."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import seed_floor as sf


@pytest.mark.parametrize("n, floor, most", [(260, 0.94, 15), (650, 0.94, 39), (100, 0.94, 6), (50, 0.9, 5),
                                            (10, 0.5, 5)])
def test_most_errors_is_the_last_count_that_still_reaches_the_floor(n, floor, most):
    assert sf.most_errors(n, floor) == most
    assert (n - most) / n >= floor > (n - most - 1) / n


@pytest.mark.parametrize("n, p, k", [(10, 0.1, 2), (30, 0.05, 0), (60, 0.5, 30), (260, 0.04, 15), (5, 0.9, 4)])
def test_the_binomial_tail_is_the_sum_of_the_probabilities_above_k(n, p, k):
    want = sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k + 1, n + 1))
    assert sf.binomial_tail(n, p, k) == pytest.approx(want, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("p, k, want", [(0.0, 0, 0.0), (1.0, 3, 1.0), (1.0, 10, 0.0)])
def test_the_binomial_tail_at_the_edges(p, k, want):
    assert sf.binomial_tail(10, p, k) == want


def test_without_a_between_draw_spread_a_seed_is_below_as_often_as_its_photos_say():
    assert sf.p_below(0.96, 0.0, 260, 0.94) == pytest.approx(sf.binomial_tail(260, 0.04, 15))


@pytest.mark.parametrize("mean", [0.96, 0.975])
def test_a_wider_spread_between_draws_puts_more_seeds_below_a_floor_under_the_mean(mean):
    chances = [sf.p_below(mean, s, 260, 0.94) for s in (0.0, 0.005, 0.01, 0.02)]
    assert chances == sorted(chances) and chances[-1] > chances[0]


def test_the_mean_needed_falls_with_more_photos_and_rises_with_more_seeds():
    few, many = sf.mean_needed(0.009, 260, 8, 0.94), sf.mean_needed(0.009, 650, 8, 0.94)
    assert many < few
    assert sf.mean_needed(0.009, 260, 2, 0.94) < few
    # at the needed mean the goal holds 9 times in 10; 0.05 points lower it does not
    assert (1 - sf.p_below(few, 0.009, 260, 0.94)) ** 8 >= 0.9 > (1 - sf.p_below(few - 0.0005, 0.009, 260, 0.94)) ** 8


def _curve(accs: list[float], n: int = 200, per_class: int = 50) -> dict:
    return {"command": "generated", "runs": [
        {"seed": 300 + i, "per_class": per_class, "adapted": {"line_rest": {"accuracy": a, "n": n}}}
        for i, a in enumerate(accs)]}


def test_a_curve_spread_no_wider_than_its_photos_allow_has_no_between_draw_part():
    m = sf.curve_model(_curve([0.95] * 6), 50, 0.94, (5, 650))
    assert m["sd"] == pytest.approx(0, abs=1e-12) and m["sd_between"] == 0 and m["below"] == 0
    assert m["sd_binomial"] == pytest.approx(math.sqrt(0.95 * 0.05 / 200))
    assert m["p_none_below"] == pytest.approx((1 - sf.binomial_tail(200, 0.05, 12)) ** 6)


def test_a_wide_curve_keeps_its_excess_spread_as_between_draws():
    accs = [0.93, 0.99, 0.96, 0.98, 0.955, 0.985]
    m = sf.curve_model(_curve(accs), 50, 0.94, (5, 650))
    assert m["sd_between"] > 0
    assert m["sd_between"] ** 2 == pytest.approx(m["sd"] ** 2 - m["sd_binomial"] ** 2)
    assert m["below"] == 1 and m["lowest"] == 0.93 and m["seeds"] == list(range(300, 306))
    assert m["sealed"]["p_seed_below"] < m["p_seed_below"]  # more photos a draw: less of the luck of the photos


def test_end_to_end_writes_both_tables(tmp_path):
    for name, accs in (("a", [0.95, 0.97, 0.96]), ("b", [0.93, 0.99, 0.96, 0.97])):
        (tmp_path / f"{name}.json").write_text(json.dumps(_curve(accs)))
    assert sf.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "sf")]) == 0
    out = json.loads((tmp_path / "sf.json").read_text())
    assert [c["curve"] for c in out["curves"]] == ["a", "b"] and out["floor"] == 0.94
    md = (tmp_path / "sf.md").read_text()
    assert "| a | 3 | 200 | 96.00 % |" in md and "| b | 4 | 200 |" in md and "(5 draws, 650 photos each)" in md


@pytest.mark.parametrize("accs, per_class", [([0.95], 50), ([0.95, 0.96], 25)])
def test_a_curve_without_two_seeds_at_the_size_is_refused(tmp_path, accs, per_class):
    with pytest.raises(SystemExit, match="at least 2 are needed"):
        sf.curve_model(_curve(accs, per_class=per_class), 50, 0.94, (5, 650))
