"""Evaluate a checkpoint on its test split at the stored threshold; writes the report.

    python evaluate.py --checkpoint final_best_model.pt --data ../shared/data/casting --reports reports

Every metric is given for the whole test split and for its twin-free part (test images with no exact or
near twin in train), plus the same test images with the camera framing or light changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="final_best_model.pt")
    p.add_argument("--data", default="../shared/data/casting")
    p.add_argument("--reports", default="reports", help="folder for evaluation.json/.md and the plots")
    p.add_argument("--no-robustness", action="store_true", help="skip the framing/light shifts")
    p.add_argument("--update-checkpoint", action="store_true",
                   help="store the test metrics in the checkpoint (reporting only; nothing is chosen from them)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inspectkit.evaluation import run_evaluation

    try:
        res = run_evaluation(a.checkpoint, a.data, a.reports, a.update_checkpoint, not a.no_robustness)
    except ValueError as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    summary = {k: {m: res["test"][k].get(m) for m in ("n", "accuracy", "roc_auc", "missed_defects", "false_alarms")}
               for k in ("all", "twin_free")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
