"""Give an existing checkpoint a fixed heat-map scale (and display names, and the validation score histogram for
the Model tab) without retraining.

    python calibrate_heatmap.py --checkpoint final_best_model.pt --data ../shared/data/casting
    python calibrate_heatmap.py --checkpoint final_best_model.pt --data ../shared/data/casting --out /tmp/m.pt

The validation split the checkpoint was selected on is re-derived from its train config (an error if the data no
longer give the recorded files); the scale follows the rule in inspectkit/calibration.py (1 = the median peak of
the defect evidence over validation defects the model calls DEFECT, 0.5 = the OK/defect boundary). The weights and
the threshold are kept bit for bit; the file and its .sha256 are written atomically (over --checkpoint unless --out).
train.py and adapt.py already store all three; this is for checkpoints made before.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv=None) -> int:
    """Command line: calibrate, save, print the scale as JSON; exit 2 with the reason on bad input."""
    from inspectkit.labels import parse_display_names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    p.add_argument("--data", required=True, help="the data it was trained on (its validation split is re-derived)")
    p.add_argument("--out", default=None, help="where to save (default: over --checkpoint)")
    p.add_argument("--display-names", default=None, metavar="CLASS=LABEL,...",
                   help="human labels, e.g. def_front=Defect,ok_front=OK (default: the stored ones, else derived "
                        "from the class names)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inspectkit.fast import torch_missing

    if torch_missing("calibrate_heatmap.py"):
        print(f"calibrate_heatmap.py: error: {torch_missing('calibrate_heatmap.py')}", file=sys.stderr)
        return 2
    import torch

    from inspectkit.calibration import calibrate_checkpoint

    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        names = None if a.display_names is None else parse_display_names(a.display_names)
        res = calibrate_checkpoint(a.checkpoint, a.data, a.out, names)
    except ValueError as exc:
        print(f"calibrate_heatmap.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
