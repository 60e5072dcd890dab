"""Line drift over a stream of photos: a Bernoulli CUSUM per indicator against the model's validation reference.

Each photo gives a few yes/no indicators, each "beyond the validation photos' 10 % tail" of one statistic:
novelty (less like the training photos), brightness (darker, brighter), sharpness (less sharp) and framing
(framed unlike the training photos). The tails are cut per predicted class, so a run of defects (a folder walked
class by class) is not drift. On a steady line each indicator is true for about ``p0`` of the photos (measured on
validation); a CUSUM (Page 1954) of the log-likelihood ratio of ``p1`` against ``p0`` rises when the indicator
is true more often and raises the alarm when it passes ``h``. ``h`` is set so that a steady line of
:data:`FALSE_ALARM_HORIZON` photos alarms on any indicator with a probability under :data:`FALSE_ALARM_RATE`
(simulated once, seeded), and a line that changes for every photo alarms within a dozen.

The reference is fitted with the guard (:func:`fit_reference`) and stored in it; :class:`DriftMonitor` follows one
stream (a batch job, the Inspect tab, the HTTP server's recent requests).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping

import numpy as np

#: The image statistics the guard measures on every photo (:func:`inspectkit.guard.image_stats`), in the order of its
#: arrays; the drift indicators read them by name.
STATS = ("brightness", "highlights", "shadows", "clipped", "sharpness", "framing")

#: (indicator, statistic, side, what it means when the alarm fires)
INDICATORS = (
    ("novelty", "novelty", "high", "photos less like the training photos (novelty up)"),
    ("darker", "brightness", "low", "darker photos"),
    ("brighter", "brightness", "high", "brighter photos"),
    ("blur", "sharpness", "low", "less sharp photos (focus or motion blur)"),
    ("framing", "framing", "low", "the part framed or placed unlike the training photos"),
)
TAIL = 0.10
P1 = 0.5
FALSE_ALARM_HORIZON = 2000
FALSE_ALARM_RATE = 0.005
#: Photos in the recent window the monitor reports rates over.
WINDOW = 100


def _stat_column(name: str) -> int:
    return STATS.index(name)


def cusum_limit(p0: float, p1: float = P1, horizon: int = FALSE_ALARM_HORIZON, rate: float = FALSE_ALARM_RATE,
                runs: int = 2000, seed: int = 0) -> float:
    """The CUSUM limit ``h`` at which iid Bernoulli(``p0``) indicators cross it within ``horizon`` photos in at most
    ``rate`` of ``runs`` simulated streams (seeded: the same reference gives the same limit)."""
    up, down = np.log(p1 / p0), np.log((1 - p1) / (1 - p0))
    rng = np.random.default_rng(seed)
    s = np.zeros(runs)
    peak = np.zeros(runs)
    for _ in range(horizon):
        s = np.maximum(0.0, s + np.where(rng.random(runs) < p0, up, down))
        np.maximum(peak, s, out=peak)
    return float(np.quantile(peak, 1 - rate)) + 1e-6


def fit_reference(val_stats: np.ndarray, val_novelty: np.ndarray, val_predicted: np.ndarray | None = None,
                  tail: float = TAIL) -> dict:
    """The drift reference from the validation photos' image statistics (N x len(STATS)), novelty (N) and predicted
    class (N; None: one class). Per indicator and class the cut at the ``tail`` quantile, the measured rate ``p0``
    beyond it and the CUSUM limit; plus the false-alarm budget it was set for."""
    stats = np.asarray(val_stats, dtype=np.float64)
    nov = np.asarray(val_novelty, dtype=np.float64)
    pred = np.zeros(len(nov), dtype=int) if val_predicted is None else np.asarray(val_predicted, dtype=int)
    classes = sorted(set(pred.tolist()))
    out = []
    for name, stat, side, meaning in INDICATORS:
        col = nov if stat == "novelty" else stats[:, _stat_column(stat)]
        cuts = {}
        for c in classes:
            v = col[(pred == c) & np.isfinite(col)]
            if len(v) == 0:
                continue
            cuts[str(c)] = float(np.quantile(v, 1 - tail if side == "high" else tail))
        if not cuts:
            continue
        hit = _indicator(col, pred, cuts, side)
        p0 = float(np.clip(hit.mean(), 0.02, 0.3))
        out.append({"name": name, "stat": stat, "side": side, "meaning": meaning, "cuts": cuts, "p0": p0,
                    "h": cusum_limit(p0)})
    return {"indicators": out, "p1": P1, "horizon": FALSE_ALARM_HORIZON, "false_alarm_rate": FALSE_ALARM_RATE}


def _indicator(col: np.ndarray, pred: np.ndarray, cuts: Mapping, side: str) -> np.ndarray:
    cut = np.array([cuts.get(str(int(p)), np.nan) for p in pred], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (col > cut) if side == "high" else (col < cut)


class DriftMonitor:
    """Follows one stream of judged photos and raises the drift alarm (thread-safe).

    ``update(stats, novelty, predicted, row)`` for each photo the network saw (UNUSABLE ones included: a failing
    lamp is drift too); ``state()`` says whether the alarm fired, at which row first, and what changed.
    """

    def __init__(self, reference: Mapping, window: int = WINDOW):
        self.reference = reference
        self.indicators = list(reference["indicators"])
        self.p1 = float(reference.get("p1", P1))
        self.window = int(window)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start over (a new stream): no photos, no alarm."""
        with self._lock:
            self._s = np.zeros(len(self.indicators))
            self._recent: deque = deque(maxlen=self.window)
            self._fired: dict[str, int] = {}
            self._first_row: int | None = None
            self._photos = 0

    def add_result(self, result, class_names: list[str], row: int | None = None) -> bool:
        """:meth:`update` from an InspectionResult (or its dict): its ``image_stats``, ``novelty`` and ``label``.
        A result without them (an undecodable photo, a model without a guard) is skipped; returns the alarm."""
        get = result.get if isinstance(result, dict) else (lambda k: getattr(result, k, None))
        stats, novelty, label = get("image_stats"), get("novelty"), get("label")
        if stats is None or novelty is None or label not in class_names:
            with self._lock:
                return self._first_row is not None
        return self.update(stats, float(novelty), class_names.index(label), row)

    def update(self, stats, novelty: float, predicted: int, row: int | None = None) -> bool:
        """Add one photo; returns whether the alarm is on after it. ``stats``: its image statistics (an array in
        the order of ``STATS``, or a dict by name); ``predicted``: the class index the network
        gave; ``row``: its place in the input (default: the count of photos so far)."""
        if isinstance(stats, dict):
            stats = [stats.get(name, np.nan) for name in STATS]
        stats = np.asarray(stats, dtype=np.float64)
        hits = np.zeros(len(self.indicators), dtype=bool)
        for k, ind in enumerate(self.indicators):
            v = float(novelty) if ind["stat"] == "novelty" else float(stats[_stat_column(ind["stat"])])
            hits[k] = bool(_indicator(np.array([v]), np.array([int(predicted)]), ind["cuts"], ind["side"])[0])
        with self._lock:
            row = self._photos if row is None else int(row)
            self._photos += 1
            self._recent.append(hits)
            for k, ind in enumerate(self.indicators):
                p0 = ind["p0"]
                step = np.log(self.p1 / p0) if hits[k] else np.log((1 - self.p1) / (1 - p0))
                self._s[k] = max(0.0, self._s[k] + step)
                if self._s[k] >= ind["h"] and ind["name"] not in self._fired:
                    self._fired[ind["name"]] = row
                    if self._first_row is None:
                        self._first_row = row
            return self._first_row is not None

    def state(self) -> dict:
        """``alarm``, ``first_row`` (the row at which it first fired, or None), ``photos``, and ``changed``: for each
        indicator that fired, what it means, the row, its rate over the last ``window`` photos and the reference's."""
        with self._lock:
            recent = np.array(self._recent) if self._recent else np.zeros((0, len(self.indicators)), bool)
            changed = []
            for k, ind in enumerate(self.indicators):
                if ind["name"] in self._fired:
                    changed.append({"indicator": ind["name"], "meaning": ind["meaning"],
                                    "first_row": self._fired[ind["name"]],
                                    "recent_rate": round(float(recent[:, k].mean()), 3) if len(recent) else None,
                                    "reference_rate": round(float(ind["p0"]), 3)})
            return {"alarm": self._first_row is not None, "first_row": self._first_row, "photos": self._photos,
                    "window": len(recent), "changed": changed}

    def describe(self) -> str:
        """One line for a summary: 'no drift over N photos' or 'DRIFT from row R: ...'."""
        st = self.state()
        if not st["alarm"]:
            return f"no drift over {st['photos']} photos"
        what = "; ".join(f"{c['meaning']} ({c['recent_rate']:.0%} of the last {st['window']} photos against "
                         f"{c['reference_rate']:.0%} on validation)" for c in st["changed"])
        return f"DRIFT ALARM from row {st['first_row']}: {what}"
