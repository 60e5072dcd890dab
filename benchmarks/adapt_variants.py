"""Adaptation recipes and threshold rules compared on development seeds of line B, before the learning curve.

    python -m benchmarks.adapt_variants --seeds 100 --variants early-stop fixed --out runs/av/s100.json
    python -m benchmarks.adapt_variants --merge runs/av/s100.json runs/av/s101.json --out reports/line-b/adapt_variants

Each (seed, variant) adapts the checkpoint with ``--per-class`` photos per class of the line, drawn as
``benchmarks/learning_curve.py`` draws them but from development seeds (100 and up) that the curve does not use,
and scores the line's photos it did not use. Every threshold rule is then applied to the same scores, so rules
are compared on identical models. The scored photos overlap those of the curve's seeds: the curve measured after
this choice is not independent of it, and docs/research/adaptation.md says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from benchmarks.learning_curve import _link_subset, class_order, draw
from inspectkit.data import folders as D
from inspectkit.engine.adaptation import AdaptConfig, adapt, fallback_threshold
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint, weights_digest
from inspectkit.metrics import choose_threshold, roc_auc
from inspectkit.model import predict_probs

#: the first recipes' rates, without the pull towards the parent (AdaptConfig's defaults until the forgetting round)
FIRST = {"lr1": 1e-3, "lr2": 3e-4, "anchor": 0.0}
#: the third recipe (AdaptConfig's defaults since the forgetting round)
THIRD = {"keep": "last", "lr1": 5e-4, "lr2": 1.5e-4, "anchor": 1.0, "members": 1, "balance_lines": False, "views": 8,
         "size": 0, "val_fraction": 0.3, "replay_val_fraction": 0.3, "aug_strength": 0.0, "aug_rotation": 0.0}
#: recipe name -> AdaptConfig fields, all spelled out so a name means the same runs whatever the defaults become
VARIANTS = {
    "early-stop": {**FIRST, "keep": "best"},
    "fixed": {**FIRST, "keep": "last"},
    "fixed-replay50": {**FIRST, "keep": "last", "replay_per_class": 50},
    "fixed-replay300": {**FIRST, "keep": "last", "replay_per_class": 300},
    # against forgetting the parent's line (issue 15's casting goal), measured with --line-a-val
    "fixed-anchor0.1": {**FIRST, "keep": "last", "anchor": 0.1},
    "fixed-anchor1": {**FIRST, "keep": "last", "anchor": 1.0},
    "fixed-blocks1": {**FIRST, "keep": "last", "last_blocks": 1},
    "fixed-lr-half": {"keep": "last", "lr1": 5e-4, "lr2": 1.5e-4, "anchor": 0.0},
    "fixed-lr-quarter": {"keep": "last", "lr1": 2.5e-4, "lr2": 7.5e-5, "anchor": 0.0},
    "fixed-lr-half-anchor1": {**THIRD},  # the defaults now
    # adaptation round 4: more of the new line's signal at 50 photos per class, each on top of the third recipe
    "third-balance": {**THIRD, "balance_lines": True},
    "third-members2": {**THIRD, "members": 2},
    "third-views16": {**THIRD, "views": 16},
    # adaptation round 6: a larger input, so that pinholes near the rim (most of the misses) keep more pixels
    "third-size288": {**THIRD, "size": 288},
    "third-size320": {**THIRD, "size": 320},
    # adaptation round 7: more of the network, or longer, learns the new line (blocks1 learnt it worst of all)
    "third-blocks12": {**THIRD, "last_blocks": 12},
    "third-s2e20": {**THIRD, "stage2_epochs": 20},
    # adaptation round 9: the new line's defects weigh more in the loss (most of its errors are missed defects)
    "third-dw2": {**THIRD, "defect_weight": 2.0},
    "third-dw4": {**THIRD, "defect_weight": 4.0},
    "third-dw8": {**THIRD, "defect_weight": 8.0},  # the default since round 9
    # adaptation round 10: train on more of the labelled photos (fewer of the new line's held out; the replayed
    # line's split unchanged), and a smaller weight against round 9's false alarms
    "third-dw8-val0.2": {**THIRD, "defect_weight": 8.0, "val_fraction": 0.2},
    "third-dw8-val0.1": {**THIRD, "defect_weight": 8.0, "val_fraction": 0.1},
    "third-dw4-val0.1": {**THIRD, "defect_weight": 4.0, "val_fraction": 0.1},
    # adaptation round 11: wider augmentation, for the new line's parts no label shows (where the errors are): any
    # turn of the part, every range half as wide again, or both
    "third-dw8-val0.1-rot180": {**THIRD, "defect_weight": 8.0, "val_fraction": 0.1, "aug_rotation": 180.0},
    "third-dw8-val0.1-aug1.5": {**THIRD, "defect_weight": 8.0, "val_fraction": 0.1, "aug_strength": 1.5},
    "third-dw8-val0.1-rot180-aug1.5": {**THIRD, "defect_weight": 8.0, "val_fraction": 0.1, "aug_rotation": 180.0,
                                       "aug_strength": 1.5},
}

log = logging.getLogger("adapt_variants")

#: threshold rules by name: adapt.py's --threshold auto, where validation cannot check the recall target, was the
#: parent's threshold until adaptation round 5 and is the lower of it and 0.5 since (for J, at 0.603: 0.5)
PARENT = "parent's threshold (adapt.py's auto until adaptation round 5)"
LOWER = "lower of parent's and 0.5 (adapt.py's auto since adaptation round 5)"


def rules(run: dict, target_recall: float) -> dict:
    """Threshold of each rule from the run's validation scores (and its parent)."""
    v = run["validation_scores"]
    s, y, new = (np.asarray(v[k]) for k in ("defect", "is_defect", "new_line"))
    out = {"validation rule, both lines": choose_threshold(y, s, target_recall)["threshold"],
           PARENT: run["parent_threshold"], LOWER: fallback_threshold(run["parent_threshold"])}
    if y[new].any() and (~y[new]).any():
        out["validation rule, new line only"] = choose_threshold(y[new], s[new], target_recall)["threshold"]
    return out


def counts(scores: dict, t: float, key: str = "defect") -> dict:
    """Accuracy, missed defects and false alarms of the scores under ``key`` at threshold ``t``."""
    s, y = np.asarray(scores[key]), np.asarray(scores["is_defect"])
    pred = s >= t
    return {"accuracy": float((pred == y).mean()), "missed_defects": int((~pred & y).sum()),
            "false_alarms": int((pred & ~y).sum())}


def accuracy(run: dict, t: float) -> dict:
    """:func:`counts` on the line's photos the run did not use."""
    return counts(run["rest"], t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/j/model.pt")
    p.add_argument("--line", default="../shared/data/casting-line-b")
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                   help="recipes to run (default: all), or with --merge the only ones to report")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/av/work")
    p.add_argument("--out", required=True, help="a JSON file (runs), or with --merge the stem of OUT.{json,md}")
    p.add_argument("--merge", nargs="+", metavar="JSON")
    p.add_argument("--paired", action="store_true",
                   help="with --merge: also tabulate, model by model, adapt.py's two fallback thresholds against "
                        "each other")
    p.add_argument("--line-a-val", action="store_true",
                   help="also score the parent's own validation split of its line (forgetting, without the casting "
                        "test split), less any photo the run replayed")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.merge:
        return merge(a)
    import torch

    torch.set_num_threads(a.threads)
    parent = load_checkpoint(a.checkpoint)
    names, d = parent["class_names"], parent["defect_index"]
    line = D.load_folder(a.line, None, names[d], names)
    line, images = D.decode_all(line)
    line_a = None
    if a.line_a_val:
        from inspectkit.engine.training import validation_split

        ds_a, images_a = D.decode_all(validation_split(parent, parent["train_config"]["data"]))
        parent_a = predict_probs(model_from_checkpoint(parent), images_a, parent["preprocessing"])[:, d]
        line_a = (ds_a, images_a, parent_a)
    runs = []
    for seed in a.seeds:
        used, rest = draw(class_order(line.labels, len(names), seed), a.per_class, len(line))  # the curve's draw
        folder = _link_subset(line, used, Path(a.work) / f"s{seed}" / f"n{a.per_class}")
        for name in a.variants or list(VARIANTS):
            # every recipe before adaptation round 9 weighed defects and OK photos the same
            cfg = AdaptConfig(data=str(folder), checkpoint=a.checkpoint, out="", seed=seed, threads=a.threads,
                              **{"defect_weight": 1.0, **VARIANTS[name]})
            t0 = time.perf_counter()
            ck = adapt(parent, cfg, save=False)
            secs = time.perf_counter() - t0
            probs = predict_probs(model_from_checkpoint(ck), [images[i] for i in rest], ck["preprocessing"])[:, d]
            is_def = line.labels[rest] == d
            ad = ck["metrics"]["adaptation"]
            runs.append({"seed": seed, "per_class": a.per_class, "variant": name, "seconds": round(secs, 1),
                         "threshold": ck["threshold"], "parent_threshold": parent["threshold"],
                         "target_recall": (parent.get("train_config") or {}).get("target_recall", 0.995),
                         "roc_auc": roc_auc(is_def, probs), "validation_scores": ad["validation_scores"],
                         "rest": {"defect": [round(float(x), 6) for x in probs], "is_defect": is_def.tolist()}})
            if line_a is not None:
                runs[-1]["line_a_val"] = _score_line_a(line_a, parent, cfg, ck, d)
            log.info("seed %d %s: AUC %.4f, accuracy %.4f at its threshold %.3f, %.0fs", seed, name,
                     runs[-1]["roc_auc"], accuracy(runs[-1], ck["threshold"])["accuracy"], ck["threshold"], secs)
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps({"checkpoint": a.checkpoint,
                                               "parent_weights_sha256": weights_digest(parent["state_dict"]),
                                               "runs": runs}))
    return 0


def _score_line_a(line_a, parent: dict, cfg: AdaptConfig, ck: dict, d: int) -> dict:
    """The adapted model on the parent's validation split, less the photos this run replayed (it trained on them)."""
    from inspectkit.engine.adaptation import replay_pool

    ds, images, parent_probs = line_a
    pool = replay_pool(parent, cfg)
    replayed = set() if pool is None else {p.resolve() for p in pool.paths}
    keep = [i for i, p in enumerate(ds.paths) if p.resolve() not in replayed]
    probs = predict_probs(model_from_checkpoint(ck), [images[i] for i in keep], ck["preprocessing"])[:, d]
    return {"defect": [round(float(x), 6) for x in probs], "is_defect": (ds.labels[keep] == d).tolist(),
            "parent_defect": [round(float(parent_probs[i]), 6) for i in keep],
            "left_out_replayed": len(ds) - len(keep)}


def merge(a) -> int:
    """Every (variant, rule) pair on the joined runs: accuracy on the unused photos, mean and range over seeds."""
    docs = [json.loads(Path(f).read_text()) for f in a.merge]
    runs = [r for doc in docs for r in doc["runs"] if not a.variants or r["variant"] in a.variants]
    table = {}
    for r in runs:
        for rule, t in rules(r, r["target_recall"]).items():
            table.setdefault((r["variant"], rule), []).append({"seed": r["seed"], "threshold": t, **accuracy(r, t),
                                                               "roc_auc": r["roc_auc"], "seconds": r["seconds"]})
    summary = [{"variant": v, "rule": rule, "seeds": [x["seed"] for x in xs],
                "accuracy_mean": float(np.mean([x["accuracy"] for x in xs])),
                "accuracy_min": min(x["accuracy"] for x in xs), "accuracy_max": max(x["accuracy"] for x in xs),
                "missed_mean": float(np.mean([x["missed_defects"] for x in xs])),
                "false_alarms_mean": float(np.mean([x["false_alarms"] for x in xs])),
                "roc_auc_mean": float(np.mean([x["roc_auc"] for x in xs])),
                "thresholds": [round(x["threshold"], 4) for x in xs], "runs": xs}
               for (v, rule), xs in table.items()]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ("python -m benchmarks.adapt_variants --merge " + " ".join(a.merge)
           + (" --variants " + " ".join(a.variants) if a.variants else "") + (" --paired" if a.paired else "")
           + f" --out {a.out}")
    forgetting = _forgetting(runs)
    paired = _paired(runs)
    doc = {"command": cmd, "inputs": a.merge, "summary": summary, "lower_against_parent": paired}
    if forgetting:
        doc["line_a_validation"] = forgetting
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = ["# Adaptation recipes and threshold rules (development seeds)", "", f"`{cmd}`", "",
             "Accuracy on the line-B photos not used for adaptation, mean over seeds [min, max].", "",
             "| recipe | threshold rule | seeds | accuracy | missed / false alarms | ROC-AUC | thresholds |",
             "|---|---|---:|---:|---:|---:|---|"]
    for s in summary:
        lines.append(f"| {s['variant']} | {s['rule']} | {len(s['seeds'])} | {100 * s['accuracy_mean']:.2f} % "
                     f"[{100 * s['accuracy_min']:.1f}, {100 * s['accuracy_max']:.1f}] | {s['missed_mean']:.1f} / "
                     f"{s['false_alarms_mean']:.1f} | {s['roc_auc_mean']:.4f} | "
                     f"{', '.join(f'{t:.3f}' for t in s['thresholds'])} |")
    if forgetting:
        lines += ["", "The parent's own line: its validation split, less the photos each run replayed, at the adapted "
                  "model's threshold (mean over seeds; the parent's own figure on the same photos beside it).", "",
                  "| recipe | seeds | photos | accuracy | missed / false alarms | parent: accuracy |",
                  "|---|---:|---:|---:|---:|---:|"]
        for f in forgetting:
            lines.append(f"| {f['variant']} | {f['seeds']} | {f['n_mean']:.0f} | {100 * f['accuracy_mean']:.2f} % | "
                         f"{f['missed_mean']:.1f} / {f['false_alarms_mean']:.1f} | "
                         f"{100 * f['parent_accuracy_mean']:.2f} % |")
    if a.paired and paired["models"]:
        p = paired
        lines += ["", f"Model by model, the lower of the parent's threshold and 0.5 against the parent's threshold, "
                  f"over all {p['models']} adapted models above:", "",
                  "| models | fewer line-B errors | more | as many | line-B errors fewer a model | "
                  "line-A errors: parent's / lower |", "|---:|---:|---:|---:|---:|---:|",
                  f"| {p['models']} | {p['better']} | {p['worse']} | {p['tie']} | "
                  f"{p['line_b_errors_saved_mean']:.2f} | "
                  f"{p['line_a_errors_parent'] if p['line_a_models'] else '-'} / "
                  f"{p['line_a_errors_lower'] if p['line_a_models'] else '-'} |"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _errors(scores: dict, t: float) -> int:
    c = counts(scores, t)
    return c["missed_defects"] + c["false_alarms"]


def _paired(runs: list[dict]) -> dict:
    """adapt.py's two fallback thresholds on the same models: how often the lower of the parent's and 0.5 makes
    fewer or more errors on the unused line-B photos than the parent's, and (where scored) on line A's validation."""
    diffs = [_errors(r["rest"], r["parent_threshold"]) - _errors(r["rest"], fallback_threshold(r["parent_threshold"]))
             for r in runs]
    with_a = [r for r in runs if "line_a_val" in r]
    return {"models": len(runs), "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
            "tie": sum(d == 0 for d in diffs), "line_b_errors_saved_mean": float(np.mean(diffs)) if diffs else 0.0,
            "line_a_models": len(with_a),
            "line_a_errors_parent": sum(_errors(r["line_a_val"], r["parent_threshold"]) for r in with_a),
            "line_a_errors_lower": sum(_errors(r["line_a_val"], fallback_threshold(r["parent_threshold"]))
                                       for r in with_a)}


def _forgetting(runs: list[dict]) -> list[dict]:
    """Per recipe, the runs' accuracy on the parent's validation split at their own threshold (and the parent's), and
    their total errors there at adapt.py's threshold now."""
    out = []
    for v in dict.fromkeys(r["variant"] for r in runs if "line_a_val" in r):
        rs = [r for r in runs if r["variant"] == v and "line_a_val" in r]
        acc, par, missed, fa, n = [], [], [], [], []
        for r in rs:
            c = counts(r["line_a_val"], r["threshold"])
            acc.append(c["accuracy"])
            missed.append(c["missed_defects"])
            fa.append(c["false_alarms"])
            n.append(len(r["line_a_val"]["is_defect"]))
            par.append(counts(r["line_a_val"], r["parent_threshold"], key="parent_defect")["accuracy"])
        out.append({"variant": v, "seeds": len(rs), "n_mean": float(np.mean(n)), "accuracy_mean": float(np.mean(acc)),
                    "missed_mean": float(np.mean(missed)), "false_alarms_mean": float(np.mean(fa)),
                    "parent_accuracy_mean": float(np.mean(par)),
                    # at adapt.py's threshold today (the lower of the parent's and 0.5), whatever the run used then
                    "errors_at_lower": sum(_errors(r["line_a_val"], fallback_threshold(r["parent_threshold"]))
                                           for r in rs)})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
