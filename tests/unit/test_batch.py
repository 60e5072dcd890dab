"""batch_inspect.py: folders, lists and photos in; CSV, JSON Lines and Parquet out; resuming after a kill, Ctrl-C or
a cut last line; broken files and empty folders; usage errors; heat maps; the Ray engine on a local Ray.

All on small generated photos and a random-weight checkpoint (torch backend: no ONNX export)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectkit.batch import job as batch
from inspectkit.batch.inputs import IMAGE_SUFFIXES
from inspectkit.batch.job import main
from inspectkit.batch.writers import COLUMNS, open_writer, read_rows, summary_path
from tests.support import REPO, write_images

pytestmark = pytest.mark.slow

FORMATS = ("csv", "jsonl", "parquet")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A shift folder: nested folders of defect and OK castings, a broken JPEG, an empty file, a text file that
    is not a photo, a hidden macOS copy and an empty sub-folder."""
    root = tmp_path_factory.mktemp("shift") / "shift"
    r = np.random.default_rng(3)
    write_images(root / "line1" / "def", r, 4, True, prefix="def")
    write_images(root / "line1" / "ok", r, 4, False, prefix="ok")
    write_images(root / "line2", r, 3, False, prefix="ok2", size=(120, 80))
    (root / "line2" / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (root / "line2" / "empty.png").write_bytes(b"")
    (root / "line2" / "notes.txt").write_text("not a photo\n")
    (root / "line2" / "._ok2_000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "nothing_here").mkdir()
    return root


def expected_paths(root: Path) -> list[str]:
    return sorted(str(p.resolve()) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def run_cli(args: list, ckpt: Path) -> int:
    return main([str(a) for a in args] + ["--checkpoint", str(ckpt), "--backend", "torch", "--quiet"])


def by_path(rows: list[dict]) -> dict:
    return {r["path"]: r for r in rows}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_back_with_a_row_per_photo_and_errors_for_broken_files(fmt, photos, tiny_checkpoint,
                                                                               tmp_path, capsys):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow")
    out = tmp_path / f"rows.{fmt}"
    assert run_cli([photos, "--out", out, "--chunk-size", 4], tiny_checkpoint) == 0
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == expected_paths(photos)
    assert all(set(r) == set(COLUMNS) for r in rows)
    rows = by_path(rows)
    broken = rows[str((photos / "line2" / "broken.jpg").resolve())]
    assert broken["verdict"] is None and "broken.jpg" in broken["error"]
    empty = rows[str((photos / "line2" / "empty.png").resolve())]
    assert empty["verdict"] is None and "empty" in empty["error"]
    good = [r for r in rows.values() if r["error"] is None]
    assert len(good) == 11
    for r in good:
        assert r["verdict"] in ("OK", "DEFECT") and isinstance(r["defect_probability"], float)
        assert r["threshold"] == 0.5 and isinstance(r["needs_review"], bool) and r["heatmap"] is None
    err = capsys.readouterr().err
    assert "no photos in" not in err  # a photo folder with an empty sub-folder is no reason to warn
    assert "2 could not be inspected" in err


def test_an_empty_folder_beside_photos_is_a_warning_and_alone_a_usage_error(photos, tiny_checkpoint, tmp_path,
                                                                          capsys):
    empty = tmp_path / "empty_shift"
    empty.mkdir()
    out = tmp_path / "rows.csv"
    assert run_cli([empty, photos / "line2", "--out", out], tiny_checkpoint) == 0
    assert f"no photos in {str(empty)!r}" in capsys.readouterr().err
    assert len(read_rows(out)) == 5
    assert run_cli([empty, "--out", tmp_path / "other.csv"], tiny_checkpoint) == 2
    assert "no photos found" in capsys.readouterr().err
    assert not (tmp_path / "other.csv").exists()


def test_verdicts_and_probabilities_equal_the_handlers(photos, tiny_checkpoint, tmp_path):
    from inspectkit.inference.handler import InferenceHandler

    out = tmp_path / "rows.csv"
    assert run_cli([photos, "--out", out], tiny_checkpoint) == 0
    rows = by_path(read_rows(out))
    paths = [p for p in expected_paths(photos) if rows[p]["error"] is None]
    h = InferenceHandler(str(tiny_checkpoint), backend="torch")
    ref = h.predict_batch(paths, heatmap=False, on_error="collect")
    for p, r in zip(paths, ref):
        assert rows[p]["verdict"] == r.verdict
        assert rows[p]["defect_probability"] == pytest.approx(r.defect_probability, abs=1e-6)
        assert rows[p]["needs_review"] == r.needs_review


@pytest.mark.parametrize("fmt", ("csv", "jsonl"))
def test_a_cut_last_line_is_truncated_and_redone_without_duplicates(fmt, photos, tiny_checkpoint, tmp_path):
    out = tmp_path / f"rows.{fmt}"
    assert run_cli([photos, "--out", out, "--chunk-size", 5], tiny_checkpoint) == 0
    data = out.read_bytes()
    lines = data.splitlines(keepends=True)
    cut = b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]  # a crash in the middle of the last append
    out.write_bytes(cut)
    assert run_cli([photos, "--out", out], tiny_checkpoint) == 0
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == expected_paths(photos)
    assert out.read_bytes().endswith(b"\n")


def test_a_finished_rerun_adds_no_row_and_loads_no_model(photos, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "rows.jsonl"
    assert run_cli([photos, "--out", out], tiny_checkpoint) == 0
    before = out.read_bytes()
    capsys.readouterr()

    def no_model(job):
        raise AssertionError("a finished job must not load the model")

    monkeypatch.setattr(batch, "load_handler", no_model)
    assert run_cli([photos, "--out", out], tiny_checkpoint) == 0
    assert out.read_bytes() == before
    assert "0 rows added" in capsys.readouterr().err


def test_parquet_resume_skips_finished_parts_and_drops_an_unfinished_one(photos, tiny_checkpoint, tmp_path):
    pytest.importorskip("pyarrow", reason="Parquet output needs pyarrow")
    out = tmp_path / "rows.parquet"
    assert run_cli([photos / "line1", "--out", out, "--chunk-size", 3], tiny_checkpoint) == 0
    parts = sorted(out.glob("part-*.parquet"))
    assert len(parts) == 3  # 8 photos in chunks of 3
    (out / ".part-00003.tmp").write_bytes(b"PAR1 half a part")  # killed while writing a part
    assert run_cli([photos, "--out", out, "--chunk-size", 3], tiny_checkpoint) == 0
    assert not list(out.glob("*.tmp"))
    rows = read_rows(out)
    assert sorted(r["path"] for r in rows) == expected_paths(photos)
    import pandas as pd

    assert len(pd.read_parquet(out)) == len(rows)  # the folder reads as one table


SLOW_CLI = """
import signal, sys, time
# a test run started in the background (nohup ... &) ignores Ctrl-C, and a child inherits that: take it back
signal.signal(signal.SIGINT, signal.default_int_handler)
import inspectkit.batch.job as b
inner = b.inspect_paths
def slow(*a, **k):  # each chunk takes a while after the first, so the test can stop the run between chunks
    rows = inner(*a, **k)
    if slow.calls:
        time.sleep(0.6)
    slow.calls += 1
    return rows
slow.calls = 0
b.inspect_paths = slow
sys.exit(b.main(sys.argv[1:]))
"""


def _start_slow(photos: Path, out: Path, ckpt: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", SLOW_CLI, str(photos), "--out", str(out),
                             "--checkpoint", str(ckpt), "--backend", "torch", "--chunk-size", "3", "--quiet"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_rows(out: Path, proc: subprocess.Popen, n: int, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if out.is_file():
            try:
                rows = read_rows(out)
            except (ValueError, json.JSONDecodeError):  # caught mid-append: look again
                rows = []
            if len(rows) >= n:
                return rows
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no {n} rows in {out} within {timeout} s")


@pytest.mark.parametrize("how", ("kill", "ctrl-c"))
def test_resume_after_the_run_is_stopped_mid_way(how, photos, tiny_checkpoint, tmp_path):
    out = tmp_path / "rows.jsonl"
    proc = _start_slow(photos, out, tiny_checkpoint)
    try:
        first = _wait_rows(out, proc, 3)  # the first chunk is on disk, the second is being inspected
        proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = read_rows(out)
    if how == "ctrl-c":
        assert proc.returncode == 130, err
        assert "rerun the same command to resume" in err
        s = json.loads(summary_path(out).read_text())  # written on the way out: what is on disk
        assert s["interrupted"] and not s["finished"] and s["rows"] == len(partial) and not s["complete"]
    assert 3 <= len(partial) < len(expected_paths(photos))
    assert partial[:3] == first[:3]
    assert run_cli([photos, "--out", out, "--chunk-size", 3], tiny_checkpoint) == 0
    s = json.loads(summary_path(out).read_text())
    assert s["complete"] and s["finished"] and sum(s["counts"].values()) == len(expected_paths(photos))
    rows = read_rows(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)), "a photo was written twice"
    assert sorted(paths) == expected_paths(photos)
    assert rows[: len(partial)] == partial  # what was there is kept as it was


def test_a_second_writer_on_the_same_output_is_refused(photos, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    first = open_writer(out)
    try:
        assert run_cli([photos, "--out", out], tiny_checkpoint) == 2
        assert "another batch_inspect is writing" in capsys.readouterr().err
    finally:
        first.close()


def test_lists_single_photos_and_missing_paths(photos, tiny_checkpoint, tmp_path):
    lst = tmp_path / "lists" / "todo.txt"
    lst.parent.mkdir()
    rel = os.path.relpath(photos / "line1" / "def" / "def_000.jpg", lst.parent)
    lst.write_text(f"# today's rejects\n{rel}\n\n{photos / 'line2' / 'ok2_000.jpg'}\n{tmp_path / 'gone.jpg'}\n")
    single = photos / "line1" / "ok" / "ok_001.jpg"
    out = tmp_path / "rows.csv"
    assert run_cli([lst, single, single, "--out", out], tiny_checkpoint) == 0  # a photo named twice: one row
    rows = read_rows(out)
    assert [Path(r["path"]).name for r in rows] == ["def_000.jpg", "ok2_000.jpg", "gone.jpg", "ok_001.jpg"]
    assert rows[2]["verdict"] is None and "not found" in rows[2]["error"]


def test_heatmaps_are_written_as_pngs_mirroring_the_folders(photos, tiny_checkpoint, tmp_path):
    out, hm = tmp_path / "rows.csv", tmp_path / "overlays"
    assert run_cli([photos, "--out", out, "--heatmaps", hm], tiny_checkpoint) == 0
    rows = by_path(read_rows(out))
    src = photos / "line2" / "ok2_001.jpg"
    r = rows[str(src.resolve())]
    assert r["heatmap"] == str(hm / "line2" / "ok2_001.jpg.png")
    png = cv2.imread(r["heatmap"])
    assert png is not None and png.shape[:2] == cv2.imread(str(src)).shape[:2]
    assert rows[str((photos / "line2" / "broken.jpg").resolve())]["heatmap"] is None


def test_threshold_re_decides_the_rows(photos, tiny_checkpoint, tmp_path):
    out = tmp_path / "rows.csv"
    assert run_cli([photos / "line1", "--out", out], tiny_checkpoint) == 0
    p = read_rows(out)[0]["defect_probability"]
    for t, verdict in ((max(p - 0.01, 0.001), "DEFECT"), (min(p + 0.01, 0.999), "OK")):
        o = tmp_path / f"t{t}.csv"
        assert run_cli([photos / "line1", "--out", o, "--threshold", t], tiny_checkpoint) == 0
        r = read_rows(o)[0]
        assert r["verdict"] == verdict and r["threshold"] == pytest.approx(t)


@pytest.mark.parametrize("args, message", [
    ([], "no INPUT given"),
    (["{photos}", "--out", "{tmp}/rows.xlsx"], "unknown suffix '.xlsx'"),
    (["{photos}", "--out", "{tmp}/afile/rows.csv"], "cannot create its folder"),
    (["{tmp}/nowhere", "--out", "{tmp}/rows.csv"], "does not exist"),
    (["{tmp}/readme.md", "--out", "{tmp}/rows.csv"], "is neither a photo"),
    (["{photos}/nothing_here", "--out", "{tmp}/rows.csv"], "no photos found"),
    (["{photos}", "--out", "{tmp}/rows.csv", "--threshold", "1.5"], "--threshold 1.5 must be between 0 and 1"),
    (["{photos}", "--out", "{tmp}/rows.csv", "--chunk-size", "0"], "--chunk-size 0 must be at least 1"),
    (["s3://bucket/shift", "--out", "{tmp}/rows.csv"], "need --engine ray"),
    (["{photos}", "--out", "{tmp}/bad.csv"], "is not an output of batch_inspect"),
    (["{photos}", "--out", "{tmp}/rows.csv", "--checkpoint", "{tmp}/none.pt"], "checkpoint not found"),
])
def test_usage_errors_exit_2_with_a_message(args, message, photos, tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "readme.md").write_text("# not a photo, not a list")
    (tmp_path / "bad.csv").write_text("name,score\nx,1\n")
    argv = [a.format(photos=photos, tmp=tmp_path) for a in args] or ["--out", str(tmp_path / "rows.csv")]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(tiny_checkpoint)]
    assert main(argv + ["--backend", "torch", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    if "checkpoint" not in message:  # refused before anything was written
        assert not (tmp_path / "rows.csv").exists()


def test_the_command_line_entry_point_runs(photos, tiny_checkpoint, tmp_path):
    out = tmp_path / "rows.csv"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "batch_inspect.py", str(photos / "line2"), "--out", str(out),
                        "--checkpoint", str(tiny_checkpoint), "--backend", "torch"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "5 photos" in p.stderr and "photo/s" in p.stderr  # the summary, and tqdm's bar
    assert len(read_rows(out)) == 5
    bad = subprocess.run([sys.executable, "batch_inspect.py", "--out", str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no INPUT given" in bad.stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray is not installed (pip install -r requirements-dev.txt)")
def test_ray_engine_gives_the_local_engines_rows_on_a_local_ray(photos, guarded_checkpoint, tmp_path):
    """The same rows (the guard's columns included) and the same summary (counts, UNUSABLE reasons, drift, computed
    by the driver in input order) as the local engine; a white frame among the photos is UNUSABLE in both."""
    import shutil

    photos = Path(shutil.copytree(photos, tmp_path / "shift"))
    cv2.imwrite(str(photos / "line2" / "white.png"), np.full((96, 96, 3), 255, np.uint8))
    import torch

    ckpt = guarded_checkpoint
    local, distributed = tmp_path / "local.csv", tmp_path / "ray.parquet"
    # one thread and chunks of 4 as each Ray actor runs them: the same batches give the same bits, and the random-weight
    # network's novelty lies close to the guard's threshold, so "not a casting" could flip on the last bit otherwise
    threads = torch.get_num_threads()
    try:
        assert run_cli([photos, "--out", local, "--threads", 1, "--chunk-size", 4], ckpt) == 0
    finally:
        torch.set_num_threads(threads)  # the handler set one thread for the whole process
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "batch_inspect.py", str(photos), "--out", str(distributed), "--engine", "ray",
           "--ray-cpus", "2", "--checkpoint", str(ckpt), "--backend", "torch", "--chunk-size", "4",
           "--quiet"]
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"--engine ray did not finish within 420 s: {str(exc.stderr)[-2000:]}")
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = by_path(read_rows(local)), by_path(read_rows(distributed))
    assert a.keys() == b.keys()
    for k in a:
        assert b[k]["verdict"] == a[k]["verdict"] and (b[k]["error"] is None) == (a[k]["error"] is None)
        assert b[k]["unusable_reason"] == a[k]["unusable_reason"]
        if a[k]["defect_probability"] is not None:
            assert b[k]["defect_probability"] == pytest.approx(a[k]["defect_probability"], abs=1e-6)
            assert b[k]["novelty"] == pytest.approx(a[k]["novelty"], abs=1e-5)
            assert json.loads(b[k]["image_stats"]) == pytest.approx(json.loads(a[k]["image_stats"]), abs=1e-4)
    assert a[str((photos / "line2" / "white.png").resolve())]["verdict"] == "UNUSABLE"
    sa, sb = (json.loads(summary_path(o).read_text()) for o in (local, distributed))
    assert sb["engine"] == "ray" and sb["complete"] and sb["guard"]["on"]
    for key in ("photos", "counts", "unusable_reasons", "drift_alarm", "drift_first_row", "drift_rows", "guard"):
        assert sb[key] == sa[key], key
    assert sb["drift"]["line"] == sa["drift"]["line"]
