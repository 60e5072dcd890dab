"""Inspect a whole shift from the command line: photos, folders (walked recursively) or lists of paths in, one
row per photo out, resumable. ``batch_inspect.py`` is the command; this module is its logic.

    python batch_inspect.py /data/shift-0412 --out shift-0412.csv             # or .jsonl, or .parquet
    python batch_inspect.py photos.txt extra.jpg --out rows.jsonl --heatmaps overlays/
    python batch_inspect.py /data/shift-0412 --out rows.parquet --engine ray  # Ray Data actor pool

Rows (:data:`COLUMNS`): ``path`` (absolute; the key a rerun resumes by), ``verdict``, ``label``,
``defect_probability``, ``threshold``, ``needs_review``, ``error`` (why a photo could not be inspected; the job
goes on) and ``heatmap`` (the overlay PNG written with ``--heatmaps``).

Output and resuming, by the suffix of ``--out``:

* ``.csv`` and ``.jsonl`` (or ``.ndjson``): one file, rows appended and flushed to disk (fsync) after every chunk.
  A rerun with the same ``--out`` reads the rows already there and skips their paths. A crash can only cut the
  last line short (rows are appended): that partial line is truncated away and its photo inspected again.
* ``.parquet``: a Parquet file cannot be appended to, so the output is a *folder* of part files
  (``part-00000.parquet``, ...), one per chunk, each written to a temporary name and renamed into place. A part is
  there whole or not at all; ``pyarrow.parquet.read_table(FOLDER)``, ``pandas.read_parquet(FOLDER)`` and Spark read
  the folder as one table.

A second run writing the same output at the same time is refused (an advisory lock), since both would inspect
the same photos. Usage errors exit with status 2 and a message; an interrupted run exits with 130, and every chunk
finished before the interruption is on disk.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]

#: The columns of every output, in order.
COLUMNS = ("path", "verdict", "label", "defect_probability", "threshold", "needs_review", "error", "heatmap")
#: Files taken from a folder (lower-case suffixes); the decoder reads these.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: An INPUT with one of these suffixes is a list of paths, one a line ('#' starts a comment).
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: Output format by the suffix of --out.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
#: Photos per chunk: rows reach the disk every ~0.5 s on two cores, and an interruption loses at most one chunk.
DEFAULT_CHUNK = 64
#: Images through the network at once inside a chunk (the handler's batch).
NETWORK_BATCH = 32
#: Cells a spreadsheet would evaluate (as in the app's CSV); only the free-text column needs it, since paths are
#: absolute (they start with "/" or a drive letter) and the other columns are ours.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


class UsageError(Exception):
    """A problem with the command line or the output file: the message says what is wrong and what is allowed."""


def is_uri(text: str) -> bool:
    """Whether ``text`` names an object store location (``s3://...``, ``gs://...``) rather than a local path."""
    return "://" in str(text)


def output_format(out: str | os.PathLike) -> str:
    """'csv', 'jsonl' or 'parquet' from the suffix of ``out``; UsageError for any other suffix."""
    suffix = Path(str(out)).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--out {str(out)!r}: unknown suffix {suffix or '(none)'!r}; use one of "
                         f"{', '.join(FORMATS)} (CSV, JSON Lines or Parquet)")
    return FORMATS[suffix]


# ------------------------------------------------------------------------------------------------ inputs


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


# ----------------------------------------------------------------------------------------- rows


def _clean_error(text: Any) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())  # one line: a CSV reader or a log grep sees one row per photo
    return text


def result_row(path: str, result: Any, handler: Any = None, threshold: float | None = None,
               heatmap: str | None = None) -> dict:
    """One output row for an InspectionResult. With ``threshold``, the verdict, label and needs-review flag are
    re-decided there from the probabilities (no new forward pass), as the app's threshold slider does."""
    err = getattr(result, "error", None)
    row = {c: None for c in COLUMNS}
    row["path"] = path
    if err is not None:
        row["error"] = _clean_error(err)
        return row
    p = getattr(result, "defect_probability", None)
    verdict, label, used = result.verdict, result.label, result.threshold
    needs = getattr(result, "needs_review", None)
    if threshold is not None and p is not None and handler is not None:
        from .service import label_for  # lazy: FastAPI is only needed here

        verdict, used = handler.decide(result.probabilities, threshold), float(threshold)
        label = label_for(handler, result.probabilities, verdict)
        needs = handler.needs_review(p, threshold)
    row.update(verdict=verdict, label=label, defect_probability=None if p is None else float(p),
               threshold=None if used is None else float(used), needs_review=None if needs is None else bool(needs),
               heatmap=heatmap)
    return row


def _read_source(path: str) -> bytes | str:
    """A local path as it is (the handler reads it in its worker threads); an object's bytes through pyarrow."""
    if not is_uri(path):
        return path
    from pyarrow import fs as pafs

    filesystem, p = pafs.FileSystem.from_uri(path)
    with filesystem.open_input_stream(p) as f:
        return f.read()


def write_bytes(target: str, data: bytes) -> None:
    """Write ``data`` to a local path (parents created) or an object-store URI."""
    if is_uri(target):
        from pyarrow import fs as pafs

        filesystem, p = pafs.FileSystem.from_uri(target)
        with filesystem.open_output_stream(p) as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with open(target, "wb") as f:
        f.write(data)


def _png(rgb) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def inspect_paths(handler: Any, paths: Sequence[str], heatmaps_dir: str | None = None, root: str = "",
                  threshold: float | None = None, batch_size: int = NETWORK_BATCH,
                  pool: ThreadPoolExecutor | None = None) -> list[dict]:
    """Rows for ``paths`` (local paths or URIs), in order. A photo that cannot be read, decoded or inspected
    gives a row with its ``error``; nothing here raises for one photo. With ``heatmaps_dir`` each overlay is
    written as a PNG (see :func:`heatmap_target`) before its row is returned."""
    from inference_handler import InspectionResult

    names = [Path(p.split("://", 1)[-1]).name or p for p in paths]
    sources: list[Any] = []
    read_errors: dict[int, str] = {}
    for i, p in enumerate(paths):
        try:
            sources.append(_read_source(p))
        except Exception as exc:  # a missing object, a network error: this photo's row says so
            read_errors[i] = f"{names[i]}: cannot read ({type(exc).__name__}: {exc})"
            sources.append(b"")
    want_heat = bool(heatmaps_dir)
    try:
        results = handler.predict_batch(sources, heatmap=want_heat, batch_size=batch_size, on_error="collect",
                                        names=names)
    except Exception:  # not a decoding error (those are collected): retry one by one, so only the culprit fails
        results = []
        for s, n in zip(sources, names):
            try:
                results.append(handler.predict_batch([s], heatmap=want_heat, batch_size=1, on_error="collect",
                                                     names=[n])[0])
            except Exception as exc:
                results.append(InspectionResult(name=n, error=f"{n}: internal error while inspecting "
                                                               f"({type(exc).__name__}: {exc})"))
    for i, msg in read_errors.items():
        results[i] = InspectionResult(name=names[i], error=msg)

    targets: list[str | None] = [None] * len(paths)
    if want_heat:
        jobs = [(i, heatmap_target(p, root, heatmaps_dir)) for i, (p, r) in enumerate(zip(paths, results))
                if r.error is None and r.overlay is not None]

        def save(job):
            i, target = job
            try:
                write_bytes(target, _png(results[i].overlay))
                return i, target, None
            except Exception as exc:
                return i, None, f"heat map not written to {target!r}: {type(exc).__name__}: {exc}"

        done = pool.map(save, jobs) if pool is not None else map(save, jobs)
        for i, target, err in done:
            targets[i] = target
            if err:  # the verdict stands; the heatmap cell stays empty and the log says why
                print(f"warning: {err}", file=sys.stderr)
    return [result_row(p, r, handler, threshold, t) for p, r, t in zip(paths, results, targets)]


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # every digit: a reread row decides exactly as the written one
    return value


def _from_csv(record: dict) -> dict:
    """A CSV record back with its types (floats, booleans, None for empty cells)."""
    row = {}
    for c in COLUMNS:
        v = record.get(c, "")
        if v == "" or v is None:
            row[c] = None
        elif c in ("defect_probability", "threshold"):
            row[c] = float(v)
        elif c == "needs_review":
            row[c] = v == "true"
        elif c == "error" and v.startswith("'") and v[1:].startswith(FORMULA_PREFIXES):
            row[c] = v[1:]
        else:
            row[c] = v
    return row


# -------------------------------------------------------------------------------------------- writers


class _Lock:
    """An advisory lock on ``path`` for the life of the writer (released by the OS if the process dies)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no protection against two writers
            return
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise UsageError(f"another batch_inspect is writing {str(path)!r}; wait for it or use another --out") \
                from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class RowWriter:
    """Appends rows to the output and reads back the rows a previous run left there."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.repaired: str | None = None  # what was fixed on open, for the log

    def existing(self) -> list[dict]:
        """The rows already written (a cut last line removed)."""
        raise NotImplementedError

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` and make them durable before returning."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release the output."""


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write --out {str(path)!r}: cannot create its folder ({exc.strerror or exc})") \
            from None


class _LineWriter(RowWriter):
    """CSV and JSON Lines: one append-only file; a cut last line is truncated on open."""

    def __init__(self, path: Path):
        super().__init__(path)
        _make_parent(self.path)
        if self.path.is_dir():
            raise UsageError(f"--out {str(path)!r} is a folder; give a file name")
        try:
            self.f = open(self.path, "a+b")
        except OSError as exc:
            raise UsageError(f"cannot write --out {str(path)!r}: {exc.strerror or exc}") from None
        try:
            self._lock = _Lock(self.path)
            self._rows = self._load()
        except BaseException:
            self.f.close()
            raise

    def _load(self) -> list[dict]:
        self.f.seek(0)
        data = self.f.read()
        if data and not data.endswith(b"\n"):  # a crash mid-append: drop the partial line, its photo is redone
            keep = data.rfind(b"\n") + 1
            self.f.truncate(keep)
            self.repaired = f"removed a cut last line ({len(data) - keep} bytes) from {self.path}"
            data = data[:keep]
        rows = self._parse(data)
        self.f.seek(0, os.SEEK_END)
        return rows

    def _parse(self, data: bytes) -> list[dict]:
        raise NotImplementedError

    def existing(self) -> list[dict]:
        return list(self._rows)

    def _sync(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        if not self.f.closed:
            self._sync()
            self.f.close()
        self._lock.release()


class CsvWriter(_LineWriter):
    """CSV, UTF-8, a header row, empty cells for missing values, ``true``/``false`` for needs_review."""

    def _parse(self, data: bytes) -> list[dict]:
        if not data:
            self._write_text(self._text([list(COLUMNS)]))
            return []
        text = data.decode("utf-8-sig")
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            header = next(reader)
        except StopIteration:
            header = []
        if tuple(header) != COLUMNS:
            raise UsageError(f"{str(self.path)!r} is not an output of batch_inspect (its header is {header[:8]}, "
                             f"expected {list(COLUMNS)}); give another --out")
        rows = []
        try:
            for record in reader:
                if len(record) != len(COLUMNS):
                    raise csv.Error(f"{len(record)} fields instead of {len(COLUMNS)}")
                rows.append(_from_csv(dict(zip(COLUMNS, record))))
        except (csv.Error, ValueError) as exc:
            if reader.line_num < text.count("\n"):  # not the last line: something else wrote into the file
                raise UsageError(f"{str(self.path)!r} line {reader.line_num} is not a batch_inspect row ({exc}); "
                                 "fix or remove it, or give another --out") from None
            self._rewrite(rows)  # only the last record was cut (inside a quoted field): write the good ones back
            self.repaired = f"removed a cut last row from {self.path}"
        return rows

    def _rewrite(self, rows: list[dict]) -> None:
        self.f.seek(0)
        self.f.truncate(0)
        self._write_text(self._text([list(COLUMNS)] + [self._values(r) for r in rows]))

    @staticmethod
    def _values(row: dict) -> list:
        vals = [_csv_cell(row.get(c)) for c in COLUMNS]
        err = vals[COLUMNS.index("error")]
        if isinstance(err, str) and err.startswith(FORMULA_PREFIXES):
            vals[COLUMNS.index("error")] = "'" + err  # shown as text by spreadsheets
        return vals

    @staticmethod
    def _text(records: list[list]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(records)
        return buf.getvalue()

    def _write_text(self, text: str) -> None:
        self.f.write(text.encode("utf-8"))
        self._sync()

    def write(self, rows: list[dict]) -> None:
        if rows:
            self._write_text(self._text([self._values(r) for r in rows]))


class JsonlWriter(_LineWriter):
    """JSON Lines: one object per row with the keys of :data:`COLUMNS` (null for missing values)."""

    def _parse(self, data: bytes) -> list[dict]:
        rows = []
        lines = data.split(b"\n")[:-1] if data else []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{str(self.path)!r} line {n} is not JSON ({exc}); fix or remove it, or give "
                                 "another --out") from None
            if not isinstance(obj, dict) or "path" not in obj:
                raise UsageError(f"{str(self.path)!r} line {n} is not a batch_inspect row (no 'path'); give "
                                 "another --out")
            rows.append({c: obj.get(c) for c in COLUMNS})
        return rows

    def write(self, rows: list[dict]) -> None:
        if rows:
            text = "".join(json.dumps({c: r.get(c) for c in COLUMNS}, ensure_ascii=False) + "\n" for r in rows)
            self.f.write(text.encode("utf-8"))
            self._sync()


def parquet_schema():
    """The Arrow schema of every part file (explicit, so an all-error chunk has the same column types)."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("verdict", pa.string()), ("label", pa.string()),
                      ("defect_probability", pa.float64()), ("threshold", pa.float64()),
                      ("needs_review", pa.bool_()), ("error", pa.string()), ("heatmap", pa.string())])


def _import_pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError("Parquet output needs pyarrow: pip install -r requirements-dev.txt (or pyarrow); "
                         "or write .csv or .jsonl") from None


class ParquetWriter(RowWriter):
    """A folder of Parquet part files, one per chunk, each written under a temporary name and renamed, so a part
    is either whole or absent. Read it with ``pyarrow.parquet.read_table(folder)`` or ``pandas.read_parquet``."""

    PART = "part-{:05d}.parquet"

    def __init__(self, path: Path):
        super().__init__(path)
        _import_pyarrow()
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {str(path)!r} is a file; Parquet output is a folder of part files, so give a "
                             "new name or remove the file")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot write --out {str(path)!r}: {exc.strerror or exc}") from None
        self._lock = _Lock(self.path / ".lock")  # a dot-file: Parquet readers skip it
        self.schema = parquet_schema()
        self._rows = self._load()

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def _load(self) -> list[dict]:
        import pyarrow.parquet as pq

        stale = list(self.path.glob(".part-*.tmp"))
        for t in stale:  # a part being written when the run stopped: its chunk is redone
            t.unlink()
        if stale:
            self.repaired = f"removed {len(stale)} unfinished part file(s) from {self.path}"
        rows = []
        for part in self._parts():
            try:
                table = pq.read_table(part)
            except Exception as exc:
                raise UsageError(f"{str(part)!r} is not a readable Parquet part ({type(exc).__name__}: {exc}); "
                                 "remove it (its photos are then inspected again) or give another --out") from None
            missing = [c for c in COLUMNS if c not in table.column_names]
            if missing:
                raise UsageError(f"{str(part)!r} lacks the columns {missing}; give another --out")
            rows += table.select(list(COLUMNS)).to_pylist()
        parts = self._parts()
        self._next = int(parts[-1].name[5:10]) + 1 if parts else 0
        return rows

    def existing(self) -> list[dict]:
        return list(self._rows)

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=self.schema)
        final = self.path / self.PART.format(self._next)
        tmp = self.path / f".part-{self._next:05d}.tmp"
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        try:  # the rename itself made durable
            dfd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        self._next += 1

    def close(self) -> None:
        self._lock.release()


def open_writer(out: str | os.PathLike) -> RowWriter:
    """The writer for ``out`` by its suffix (see :data:`FORMATS`); UsageError when it cannot be written."""
    fmt = output_format(out)
    path = Path(out)
    if fmt == "csv":
        return CsvWriter(path)
    if fmt == "jsonl":
        return JsonlWriter(path)
    return ParquetWriter(path)


def read_rows(out: str | os.PathLike) -> list[dict]:
    """Every row of a batch_inspect output (any format), with its types; for checks and notebooks."""
    fmt = output_format(out)
    path = Path(out)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).select(list(COLUMNS)).to_pylist() if any(path.glob("part-*.parquet")) else []
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "jsonl":
        return [{c: json.loads(line).get(c) for c in COLUMNS} for line in text.splitlines() if line.strip()]
    return [_from_csv(r) for r in csv.DictReader(io.StringIO(text, newline=""))]


# ------------------------------------------------------------------------------------------------ runs


@dataclass
class Job:
    """What to inspect and how; built from the command line by :func:`main`."""

    inputs: list[str]
    out: Path
    engine: str = "local"
    checkpoint: str = "final_best_model.pt"
    backend: str = "auto"
    threshold: float | None = None
    heatmaps: str | None = None
    chunk_size: int = DEFAULT_CHUNK
    threads: int | None = None
    ray_actors: int | None = None
    ray_actor_cpus: float = 1.0
    ray_cpus: int | None = None
    progress: bool = True
    log: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr, flush=True))


@dataclass
class Summary:
    """What a run did: photos found, rows already there, rows added, and the counts over the whole output."""

    photos: int
    already: int
    added: int
    counts: dict
    seconds: float
    out: str

    def text(self) -> str:
        """A one-line account for the terminal."""
        c = self.counts
        rate = f", {self.added / self.seconds:.1f} photos/s" if self.added and self.seconds > 0 else ""
        return (f"{self.photos} photos: {c.get('DEFECT', 0)} DEFECT, {c.get('OK', 0)} OK, "
                f"{c.get('needs_review', 0)} need review, {c.get('error', 0)} could not be inspected; "
                f"{self.added} rows added in {self.seconds:.1f} s{rate}, {self.already} were already in {self.out}")


def _counts(rows: Iterable[dict]) -> dict:
    out: dict[str, int] = {}
    for r in rows:
        key = "error" if r.get("error") and not r.get("verdict") else str(r.get("verdict"))
        out[key] = out.get(key, 0) + 1
        if r.get("needs_review"):
            out["needs_review"] = out.get("needs_review", 0) + 1
    return out


def _chunks(items: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _progress(job: Job, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="photo", dynamic_ncols=True, disable=not job.progress,
                desc="inspecting", smoothing=0.1, file=sys.stderr)


def load_handler(job: Job):
    """The InferenceHandler for the job; a missing or mismatched checkpoint is a UsageError."""
    from inference_handler import InferenceHandler

    try:
        return InferenceHandler(job.checkpoint, backend=job.backend, threads=job.threads)
    except ValueError as exc:
        raise UsageError(f"--checkpoint {job.checkpoint!r}: {exc}") from None


def run_local(job: Job, todo: list[str], root: str, writer: RowWriter, on_rows: Callable[[list[dict]], None]) -> None:
    """Inspect ``todo`` in this process, a chunk at a time; each chunk's rows are written before the next."""
    handler = load_handler(job)
    pool = ThreadPoolExecutor(max_workers=job.threads or os.cpu_count() or 1, thread_name_prefix="png") \
        if job.heatmaps else None
    try:
        for chunk in _chunks(todo, job.chunk_size):
            rows = inspect_paths(handler, chunk, job.heatmaps, root, job.threshold,
                                 batch_size=min(NETWORK_BATCH, job.chunk_size), pool=pool)
            writer.write(rows)
            on_rows(rows)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def run(job: Job) -> Summary:
    """Run a job end to end: collect the photos, resume from the output, inspect the rest, write every chunk."""
    t0 = time.perf_counter()
    if job.chunk_size < 1:
        raise UsageError(f"--chunk-size {job.chunk_size} must be at least 1")
    if job.threshold is not None and not 0.0 < job.threshold < 1.0:
        raise UsageError(f"--threshold {job.threshold} must be between 0 and 1 (exclusive)")
    if job.engine not in ("local", "ray"):
        raise UsageError(f"--engine {job.engine!r} must be 'local' or 'ray'")
    output_format(job.out)  # an unknown suffix fails before anything is listed
    if job.heatmaps and not is_uri(job.heatmaps):
        try:
            Path(job.heatmaps).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--heatmaps {job.heatmaps!r}: cannot create the folder ({exc.strerror or exc})") \
                from None
        job.heatmaps = os.path.abspath(job.heatmaps)
    photos = collect_inputs(job.inputs, allow_uris=job.engine == "ray", warn=lambda m: job.log(f"warning: {m}"))
    if not photos:
        raise UsageError(f"no photos found in {', '.join(map(repr, job.inputs))}")
    writer = open_writer(job.out)
    try:
        if writer.repaired:
            job.log(f"resuming: {writer.repaired}")
        existing = writer.existing()
        done = {r["path"] for r in existing}
        todo = [p for p in photos if p not in done]
        already = len(photos) - len(todo)
        if already:
            job.log(f"resuming: {already} of {len(photos)} photos are already in {job.out}; {len(todo)} to go")
            if job.threshold is not None:
                other = {r["threshold"] for r in existing if r.get("threshold") is not None} - {job.threshold}
                if other:
                    job.log(f"warning: rows already there were decided at threshold {sorted(other)}, this run uses "
                            f"{job.threshold}")
        root = common_root(photos)
        new_rows: list[dict] = []
        if todo:
            bar = _progress(job, len(photos), already)

            def on_rows(rows):
                new_rows.extend(rows)
                bar.update(len(rows))
                errs = sum(1 for r in new_rows if r.get("error") and not r.get("verdict"))
                if errs:
                    bar.set_postfix(errors=errs, refresh=False)

            try:
                if job.engine == "ray":
                    from .batch_ray import run_ray

                    run_ray(job, todo, root, writer, on_rows)
                else:
                    run_local(job, todo, root, writer, on_rows)
            finally:
                bar.close()
        wanted = set(photos)
        counts = _counts([r for r in existing if r["path"] in wanted] + new_rows)
        return Summary(len(photos), already, len(new_rows), counts, time.perf_counter() - t0, str(job.out))
    finally:
        writer.close()


def build_parser() -> argparse.ArgumentParser:
    """The command line of batch_inspect.py."""
    p = argparse.ArgumentParser(
        prog="batch_inspect.py",
        description="Inspect photos of castings in bulk: one row per photo (path, verdict, defect_probability, "
                    "threshold, needs_review, error, ...) in CSV, JSON Lines or Parquet. Rerun the same command to "
                    "resume after an interruption: photos already in --out are skipped.",
        epilog="Exit status: 0 done (photos that could not be read are rows with an error), 2 usage error, "
               "130 interrupted (rerun to resume).")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="a photo, a folder (walked recursively) or a text file listing paths (.txt/.lst/.list, one a "
                        "line; relative to the list's folder). With --engine ray also s3://bucket/prefix style URIs")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output; the suffix picks the format: .csv, .jsonl/.ndjson, or .parquet (a folder of parts)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a Ray Data actor pool (a local Ray, or the cluster "
                        "in RAY_ADDRESS)")
    p.add_argument("--checkpoint", default="final_best_model.pt", help="model file (default: final_best_model.pt)")
    p.add_argument("--backend", choices=("auto", "onnx", "torch", "onnx-int8"), default="auto",
                   help="inference backend (default auto: ONNX Runtime when available)")
    p.add_argument("--threshold", type=float, help="decision threshold on p(defect) (default: the model's)")
    p.add_argument("--heatmaps", metavar="DIR",
                   help="also write each heat-map overlay as a PNG under DIR (the inputs' folders mirrored)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK,
                   help=f"photos per chunk; rows are on disk after each (default {DEFAULT_CHUNK})")
    p.add_argument("--threads", type=int, help="CPU threads for the network (default: every core this process may use)")
    p.add_argument("--ray-actors", type=int, help="--engine ray: actors in the pool (default: CPUs - 1, at least 1)")
    p.add_argument("--ray-actor-cpus", type=float, default=1.0, help="--engine ray: CPUs per actor (default 1)")
    p.add_argument("--ray-cpus", type=int,
                   help="--engine ray without RAY_ADDRESS: CPUs of the local Ray it starts (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The command: parse, run, print the summary; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs:
        parser.print_usage(sys.stderr)
        print("batch_inspect.py: error: no INPUT given; name photos, folders or lists of paths", file=sys.stderr)
        return 2
    for name in ("chunk_size", "threads", "ray_actors", "ray_cpus"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"batch_inspect.py: error: --{name.replace('_', '-')} {v} must be at least 1", file=sys.stderr)
            return 2
    job = Job(inputs=args.inputs, out=Path(args.out), engine=args.engine, checkpoint=args.checkpoint,
              backend=args.backend, threshold=args.threshold, heatmaps=args.heatmaps, chunk_size=args.chunk_size,
              threads=args.threads, ray_actors=args.ray_actors, ray_actor_cpus=args.ray_actor_cpus,
              ray_cpus=args.ray_cpus, progress=not args.quiet)
    try:
        summary = run(job)
    except UsageError as exc:
        print(f"batch_inspect.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished chunk is in {args.out}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    print(summary.text(), file=sys.stderr)
    return 0
