"""Load, busy answers and bounded resources on a real server (the app factory, uvicorn on a free 127.0.0.1 port).

* a short load run (4 clients x 10 s over POST /api/inspect and the Gradio /predict endpoint) with zero errors,
  and the server still answering afterwards; a short sequential soak;
* with the model held up, a full queue answers "busy" at once (Gradio queue and JSON endpoint) instead of
  hanging, and every request that was accepted completes once the model is free again;
* upload size, declared body size, pixel count and batch size are bounded, each with a clear refusal.

No timing assertions: throughput and latency goals live in benchmarks/loadtest.py, not in CI.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks import loadtest
from inspectkit.limits import MAX_BATCH, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB
from inspectkit.serve.http_api import create_app
from tests.support import REPO, synthetic_casting

pytestmark = pytest.mark.slow

EXAMPLES = sorted((REPO / "examples").glob("*.jpeg"))


def jpeg(seed: int = 0, size: int = 96) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_casting(np.random.default_rng(seed), bool(seed % 2), (size, size))).save(buf, "JPEG")
    return buf.getvalue()


def bomb_png(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid 32x32 PNG whose header (with a correct CRC) claims width x height: 3.6 GP, a pixel bomb."""
    buf = io.BytesIO()
    Image.new("L", (32, 32)).save(buf, "PNG")
    data = buf.getvalue()
    chunk = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


class GatedHandler:
    """The real handler, but every inspection first waits for ``gate``: holds the model "busy" on demand so
    the queue fills up deterministically (no reliance on timing)."""

    def __init__(self, inner):
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when an inspection is waiting at the gate

    def _wait(self):
        self.entered.set()
        if not self.gate.wait(120):
            raise RuntimeError("test gate was never opened")

    def predict(self, *a, **kw):
        self._wait()
        return self.inner.predict(*a, **kw)

    def predict_batch(self, *a, **kw):
        self._wait()
        return self.inner.predict_batch(*a, **kw)

    def __getattr__(self, name):  # threshold, class_names, decide, colormap, ...
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def gated(handler):
    from tests.app_server import running_server

    g = GatedHandler(handler)
    with running_server(g) as url:
        try:
            yield url, g
        finally:
            g.gate.set()  # never leave server threads blocked


# ------------------------------------------------------------------------------------------------- load


def test_short_load_has_no_errors_and_the_server_answers_afterwards(server):
    """4 clients x 10 s, two on each endpoint: every answer correct, nobody told "busy" at this load."""
    report = loadtest.run_load(server, clients=4, duration=10, pid=os.getpid(), warmup=2)
    assert report["errors"] == 0, report["error_examples"]
    assert report["busy"] == 0
    for target in ("api", "gradio"):
        assert report["per_target"][target]["ok"] >= 1, target
    assert report["latency_ms"]["p95"] is not None and report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    assert report["server_answers_afterwards"] == {"health": True, "api": True, "gradio": True, "all": True}
    assert report["server_rss_mb"]["before"] > 0 and report["server_rss_mb"]["peak"] is not None


def test_short_soak_is_error_free_and_reports_memory(server):
    report = loadtest.run_soak(server, n=30, pid=os.getpid(), every=10, warmup=2)
    assert report["requests"] == 30 and report["ok"] == 30 and report["errors"] == 0
    assert [k for k, _ in report["server_rss_mb"]["series"]] == [0, 10, 20, 30]
    assert report["server_rss_mb"]["growth"] is not None
    assert report["server_answers_afterwards"]["all"]


def test_percentile_and_summary():
    """The statistics the load report is built on (checked on known numbers)."""
    assert loadtest.percentile([], 50) is None
    assert loadtest.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert loadtest.percentile(list(map(float, range(101))), 95) == 95.0
    recs = [loadtest.Record("api", 0, 0.010, "ok"), loadtest.Record("api", 0, 0.030, "ok"),
            loadtest.Record("gradio", 0, 1.0, "busy"), loadtest.Record("gradio", 0, 2.0, "error", "HTTP 500: x")]
    s = loadtest.summarize(recs, elapsed=2.0)
    assert (s["requests"], s["ok"], s["busy"], s["errors"]) == (4, 2, 1, 1)
    assert s["requests_per_s"] == 1.0 and s["latency_ms"]["p50"] == 20.0 and s["latency_ms"]["max"] == 30.0
    assert s["error_examples"] == {"HTTP 500: x": 1}


def test_a_correct_answer_is_ok_defect_or_unusable_with_its_reason():
    """The load test's contract: UNUSABLE (a model with a guard) is a correct answer when it says why; nothing else
    is."""
    base = {"error": None, "defect_probability": 0.25, "unusable_reason": None}
    assert loadtest.valid_answer({**base, "verdict": "OK"}) and loadtest.valid_answer({**base, "verdict": "DEFECT"})
    assert loadtest.valid_answer({**base, "verdict": "UNUSABLE", "unusable_reason": "too dark"})
    assert loadtest.valid_answer({k: v for k, v in base.items() if k != "unusable_reason"} | {"verdict": "OK"})
    for bad in ({**base, "verdict": "UNUSABLE"}, {**base, "verdict": "UNUSABLE", "unusable_reason": " "},
                {**base, "verdict": "OK", "unusable_reason": "too dark"}, {**base, "verdict": "MAYBE"},
                {**base, "verdict": None}, {**base, "verdict": "ok_front"}, {**base, "verdict": "OK", "error": "x"},
                {**base, "verdict": "OK", "defect_probability": None}, ["OK"], None):
        assert not loadtest.valid_answer(bad), bad


# ------------------------------------------------------------------------------------------- queue / busy


def test_queue_and_concurrency_are_set_on_purpose(handler):
    """The Gradio queue is bounded and the concurrency limited (a 2-core Space, one shared model)."""
    import app

    demo = app.build_demo(handler)
    create_app(handler, demo)
    q = demo._queue
    assert q.max_size is not None and 1 <= q.max_size <= 256
    assert isinstance(q.default_concurrency_limit, int) and q.default_concurrency_limit >= 1


def _wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize("n", [1, 5])
def test_inference_lock_serves_waiters_in_arrival_order(n):
    """The Gradio worker and the JSON endpoint share the model: whoever asked first runs first."""
    from inspectkit.limits import FairLock

    lock, order = FairLock(), []

    def worker(i):
        with lock:
            order.append(i)

    lock.acquire()
    threads = []
    for i in range(n):
        threads.append(threading.Thread(target=worker, args=(i,)))
        threads[-1].start()
        _wait_until(lambda i=i: lock.waiting() == i + 1)
    lock.release()
    for t in threads:
        t.join(10)
    assert order == list(range(n))
    assert not lock.locked() and lock.waiting() == 0


def test_inference_lock_releaser_cannot_barge_in_ahead_of_a_waiter():
    """A thread that releases and asks again at once (the next request on a busy endpoint) queues behind the
    one already waiting; a plain threading.Lock usually lets it take the lock straight back."""
    from inspectkit.limits import FairLock

    lock, order = FairLock(), []
    lock.acquire()
    waiter = threading.Thread(target=lambda: (lock.acquire(), order.append("waiter"), lock.release()))
    waiter.start()
    _wait_until(lambda: lock.waiting() == 1)
    for _ in range(3):
        lock.release()
        lock.acquire()
        order.append("releaser")
    lock.release()
    waiter.join(10)
    assert order[0] == "waiter" and order.count("releaser") == 3


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs POSIX interval timers (SIGALRM)")
def test_inference_lock_survives_an_interrupted_waiter_and_refuses_a_stray_release():
    import signal

    from inspectkit.limits import FairLock

    class Interrupted(Exception):
        pass

    lock = FairLock()
    holder_may_go, got = threading.Event(), []
    holder = threading.Thread(target=lambda: (lock.acquire(), holder_may_go.wait(10), lock.release()))
    holder.start()
    _wait_until(lock.locked)

    def interrupt(*_):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            lock.acquire()  # the main thread waits, then a signal breaks the wait
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert lock.waiting() == 0  # it left the queue instead of holding a place nobody will take
    later = threading.Thread(target=lambda: (lock.acquire(), got.append(1), lock.release()))
    later.start()
    _wait_until(lambda: lock.waiting() == 1)
    holder_may_go.set()
    holder.join(10), later.join(10)
    assert got == [1]
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_full_gradio_queue_answers_busy_and_accepted_jobs_complete(gated):
    """Model held up; 40 jobs to /predict: the ones beyond the queue get gradio's clear 'Queue is full' at
    once (QueueError, HTTP 503), not a hang; after the model is free, every accepted job returns a verdict."""
    from gradio_client import Client, handle_file

    url, g = gated
    g.gate.clear()
    g.entered.clear()
    client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
    try:
        jobs = [client.submit(handle_file(str(EXAMPLES[i % len(EXAMPLES)])), None, False, api_name="/predict")
                for i in range(40)]
        assert g.entered.wait(60), "no job reached the model"
        # the refused ones finish (with an error) while the model is still held
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(j.done() for j in jobs) < 10:
            time.sleep(0.1)
        refused = [j for j in jobs if j.done()]
        assert refused, "no busy answer while the queue was full: the clients just hang"
        for j in refused:
            exc = j.exception(timeout=0)
            assert exc is not None and "queue is full" in str(exc).lower(), repr(exc)
    finally:
        g.gate.set()
    accepted = [j for j in jobs if j not in refused]
    assert accepted
    for j in accepted:
        try:
            r = j.result(timeout=120)
        except Exception as exc:  # a late refusal (a job that joined after the count above) is still "busy"
            assert "queue is full" in str(exc).lower(), repr(exc)
            continue
        assert loadtest.valid_answer(r), r
    # and the server is fine afterwards
    assert client.predict(handle_file(str(EXAMPLES[0])), None, False, api_name="/predict")["verdict"]
    client.close()


def test_json_endpoint_answers_busy_when_full(gated):
    """Model held up; 64 concurrent POST /api/inspect: the ones beyond the endpoint's bound are answered
    at once with 503 + Retry-After and a message that says busy; the accepted ones complete afterwards."""
    url, g = gated
    g.gate.clear()
    g.entered.clear()
    answers: list = []

    def post(i):
        with httpx.Client(base_url=url, timeout=180) as c:
            r = c.post("/api/inspect", files={"file": (f"p{i}.jpg", jpeg(i), "image/jpeg")})
            answers.append(r)
            return r

    pool = ThreadPoolExecutor(64)
    try:
        futures = [pool.submit(post, i) for i in range(64)]
        assert g.entered.wait(60), "no request reached the model"
        deadline = time.monotonic() + 8  # a busy answer needs no model: it comes at once or never
        while time.monotonic() < deadline and not answers:
            time.sleep(0.1)
        early = list(answers)
    finally:
        g.gate.set()
    results = [f.result(timeout=180) for f in futures]
    pool.shutdown()
    assert early, "no answer at all while the model was busy: the clients hang"
    assert all(r.status_code == 503 for r in early), [r.status_code for r in early]
    assert all("busy" in r.json()["detail"].lower() and r.headers.get("retry-after") for r in early)
    assert all(r.status_code in (200, 503) for r in results)
    assert any(r.status_code == 200 for r in results)


# ---------------------------------------------------------------------------------------------- limits


def test_json_endpoint_refuses_an_oversized_upload(server):

    big = b"\xff\xd8\xff\xe0" + b"\0" * (MAX_UPLOAD_BYTES + 10)
    r = httpx.post(server + "api/inspect", files={"file": ("big.jpg", big, "image/jpeg")}, timeout=120)
    assert r.status_code == 413 and f"{MAX_UPLOAD_MB} MB" in r.json()["detail"]


def _declared_but_unsent(url: str, path: str, declared: int, timeout: float = 5.0) -> bytes:
    """Send a request whose Content-Length declares ``declared`` bytes but send only the first 64 KB, then wait
    for an answer: a server that bounds uploads refuses from the header; one that does not waits for the body."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    boundary = "----declared"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    req = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: multipart/form-data; boundary={boundary}"
           f"\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n").encode() + head + b"\0" * 65536
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(req)
        s.settimeout(timeout)
        try:
            return s.recv(4096)
        except TimeoutError:
            return b""


def test_json_endpoint_refuses_a_declared_oversized_body_without_reading_it(server):

    answer = _declared_but_unsent(server, "/api/inspect", 50 * MAX_UPLOAD_BYTES)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_gradio_upload_refuses_an_oversized_file(server):

    big = b"\0" * (MAX_UPLOAD_BYTES + 10)
    r = httpx.post(server + "gradio_api/upload", files={"files": ("big.jpg", big, "image/jpeg")}, timeout=120)
    assert r.status_code == 413


def test_pixel_bomb_is_refused_at_both_endpoints(server):
    """A 3.6-gigapixel header in a 100-byte PNG is refused by its header, with the limit in the message."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    data = bomb_png()
    r = httpx.post(server + "api/inspect", files={"file": ("bomb.png", data, "image/png")}, timeout=60)
    assert r.status_code == 422 and "pixels" in r.json()["detail"]
    client = Client(server, verbose=False, download_files=False, analytics_enabled=False)
    try:
        with pytest.raises(AppError, match="pixels"):
            import tempfile

            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "bomb.png"
                p.write_bytes(data)
                client.predict(handle_file(str(p)), None, False, api_name="/predict")
    finally:
        client.close()


def test_batch_size_is_bounded(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError


    p = tmp_path / "part.jpg"
    p.write_bytes(jpeg())
    client = Client(server, verbose=False, download_files=False, analytics_enabled=False)
    try:
        with pytest.raises(AppError, match=str(MAX_BATCH)):
            client.predict([handle_file(str(p))] * (MAX_BATCH + 1), None, api_name="/predict_batch")
        ok = client.predict([handle_file(str(p))] * 2, None, api_name="/predict_batch")
        assert [loadtest.valid_answer(r) for r in ok] == [True, True]
    finally:
        client.close()
