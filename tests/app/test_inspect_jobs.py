"""Drops of any size on the Inspect tab (a whole shift of photos, a folder, zip files): inspected MAX_BATCH at a time
with the results arriving as they come, every photo with a verdict row, the gallery leading with defects, UNUSABLE
and needs-review photos, the sliders and a click in the gallery working on the stored results, Stop, the job bounds,
and the server's quiet queue and model warm-up. A fake handler for the logic; a random-weight checkpoint through
the real server."""

from __future__ import annotations

import csv
import io
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import app
from inspectkit.limits import MAX_BATCH, PROGRESS_POLL_S, QUEUE_POLL_S
from inspectkit.serve.http_api import create_app
from inspectkit.serve.model_source import ModelUnavailable, warm_up
from inspectkit.serve.results import inspect_one
from inspectkit.ui import inspect_tab
from inspectkit.ui.common import job, job_view, session
from inspectkit.ui.common.job_view import priority
from inspectkit.ui.common.session import DETAIL_OUTPUTS
from tests.app_server import FakeHandler, by_name, inspect_all, running_server
from tests.support import write_images

#: Gallery groups in the order the gallery must show them (job_view.priority).
GROUPS = {("DEFECT", True): 0, ("DEFECT", False): 1, ("UNUSABLE", False): 2, ("OK", True): 3, ("ERROR", False): 4,
          ("OK", False): 5}


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


class LineFake(FakeHandler):
    """A line with every kind of photo: "def" defects (0.9), "near" parts close to the threshold (0.45), "dark"
    photos its guard calls UNUSABLE (too dark), the rest clearly OK (0.02)."""

    unusable = {"dark": "too dark"}
    guard = object()  # only "is there one" is read by the Inspect tab

    def defect_probability_for(self, name: str) -> float:
        return 0.9 if "def" in name else 0.45 if "near" in name else 0.02


@pytest.fixture
def line(tmp_path) -> list[str]:
    """70 photos, more than two chunks: 10 defects, 8 near the threshold, 6 dark, 45 clear OK parts, 1 broken."""
    r = np.random.default_rng(8)
    groups = [write_images(tmp_path / k, r, n, k == "def", prefix=k)
              for k, n in (("ok", 25), ("def", 10), ("near", 8), ("dark", 6), ("okb", 20))]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a JPEG")
    return [str(p) for g in groups for p in g] + [str(broken)]


def steps_of(handler, files, folder=None, opacity=0.45, state=None) -> list[tuple]:
    return list(session.inspect(handler, files, folder, opacity, state))


def csv_rows(path: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))


def group_of(caption: str) -> int:
    """The gallery group of a caption "name — VERDICT (p=...)[, needs review]"."""
    verdict = caption.split(" \u2014 ")[1].split(" ")[0]
    return GROUPS[(verdict, caption.endswith("needs review"))]


# ------------------------------------------------------------------------------------------ any number of photos


def test_a_drop_larger_than_max_batch_gives_every_photo_a_verdict_row(shift_files):
    files = shift_files["photos"] + [shift_files["broken"], shift_files["empty"], shift_files["zip"]]
    n = 40 + 2 + 5
    assert n > MAX_BATCH
    steps = steps_of(FakeHandler(), files)
    assert len(steps) >= 3, "the progress, then the results chunk by chunk"
    assert all(not isinstance(x, Exception) for step in steps for x in step)
    v = by_name(steps[-1])
    state = v["state"]
    assert all(step[0] is state for step in steps)  # the same session state grows as the chunks arrive
    assert len(state["rows"]) == n and state["total"] == n
    assert f"<b>{n} / {n}</b>" in v["progress"] and "done in" in v["progress"] and "photos/s" in v["progress"]
    assert f"<b>{n}</b> photos" in v["summary"] and "15 DEFECT" in v["summary"] and "30 OK" in v["summary"]
    assert "2 not inspected" in v["summary"]
    # every photo has its row, with a verdict; only the broken and the empty file are errors, with the reason
    verdicts = {r[0]: r[1] for r in v["table"]}
    assert len(v["table"]) == n and set(verdicts.values()) == {"DEFECT", "OK", "ERROR"}
    assert {k for k, x in verdicts.items() if x == "ERROR"} == {"broken.jpg", "empty.jpg"}
    rows = csv_rows(v["csv"])
    assert len(rows) == n and {r["file"] for r in rows} >= {"more.zip/zok_000.jpg", "broken.jpg", "def_000.jpg"}
    assert next(r for r in rows if r["file"] == "empty.jpg")["error"].endswith("is empty (0 bytes)")
    assert [r["photo"] for r in rows if r["file"] in ("ok_000.jpg", "def_000.jpg")] == ["1", "11"]
    # the gallery leads with the defects and shows every photo here (fewer than GALLERY_MAX)
    assert [cap.split(" \u2014 ")[1].split(" ")[0] for _, cap in v["gallery"][:15]] == ["DEFECT"] * 15
    assert len(v["gallery"]) == n and all(Path(img).is_file() for img, _ in v["gallery"])
    assert "DEFECT" in v["badge"] and v["original"] is not None  # the first photo of the gallery, shown large


def test_the_gallery_orders_defects_unusable_and_needs_review_first(line):
    h = LineFake()
    state = inspect_all(h, line)[0]
    v = by_name(session.rereview(h, state, 1.0))  # 0.45 is 0.2 logits from 0.5 (review), 0.02 is 3.9 (not)
    groups = [group_of(cap) for _, cap in v["gallery"]]
    assert groups == sorted(groups) and len(groups) == len(line)
    counts = {g: groups.count(g) for g in set(groups)}
    assert counts == {1: 10, 2: 6, 3: 8, 4: 1, 5: 45}
    unusable = [cap for _, cap in v["gallery"] if group_of(cap) == 2]
    assert all(" \u2014 UNUSABLE \u2014 too dark (p=0.020, not judged)" in c for c in unusable)
    assert "6 UNUSABLE</span> (6 too dark)" in v["summary"] and "8 need review" in v["summary"]


def test_chunks_go_through_the_model_max_batch_at_a_time(shift_files):
    seen = []

    class Counting(FakeHandler):
        def predict_batch(self, images, *a, **kw):
            seen.append(len(images))
            return super().predict_batch(images, *a, **kw)

    steps_of(Counting(), shift_files["photos"])
    assert seen == [MAX_BATCH, 40 - MAX_BATCH]


def test_the_gallery_is_capped_and_says_so_while_the_table_has_every_photo(shift_files, monkeypatch):
    monkeypatch.setattr(job_view, "GALLERY_MAX", 6)
    v = by_name(inspect_all(FakeHandler(), shift_files["photos"]))
    assert len(v["gallery"]) == 6 and all("DEFECT" in cap for _, cap in v["gallery"])
    assert "shows 6 of the 40 photos" in v["summary"] and "The table and the CSV have every photo" in v["summary"]
    assert len(v["table"]) == 40 and len(csv_rows(v["csv"])) == 40


def test_priority_puts_defects_unusable_and_needs_review_first():
    rows = [{"verdict": "OK", "defect_probability": 0.1}, {"verdict": "UNUSABLE", "defect_probability": 0.2,
                                                           "novelty": 2.0},
            {"verdict": "OK", "defect_probability": 0.45}, {"verdict": "ERROR", "defect_probability": None},
            {"verdict": "DEFECT", "defect_probability": 0.99}, {"verdict": "UNUSABLE", "defect_probability": 0.9,
                                                                "novelty": 7.0},
            {"verdict": "DEFECT", "defect_probability": 0.55}]
    reviews = [False, None, True, None, False, None, True]
    order = sorted(range(len(rows)), key=lambda i: priority(rows[i], review=reviews[i]))
    assert [(rows[i]["verdict"], rows[i].get("novelty"), reviews[i]) for i in order] == [
        ("DEFECT", None, True), ("DEFECT", None, False), ("UNUSABLE", 7.0, None), ("UNUSABLE", 2.0, None),
        ("OK", None, True), ("ERROR", None, None), ("OK", None, False)]


# ------------------------------------------------------------------------------- the stored results of a job


def test_redeciding_a_large_drop_changes_verdicts_without_a_new_inspection(line):
    h = LineFake()
    state = inspect_all(h, line)[0]
    seen = h.images_seen
    before = {r["name"]: r["verdict"] for r in state["rows"]}
    v = by_name(session.redecide(h, state, 0.3))  # the parts near the threshold (0.45) become defects
    after = {r[0]: r[1] for r in v["table"]}
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {f"near_{i:03d}.jpg" for i in range(8)} and all(after[k] == "DEFECT" for k in changed)
    assert all(after[f"dark_{i:03d}.jpg"] == "UNUSABLE" for i in range(6))  # at any threshold
    assert "18 DEFECT" in v["summary"] and "threshold 0.300" in v["summary"]
    assert sum(r["verdict"] == "DEFECT" for r in csv_rows(v["csv"])) == 18
    assert h.images_seen == seen  # no forward pass
    v = by_name(session.redecide(h, state, 0.95))
    assert "0 DEFECT" in v["summary"] and h.images_seen == seen


def test_selecting_a_gallery_photo_of_a_large_drop_shows_its_detail(line):
    h = LineFake()
    v = by_name(inspect_all(h, line))
    state = v["state"]
    k = next(i for i, (_, cap) in enumerate(v["gallery"]) if cap.startswith("dark_002.jpg"))
    seen = h.images_seen
    d = by_name(session.select(h, state, k), DETAIL_OUTPUTS)
    assert "dark_002.jpg" in d["badge"] and "UNUSABLE \u2014 too dark" in d["badge"] and "novelty 9" in d["badge"]
    assert set(d["probabilities"]) == {"Defect (def_front) (not judged)", "OK (ok_front) (not judged)"}
    assert "<td>9.0</td>" in d["latency"] and d["original"].shape == d["overlay"].shape
    assert not np.array_equal(d["original"], d["overlay"])
    assert h.images_seen == seen
    # the selection holds when the threshold moves (the gallery's order may change, the photo shown does not)
    assert "dark_002.jpg" in by_name(session.redecide(h, state, 0.1))["badge"]


def test_the_opacity_slider_redraws_the_selected_photo_and_the_gallery(shift_files):
    h = FakeHandler()
    v = by_name(inspect_all(h, shift_files["photos"][:3]))
    w = by_name(session.reblend(h, v["state"], 0.9))
    assert [c for _, c in w["gallery"]] == [c for _, c in v["gallery"]]
    for (a, _), (b, _) in zip(v["gallery"], w["gallery"]):
        assert a != b and Path(b).is_file() and Path(a).read_bytes() != Path(b).read_bytes()
    assert not np.array_equal(v["overlay"], w["overlay"]) and np.array_equal(v["original"], w["original"])
    assert h.images_seen == 3


def test_the_heat_map_choice_inspects_the_gallerys_photos_only(shift_files, monkeypatch):
    monkeypatch.setattr(job_view, "GALLERY_MAX", 4)
    h = FakeHandler()
    state = inspect_all(h, shift_files["photos"])[0]
    *_, last = session.reheat(h, state, "class-normalised")
    assert h.images_seen == 40 + 4 and h.heatmap_modes[-1] == "class-normalised"
    assert len(by_name(last)["table"]) == 40


def test_stop_ends_the_job_after_its_chunk_and_keeps_every_result(shift_files):
    class Slow(FakeHandler):
        def predict_batch(self, images, *a, **kw):
            time.sleep(0.2)
            return super().predict_batch(images, *a, **kw)

    h = Slow()
    files = shift_files["photos"] * 3  # 120 photos: four chunks
    steps = session.inspect(h, files, None, 0.45, None)
    state = next(steps)[0]
    next(steps)  # the first chunk is in
    session.stop(h, state)
    rest = list(steps)
    v = by_name(rest[-1])
    assert len(state["rows"]) < len(files) and len(state["rows"]) % MAX_BATCH == 0
    assert len(v["table"]) == len(state["rows"]) == h.images_seen  # every photo inspected is kept and shown
    assert "stopped after" in v["progress"] and "the results so far are kept" in v["progress"]


def test_a_threshold_moved_during_a_job_holds_for_the_photos_still_to_come(shift_files):
    h = FakeHandler()
    steps = session.inspect(h, shift_files["photos"], None, 0.45, None)
    state = next(steps)[0]
    next(steps)  # the first chunk is in
    session.redecide(h, state, 0.1)
    v = by_name(list(steps)[-1])
    assert {r[1] for r in v["table"]} == {"DEFECT"} and "40 DEFECT" in v["summary"]


def test_a_model_lost_during_a_job_keeps_the_photos_done(shift_files):
    class Failing(FakeHandler):
        def predict_batch(self, images, *a, **kw):
            if self.images_seen:
                raise ModelUnavailable("the model file was removed")
            return super().predict_batch(images, *a, **kw)

    steps = steps_of(Failing(), shift_files["photos"])
    state, progress = steps[-1][:2]
    assert len(state["rows"]) == MAX_BATCH and "Stopped after 32 of 40 photos: the model file was removed" in progress


@pytest.mark.parametrize("bound, value", [("MAX_JOB_PHOTOS", 30), ("MAX_JOB_BYTES", 20_000)])
def test_a_job_past_its_bound_gets_a_clear_message_and_runs_nothing(bound, value, shift_files, monkeypatch):
    monkeypatch.setattr(job, bound, value)
    handler = FakeHandler()
    steps = steps_of(handler, shift_files["photos"])
    assert len(steps) == 1 and handler.images_seen == 0
    msg = steps[0][1]
    assert "job-msg error" in msg and "larger than one job may be" in msg and "batch_inspect.py" in msg


def test_an_empty_drop_asks_for_photos():
    state, msg, *_ = steps_of(FakeHandler(), None)[-1]
    assert "Drop photos" in msg and state["rows"] == []


def test_a_folder_upload_keeps_the_photos_only(shift_files, tmp_path):
    note = tmp_path / "README.txt"
    note.write_text("line 3, night shift")
    state = inspect_all(FakeHandler(), None, folder=shift_files["photos"][:3] + [str(note)])[0]
    assert [r["name"] for r in state["rows"]] == [Path(p).name for p in shift_files["photos"][:3]]


def test_zip_of_overlays_has_every_inspected_photo(shift_files):
    state = inspect_all(FakeHandler(), shift_files["photos"][:5] + [shift_files["broken"]])[0]
    with zipfile.ZipFile(session.overlays_zip(state)) as z:
        names = z.namelist()
    assert len(names) == 5 and all(n.endswith(".jpg") for n in names)
    with pytest.raises(ValueError, match="no heat-map overlays yet"):
        session.overlays_zip(session.new_state())


@pytest.mark.slow
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
    job_thread = threading.Thread(target=lambda: steps_of(h, shift_files["photos"] + shift_files["photos"][:30]))
    job_thread.start()
    deadline = time.monotonic() + 10
    while not order and time.monotonic() < deadline:
        time.sleep(0.01)
    inspect_one(h, shift_files["photos"][0], "x.jpg")  # waits for the chunk in progress, not the job
    job_thread.join(timeout=30)
    # (the fake's predict runs through its predict_batch: the "chunk of 1" is the other request's)
    assert order == ["chunk of 32", "other request", "chunk of 1", "chunk of 32", "chunk of 6"], order


# ------------------------------------------------------------------------------------------------ the server


def test_inspections_have_their_own_concurrency_group_and_a_stop_button():
    import gradio as gr

    demo = app.build_demo(FakeHandler())
    fns = [f for f in demo.fns.values() if f.api_name in ("inspect_files", "inspect_upload", "inspect_single")]
    assert len(fns) == 3
    assert all(f.concurrency_id == "inspect" and f.concurrency_limit == inspect_tab.CONCURRENT_JOBS for f in fns)
    # their first input is the session's model choice (a State: not a parameter of the API endpoint)
    assert all(isinstance(f.inputs[0], gr.State) and f.inputs[0].value is None for f in fns)
    stop = next(f for f in demo.fns.values() if f.api_name == "stop")
    assert stop.concurrency_limit is None  # Stop is never queued behind the job it stops


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


@pytest.mark.slow
@pytest.mark.slow
def test_a_large_drop_through_the_real_server(tiny_checkpoint, shift_files):
    from gradio_client import Client, handle_file

    from inspectkit.inference.handler import InferenceHandler

    handler = InferenceHandler(str(tiny_checkpoint), backend="torch")
    files = shift_files["photos"][:35] + [shift_files["zip"]]
    with running_server(handler) as url:
        client = Client(url, verbose=False, download_files=False)
        out = client.predict([handle_file(f) for f in files], None, 0.45, api_name="/inspect_files")
        client.close()
    v = dict(zip(session.VIEW_OUTPUTS, out))
    assert "<b>40 / 40</b>" in v["progress"] and "<b>40</b> photos" in v["summary"]
    assert len(v["gallery"]) == 40 and len(v["table"]["data"]) == 40
    assert {row[1] for row in v["table"]["data"]} <= {"OK", "DEFECT"}
