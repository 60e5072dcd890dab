"""How often a recipe has a seed below a floor: the per-seed goal of the learning curves, split into what the draw of
labelled photos moves and what the evaluation photos' count alone moves.

    python -m benchmarks.seed_floor reports/line-b/learning_curve_confirm.json \
        reports/line-b/learning_curve_round9.json reports/line-b/learning_curve_round9_weight1.json \
        reports/line-b/learning_curve_round10.json reports/line-b/learning_curve_round10_val03.json \
        --out reports/line-b/seed_floor

A seed's accuracy on the unused line-B photos differs from another's for two reasons: the labelled photos differ, so
the adapted model differs, and the evaluation photos differ, and there are few of them (260 a seed at
``--eval-fraction 0.4``: one photo is 0.38 points). The second alone has the binomial standard deviation
sqrt(p (1 - p) / n). This command takes each curve's spread over seeds at ``--per-class`` photos per class, removes
the binomial part (method of moments: between-draw variance = variance over seeds - binomial variance, at least 0),
and with that model (a draw's true accuracy normal about the curve's mean with the between-draw deviation, its
errors binomial on its n photos) computes exactly, by Gauss-Hermite quadrature over the draw and the binomial tail
over the photos:

- the chance that one seed lands below the floor (``--floor``, 94 %), and that none of k seeds does;
- the mean accuracy at which none of k seeds lands below the floor 9 times in 10, for the curve's own k and n, and
  for a measurement like the sealed half of line B (``--sealed``: 5 draws, 650 photos each).

The model is a reading aid, not a measurement: its mean and deviations come from 5 to 8 seeds each. Nothing here
chooses a recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

#: Gauss-Hermite nodes (probabilists'): the draw's true accuracy integrated over its normal distribution
NODES, WEIGHTS = np.polynomial.hermite_e.hermegauss(60)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def most_errors(n: int, floor: float) -> int:
    """The most errors among n photos that still score at least ``floor`` (a small tolerance: 94 % of 650 is
    611 right, whatever the floating point says)."""
    return math.floor((1.0 - floor) * n + 1e-9)


def binomial_tail(n: int, p_error: float, k: int) -> float:
    """P(more than k errors among n photos, each wrong with probability p_error): one minus the k + 1 terms up to k
    (k is a few dozen here, n hundreds), each in log space."""
    if p_error <= 0.0:
        return 0.0
    if p_error >= 1.0:
        return 1.0 if k < n else 0.0
    lp, lq = math.log(p_error), math.log1p(-p_error)
    at_most = sum(math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq)
                  for j in range(min(k, n) + 1))
    return float(min(1.0, max(0.0, 1.0 - at_most)))


def p_below(mean: float, sd_between: float, n: int, floor: float) -> float:
    """The chance that one seed scores below ``floor`` on n photos when its true accuracy is normal (``mean``,
    ``sd_between``), clipped to [0, 1]."""
    k = most_errors(n, floor)
    accs = np.clip(mean + sd_between * NODES, 0.0, 1.0) if sd_between > 0 else np.array([mean])
    w = WEIGHTS if sd_between > 0 else np.array([1.0])
    return float(sum(wi * binomial_tail(n, 1.0 - a, k) for wi, a in zip(w, accs)))


def mean_needed(sd_between: float, n: int, seeds: int, floor: float, confidence: float = 0.9) -> float:
    """The lowest mean accuracy (to 0.05 points) at which no seed of ``seeds`` lands below ``floor`` with at least
    ``confidence``; 1.0 if none below 100 % does."""
    for m in np.arange(floor, 1.0 + 1e-9, 0.0005):
        if (1.0 - p_below(float(m), sd_between, n, floor)) ** seeds >= confidence:
            return round(float(m), 4)
    return 1.0


def curve_model(doc: dict, per_class: int, floor: float, sealed: tuple[int, int]) -> dict:
    """One learning curve's seeds at ``per_class``: mean, spread, its binomial and between-draw parts, and the
    chances and needed means of the module doc."""
    runs = [r for r in doc["runs"] if r["per_class"] == per_class and "adapted" in r]
    if len(runs) < 2:
        raise SystemExit(f"seed_floor.py: error: {doc.get('command', 'a curve')} has {len(runs)} run(s) at "
                         f"{per_class} per class; at least 2 are needed for a spread")
    acc = np.array([r["adapted"]["line_rest"]["accuracy"] for r in runs])
    ns = np.array([r["adapted"]["line_rest"]["n"] for r in runs])
    n = int(round(ns.mean()))
    mean, sd = float(acc.mean()), float(acc.std(ddof=1))
    binom = math.sqrt(mean * (1 - mean) / n)
    between = math.sqrt(max(0.0, sd ** 2 - binom ** 2))
    k = len(runs)
    q = p_below(mean, between, n, floor)
    sealed_k, sealed_n = sealed
    q_sealed = p_below(mean, between, sealed_n, floor)
    return {"seeds": [r["seed"] for r in runs], "n": n, "mean": mean, "sd": sd, "sd_binomial": binom,
            "sd_between": between, "lowest": float(acc.min()), "below": int((acc < floor).sum()),
            "p_seed_below": q, "p_none_below": (1 - q) ** k, "mean_needed": mean_needed(between, n, k, floor),
            "sealed": {"seeds": sealed_k, "n": sealed_n, "p_seed_below": q_sealed,
                       "p_none_below": (1 - q_sealed) ** sealed_k,
                       "mean_needed": mean_needed(between, sealed_n, sealed_k, floor)}}


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def write(rows: list[dict], stem: str, floor: float, per_class: int, command: str) -> None:
    """STEM.json and STEM.md (printed too)."""
    Path(stem + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(stem + ".json").write_text(json.dumps({"command": command, "floor": floor, "per_class": per_class,
                                                "curves": rows}, indent=1) + "\n")
    s = rows[0]["sealed"]
    lines = ["# How often a seed lands below the floor: the draw, and the evaluation photos' count", "",
             f"Written by `{command}`. At {per_class} photos per class, floor {_pct(floor)}. *Binomial*: the "
             "standard deviation the evaluation photos' count alone gives at the curve's mean; *between draws*: what "
             "remains of the spread over seeds (method of moments). The chances are the model's (module doc of "
             "`benchmarks/seed_floor.py`), from 5 to 8 seeds a curve: a reading aid, not a measurement.", "",
             "| curve | seeds | photos a seed | mean | sd over seeds | binomial sd | between-draw sd | lowest seed "
             "| seeds below | P(a seed below) | P(no seed below) | mean for no seed below, 9 in 10 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['curve']} | {len(r['seeds'])} | {r['n']} | {_pct(r['mean'])} | {100 * r['sd']:.2f} "
                     f"| {100 * r['sd_binomial']:.2f} | {100 * r['sd_between']:.2f} | {_pct(r['lowest'])} "
                     f"| {r['below']} | {100 * r['p_seed_below']:.1f} % | {100 * r['p_none_below']:.0f} % "
                     f"| {_pct(r['mean_needed'])} |")
    lines += ["", f"The same draws measured as the sealed half of line B is ({s['seeds']} draws, {s['n']} photos "
              "each), with each curve's mean and between-draw deviation:", "",
              "| curve | P(a draw below) | P(no draw below) | mean for no draw below, 9 in 10 |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['curve']} | {100 * r['sealed']['p_seed_below']:.1f} % "
                     f"| {100 * r['sealed']['p_none_below']:.0f} % | {_pct(r['sealed']['mean_needed'])} |")
    lines.append("")
    Path(stem + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("curves", nargs="+", help="learning-curve JSONs (benchmarks/learning_curve.py)")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--floor", type=float, default=0.94)
    p.add_argument("--sealed", type=int, nargs=2, default=(5, 650), metavar=("DRAWS", "PHOTOS"))
    p.add_argument("--out", required=True, help="stem of OUT.json and OUT.md")
    a = p.parse_args(argv)
    if not 0 < a.floor < 1:
        raise SystemExit(f"seed_floor.py: error: --floor must be between 0 and 1, got {a.floor}")
    rows = []
    for f in a.curves:
        rows.append({"curve": Path(f).stem, **curve_model(json.loads(Path(f).read_text()), a.per_class, a.floor,
                                                          tuple(a.sealed))})
    command = "python -m benchmarks.seed_floor " + " ".join(a.curves) + f" --out {a.out}"
    if a.per_class != 50 or a.floor != 0.94 or tuple(a.sealed) != (5, 650):
        command += f" --per-class {a.per_class} --floor {a.floor} --sealed {a.sealed[0]} {a.sealed[1]}"
    write(rows, a.out, a.floor, a.per_class, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
