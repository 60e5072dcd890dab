"""The "needs review" band: the defect probabilities close enough to the decision threshold that a person should
look at the part, and the order in which to label a batch (most uncertain first). numpy only, like metrics.py,
so the app and the ONNX path never need torch for it.

The band is kept in logit space, where "how far from the threshold" means the same at every threshold: a margin
of ``m`` logits is a factor ``e**m`` in the odds of a defect. A band is a plain dict of floats, ints and strings
(so a checkpoint that stores it still loads with ``weights_only=True``)::

    {"threshold": 0.6028, "low": 0.171, "high": 0.918, "margin": 2.0, "max_margin": 6.0,
     "source": "validation", "rule": "...", "validation_n": 996, "validation_in_band": 3, ...}

``low``/``high`` belong to ``threshold`` (the threshold the band was derived around). When another threshold is
in force (the app's slider, the API's ``threshold``), the band *moves with it*: its logit distances below and
above the threshold are kept (:func:`band_at`). Why: the band marks the images whose verdict a small change
of evidence would flip, and those are the images near the threshold in force, not near a threshold nobody uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: Half-width of the band in logits, either side of the threshold: a factor e**2 ~ 7.4 in the odds of a defect.
#: At t = 0.5 the band is 0.12..0.88, so a calibrated model is at least ~88 % sure of every verdict it does not
#: flag; at the committed model's t = 0.6028 it is 0.171..0.918. Chosen a priori (not tuned on any split); the
#: app's slider and the API's ``review_margin`` change it.
DEFAULT_MARGIN = 2.0
#: The band is widened to take in validation errors, but never past this many logits either side: one wild error
#: (a defect at p = 0.001) would otherwise flag nearly every part. At t = 0.5 this is 0.0025..0.9975.
MAX_MARGIN = 6.0
#: Band edges stay inside (0, 1): probabilities are clipped this far from 0 and 1 before taking logits.
EPS = 1e-12

RULE = ("band = [sigmoid(logit(t) - m), sigmoid(logit(t) + m)] with m = {margin:g} logits, widened on each side "
        "to take in every validation error at t (a missed defect lowers the low edge to its score, a false alarm "
        "raises the high edge to its score), never past {max_margin:g} logits from t")
FALLBACK_RULE = ("band = [sigmoid(logit(t) - m), sigmoid(logit(t) + m)] with m = {margin:g} logits around the "
                 "checkpoint's threshold (no band stored in the checkpoint, so no validation errors were taken in)")


def logit(p: Any) -> Any:
    """log(p / (1 - p)), with p clipped to [EPS, 1 - EPS] so that p = 0 or 1 (softmax rounds to them) is finite."""
    q = np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0 - EPS)
    z = np.log(q) - np.log1p(-q)
    return float(z) if z.ndim == 0 else z


def sigmoid(z: Any) -> Any:
    """1 / (1 + exp(-z)), stable for large |z|."""
    z = np.asarray(z, dtype=np.float64)
    out = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
    return float(out) if out.ndim == 0 else out


def _check_threshold(threshold: Any, strict: bool = False) -> float:
    """The threshold as a float in [EPS, 1 - EPS]: the app's slider reaches 0 and 1, where logits are infinite (at
    those thresholds every verdict is the same, and the band shrinks to almost nothing at that end). ``strict``:
    only (0, 1), for a threshold a band is derived around and stored with."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold {threshold!r} must be a number in [0, 1]") from None
    if not (0.0 < t < 1.0 if strict else 0.0 <= t <= 1.0):
        raise ValueError(f"threshold {threshold!r} must be in {'(0, 1)' if strict else '[0, 1]'}")
    return min(max(t, EPS), 1.0 - EPS)


def _check_margin(margin: Any, name: str = "margin") -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {margin!r} must be a number of logits >= 0") from None
    if not np.isfinite(m) or m < 0:
        raise ValueError(f"{name} {margin!r} must be a finite number of logits >= 0")
    return m


def _edges(t: float, below: float, above: float) -> tuple[float, float]:
    """(low, high) at ``below``/``above`` logits from t, inside (0, 1) and never on the wrong side of t."""
    z = logit(t)
    low = min(max(sigmoid(z - below), EPS), t)
    high = max(min(sigmoid(z + above), 1.0 - EPS), t)
    return float(low), float(high)


def symmetric_band(threshold: float, margin: float = DEFAULT_MARGIN) -> tuple[float, float]:
    """(low, high) = ``margin`` logits either side of ``threshold``; margin 0 gives (t, t): only p == t flagged."""
    return _edges(_check_threshold(threshold), _check_margin(margin), _check_margin(margin))


def review_band(is_defect: Sequence, scores: Sequence, threshold: float, margin: float = DEFAULT_MARGIN,
                max_margin: float = MAX_MARGIN) -> dict:
    """The needs-review band derived on validation.

    Rule (deterministic, no fitting): start from ``margin`` logits either side of ``threshold`` (t), i.e.
    ``[sigmoid(logit(t) - margin), sigmoid(logit(t) + margin)]``; then widen each side just enough to take in
    every validation error at t (a defect scored below t lowers ``low`` to its score, an OK part scored at or above
    t raises ``high`` to its score), but never past ``max_margin`` logits from t. Errors beyond that cap stay
    outside and are counted in ``validation_errors_outside``. The band therefore covers every validation image
    within ``margin`` logits of the threshold and every validation error within ``max_margin`` of it, always
    contains t and lies inside (0, 1). ``p`` needs review when ``low <= p <= high``.

    ``is_defect``: true labels (bool per image); ``scores``: p(defect) per image. Empty arrays give the plain
    ``margin`` band. Returns a dict of floats, ints and strings (see the module docstring) with the counts
    measured on validation: images in the band, errors, errors left outside.
    """
    t = _check_threshold(threshold, strict=True)
    m, cap = _check_margin(margin), _check_margin(max_margin, "max_margin")
    if cap < m:
        raise ValueError(f"max_margin {max_margin!r} must be at least margin {margin!r}")
    y = np.asarray(is_defect).astype(bool).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{len(y)} labels for {len(s)} scores")
    if s.size and (not np.all(np.isfinite(s)) or (s < 0).any() or (s > 1).any()):
        raise ValueError("scores must be probabilities in [0, 1]")
    low, high = _edges(t, m, m)
    floor, ceiling = _edges(t, cap, cap)
    missed, alarms = s[y & (s < t)], s[~y & (s >= t)]
    # The band's edges move to the error's score itself (not through logit/sigmoid), so that the error is inside
    # the inclusive band exactly, without a rounding step in between.
    if missed.size:
        low = max(min(low, float(missed.min())), floor)
    if alarms.size:
        high = min(max(high, float(alarms.max())), ceiling)
    outside = int((missed < low).sum() + (alarms > high).sum())
    return {"threshold": t, "low": float(low), "high": float(high), "margin": m, "max_margin": cap,
            "source": "validation", "rule": RULE.format(margin=m, max_margin=cap),
            "validation_n": int(s.size), "validation_in_band": int(((s >= low) & (s <= high)).sum()),
            "validation_errors": int(missed.size + alarms.size), "validation_errors_outside": outside}


def fallback_band(threshold: float, margin: float = DEFAULT_MARGIN) -> dict:
    """The band of a checkpoint that stores none (older ones, the committed model): ``margin`` logits either side
    of its threshold. Needs no validation data; it is :func:`review_band` with no validation errors to take in."""
    t = _check_threshold(threshold, strict=True)
    m = _check_margin(margin)
    low, high = _edges(t, m, m)
    return {"threshold": t, "low": low, "high": high, "margin": m, "max_margin": m, "source": "fallback",
            "rule": FALLBACK_RULE.format(margin=m)}


def check_band(band: Any, name: str = "review_band") -> dict:
    """``band`` if it is a usable band dict (floats 0 < low <= threshold <= high < 1); else ValueError naming why."""
    if not isinstance(band, dict):
        raise ValueError(f"{name} must be a dict with low, high and threshold, got {type(band).__name__}")
    for key in ("threshold", "low", "high"):
        v = band.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < float(v) < 1.0:
            raise ValueError(f"{name} {key} {v!r} must be a number in (0, 1)")
    if not band["low"] <= band["threshold"] <= band["high"]:
        raise ValueError(f"{name} [{band['low']}, {band['high']}] must contain its threshold {band['threshold']}")
    if "rule" in band and not isinstance(band["rule"], str):
        raise ValueError(f"{name} rule must be a string")
    return band


def band_for_checkpoint(info: dict, margin: float = DEFAULT_MARGIN) -> dict | None:
    """The band a loaded checkpoint (or its info dict) gives: its stored ``review_band`` when usable, else the
    :func:`fallback_band` around its threshold; None for a model without a defect class or threshold."""
    t = info.get("threshold")
    if info.get("defect_index") is None or t is None:
        return None
    stored = info.get("review_band")
    if stored is not None:
        try:
            return {**check_band(stored, "the checkpoint's review_band"), "source": stored.get("source", "checkpoint")}
        except ValueError:
            pass  # a damaged band must not stop inspection: the fallback is always defined
    return fallback_band(t, margin)


def band_at(band: dict, threshold: float | None = None) -> tuple[float, float]:
    """(low, high) of ``band`` around ``threshold`` (default: the band's own): the band's logit distances below
    and above its threshold, kept around the new one."""
    t0 = float(band["threshold"])
    if threshold is None or float(threshold) == t0:
        return float(band["low"]), float(band["high"])  # exactly as stored: no logit/sigmoid round trip
    t = _check_threshold(threshold)
    z0 = logit(t0)
    return _edges(t, z0 - logit(band["low"]), logit(band["high"]) - z0)


def in_band(p: Any, low: float, high: float) -> Any:
    """Whether ``p`` (one probability or an array) lies in the inclusive band [low, high]."""
    inside = (np.asarray(p, dtype=np.float64) >= low) & (np.asarray(p, dtype=np.float64) <= high)
    return bool(inside) if inside.ndim == 0 else inside


def uncertainty(p: Any, threshold: float) -> Any:
    """How close ``p`` is to deciding the other way: |logit(p) - logit(threshold)|, in logits (0: on the threshold)."""
    d = np.abs(np.asarray(logit(p)) - logit(_check_threshold(threshold)))
    return float(d) if d.ndim == 0 else d


def review_order(probabilities: Iterable[float | None], threshold: float) -> list[int]:
    """Indices of the images to label first: by :func:`uncertainty` at ``threshold``, smallest first (ties keep
    their order). Images without a probability (failed files, models without a defect class) are left out."""
    ps = list(probabilities)
    keep = [i for i, p in enumerate(ps) if p is not None]
    if not keep:
        return []
    d = np.atleast_1d(uncertainty([ps[i] for i in keep], threshold))
    return [keep[int(j)] for j in np.argsort(d, kind="stable")]
