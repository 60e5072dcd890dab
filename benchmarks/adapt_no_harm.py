"""Adapting a model on photos it already classifies perfectly should do no harm: the threshold stays, and the
verdicts on its own line do not move. Writes the JSON and Markdown report that docs/line_b.md and
docs/research/adaptation.md quote.

    python -m benchmarks.adapt_no_harm --checkpoint final_best_model.pt --per-class 50 \
        --json reports/line-b/adapt_no_harm.json --md reports/line-b/adapt_no_harm.md

1. The served model inspects every line-B photo; ``--per-class`` photos of each class that it classifies correctly
   (and not UNUSABLE) are drawn (seeded) and copied into a temporary folder-per-class tree (never committed).
2. ``adapt.py``'s defaults adapt the model to them (with its replay of the parent's line). With nothing to learn
   (the parent gets every one right) they keep the parent unchanged; ``--force`` adapts anyway, which measures
   what the recipe itself does to the parent's line.
3. The parent's and the adapted model's thresholds, and their verdicts on the casting test split, are compared
   (the test split chooses nothing here: it only counts what changed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inspectkit.inference.handler import InferenceHandler

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="final_best_model.pt")
    p.add_argument("--line-b", default=str(REPO.parent / "shared" / "data" / "casting-line-b"))
    p.add_argument("--casting", default=str(REPO.parent / "shared" / "data" / "casting"))
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="adapt.py --force: adapt even with nothing to learn")
    p.add_argument("--json", default="reports/line-b/adapt_no_harm.json")
    p.add_argument("--md", default="reports/line-b/adapt_no_harm.md")
    a = p.parse_args(argv)

    from inspectkit.data.folders import decode_all, load_folder
    from inspectkit.engine.adaptation import AdaptConfig, adapt
    from inspectkit.inference.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    parent = InferenceHandler(a.checkpoint)
    lb = load_folder(a.line_b, None, None, parent.class_names)
    res = parent.predict_batch([str(x) for x in lb.paths], heatmap=False, on_error="collect")
    rng = np.random.default_rng(a.seed)
    picked = []
    for c, name in enumerate(parent.class_names):
        good = [i for i, r in enumerate(res) if lb.labels[i] == c and r.label == name and r.verdict != "UNUSABLE"]
        picked += sorted(rng.permutation(good)[:a.per_class].tolist())
    work = Path(tempfile.mkdtemp(prefix="no-harm-"))
    try:
        for i in picked:
            dst = work / "data" / parent.class_names[int(lb.labels[i])]
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy(lb.paths[i], dst / lb.paths[i].name)
        t_adapt = time.perf_counter()
        cfg = AdaptConfig(data=str(work / "data"), checkpoint=str(a.checkpoint), out=str(work / "adapted.pt"),
                          force=a.force)
        ckpt = adapt(load_checkpoint(a.checkpoint), cfg)
        adapt_s = time.perf_counter() - t_adapt
        child = InferenceHandler(work / "adapted.pt")
        test = load_folder(a.casting, "test", None, parent.class_names)
        test, images = decode_all(test)
        before = parent.predict_batch(images, heatmap=False)
        after = child.predict_batch(images, heatmap=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    changed = [str(test.paths[i].relative_to(test.root)) for i, (x, y) in enumerate(zip(before, after))
               if x.verdict != y.verdict]
    names = parent.class_names

    def acc(rs):
        return round(float(np.mean([r.label == names[int(y)] for r, y in zip(rs, test.labels)])), 6)

    choice = ckpt["metrics"].get("threshold_choice") or {}
    out = {"checkpoint": str(a.checkpoint), "parent_sha256": parent.sha256, "per_class": a.per_class,
           "seed": a.seed, "force": a.force, "photos": len(picked), "parent_threshold": parent.threshold,
           "outcome": ckpt["metrics"]["adaptation"].get("outcome", "adapted"),
           "adapted_threshold": ckpt["threshold"], "threshold_unchanged": ckpt["threshold"] == parent.threshold,
           "threshold_choice": {k: choice.get(k) for k in ("applied", "why", "kept_from_parent")},
           "casting_test": {"n": len(images), "verdicts_changed": len(changed), "changed": changed,
                            "accuracy_before": acc(before), "accuracy_after": acc(after)},
           "adapt_seconds": round(adapt_s, 1), "seconds": round(time.perf_counter() - t0, 1)}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    md = "\n".join([
        "# Adapting on photos the model already classifies perfectly", "",
        f"Written by `python -m benchmarks.adapt_no_harm` on `{a.checkpoint}`: {len(picked)} line-B photos "
        f"({a.per_class} per class, seed {a.seed}) that it classified correctly, given to `adapt.py` "
        + ("with `--force`" if a.force else "with its defaults") + f": {out['outcome']}, in {out['adapt_seconds']} s "
        "(the ONNX export included).", "",
        "| | parent | after `adapt.py` |", "|---|---:|---:|",
        f"| threshold | {parent.threshold:.4f} | {ckpt['threshold']:.4f} |",
        f"| casting test split accuracy ({len(images)} photos) | {100 * out['casting_test']['accuracy_before']:.2f} % "
        f"| {100 * out['casting_test']['accuracy_after']:.2f} % |", "",
        f"Verdicts changed on the casting test split: **{len(changed)}**"
        + (f" ({', '.join(f'`{c}`' for c in changed)})" if changed else "") + ".",
        f"Threshold rule applied: {out['threshold_choice']['applied']}: {out['threshold_choice']['why']}.", ""])
    Path(a.md).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
