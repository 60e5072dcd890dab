"""Helpers for the app tests: a real server (FastAPI + Gradio, uvicorn) on a free loopback port in a thread, a small
fake handler for the UI unit tests that do not need a network, and the Inspect tab's outputs once a drop is done."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspectkit.serve.http_api import create_app
from inspectkit.serve.model_source import LazyHandler
from inspectkit.ui.common.session import VIEW_OUTPUTS, inspect

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.jpeg"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(handler, reports_dir=None, start_lazy: bool = True):
    """Serve build_demo(handler) mounted on the JSON API at http://127.0.0.1:<port>/ until the block ends."""
    import uvicorn

    import app

    kwargs = {} if reports_dir is None else {"reports_dir": reports_dir}
    asgi = create_app(handler, app.build_demo(handler, **kwargs), **app.launch_options())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning"))
    if start_lazy and isinstance(handler, LazyHandler):
        handler.start(after=lambda: server.started)
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start within 60 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def inspect_all(handler, files, opacity: float = 0.45, state: dict | None = None, folder=None, warn=None) -> tuple:
    """What the Inspect tab shows once a drop of ``files`` (and/or ``folder``) is inspected: its last step,
    ``(state, *session.VIEW_OUTPUTS)``."""
    *_, last = inspect(handler, files, folder, opacity, state, warn)
    return last


def by_name(outputs: tuple, names: tuple = VIEW_OUTPUTS) -> dict:
    """A step's outputs by name: ``"state"`` first, then ``names`` (session.VIEW_OUTPUTS, or DETAIL_OUTPUTS)."""
    assert len(outputs) == 1 + len(names), (len(outputs), names)
    return dict(zip(("state", *names), outputs))


@dataclass
class FakeResult:
    """Stands in for inference_handler.InspectionResult in UI unit tests."""

    name: str
    verdict: str | None = None
    label: str | None = None
    probabilities: dict = field(default_factory=dict)
    defect_probability: float | None = None
    threshold: float | None = None
    heatmap: np.ndarray | None = None
    overlay: np.ndarray | None = None
    image: np.ndarray | None = None
    timings_ms: dict = field(default_factory=dict)
    error: str | None = None
    needs_review: bool | None = None
    unusable_reason: str | None = None
    novelty: float | None = None
    image_stats: dict | None = None


class FakeHandler:
    """Decides from a probability table keyed by file name (p(defect) = 0.9 if 'def' in the name, else 0.2);
    counts forward passes so tests can check that re-deciding never runs the network."""

    class_names = ["def_front", "ok_front"]
    defect_class = "def_front"
    threshold = 0.5
    colormap = "jet"
    preprocessing = {"size": 96, "resize": "stretch"}
    checkpoint_info = {"arch": "fake", "versions": {"torch": "0"}}

    def __init__(self):
        self.images_seen = 0
        self.heatmap_modes: list = []  # the heatmap_mode of each predict_batch call

    #: file-name part -> unusable_reason: a photo whose name holds it is UNUSABLE for that reason (as if a guard
    #: said so); empty: the fake has no guard and never answers UNUSABLE
    unusable: dict = {}

    def defect_probability_for(self, name: str) -> float:
        """What the fake network says: 0.9 for a name with "def" in it, else 0.2."""
        return 0.9 if "def" in name else 0.2

    def decide(self, probabilities, threshold=None, unusable_reason=None):
        t = self.threshold if threshold is None else threshold
        verdict = "DEFECT" if probabilities["def_front"] >= t else "OK"
        return "UNUSABLE" if unusable_reason else verdict

    def predict_batch(self, images, heatmap=True, opacity=0.45, batch_size=16, on_error="raise", names=None,
                      progress=None, heatmap_mode=None):
        from inspectkit.imageio import load_rgb

        self.heatmap_modes.append(heatmap_mode)
        out = []
        for i, (img, name) in enumerate(zip(images, names)):
            try:
                rgb = load_rgb(img)
            except ValueError as exc:
                if on_error == "raise":
                    raise
                out.append(FakeResult(name=name, error=str(exc)))
                continue
            self.images_seen += 1
            p = self.defect_probability_for(name)
            probs = {"def_front": p, "ok_front": 1 - p}
            heat = np.linspace(0, 1, rgb.shape[0] * rgb.shape[1], dtype=np.float32).reshape(rgb.shape[:2])
            reason = next((r for part, r in self.unusable.items() if part in name), None)
            novelty = None if not self.unusable else (9.0 if reason else 0.8)  # None: no guard
            out.append(FakeResult(name=name, verdict=self.decide(probs, unusable_reason=reason),
                                  unusable_reason=reason, novelty=novelty,
                                  label="def_front" if p >= 0.5 else "ok_front",
                                  probabilities=probs, defect_probability=p, threshold=self.threshold,
                                  heatmap=heat if heatmap else None, overlay=rgb, image=rgb,
                                  timings_ms={"decode": 1.0, "preprocess": 0.5, "forward": 5.0, "gradcam": 2.0,
                                              "overlay": 0.5, "total": 9.0}))
            if progress:
                progress(i + 1, len(images))
        return out

    def predict(self, image, heatmap=True, opacity=0.45, target=None, name=None, heatmap_mode=None):
        return self.predict_batch([image], heatmap, opacity, on_error="raise", names=[name or "image"],
                                  heatmap_mode=heatmap_mode)[0]
