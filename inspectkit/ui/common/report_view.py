"""The Model tab: which model is loaded and how it was chosen (its guard included: on with its summary, or "guard
off: <reason>"), and the committed evaluation report (metrics, the images and the markdown) shown as it is, with its
provenance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from inspectkit.limits import MODEL_WAIT_S
from inspectkit.serve.model_source import (
    DEFAULT_CHECKPOINT,
    ENV_MODEL_PATH,
    ENV_MODEL_REPO,
    REPO,
    ModelUnavailable,
    get_handler,
    model_state,
)
from inspectkit.ui.common.render import _esc, md_cell, shown_class

REPORT_IMAGES = (
    ("confusion_matrix.png", "Confusion matrices on the test split (all images, and twin-free)"),
    ("training_curves.png", "Training curves (loss, validation accuracy and defect F2 per epoch)"),
    ("scores.png", "p(defect) of every test image by true class, with the threshold"),
)


def model_status(handler: Any, timeout: float | None = MODEL_WAIT_S) -> tuple[str, float | None, str]:
    """(status HTML, the model's threshold or None, details markdown) once the model is loaded (waits for it).

    A model that failed to load gives its reason in the status instead of raising, so the page still works.
    """
    try:
        h = get_handler(handler, timeout)
    except ModelUnavailable as exc:
        return f"<div class='status failed'>Model not available: {_esc(exc)}</div>", None, ""
    t = h.threshold
    defect = getattr(h, "defect_class", None)
    took = getattr(handler, "load_seconds", None)
    bits = [f"Model ready: classes {', '.join(_esc(c) for c in h.class_names)}"]
    if defect is not None and t is not None:
        bits.append(f"DEFECT when p({_esc(defect)}) &ge; {t:.3f}")
    if took is not None:
        bits.append(f"loaded in {took:.1f} s")
    if defect is not None or getattr(h, "guard_off_reason", None):
        bits.append(guard_status_html(h))
    return "<div class='status ready'>" + " &middot; ".join(bits) + "</div>", t, loaded_model_markdown(h)


def guard_off_reason(h: Any) -> str | None:
    """Why the model has no guard (None: it has one), as the handler says it (``guard_off_reason``)."""
    if getattr(h, "guard", None) is not None:
        return None
    return getattr(h, "guard_off_reason", None) or "this model has no guard: UNUSABLE is never returned"


def guard_status_html(h: Any) -> str:
    """The status line's word on the guard: on (UNUSABLE for photos nobody can judge), or "guard off: <reason>"."""
    why = guard_off_reason(h)
    if why is None:
        return "<span class='guard on'>guard on: photos nobody can judge are UNUSABLE</span>"
    return f"<span class='guard off'>guard off: {_esc(why)}</span>"


def _fitted_on(fitted: Any) -> str:
    if not isinstance(fitted, dict) or not fitted:
        return "not recorded"
    return "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                     for k, v in fitted.items())


def guard_rows(h: Any) -> list[str]:
    """The Model tab's rows about the guard and the drift monitor: its summary, or "guard off: <reason>"."""
    why = guard_off_reason(h)
    if why is not None:
        return [f"| guard | **guard off: {md_cell(why)}** |"]
    g = h.guard.summary()
    reasons = ", ".join(g.get("reasons") or [])
    rows = [f"| guard | **on**: UNUSABLE (with the reason: {md_cell(reasons)}) when the image checks fail or the "
            f"novelty exceeds {g.get('novelty_threshold')}; fitted on {md_cell(_fitted_on(g.get('fitted_on')))} |"]
    ref = getattr(h.guard, "drift_reference", None)
    if isinstance(ref, dict) and ref.get("indicators"):
        names = ", ".join(str(i.get("name")) for i in ref["indicators"])
        rate, horizon = ref.get("false_alarm_rate"), ref.get("horizon")
        budget = (f"; set for under {100 * rate:g} % false alarms over {horizon:,} photos of a steady line"
                  if isinstance(rate, (int, float)) and isinstance(horizon, int) else "")
        rows.append(f"| drift monitor | CUSUM per indicator ({md_cell(names)}) against the validation photos{budget}"
                    f" (the Inspect tab's summary, per drop) |")
    else:
        rows.append("| drift monitor | off: the guard has no drift reference |")
    return rows


def loaded_model_markdown(h: Any) -> str:
    """What the loaded checkpoint says about itself: architecture, classes, threshold, input, library versions."""
    info = getattr(h, "checkpoint_info", {}) or {}
    pre = getattr(h, "preprocessing", {}) or info.get("preprocessing", {})
    lines = ["| property | value |", "|---|---|", f"| architecture | {md_cell(info.get('arch', 'n/a'))} |",
             f"| classes | {md_cell(', '.join(shown_class(h, c) for c in h.class_names))} |",
             f"| defect class | {md_cell(getattr(h, 'defect_class', None))} |",
             f"| threshold | {'n/a' if h.threshold is None else f'{h.threshold:.4f}'} |",
             f"| input | {md_cell(pre.get('size'))} px square, whole frame resized ({md_cell(pre.get('resize', 'stretch'))}) |"]
    band = getattr(h, "review_band", None)
    if isinstance(band, dict):
        how = "derived on validation" if band.get("source") == "validation" else md_cell(band.get("source", ""))
        lines.append(f"| needs-review band | {band['low']:.4f} to {band['high']:.4f} "
                     f"({how}: {md_cell(band.get('rule', ''))}) |")
    from inspectkit.ui.common.heatmap_view import heatmap_row

    lines.append(heatmap_row(h))
    if getattr(h, "defect_class", None) is not None or getattr(h, "guard_off_reason", None):
        lines += guard_rows(h)
    weights = (info.get("train_config") or {}).get("weights")
    if weights:
        lines.append(f"| started from | {md_cell(Path(str(weights)).name)} |")
    counts = (info.get("data") or {}).get("counts") or {}
    if counts:
        lines.append(f"| training images | {md_cell(', '.join(f'{k}: {v}' for k, v in counts.items()))} |")
    val = (info.get("metrics") or {}).get("validation") or {}
    if isinstance(val.get("accuracy"), (int, float)):
        lines.append(f"| validation accuracy | {_pct(val['accuracy'])} (n={md_cell(val.get('n', 'n/a'))}) |")
    sha = getattr(h, "sha256", None)
    if sha:
        lines.append(f"| file SHA-256 | `{md_cell(sha)}` |")
    versions = info.get("versions") or {}
    if versions:
        lines.append(f"| trained with | {md_cell(', '.join(f'{k} {v}' for k, v in versions.items()))} |")
    return "\n".join(lines)


def initial_threshold(handler: Any, report: dict | None) -> float:
    """Where the threshold slider starts before the model is loaded: the loaded model's threshold, else the
    committed report's, else 0.5. The page sets it to the model's once the model is up."""
    if model_state(handler) == "ready":
        t = get_handler(handler).threshold
        if t is not None:
            return float(t)
    t = ((report or {}).get("model") or {}).get("threshold")
    return float(t) if isinstance(t, (int, float)) and 0 < t < 1 else 0.5


def load_report(reports_dir: str | Path) -> tuple[dict | None, str | None]:
    """(the evaluation report, None), or (None, why it is missing or unreadable)."""
    path = Path(reports_dir) / "evaluation.json"
    if not path.is_file():
        return None, (f"No evaluation report yet: `{path.name}` is not in `{Path(reports_dir).name}/`. "
                      "It is written by the evaluation at the end of training (`python train.py`, or "
                      "`python evaluate.py`).")
    try:
        rep = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"The evaluation report `{path.name}` could not be read: {md_cell(exc)}"
    if not isinstance(rep, dict):
        return None, f"The evaluation report `{path.name}` is not a JSON object."
    return rep, None


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) or x != x else f"{100 * x:.2f} %"


def _num(x: Any, digits: int = 4) -> str:
    return "n/a" if not isinstance(x, (int, float)) or x != x else f"{x:.{digits}f}"


def _defect_class(rep: dict) -> str | None:
    return (rep.get("model") or {}).get("defect_class")


def metrics_markdown(rep: dict) -> str:
    """The headline table (validation, test, twin-free test) and per-class tables from the report."""
    defect = _defect_class(rep)
    test = rep.get("test") or {}
    rows = [("validation", rep.get("validation")), ("test, all images", test.get("all")),
            ("test, twin-free", test.get("twin_free"))]
    out = ["| split | images | accuracy | defect recall | defect precision | ROC-AUC | missed defects | "
           "false alarms | threshold |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, m in rows:
        if not isinstance(m, dict):
            out.append(f"| {label} | not in the report | | | | | | | |")
            continue
        pc = (m.get("per_class") or {}).get(defect, {}) if defect else {}
        out.append(f"| {label} | {m.get('n', 'n/a')} | {_pct(m.get('accuracy'))} | {_pct(pc.get('recall'))} | "
                   f"{_pct(pc.get('precision'))} | {_num(m.get('roc_auc'))} | {m.get('missed_defects', 'n/a')} | "
                   f"{m.get('false_alarms', 'n/a')} | {_num(m.get('threshold'))} |")
    td = rep.get("test_data") or {}
    tw = td.get("twins") or {}
    if tw:
        out += ["", f"*Twin-free*: the test images with no exact or near copy in the training split "
                    f"({tw.get('none', 'n/a')} of them; {tw.get('exact', 'n/a')} exact and {tw.get('near', 'n/a')} "
                    f"near copies left out). The public test split leaks into train, so the twin-free row is the "
                    f"honest estimate for new parts."]
    for label, m in rows[1:]:
        if isinstance(m, dict) and m.get("per_class"):
            out += ["", f"**Per class, {label}**", "", "| class | precision | recall | F1 | support |",
                    "|---|---:|---:|---:|---:|"]
            out += [f"| {md_cell(c)} | {_num(v.get('precision'))} | {_num(v.get('recall'))} | {_num(v.get('f1'))} | "
                    f"{v.get('support', 'n/a')} |" for c, v in m["per_class"].items()]
    rob = rep.get("robustness")
    if isinstance(rob, dict) and rob:
        out += ["", "**Robustness**: the test split with the framing or the light changed", "",
                "| change | accuracy | missed defects | false alarms |", "|---|---:|---:|---:|"]
        out += [f"| {md_cell(k)} | {_pct(r.get('accuracy'))} | {r.get('missed_defects', 'n/a')} | "
                f"{r.get('false_alarms', 'n/a')} |" for k, r in rob.items() if isinstance(r, dict)]
    return "\n".join(out)


def provenance_markdown(rep: dict | None, repo: Path = REPO) -> str:
    """Where the data and the weights came from, and which model file is committed."""
    lines = ["**Data.** Kaggle *Real-life industrial dataset of casting product* by Ravirajsinh Dabhi "
             "(300x300 top views of submersible pump impellers, classes `def_front` and `ok_front`), licence "
             "CC BY-NC-ND 4.0. Trained on its `train` split (a validation split carved out with near-duplicates "
             "kept on one side); evaluated once on its `test` split. The example images are unmodified test images "
             "(see `examples/ATTRIBUTION.md`)."]
    cfg = (rep or {}).get("train_config") or {}
    weights = str(cfg.get("weights", ""))
    arch = ((rep or {}).get("model") or {}).get("arch") or cfg.get("arch") or "mobilenet_v2"
    if "mobilenet_v2_imagenet1k" in weights:
        src = ("ImageNet MobileNetV2 weights converted from Google's TF-Slim MobileNetV2 1.0/224 "
               "(`google-coral/test_data`, Apache-2.0) to torchvision's layout")
    elif weights == "imagenet":
        src = "torchvision's official ImageNet weights"
    elif weights in ("", "none"):
        src = "no pretrained weights" if weights == "none" else "pretrained weights named in the training config"
    else:
        src = f"pretrained weights from `{md_cell(Path(weights).name)}`"
    lines.append(f"**Weights.** `{md_cell(arch)}` backbone starting from {src}, fine-tuned in two stages (new head "
                 f"on the frozen backbone, then the last blocks unfrozen at a lower learning rate).")
    td = (rep or {}).get("training_data") or {}
    if td.get("counts"):
        lines.append("**Training images.** " + ", ".join(f"{md_cell(k)}: {v}" for k, v in td["counts"].items())
                     + (f" (file-list SHA-256 `{md_cell(td['files_sha256'][:16])}...`)" if td.get("files_sha256") else ""))
    ckpt = Path(os.environ.get(ENV_MODEL_PATH) or repo / DEFAULT_CHECKPOINT)
    side = Path(str(ckpt) + ".sha256")
    repo_env = os.environ.get(ENV_MODEL_REPO)
    if repo_env:
        lines.append(f"**Model file.** downloaded from the Hugging Face model repo `{md_cell(repo_env)}`.")
    elif ckpt.is_file():
        digest = side.read_text().split()[0] if side.is_file() and side.read_text().split() else "not recorded"
        lines.append(f"**Model file.** `{ckpt.name}`, {ckpt.stat().st_size / 1e6:.1f} MB, SHA-256 `{md_cell(digest)}` "
                     "(checked before loading).")
    else:
        lines.append(f"**Model file.** `{ckpt.name}` is not in this copy of the app.")
    return "\n\n".join(lines)


def report_images(reports_dir: str | Path) -> list[tuple[str, str | None, str]]:
    """(file name, path or None when absent, caption) for each plot the Model tab shows."""
    d = Path(reports_dir)
    return [(name, str(d / name) if (d / name).is_file() else None, caption) for name, caption in REPORT_IMAGES]


def report_markdown_text(reports_dir: str | Path) -> str | None:
    """The full evaluation.md, or None."""
    p = Path(reports_dir) / "evaluation.md"
    try:
        return p.read_text(encoding="utf-8") if p.is_file() else None
    except OSError:
        return None


# ------------------------------------------------------------------------------------------- the status line


def initial_status(handler: Any) -> str:
    """The model-status line the page starts with (above the tabs)."""
    state = model_state(handler)
    if state == "ready":  # the full line at once: classes, threshold and the guard (on, or "guard off: <reason>")
        return model_status(handler)[0]
    if state == "failed":
        return f"<div class='status failed'>Model not available: {_esc(getattr(handler, 'error', ''))}</div>"
    return ("<div class='status loading'>Loading the model in the background; the first inspection may take a few "
            "seconds longer.</div>")


def status_update(handler: Any) -> tuple:
    """For the page-load event: the status line, and the threshold slider set to the model's threshold (waits for the
    model; a failure is shown, not raised)."""
    import gradio as gr

    status, thr, _ = model_status(handler)
    # shown to 4 decimals; until the user moves the slider, decisions use the model's exact threshold
    return status, gr.update(value=round(thr, 4)) if thr is not None else gr.update()


def loaded_text(handler: Any, note: str = "") -> str:
    """The Model tab's table of the model in use (waits for it), with ``note`` under it; says so when the model
    failed to load."""
    details = model_status(handler)[2]
    if not details:
        return "The model is not loaded; see the status line above."
    return details + (f"\n\n*{note}*" if note else "")
