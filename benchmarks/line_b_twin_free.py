"""Line-B figures again, on the line-B photos without a line-A twin: what a model does on parts it never saw in any
form. Line B holds the dataset's un-augmented photos, many of them the originals of parts that appear, augmented, in
line A (the casting set); a model trained on line A has seen those parts, turned and zoomed.

    python -m benchmarks.line_b_twin_free --twins reports/line-b/twins.json \
        --json reports/line-b/twin_free.json --md reports/line-b/twin_free.md

Which photos have a twin comes from ``benchmarks/line_b_twins.py`` (its report, ``--twins``). Then, each on all the
photos, on those with a twin and on those without, with accuracy's 90 % Wilson interval:

1. **J on all of line B** (``--parent``, the casting-only model; it never saw line B itself).
2. **The served model on its line-B validation part** (``--served``; the split re-derived from its train config and
   checked against the files hash it records; it trained on the rest of line B). Line B holds several photos of
   some parts, which that split (by near-duplicate thumbnails) does not group, so the validation photos are also
   matched against the model's line-B training photos by the same measure and threshold (``new part``: no twin in
   line A and none among those).
3. **The confirmatory learning curve** (``--curve``) at ``--per-class`` photos per class: every seed's adapted model,
   from the per-photo scores the curve kept for its evaluation photos, at the adapted model's threshold; and J on the
   same photos. The seed's evaluation photos are re-derived as the curve drew them (``class_order``/``split_pool``).

Nothing here chooses anything: the figures only split the existing ones by twin.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.learning_curve import class_order, split_pool
from inspectkit.intervals import interval_text, rate
from inspectkit.metrics import roc_auc

GROUPS = ("all", "twin", "twin-free", "new part")


def figures(y_defect: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    """n, accuracy with its 90 % Wilson interval, missed defects (of the defects) and false alarms (of the OK parts)
    at ``threshold`` (a defect when p(defect) >= threshold), and ROC-AUC where both classes are present."""
    y, pred = np.asarray(y_defect, bool), np.asarray(s, float) >= threshold
    right = int((y == pred).sum())
    out = {"n": int(len(y)), "defects": int(y.sum()), "right": right, "missed_defects": int((y & ~pred).sum()),
           "false_alarms": int((~y & pred).sum())}
    if len(y):
        out["accuracy"] = right / len(y)
        out["accuracy_interval"] = rate(right, len(y))
    if 0 < y.sum() < len(y):
        out["roc_auc"] = float(roc_auc(y, np.asarray(s, float)))
    return out


def by_twin(files: list[str], y_defect: np.ndarray, s: np.ndarray, threshold: float, twin: dict[str, bool]) -> dict:
    """:func:`figures` on all the photos, those with a twin and those without (``twin``: file -> has a twin)."""
    has = np.array([twin[f] for f in files], bool)
    return {"all": figures(y_defect, s, threshold), "twin": figures(y_defect[has], s[has], threshold),
            "twin-free": figures(y_defect[~has], s[~has], threshold)}


def _scores(checkpoint: str | Path, images: list) -> tuple[dict, np.ndarray]:
    from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint
    from inspectkit.model import predict_probs

    ck = load_checkpoint(checkpoint)
    p = predict_probs(model_from_checkpoint(ck), images, ck["preprocessing"])
    return ck, p[:, ck["defect_index"]]


def part_groups(images: list[np.ndarray], threshold: float, parameters: dict | None) -> np.ndarray:
    """Line B's decoded photos grouped by part (``inspectkit.data.parts.image_part_groups`` at ``threshold``);
    ``parameters`` (the twins report's) must be the measure's defaults, so its calibration holds."""
    from dataclasses import asdict

    from inspectkit.data.parts import DEFAULT, image_part_groups

    mine = {k: v for k, v in asdict(DEFAULT).items() if parameters is None or k in parameters}
    if parameters is not None and {k: parameters[k] for k in mine} != mine:
        raise SystemExit(f"the twins report used other parameters than the measure's defaults: {parameters}")
    return image_part_groups(images, threshold, threads=2)


def _mean_sd(xs: list[float]) -> dict:
    a = np.asarray(xs, float)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
            "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "seeds": int(len(a))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--twins", default="reports/line-b/twins.json")
    p.add_argument("--line", default="../shared/data/casting-line-b")
    p.add_argument("--parent", default="runs/j/model.pt", help="J, the casting-only model (git show 10a79bc:...)")
    p.add_argument("--served", default="final_best_model.pt")
    p.add_argument("--curve", default="reports/line-b/learning_curve_confirm.json")
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--json", default="reports/line-b/twin_free.json")
    p.add_argument("--md", default="reports/line-b/twin_free.md")
    a = p.parse_args(argv)

    from inspectkit.data import folders as D
    from inspectkit.engine.training import TrainConfig, prepare_data, recorded_validation_hash
    from inspectkit.inference.checkpoint import load_checkpoint, weights_digest

    tw = json.loads(Path(a.twins).read_text())
    twin = {r["file"]: bool(r["twin"]) for r in tw["photos"]}
    names = ["def_front", "ok_front"]
    line = D.load_folder(a.line, None, names[0], names)
    line, images = D.decode_all(line)
    files = [f"{names[int(c)]}/{q.name}" for c, q in zip(line.labels, line.paths)]
    missing = sorted(set(files) - set(twin))
    if missing:
        raise SystemExit(f"{a.twins} does not cover {len(missing)} line-B photos, e.g. {missing[:3]}")
    y = line.labels == 0
    group = part_groups(images, tw["threshold"], tw.get("parameters"))
    # a part is new to line A when none of its line-B photos has a twin there
    seen_in_a = {g for g, f in zip(group, files) if twin[f]}
    new_to_a = np.array([g not in seen_in_a for g in group], bool)
    part_of = dict(zip(files, group))
    out: dict = {"command": "python -m benchmarks.line_b_twin_free " + " ".join(sys.argv[1:] if argv is None else argv),
                 "twins": {"report": a.twins, "threshold": tw.get("threshold"),
                           "with_twin": int(sum(twin[f] for f in files)), "photos": len(files)},
                 "parts": {"groups": int(group.max() + 1), "photos_in_groups_of_2_or_more": int(
                     sum(np.bincount(group)[group] > 1)), "largest_group": int(np.bincount(group).max()),
                           "photos_of_parts_new_to_line_a": int(new_to_a.sum())}}

    # 1. J on all of line B
    j, s_j = _scores(a.parent, images)
    out["parent"] = {"checkpoint": a.parent, "weights_sha256": weights_digest(j["state_dict"]),
                     "threshold": j["threshold"], **by_twin(files, y, s_j, j["threshold"], twin),
                     "new part": figures(y[new_to_a], s_j[new_to_a], j["threshold"])}

    # 2. the served model on its line-B validation part
    served = load_checkpoint(a.served)
    known = set(TrainConfig.__dataclass_fields__)
    prep = prepare_data(TrainConfig(**{k: v for k, v in served["train_config"].items() if k in known}))
    full = prep["full"]
    if full.subset(prep["val_idx"]).fingerprint()["files_sha256"] != recorded_validation_hash(served):
        raise SystemExit(f"the validation split re-derived for {a.served} is not the one it records")
    ln = next(x for x in prep["lines"] if Path(x["root"]).resolve() == Path(a.line).resolve())
    v_files = [f"{full.class_names[int(full.labels[i])]}/{full.paths[i].name}" for i in ln["val_idx"]]
    v_images = [prep["images"][i] for i in ln["val_idx"]]
    _, s_v = _scores(a.served, v_images)
    y_v = full.labels[ln["val_idx"]] == served["defect_index"]
    trained_parts = {part_of[f"{full.class_names[int(full.labels[i])]}/{full.paths[i].name}"] for i in ln["train_idx"]}
    sibling = [part_of[f] in trained_parts for f in v_files]
    new_to_a_of = dict(zip(files, new_to_a))
    new_part = np.array([new_to_a_of[f] and not sib for f, sib in zip(v_files, sibling)], bool)
    out["served_validation"] = {"checkpoint": a.served, "threshold": served["threshold"],
                                **by_twin(v_files, y_v, s_v, served["threshold"], twin),
                                "new part": figures(y_v[new_part], s_v[new_part], served["threshold"]),
                                "with_line_b_train_twin": int(sum(sibling))}

    # 3. the confirmatory curve, split by twin
    curve = json.loads(Path(a.curve).read_text())
    if curve["parent_weights_sha256"] != out["parent"]["weights_sha256"]:
        raise SystemExit(f"{a.curve} adapted another parent than {a.parent}")
    seeds = []
    for r in sorted((r for r in curve["runs"] if r["per_class"] == a.per_class), key=lambda r: r["seed"]):
        order, held = split_pool(class_order(line.labels, len(names), r["seed"]), curve["eval_fraction"])
        s = np.asarray(r["adapted"]["scores"]["line_rest"], float)
        if len(s) != len(held):
            raise SystemExit(f"seed {r['seed']}: {len(s)} stored scores for {len(held)} evaluation photos")
        f_h = [files[i] for i in held]
        labelled = {group[i] for c in order for i in order[c][:a.per_class]}
        new = np.array([new_to_a[i] and group[i] not in labelled for i in held], bool)
        seeds.append({"seed": r["seed"], "adapted_threshold": r["adapted"]["threshold"],
                      "adapted": {**by_twin(f_h, y[held], s, r["adapted"]["threshold"], twin),
                                  "new part": figures(y[held][new], s[new], r["adapted"]["threshold"])},
                      "parent": {**by_twin(f_h, y[held], s_j[held], j["threshold"], twin),
                                 "new part": figures(y[held][new], s_j[held][new], j["threshold"])}})
        if abs(seeds[-1]["adapted"]["all"]["accuracy"] - r["adapted"]["line_rest"]["accuracy"]) > 1e-9:
            raise SystemExit(f"seed {r['seed']}: the re-derived evaluation photos do not give the curve's figure")
    pooled = {m: {g: {k: int(sum(x[m][g][k] for x in seeds)) for k in ("right", "n")} for g in GROUPS}
              for m in ("adapted", "parent")}
    out["curve"] = {"report": a.curve, "per_class": a.per_class, "seeds": seeds, "pooled": pooled,
                    "summary": {m: {g: _mean_sd([x[m][g]["accuracy"] for x in seeds if x[m][g]["n"]])
                                    for g in GROUPS} for m in ("adapted", "parent")}}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    Path(a.md).write_text(markdown(out))
    print(markdown(out))
    return 0


def _row(label: str, r: dict) -> str:
    if not r["n"]:
        return f"| {label} | 0 | - | - | - | - |"
    auc = f"{r['roc_auc']:.4f}" if "roc_auc" in r else "-"
    return (f"| {label} | {r['n']} | {100 * r['accuracy']:.2f} % ({interval_text(r['accuracy_interval'])}) | {auc} | "
            f"{r['missed_defects']} of {r['defects']} | {r['false_alarms']} of {r['n'] - r['defects']} |")


def markdown(out: dict) -> str:
    """The report: the three tables, by twin and by part."""
    t, pa = out["twins"], out["parts"]
    head = ["| photos | n | accuracy (90 % CI) | ROC-AUC | missed defects | false alarms |",
            "|---|---:|---:|---:|---:|---:|"]
    lines = ["# Line B without the parts line A already holds", "",
             f"Written by `{out['command']}`. {t['with_twin']} of the {t['photos']} line-B photos have a twin in line A "
             f"by [`{t['report']}`]({Path(t['report']).name.replace('.json', '.md')}) (*twin*); the rest are "
             "*twin-free*. The same measure groups line B's own photos by part: "
             f"{pa['photos_in_groups_of_2_or_more']} of them share their part with another line-B photo "
             f"({pa['groups']} parts, at most {pa['largest_group']} photos of one); a part is *new* where none of "
             f"its line-B photos has a twin in line A ({pa['photos_of_parts_new_to_line_a']} photos) and, for a "
             "model that trained on line-B photos, none of them was among those.", "",
             f"## J (casting only) on all of line B, at its threshold {out['parent']['threshold']:.4f}", "", *head]
    lines += [_row(g, out["parent"][g]) for g in GROUPS]
    sv = out["served_validation"]
    lines += ["", f"## The served model on its line-B validation part, at {sv['threshold']:.4f}", "",
              f"It trained on the other line-B photos; {sv['with_line_b_train_twin']} of its {sv['all']['n']} "
              "validation photos show a part that is also in those (another photo of it).", "", *head]
    lines += [_row(g, sv[g]) for g in GROUPS]
    c = out["curve"]
    lines += ["", f"## The confirmatory learning curve at {c['per_class']} photos per class, by twin and part", "",
              f"From [`{c['report']}`]({Path(c['report']).name.replace('.json', '.md')}): each seed's evaluation "
              "photos, which no run of the seed labelled (*new part*: new to line A and to the seed's labelled "
              "photos); mean [min, max] over seeds, standard deviation in points.",
              "", "| model | " + " | ".join(GROUPS) + " |", "|---|" + "---:|" * len(GROUPS)]
    for m, label in (("parent", "J as it is"), ("adapted", "adapted")):
        cells = [f"{100 * s['mean']:.2f} % [{100 * s['min']:.1f}, {100 * s['max']:.1f}], sd {100 * s['sd']:.2f}"
                 for s in (c["summary"][m][g] for g in GROUPS)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    pn = {m: c["pooled"][m]["new part"] for m in ("adapted", "parent")}
    lines += ["", f"Pooled over the seeds, on new parts: adapted {pn['adapted']['right']} of {pn['adapted']['n']} right, "
              f"J {pn['parent']['right']} of {pn['parent']['n']}."]
    lines += ["", "| seed | evaluation photos: all / twin / twin-free / new part | adapted, twin-free | "
              "J, twin-free | adapted, new part | J, new part |", "|---:|---:|---:|---:|---:|---:|"]

    def cell(r: dict) -> str:
        return f"{100 * r['accuracy']:.2f} % ({r['right']} of {r['n']})" if r["n"] else "-"

    for s in c["seeds"]:
        a, p = s["adapted"], s["parent"]
        lines.append(f"| {s['seed']} | {a['all']['n']} / {a['twin']['n']} / {a['twin-free']['n']} / "
                     f"{a['new part']['n']} | {cell(a['twin-free'])} | {cell(p['twin-free'])} | {cell(a['new part'])} "
                     f"| {cell(p['new part'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
