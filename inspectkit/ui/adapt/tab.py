"""The Adapt tab: adapt the model to a new line from labelled photos, or load a checkpoint, for one browser session.

What an engineer does there, and where it lives here:

* hand over labelled photos: zip files with one folder per class, and/or one drop zone per class
  (:func:`prepare_photos` copies them, checked, into a fresh folder-per-class tree; nothing from an upload is
  ever executed, zip entries are read as bytes into names we make, and every size and count is bounded);
* see the current model's score on them first (:func:`score_photos`);
* adapt (:func:`run_adaptation`, around :func:`inspectkit.adaptation.adapt`), one adaptation at a time in the
  whole server (:data:`ADAPT_LOCK`; a second request is told so at once), with a small budget
  (:class:`AdaptSettings`, from ``INSPECT_ADAPT_*`` variables) and few torch threads, so inspection keeps the
  rest of the CPU;
* see before and after on the held-out part side by side, each rate with its 90 % interval and photo count,
  download the checkpoint and its ``.sha256``;
* switch this session to the adapted model (:func:`use_adapted`), or load an uploaded checkpoint
  (:func:`load_uploaded_checkpoint`); other sessions keep the default model. The session keeps a small
  reference (``gr.State``); the handlers themselves sit in a small server-side cache (:func:`pick`).

"Label these next" on the Inspect tab feeds this tab: :func:`send_to_adapt` puts the listed photos into a
"to label" gallery, and :func:`apply_labels` moves the ones the engineer ticked into the class drop zones.

The pieces live beside it, one concern each: ``intake`` (photos in, limits, the tab's files), ``settings`` (the
budget), ``view`` (the HTML it shows) and ``layout`` (the tab's components and wiring); the sessions' model cache is
``inspectkit.ui.common.session_models``. This module holds the callbacks.

Like the Inspect tab's modules, nothing heavy is imported at module level: torch and the handler load when first needed.

Why this module is a little over 400 lines: its callbacks (scoring, adapting, switching models, the to-label
flow) share the session's model choice and the one-adaptation lock, so they stay together.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspectkit.digest import sha256_file
from inspectkit.limits import INFERENCE_LOCK
from inspectkit.names import error_message, safe_name, safe_text, upload_name
from inspectkit.serve.model_source import ModelUnavailable, get_handler
from inspectkit.ui.adapt.intake import (
    CHECKPOINT_SUFFIXES,
    MAX_CHECKPOINT_BYTES,
    MAX_CHECKPOINT_MB,
    Photos,
    _unique,
    _work,
    prepare_photos,
    prune,
)
from inspectkit.ui.adapt.settings import AdaptSettings, require_torch
from inspectkit.ui.adapt.view import (
    MAX_LISTED,
    _confusion_html,
    _esc,
    _metrics_table,
    _mode_hint,
    _name_lists,
    _num,
    adaptation_html,
    session_line,
    status_html,
)
from inspectkit.ui.common.job import source_bytes
from inspectkit.ui.common.render import LABEL_NEXT_ROWS, md_cell, review_ranks
from inspectkit.ui.common.session import threshold_of
from inspectkit.ui.common.session_models import _load_handler, _remember, class_names_of, pick
from inspectkit.ui.common.uploads import as_paths

# ------------------------------------------------------------------------------------------------ limits

#: Drop zones (and "label as" lists) in the UI: one per class of the model, up to this many.
MAX_CLASS_ZONES = 4
#: Photos scored per hold of the inference lock: inspections of other users wait at most one chunk.
SCORE_CHUNK = 16


class AdaptationBusy(RuntimeError):
    """Another adaptation is running on this server; the message says since when and how far it is."""


# ------------------------------------------------------------------------------------------------ scoring


def score_photos(handler: Any, photos: Photos, progress: Callable | None = None) -> dict:
    """The model's figures on the labelled photos: the classification report with 90 % intervals of its rates
    (``intervals``), plus the names of missed defects, false alarms and unreadable photos. Runs in chunks of
    SCORE_CHUNK under the inference lock, so inspections of other users interleave."""
    import numpy as np

    from inspectkit.metrics import classification_report

    h = get_handler(handler)
    names = list(h.class_names)
    items = [(p, names.index(c)) for c in photos.class_names for p in photos.files[c]]
    probs, labels, shown, unreadable = [], [], [], []
    for start in range(0, len(items), SCORE_CHUNK):
        chunk = items[start:start + SCORE_CHUNK]
        if progress is not None:
            progress(start / len(items), desc=f"Scoring the current model ({start} of {len(items)} photos)")
        with INFERENCE_LOCK:
            results = h.predict_batch([str(p) for p, _ in chunk], heatmap=False, on_error="collect",
                                      names=[p.name for p, _ in chunk])
        for (p, y), r in zip(chunk, results):
            where = f"{names[y]}/{p.name}"
            if r.error:
                unreadable.append(f"{where}: {error_message(r.error, p.name)}")
                continue
            probs.append([float(r.probabilities[c]) for c in names])
            labels.append(y)
            shown.append(where)
    if not labels:
        raise ValueError("none of the photos could be read as an image; " + "; ".join(unreadable[:3]))
    y = np.asarray(labels)
    pr = np.asarray(probs)
    d = h.defect_index
    rep = classification_report(y, pr, names, d, h.threshold)
    from inspectkit.intervals import report_intervals
    from inspectkit.metrics import predict_labels

    rep["intervals"] = report_intervals(rep, d)  # a few dozen photos: each rate with its 90 % interval

    pred = predict_labels(pr, d, h.threshold)
    rep["missed"] = [] if d is None else [shown[i] for i in np.nonzero((y == d) & (pred != d))[0]]
    rep["false_alarm_files"] = [] if d is None else [shown[i] for i in np.nonzero((y != d) & (pred == d))[0]]
    rep["unreadable"] = unreadable
    rep["class_names"] = names
    return rep


def score(shared: Any, choice: dict | None, zips: Any, zones: list, progress: Callable | None = None) -> str:
    """Check the photos and score the session's model on all of them (nothing is trained); HTML for the tab."""
    h = get_handler(pick(shared, choice))
    photos = prepare_photos(zips, zones, list(h.class_names))
    try:
        rep = score_photos(h, photos, progress)
    finally:
        photos.cleanup()
    counts = ", ".join(f"{_esc(c)}: {n}" for c, n in photos.counts.items())
    out = ["<div class='adapt-score'><h4>The current model on these photos</h4>",
           f"<p>{sum(photos.counts.values())} photos ({counts}); all of them, nothing trained yet. "
           f"{_mode_hint(photos.counts)}</p>", _metrics_table([("current model", rep)]),
           _confusion_html(rep.get("confusion_matrix"), rep["class_names"], "Confusion matrix (rows: true class)")]
    out += _name_lists(rep)
    if photos.ignored:
        out.append(f"<p class='muted'>Not photos, left out: {_esc('; '.join(photos.ignored[:MAX_LISTED]))}"
                   f"{' ...' if len(photos.ignored) > MAX_LISTED else ''}</p>")
    out.append("</div>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ adapting

#: One adaptation at a time in the whole server: two would halve each other's CPU and the inspections'.
ADAPT_LOCK = threading.Lock()
_RUNNING: dict[str, Any] = {"since": None, "fraction": 0.0, "text": ""}


def adaptation_status() -> str | None:
    """'since HH:MM:SS, NN % done (step)' while an adaptation runs, else None."""
    since = _RUNNING.get("since")
    if since is None:
        return None
    return (f"started {time.strftime('%H:%M:%S', time.localtime(since))}, {100 * _RUNNING['fraction']:.0f} % done "
            f"({_RUNNING['text']})")


def run_adaptation(shared: Any, choice: dict | None, settings: AdaptSettings, zips: Any, zones: list,
                   progress: Callable | None = None, force: bool = False) -> tuple[dict, str, list[str]]:
    """Adapt the session's model to the photos; returns (the result for :func:`use_adapted`, the before/after
    HTML, [checkpoint, its .sha256]). Where the model already gets every photo right it is kept unchanged unless
    ``force`` (AdaptConfig.force).

    Raises AdaptationBusy at once when another adaptation is running, ValueError for photos that do not fit
    (wrong classes, too few, over the limits) or a model without a checkpoint file.
    """
    require_torch("Fine-tuning (Adapt)")
    if not ADAPT_LOCK.acquire(blocking=False):
        raise AdaptationBusy(f"another adaptation is running on this server ({adaptation_status() or 'just started'})"
                             "; one runs at a time so inspection keeps its CPU. Try again when it has finished")
    try:
        _RUNNING.update(since=time.time(), fraction=0.0, text="preparing")
        return _adapt_locked(shared, choice, settings, zips, zones, progress, bool(force))
    finally:
        _RUNNING.update(since=None, fraction=0.0, text="")
        ADAPT_LOCK.release()


def _adapt_locked(shared, choice, settings, zips, zones, progress, force):
    import torch

    from inspectkit.engine.adaptation import AdaptConfig, adapt
    from inspectkit.inference.checkpoint import load_checkpoint

    h = get_handler(pick(shared, choice))
    parent_path = getattr(h, "checkpoint_path", None)
    if not parent_path:
        raise ValueError("the model in use has no checkpoint file to adapt from")
    photos = prepare_photos(zips, zones, list(h.class_names))
    run_dir = _work("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_dir.mkdir(parents=True)
    out = run_dir / f"adapted_{Path(str(parent_path)).stem}_{time.strftime('%Y%m%d-%H%M%S')}.pt"

    def say(fraction: float, text: str) -> None:
        _RUNNING.update(fraction=float(fraction), text=str(text))
        if progress is not None:
            progress(float(fraction), desc=f"Adapting: {text}")

    threads_before = torch.get_num_threads()
    try:
        parent = load_checkpoint(parent_path, expected_sha256=getattr(h, "sha256", None))
        cfg = AdaptConfig(data=str(photos.folder), checkpoint=Path(str(parent_path)).name, out=str(out),
                          seed=settings.seed, replay=settings.replay, views=settings.views,
                          stage1_epochs=settings.stage1_epochs, stage2_epochs=settings.stage2_epochs,
                          threads=settings.threads, force=force)
        t0 = time.perf_counter()
        ckpt = adapt(parent, cfg, progress=say, save=True)
        seconds = time.perf_counter() - t0
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        # adapt() sets torch's process-wide thread count; inspection with the torch backend gets it back
        torch.set_num_threads(threads_before)
        photos.cleanup()
    from inspectkit.inference.checkpoint import weights_digest

    sidecar = Path(str(out) + ".sha256")
    sha = sidecar.read_text().split()[0]
    a = ckpt["metrics"]["adaptation"]
    result = {"path": str(out), "sha256": sha, "weights_sha256": weights_digest(ckpt["state_dict"]),
              "name": out.name, "source": "adapted", "threshold": ckpt["threshold"],
              "class_names": list(ckpt["class_names"]), "backend": settings.backend, "mode": a["mode"],
              "parent_sha256": getattr(h, "sha256", None), "seconds": round(seconds, 1)}
    return result, adaptation_html(ckpt, result, photos.ignored), [str(out), str(sidecar)]


# ------------------------------------------------------------------------------------------------ switching

#: What :func:`switch_view` returns, in order (the Adapt tab's layout wires the same components). The Inspect tab
#: and the Model tab follow a switch themselves (they listen to the session's model choice changing).
SWITCH_OUTPUTS = ("model_choice", "status", "session_line", *(f"zone{i}" for i in range(MAX_CLASS_ZONES)),
                  *(f"label_as{i}" for i in range(MAX_CLASS_ZONES)))


def class_updates(names: list[str]) -> tuple:
    """Labels and visibility of the drop zones and the 'label as' lists for ``names`` (values untouched)."""
    import gradio as gr

    zones = [gr.update(label=f"Photos of class {names[i]}", visible=True) if i < len(names) else
             gr.update(visible=False) for i in range(MAX_CLASS_ZONES)]
    checks = [gr.update(label=f"Label as {names[i]}", visible=True) if i < len(names) else gr.update(visible=False)
              for i in range(MAX_CLASS_ZONES)]
    return (*zones, *checks)


def on_load(shared: Any, choice: dict | None) -> tuple:
    """Page load: the zones named after the model's classes, and the session line."""
    try:
        names = class_names_of(shared, choice)
    except ModelUnavailable:
        names = []
    return (*class_updates(names or ["class 1", "class 2"]), session_line(choice))


def switch_view(shared: Any, choice: dict | None) -> tuple:
    """What this tab and the status line show when the session changes model (see SWITCH_OUTPUTS)."""
    h = get_handler(pick(shared, choice))
    return (choice, status_html(h, choice), session_line(choice), *class_updates(list(h.class_names)))


def use_adapted(shared: Any, choice: dict | None, result: dict | None) -> tuple:
    """Switch this session to the adapted model of its last adaptation (see SWITCH_OUTPUTS)."""
    if not result:
        raise ValueError("no adapted model yet in this session: run an adaptation first")
    new = {k: result[k] for k in ("path", "sha256", "weights_sha256", "name", "source", "threshold", "class_names",
                                  "backend")}
    pick(None, new)  # loads it now (and fails now, leaving the session as it was)
    return switch_view(shared, new)


def use_default(shared: Any, choice: dict | None) -> tuple:
    """Switch this session back to the default model (see SWITCH_OUTPUTS)."""
    return switch_view(shared, None)


def load_uploaded_checkpoint(shared: Any, choice: dict | None, files: Any, settings: AdaptSettings) -> tuple:
    """Load an uploaded checkpoint (weights-only) and switch this session to it; returns (details markdown,
    *switch_view). Optionally with its ``.sha256`` beside it, which must match.

    ValueError for anything wrong (no .pt, too big, digest mismatch, not a weights-only checkpoint, a structure
    the handler refuses): the session keeps its model.
    """
    require_torch("Loading a checkpoint (it is read with torch, and its ONNX graph is built from it)")
    from inspectkit.inference.checkpoint import load_checkpoint, weights_digest

    paths = as_paths(files)
    pts = [p for p in paths if Path(p).suffix.lower() in CHECKPOINT_SUFFIXES]
    sides = [p for p in paths if p.lower().endswith(".sha256")]
    other = [upload_name(p) for p in paths if p not in pts and p not in sides]
    if other or len(pts) != 1 or len(sides) > 1:
        raise ValueError(f"give exactly one checkpoint ({' or '.join(CHECKPOINT_SUFFIXES)}), optionally with its "
                         f".sha256; got {[upload_name(p) for p in paths] or 'nothing'}")
    src, name = pts[0], upload_name(pts[0])
    size = os.path.getsize(src)
    if size > MAX_CHECKPOINT_BYTES:
        raise ValueError(f"{name} is {size / 1e6:.1f} MB; the limit is {MAX_CHECKPOINT_MB} MB per checkpoint")
    with open(src, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip (or, in its legacy format, a pickle): anything else is not worth unpickling
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise ValueError(f"{name} is not a torch checkpoint (a file saved by torch.save starts with a zip or pickle "
                         "header); the session keeps its current model")
    expected = None
    if sides:
        expected = (Path(sides[0]).read_text(errors="replace").split() or [""])[0]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
            raise ValueError(f"{upload_name(sides[0])} does not start with a SHA-256 digest (64 hex digits)")
    sha = sha256_file(src)
    if expected and sha != expected.lower():
        raise ValueError(f"{name} has SHA-256 {sha}, but {upload_name(sides[0])} says {expected.lower()}: the file "
                         "was changed or damaged; not loaded")
    prune()
    # our own copy: Gradio's upload cache is emptied after two hours, the session may use the model longer
    dest = _work("models") / f"{sha[:16]}_{safe_name(name, 'model.pt')}"
    fresh = not dest.is_file()
    if fresh:
        shutil.copyfile(src, dest)
    Path(str(dest) + ".sha256").write_text(f"{sha}  {dest.name}\n")
    try:
        ckpt = load_checkpoint(dest, expected_sha256=sha)  # weights_only: no code in the file can run
        wd = weights_digest(ckpt["state_dict"])
        h = _load_handler(str(dest), sha, settings.backend)
    except (ValueError, RuntimeError, OSError) as exc:
        if fresh:  # a refused file is not kept
            dest.unlink(missing_ok=True)
            Path(str(dest) + ".sha256").unlink(missing_ok=True)
        text = str(exc).replace(str(dest), name)
        raise ValueError(f"{name} is not a usable checkpoint: {text}. The session keeps its current model") from None
    _remember(sha, h)
    new = {"path": str(dest), "sha256": sha, "weights_sha256": wd, "name": name, "source": "uploaded",
           "threshold": h.threshold, "class_names": list(h.class_names), "backend": settings.backend}
    checked = "the uploaded .sha256" if expected else "nothing uploaded (digest computed here)"
    parent = (((ckpt.get("metrics") or {}).get("adaptation") or {}).get("parent") or {}).get("path", "n/a")
    info = (f"**Loaded {md_cell(name)}** ({size / 1e6:.1f} MB, loaded weights-only)\n\n"
            f"| | |\n|---|---|\n| file SHA-256 | `{sha}` |\n| weights digest | `{wd}` |\n"
            f"| checked against | {checked} |\n| architecture | {md_cell(ckpt['arch'])} |\n"
            f"| classes | {md_cell(', '.join(ckpt['class_names']))} |\n| threshold | {_num(ckpt['threshold'])} |\n"
            f"| adapted from | {md_cell(parent)} |")
    return (info, *switch_view(shared, new))


# ------------------------------------------------------------------------------------------------ to label


def send_to_adapt(shared: Any, choice: dict | None, inspect_state: dict | None) -> tuple:
    """The Inspect tab's "Label these next" photos (UNUSABLE ones, then the closest to the threshold, at most
    LABEL_NEXT_ROWS) as this tab's "to label" list: (to_label, gallery value, *'label as' list updates, the tabs
    showing Adapt, the "to label" box opened).

    The original photos are copied (from the upload, or out of its zip) while they are still on the server;
    otherwise the display copy the job kept is saved as PNG. ValueError when nothing was inspected.
    """
    state = inspect_state or {}
    rows = list(state.get("rows") or [])
    h = get_handler(pick(shared, choice))
    thr = threshold_of(h, state) if rows else None
    ranks = review_ranks(rows, thr)
    order = [i for _, i in sorted((r, i) for i, r in enumerate(ranks) if r is not None)][:LABEL_NEXT_ROWS]
    if not order:
        raise ValueError("nothing to send: inspect some photos first; 'Label these next' lists the ones closest to "
                         "the threshold")
    prune()
    dest = _work("tolabel") / uuid.uuid4().hex
    dest.mkdir(parents=True)
    out = []
    for i in order:
        row = rows[i]
        data = source_bytes(row.get("source"))
        if data is not None:
            target = _unique(dest, safe_name(row["name"]))
            target.write_bytes(data)
        elif row.get("photo") and os.path.isfile(row["photo"]):
            from PIL import Image

            target = _unique(dest, Path(safe_name(row["name"])).stem + ".png")
            with Image.open(row["photo"]) as img:
                img.save(target)
        else:
            continue
        out.append({"name": target.name, "path": str(target), "p": row.get("defect_probability")})
    import gradio as gr

    return (out, to_label_gallery(out), *label_choices(out), gr.update(selected="adapt"), gr.update(open=True))


def to_label_gallery(to_label: list[dict]) -> list[tuple[str, str]]:
    """Gallery value: each photo to label with its name and p(defect)."""
    return [(t["path"], f"{t['name']} (p={t['p']:.3f})" if t.get("p") is not None else t["name"]) for t in to_label]


def label_choices(to_label: list[dict]) -> tuple:
    """The 'label as <class>' lists offering the photos still to label, nothing ticked."""
    import gradio as gr

    names = [t["name"] for t in to_label]
    return tuple(gr.update(choices=names, value=[]) for _ in range(MAX_CLASS_ZONES))


def apply_labels(shared: Any, choice: dict | None, to_label: list[dict] | None, zones: list,
                 ticks: list) -> tuple:
    """Move the ticked photos into the drop zone of the class they were ticked for; the others stay to label.

    Returns (*zone values, to_label, gallery value, *'label as' updates). ValueError for a photo ticked for two
    classes, or when nothing is ticked.
    """
    to_label = list(to_label or [])
    names = class_names_of(shared, choice)
    ticks = [list(t or []) for t in ticks][:len(names)]
    seen: dict[str, str] = {}
    for c, ticked in zip(names, ticks):
        for n in ticked:
            if n in seen:
                raise ValueError(f"{n} is ticked as both {seen[n]} and {c}; tick one class per photo")
            seen[n] = c
    if not seen:
        raise ValueError("nothing is ticked: tick each photo under the class it belongs to, then add them")
    by_name = {t["name"]: t for t in to_label}
    new_zones = []
    for i in range(MAX_CLASS_ZONES):
        current = as_paths(zones[i]) if i < len(zones) else []
        if i < len(names):
            current += [by_name[n]["path"] for n in ticks[i] if n in by_name]
        new_zones.append(current or None)
    left = [t for t in to_label if t["name"] not in seen]
    return (*new_zones, left, to_label_gallery(left), *label_choices(left))


# ------------------------------------------------------------------------------------------------ Gradio glue


def adapt_call(fn: Callable, *args: Any, title: str = "Cannot adapt") -> Any:
    """Run an Adapt-tab action; a bad request, a busy server or an unavailable model becomes a Gradio error
    message (the session keeps its model and its inputs)."""
    import gradio as gr

    try:
        return fn(*args)
    except (ValueError, ModelUnavailable, AdaptationBusy) as exc:
        raise gr.Error(safe_text(exc), title="Busy" if isinstance(exc, AdaptationBusy) else title,
                       duration=20) from None

