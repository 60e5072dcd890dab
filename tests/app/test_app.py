"""The app: the Inspect tab's logic with a fake handler (a few photos: verdicts, the detail panel, sliders, CSV),
build_demo without launching, and a real server on a loopback port (Gradio API through gradio_client, the JSON
endpoint, lazy loading) with a random-weight checkpoint. Drops of any size are in test_shift.py."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import app
from inspectkit.limits import MAX_BATCH, MAX_NAME_CHARS, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB
from inspectkit.names import safe_name, safe_text
from inspectkit.review import DEFAULT_MARGIN, symmetric_band
from inspectkit.serve.http_api import server_address
from inspectkit.serve.model_source import (
    ENV_MODEL_PATH,
    ENV_MODEL_REPO,
    ENV_MODEL_REVISION,
    ENV_MODEL_SHA256,
    LazyHandler,
    ModelUnavailable,
    resolve_checkpoint,
)
from inspectkit.ui.common import job, session
from inspectkit.ui.common.export import CSV_HEADERS, spreadsheet_safe
from inspectkit.ui.common.job import MAX_JOB_PHOTOS
from inspectkit.ui.common.render import LABEL_NEXT_ROWS, TABLE_HEADERS, label_next_markdown, shown_class
from inspectkit.ui.common.report_view import (
    load_report,
    loaded_model_markdown,
    metrics_markdown,
    model_status,
    provenance_markdown,
    report_images,
)
from inspectkit.ui.common.session import DETAIL_OUTPUTS
from tests.app_server import EXAMPLES, REPO, FakeHandler, by_name, inspect_all, running_server

FORMULA_NAME = '=HYPERLINK("x")|cmd.jpg'


@pytest.fixture
def upload_dir(tmp_path):
    """Files as Gradio leaves them after an upload: good examples, a broken one, a formula-like name."""
    d = tmp_path / "uploads"
    d.mkdir()
    good = [d / EXAMPLES[0].name, d / EXAMPLES[-1].name]
    for src, dst in zip((EXAMPLES[0], EXAMPLES[-1]), good):
        dst.write_bytes(src.read_bytes())
    bad = d / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a JPEG")
    formula = d / FORMULA_NAME
    formula.write_bytes(EXAMPLES[0].read_bytes())
    return good, bad, formula


# ------------------------------------------------------------------------------------------- import and build


@pytest.mark.slow
def test_importing_app_loads_no_model_and_no_torch():
    code = ("import sys, app; heavy = [m for m in ('torch', 'inference_handler', 'onnxruntime', 'cv2') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_build_demo_builds_without_launching(handler):
    import gradio as gr

    demo = app.build_demo(handler)
    assert isinstance(demo, gr.Blocks)
    assert not demo.is_running
    api_names = {d.api_name for d in demo.fns.values()}
    assert {"predict", "predict_batch"} <= api_names
    config = json.dumps(demo.get_config_file(), default=str)
    assert "Decision threshold" in config and "Heat-map opacity" in config
    assert f"up to {MAX_JOB_PHOTOS:,} photos" in config and f"{MAX_UPLOAD_MB} MB per file" in config
    assert f"at most {MAX_BATCH}" in config  # the /predict_batch bound, on the API tab
    # one tab inspects any number of photos: there is no separate tab for many
    assert {b.id for b in demo.blocks.values() if isinstance(b, gr.Tab)} == {"inspect", "adapt", "model", "api"}


def test_build_demo_with_a_loading_model_and_no_report(tmp_path):
    release = threading.Event()
    lazy = LazyHandler(lambda: release.wait(30) and FakeHandler())
    demo = app.build_demo(lazy, reports_dir=tmp_path)
    config = json.dumps(demo.get_config_file(), default=str)
    assert "No evaluation report yet" in config
    assert "confusion_matrix.png" in config and "is not present" in config
    assert "Loading the model in the background" in config
    assert lazy.state == "not started"  # building never starts the model
    release.set()


def test_model_tab_shows_the_committed_report_when_present():
    rep, missing = load_report(REPO / "reports")
    if rep is None:
        pytest.skip(f"no committed evaluation report: {missing}")
    text = metrics_markdown(rep)
    assert "validation" in text and "test, all images" in text and "test, twin-free" in text


def test_examples_are_unmodified_dataset_images():
    assert 1 <= len(EXAMPLES) <= 8
    attribution = (REPO / "examples" / "ATTRIBUTION.md").read_text()
    assert "CC BY-NC-ND 4.0" in attribution and "Ravirajsinh Dabhi" in attribution
    import hashlib

    for p in EXAMPLES:
        assert hashlib.sha256(p.read_bytes()).hexdigest() in attribution, p.name
    manifest = REPO.parent / "shared" / "data" / "casting" / "MANIFEST.sha256"
    if manifest.is_file():
        digests = {line.split()[0] for line in manifest.read_text().splitlines() if line.strip()}
        assert all(hashlib.sha256(p.read_bytes()).hexdigest() in digests for p in EXAMPLES)


# ------------------------------------------------------------------------------------------- UI logic (fake)


def test_a_drop_with_a_bad_file_completes_the_rest(upload_dir):
    good, bad, _ = upload_dir
    v = by_name(inspect_all(FakeHandler(), [str(good[0]), str(bad), str(good[1])]))
    table = v["table"]  # every photo, in the order given
    assert [r[1] for r in table] == ["DEFECT", "ERROR", "OK"]
    assert "broken.jpg" in table[1][5] and "not a readable image" in table[1][5]
    # the gallery leads with the defect; the file that could not be read comes after the judged photos
    assert [cap for _, cap in v["gallery"]] == [f"{good[0].name} \u2014 DEFECT (p=0.900)",
                                                f"{good[1].name} \u2014 OK (p=0.200), needs review",
                                                "broken.jpg \u2014 ERROR"]
    assert all(Path(img).is_file() for img, _ in v["gallery"])
    assert "<b>3 / 3</b> photos" in v["progress"] and "done in" in v["progress"]
    assert "1 not inspected" in v["summary"] and "broken.jpg" in v["summary"]
    # the detail panel shows the gallery's first photo
    assert v["original"].shape == v["overlay"].shape and not np.array_equal(v["original"], v["overlay"])
    assert v["probabilities"] == {"Defect (def_front)": 0.9, "OK (ok_front)": 0.1}  # display names beside classes
    assert "forward" in v["latency"] and "total" in v["latency"]
    assert "DEFECT" in v["badge"] and "0.900" in v["badge"] and good[0].name in v["badge"]


def test_threshold_re_decides_without_the_network(upload_dir):
    good, _, _ = upload_dir
    h = FakeHandler()
    state = inspect_all(h, [str(p) for p in good])[0]
    seen = h.images_seen
    v = by_name(session.redecide(h, state, 0.1))
    assert [r[1] for r in v["table"]] == ["DEFECT", "DEFECT"]  # p(defect) 0.9 and 0.2, both >= 0.1
    assert all(r[3] == "0.1000" for r in v["table"])
    v = by_name(session.redecide(h, state, 0.95))
    assert [r[1] for r in v["table"]] == ["OK", "OK"]
    rows = list(csv.reader(io.StringIO(Path(v["csv"]).read_text(encoding="utf-8-sig"))))
    assert [r[1] for r in rows[1:]] == ["OK", "OK"] and [r[2] for r in rows[1:]] == ["ok_front", "ok_front"]
    v = by_name(session.reblend(h, state, 1.0))
    assert h.images_seen == seen  # neither slider ran the network again
    assert not np.array_equal(v["overlay"], v["original"])


def _zdist(p: float, t: float) -> float:
    """|logit(p) - logit(t)|: how far p is from deciding the other way."""
    return abs(math.log(p / (1 - p)) - math.log(t / (1 - t)))


def _csv_rows(path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))[1:]


def test_needs_review_in_badge_summary_table_csv_and_label_next(upload_dir):
    """The fake handler scores the defect example 0.9 and the OK one 0.2, threshold 0.5, no band of its own: the
    fallback band is DEFAULT_MARGIN logits either side, so 0.2 (1.39 logits away) needs review and 0.9 (2.20) not."""
    good, _, _ = upload_dir
    h = FakeHandler()
    v = by_name(inspect_all(h, [str(good[0]), str(good[1])]))
    state = v["state"]
    want = [_zdist(p, 0.5) <= DEFAULT_MARGIN for p in (0.9, 0.2)]
    assert want == [False, True]
    assert [r[6] for r in v["table"]] == ["needs review" if w else "" for w in want]
    assert "1 needs review" in v["summary"] and "NEEDS REVIEW" not in v["badge"]  # the defect is shown, outside
    assert [r[7] for r in _csv_rows(v["csv"])] == ["no", "yes"]
    assert [r[10] for r in _csv_rows(v["csv"])] == ["2", "1"]  # 0.2 is closer to the threshold: label it first
    assert "needs review" in v["gallery"][1][1] and "needs review" not in v["gallery"][0][1]
    # "Label these next": closest first, with its distance in logits
    label_next = v["label_next"]
    assert label_next.index(good[1].name) < label_next.index(good[0].name)
    assert f"{_zdist(0.2, 0.5):.2f}" in label_next and f"{_zdist(0.9, 0.5):.2f}" in label_next
    assert "1 of 2 inside" in label_next
    assert "NEEDS REVIEW" in by_name(session.select(h, state, 1), DETAIL_OUTPUTS)["badge"]

    # the band follows the threshold slider (same logit distances around the new threshold)
    v = by_name(session.redecide(h, state, 0.85))
    want = [_zdist(p, 0.85) <= DEFAULT_MARGIN for p in (0.9, 0.2)]
    assert want == [True, False]
    assert [r[7] for r in _csv_rows(v["csv"])] == ["yes" if w else "no" for w in want]
    assert [r[10] for r in _csv_rows(v["csv"])] == ["1", "2"]

    # the band slider: a symmetric band of that many logits around the threshold in force, no forward pass
    session.redecide(h, state, 0.5)
    seen = h.images_seen
    for margin in (3.0, 1.0, 0.0):
        v = by_name(session.rereview(h, state, margin))
        want = [_zdist(p, 0.5) <= margin for p in (0.9, 0.2)]
        assert [r[7] for r in _csv_rows(v["csv"])] == ["yes" if w else "no" for w in want]
        assert f"{sum(want)} need" in v["summary"]
    assert h.images_seen == seen
    with pytest.raises(ValueError, match="logits"):
        session.rereview(h, state, -1.0)


def test_label_next_lists_at_most_ten_closest_first(tmp_path):
    names = [f"part_{i:02d}.jpg" for i in range(12)]
    items = [{"name": n, "error": None, "defect_probability": p, "label": "def_front"}
             for n, p in zip(names, np.linspace(0.05, 0.95, 12))]
    items.append({"name": "broken.jpg", "error": "not an image", "defect_probability": None, "label": None})
    thr = 0.6
    band = dict(zip(("low", "high"), symmetric_band(thr, 1.0)))
    md = label_next_markdown(items, ["x"] * len(items), thr, band)
    order = sorted(range(12), key=lambda i: _zdist(items[i]["defect_probability"], thr))
    shown = [n for n in names if n in md]
    assert len(shown) == LABEL_NEXT_ROWS and "broken.jpg" not in md and "2 more in the CSV" in md
    assert sorted(shown, key=md.index) == [names[i] for i in order[:LABEL_NEXT_ROWS]]
    assert label_next_markdown(items[-1:], ["ERROR"], thr, band) == ""


def test_opacity_zero_shows_the_photo(upload_dir):
    good, _, _ = upload_dir
    v = by_name(inspect_all(FakeHandler(), [str(good[0])], opacity=0.0))
    assert np.array_equal(v["original"], v["overlay"])


def test_selecting_a_gallery_photo_shows_its_detail(upload_dir):
    good, _, _ = upload_dir
    h = FakeHandler()
    state = inspect_all(h, [str(p) for p in good])[0]
    seen = h.images_seen
    d = by_name(session.select(h, state, 1), DETAIL_OUTPUTS)
    assert state["selected"] == 1 and good[1].name in d["badge"] and "OK" in d["badge"]
    assert d["probabilities"] == {"Defect (def_front)": 0.2, "OK (ok_front)": 0.8}
    assert "<td>9.0</td>" in d["latency"] and d["original"].shape == d["overlay"].shape
    assert h.images_seen == seen  # shown from what the job kept


def test_a_drop_past_the_job_bound_is_refused_and_keeps_the_results(upload_dir, monkeypatch):
    good, _, _ = upload_dir
    h = FakeHandler()
    state = inspect_all(h, [str(good[0])])[0]
    monkeypatch.setattr(job, "MAX_JOB_PHOTOS", 2)
    seen = h.images_seen
    v = by_name(inspect_all(h, [str(EXAMPLES[0])] * 3, state=state))
    assert "larger than one job may be" in v["progress"] and "batch_inspect.py" in v["progress"]
    assert v["state"] is state and [r["name"] for r in state["rows"]] == [good[0].name]  # nothing lost
    assert h.images_seen == seen


def test_oversized_file_is_reported_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(job, "MAX_UPLOAD_BYTES", 1000)
    h = FakeHandler()
    v = by_name(inspect_all(h, [str(EXAMPLES[0])]))
    assert v["table"][0][1] == "ERROR" and "limit" in v["table"][0][5]
    assert h.images_seen == 0


def test_ui_errors_become_gradio_messages(upload_dir):
    import gradio as gr

    good, _, _ = upload_dir
    state = inspect_all(FakeHandler(), [str(good[0])])[0]
    with pytest.raises(gr.Error, match="must be 0 to 20 logits"):
        session.call(session.rereview, FakeHandler(), None, state, -1.0)
    with pytest.raises(gr.Error, match="heatmap_mode 'fancy' must be one of"):
        list(session.stream(session.reheat, FakeHandler(), None, state, "fancy"))
    assert [r["name"] for r in state["rows"]] == [good[0].name]


def test_files_that_cannot_be_read_raise_one_warning(upload_dir):
    good, bad, _ = upload_dir
    said = []
    inspect_all(FakeHandler(), [str(good[0]), str(bad)], warn=said.append)
    assert len(said) == 1 and said[0].startswith("1 of 2 files could not be inspected: broken.jpg")


def test_csv_is_correct_and_formula_names_stay_text(upload_dir):
    good, bad, formula = upload_dir
    v = by_name(inspect_all(FakeHandler(), [str(formula), str(good[1]), str(bad)]))
    raw = Path(v["csv"]).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0] == CSV_HEADERS
    assert len(rows) == 4
    name, verdict, label, p, thr, ms, err, review, low, high, rank, shown, reason, novelty, photo = rows[1]
    assert name == "'" + FORMULA_NAME  # shown as text by Excel, LibreOffice and Sheets
    assert verdict == "OK" and label == "ok_front" and float(p) == pytest.approx(0.2) and float(thr) == 0.5
    assert shown == "OK"  # the display name beside the raw class name (derived: the fake handler stores none)
    assert float(ms) == pytest.approx(9.0) and err == "" and photo == "1"
    assert (reason, novelty) == ("", "")  # judged, and the fake handler has no guard
    assert rows[2][:2] == [good[1].name, "OK"] and rows[2][14] == "2"
    assert rows[3][1] == "ERROR" and "not a readable image" in rows[3][6]
    # needs review: both readable files have p(defect) 0.2, inside the fallback band around 0.5 (no band on the
    # fake handler); ranked in input order on the tie; the failed file has no flag, band or rank, but its place
    lo, hi = symmetric_band(0.5, DEFAULT_MARGIN)
    assert (review, rank) == ("yes", "1")
    assert float(low) == pytest.approx(lo, abs=1e-4) and float(high) == pytest.approx(hi, abs=1e-4)
    assert rows[2][7] == "yes" and rows[2][10] == "2" and rows[3][7:14] == [""] * 7 and rows[3][14] == "3"
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


@pytest.mark.parametrize("value, expected", [
    ("=1+1", "'=1+1"), ("+cmd", "'+cmd"), ("-2", "'-2"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=x", "'\t=x"),
    (" =x", "' =x"), ("plain.jpg", "plain.jpg"), (0.25, 0.25), (-1.5, -1.5), (None, ""),
])
def test_spreadsheet_safe(value, expected):
    assert spreadsheet_safe(value) == expected


@pytest.mark.parametrize("raw, shown", [
    ("../../etc/passwd", "passwd"), ("C:\\Users\\x\\part.jpg", "part.jpg"), ("a\x00b\x1b[31m.jpg", "ab[31m.jpg"),
    ("evil\u202egpj.exe", "evilgpj.exe"), ("..", "image"), ("", "image"), (None, "image"),
    (FORMULA_NAME, FORMULA_NAME),
])
def test_safe_name(raw, shown):
    assert safe_name(raw) == shown


def test_long_names_are_shortened_keeping_the_extension():
    name = safe_name("x" * 500 + ".jpeg")
    assert len(name) <= MAX_NAME_CHARS and name.endswith(".jpeg")


def test_names_are_escaped_in_html(tmp_path):
    p = tmp_path / "<img src=x onerror=alert(1)>.jpg"
    p.write_bytes(EXAMPLES[0].read_bytes())
    v = by_name(inspect_all(FakeHandler(), [str(p)]))
    assert "<img src=x" not in v["badge"] and "&lt;img src=x" in v["badge"]
    assert "<img src=x" not in v["label_next"] and "&lt;img src=x" in v["label_next"]


# ------------------------------------------------------------------------------------------ lazy loading


def test_lazy_handler_reports_a_failed_load():
    def boom():
        raise ValueError("checkpoint not found: nowhere.pt")

    lazy = LazyHandler(boom)
    with pytest.raises(ModelUnavailable, match="nowhere.pt"):
        lazy.wait(10)
    assert lazy.state == "failed"
    status, thr, _ = model_status(lazy)
    assert "Model not available" in status and "nowhere.pt" in status and thr is None


def test_resolve_checkpoint_local_missing(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_MODEL_REPO, raising=False)
    monkeypatch.setenv(ENV_MODEL_PATH, str(tmp_path / "none.pt"))
    with pytest.raises(ValueError, match="model file not found"):
        resolve_checkpoint()


def test_resolve_checkpoint_from_a_hub_repo(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, revision=None, repo_type=None):
        calls.append((repo_id, filename, revision))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv(ENV_MODEL_REPO, "acme/casting-model")
    monkeypatch.setenv(ENV_MODEL_REVISION, "v1")
    path, expected = resolve_checkpoint()
    assert path == tmp_path / "final_best_model.pt" and expected is None
    assert calls == [("acme/casting-model", "final_best_model.pt", "v1"),
                     ("acme/casting-model", "final_best_model.pt.sha256", "v1"),
                     ("acme/casting-model", "final_best_model.onnx", "v1"),  # the graph served without torch
                     ("acme/casting-model", "final_best_model.onnx.sha256", "v1")]


def test_resolve_checkpoint_offline_names_the_repo(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import OfflineModeIsEnabled

    def offline(*args, **kwargs):  # the test must never reach the network, even where CI has one
        raise OfflineModeIsEnabled("offline mode is enabled (HF_HUB_OFFLINE=1)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setenv(ENV_MODEL_REPO, "acme/does-not-exist-casting")
    with pytest.raises(ValueError, match="acme/does-not-exist-casting"):
        resolve_checkpoint()


@pytest.mark.parametrize("env, expected", [
    ({}, ("0.0.0.0", 7860)), ({"PORT": "8080"}, ("0.0.0.0", 8080)),
    ({"GRADIO_SERVER_PORT": "7000", "PORT": "8080", "GRADIO_SERVER_NAME": "127.0.0.1"}, ("127.0.0.1", 7000)),
])
def test_server_address_from_the_environment(monkeypatch, env, expected):
    for k in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert server_address() == expected


def test_bad_port_is_named(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_PORT", "http")
    with pytest.raises(ValueError, match="'http'"):
        server_address()


def test_page_answers_while_the_model_is_still_loading():
    release = threading.Event()

    def slow():
        release.wait(60)
        return FakeHandler()

    lazy = LazyHandler(slow)
    with running_server(lazy) as url:
        assert httpx.get(url, timeout=30).status_code == 200
        assert httpx.get(url + "api/health", timeout=30).json()["model"] == "loading"
        release.set()
        lazy.wait(30)
        assert httpx.get(url + "api/health", timeout=30).json()["model"] == "ready"
        r = httpx.post(url + "api/inspect", files={"file": (EXAMPLES[0].name, EXAMPLES[0].read_bytes())}, timeout=60)
        assert r.status_code == 200 and r.json()["verdict"] == "DEFECT"


# ------------------------------------------------------------------------------------------ real server


@pytest.mark.slow
def test_gradio_client_gets_the_handlers_verdict(server, handler):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    example = EXAMPLES[0]
    got = client.predict(handle_file(str(example)), None, True, api_name="/predict")
    want = handler.predict(str(example))
    assert got["verdict"] == want.verdict and got["label"] == want.label
    assert got["name"] == example.name and got["threshold"] == pytest.approx(want.threshold)
    for c, p in want.probabilities.items():
        assert got["probabilities"][c] == pytest.approx(p, abs=1e-5)
    assert set(got["latency_ms"]) >= {"decode", "preprocess", "forward", "gradcam", "overlay", "total"}
    png = Image.open(io.BytesIO(base64.b64decode(got["heatmap_png_base64"])))
    assert png.size == Image.open(example).size
    assert got["needs_review"] is want.needs_review and got["review_band"] == pytest.approx(want.review_band, abs=1e-6)

    # another threshold re-decides from the same probabilities
    p = want.defect_probability
    low = client.predict(handle_file(str(example)), max(0.001, p - 0.01), False, api_name="/predict")
    assert low["verdict"] == "DEFECT" and low["label"] == handler.defect_class and "heatmap_png_base64" not in low


def test_gradio_client_batch_with_a_bad_file(server, upload_dir):
    from gradio_client import Client, handle_file

    good, bad, _ = upload_dir
    client = Client(server, verbose=False)
    out = client.predict([handle_file(str(good[0])), handle_file(str(bad)), handle_file(str(good[1]))], None,
                         api_name="/predict_batch")
    assert [r["name"] for r in out] == [good[0].name, "broken.jpg", good[1].name]
    assert out[0]["verdict"] in ("OK", "DEFECT") and out[2]["verdict"] in ("OK", "DEFECT")
    assert out[1]["verdict"] is None and "not a readable image" in out[1]["error"]
    assert out[1]["needs_review"] is None and isinstance(out[0]["needs_review"], bool)


def test_json_endpoint_good_and_bad_files(server, handler):
    example = EXAMPLES[1]
    r = httpx.post(server + "api/inspect", params={"heatmap": "true"},
                   files={"file": (example.name, example.read_bytes(), "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    want = handler.predict(str(example), heatmap=False)
    assert body["verdict"] == want.verdict and body["defect_probability"] == pytest.approx(want.defect_probability, abs=1e-5)
    assert body["threshold"] == pytest.approx(handler.threshold) and body["latency_ms"]["total"] > 0
    assert Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"]))).format == "PNG"

    bad = httpx.post(server + "api/inspect", files={"file": ("notes.jpg", b"hello, not an image")}, timeout=60)
    assert bad.status_code == 422 and "notes.jpg" in bad.json()["detail"] and "not a readable image" in bad.json()["detail"]
    empty = httpx.post(server + "api/inspect", files={"file": ("empty.png", b"")}, timeout=60)
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    missing = httpx.post(server + "api/inspect", timeout=60)
    assert missing.status_code == 422
    wrong_thr = httpx.post(server + "api/inspect", params={"threshold": "2"},
                           files={"file": (example.name, example.read_bytes())}, timeout=60)
    assert wrong_thr.status_code == 422 and "threshold" in wrong_thr.text
    big = httpx.post(server + "api/inspect", files={"file": ("huge.png", b"\0" * (MAX_UPLOAD_BYTES + 10))},
                     timeout=120)
    assert big.status_code == 413 and f"{MAX_UPLOAD_MB} MB" in big.json()["detail"]
    weird = httpx.post(server + "api/inspect", files={"file": ("../../" + FORMULA_NAME, example.read_bytes())},
                       timeout=60)
    # httpx percent-encodes the quotes in the multipart header; the path part is dropped either way
    assert weird.status_code == 200 and weird.json()["name"].startswith("=HYPERLINK(")
    assert weird.json()["name"].endswith(")|cmd.jpg") and "/" not in weird.json()["name"]

    # the server still answers after all that
    assert httpx.get(server, timeout=30).status_code == 200
    health = httpx.get(server + "api/health", timeout=30).json()  # (it also reports the guard and drift: http_api's)
    assert {k: health.get(k) for k in ("status", "model", "error")} == {"status": "ok", "model": "ready", "error": None}


def test_json_endpoint_heat_map_modes_and_display_names(server, handler):
    example = EXAMPLES[0]

    def ask(**params):
        return httpx.post(server + "api/inspect", params={"heatmap": "true", **params},
                          files={"file": (example.name, example.read_bytes(), "image/jpeg")}, timeout=60)

    served, normalised = ask().json(), ask(heatmap_mode="class-normalised").json()
    assert served["heatmap_mode"] == "defect-evidence" and normalised["heatmap_mode"] == "class-normalised"
    assert served["heatmap_scale"] is None  # the random checkpoint has no scale: the stated per-image fallback
    assert served["display_names"] == {"def_front": "Defect", "ok_front": "OK"}
    assert served["display_label"] == served["display_names"][served["label"]]
    bad = ask(heatmap_mode="fancy")
    assert bad.status_code == 422 and "class-normalised" in bad.text
    schema = httpx.get(server + "openapi.json", timeout=30).json()
    props = schema["components"]["schemas"]["InspectResponse"]["properties"]
    assert {"display_label", "display_names", "heatmap_mode", "heatmap_scale"} <= set(props)

    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    got = client.predict(handle_file(str(example)), None, True, "class-normalised", api_name="/predict")
    assert got["heatmap_mode"] == "class-normalised" and got["display_label"] in ("Defect", "OK")


def test_heat_map_choice_inspects_the_gallery_again_and_labels_are_shown(upload_dir):
    good, _, _ = upload_dir
    h = FakeHandler()
    state = inspect_all(h, [str(good[0])])[0]
    seen = h.images_seen
    *steps, last = session.reheat(h, state, "class-normalised")
    v = by_name(last)
    assert h.images_seen == seen + 1 and state["heatmap_mode"] == "class-normalised"
    assert h.heatmap_modes == [None, "class-normalised"]  # the model's default first, then the choice
    assert "Redrawing the heat maps" in steps[0][1]
    badge, probs, table = v["badge"], v["probabilities"], v["table"]
    assert "class <span class='class-label'>" in badge and ("Defect (def_front)" in badge or "OK (ok_front)" in badge)
    assert set(probs) == {"Defect (def_front)", "OK (ok_front)"}
    col = TABLE_HEADERS.index("class")
    assert table[0][col] in ("Defect (def_front)", "OK (ok_front)")
    with pytest.raises(ValueError, match="heatmap_mode 'x' must be one of"):
        list(session.reheat(h, state, "x"))
    empty = session.new_state()
    list(session.reheat(h, empty, ""))  # nothing inspected yet: nothing to run
    assert empty["heatmap_mode"] is None and h.images_seen == seen + 1
    # the next drop is drawn with the session's choice
    inspect_all(h, [str(good[1])], state=state)
    assert h.heatmap_modes[-1] == "class-normalised"


def test_model_tab_shows_the_score_distribution_not_the_flat_sweep(tmp_path):
    assert "threshold_curve.png" not in [name for name, _, _ in report_images(tmp_path)]
    config = json.dumps(app.build_demo(FakeHandler(), reports_dir=tmp_path).get_config_file(), default=str)
    assert "score-distribution" in config and "heat-legend" in config and "heatmap-mode" in config
    assert "Per-image normalised class CAM" in config


def test_model_tab_states_the_review_band(handler):
    md = loaded_model_markdown(handler)
    band = handler.review_band
    assert f"| needs-review band | {band['low']:.4f} to {band['high']:.4f} (fallback:" in md
    assert session.initial_review_margin(handler) == band["margin"]


def test_json_endpoint_says_needs_review(server, handler):
    """needs_review is p(defect) inside the band returned with it: the model's band by default, moved with the
    threshold parameter, or review_margin logits either side."""
    example = EXAMPLES[1]
    p = handler.predict(str(example), heatmap=False).defect_probability
    t0 = handler.threshold

    def ask(**params):
        r = httpx.post(server + "api/inspect", params=params, files={"file": (example.name, example.read_bytes())},
                       timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    body = ask()
    band = handler.review_band_at()
    assert body["review_band"] == pytest.approx({"low": band["low"], "high": band["high"]}, abs=1e-6)
    assert body["needs_review"] is (band["low"] <= p <= band["high"])
    # margins either side of p's own distance: just outside, then just inside
    d = _zdist(p, t0)
    assert ask(review_margin=d * 0.9)["needs_review"] is False
    assert ask(review_margin=d * 1.1 + 1e-6)["needs_review"] is True
    # another threshold: the band moves with it (the fallback band here: DEFAULT_MARGIN logits either side)
    t = 0.2 if p > 0.5 else 0.8
    moved = ask(threshold=t)
    lo, hi = symmetric_band(t, DEFAULT_MARGIN)
    assert moved["review_band"] == pytest.approx({"low": lo, "high": hi}, abs=1e-6)
    assert moved["needs_review"] is (_zdist(p, t) <= DEFAULT_MARGIN)
    bad = httpx.post(server + "api/inspect", params={"review_margin": "-1"},
                     files={"file": (example.name, example.read_bytes())}, timeout=60)
    assert bad.status_code == 422 and "review_margin" in bad.text


def test_json_endpoint_is_in_the_openapi_schema(server):
    schema = httpx.get(server + "openapi.json", timeout=30).json()
    op = schema["paths"]["/api/inspect"]["post"]
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert {"200", "413", "422"} <= set(op["responses"])


def test_ui_pipeline_with_the_real_handler(handler, upload_dir):
    good, bad, _ = upload_dir
    v = by_name(inspect_all(handler, [str(good[0]), str(bad)]))
    want = handler.predict(str(good[0]))
    assert v["table"][0][1] == want.verdict and v["table"][1][1] == "ERROR"
    assert set(v["probabilities"]) == {shown_class(handler, c) for c in handler.class_names}
    assert len(v["gallery"]) == 2 and v["original"].shape == want.image.shape
    assert v["state"]["rows"][0]["defect_probability"] == pytest.approx(want.defect_probability, abs=1e-6)


def test_error_messages_quote_the_harmless_name(tmp_path):
    p = tmp_path / "line\nbreak\u202e.jpg"
    p.write_bytes(b"not an image")
    v = by_name(inspect_all(FakeHandler(), [str(p)]))
    note = v["table"][0][5]
    assert "linebreak.jpg" in note and "\n" not in note and "\u202e" not in note
    assert "\n" not in v["summary"] and "\u202e" not in v["summary"] and "\u202e" not in v["badge"]
    assert safe_text("a\r\n\tb\u200bc") == "a b c"


def _metrics(n, acc, missed, false_alarms):
    return {"n": n, "accuracy": acc, "roc_auc": 0.998, "missed_defects": missed, "false_alarms": false_alarms,
            "threshold": 0.42, "confusion_matrix": [[100, missed], [false_alarms, 60]],
            "per_class": {"def_front": {"precision": 0.99, "recall": 0.98, "f1": 0.985, "support": 100 + missed},
                          "ok_front": {"precision": 0.97, "recall": 0.96, "f1": 0.965, "support": 60 + false_alarms}}}


def test_model_tab_shows_metrics_plots_and_provenance(tmp_path):
    rep = {"model": {"arch": "mobilenet_v2", "class_names": ["def_front", "ok_front"], "defect_class": "def_front",
                     "threshold": 0.42},
           "train_config": {"weights": "../shared/weights/mobilenet_v2_imagenet1k.pth"},
           "training_data": {"counts": {"def_front": 3758, "ok_front": 2875}},
           "validation": _metrics(900, 0.991, 2, 6), "test": {"all": _metrics(715, 0.9944, 3, 1),
                                                              "twin_free": _metrics(120, 0.975, 2, 1)},
           "test_data": {"twins": {"exact": 40, "near": 555, "none": 120}},
           "robustness": {"rotate_15": {"accuracy": 0.95, "missed_defects": 9, "false_alarms": 20}}}
    (tmp_path / "evaluation.json").write_text(json.dumps(rep))
    (tmp_path / "evaluation.md").write_text("# Evaluation of mobilenet_v2\n")
    Image.new("RGB", (40, 30), "white").save(tmp_path / "confusion_matrix.png")
    text = metrics_markdown(rep)
    assert "| test, twin-free | 120 | 97.50 % | 98.00 % | 99.00 % | 0.9980 | 2 | 1 | 0.4200 |" in text
    assert "| validation | 900 | 99.10 %" in text and "rotate_15" in text and "120 of them" in text
    prov = provenance_markdown(rep)
    assert "CC BY-NC-ND 4.0" in prov and "google-coral" in prov and "def_front: 3758" in prov
    config = json.dumps(app.build_demo(FakeHandler(), reports_dir=tmp_path).get_config_file(), default=str)
    assert "test, twin-free" in config and "confusion_matrix.png" in config
    assert "training_curves.png` is not present" in config  # the missing plots are named
    assert "Full evaluation report" in config


def test_broken_report_is_reported_not_raised(tmp_path):
    (tmp_path / "evaluation.json").write_text("{not json")
    rep, why = load_report(tmp_path)
    assert rep is None and "could not be read" in why


def test_json_endpoint_refuses_an_oversized_chunked_body(server):
    """No Content-Length (chunked): the bytes are counted as they arrive and the upload is cut off at the limit."""
    boundary = b"----chunked"

    def body():
        yield (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
               b"Content-Type: image/jpeg\r\n\r\n")
        chunk = b"\0" * (1 << 20)
        for _ in range(MAX_UPLOAD_MB + 2):
            yield chunk
        yield b"\r\n--" + boundary + b"--\r\n"

    r = httpx.post(server + "api/inspect", content=body(), timeout=120,
                   headers={"content-type": "multipart/form-data; boundary=" + boundary.decode()})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert httpx.get(server + "api/health", timeout=30).status_code == 200


def test_a_hub_model_with_no_recorded_digest_is_refused(monkeypatch, tmp_path):
    import huggingface_hub

    def fake_download(repo_id, filename, revision=None, repo_type=None):
        if filename.endswith((".sha256", ".onnx")):  # no digest, and no graph (tests/unit/test_lean_serving.py has those)
            raise FileNotFoundError(filename)
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv(ENV_MODEL_REPO, "acme/casting-model")
    monkeypatch.delenv(ENV_MODEL_SHA256, raising=False)
    with pytest.raises(ValueError, match=ENV_MODEL_SHA256):
        resolve_checkpoint()
    monkeypatch.setenv(ENV_MODEL_SHA256, "a" * 64)  # a pinned digest is enough
    assert resolve_checkpoint() == (tmp_path / "final_best_model.pt", "a" * 64)


@pytest.mark.slow
def test_single_photo_input_hands_over_the_file_unchanged(tmp_path):
    """A grayscale upload must reach the handler as the user's file, not re-encoded by Gradio."""
    import gradio as gr
    from gradio.data_classes import FileData

    demo = app.build_demo(FakeHandler())
    single = next(b for b in demo.blocks.values() if isinstance(b, gr.Image) and b.elem_id == "single-image")
    gray = tmp_path / "gray.jpg"
    Image.open(EXAMPLES[0]).convert("L").save(gray, quality=95)
    out = single.preprocess(FileData(path=str(gray), orig_name="gray.jpg"))
    assert Path(out).read_bytes() == gray.read_bytes()
