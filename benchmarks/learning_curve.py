"""Learning curve of adaptation to line B: photos per class against accuracy on the line-B photos not used, and on
the casting test split (forgetting). Writes JSON, markdown and a plot.

    python -m benchmarks.learning_curve --checkpoint final_best_model.pt --line ../shared/data/casting-line-b \
        --casting ../shared/data/casting --sizes 10 25 50 100 200 --seeds 0 1 2 --out reports/line-b/learning_curve

For each seed, every class of the line is shuffled once; size n uses the first n photos of each class (so the sets
are nested) and every model of that (seed, n) is measured on the same remaining photos. Per (seed, n):
- ``parent``: the checkpoint as it is;
- ``bn``: the parent with only its batch-norm statistics re-estimated on the n-per-class photos (no labels);
- ``adapted``: ``adapt.py`` on those photos (its own held-out split, threshold and replay of the parent's line);
- ``adapted_no_replay`` (sizes in ``--no-replay-at``): the same without replay, to measure what replay keeps;
- ``adapted_uncertain`` (sizes in ``--uncertain-at``): the same budget (2n labels), but the photos to label picked as
  the app's *Label these next* list would: the pool in the parent's review order (most uncertain first,
  :func:`inspectkit.review.review_order` at its threshold), topped up per class to ``adapt.py``'s minimum.

``--eval-fraction F`` (F > 0) fixes, per seed, the last F of every class's shuffled photos as the evaluation set:
every model of that seed, at every size and however its photos were picked, is measured on those same photos, and
the photos to label are drawn from the rest (the pool). Without it (the first curves), each size is measured on all
the photos it did not use.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from inspectkit.data import folders as D
from inspectkit.engine.adaptation import MIN_PHOTOS_PER_CLASS, AdaptConfig, adapt, recalibrate_batchnorm
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint, weights_digest
from inspectkit.metrics import classification_report
from inspectkit.model import predict_probs
from inspectkit.review import review_order

KEYS = ("n", "accuracy", "roc_auc", "missed_defects", "false_alarms")
log = logging.getLogger("learning_curve")


def _short(r: dict) -> dict:
    return {k: r[k] for k in KEYS}


def _measure(ckpt, model, sets, scores: bool = False) -> dict:
    """Reports of ``model`` (at the checkpoint's threshold) on each named (images, labels) set; with ``scores``, also
    every photo's p(defect) under ``scores`` (so another threshold rule can be applied later without retraining)."""
    out, kept = {}, {}
    for name, (images, labels) in sets.items():
        p = predict_probs(model, images, ckpt["preprocessing"])
        out[name] = _short(classification_report(labels, p, ckpt["class_names"], ckpt["defect_index"],
                                                 ckpt["threshold"]))
        if scores:
            kept[name] = [round(float(x), 6) for x in p[:, ckpt["defect_index"]]]
    return {**out, "scores": kept} if scores else out


def class_order(labels: np.ndarray, n_classes: int, seed: int) -> dict[int, list[int]]:
    """Every class's indices shuffled once for ``seed``: size n takes the first n of each (nested sets)."""
    rng = np.random.default_rng(1000 + seed)
    return {c: rng.permutation(np.nonzero(labels == c)[0]).tolist() for c in range(n_classes)}


def draw(order: dict[int, list[int]], n: int, total: int) -> tuple[list[int], np.ndarray]:
    """(the photos used for adaptation: the first n of each class, the rest) as sorted indices."""
    used = sorted(i for c in order for i in order[c][:n])
    return used, np.setdiff1d(np.arange(total), used)


def split_pool(order: dict[int, list[int]], eval_fraction: float) -> tuple[dict[int, list[int]], np.ndarray]:
    """(each class's pool in its shuffled order, the evaluation indices): the last ``eval_fraction`` of every class's
    order is evaluation; 0 keeps every photo in the pool (and no fixed evaluation set)."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    pool, held = {}, []
    for c, idx in order.items():
        k = int(round(eval_fraction * len(idx)))
        pool[c], held = idx[:len(idx) - k], held + idx[len(idx) - k:]
    return pool, np.array(sorted(held), dtype=int)


def uncertain_pick(pool: list[int], labels: np.ndarray, p_defect: np.ndarray, threshold: float, budget: int,
                   min_per_class: int) -> list[int]:
    """The ``budget`` photos of ``pool`` the parent is least sure of (the app's *Label these next* order at its
    threshold), then each class topped up with its next most uncertain photos to ``min_per_class`` (adapt.py needs
    that many; a person would label a few more of the rarer class). Sorted indices."""
    ranked = [pool[i] for i in review_order(p_defect[pool].tolist(), threshold)]
    picked = ranked[:budget]
    for c in np.unique(labels[pool]):
        have = sum(1 for i in picked if labels[i] == c)
        more = [i for i in ranked[budget:] if labels[i] == c][:max(0, min_per_class - have)]
        picked += more
    return sorted(picked)


def parent_errors(labels: np.ndarray, p_line: np.ndarray, idx: list[int], names: list[str], d: int,
                  threshold: float) -> int:
    """The parent's errors on the photos ``idx`` given to adapt.py: with none, adapt.py keeps the parent
    (:func:`inspectkit.engine.adaptation.nothing_to_learn`) unless forced."""
    r = classification_report(labels[idx], p_line[idx], names, d, threshold)
    return int(round((1 - r["accuracy"]) * r["n"]))


def gate_check(a, parent: dict, line: D.Dataset, p_line: np.ndarray) -> int:
    """``--parent-errors``: the parent's errors on every labelled set the given seeds and sizes draw (random and,
    at ``--uncertain-at``, uncertainty-picked), without adapting; written to OUT.json. A run of an earlier curve
    whose set holds an error is unchanged by adapt.py's nothing-to-learn check."""
    names, d, thr = parent["class_names"], parent["defect_index"], parent["threshold"]
    rows = []
    for seed in a.seeds:
        order, _ = split_pool(class_order(line.labels, len(names), seed), a.eval_fraction)
        pool = sorted(i for c in order for i in order[c])
        for n in a.sizes:
            used = sorted(i for c in order for i in order[c][:n])
            row = {"seed": seed, "per_class": n, "random": parent_errors(line.labels, p_line, used, names, d, thr)}
            if n in a.uncertain_at:
                picked = uncertain_pick(pool, line.labels, p_line[:, d], thr, 2 * n, MIN_PHOTOS_PER_CLASS)
                row["uncertain"] = parent_errors(line.labels, p_line, picked, names, d, thr)
            rows.append(row)
    least = min(min(v for k, v in r.items() if k in ("random", "uncertain")) for r in rows)
    out = {"command": "python -m benchmarks.learning_curve " + " ".join(sys.argv[1:]), "checkpoint": a.checkpoint,
           "eval_fraction": a.eval_fraction, "rows": rows, "fewest_errors": least,
           "nothing_to_learn_runs": sum(1 for r in rows for k in ("random", "uncertain") if r.get(k) == 0)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{a.out}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


def _link_subset(ds: D.Dataset, idx: list[int], folder: Path) -> Path:
    for i in idx:
        cls = ds.class_names[ds.labels[i]]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        dst = folder / cls / ds.paths[i].name
        if not dst.exists():
            os.symlink(ds.paths[i].resolve(), dst)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="final_best_model.pt")
    p.add_argument("--line", default="../shared/data/casting-line-b", help="the new line (folder-per-class)")
    p.add_argument("--casting", default="../shared/data/casting", help="the parent's data (its test/ split measures forgetting)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--no-replay-at", type=int, nargs="*", default=[50])
    p.add_argument("--uncertain-at", type=int, nargs="*", default=[],
                   help="sizes at which the photos to label are also picked by the parent's review order")
    p.add_argument("--eval-fraction", type=float, default=0.0,
                   help="per seed, this fraction of every class is the fixed evaluation set (0: all unused photos)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", choices=("last", "best"), default=AdaptConfig.keep,
                   help="adapt.py's --keep: 'best' is the first recipe (early stopping on the few validation photos)")
    p.add_argument("--lr1", type=float, default=AdaptConfig.lr1, help="adapt.py's --lr1")
    p.add_argument("--lr2", type=float, default=AdaptConfig.lr2, help="adapt.py's --lr2")
    p.add_argument("--anchor", type=float, default=AdaptConfig.anchor,
                   help="adapt.py's --anchor; the second recipe's curve: --lr1 1e-3 --lr2 3e-4 --anchor 0")
    p.add_argument("--size", type=int, default=AdaptConfig.size,
                   help="adapt.py's --size (0: the parent's input size)")
    p.add_argument("--defect-weight", type=float, default=AdaptConfig.defect_weight,
                   help="adapt.py's --defect-weight; the curves before adaptation round 9: 1")
    p.add_argument("--val-fraction", type=float, default=AdaptConfig.val_fraction,
                   help="adapt.py's --val-fraction (the share of the labelled photos held out); the curves before "
                        "adaptation round 10: 0.3")
    p.add_argument("--aug-rotation", type=float, default=AdaptConfig.aug_rotation,
                   help="adapt.py's --aug-rotation (0: the parent's range, as every curve before adaptation round 11)")
    p.add_argument("--aug-strength", type=float, default=AdaptConfig.aug_strength,
                   help="adapt.py's --aug-strength (0: the parent's, as every curve before adaptation round 11)")
    p.add_argument("--work", default="runs/learning-curve", help="folder for the per-run photo subsets")
    p.add_argument("--out", default="reports/line-b/learning_curve", help="writes OUT.json, OUT.md and OUT.png")
    p.add_argument("--parent-errors", action="store_true",
                   help="instead of adapting: the parent's errors on each labelled set the seeds and sizes draw "
                        "(adapt.py keeps the parent when there are none), written to OUT.json")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="instead of running: join the runs of these outputs (e.g. seeds run as parallel jobs) into OUT")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.merge:
        return merge(a)
    if a.uncertain_at and not a.eval_fraction:
        p.error("--uncertain-at needs --eval-fraction > 0: both ways of picking are measured on the same photos")
    import torch

    torch.set_num_threads(a.threads)
    parent = load_checkpoint(a.checkpoint)
    digest = weights_digest(parent["state_dict"])
    names = parent["class_names"]
    line = D.load_folder(a.line, None, names[parent["defect_index"]], names)
    line, line_images = D.decode_all(line)
    test = D.load_folder(a.casting, "test", names[parent["defect_index"]], names)
    test, test_images = D.decode_all(test)
    base_model = model_from_checkpoint(parent)
    spec = parent["preprocessing"]
    p_line = predict_probs(base_model, line_images, spec)
    if a.parent_errors:
        return gate_check(a, parent, line, p_line)
    base_test = _measure(parent, base_model, {"casting_test": (test_images, test.labels)})["casting_test"]
    rows = []
    t_all = time.perf_counter()
    d = parent["defect_index"]
    for seed in a.seeds:
        order, held = split_pool(class_order(line.labels, len(names), seed), a.eval_fraction)
        pool = sorted(i for c in order for i in order[c])
        for n in a.sizes:
            if a.eval_fraction:
                used, rest = sorted(i for c in order for i in order[c][:n]), held
            else:
                used, rest = draw(order, n, len(line))
            rest_images, rest_labels = [line_images[i] for i in rest], line.labels[rest]
            sets = {"line_rest": (rest_images, rest_labels), "casting_test": (test_images, test.labels)}
            row = {"seed": seed, "per_class": n, "used": len(used),
                   "parent_errors_used": parent_errors(line.labels, p_line, used, names, d, parent["threshold"])}
            row["parent"] = {"line_rest": _short(classification_report(
                rest_labels, p_line[rest], names, parent["defect_index"], parent["threshold"])),
                "casting_test": base_test}
            bn_model = recalibrate_batchnorm(copy.deepcopy(base_model), [line_images[i] for i in used], spec)
            row["bn"] = _measure(parent, bn_model, sets)
            folder = _link_subset(line, used, Path(a.work) / f"s{seed}" / f"n{n}")
            variants = [("adapted", "auto", folder)]
            if n in a.no_replay_at:
                variants.append(("adapted_no_replay", "none", folder))
            if n in a.uncertain_at:
                picked = uncertain_pick(pool, line.labels, p_line[:, d], parent["threshold"], 2 * n,
                                        MIN_PHOTOS_PER_CLASS)
                row["uncertain_used"] = {names[c]: int((line.labels[picked] == c).sum()) for c in range(len(names))}
                row["uncertain_defects"] = row["uncertain_used"][names[d]]
                variants.append(("adapted_uncertain", "auto",
                                 _link_subset(line, picked, Path(a.work) / f"s{seed}" / f"n{n}-uncertain")))
            for key, replay, folder in variants:
                cfg = AdaptConfig(data=str(folder), checkpoint=a.checkpoint, out="", seed=seed, replay=replay,
                                  threads=a.threads, keep=a.keep, lr1=a.lr1, lr2=a.lr2, anchor=a.anchor,
                                  size=a.size, defect_weight=a.defect_weight, val_fraction=a.val_fraction,
                                  aug_rotation=a.aug_rotation, aug_strength=a.aug_strength)
                t0 = time.perf_counter()
                ck = adapt(parent, cfg, save=False)
                secs = time.perf_counter() - t0
                m = model_from_checkpoint(ck)
                ad = ck["metrics"]["adaptation"]
                row[key] = {**_measure(ck, m, sets, scores=True), "seconds": round(secs, 1),
                            "threshold": ck["threshold"], "mode": ad["mode"],
                            "validation_new_line": ad["after"]["new_line"].get("accuracy"),
                            "validation_n": ad["after"]["new_line"].get("n")}
            log.info("seed %d n %d: parent %.4f bn %.4f adapted %.4f (casting test %.4f) in %.0fs", seed, n,
                     row["parent"]["line_rest"]["accuracy"], row["bn"]["line_rest"]["accuracy"],
                     row["adapted"]["line_rest"]["accuracy"], row["adapted"]["casting_test"]["accuracy"],
                     row["adapted"]["seconds"])
            rows.append(row)
            write(a, digest, rows, time.perf_counter() - t_all)  # after every run: a cut job keeps what it measured
    return 0


#: what makes two outputs one curve, with the value an output that predates the key ran with: early stopping, at
#: the parent's size, every line-B photo in the pool, defects weighing as OK photos
RECIPE = {"keep": "best", "size": 0, "eval_fraction": 0.0, "defect_weight": 1.0, "val_fraction": 0.3,
          "aug_rotation": 0.0, "aug_strength": 0.0}


def merge(a) -> int:
    """Join the runs of several outputs of this script (same checkpoint and data; a (seed, size) once) into OUT."""
    docs = [json.loads(Path(f).read_text()) for f in a.merge]
    if len({d["parent_weights_sha256"] for d in docs}) != 1 or len({(d["line"], d["casting"]) for d in docs}) != 1:
        raise SystemExit("learning_curve.py: error: --merge needs outputs of one checkpoint on the same data")
    rows, seen = [], set()
    for d in docs:
        for r in d["runs"]:
            key = (r["seed"], r["per_class"])
            if key in seen:
                raise SystemExit(f"learning_curve.py: error: seed {key[0]}, {key[1]} per class is in two outputs")
            seen.add(key)
            rows.append(r)
    if len({tuple(d.get(k, v) for k, v in RECIPE.items()) for d in docs}) != 1:
        raise SystemExit("learning_curve.py: error: --merge needs outputs of one recipe and protocol "
                         f"({', '.join('--' + k.replace('_', '-') for k in RECIPE)})")
    rows.sort(key=lambda r: (r["seed"], r["per_class"]))
    a.checkpoint, a.line, a.casting = docs[0]["checkpoint"], docs[0]["line"], docs[0]["casting"]
    for k, v in RECIPE.items():
        setattr(a, k, docs[0].get(k, v))
    write(a, docs[0]["parent_weights_sha256"], rows, sum(d["seconds"] for d in docs),
          commands=[d["command"] for d in docs])
    return 0


def summarise(rows: list[dict]) -> list[dict]:
    """Mean, min and max over seeds for each size and model."""
    out = []
    for n in sorted({r["per_class"] for r in rows}):
        rs = [r for r in rows if r["per_class"] == n]
        s = {"per_class": n, "seeds": len(rs)}
        for model in ("parent", "bn", "adapted", "adapted_no_replay", "adapted_uncertain"):
            have = [r[model] for r in rs if model in r]
            if not have:
                continue
            s[model] = {}
            for where in ("line_rest", "casting_test"):
                acc = [h[where]["accuracy"] for h in have]
                s[model][where] = {"accuracy_mean": float(np.mean(acc)), "accuracy_min": float(np.min(acc)),
                                   "accuracy_sd": float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0,
                                   "accuracy_max": float(np.max(acc)),
                                   "missed_mean": float(np.mean([h[where]["missed_defects"] for h in have])),
                                   "false_alarms_mean": float(np.mean([h[where]["false_alarms"] for h in have])),
                                   "roc_auc_mean": float(np.mean([h[where]["roc_auc"] for h in have]))}
            if "threshold" in have[0]:
                s[model]["threshold_min"] = float(min(h["threshold"] for h in have))
                s[model]["threshold_max"] = float(max(h["threshold"] for h in have))
            if "seconds" in have[0]:
                s[model]["seconds_mean"] = float(np.mean([h["seconds"] for h in have]))
        paired = [r for r in rs if "adapted_uncertain" in r]
        if paired:  # the same seeds' evaluation photos: uncertain picks minus random ones, seed by seed
            diff = [r["adapted_uncertain"]["line_rest"]["accuracy"] - r["adapted"]["line_rest"]["accuracy"]
                    for r in paired]
            s["uncertain_minus_random"] = {"mean": float(np.mean(diff)), "min": float(np.min(diff)),
                                           "max": float(np.max(diff)), "seeds": len(diff),
                                           "better": int(sum(x > 0 for x in diff)),
                                           "worse": int(sum(x < 0 for x in diff)),
                                           "labels": float(np.mean([sum(r["uncertain_used"].values())
                                                                    for r in paired])),
                                           "defects_picked_mean": float(np.mean(
                                               [r["uncertain_defects"] for r in paired]))}
        out.append(s)
    return out


def write(a, parent_digest: str, rows, seconds, commands: list[str] | None = None) -> None:
    """OUT.json (every run and the summary), OUT.md (tables) and OUT.png (the curve)."""
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    command = "python -m benchmarks.learning_curve " + " ".join(sys.argv[1:])
    doc = {"command": command, **({"merged_from": commands} if commands else {}),
           "checkpoint": a.checkpoint, "parent_weights_sha256": parent_digest, "keep": a.keep,
           "size": a.size, "eval_fraction": a.eval_fraction, "defect_weight": a.defect_weight,
           "val_fraction": a.val_fraction, "aug_rotation": a.aug_rotation, "aug_strength": a.aug_strength,
           "line": a.line, "casting": a.casting, "seconds": round(seconds, 1), "summary": summary, "runs": rows}
    D.save_json(doc, out.with_suffix(".json"))
    lines = ["# Adapting to line B: the learning curve", "",
             *[f"    {c}" for c in (commands or [])], "" if commands else "",
             f"`{doc['command']}`", "",
             "Accuracy on the line-B photos **not used** for adaptation (mean over seeds, [min, max]), and on the "
             "casting test split (forgetting). parent: the model as it is; bn: batch-norm statistics re-estimated on the "
             "unlabelled photos; adapted: `adapt.py` with replay of line A" + (f", at {a.size} px" if a.size else "")
             + (f", the new line's defects weighing {a.defect_weight:g} times in the loss"
                if a.defect_weight != RECIPE["defect_weight"] else "")
             + (f", {a.val_fraction:g} of the labelled photos held out" if a.val_fraction != RECIPE["val_fraction"]
                else "")
             + (f", views turned by up to {a.aug_rotation:g} degrees" if a.aug_rotation != RECIPE["aug_rotation"]
                else "")
             + (f", augmentation ranges {a.aug_strength:g} times the parent's" if a.aug_strength != RECIPE["aug_strength"]
                else "")
             + "; no replay: the same without it." + (
                 f" Each seed's models are measured on the same photos: the last {a.eval_fraction:g} of every class "
                 "in the seed's shuffle, never labelled; the photos to label come from the rest." if a.eval_fraction
                 else "") + " adapt s: the mean seconds of one adaptation as the run measured it (other jobs may "
             "have shared the machine; `benchmarks/adapt_time.py` measures the time on a quiet one).", "",
             "| photos per class | seeds | parent | bn | adapted | adapted, casting test | no replay | no replay, casting test | adapt s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(s, model, where):
        if model not in s:
            return "-"
        v = s[model][where]
        return f"{100 * v['accuracy_mean']:.2f} % [{100 * v['accuracy_min']:.1f}, {100 * v['accuracy_max']:.1f}]"

    for s in summary:
        lines.append(f"| {s['per_class']} | {s['seeds']} | {f(s, 'parent', 'line_rest')} | {f(s, 'bn', 'line_rest')} | "
                     f"{f(s, 'adapted', 'line_rest')} | {f(s, 'adapted', 'casting_test')} | "
                     f"{f(s, 'adapted_no_replay', 'line_rest')} | {f(s, 'adapted_no_replay', 'casting_test')} | "
                     f"{s['adapted']['seconds_mean']:.0f} |")
    lines += ["", "Missed defects and false alarms on the unused line-B photos (mean over seeds):", "",
              "| photos per class | parent missed / false alarms | bn | adapted |", "|---:|---:|---:|---:|"]
    for s in summary:
        def cell(m, s=s):
            return (f"{s[m]['line_rest']['missed_mean']:.1f} / {s[m]['line_rest']['false_alarms_mean']:.1f}"
                    if m in s else "-")

        lines.append(f"| {s['per_class']} | {cell('parent')} | {cell('bn')} | {cell('adapted')} |")
    lines += ["", "Ranking (ROC-AUC, threshold-free) on the unused line-B photos, mean over seeds, and the adapted models' "
              "thresholds (train.py's rule on their own validation part where it holds enough defects to check the recall "
              "target, else `adapt.py --threshold auto`'s: "
              + ("the parent's unless the held-out photos contradict it" if a.eval_fraction else
                 "the parent's threshold until adaptation round 5, the lower of it and 0.5 until issue 28")
              + "; the first recipe always took the rule's):", "",
              "| photos per class | parent | bn | adapted | adapted thresholds |", "|---:|---:|---:|---:|---:|"]
    for s in summary:
        def auc(m, s=s):
            return f"{s[m]['line_rest']['roc_auc_mean']:.4f}" if m in s else "-"

        lines.append(f"| {s['per_class']} | {auc('parent')} | {auc('bn')} | {auc('adapted')} | "
                     f"{s['adapted']['threshold_min']:.3f} to {s['adapted']['threshold_max']:.3f} |")
    lines += ["", "Spread over seeds (standard deviation of the accuracy, points) and line-A forgetting (casting test "
              "split: the adapted model's accuracy minus the parent's, mean [min, max] over seeds):", "",
              "| photos per class | seeds | adapted, line B sd | adapted, casting test sd | casting test change |",
              "|---:|---:|---:|---:|---:|"]
    for s in summary:
        ch = [r["adapted"]["casting_test"]["accuracy"] - r["parent"]["casting_test"]["accuracy"]
              for r in rows if r["per_class"] == s["per_class"]]
        lines.append(f"| {s['per_class']} | {s['seeds']} | {100 * s['adapted']['line_rest']['accuracy_sd']:.2f} | "
                     f"{100 * s['adapted']['casting_test']['accuracy_sd']:.2f} | {100 * np.mean(ch):+.2f} "
                     f"[{100 * min(ch):+.2f}, {100 * max(ch):+.2f}] |")
    if any("uncertain_minus_random" in s for s in summary):
        lines += ["", "Labels well spent? The same budget picked by the parent's *Label these next* order (most "
                  "uncertain first) instead of at random, measured on the same photos (uncertain minus random, per "
                  "seed):", "",
                  "| photos per class | labels (defects among them) | random | uncertain picks | uncertain picks, "
                  "casting test | uncertain minus random, points: mean [min, max] | seeds better / worse |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for s in summary:
            u = s.get("uncertain_minus_random")
            if u is None:
                continue
            lines.append(f"| {s['per_class']} | {u['labels']:.0f} ({u['defects_picked_mean']:.1f}) | "
                         f"{f(s, 'adapted', 'line_rest')} | {f(s, 'adapted_uncertain', 'line_rest')} | "
                         f"{f(s, 'adapted_uncertain', 'casting_test')} | {100 * u['mean']:+.2f} "
                         f"[{100 * u['min']:+.2f}, {100 * u['max']:+.2f}] | {u['better']} / {u['worse']} of "
                         f"{u['seeds']} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = [s["per_class"] for s in summary]
    for model, label, style in (("parent", "parent (J)", "k--"), ("bn", "BN re-estimated", "C1-o"),
                                ("adapted", "adapt.py (replay)", "C0-o"), ("adapted_no_replay", "no replay", "C3s"),
                                ("adapted_uncertain", "uncertain picks", "C2-^")):
        for k, where in enumerate(("line_rest", "casting_test")):
            pts = [(s["per_class"], s[model][where]) for s in summary if model in s]
            if not pts:
                continue
            x = [p[0] for p in pts]
            m = [100 * p[1]["accuracy_mean"] for p in pts]
            # max(0, ...): with one seed min = mean = max up to rounding, and errorbar refuses a negative bar
            lo = [max(0.0, 100 * (p[1]["accuracy_mean"] - p[1]["accuracy_min"])) for p in pts]
            hi = [max(0.0, 100 * (p[1]["accuracy_max"] - p[1]["accuracy_mean"])) for p in pts]
            ax[k].errorbar(x, m, yerr=[lo, hi], fmt=style, label=label, capsize=3)
    for k, title in enumerate(("line B, photos not used", "casting test split (forgetting)")):
        ax[k].set_xscale("log")
        ax[k].set_xticks(xs, [str(x) for x in xs])
        ax[k].set_xlabel("labelled line-B photos per class")
        ax[k].set_ylabel("accuracy (%)")
        ax[k].set_title(title)
        ax[k].grid(alpha=0.3)
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
