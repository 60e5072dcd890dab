"""The Inspect tab's callbacks, so app.py stays a layout with one-line callbacks; what they draw is in
``ui_render``, the CSV in ``ui_export``, the Model tab in ``report_view`` (re-exported here for app.py).

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

UNUSABLE: a model with a guard (inspectkit/guard.py) answers UNUSABLE, with the reason, for a photo nobody can
judge. The session keeps the reason and the novelty with the probabilities, so re-deciding at another threshold keeps
it UNUSABLE (``handler.decide(..., unusable_reason=...)``); how it is drawn is in ``ui_render``.

Every function that renders returns the outputs in the order of :data:`VIEW_OUTPUTS` (after the state), so
the UI wiring and these functions cannot drift apart.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from inspectkit.limits import MAX_BATCH, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB
from inspectkit.names import error_message, safe_text, upload_name
from inspectkit.review import DEFAULT_MARGIN
from inspectkit.serve.model_source import ModelUnavailable, get_handler, model_state
from inspectkit.serve.results import (
    check_heatmap_mode,
    display_names_of,
    inspect_many,
    inspect_one,
    result_json,
    review_band_for,
)
from inspectkit.ui.common.export import CSV_HEADERS, spreadsheet_safe, write_csv  # noqa: F401
from inspectkit.ui.common.render import (  # noqa: F401
    DEFAULT_OPACITY,
    LABEL_NEXT_ROWS,
    NOT_JUDGED,
    TABLE_HEADERS,
    UNUSABLE,
    _badge,
    _colormap,
    _esc,
    _fit,
    _gallery_entry,
    _heat_u8,
    _summary,
    _table_view,
    blend,
    is_unusable,
    label_next_markdown,
    latency_html,
    md_cell,
    needs_review_of,
    network_verdict,
    not_judged,
    review_ranks,
    shown_class,
    table_rows,
    verdict_text,
)

# the Inspect tab's pieces, re-exported: app.py and the tests read them all as ``ui.<name>``
from inspectkit.ui.common.report_view import (  # noqa: F401
    initial_threshold,
    load_report,
    loaded_model_markdown,
    metrics_markdown,
    model_status,
    provenance_markdown,
    report_images,
    report_markdown_text,
)

#: The outputs every render returns, in order (the session state comes first, then these).
VIEW_OUTPUTS = ("summary", "gallery", "badge", "original", "overlay", "probabilities", "latency", "table", "csv",
                "label_next")
#: The detail panel's outputs (a subset of VIEW_OUTPUTS), in order.
DETAIL_OUTPUTS = ("badge", "original", "overlay", "probabilities", "latency")
#: The band slider's range, logits either side of the threshold.
MAX_REVIEW_MARGIN = 6.0


def new_state() -> dict:
    """An empty session: no results, the model's threshold and review band, the default opacity."""
    return {"items": [], "threshold": None, "opacity": DEFAULT_OPACITY, "selected": 0, "run_ms": 0.0,
            "review_margin": None, "heatmap_mode": None, "sources": []}


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
    return {"name": name, "error": error_message(message, raw_path, name), "label": None, "probabilities": {},
            "defect_probability": None, "timings_ms": {}, "image": None, "heat": None, "unusable_reason": None,
            "novelty": None}


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
            "heat_scale": getattr(result, "heatmap_scale", None),
            # the guard's view (None: judged, or a model without a guard); kept so re-deciding keeps UNUSABLE
            "unusable_reason": getattr(result, "unusable_reason", None) or None,
            "novelty": None if getattr(result, "novelty", None) is None else float(result.novelty)}


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
        if progress is not None and model_state(handler) != "ready":
            progress(0.0, desc="Loading the model (first inspection after start)...")
        total = len(todo)
        tick = None if progress is None else (lambda done, _t: progress((done, total), desc="Inspecting",
                                                                      unit="images"))
        mode = state.get("heatmap_mode")
        if mode == "defect-evidence" and getattr(get_handler(handler), "defect_class", None) is None:
            mode = None  # chosen for another model of this session; this one has no defect evidence
        results = inspect_many(handler, [paths[i] for i in todo], [names[i] for i in todo],
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
    """Switch the session's heat map to ``mode`` (one of HEATMAP_MODES; empty: the model's default) and
    inspect the session's files again with it (the heat map needs the network; the verdicts do not change)."""
    state = dict(state or new_state())
    state["heatmap_mode"] = check_heatmap_mode(mode)
    sources = [p for p in state.get("sources") or [] if p]
    if not sources:
        return (state, *render(handler, state))
    return run_inspection(handler, sources, state.get("opacity", DEFAULT_OPACITY), state, progress)


def errors_in(state: dict) -> list[str]:
    """The error messages of the session's failed files (for a warning toast)."""
    return [it["error"] for it in state.get("items", []) if it and it.get("error")]


# ---------------------------------------------------------------------------------------- deciding


def threshold_of(handler: Any, state: dict) -> float | None:
    """The threshold in force: the one the user picked on the slider, else the model's."""
    t = state.get("threshold")
    return float(t) if t is not None else get_handler(handler).threshold


def verdict_of(handler: Any, item: dict, threshold: float | None) -> str:
    """ERROR for a failed file; else the handler's decision from the stored probabilities, which stays UNUSABLE at
    any threshold for a photo the guard gave a reason for."""
    if item.get("error"):
        return "ERROR"
    if item.get("defect_probability") is None:  # a model without a defect class: the label is the answer
        return str(item.get("label"))
    reason = item.get("unusable_reason")
    if reason:  # only a handler with a guard gives reasons, and its decide() takes them
        return get_handler(handler).decide(item["probabilities"], threshold, unusable_reason=reason)
    return get_handler(handler).decide(item["probabilities"], threshold)


def guard_on(handler: Any) -> bool:
    """Whether the session's model has a guard (so UNUSABLE can be answered)."""
    try:
        return getattr(get_handler(handler), "guard", None) is not None
    except ModelUnavailable:
        return False


def band_of(handler: Any, state: dict, thr: float | None = None) -> dict | None:
    """The needs-review band in force (``{"low", "high"}``): the model's band moved to the threshold in force, or
    the band slider's margin either side of it once the user moved that slider; None without a threshold."""
    thr = threshold_of(handler, state) if thr is None else thr
    if thr is None:
        return None
    return review_band_for(get_handler(handler), thr, state.get("review_margin"))


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
    if model_state(handler) == "ready":
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
    return (_summary(items, verdicts, thr, state.get("run_ms", 0.0), band, guard_on(handler)), gallery,
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
    if is_unusable(it, v):  # what the network saw, greyed and marked: not a verdict on this photo
        overlay = not_judged(overlay)
        probs = {f"{k} (not judged)": p for k, p in probs.items()}
    return (_badge(it, v, thr, band, handler), it["image"], overlay, probs, latency_html(it["timings_ms"]))


# -------------------------------------------------------------------------------- Gradio-facing wrappers


def ui_call(fn: Callable, *args: Any) -> Any:
    """Run a UI action; a bad request (ValueError) or an unavailable model becomes a Gradio error message, and
    files that could not be inspected raise a warning toast (the rest of the batch is shown)."""
    import gradio as gr

    try:
        out = fn(*args)
    except (ValueError, ModelUnavailable) as exc:
        raise gr.Error(safe_text(exc), title="Cannot inspect") from None
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
    state = model_state(handler)
    if state == "ready":  # the full line at once: classes, threshold and the guard (on, or "guard off: <reason>")
        return model_status(handler)[0]
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

    return gr.Error(safe_text(exc), title="Cannot inspect")


def api_predict(handler: Any, image: Any, threshold: Any = None, heatmap: bool = False,
                heatmap_mode: Any = None) -> dict:
    """The ``/predict`` Gradio endpoint: one image in, the JSON result out (same fields as POST /api/inspect).
    ``heatmap_mode``: "defect-evidence", "class-normalised" or empty (the model's default)."""
    try:
        t = _check_threshold(threshold)
        mode = check_heatmap_mode(heatmap_mode)
        paths = _as_paths(image)
        if len(paths) != 1:
            raise ValueError(f"give exactly one image file, got {len(paths)}")
        name = upload_name(paths[0])
        size = os.path.getsize(paths[0])
        if size > MAX_UPLOAD_BYTES:
            raise ValueError(f"{name} is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per image")
        result = inspect_one(handler, paths[0], name, heatmap=heatmap, heatmap_mode=mode if heatmap else None)
        return result_json(result, get_handler(handler), threshold=t, heatmap_png=heatmap)
    except (ValueError, OSError, ModelUnavailable) as exc:
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
        results = dict(zip(ok, inspect_many(handler, [paths[i] for i in ok], [names[i] for i in ok],
                                                    heatmap=False))) if ok else {}
        h = get_handler(handler)
        out = []
        for i, n in enumerate(names):
            if i in results:
                out.append(result_json(results[i], h, threshold=t))
                if out[-1]["error"]:
                    out[-1]["error"] = error_message(results[i].error, paths[i], n)
            else:
                size = os.path.getsize(paths[i])
                why = "is empty (0 bytes)" if size == 0 else f"is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB"
                out.append({"name": n, "verdict": None, "label": None, "display_label": None,
                            "display_names": display_names_of(h), "probabilities": {},
                            "defect_probability": None, "threshold": t, "needs_review": None, "review_band": None,
                            "latency_ms": {}, "error": f"{n} {why}", "heatmap_mode": None, "heatmap_scale": None,
                            "unusable_reason": None, "novelty": None})
        return out
    except (ValueError, OSError, ModelUnavailable) as exc:
        raise _api_error(exc) from None
