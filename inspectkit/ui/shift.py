"""The Shift tab: any number of photos (many files, a folder, or zip files) inspected in chunks, with the results
arriving as they are computed. app.py holds the layout and one-line callbacks; this module does the work.

A job is bounded (:data:`MAX_JOB_PHOTOS` photos, :data:`MAX_JOB_BYTES` bytes; zip members count uncompressed) and
is refused past either with a message that says so and points to ``batch_inspect.py`` for more. The photos go
through the model :data:`~inspectkit.MAX_BATCH` at a time, each chunk under the inference lock on its own
(``inspect_many``), so the JSON endpoint and other sessions are served between two chunks; the Shift
event has its own Gradio concurrency group, so the Inspect tab's queue does not wait for a long job either.

What a session keeps is small whatever the job's size: a row of numbers per photo (for the summary and the CSV) and,
on disk in a job folder, each overlay as a JPEG (served to the gallery, zipped on request). The gallery shows at
most :data:`GALLERY_MAX` photos, defects and needs-review photos first, and says how many it leaves out; the CSV
has every photo.

UNUSABLE and drift (a model with a guard, inspectkit/guard.py and drift.py): photos nobody can judge are counted
with their reasons and shown in the gallery right after the defects; a :class:`~inspectkit.drift.DriftMonitor` per
job follows the photos in input order, and the summary starts with its word: "DRIFT ALARM from photo R (name): what
changed" once it fires, else "No drift over N photos" (or why it is off).

One tab, one module: planning a job, running it in chunks, and what the tab shows of it (a little over 400
lines; the drawing is small enough to stay beside the job it draws).
"""

from __future__ import annotations

import csv
import html
import io
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inspectkit.limits import MAX_BATCH, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB
from inspectkit.names import error_message, safe_name, safe_text, upload_name
from inspectkit.serve.model_source import ModelUnavailable, get_handler, model_state
from inspectkit.serve.results import inspect_many
from inspectkit.ui.common.render import verdict_text
from inspectkit.verdicts import UNUSABLE

#: Most photos one job takes (a shift of one line is a few thousand; batch_inspect.py has no bound).
MAX_JOB_PHOTOS = 10_000
#: Most bytes of photos one job takes, zip members counted uncompressed.
MAX_JOB_BYTES = 1024**3
#: Photos shown in the gallery (and the table), defects and needs-review photos first.
GALLERY_MAX = 200
#: The gallery and the CSV are re-sent at most this often while a job runs (and once at its end): re-sending 200
#: images after every 32-photo chunk would cost the page more than the chunk.
REFRESH_S = 2.0
#: Longest side of the overlays kept for the gallery and the zip.
OVERLAY_SIDE = 640
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: The outputs every step of a job returns, after the job state, in order.
OUTPUTS = ("progress", "summary", "gallery", "table", "csv")
TABLE_HEADERS = ["file", "verdict", "defect probability", "needs review", "note", "unusable reason", "novelty"]
#: verdict: OK, DEFECT, UNUSABLE (unusable_reason says why; label and defect_probability are then what the network
#: saw) or ERROR; photo: the place in the job's input order (1, 2, ...; empty for a file refused before inspection)
CSV_HEADERS = ["file", "verdict", "label", "defect_probability", "threshold", "needs_review", "error", "latency_ms",
               "unusable_reason", "novelty", "photo"]
#: Shift jobs running at once (each takes the inference lock per chunk, so they interleave with everything else).
CONCURRENT_JOBS = 2
INTRO = (f"## A whole shift\nDrop any number of photos, a folder, or zip files of photos (up to {MAX_JOB_PHOTOS:,} "
         f"photos and {MAX_JOB_BYTES / 1e9:.1f} GB per job). They are inspected {MAX_BATCH} at a time and the "
         "results arrive as they are computed; the CSV has every photo, and the heat-map overlays can be zipped. "
         "With a model that has a guard, photos nobody can judge are UNUSABLE and the summary starts with the drift "
         "monitor's word: a DRIFT ALARM when the photos stop looking like those the model was validated on.")
LIMITS = (f"<span class='muted'>Limits: {MAX_JOB_PHOTOS:,} photos and {MAX_JOB_BYTES / 1e9:.1f} GB per job, "
          f"{MAX_UPLOAD_MB} MB per file (a zip too). More: <code>python batch_inspect.py FOLDER --out rows.csv</code>"
          ".</span>")
CSS = """
.shift-progress {font-size:1.05em; padding:6px 2px} .shift-progress progress {width:55%; height:14px; vertical-align:middle}
.shift-msg {padding:8px 10px; border-radius:8px} .shift-msg.error {background:#fee2e2; color:#7f1d1d}
.shift-msg.muted {color:#6b7280}
#shift-gallery .grid-wrap {max-height:620px; overflow-y:auto}
.drift {padding:8px 12px; border-radius:8px; margin:2px 0 6px 0; font-size:1.05em}
.drift.alarm {background:#fee2e2; border:2px solid #b91c1c; color:#7f1d1d}
.drift.alarm .drift-head {font-weight:800; letter-spacing:.03em} .drift.alarm ul {margin:4px 0 0 18px}
.drift.steady {background:#f0fdf4; color:#166534} .drift.off {background:#f3f4f6; color:#6b7280}
"""
_JOBS_DIR = Path(tempfile.gettempdir()) / "casting-inspection-shift"
_JOBS_MAX_AGE_S = 7200.0


def new_state() -> dict:
    """An empty Shift session."""
    return {"rows": [], "dir": None, "total": 0, "threshold": None, "done": False, "drift": None}


# --------------------------------------------------------------------------------------------- the job's photos


def _as_paths(files: Any) -> list[str]:
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    return [str(getattr(f, "path", None) or getattr(f, "name", None) or f) for f in files if f]


def plan_job(files: Any, folder: Any = None) -> tuple[list[tuple[str, Any]], list[dict]]:
    """The photos of a job from the dropped files and an uploaded folder: ``(sources, refused)``.

    ``sources``: ``(name, path)`` for a photo file, ``(name, (zip_path, member))`` for a photo inside a zip.
    ``refused``: rows for files that cannot be inspected as they are (empty, over MAX_UPLOAD_MB, a broken zip).
    Other files (a folder's notes, a zip's folders) are skipped. Raises ValueError naming the bound when the job
    has more than MAX_JOB_PHOTOS photos or MAX_JOB_BYTES bytes.
    """
    sources: list[tuple[str, Any]] = []
    refused: list[dict] = []
    total_bytes = 0
    from_folder = set(_as_paths(folder))
    for path in _as_paths(files) + _as_paths(folder):
        name = upload_name(path)
        suffix = Path(path).suffix.lower()
        try:
            size = os.path.getsize(path)
        except OSError:
            refused.append(_error_row(name, f"{name}: the uploaded file is gone from the server; upload it again"))
            continue
        if suffix == ".zip":
            try:
                with zipfile.ZipFile(path) as z:
                    for info in z.infolist():
                        member = info.filename
                        base = safe_name(member)
                        if info.is_dir() or Path(member).suffix.lower() not in IMAGE_SUFFIXES or base.startswith("."):
                            continue
                        if "__MACOSX/" in member:  # macOS resource forks, not photos
                            continue
                        shown = f"{name}/{base}"
                        if info.file_size > MAX_UPLOAD_BYTES:
                            refused.append(_error_row(shown, f"{shown} is {info.file_size / 1e6:.1f} MB; the limit is "
                                                             f"{MAX_UPLOAD_MB} MB per photo"))
                            continue
                        total_bytes += info.file_size
                        sources.append((shown, (path, member)))
                        _check_bounds(len(sources), total_bytes)
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:  # RuntimeError: an encrypted member
                refused.append(_error_row(name, f"{name}: not a readable zip file ({exc})"))
            continue
        if suffix not in IMAGE_SUFFIXES and path in from_folder:
            continue  # a folder upload brings every file in it; only the photos are the job
        if size == 0:
            refused.append(_error_row(name, f"{name} is empty (0 bytes)"))
        elif size > MAX_UPLOAD_BYTES:
            refused.append(_error_row(name, f"{name} is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per photo"))
        else:
            total_bytes += size
            sources.append((name, path))
            _check_bounds(len(sources), total_bytes)
    return sources, refused


def _check_bounds(n: int, nbytes: int) -> None:
    if n > MAX_JOB_PHOTOS or nbytes > MAX_JOB_BYTES:
        raise ValueError(f"this job is larger than one job may be: more than {MAX_JOB_PHOTOS:,} photos or "
                         f"{MAX_JOB_BYTES / 1e9:.1f} GB of photos (zips counted uncompressed). Split it into parts, "
                         "or inspect it on the command line: python batch_inspect.py FOLDER --out rows.csv "
                         "(no bound there, and it resumes)")


def _load_chunk(chunk: list[tuple[str, Any]]) -> list[Any]:
    """What the handler reads for each source: a file path, or the bytes of a zip member (read now, per chunk,
    so a job never holds more than a chunk of photos in memory)."""
    out: list[Any] = []
    zips: dict[str, zipfile.ZipFile] = {}
    try:
        for _, src in chunk:
            if isinstance(src, tuple):
                zpath, member = src
                try:
                    z = zips.get(zpath) or zips.setdefault(zpath, zipfile.ZipFile(zpath))
                    out.append(z.read(member))
                except Exception as exc:  # a corrupt member: the handler reports the bytes as unreadable
                    out.append(ValueError(f"{safe_name(member)}: cannot read it from the zip ({exc})"))
            else:
                out.append(src)
    finally:
        for z in zips.values():
            z.close()
    return out


# -------------------------------------------------------------------------------------------------- running


def _error_row(name: str, message: str, index: int | None = None) -> dict:
    return {"name": name, "verdict": "ERROR", "label": None, "p": None, "threshold": None, "review": None,
            "error": safe_text(message), "ms": None, "overlay": None, "reason": None, "novelty": None,
            "index": index}


def _job_dir() -> Path:
    """A fresh folder for a job's overlays and files; jobs older than two hours are removed first."""
    _JOBS_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in _JOBS_DIR.glob("job-*"):
        try:
            if now - old.stat().st_mtime > _JOBS_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    d = _JOBS_DIR / f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    return d


def _save_overlay(folder: Path, index: int, name: str, overlay, unusable: bool = False) -> str | None:
    """The overlay as a JPEG in the job folder (shrunk to OVERLAY_SIDE; greyed and marked NOT JUDGED for an
    UNUSABLE photo); its path, or None."""
    if overlay is None:
        return None
    import cv2

    from inspectkit.ui.common.render import _fit, not_judged

    img = _fit(overlay, OVERLAY_SIDE)
    if unusable:
        img = not_judged(img)
    path = folder / f"{index:05d}_{Path(name).stem[:60]}.jpg"
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        return None
    path.write_bytes(buf.tobytes())
    return str(path)


def _row(result: Any, name: str, index: int, folder: Path) -> dict:
    """What the job keeps of one result; ``index``: the photo's place in the job's input order (from 0)."""
    if getattr(result, "error", None):
        return _error_row(name, error_message(result.error, result.name, name), index)
    p = result.defect_probability
    reason = getattr(result, "unusable_reason", None) or None
    novelty = getattr(result, "novelty", None)
    return {"name": name, "verdict": result.verdict, "label": result.label, "p": None if p is None else float(p),
            "threshold": result.threshold, "review": getattr(result, "needs_review", None), "error": None,
            "ms": (result.timings_ms or {}).get("total"),
            "overlay": _save_overlay(folder, index, name, getattr(result, "overlay", None),
                                     unusable=result.verdict == UNUSABLE),
            "reason": reason if result.verdict == UNUSABLE else None,
            "novelty": None if novelty is None else float(novelty), "index": index}


# ---------------------------------------------------------------------------------------------------- drift


def start_drift(handler: Any) -> tuple[Any, dict]:
    """(a DriftMonitor for a new job with this model, its state for the summary); the monitor is None, and the
    state says why, when the model has no guard or its guard no drift reference."""
    h = get_handler(handler)
    guard = getattr(h, "guard", None)
    if guard is None:
        why = getattr(h, "guard_off_reason", None) or "this model has no guard: UNUSABLE is never returned"
        return None, {"on": False, "guard": False, "off_reason": f"guard off: {why}"}
    ref = getattr(guard, "drift_reference", None)
    if not ref or not ref.get("indicators"):
        return None, {"on": False, "guard": True, "off_reason": "the model's guard has no drift reference"}
    from inspectkit.drift import DriftMonitor

    return DriftMonitor(ref), {"on": True, "guard": True, "alarm": False, "photos": 0}


def drift_view(monitor: Any, sources: list[tuple[str, Any]]) -> dict:
    """The monitor's state for the summary, with the photo number (1, 2, ... in input order) and the file name of
    the photo where the alarm, and each indicator, first fired."""
    st = monitor.state()

    def named(row: int | None) -> tuple[int | None, str | None]:
        if row is None:
            return None, None
        return row + 1, sources[row][0] if 0 <= row < len(sources) else None

    photo, name = named(st["first_row"])
    changed = []
    for c in st["changed"]:
        cp, cn = named(c["first_row"])
        changed.append({**c, "photo": cp, "name": cn})
    return {"on": True, "guard": True, "alarm": st["alarm"], "photo": photo, "name": name, "photos": st["photos"],
            "window": st["window"], "changed": changed}


def run_shift(handler: Any, files: Any, folder: Any, opacity: float, state: dict | None) -> Iterator[tuple]:
    """The Shift tab's job, as a generator: after every chunk, ``(state, *OUTPUTS)`` with the progress (done/total,
    photos per second, time left), the summary over everything so far, and, at most every REFRESH_S and at the end,
    the gallery, the table and the CSV. A job past the bounds, or with no photo, yields one message instead."""
    try:
        sources, refused = plan_job(files, folder)
    except ValueError as exc:
        yield (dict(state or new_state()), _message(str(exc), "error"), "", [], [], None)
        return
    if not sources and not refused:
        yield (new_state(), _message("Drop photos, a folder or zip files of photos, then press Inspect.", "muted"),
               "", [], [], None)
        return
    jdir = _job_dir()
    rows: list[dict] = list(refused)
    state = {"rows": rows, "dir": str(jdir), "total": len(sources) + len(refused), "threshold": None, "done": False,
             "drift": None}
    monitor, classes = None, []
    t0 = time.perf_counter()
    last = 0.0
    if sources and model_state(handler) != "ready":
        yield (state, _message("Loading the model (first inspection after start)...", "muted"), "", [], [], None)
    for start in range(0, len(sources), MAX_BATCH):
        chunk = sources[start:start + MAX_BATCH]
        loaded = _load_chunk(chunk)
        names = [n for n, _ in chunk]
        readable = [i for i, s in enumerate(loaded) if not isinstance(s, Exception)]
        try:  # the inference lock is taken per chunk: other requests are served between two chunks
            results = dict(zip(readable, inspect_many(handler, [loaded[i] for i in readable],
                                                              [names[i] for i in readable], heatmap=True,
                                                              opacity=float(opacity)))) if readable else {}
        except ModelUnavailable as exc:
            yield (state, _message(f"Stopped after {len(rows):,} of {state['total']:,} photos: {exc}", "error"),
                   summary_html(state), gallery(rows), table(rows), write_csv(state))
            return
        if state["drift"] is None and results:  # the model is loaded now: one drift monitor for this job
            monitor, state["drift"] = start_drift(handler)
            classes = list(getattr(get_handler(handler), "class_names", []))
        for i, name in enumerate(names):
            rows.append(_row(results[i], name, start + i, jdir) if i in results
                        else _error_row(name, str(loaded[i]), start + i))
            if monitor is not None and i in results:  # in input order; UNUSABLE photos too (a failing lamp is drift)
                monitor.add_result(results[i], classes, start + i)
        if monitor is not None:
            state["drift"] = drift_view(monitor, sources)
        if state["threshold"] is None:
            state["threshold"] = next((r["threshold"] for r in rows if r["threshold"] is not None), None)
        now = time.perf_counter()
        finished = start + len(chunk) >= len(sources)
        if finished or now - last >= REFRESH_S:
            last = now
            yield (state, progress_html(len(rows), state["total"], now - t0, len(refused)), summary_html(state),
                   gallery(rows), table(rows), write_csv(state))
        else:  # numbers only: the gallery, table and CSV keep what they show until the next refresh
            yield (state, progress_html(len(rows), state["total"], now - t0, len(refused)), summary_html(state),
                   _skip(), _skip(), _skip())
    state["done"] = True
    if not sources:  # only refused files
        yield (state, progress_html(len(rows), state["total"], time.perf_counter() - t0, len(refused)),
               summary_html(state), gallery(rows), table(rows), write_csv(state))


def _skip():
    import gradio as gr

    return gr.skip()


# ------------------------------------------------------------------------------------------------ rendering


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _message(text: str, kind: str) -> str:
    return f"<div class='shift-msg {kind}'>{_esc(text)}</div>"


def progress_html(done: int, total: int, seconds: float, refused: int = 0) -> str:
    """The progress bar: photos done of the total, photos per second and the time left at that rate."""
    inspected = max(done - refused, 0)
    rate = inspected / seconds if seconds > 0 and inspected else 0.0
    left = (total - done) / rate if rate > 0 else None
    if done >= total:
        tail = f"done in {seconds:.1f} s"
    elif left is None:
        tail = "starting..."
    else:
        tail = f"about {left:.0f} s left" if left < 120 else f"about {left / 60:.1f} min left"
    speed = f" &middot; {rate:.1f} photos/s" if rate else ""
    return (f"<div class='shift-progress'><progress value='{done}' max='{max(total, 1)}'></progress> "
            f"<b>{done:,} / {total:,}</b> photos{speed} &middot; {tail}</div>")


def priority(row: dict) -> tuple:
    """Gallery order: DEFECT needing review, DEFECT, UNUSABLE (a person must look: most novel first), OK needing
    review, errors, OK; within the others, the defect probability from high to low (so the clearest defects lead,
    and the OKs nearest the threshold)."""
    v = row.get("verdict")
    if v == UNUSABLE:
        return (2, -(row.get("novelty") or 0.0))
    group = {("DEFECT", True): 0, ("DEFECT", False): 1, ("OK", True): 3, ("ERROR", False): 4}.get(
        (v, bool(row.get("review"))), 5)
    return (group, -(row.get("p") or 0.0))


def top_rows(rows: list[dict], limit: int | None = None) -> list[dict]:
    """The ``limit`` rows the gallery and the table show, by :func:`priority`."""
    return sorted(rows, key=priority)[:GALLERY_MAX if limit is None else limit]


def gallery(rows: list[dict], limit: int | None = None) -> list[tuple[str, str]]:
    """(overlay JPEG, caption) for the leading photos; an error gets the placeholder tile."""
    out = []
    for r in top_rows(rows, limit):
        if r.get("overlay"):
            p = r["p"]
            if r["verdict"] == UNUSABLE:
                cap = (f"{r['name']} \u2014 {verdict_text(UNUSABLE, r.get('reason'))}"
                       + (f" (p={p:.3f}, not judged)" if p is not None else ""))
                out.append((r["overlay"], cap))
                continue
            cap = f"{r['name']} \u2014 {r['verdict']}" + (f" (p={p:.3f})" if p is not None else "")
            out.append((r["overlay"], cap + (", needs review" if r.get("review") else "")))
        else:
            out.append((_placeholder_file(), f"{r['name']} \u2014 ERROR"))
    return out


def _placeholder_file() -> str:
    path = _JOBS_DIR / "not-inspected.png"
    if not path.is_file():
        import cv2

        from inspectkit.ui.common.render import _placeholder

        _JOBS_DIR.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _placeholder())
    return str(path)


def table(rows: list[dict], limit: int | None = None) -> list[list]:
    """The table's rows: the same photos as the gallery, in its order (an UNUSABLE photo's p(defect) marked not
    judged, with its reason and novelty)."""
    out = []
    for r in top_rows(rows, limit):
        p = "" if r["p"] is None else f"{r['p']:.4f}" + (" (not judged)" if r["verdict"] == UNUSABLE else "")
        nov = r.get("novelty")
        out.append([r["name"], r["verdict"], p, "needs review" if r.get("review") else "", r.get("error") or "",
                    r.get("reason") or "", "" if nov is None else f"{nov:.4g}"])
    return out


def drift_html(drift: dict | None) -> str:
    """The drift monitor's word, the first line of the summary: "DRIFT ALARM from photo R (name): what changed",
    "No drift over N photos", or why it is off. Empty before the first photo is inspected."""
    if not drift:
        return ""
    if not drift.get("on"):
        return f"<div class='drift off'>Drift monitor off: {_esc(drift.get('off_reason'))}</div>"
    if not drift.get("alarm"):
        n = drift.get("photos", 0)
        return (f"<div class='drift steady'>No drift over {n:,} photo{'s' if n != 1 else ''} (compared with the "
                "model's validation photos)</div>")
    where = f"photo {drift['photo']:,}" + (f" ({_esc(drift['name'])})" if drift.get("name") else "")
    items = []
    for c in drift.get("changed") or []:
        rate = "n/a" if c.get("recent_rate") is None else f"{c['recent_rate']:.0%}"
        from_ = f", from photo {c['photo']:,}" if c.get("photo") else ""
        items.append(f"<li>{_esc(c['meaning'])}: {rate} of the last {drift.get('window', 0):,} photos against "
                     f"{c['reference_rate']:.0%} on validation{from_}</li>")
    what = "; ".join(_esc(c["meaning"]) for c in drift.get("changed") or [])
    return (f"<div class='drift alarm' role='alert'><span class='drift-head'>DRIFT ALARM from {where}</span>: {what}. "
            f"The photos have changed from those the model was validated on: check the lighting, the camera and "
            f"the framing before trusting the verdicts.<ul>{''.join(items)}</ul></div>")


def summary_html(state: dict) -> str:
    """The drift monitor's word first (:func:`drift_html`), then counts over every photo of the job so far
    (UNUSABLE with its reasons), and what the gallery leaves out."""
    from inspectkit.ui.common.render import unusable_count_html

    rows = state.get("rows") or []
    drift = state.get("drift") or {}
    n = len(rows)
    n_def = sum(r["verdict"] == "DEFECT" for r in rows)
    n_ok = sum(r["verdict"] == "OK" for r in rows)
    n_unusable = sum(r["verdict"] == UNUSABLE for r in rows)
    n_err = sum(r["verdict"] == "ERROR" for r in rows)
    n_rev = sum(bool(r.get("review")) for r in rows)
    other = n - n_def - n_ok - n_unusable - n_err
    parts = [f"<b>{n:,}</b> photo{'s' if n != 1 else ''}", f"<span class='count defect'>{n_def:,} DEFECT</span>",
             f"<span class='count ok'>{n_ok:,} OK</span>"]
    if n_unusable or drift.get("guard"):
        reasons: dict[str, int] = {}
        for r in rows:
            if r["verdict"] == UNUSABLE:
                why = r.get("reason") or "no reason given"
                reasons[why] = reasons.get(why, 0) + 1
        parts.append(unusable_count_html(n_unusable, reasons))
    parts.append(f"<span class='count review'>{n_rev:,} need review</span>")
    if other:
        parts.append(f"{other:,} other")
    if n_err:
        parts.append(f"<span class='count error'>{n_err:,} not inspected</span>")
    if state.get("threshold") is not None:
        parts.append(f"threshold {state['threshold']:.3f}")
    out = drift_html(drift) + "<div class='summary'>" + " &middot; ".join(parts) + "</div>"
    if n > GALLERY_MAX:
        out += (f"<div class='muted'>The gallery and the table show {GALLERY_MAX} of the {n:,} photos: defects, "
                "UNUSABLE and needs-review photos first. The CSV has every photo.</div>")
    return out


def csv_text(state: dict) -> str:
    """Every photo of the job as CSV, text cells spreadsheet-safe."""
    from inspectkit.ui.common.export import spreadsheet_safe

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_HEADERS)
    for r in state.get("rows") or []:
        review = None if r.get("review") is None else ("yes" if r["review"] else "no")
        w.writerow([spreadsheet_safe(x) for x in (r["name"], r["verdict"], r.get("label"),
                                                  None if r["p"] is None else round(r["p"], 6),
                                                  None if r.get("threshold") is None else round(r["threshold"], 6),
                                                  review, r.get("error"),
                                                  None if r.get("ms") is None else round(r["ms"], 1),
                                                  r.get("reason"),
                                                  None if r.get("novelty") is None else float(f"{r['novelty']:.6g}"),
                                                  None if r.get("index") is None else r["index"] + 1)])
    return buf.getvalue()


def write_csv(state: dict) -> str | None:
    """The CSV of the job so far, written into its folder (UTF-8 with BOM for Excel); its path."""
    if not state.get("dir"):
        return None
    path = Path(state["dir"]) / "shift_results.csv"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(csv_text(state), encoding="utf-8-sig", newline="")
    os.replace(tmp, path)  # the page may be downloading the previous one
    return str(path)


def zip_overlays(state: dict | None) -> str:
    """A zip of every overlay of the job (JPEG, named by position and file name); its path. ValueError when the
    session has no job with overlays."""
    rows = (state or {}).get("rows") or []
    files = [r["overlay"] for r in rows if r.get("overlay") and os.path.isfile(r["overlay"])]
    if not files:
        raise ValueError("no heat-map overlays yet: inspect photos in the Shift tab first (overlays are kept for "
                         "two hours)")
    path = Path(state["dir"]) / "shift_overlays.zip"
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # JPEGs do not compress further
        for f in files:
            z.write(f, arcname=os.path.basename(f))
    os.replace(tmp, path)
    return str(path)


def ui_zip(state: dict | None) -> str:
    """``zip_overlays`` for the UI: a missing job becomes a Gradio message."""
    import gradio as gr

    try:
        return zip_overlays(state)
    except ValueError as exc:
        raise gr.Error(str(exc), title="No overlays") from None
