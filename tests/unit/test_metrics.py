"""Threshold selection and metrics on constructed scores whose answers are known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from inspectkit import metrics as M


@pytest.mark.parametrize("target", [0.9, 0.95, 0.995, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_meets_recall_target_with_lowest_false_alarms(target, seed):
    r = np.random.default_rng(seed)
    y = np.r_[np.ones(400, bool), np.zeros(300, bool)]
    s = np.r_[r.beta(5, 2, 400), r.beta(2, 5, 300)]
    c = M.choose_threshold(y, s, target)
    recall = (s[y] >= c["threshold"]).mean()
    assert recall >= target and recall == pytest.approx(c["recall"])
    # any higher threshold that still met the target would not lower the false-alarm rate
    for t in np.unique(s):
        if t > c["threshold"] and (s[y] >= t).mean() >= target:
            assert (s[~y] >= t).mean() >= c["false_alarm_rate"]


def test_threshold_on_separable_scores_falls_in_the_gap():
    y = np.array([1, 1, 1, 0, 0, 0], bool)
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    c = M.choose_threshold(y, s, 1.0)
    assert 0.3 < c["threshold"] < 0.7 and c["false_alarm_rate"] == 0.0 and c["recall"] == 1.0


@pytest.mark.parametrize("target", [0.5, 0.75, 1.0])
def test_threshold_keeps_every_defect_that_costs_no_false_alarm(target):
    # the two lowest defects sit far below the others but still above every OK image: catching them is free
    y = np.array([1, 1, 1, 1, 0, 0, 0], bool)
    s = np.array([0.999, 0.998, 0.40, 0.35, 0.10, 0.05, 0.01])
    c = M.choose_threshold(y, s, target)
    assert c["recall"] == 1.0 and c["false_alarm_rate"] == 0.0
    assert 0.10 < c["threshold"] < 0.35


def test_threshold_stops_where_the_next_defect_would_cost_a_false_alarm():
    y = np.array([1, 1, 1, 0, 1, 0, 0], bool)
    s = np.array([0.95, 0.90, 0.80, 0.60, 0.30, 0.20, 0.10])
    c = M.choose_threshold(y, s, 0.75)
    # catching the 0.30 defect would also flag the 0.60 OK image, so the target (3 of 4) is kept without it
    assert c["recall"] == 0.75 and c["false_alarm_rate"] == 0.0 and 0.60 < c["threshold"] < 0.80


def test_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="both defect and OK"):
        M.choose_threshold(np.ones(4, bool), np.ones(4), 0.99)


def test_roc_auc_equals_pairwise_count():
    r = np.random.default_rng(0)
    y = r.random(60) < 0.4
    s = np.round(r.random(60), 1)  # many ties
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[y], s[~y])]
    assert M.roc_auc(y, s) == pytest.approx(np.mean(pairs))


def test_report_counts_misses_and_false_alarms():
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 0, 1, 1])
    r = M.classification_report(y, probs, ["def", "ok"], 0, 0.5)
    assert r["missed_defects"] == 1 and r["false_alarms"] == 1 and r["accuracy"] == 0.5
    assert r["confusion_matrix"] == [[1, 1], [1, 1]]
    assert r["per_class"]["def"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}


def test_sweep_covers_005_to_095():
    s = M.threshold_sweep(np.array([1, 0], bool), np.array([0.7, 0.2]))
    assert [r["threshold"] for r in s] == [round(0.05 * i, 2) for i in range(1, 20)]
    assert s[0]["false_alarms"] == 1 and s[-1]["missed_defects"] == 1


def test_weighted_log_loss_known_answers():
    probs = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    y = np.array([0, 0, 1])
    nll = -np.log([0.5, 0.9, 0.8])
    assert M.weighted_log_loss(y, probs, [1, 1]) == pytest.approx(nll.mean())
    assert M.weighted_log_loss(y, probs, [1, 3]) == pytest.approx((nll[0] + nll[1] + 3 * nll[2]) / 5)
    assert M.weighted_log_loss(np.array([0]), np.array([[0.0, 1.0]]), [1, 1]) == pytest.approx(-np.log(1e-12))
    with pytest.raises(ValueError, match="at least one sample"):
        M.weighted_log_loss(np.array([], dtype=int), np.zeros((0, 2)), [1, 1])


@pytest.mark.parametrize("defect_index", [0, 1])
def test_recall_weighted_loss_counts_a_missed_defect_beta_squared_times(defect_index):
    ok = 1 - defect_index
    probs = np.zeros((2, 2))
    probs[0, defect_index], probs[0, ok] = 0.3, 0.7  # a defect scored low
    probs[1, defect_index], probs[1, ok] = 0.3, 0.7  # an OK image scored just as confidently right
    y = np.array([defect_index, ok])
    loss = M.recall_weighted_loss(y, probs, defect_index, beta=2.0)
    assert loss == pytest.approx((4 * -np.log(0.3) + -np.log(0.7)) / 5)
    # the same mistake on the OK side costs less: the metric favours defect recall
    swapped = M.recall_weighted_loss(y, probs[:, ::-1].copy(), defect_index, beta=2.0)
    assert swapped < loss


@pytest.mark.parametrize("defect_index", [None, 0, 2])
def test_selection_loss_weighs_defects_only_when_there_is_a_defect_class(defect_index):
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.6, 0.2, 0.2], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]])
    nll = -np.log(probs[np.arange(4), y])
    w = np.ones(4) if defect_index is None else np.where(y == defect_index, 4.0, 1.0)
    assert M.selection_loss(y, probs, defect_index) == pytest.approx((w * nll).sum() / w.sum())
