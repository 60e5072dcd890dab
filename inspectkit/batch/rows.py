"""One photo's row of a batch job, and the job itself: what to inspect and how (:class:`Job`), and
:func:`inspect_paths`, which inspects a chunk of photos and turns each into a row (the local and the Ray engine
both call it)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspectkit.batch.inputs import heatmap_target, is_uri
from inspectkit.batch.writers import COLUMNS
from inspectkit.paths import CHECKOUT

REPO = CHECKOUT

#: Photos per chunk: rows reach the disk every ~0.5 s on two cores, and an interruption loses at most one chunk.
DEFAULT_CHUNK = 64
#: Images through the network at once inside a chunk (the handler's batch).
NETWORK_BATCH = 32
#: The summary's count of rows without a verdict (UNUSABLE is a verdict: inspectkit/verdicts.py).
ERROR = "ERROR"
#: Seconds between two writes of the summary file while a job runs (it is always written at the end).
SUMMARY_EVERY_S = 2.0


# ------------------------------------------------------------------------------------------------ inputs


# ----------------------------------------------------------------------------------------- rows


def _clean_error(text: Any) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())  # one line: a CSV reader or a log grep sees one row per photo
    return text


def stats_text(stats: Any) -> str | None:
    """The guard's image statistics of one photo (a dict by name) as the compact JSON of the ``image_stats``
    column; None without them."""
    if not stats:
        return None
    return json.dumps({str(k): float(v) for k, v in dict(stats).items()}, separators=(",", ":"))


def stats_from_text(text: Any) -> dict | None:
    """The ``image_stats`` cell back as a dict (None when empty or unreadable)."""
    if isinstance(text, dict):
        return text
    if not text:
        return None
    try:
        obj = json.loads(text)
    except (TypeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def result_row(path: str, result: Any, handler: Any = None, threshold: float | None = None,
               heatmap: str | None = None) -> dict:
    """One output row for an InspectionResult. With ``threshold``, the verdict, label and needs-review flag are
    re-decided there from the probabilities (no new forward pass), as the app's threshold slider does; a photo the
    guard found UNUSABLE stays UNUSABLE at any threshold (its label is the class the network gives there)."""
    err = getattr(result, "error", None)
    row = {c: None for c in COLUMNS}
    row["path"] = path
    if err is not None:
        row["error"] = _clean_error(err)
        return row
    p = getattr(result, "defect_probability", None)
    reason = getattr(result, "unusable_reason", None)
    novelty = getattr(result, "novelty", None)
    verdict, label, used = result.verdict, result.label, result.threshold
    needs = getattr(result, "needs_review", None)
    if threshold is not None and p is not None and handler is not None:
        from inspectkit.labels import (
            label_for,  # lazy, as the handler: the CLI parses its options before any of it loads
        )

        judged = handler.decide(result.probabilities, threshold)  # the class the network gives at this threshold
        verdict, used = handler.decide(result.probabilities, threshold, reason), float(threshold)
        label = label_for(handler, result.probabilities, judged)
        needs = handler.needs_review(p, threshold)
    row.update(verdict=verdict, label=label, defect_probability=None if p is None else float(p),
               threshold=None if used is None else float(used), needs_review=None if needs is None else bool(needs),
               heatmap=heatmap, unusable_reason=reason,
               novelty=None if novelty is None else round(float(novelty), 6),
               image_stats=stats_text(getattr(result, "image_stats", None)))
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
    from inspectkit.inference.handler import InspectionResult

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


# -------------------------------------------------------------------------------------------- writers


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
