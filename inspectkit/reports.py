"""The evaluation report: evaluation.json (every number), evaluation.md (tables) and PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import save_json
from .imageio import load_rgb


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f} %"


def report_dict(ckpt: dict, result: dict) -> dict:
    """Everything the README and the app's Model tab show, in one JSON-able dict."""
    m = ckpt.get("metrics", {})
    return {
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
        "misclassified": result["misclassified"],
        "history": ckpt.get("history", []),
    }


def markdown(rep: dict) -> str:
    """A human-readable summary with the results table, the sweep and the errors."""
    names = rep["model"]["class_names"]
    lines = [f"# Evaluation of {rep['model']['arch']} ({', '.join(names)})", ""]
    thr = rep["model"]["threshold"]
    if thr is not None:
        tc = rep.get("threshold_choice") or {}
        lines += [f"Decision threshold {thr:.4f} (defect when p(defect) >= threshold), chosen on validation: "
                  f"lowest false-alarm rate with defect recall >= {tc.get('target_recall')}.", ""]
    lines += ["| split | n | accuracy | ROC-AUC | missed defects | false alarms |", "|---|---:|---:|---:|---:|---:|"]
    rows = [("validation", rep.get("validation")), ("test (all)", rep["test"]["all"]),
            ("test (twin-free)", rep["test"]["twin_free"])]
    for label, r in rows:
        if r:
            lines.append(f"| {label} | {r['n']} | {_pct(r['accuracy'])} | {r.get('roc_auc', float('nan')):.5f} | "
                         f"{r.get('missed_defects', '-')} | {r.get('false_alarms', '-')} |")
    tw = rep["test_data"]["twins"]
    lines += ["", f"Test images with a twin in train: {tw['exact']} exact, {tw['near']} near; "
                  f"{tw['none']} twin-free (similarity threshold {rep['test_data']['twin_threshold']}).", ""]
    for label, r in rows[1:]:
        lines += [f"## Per class, {label}", "", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {c} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
                  for c, v in r["per_class"].items()]
        lines += ["", "Confusion matrix (rows true, columns predicted): " + ", ".join(names), "", "```"]
        lines += [f"{names[i]:>12} " + " ".join(f"{x:5d}" for x in row) for i, row in enumerate(r["confusion_matrix"])]
        lines += ["```", ""]
    if rep.get("validation_sweep"):
        lines += ["## Threshold sweep", "", "| threshold | val recall | val false-alarm rate | test recall | test false-alarm rate |",
                  "|---:|---:|---:|---:|---:|"]
        for v, t in zip(rep["validation_sweep"], rep.get("test_sweep") or []):
            lines.append(f"| {v['threshold']:.2f} | {v['recall']:.4f} | {v['false_alarm_rate']:.4f} | "
                         f"{t['recall']:.4f} | {t['false_alarm_rate']:.4f} |")
        lines.append("")
    if rep.get("robustness"):
        lines += ["## Robustness: the test split with the camera framing or light changed", "",
                  "| change | accuracy | missed defects | false alarms |", "|---|---:|---:|---:|"]
        for k, r in rep["robustness"].items():
            lines.append(f"| {k} | {_pct(r['accuracy'])} | {r.get('missed_defects', '-')} | {r.get('false_alarms', '-')} |")
        lines.append("")
    lines += ["## Misclassified test images", ""]
    if not rep["misclassified"]:
        lines.append("None.")
    for e in rep["misclassified"]:
        p = ", ".join(f"{c} {v:.4f}" for c, v in e["probabilities"].items())
        lines.append(f"- `{e['file']}`: true {e['true']}, predicted {e['predicted']} ({p}); twin in train: {e['twin']}")
    return "\n".join(lines) + "\n"


def plots(rep: dict, out: Path, data_root: str | Path) -> list[Path]:
    """training_curves.png, confusion_matrix.png, threshold_curve.png, misclassified.png."""
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
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for a, key in zip(axes, ("all", "twin_free")):
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
        a.set_title(f"test ({key.replace('_', '-')}, n={cm.sum()})")
    fig.tight_layout()
    written.append(out / "confusion_matrix.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    if rep.get("validation_sweep"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, style in (("validation_sweep", "-"), ("test_sweep", "--")):
            s = rep.get(key) or []
            t = [r["threshold"] for r in s]
            ax.plot(t, [r["recall"] for r in s], style, color="C3", label=f"defect recall ({key.split('_')[0]})")
            ax.plot(t, [r["false_alarm_rate"] for r in s], style, color="C0",
                    label=f"false-alarm rate ({key.split('_')[0]})")
        ax.axvline(rep["model"]["threshold"], color="k", lw=0.8, label="chosen threshold")
        ax.set_xlabel("threshold on p(defect)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "threshold_curve.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    errs = rep["misclassified"][:12]
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


def write_report(ckpt: dict, result: dict, reports_dir: str | Path, data_root: str | Path) -> dict:
    """Write evaluation.json, evaluation.md and the plots into reports_dir; returns the report dict."""
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = report_dict(ckpt, result)
    save_json(rep, out / "evaluation.json")
    save_json(result["predictions"], out / "test_predictions.json")
    (out / "evaluation.md").write_text(markdown(rep))
    plots(rep, out, data_root)
    return rep
