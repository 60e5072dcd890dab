"""Photos in, for the Adapt tab: zips with one folder per class and drop zones per class, copied (checked) into a
fresh folder-per-class tree. Nothing from an upload is ever executed: zip entries are read as bytes into names we
make, and every size and count is bounded (the limits below, stated in the tab). Also where the tab keeps its
files, and their removal after a day.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from inspectkit.limits import KEEP_FILES_S, MAX_UPLOAD_MB
from inspectkit.names import safe_name, upload_name
from inspectkit.ui.common.uploads import as_paths

#: Most photos in one adaptation (zips and drop zones together): 500 photos at 96-224 px is a few minutes of
#: adaptation on two cores at the default budget, and bounds the copy on disk.
MAX_PHOTOS = 500


#: Largest photo accepted; a line-camera JPEG is 10 KB to 2 MB.
MAX_PHOTO_MB = 10


MAX_PHOTO_BYTES = MAX_PHOTO_MB * 1024 * 1024


#: Largest zip: the server's upload limit, which every file input shares (MAX_UPLOAD_MB). 500 casting
#: photos of 300x300 px zip to about 5 MB; more photos go in several zips or the drop zones.
MAX_ZIP_MB = MAX_UPLOAD_MB


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
MAX_CHECKPOINT_MB = MAX_UPLOAD_MB


MAX_CHECKPOINT_BYTES = MAX_CHECKPOINT_MB * 1024 * 1024


#: Same as inspectkit.adaptation.MIN_PHOTOS_PER_CLASS (kept here so building the UI imports no torch; a test
#: checks they agree).
MIN_PER_CLASS = 4


#: The share of the new photos held out (AdaptConfig.val_fraction). A test checks it against AdaptConfig.
HELD_OUT_SHARE = 0.1


#: With at least this many photos in every class a part is held out (HELD_OUT_SHARE and AdaptConfig's
#: min_val_per_class 3); with fewer, before/after is measured in-sample. A test checks it against AdaptConfig.
HELD_OUT_MIN = 30


#: Fewer photos than this in a class adapt, with a warning: on line B's learning curves ten random photos per class
#: moved the model a few points either way by recipe and draw (docs/line_b.md). Same as
#: inspectkit.engine.adaptation.FEW_PHOTOS_PER_CLASS.
FEW_PER_CLASS = 25




#: Where this tab writes (adapted checkpoints, copies of uploads, the photos while they are used). Inside the
#: system temp folder on purpose: Gradio serves downloads only from there, the working folder or allowed_paths.
WORK_DIR = Path(tempfile.gettempdir()) / "inspect-adapt"


CHECKPOINT_SUFFIXES = (".pt", ".pth")


#: Zip entries skipped without a word: operating-system litter, not photos the engineer meant.
_JUNK = re.compile(r"^(__MACOSX|\..*|Thumbs\.db|desktop\.ini)$", re.IGNORECASE)


#: The photo file types accepted: inspectkit.imageio.IMAGE_EXTENSIONS, those the decoder reads (repeated so
#: building the UI imports no image library; a test checks they agree).
IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


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
        for z in as_paths(zips):
            _read_zip(z, class_names, dest, budget, photos.ignored, photos.files)
        suffixes = IMAGE_TYPES
        for i, zone in enumerate(list(zones)[:len(class_names)]):
            c = class_names[i]
            for p in as_paths(zone):
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
