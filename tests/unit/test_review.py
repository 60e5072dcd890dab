"""The needs-review band (inspectkit/review.py): the rule on validation scores, its fallback, how it follows the
threshold, and the labelling order. Expected values are computed here from the stated rule with math, not copied
from the code's output."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspectkit import review as R


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@pytest.mark.parametrize("t", [0.05, 0.3, 0.5, 0.6027859742492625, 0.97])
@pytest.mark.parametrize("margin", [0.5, 2.0, 4.0])
def test_no_validation_errors_gives_margin_logits_either_side(t, margin):
    rng = np.random.default_rng(0)
    # every defect above t, every OK part below it: nothing to widen for
    is_def = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    scores = np.r_[rng.uniform(t, 1.0, 40), rng.uniform(0.0, t, 40) * 0.999]
    band = R.review_band(is_def, scores, t, margin=margin)
    assert band["low"] == pytest.approx(_sig(_logit(t) - margin), rel=1e-12)
    assert band["high"] == pytest.approx(_sig(_logit(t) + margin), rel=1e-12)
    assert 0.0 < band["low"] < t < band["high"] < 1.0
    assert band["threshold"] == t and band["source"] == "validation" and f"{margin:g} logits" in band["rule"]
    assert band["validation_errors"] == 0 and band["validation_errors_outside"] == 0
    # the count on validation is the number of scores within margin logits of t
    near = sum(abs(_logit(s) - _logit(t)) <= margin + 1e-12 for s in scores)
    assert band["validation_n"] == 80 and band["validation_in_band"] == near


@pytest.mark.parametrize("t, missed, alarm, margin, cap, low, high, outside", [
    # a missed defect inside the cap pulls the low edge down to its own score
    (0.5, 0.05, None, 2.0, 6.0, 0.05, _sig(2.0), 0),
    # a false alarm inside the cap pushes the high edge up to its own score
    (0.5, None, 0.97, 2.0, 6.0, _sig(-2.0), 0.97, 0),
    # both at once, around another threshold
    (0.3, 0.02, 0.95, 1.0, 6.0, 0.02, 0.95, 0),
    # errors already inside the margin band change nothing
    (0.5, 0.3, 0.7, 2.0, 6.0, _sig(-2.0), _sig(2.0), 0),
    # an error past the cap stops the edge at the cap and is counted as left outside
    (0.5, 1e-6, None, 2.0, 6.0, _sig(-6.0), _sig(2.0), 1),
    (0.5, None, 1 - 1e-6, 2.0, 3.0, _sig(-2.0), _sig(3.0), 1),
])
def test_validation_errors_widen_the_band_up_to_the_cap(t, missed, alarm, margin, cap, low, high, outside):
    is_def, scores = [True, False], [0.999, 0.001]  # two correct, confident images
    if missed is not None:
        is_def.append(True)
        scores.append(missed)
    if alarm is not None:
        is_def.append(False)
        scores.append(alarm)
    band = R.review_band(is_def, scores, t, margin=margin, max_margin=cap)
    assert band["low"] == pytest.approx(low, rel=1e-12) and band["high"] == pytest.approx(high, rel=1e-12)
    assert band["validation_errors"] == (missed is not None) + (alarm is not None)
    assert band["validation_errors_outside"] == outside
    for s, d in zip(scores, is_def):
        is_error = (s >= t) != d
        if is_error and not outside:
            assert R.in_band(s, band["low"], band["high"])  # every error within the cap is flagged


def test_the_rule_is_deterministic_and_ignores_the_order_of_images():
    rng = np.random.default_rng(3)
    is_def = rng.random(200) < 0.5
    scores = np.clip(np.where(is_def, rng.normal(0.8, 0.2, 200), rng.normal(0.2, 0.2, 200)), 0, 1)
    a = R.review_band(is_def, scores, 0.5)
    perm = rng.permutation(200)
    b = R.review_band(is_def[perm], scores[perm], 0.5)
    assert a == b == R.review_band(is_def, scores, 0.5)
    assert a["validation_errors"] > 0  # this data has errors, so the widening was exercised


@pytest.mark.parametrize("kwargs, message", [
    (dict(threshold=0.0), r"threshold 0.0 must be in \(0, 1\)"),
    (dict(threshold=1.0), r"threshold 1.0 must be in \(0, 1\)"),
    (dict(threshold="x"), "must be a number"),
    (dict(margin=-1.0), "margin -1.0"),
    (dict(margin=float("nan")), "margin nan"),
    (dict(margin=3.0, max_margin=2.0), "max_margin 2.0 must be at least margin 3.0"),
    (dict(scores=[0.2, 1.5]), r"probabilities in \[0, 1\]"),
    (dict(scores=[0.2]), "2 labels for 1 scores"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = dict(is_defect=[True, False], scores=[0.9, 0.1], threshold=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        R.review_band(**args)


@pytest.mark.parametrize("t", [1e-6, 0.2, 0.6027859742492625, 1 - 1e-6])
def test_fallback_is_the_rule_without_validation_data(t):
    fb = R.fallback_band(t)
    empty = R.review_band([], [], t)
    assert (fb["low"], fb["high"]) == (empty["low"], empty["high"])
    assert fb["source"] == "fallback" and "no band stored" in fb["rule"]
    assert fb["low"] == pytest.approx(_sig(_logit(t) - R.DEFAULT_MARGIN), rel=1e-9)
    assert 0.0 < fb["low"] <= t <= fb["high"] < 1.0


def test_band_for_checkpoint_stored_fallback_damaged_and_multiclass():
    stored = R.review_band([True, False, True], [0.9, 0.1, 0.02], 0.5)
    assert R.band_for_checkpoint({"defect_index": 0, "threshold": 0.5, "review_band": stored}) == stored
    fb = R.band_for_checkpoint({"defect_index": 0, "threshold": 0.4})
    assert fb == R.fallback_band(0.4)
    damaged = {**stored, "low": 0.7}  # no longer contains its threshold
    assert R.band_for_checkpoint({"defect_index": 0, "threshold": 0.5, "review_band": damaged}) == R.fallback_band(0.5)
    assert R.band_for_checkpoint({"defect_index": None, "threshold": None}) is None


@pytest.mark.parametrize("new_t", [0.1, 0.5, 0.75, 0.99])
def test_band_moves_with_the_threshold_keeping_its_logit_distances(new_t):
    band = R.review_band([True, False], [0.03, 0.1], 0.4)  # one missed defect: the band is lopsided
    below = _logit(0.4) - _logit(band["low"])
    above = _logit(band["high"]) - _logit(0.4)
    assert below > above  # widened below only
    low, high = R.band_at(band, new_t)
    assert _logit(new_t) - _logit(low) == pytest.approx(below, rel=1e-9)
    assert _logit(high) - _logit(new_t) == pytest.approx(above, rel=1e-9)
    assert R.band_at(band) == (band["low"], band["high"]) == R.band_at(band, 0.4)  # its own threshold: exact


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_the_sliders_end_points_give_a_band_inside_0_1(t):
    low, high = R.band_at(R.fallback_band(0.5), t)
    assert 0.0 < low <= high < 1.0
    assert R.symmetric_band(t, 2.0)[0] > 0.0


def test_symmetric_band_and_in_band():
    low, high = R.symmetric_band(0.5, 0.0)
    assert low == high == 0.5 and R.in_band(0.5, low, high) and not R.in_band(0.5001, low, high)
    low, high = R.symmetric_band(0.5, 1.0)
    assert list(R.in_band([low, high, low - 1e-9, high + 1e-9], low, high)) == [True, True, False, False]


def test_review_order_is_closest_to_the_threshold_first():
    t = 0.6
    probs = [0.99, None, 0.55, 0.1, 0.6, 0.7, 1.0, 0.0]
    order = R.review_order(probs, t)
    assert 1 not in order and len(order) == 7
    dist = [abs(_logit(min(max(probs[i], 1e-12), 1 - 1e-12)) - _logit(t)) for i in order]
    assert dist == sorted(dist) and order[0] == 4  # p == t: nothing is closer
    assert R.review_order([None, None], t) == []
    assert R.review_order([0.3, 0.3, 0.3], t) == [0, 1, 2]  # ties keep their order
    assert R.uncertainty(0.5, 0.5) == 0.0 and R.uncertainty(_sig(1.5), 0.5) == pytest.approx(1.5)
