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
* see before and after on the held-out part side by side, download the checkpoint and its ``.sha256``;
* switch this session to the adapted model (:func:`use_adapted`), or load an uploaded checkpoint
  (:func:`load_uploaded_checkpoint`); other sessions keep the default model. The session keeps a small
  reference (``gr.State``); the handlers themselves sit in a small server-side cache (:func:`pick`).

"Label these next" on the Inspect tab feeds this tab: :func:`send_to_adapt` puts the listed photos into a
"to label" gallery, and :func:`apply_labels` moves the ones the engineer ticked into the class drop zones.

Like ``ui_support``, nothing heavy is imported at module level: torch and the handler load when first needed.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from . import service
from . import ui_support as ui
from .digest import sha256_file
from .service import get_handler, safe_name, upload_name

# ------------------------------------------------------------------------------------------------ limits

#: Most photos in one adaptation (zips and drop zones together): 500 photos at 96-224 px is a few minutes of
#: adaptation on two cores at the default budget, and bounds the copy on disk.
MAX_PHOTOS = 500
#: Largest photo accepted; a line-camera JPEG is 10 KB to 2 MB.
MAX_PHOTO_MB = 10
MAX_PHOTO_BYTES = MAX_PHOTO_MB * 1024 * 1024
#: Largest zip: the server's upload limit, which every file input shares (service.MAX_UPLOAD_MB). 500 casting
#: photos of 300x300 px zip to about 5 MB; more photos go in several zips or the drop zones.
MAX_ZIP_MB = service.MAX_UPLOAD_MB
MAX_ZIP_BYTES = MAX_ZIP_MB * 1024 * 1024
#: Most bytes unpacked from all zips of one request: bounds the disk a decompression bomb could fill.
MAX_UNZIPPED_MB = 500
MAX_UNZIPPED_BYTES = MAX_UNZIPPED_MB * 1024 * 1024
#: Most entries (folders and files) read from one zip: bounds the work a zip of empty entries could cause.
MAX_ZIP_ENTRIES = 5000
#: A zip entry over 1 MiB that unpacks to more than this many times its packed size is refused as a
#: decompression bomb. Photos barely compress (JPEG, PNG: ~1x; an uncompressed BMP or TIFF: ~2-10x).
MAX_RATIO = 100
#: Largest uploaded checkpoint: the server's upload limit (a MobileNetV2 checkpoint is ~9 MB).
MAX_CHECKPOINT_MB = service.MAX_UPLOAD_MB
MAX_CHECKPOINT_BYTES = MAX_CHECKPOINT_MB * 1024 * 1024
#: Same as inspectkit.adaptation.MIN_PHOTOS_PER_CLASS (kept here so building the UI imports no torch; a test
#: checks they agree).
MIN_PER_CLASS = 4
#: With at least this many photos in every class a part is held out (AdaptConfig's val_fraction 0.3 and
#: min_val_per_class 3); with fewer, before/after is measured in-sample. A test checks it against AdaptConfig.
HELD_OUT_MIN = 10
#: Drop zones (and "label as" lists) in the UI: one per class of the model, up to this many.
MAX_CLASS_ZONES = 4
#: Adapted or uploaded models kept loaded for the sessions that use them (least recently used dropped first;
#: a dropped one is loaded again from its file when its session next inspects).
MAX_SESSION_MODELS = 4
#: Files this tab writes (adapted checkpoints, copies of uploads) are removed after this long.
KEEP_FILES_S = 24 * 3600
#: Photos scored per hold of the inference lock: inspections of other users wait at most one chunk.
SCORE_CHUNK = 16
#: Names listed under "missed defects" and "false alarms" in a score.
MAX_LISTED = 20

#: Where this tab writes (adapted checkpoints, copies of uploads, the photos while they are used). Inside the
#: system temp folder on purpose: Gradio serves downloads only from there, the working folder or allowed_paths.
WORK_DIR = Path(tempfile.gettempdir()) / "inspect-adapt"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
#: Zip entries skipped without a word: operating-system litter, not photos the engineer meant.
_JUNK = re.compile(r"^(__MACOSX|\..*|Thumbs\.db|desktop\.ini)$", re.IGNORECASE)

ENV_PREFIX = "INSPECT_ADAPT_"
#: inference_handler.BACKENDS (repeated so building the UI imports no handler; a test checks they agree).
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


#: The photo file types accepted: inspectkit.imageio.IMAGE_EXTENSIONS, those the decoder reads (repeated so
#: building the UI imports no image library; a test checks they agree).
IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class AdaptationBusy(RuntimeError):
    """Another adaptation is running on this server; the message says since when and how far it is."""


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class AdaptSettings:
    """The adaptation budget of the app, and how adapted or uploaded models are served.

    Small on purpose: a Space has two cores and keeps inspecting while it adapts. ``threads`` is the torch
    threads adaptation uses (the rest of the CPU stays with inspection); ``replay`` is as in AdaptConfig
    ('auto': the parent's training photos when they are on disk, else none); ``backend`` is the
    InferenceHandler backend for the adapted/uploaded model ('auto': ONNX Runtime when equivalent).
    """

    views: int = 4
    stage1_epochs: int = 10
    stage2_epochs: int = 5
    replay: str = "auto"
    threads: int = 1
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("views", "stage1_epochs", "stage2_epochs", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100:
                raise ValueError(f"adaptation setting {name}={v!r} must be a whole number from 1 to 100")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"adaptation setting seed={self.seed!r} must be a whole number >= 0")
        if not isinstance(self.replay, str) or not self.replay:
            raise ValueError(f"adaptation setting replay={self.replay!r} must be 'auto', 'none' or a data folder")
        if self.backend not in BACKENDS:
            raise ValueError(f"adaptation setting backend={self.backend!r} must be one of {list(BACKENDS)}")

    @classmethod
    def from_env(cls, env: dict | None = None) -> "AdaptSettings":
        """Defaults, overridden by ``INSPECT_ADAPT_VIEWS``, ``..._STAGE1_EPOCHS``, ``..._STAGE2_EPOCHS``,
        ``..._REPLAY``, ``..._THREADS``, ``..._SEED`` and ``..._BACKEND``. A bad value is a ValueError naming
        the variable and what it may be."""
        env = os.environ if env is None else env
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = ENV_PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None or raw.strip() == "":
                continue
            if f.type in ("int", int):
                try:
                    kw[f.name] = int(raw)
                except ValueError:
                    raise ValueError(f"{key}={raw!r} is not a whole number") from None
            else:
                kw[f.name] = raw.strip()
        try:
            return cls(**kw)
        except ValueError as exc:
            raise ValueError(f"{exc} (set through {ENV_PREFIX}* environment variables)") from None

    def describe(self) -> str:
        """The budget in words, for the tab."""
        replay = {"auto": "the parent's own training photos when they are on this server",
                  "none": "none (the model adapts to the new line alone)"}.get(self.replay, f"`{self.replay}`")
        return (f"{self.views} view{'s' if self.views != 1 else ''} per photo, at most {self.stage1_epochs} + "
                f"{self.stage2_epochs} epochs, {self.threads} torch thread{'s' if self.threads != 1 else ''}, "
                f"seed {self.seed}; replay: {replay}")


def intro_markdown(settings: AdaptSettings) -> str:
    """What the tab does, its limits and the adaptation budget."""
    return f"""
Adapt the model to **a new line** (another camera, light or part batch) from labelled photos of it, then use the
adapted model **in this browser session** (other users keep the default model) and download it.

1. Give labelled photos: **zip files with one folder per class** (e.g. `def_front/` and `ok_front/`; one top
   folder around them is fine) and/or drop photos on **the zone of their class**. Photos sent from the Inspect
   tab's *Label these next* list wait under *To label* until you tick their class.
2. **Score the current model** on them, then **Adapt**. About 30 % of the photos (whole near-duplicate groups) are
   held out: the threshold is chosen there and before/after is measured there. With fewer than {HELD_OUT_MIN}
   photos in a class nothing is held out and the figures are **in-sample** (fit, not accuracy on the line).
3. **Use** the adapted model here, and download it with its `.sha256`.

**Limits**: at least {MIN_PER_CLASS} photos per class, at most **{MAX_PHOTOS} photos** in all, **{MAX_PHOTO_MB} MB
per photo**, **{MAX_ZIP_MB} MB per zip** (at most {MAX_UNZIPPED_MB} MB unpacked, {MAX_ZIP_ENTRIES} entries; paths
leading out of the zip, links and encrypted entries are refused), checkpoints up to **{MAX_CHECKPOINT_MB} MB**.
**One adaptation at a time** on this server; inspection keeps answering meanwhile.
Budget: {settings.describe()}.
{_no_torch_note()}"""


def _no_torch_note() -> str:
    """A warning line when this server has no torch (installed from requirements.txt only), else nothing."""
    from .fast import TRAIN_INSTALL, torch_missing

    if torch_missing("adaptation") is None:
        return ""
    return (f"\n**Not available on this server**: fine-tuning and loading a checkpoint need torch, which is not "
            f"installed here (the app serves through ONNX Runtime). Scoring the current model works. Install "
            f"torch with `{TRAIN_INSTALL}`.\n")


def require_torch(what: str) -> None:
    """ValueError (shown as the tab's error) saying ``what`` needs torch and how to install it, when it is not."""
    from .fast import torch_missing

    missing = torch_missing(what)
    if missing:
        raise ValueError(missing)


# ------------------------------------------------------------------------------------------------ session models

_MODELS: "OrderedDict[str, Any]" = OrderedDict()
_MODELS_LOCK = threading.Lock()


def _work(sub: str) -> Path:
    d = WORK_DIR / sub
    d.mkdir(parents=True, exist_ok=True)
    return d


def prune(max_age_s: float = KEEP_FILES_S) -> None:
    """Remove what this tab wrote more than ``max_age_s`` ago (a station left running must not fill its disk)."""
    now = time.time()
    for sub in ("runs", "models", "tolabel", "data"):
        d = WORK_DIR / sub
        if not d.is_dir():
            continue
        for entry in d.iterdir():
            try:
                if now - entry.stat().st_mtime > max_age_s:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            except OSError:
                pass


def _load_handler(path: str, sha256: str, backend: str):
    from inference_handler import InferenceHandler

    return InferenceHandler(path, backend=backend, expected_sha256=sha256)


def _remember(sha: str, handler: Any) -> None:
    with _MODELS_LOCK:
        _MODELS[sha] = handler
        _MODELS.move_to_end(sha)
        while len(_MODELS) > MAX_SESSION_MODELS:
            _MODELS.popitem(last=False)


def pick(shared: Any, choice: dict | None) -> Any:
    """The handler this session inspects with: its adapted or uploaded model when it switched, else ``shared``.

    The session's model is taken from the cache, or loaded again from its file (checked against its SHA-256)
    when the cache dropped it. Raises ModelUnavailable when that file is gone.
    """
    if not choice:
        return shared
    sha = choice["sha256"]
    with _MODELS_LOCK:
        h = _MODELS.get(sha)
        if h is not None:
            _MODELS.move_to_end(sha)
            return h
    if not Path(choice["path"]).is_file():
        raise service.ModelUnavailable(
            f"this session's model {choice.get('name')} is no longer on the server (files are kept "
            f"{KEEP_FILES_S // 3600} h); load it again, or go back to the default model")
    try:
        h = _load_handler(choice["path"], sha, choice.get("backend", "auto"))
    except (ValueError, RuntimeError, OSError) as exc:
        raise service.ModelUnavailable(
            f"this session's model {choice.get('name')} could not be loaded: {exc}") from None
    _remember(sha, h)
    return h


def class_names_of(shared: Any, choice: dict | None) -> list[str]:
    """The classes of the session's model (waits for the shared model to load)."""
    return list(get_handler(pick(shared, choice)).class_names)


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


# ------------------------------------------------------------------------------------------------ photos


@dataclass
class Photos:
    """A folder-per-class copy of the photos of one request, checked against the limits."""

    folder: Path
    class_names: list[str]
    files: dict[str, list[Path]]
    ignored: list[str]

    @property
    def counts(self) -> dict[str, int]:
        """Photos per class."""
        return {c: len(self.files.get(c, [])) for c in self.class_names}

    def cleanup(self) -> None:
        """Remove the copy (the photos are not kept after scoring or adapting)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class _Budget:
    """Counts photos and bytes of one request against MAX_PHOTOS and MAX_UNZIPPED_BYTES."""

    def __init__(self) -> None:
        self.photos = 0
        self.unzipped = 0

    def photo(self, what: str) -> None:
        self.photos += 1
        if self.photos > MAX_PHOTOS:
            raise ValueError(f"more than {MAX_PHOTOS} photos were given (at {what}); the limit is {MAX_PHOTOS} "
                             "photos per adaptation: leave some out")

    def unzip(self, what: str, size: int) -> None:
        self.unzipped += size
        if self.unzipped > MAX_UNZIPPED_BYTES:
            raise ValueError(f"the zips unpack to more than {MAX_UNZIPPED_MB} MB (at {what}); the limit is "
                             f"{MAX_UNZIPPED_MB} MB unpacked per adaptation")


def _unique(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/stem_2.ext`` ... when taken (two zones may hold photos of the same name)."""
    p = folder / name
    stem, suffix = p.stem, p.suffix
    k = 2
    while p.exists():
        p = folder / f"{stem}_{k}{suffix}"
        k += 1
    return p


def _entry_parts(raw: str, zname: str) -> tuple[str, ...]:
    """The path components of a zip entry; ValueError for names that lead out of the archive."""
    if "\x00" in raw:
        raise ValueError(f"{zname}: an entry name holds a NUL byte; refusing the zip")
    shown = safe_name(raw.replace("/", "\u2215").replace("\\", "\u2215"), "entry")
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw):
        raise ValueError(f"{zname}: the entry {shown!r} has an absolute path (it would be written outside the "
                         "archive's folder); refusing the zip. Zip the class folders with relative paths")
    parts = tuple(p for p in re.split(r"[\\/]", raw) if p not in ("", "."))
    if ".." in parts:
        raise ValueError(f"{zname}: the entry {shown!r} climbs out of the archive with '..' (path traversal); "
                         "refusing the zip")
    return parts


def _read_zip(zpath: str, class_names: list[str], dest: Path, budget: _Budget, ignored: list[str],
              files: dict[str, list[Path]]) -> None:
    """Copy the photos of one zip (one folder per class) into ``dest/<class>/``; ValueError names the problem."""
    zname = upload_name(zpath)
    size = os.path.getsize(zpath)
    if size > MAX_ZIP_BYTES:
        raise ValueError(f"{zname} is {size / 1e6:.1f} MB; the limit is {MAX_ZIP_MB} MB per zip")
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError, EOFError) as exc:
        raise ValueError(f"{zname} is not a readable zip archive ({safe_name(str(exc), 'damaged')}); zip the class "
                         "folders (e.g. def_front/ and ok_front/) and upload the .zip") from None
    suffixes = IMAGE_TYPES
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise ValueError(f"{zname} has {len(infos)} entries; the limit is {MAX_ZIP_ENTRIES} per zip")
        photos: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        for info in infos:
            parts = _entry_parts(info.filename, zname)  # checked for every entry, folders included
            if info.is_dir() or not parts:
                continue
            shown = "/".join(safe_name(p) for p in parts)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValueError(f"{zname}: the entry {shown!r} is a symbolic link; refusing the zip (links could "
                                 "point anywhere on the server). Zip the photos themselves")
            if info.flag_bits & 0x1:
                raise ValueError(f"{zname}: the entry {shown!r} is encrypted; upload a zip without a password")
            if any(_JUNK.match(p) for p in parts):
                continue
            if PurePosixPath(parts[-1]).suffix.lower() not in suffixes:
                ignored.append(f"{zname}: {shown}")
                continue
            if info.file_size > MAX_PHOTO_BYTES:
                raise ValueError(f"{zname}: {shown} is {info.file_size / 1e6:.1f} MB; the limit is {MAX_PHOTO_MB} MB "
                                 "per photo")
            if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise ValueError(f"{zname}: {shown} unpacks {info.file_size // max(info.compress_size, 1)}x its "
                                 f"packed size (more than {MAX_RATIO}x): a decompression bomb, not a photo; "
                                 "refusing the zip")
            photos.append((info, parts))
        # one folder around the class folders (what zipping a folder gives) is allowed and dropped
        tops = {p[0] for _, p in photos}
        if len(tops) == 1 and all(len(p) >= 3 for _, p in photos) and next(iter(tops)) not in class_names:
            photos = [(i, p[1:]) for i, p in photos]
        loose = [p for _, p in photos if len(p) < 2]
        if loose:
            raise ValueError(f"{zname}: {safe_name(loose[0][-1])!r} is not inside a class folder; the zip must hold "
                             f"one folder per class of the model: {class_names}")
        unknown = sorted({p[0] for _, p in photos} - set(class_names))
        if unknown:
            raise ValueError(f"{zname} has folders {[safe_name(u) for u in unknown]} that are not classes of the "
                             f"model; expected one folder per class: {class_names} (e.g. {class_names[0]}/photo.jpg)")
        for info, parts in photos:
            shown = f"{zname}: {'/'.join(safe_name(p) for p in parts)}"
            budget.photo(shown)
            budget.unzip(shown, info.file_size)
            target = _unique(dest / parts[0], safe_name(parts[-1]))
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    got = 0
                    # counted while reading: the sizes in the zip's directory are claims, not facts
                    for chunk in iter(lambda: src.read(1 << 16), b""):
                        got += len(chunk)
                        if got > MAX_PHOTO_BYTES or got > info.file_size:
                            raise ValueError(f"{shown} holds more than its {info.file_size} bytes declared: a "
                                             "damaged or hostile zip; refusing it")
                        out.write(chunk)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as exc:
                raise ValueError(f"{shown} could not be unpacked ({type(exc).__name__}: {exc})") from None
            files[parts[0]].append(target)


def prepare_photos(zips: Any, zones: list, class_names: list[str]) -> Photos:
    """The photos of one request copied into a fresh folder-per-class tree: the zips' class folders plus
    ``zones[i]`` for ``class_names[i]``.

    ValueError (naming the file and the limit) for: a bad or hostile zip, a file that is not a photo, a photo
    over MAX_PHOTO_MB, more than MAX_PHOTOS photos, fewer than MIN_PER_CLASS photos in a class, or no photos.
    Whether a photo decodes is found out later (an unreadable one is skipped and listed).
    """
    prune()
    dest = _work("data") / uuid.uuid4().hex
    for c in class_names:
        (dest / c).mkdir(parents=True)
    photos = Photos(dest, list(class_names), {c: [] for c in class_names}, [])
    try:
        budget = _Budget()
        for z in ui._as_paths(zips):
            _read_zip(z, class_names, dest, budget, photos.ignored, photos.files)
        suffixes = IMAGE_TYPES
        for i, zone in enumerate(list(zones)[:len(class_names)]):
            c = class_names[i]
            for p in ui._as_paths(zone):
                name = upload_name(p)
                if Path(name).suffix.lower() not in suffixes:
                    raise ValueError(f"{name} in the {c} zone is not a photo; accepted: {', '.join(suffixes)}")
                size = os.path.getsize(p)
                if size > MAX_PHOTO_BYTES:
                    raise ValueError(f"{name} in the {c} zone is {size / 1e6:.1f} MB; the limit is {MAX_PHOTO_MB} MB "
                                     "per photo")
                budget.photo(f"{c}: {name}")
                target = _unique(dest / c, name)
                shutil.copyfile(p, target)
                photos.files[c].append(target)
        counts = photos.counts
        if not sum(counts.values()):
            raise ValueError("no photos were given: upload a zip with one folder per class "
                             f"({', '.join(class_names)}), or drop photos on the zone of their class")
        small = {c: n for c, n in counts.items() if n < MIN_PER_CLASS}
        if small:
            have = ", ".join(f"{c}: {n}" for c, n in counts.items())
            raise ValueError(f"too few photos in {', '.join(small)} ({have}); adaptation needs at least "
                             f"{MIN_PER_CLASS} photos per class (and {HELD_OUT_MIN} per class to hold some out for "
                             "an honest before/after)")
    except BaseException:
        photos.cleanup()
        raise
    return photos


# ------------------------------------------------------------------------------------------------ scoring


def score_photos(handler: Any, photos: Photos, progress: Callable | None = None) -> dict:
    """The model's figures on the labelled photos: the classification report, plus the names of missed defects,
    false alarms and unreadable photos. Runs in chunks of SCORE_CHUNK under the inference lock, so inspections
    of other users interleave."""
    import numpy as np

    from .metrics import classification_report

    h = get_handler(handler)
    names = list(h.class_names)
    items = [(p, names.index(c)) for c in photos.class_names for p in photos.files[c]]
    probs, labels, shown, unreadable = [], [], [], []
    for start in range(0, len(items), SCORE_CHUNK):
        chunk = items[start:start + SCORE_CHUNK]
        if progress is not None:
            progress(start / len(items), desc=f"Scoring the current model ({start} of {len(items)} photos)")
        with service.INFERENCE_LOCK:
            results = h.predict_batch([str(p) for p, _ in chunk], heatmap=False, on_error="collect",
                                      names=[p.name for p, _ in chunk])
        for (p, y), r in zip(chunk, results):
            where = f"{names[y]}/{p.name}"
            if r.error:
                unreadable.append(f"{where}: {service.error_message(r.error, p.name)}")
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
    from .metrics import predict_labels

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
    out = [f"<div class='adapt-score'><h4>The current model on these photos</h4>",
           f"<p>{sum(photos.counts.values())} photos ({counts}); all of them, nothing trained yet. "
           f"{_mode_hint(photos.counts)}</p>", _metrics_table([("current model", rep)]),
           _confusion_html(rep.get("confusion_matrix"), rep["class_names"], "Confusion matrix (rows: true class)")]
    out += _name_lists(rep)
    if photos.ignored:
        out.append(f"<p class='muted'>Not photos, left out: {_esc('; '.join(photos.ignored[:MAX_LISTED]))}"
                   f"{' ...' if len(photos.ignored) > MAX_LISTED else ''}</p>")
    out.append("</div>")
    return "".join(out)


def _mode_hint(counts: dict[str, int]) -> str:
    if min(counts.values()) >= HELD_OUT_MIN:
        return "Adapting will hold about 30 % of them out to measure before and after honestly."
    return (f"<b>Fewer than {HELD_OUT_MIN} photos in a class: adapting will measure before/after in-sample "
            "(on the photos it trained on).</b>")


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
                   progress: Callable | None = None) -> tuple[dict, str, list[str]]:
    """Adapt the session's model to the photos; returns (the result for :func:`use_adapted`, the before/after
    HTML, [checkpoint, its .sha256]).

    Raises AdaptationBusy at once when another adaptation is running, ValueError for photos that do not fit
    (wrong classes, too few, over the limits) or a model without a checkpoint file.
    """
    require_torch("Fine-tuning (Adapt)")
    if not ADAPT_LOCK.acquire(blocking=False):
        raise AdaptationBusy(f"another adaptation is running on this server ({adaptation_status() or 'just started'})"
                             "; one runs at a time so inspection keeps its CPU. Try again when it has finished")
    try:
        _RUNNING.update(since=time.time(), fraction=0.0, text="preparing")
        return _adapt_locked(shared, choice, settings, zips, zones, progress)
    finally:
        _RUNNING.update(since=None, fraction=0.0, text="")
        ADAPT_LOCK.release()


def _adapt_locked(shared, choice, settings, zips, zones, progress):
    import torch

    from .adaptation import AdaptConfig, adapt
    from .checkpoint import load_checkpoint

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
                          threads=settings.threads)
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
    from .checkpoint import weights_digest

    sidecar = Path(str(out) + ".sha256")
    sha = sidecar.read_text().split()[0]
    a = ckpt["metrics"]["adaptation"]
    result = {"path": str(out), "sha256": sha, "weights_sha256": weights_digest(ckpt["state_dict"]),
              "name": out.name, "source": "adapted", "threshold": ckpt["threshold"],
              "class_names": list(ckpt["class_names"]), "backend": settings.backend, "mode": a["mode"],
              "parent_sha256": getattr(h, "sha256", None), "seconds": round(seconds, 1)}
    return result, adaptation_html(ckpt, result, photos.ignored), [str(out), str(sidecar)]


def adaptation_html(ckpt: dict, result: dict, ignored: list[str] | None = None) -> str:
    """Before and after side by side (confusion matrices, missed defects, false alarms) on the held-out part,
    or on the training photos with a plain warning in in-sample mode; the replayed line when there was one."""
    a = ckpt["metrics"]["adaptation"]
    names = list(ckpt["class_names"])
    held = sum((a["split"].get("validation") or {}).values())
    trained = sum((a["split"].get("train") or {}).values())
    if a["mode"] == "held-out":
        banner = (f"<div class='adapt-mode heldout'><b>Held-out</b>: measured on {held} photos of the new line that "
                  f"the adaptation never trained on ({trained} trained on). The threshold was chosen on them "
                  "too.</div>")
    else:
        banner = (f"<div class='adapt-mode insample'><b>IN-SAMPLE</b>: too few photos to hold any out (fewer than "
                  f"{HELD_OUT_MIN} in a class), so before and after are measured on the {held} photos the model "
                  f"trained on. They show fit, not accuracy on the line; the parent's threshold was kept.</div>")
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


# ------------------------------------------------------------------------------------------------ switching

#: What :func:`switch_view` returns, in order (app.py wires the same components).
SWITCH_OUTPUTS = ("model_choice", "inspect_state", *ui.VIEW_OUTPUTS, "status", "threshold", "review_margin",
                  "loaded", "session_line", *(f"zone{i}" for i in range(MAX_CLASS_ZONES)),
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
    except service.ModelUnavailable:
        names = []
    return (*class_updates(names or ["class 1", "class 2"]), session_line(choice))


def status_html(h: Any, choice: dict | None) -> str:
    """The page's status line for the session's model."""
    status, _, _ = ui.model_status(h)
    if not choice:
        return status
    what = "adapted" if choice.get("source") == "adapted" else "uploaded"
    return status.replace("Model ready:", f"This session: {what} model {_esc(choice.get('name'))} &middot; ready:", 1)


def switch_view(shared: Any, choice: dict | None, note: str = "") -> tuple:
    """Everything that changes when the session changes model (see SWITCH_OUTPUTS): the Inspect results are
    cleared (they came from the other model), the sliders go to the new model's threshold and band."""
    import gradio as gr

    h = get_handler(pick(shared, choice))
    state = ui.new_state()
    thr = h.threshold
    loaded = ui.loaded_model_markdown(h) + (f"\n\n*{note}*" if note else "")
    return (choice, state, *ui.render(h, state), status_html(h, choice),
            gr.update(value=round(thr, 4)) if thr is not None else gr.update(),
            gr.update(value=ui.initial_review_margin(h)), loaded, session_line(choice),
            *class_updates(list(h.class_names)))


def use_adapted(shared: Any, choice: dict | None, result: dict | None) -> tuple:
    """Switch this session to the adapted model of its last adaptation (see SWITCH_OUTPUTS)."""
    if not result:
        raise ValueError("no adapted model yet in this session: run an adaptation first")
    new = {k: result[k] for k in ("path", "sha256", "weights_sha256", "name", "source", "threshold", "class_names",
                                  "backend")}
    pick(None, new)  # loads it now (and fails now, leaving the session as it was)
    return switch_view(shared, new, f"This session uses the adapted model {new['name']}.")


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
    from .checkpoint import load_checkpoint, weights_digest

    paths = ui._as_paths(files)
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
    info = (f"**Loaded {ui.md_cell(name)}** ({size / 1e6:.1f} MB, loaded weights-only)\n\n"
            f"| | |\n|---|---|\n| file SHA-256 | `{sha}` |\n| weights digest | `{wd}` |\n"
            f"| checked against | {checked} |\n| architecture | {ui.md_cell(ckpt['arch'])} |\n"
            f"| classes | {ui.md_cell(', '.join(ckpt['class_names']))} |\n| threshold | {_num(ckpt['threshold'])} |\n"
            f"| adapted from | {ui.md_cell(parent)} |")
    return (info, *switch_view(shared, new, f"This session uses the uploaded model {name}."))


# ------------------------------------------------------------------------------------------------ to label


def send_to_adapt(shared: Any, choice: dict | None, inspect_state: dict | None, batch_files: Any,
                  single: Any) -> tuple:
    """The Inspect tab's "Label these next" photos (closest to the threshold first, at most LABEL_NEXT_ROWS) as
    the Adapt tab's "to label" list: (to_label, gallery value, *'label as' list updates, the tabs showing Adapt,
    the "to label" box opened).

    The original uploads are copied when they are still at hand; otherwise the display copy kept in the session
    is saved as PNG. ValueError when nothing was inspected.
    """
    state = inspect_state or {}
    items = [it for it in state.get("items", []) if it]
    h = get_handler(pick(shared, choice))
    thr = ui.threshold_of(h, state) if items else None
    ranks = ui.review_ranks(items, thr)
    order = [i for _, i in sorted((r, i) for i, r in enumerate(ranks) if r is not None)][:ui.LABEL_NEXT_ROWS]
    if not order:
        raise ValueError("nothing to send: inspect some photos first; 'Label these next' lists the ones closest to "
                         "the threshold")
    sources = {upload_name(p): p for p in ui._as_paths(batch_files) + ui._as_paths(single)}
    prune()
    dest = _work("tolabel") / uuid.uuid4().hex
    dest.mkdir(parents=True)
    out = []
    for i in order:
        it = items[i]
        src = sources.get(it["name"])
        if src and os.path.isfile(src):
            target = _unique(dest, safe_name(it["name"]))
            shutil.copyfile(src, target)
        elif it.get("image") is not None:
            from PIL import Image

            target = _unique(dest, Path(safe_name(it["name"])).stem + ".png")
            Image.fromarray(it["image"]).save(target)
        else:
            continue
        out.append({"name": target.name, "path": str(target), "p": it.get("defect_probability")})
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
        current = ui._as_paths(zones[i]) if i < len(zones) else []
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
    except (ValueError, service.ModelUnavailable, AdaptationBusy) as exc:
        raise gr.Error(service.safe_text(exc), title="Busy" if isinstance(exc, AdaptationBusy) else title,
                       duration=20) from None


def inspect_call(fn: Callable, shared: Any, choice: dict | None, *args: Any) -> Any:
    """``ui.ui_call(fn, <the session's handler>, *args)``: the Inspect tab's actions on the session's model."""
    import gradio as gr

    try:
        h = pick(shared, choice)
    except service.ModelUnavailable as exc:
        raise gr.Error(service.safe_text(exc), title="Cannot inspect") from None
    return ui.ui_call(fn, h, *args)


# ------------------------------------------------------------------------------------------------ rendering


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 4) -> str:
    return "n/a" if not isinstance(x, (int, float)) or x != x else f"{x:.{digits}f}"


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) or x != x else f"{100 * x:.1f} %"


def _metrics_table(rows: list[tuple[str, dict]]) -> str:
    head = ("<table class='adapt-metrics'><tr><th></th><th>photos</th><th>accuracy</th><th>ROC-AUC</th>"
            "<th>missed defects</th><th>false alarms</th><th>threshold</th></tr>")
    body = "".join(f"<tr><th>{_esc(label)}</th><td>{_esc(r.get('n', 'n/a'))}</td><td>{_pct(r.get('accuracy'))}</td>"
                   f"<td>{_num(r.get('roc_auc'), 3)}</td><td class='missed'>{_esc(r.get('missed_defects', 'n/a'))}</td>"
                   f"<td>{_esc(r.get('false_alarms', 'n/a'))}</td><td>{_num(r.get('threshold'))}</td></tr>"
                   for label, r in rows)
    return head + body + "</table>"


def _metrics_columns(cols: list[tuple[str, dict]]) -> str:
    """The same figures with one column per data part (narrow enough for two side by side)."""
    head = "<table class='adapt-metrics'><tr><th></th>" + "".join(f"<th>{_esc(c)}</th>" for c, _ in cols) + "</tr>"
    rows = [("photos", lambda r: _esc(r.get("n", "n/a"))), ("accuracy", lambda r: _pct(r.get("accuracy"))),
            ("ROC-AUC", lambda r: _num(r.get("roc_auc"), 3)),
            ("missed defects", lambda r: _esc(r.get("missed_defects", "n/a"))),
            ("false alarms", lambda r: _esc(r.get("false_alarms", "n/a"))),
            ("threshold", lambda r: _num(r.get("threshold")))]
    body = "".join(f"<tr><th>{label}</th>" + "".join(
        f"<td{' class=missed' if label == 'missed defects' else ''}>{fmt(r)}</td>" for _, r in cols) + "</tr>"
        for label, fmt in rows)
    return head + body + "</table>"


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


def settings_dict(settings: AdaptSettings) -> dict:
    """The settings as a plain dict (for reports and the benchmark)."""
    return asdict(settings)
