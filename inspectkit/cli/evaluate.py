"""Evaluate a checkpoint at its stored threshold on its test split, or on every image of another labelled set.

    python evaluate.py --checkpoint final_best_model.pt --data ../shared/data/casting --reports reports
    python evaluate.py --checkpoint final_best_model.pt --data ../shared/data/casting-line-b --split all \\
        --reports reports/line-b

--split test (the default): every metric for the whole test split and for its twin-free part (test images with
no exact or near twin in train), plus the same test images with the camera framing or light changed.

--split all: every image of DATA, a folder-per-class set (DATA/<class>/*, the class folders named as the
checkpoint's classes), e.g. photos of another line or camera; unreadable images are skipped and named. With
--train-data (the data the checkpoint was trained from) it also finds each image's twins there and adds a
twin-free part. The report leaves out the mosaic of misclassified photos unless --misclassified-images (it
copies the set's photos, which its licence may forbid).

Both write evaluation.json, evaluation.md, the per-image predictions (test_predictions.json, or predictions.json
for --split all) and the plots (confusion_matrix.png, threshold_curve.png, scores.png, ...) into --reports.
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
    p.add_argument("--split", choices=("test", "all"), default="test",
                   help="test: the checkpoint's test split (default); all: every image of a folder-per-class DATA")
    p.add_argument("--reports", default="reports", help="folder for evaluation.json/.md and the plots")
    p.add_argument("--no-robustness", action="store_true", help="skip the framing/light shifts")
    p.add_argument("--update-checkpoint", action="store_true",
                   help="store the test metrics in the checkpoint (reporting only; nothing is chosen from them); "
                        "--split test only")
    p.add_argument("--train-data", default=None,
                   help="--split all: the data the checkpoint was trained from, to find twins of the images there "
                        "and report a twin-free part (decodes that data once)")
    p.add_argument("--misclassified-images", action="store_true",
                   help="--split all: also write misclassified.png, a mosaic of the misclassified photos")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inspectkit.engine.evaluation import run_evaluation, run_folder_evaluation

    if a.split == "test" and (a.train_data or a.misclassified_images):
        error("evaluate.py", "--train-data and --misclassified-images go with --split all (the test split "
              "always finds twins in train and writes misclassified.png)")
        return 2
    if a.split == "all" and a.update_checkpoint:
        # the checkpoint's stored test metrics describe its own test split; another set's must not replace them
        error("evaluate.py", "--update-checkpoint goes with --split test only")
        return 2
    try:
        if a.split == "all":
            res = run_folder_evaluation(a.checkpoint, a.data, a.reports, not a.no_robustness, a.train_data,
                                        a.misclassified_images)
        else:
            res = run_evaluation(a.checkpoint, a.data, a.reports, a.update_checkpoint, not a.no_robustness)
    except ValueError as exc:
        error("evaluate.py", str(exc))
        return 2
    summary = {k: {m: r.get(m) for m in ("n", "accuracy", "roc_auc", "missed_defects", "false_alarms")}
               for k, r in res["test"].items()}
    if a.split == "all":
        summary["skipped"] = [f for f, _ in res["data"]["skipped"]]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
