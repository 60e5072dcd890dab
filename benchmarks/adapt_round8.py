"""Adaptation round 8 (confirmatory): apply the rule committed before its runs (commit "adaptation round 8 ... set
before any of its runs") to the runs of ``benchmarks/adapt_variants.py`` and write the report
docs/research/adaptation.md quotes.

    python benchmarks/adapt_variants.py --checkpoint runs/j/model.pt --seeds 110 111 112 113 114 \
        --variants third-s2e20 fixed-lr-half-anchor1 --line-a-val --threads 2 --work runs/av8/work --out runs/av8/all.json
    python -m benchmarks.adapt_round8 runs/av8/all.json --out reports/line-b/adapt_round8

The rule: the candidate (third-s2e20) becomes adapt.py's default only if, summed over the seeds, (a) its line-A
validation errors are fewer than the default's, (b) its line-B errors on the unused photos are at most the
default's + 5, and (c) its mean time per run is at most 120 s. Each run is judged at its own threshold. The casting
test split is not read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.adapt_variants import counts

DEFAULT, CANDIDATE = "fixed-lr-half-anchor1", "third-s2e20"
LINE_B_SLACK, MAX_SECONDS = 5, 120.0


def summarise(runs: list[dict], variant: str) -> dict:
    """Per seed and summed: errors on the unused line-B photos and on line A's validation split, at each run's own
    threshold, and time."""
    mine = sorted((r for r in runs if r["variant"] == variant), key=lambda r: r["seed"])
    per_seed = []
    for r in mine:
        b = counts(r["rest"], r["threshold"])
        a = counts(r["line_a_val"], r["threshold"])
        bp = counts(r["rest"], r["parent_threshold"])  # for the record: the same model at the parent's threshold
        per_seed.append({"seed": r["seed"], "threshold": r["threshold"], "seconds": r["seconds"],
                         "line_b_missed": b["missed_defects"], "line_b_false_alarms": b["false_alarms"],
                         "line_a_missed": a["missed_defects"], "line_a_false_alarms": a["false_alarms"],
                         "line_b_accuracy_at_parent_threshold": round(bp["accuracy"], 6),
                         "line_b_missed_at_parent_threshold": bp["missed_defects"],
                         "line_b_accuracy": round(b["accuracy"], 6), "line_b_errors": b["missed_defects"] + b["false_alarms"],
                         "line_b_photos": len(r["rest"]["defect"]),
                         "line_a_errors": a["missed_defects"] + a["false_alarms"],
                         "line_a_photos": len(r["line_a_val"]["defect"])})
    return {"variant": variant, "seeds": [p["seed"] for p in per_seed], "per_seed": per_seed,
            "line_b_errors": sum(p["line_b_errors"] for p in per_seed),
            "line_b_photos": sum(p["line_b_photos"] for p in per_seed),
            "line_b_accuracy_mean": round(float(np.mean([p["line_b_accuracy"] for p in per_seed])), 6),
            "line_a_errors": sum(p["line_a_errors"] for p in per_seed),
            "line_a_photos": sum(p["line_a_photos"] for p in per_seed),
            "mean_seconds": round(float(np.mean([p["seconds"] for p in per_seed])), 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", help="the runs JSON of adapt_variants.py")
    p.add_argument("--out", default="reports/line-b/adapt_round8", help="stem of OUT.json and OUT.md")
    a = p.parse_args(argv)
    runs = json.loads(Path(a.runs).read_text())["runs"]
    d, c = summarise(runs, DEFAULT), summarise(runs, CANDIDATE)
    if d["seeds"] != c["seeds"] or not d["seeds"]:
        raise SystemExit(f"the two recipes must have run on the same seeds: {d['seeds']} and {c['seeds']}")
    checks = {"fewer line-A errors": c["line_a_errors"] < d["line_a_errors"],
              f"line-B errors at most the default's + {LINE_B_SLACK}": c["line_b_errors"] <= d["line_b_errors"] + LINE_B_SLACK,
              f"mean time at most {MAX_SECONDS:.0f} s": c["mean_seconds"] <= MAX_SECONDS}
    adopted = all(checks.values())
    out = {"default": d, "candidate": c, "checks": checks, "adopted": adopted,
           "decision": f"{CANDIDATE} becomes the default" if adopted else f"{DEFAULT} (the third recipe) stays"}
    Path(a.out + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# Adaptation round 8 (confirmatory): the rule set before the runs, applied", "",
             f"`python -m benchmarks.adapt_round8 {a.runs} --out {a.out}`; parent J, 50 photos per class, seeds "
             f"{', '.join(map(str, d['seeds']))}; each run at its own threshold.", "",
             "| recipe | line B: mean accuracy on the unused photos | line-B errors (of photos) | line-A validation "
             "errors (of photos) | mean time |", "|---|---:|---:|---:|---:|"]
    for s in (d, c):
        lines.append(f"| {s['variant']} | {100 * s['line_b_accuracy_mean']:.2f} % | {s['line_b_errors']} "
                     f"({s['line_b_photos']:,}) | {s['line_a_errors']} ({s['line_a_photos']:,}) | {s['mean_seconds']} s |")
    lines += ["", "Per seed: threshold; line B accuracy (missed / false alarms); the same model at the parent's threshold "
              "(missed); line-A errors (missed / false alarms); seconds.", "",
              "| seed | " + " | ".join(s["variant"] for s in (d, c)) + " |", "|---:|---|---|"]

    def cell(x):
        return (f"{x['threshold']:.3f}; {100 * x['line_b_accuracy']:.2f} % ({x['line_b_missed']} / "
                f"{x['line_b_false_alarms']}); {100 * x['line_b_accuracy_at_parent_threshold']:.2f} % "
                f"({x['line_b_missed_at_parent_threshold']}); {x['line_a_errors']} ({x['line_a_missed']} / "
                f"{x['line_a_false_alarms']}); {x['seconds']:.0f} s")

    for x, y in zip(d["per_seed"], c["per_seed"]):
        lines.append(f"| {x['seed']} | {cell(x)} | {cell(y)} |")
    lines += ["", "Checks: " + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in checks.items()) + ".",
              f"Decision: **{out['decision']}**.", ""]
    Path(a.out + ".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
