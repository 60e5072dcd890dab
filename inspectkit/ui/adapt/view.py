"""What the Adapt tab shows: its introduction, which model the session uses, scores and before/after side by side
(confusion matrices, missed defects, false alarms) as HTML. Pure functions of results: nothing here trains.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from inspectkit.intervals import LEVEL, interval_text
from inspectkit.ui.adapt.intake import (
    FEW_PER_CLASS,
    HELD_OUT_MIN,
    HELD_OUT_SHARE,
    MAX_CHECKPOINT_MB,
    MAX_PHOTO_MB,
    MAX_PHOTOS,
    MAX_UNZIPPED_MB,
    MAX_ZIP_ENTRIES,
    MAX_ZIP_MB,
    MIN_PER_CLASS,
)
from inspectkit.ui.adapt.settings import AdaptSettings, _no_torch_note
from inspectkit.ui.common.render import md_cell
from inspectkit.ui.common.report_view import model_status

#: Names listed under "missed defects" and "false alarms" in a score.
MAX_LISTED = 20
#: The interval line under a rate: smaller and grey (the tab's stylesheet is in layout.py).
CI_STYLE = "font-size:.85em;color:#6b7280"


def intro_markdown(settings: AdaptSettings) -> str:
    """What the tab does, its limits and the adaptation budget."""
    return f"""
Adapt the model to **a new line** (another camera, light or part batch) from labelled photos of it, then use the
adapted model **in this browser session** (other users keep the default model) and download it.

1. Give labelled photos: **zip files with one folder per class** (e.g. `def_front/` and `ok_front/`; one top
   folder around them is fine) and/or drop photos on **the zone of their class**. Photos sent from the Inspect
   tab's *Label these next* list wait under *To label* until you tick their class.
2. **Score the current model** on them, then **Adapt**. About {round(100 * HELD_OUT_SHARE)} % of the photos (whole near-duplicate groups) are
   held out and before/after is measured there (the threshold is chosen there only with enough defects to check
   the model's recall target; otherwise the current model's is kept unless those photos clearly contradict it).
   Each rate comes with its **90 % interval** and the number of photos behind it: a few dozen photos cannot tell
   99 % from 95 %. With fewer than {HELD_OUT_MIN}
   photos in a class nothing is held out and the figures are **in-sample** (fit, not accuracy on the line).
   The held-out part is split by near-duplicate photos, not by part: **several photos of one part** (turned,
   re-shot) can fall on both sides and flatter the after-figures, so give each part one photo, or check the adapted
   model on parts you did not label. If the current model already gets every photo right, it is kept unchanged.
3. **Use** the adapted model here, and download it with its `.sha256`.

**Limits**: at least {MIN_PER_CLASS} photos per class, at most **{MAX_PHOTOS} photos** in all, **{MAX_PHOTO_MB} MB
per photo**, **{MAX_ZIP_MB} MB per zip** (at most {MAX_UNZIPPED_MB} MB unpacked, {MAX_ZIP_ENTRIES} entries; paths
leading out of the zip, links and encrypted entries are refused), checkpoints up to **{MAX_CHECKPOINT_MB} MB**.
**One adaptation at a time** on this server; inspection keeps answering meanwhile.
Budget: {settings.describe()}.
{_no_torch_note()}"""


def session_line(choice: dict | None) -> str:
    """HTML: which model this session inspects and adapts with."""
    if not choice:
        return ("<div class='status ready' id='session-model-line'>This session uses the <b>default model</b> "
                "(the one every user gets).</div>")
    what = "adapted" if choice.get("source") == "adapted" else "uploaded"
    return (f"<div class='status session' id='session-model-line'>This session uses the <b>{what} model</b> "
            f"<code>{_esc(choice.get('name'))}</code> (file SHA-256 <code>{_esc(choice['sha256'][:16])}\u2026</code>,"
            f" weights <code>{_esc(str(choice.get('weights_sha256', ''))[:16])}\u2026</code>, threshold "
            f"{_num(choice.get('threshold'))}); other users keep the default model.</div>")


def session_note(choice: dict | None) -> str:
    """One sentence under the Model tab's table: which model this session switched to (empty for the default)."""
    if not choice:
        return ""
    what = "adapted" if choice.get("source") == "adapted" else "uploaded"
    return f"This session uses the {what} model {md_cell(choice.get('name'))}."


#: The Adapt tab's warning under FEW_PER_CLASS photos in a class (adapt.py logs its own, few_photos_warning).
FEW_HTML = (f"<span class='adapt-few'><b>Few photos</b>: under {FEW_PER_CLASS} in a class. On line B's learning curves, "
            "10 random photos per class made the model better or worse by a few points depending on the recipe and "
            "the draw: label more (<i>Label these next</i> picks the most useful) and check the adapted model on "
            "photos it did not use before relying on it.</span>")


def _mode_hint(counts: dict[str, int]) -> str:
    least = min(counts.values())
    if least >= HELD_OUT_MIN:
        hint = f"Adapting will hold about {round(100 * HELD_OUT_SHARE)} % of them out to measure before and after."
    else:
        hint = (f"<b>Fewer than {HELD_OUT_MIN} photos in a class: adapting will measure before/after in-sample "
                "(on the photos it trained on).</b>")
    return hint + (" " + FEW_HTML if least < FEW_PER_CLASS else "")


def _name_lists(rep: dict) -> list[str]:
    out = []
    for key, title in (("missed", "Missed defects"), ("false_alarm_files", "False alarms"),
                       ("unreadable", "Unreadable, skipped")):
        names = rep.get(key) or []
        if names:
            more = f"<li>... and {len(names) - MAX_LISTED} more</li>" if len(names) > MAX_LISTED else ""
            out.append(f"<p><b>{title}</b> ({len(names)}):</p><ul class='adapt-list'>"
                       + "".join(f"<li>{_esc(n)}</li>" for n in names[:MAX_LISTED]) + more + "</ul>")
    return out


def adaptation_html(ckpt: dict, result: dict, ignored: list[str] | None = None) -> str:
    """Before and after side by side (confusion matrices, missed defects, false alarms) on the held-out part,
    or on the training photos with a plain warning in in-sample mode; the replayed line when there was one."""
    a = ckpt["metrics"]["adaptation"]
    if a.get("outcome") == "kept the parent":
        return _kept_html(a, result)
    names = list(ckpt["class_names"])
    held = sum((a["split"].get("validation") or {}).values())
    trained = sum((a["split"].get("train") or {}).values())
    threshold_note = _threshold_note((ckpt.get("metrics") or {}).get("threshold_choice") or {})
    if a["mode"] == "held-out":
        banner = (f"<div class='adapt-mode heldout'><b>Held-out</b>: measured on {held} photos of the new line that "
                  f"the adaptation never trained on ({trained} trained on). {threshold_note}</div>")
    else:
        banner = (f"<div class='adapt-mode insample'><b>IN-SAMPLE</b>: too few photos to hold any out (fewer than "
                  f"{HELD_OUT_MIN} in a class), so before and after are measured on the {held} photos the model "
                  f"trained on. They show fit, not accuracy on the line. {threshold_note}</div>")
    if a.get("few_photos"):
        banner += f"<div class='adapt-mode insample'>{FEW_HTML}</div>"
    cols = []
    for side, title in (("before", "Before: the current model"), ("after", "After: the adapted model")):
        r = a[side]["new_line"] or {}
        rr = a[side].get("replay") or {}
        parts = [("new line", r)] + ([("parent's line (replayed)", rr)] if rr else [])
        block = [f"<div class='adapt-col' id='adapt-{side}'><h4>{title}</h4>", _metrics_columns(parts)]
        block.append(_confusion_html(r.get("confusion_matrix"), names, "New line (rows: true class)"))
        if rr:
            block.append(_confusion_html(rr.get("confusion_matrix"), names, "Parent's line, replayed photos"))
        block.append("</div>")
        cols.append("".join(block))
    skipped = (a.get("data") or {}).get("skipped") or []
    replay = ("none (the model may forget its own line)" if not a.get("replay")
              else f"{_esc(a['replay']['per_class'])} photos per class of the parent's line")
    notes = [f"<p>Adapted in {result.get('seconds', 'n/a')} s. Threshold {_num(a['parent'].get('threshold'))} "
             f"\u2192 {_num(ckpt['threshold'])}. Replay: {replay}. File SHA-256 <code>{_esc(result['sha256'])}</code>, "
             f"weights <code>{_esc(result['weights_sha256'][:16])}\u2026</code>.</p>"]
    if skipped:
        notes.append("<p><b>Unreadable, skipped</b>: " + _esc("; ".join(
            f"{Path(str(p)).parent.name}/{Path(str(p)).name}: {w}" for p, w in skipped[:MAX_LISTED])) + "</p>")
    if ignored:
        notes.append(f"<p class='muted'>Not photos, left out: {_esc('; '.join(ignored[:MAX_LISTED]))}</p>")
    return (f"<div class='adapt-result'>{banner}<div class='adapt-cols'>{''.join(cols)}</div>{''.join(notes)}</div>")


def _kept_html(a: dict, result: dict) -> str:
    """The result when there was nothing to learn: the current model kept unchanged, and why."""
    seen = a.get("all_new_photos") or {}
    return (f"<div class='adapt-result'><div class='adapt-mode kept' id='adapt-kept'><b>Nothing to learn</b>: "
            f"{_esc(a.get('why', ''))}.</div>"
            f"{_metrics_columns([('all new photos, current model', seen)])}"
            f"<p>Checked in {result.get('seconds', 'n/a')} s. Switching to this file changes nothing; to adapt "
            f"anyway, tick <i>Adapt even if the current model gets every photo right</i> (<code>adapt.py --force</code>). File SHA-256 <code>{_esc(result['sha256'])}</code>.</p></div>")


def _threshold_note(tc: dict) -> str:
    """One sentence on the adapted model's threshold: chosen on the held-out photos, kept, or moved, and why."""
    why = _esc(tc.get("why", ""))
    if "kept_from_parent" not in tc:
        return "The threshold was chosen on them too, which flatters the after-figures a little."
    if tc["kept_from_parent"]:
        return f"The current model's threshold was kept ({why})."
    if tc.get("applied") == "parent unless contradicted":
        return (f"The threshold moved from {_num(tc.get('parent_threshold'), 3)} to {_num(tc.get('threshold'), 3)} "
                f"because these photos contradict the current one ({why}); it was chosen on them, which flatters "
                f"the after-figures a little.")
    return f"The threshold was not chosen on them: {_num(tc.get('threshold'), 3)} ({why})."


def status_html(h: Any, choice: dict | None) -> str:
    """The page's status line for the session's model."""
    status, _, _ = model_status(h)
    if not choice:
        return status
    what = "adapted" if choice.get("source") == "adapted" else "uploaded"
    return status.replace("Model ready:", f"This session: {what} model {_esc(choice.get('name'))} &middot; ready:", 1)


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 4) -> str:
    return "n/a" if not isinstance(x, (int, float)) or x != x else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) or x != x else f"{100 * x:.1f} %"


def _rate_cell(r: dict, key: str) -> str:
    """A rate with its interval: accuracy as '96.7 %', a count as '1 of 15 (6.7 %)', then '90 % CI lo–hi, n=N'
    on a second line (from the report's ``intervals``; the plain figure where a report has none)."""
    iv = (r.get("intervals") or {}).get(key)
    if key == "accuracy":
        head = _pct(r.get("accuracy"))
    elif iv is not None:
        head = f"{_esc(r.get(key))} of {iv['n']} ({100 * iv['rate']:.1f} %)"
    else:
        head = _esc(r.get(key, "n/a"))
    if iv is None:
        empty = key != "accuracy" and key in (r.get("intervals") or {})
        return head + (f"<br><span class='ci' style='{CI_STYLE}'>no photos of that class</span>" if empty else "")
    return f"{head}<br><span class='ci' style='{CI_STYLE}'>{_esc(interval_text(iv))}</span>"


def _metrics_table(rows: list[tuple[str, dict]]) -> str:
    head = ("<table class='adapt-metrics'><tr><th></th><th>photos</th><th>accuracy</th><th>ROC-AUC</th>"
            "<th>missed defects (of the defects)</th><th>false alarms (of the OK parts)</th><th>threshold</th></tr>")
    body = "".join(f"<tr><th>{_esc(label)}</th><td>{_esc(r.get('n', 'n/a'))}</td><td>{_rate_cell(r, 'accuracy')}</td>"
                   f"<td>{_num(r.get('roc_auc'), 3)}</td><td class='missed'>{_rate_cell(r, 'missed_defects')}</td>"
                   f"<td>{_rate_cell(r, 'false_alarms')}</td><td>{_num(r.get('threshold'))}</td></tr>"
                   for label, r in rows)
    return head + body + "</table>" + _ci_note(r for _, r in rows)


def _metrics_columns(cols: list[tuple[str, dict]]) -> str:
    """The same figures with one column per data part (narrow enough for two side by side)."""
    head = "<table class='adapt-metrics'><tr><th></th>" + "".join(f"<th>{_esc(c)}</th>" for c, _ in cols) + "</tr>"
    rows = [("photos", lambda r: _esc(r.get("n", "n/a"))), ("accuracy", lambda r: _rate_cell(r, "accuracy")),
            ("ROC-AUC", lambda r: _num(r.get("roc_auc"), 3)),
            ("missed defects", lambda r: _rate_cell(r, "missed_defects")),
            ("false alarms", lambda r: _rate_cell(r, "false_alarms")),
            ("threshold", lambda r: _num(r.get("threshold")))]
    body = "".join(f"<tr><th>{label}</th>" + "".join(
        f"<td{' class=missed' if label == 'missed defects' else ''}>{fmt(r)}</td>" for _, r in cols) + "</tr>"
        for label, fmt in rows)
    return head + body + "</table>" + _ci_note(r for _, r in cols)


def _ci_note(reports) -> str:
    """A line under a table with intervals: what they are."""
    if not any(r.get("intervals") for r in reports):
        return ""
    return (f"<p class='muted ci-note'>{round(100 * LEVEL)} % CI: Wilson score interval of the rate, n the photos it "
            "counts (all of them for accuracy, the defects for missed defects, the OK parts for false alarms).</p>")


def _confusion_html(cm: Any, names: list[str], caption: str) -> str:
    """A confusion matrix as an HTML table: rows the true class, columns the predicted one."""
    if not cm:
        return ""
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    rows = "".join(f"<tr><th>{_esc(names[i])}</th>" + "".join(
        f"<td class='{'diag' if i == j else 'off'}'>{int(v)}</td>" for j, v in enumerate(row)) + "</tr>"
        for i, row in enumerate(cm))
    return (f"<table class='cm'><caption>{_esc(caption)}</caption><tr><th>true \\ predicted</th>{head}</tr>"
            f"{rows}</table>")
