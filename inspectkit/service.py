"""Serving glue for the inspection app: limits, safe file names, lazy model loading, the JSON endpoint and the server.

``app.py`` holds the Gradio UI only; everything else a running Space needs lives here:

* :class:`LazyHandler` loads the model in a background thread, so the page answers at once and only the first
  inspection may wait for the model;
* :func:`resolve_checkpoint` picks the committed ``final_best_model.pt``, or a file from a Hub model repo when
  ``INSPECT_MODEL_REPO`` names one;
* :func:`create_api` is the FastAPI app with ``POST /api/inspect`` (multipart image in, JSON out) and
  ``GET /api/health``; :func:`create_app` mounts the Gradio UI on it; :func:`serve` runs it with uvicorn.

Importing this module is cheap on purpose: torch, the handler and huggingface_hub are imported only when
the model is actually loaded, so ``python app.py`` serves its page in about the time a bare Gradio app needs.
"""

import base64
import collections
import io
import logging
import os
import re
import threading
import time
import traceback
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Literal, Optional

from fastapi import FastAPI, File, HTTPException, Query, UploadFile  # already imported by gradio: no extra start time
from pydantic import BaseModel, Field

log = logging.getLogger("inspect.service")

REPO = Path(__file__).resolve().parents[1]

#: Largest image file accepted (UI upload and JSON endpoint). A 300x300 line-camera JPEG is ~10 KB;
#: 20 MB leaves room for 20-megapixel PNGs while keeping a batch's memory bounded.
MAX_UPLOAD_MB = 20
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
#: Most images inspected in one batch: ~32 x 0.1 s on a 2-core Space keeps a batch under a few seconds and the
#: per-session state (display images and heat maps) small.
MAX_BATCH = 32
#: How long a request waits for the model that is still loading before it is told to try again.
MODEL_WAIT_S = 300.0
#: Longest file name we show; longer names keep their start and their extension.
MAX_NAME_CHARS = 96

DEFAULT_CHECKPOINT = "final_best_model.pt"
ENV_MODEL_REPO = "INSPECT_MODEL_REPO"        # Hub model repo id, e.g. "acme/casting-inspector"
ENV_MODEL_FILE = "INSPECT_MODEL_FILE"        # file name in that repo (default final_best_model.pt)
ENV_MODEL_REVISION = "INSPECT_MODEL_REVISION"  # branch, tag or commit in that repo (default main)
ENV_MODEL_PATH = "INSPECT_MODEL_PATH"        # local checkpoint path (default: the committed one)
ENV_MODEL_SHA256 = "INSPECT_MODEL_SHA256"    # expected digest, checked before loading
#: Heat maps a request may ask for (inference_handler.HEATMAP_MODES; None: the model's default).
HEATMAP_MODES = ("defect-evidence", "class-normalised")

#: POST /api/inspect requests allowed to wait for the model at once; more are told "busy" (503 + Retry-After)
#: at once instead of hanging: on two cores 8 waiting images are already ~1 s of work.
MAX_API_WAITING = 8
#: Multipart overhead allowed on top of MAX_UPLOAD_BYTES before a request body is refused unread.
BODY_SLACK_BYTES = 64 * 1024
#: How often Gradio's queue looks for a new job, and for progress to send, in seconds. Gradio polls every 1 ms
#: (10 ms for progress) on Linux: an idle server woke ~800 times a second and used 6-8 % of a core, and while
#: the network runs on two intra-op threads over two cores, each wake-up takes a core from one of them and the
#: other waits at the next barrier. 10 ms adds at most that to the start of a queued job (117 wake-ups/s, 2.3 %).
QUEUE_POLL_S = 0.01
PROGRESS_POLL_S = 0.05


class FairLock:
    """A lock handed to its waiters in arrival order.

    ``threading.Lock`` promises no order: any waiter may win, and the thread that just released it can take it
    straight back, so a burst of JSON requests could keep the Gradio worker waiting. Here ``release`` passes
    ownership directly to the longest waiter, so nobody can barge in between.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: collections.deque = collections.deque()

    def acquire(self) -> bool:
        """Wait for the lock, behind everyone who asked before."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        try:
            turn.acquire()  # released by release(), which has already made us the owner
        except BaseException:
            with self._mutex:
                if turn in self._waiters:
                    self._waiters.remove(turn)
                else:  # ownership reached us as we were interrupted: pass it on, or the queue would stall
                    self._hand_over()
            raise
        return True

    def release(self) -> None:
        """Pass the lock to the longest waiter, or free it."""
        with self._mutex:
            if not self._held:
                raise RuntimeError("release of a FairLock that is not held")
            self._hand_over()

    def _hand_over(self) -> None:
        if self._waiters:
            self._waiters.popleft().release()  # stays held: the waiter owns it now
        else:
            self._held = False

    def locked(self) -> bool:
        """Whether someone holds the lock."""
        with self._mutex:
            return self._held

    def waiting(self) -> int:
        """How many threads are waiting for the lock."""
        with self._mutex:
            return len(self._waiters)

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# One forward pass at a time: torch already spreads one pass over all cores, and the Gradio queue and the
# JSON endpoint would otherwise run passes side by side and slow each other down. First come, first served.
INFERENCE_LOCK = FairLock()

_API_SLOTS = threading.BoundedSemaphore(MAX_API_WAITING)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


class ModelUnavailable(RuntimeError):
    """The model is still loading (past the wait) or failed to load; the message says which and why."""


# --------------------------------------------------------------------------------------------- names


def safe_name(name: Any, fallback: str = "image") -> str:
    """A harmless display name for an uploaded file: the last path component only, no control or
    bidirectional-override characters, whitespace collapsed, at most MAX_NAME_CHARS characters.

    ``../../etc/passwd`` becomes ``passwd``, ``C:\\x\\y.jpg`` becomes ``y.jpg``. Spreadsheet formulas are
    neutralised separately where it matters (the CSV), since ``=`` is a legal file-name character.
    """
    if name is None:
        return fallback
    text = unicodedata.normalize("NFC", str(name))
    text = re.split(r"[\\/]", text)[-1]
    text = _CONTROL.sub("", text)
    text = " ".join(text.split())
    if text in ("", ".", ".."):
        return fallback
    if len(text) > MAX_NAME_CHARS:
        stem, dot, ext = text.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 8 else ""
        text = text[: MAX_NAME_CHARS - len(ext) - 1] + "\u2026" + ext
    return text


def safe_text(text: Any, max_chars: int = 600) -> str:
    """A message fit to show anywhere (HTML after escaping, JSON, CSV, a toast): control and bidirectional
    characters become spaces, whitespace is collapsed, and it is cut at ``max_chars``. Error messages quote
    file names, so they need the same care as the names themselves."""
    text = " ".join(_CONTROL.sub(" ", unicodedata.normalize("NFC", str(text))).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "\u2026"


def error_message(error: Any, raw_name: Any = None, shown_name: str | None = None) -> str:
    """``error`` with the raw file name (as the decoder quoted it) replaced by the harmless one, made safe."""
    text = str(error)
    if raw_name:
        raw = re.split(r"[\\/]", str(raw_name))[-1]
        if raw and raw in text:
            text = text.replace(raw, shown_name or safe_name(raw))
    return safe_text(text)


def upload_name(path: Any) -> str:
    """The user's file name for a file Gradio stored in its cache (it keeps the original base name)."""
    return safe_name(Path(str(path)).name if path else None)


# ------------------------------------------------------------------------------------------ the model


def resolve_checkpoint() -> tuple[Path, str | None]:
    """Where the model comes from: ``(path, expected_sha256 or None)``.

    With ``INSPECT_MODEL_REPO`` set, the checkpoint (``INSPECT_MODEL_FILE``, default final_best_model.pt) and
    its ``.sha256`` sidecar, when the repo has one, are fetched with ``hf_hub_download`` (the Hub cache is
    reused, so a restart downloads nothing), and so are its ONNX graph and the graph's ``.sha256``
    (:func:`fetch_graph`: what lets the Space serve without torch); otherwise ``INSPECT_MODEL_PATH`` or the committed
    ``final_best_model.pt`` beside app.py. ``INSPECT_MODEL_SHA256`` pins the digest either way.
    """
    expected = os.environ.get(ENV_MODEL_SHA256) or None
    if expected is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        raise ValueError(f"{ENV_MODEL_SHA256}={expected!r} is not a SHA-256 digest (64 hex digits)")
    repo_id = os.environ.get(ENV_MODEL_REPO, "").strip()
    if not repo_id:
        path = Path(os.environ.get(ENV_MODEL_PATH) or REPO / DEFAULT_CHECKPOINT)
        if not path.is_file():
            raise ValueError(
                f"model file not found: {path}. Commit final_best_model.pt beside app.py, set {ENV_MODEL_PATH} "
                f"to a checkpoint, or set {ENV_MODEL_REPO} to a Hugging Face model repo that holds one"
            )
        return path, expected
    from huggingface_hub import hf_hub_download

    filename = os.environ.get(ENV_MODEL_FILE) or DEFAULT_CHECKPOINT
    revision = os.environ.get(ENV_MODEL_REVISION) or None
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, repo_type="model"))
    except Exception as exc:  # offline, no such repo or file, gated repo without token...
        raise ValueError(
            f"could not download {filename!r} from the Hub model repo {repo_id!r}"
            f"{f' at revision {revision!r}' if revision else ''} ({type(exc).__name__}: {exc}); "
            f"unset {ENV_MODEL_REPO} to use the local {DEFAULT_CHECKPOINT}"
        ) from None
    try:  # the sidecar lands beside the checkpoint in the same snapshot folder, where loading looks for it
        hf_hub_download(repo_id, filename + ".sha256", revision=revision, repo_type="model")
    except Exception as exc:
        if expected is None:  # a digest recorded nowhere would be checked against nothing: refuse
            raise ValueError(
                f"the Hub model repo {repo_id!r} has no {filename}.sha256 ({type(exc).__name__}) and "
                f"{ENV_MODEL_SHA256} is not set, so the downloaded model could not be checked; upload the .sha256 "
                f"beside the model or set {ENV_MODEL_SHA256} to its SHA-256"
            ) from None
        log.info("model repo %s has no %s.sha256; checking against %s", repo_id, filename, ENV_MODEL_SHA256)
    fetch_graph(repo_id, filename, revision)
    return path, expected


def fetch_graph(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """Download the checkpoint's committed ONNX graph (``<name>.onnx``) and its ``.onnx.sha256`` from the Hub model
    repo into the checkpoint's snapshot folder, where the handler looks for it; returns its path, or None when the
    repo has no graph (the handler then builds one from the checkpoint, which needs torch, and says so without it).

    Both digests are checked when the handler loads it: the graph's own SHA-256 against its ``.sha256`` (required
    here: a graph that could not be checked is refused) and the checkpoint SHA-256 the graph records against the
    downloaded checkpoint's (inspectkit/fast.py, :func:`inspectkit.fast.load_graph`).
    """
    from huggingface_hub import hf_hub_download

    from .fast import export_command

    graph = str(PurePosixPath(filename).with_suffix(".onnx"))
    try:
        path = Path(hf_hub_download(repo_id, graph, revision=revision, repo_type="model"))
    except Exception as exc:
        log.warning("model repo %s has no %s (%s): the graph is built from the checkpoint, which needs torch; "
                    "upload the one `%s` writes", repo_id, graph, type(exc).__name__, export_command(filename))
        return None
    try:
        hf_hub_download(repo_id, graph + ".sha256", revision=revision, repo_type="model")
    except Exception as exc:
        raise ValueError(
            f"the Hub model repo {repo_id!r} has {graph} but no {graph}.sha256 ({type(exc).__name__}), so the "
            f"downloaded graph could not be checked; upload the {graph}.sha256 that export_onnx.py writes beside it"
        ) from None
    return path


def default_handler_factory(threads: int | None = None) -> Callable[[], Any]:
    """A zero-argument function that builds the real InferenceHandler from :func:`resolve_checkpoint`."""

    def build():
        """Resolve the checkpoint and load the handler (runs in the loader thread)."""
        path, expected = resolve_checkpoint()
        from inference_handler import InferenceHandler  # onnxruntime (torch without a graph): loader thread only

        return warm_up(InferenceHandler(checkpoint=str(path), expected_sha256=expected, threads=threads))

    return build


def warm_up(handler: Any, calls: int = 3) -> Any:
    """Run a few heat-map inspections of a plain grey frame, so the server's first requests do not pay for the
    session's first runs (memory arena growth, first-touch pages, cold caches: the first calls after a load took
    1.5x the steady forward time); returns the handler. A failure here is logged, not raised: the real requests
    will report it."""
    import numpy as np

    frame = np.full((300, 300, 3), 128, np.uint8)
    try:
        for _ in range(calls):
            handler.predict(frame, heatmap=True, name="warm-up")
    except Exception as exc:
        log.warning("warm-up inspection failed: %s: %s", type(exc).__name__, exc)
    return handler


class LazyHandler:
    """Builds the InferenceHandler in a background thread and hands it out once it is ready.

    ``start()`` begins loading (idempotent); ``wait()`` returns the handler, waiting for it if needed, or
    raises ModelUnavailable with the reason. The UI and the API take either this or a plain handler.
    """

    def __init__(self, factory: Callable[[], Any], description: str = "the inspection model"):
        self._factory = factory
        self.description = description
        self._handler = None
        self._error: str | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.load_seconds: float | None = None

    def start(self, after: Callable[[], bool] | None = None) -> "LazyHandler":
        """Start loading in a daemon thread unless already started.

        ``after``: polled (every 20 ms, up to 10 s) before loading begins, e.g. "the server is accepting
        connections", so importing torch does not compete with the server's start for the interpreter.
        """
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load, args=(after,), name="model-loader", daemon=True)
                self._thread.start()
        return self

    def _load(self, after: Callable[[], bool] | None) -> None:
        if after is not None:
            deadline = time.monotonic() + 10.0
            while not after() and time.monotonic() < deadline:
                time.sleep(0.02)
        t0 = time.perf_counter()
        try:
            self._handler = self._factory()
            self.load_seconds = time.perf_counter() - t0
            log.info("model loaded in %.1f s", self.load_seconds)
        except Exception as exc:  # any failure becomes a message shown in the UI and the API
            self._error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)
            log.error("loading %s failed: %s\n%s", self.description, self._error, traceback.format_exc())
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        """True once the handler is loaded."""
        return self._handler is not None

    @property
    def error(self) -> str | None:
        """Why loading failed, or None."""
        return self._error

    @property
    def state(self) -> str:
        """'ready', 'failed', 'loading' or 'not started'."""
        if self._handler is not None:
            return "ready"
        if self._error is not None:
            return "failed"
        return "loading" if self._thread is not None else "not started"

    def wait(self, timeout: float | None = MODEL_WAIT_S):
        """The loaded handler; starts loading if nobody has. Raises ModelUnavailable on failure or timeout."""
        self.start()
        if not self._done.wait(timeout):
            raise ModelUnavailable(f"{self.description} is still loading (waited {timeout:.0f} s); try again shortly")
        if self._handler is None:
            raise ModelUnavailable(f"{self.description} could not be loaded: {self._error}")
        return self._handler


def get_handler(handler: Any, timeout: float | None = MODEL_WAIT_S):
    """The real handler behind ``handler`` (a LazyHandler is waited for; anything else is returned as is)."""
    return handler.wait(timeout) if isinstance(handler, LazyHandler) else handler


def model_state(handler: Any) -> str:
    """'ready', 'loading', 'failed' or 'not started' without waiting."""
    return handler.state if isinstance(handler, LazyHandler) else "ready"


# ---------------------------------------------------------------------------------------- results


def encode_png(rgb) -> bytes:
    """PNG bytes of an RGB uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def round_or_none(x: Any, digits: int = 6) -> float | None:
    """``round(float(x), digits)``, or None for None."""
    return None if x is None else round(float(x), digits)


def label_for(handler: Any, probabilities: dict, verdict: str | None) -> str | None:
    """The class that goes with a (re-decided) binary verdict: the defect class for DEFECT, else the most
    probable other class. For a model without a defect class the verdict is the class."""
    defect = getattr(handler, "defect_class", None)
    if verdict is None or defect is None:
        return verdict
    if verdict == "DEFECT":
        return defect
    others = {k: v for k, v in probabilities.items() if k != defect}
    return max(others, key=others.get) if others else None


def display_names_of(handler: Any) -> dict[str, str]:
    """The handler's human labels per class (a handler without them gets the defaults from its class names)."""
    names = getattr(handler, "display_names", None)
    if isinstance(names, dict):
        return dict(names)
    from .labels import default_names

    return default_names(getattr(handler, "class_names", []) or [])


def check_heatmap_mode(mode: Any) -> str | None:
    """``mode`` if it is None (the model's default) or one of HEATMAP_MODES; else ValueError naming the choices."""
    if mode is None or mode == "":
        return None
    if mode not in HEATMAP_MODES:
        raise ValueError(f"heatmap_mode {mode!r} must be one of {list(HEATMAP_MODES)}, or empty for the model's "
                         "default")
    return str(mode)


def review_band_for(handler: Any, threshold: float | None = None, margin: float | None = None) -> dict | None:
    """``{"low", "high"}`` of the needs-review band around ``threshold`` (default: the model's), or with ``margin``
    that many logits either side of it; None for a model without a threshold. A handler without review support
    (older or stand-in handlers) gets the fallback band of inspectkit.review around its threshold."""
    from . import review

    fn = getattr(handler, "review_band_at", None)
    if callable(fn):
        band = fn(threshold, margin)
        return None if band is None else {"low": float(band["low"]), "high": float(band["high"])}
    t = threshold if threshold is not None else getattr(handler, "threshold", None)
    if t is None or getattr(handler, "defect_class", None) is None:
        return None
    low, high = review.symmetric_band(t, review.DEFAULT_MARGIN if margin is None else margin)
    return {"low": low, "high": high}


def result_json(result: Any, handler: Any, threshold: float | None = None, heatmap_png: bool = False,
                review_margin: float | None = None) -> dict:
    """The JSON answer for one InspectionResult: name, verdict, label (the raw class name) and ``display_label``
    (its human label; ``display_names`` has every class's), probabilities, defect probability,
    threshold, ``needs_review`` and the ``review_band`` it was judged against, latency in ms per stage, error,
    ``heatmap_mode`` and ``heatmap_scale`` (None: no heat map, or one scaled per image);
    with ``heatmap_png``, the Grad-CAM heat map drawn over the photo as a base64 PNG. ``threshold`` re-decides the
    verdict from the probabilities (no new forward pass), and the band moves with it; ``review_margin`` (logits)
    replaces the band by a symmetric one.
    """
    verdict, used, label = result.verdict, result.threshold, result.label
    if result.error is None and threshold is not None and result.defect_probability is not None:
        verdict, used = handler.decide(result.probabilities, threshold), float(threshold)
        label = label_for(handler, result.probabilities, verdict)
    band = needs = None
    if result.error is None and result.defect_probability is not None:
        band = review_band_for(handler, used, review_margin)
        if band is not None:
            needs = bool(band["low"] <= float(result.defect_probability) <= band["high"])
            band = {k: round(v, 6) for k, v in band.items()}
    shown = display_names_of(handler)
    scale = getattr(result, "heatmap_scale", None)
    out = {
        "name": safe_name(result.name),
        "verdict": verdict,
        "label": label,
        "display_label": None if label is None else shown.get(label, label),
        "display_names": shown,
        "probabilities": {str(k): round_or_none(v) for k, v in (result.probabilities or {}).items()},
        "defect_probability": round_or_none(result.defect_probability),
        "threshold": round_or_none(used),
        "needs_review": needs,
        "review_band": band,
        "latency_ms": {str(k): round(float(v), 2) for k, v in (result.timings_ms or {}).items()},
        "error": None if result.error is None else error_message(result.error, result.name, safe_name(result.name)),
        "heatmap_mode": getattr(result, "heatmap_mode", None),
        "heatmap_scale": None if scale is None else {k: round(float(v), 6) for k, v in scale.items()},
    }
    if heatmap_png:
        overlay = getattr(result, "overlay", None)
        out["heatmap_png_base64"] = None if overlay is None else base64.b64encode(encode_png(overlay)).decode("ascii")
    return out


def inspect_one(handler: Any, source: Any, name: str, heatmap: bool = True, opacity: float = 0.45,
                heatmap_mode: str | None = None):
    """One image through the handler under the inference lock. Bad input raises ValueError. ``heatmap_mode``: one
    of HEATMAP_MODES (None: the model's default)."""
    h = get_handler(handler)
    mode = check_heatmap_mode(heatmap_mode)
    extra = {} if mode is None else {"heatmap_mode": mode}  # handlers without modes are still served
    with INFERENCE_LOCK:
        return h.predict(source, heatmap=heatmap, opacity=opacity, name=name, **extra)


def inspect_many(handler: Any, sources: list, names: list[str], heatmap: bool = True, opacity: float = 0.45,
                 progress: Callable[[int, int], None] | None = None, heatmap_mode: str | None = None) -> list:
    """A batch through the handler; a bad item comes back with ``error`` set and the rest complete."""
    h = get_handler(handler)
    mode = check_heatmap_mode(heatmap_mode)
    extra = {} if mode is None else {"heatmap_mode": mode}
    with INFERENCE_LOCK:
        # batches of 8: the progress bar moves every ~0.5 s on two cores, at the same throughput as 16
        return h.predict_batch(sources, heatmap=heatmap, opacity=opacity, batch_size=8, on_error="collect",
                               names=names, progress=progress, **extra)


# ------------------------------------------------------------------------------------------- servers


# FastAPI reads these annotations at run time, so this module does not use `from __future__ import annotations`.
class InspectResponse(BaseModel):
    """One inspected image."""

    name: str = Field(description="the uploaded file's base name, control characters removed")
    verdict: Optional[str] = Field(description="OK or DEFECT (for a model without a defect class: the label)")
    label: Optional[str] = Field(description="the most probable class (its raw name, e.g. the folder name)")
    display_label: Optional[str] = Field(default=None, description="the human label of `label`, e.g. Defect")
    display_names: dict[str, str] = Field(default_factory=dict, description="human label of each class name")
    probabilities: dict[str, float] = Field(description="probability of each class")
    defect_probability: Optional[float] = Field(description="probability of the defect class")
    threshold: Optional[float] = Field(description="DEFECT when defect_probability >= threshold")
    needs_review: Optional[bool] = Field(
        default=None, description="defect_probability lies in review_band: a person should look at this part")
    review_band: Optional[dict[str, float]] = Field(
        default=None, description="low and high edge of the needs-review band around the threshold in use")
    latency_ms: dict[str, float] = Field(
        description="milliseconds per stage: decode, preprocess, forward, gradcam, overlay, total")
    error: Optional[str] = None
    heatmap_png_base64: Optional[str] = Field(
        default=None, description="with heatmap=true: the Grad-CAM heat map over the photo, PNG, base64")
    heatmap_mode: Optional[str] = Field(
        default=None, description="the heat map drawn: defect-evidence (on the model's fixed scale) or "
                                  "class-normalised (the per-image normalised CAM of the predicted class)")
    heatmap_scale: Optional[dict[str, float]] = Field(
        default=None, description="defect-evidence only: the evidence (logits) shown as 0.5 (threshold: the OK/defect "
                                  "boundary on validation) and as 1 (value: a typical validation defect); null when "
                                  "the model has no calibrated scale and each map is scaled to its own maximum")


class Health(BaseModel):
    """Whether the server and the model are up."""

    status: str
    model: str = Field(description="ready, loading, failed or not started")
    error: Optional[str] = None


class ErrorBody(BaseModel):
    """An error answer: what was wrong and what is allowed."""

    detail: str


class BodyTooLarge(HTTPException):
    """A request body past the limit; FastAPI passes HTTPExceptions through its body parsing unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {MAX_UPLOAD_MB} MB; the limit is {limit:,} bytes "
                              f"(one image of at most {MAX_UPLOAD_BYTES:,} bytes)")


class BodyLimitMiddleware:
    """Refuse oversized request bodies under ``prefix`` before they are read: by the declared Content-Length at
    once, and by counting bytes for a chunked body. Without it the multipart parser spools the whole body to
    disk before the endpoint can look at its size. Gradio's own upload route keeps its own limit."""

    def __init__(self, app, limit: int, prefix: str = "/api/"):
        self.app, self.limit, self.prefix = app, int(limit), prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefix):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0 or size > self.limit:
                detail = (BodyTooLarge(self.limit).detail if size > self.limit
                          else f"Content-Length {declared.decode(errors='replace')!r} is not a byte count")
                return await self._answer(send, 413 if size > self.limit else 400, detail)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except BodyTooLarge as exc:  # raised outside FastAPI's handlers (e.g. while the route was not reading)
            if not started:
                await self._answer(send, 413, exc.detail)

    @staticmethod
    async def _answer(send, status: int, detail: str) -> None:
        import json

        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def create_api(handler: Any):
    """The FastAPI app with ``POST /api/inspect`` and ``GET /api/health`` (the Gradio UI is mounted on it later)."""
    api = FastAPI(
        title="Casting inspection API",
        description="Inspect a photo of a metal casting: OK or DEFECT, class probabilities, latency and an optional "
                    "Grad-CAM heat map. The interactive app is served at `/` on the same server.",
        version="1.0",
    )
    errors = {400: {"model": ErrorBody, "description": "no file, or an empty file"},
              413: {"model": ErrorBody, "description": f"file larger than {MAX_UPLOAD_MB} MB"},
              422: {"model": ErrorBody, "description": "not a readable image, or a bad parameter"},
              503: {"model": ErrorBody, "description": "the model is loading or failed to load, or the server is "
                                                       "busy (see Retry-After)"}}

    @api.post("/api/inspect", response_model=InspectResponse, responses=errors, tags=["inspection"],
              summary="Inspect one casting image")
    def inspect(
        file: UploadFile = File(..., description=f"the image (JPEG, PNG, BMP, TIFF, WebP; at most {MAX_UPLOAD_MB} MB)"),
        heatmap: bool = Query(False, description="also return the heat-map overlay as a base64 PNG"),
        threshold: Optional[float] = Query(None, gt=0.0, lt=1.0,
                                        description="decision threshold on p(defect); default: the model's"),
        opacity: float = Query(0.45, ge=0.0, le=1.0, description="heat-map opacity in the overlay"),
        review_margin: Optional[float] = Query(
            None, ge=0.0, le=20.0, description="needs-review band, logits either side of the threshold; default: "
                                               "the model's band (derived on validation), moved to the threshold"),
        heatmap_mode: Optional[Literal["defect-evidence", "class-normalised"]] = Query(
            None, description="with heatmap=true: 'defect-evidence' (a model with a defect class: evidence for "
                              "DEFECT on the model's fixed scale, comparable between photos; its default) or "
                              "'class-normalised' (the per-image normalised CAM of the predicted class: every photo "
                              "reaches 1 somewhere; the default of a model without a defect class)"),
    ):
        """Inspect one image sent as multipart form field `file`: verdict (OK/DEFECT), class probabilities,
        the threshold used, latency per stage in ms and, with `heatmap=true`, the Grad-CAM overlay as a base64 PNG.
        Not an image: 422; over the size limit: 413; model loading or server busy: 503 with Retry-After."""
        # A plain `def`: FastAPI runs it in its thread pool, so a forward pass never blocks the event loop.
        if not _API_SLOTS.acquire(blocking=False):
            raise HTTPException(503, f"server busy: {MAX_API_WAITING} inspections are already waiting for the "
                                     "model; retry in a few seconds", headers={"Retry-After": "5"})
        try:
            return _inspect_upload(handler, file, heatmap, threshold, opacity, review_margin, heatmap_mode)
        finally:
            _API_SLOTS.release()

    @api.get("/api/health", response_model=Health, tags=["inspection"], summary="Server and model status")
    def health():
        """`model` is ready, loading, failed (with `error`) or not started."""
        state = model_state(handler)
        return {"status": "ok", "model": state, "error": getattr(handler, "error", None)}

    api.add_middleware(BodyLimitMiddleware, limit=MAX_UPLOAD_BYTES + BODY_SLACK_BYTES, prefix="/api/")
    return api


def _inspect_upload(handler: Any, file: UploadFile, heatmap: bool, threshold: Optional[float], opacity: float,
                    review_margin: Optional[float] = None, heatmap_mode: Optional[str] = None) -> dict:
    """The body of POST /api/inspect: size checks, one inspection, the JSON answer or an HTTP error."""
    name = safe_name(file.filename)
    data = file.file.read(MAX_UPLOAD_BYTES + 1)  # at most one byte past the limit
    if not data:
        raise HTTPException(400, f"{name}: empty file (0 bytes); send an image in the 'file' form field")
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"{name} is larger than {MAX_UPLOAD_MB} MB; the limit is {MAX_UPLOAD_BYTES:,} bytes")
    try:
        result = inspect_one(handler, data, name, heatmap=heatmap, opacity=opacity,
                             heatmap_mode=heatmap_mode if heatmap else None)
    except ModelUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "10"}) from None
    except ValueError as exc:  # the uploaded bytes are not a usable image
        raise HTTPException(422, error_message(str(exc).replace(f"<{len(data)} bytes>", name), file.filename,
                                               name)) from None
    except Exception as exc:
        log.exception("inspecting %s failed", name)
        raise HTTPException(500, f"internal error while inspecting {name}: {type(exc).__name__}") from None
    return result_json(result, get_handler(handler), threshold=threshold, heatmap_png=heatmap,
                       review_margin=review_margin)


def create_app(handler: Any, demo: Any, **mount_kwargs):
    """The JSON API with the Gradio UI mounted at ``/``; ``mount_kwargs`` go to ``gr.mount_gradio_app``
    (theme, css, ...). Upload limits, the queue bounds and the served folders are set here."""
    import gradio as gr

    api = create_api(handler)
    # Bounded queue: at most 16 waiting jobs; one inspection at a time (two cores, and the model is shared).
    demo.queue(default_concurrency_limit=1, max_size=16)
    calm_queue(demo)
    allowed = [str(REPO / "examples"), str(REPO / "reports")]
    # Client-side rendering, as tested, even where GRADIO_SSR_MODE=true (Spaces): SSR would start a Node server
    # at mount time, before the page can answer.
    mount_kwargs.setdefault("ssr_mode", False)
    return gr.mount_gradio_app(api, demo, path="/", max_file_size=MAX_UPLOAD_BYTES, allowed_paths=allowed,
                               show_error=True, footer_links=["api", "gradio"], **mount_kwargs)


def calm_queue(demo: Any) -> None:
    """Make Gradio's queue poll every QUEUE_POLL_S (progress every PROGRESS_POLL_S) instead of every 1 ms (10 ms):
    see QUEUE_POLL_S. The attributes are Gradio internals (checked by tests/test_shift.py for the pinned version);
    a Gradio without them is left as it is."""
    queue = getattr(demo, "_queue", None)
    try:  # INSPECT_QUEUE_POLL_S: another interval (benchmarks/server_forward.py compares 0.001, Gradio's own)
        poll = float(os.environ.get("INSPECT_QUEUE_POLL_S") or QUEUE_POLL_S)
    except ValueError:
        raise ValueError(f"INSPECT_QUEUE_POLL_S={os.environ['INSPECT_QUEUE_POLL_S']!r} is not a number of "
                         "seconds (e.g. 0.01)") from None
    for attr, value in (("sleep_when_free", poll), ("progress_update_sleep_when_free", PROGRESS_POLL_S)):
        if queue is not None and isinstance(getattr(queue, attr, None), (int, float)):
            setattr(queue, attr, value)


def server_address(host: str | None = None, port: int | str | None = None) -> tuple[str, int]:
    """Host and port from the arguments, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, PORT, else 0.0.0.0:7860."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "0.0.0.0"
    raw = port if port is not None else (os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"server port {raw!r} is not a number; set GRADIO_SERVER_PORT or PORT to 1..65535") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"server port {port} is out of range; use 1..65535")
    return host, port


def serve(build_demo: Callable[[Any], Any], host: str | None = None, port: int | None = None,
          handler: Any = None, **mount_kwargs) -> None:
    """Build the UI around a LazyHandler, mount it on the JSON API and serve with uvicorn until stopped.

    The model starts loading in a background thread as soon as the server accepts connections.
    """
    import uvicorn

    host, port = server_address(host, port)
    handler = handler if handler is not None else LazyHandler(default_handler_factory())
    app = create_app(handler, build_demo(handler), **mount_kwargs)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    if isinstance(handler, LazyHandler):
        handler.start(after=lambda: server.started)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    print(f"Casting inspection: http://{shown}:{port}  (JSON API: POST /api/inspect, docs at /docs)", flush=True)
    server.run()
