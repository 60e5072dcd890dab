"""Compare trained checkpoints on the validation split they share (the test split chooses nothing).

    python compare_models.py final_best_model.pt runs/new/model.pt --data ../shared/data/casting --json reports/model_selection.json

For each checkpoint: validation accuracy, missed defects and false alarms at its own threshold, ROC-AUC,
log-loss, and the selection loss training early-stops on (binary: the defect-weighted log-loss). The lowest
selection loss is named best; with --rule robust, the lowest mean of that loss on the clean validation images and
on the same images under the framing and light changes. See inspectkit.engine.evaluation.compare_on_validation.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from inspectkit.command import error


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="checkpoints trained with the same split settings")
    p.add_argument("--data", default="../shared/data/casting")
    p.add_argument("--json", help="also write the comparison to this JSON file")
    p.add_argument("--robustness", action="store_true",
                   help="also score each model on the validation images with the framing and light changes that "
                        "evaluate.py applies to test (informational unless --rule robust)")
    p.add_argument("--split-from", help="with --rule lines: the checkpoint whose multi-line split is used (default: the "
                                        "first one trained with --extra-data)")
    p.add_argument("--rule", choices=("clean", "robust", "lines"), default="clean",
                   help="clean: lowest validation selection loss; robust: lowest (clean selection loss + its mean "
                        "over the framing and light changes) / 2 (implies --robustness); lines: lowest mean over the "
                        "photo sessions of each one's validation selection loss (train.py --extra-data)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inspectkit.data.folders import save_json
    from inspectkit.engine.evaluation import compare_on_lines, compare_on_validation

    try:
        if a.rule == "lines":
            res = compare_on_lines(a.checkpoints, a.split_from)
        else:
            res = compare_on_validation(a.checkpoints, a.data, robustness=a.robustness, rule=a.rule)
    except ValueError as exc:
        error("compare_models.py", str(exc))
        return 2
    if a.json:
        save_json(res, a.json)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
