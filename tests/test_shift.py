"""The Shift tab (any number of photos, in chunks, results as they come) and the server's quiet queue and model
warm-up (issue 16): with a fake handler for the logic, a random-weight checkpoint through the real server."""

from __future__ import annotations

import csv
import io
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from app_server import FakeHandler, running_server
from conftest import write_images

import app
from inspectkit.limits import MAX_BATCH, PROGRESS_POLL_S, QUEUE_POLL_S
from inspectkit.serve.http_api import create_app
from inspectkit.serve.model_source import warm_up
from inspectkit.serve.results import inspect_one
from inspectkit.ui import shift as sh


@pytest.fixture
def shift_files(tmp_path) -> dict:
    """40 photos (15 defects by name), a broken one, an empty one and a zip with 5 more photos and a note."""
    r = np.random.default_rng(5)
    defects = write_images(tmp_path / "d", r, 15, True, prefix="def")
    oks = write_images(tmp_path / "o", r, 25, False, prefix="ok")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    z = tmp_path / "more.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in write_images(tmp_path / "z", r, 5, False, prefix="zok"):
            zf.write(p, f"box/{p.name}")
        zf.writestr("box/notes.txt", "not a photo")
        zf.writestr("__MACOSX/box/._zok_000.jpg", b"resource fork")
    return {"photos": [str(p) for p in oks[:10] + defects + oks[10:]], "broken": str(broken), "empty": str(empty),
            "zip": str(z)}


def run_all(handler, files, folder=None, opacity=0.45):
    return list(sh.run_shift(handler, files, folder, opacity, None))


def csv_rows(path: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))


def test_a_job_of_more_than_one_chunk_streams_results_and_counts_every_photo(shift_files):
    files = shift_files["photos"] + [shift_files["broken"], shift_files["empty"], shift_files["zip"]]
    steps = run_all(FakeHandler(), files)
    n = 40 + 2 + 5
    assert len(steps) >= 2, "the results must arrive chunk by chunk"
    state, progress, summary, gallery, table, csv_path = steps[-1]
    assert len(state["rows"]) == n and state["total"] == n
    first = steps[0][0]
    assert 0 < len(steps[0][1]) and f"/ {n}" in steps[0][1] and "photos/s" in steps[0][1]
    assert "done in" in progress and f"<b>{n} / {n}</b>" in progress
    assert f"<b>{n}</b> photos" in summary and "15 DEFECT" in summary and "30 OK" in summary
    assert "2 not inspected" in summary
    assert first is state  # the same session state grows as the chunks arrive
    rows = csv_rows(csv_path)
    assert len(rows) == n
    assert {r["file"] for r in rows} >= {"more.zip/zok_000.jpg", "broken.jpg", "empty.jpg", "def_000.jpg"}
    assert next(r for r in rows if r["file"] == "empty.jpg")["error"].endswith("is empty (0 bytes)")
    assert "broken.jpg" in next(r for r in rows if r["file"] == "broken.jpg")["error"]
    # the gallery leads with the defects
    assert [c.split(" \u2014 ")[1].split(" ")[0] for _, c in gallery[:15]] == ["DEFECT"] * 15
    assert len(gallery) == len(table) == n
    assert all(Path(img).is_file() for img, _ in gallery)


def test_chunks_go_through_the_model_max_batch_at_a_time(shift_files):
    seen = []

    class Counting(FakeHandler):
        def predict_batch(self, images, *a, **kw):
            seen.append(len(images))
            return super().predict_batch(images, *a, **kw)

    run_all(Counting(), shift_files["photos"])
    assert seen == [MAX_BATCH, 40 - MAX_BATCH]


def test_the_gallery_is_capped_and_says_so(shift_files, monkeypatch):
    monkeypatch.setattr(sh, "GALLERY_MAX", 6)
    state, _, summary, gallery, table, csv_path = run_all(FakeHandler(), shift_files["photos"])[-1]
    assert len(gallery) == len(table) == 6
    assert all("DEFECT" in cap for _, cap in gallery)
    assert "show 6 of the 40 photos" in summary and "The CSV has every photo" in summary
    assert len(csv_rows(csv_path)) == 40


def test_priority_puts_defects_and_needs_review_first():
    rows = [{"verdict": "OK", "p": 0.1, "review": False}, {"verdict": "OK", "p": 0.45, "review": True},
            {"verdict": "ERROR", "p": None, "review": None}, {"verdict": "DEFECT", "p": 0.99, "review": False},
            {"verdict": "DEFECT", "p": 0.55, "review": True}]
    order = [(r["verdict"], r["review"]) for r in sorted(rows, key=sh.priority)]
    assert order == [("DEFECT", True), ("DEFECT", False), ("OK", True), ("ERROR", None), ("OK", False)]


@pytest.mark.parametrize("bound, value", [("MAX_JOB_PHOTOS", 30), ("MAX_JOB_BYTES", 20_000)])
def test_a_job_past_its_bound_gets_a_clear_message_and_runs_nothing(bound, value, shift_files, monkeypatch):
    monkeypatch.setattr(sh, bound, value)
    handler = FakeHandler()
    steps = run_all(handler, shift_files["photos"])
    assert len(steps) == 1 and handler.images_seen == 0
    msg = steps[0][1]
    assert "shift-msg error" in msg and "larger than one job may be" in msg and "batch_inspect.py" in msg


def test_an_empty_drop_asks_for_photos():
    (state, msg, *_rest) = run_all(FakeHandler(), None)[-1]
    assert "Drop photos" in msg and state["rows"] == []


def test_a_folder_upload_keeps_the_photos_only(shift_files, tmp_path):
    note = tmp_path / "README.txt"
    note.write_text("line 3, night shift")
    state, *_ = run_all(FakeHandler(), None, folder=shift_files["photos"][:3] + [str(note)])[-1]
    assert [r["name"] for r in state["rows"]] == [Path(p).name for p in shift_files["photos"][:3]]


def test_zip_of_overlays_has_every_inspected_photo(shift_files):
    state = run_all(FakeHandler(), shift_files["photos"][:5] + [shift_files["broken"]])[-1][0]
    with zipfile.ZipFile(sh.zip_overlays(state)) as z:
        names = z.namelist()
    assert len(names) == 5 and all(n.endswith(".jpg") for n in names)
    with pytest.raises(ValueError, match="no heat-map overlays yet"):
        sh.zip_overlays(sh.new_state())


def test_other_requests_are_served_between_two_chunks(shift_files):
    """The inference lock is taken per chunk: a JSON request arriving during the first chunk is answered before
    the job's last chunk runs."""
    order = []

    class Slow(FakeHandler):
        def predict_batch(self, images, *a, **kw):
            order.append(f"chunk of {len(images)}")
            time.sleep(0.3)
            return super().predict_batch(images, *a, **kw)

        def predict(self, *a, **kw):
            order.append("other request")
            return super().predict(*a, **kw)

    h = Slow()
    job = threading.Thread(target=lambda: run_all(h, shift_files["photos"] + shift_files["photos"][:30]))
    job.start()
    deadline = time.monotonic() + 10
    while not order and time.monotonic() < deadline:
        time.sleep(0.01)
    inspect_one(h, shift_files["photos"][0], "x.jpg")  # waits for the chunk in progress, not the job
    job.join(timeout=30)
    # (the fake's predict runs through its predict_batch: the "chunk of 1" is the other request's)
    assert order == ["chunk of 32", "other request", "chunk of 1", "chunk of 32", "chunk of 6"], order


def test_the_app_has_the_shift_tab_in_its_own_concurrency_group():
    demo = app.build_demo(FakeHandler())
    fns = [f for f in demo.fns.values() if f.api_name == "inspect_shift"]
    assert len(fns) == 1 and fns[0].concurrency_id == "shift" and fns[0].concurrency_limit == sh.CONCURRENT_JOBS
    # its first input is the session's model choice (a State: not a parameter of the API endpoint)
    import gradio as gr
    assert isinstance(fns[0].inputs[0], gr.State) and fns[0].inputs[0].value is None
    cancels = [f for f in demo.fns.values() if getattr(f, "cancels", None)]
    assert cancels, "the Stop button cancels the job"


def test_the_server_queue_polls_calmly():
    """Gradio polls its queue every 1 ms on Linux (the pinned 6.x): the server sets QUEUE_POLL_S."""
    demo = app.build_demo(FakeHandler())
    create_app(FakeHandler(), demo)
    assert demo._queue.sleep_when_free == QUEUE_POLL_S
    assert demo._queue.progress_update_sleep_when_free == PROGRESS_POLL_S


def test_warm_up_runs_heat_map_inspections_and_never_raises(caplog):
    calls = []

    class H:
        def predict(self, image, heatmap=True, name=None):
            calls.append((image.shape, heatmap))

    h = H()
    assert warm_up(h) is h and len(calls) == 3 and calls[0] == ((300, 300, 3), True)

    class Broken:
        def predict(self, *a, **kw):
            raise RuntimeError("no model")

    assert isinstance(warm_up(Broken()), Broken)
    assert "warm-up inspection failed" in caplog.text


def test_the_shift_endpoint_through_the_real_server(tiny_checkpoint, shift_files):
    from gradio_client import Client, handle_file

    from inspectkit.inference.handler import InferenceHandler

    handler = InferenceHandler(str(tiny_checkpoint), backend="torch")
    files = shift_files["photos"][:35] + [shift_files["zip"]]
    with running_server(handler) as url:
        client = Client(url, verbose=False, download_files=False)
        out = client.predict([handle_file(f) for f in files], None, 0.45, api_name="/inspect_shift")
        client.close()
    progress, summary, gallery, table, csv_file = out
    assert "<b>40 / 40</b>" in progress and "<b>40</b> photos" in summary
    assert len(gallery) == 40 and len(table["data"]) == 40
