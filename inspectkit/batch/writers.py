"""Where a batch job's rows go, and how a rerun finds what is done: one writer per output format (CSV and JSON
Lines appended and fsynced per chunk, a torn last line cut away; Parquet as a folder of whole part files), an
advisory lock against two runs on one output, and the reader that lists the rows already there.

An output written by an older batch_inspect (the columns of :data:`LEGACY_COLUMNS`, without the guard's) is resumed
as it is: its rows are read with empty guard cells, a CSV gets the new header (its rows rewritten in place with
empty new cells) and each old Parquet part is rewritten with the new columns (under a temporary name, then
renamed), so the output stays one table with one set of columns.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from inspectkit.batch.inputs import UsageError

#: The columns of an output written before the guard (UNUSABLE verdicts, novelty, drift); still read and resumed.
LEGACY_COLUMNS = ("path", "verdict", "label", "defect_probability", "threshold", "needs_review", "error", "heatmap")
#: What the guard adds: why a photo is UNUSABLE (None: judged, or no guard), its novelty, and its image statistics as
#: compact JSON (``{"brightness": ..., "sharpness": ..., ...}``; what the drift summary is recomputed from on a resume).
GUARD_COLUMNS = ("unusable_reason", "novelty", "image_stats")
#: The columns of every output, in order (the guard's after the older ones, so a positional reader keeps working).
COLUMNS = LEGACY_COLUMNS + GUARD_COLUMNS
#: Columns read back as floats.
FLOAT_COLUMNS = ("defect_probability", "threshold", "novelty")


#: Output format by the suffix of --out.
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


#: Cells a spreadsheet would evaluate (as in the app's CSV); only the free-text column needs it, since paths are
#: absolute (they start with "/" or a drive letter) and the other columns are ours.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def output_format(out: str | os.PathLike) -> str:
    """'csv', 'jsonl' or 'parquet' from the suffix of ``out``; UsageError for any other suffix."""
    suffix = Path(str(out)).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"--out {str(out)!r}: unknown suffix {suffix or '(none)'!r}; use one of "
                         f"{', '.join(FORMATS)} (CSV, JSON Lines or Parquet)")
    return FORMATS[suffix]


def _is_older_layout(columns: tuple) -> bool:
    """Whether ``columns`` are an output of an older batch_inspect: every legacy column, in order, and only
    columns this version knows (the guard's ones missing, or some of them)."""
    return (tuple(c for c in columns if c in LEGACY_COLUMNS) == LEGACY_COLUMNS
            and all(c in COLUMNS for c in columns) and len(set(columns)) == len(columns))


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
        elif c in FLOAT_COLUMNS:
            row[c] = float(v)
        elif c == "needs_review":
            row[c] = v == "true"
        elif c == "error" and v.startswith("'") and v[1:].startswith(FORMULA_PREFIXES):
            row[c] = v[1:]
        else:
            row[c] = v
    return row


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
        header = tuple(header)
        older = header != COLUMNS and _is_older_layout(header)
        if header != COLUMNS and not older:
            raise UsageError(f"{str(self.path)!r} is not an output of batch_inspect (its header is {list(header[:8])}, "
                             f"expected {list(COLUMNS)}); give another --out")
        rows = []
        cut = False
        try:
            for record in reader:
                if len(record) != len(header):
                    raise csv.Error(f"{len(record)} fields instead of {len(header)}")
                rows.append(_from_csv(dict(zip(header, record))))
        except (csv.Error, ValueError) as exc:
            if reader.line_num < text.count("\n"):  # not the last line: something else wrote into the file
                raise UsageError(f"{str(self.path)!r} line {reader.line_num} is not a batch_inspect row ({exc}); "
                                 "fix or remove it, or give another --out") from None
            cut = True  # only the last record was cut (inside a quoted field): the good ones are written back
        if cut or older:
            self._rewrite(rows)  # with the current header: rows appended from now on match it
            done = ["removed a cut last row"] if cut else []
            if older:
                done.append(f"added the columns {list(GUARD_COLUMNS)} (empty for its {len(rows)} rows)")
            self.repaired = f"{' and '.join(done)} in {self.path}"
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
                      ("needs_review", pa.bool_()), ("error", pa.string()), ("heatmap", pa.string()),
                      ("unusable_reason", pa.string()), ("novelty", pa.float64()), ("image_stats", pa.string())])


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 (only whether it imports)
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
        upgraded = 0
        for part in self._parts():
            try:
                table = pq.read_table(part)
            except Exception as exc:
                raise UsageError(f"{str(part)!r} is not a readable Parquet part ({type(exc).__name__}: {exc}); "
                                 "remove it (its photos are then inspected again) or give another --out") from None
            missing = [c for c in LEGACY_COLUMNS if c not in table.column_names]
            if missing:
                raise UsageError(f"{str(part)!r} lacks the columns {missing}; give another --out")
            part_rows = _table_rows(table)
            if any(c not in table.column_names for c in GUARD_COLUMNS):  # an older batch_inspect's part
                self._write_part(part_rows, part)
                upgraded += 1
            rows += part_rows
        if upgraded:
            done = f"added the columns {list(GUARD_COLUMNS)} (empty) to {upgraded} part file(s) of an older output"
            self.repaired = f"{self.repaired}; {done}" if self.repaired else f"{done} in {self.path}"
        parts = self._parts()
        self._next = int(parts[-1].name[5:10]) + 1 if parts else 0
        return rows

    def existing(self) -> list[dict]:
        return list(self._rows)

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        self._write_part(rows, self.path / self.PART.format(self._next))
        self._next += 1

    def _write_part(self, rows: list[dict], final: Path) -> None:
        """``rows`` as the part file ``final``: written under a temporary name, fsynced and renamed into place."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=self.schema)
        tmp = self.path / f".{final.stem}.tmp"
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


def _table_rows(table) -> list[dict]:
    """The rows of an Arrow table with every column of :data:`COLUMNS` (None where an older part has none)."""
    have = [c for c in COLUMNS if c in table.column_names]
    return [{c: r.get(c) for c in COLUMNS} for r in table.select(have).to_pylist()]


def summary_path(out: str | os.PathLike) -> Path:
    """Where a job writes its summary: ``OUT.summary.json`` beside the output (a Parquet folder's beside the
    folder): ``rows.csv`` -> ``rows.csv.summary.json``."""
    return Path(str(Path(out)) + ".summary.json")


def _json_default(o: Any) -> Any:
    """numpy scalars and arrays (from a checkpoint's guard description) as plain numbers and lists."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` as JSON at ``path``: written under a temporary name in the same folder, fsynced and renamed, so a
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
            + "\n").encode("utf-8")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_rows(out: str | os.PathLike) -> list[dict]:
    """Every row of a batch_inspect output (any format, older ones included), with its types; for checks and
    notebooks."""
    fmt = output_format(out)
    path = Path(out)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return [r for part in sorted(path.glob("part-*.parquet")) for r in _table_rows(pq.read_table(part))]
    text = path.read_text(encoding="utf-8-sig")
    if fmt == "jsonl":
        return [{c: json.loads(line).get(c) for c in COLUMNS} for line in text.splitlines() if line.strip()]
    return [_from_csv(r) for r in csv.DictReader(io.StringIO(text, newline=""))]
