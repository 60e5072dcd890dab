"""Adaptation round 9: apply the rule committed before its runs (``reports/line-b/adapt_round9_protocol.md``) to the
runs of ``benchmarks/adapt_variants.py`` and write the report docs/research/adaptation.md quotes.

    python -m benchmarks.adapt_variants --checkpoint runs/j/model.pt --seeds 120 121 122 123 124 \
        --variants fixed-lr-half-anchor1 third-dw2 third-dw4 third-dw8 --line-a-val --threads 2 \
        --work runs/av9/work --out runs/av9/all.json
    python -m benchmarks.adapt_round9 runs/av9/all.json --out reports/line-b/adapt_round9

The rule: a candidate qualifies only if, summed over the seeds, (a) its line-B errors on the unused photos are at
least 10 fewer than the default's, (b) its line-A validation errors are at most the default's + 5, and (c) its mean
time per run is at most 1.05 times the default's. Among the qualifying candidates the fewest line-B and line-A errors
together wins; a tie goes to the smaller weight (the earlier in ``CANDIDATES``). Each run is judged at its own
threshold. The casting test split is not read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.adapt_round8 import summarise

DEFAULT = "fixed-lr-half-anchor1"
CANDIDATES = ("third-dw2", "third-dw4", "third-dw8")  # smallest weight first: the tie-break
FEWER_LINE_B, LINE_A_SLACK, TIME_FACTOR = 10, 5, 1.05


def checks(default: dict, candidate: dict) -> dict:
    """The rule's three tests of one candidate's summary against the default's (both from :func:`summarise`)."""
    return {f"line-B errors at least {FEWER_LINE_B} fewer":
            candidate["line_b_errors"] <= default["line_b_errors"] - FEWER_LINE_B,
            f"line-A errors at most the default's + {LINE_A_SLACK}":
            candidate["line_a_errors"] <= default["line_a_errors"] + LINE_A_SLACK,
            f"mean time at most {TIME_FACTOR} x the default's":
            candidate["mean_seconds"] <= TIME_FACTOR * default["mean_seconds"]}


def decide(default: dict, candidates: list[dict]) -> str:
    """The winning recipe's name: the qualifying candidate with the fewest errors on both lines together (ties: the
    first in ``candidates``), or the default's when none qualifies."""
    best = None
    for c in candidates:
        if all(checks(default, c).values()):
            total = c["line_b_errors"] + c["line_a_errors"]
            if best is None or total < best[0]:
                best = (total, c["variant"])
    return default["variant"] if best is None else best[1]


def round_args(argv, doc: str, stem: str) -> argparse.Namespace:
    """A round command's arguments: the runs JSON of adapt_variants.py and --out (default ``stem``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", help="the runs JSON of adapt_variants.py")
    p.add_argument("--out", default=stem, help="stem of OUT.json and OUT.md")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = round_args(argv, __doc__, "reports/line-b/adapt_round9")
    d, cs = load_round(a.runs, DEFAULT, CANDIDATES)
    winner = decide(d, cs)
    out = {"default": d, "candidates": cs, "checks": {c["variant"]: checks(d, c) for c in cs}, "winner": winner,
           "decision": (f"{DEFAULT} (the third recipe) stays" if winner == DEFAULT
                        else f"{winner} becomes the default")}
    write(out, a.out, "# Adaptation round 9: the new line's defects weigh more; the rule set before the runs, applied",
          f"`python -m benchmarks.adapt_round9 {a.runs} --out {a.out}`", "adapt_round9_protocol.md")
    return 0


def load_round(path: str, default: str, candidates) -> tuple[dict, list[dict]]:
    """The default's and each candidate's summary (:func:`benchmarks.adapt_round8.summarise`) from a runs JSON of
    ``adapt_variants.py``; all must have run on the same seeds."""
    runs = json.loads(Path(path).read_text())["runs"]
    d = summarise(runs, default)
    cs = [summarise(runs, v) for v in candidates]
    for c in cs:
        if c["seeds"] != d["seeds"] or not d["seeds"]:
            raise SystemExit(f"{c['variant']} and the default must have run on the same seeds: "
                             f"{c['seeds']} and {d['seeds']}")
    return d, cs


def write(out: dict, stem: str, title: str, command: str, protocol: str) -> None:
    """A round's decision ``out`` (default, candidates, checks, decision) as STEM.json and STEM.md, printed too."""
    d, cs = out["default"], out["candidates"]
    Path(stem + ".json").parent.mkdir(parents=True, exist_ok=True)
    Path(stem + ".json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [title, "",
             f"{command}; parent J, 50 photos per class, seeds "
             f"{', '.join(map(str, d['seeds']))}; each run at its own threshold "
             f"([protocol]({protocol})).", "",
             "| recipe | line B: mean accuracy on the unused photos | line-B errors (of photos) | missed / false "
             "alarms | line-A validation errors (of photos) | mean time |", "|---|---:|---:|---:|---:|---:|"]
    for s in (d, *cs):
        missed = sum(x["line_b_missed"] for x in s["per_seed"])
        alarms = sum(x["line_b_false_alarms"] for x in s["per_seed"])
        lines.append(f"| {s['variant']} | {100 * s['line_b_accuracy_mean']:.2f} % | {s['line_b_errors']} "
                     f"({s['line_b_photos']:,}) | {missed} / {alarms} | {s['line_a_errors']} "
                     f"({s['line_a_photos']:,}) | {s['mean_seconds']} s |")
    lines += ["", "Per seed: line-B accuracy (missed / false alarms); line-A errors (missed / false alarms); threshold.",
              "", "| seed | " + " | ".join(s["variant"] for s in (d, *cs)) + " |",
              "|---:|" + "---|" * (1 + len(cs))]

    def cell(x):
        return (f"{100 * x['line_b_accuracy']:.2f} % ({x['line_b_missed']} / {x['line_b_false_alarms']}); "
                f"{x['line_a_errors']} ({x['line_a_missed']} / {x['line_a_false_alarms']}); {x['threshold']:.3f}")

    for i, seed in enumerate(d["seeds"]):
        lines.append(f"| {seed} | " + " | ".join(cell(s["per_seed"][i]) for s in (d, *cs)) + " |")
    lines += [""]
    for c in cs:
        lines.append(f"- {c['variant']}: " + "; ".join(f"{k}: {'yes' if v else 'no'}"
                                                       for k, v in out["checks"][c["variant"]].items()) + ".")
    lines += ["", f"Decision: **{out['decision']}**.", ""]
    Path(stem + ".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
