"""The Inspect tab's CSV export: one row per photo of the job, cells a spreadsheet would evaluate neutralised (OWASP
"CSV injection"), written into the job's folder (or a temporary file removed after an hour).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

#: review_rank: 1 for the photo to label first (UNUSABLE photos, then the closest to the threshold), empty for files
#: without a probability. verdict: OK, DEFECT or UNUSABLE (unusable_reason says why; label and defect_probability are
#: then what the network saw, not a verdict); novelty: how unlike the training photos (empty without a guard); photo:
#: the place in the job's input order (1, 2, ...; empty for a file refused before inspection).
CSV_HEADERS = ["file", "verdict", "label", "defect_probability", "threshold", "latency_ms", "error", "needs_review",
               "review_low", "review_high", "review_rank", "display_label", "unusable_reason", "novelty", "photo"]


#: Cells that a spreadsheet would evaluate when they start with one of these (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


_CSV_DIR = Path(tempfile.gettempdir()) / "casting-inspection-csv"


_CSV_MAX_AGE_S = 3600.0


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that no spreadsheet evaluates: text starting with = + - @ (or a tab/CR) gets a leading
    apostrophe, which Excel, LibreOffice and Google Sheets show as text. Numbers pass unchanged."""
    if value is None:
        return ""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.startswith(FORMULA_PREFIXES) or text.lstrip().startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def csv_text(rows: list[list]) -> str:
    """The results as CSV text (header + one row per file), every text cell spreadsheet-safe."""
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    w.writerow(CSV_HEADERS)
    for name, verdict, p, thr, ms, err, label, review, low, high, rank, shown, reason, novelty, photo in rows:
        flag = None if review is None else ("yes" if review else "no")
        w.writerow([spreadsheet_safe(x) for x in (name, verdict, label, p, thr, ms, err, flag, low, high, rank,
                                                   shown, reason, novelty, photo)])
    return buf.getvalue()


def write_csv(rows: list[list], folder: str | Path | None = None) -> str:
    """Write the CSV (UTF-8 with BOM, so Excel reads non-ASCII names); returns its path: ``inspection_results.csv``
    in ``folder`` (a job's folder, replaced whole: the page may be downloading the previous one), else a fresh temp
    file (files older than an hour in that folder are removed, so a long-running Space does not fill its disk)."""
    if folder is not None:
        path = Path(folder) / "inspection_results.csv"
        tmp = path.with_name(f".{uuid.uuid4().hex[:8]}.tmp")  # a render beside the job may write it too
        tmp.write_text(csv_text(rows), encoding="utf-8-sig", newline="")
        os.replace(tmp, path)
        return str(path)
    _CSV_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in _CSV_DIR.glob("*.csv"):
        try:
            if now - old.stat().st_mtime > _CSV_MAX_AGE_S:
                old.unlink()
        except OSError:
            pass
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=_CSV_DIR))
    path = folder / f"inspection_{time.strftime('%Y%m%d-%H%M%S')}.csv"
    path.write_text(csv_text(rows), encoding="utf-8-sig", newline="")
    return str(path)
