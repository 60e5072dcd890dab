"""The functions behind the Gradio API endpoints ``/predict`` and ``/predict_batch`` (the API tab documents them):
one image or up to MAX_BATCH images in, the same JSON as ``POST /api/inspect`` out. A bad request becomes a
``gr.Error`` with a message naming the bad value; a bad file in a batch gets ``error`` and the others complete.
"""

from __future__ import annotations

import os
from typing import Any

from inspectkit.limits import MAX_BATCH, MAX_UPLOAD_BYTES, MAX_UPLOAD_MB
from inspectkit.names import error_message, safe_text, upload_name
from inspectkit.serve.model_source import ModelUnavailable, get_handler
from inspectkit.serve.results import check_heatmap_mode, display_names_of, inspect_many, inspect_one, result_json
from inspectkit.ui.common.uploads import as_paths


def _check_threshold(threshold: Any) -> float | None:
    if threshold is None:
        return None
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold {threshold!r} must be between 0 and 1 (exclusive), or None for the model's")
    return t


def _api_error(exc: Exception):
    import gradio as gr

    return gr.Error(safe_text(exc), title="Cannot inspect")


def api_predict(handler: Any, image: Any, threshold: Any = None, heatmap: bool = False,
                heatmap_mode: Any = None) -> dict:
    """The ``/predict`` Gradio endpoint: one image in, the JSON result out (same fields as POST /api/inspect).
    ``heatmap_mode``: "defect-evidence", "class-normalised" or empty (the model's default)."""
    try:
        t = _check_threshold(threshold)
        mode = check_heatmap_mode(heatmap_mode)
        paths = as_paths(image)
        if len(paths) != 1:
            raise ValueError(f"give exactly one image file, got {len(paths)}")
        name = upload_name(paths[0])
        size = os.path.getsize(paths[0])
        if size > MAX_UPLOAD_BYTES:
            raise ValueError(f"{name} is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB per image")
        result = inspect_one(handler, paths[0], name, heatmap=heatmap, heatmap_mode=mode if heatmap else None)
        return result_json(result, get_handler(handler), threshold=t, heatmap_png=heatmap)
    except (ValueError, OSError, ModelUnavailable) as exc:
        raise _api_error(exc) from None


def api_predict_batch(handler: Any, images: Any, threshold: Any = None) -> list[dict]:
    """The ``/predict_batch`` Gradio endpoint: up to MAX_BATCH images, one result each; bad files carry ``error``."""
    try:
        t = _check_threshold(threshold)
        paths = as_paths(images)
        if not paths or len(paths) > MAX_BATCH:
            raise ValueError(f"give 1 to {MAX_BATCH} image files, got {len(paths)}")
        names = [upload_name(p) for p in paths]
        ok = [i for i, p in enumerate(paths) if 0 < os.path.getsize(p) <= MAX_UPLOAD_BYTES]
        results = dict(zip(ok, inspect_many(handler, [paths[i] for i in ok], [names[i] for i in ok],
                                                    heatmap=False))) if ok else {}
        h = get_handler(handler)
        out = []
        for i, n in enumerate(names):
            if i in results:
                out.append(result_json(results[i], h, threshold=t))
                if out[-1]["error"]:
                    out[-1]["error"] = error_message(results[i].error, paths[i], n)
            else:
                size = os.path.getsize(paths[i])
                why = "is empty (0 bytes)" if size == 0 else f"is {size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_MB} MB"
                out.append({"name": n, "verdict": None, "label": None, "display_label": None,
                            "display_names": display_names_of(h), "probabilities": {},
                            "defect_probability": None, "threshold": t, "needs_review": None, "review_band": None,
                            "latency_ms": {}, "error": f"{n} {why}", "heatmap_mode": None, "heatmap_scale": None,
                            "unusable_reason": None, "novelty": None})
        return out
    except (ValueError, OSError, ModelUnavailable) as exc:
        raise _api_error(exc) from None
