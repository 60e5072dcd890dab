"""The guard and the drift monitor through the JSON API and the Gradio /predict endpoint, on a real server (the app
factory, uvicorn on a free 127.0.0.1 port): UNUSABLE with its reason and novelty, kept at any threshold; the guard
on or off (and why) in /api/health; the drift alarm over the server's recent requests, and /api/drift.

The guarded checkpoint (conftest ``guarded_checkpoint``) has random weights: its novelty says little, so the tests
lean on the image checks (a blank, dark or blown-out frame) and on the drift of brightness. No timing assertions.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from inspectkit.serve.http_api import create_api
from inspectkit.serve.model_source import LazyHandler
from tests.support import synthetic_casting

pytestmark = pytest.mark.slow

VERDICTS = ("OK", "DEFECT", "UNUSABLE")
#: the sizes the fixture's guard was fitted on, in turn (conftest.add_guard): a stream of them is a steady line
FIT_SIZES = [(96, 96), (96, 120), (120, 96)]


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def white() -> bytes:
    return png(np.full((96, 96, 3), 255, np.uint8))


def casting(seed: int, scale: float = 1.0) -> bytes:
    """A generated casting of the fit's size mix, its exposure scaled by ``scale`` (0.35: a failing lamp)."""
    rgb = synthetic_casting(np.random.default_rng(seed), seed % 2 == 0, FIT_SIZES[seed % 3])
    return png(np.clip(rgb.astype(np.float32) * scale, 0, 255).astype(np.uint8))


def inspect(client: httpx.Client, data: bytes, name: str = "part.png", **params) -> dict:
    r = client.post("/api/inspect", params=params, files={"file": (name, data, "image/png")})
    assert r.status_code == 200, r.text[:300]
    return r.json()


def check_verdict(body: dict) -> None:
    """The contract of one answer: OK/DEFECT by the threshold rule without a reason, or UNUSABLE with one."""
    from inspectkit.guard import REASONS

    assert body["verdict"] in VERDICTS and body["error"] is None
    assert body["label"] in body["probabilities"]
    if body["verdict"] == "UNUSABLE":
        assert body["unusable_reason"] in REASONS
    else:
        assert body["unusable_reason"] is None
        assert (body["verdict"] == "DEFECT") == (body["defect_probability"] >= body["threshold"])


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded_handler(guarded_checkpoint, tmp_path_factory):
    from inspectkit.inference.handler import InferenceHandler

    h = InferenceHandler(guarded_checkpoint, cache_dir=tmp_path_factory.getbasetemp() / "onnx-cache")
    assert h.guard is not None, h.guard_off_reason
    return h


@pytest.fixture(scope="module")
def plain_handler(tiny_checkpoint, tmp_path_factory):
    from inspectkit.inference.handler import InferenceHandler

    return InferenceHandler(tiny_checkpoint, cache_dir=tmp_path_factory.getbasetemp() / "onnx-cache")


@pytest.fixture(scope="module")
def guarded_server(guarded_handler):
    """The whole app (JSON API + Gradio) on the guarded model."""
    from tests.app_server import running_server

    with running_server(guarded_handler) as url:
        yield url


@pytest.fixture(scope="module")
def client(guarded_server):
    with httpx.Client(base_url=guarded_server, timeout=60) as c:
        yield c


# -- /api/inspect -------------------------------------------------------------------------------------------------
def test_a_blank_frame_is_unusable_with_a_reason_and_novelty(client):
    body = inspect(client, white(), "blank.png")
    check_verdict(body)
    assert body["verdict"] == "UNUSABLE" and body["unusable_reason"] == "overexposed"
    assert isinstance(body["novelty"], float) and np.isfinite(body["novelty"])
    # the network's own answer is still there for the engineer; needs_review keeps its meaning
    assert body["label"] in ("def_front", "ok_front") and body["display_label"] in ("Defect", "OK")
    low, high = body["review_band"]["low"], body["review_band"]["high"]
    assert body["needs_review"] == (low <= body["defect_probability"] <= high)
    assert "image_stats" not in body  # the per-photo JSON stays lean


def test_a_generated_casting_is_judged(client):
    bodies = [inspect(client, casting(seed), f"cast{seed}.png") for seed in range(3)]
    for b in bodies:
        check_verdict(b)
        assert isinstance(b["novelty"], float)
        # they pass every image check; the random-weight model's novelty is the only thing that may call one novel
        assert b["unusable_reason"] in (None, "not a casting"), b
    assert any(b["verdict"] in ("OK", "DEFECT") for b in bodies)


@pytest.mark.parametrize("threshold", [0.01, 0.5, 0.99])
def test_another_threshold_keeps_unusable(client, threshold):
    body = inspect(client, white(), "blank.png", threshold=threshold)
    assert body["verdict"] == "UNUSABLE" and body["unusable_reason"] == "overexposed"
    assert body["threshold"] == threshold
    # the label is re-decided at the threshold like any photo's: the defect class from p >= threshold
    assert (body["label"] == "def_front") == (body["defect_probability"] >= threshold)


def test_a_judged_casting_is_redecided_at_another_threshold(client):
    base = inspect(client, casting(0), "cast.png")
    if base["verdict"] == "UNUSABLE":
        pytest.skip("the random-weight model found this casting novel")
    for t in (0.01, 0.99):
        body = inspect(client, casting(0), "cast.png", threshold=t)
        check_verdict(body)
        assert body["verdict"] == ("DEFECT" if body["defect_probability"] >= t else "OK")


def test_the_gradio_predict_endpoint_gives_the_same_fields(guarded_server, tmp_path):
    """/predict (gradio_client) is built by the same result_json: UNUSABLE, the reason and novelty."""
    from gradio_client import Client, handle_file

    p = tmp_path / "blank.png"
    p.write_bytes(white())
    c = Client(guarded_server, verbose=False, download_files=False, analytics_enabled=False)
    try:
        out = c.predict(handle_file(str(p)), 0.3, False, api_name="/predict")
    finally:
        c.close()
    assert out["verdict"] == "UNUSABLE" and out["unusable_reason"] == "overexposed" and out["threshold"] == 0.3
    assert isinstance(out["novelty"], float)


def test_the_load_test_counts_an_unusable_answer_as_correct(guarded_server, tmp_path):
    from benchmarks import loadtest

    p = tmp_path / "blank.png"
    p.write_bytes(white())
    api = loadtest.ApiClient(guarded_server)
    try:
        assert api(p) == (loadtest.Outcome.OK, None)
    finally:
        api.close()


def test_the_schema_documents_the_new_fields(client):
    from inspectkit.guard import REASONS

    spec = client.get("/openapi.json").json()
    props = spec["components"]["schemas"]["InspectResponse"]["properties"]
    assert "OK, DEFECT, UNUSABLE" in props["verdict"]["description"]
    assert all(reason in props["unusable_reason"]["description"] for reason in REASONS)
    assert props["novelty"]["description"]
    health = spec["components"]["schemas"]["Health"]["properties"]
    assert "guard" in health and "drift" in health
    assert {"get", "delete"} <= set(spec["paths"]["/api/drift"])


# -- /api/health and drift ----------------------------------------------------------------------------------------
def test_health_shows_the_guard_on(client, guarded_handler):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["model"] == "ready" and h["error"] is None
    g = h["guard"]
    assert g["on"] is True and g["off_reason"] is None
    assert g["novelty_threshold"] == pytest.approx(guarded_handler.guard.novelty_threshold, abs=1e-3)
    assert "too dark" in g["reasons"] and g["fitted_on"]["lines"] == ["generated"]
    assert h["drift"]["on"] is True and isinstance(h["drift"]["alarm"], bool)


def test_dark_photos_raise_the_drift_alarm_and_delete_resets_it(client):
    cleared = client.delete("/api/drift").json()
    assert cleared["photos"] == 0 and cleared["alarm"] is False
    for seed in range(20):
        body = inspect(client, casting(seed, 0.35), f"dark{seed}.png")
        check_verdict(body)
    drift = client.get("/api/health").json()["drift"]
    assert drift["alarm"] is True and drift["photos"] == 20
    assert 0 <= drift["first_row"] < 20
    changed = {c["indicator"]: c for c in drift["changed"]}
    assert "darker" in changed and "brighter" not in changed
    assert changed["darker"]["recent_rate"] > changed["darker"]["reference_rate"]
    assert "darker photos" in drift["summary"]
    assert client.get("/api/drift").json()["alarm"] is True  # /api/drift shows the same state
    after = client.delete("/api/drift").json()
    assert after["alarm"] is False and after["photos"] == 0 and after["changed"] == []


def test_a_fresh_server_with_normal_castings_has_no_alarm(guarded_handler):
    from tests.app_server import running_server

    with running_server(guarded_handler) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/api/health").json()["drift"]["photos"] == 0  # the monitor belongs to the server
        for seed in range(100, 120):
            check_verdict(inspect(c, casting(seed), f"cast{seed}.png"))
        c.post("/api/inspect", files={"file": ("bad.png", b"not an image", "image/png")})  # refused: not counted
        drift = c.get("/api/health").json()["drift"]
    assert drift["alarm"] is False and drift["first_row"] is None and drift["changed"] == []
    assert drift["photos"] == 20 and drift["summary"] == "no drift over 20 photos"


def test_health_shows_the_guard_off_and_why(plain_handler):
    from tests.app_server import running_server

    with running_server(plain_handler) as url, httpx.Client(base_url=url, timeout=60) as c:
        body = inspect(c, white(), "blank.png")
        h = c.get("/api/health").json()
        drift = c.get("/api/drift").json()
    assert body["verdict"] in ("OK", "DEFECT") and body["unusable_reason"] is None and body["novelty"] is None
    assert h["guard"]["on"] is False and h["guard"]["off_reason"] == plain_handler.guard_off_reason
    assert "no guard" in h["guard"]["off_reason"]
    assert h["drift"]["on"] is False and h["drift"]["alarm"] is False and "no guard" in h["drift"]["off_reason"]
    assert drift == h["drift"]


def test_health_before_the_model_is_ready_has_no_guard_or_drift():
    from fastapi.testclient import TestClient


    lazy = LazyHandler(lambda: None)  # never started
    with TestClient(create_api(lazy)) as c:
        assert c.get("/api/health").json() == {"status": "ok", "model": "not started", "error": None, "guard": None,
                                               "drift": None}
        r = c.get("/api/drift")
        assert r.status_code == 503 and "not started" in r.json()["detail"]
        assert c.delete("/api/drift").status_code == 503


def test_the_server_monitor_starts_again_when_the_model_changes(guarded_handler):
    from inspectkit.serve.http_api import RecentDrift

    def stand_in():  # another model with the same reference: a fresh handler object
        return SimpleNamespace(guard=SimpleNamespace(drift_reference=guarded_handler.guard.drift_reference),
                               class_names=guarded_handler.class_names)

    results = guarded_handler.predict_batch([casting(s, 0.35) for s in range(3)], heatmap=False)
    rd = RecentDrift()
    first, second = stand_in(), stand_in()
    for r in results:
        rd.add(first, r)
    assert rd.state(first)["photos"] == 3
    assert rd.state(second)["photos"] == 0  # the model changed: counting starts again
    rd.add(second, results[0])
    assert rd.state(second)["photos"] == 1
    rd.add(second, SimpleNamespace(error="not an image"))  # an undecodable upload is never counted
    assert rd.state(second)["photos"] == 1
