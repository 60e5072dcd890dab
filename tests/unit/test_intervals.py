"""inspectkit.intervals: the Wilson score interval against hand computations and published values."""

from __future__ import annotations

import math

import pytest

from inspectkit.intervals import interval_text, rate, rate_text, report_intervals, wilson, z_of

Z90 = 1.6448536269514722  # the 95th percentile of the standard normal


def test_z_of_the_usual_levels():
    assert z_of(0.90) == pytest.approx(Z90, abs=1e-12)
    assert z_of(0.95) == pytest.approx(1.959963984540054, abs=1e-12)


def test_no_error_in_30_photos_allows_up_to_8_3_percent_at_90_percent():
    """k = 0: the interval is [0, z²/(n + z²)]; by hand 2.705543 / 32.705543 = 0.082724."""
    low, high = wilson(0, 30)
    assert low == 0.0
    assert high == pytest.approx(Z90 ** 2 / (30 + Z90 ** 2), abs=1e-12)
    assert high == pytest.approx(0.082724, abs=1e-6)


def test_all_30_right_is_at_least_91_7_percent_at_90_percent():
    """k = n: [n/(n + z²), 1]; by hand 30 / 32.705543 = 0.917276."""
    low, high = wilson(30, 30)
    assert high == 1.0 and low == pytest.approx(0.917276, abs=1e-6)
    assert rate_text(30, 30) == "100.0 % (90 % CI 91.7\u2013100, n=30)"


def test_half_of_30_by_the_formula():
    """p = 1/2: centre 1/2, half-width z/(1 + z²/n) · sqrt(1/(4n) + z²/(4n²)) = 0.143809."""
    low, high = wilson(15, 30)
    half = Z90 / (1 + Z90 ** 2 / 30) * math.sqrt(0.25 / 30 + Z90 ** 2 / (4 * 30 ** 2))
    assert half == pytest.approx(0.143809, abs=1e-6)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)


@pytest.mark.parametrize("k, n, low, high", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                             (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_published_95_percent_intervals(k, n, low, high):
    """Newcombe (1998), Statistics in Medicine 17:857, table II, method 3 (score interval without correction)."""
    assert wilson(k, n, level=0.95) == pytest.approx((low, high), abs=5e-5)


def test_large_n_is_close_to_the_normal_approximation():
    n, k = 100_000, 50_000
    low, high = wilson(k, n)
    half = Z90 * math.sqrt(0.25 / n)
    assert low == pytest.approx(0.5 - half, abs=1e-6) and high == pytest.approx(0.5 + half, abs=1e-6)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (3, 7), (6, 7), (1, 400), (399, 400)])
def test_the_interval_holds_the_rate_and_stays_in_0_1(k, n):
    low, high = wilson(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0 and low < high
    lo99, hi99 = wilson(k, n, level=0.99)
    assert lo99 <= low and hi99 >= high  # a higher level, a wider interval
    mirror = wilson(n - k, n)
    assert mirror == pytest.approx((1 - high, 1 - low), abs=1e-12)  # symmetric in success and failure


@pytest.mark.parametrize("k, n, message", [(0, 0, "at least one observation"), (3, 2, "between 0 and n"),
                                           (-1, 5, "between 0 and n"), (1.5, 4, "whole numbers")])
def test_nothing_measured_or_impossible_counts_are_refused(k, n, message):
    with pytest.raises(ValueError, match=message):
        wilson(k, n)


def test_levels_outside_0_1_are_refused():
    with pytest.raises(ValueError, match="level"):
        wilson(1, 2, level=1.0)


def test_rate_of_nothing_is_none_and_says_so():
    assert rate(0, 0) is None
    assert rate_text(0, 0) == "n/a (n=0)" and interval_text(None) == "no photos"
    r = rate(1, 15)
    assert r["k"] == 1 and r["n"] == 15 and r["rate"] == pytest.approx(1 / 15) and r["level"] == 0.90
    assert interval_text(r) == f"90 % CI {100 * r['low']:.1f}\u2013{100 * r['high']:.1f}, n=15"


def test_report_intervals_count_defects_and_ok_parts_separately():
    """Missed defects are a share of the defects, false alarms of the OK parts, accuracy of all photos."""
    report = {"n": 30, "accuracy": 27 / 30, "missed_defects": 2, "false_alarms": 1,
              "confusion_matrix": [[10, 2], [1, 17]]}  # rows: true class; defect class 0
    iv = report_intervals(report, defect_index=0)
    assert (iv["accuracy"]["k"], iv["accuracy"]["n"]) == (27, 30)
    assert (iv["missed_defects"]["k"], iv["missed_defects"]["n"]) == (2, 12)
    assert (iv["false_alarms"]["k"], iv["false_alarms"]["n"]) == (1, 18)
    assert iv["missed_defects"]["low"] == pytest.approx(wilson(2, 12)[0])
    no_defects = report_intervals({**report, "missed_defects": 0, "confusion_matrix": [[0, 0], [1, 29]]}, 0)
    assert no_defects["missed_defects"] is None and no_defects["false_alarms"]["n"] == 30
    assert set(report_intervals({"n": 3, "accuracy": 1.0, "confusion_matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]},
                                None)) == {"accuracy"}
    assert report_intervals({}, 0) == {}
