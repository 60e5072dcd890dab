"""adapt.py's threshold where the recall target cannot be checked: the rule until issue 28 against the new one,
recomputed on stored per-image scores of adapted models (nothing is retrained).

    python -m benchmarks.threshold_rule --out reports/line-b/threshold_rule

- today's rule (until issue 28, ``--threshold lower``): the lower of the parent's threshold and 0.5
  (``inspectkit.engine.adaptation.fallback_threshold``); it does not look at the held-out photos at all;
- the new rule (``--threshold auto``): the parent's threshold unless the held-out photos contradict it
  (``inspectkit.engine.adaptation.evidence_threshold``: another threshold makes fewer errors there and a one-sided exact
  sign test on the photos whose verdict it changes gives p <= 0.05).

Applying the new rule needs, for each adapted model, its scores on **its own held-out validation photos** (the new
line's and the replayed ones: what the rule chooses on), beside its scores on the line's unused photos and on the
casting test split (what is reported; the test split chooses nothing). What the stored reports hold is listed in
the output (``stored``). Three parts:

- ``exact``: models whose validation scores are stored (a learning-curve run with ``adapted.validation_scores``,
  or an ``adapt_variants.py`` run file given with ``--variant-runs``): both rules exactly as adapt.py applies them.
- ``proxy``: models with scores on the unused photos but no validation scores (the learning curve as committed):
  the new rule chooses on a stand-in validation part drawn from the unused photos (per class as many as
  adapt.py holds out, ``--val-fraction`` of the budget, at random rather than by near-duplicate group, ``--draws``
  draws), and both rules are scored on the unused photos left over, the same photos for both. The replayed line-A
  part of validation is missing from the stand-in (no line-A scores outside the test split are stored, and the test
  split may not choose), so the stand-in holds about a third of the real validation's photos.
- ``generated``: generated scores where the parent's threshold is right and where it is off by a known amount, so
  how often the new rule moves under noise, and how much each rule costs, are known exactly (population accuracy
  from the normal distribution, no sampling error in the evaluation).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

from benchmarks.learning_curve import class_order, draw
from inspectkit.data import folders as D
from inspectkit.engine.adaptation import EVIDENCE_ALPHA, AdaptConfig, evidence_threshold, fallback_threshold

TODAY, NEW = "today", "new"
RULES = {TODAY: "lower of the parent's threshold and 0.5 (adapt.py's auto until issue 28)",
         NEW: "parent's threshold unless the held-out photos contradict it (adapt.py's auto since issue 28)"}
DEFAULT_REPORTS = ("adapt_variants", "adapt_forgetting", "adapt_threshold", "adapt_round4", "adapt_rounds6_7")


def errors(s: np.ndarray, y: np.ndarray, t: float) -> int:
    """Missed defects plus false alarms of scores ``s`` (defect at s >= t) against ``y`` (True: defect)."""
    pred = s >= t
    return int((~pred & y).sum() + (pred & ~y).sum())


# ------------------------------------------------------------------------------------------------ what is stored


def inventory(curve: dict, reports: dict[str, dict], variant_runs: list[dict]) -> dict:
    """Which adapted models have which per-image scores, per input."""
    runs = curve.get("runs", [])
    adapted = [r["adapted"] for r in runs if "adapted" in r]
    with_scores = [r for r in runs if "scores" in r.get("adapted", {})]
    out = {"learning_curve": {
        "models": len(adapted), "seeds": sorted({r["seed"] for r in runs}),
        "budgets": sorted({r["per_class"] for r in runs}),
        "with_unused_and_casting_scores": [[r["seed"], r["per_class"]] for r in with_scores],
        "with_validation_scores": sum("validation_scores" in a for a in adapted)}}
    for name, doc in reports.items():
        models = sum(len(s.get("runs", [])) for s in doc.get("summary", []))
        runs_of = [x for s in doc.get("summary", []) for x in s.get("runs", [])]
        out[name] = {"rows": len(doc.get("summary", [])), "per_rule_results": models,
                     "per_image_scores": any(k in x for x in runs_of for k in ("validation_scores", "rest", "scores"))}
    if variant_runs:
        out["variant_runs"] = {"models": len(variant_runs),
                               "with_validation_scores": sum("validation_scores" in r for r in variant_runs)}
    return out


def missing_text(inv: dict) -> str:
    """What the stored reports lack for an exact recomputation, in words."""
    lc = inv["learning_curve"]
    have = lc["with_unused_and_casting_scores"]
    seeds = sorted({s for s, _ in have})
    budgets = sorted({n for _, n in have})
    parts = [f"learning_curve.json holds {lc['models']} adapted models (seeds {lc['seeds'][0]} to {lc['seeds'][-1]}, "
             f"budgets {', '.join(map(str, lc['budgets']))} per class); per-image scores on the unused line-B photos "
             f"and the casting test split are stored for {len(have)} of them"
             + (f" (seeds {seeds[0]} to {seeds[-1]} at {', '.join(map(str, budgets))} per class)" if have else "")
             + f", and their held-out validation scores for {lc['with_validation_scores']}"]
    plain = [k for k, v in inv.items() if k not in ("learning_curve", "variant_runs") and not v["per_image_scores"]]
    if plain:
        parts.append(f"{', '.join(f'{k}.json' for k in plain)} hold per-rule summaries only (accuracy, missed "
                     "defects and false alarms of each run at each rule's threshold), no per-image scores: the raw "
                     "run files behind them (runs/av*/, with every validation score) are not kept")
    return "; ".join(parts) + "."


# ------------------------------------------------------------------------------------------------ the models


def curve_models(curve: dict, line: str, casting: str, parent_threshold: float) -> list[dict]:
    """The curve's adapted models with stored scores, with the labels of the photos scored (rebuilt from the data
    folders by the curve's own draw, and checked against the stored counts at the stored threshold)."""
    runs = [r for r in curve["runs"] if "scores" in r.get("adapted", {})]
    if not runs:
        return []
    names = ["def_front", "ok_front"]
    ds = D.load_folder(line, None, names[0], names)
    test = D.load_folder(casting, "test", names[0], names)
    out = []
    for r in runs:
        a = r["adapted"]
        _, rest = draw(class_order(ds.labels, len(names), r["seed"]), r["per_class"], len(ds))
        m = {"seed": r["seed"], "per_class": r["per_class"], "parent_threshold": parent_threshold,
             "stored_threshold": a["threshold"],
             "rest": (np.asarray(a["scores"]["line_rest"]), ds.labels[rest] == 0),
             "casting": (np.asarray(a["scores"]["casting_test"]), test.labels == 0)}
        for key, where in (("rest", "line_rest"), ("casting", "casting_test")):
            s, y = m[key]
            if len(s) != len(y):
                raise SystemExit(f"threshold_rule.py: error: seed {r['seed']}, {r['per_class']} per class: {len(s)} "
                                 f"stored {where} scores against {len(y)} photos in the data folder")
            pred = s >= a["threshold"]
            got = (int((~pred & y).sum()), int((pred & ~y).sum()))
            want = (a[where]["missed_defects"], a[where]["false_alarms"])
            if got != want:
                raise SystemExit(f"threshold_rule.py: error: seed {r['seed']}, {r['per_class']} per class, {where}: "
                                 f"missed/false alarms {got} from the scores against {want} stored: the labels "
                                 "rebuilt from the data folders do not match")
        if "validation_scores" in a:
            v = a["validation_scores"]
            m["validation"] = (np.asarray(v["defect"]), np.asarray(v["is_defect"], bool))
        out.append(m)
    return out


def variant_models(docs: list[dict]) -> list[dict]:
    """``adapt_variants.py`` run files: every run carries its validation scores and the unused photos' labels."""
    out = []
    for r in (r for doc in docs for r in doc["runs"]):
        v = r["validation_scores"]
        out.append({"seed": r["seed"], "per_class": r["per_class"], "variant": r["variant"],
                    "parent_threshold": r["parent_threshold"], "stored_threshold": r["threshold"],
                    "validation": (np.asarray(v["defect"]), np.asarray(v["is_defect"], bool)),
                    "rest": (np.asarray(r["rest"]["defect"]), np.asarray(r["rest"]["is_defect"], bool))})
    return out


# ------------------------------------------------------------------------------------------------ comparisons


def _summary(rows: list[dict], key: str) -> dict:
    """Per budget: mean accuracies, and in how many models (and draws) each rule made fewer errors."""
    out = []
    for n in sorted({r["per_class"] for r in rows}):
        rs = [r for r in rows if r["per_class"] == n]
        s = {"per_class": n, "models": len(rs), "seeds": sorted(r["seed"] for r in rs)}
        for rule in (TODAY, NEW, "parent"):
            s[f"line_b_{rule}"] = float(np.mean([r[f"line_b_{rule}"] for r in rs]))
            if f"casting_{rule}" in rs[0]:
                s[f"casting_{rule}"] = float(np.mean([r[f"casting_{rule}"] for r in rs]))
        diff = [r[f"{key}_errors_today"] - r[f"{key}_errors_new"] for r in rs]
        s.update(new_better=sum(d > 0 for d in diff), today_better=sum(d < 0 for d in diff),
                 tie=sum(d == 0 for d in diff), moved=float(np.mean([r["moved"] for r in rs])))
        if "draws" in rs[0]:
            s.update(draws=sum(r["draws"] for r in rs), draws_new_better=sum(r["draws_new_better"] for r in rs),
                     draws_today_better=sum(r["draws_today_better"] for r in rs))
        out.append(s)
    return out


def exact(models: list[dict]) -> dict:
    """Both rules on models whose validation scores are stored: chosen there, scored on all unused photos (and the
    casting test split where stored)."""
    rows = []
    for m in (m for m in models if "validation" in m):
        t0 = m["parent_threshold"]
        ev = evidence_threshold(m["validation"][1], m["validation"][0], t0)
        ts = {TODAY: fallback_threshold(t0), NEW: ev["threshold"], "parent": t0}
        s, y = m["rest"]
        row = {"seed": m["seed"], "per_class": m["per_class"], **({"variant": m["variant"]} if "variant" in m else {}),
               "thresholds": ts, "moved": bool(ev["moved"]), "why": ev["why"]}
        for rule, t in ts.items():
            row[f"rest_errors_{rule}"] = errors(s, y, t)
            row[f"line_b_{rule}"] = 1 - row[f"rest_errors_{rule}"] / len(y)
            if "casting" in m:
                cs, cy = m["casting"]
                row[f"casting_{rule}"] = 1 - errors(cs, cy, t) / len(cy)
        rows.append(row)
    return {"models": len(rows), "per_budget": _summary(rows, "rest") if rows else [], "runs": rows}


def proxy(models: list[dict], draws: int, val_fraction: float, seed: int) -> dict:
    """The new rule on a stand-in validation part drawn from the unused photos, both rules scored on the rest."""
    rows = []
    for m in (m for m in models if "validation" not in m):
        t0 = m["parent_threshold"]
        s, y = m["rest"]
        k = max(1, round(val_fraction * m["per_class"]))  # per class, as adapt.py holds out of the budget
        idx = [np.nonzero(y)[0], np.nonzero(~y)[0]]
        acc = {TODAY: [], NEW: [], "parent": []}
        cast = {TODAY: [], NEW: []}
        moved, new_better, today_better, err_today, err_new = 0, 0, 0, 0, 0
        for r in range(draws):
            rng = np.random.default_rng([seed, m["seed"], m["per_class"], r])
            pv = np.concatenate([rng.choice(i, size=k, replace=False) for i in idx])
            ev_mask = np.ones(len(y), bool)
            ev_mask[pv] = False
            choice = evidence_threshold(y[pv], s[pv], t0)
            ts = {TODAY: fallback_threshold(t0), NEW: choice["threshold"], "parent": t0}
            e = {rule: errors(s[ev_mask], y[ev_mask], t) for rule, t in ts.items()}
            for rule in acc:
                acc[rule].append(1 - e[rule] / int(ev_mask.sum()))
            cs, cy = m["casting"]
            for rule in cast:
                cast[rule].append(1 - errors(cs, cy, ts[rule]) / len(cy))
            moved += bool(choice["moved"])
            new_better += e[NEW] < e[TODAY]
            today_better += e[TODAY] < e[NEW]
            err_today += e[TODAY]
            err_new += e[NEW]
        rows.append({"seed": m["seed"], "per_class": m["per_class"], "stand_in_per_class": k,
                     "scored_photos": int(len(y) - 2 * k), "draws": draws,
                     "line_b_today": float(np.mean(acc[TODAY])), "line_b_new": float(np.mean(acc[NEW])),
                     "line_b_parent": float(np.mean(acc["parent"])),
                     "casting_today": float(np.mean(cast[TODAY])), "casting_new": float(np.mean(cast[NEW])),
                     "moved": moved / draws, "draws_new_better": new_better, "draws_today_better": today_better,
                     "proxy_errors_today": err_today / draws, "proxy_errors_new": err_new / draws})
    return {"models": len(rows), "draws_per_model": draws, "val_fraction": val_fraction,
            "per_budget": _summary(rows, "proxy") if rows else [], "runs": rows}


def generated(repeats: int, seed: int, per_class_new: int = 15, per_class_replay: int = 30,
              parents=(0.6028, 0.7108), shifts=(-1.0, 0.0, 0.5, 1.0, 2.0), spread: float = 1.5,
              gap: float = 2.5) -> dict:
    """Generated held-out scores (in logits): the new line's defects ~ N(c + gap, spread), its OK parts
    ~ N(c - gap, spread), with c = logit(parent's threshold) - shift, so the best threshold is at c and the parent's
    is ``shift`` logits too high (shift 0: the parent's is right); the replayed line's ~ N(+-5, spread). Each rule's
    accuracy on the new line (equal shares of both classes) is the normal distribution's, exactly."""
    phi = NormalDist().cdf

    def accuracy(t: float, c: float) -> float:
        L = math.log(t / (1 - t))
        return 0.5 * (1 - phi((L - c - gap) / spread)) + 0.5 * phi((L - c + gap) / spread)

    rows = []
    for t0 in parents:
        for shift in shifts:
            c = math.log(t0 / (1 - t0)) - shift
            rng = np.random.default_rng([seed, round(1e4 * t0), round(10 * shift) + 100])
            acc_new, moved = [], 0
            for _ in range(repeats):
                logits = np.concatenate([rng.normal(c + gap, spread, per_class_new),
                                         rng.normal(5, spread, per_class_replay),
                                         rng.normal(c - gap, spread, per_class_new),
                                         rng.normal(-5, spread, per_class_replay)])
                y = np.arange(len(logits)) < per_class_new + per_class_replay
                choice = evidence_threshold(y, 1 / (1 + np.exp(-logits)), t0)
                moved += bool(choice["moved"])
                acc_new.append(accuracy(choice["threshold"], c))
            rows.append({"parent_threshold": t0, "shift": shift, "best_threshold": 1 / (1 + math.exp(-c)),
                         "moved": moved / repeats, "accuracy_best": accuracy(1 / (1 + math.exp(-c)), c),
                         "accuracy_parent": accuracy(t0, c), "accuracy_today": accuracy(fallback_threshold(t0), c),
                         "accuracy_new": float(np.mean(acc_new))})
    return {"repeats": repeats, "held_out_per_class": {"new_line": per_class_new, "replayed": per_class_replay},
            "spread": spread, "gap": gap, "rows": rows}


# ------------------------------------------------------------------------------------------------ output


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(doc: dict) -> str:
    lines = ["# Adapted models' threshold: the rule until issue 28 against the new one", "", f"`{doc['command']}`", "",
             f"- today's rule: {RULES[TODAY]};", f"- new rule: {RULES[NEW]} (one-sided exact sign test, "
             f"alpha {doc['alpha']}; `inspectkit.engine.adaptation.evidence_threshold`).", "",
             f"Parent threshold {doc['parent_threshold']:.4f}. The casting test split chooses nothing: it is only "
             "reported at each rule's threshold.", "", "## What is stored", "", doc["missing"], ""]
    ex = doc["exact"]
    lines += ["## Exact recomputation (validation scores stored)", ""]
    if not ex["models"]:
        lines += ["No stored model has its held-out validation scores: nothing can be recomputed exactly. The "
                  "learning curve would need `adapted.validation_scores` (the checkpoint's "
                  "`metrics.adaptation.validation_scores`) kept per run; `adapt_variants.py` run files carry them "
                  "(`--variant-runs`).", ""]
    else:
        lines += _budget_table(ex["per_budget"], "models")
    px = doc["proxy"]
    lines += ["## Stand-in validation drawn from the unused line-B photos", ""]
    if px["models"]:
        k = px["runs"][0]["stand_in_per_class"]
        lines += [f"For each stored model, {px['draws_per_model']} draws of {k} photos per class from its unused "
                  f"line-B photos stand in for the new line's validation part (adapt.py holds out "
                  f"{round(100 * px['val_fraction'])} % of the budget); the new rule chooses on them, and both rules "
                  "are scored on the unused photos left over (the same photos for both). Without the replayed "
                  "line-A part, which the stored data lack, the stand-in holds about a third of the real "
                  "validation's photos. Accuracy is the mean over draws, then over models; \"better\" counts "
                  "models by their errors summed over draws, and draws one by one.", ""]
        lines += _budget_table(px["per_budget"], "models")
        lines += ["| seed | per class | scored photos | today | new | parent's | new rule moved | casting test: "
                  "today / new |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in px["runs"]:
            lines.append(f"| {r['seed']} | {r['per_class']} | {r['scored_photos']} | {pct(r['line_b_today'])} | "
                         f"{pct(r['line_b_new'])} | {pct(r['line_b_parent'])} | {100 * r['moved']:.1f} % of draws | "
                         f"{pct(r['casting_today'])} / {pct(r['casting_new'])} |")
        lines.append("")
    g = doc["generated"]
    lines += ["## Generated scores", "",
              f"Held-out part: {g['held_out_per_class']['new_line']} new-line and "
              f"{g['held_out_per_class']['replayed']} replayed photos per class, {g['repeats']} repeats per row. "
              f"New-line logits: defects N(c + {g['gap']}, {g['spread']}), OK parts N(c - {g['gap']}, {g['spread']}),"
              f" c = logit(parent's threshold) - shift, so the best threshold is c; replayed N(+-5, {g['spread']}). "
              "Accuracy on the new line with equal class shares, exact (normal distribution).", "",
              "| parent's threshold | shift (logits) | best threshold | new rule moved | accuracy: best | parent's | "
              "today's | new rule |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in g["rows"]:
        lines.append(f"| {r['parent_threshold']:.4f} | {r['shift']:+.1f} | {r['best_threshold']:.3f} | "
                     f"{100 * r['moved']:.1f} % | {pct(r['accuracy_best'])} | {pct(r['accuracy_parent'])} | "
                     f"{pct(r['accuracy_today'])} | {pct(r['accuracy_new'])} |")
    return "\n".join(lines) + "\n"


def _budget_table(per_budget: list[dict], what: str) -> list[str]:
    head = ["| photos per class | models | line B unused: today | new rule | parent's | casting test: today | "
            "new rule | new rule better / today better / tie (models) | draws: new better / today better |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [f"| {s['per_class']} | {s[what]} | {pct(s['line_b_today'])} | {pct(s['line_b_new'])} | "
            f"{pct(s['line_b_parent'])} | {pct(s['casting_today']) if 'casting_today' in s else '-'} | "
            f"{pct(s['casting_new']) if 'casting_new' in s else '-'} | {s['new_better']} / {s['today_better']} / "
            f"{s['tie']} | "
            + (f"{s['draws_new_better']} / {s['draws_today_better']} of {s['draws']}" if "draws" in s else "-") + " |"
            for s in per_budget]
    return head + rows + [""]


def parent_threshold_of(curve: dict, given: float | None) -> float:
    """``given``, else the threshold of the checkpoint the curve adapted (checked against its weights digest)."""
    if given is not None:
        return float(given)
    path = Path(curve["checkpoint"])
    if not path.is_file():
        raise SystemExit(f"threshold_rule.py: error: the curve's parent {path} is not on disk; give "
                         "--parent-threshold")
    from inspectkit.inference.checkpoint import load_checkpoint, weights_digest

    ck = load_checkpoint(path)
    if weights_digest(ck["state_dict"]) != curve["parent_weights_sha256"]:
        raise SystemExit(f"threshold_rule.py: error: {path} is not the checkpoint the curve adapted (weights digest)")
    return float(ck["threshold"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--curve", default="reports/line-b/learning_curve.json", help="a learning_curve.py output")
    p.add_argument("--reports", nargs="*", default=[f"reports/line-b/{r}.json" for r in DEFAULT_REPORTS],
                   help="adapt_variants.py merged reports, listed under 'stored'")
    p.add_argument("--variant-runs", nargs="*", default=[], help="adapt_variants.py run files (exact comparison)")
    p.add_argument("--line", default="../shared/data/casting-line-b")
    p.add_argument("--casting", default="../shared/data/casting")
    p.add_argument("--parent-threshold", type=float, help="default: the threshold of the curve's checkpoint")
    p.add_argument("--draws", type=int, default=200, help="stand-in validation draws per model")
    p.add_argument("--val-fraction", type=float, default=AdaptConfig.val_fraction,
                   help="adapt.py's --val-fraction, the held-out share the stand-ins mimic (the study of issue 28 "
                        "ran at 0.3, adapt.py's until adaptation round 10)")
    p.add_argument("--repeats", type=int, default=2000, help="generated held-out parts per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reports/line-b/threshold_rule", help="writes OUT.json and OUT.md")
    a = p.parse_args(argv)
    curve = json.loads(Path(a.curve).read_text())
    reports = {Path(f).stem: json.loads(Path(f).read_text()) for f in a.reports if Path(f).is_file()}
    vdocs = [json.loads(Path(f).read_text()) for f in a.variant_runs]
    t0 = parent_threshold_of(curve, a.parent_threshold)
    models = curve_models(curve, a.line, a.casting, t0)
    bad = [m for m in models if abs(m["stored_threshold"] - fallback_threshold(t0)) > 1e-9]
    if bad:  # the curve's thresholds must be today's rule, or the comparison is not with today's
        raise SystemExit(f"threshold_rule.py: error: {len(bad)} stored thresholds are not today's rule's "
                         f"{fallback_threshold(t0)}")
    inv = inventory(curve, reports, [r for d in vdocs for r in d["runs"]])
    cmd = "python -m benchmarks.threshold_rule " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {"command": cmd.strip(), "rules": RULES, "alpha": EVIDENCE_ALPHA, "parent_threshold": t0,
           "stored": inv, "missing": missing_text(inv),
           "exact": exact(models + variant_models(vdocs)),
           "proxy": proxy(models, a.draws, a.val_fraction, a.seed),
           "generated": generated(a.repeats, a.seed)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    text = markdown(doc)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
