"""batch_inspect.py with a checkpoint's guard: UNUSABLE rows with their reason, novelty and image statistics in
every format; OUT.summary.json (counts, UNUSABLE reasons, guard, drift alarm) equal to what the rows say; drift on a
line that darkens and none on a steady one; the guard off; --threshold; resuming, from an older output too.

Small generated photos, the random-weight ``guarded_checkpoint`` of conftest (torch backend). The Ray engine's rows
and summary are compared with the local engine's in test_batch.py (one local Ray start for the whole suite)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_batch import by_path, run_cli

from inspectkit.batch.job import Tally, guard_facts
from inspectkit.batch.writers import COLUMNS, GUARD_COLUMNS, LEGACY_COLUMNS, read_rows, summary_path
from tests.support import synthetic_casting

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # a busy 2-core machine: one thread is faster

FORMATS = ("csv", "jsonl", "parquet")
SIZES = ((96, 96), (96, 120), (120, 96))  # as the fixture's guard was fitted on
#: Reasons from the image checks (a generated casting passes them; its novelty may still call it "not a casting").
IMAGE_REASONS = ("too dark", "overexposed", "out of focus", "part not fully in frame")
#: Drift streams: photos on a steady line, then as many again, unchanged or darkened (x0.35) from CHANGE on.
STEADY, CHANGE = 120, 60
#: Photos per chunk for the streams: a resumed run after 90 photos sees the same batches as one uninterrupted run
#: (the random-weight network's novelty sits close to the guard's threshold; the same batches give the same bits).
STREAM_CHUNK = "30"


def _write(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


@pytest.fixture(scope="module")
def shift(tmp_path_factory) -> Path:
    """Castings, and frames nobody can judge: black, white, very dark, blurred; plus a broken file."""
    root = tmp_path_factory.mktemp("guard_shift") / "shift"
    r = np.random.default_rng(11)
    for i in range(5):
        _write(root / f"cast_{i}.jpg", synthetic_casting(r, i % 2 == 0, SIZES[i % 3]))
    base = synthetic_casting(r, False)
    _write(root / "z_black.png", np.zeros((96, 96, 3), np.uint8))
    _write(root / "z_white.png", np.full((96, 96, 3), 255, np.uint8))
    _write(root / "z_dark.png", (base.astype(np.float32) * 0.2).astype(np.uint8))
    _write(root / "z_blurred.png", cv2.GaussianBlur(base, (0, 0), 4))
    (root / "z_broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    return root


UNJUDGEABLE = {"z_black.png": "too dark", "z_white.png": "overexposed", "z_dark.png": None, "z_blurred.png": None}


def _summary(out: Path) -> dict:
    return json.loads(summary_path(out).read_text())


def _counts_of(rows: list[dict]) -> tuple[dict, dict]:
    counts = {"OK": 0, "DEFECT": 0, "UNUSABLE": 0, "ERROR": 0}
    reasons: dict = {}
    for r in rows:
        key = r["verdict"] or "ERROR"
        counts[key] = counts.get(key, 0) + 1
        if r["verdict"] == "UNUSABLE":
            reasons[r["unusable_reason"]] = reasons.get(r["unusable_reason"], 0) + 1
    return counts, reasons


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_say_unusable_with_the_reason_and_the_summary_counts_them(fmt, shift, guarded_checkpoint, tmp_path,
                                                                      capsys):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow")
    out = tmp_path / f"rows.{fmt}"
    assert run_cli([shift, "--out", out, "--chunk-size", 3], guarded_checkpoint) == 0
    rows = read_rows(out)
    assert len(rows) == 10 and all(tuple(r) == COLUMNS for r in rows)
    named = {Path(r["path"]).name: r for r in rows}
    for name, reason in UNJUDGEABLE.items():
        r = named[name]
        assert r["verdict"] == "UNUSABLE" and r["unusable_reason"] in IMAGE_REASONS, (name, r)
        assert reason is None or r["unusable_reason"] == reason, (name, r)
        assert r["label"] in ("def_front", "ok_front")  # the network's class is still there for the engineer
    for i in range(5):
        r = named[f"cast_{i}.jpg"]
        assert r["unusable_reason"] not in IMAGE_REASONS, r  # a casting passes the image checks
        assert r["verdict"] in ("OK", "DEFECT") or r["unusable_reason"] == "not a casting"
    for r in rows:
        if r["error"] is None:
            assert isinstance(r["novelty"], float) and np.isfinite(r["novelty"])
            stats = json.loads(r["image_stats"])
            assert set(stats) >= {"brightness", "sharpness", "framing"}
        else:
            assert r["verdict"] is None and r["novelty"] is None and r["image_stats"] is None
    assert named["z_black.png"]["novelty"] is not None and json.loads(named["z_black.png"]["image_stats"])[
        "brightness"] == 0.0

    s = _summary(out)
    counts, reasons = _counts_of(rows)
    assert s["counts"] == counts and counts["UNUSABLE"] >= 4 and counts["ERROR"] == 1
    assert s["unusable_reasons"] == reasons
    assert s["photos"] == s["rows"] == 10 and s["complete"] and s["finished"]
    assert s["guard"]["on"] is True and s["drift_alarm"] is False and s["drift_first_row"] is None
    assert s["drift_rows"] == 9 and s["drift_rows_from"] == 0 and s["drift_rows_without_stats"] == 0
    assert s["drift_note"] is None and s["drift"]["changed"] == []
    assert s["needs_review"] == sum(1 for r in rows if r["needs_review"])
    err = capsys.readouterr().err
    assert f"{counts['UNUSABLE']} UNUSABLE (" in err and "drift: no drift over 9 photos" in err
    assert str(summary_path(out)) in err


def test_threshold_re_decides_but_keeps_unusable_and_the_drift(shift, guarded_checkpoint, tmp_path):
    base = tmp_path / "base.csv"
    assert run_cli([shift, "--out", base], guarded_checkpoint) == 0
    ref = by_path(read_rows(base))
    for t, judged in ((0.001, "DEFECT"), (0.999, "OK")):
        out = tmp_path / f"t{t}.jsonl"
        assert run_cli([shift, "--out", out, "--threshold", t], guarded_checkpoint) == 0
        rows = by_path(read_rows(out))
        for path, r in rows.items():
            if ref[path]["error"] is not None:
                continue
            assert r["threshold"] == pytest.approx(t)
            if ref[path]["verdict"] == "UNUSABLE":
                assert r["verdict"] == "UNUSABLE" and r["unusable_reason"] == ref[path]["unusable_reason"]
                assert r["label"] == ("def_front" if judged == "DEFECT" else "ok_front")
            else:
                assert r["verdict"] == judged
        s, s0 = _summary(out), _summary(base)
        assert s["counts"]["UNUSABLE"] == s0["counts"]["UNUSABLE"] and s["unusable_reasons"] == s0["unusable_reasons"]
        # the drift is measured on the class the network gives at the model's own threshold, whatever --threshold
        assert s["drift"] == s0["drift"]


def test_without_a_guard_the_summary_says_it_is_off(shift, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert run_cli([shift, "--out", out], tiny_checkpoint) == 0
    rows = read_rows(out)
    assert all(r["unusable_reason"] is None and r["novelty"] is None and r["image_stats"] is None for r in rows)
    assert {r["verdict"] for r in rows} <= {"OK", "DEFECT", None}
    s = _summary(out)
    assert s["guard"]["on"] is False and s["guard"]["reason"]
    assert s["drift_alarm"] is False and s["drift_first_row"] is None and s["drift_rows"] == 0
    assert s["counts"]["UNUSABLE"] == 0 and s["unusable_reasons"] == {}
    assert "guard is off" in s["drift_note"] and "guard is off" in s["drift"]["line"]
    assert "0 UNUSABLE" in capsys.readouterr().err


@pytest.fixture(scope="module")
def streams(tmp_path_factory) -> dict:
    """Two lists of photos in input order: ``steady`` (STEADY generated castings) and ``changed`` (the same first
    CHANGE, then darkened x0.35 copies of the rest). Seeded: the fixture's drift reference comes from only 12
    validation photos, so its 10 % tails are rough and a 120-photo steady stream can alarm on some seeds (seed 0
    does, on 'brighter'); seed 1 is a stream the reference calls steady, which is what the comparison needs."""
    root = tmp_path_factory.mktemp("streams")
    r = np.random.default_rng(1)
    steady, changed = [], []
    for i in range(STEADY):
        im = synthetic_casting(r, i % 2 == 0, SIZES[i % 3])
        steady.append(_write(root / "line" / f"c{i:03d}.jpg", im))
        changed.append(steady[-1] if i < CHANGE else
                       _write(root / "dark" / f"d{i:03d}.jpg", (im.astype(np.float32) * 0.35).astype(np.uint8)))
    lists = {}
    for name, paths in (("steady", steady), ("changed", changed)):
        lists[name] = root / f"{name}.txt"
        lists[name].write_text("".join(f"{p}\n" for p in paths))
    return lists


@pytest.fixture(scope="module")
def stream_runs(streams, guarded_checkpoint, tmp_path_factory) -> dict:
    """Each stream inspected once (CSV): name -> output path."""
    out = tmp_path_factory.mktemp("stream_runs")
    runs = {}
    for name, lst in streams.items():
        runs[name] = out / f"{name}.csv"
        assert run_cli([lst, "--out", runs[name], "--chunk-size", STREAM_CHUNK], guarded_checkpoint) == 0
    return runs


@pytest.mark.slow
def test_a_darkening_line_raises_the_drift_alarm_and_a_steady_one_does_not(stream_runs):
    changed, steady = _summary(stream_runs["changed"]), _summary(stream_runs["steady"])
    assert changed["drift_alarm"] is True
    first = changed["drift_first_row"]
    assert CHANGE <= first <= CHANGE + 100, changed["drift"]
    assert Path(changed["drift_first_path"]).name == f"d{first:03d}.jpg"
    assert "darker" in {c["indicator"] for c in changed["drift"]["changed"]}
    assert changed["drift"]["line"].startswith(f"DRIFT ALARM from row {first}")
    assert changed["drift_rows"] == STEADY and changed["unusable_reasons"].get("too dark", 0) >= STEADY - CHANGE - 5

    assert steady["drift_alarm"] is False and steady["drift_first_row"] is None, steady["drift"]
    assert steady["drift"]["changed"] == [] and steady["drift_rows"] == STEADY


def test_the_drift_is_the_same_whatever_order_the_rows_come_back_in(stream_runs, guarded_checkpoint):
    """The Ray engine's chunks may arrive out of order: the monitor still sees the rows in input order."""
    from inspectkit.batch.rows import Job

    rows = read_rows(stream_runs["changed"])
    facts = guard_facts(Job(inputs=[], out=Path("x.csv"), checkpoint=str(guarded_checkpoint)))
    assert facts.guard is not None
    in_order, shuffled = Tally([r["path"] for r in rows], facts), Tally([r["path"] for r in rows], facts)
    in_order.add(rows)
    chunks = [rows[i:i + 16] for i in range(0, len(rows), 16)]
    for k in np.random.default_rng(0).permutation(len(chunks)):
        shuffled.add(chunks[k])
    a, b = in_order.report(), shuffled.report()
    assert a == b and a["drift_alarm"] and a["drift_rows"] == len(rows)
    assert {k: a[k] for k in ("counts", "drift")} == {k: _summary(stream_runs["changed"])[k] for k in ("counts",
                                                                                                      "drift")}
    half = Tally([r["path"] for r in rows], facts)
    half.add(rows[CHANGE:])  # the later rows first: nothing can be fed until the first ones are there
    assert half.report()["drift_rows"] == 0 and "row 0 is not inspected yet" in half.report()["drift_note"]


@pytest.mark.slow
def test_a_resumed_run_summarises_every_row(streams, stream_runs, guarded_checkpoint, tmp_path):
    """Stopped after 90 of the darkening stream's photos, then rerun: the summary covers all 120 (the drift from
    the rows' own columns), as one uninterrupted run's does. (Each format's reading back of the guard's columns:
    the older-output test below.)"""
    fmt = "jsonl"
    paths = streams["changed"].read_text().splitlines()
    first = tmp_path / "first.txt"
    first.write_text("".join(f"{p}\n" for p in paths[:90]))
    out = tmp_path / f"rows.{fmt}"
    assert run_cli([first, "--out", out, "--chunk-size", STREAM_CHUNK], guarded_checkpoint) == 0
    assert _summary(out)["photos"] == 90
    assert run_cli([streams["changed"], "--out", out, "--chunk-size", STREAM_CHUNK], guarded_checkpoint) == 0
    s, fresh = _summary(out), _summary(stream_runs["changed"])
    assert s["rows_already_there"] == 90 and s["rows_added"] == 30 and s["complete"]
    for key in ("photos", "rows", "counts", "unusable_reasons", "drift_alarm", "drift_first_row", "drift_rows",
                "drift_rows_from", "drift_rows_without_stats", "drift_note", "drift", "guard"):
        assert s[key] == fresh[key], key


def _strip_guard_columns(out: Path, fmt: str) -> None:
    """Make ``out`` look written by batch_inspect before the guard: the legacy columns only."""
    if fmt == "csv":
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(out.read_text(), newline="")))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(LEGACY_COLUMNS), lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        out.write_text(buf.getvalue())
    elif fmt == "jsonl":
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        out.write_text("".join(json.dumps({c: r[c] for c in LEGACY_COLUMNS}) + "\n" for r in lines))
    else:
        import pyarrow.parquet as pq

        for part in out.glob("part-*.parquet"):
            pq.write_table(pq.read_table(part).select(list(LEGACY_COLUMNS)), part)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_an_older_output_without_the_guard_columns_is_resumed(fmt, shift, tiny_checkpoint, guarded_checkpoint,
                                                              tmp_path, capsys):
    """Four castings inspected before the guard (the same weights without it, the guard's columns then removed),
    the rest with it: every row is there with every column, and the summary says which rows the drift left out."""
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow")
    names = sorted(p.name for p in shift.iterdir())
    first = tmp_path / "first.txt"
    first.write_text("".join(f"{shift / n}\n" for n in names[:4]))
    out = tmp_path / f"rows.{fmt}"
    assert run_cli([first, "--out", out, "--chunk-size", 2], tiny_checkpoint) == 0
    _strip_guard_columns(out, fmt)
    capsys.readouterr()
    assert run_cli([shift, "--out", out, "--chunk-size", 2], guarded_checkpoint) == 0
    err = capsys.readouterr().err
    rows = read_rows(out)
    assert sorted(Path(r["path"]).name for r in rows) == names and all(tuple(r) == COLUMNS for r in rows)
    old, new = rows[:4], rows[4:]
    assert all(r["verdict"] in ("OK", "DEFECT") and all(r[c] is None for c in GUARD_COLUMNS) for r in old)
    assert sum(r["verdict"] == "UNUSABLE" for r in new) >= 4 and all(r["novelty"] is not None for r in new
                                                                     if r["error"] is None)
    if fmt != "jsonl":
        assert "added the columns" in err  # the output was given the new columns
    if fmt == "parquet":
        import pandas as pd

        table = pd.read_parquet(out)  # still one table, with every column
        assert list(table.columns) == list(COLUMNS) and len(table) == len(rows)
    if fmt == "csv":
        assert out.read_text().splitlines()[0] == ",".join(COLUMNS)
    s = _summary(out)
    counts, reasons = _counts_of(rows)
    assert s["counts"] == counts and s["unusable_reasons"] == reasons and s["complete"]
    assert s["drift_rows_without_stats"] == 4 and s["drift_rows"] == len(new) - 1  # the broken file is no photo
    assert s["drift_rows_from"] == 4 and "4 judged row(s) have no image statistics" in s["drift_note"]


def test_a_finished_rerun_rewrites_the_summary_without_loading_the_model(shift, guarded_checkpoint, tmp_path,
                                                                         monkeypatch):
    from inspectkit.batch import job as batch

    out = tmp_path / "rows.csv"
    assert run_cli([shift, "--out", out], guarded_checkpoint) == 0
    before = _summary(out)
    summary_path(out).unlink()

    def no_model(job):
        raise AssertionError("a finished job must not load the model")

    monkeypatch.setattr(batch, "load_handler", no_model)
    assert run_cli([shift, "--out", out], guarded_checkpoint) == 0
    after = _summary(out)
    assert after["rows_added"] == 0 and after["rows_already_there"] == 10
    for key in ("counts", "unusable_reasons", "drift", "guard", "drift_rows"):
        assert after[key] == before[key], key


def test_an_interrupted_run_leaves_a_summary_of_what_is_on_disk(shift, guarded_checkpoint, tmp_path, monkeypatch):
    """Ctrl-C between a chunk's write and its count: the summary written on the way out still counts that chunk."""
    from inspectkit.batch import job as batch
    from inspectkit.batch.rows import inspect_paths

    def stopped_after_one_chunk(job, todo, root, writer, on_rows, handler=None):
        writer.write(inspect_paths(handler, todo[:3]))
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run_local", stopped_after_one_chunk)
    out = tmp_path / "rows.jsonl"
    assert run_cli([shift, "--out", out], guarded_checkpoint) == 130
    s = _summary(out)
    assert s["interrupted"] and not s["finished"] and not s["complete"]
    assert s["rows"] == s["rows_added"] == 3 == sum(s["counts"].values()) and s["photos"] == 10
    assert s["drift_rows"] == 3 and "row 3 is not inspected yet" in s["drift_note"]
