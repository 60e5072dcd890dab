"""What is calibrated on validation besides the threshold and the review band: the heat map's fixed scale and the
validation score histogram, both stored in the checkpoint (plain numbers and strings).

**The map.** For a model with a defect class the served heat map is the defect evidence
``E = ReLU(sum_k (w_defect,k - w_ok,k) A_k)`` on the last block's maps A (Grad-CAM of logit[defect] - logit[ok],
times h*w; :func:`inspectkit.heatmap.render.evidence_from_features`). Its units are logits: before the ReLU the map's mean
plus the bias difference is the logit difference itself.

**The fixed scale** (optional key ``heatmap_scale``), learned on the validation images as anomalib normalises its
anomaly maps with thresholds learned on validation (there the learned threshold becomes 0.5 of the shown scale)::

    peak(image)  = the largest cell of its evidence map E
    D = peaks of the validation defects the model calls DEFECT (p_defect >= its threshold)
    O = peaks of the validation OK parts the model calls OK
    value     = median(D)                                   -> shown as 1: "a typical defect"
    threshold = sqrt(p99(O) * p1(D))                        -> shown as 0.5: "the OK/defect boundary"
                (geometric midpoint between the strongest 1 % of good parts and the weakest 1 % of caught
                defects; p1(D) / 2 when p99(O) is 0 or O is empty; value / 2 if that would reach value)
    shown(E)  = piecewise linear through 0 -> 0, threshold -> 0.5, value -> 1, clipped at 1

so a good part stays cool (its evidence is below the boundary almost everywhere), a caught defect reaches 0.5
where its evidence is, and two photos are on one scale. Percentiles, not extremes, so one odd validation photo
does not move the scale. Without a caught validation defect there is no scale (None).

**Fallback** for a checkpoint without a scale (older ones; ``calibrate_heatmap.py`` adds one without retraining):
each photo's evidence map is divided by its own maximum, flagged ``uncalibrated`` in the API and the UI legend;
zero evidence stays zero, but colours cannot be compared between photos.

**The score histogram** (``metrics.validation_score_histogram``): the validation p(defect) of each class, binned in
logit space (where the review band is defined), for the Model tab's view of the margin around the threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCALE_RULE = ("value = median peak of the defect-evidence map over the validation defects the model calls DEFECT "
              "(shown as 1); threshold = sqrt(p99 of the peaks of validation OK parts called OK x p1 of those defect "
              "peaks) (shown as 0.5; p1/2 when no OK evidence); shown = piecewise linear 0->0, threshold->0.5, "
              "value->1, clipped")
MAP_NAME = "defect-evidence"
#: Histogram of validation p(defect) in logit space: bins of 0.5 logits from -12 to 12, outside values in the end bins.
HIST_LOW, HIST_HIGH, HIST_BINS = -12.0, 12.0, 48
EPS = 1e-12


# ------------------------------------------------------------------------------------------------ the scale

def peaks(maps: Any) -> np.ndarray:
    """The largest value of each map (N maps of any shape) as float64; an empty batch gives an empty array."""
    m = np.asarray(maps, dtype=np.float64)
    if m.size == 0:
        return np.zeros(0)
    return m.reshape(len(m), -1).max(axis=1)


def heatmap_scale(maps: Any, is_defect: Sequence, p_defect: Sequence, threshold: float,
                  layer: str | None = None) -> dict | None:
    """The fixed heat-map scale from validation evidence maps (rule: the module docstring, ``SCALE_RULE``).

    ``maps``: N raw defect-evidence maps (h x w each, logit units); ``is_defect``: true labels; ``p_defect``: the
    model's p(defect) per image; ``threshold``: the checkpoint's decision threshold. Returns a flat dict of numbers
    and strings (``value``, ``threshold``, ``rule`` and the counts behind them), or None when no validation defect is
    called DEFECT (nothing to anchor a scale to).
    """
    m = np.asarray(maps, dtype=np.float64)
    y = np.asarray(is_defect).astype(bool).reshape(-1)
    p = np.asarray(p_defect, dtype=np.float64).reshape(-1)
    if not (len(m) == len(y) == len(p)):
        raise ValueError(f"{len(m)} maps, {len(y)} labels and {len(p)} scores: one of each per image is needed")
    if m.size and not np.all(np.isfinite(m)):
        raise ValueError("evidence maps contain NaN or infinite values")
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(f"threshold {threshold!r} must be in (0, 1)")
    pk = peaks(m)
    caught, good = pk[y & (p >= t)], pk[~y & (p < t)]
    if not caught.size or float(np.median(caught)) <= 0.0:
        log.warning("no validation defect is called DEFECT with evidence > 0: no heat-map scale can be calibrated")
        return None
    value = float(np.median(caught))
    d1 = float(np.percentile(caught, 1))
    o99 = float(np.percentile(good, 99)) if good.size else 0.0
    how = "geometric midpoint"
    if o99 <= 0.0 or d1 <= 0.0:
        thr, how = (d1 if d1 > 0 else value) / 2.0, "half the weakest caught defects' peak"
    else:
        thr = math.sqrt(o99 * d1)
    if not 0.0 < thr < value:
        thr, how = value / 2.0, "half the value (OK and defect peaks overlap)"
    out = {"value": value, "threshold": float(thr), "map": MAP_NAME, "units": "logit", "source": "validation",
           "rule": SCALE_RULE, "threshold_from": how,
           "validation_defects_called": int(caught.size), "validation_ok_called": int(good.size),
           "defect_peak_p1": d1, "defect_peak_median": value, "ok_peak_p99": o99,
           "validation_defects_reaching_half": float((caught >= thr).mean()),
           "validation_ok_reaching_half": float((good >= thr).mean()) if good.size else 0.0,
           "validation_ok_cells_above_half": float((m[~y & (p < t)] > thr).mean()) if good.size else 0.0}
    if layer is not None:
        out["layer"] = str(layer)
    return out


def check_scale(scale: Any, name: str = "heatmap_scale") -> dict:
    """``scale`` if it is a usable scale dict (finite 0 < threshold < value, plain numbers and strings); else a
    ValueError naming the bad entry and what is allowed."""
    if not isinstance(scale, dict):
        raise ValueError(f"{name} must be a dict with value and threshold, got {type(scale).__name__}")
    for key in ("value", "threshold"):
        v = scale.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} {key} {v!r} must be a finite number > 0")
    if not scale["threshold"] < scale["value"]:
        raise ValueError(f"{name} threshold {scale['threshold']!r} must be below its value {scale['value']!r}")
    if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) or v is None for v in scale.values()):
        raise ValueError(f"{name} must hold only numbers and strings")
    return scale


def scale_for_checkpoint(info: dict, layer: str | None = None) -> dict | None:
    """The fixed scale a loaded checkpoint (or its info dict) gives for heat maps at ``layer``: its stored
    ``heatmap_scale`` when usable and made at that layer, else None (the stated fallback: per-image maximum).

    None too for a model without a defect class (no defect evidence to scale). A damaged entry never stops
    inspection: it is treated as absent.
    """
    if info.get("defect_index") is None:
        return None
    stored = info.get("heatmap_scale")
    if stored is None:
        return None
    try:
        check_scale(stored, "the checkpoint's heatmap_scale")
    except ValueError as exc:
        log.warning("ignoring the checkpoint's heat-map scale: %s", exc)
        return None
    if layer is not None and stored.get("layer") not in (None, layer):
        return None  # calibrated at another layer: its units do not apply here
    return dict(stored)


# ------------------------------------------------------------------------------------------- the histogram

def score_histogram(labels: Sequence, p_defect: Sequence, class_names: Sequence[str]) -> dict:
    """The validation p(defect) of each class, binned in logit space (bins of (HIST_HIGH - HIST_LOW) / HIST_BINS
    logits from HIST_LOW to HIST_HIGH; scores beyond them counted in the end bins). Plain ints, floats, strings."""
    y = np.asarray(labels).reshape(-1)
    p = np.asarray(p_defect, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels for {len(p)} scores")
    if p.size and (not np.all(np.isfinite(p)) or (p < 0).any() or (p > 1).any()):
        raise ValueError("scores must be probabilities in [0, 1]")
    q = np.clip(p, EPS, 1 - EPS)
    z = np.clip(np.log(q) - np.log1p(-q), HIST_LOW, HIST_HIGH)
    edges = np.linspace(HIST_LOW, HIST_HIGH, HIST_BINS + 1)
    counts = {}
    for c, name in enumerate(class_names):
        h, _ = np.histogram(z[y == c], bins=edges)
        counts[str(name)] = [int(v) for v in h]
    return {"space": "logit(p_defect)", "low": HIST_LOW, "high": HIST_HIGH, "bins": HIST_BINS,
            "counts": counts, "n": int(len(p)), "source": "validation"}


def check_histogram(hist: Any, name: str = "validation_score_histogram") -> dict:
    """``hist`` if it is a usable histogram (see :func:`score_histogram`); else ValueError naming the problem."""
    if not isinstance(hist, dict):
        raise ValueError(f"{name} must be a dict, got {type(hist).__name__}")
    try:
        low, high, bins = float(hist["low"]), float(hist["high"]), int(hist["bins"])
        counts = hist["counts"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{name} needs low, high, bins and counts") from None
    if not (low < high and bins >= 1 and isinstance(counts, dict) and counts):
        raise ValueError(f"{name}: low {low} < high {high}, bins >= 1 and per-class counts are needed")
    for k, v in counts.items():
        if not isinstance(v, list) or len(v) != bins or not all(isinstance(c, int) and c >= 0 for c in v):
            raise ValueError(f"{name} counts of {k!r} must be {bins} non-negative ints")
    return hist


# ----------------------------------------------------------------------------------------- computing them

def evidence_and_probs(model, arch: str, images: Sequence[np.ndarray], spec: dict, defect_index: int,
                       batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities N x C, raw defect-evidence maps N x h x w) of decoded RGB images with a PyTorch
    model: one forward pass per batch, the last block's maps caught by a hook (removed afterwards)."""
    import torch
    from torch import nn

    from inspectkit.heatmap.render import evidence_from_features
    from inspectkit.metrics import softmax
    from inspectkit.model import cam_layer_name, head
    from inspectkit.preprocess import preprocess

    layer = dict(model.named_modules())[cam_layer_name(arch)]
    linear = [m for m in head(model, arch).modules() if isinstance(m, nn.Linear)][-1]
    weight = linear.weight.detach().cpu().numpy()
    caught: list = []
    handle = layer.register_forward_hook(lambda mod, inp, out: caught.append(out.detach()))
    s = int(spec["size"])
    logits, maps = [], []
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = images[start:start + batch_size]
                x = np.empty((len(chunk), 3, s, s), dtype=np.float32)
                for i, im in enumerate(chunk):
                    preprocess(im, spec, out=x[i])
                caught.clear()
                logits.append(model(torch.from_numpy(x)).numpy())
                maps.append(evidence_from_features(caught[0].numpy(), weight, defect_index))
    finally:
        handle.remove()
    if not logits:
        return np.zeros((0, len(weight))), np.zeros((0, 0, 0), np.float32)
    return softmax(np.concatenate(logits)), np.concatenate(maps)


def calibrate(model, arch: str, class_names: Sequence[str], defect_index: int | None, threshold: float | None,
              spec: dict, images: Sequence[np.ndarray], labels: Sequence) -> dict:
    """Both calibrations from validation images: ``{"heatmap_scale": dict or None, "histogram": dict or None,
    "probs": N x C}``. A model without a defect class gets neither (its heat map stays the per-image normalised
    class CAM, and it has no p(defect))."""
    from inspectkit.model import cam_layer_name

    y = np.asarray(labels).reshape(-1)
    if defect_index is None or threshold is None:
        return {"heatmap_scale": None, "histogram": None, "probs": None}
    probs, maps = evidence_and_probs(model, arch, images, spec, defect_index)
    p = probs[:, defect_index]
    scale = heatmap_scale(maps, y == defect_index, p, threshold, cam_layer_name(arch))
    return {"heatmap_scale": scale, "histogram": score_histogram(y, p, class_names), "probs": probs}
