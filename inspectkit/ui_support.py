"""What the Gradio UI shows, computed here so app.py stays a layout with one-line callbacks.

A session's results live in a plain dict (kept in ``gr.State``): per image the class probabilities, a display-size
copy of the photo and its heat map. Moving the threshold slider re-decides from the stored probabilities
(``handler.decide``), moving the opacity slider re-blends the stored heat maps: neither runs the network again.

Needs review: a photo whose p(defect) lies in the review band around the threshold in force is flagged in the
badge, the summary, the table and the CSV, and "Label these next" lists the batch closest to the threshold first
(inspectkit/review.py). The band follows the threshold slider; the band slider replaces it by a symmetric one.

Heat maps: the session's ``heatmap_mode`` (None: the model's default, the defect evidence on its fixed scale for a
model with a defect class) is used by every inspection; :func:`reheat` changes it and inspects the session's files
again. Labels: the checkpoint's display names ("Defect") go beside the raw class names in the badge, the class
probabilities, the table and the CSV (``display_label``).

Every function that renders returns the outputs in the order of :data:`VIEW_OUTPUTS` (after the state), so
the UI wiring and these functions cannot drift apart.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import service
from .review import DEFAULT_MARGIN, review_order, uncertainty
from .service import MAX_BATCH, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB, get_handler, upload_name

#: The outputs every render returns, in order (the session state comes first, then these).
VIEW_OUTPUTS = ("summary", "gallery", "badge", "original", "overlay", "probabilities", "latency", "table", "csv",
                "label_next")
#: The detail panel's outputs (a subset of VIEW_OUTPUTS), in order.
DETAIL_OUTPUTS = ("badge", "original", "overlay", "probabilities", "latency")
TABLE_HEADERS = ["file", "verdict", "defect probability", "threshold", "latency ms", "note", "review", "class"]
#: review_rank: 1 for the photo to label first (closest to the threshold), empty for files without a probability
CSV_HEADERS = ["file", "verdict", "label", "defect_probability", "threshold", "latency_ms", "error", "needs_review",
               "review_low", "review_high", "review_rank", "display_label"]
#: Rows shown in "Label these next" (the CSV ranks the whole batch).
LABEL_NEXT_ROWS = 10
#: The band slider's range, logits either side of the threshold.
MAX_REVIEW_MARGIN = 6.0
STAGES = ("decode", "preprocess", "forward", "gradcam", "overlay", "total")
#: Longest side of the copies kept for display: enough for a 300 px casting photo at 2x, small per session.
DISPLAY_SIDE = 640
DEFAULT_OPACITY = 0.45
#: Cells that a spreadsheet would evaluate when they start with one of these (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
REPORT_IMAGES = (
    ("confusion_matrix.png", "Confusion matrices on the test split (all images, and twin-free)"),
    ("training_curves.png", "Training curves (loss, validation accuracy and defect F2 per epoch)"),
    ("scores.png", "p(defect) of every test image by true class, with the threshold"),
)
_CSV_DIR = Path(tempfile.gettempdir()) / "casting-inspection-csv"
_CSV_MAX_AGE_S = 3600.0


def new_state() -> dict:
    """An empty session: no results, the model's threshold and review band, the default opacity."""
    return {"items": [], "threshold": None, "opacity": DEFAULT_OPACITY, "selected": 0, "run_ms": 0.0,
            "review_margin": None, "heatmap_mode": None, "sources": []}


# ------------------------------------------------------------------------------------------ images


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


# ----------------------------------------------------------------------------------------- running


def _as_paths(files: Any) -> list[str]:
    """gr.File gives a path, a list of paths, or (older clients) objects with ``.name``."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    out = []
    for f in files:
        p = getattr(f, "path", None) or getattr(f, "name", None) or f
        if p:
            out.append(str(p))
    return out


def _error_item(name: str, message: str, raw_path: Any = None) -> dict:
    return {"name": name, "error": service.error_message(message, raw_path, name), "label": None, "probabilities": {}, "defect_probability": None,
            "timings_ms": {}, "image": None, "heat": None}


def _item(result: Any, name: str, raw_path: Any = None) -> dict:
    """The part of an InspectionResult a session keeps (display-size photo and heat map, numbers)."""
    if getattr(result, "error", None):
        return _error_item(name, str(result.error), raw_path)
    img = _fit(result.image) if result.image is not None else None
    heat = _heat_u8(result.heatmap, img.shape[:2]) if img is not None else None
    return {"name": name, "error": None, "label": result.label,
            "probabilities": {str(k): float(v) for k, v in (result.probabilities or {}).items()},
            "defect_probability": None if result.defect_probability is None else float(result.defect_probability),
            "timings_ms": {str(k): float(v) for k, v in (result.timings_ms or {}).items()},
            "image": img, "heat": heat, "heat_mode": getattr(result, "heatmap_mode", None),
            "heat_scale": getattr(result, "heatmap_scale", None)}


def run_inspection(handler: Any, files: Any, opacity: float, state: dict | None,
                   progress: Callable | None = None) -> tuple:
    """Inspect the uploaded files (at most MAX_BATCH, each at most MAX_UPLOAD_MB) and render the results.

    A file that is too big or not a readable image becomes an error row with the reason; the others complete.
    Raises ValueError (shown by the UI as an error) for more than MAX_BATCH files.
    """
    paths = _as_paths(files)
    state = dict(state or new_state())
    state["sources"] = paths  # kept so that changing the heat map inspects them again (reheat)
    if not paths:
        state.update(items=[], selected=0)
        return (state, *render(handler, state))
    if len(paths) > MAX_BATCH:
        raise ValueError(f"{len(paths)} images were given; this tab inspects at most {MAX_BATCH} at once. "
                         "The Shift tab takes any number of photos (a folder or a zip too), in chunks.")
    names = [upload_name(p) for p in paths]
    items: list[dict | None] = [None] * len(paths)
    todo = []
    for i, (p, n) in enumerate(zip(paths, names)):
        try:
            size = os.path.getsize(p)
        except OSError:
            items[i] = _error_item(n, f"{n}: the uploaded file could not be found on the server; upload it again")
            continue
        if size > MAX_UPLOAD_BYTES:
            items[i] = _error_item(n, f"{n} is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per image")
        elif size == 0:
            items[i] = _error_item(n, f"{n} is empty (0 bytes)")
        else:
            todo.append(i)
    t0 = time.perf_counter()
    if todo:
        if progress is not None and service.model_state(handler) != "ready":
            progress(0.0, desc="Loading the model (first inspection after start)...")
        total = len(todo)
        tick = None if progress is None else (lambda done, _t: progress((done, total), desc="Inspecting",
                                                                      unit="images"))
        mode = state.get("heatmap_mode")
        if mode == "defect-evidence" and getattr(get_handler(handler), "defect_class", None) is None:
            mode = None  # chosen for another model of this session; this one has no defect evidence
        results = service.inspect_many(handler, [paths[i] for i in todo], [names[i] for i in todo],
                                       heatmap=True, opacity=float(opacity), progress=tick, heatmap_mode=mode)
        for i, r in zip(todo, results):
            items[i] = _item(r, names[i], paths[i])
    state.update(items=items, selected=0, opacity=float(opacity), run_ms=(time.perf_counter() - t0) * 1000)
    return (state, *render(handler, state))


def run_single(handler: Any, path: Any, opacity: float, state: dict | None, progress: Callable | None = None) -> tuple:
    """Inspect one image (upload, paste, webcam or an example) and render it; clearing the image keeps the
    results on screen."""
    if not path:
        state = dict(state or new_state())
        return (state, *render(handler, state))
    return run_inspection(handler, [path], opacity, state, progress)


def reheat(handler: Any, state: dict | None, mode: Any, progress: Callable | None = None) -> tuple:
    """Switch the session's heat map to ``mode`` (one of service.HEATMAP_MODES; empty: the model's default) and
    inspect the session's files again with it (the heat map needs the network; the verdicts do not change)."""
    state = dict(state or new_state())
    state["heatmap_mode"] = service.check_heatmap_mode(mode)
    sources = [p for p in state.get("sources") or [] if p]
    if not sources:
        return (state, *render(handler, state))
    return run_inspection(handler, sources, state.get("opacity", DEFAULT_OPACITY), state, progress)


def shown_class(handler: Any, class_name: str | None) -> str | None:
    """``"Defect (def_front)"``: the model's display name beside the raw class name (inspectkit/labels.py)."""
    from .labels import shown

    if class_name is None:
        return None
    return shown(class_name, service.display_names_of(get_handler(handler)))


def errors_in(state: dict) -> list[str]:
    """The error messages of the session's failed files (for a warning toast)."""
    return [it["error"] for it in state.get("items", []) if it and it.get("error")]


# ---------------------------------------------------------------------------------------- deciding


def threshold_of(handler: Any, state: dict) -> float | None:
    """The threshold in force: the one the user picked on the slider, else the model's."""
    t = state.get("threshold")
    return float(t) if t is not None else get_handler(handler).threshold


def verdict_of(handler: Any, item: dict, threshold: float | None) -> str:
    """ERROR for a failed file; else the handler's decision from the stored probabilities."""
    if item.get("error"):
        return "ERROR"
    if item.get("defect_probability") is None:  # a model without a defect class: the label is the answer
        return str(item.get("label"))
    return get_handler(handler).decide(item["probabilities"], threshold)


def band_of(handler: Any, state: dict, thr: float | None = None) -> dict | None:
    """The needs-review band in force (``{"low", "high"}``): the model's band moved to the threshold in force, or
    the band slider's margin either side of it once the user moved that slider; None without a threshold."""
    thr = threshold_of(handler, state) if thr is None else thr
    if thr is None:
        return None
    return service.review_band_for(get_handler(handler), thr, state.get("review_margin"))


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


def rereview(handler: Any, state: dict, margin: float) -> tuple:
    """A new review band of ``margin`` logits either side of the threshold (no forward pass)."""
    state = dict(state or new_state())
    m = float(margin)
    if not 0.0 <= m <= 20.0:
        raise ValueError(f"review band {margin!r} must be 0 to 20 logits")
    state["review_margin"] = m
    return (state, *render(handler, state))


def initial_review_margin(handler: Any) -> float:
    """Where the band slider starts: the model's band margin once loaded (the default rule's otherwise). The
    model's own band (maybe widened on one side by validation errors) stays in force until the slider moves."""
    if service.model_state(handler) == "ready":
        band = getattr(get_handler(handler), "review_band", None)
        if isinstance(band, dict) and isinstance(band.get("margin"), (int, float)):
            return float(min(band["margin"], MAX_REVIEW_MARGIN))
    return DEFAULT_MARGIN


def redecide(handler: Any, state: dict, threshold: float) -> tuple:
    """New verdicts at ``threshold`` from the stored probabilities (no forward pass)."""
    state = dict(state or new_state())
    state["threshold"] = float(threshold)
    return (state, *render(handler, state))


def reblend(handler: Any, state: dict, opacity: float) -> tuple:
    """Overlays redrawn at ``opacity`` from the stored heat maps (no forward pass)."""
    state = dict(state or new_state())
    state["opacity"] = float(opacity)
    return (state, *render(handler, state))


def select(handler: Any, state: dict, index: int | None) -> tuple:
    """Show image ``index`` of the session in the detail panel."""
    state = dict(state or new_state())
    n = len(state.get("items", []))
    state["selected"] = 0 if index is None or not n else int(np.clip(index, 0, n - 1))
    return (state, *detail(handler, state))


# --------------------------------------------------------------------------------------- rendering


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt_p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render(handler: Any, state: dict) -> tuple:
    """All view outputs (see VIEW_OUTPUTS) for the session."""
    items = [it for it in state.get("items", []) if it]
    if not items:
        empty_summary = ("<div class='summary muted'>Drop one or more casting photos on the left (or pick an "
                         "example) to inspect them.</div>")
        return (empty_summary, [], _badge(None, None, None), None, None, None, "", [], None, "")
    thr = threshold_of(handler, state)
    band = band_of(handler, state, thr)
    verdicts = [verdict_of(handler, it, thr) for it in items]
    cmap = _colormap(handler)
    gallery = [_gallery_entry(it, v, state["opacity"], cmap, needs_review_of(it, band))
               for it, v in zip(items, verdicts)]
    rows = table_rows(handler, items, verdicts, thr, band)
    return (_summary(items, verdicts, thr, state.get("run_ms", 0.0), band), gallery,
            *detail(handler, state, thr=thr, verdicts=verdicts, band=band), _table_view(rows),
            write_csv(rows), label_next_markdown(items, verdicts, thr, band))


def detail(handler: Any, state: dict, thr: float | None = None, verdicts: list | None = None,
           band: dict | None = None) -> tuple:
    """The detail panel (see DETAIL_OUTPUTS) for the selected image."""
    items = [it for it in state.get("items", []) if it]
    if not items:
        return (_badge(None, None, None), None, None, None, "")
    i = int(np.clip(state.get("selected", 0), 0, len(items) - 1))
    it = items[i]
    thr = threshold_of(handler, state) if thr is None else thr
    band = band_of(handler, state, thr) if band is None else band
    v = verdicts[i] if verdicts is not None else verdict_of(handler, it, thr)
    if it.get("error"):
        return (_badge(it, v, thr), None, None, None, "")
    overlay = blend(it["image"], it["heat"], state.get("opacity", DEFAULT_OPACITY), _colormap(handler))
    probs = {shown_class(handler, k): round(p, 4) for k, p in it["probabilities"].items()}
    return (_badge(it, v, thr, band, handler), it["image"], overlay, probs, latency_html(it["timings_ms"]))


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


# ----------------------------------------------------------------------------------- table and CSV


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


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet evaluates: text starting with = + - @ (or a tab/CR) gets a leading
    apostrophe, which Excel, LibreOffice and Google Sheets show as text. Numbers pass unchanged."""
    if value is None:
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.startswith(FORMULA_PREFIXES) or text.lstrip().startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def csv_text(rows: list[list]) -> str:
    """The results as CSV text (header + one row per file), every text cell spreadsheet-safe."""
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    w.writerow(CSV_HEADERS)
    for name, verdict, p, thr, ms, err, label, review, low, high, rank, shown in rows:
        flag = None if review is None else ("yes" if review else "no")
        w.writerow([spreadsheet_safe(x) for x in (name, verdict, label, p, thr, ms, err, flag, low, high, rank,
                                                   shown)])
    return buf.getvalue()


def write_csv(rows: list[list]) -> str:
    """Write the CSV (UTF-8 with BOM, so Excel reads non-ASCII names) to a fresh temp file; returns its path.
    Files older than an hour in that folder are removed, so a long-running Space does not fill its disk."""
    _CSV_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in _CSV_DIR.glob("*.csv"):
        try:
            if now - old.stat().st_mtime > _CSV_MAX_AGE_S:
                old.unlink()
        except OSError:
            pass
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=_CSV_DIR))
    path = folder / f"inspection_{time.strftime('%Y%m%d-%H%M%S')}.csv"
    path.write_text(csv_text(rows), encoding="utf-8-sig", newline="")
    return str(path)


# ---------------------------------------------------------------------------------------- model status


def model_status(handler: Any, timeout: float | None = service.MODEL_WAIT_S) -> tuple[str, float | None, str]:
    """(status HTML, the model's threshold or None, details markdown) once the model is loaded (waits for it).

    A model that failed to load gives its reason in the status instead of raising, so the page still works.
    """
    try:
        h = get_handler(handler, timeout)
    except service.ModelUnavailable as exc:
        return f"<div class='status failed'>Model not available: {_esc(exc)}</div>", None, ""
    t = h.threshold
    defect = getattr(h, "defect_class", None)
    took = getattr(handler, "load_seconds", None)
    bits = [f"Model ready: classes {', '.join(_esc(c) for c in h.class_names)}"]
    if defect is not None and t is not None:
        bits.append(f"DEFECT when p({_esc(defect)}) &ge; {t:.3f}")
    if took is not None:
        bits.append(f"loaded in {took:.1f} s")
    return "<div class='status ready'>" + " &middot; ".join(bits) + "</div>", t, loaded_model_markdown(h)


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
    from .ui_heatmap import heatmap_row

    lines.append(heatmap_row(h))
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


def md_cell(x: Any) -> str:
    """Text safe inside a Markdown table cell (no pipes, no HTML, no link syntax)."""
    return html.escape(str(x)).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]").replace("\n", " ")


def initial_threshold(handler: Any, report: dict | None) -> float:
    """Where the threshold slider starts before the model is loaded: the loaded model's threshold, else the
    committed report's, else 0.5. The page sets it to the model's once the model is up."""
    if service.model_state(handler) == "ready":
        t = get_handler(handler).threshold
        if t is not None:
            return float(t)
    t = ((report or {}).get("model") or {}).get("threshold")
    return float(t) if isinstance(t, (int, float)) and 0 < t < 1 else 0.5


# ---------------------------------------------------------------------------------------- Model tab


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


def provenance_markdown(rep: dict | None, repo: Path = service.REPO) -> str:
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
    ckpt = Path(os.environ.get(service.ENV_MODEL_PATH) or repo / service.DEFAULT_CHECKPOINT)
    side = Path(str(ckpt) + ".sha256")
    repo_env = os.environ.get(service.ENV_MODEL_REPO)
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


# -------------------------------------------------------------------------------- Gradio-facing wrappers


def ui_call(fn: Callable, *args: Any) -> Any:
    """Run a UI action; a bad request (ValueError) or an unavailable model becomes a Gradio error message, and
    files that could not be inspected raise a warning toast (the rest of the batch is shown)."""
    import gradio as gr

    try:
        out = fn(*args)
    except (ValueError, service.ModelUnavailable) as exc:
        raise gr.Error(service.safe_text(exc), title="Cannot inspect") from None
    if fn in (run_inspection, run_single) and isinstance(out, tuple) and out:
        bad = errors_in(out[0])
        if bad:
            n = len(out[0]["items"])
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            gr.Warning(f"{len(bad)} of {n} file{'s' if n != 1 else ''} could not be inspected: "
                       + "; ".join(bad[:3]) + more, duration=12)
    return out


def initial_status(handler: Any) -> str:
    """The model-status line the page starts with."""
    state = service.model_state(handler)
    if state == "ready":
        return "<div class='status ready'>Model ready.</div>"
    if state == "failed":
        return f"<div class='status failed'>Model not available: {_esc(getattr(handler, 'error', ''))}</div>"
    return ("<div class='status loading'>Loading the model in the background; the first inspection may take a few "
            "seconds longer.</div>")


def model_status_update(handler: Any) -> tuple:
    """For the page-load event: the status line, the threshold slider set to the model's threshold, and the
    loaded-model table (waits for the model; a failure is shown, not raised)."""
    import gradio as gr

    status, thr, details = model_status(handler)
    # shown to 4 decimals; until the user moves the slider, decisions use the model's exact threshold
    slider = gr.update(value=round(thr, 4)) if thr is not None else gr.update()
    return status, slider, details or "The model is not loaded; see the status line above."


def _check_threshold(threshold: Any) -> float | None:
    if threshold is None:
        return None
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold {threshold!r} must be between 0 and 1 (exclusive), or None for the model's")
    return t


def _api_error(exc: Exception):
    import gradio as gr

    return gr.Error(service.safe_text(exc), title="Cannot inspect")


def api_predict(handler: Any, image: Any, threshold: Any = None, heatmap: bool = False,
                heatmap_mode: Any = None) -> dict:
    """The ``/predict`` Gradio endpoint: one image in, the JSON result out (same fields as POST /api/inspect).
    ``heatmap_mode``: "defect-evidence", "class-normalised" or empty (the model's default)."""
    try:
        t = _check_threshold(threshold)
        mode = service.check_heatmap_mode(heatmap_mode)
        paths = _as_paths(image)
        if len(paths) != 1:
            raise ValueError(f"give exactly one image file, got {len(paths)}")
        name = upload_name(paths[0])
        size = os.path.getsize(paths[0])
        if size > MAX_UPLOAD_BYTES:
            raise ValueError(f"{name} is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per image")
        result = service.inspect_one(handler, paths[0], name, heatmap=heatmap, heatmap_mode=mode if heatmap else None)
        return service.result_json(result, get_handler(handler), threshold=t, heatmap_png=heatmap)
    except (ValueError, OSError, service.ModelUnavailable) as exc:
        raise _api_error(exc) from None


def api_predict_batch(handler: Any, images: Any, threshold: Any = None) -> list[dict]:
    """The ``/predict_batch`` Gradio endpoint: up to MAX_BATCH images, one result each; bad files carry ``error``."""
    try:
        t = _check_threshold(threshold)
        paths = _as_paths(images)
        if not paths or len(paths) > MAX_BATCH:
            raise ValueError(f"give 1 to {MAX_BATCH} image files, got {len(paths)}")
        names = [upload_name(p) for p in paths]
        ok = [i for i, p in enumerate(paths) if 0 < os.path.getsize(p) <= MAX_UPLOAD_BYTES]
        results = dict(zip(ok, service.inspect_many(handler, [paths[i] for i in ok], [names[i] for i in ok],
                                                    heatmap=False))) if ok else {}
        h = get_handler(handler)
        out = []
        for i, n in enumerate(names):
            if i in results:
                out.append(service.result_json(results[i], h, threshold=t))
                if out[-1]["error"]:
                    out[-1]["error"] = service.error_message(results[i].error, paths[i], n)
            else:
                size = os.path.getsize(paths[i])
                why = "is empty (0 bytes)" if size == 0 else f"is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB"
                out.append({"name": n, "verdict": None, "label": None, "display_label": None,
                            "display_names": service.display_names_of(h), "probabilities": {},
                            "defect_probability": None, "threshold": t, "needs_review": None, "review_band": None,
                            "latency_ms": {}, "error": f"{n} {why}", "heatmap_mode": None, "heatmap_scale": None})
        return out
    except (ValueError, OSError, service.ModelUnavailable) as exc:
        raise _api_error(exc) from None
