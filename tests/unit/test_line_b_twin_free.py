"""benchmarks/line_b_twin_free.py: figures split by whether a photo has a twin in the other line."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.line_b_twin_free import by_twin, figures


@pytest.mark.parametrize("threshold, right, missed, alarms", [(0.5, 4, 1, 1), (0.05, 4, 0, 2), (0.95, 2, 3, 1)])
def test_figures_count_at_the_threshold(threshold, right, missed, alarms):
    y = np.array([True, True, True, False, False, False])
    s = np.array([0.9, 0.6, 0.1, 0.2, 0.97, 0.04])
    r = figures(y, s, threshold)
    assert (r["n"], r["defects"], r["right"], r["missed_defects"], r["false_alarms"]) == (6, 3, right, missed, alarms)
    assert r["accuracy"] == pytest.approx(right / 6)
    low, high = r["accuracy_interval"]["low"], r["accuracy_interval"]["high"]
    assert low < right / 6 < high or right == 6


def test_by_twin_splits_the_same_photos_into_two_parts():
    files = [f"def_front/{i}.jpeg" for i in range(3)] + [f"ok_front/{i}.jpeg" for i in range(3)]
    twin = dict(zip(files, [True, False, False, True, False, True]))
    y = np.array([True] * 3 + [False] * 3)
    s = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.1])
    r = by_twin(files, y, s, 0.5, twin)
    assert r["twin"]["n"] + r["twin-free"]["n"] == r["all"]["n"] == 6
    assert r["twin"]["right"] + r["twin-free"]["right"] == r["all"]["right"] == 4
    assert (r["twin"]["missed_defects"], r["twin"]["false_alarms"]) == (0, 1)  # the twins: 0.9 right, 0.7 an alarm
    assert (r["twin-free"]["missed_defects"], r["twin-free"]["false_alarms"]) == (1, 0)


def test_no_photo_in_a_group_gives_no_accuracy():
    r = figures(np.zeros(0, bool), np.zeros(0), 0.5)
    assert r["n"] == 0 and "accuracy" not in r


def test_auc_is_given_only_where_both_classes_are():
    both = figures(np.array([True, False, True]), np.array([0.9, 0.2, 0.4]), 0.5)
    assert both["roc_auc"] == pytest.approx(1.0)
    assert "roc_auc" not in figures(np.array([True, True]), np.array([0.9, 0.2]), 0.5)
