"""Give an existing checkpoint a fixed heat-map scale (and display names, and the validation score histogram for
the Model tab) without retraining.

    python calibrate_heatmap.py --checkpoint final_best_model.pt --data ../shared/data/casting
    python calibrate_heatmap.py --checkpoint final_best_model.pt --data ../shared/data/casting --out /tmp/m.pt

The validation split the checkpoint was selected on is re-derived from its train config (an error if the data no
longer give the recorded files); the scale follows the rule in inspectkit/heatmap/scale.py (1 = the median peak of
the defect evidence over validation defects the model calls DEFECT, 0.5 = the OK/defect boundary). The weights and
the threshold are kept bit for bit; the file and its .sha256 are written atomically (over --checkpoint unless --out).
train.py and adapt.py already store all three; this is for checkpoints made before.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from inspectkit.command import error


def calibrate_checkpoint(checkpoint: str, data_root: str, out: str | None = None,
                         display_names: dict | None = None) -> dict:
    """Give an existing checkpoint its heat-map scale, validation score histogram and display names without
    retraining; returns a summary dict.

    The validation images are the ones the checkpoint was selected on, re-derived from its train config
    (:func:`inspectkit.engine.training.validation_split`; ValueError when the data no longer give the recorded files).
    The weights, threshold and everything else are kept bit for bit (checked by their digest); the result is saved
    atomically with its ``.sha256`` to ``out`` (default: over ``checkpoint``). ``display_names``: labels to store
    (checked against the classes); None keeps the stored ones or stores the defaults.
    """
    from inspectkit.data import folders as D
    from inspectkit.engine.training import validation_split
    from inspectkit.heatmap.scale import calibrate
    from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint, weights_digest
    from inspectkit.inference.fast import save_with_graph
    from inspectkit.labels import check_display_names, display_names_for

    ckpt = load_checkpoint(checkpoint)
    names, d, t = ckpt["class_names"], ckpt["defect_index"], ckpt["threshold"]
    shown = check_display_names(display_names if display_names is not None else display_names_for(ckpt), names,
                                "display names")
    before = weights_digest(ckpt["state_dict"])
    if d is None:
        raise ValueError(f"{checkpoint} has no defect class (classes {names}): its heat map is the per-image "
                         "normalised class CAM, which needs no scale; only display names can be set")
    val = validation_split(ckpt, data_root)
    val, images = D.decode_all(val)
    model = model_from_checkpoint(ckpt)
    cal = calibrate(model, ckpt["arch"], names, d, t, ckpt["preprocessing"], images, val.labels)
    scale = cal["heatmap_scale"]
    if scale is None:
        raise ValueError(f"no validation defect of {data_root} is called DEFECT by {checkpoint}: no scale to anchor")
    scale["calibrated_by"] = "calibrate_heatmap.py"
    scale["validation_files_sha256"] = val.fingerprint()["files_sha256"]
    ckpt["heatmap_scale"] = scale
    ckpt["display_names"] = shown
    metrics = dict(ckpt.get("metrics") or {})
    metrics["validation_score_histogram"] = cal["histogram"]
    ckpt["metrics"] = metrics
    if weights_digest(ckpt["state_dict"]) != before:  # nothing above may touch the weights
        raise RuntimeError("the weights changed while calibrating; nothing was saved")
    target = Path(out) if out else Path(checkpoint)
    digest = save_with_graph(ckpt, target)
    p = cal["probs"][:, d]
    return {"checkpoint": str(target), "sha256": digest, "weights_sha256": before, "heatmap_scale": scale,
            "display_names": shown, "validation_n": int(len(val)),
            "validation_accuracy_check": float(((p >= t) == (val.labels == d)).mean())}


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
    from inspectkit.inference.fast import torch_missing

    if torch_missing("calibrate_heatmap.py"):
        error("calibrate_heatmap.py", f"{torch_missing('calibrate_heatmap.py')}")
        return 2
    import torch


    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        names = None if a.display_names is None else parse_display_names(a.display_names)
        res = calibrate_checkpoint(a.checkpoint, a.data, a.out, names)
    except ValueError as exc:
        error("calibrate_heatmap.py", str(exc))
        return 2
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
