"""Which model the server runs and when it is ready.

* :func:`resolve_checkpoint` picks the committed ``final_best_model.pt``, a local path, or a file from a Hub model
  repo when ``INSPECT_MODEL_REPO`` names one (digest checked when ``INSPECT_MODEL_SHA256`` is set);
* :class:`LazyHandler` loads it in a background thread, so the page answers at once and only the first inspection
  may wait for the model.

Importing this module is cheap on purpose: torch, the handler and huggingface_hub are imported only when the
model is actually loaded.
"""

import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from inspectkit.limits import MODEL_WAIT_S
from inspectkit.paths import CHECKOUT

log = logging.getLogger("inspect.service")


REPO = CHECKOUT


DEFAULT_CHECKPOINT = "final_best_model.pt"


ENV_MODEL_REPO = "INSPECT_MODEL_REPO"        # Hub model repo id, e.g. "acme/casting-inspector"


ENV_MODEL_FILE = "INSPECT_MODEL_FILE"        # file name in that repo (default final_best_model.pt)


ENV_MODEL_REVISION = "INSPECT_MODEL_REVISION"  # branch, tag or commit in that repo (default main)


ENV_MODEL_PATH = "INSPECT_MODEL_PATH"        # local checkpoint path (default: the committed one)


ENV_MODEL_SHA256 = "INSPECT_MODEL_SHA256"    # expected digest, checked before loading


class ModelUnavailable(RuntimeError):
    """The model is still loading (past the wait) or failed to load; the message says which and why."""


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
    downloaded checkpoint's (inspectkit/inference/fast.py, :func:`inspectkit.inference.fast.load_graph`).
    """
    from huggingface_hub import hf_hub_download

    from inspectkit.inference.fast import export_command

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
        # onnxruntime (torch without a graph): loader thread only
        from inspectkit.inference.handler import InferenceHandler

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
