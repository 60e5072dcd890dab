"""Inspect a whole shift from the command line: photos, folders (walked recursively) or lists of paths in, one
row per photo out, resumable. ``batch_inspect.py`` is the command; this module is its logic.

    python batch_inspect.py /data/shift-0412 --out shift-0412.csv             # or .jsonl, or .parquet
    python batch_inspect.py photos.txt extra.jpg --out rows.jsonl --heatmaps overlays/
    python batch_inspect.py /data/shift-0412 --out rows.parquet --engine ray  # Ray Data actor pool

Rows (:data:`COLUMNS`): ``path`` (absolute; the key a rerun resumes by), ``verdict`` (OK, DEFECT, or UNUSABLE when
the checkpoint's guard says the photo cannot be judged), ``label``, ``defect_probability``, ``threshold``,
``needs_review``, ``error`` (why a photo could not be inspected; the job goes on), ``heatmap`` (the overlay PNG
written with ``--heatmaps``), ``unusable_reason`` ("too dark", ..., "not a casting"), ``novelty`` and
``image_stats`` (the guard's image statistics as compact JSON: what the drift summary is computed from).

Beside the output, ``OUT.summary.json`` (:func:`summary_path`, written atomically after chunks and at the end): the
counts per verdict and per UNUSABLE reason, the guard (on, or off and why), and the drift alarm of one
:class:`inspectkit.drift.DriftMonitor` fed with every row in input order (:class:`Tally`). The monitor is fed
from the rows themselves, so a resumed job's summary covers the rows of earlier runs too.

Output and resuming, by the suffix of ``--out``:

* ``.csv`` and ``.jsonl`` (or ``.ndjson``): one file, rows appended and flushed to disk (fsync) after every chunk.
  A rerun with the same ``--out`` reads the rows already there and skips their paths. A crash can only cut the
  last line short (rows are appended): that partial line is truncated away and its photo inspected again.
* ``.parquet``: a Parquet file cannot be appended to, so the output is a *folder* of part files
  (``part-00000.parquet``, ...), one per chunk, each written to a temporary name and renamed into place. A part is
  there whole or not at all; ``pyarrow.parquet.read_table(FOLDER)``, ``pandas.read_parquet(FOLDER)`` and Spark read
  the folder as one table.

Inputs are gathered by ``batch_inputs`` and rows written and read back by ``batch_io``; this module runs the job.

A second run writing the same output at the same time is refused (an advisory lock), since both would inspect
the same photos. Usage errors exit with status 2 and a message; an interrupted run exits with 130, and every chunk
finished before the interruption is on disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspectkit.batch.inputs import (
    UsageError,
    collect_inputs,
    common_root,
    is_uri,
)
from inspectkit.batch.rows import (
    DEFAULT_CHUNK,
    ERROR,
    NETWORK_BATCH,
    SUMMARY_EVERY_S,
    Job,
    inspect_paths,
    stats_from_text,
)
from inspectkit.batch.writers import (
    RowWriter,
    open_writer,
    output_format,
    read_rows,
    summary_path,
    write_json_atomic,
)
from inspectkit.command import error
from inspectkit.verdicts import UNUSABLE


@dataclass
class Summary:
    """What a run did: photos found, rows already there, rows added, and the counts over the whole output
    (``counts``: per verdict, ``error`` and ``needs_review``); ``report`` is what ``summary_file`` holds."""

    photos: int
    already: int
    added: int
    counts: dict
    seconds: float
    out: str
    report: dict = field(default_factory=dict)
    summary_file: str | None = None

    def text(self) -> str:
        """A one-line account for the terminal: the counts, UNUSABLE with its reasons, the rows added, the drift."""
        c = self.counts
        rate = f", {self.added / self.seconds:.1f} photos/s" if self.added and self.seconds > 0 else ""
        reasons = self.report.get("unusable_reasons") or {}
        why = f" ({', '.join(f'{k} {v}' for k, v in reasons.items())})" if reasons else ""
        drift = (self.report.get("drift") or {}).get("line")
        tail = f"; drift: {drift}" if drift else ""
        if self.summary_file:
            tail += f"; summary in {self.summary_file}"
        return (f"{self.photos} photos: {c.get('DEFECT', 0)} DEFECT, {c.get('OK', 0)} OK, "
                f"{c.get(UNUSABLE, 0)} UNUSABLE{why}, "
                f"{c.get('needs_review', 0)} need review, {c.get('error', 0)} could not be inspected; "
                f"{self.added} rows added in {self.seconds:.1f} s{rate}, {self.already} were already in {self.out}"
                f"{tail}")


def _count_key(r: dict) -> str:
    return "error" if r.get("error") and not r.get("verdict") else str(r.get("verdict"))


def _counts(rows: Iterable[dict]) -> dict:
    out: dict[str, int] = {}
    for r in rows:
        key = _count_key(r)
        out[key] = out.get(key, 0) + 1
        if r.get("needs_review"):
            out["needs_review"] = out.get("needs_review", 0) + 1
    return out


# ------------------------------------------------------------------------------------------------ summary


@dataclass
class GuardFacts:
    """What the summary needs from the checkpoint: its class names, defect class and threshold (the drift's
    per-class cuts), its guard (None: off) and why the guard is off."""

    class_names: list
    guard: Any = None
    off_reason: str | None = None
    defect_index: int | None = None
    threshold: float | None = None

    def drift_class(self, row: dict) -> int | None:
        """The class the network gives the photo of ``row`` at the model's own threshold (what the Inspect tab and
        the server feed their monitors), whatever ``--threshold`` re-decided: for a two-class model from
        ``defect_probability``, else the row's label. None when it cannot be told."""
        names = self.class_names
        p = row.get("defect_probability")
        if len(names) == 2 and self.defect_index is not None and self.threshold is not None and p is not None:
            return self.defect_index if float(p) >= self.threshold else 1 - self.defect_index
        label = row.get("label")
        return names.index(label) if label in names else None

    def describe(self) -> dict:
        """The summary's ``guard`` entry: ``{"on": True, ...}`` from the guard, or ``{"on": False, "reason"}``."""
        if self.guard is None:
            return {"on": False, "reason": self.off_reason or "no guard"}
        return self.guard.summary()


def guard_facts(job: Job, handler: Any = None) -> GuardFacts:
    """The checkpoint's class names and guard: from ``handler`` when one is loaded, else read from the checkpoint
    without building the network (a finished rerun, the Ray driver): the .pt file with torch, or the metadata of its
    committed ONNX graph (checked against the checkpoint's digest) without. Never raises: a checkpoint that cannot
    be read gives the guard off with the reason (inspecting it, if there is anything to do, reports the error)."""
    if handler is not None:
        return GuardFacts(list(getattr(handler, "class_names", []) or []), getattr(handler, "guard", None),
                          getattr(handler, "guard_off_reason", None), getattr(handler, "defect_index", None),
                          getattr(handler, "threshold", None))
    try:
        info = _checkpoint_info(job.checkpoint)
    except Exception as exc:  # a missing or unreadable checkpoint: the summary says so instead of failing the job
        return GuardFacts([], None, f"the checkpoint could not be read for the summary ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())})")
    from inspectkit.guard import guard_from_info

    guard, why = guard_from_info(info)
    threshold = info.get("threshold")
    return GuardFacts(list(info.get("class_names") or []), guard, why, info.get("defect_index"),
                      None if threshold is None else float(threshold))


def _checkpoint_info(checkpoint: str) -> dict:
    """The checkpoint's dict without its weights (see :func:`guard_facts`)."""
    from inspectkit.inference.handler import InferenceHandler

    path = InferenceHandler._resolve(checkpoint)
    try:
        from inspectkit.inference.checkpoint import load_checkpoint  # needs torch
    except ImportError:
        load_checkpoint = None
    if load_checkpoint is not None:
        return {k: v for k, v in load_checkpoint(path).items() if k != "state_dict"}
    from inspectkit.inference import fast

    digest = fast.verified_digest(path)
    graph = fast.graph_path(path)
    meta = fast.graph_metadata(graph)
    if str(meta.get("checkpoint_sha256", "")).lower() != digest:
        raise ValueError(f"the ONNX graph {graph} belongs to another checkpoint")
    return dict(meta["info"])


class Tally:
    """The summary of a job's rows as they come in (any order, earlier runs' rows included): counts per verdict
    and per UNUSABLE reason, and one :class:`inspectkit.drift.DriftMonitor` on the guard's drift reference fed
    with every judged row in input order (``row`` = the photo's 0-based place in the input list).

    A row feeds the monitor once every row before it is there (rows of a Ray job arrive out of order); a row with
    a verdict but no ``image_stats``/``novelty`` (written by an older batch_inspect) is left out and counted."""

    def __init__(self, photos: Sequence[str], facts: GuardFacts):
        self.photos = list(photos)
        self.index = {p: i for i, p in enumerate(self.photos)}
        self.facts = facts
        self.rows: dict[str, dict] = {}
        self.counts: dict[str, int] = {}
        self.reasons: dict[str, int] = {}
        self.needs_review = 0
        self.next = 0  # the first input row not yet given to the monitor
        self.fed_from: int | None = None
        self.without_stats = 0
        self.monitor = None
        self.drift_off: str | None = None
        ref = None if facts.guard is None else getattr(facts.guard, "drift_reference", None)
        if facts.guard is None:
            self.drift_off = f"the guard is off: {facts.off_reason or 'no guard'}"
        elif not ref or not ref.get("indicators"):
            self.drift_off = "the checkpoint's guard has no drift reference"
        else:
            from inspectkit.drift import DriftMonitor

            self.monitor = DriftMonitor(ref)

    def _count(self, row: dict, sign: int) -> None:
        key = _count_key(row)
        self.counts[key] = self.counts.get(key, 0) + sign
        if row.get("needs_review"):
            self.needs_review += sign
        if row.get("verdict") == UNUSABLE:
            reason = row.get("unusable_reason") or "(no reason given)"
            self.reasons[reason] = self.reasons.get(reason, 0) + sign

    def add(self, rows: Iterable[dict]) -> None:
        """Count ``rows`` (rows of paths outside the input are ignored, a path's later row replaces its earlier)
        and feed the monitor as far as the input's rows are there."""
        for r in rows:
            path = r.get("path")
            if path not in self.index:
                continue
            if path in self.rows:
                self._count(self.rows[path], -1)
            self.rows[path] = r
            self._count(r, +1)
        while self.next < len(self.photos) and self.photos[self.next] in self.rows:
            self._feed(self.next, self.rows[self.photos[self.next]])
            self.next += 1

    def _feed(self, i: int, row: dict) -> None:
        if self.monitor is None or not row.get("verdict"):
            return  # no guard, or a photo that could not be inspected: nothing the network saw
        stats, novelty = stats_from_text(row.get("image_stats")), row.get("novelty")
        predicted = self.facts.drift_class(row)
        if stats is None or novelty is None or predicted is None:
            self.without_stats += 1
            return
        self.monitor.update(stats, float(novelty), predicted, i)
        if self.fed_from is None:
            self.fed_from = i

    def report(self, **extra: Any) -> dict:
        """The summary (JSON-ready): see docs/batch.md. ``extra`` (the job's settings and timing) goes last."""
        counts = {k: 0 for k in ("OK", "DEFECT", UNUSABLE, ERROR)}
        for k, v in self.counts.items():
            if v:
                key = ERROR if k == "error" else k
                counts[key] = counts.get(key, 0) + v
        if self.monitor is not None:
            state = self.monitor.state()
            line = self.monitor.describe()
        else:
            state = {"alarm": False, "first_row": None, "photos": 0, "window": 0, "changed": []}
            line = f"not measured ({self.drift_off})"
        notes = []
        if self.monitor is None:
            notes.append(f"no drift measured: {self.drift_off}")
        else:
            if self.without_stats:
                notes.append(f"{self.without_stats} judged row(s) have no image statistics (written by an older "
                             f"batch_inspect or with another checkpoint) and are not in the drift")
            if self.next < len(self.photos):
                notes.append(f"the drift covers input rows 0 to {self.next - 1} only: row {self.next} is not "
                             f"inspected yet")
        first = state["first_row"]
        return {
            "photos": len(self.photos),
            "rows": len(self.rows),
            "complete": len(self.rows) == len(self.photos),
            "counts": counts,
            "needs_review": self.needs_review,
            "unusable_reasons": dict(sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "drift_alarm": bool(state["alarm"]),
            "drift_first_row": first,
            "drift_first_path": None if first is None else self.photos[first],
            "drift_rows_from": self.fed_from,
            "drift_rows_to": None if self.fed_from is None else self.next - 1,
            "drift_rows": int(state["photos"]),
            "drift_rows_without_stats": self.without_stats,
            "drift_note": "; ".join(notes) or None,
            "drift": dict(state, line=line),
            "guard": self.facts.describe(),
            **extra,
        }


def _chunks(items: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _progress(job: Job, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="photo", dynamic_ncols=True, disable=not job.progress,
                desc="inspecting", smoothing=0.1, file=sys.stderr)


def load_handler(job: Job):
    """The InferenceHandler for the job; a missing or mismatched checkpoint is a UsageError."""
    from inspectkit.inference.handler import InferenceHandler

    try:
        return InferenceHandler(job.checkpoint, backend=job.backend, threads=job.threads)
    except ValueError as exc:
        raise UsageError(f"--checkpoint {job.checkpoint!r}: {exc}") from None


def run_local(job: Job, todo: list[str], root: str, writer: RowWriter, on_rows: Callable[[list[dict]], None],
              handler: Any = None) -> None:
    """Inspect ``todo`` in this process, a chunk at a time; each chunk's rows are written before the next."""
    handler = handler if handler is not None else load_handler(job)
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
        handler = load_handler(job) if todo and job.engine == "local" else None
        tally = Tally(photos, guard_facts(job, handler))
        tally.add(existing)
        target = summary_path(job.out)
        new_rows: list[dict] = []
        last_write = [time.monotonic()]

        def save(final: bool = False, interrupted: bool = False, of: Tally | None = None) -> dict:
            of = of or tally
            report = of.report(
                out=str(job.out), engine=job.engine, checkpoint=str(job.checkpoint), threshold=job.threshold,
                rows_already_there=already, rows_added=max(len(of.rows) - already, 0),
                seconds=round(time.perf_counter() - t0, 3), finished=final, interrupted=interrupted,
                written_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            try:
                write_json_atomic(target, report)
            except (OSError, ValueError, TypeError) as exc:  # the rows matter most: a summary not written warns
                why = getattr(exc, "strerror", None) or exc
                job.log(f"warning: the summary {str(target)!r} was not written ({why})")
            last_write[0] = time.monotonic()
            return report

        if todo:
            bar = _progress(job, len(photos), already)

            def on_rows(rows):
                new_rows.extend(rows)
                tally.add(rows)
                bar.update(len(rows))
                errs = sum(1 for r in new_rows if r.get("error") and not r.get("verdict"))
                if errs:
                    bar.set_postfix(errors=errs, refresh=False)
                if time.monotonic() - last_write[0] >= SUMMARY_EVERY_S:
                    save()

            try:
                if job.engine == "ray":
                    from inspectkit.batch.on_ray import run_ray

                    run_ray(job, todo, root, writer, on_rows)
                else:
                    run_local(job, todo, root, writer, on_rows, handler=handler)
            except KeyboardInterrupt:
                # what is on disk: the interruption may have come between a chunk's write and its count
                on_disk = Tally(photos, tally.facts)
                try:
                    on_disk.add(read_rows(job.out))
                except Exception:  # e.g. a line cut by the interruption: the rows counted so far
                    on_disk = tally
                save(interrupted=True, of=on_disk)  # the rerun that resumes rewrites it
                raise
            finally:
                bar.close()
        report = save(final=True)
        wanted = set(photos)
        counts = _counts([r for r in existing if r["path"] in wanted] + new_rows)
        return Summary(len(photos), already, len(new_rows), counts, time.perf_counter() - t0, str(job.out),
                       report=report, summary_file=str(target))
    finally:
        writer.close()


def build_parser() -> argparse.ArgumentParser:
    """The command line of batch_inspect.py."""
    p = argparse.ArgumentParser(
        prog="batch_inspect.py",
        description="Inspect photos of castings in bulk: one row per photo (path, verdict: OK, DEFECT or UNUSABLE, "
                    "defect_probability, threshold, needs_review, error, unusable_reason, novelty, ...) in CSV, JSON "
                    "Lines or Parquet, and OUT.summary.json beside it (counts, UNUSABLE reasons, drift alarm). Rerun "
                    "the same command to resume after an interruption: photos already in --out are skipped.",
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
        error("batch_inspect.py", "no INPUT given; name photos, folders or lists of paths")
        return 2
    for name in ("chunk_size", "threads", "ray_actors", "ray_cpus"):
        v = getattr(args, name)
        if v is not None and v < 1:
            error("batch_inspect.py", f"--{name.replace('_', '-')} {v} must be at least 1")
            return 2
    job = Job(inputs=args.inputs, out=Path(args.out), engine=args.engine, checkpoint=args.checkpoint,
              backend=args.backend, threshold=args.threshold, heatmaps=args.heatmaps, chunk_size=args.chunk_size,
              threads=args.threads, ray_actors=args.ray_actors, ray_actor_cpus=args.ray_actor_cpus,
              ray_cpus=args.ray_cpus, progress=not args.quiet)
    try:
        summary = run(job)
    except UsageError as exc:
        error("batch_inspect.py", str(exc))
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished chunk is in {args.out}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    print(summary.text(), file=sys.stderr)
    return 0
