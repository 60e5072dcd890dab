"""Fit the guard of a checkpoint (UNUSABLE verdicts and the drift reference) on the photos it was trained on.

    python fit_guard.py --checkpoint final_best_model.pt                         # in place, graph rewritten
    python fit_guard.py --checkpoint final_best_model.pt --out runs/guarded.pt   # a copy with the guard

The training photos of every line in the checkpoint's train config (the split re-derived and checked against the
recorded validation files) give the image-check limits, the framing template and the novelty bank; the validation
photos give the novelty threshold and the drift reference (inspectkit/guard.py, inspectkit/drift.py). The network
is unchanged; the checkpoint gets the key "guard" and its ONNX graph is written again (the guard travels in its
metadata). adapt.py fits an adapted model's guard itself. Needs torch: pip install -r requirements-train.txt.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inspectkit.command import error


def fit_checkpoint_guard(checkpoint: str | Path, out: str | Path | None = None,
                         data_root: str | Path | None = None) -> dict:
    """Fit the guard of ``checkpoint`` on its own training and validation photos and save the checkpoint with it
    (to ``out``, default in place) and its ONNX graph; returns the stored guard."""
    from inspectkit.engine.guard_fit import fit_on_photos
    from inspectkit.engine.training import training_photos
    from inspectkit.inference.checkpoint import load_checkpoint, stored_guard
    from inspectkit.inference.fast import save_with_graph
    from inspectkit.inference.handler import InferenceHandler

    ckpt = load_checkpoint(checkpoint)
    photos = training_photos(ckpt, data_root)
    handler = InferenceHandler(checkpoint)
    guard = fit_on_photos(handler.pooled_features, photos["train_images"], photos["train_labels"], photos["val_images"],
                          fitted_on={"lines": photos["lines"]})
    ckpt["guard"] = stored_guard(guard)
    save_with_graph(ckpt, out or checkpoint, graph=True)
    return ckpt["guard"]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 a usage or data problem)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="final_best_model.pt", help="the checkpoint whose guard is fitted")
    p.add_argument("--out", default=None, help="where to save the checkpoint with its guard (default: in place)")
    p.add_argument("--data", default=None, help="the first line's data root (default: the one the checkpoint records)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        guard = fit_checkpoint_guard(a.checkpoint, a.out, a.data)
    except ValueError as exc:
        error("fit_guard.py", str(exc))
        return 2
    print(f"guard fitted: novelty threshold {guard['novelty_threshold']:.4f}, "
          f"{guard['fitted_on']['train_photos']} training and {guard['fitted_on']['validation_photos']} validation "
          f"photos; saved to {a.out or a.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
