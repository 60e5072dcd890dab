"""The evaluation report: evaluation.json (every number), evaluation.md (tables) and PNG plots.

One writer for both kinds of result: a checkpoint's test split (:func:`inspectkit.engine.evaluation.evaluate`: whole and
twin-free, twins against train) and every image of another labelled set
(:func:`inspectkit.engine.evaluation.evaluate_folder`: ``split`` "all", twin-free part and twins only when asked for).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inspectkit.data.folders import save_json
from inspectkit.imageio import load_rgb


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f} %"


def set_labels(result: dict) -> tuple[str, str]:
    """(name, short) of the images a result measured: ("test", "test") for the test split, (the folder's name,
    "this set") for every image of another set."""
    if result.get("split", "test") == "test":
        return "test", "test"
    return Path(result["data"]["root"]).name, "this set"


def score_summary(predictions: list[dict], class_names: list[str], threshold: float | None) -> dict | None:
    """Per true class: how many images, the spread of their p(defect) (min, 5th percentile, median, 95th
    percentile, max) and how many fall on the defect side of the threshold. None without p(defect) (multi-class)."""
    if not predictions or "p_defect" not in predictions[0]:
        return None
    out = {}
    for c in class_names:
        p = np.array([e["p_defect"] for e in predictions if e["label"] == c], dtype=np.float64)
        if not len(p):
            continue
        q = np.percentile(p, [0, 5, 50, 95, 100])
        out[c] = {"n": int(len(p)), **{k: round(float(v), 6) for k, v in zip(("min", "p5", "median", "p95", "max"), q)},
                  "at_or_above_threshold": int((p >= threshold).sum()) if threshold is not None else None}
    return out


def report_dict(ckpt: dict, result: dict) -> dict:
    """Everything the README and the app's Model tab show, in one JSON-able dict."""
    m = ckpt.get("metrics", {})
    return {
        "split": result.get("split", "test"),
        "model": {"arch": ckpt["arch"], "class_names": ckpt["class_names"],
                  "defect_class": result["checkpoint"]["defect_class"], "threshold": ckpt["threshold"],
                  "preprocessing": ckpt["preprocessing"], "versions": ckpt.get("versions", {})},
        "train_config": ckpt.get("train_config", {}),
        "training_data": {k: v for k, v in ckpt.get("data", {}).items() if k not in ("test", "twins")},
        "timing": m.get("timing", {}),
        "threshold_choice": m.get("threshold_choice"),
        "validation": m.get("validation"),
        "validation_sweep": m.get("validation_sweep"),
        "test": result["test"],
        "test_sweep": result.get("test_sweep"),
        "test_data": result["data"],
        "robustness": result.get("robustness"),
        "scores": score_summary(result.get("predictions", []), ckpt["class_names"], ckpt["threshold"]),
        "misclassified": result["misclassified"],
        "unusable": result.get("unusable"),
        "history": ckpt.get("history", []),
    }


def markdown(rep: dict) -> str:
    """A human-readable summary with the results table, the sweep and the errors."""
    names = rep["model"]["class_names"]
    folder = rep.get("split", "test") != "test"
    name, short = set_labels({"split": rep.get("split", "test"), "data": rep["test_data"]})
    td = rep["test_data"]
    lines = [f"# Evaluation of {rep['model']['arch']} ({', '.join(names)})"
             + (f" on every image of `{Path(td['root']).name}`" if folder else ""), ""]
    if folder:
        lines += [f"All {td['n_listed']} images of `{td['root']}` (one folder per class), not the checkpoint's test "
                  f"split: {td['test']['n']} read ({', '.join(f'{k} {v}' for k, v in td['test']['counts'].items())})"
                  f", {td['n_skipped']} unreadable skipped. Nothing here chose the model or its threshold.", ""]
        if td.get("same_as_training"):
            lines += ["**Warning: these are exactly the files the checkpoint was trained from; nothing here is "
                      "unseen.**", ""]
    thr = rep["model"]["threshold"]
    if thr is not None:
        tc = rep.get("threshold_choice") or {}
        how = (f", chosen on validation: lowest false-alarm rate with defect recall >= {tc['target_recall']}"
               if tc.get("target_recall") is not None else "")
        lines += [f"Decision threshold {thr:.4f} (defect when p(defect) >= threshold){how}.", ""]
    lines += ["| split | n | accuracy | ROC-AUC | missed defects | false alarms |", "|---|---:|---:|---:|---:|---:|"]
    rows = [("validation (the checkpoint's own data)" if folder else "validation", rep.get("validation")),
            (f"{name}, all images" if folder else "test (all)", rep["test"]["all"])]
    if "twin_free" in rep["test"]:
        rows.append((f"{name}, twin-free" if folder else "test (twin-free)", rep["test"]["twin_free"]))
    for row_label, r in rows:
        if r:
            lines.append(f"| {row_label} | {r['n']} | {_pct(r['accuracy'])} | {r.get('roc_auc', float('nan')):.5f} | "
                         f"{r.get('missed_defects', '-')} | {r.get('false_alarms', '-')} |")
    lines.append("")
    tw = td.get("twins")
    if tw:
        against = f"the training data `{td['train_data']['root']}`" if folder else "train"
        lines += [f"{'Images' if folder else 'Test images'} with a twin in {against}: {tw['exact']} exact, "
                  f"{tw['near']} near; {tw['none']} twin-free (similarity threshold {td['twin_threshold']}).", ""]
    for row_label, r in rows[1:]:
        lines += [f"## Per class, {row_label}", "", "| class | precision | recall | F1 | support |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {c} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
                  for c, v in r["per_class"].items()]
        lines += ["", "Confusion matrix (rows true, columns predicted): " + ", ".join(names), "", "```"]
        lines += [f"{names[i]:>12} " + " ".join(f"{x:5d}" for x in row) for i, row in enumerate(r["confusion_matrix"])]
        lines += ["```", ""]
    if rep.get("validation_sweep"):
        lines += ["## Threshold sweep", "", f"| threshold | val recall | val false-alarm rate | {short} recall | "
                  f"{short} false-alarm rate |", "|---:|---:|---:|---:|---:|"]
        for v, t in zip(rep["validation_sweep"], rep.get("test_sweep") or []):
            lines.append(f"| {v['threshold']:.2f} | {v['recall']:.4f} | {v['false_alarm_rate']:.4f} | "
                         f"{t['recall']:.4f} | {t['false_alarm_rate']:.4f} |")
        lines.append("")
    if rep.get("robustness"):
        what = "every image" if folder else "the test split"
        lines += [f"## Robustness: {what} with the camera framing or light changed", "",
                  "| change | accuracy | missed defects | false alarms |", "|---|---:|---:|---:|"]
        for k, r in rep["robustness"].items():
            lines.append(f"| {k} | {_pct(r['accuracy'])} | {r.get('missed_defects', '-')} | {r.get('false_alarms', '-')} |")
        lines.append("")
    sc = rep.get("scores")
    if sc:
        lines += ["## Per-image scores", "",
                  f"p(defect) of each image by its true class (every image's score: "
                  f"`{predictions_file(rep.get('split', 'test'))}`; plot: `scores.png`).", "",
                  "| true class | n | min | 5 % | median | 95 % | max | p(defect) >= threshold |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {c} | {v['n']} | {v['min']:.4f} | {v['p5']:.4f} | {v['median']:.4f} | {v['p95']:.4f} | "
                  f"{v['max']:.4f} | {'-' if v['at_or_above_threshold'] is None else v['at_or_above_threshold']} |"
                  for c, v in sc.items()]
        lines.append("")
    un = rep.get("unusable")
    if un:
        lines += ["## UNUSABLE (the guard: photos it says cannot be judged)", "",
                  f"{un['unusable']} of {un['n']} photos UNUSABLE; accuracy of the {un['judged']} judged: "
                  f"{_pct(un['accuracy_judged']) if un['accuracy_judged'] is not None else '-'}.", "",
                  "| true class | n | UNUSABLE | reasons |", "|---|---:|---:|---|"]
        lines += [f"| {c} | {v['n']} | {v['unusable']} | "
                  f"{', '.join(f'{k} {n}' for k, n in v['reasons'].items()) or '-'} |" for c, v in un["per_class"].items()]
        lines.append("")
    skipped = td.get("skipped") or []
    if skipped:
        lines += [f"## Unreadable images skipped ({len(skipped)})", ""]
        lines += [f"- `{f}`: {why}" for f, why in skipped]
        lines.append("")
    lines += [f"## Misclassified {'' if folder else 'test '}images ({len(rep['misclassified'])})", ""]
    if not rep["misclassified"]:
        lines.append("None.")
    for e in rep["misclassified"]:
        p = ", ".join(f"{c} {v:.4f}" for c, v in e["probabilities"].items())
        twin = f"; twin in {'the training data' if folder else 'train'}: {e['twin']}" if "twin" in e else ""
        lines.append(f"- `{e['file']}`: true {e['true']}, predicted {e['predicted']} ({p}){twin}")
    return "\n".join(lines) + "\n"


def predictions_file(split: str) -> str:
    """File name of the per-image predictions: the test split's keeps its historical name."""
    return "test_predictions.json" if split == "test" else "predictions.json"


def plots(rep: dict, out: Path, data_root: str | Path, predictions: list[dict] | None = None,
          misclassified_images: bool = True) -> list[Path]:
    """training_curves.png, confusion_matrix.png, threshold_curve.png, scores.png (with ``predictions`` of a binary
    model) and misclassified.png (a mosaic of the data set's own photos: only with ``misclassified_images``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    hist = rep.get("history") or []
    if hist:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        x = np.arange(1, len(hist) + 1)
        ax[0].plot(x, [h["train_loss"] for h in hist], label="train loss")
        ax[0].plot(x, [h["val_loss"] for h in hist], label="validation loss")
        ax[1].plot(x, [h["val_acc"] for h in hist], label="validation accuracy")
        if all("val_f2" in h for h in hist):
            ax[1].plot(x, [h["val_f2"] for h in hist], label="validation defect F2 at 0.5")
        # a dashed line where stage 2 (or the next stage-2 member of a soup) starts
        starts = [i for i in range(1, len(hist))
                  if (hist[i]["stage"], hist[i].get("member", 0)) != (hist[i - 1]["stage"], hist[i - 1].get("member", 0))]
        for a in ax:
            for i in starts:
                a.axvline(i + 0.5, color="grey", ls="--", lw=0.8)
            a.set_xlabel("epoch (stage 1 | stage 2" + (" members" if len(starts) > 1 else "") + ")")
            a.legend()
        fig.tight_layout()
        written.append(out / "training_curves.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    names = rep["model"]["class_names"]
    folder = rep.get("split", "test") != "test"
    name, short = set_labels({"split": rep.get("split", "test"), "data": rep["test_data"]})
    keys = [k for k in ("all", "twin_free") if k in rep["test"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 4), squeeze=False)
    for a, key in zip(axes[0], keys):
        cm = np.array(rep["test"][key]["confusion_matrix"])
        a.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                a.text(j, i, str(cm[i, j]), ha="center", va="center",
                       color="white" if cm[i, j] > cm.max() / 2 else "black")
        a.set_xticks(range(len(names)), names, rotation=30)
        a.set_yticks(range(len(names)), names)
        a.set_xlabel("predicted")
        a.set_ylabel("true")
        a.set_title(f"{name} ({key.replace('_', '-')}, n={cm.sum()})", fontsize=10)
    fig.tight_layout()
    written.append(out / "confusion_matrix.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    if rep.get("validation_sweep"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, style, who in (("validation_sweep", "-", "validation"), ("test_sweep", "--", short)):
            s = rep.get(key) or []
            t = [r["threshold"] for r in s]
            ax.plot(t, [r["recall"] for r in s], style, color="C3", label=f"defect recall ({who})")
            ax.plot(t, [r["false_alarm_rate"] for r in s], style, color="C0", label=f"false-alarm rate ({who})")
        ax.axvline(rep["model"]["threshold"], color="k", lw=0.8, label="chosen threshold")
        ax.set_xlabel("threshold on p(defect)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "threshold_curve.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    if predictions and "p_defect" in predictions[0]:
        written.append(score_plot(predictions, names, rep["model"]["threshold"],
                                  f"{name}, all images" if folder else "test split", out / "scores.png"))
    errs = rep["misclassified"][:12] if misclassified_images else []
    if errs:
        cols = min(4, len(errs))
        rows = (len(errs) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
        for a in axes.ravel():
            a.axis("off")
        for a, e in zip(axes.ravel(), errs):
            try:
                a.imshow(load_rgb(Path(data_root) / e["file"]))
            except ValueError:
                pass
            p = max(e["probabilities"].items(), key=lambda kv: kv[1])
            a.set_title(f"{Path(e['file']).name}\ntrue {e['true']}, pred {e['predicted']}\n"
                        f"p({p[0]})={p[1]:.3f}", fontsize=8)
        fig.tight_layout()
        written.append(out / "misclassified.png")
        fig.savefig(written[-1], dpi=80)
        plt.close(fig)
    return written


def score_plot(predictions: list[dict], class_names: list[str], threshold: float | None, label: str,
               path: Path) -> Path:
    """scores.png: every image's p(defect) as a point in the row of its true class (errors marked), and a
    histogram per true class below, with the decision threshold as a vertical line.

    The axis is the logit of p(defect): a confident model puts most images within 1e-3 of 0 or 1, where a linear
    axis would stack them into two bars and hide how close the errors and the near-misses are to the threshold.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    eps = 1e-6  # the stored scores are rounded to 6 digits: exact 0 and 1 would be infinite on the logit axis
    p = np.clip(np.array([e["p_defect"] for e in predictions], dtype=np.float64), eps, 1 - eps)
    true = np.array([class_names.index(e["label"]) for e in predictions])
    wrong = np.array([e["label"] != e["predicted"] for e in predictions])
    rng = np.random.default_rng(0)  # fixed jitter: the same result draws the same picture
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9.5, 5.5), sharex=True, height_ratios=(1.2, 1))
    edges = 1 / (1 + np.exp(-np.linspace(np.log(eps / (1 - eps)), -np.log(eps / (1 - eps)), 49)))  # even in logit
    for i, c in enumerate(class_names):
        sel = true == i
        if not sel.any():
            continue
        y = i + rng.uniform(-0.28, 0.28, sel.sum())
        top.scatter(p[sel & ~wrong], y[~wrong[sel]], s=9, alpha=0.5, color=f"C{i}", label=f"true {c} ({sel.sum()})")
        top.scatter(p[sel & wrong], y[wrong[sel]], s=36, marker="x", color="C3")
        bottom.hist(p[sel], bins=edges, histtype="step", lw=1.5, color=f"C{i}", label=f"true {c}")
    if wrong.any():
        top.scatter([], [], s=36, marker="x", color="C3", label=f"misclassified ({int(wrong.sum())})")
    ticks = [1e-6, 1e-4, 1e-2, 0.1, 0.5, 0.9, 0.99, 1 - 1e-4, 1 - 1e-6]
    for a in (top, bottom):
        a.set_xscale("logit")
        a.set_xlim(eps / 2, 1 - eps / 2)
        a.xaxis.set_major_locator(FixedLocator(ticks))
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"1-{1 - v:.0e}" if v > 0.995 else f"{v:g}"))
        a.xaxis.set_minor_locator(NullLocator())
        if threshold is not None:
            a.axvline(threshold, color="k", lw=1, ls="--", label=f"threshold {threshold:.4f}" if a is top else None)
    top.set_yticks(range(len(class_names)), [f"true {c}" for c in class_names])
    top.set_ylim(-0.6, len(class_names) - 0.4)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.set_title(f"p(defect) per image, {label} (n={len(p)})", fontsize=10)
    bottom.set_yscale("log")  # a few hundred confident images and a handful near the threshold, both visible
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_ylabel("images")
    bottom.set_xlabel("p(defect) (logit axis; defect when p >= threshold)")
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(ckpt: dict, result: dict, reports_dir: str | Path, data_root: str | Path,
                 misclassified_images: bool = True) -> dict:
    """Write evaluation.json, evaluation.md, the per-image predictions and the plots into reports_dir; returns the
    report dict.

    ``result`` is :func:`inspectkit.engine.evaluation.evaluate`'s (predictions in ``test_predictions.json``) or
    :func:`inspectkit.engine.evaluation.evaluate_folder`'s (``predictions.json``). ``misclassified_images=False`` leaves out
    misclassified.png, the one output that reproduces the data set's photos.
    """
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = report_dict(ckpt, result)
    save_json(rep, out / "evaluation.json")
    save_json(result["predictions"], out / predictions_file(rep["split"]))
    (out / "evaluation.md").write_text(markdown(rep))
    plots(rep, out, data_root, result["predictions"], misclassified_images)
    return rep
