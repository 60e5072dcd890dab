"""Heat-map arithmetic shared by the PyTorch and the ONNX paths (numpy and OpenCV only, no torch).

A class-activation map is computed at the resolution of the CAM layer (7x7 for a 224 px MobileNetV2), then
resized to the caller's image and min-max normalised to [0, 1]. Normalising once, after the resize, gives the
same map as pytorch-grad-cam's normalise-resize-normalise: a bilinear resize commutes with the affine
min-max map, and the second normalisation undoes any affine map applied before it.

That per-image normalisation makes every photo's map reach 1 somewhere, a good part's too. For a model with a
defect class the served map is instead the **defect evidence** (:func:`evidence_from_features`, Grad-CAM of the
logit difference) on a **fixed scale** stored in the checkpoint (:func:`on_scale`; the rule is in
``inspectkit/heatmap/scale.py``), so a good part stays cool and two photos can be compared.
"""

from __future__ import annotations

import cv2
import numpy as np

#: OpenCV colour maps by name, for callers that configure the overlay from text (CLI, UI).
COLORMAPS = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
    "magma": cv2.COLORMAP_MAGMA,
}


def cam_from_features(features: np.ndarray, weights: np.ndarray, targets) -> np.ndarray:
    """CAM of a global-average-pool + linear head: ``ReLU(sum_k w[target, k] * A_k)`` per image.

    ``features``: B x K x h x w activations of the last block; ``weights``: C x K weight matrix of the linear
    layer; ``targets``: B class indices. Returns float32 B x h x w (not normalised).

    For such a head, d logit_c / d A_k(i, j) = w[c, k] / (h * w) everywhere, so Grad-CAM's channel weights
    are w[c, k] / (h * w): Grad-CAM equals this CAM up to a positive factor, which normalisation removes.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 4:
        raise ValueError(f"features must be B x K x h x w, got shape {features.shape}")
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(targets) != features.shape[0]:
        raise ValueError(f"{len(targets)} targets for a batch of {features.shape[0]} feature maps")
    w = np.asarray(weights, dtype=np.float32)[targets]  # B x K
    b, k, h, ww = features.shape
    # one matrix-vector product per image: (1 x K) @ (K x h*w)
    cams = np.matmul(w[:, None, :], features.reshape(b, k, h * ww)).reshape(b, h, ww)
    np.maximum(cams, 0.0, out=cams)
    return cams


def evidence_coefficients(n_classes: int, defect_index: int) -> np.ndarray:
    """Coefficients ``v`` (length C) of the defect-evidence logit ``sum_c v_c logit_c``: +1 for the defect class,
    -1 for the other class of a binary model (logit[defect] - logit[ok]); with more classes, -1/(C-1) for each
    other class (the defect logit against the mean of the others)."""
    c, d = int(n_classes), int(defect_index)
    if c < 2 or not 0 <= d < c:
        raise ValueError(f"defect_index {defect_index!r} must index one of {n_classes!r} (>= 2) classes")
    v = np.full(c, -1.0 / (c - 1), dtype=np.float32)
    v[d] = 1.0
    return v


def evidence_from_features(features: np.ndarray, weights: np.ndarray, defect_index: int) -> np.ndarray:
    """Defect evidence of a global-average-pool + linear head: ``ReLU(sum_k (w_defect,k - w_ok,k) A_k)`` per image.

    ``features``: B x K x h x w activations of the last block; ``weights``: C x K weight matrix of the linear layer.
    Returns float32 B x h x w, not normalised, in logit units: before the ReLU, the map's spatial mean plus the
    bias difference is the logit difference itself, so a cell's value is its share of the evidence for DEFECT.

    This is exactly Grad-CAM of the logit difference times h*w: d(logit_d - logit_ok) / d A_k(i, j) =
    (w_d,k - w_ok,k) / (h * w) in every cell, so Grad-CAM's channel weights are (w_d,k - w_ok,k) / (h * w).
    """
    w = np.asarray(weights, dtype=np.float32)
    v = evidence_coefficients(w.shape[0], defect_index) @ w  # K: the difference of the head's rows
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 4 or features.shape[1] != v.shape[0]:
        raise ValueError(f"features must be B x {v.shape[0]} x h x w, got shape {features.shape}")
    b, k, h, ww = features.shape
    cams = np.matmul(v[None, None, :], features.reshape(b, k, h * ww)).reshape(b, h, ww)
    np.maximum(cams, 0.0, out=cams)
    return cams


def on_scale(cam: np.ndarray, threshold: float, value: float) -> np.ndarray:
    """Evidence (>= 0, any units) on the fixed scale of a checkpoint, in [0, 1]: piecewise linear through
    0 -> 0, ``threshold`` -> 0.5 and ``value`` -> 1, clipped at 1 (see inspectkit/heatmap/scale.py for the rule).

    Unlike :func:`normalize01` nothing depends on the image itself, so two photos can be compared colour for colour.
    """
    t, v = float(threshold), float(value)
    if not (0.0 < t < v and np.isfinite(v)):
        raise ValueError(f"heat-map scale needs 0 < threshold < value (finite), got threshold {threshold!r}, "
                         f"value {value!r}")
    cam = np.asarray(cam, dtype=np.float32)
    if not np.all(np.isfinite(cam)):
        raise ValueError("class-activation map contains NaN or infinite values")
    low = cam * np.float32(0.5 / t)
    high = np.float32(0.5) + (cam - np.float32(t)) * np.float32(0.5 / (v - t))
    out = np.where(cam <= t, low, high)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def heatmap_on_scale(cam: np.ndarray, size: tuple[int, int], threshold: float, value: float) -> np.ndarray:
    """One h x w evidence map on the fixed scale (:func:`on_scale`, at the map's own resolution), then resized to
    ``size`` = (height, width) bilinearly. Bilinear interpolation stays inside [0, 1], so no renormalisation."""
    return _resize(on_scale(cam, threshold, value), size)


def heatmap_peak(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One h x w evidence map divided by its own maximum and resized to ``size``: the stated fallback for a
    checkpoint without a heat-map scale. Zero stays zero (no evidence is never coloured), but 1 is this photo's
    strongest evidence, so colours cannot be compared between photos."""
    cam = np.asarray(cam, dtype=np.float32)
    hi = float(cam.max()) if cam.size else 0.0
    if not np.isfinite(hi):
        raise ValueError("class-activation map contains NaN or infinite values")
    cam = np.zeros_like(cam) if hi <= 0.0 else np.clip(cam * np.float32(1.0 / hi), 0.0, 1.0)
    return _resize(cam, size)


def _resize_raw(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One h x w float32 CAM resized bilinearly to ``size`` = (height, width), values untouched."""
    if cam.ndim != 2:
        raise ValueError(f"a CAM must be h x w, got shape {cam.shape}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"heat-map size must be positive, got {size}")
    if cam.shape != (height, width):
        # INTER_LINEAR is what pytorch-grad-cam uses; keeping it makes the two maps comparable pixel for pixel
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return cam


def _resize(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    cam = _resize_raw(cam, size)
    return np.clip(cam, 0.0, 1.0, out=cam) if cam.dtype == np.float32 else np.clip(cam, 0.0, 1.0).astype(np.float32)


def normalize01(cam: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] (float32); a constant map becomes all zeros."""
    cam = np.asarray(cam, dtype=np.float32)
    lo, hi = float(cam.min()), float(cam.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("class-activation map contains NaN or infinite values")
    if hi - lo <= 0.0:
        return np.zeros_like(cam)
    out = (cam - lo) * np.float32(1.0 / (hi - lo))
    # float rounding can land a hair outside [0, 1]; callers rely on the range (colour maps, thresholds)
    return np.clip(out, 0.0, 1.0, out=out)


def heatmap_at(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one h x w CAM to ``size`` = (height, width) with bilinear interpolation, then scale to [0, 1].

    The preprocessing stretches the whole frame to the network's square input, so the CAM grid covers the whole
    image and a plain resize maps it back onto the original pixels, whatever the aspect ratio.
    """
    return normalize01(_resize_raw(np.asarray(cam, dtype=np.float32), size))


def _colormap(colormap) -> int:
    if isinstance(colormap, str):
        try:
            return COLORMAPS[colormap.lower()]
        except KeyError:
            raise ValueError(f"unknown colour map {colormap!r}; choose one of {sorted(COLORMAPS)}") from None
    if isinstance(colormap, (int, np.integer)) and not isinstance(colormap, bool):
        return int(colormap)
    raise ValueError(f"colour map must be a name in {sorted(COLORMAPS)} or an OpenCV COLORMAP_* int, got {colormap!r}")


def colorize(heatmap: np.ndarray, colormap="jet") -> np.ndarray:
    """A [0, 1] heat map as an RGB uint8 image through an OpenCV colour map."""
    u8 = cv2.convertScaleAbs(np.asarray(heatmap, dtype=np.float32), alpha=255.0)  # rounds and saturates
    return cv2.cvtColor(cv2.applyColorMap(u8, _colormap(colormap)), cv2.COLOR_BGR2RGB)


def overlay(rgb: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45, colormap="jet") -> np.ndarray:
    """Blend the coloured heat map over the RGB uint8 image: ``(1 - opacity) * image + opacity * colour``.

    ``opacity`` in [0, 1] (0 shows only the image, 1 only the heat map). Returns a new RGB uint8 array of the
    image's size; the inputs are not modified.
    """
    opacity = check_opacity(opacity)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"overlay needs an RGB uint8 image (HxWx3), got {rgb.dtype} {rgb.shape}")
    if heatmap.shape != rgb.shape[:2]:
        raise ValueError(f"heat map of shape {heatmap.shape} does not match the image's {rgb.shape[:2]}")
    return cv2.addWeighted(rgb, 1.0 - opacity, colorize(heatmap, colormap), opacity, 0.0)


def check_opacity(opacity) -> float:
    """``opacity`` as a float in [0, 1], or a ValueError naming it."""
    try:
        value = float(opacity)
    except (TypeError, ValueError):
        raise ValueError(f"opacity must be a number in [0, 1], got {opacity!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"opacity must be in [0, 1], got {opacity!r}")
    return value
