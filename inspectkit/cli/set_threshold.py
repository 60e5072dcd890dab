"""Choose a binary checkpoint's decision threshold again on its own validation split; the weights do not change.

    python set_threshold.py --checkpoint runs/new/model.pt --data ../shared/data/casting --target-recall 0.998

For a new operating point without retraining (a line that tolerates more false alarms to miss fewer defects),
or to bring a checkpoint up to a corrected threshold rule. The validation split is re-derived from the
checkpoint's train config and checked against the files it records; the test split is never read. Test metrics
stored at the old threshold are dropped: run evaluate.py again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from inspectkit.command import error


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="final_best_model.pt")
    p.add_argument("--data", default="../shared/data/casting")
    p.add_argument("--target-recall", type=float, default=None,
                   help="defect recall the threshold must keep on validation (default: the one it was trained with)")
    p.add_argument("--out", help="write here instead of overwriting the checkpoint")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inspectkit.engine.evaluation import rethreshold
    from inspectkit.inference.checkpoint import load_checkpoint
    from inspectkit.inference.fast import save_with_graph

    try:
        new = rethreshold(load_checkpoint(a.checkpoint), a.data, a.target_recall)
    except ValueError as exc:
        error("set_threshold.py", str(exc))
        return 2
    save_with_graph(new, a.out or a.checkpoint)
    val = new["metrics"]["validation"]
    print(json.dumps({**new["metrics"]["rethresholded"], "validation_recall": new["metrics"]["threshold_choice"]["recall"],
                      "validation_false_alarm_rate": new["metrics"]["threshold_choice"]["false_alarm_rate"],
                      "validation_missed_defects": val["missed_defects"], "validation_false_alarms": val["false_alarms"]},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
