"""What the Inspect tab draws for photos: display copies, heat-map overlays, the verdict badge, the latency
breakdown, the table and the "Label these next" list (the job as a whole, the summary and the gallery's order are in
``job_view``). Pure functions of stored results: nothing here runs the network.

UNUSABLE (a model with a guard, inspectkit/guard.py): a photo nobody can judge (too dark, out of focus, not a
casting...) gets its own colour and the badge "UNUSABLE — <reason>", its own count in the summary, its reason
and novelty in the table and the CSV, and leads "Label these next" (it needs a person). The network's p(defect) and
heat map are still shown, greyed and marked "not judged: what the network saw" (:func:`not_judged`).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from inspectkit.labels import label_for
from inspectkit.review import review_order, uncertainty
from inspectkit.serve.model_source import get_handler
from inspectkit.serve.results import display_names_of
from inspectkit.verdicts import UNUSABLE

TABLE_HEADERS = ["file", "verdict", "defect probability", "threshold", "latency ms", "note", "review", "class",
                 "unusable reason", "novelty"]

#: How an UNUSABLE photo's probability and heat map are marked: shown, but not a verdict.
NOT_JUDGED = "not judged: what the network saw"


#: Rows shown in "Label these next" (the CSV ranks the whole batch).
LABEL_NEXT_ROWS = 10


STAGES = ("decode", "preprocess", "forward", "gradcam", "overlay", "total")


#: Longest side of the copies kept for display: enough for a 300 px casting photo at 2x, small per session.
DISPLAY_SIDE = 640


DEFAULT_OPACITY = 0.45


def fit(rgb: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image shrunk so that its longer side is at most ``side`` (never enlarged)."""
    import cv2

    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if s >= 1.0:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def heat_u8(heat: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """A heat map as uint8 0..255 at ``shape`` (h, w); float maps are taken as 0..1."""
    if heat is None:
        return None
    import cv2

    h = np.asarray(heat)
    if h.ndim == 3:
        h = h[..., 0]
    if h.dtype != np.uint8:
        h = (np.clip(np.nan_to_num(h.astype(np.float32)), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if h.shape != tuple(shape):
        h = cv2.resize(h, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return h


def blend(rgb: np.ndarray, heat: np.ndarray | None, opacity: float, colormap: Any = "jet") -> np.ndarray:
    """The heat map drawn over the photo at ``opacity`` (0: photo only, 1: heat map only), with the same
    colour map and blending as the handler's own overlay (inspectkit.heatmap.overlay)."""
    if heat is None:
        return rgb
    from inspectkit.heatmap.render import overlay

    return overlay(rgb, heat.astype(np.float32) * np.float32(1.0 / 255.0), float(np.clip(opacity, 0.0, 1.0)),
                   colormap)


def placeholder(side: int = 160) -> np.ndarray:
    """A grey tile with a dark cross, standing in the gallery for a file that could not be read."""
    img = np.full((side, side, 3), 225, np.uint8)
    idx = np.arange(side)
    for d in (-2, -1, 0, 1, 2):
        j = np.clip(idx + d, 0, side - 1)
        img[idx, j] = 120
        img[idx, side - 1 - j] = 120
    return img


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def fmt_p(x: float | None) -> str:
    """A probability to 3 decimals, "n/a" for None."""
    return "n/a" if x is None else f"{x:.3f}"


def colormap_of(handler: Any) -> Any:
    """The colour map the handler draws its overlays with (so redrawn overlays match its own)."""
    return getattr(get_handler(handler), "colormap", "jet")


def _verdict_class(v: str) -> str:
    return {"DEFECT": "defect", "OK": "ok", "ERROR": "error", UNUSABLE: "unusable"}.get(str(v).upper(), "other")


def is_unusable(item: dict | None, verdict: str | None = None) -> bool:
    """Whether a stored result cannot be judged: the guard gave a reason (or the verdict says UNUSABLE)."""
    if not item or item.get("error"):
        return False
    return bool(item.get("unusable_reason")) or verdict == UNUSABLE


def verdict_text(verdict: str | None, reason: str | None = None) -> str:
    """The verdict as the page says it: "UNUSABLE — too dark" for a photo nobody can judge, else the verdict."""
    if verdict == UNUSABLE:
        return f"{UNUSABLE} — {reason}" if reason else UNUSABLE
    return str(verdict)


def network_verdict(handler: Any, item: dict, thr: float | None) -> str | None:
    """What the network alone would answer at ``thr`` (OK/DEFECT; the guard left out): the class an UNUSABLE photo's
    probabilities point to, shown greyed as what the network saw. None without a defect probability."""
    if item.get("error") or item.get("defect_probability") is None:
        return None
    return get_handler(handler).decide(item["probabilities"], thr)


def not_judged(rgb: np.ndarray) -> np.ndarray:
    """A copy of ``rgb`` greyed (mostly desaturated, lightened) under a dark band that reads NOT JUDGED: the heat
    map of an UNUSABLE photo is what the network saw, not a verdict."""
    import cv2

    img = np.asarray(rgb, dtype=np.float32)
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    out = 0.35 * img + 0.65 * grey[..., None]
    out = np.clip(0.7 * out + 0.3 * 205.0, 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    bar = max(12, h // 9)
    out[:bar] = (68, 64, 60)
    text, font = "NOT JUDGED", cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = max(0.3, min(0.7 * bar / th, 0.9 * w / tw))
    thick = max(1, int(round(scale * 1.6)))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(out, text, (max(0, (w - tw) // 2), min(bar - 2, (bar + th) // 2)), font, scale, (255, 255, 255),
                thick, cv2.LINE_AA)
    edge = max(2, min(h, w) // 80)
    out[bar:, :edge] = out[bar:, w - edge:] = out[h - edge:, :] = (161, 98, 7)
    return out


def reason_counts(items: list, verdicts: list) -> dict[str, int]:
    """How many UNUSABLE photos there are per reason."""
    counts: dict[str, int] = {}
    for it, v in zip(items, verdicts):
        if v == UNUSABLE:
            why = it.get("unusable_reason") or "no reason given"
            counts[why] = counts.get(why, 0) + 1
    return counts


def band_text(band: dict | None) -> str:
    """"0.120–0.880": the needs-review band as shown (empty without one)."""
    return "" if band is None else f"{fmt_p(band['low'])}\u2013{fmt_p(band['high'])}"


def badge_html(item: dict | None, verdict: str | None, thr: float | None, band: dict | None = None,
               handler: Any = None) -> str:
    """The verdict badge of one photo: its verdict in its colour (UNUSABLE with the reason), NEEDS REVIEW inside the
    band, p(defect), the threshold and the class (greyed and marked not judged for an UNUSABLE photo)."""
    if item is None:
        return "<div class='badge-box muted'>No image inspected yet.</div>"
    name = _esc(item["name"])
    if item.get("error"):
        return (f"<div class='badge-box'><span class='badge error'>ERROR</span>"
                f"<div class='badge-text'><b>{name}</b><br>{_esc(item['error'])}</div></div>")
    p = item.get("defect_probability")
    unusable = is_unusable(item, verdict)
    line = (f"p(defect) = <b>{fmt_p(p)}</b> &middot; threshold {fmt_p(thr)}" if p is not None
            else f"label <b>{_esc(item.get('label'))}</b>")
    if handler is not None and item.get("label") is not None:
        seen = network_verdict(handler, item, thr) if unusable else verdict
        cls = item["label"] if p is None else label_for(get_handler(handler), item["probabilities"], seen)
        line += f" &middot; class <span class='class-label'>{_esc(shown_class(handler, cls))}</span>"
    if unusable:
        # the network's answer is shown for the engineer, greyed: it is not a verdict on this photo
        nov = item.get("novelty")
        line = (f"<span class='not-judged'>{_esc(NOT_JUDGED.capitalize())}: {line}"
                + (f" &middot; novelty {nov:.4g}" if isinstance(nov, (int, float)) else "") + "</span>")
    flag = ""
    if needs_review_of(item, band) and not unusable:  # UNUSABLE already says a person must look
        # the verdict stays as decided; the flag says it is too close to the threshold to trust without a look
        flag = (f"<span class='flag review' title='p(defect) is inside the review band {band_text(band)}'>"
                f"NEEDS REVIEW</span>")
        line += f" &middot; review band {band_text(band)}"
    shown = verdict_text(verdict, item.get("unusable_reason"))
    return (f"<div class='badge-box'><span class='badge {_verdict_class(verdict)}'>{_esc(shown)}</span>{flag}"
            f"<div class='badge-text'><b>{name}</b><br>{line}</div></div>")


def latency_html(timings: dict) -> str:
    """A one-row table of the per-stage latency in milliseconds."""
    keys = [k for k in STAGES if k in timings] + [k for k in timings if k not in STAGES]
    if not keys:
        return ""
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    cells = "".join(f"<td>{timings[k]:.1f}</td>" for k in keys)
    return (f"<table class='latency'><caption>Latency, ms per stage</caption><tr>{head}</tr>"
            f"<tr>{cells}</tr></table>")


def unusable_count_html(n: int, reasons: dict[str, int]) -> str:
    """"3 UNUSABLE (2 too dark, 1 out of focus)" in the UNUSABLE colour (the summary)."""
    why = ", ".join(f"{k:,} {_esc(r)}" for r, k in sorted(reasons.items(), key=lambda kv: -kv[1]))
    return f"<span class='count unusable'>{n:,} UNUSABLE</span>" + (f" ({why})" if why else "")


def table_rows(handler: Any, items: list, verdicts: list, thr: float | None, band: dict | None = None) -> list[list]:
    """One row per file: file, verdict, defect probability, threshold, total latency in ms, error, label, needs
    review, the review band's low and high edge, the labelling rank (1: UNUSABLE photos, then closest to the
    threshold), the label's display name, the reason a photo is UNUSABLE, its novelty and its place in the input
    order (1, 2, ...; None for a file refused before inspection). The label of an UNUSABLE photo is the class the
    network's probabilities point to (not a verdict)."""
    rows = []
    ranks = review_ranks(items, thr)
    for it, v, rank in zip(items, verdicts, ranks):
        p = it.get("defect_probability")
        total = it.get("timings_ms", {}).get("total")
        seen = network_verdict(handler, it, thr) if is_unusable(it, v) else v
        label = it.get("label") if it.get("error") or p is None else label_for(
            get_handler(handler), it["probabilities"], seen)
        nov = it.get("novelty")
        shown_thr = None if thr is None or it.get("error") else round(thr, 4)
        review = needs_review_of(it, band)
        shown = None if label is None else display_names_of(get_handler(handler)).get(label, label)
        rows.append([it["name"], v, None if p is None else round(p, 4), shown_thr,
                     None if total is None else round(total, 1), it.get("error") or "", label, review,
                     None if review is None else round(band["low"], 4),
                     None if review is None else round(band["high"], 4), rank, shown,
                     (it.get("unusable_reason") or None) if v == UNUSABLE else None,
                     None if nov is None or it.get("error") else float(f"{float(nov):.6g}"),
                     None if it.get("index") is None else it["index"] + 1])
    return rows


def table_view(rows: list[list]) -> list[list]:
    """The table as shown (TABLE_HEADERS): an UNUSABLE photo's p(defect) and class are marked not judged."""
    out = []
    for r in rows:
        unusable = r[1] == UNUSABLE
        p = "" if r[2] is None else f"{r[2]:.4f}" + (" (not judged)" if unusable else "")
        cls = "" if r[6] is None else (r[6] if r[11] in (None, r[6]) else f"{r[11]} ({r[6]})")
        out.append([r[0], r[1], p, "" if r[3] is None else f"{r[3]:.4f}", "" if r[4] is None else f"{r[4]:.1f}",
                    r[5], "needs review" if r[7] else "", f"{cls} (not judged)" if unusable and cls else cls,
                    r[12] or "", "" if r[13] is None else f"{r[13]:.4g}"])
    return out


def label_next_markdown(items: list, verdicts: list, thr: float | None, band: dict | None,
                        limit: int = LABEL_NEXT_ROWS) -> str:
    """"Label these next": the batch's UNUSABLE photos first (nobody can judge them: a person must), then the
    photos closest to the threshold (|logit p - logit threshold|, in logits), at most ``limit`` rows; the ones
    inside the review band are marked. Empty without a threshold."""
    ranks = review_ranks(items, thr)
    order = sorted((r, i) for i, r in enumerate(ranks) if r is not None)
    if not order:
        return ""
    n_rev = sum(1 for it in items if needs_review_of(it, band))
    n_unusable = sum(1 for _, i in order if is_unusable(items[i], verdicts[i]))
    first = (f"UNUSABLE first: {n_unusable} photo{'s' if n_unusable != 1 else ''} nobody can judge, a person must; "
             "then " if n_unusable else "")
    out = [f"**Label these next** ({first}closest to the threshold {fmt_p(thr)} first; {n_rev} of {len(order)} "
           f"inside the review band {band_text(band) or 'n/a'})", "",
           "| # | file | p(defect) | verdict | logits from threshold | needs review |", "|---:|---|---:|---|---:|---|"]
    for r, i in order[:limit]:
        it = items[i]
        p = it["defect_probability"]
        unusable = is_unusable(it, verdicts[i])
        shown = verdict_text(UNUSABLE, it.get("unusable_reason")) if unusable else verdicts[i]
        out.append(f"| {r} | {md_cell(it['name'])} | {p:.4f}{' (not judged)' if unusable else ''} | "
                   f"{md_cell(shown)} | {uncertainty(p, thr):.2f} | {'yes' if needs_review_of(it, band) else ''} |")
    if len(order) > limit:
        out += ["", f"*{len(order) - limit} more in the CSV (column `review_rank`).*"]
    return "\n".join(out)


def shown_class(handler: Any, class_name: str | None) -> str | None:
    """``"Defect (def_front)"``: the model's display name beside the raw class name (inspectkit/labels.py)."""
    from inspectkit.labels import shown

    if class_name is None:
        return None
    return shown(class_name, display_names_of(get_handler(handler)))


def needs_review_of(item: dict, band: dict | None) -> bool | None:
    """Whether a stored result's p(defect) lies in ``band``; None for a failed file or without a band."""
    p = item.get("defect_probability")
    if item.get("error") or p is None or band is None:
        return None
    return bool(band["low"] <= p <= band["high"])


def review_ranks(items: list, thr: float | None) -> list[int | None]:
    """Per item its place in the labelling order, None where there is no p(defect): the UNUSABLE photos first
    (in batch order: nobody can judge them, a person must), then the others closest to the threshold first."""
    ranks: list[int | None] = [None] * len(items)
    if thr is None:
        return ranks
    probs = [None if it.get("error") else it.get("defect_probability") for it in items]
    unusable = [i for i, (it, p) in enumerate(zip(items, probs)) if p is not None and is_unusable(it)]
    first = set(unusable)
    judged = [None if i in first else p for i, p in enumerate(probs)]
    for rank, i in enumerate(unusable + review_order(judged, thr), start=1):
        ranks[i] = rank
    return ranks


def md_cell(x: Any) -> str:
    """Text safe inside a Markdown table cell (no pipes, no HTML, no link syntax)."""
    return html.escape(str(x)).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]").replace("\n", " ")
