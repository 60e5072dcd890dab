"""An inspection job of the Inspect tab: one photo or ten thousand (files, a folder, zip files of photos), planned,
inspected :data:`~inspectkit.limits.MAX_BATCH` at a time, each result kept as a small row of numbers plus its display
files on disk. No Gradio here: :mod:`inspectkit.ui.common.session` runs a job for the page.

Bounds: a job takes at most :data:`MAX_JOB_PHOTOS` photos and :data:`MAX_JOB_BYTES` bytes (zip members counted
uncompressed); past either it is refused with a message that points to ``batch_inspect.py``, which has no bound.

Sharing the server: each chunk goes through the model under the inference lock on its own (``inspect_many``), so the
JSON endpoint and other sessions are served between two chunks.

What a job keeps is small whatever its size: per photo a row of numbers (probabilities, timings, the guard's reason
and novelty: enough to re-decide at any threshold without the network) and, in the job's folder, a display copy of
the photo (JPEG), its heat map (greyscale PNG) and its overlay at the opacity it was inspected with (JPEG; greyed
and marked NOT JUDGED for an UNUSABLE photo). Overlays at another opacity are drawn from the first two on demand
(:func:`tile`). Job folders are removed two hours after their last use.

Drift: a :class:`~inspectkit.drift.DriftMonitor` per job (a model with a guard and a drift reference) follows the
photos in input order, UNUSABLE ones included (a failing lamp is drift).
"""

from __future__ import annotations

import os
import re
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
from inspectkit.serve.model_source import get_handler
from inspectkit.serve.results import inspect_many
from inspectkit.ui.common.uploads import as_paths

#: Most photos one job takes (a shift of one line is a few thousand; batch_inspect.py has no bound).
MAX_JOB_PHOTOS = 10_000
#: Most bytes of photos one job takes, zip members counted uncompressed.
MAX_JOB_BYTES = 1024**3
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: JPEG quality of the display copy of a photo (shown large beside its overlay) and of the overlays.
PHOTO_QUALITY, OVERLAY_QUALITY = 92, 88
JOBS_DIR = Path(tempfile.gettempdir()) / "casting-inspection-jobs"
JOBS_MAX_AGE_S = 7200.0
#: File-name tags of the heat maps a row can have been drawn with (so a redraw never overwrites a cached overlay).
_MODE_TAGS = {"defect-evidence": "ev", "class-normalised": "cn"}


# --------------------------------------------------------------------------------------------- the job's photos


def plan_job(files: Any, folder: Any = None) -> tuple[list[tuple[str, Any]], list[dict]]:
    """The photos of a job from the dropped files and an uploaded folder: ``(sources, refused)``.

    ``sources``: ``(name, path)`` for a photo file, ``(name, (zip_path, member))`` for a photo inside a zip.
    ``refused``: error rows for files that cannot be inspected as they are (gone, empty, over MAX_UPLOAD_MB, a broken
    zip). Other files (a folder's notes, a zip's folders) are skipped. Raises ValueError naming the bound when the job
    has more than MAX_JOB_PHOTOS photos or MAX_JOB_BYTES bytes.
    """
    sources: list[tuple[str, Any]] = []
    refused: list[dict] = []
    total_bytes = 0
    from_folder = set(as_paths(folder))
    for path in as_paths(files) + as_paths(folder):
        name = upload_name(path)
        suffix = Path(path).suffix.lower()
        try:
            size = os.path.getsize(path)
        except OSError:
            refused.append(error_row(name, f"{name}: the uploaded file is gone from the server; upload it again"))
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
                            refused.append(error_row(shown, f"{shown} is {info.file_size / 1e6:.1f} MB; the limit is "
                                                            f"{MAX_UPLOAD_MB} MB per photo"))
                            continue
                        total_bytes += info.file_size
                        sources.append((shown, (path, member)))
                        _check_bounds(len(sources), total_bytes)
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:  # RuntimeError: an encrypted member
                refused.append(error_row(name, f"{name}: not a readable zip file ({exc})"))
            continue
        if suffix not in IMAGE_SUFFIXES and path in from_folder:
            continue  # a folder upload brings every file in it; only the photos are the job
        if size == 0:
            refused.append(error_row(name, f"{name} is empty (0 bytes)", source=path))
        elif size > MAX_UPLOAD_BYTES:
            refused.append(error_row(name, f"{name} is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per photo",
                                     source=path))
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


def load_chunk(sources: list[Any]) -> list[Any]:
    """What the handler reads for each source: a file path, or the bytes of a zip member (read now, per chunk, so a
    job never holds more than a chunk of photos in memory); an exception saying why for a member that cannot be
    read."""
    out: list[Any] = []
    zips: dict[str, zipfile.ZipFile] = {}
    try:
        for src in sources:
            if isinstance(src, (tuple, list)):
                zpath, member = src
                try:
                    z = zips.get(zpath) or zips.setdefault(zpath, zipfile.ZipFile(zpath))
                    out.append(z.read(member))
                except Exception as exc:  # a corrupt member or a zip gone from the server: that photo's error row
                    out.append(ValueError(f"{safe_name(member)}: cannot read it from the zip ({exc})"))
            else:
                out.append(src)
    finally:
        for z in zips.values():
            z.close()
    return out


def source_bytes(source: Any) -> bytes | None:
    """The original bytes of a job's photo (a file, or a member of a zip), or None when it is no longer there."""
    try:
        if isinstance(source, (tuple, list)):
            with zipfile.ZipFile(source[0]) as z:
                return z.read(source[1])
        if source and os.path.isfile(source):
            return Path(source).read_bytes()
    except (OSError, KeyError, zipfile.BadZipFile, RuntimeError):
        pass
    return None


# ------------------------------------------------------------------------------------------------- rows


def new_job_dir() -> Path:
    """A fresh folder for a job's display files and CSV; job folders unused for two hours are removed first."""
    JOBS_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in JOBS_DIR.glob("job-*"):
        try:
            if now - old.stat().st_mtime > JOBS_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    d = JOBS_DIR / f"job-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    return d


def error_row(name: str, message: str, index: int | None = None, source: Any = None) -> dict:
    """The row of a file that could not be inspected; ``index``: its place in the job's input order (None for a
    file refused before inspection)."""
    return {"name": name, "index": index, "source": source, "error": safe_text(message), "label": None,
            "probabilities": {}, "defect_probability": None, "timings_ms": {}, "unusable_reason": None,
            "novelty": None, "heat_mode": None, "heat_scale": None, "photo": None, "heat": None, "overlay": None,
            "overlay_opacity": None, "verdict": "ERROR"}


def result_row(result: Any, name: str, index: int, folder: Path, source: Any, opacity: float,
               colormap: Any = "jet") -> dict:
    """What a job keeps of one InspectionResult: its numbers, and its display files written into ``folder``."""
    raw = source[1] if isinstance(source, (tuple, list)) else source
    if getattr(result, "error", None):
        return error_row(name, error_message(result.error, raw, name), index, source)
    reason = getattr(result, "unusable_reason", None) or None
    novelty = getattr(result, "novelty", None)
    row = {"name": name, "index": index, "source": source, "error": None, "label": result.label,
           "probabilities": {str(k): float(v) for k, v in (result.probabilities or {}).items()},
           "defect_probability": None if result.defect_probability is None else float(result.defect_probability),
           "timings_ms": {str(k): float(v) for k, v in (result.timings_ms or {}).items()},
           # the guard's view (None: judged, or a model without a guard); kept so re-deciding keeps UNUSABLE
           "unusable_reason": reason, "novelty": None if novelty is None else float(novelty),
           "heat_mode": getattr(result, "heatmap_mode", None), "heat_scale": getattr(result, "heatmap_scale", None),
           "photo": None, "heat": None, "overlay": None, "overlay_opacity": None, "verdict": result.verdict}
    if getattr(result, "image", None) is not None:
        row.update(_save_display(folder, row, result.image, getattr(result, "heatmap", None), opacity, colormap))
    return row


def _stem(row: dict) -> str:
    """A file-system-safe stem for a row's files: its place in the job, its name, the heat map drawn."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(row["name"]).stem)[:40] or "photo"
    place = "r" if row["index"] is None else f"{row['index']:05d}"
    return f"{place}_{name}_{_MODE_TAGS.get(row.get('heat_mode'), 'hm')}"


def _write(path: Path, data: bytes) -> str:
    """Write a file whole under a temporary name first: a render running beside the job may be reading it."""
    tmp = path.with_name(f".{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return str(path)


def _write_jpeg(path: Path, rgb, quality: int) -> str | None:
    import cv2

    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return _write(path, buf.tobytes()) if ok else None


def _save_display(folder: Path, row: dict, image, heatmap, opacity: float, colormap: Any) -> dict:
    import cv2

    from inspectkit.ui.common.render import blend, fit, heat_u8, is_unusable, not_judged

    img = fit(image)
    heat = heat_u8(heatmap, img.shape[:2])
    stem = _stem(row)
    photo = _write_jpeg(folder / f"{stem}.jpg", img, PHOTO_QUALITY)
    heat_path = None
    if heat is not None:
        ok, buf = cv2.imencode(".png", heat, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        heat_path = _write(folder / f"{stem}.heat.png", buf.tobytes()) if ok else None
    over = blend(img, heat, opacity, colormap)
    if is_unusable(row):
        over = not_judged(over)
    overlay = _write_jpeg(folder / f"{stem}_o{_pct(opacity):03d}.jpg", over, OVERLAY_QUALITY)
    return {"photo": photo, "heat": heat_path, "overlay": overlay, "overlay_opacity": float(opacity)}


def _pct(opacity: float) -> int:
    return int(round(100 * min(max(float(opacity), 0.0), 1.0)))


def display_copy(row: dict):
    """(the photo as RGB uint8, its heat map as uint8 or None) from the row's display files; (None, None) when they
    are gone (the job folder was removed)."""
    import cv2

    if not row.get("photo"):
        return None, None
    bgr = cv2.imread(row["photo"], cv2.IMREAD_COLOR)
    if bgr is None:
        return None, None
    heat = cv2.imread(row["heat"], cv2.IMREAD_GRAYSCALE) if row.get("heat") else None
    return bgr[:, :, ::-1].copy(), heat


def tile(row: dict, opacity: float, colormap: Any = "jet") -> str:
    """The row's overlay at ``opacity`` as a JPEG file (drawn once from its display files, then reused); the
    placeholder tile for a file that could not be inspected or whose display files are gone."""
    if row.get("error") or not row.get("photo"):
        return placeholder_file()
    if row.get("overlay") and row.get("overlay_opacity") is not None and _pct(row["overlay_opacity"]) == _pct(opacity):
        return row["overlay"]
    path = Path(row["photo"]).with_name(f"{Path(row['photo']).stem}_o{_pct(opacity):03d}.jpg")
    if path.is_file():
        return str(path)
    from inspectkit.ui.common.render import blend, is_unusable, not_judged

    img, heat = display_copy(row)
    if img is None:
        return placeholder_file()
    over = blend(img, heat, opacity, colormap)
    return _write_jpeg(path, not_judged(over) if is_unusable(row) else over, OVERLAY_QUALITY) or placeholder_file()


def placeholder_file() -> str:
    """A grey tile with a cross: the gallery's picture of a file that could not be inspected."""
    path = JOBS_DIR / "not-inspected.png"
    if not path.is_file():
        import cv2

        from inspectkit.ui.common.render import placeholder

        JOBS_DIR.mkdir(parents=True, exist_ok=True)
        _write(path, cv2.imencode(".png", placeholder())[1].tobytes())  # two sessions may draw it at once
    return str(path)


# -------------------------------------------------------------------------------------------------- running


def inspect_chunks(handler: Any, entries: list[tuple[int, str, Any]], folder: Path, opacity: float,
                   heatmap_mode: Any = None, names: list[str] | None = None) -> Iterator[tuple[list[dict], dict | None]]:
    """Inspect ``entries`` (``(index, name, source)``) MAX_BATCH at a time; after each chunk yield its rows (in
    input order) and the drift monitor's view so far (None without a monitor).

    ``heatmap_mode``: the heat map to draw, or a callable asked before each chunk (the session may change it while
    the job runs). ``names``: every photo name of the job by index; given, a drift monitor follows the photos (the
    alarm names the photo where it fired). ModelUnavailable propagates: the rows yielded so far are the job's.
    """
    monitor, drift, classes = None, None, []
    for start in range(0, len(entries), MAX_BATCH):
        chunk = entries[start:start + MAX_BATCH]
        loaded = load_chunk([src for _, _, src in chunk])
        readable = [i for i, s in enumerate(loaded) if not isinstance(s, Exception)]
        mode = heatmap_mode() if callable(heatmap_mode) else heatmap_mode
        # the inference lock is taken per chunk: other requests are served between two chunks
        results = dict(zip(readable, inspect_many(handler, [loaded[i] for i in readable],
                                                  [chunk[i][1] for i in readable], heatmap=True,
                                                  opacity=float(opacity), heatmap_mode=mode))) if readable else {}
        h = get_handler(handler)
        if names is not None and monitor is None and drift is None and results:
            monitor, drift = start_drift(h)  # the model is loaded now: one drift monitor for this job
            classes = list(getattr(h, "class_names", []))
        colormap = getattr(h, "colormap", "jet")
        rows = []
        for i, (index, name, src) in enumerate(chunk):
            if i in results:
                rows.append(result_row(results[i], name, index, folder, src, opacity, colormap))
                if monitor is not None:  # in input order; UNUSABLE photos too
                    monitor.add_result(results[i], classes, index)
            else:
                rows.append(error_row(name, str(loaded[i]), index, src))
        if monitor is not None:
            drift = drift_view(monitor, names or [])
        yield rows, drift


def start_drift(handler: Any) -> tuple[Any, dict]:
    """(a DriftMonitor for a new job with this model, its view for the summary); the monitor is None, and the view
    says why, when the model has no guard or its guard no drift reference."""
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


def drift_view(monitor: Any, names: list[str]) -> dict:
    """The monitor's state for the summary, with the photo number (1, 2, ... in input order) and the file name of
    the photo where the alarm, and each indicator, first fired."""
    st = monitor.state()

    def named(row: int | None) -> tuple[int | None, str | None]:
        if row is None:
            return None, None
        return row + 1, names[row] if 0 <= row < len(names) else None

    photo, name = named(st["first_row"])
    changed = []
    for c in st["changed"]:
        cp, cn = named(c["first_row"])
        changed.append({**c, "photo": cp, "name": cn})
    return {"on": True, "guard": True, "alarm": st["alarm"], "photo": photo, "name": name, "photos": st["photos"],
            "window": st["window"], "changed": changed}


def zip_overlays(rows: list[dict], folder: str | Path | None) -> str:
    """A zip of every overlay of a job (JPEG, named by position and file name, at the opacity each was inspected
    with); its path. ValueError when there is none."""
    files = [r["overlay"] for r in rows if r.get("overlay") and os.path.isfile(r["overlay"])]
    if not files or not folder:
        raise ValueError("no heat-map overlays yet: inspect photos first (overlays are kept for two hours)")
    path = Path(folder) / "overlays.zip"
    tmp = path.with_name(f".{uuid.uuid4().hex[:8]}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # JPEGs do not compress further
        for f in files:
            z.write(f, arcname=os.path.basename(f))
    os.replace(tmp, path)
    return str(path)


def touch(folder: str | Path | None) -> None:
    """Mark a job folder as in use, so the two-hour clean-up spares a job a session is still looking at."""
    if folder:
        try:
            os.utime(folder)
        except OSError:
            pass

