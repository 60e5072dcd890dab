"""The HTTP server: FastAPI with ``POST /api/inspect`` (multipart image in, JSON out), ``GET /api/health`` (model,
guard and drift) and ``GET``/``DELETE /api/drift``, a body-size limit read before the body is, the Gradio UI mounted
on it, and uvicorn to run it.

Drift over the server's recent requests: each app keeps one :class:`RecentDrift`, a
:class:`inspectkit.drift.DriftMonitor` for the loaded model (started again when the model changes) fed with every
successful ``/api/inspect`` result, UNUSABLE ones included. Its alarm latches until ``DELETE /api/drift`` (someone
fixed the lamp) or a restart.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Optional

from fastapi import (  # already imported by gradio: no extra start time
    FastAPI,
    File,
    HTTPException,
    Query,
    UploadFile,
)
from pydantic import BaseModel, Field

from inspectkit.limits import (
    BODY_SLACK_BYTES,
    MAX_API_WAITING,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_MB,
    PROGRESS_POLL_S,
    QUEUE_POLL_S,
)
from inspectkit.names import error_message, safe_name
from inspectkit.serve.model_source import (
    REPO,
    LazyHandler,
    ModelUnavailable,
    default_handler_factory,
    get_handler,
    model_state,
)
from inspectkit.serve.results import inspect_one, result_json

log = logging.getLogger("inspect.service")


_API_SLOTS = threading.BoundedSemaphore(MAX_API_WAITING)


# FastAPI reads these annotations at run time, so this module does not use `from __future__ import annotations`.
class InspectResponse(BaseModel):
    """One inspected image."""

    name: str = Field(description="the uploaded file's base name, control characters removed")
    verdict: Optional[str] = Field(
        description="one of OK, DEFECT, UNUSABLE. UNUSABLE: the model's guard says this photo cannot be judged "
                    "(see `unusable_reason`); it stays UNUSABLE at any `threshold`. (A model without a defect class "
                    "answers its label instead.)")
    label: Optional[str] = Field(description="the class the network chose at `threshold` (its raw name, e.g. the "
                                             "folder name); also given for an UNUSABLE photo")
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
    unusable_reason: Optional[str] = Field(
        default=None, description="why the verdict is UNUSABLE, the first check that failed: too dark, overexposed, "
                                  "out of focus, part not fully in frame (image checks), or not a casting (novelty); "
                                  "null for OK and DEFECT")
    novelty: Optional[float] = Field(
        default=None, description="how unlike the training photos the network finds this photo (higher: less like "
                                  "them; above the guard's novelty_threshold, see /api/health: UNUSABLE, not a "
                                  "casting); null when the model has no guard")


class GuardState(BaseModel):
    """The model's guard: whether UNUSABLE can be answered, and what it was fitted on."""

    on: bool = Field(description="true: photos that cannot be judged are answered UNUSABLE")
    off_reason: Optional[str] = Field(default=None, description="why the guard is off (e.g. the checkpoint has none)")
    novelty_threshold: Optional[float] = Field(default=None, description="novelty above which a photo is UNUSABLE")
    reasons: list[str] = Field(default_factory=list, description="every unusable_reason the guard can give")
    fitted_on: dict[str, Any] = Field(default_factory=dict, description="the photos the guard was fitted on")


class DriftChange(BaseModel):
    """One drift indicator that fired."""

    indicator: str = Field(description="novelty, darker, brighter, blur or framing")
    meaning: str = Field(description="what changed, in words")
    first_row: int = Field(description="the request (counted from 0 since the monitor started) it fired at")
    recent_rate: Optional[float] = Field(description="share of the last `window` photos beyond the reference's tail")
    reference_rate: float = Field(description="the same share on the model's validation photos")


class DriftState(BaseModel):
    """Drift over the photos this server inspected through POST /api/inspect since the model loaded (or the last
    DELETE /api/drift): a CUSUM per indicator against the model's validation photos."""

    on: bool = Field(description="false when the model has no drift reference (no guard): see off_reason")
    off_reason: Optional[str] = None
    alarm: bool = Field(description="true once any indicator fired; it stays on until DELETE /api/drift")
    first_row: Optional[int] = Field(default=None, description="the request at which the alarm first fired")
    photos: int = Field(description="photos counted since the monitor started")
    window: int = Field(description="photos the recent rates are taken over (at most the last 100)")
    changed: list[DriftChange] = Field(default_factory=list, description="each indicator that fired")
    summary: str = Field(description="one line: 'no drift over N photos' or what changed")
    since: Optional[str] = Field(default=None, description="when the monitor started (UTC, ISO 8601)")


class Health(BaseModel):
    """Whether the server and the model are up; the model's guard and the drift of recent requests."""

    status: str
    model: str = Field(description="ready, loading, failed or not started")
    error: Optional[str] = None
    guard: Optional[GuardState] = Field(default=None, description="the loaded model's guard (null until it is ready)")
    drift: Optional[DriftState] = Field(default=None, description="drift over recent POST /api/inspect photos (null "
                                                                  "until the model is ready)")


def guard_state(handler: Any) -> dict:
    """The guard as /api/health shows it, for a loaded handler: its summary, or off with the reason."""
    guard = getattr(handler, "guard", None)
    if guard is None:
        why = getattr(handler, "guard_off_reason", None) or "this model has no guard: UNUSABLE is never returned"
        return {"on": False, "off_reason": why}
    return {**guard.summary(), "off_reason": None}


class RecentDrift:
    """One DriftMonitor for the model the server runs, fed with the results of its requests (thread-safe).

    The monitor is started for the handler that produced the first result, and started again when a result comes
    from another handler (the model changed); a handler without a guard, or a guard without a drift reference,
    leaves drift off. It never takes the inference lock: health answers while the model is busy.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._handler: Any = None
        self._monitor = None
        self._off_reason: str | None = None
        self._since: float | None = None

    def _for(self, handler: Any):
        """The monitor for ``handler`` (None: drift is off, ``_off_reason`` says why), started again for a new
        handler. Called with the lock held."""
        if handler is not self._handler:
            from inspectkit.drift import DriftMonitor

            guard = getattr(handler, "guard", None)
            ref = getattr(guard, "drift_reference", None)
            monitor, why = None, None
            if guard is None:
                why = f"no drift reference: {guard_state(handler)['off_reason']}"
            elif not ref:
                why = "the model's guard has no drift reference (fit the guard again)"
            else:
                try:
                    monitor = DriftMonitor(ref)
                except (KeyError, TypeError, ValueError) as exc:
                    why = f"the model's drift reference cannot be read ({type(exc).__name__}: {exc})"
            self._handler, self._monitor, self._off_reason, self._since = handler, monitor, why, time.time()
        return self._monitor

    def add(self, handler: Any, result: Any) -> None:
        """Count one inspection of ``handler`` (a decoded photo; results with an error are skipped)."""
        if getattr(result, "error", None) is not None:
            return
        with self._lock:
            monitor = self._for(handler)
        if monitor is not None:  # the monitor has its own lock; add_result skips results without statistics
            monitor.add_result(result, list(handler.class_names))

    def reset(self, handler: Any) -> None:
        """Start counting again for ``handler`` (the alarm is cleared)."""
        with self._lock:
            monitor = self._for(handler)
            if monitor is not None:
                monitor.reset()
                self._since = time.time()

    def state(self, handler: Any) -> dict:
        """The DriftState for ``handler`` (a model not yet seen: nothing counted yet)."""
        with self._lock:
            monitor, why, since = self._for(handler), self._off_reason, self._since
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since else None
        if monitor is None:
            return {"on": False, "off_reason": why, "alarm": False, "first_row": None, "photos": 0, "window": 0,
                    "changed": [], "summary": "drift is not followed", "since": stamp}
        return {"on": True, "off_reason": None, **monitor.state(), "summary": monitor.describe(), "since": stamp}


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
    """The FastAPI app with ``POST /api/inspect``, ``GET /api/health`` and ``GET``/``DELETE /api/drift`` (the Gradio
    UI is mounted on it later). ``api.state.drift`` is its :class:`RecentDrift`."""
    api = FastAPI(
        title="Casting inspection API",
        description="Inspect a photo of a metal casting: OK, DEFECT or UNUSABLE (with the reason), class "
                    "probabilities, latency and an optional Grad-CAM heat map; the health and drift of the line "
                    "over recent requests. The interactive app is served at `/` on the same server.",
        version="1.1",
    )
    drift = RecentDrift()
    api.state.drift = drift
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
        """Inspect one image sent as multipart form field `file`: verdict (OK, DEFECT, or UNUSABLE with
        `unusable_reason` when the photo cannot be judged), class probabilities, the threshold used, novelty,
        latency per stage in ms and, with `heatmap=true`, the Grad-CAM overlay as a base64 PNG. Each answered photo
        counts towards the drift shown by /api/health.
        Not an image: 422; over the size limit: 413; model loading or server busy: 503 with Retry-After."""
        # A plain `def`: FastAPI runs it in its thread pool, so a forward pass never blocks the event loop.
        if not _API_SLOTS.acquire(blocking=False):
            raise HTTPException(503, f"server busy: {MAX_API_WAITING} inspections are already waiting for the "
                                     "model; retry in a few seconds", headers={"Retry-After": "5"})
        try:
            return _inspect_upload(handler, file, heatmap, threshold, opacity, review_margin, heatmap_mode, drift)
        finally:
            _API_SLOTS.release()

    @api.get("/api/health", response_model=Health, tags=["inspection"], summary="Server, model, guard and drift")
    def health():
        """`model` is ready, loading, failed (with `error`) or not started. Once it is ready: `guard` (on, or off
        and why) and `drift` over the photos sent to POST /api/inspect since the model loaded (`alarm`, the
        request it fired at, `changed`: what changed). Never waits for the model or for a running inspection."""
        state = model_state(handler)
        out = {"status": "ok", "model": state, "error": getattr(handler, "error", None), "guard": None, "drift": None}
        if state == "ready":
            h = get_handler(handler)  # ready: returns at once
            out["guard"], out["drift"] = guard_state(h), drift.state(h)
        return out

    def ready_handler() -> Any:
        if model_state(handler) != "ready":
            raise HTTPException(503, f"the model is {model_state(handler)}; drift starts with its first inspection",
                                headers={"Retry-After": "10"})
        return get_handler(handler)

    busy = {503: {"model": ErrorBody, "description": "the model is not loaded yet, or failed to load"}}

    @api.get("/api/drift", response_model=DriftState, responses=busy, tags=["inspection"],
             summary="Drift over recent inspections")
    def drift_state():
        """The same as `drift` in /api/health."""
        return drift.state(ready_handler())

    @api.delete("/api/drift", response_model=DriftState, responses=busy, tags=["inspection"],
                summary="Start counting drift again")
    def drift_reset():
        """Forget the photos counted so far and clear the alarm (e.g. once the cause is fixed); returns the new,
        empty state."""
        h = ready_handler()
        drift.reset(h)
        return drift.state(h)

    api.add_middleware(BodyLimitMiddleware, limit=MAX_UPLOAD_BYTES + BODY_SLACK_BYTES, prefix="/api/")
    return api


def _inspect_upload(handler: Any, file: UploadFile, heatmap: bool, threshold: Optional[float], opacity: float,
                    review_margin: Optional[float] = None, heatmap_mode: Optional[str] = None,
                    drift: Optional[RecentDrift] = None) -> dict:
    """The body of POST /api/inspect: size checks, one inspection (counted by ``drift``), the JSON answer or an
    HTTP error."""
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
    h = get_handler(handler)
    if drift is not None:
        try:
            drift.add(h, result)
        except Exception:  # drift is a report: it must never cost the user the answer
            log.exception("drift monitor failed on %s", name)
    return result_json(result, h, threshold=threshold, heatmap_png=heatmap, review_margin=review_margin)


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
    see QUEUE_POLL_S. The attributes are Gradio internals (checked by tests/app/test_inspect_jobs.py for the pinned version);
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
