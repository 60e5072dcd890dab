"""Adaptation round 10: apply the rule committed before its runs (``reports/line-b/adapt_round10_protocol.md``) to the
runs of ``benchmarks/adapt_variants.py`` and write the report docs/research/adaptation.md quotes.

    python -m benchmarks.adapt_variants --checkpoint runs/j/model.pt --seeds 130 131 132 133 134 \
        --variants third-dw8 third-dw8-val0.2 third-dw8-val0.1 third-dw4-val0.1 --line-a-val --threads 2 \
        --work runs/av10/work --out runs/av10/all.json
    python -m benchmarks.adapt_round10 runs/av10/all.json --out reports/line-b/adapt_round10

The rule: a candidate qualifies only if, summed over the seeds, (a) its line-B errors on the unused photos are at
least 10 fewer than the default's and (b) its line-A validation errors are at most the default's + 5. The qualifying
candidates are ranked by their line-B and line-A errors together (a tie: the earlier in ``CANDIDATES``); the first
must then pass the time gate (``benchmarks/adapt_time.py`` on a quiet machine, at most 120 s a run), or the next
does. Wall time in the shared job is reported, not judged. Each run is judged at its own threshold. The casting test
split is not read.
"""

from __future__ import annotations

import sys

from benchmarks.adapt_round9 import FEWER_LINE_B, LINE_A_SLACK, load_round, round_args, write

DEFAULT = "third-dw8"
CANDIDATES = ("third-dw8-val0.2", "third-dw8-val0.1", "third-dw4-val0.1")  # the protocol's order: the tie-break


def checks(default: dict, candidate: dict) -> dict:
    """The rule's two tests of one candidate's summary against the default's."""
    return {f"line-B errors at least {FEWER_LINE_B} fewer":
            candidate["line_b_errors"] <= default["line_b_errors"] - FEWER_LINE_B,
            f"line-A errors at most the default's + {LINE_A_SLACK}":
            candidate["line_a_errors"] <= default["line_a_errors"] + LINE_A_SLACK}


def ranking(default: dict, candidates: list[dict]) -> list[str]:
    """The qualifying candidates' names, fewest errors on both lines together first (ties keep the given order):
    the order in which the time gate tries them. Empty: the default stays."""
    ok = [(c["line_b_errors"] + c["line_a_errors"], i, c["variant"]) for i, c in enumerate(candidates)
          if all(checks(default, c).values())]
    return [name for _, _, name in sorted(ok)]


def decide(d: dict, cs: list[dict], stays: str) -> dict:
    """A round's outcome under this rule: the summaries, each candidate's checks, the ranking, the winner and the
    decision's words (``stays`` names the default's recipe when nothing qualifies)."""
    order = ranking(d, cs)
    return {"default": d, "candidates": cs, "checks": {c["variant"]: checks(d, c) for c in cs}, "ranking": order,
            "winner": order[0] if order else d["variant"],
            "decision": (f"{order[0]} becomes the default if it passes the time gate"
                         + (f" (else, in turn: {', '.join(order[1:])})" if order[1:] else "")
                         if order else f"{d['variant']} ({stays}) stays")}


def main(argv=None) -> int:
    a = round_args(argv, __doc__, "reports/line-b/adapt_round10")
    d, cs = load_round(a.runs, DEFAULT, CANDIDATES)
    out = decide(d, cs, "round 9's recipe")
    write(out, a.out, "# Adaptation round 10: train on more of the labelled photos; the rule set before the runs, "
          "applied", f"`python -m benchmarks.adapt_round10 {a.runs} --out {a.out}`", "adapt_round10_protocol.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
