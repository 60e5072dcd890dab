"""How sure a rate measured on a few photos is: the Wilson score interval, and the report figures with theirs.

    wilson(0, 30)          # (0.0, 0.0827...): no error in 30 photos still allows an error rate up to 8.3 % (90 %)
    rate_text(30, 30)      # '100.0 % (90 % CI 91.7–100, n=30)'

The Wilson interval (Wilson 1927) inverts the normal test of a proportion instead of putting a normal band around
the observed one, so it stays inside [0, 1], is not empty at k = 0 or k = n, and covers close to its level from
a handful of photos on, where the plain "p ± z·sqrt(p(1 − p)/n)" collapses to a point. With ``z`` the two-sided
normal quantile of ``level`` (1.6449 at 90 %), p = k/n:

    centre = (p + z²/(2n)) / (1 + z²/n)
    half   = z / (1 + z²/n) · sqrt(p(1 − p)/n + z²/(4n²))

and at the ends it is exact: k = 0 gives [0, z²/(n + z²)], k = n gives [n/(n + z²), 1].

n = 0 is a ValueError: no photo says nothing, and a caller that may have none (e.g. the missed-defect rate of a
validation part without defects) checks n first; :func:`rate` returns None there.
"""

from __future__ import annotations

import math
from statistics import NormalDist

#: The level of every interval the adaptation report and the Adapt tab show.
LEVEL = 0.90


def z_of(level: float) -> float:
    """The two-sided standard-normal quantile of ``level`` (1.6449 at 0.90, 1.9600 at 0.95)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level {level} must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval (low, high) of a proportion of ``k`` in ``n`` at ``level`` (two-sided).

    ValueError for n < 1 (nothing measured), k outside 0..n, or a level outside (0, 1).
    """
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"k and n must be whole numbers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 1:
        raise ValueError(f"a proportion needs at least one observation, got n={n}")
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be between 0 and n={n}")
    z = z_of(level)
    z2 = z * z
    if k == 0:  # the closed forms at the ends: no rounding away from exactly 0 or 1
        return 0.0, z2 / (n + z2)
    if k == n:
        return n / (n + z2), 1.0
    p = k / n
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int, level: float = LEVEL) -> dict | None:
    """``{"k", "n", "rate", "low", "high", "level"}`` for k in n, or None when n is 0 (nothing to measure)."""
    if not n:
        return None
    low, high = wilson(k, n, level)
    return {"k": int(k), "n": int(n), "rate": k / n, "low": low, "high": high, "level": level}


def _pct(x: float) -> str:
    """A percentage with one decimal, the ends written 0 and 100 (as '91.7–100')."""
    v = 100.0 * x
    return "0" if v <= 0 else "100" if v >= 100 else f"{v:.1f}"


def interval_text(r: dict | None) -> str:
    """'90 % CI 91.7–100, n=30' for a :func:`rate` dict; 'no photos' for None."""
    if r is None:
        return "no photos"
    return f"{round(100 * r['level'])} % CI {_pct(r['low'])}\u2013{_pct(r['high'])}, n={r['n']}"


def rate_text(k: int, n: int, level: float = LEVEL) -> str:
    """'100.0 % (90 % CI 91.7–100, n=30)': the rate of k in n with its interval and n; 'n/a (n=0)' for none."""
    r = rate(k, n, level)
    if r is None:
        return "n/a (n=0)"
    return f"{100 * r['rate']:.1f} % ({interval_text(r)})"


def report_intervals(report: dict, defect_index: int | None, level: float = LEVEL) -> dict:
    """The intervals of a :func:`inspectkit.metrics.classification_report`: accuracy (of all photos), missed
    defects (as a share of the defects) and false alarms (as a share of the OK parts), each a :func:`rate` dict
    or None where there is no photo to count; only accuracy for a model without a defect class."""
    cm = report.get("confusion_matrix")
    if not report or not cm:
        return {}
    n = int(sum(sum(row) for row in cm))
    correct = int(sum(cm[i][i] for i in range(len(cm))))
    out = {"accuracy": rate(correct, n, level)}
    if defect_index is not None and "missed_defects" in report:
        n_def = int(sum(cm[defect_index]))
        out["missed_defects"] = rate(int(report["missed_defects"]), n_def, level)
        out["false_alarms"] = rate(int(report["false_alarms"]), n - n_def, level)
    return out
