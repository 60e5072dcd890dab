"""The models a browser session may switch to (adapted here or uploaded), kept loaded in a small server-side cache
shared by sessions (least recently used dropped first, loaded again from its file, digest checked, when needed).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from inspectkit.limits import KEEP_FILES_S
from inspectkit.serve.model_source import ModelUnavailable, get_handler

#: Adapted or uploaded models kept loaded for the sessions that use them (least recently used dropped first;
#: a dropped one is loaded again from its file when its session next inspects).
MAX_SESSION_MODELS = 4


_MODELS: OrderedDict[str, Any] = OrderedDict()


_MODELS_LOCK = threading.Lock()


def _load_handler(path: str, sha256: str, backend: str):
    from inspectkit.inference.handler import InferenceHandler

    return InferenceHandler(path, backend=backend, expected_sha256=sha256)


def _remember(sha: str, handler: Any) -> None:
    with _MODELS_LOCK:
        _MODELS[sha] = handler
        _MODELS.move_to_end(sha)
        while len(_MODELS) > MAX_SESSION_MODELS:
            _MODELS.popitem(last=False)


def pick(shared: Any, choice: dict | None) -> Any:
    """The handler this session inspects with: its adapted or uploaded model when it switched, else ``shared``.

    The session's model is taken from the cache, or loaded again from its file (checked against its SHA-256)
    when the cache dropped it. Raises ModelUnavailable when that file is gone.
    """
    if not choice:
        return shared
    sha = choice["sha256"]
    with _MODELS_LOCK:
        h = _MODELS.get(sha)
        if h is not None:
            _MODELS.move_to_end(sha)
            return h
    if not Path(choice["path"]).is_file():
        raise ModelUnavailable(
            f"this session's model {choice.get('name')} is no longer on the server (files are kept "
            f"{KEEP_FILES_S // 3600} h); load it again, or go back to the default model")
    try:
        h = _load_handler(choice["path"], sha, choice.get("backend", "auto"))
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelUnavailable(
            f"this session's model {choice.get('name')} could not be loaded: {exc}") from None
    _remember(sha, h)
    return h


def class_names_of(shared: Any, choice: dict | None) -> list[str]:
    """The classes of the session's model (waits for the shared model to load)."""
    return list(get_handler(pick(shared, choice)).class_names)
