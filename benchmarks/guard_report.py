"""The guard measured: UNUSABLE on photos nobody could judge, on held-out castings, under mild changes; drift alarms
on streams; and its cost. Writes the JSON and Markdown report that docs/guard.md quotes.

    python -m benchmarks.guard_report --checkpoint final_best_model.pt --j-checkpoint runs/guard/j.pt \
        --json reports/guard/guard.json --md reports/guard/guard.md

Sets (built by benchmarks/unjudgeable.py, seeded; none of them chose anything):
  held-out castings  the casting test split (715) and the checkpoint's line-B validation photos (97); the guard's
                     threshold was chosen on the validation photos of both lines, so the casting test split is the
                     one set here that the guard never saw
  non-casting        five offline sources (generated frames, scikit-image's photos, LFW faces, matplotlib's photos,
                     NEU-DET steel surfaces)
  degraded           held-out castings made unjudgeable six ways (50 each)
  mild               every held-out casting under each of eight mild changes
Drift streams (the held-out castings in a seeded shuffle; a change at row CHANGE_ROW to the end):
  steady (five shuffles and the folder order), blur sigma 2 to 3 px at 300 px, exposure x0.5, and the real case:
  model J (line A only, with its own guard) on its casting test split, then on the 650 line-B photos.
Cost: one photo with its heat map (the app's call) and a batch without heat maps (batch_inspect.py's), with and
without the guard, alternating in the same process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks import unjudgeable as U
from inspectkit.drift import DriftMonitor
from inspectkit.inference.handler import UNUSABLE, InferenceHandler

REPO = Path(__file__).resolve().parents[1]

CHANGE_ROW = 400
STEADY_SEEDS = (0, 1, 2, 3, 4)


def outcomes(handler, images, labels=None) -> dict:
    """Verdict counts, reasons, and (with labels) the accuracy of the judged photos and of every photo."""
    res = handler.predict_batch(list(images), heatmap=False, batch_size=32, on_error="collect")
    verdicts = [r.verdict for r in res]
    out = {"n": len(res), "verdicts": dict(Counter(verdicts)),
           "unusable": sum(v == UNUSABLE for v in verdicts),
           "unusable_rate": round(sum(v == UNUSABLE for v in verdicts) / max(len(res), 1), 4),
           "ok": sum(v == "OK" for v in verdicts),
           "reasons": dict(Counter(r.unusable_reason for r in res if r.unusable_reason))}
    # each kind of evidence on its own: what the image checks alone, and novelty alone, would call UNUSABLE
    from inspectkit.guard import STATS, check_reason

    g = handler.guard
    if g is not None:
        ok = [r for r in res if r.image_stats is not None]
        out["by_image_checks"] = round(sum(check_reason([r.image_stats.get(k, np.nan) for k in STATS], g.limits)
                                           is not None for r in ok) / max(len(ok), 1), 4)
        out["by_novelty"] = round(sum(r.novelty > g.novelty_threshold for r in ok) / max(len(ok), 1), 4)
    if labels is not None:
        names = handler.class_names
        correct = np.array([r.label == names[int(y)] for r, y in zip(res, labels)])
        judged = np.array([v != UNUSABLE for v in verdicts])
        out["accuracy_all"] = round(float(correct.mean()), 4)
        out["accuracy_judged"] = round(float(correct[judged].mean()), 4) if judged.any() else None
        out["errors_judged"] = int((~correct & judged).sum())
    return out, res


def stream(handler, images, change=None, change_row=CHANGE_ROW, seed=0) -> dict:
    """Run ``images`` in order through the handler and a fresh DriftMonitor; ``change`` (a function of rgb, rng)
    is applied from ``change_row`` on."""
    rng = np.random.default_rng(seed)
    imgs = [im if change is None or k < change_row else change(im, rng) for k, im in enumerate(images)]
    res = handler.predict_batch(imgs, heatmap=False, batch_size=32, on_error="collect")
    mon = DriftMonitor(handler.guard.drift_reference)
    for k, r in enumerate(res):
        mon.add_result(r, handler.class_names, k)
    st = mon.state()
    first = st["first_row"]
    return {"photos": len(imgs), "change_row": None if change is None else change_row, "alarm": st["alarm"],
            "first_row": first, "delay": None if first is None or change is None else first - change_row,
            "false_alarm": bool(first is not None and (change is None or first < change_row)),
            "changed": [c["indicator"] for c in st["changed"]]}


def cost(handler, images, repeats: int = 5) -> dict:
    """p50 of one photo with its heat map (the app's call) and photos/s of batches of 32 without heat maps
    (batch_inspect.py's), with and without the guard. Paired and interleaved: each photo is timed both ways in turn
    (which goes first alternates), and each batch pass both ways in turn, so a busy moment of the machine falls on
    both alike."""
    guard = handler.guard
    single = {"on": [], "off": []}
    batch = {"on": [], "off": []}

    def use(mode):
        handler.guard = guard if mode == "on" else None

    for rep in range(repeats):
        for k, im in enumerate(images[:100]):
            for mode in (("on", "off") if (k + rep) % 2 == 0 else ("off", "on")):
                use(mode)
                t = time.perf_counter()
                handler.predict(im, heatmap=True)
                single[mode].append((time.perf_counter() - t) * 1e3)
        for mode in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            use(mode)
            t = time.perf_counter()
            handler.predict_batch(images, heatmap=False, batch_size=32)
            batch[mode].append(len(images) / (time.perf_counter() - t))
    handler.guard = guard
    p50 = {m: round(float(np.median(v)), 2) for m, v in single.items()}
    thr = {m: round(float(np.median(v)), 1) for m, v in batch.items()}
    return {"single_p50_ms": p50, "single_ratio": round(p50["on"] / p50["off"], 3),
            "batch_photos_per_s": thr, "batch_ratio": round(thr["on"] / thr["off"], 3),
            "photos": len(images), "repeats": repeats}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="final_best_model.pt")
    p.add_argument("--j-checkpoint", default=None, help="model J with its guard, for the real drift case")
    p.add_argument("--casting", default=str(REPO.parent / "shared" / "data" / "casting"))
    p.add_argument("--line-b", default=str(REPO.parent / "shared" / "data" / "casting-line-b"))
    p.add_argument("--json", default="reports/guard/guard.json")
    p.add_argument("--md", default="reports/guard/guard.md")
    p.add_argument("--skip-cost", action="store_true")
    a = p.parse_args(argv)

    from inspectkit.data.folders import decode_all, load_folder
    from inspectkit.engine.guard_fit import training_photos
    from inspectkit.inference.checkpoint import load_checkpoint

    t0 = time.perf_counter()
    h = InferenceHandler(a.checkpoint)
    if h.guard is None:
        raise SystemExit(f"{a.checkpoint} has no guard: {h.guard_off_reason}")
    test = load_folder(a.casting, "test", None)
    test, test_imgs = decode_all(test)
    photos = training_photos(load_checkpoint(a.checkpoint))
    vb = [i for i, ln in enumerate(photos["val_lines"]) if ln == 1]
    held = test_imgs + [photos["val_images"][i] for i in vb]
    held_labels = np.concatenate([test.labels, photos["val_labels"][vb]]).astype(int)
    report: dict = {"checkpoint": a.checkpoint, "guard": h.guard.summary(), "held_out": {}, "non_casting": {},
                    "degraded": {}, "mild": {}, "drift": {}}

    # held-out castings, each part on its own and together
    n_test = len(test_imgs)
    for name, sl in (("casting test split", slice(0, n_test)), ("line-B validation", slice(n_test, None)),
                     ("all held-out", slice(None))):
        out, _ = outcomes(h, held[sl], held_labels[sl])
        h_off = h.guard
        h.guard = None
        base, _ = outcomes(h, held[sl], held_labels[sl])
        h.guard = h_off
        out["accuracy_without_guard"] = base["accuracy_all"]
        report["held_out"][name] = out

    nc = U.non_casting()
    for source in U.SOURCES:
        imgs = [im for s, _, im in nc if s == source]
        if imgs:
            report["non_casting"][source], _ = outcomes(h, imgs)
    allnc = [im for _, _, im in nc]
    report["non_casting"]["all"], res_nc = outcomes(h, allnc)
    report["non_casting"]["judged_names"] = [f"{s}/{n}: {r.verdict}" for (s, n, _), r in zip(nc, res_nc)
                                             if r.verdict != UNUSABLE]

    dg = U.degraded(held)
    for kind in U.DEGRADATIONS:
        report["degraded"][kind], _ = outcomes(h, [im for k, _, im in dg if k == kind])
    report["degraded"]["all"], _ = outcomes(h, [im for _, _, im in dg])

    for kind in U.MILD:
        report["mild"][kind], _ = outcomes(h, U.mild(held, kind), held_labels)

    # drift streams
    order = [np.random.default_rng(s).permutation(len(held)) for s in STEADY_SEEDS]
    shuffled = [held[i] for i in order[0]]
    report["drift"]["steady, casting test split in folder order (defects, then OK)"] = stream(h, test_imgs)
    for s, o in zip(STEADY_SEEDS, order):
        report["drift"][f"steady, shuffle {s}"] = stream(h, [held[i] for i in o])
    report["drift"]["blur sigma 2-3 px from row 400"] = stream(h, shuffled, U.drift_change("blur"))
    report["drift"]["exposure x0.5 from row 400"] = stream(h, shuffled, U.drift_change("dark"))
    if a.j_checkpoint:
        hj = InferenceHandler(a.j_checkpoint)
        lb = load_folder(a.line_b, None, None, list(test.class_names))
        lb, lb_imgs = decode_all(lb)
        jt = [test_imgs[i] for i in np.random.default_rng(0).permutation(n_test)]
        lbs = [lb_imgs[i] for i in np.random.default_rng(1).permutation(len(lb_imgs))]
        report["drift"]["model J: casting test split (steady)"] = stream(hj, jt)
        real = stream(hj, jt[:CHANGE_ROW] + lbs)
        real["change_row"] = CHANGE_ROW
        real["delay"] = None if real["first_row"] is None else real["first_row"] - CHANGE_ROW
        real["false_alarm"] = bool(real["first_row"] is not None and real["first_row"] < CHANGE_ROW)
        report["drift"]["model J: casting test split, then line B from row 400"] = real
        report["j_line_b"], _ = outcomes(hj, lb_imgs, lb.labels)

    if not a.skip_cost:
        report["cost"] = cost(h, shuffled[:320])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(report, indent=1) + "\n")
    Path(a.md).write_text(markdown(report))
    print(markdown(report))
    return 0


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def markdown(r: dict) -> str:
    """The report as Markdown tables."""
    g = r["guard"]
    lines = [f"# The guard, measured ({r['checkpoint']})", "",
             "Written by `python -m benchmarks.guard_report` (its docstring says how each set is built). "
             f"Novelty threshold {g['novelty_threshold']}.", "",
             "## Photos nobody could judge", "",
             "UNUSABLE: the guard's verdict; image checks / novelty: the share each kind of evidence would flag on its "
             "own.", "",
             "| set | n | UNUSABLE | OK | DEFECT | image checks | novelty | reasons |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for group in ("non_casting", "degraded"):
        for name, o in r[group].items():
            if not isinstance(o, dict) or "n" not in o:
                continue
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(o["reasons"].items(), key=lambda kv: -kv[1]))
            lines.append(f"| {group.replace('_', '-')}: {name} | {o['n']} | {_pct(o['unusable_rate'])} | {o['ok']} | "
                         f"{o['verdicts'].get('DEFECT', 0)} | {_pct(o.get('by_image_checks'))} | "
                         f"{_pct(o.get('by_novelty'))} | {reasons} |")
    lines += ["", "## Held-out castings and mild changes", "",
              "| set | n | UNUSABLE | image checks | novelty | reasons | accuracy of the judged | errors among the judged "
              "| accuracy of all (no guard) |",
              "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for name, o in list(r["held_out"].items()) + [(f"mild: {k}", v) for k, v in r["mild"].items()]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(o["reasons"].items(), key=lambda kv: -kv[1])) or "–"
        lines.append(f"| {name} | {o['n']} | {_pct(o['unusable_rate'])} | {_pct(o.get('by_image_checks'))} | "
                     f"{_pct(o.get('by_novelty'))} | {reasons} | {_pct(o['accuracy_judged'])} | "
                     f"{o['errors_judged']} | {_pct(o.get('accuracy_without_guard', o['accuracy_all']))} |")
    if "j_line_b" in r:
        o = r["j_line_b"]
        lines += ["", "## Model J (line A only) on the 650 line-B photos it never saw", "",
                  f"UNUSABLE {o['unusable']} of {o['n']} ({_pct(o['unusable_rate'])}: "
                  + ", ".join(f"{k} {v}" for k, v in o["reasons"].items())
                  + f"); accuracy of the judged {_pct(o['accuracy_judged'])} ({o['errors_judged']} errors), "
                  f"of all {_pct(o['accuracy_all'])}."]
    lines += ["", "## Drift", "", "| stream | photos | change at | alarm | first row | delay | what changed |",
              "|---|---:|---:|---|---:|---:|---|"]
    for name, o in r["drift"].items():
        lines.append(f"| {name} | {o['photos']} | {o['change_row'] if o['change_row'] is not None else '–'} | "
                     f"{'yes' if o['alarm'] else 'no'} | {'–' if o['first_row'] is None else o['first_row']} | "
                     f"{'–' if o['delay'] is None else o['delay']} | {', '.join(o['changed']) or '–'} |")
    if "cost" in r:
        c = r["cost"]
        lines += ["", "## Cost (same process, alternating)", "",
                  f"- one photo with its heat map, p50 over {c['repeats']} x 100 paired calls: "
                  f"{c['single_p50_ms']['on']} ms with the guard, "
                  f"{c['single_p50_ms']['off']} ms without (x{c['single_ratio']})",
                  f"- {c['photos']} photos in batches of 32 without heat maps, median of {c['repeats']} paired passes: "
                  f"{c['batch_photos_per_s']['on']} photos/s with, "
                  f"{c['batch_photos_per_s']['off']} without (x{c['batch_ratio']})"]
    lines += ["", f"Took {r['seconds']} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
