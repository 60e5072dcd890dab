"""Adaptation round 11: apply the rule committed before its runs (``reports/line-b/adapt_round11_protocol.md``) to the
runs of ``benchmarks/adapt_variants.py`` and write the report docs/research/adaptation.md quotes.

    python -m benchmarks.adapt_variants --checkpoint runs/j/model.pt --seeds 140 141 142 143 144 \
        --variants third-dw8-val0.1 third-dw8-val0.1-rot180 third-dw8-val0.1-aug1.5 \
        third-dw8-val0.1-rot180-aug1.5 --line-a-val --threads 2 --work runs/av11/work --out runs/av11/all.json
    python -m benchmarks.adapt_round11 runs/av11/all.json --out reports/line-b/adapt_round11

The rule is round 10's (``benchmarks/adapt_round10.py``: at least 10 fewer line-B errors, at most 5 more line-A
validation errors, ranked by both together, then the time gate), with round 10's winner as the default and wider
augmentation as the candidates. The casting test split is not read.
"""

from __future__ import annotations

import sys

from benchmarks.adapt_round9 import load_round, round_args, write
from benchmarks.adapt_round10 import decide

DEFAULT = "third-dw8-val0.1"
# the protocol's order, the tie-break: the narrowest change first
CANDIDATES = ("third-dw8-val0.1-rot180", "third-dw8-val0.1-aug1.5", "third-dw8-val0.1-rot180-aug1.5")


def main(argv=None) -> int:
    a = round_args(argv, __doc__, "reports/line-b/adapt_round11")
    d, cs = load_round(a.runs, DEFAULT, CANDIDATES)
    out = decide(d, cs, "round 10's recipe")
    write(out, a.out, "# Adaptation round 11: wider augmentation; the rule set before the runs, applied",
          f"`python -m benchmarks.adapt_round11 {a.runs} --out {a.out}`", "adapt_round11_protocol.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
