"""What a batch job inspects: photos, folders (walked recursively, sorted), lists of paths, or with Ray storage URIs;
and where each heat map goes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path


class UsageError(Exception):
    """A problem with the command line or the output file: the message says what is wrong and what is allowed."""


#: Files taken from a folder (lower-case suffixes); the decoder reads these.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


#: An INPUT with one of these suffixes is a list of paths, one a line ('#' starts a comment).
LIST_SUFFIXES = (".txt", ".lst", ".list")


def is_uri(text: str) -> bool:
    """Whether ``text`` names an object store location (``s3://...``, ``gs://...``) rather than a local path."""
    return "://" in str(text)


def _walk(folder: Path) -> list[str]:
    """Photo files under ``folder``, recursively, in a stable order; hidden files and folders (.DS_Store, the
    "._name.jpg" copies macOS leaves on shared drives, .git) are skipped."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                out.append(os.path.join(root, name))
    return out


def _walk_uri(uri: str) -> list[str]:
    """Photo objects under an object-store prefix (or the one object), through pyarrow's file systems."""
    from pyarrow import fs as pafs

    try:
        filesystem, base = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(base)
        if info.type == pafs.FileType.File:
            return [uri]
        if info.type == pafs.FileType.NotFound:
            raise UsageError(f"input {uri!r} does not exist")
        entries = filesystem.get_file_info(pafs.FileSelector(base, recursive=True))
    except UsageError:
        raise
    except Exception as exc:  # no credentials, no such bucket, no network...
        raise UsageError(f"cannot list {uri!r}: {type(exc).__name__}: {exc}") from None
    scheme = uri.split("://", 1)[0]
    return sorted(f"{scheme}://{e.path}" for e in entries if e.type == pafs.FileType.File
                  and not Path(e.path).name.startswith(".") and Path(e.path).suffix.lower() in IMAGE_SUFFIXES)


def _read_list(path: Path, allow_uris: bool) -> list[str]:
    """The paths a list file names; relative ones are relative to the list's own folder."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the list {str(path)!r}: {exc}") from None
    out = []
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if is_uri(line):
            if not allow_uris:
                raise UsageError(f"line {n} of {str(path)!r} is a URI ({line!r}); object-store paths need "
                                 "--engine ray")
            out.append(line)
        else:
            out.append(os.path.abspath(path.parent / line))
    return out


def collect_inputs(inputs: Sequence[str], allow_uris: bool = False,
                   warn: Callable[[str], None] | None = None) -> list[str]:
    """The photos the INPUTs name, in order, each once: a photo file, a folder (walked recursively; photo
    suffixes :data:`IMAGE_SUFFIXES`), or a list of paths (:data:`LIST_SUFFIXES`). Local paths come back absolute.

    A missing INPUT or a file that is neither a photo nor a list is a UsageError; a path inside a list that does
    not exist is not (it becomes a row with its error). ``warn`` is told about a folder without photos.
    With ``allow_uris`` (the Ray engine), ``s3://...`` style INPUTs and list lines are listed through pyarrow.
    """
    if not inputs:
        raise UsageError("no INPUT given; name photos, folders or lists of paths")
    seen: dict[str, None] = {}
    for raw in inputs:
        raw = str(raw)
        if is_uri(raw):
            if not allow_uris:
                raise UsageError(f"input {raw!r} is a URI; object-store paths need --engine ray")
            found = _walk_uri(raw)
        else:
            p = Path(raw)
            if p.is_dir():
                found = [os.path.abspath(f) for f in _walk(p)]
            elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
                found = [os.path.abspath(p)]
            elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
                found = _read_list(p, allow_uris)
            elif p.exists():
                raise UsageError(f"input {raw!r} is neither a photo ({', '.join(IMAGE_SUFFIXES)}) nor a list of "
                                 f"paths ({', '.join(LIST_SUFFIXES)})")
            else:
                raise UsageError(f"input {raw!r} does not exist; give a photo, a folder or a text file listing paths")
        if not found and warn is not None:
            warn(f"no photos in {raw!r} (looked for {', '.join(IMAGE_SUFFIXES)})")
        for f in found:
            seen.setdefault(f, None)
    return list(seen)


def common_root(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (URIs compared without their scheme); '' for no paths."""
    if not paths:
        return ""
    bare = [p.split("://", 1)[1] if is_uri(p) else p for p in paths]
    try:
        return os.path.commonpath([os.path.dirname(b) or "." for b in bare])
    except ValueError:  # relative and absolute, or different drives
        return ""


def heatmap_target(path: str, root: str, heatmaps_dir: str) -> str:
    """Where the overlay of ``path`` goes: its place below ``root`` mirrored under ``heatmaps_dir``, with ".png"
    added to the full name (a.jpg and a.png in one folder stay apart)."""
    bare = path.split("://", 1)[1] if is_uri(path) else path
    try:
        rel = os.path.relpath(bare, root) if root else os.path.basename(bare)
    except ValueError:
        rel = os.path.basename(bare)
    if rel.startswith(".."):
        rel = os.path.basename(bare)
    joined = f"{heatmaps_dir.rstrip('/')}/{rel}" if is_uri(heatmaps_dir) else os.path.join(heatmaps_dir, rel)
    return joined + ".png"
