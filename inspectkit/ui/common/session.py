"""The Inspect tab's session: a job of any size (one photo or ten thousand, a folder, zip files) run for the page in
chunks with a progress bar, and everything the tab does with the stored results without running the network again.

A session's results live in a plain dict (kept in ``gr.State``): the job's rows (:mod:`inspectkit.ui.common.job`:
per photo its probabilities, timings, the guard's reason and novelty, and the paths of its display files) and the
settings of the sliders. The functions here change that dict in place and return it: while a job runs, the page's
other events (a slider, a click in the gallery, Stop) get the very dict the job is filling, so a threshold moved
during a job holds for the photos still to come, and Stop ends the job after its current chunk with every result
kept.

* The threshold slider re-decides every photo from its stored probabilities (``handler.decide``; UNUSABLE stays
  UNUSABLE at any threshold), the band slider re-flags needs review: neither runs the network.
* The opacity slider redraws the selected photo and the gallery's tiles from their stored heat maps; the zip of
  overlays keeps the opacity each photo was inspected with (redrawing 10,000 overlays per slider move would not pay).
* The heat-map choice inspects the gallery's photos again with that map (at most GALLERY_MAX; the others keep
  theirs until inspected again) and holds for the photos inspected next.
* A click in the gallery shows that photo large: its overlay, class probabilities, timings and verdict (the reason
  when UNUSABLE).

Every function that renders returns the outputs in the order of :data:`VIEW_OUTPUTS` (after the state), so the
tab's wiring and these functions cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from inspectkit.review import DEFAULT_MARGIN
from inspectkit.serve.model_source import ModelUnavailable, get_handler, model_state
from inspectkit.serve.results import check_heatmap_mode, review_band_for
from inspectkit.ui.common.export import write_csv
from inspectkit.ui.common.job import display_copy, inspect_chunks, new_job_dir, plan_job, tile, touch, zip_overlays
from inspectkit.ui.common.job_view import (
    caption,
    gallery_order,
    message_html,
    progress_html,
    summary_html,
)
from inspectkit.ui.common.render import (
    DEFAULT_OPACITY,
    badge_html,
    blend,
    colormap_of,
    is_unusable,
    label_next_markdown,
    latency_html,
    needs_review_of,
    not_judged,
    shown_class,
    table_rows,
    table_view,
)
from inspectkit.ui.common.session_models import pick

#: The outputs every render returns, in order (the session state comes first, then these).
VIEW_OUTPUTS = ("progress", "summary", "gallery", "badge", "original", "overlay", "probabilities", "latency", "table",
                "csv", "label_next")
#: The detail panel's outputs (a subset of VIEW_OUTPUTS), in order.
DETAIL_OUTPUTS = ("badge", "original", "overlay", "probabilities", "latency")
#: The band slider's range, logits either side of the threshold.
MAX_REVIEW_MARGIN = 6.0
#: While a job runs, the gallery, the table and the CSV are re-sent at most every REFRESH_S (and at its end), and
#: every REFRESH_PER_PHOTO_S per photo so far once that is longer: re-sending a 10,000-row table after every
#: 32-photo chunk would cost the page more than the chunk. The progress bar and the counts follow every chunk.
REFRESH_S = 2.0
REFRESH_PER_PHOTO_S = 0.001
EMPTY_SUMMARY = ("<div class='summary muted'>Drop one photo or thousands on the left (a folder or zip files too), "
                 "or pick an example, to inspect them.</div>")


def new_state() -> dict:
    """An empty session: no results, the model's threshold and review band, the default opacity and heat map."""
    return {"rows": [], "dir": None, "total": 0, "refused": 0, "seconds": 0.0, "done": True, "stopped": False,
            "drift": None, "message": None, "threshold": None, "review_margin": None, "opacity": DEFAULT_OPACITY,
            "heatmap_mode": None, "selected": None, "picked": False, "shown": []}


def _skip():
    import gradio as gr

    return gr.skip()


# ---------------------------------------------------------------------------------------------- running


def inspect(handler: Any, files: Any, folder: Any, opacity: float, state: dict | None,
            warn: Callable[[str], Any] | None = None) -> Iterator[tuple]:
    """Inspect the dropped files and/or folder (photos and zips of photos, any number up to the job bounds), as a
    generator: ``(state, *VIEW_OUTPUTS)`` after every chunk: the progress bar and the counts each time, the gallery,
    the table, the CSV and the selected photo at most every REFRESH_S, and everything at the end.

    A job past the bounds, or with no photo, leaves the session's results as they are and says so in the progress
    line. A file that cannot be read gets an error row with the reason and the rest completes; ``warn`` (a toast)
    is then called with the first reasons. The threshold, band and heat-map choice of the session carry over.
    """
    try:
        sources, refused = plan_job(files, folder)
    except ValueError as exc:
        yield _message(state, str(exc), "error")
        return
    if not sources and not refused:
        yield _message(state, "Drop photos, a folder or zip files of photos, then press Inspect.", "muted")
        return
    state = _fresh(state, opacity)
    jdir = new_job_dir()
    rows = state["rows"] = list(refused)
    state.update(dir=str(jdir), total=len(sources) + len(refused), refused=len(refused), done=False)
    t0 = time.perf_counter()
    waiting = sources and model_state(handler) != "ready"
    first = (message_html("Loading the model (first inspection after start)...") if waiting
             else progress_html(len(rows), state["total"], 0.0, len(refused)))
    yield (state, first, *(_skip() for _ in VIEW_OUTPUTS[1:]))
    entries = [(i, name, src) for i, (name, src) in enumerate(sources)]
    last = float("-inf")  # the first chunk's results are shown at once
    try:
        for chunk, drift in inspect_chunks(handler, entries, jdir, opacity, lambda: _mode(handler, state),
                                           names=[n for n, _ in sources]):
            thr = threshold_of(handler, state)
            for row in chunk:
                row["verdict"] = verdict_of(handler, row, thr)
            rows.extend(chunk)
            state.update(drift=drift, seconds=time.perf_counter() - t0)
            if state["stopped"] or len(rows) >= state["total"]:
                break
            now = time.perf_counter()
            if now - last >= max(REFRESH_S, REFRESH_PER_PHOTO_S * len(rows)):
                last = now
                yield (state, *render(handler, state))
            else:  # numbers only: the gallery, the table and the rest keep what they show until the next refresh
                yield (state, _progress(state), _summary(handler, state), *(_skip() for _ in VIEW_OUTPUTS[2:]))
    except ModelUnavailable as exc:
        state.update(done=True, seconds=time.perf_counter() - t0,
                     message=f"Stopped after {len(rows):,} of {state['total']:,} photos: {exc}")
        yield (state, _progress(state), *(_skip() for _ in VIEW_OUTPUTS[1:]))
        return
    state.update(done=True, seconds=time.perf_counter() - t0)
    decide_all(handler, state)  # a threshold moved during the job may have crossed a chunk being decided
    yield (state, *render(handler, state))
    bad = errors_in(state)
    if bad and warn is not None:
        more = f" (and {len(bad) - 3:,} more)" if len(bad) > 3 else ""
        warn(f"{len(bad):,} of {len(rows):,} file{'s' if len(rows) != 1 else ''} could not be inspected: "
             + "; ".join(bad[:3]) + more)


def inspect_single(handler: Any, path: Any, opacity: float, state: dict | None,
                   warn: Callable[[str], Any] | None = None) -> Iterator[tuple]:
    """Inspect one photo (upload, paste, webcam or an example) as a job of one; clearing the photo keeps the results
    on screen."""
    if not path:
        state = state if state is not None else new_state()
        yield (state, *render(handler, state))
        return
    yield from inspect(handler, [path], None, opacity, state, warn)


def reheat(handler: Any, state: dict | None, mode: Any) -> Iterator[tuple]:
    """Switch the session's heat map to ``mode`` (one of HEATMAP_MODES; empty: the model's default) and inspect the
    gallery's photos again with it (the heat map needs the network; the verdicts do not change). A photo whose
    upload is gone keeps the map it has. Photos inspected later get ``mode`` too."""
    state = state if state is not None else new_state()
    state["heatmap_mode"] = check_heatmap_mode(mode)
    rows = state["rows"]
    targets = [i for i in state.get("shown") or [] if i < len(rows) and not rows[i].get("error")
               and rows[i].get("source") is not None and rows[i].get("index") is not None]
    if not targets or not state.get("dir"):
        yield (state, *render(handler, state))
        return
    where = {rows[i]["index"]: i for i in targets}
    entries = [(rows[i]["index"], rows[i]["name"], rows[i]["source"]) for i in targets]
    done = 0
    for chunk, _ in inspect_chunks(handler, entries, Path(state["dir"]), state["opacity"],
                                   lambda: _mode(handler, state)):
        thr = threshold_of(handler, state)
        for new in chunk:
            if new.get("error"):  # the upload is gone from the server: what was computed stays
                continue
            new["verdict"] = verdict_of(handler, new, thr)
            rows[where[new["index"]]] = new
        done += len(chunk)
        yield (state, message_html(f"Redrawing the heat maps of the gallery's photos: {done:,} / {len(entries):,}"),
               *(_skip() for _ in VIEW_OUTPUTS[1:]))
    yield (state, *render(handler, state))


def stop(handler: Any, state: dict | None) -> tuple:
    """Stop the session's running job after its current chunk (every result so far is kept) and show what there
    is; nothing changes when no job runs."""
    state = state if state is not None else new_state()
    if not state.get("done"):
        state["stopped"] = True
    return (state, *render(handler, state))


def errors_in(state: dict) -> list[str]:
    """The error messages of the session's files that could not be inspected."""
    return [r["error"] for r in state.get("rows", []) if r.get("error")]


def _fresh(state: dict | None, opacity: float) -> dict:
    """A new job's session: the old one's threshold, band and heat-map choice, no results."""
    new = new_state()
    for key in ("threshold", "review_margin", "heatmap_mode"):
        new[key] = (state or {}).get(key)
    new["opacity"] = float(opacity)
    return new


def _message(state: dict | None, text: str, kind: str) -> tuple:
    """The session as it was, with ``text`` in the progress line (the results on screen stay)."""
    return (state if state is not None else new_state(), message_html(text, kind),
            *(_skip() for _ in VIEW_OUTPUTS[1:]))


def _mode(handler: Any, state: dict) -> str | None:
    """The session's heat map for this model: a defect-evidence choice made for another model of this session falls
    back to the model's default on one without a defect class."""
    mode = state.get("heatmap_mode")
    if mode == "defect-evidence" and getattr(get_handler(handler), "defect_class", None) is None:
        return None
    return mode


# ---------------------------------------------------------------------------------------------- deciding


def threshold_of(handler: Any, state: dict) -> float | None:
    """The threshold in force: the one the user picked on the slider, else the model's."""
    t = state.get("threshold")
    return float(t) if t is not None else get_handler(handler).threshold


def verdict_of(handler: Any, row: dict, threshold: float | None) -> str:
    """ERROR for a failed file; else the handler's decision from the stored probabilities, which stays UNUSABLE at
    any threshold for a photo the guard gave a reason for."""
    if row.get("error"):
        return "ERROR"
    if row.get("defect_probability") is None:  # a model without a defect class: the label is the answer
        return str(row.get("label"))
    reason = row.get("unusable_reason")
    if reason:  # only a handler with a guard gives reasons, and its decide() takes them
        return get_handler(handler).decide(row["probabilities"], threshold, unusable_reason=reason)
    return get_handler(handler).decide(row["probabilities"], threshold)


def decide_all(handler: Any, state: dict) -> None:
    """Every row's verdict at the threshold in force (no forward pass)."""
    thr = threshold_of(handler, state) if state.get("rows") else None
    for row in list(state.get("rows") or []):
        row["verdict"] = verdict_of(handler, row, thr)


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


def initial_review_margin(handler: Any) -> float:
    """Where the band slider starts: the model's band margin once loaded (the default rule's otherwise). The
    model's own band (maybe widened on one side by validation errors) stays in force until the slider moves."""
    if model_state(handler) == "ready":
        band = getattr(get_handler(handler), "review_band", None)
        if isinstance(band, dict) and isinstance(band.get("margin"), (int, float)):
            return float(min(band["margin"], MAX_REVIEW_MARGIN))
    return DEFAULT_MARGIN


def redecide(handler: Any, state: dict | None, threshold: float) -> tuple:
    """New verdicts for every photo at ``threshold`` from the stored probabilities (no forward pass)."""
    state = state if state is not None else new_state()
    state["threshold"] = float(threshold)
    decide_all(handler, state)
    return (state, *render(handler, state))


def rereview(handler: Any, state: dict | None, margin: float) -> tuple:
    """A new review band of ``margin`` logits either side of the threshold (no forward pass)."""
    state = state if state is not None else new_state()
    m = float(margin)
    if not 0.0 <= m <= 20.0:
        raise ValueError(f"review band {margin!r} must be 0 to 20 logits")
    state["review_margin"] = m
    return (state, *render(handler, state))


def reblend(handler: Any, state: dict | None, opacity: float) -> tuple:
    """The selected photo and the gallery redrawn at ``opacity`` from the stored heat maps (no forward pass)."""
    state = state if state is not None else new_state()
    state["opacity"] = float(opacity)
    return (state, *render(handler, state))


def select(handler: Any, state: dict | None, index: int | None) -> tuple:
    """Show photo ``index`` of the gallery (as the page last received it) in the detail panel."""
    state = state if state is not None else new_state()
    shown = state.get("shown") or []
    if index is not None and 0 <= int(index) < len(shown):
        state.update(selected=shown[int(index)], picked=True)
    return (state, *detail(handler, state))


# --------------------------------------------------------------------------------------------- rendering


def render(handler: Any, state: dict) -> tuple:
    """All view outputs (see VIEW_OUTPUTS) for the session: the gallery's order is remembered for clicks in it."""
    rows = state.get("rows") or []
    if not rows:
        return (_progress(state), EMPTY_SUMMARY, [], badge_html(None, None, None), None, None, None, "", [], None, "")
    touch(state.get("dir"))
    thr = threshold_of(handler, state)
    band = band_of(handler, state, thr)
    rows = list(rows)  # a job may be adding rows meanwhile: draw one consistent set
    verdicts = [r["verdict"] for r in rows]
    reviews = [needs_review_of(r, band) for r in rows]
    order = gallery_order(rows, verdicts, reviews)
    state["shown"] = order
    if not state.get("picked") or state.get("selected") is None or state["selected"] >= len(rows):
        state["selected"] = order[0]
    cmap = colormap_of(handler)
    opacity = state.get("opacity", DEFAULT_OPACITY)
    gallery = [(tile(rows[i], opacity, cmap), caption(rows[i], verdicts[i], reviews[i])) for i in order]
    table = table_rows(handler, rows, verdicts, thr, band)
    return (_progress(state), summary_html(rows, verdicts, thr, band, guard_on(handler), state.get("drift"), reviews),
            gallery, *detail(handler, state, thr, band), table_view(table), write_csv(table, state.get("dir")),
            label_next_markdown(rows, verdicts, thr, band))


def detail(handler: Any, state: dict, thr: float | None = None, band: dict | None = None) -> tuple:
    """The detail panel (see DETAIL_OUTPUTS) for the selected photo: badge, photo, overlay at the session's opacity
    (greyed and marked for an UNUSABLE photo), class probabilities and timings."""
    rows = state.get("rows") or []
    if not rows:
        return (badge_html(None, None, None), None, None, None, "")
    i = min(max(int(state.get("selected") or 0), 0), len(rows) - 1)
    row = rows[i]
    thr = threshold_of(handler, state) if thr is None else thr
    band = band_of(handler, state, thr) if band is None else band
    v = row["verdict"]
    if row.get("error"):
        return (badge_html(row, v, thr), None, None, None, "")
    img, heat = display_copy(row)
    overlay = None if img is None else blend(img, heat, state.get("opacity", DEFAULT_OPACITY), colormap_of(handler))
    probs = {shown_class(handler, k): round(p, 4) for k, p in row["probabilities"].items()}
    if is_unusable(row, v):  # what the network saw, greyed and marked: not a verdict on this photo
        overlay = None if overlay is None else not_judged(overlay)
        probs = {f"{k} (not judged)": p for k, p in probs.items()}
    return (badge_html(row, v, thr, band, handler), img, overlay, probs, latency_html(row["timings_ms"]))


def _progress(state: dict) -> str:
    if state.get("message"):
        return message_html(state["message"], "error")
    if not state.get("dir"):
        return ""
    return progress_html(len(state["rows"]), state["total"], state.get("seconds", 0.0), state.get("refused", 0),
                         stopped=bool(state.get("stopped")))


def _summary(handler: Any, state: dict) -> str:
    """The counts alone (for the steps of a job between two refreshes of the gallery)."""
    rows = list(state["rows"])
    thr = threshold_of(handler, state)
    band = band_of(handler, state, thr)
    return summary_html(rows, [r["verdict"] for r in rows], thr, band, guard_on(handler), state.get("drift"),
                        [needs_review_of(r, band) for r in rows])


def overlays_zip(state: dict | None) -> str:
    """A zip of the session's overlays (see :func:`inspectkit.ui.common.job.zip_overlays`); ValueError without."""
    state = state or {}
    return zip_overlays(state.get("rows") or [], state.get("dir"))


# ------------------------------------------------------------------------------------------ model switch


def switched(handler: Any, state: dict | None) -> tuple:
    """When the session changes model: its results are cleared (they came from the other model) and the sliders go
    to the new model's threshold and band; ``(state, *VIEW_OUTPUTS, threshold update, band update)``."""
    import gradio as gr

    new = new_state()
    new["opacity"] = (state or {}).get("opacity", DEFAULT_OPACITY)
    thr = get_handler(handler).threshold
    return (new, *render(handler, new), gr.update(value=round(thr, 4)) if thr is not None else gr.update(),
            gr.update(value=initial_review_margin(handler)))


# ------------------------------------------------------------------------------------ Gradio-facing glue


def call(fn: Callable, shared: Any, choice: dict | None, *args: Any) -> Any:
    """``fn(<the session's handler>, *args)``: a bad request (ValueError) or an unavailable model becomes a Gradio
    error message, and the session keeps its results."""
    import gradio as gr

    from inspectkit.names import safe_text

    try:
        return fn(pick(shared, choice), *args)
    except (ValueError, ModelUnavailable) as exc:
        raise gr.Error(safe_text(exc), title="Cannot inspect") from None


def stream(fn: Callable, shared: Any, choice: dict | None, *args: Any) -> Iterator[tuple]:
    """:func:`call` for the functions that yield their outputs step by step (a job, redrawing heat maps)."""
    import gradio as gr

    from inspectkit.names import safe_text

    try:
        yield from fn(pick(shared, choice), *args)
    except (ValueError, ModelUnavailable) as exc:
        raise gr.Error(safe_text(exc), title="Cannot inspect") from None
