"""Line drift: the CUSUM limit, the reference from validation photos, and the monitor over a stream."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from inspectkit.drift import INDICATORS, DriftMonitor, cusum_limit, fit_reference
from inspectkit.guard import STATS


def photos(n: int, seed: int, brightness=0.5, sharpness=0.0, novelty=0.1, classes=2):
    """Image statistics, novelty and predicted classes of ``n`` photos of a steady line (or a shifted one)."""
    r = np.random.default_rng(seed)
    stats = np.zeros((n, len(STATS)))
    stats[:, STATS.index("brightness")] = brightness + r.normal(0, 0.03, n)
    stats[:, STATS.index("sharpness")] = sharpness + r.normal(0, 0.1, n)
    stats[:, STATS.index("framing")] = 0.9 + r.normal(0, 0.02, n)
    nov = novelty + np.abs(r.normal(0, 0.03, n))
    return stats, nov, r.integers(0, classes, n)


@pytest.fixture(scope="module")
def reference():
    stats, nov, pred = photos(800, seed=0)
    return fit_reference(stats, nov, pred)


def run(reference, stats, nov, pred):
    mon = DriftMonitor(reference)
    for k in range(len(nov)):
        mon.update(stats[k], nov[k], pred[k], row=k)
    return mon


def test_limit_grows_with_the_horizon_and_shrinks_with_the_budget():
    assert cusum_limit(0.1, horizon=2000) > cusum_limit(0.1, horizon=200)
    assert cusum_limit(0.1, rate=0.001) > cusum_limit(0.1, rate=0.1)
    assert cusum_limit(0.1) == cusum_limit(0.1)  # seeded: the same reference gives the same limit


def test_reference_holds_every_indicator_with_its_rate(reference):
    assert [i["name"] for i in reference["indicators"]] == [name for name, *_ in INDICATORS]
    for ind in reference["indicators"]:
        assert 0.05 <= ind["p0"] <= 0.15 and ind["h"] > 0 and set(ind["cuts"]) == {"0", "1"}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_steady_line_raises_no_alarm(reference, seed):
    mon = run(reference, *photos(900, seed))
    assert mon.state()["alarm"] is False and mon.state()["first_row"] is None
    assert mon.describe().startswith("no drift over 900")


@pytest.mark.parametrize("shift, indicator", [
    (dict(brightness=0.4), "darker"),
    (dict(brightness=0.6), "brighter"),
    (dict(sharpness=-0.3), "blur"),
    (dict(novelty=0.2), "novelty"),
])
def test_a_change_raises_the_alarm_soon_after_it_and_names_it(reference, shift, indicator):
    a = photos(300, seed=5)
    b = photos(300, seed=6, **shift)
    mon = run(reference, *(np.concatenate([x, y]) for x, y in zip(a, b)))
    st = mon.state()
    assert st["alarm"] and 300 <= st["first_row"] < 400
    assert indicator in [c["indicator"] for c in st["changed"]]
    changed = next(c for c in st["changed"] if c["indicator"] == indicator)
    assert changed["recent_rate"] > changed["reference_rate"]
    assert mon.describe().startswith(f"DRIFT ALARM from row {st['first_row']}")


def test_a_run_of_one_class_is_not_drift():
    """Tails are cut per predicted class: defects darker than good parts, walked class by class, are no change."""
    r = np.random.default_rng(0)
    n = 600
    pred = np.repeat([0, 1], n // 2)
    stats = np.zeros((n, len(STATS)))
    stats[:, STATS.index("brightness")] = np.where(pred == 0, 0.35, 0.6) + r.normal(0, 0.03, n)
    stats[:, STATS.index("sharpness")] = r.normal(0, 0.1, n)
    stats[:, STATS.index("framing")] = 0.9 + r.normal(0, 0.02, n)
    nov = np.abs(r.normal(0.1, 0.03, n))
    ref = fit_reference(stats, nov, pred)
    s2 = stats.copy()
    s2[:, STATS.index("brightness")] = np.where(pred == 0, 0.35, 0.6) + np.random.default_rng(1).normal(0, 0.03, n)
    assert not run(ref, s2, nov, pred).state()["alarm"]


def test_results_feed_the_monitor_and_bad_ones_are_skipped(reference):
    mon = DriftMonitor(reference)
    ok = {"image_stats": dict(zip(STATS, [0.5, 0.8, 0.1, 0.0, 0.0, 0.9])), "novelty": 0.1, "label": "b"}
    assert mon.add_result(ok, ["a", "b"]) is False
    assert mon.add_result({"image_stats": None, "novelty": None, "label": None}, ["a", "b"]) is False
    assert mon.state()["photos"] == 1
    mon.reset()
    assert mon.state()["photos"] == 0


def test_the_monitor_may_be_fed_from_several_threads(reference):
    stats, nov, pred = photos(400, seed=9, brightness=0.3)
    mon = DriftMonitor(reference)

    def feed(part):
        for k in part:
            mon.update(stats[k], nov[k], pred[k])

    threads = [threading.Thread(target=feed, args=(range(i, 400, 4),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    st = mon.state()
    assert st["photos"] == 400 and st["alarm"]
