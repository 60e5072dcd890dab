"""One inspection result as the API and the batch tools report it: verdict (OK, DEFECT or UNUSABLE with its reason),
label, probabilities, threshold, the needs-review flag, novelty, timings and optionally the heat map as PNG; and the
inspection calls that take the fair lock.
"""

import base64
import io
from collections.abc import Callable
from typing import Any

from inspectkit.labels import label_for
from inspectkit.limits import INFERENCE_LOCK
from inspectkit.names import error_message, safe_name
from inspectkit.serve.model_source import get_handler

#: Heat maps a request may ask for (inference_handler.HEATMAP_MODES; None: the model's default).
HEATMAP_MODES = ("defect-evidence", "class-normalised")


def encode_png(rgb) -> bytes:
    """PNG bytes of an RGB uint8 array."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def round_or_none(x: Any, digits: int = 6) -> float | None:
    """``round(float(x), digits)``, or None for None."""
    return None if x is None else round(float(x), digits)


def display_names_of(handler: Any) -> dict[str, str]:
    """The handler's human labels per class (a handler without them gets the defaults from its class names)."""
    names = getattr(handler, "display_names", None)
    if isinstance(names, dict):
        return dict(names)
    from inspectkit.labels import default_names

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
    from inspectkit import review

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
    ``heatmap_mode`` and ``heatmap_scale`` (None: no heat map, or one scaled per image), ``unusable_reason`` and
    ``novelty`` (the guard's: see below); with ``heatmap_png``, the Grad-CAM heat map drawn over the photo as a
    base64 PNG. ``threshold`` re-decides the verdict from the probabilities (no new forward pass), and the band
    moves with it; ``review_margin`` (logits) replaces the band by a symmetric one.

    ``verdict`` is OK, DEFECT or UNUSABLE: UNUSABLE when the model's guard says the photo cannot be judged
    (``unusable_reason``: "too dark", "not a casting", ...); it stays UNUSABLE at any ``threshold``, while ``label``,
    the probabilities and ``needs_review`` are still the network's, re-decided as for any photo. ``novelty``: how
    unlike the training photos (higher: less like them; None without a guard).
    """
    verdict, used, label = result.verdict, result.threshold, result.label
    reason = getattr(result, "unusable_reason", None) if result.error is None else None
    if result.error is None and threshold is not None and result.defect_probability is not None:
        used = float(threshold)
        decided = handler.decide(result.probabilities, threshold)  # the network's OK/DEFECT at this threshold
        label = label_for(handler, result.probabilities, decided)
        # the handler's rule: a photo with a reason stays UNUSABLE (handlers without a guard never have one)
        verdict = decided if not reason else handler.decide(result.probabilities, threshold, unusable_reason=reason)
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
        "unusable_reason": reason,
        "novelty": None if result.error is not None else round_or_none(getattr(result, "novelty", None)),
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
