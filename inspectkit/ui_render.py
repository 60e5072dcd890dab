"""What the Inspect tab draws: display copies of the photos, heat-map overlays, the verdict badge, the summary,
the gallery, the table, the latency breakdown and the "Label these next" list. Pure functions of stored results:
nothing here runs the network.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from . import service
from .review import review_order, uncertainty
from .service import get_handler

TABLE_HEADERS = ["file", "verdict", "defect probability", "threshold", "latency ms", "note", "review", "class"]


#: Rows shown in "Label these next" (the CSV ranks the whole batch).
LABEL_NEXT_ROWS = 10


STAGES = ("decode", "preprocess", "forward", "gradcam", "overlay", "total")


#: Longest side of the copies kept for display: enough for a 300 px casting photo at 2x, small per session.
DISPLAY_SIDE = 640


DEFAULT_OPACITY = 0.45


def _fit(rgb: np.ndarray, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The image shrunk so that its longer side is at most ``side`` (never enlarged)."""
    import cv2

    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if s >= 1.0:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _heat_u8(heat: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
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


def blend(rgb: np.ndarray, heat_u8: np.ndarray | None, opacity: float, colormap: Any = "jet") -> np.ndarray:
    """The heat map drawn over the photo at ``opacity`` (0: photo only, 1: heat map only), with the same
    colour map and blending as the handler's own overlay (inspectkit.heatmap.overlay)."""
    if heat_u8 is None:
        return rgb
    from .heatmap import overlay

    return overlay(rgb, heat_u8.astype(np.float32) * np.float32(1.0 / 255.0), float(np.clip(opacity, 0.0, 1.0)),
                   colormap)


def _placeholder(side: int = 160) -> np.ndarray:
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


def _fmt_p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _colormap(handler: Any) -> Any:
    return getattr(get_handler(handler), "colormap", "jet")


def _verdict_class(v: str) -> str:
    return {"DEFECT": "defect", "OK": "ok", "ERROR": "error"}.get(str(v).upper(), "other")


def _band_text(band: dict | None) -> str:
    return "" if band is None else f"{_fmt_p(band['low'])}\u2013{_fmt_p(band['high'])}"


def _badge(item: dict | None, verdict: str | None, thr: float | None, band: dict | None = None,
           handler: Any = None) -> str:
    if item is None:
        return "<div class='badge-box muted'>No image inspected yet.</div>"
    name = _esc(item["name"])
    if item.get("error"):
        return (f"<div class='badge-box'><span class='badge error'>ERROR</span>"
                f"<div class='badge-text'><b>{name}</b><br>{_esc(item['error'])}</div></div>")
    p = item.get("defect_probability")
    line = (f"p(defect) = <b>{_fmt_p(p)}</b> &middot; threshold {_fmt_p(thr)}" if p is not None
            else f"label <b>{_esc(item.get('label'))}</b>")
    if handler is not None and item.get("label") is not None:
        cls = item["label"] if p is None else service.label_for(get_handler(handler), item["probabilities"], verdict)
        line += f" &middot; class <span class='class-label'>{_esc(shown_class(handler, cls))}</span>"
    flag = ""
    if needs_review_of(item, band):
        # the verdict stays as decided; the flag says it is too close to the threshold to trust without a look
        flag = (f"<span class='flag review' title='p(defect) is inside the review band {_band_text(band)}'>"
                f"NEEDS REVIEW</span>")
        line += f" &middot; review band {_band_text(band)}"
    return (f"<div class='badge-box'><span class='badge {_verdict_class(verdict)}'>{_esc(verdict)}</span>{flag}"
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


def _summary(items: list, verdicts: list, thr: float | None, run_ms: float, band: dict | None = None) -> str:
    n = len(items)
    n_def = sum(1 for v in verdicts if str(v).upper() == "DEFECT")
    n_ok = sum(1 for v in verdicts if str(v).upper() == "OK")
    bad = [it for it in items if it.get("error")]
    done = n - len(bad)
    per = (run_ms / done) if done else 0.0
    parts = [f"<b>{n}</b> image{'s' if n != 1 else ''}",
             f"<span class='count defect'>{n_def} DEFECT</span>", f"<span class='count ok'>{n_ok} OK</span>"]
    other = n - n_def - n_ok - len(bad)
    if other:
        parts.append(f"{other} other")
    if bad:
        parts.append(f"<span class='count error'>{len(bad)} not inspected</span>")
    if band is not None:
        n_rev = sum(1 for it in items if needs_review_of(it, band))
        parts.append(f"<span class='count review'>{n_rev} need{'s' if n_rev == 1 else ''} review</span> "
                     f"(band {_band_text(band)})")
    parts.append(f"threshold {_fmt_p(thr)}")
    if done:
        parts.append(f"{run_ms / 1000:.2f} s in all, {per:.0f} ms per image")
    out = "<div class='summary'>" + " &middot; ".join(parts) + "</div>"
    if bad:
        out += "<ul class='errors'>" + "".join(f"<li>{_esc(it['error'])}</li>" for it in bad) + "</ul>"
    return out


def _gallery_entry(item: dict, verdict: str, opacity: float, colormap: Any = "jet",
                   review: bool | None = None) -> tuple:
    if item.get("error"):
        return (_placeholder(), f"{item['name']} \u2014 ERROR")
    p = item.get("defect_probability")
    caption = (f"{item['name']} \u2014 {verdict}" + (f" (p={p:.3f})" if p is not None else "")
               + (", needs review" if review else ""))
    return (blend(item["image"], item["heat"], opacity, colormap), caption)


def table_rows(handler: Any, items: list, verdicts: list, thr: float | None, band: dict | None = None) -> list[list]:
    """One row per file: file, verdict, defect probability, threshold, total latency in ms, error, label, needs
    review, the review band's low and high edge, the labelling rank (1: closest to the threshold), and the label's
    display name."""
    rows = []
    ranks = review_ranks(items, thr)
    for it, v, rank in zip(items, verdicts, ranks):
        p = it.get("defect_probability")
        total = it.get("timings_ms", {}).get("total")
        label = it.get("label") if it.get("error") or p is None else service.label_for(
            get_handler(handler), it["probabilities"], v)
        shown_thr = None if thr is None or it.get("error") else round(thr, 4)
        review = needs_review_of(it, band)
        shown = None if label is None else service.display_names_of(get_handler(handler)).get(label, label)
        rows.append([it["name"], v, None if p is None else round(p, 4), shown_thr,
                     None if total is None else round(total, 1), it.get("error") or "", label, review,
                     None if review is None else round(band["low"], 4),
                     None if review is None else round(band["high"], 4), rank, shown])
    return rows


def _table_view(rows: list[list]) -> list[list]:
    return [[r[0], r[1], "" if r[2] is None else f"{r[2]:.4f}", "" if r[3] is None else f"{r[3]:.4f}",
             "" if r[4] is None else f"{r[4]:.1f}", r[5], "needs review" if r[7] else "",
             "" if r[6] is None else (r[6] if r[11] in (None, r[6]) else f"{r[11]} ({r[6]})")] for r in rows]


def label_next_markdown(items: list, verdicts: list, thr: float | None, band: dict | None,
                        limit: int = LABEL_NEXT_ROWS) -> str:
    """"Label these next": the batch's photos closest to the threshold first (|logit p - logit threshold|, in
    logits), at most ``limit`` rows; the ones inside the review band are marked. Empty without a threshold."""
    ranks = review_ranks(items, thr)
    order = sorted((r, i) for i, r in enumerate(ranks) if r is not None)
    if not order:
        return ""
    n_rev = sum(1 for it in items if needs_review_of(it, band))
    out = [f"**Label these next** (closest to the threshold {_fmt_p(thr)} first; {n_rev} of {len(order)} inside "
           f"the review band {_band_text(band) or 'n/a'})", "",
           "| # | file | p(defect) | verdict | logits from threshold | needs review |", "|---:|---|---:|---|---:|---|"]
    for r, i in order[:limit]:
        it = items[i]
        p = it["defect_probability"]
        out.append(f"| {r} | {md_cell(it['name'])} | {p:.4f} | {md_cell(verdicts[i])} | "
                   f"{uncertainty(p, thr):.2f} | {'yes' if needs_review_of(it, band) else ''} |")
    if len(order) > limit:
        out += ["", f"*{len(order) - limit} more in the CSV (column `review_rank`).*"]
    return "\n".join(out)


def shown_class(handler: Any, class_name: str | None) -> str | None:
    """``"Defect (def_front)"``: the model's display name beside the raw class name (inspectkit/labels.py)."""
    from .labels import shown

    if class_name is None:
        return None
    return shown(class_name, service.display_names_of(get_handler(handler)))


def needs_review_of(item: dict, band: dict | None) -> bool | None:
    """Whether a stored result's p(defect) lies in ``band``; None for a failed file or without a band."""
    p = item.get("defect_probability")
    if item.get("error") or p is None or band is None:
        return None
    return bool(band["low"] <= p <= band["high"])


def review_ranks(items: list, thr: float | None) -> list[int | None]:
    """Per item its place in the labelling order (1: closest to the threshold), None where there is no p(defect)."""
    ranks: list[int | None] = [None] * len(items)
    if thr is None:
        return ranks
    probs = [None if it.get("error") else it.get("defect_probability") for it in items]
    for rank, i in enumerate(review_order(probs, thr), start=1):
        ranks[i] = rank
    return ranks


def md_cell(x: Any) -> str:
    """Text safe inside a Markdown table cell (no pipes, no HTML, no link syntax)."""
    return html.escape(str(x)).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]").replace("\n", " ")
