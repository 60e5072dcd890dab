"""Adapt a trained checkpoint to a new line from a few labelled photos of it; writes a normal checkpoint.

    python adapt.py --checkpoint final_best_model.pt --data my_line/ --out my_line.pt [--seed 0]

``my_line/`` holds one folder per class of the model (e.g. def_front/ and ok_front/). A near-duplicate-aware
part of it is held out for validation (before/after are measured there, and it moves the parent's threshold
only where it contradicts it); the rest is trained on with the two-stage machinery, beside a replayed sample of
the parent's own training photos (by default from the parent's recorded data folder, when it is on disk) so the
model keeps what it knew. The new checkpoint records the parent's weights digest, the data fingerprint and the
before/after validation figures; the app and the handler load it like any other. If the parent already classifies
every new photo correctly it is written unchanged (there is nothing to correct; ``--force`` adapts anyway). The
printed before/after table gives accuracy, missed defects (of the defects) and false alarms (of the OK parts) with
a 90 % Wilson interval and the number of photos behind each: on a few dozen held-out photos a perfect score still
allows several percent of errors. See inspectkit/engine/adaptation.py for the design.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields

from inspectkit.command import error
from inspectkit.inference.fast import torch_missing

if torch_missing('adapt.py (fine-tuning)'):  # the serving install (requirements.txt) has no torch: say what to install
    sys.exit(torch_missing('adapt.py (fine-tuning)'))
# after the torch check
from inspectkit.engine.adaptation import MIN_PHOTOS_PER_CLASS, THRESHOLD_MODES, AdaptConfig
from inspectkit.intervals import LEVEL, interval_text


def parse_args(argv=None) -> AdaptConfig:
    """Command-line options, one per AdaptConfig field (same names, dashes for underscores)."""
    d = AdaptConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the parent checkpoint (BASE.pt)")
    p.add_argument("--data", required=True, help="the new line's photos: one folder per class of the parent")
    p.add_argument("--out", required=True, help="where to write the adapted checkpoint (and its .sha256)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of the photos (by near-duplicate group) held out for validation and the threshold")
    p.add_argument("--min-val-per-class", type=int, default=d.min_val_per_class,
                   help="with fewer held-out photos than this in a class, adapt in-sample: train on all, threshold "
                        f"as --threshold auto without validation (at least {MIN_PHOTOS_PER_CLASS} photos per class "
                        "are needed at all)")
    p.add_argument("--views", type=int, default=d.views, help="cached views per photo (1 clean + augmented)")
    p.add_argument("--aug-strength", type=float, default=d.aug_strength,
                   help="scale of every augmentation range (0: the parent's training setting)")
    p.add_argument("--aug-rotation", type=float, default=d.aug_rotation,
                   help="rotation range of the augmented views in degrees, 180 for any turn (0: the parent's)")
    p.add_argument("--size", type=int, default=d.size,
                   help="input size of the adapted model in pixels (0: the parent's); larger keeps small defects "
                        "visible and costs time, roughly with its square")
    p.add_argument("--stage1-epochs", type=int, default=d.stage1_epochs)
    p.add_argument("--stage2-epochs", type=int, default=d.stage2_epochs)
    p.add_argument("--lr1", type=float, default=d.lr1, help="stage 1 (head) learning rate")
    p.add_argument("--lr2", type=float, default=d.lr2, help="stage 2 (last blocks and head) learning rate")
    p.add_argument("--keep", choices=("last", "best"), default=d.keep,
                   help="'last': each stage runs all its epochs (validation only reports); 'best': each stage stops "
                        "early and keeps its best epoch on validation (needs a validation part of hundreds of photos)")
    p.add_argument("--patience", type=int, default=d.patience, help="epochs without improvement (--keep best)")
    p.add_argument("--threshold", choices=THRESHOLD_MODES, default=d.threshold,
                   help="'auto': train.py's rule on validation when it holds enough defects to check the parent's "
                        "recall target (1 / (1 - target): 500 at 0.998), else the parent's threshold unless the "
                        "held-out photos contradict it (another threshold makes fewer errors there, one-sided sign "
                        "test p <= 0.05; in-sample: the parent's); 'rule' or 'parent': always that one; 'lower': "
                        "'auto' until issue 28 (the lower of the parent's threshold and 0.5 where the rule cannot be "
                        "checked)")
    p.add_argument("--ema-epochs", type=float, default=d.ema_epochs)
    p.add_argument("--anchor", type=float, default=d.anchor,
                   help="pull towards the parent's weights (L2-SP: anchor/2 x squared distance), so the model keeps "
                        "more of its old line; 0: none")
    p.add_argument("--last-blocks", type=int, default=d.last_blocks,
                   help="backbone blocks unfrozen in stage 2 (0: as many as the parent was trained with)")
    p.add_argument("--members", type=int, default=d.members,
                   help="stage-2 runs averaged into one network (a model soup; each adds stage 2's time)")
    p.add_argument("--balance-lines", action="store_true", default=d.balance_lines,
                   help="weight the new line's and the replayed line's photos so both lines count equally")
    p.add_argument("--defect-weight", type=float, default=d.defect_weight,
                   help="loss weight of the new line's defect photos against its OK ones (above 1: a missed defect "
                        "costs more while the model learns the line; 1: the same)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--replay", default=d.replay,
                   help="the parent's line to replay: 'auto' (its recorded training data, when on disk), a data "
                        "folder, or 'none' (adapt to the new line alone; it may forget the old one)")
    p.add_argument("--replay-per-class", type=int, default=d.replay_per_class)
    p.add_argument("--replay-val-fraction", type=float, default=d.replay_val_fraction,
                   help="share of the replayed photos held out (the line-A figures and the threshold's evidence)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (0: default)")
    p.add_argument("--limit", type=int, default=d.limit, help="use at most this many new photos per class")
    p.add_argument("--group-by-part", action="store_true", default=d.group_by_part,
                   help="hold out whole parts: photos of one part (turned, re-shot) are found by their grain "
                        "(inspectkit.data.parts) and kept on one side, so before/after is measured on parts the "
                        "model did not train on (a few seconds more per 100 photos)")
    p.add_argument("--force", action="store_true", default=d.force,
                   help="adapt even when the parent already classifies every new photo correctly (by default it "
                        "is then written unchanged: there is nothing to correct, and adapting would only move what "
                        "it knows of its own line)")
    a = p.parse_args(argv)
    return AdaptConfig(**{f.name: getattr(a, f.name) for f in fields(AdaptConfig) if hasattr(a, f.name)})


def _cell(r: dict, key: str) -> str:
    """'96.7 % (90 % CI 88.6–99.4, n=30)' for accuracy; '1 of 15: 6.7 % (90 % CI ..., n=15)' for a count."""
    iv = (r.get("intervals") or {}).get(key)
    if key == "accuracy":
        return f"{100 * r['accuracy']:.1f} %" + (f" ({interval_text(iv)})" if iv else "")
    if key not in r:
        return "-"
    if iv is None:
        return f"{r[key]} (n=0)" if "intervals" in r else str(r[key])
    return f"{r[key]} of {iv['n']}: {100 * iv['rate']:.1f} % ({interval_text(iv)})"


def _row(label: str, r: dict) -> str:
    if not r:
        return f"| {label} | - | - | - | - |"
    cells = [_cell(r, k) for k in ("accuracy", "missed_defects", "false_alarms")]
    return f"| {label} | {r['n']} | " + " | ".join(cells) + " |"


def report(ckpt: dict, out: str) -> str:
    """What adapt.py prints at the end: the threshold and why, and before/after with intervals (markdown)."""
    a = ckpt["metrics"]["adaptation"]
    tc = ckpt["metrics"].get("threshold_choice") or {}
    where = "held-out photos of the new line" if a["mode"] == "held-out" else \
        "the training photos themselves (too few photos to hold any out)"
    thr = "none (no defect class)" if ckpt["threshold"] is None else f"{ckpt['threshold']:.4f}"
    if a.get("outcome") == "kept the parent":
        seen = a["all_new_photos"]
        return "\n".join([f"wrote {out}: the parent unchanged (threshold {thr}), not adapted", f"why: {a['why']}",
                           f"parent on all {seen['n']} new photos: {_cell(seen, 'accuracy')}"])
    lines = [f"wrote {out} (threshold {thr}; {a['mode']}; before/after on {where})"]
    if a.get("few_photos"):
        lines.append(f"warning: {a['few_photos']}")
    if tc.get("why"):
        lines.append(f"threshold: {tc.get('applied', 'chosen')}: {tc['why']}")
    lines += ["", "| model | n | accuracy | missed defects (of the defects) | false alarms (of the OK parts) |",
              "|---|---:|---:|---:|---:|",
              _row("parent, new line", a["before"]["new_line"]), _row("adapted, new line", a["after"]["new_line"])]
    if a["replay"]:
        lines += [_row("parent, replayed line", a["before"]["replay"]),
                  _row("adapted, replayed line", a["after"]["replay"])]
    lines += ["", f"Intervals: {round(100 * LEVEL)} % Wilson score intervals, n = the photos behind each rate; "
              + ("the threshold was chosen on these photos, which flatters the adapted model a little."
                 if not tc.get("kept_from_parent", False) and a["mode"] == "held-out" else
                 "the model did not train on these photos and the threshold was not fitted to them."
                 if a["mode"] == "held-out" else
                 "in-sample: the model trained on these very photos, so they show fit, not accuracy on the line.")]
    if a["mode"] == "held-out" and a["split"].get("grouping") != "parts":
        lines.append("They are split from the training photos by near-duplicate photos, not by part: other photos of "
                     "a held-out part among the training ones flatter the after-figures; --group-by-part holds out "
                     "whole parts.")
    elif a["mode"] == "held-out":
        lines.append("Held out by part (--group-by-part): no photo of a held-out part was trained on.")
    return "\n".join(lines)


def main(argv=None) -> int:
    cfg = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from inspectkit.engine.adaptation import adapt
    from inspectkit.inference.checkpoint import load_checkpoint

    try:
        parent = load_checkpoint(cfg.checkpoint)
        ckpt = adapt(parent, cfg)
    except ValueError as exc:
        error("adapt.py", str(exc))
        return 2
    a = ckpt["metrics"]["adaptation"]
    print("\n" + report(ckpt, cfg.out))
    if a["data"]["skipped"]:
        print(f"\nskipped {a['data']['n_skipped']} unreadable photo(s):")
        for path, why in a["data"]["skipped"]:
            print(f"  {path}: {why}")
    print(json.dumps({"seconds": ckpt["metrics"]["timing"]["total_s"], "mode": a["mode"],
                      "outcome": a.get("outcome", "adapted")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
