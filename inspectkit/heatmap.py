"""Heat-map arithmetic shared by the PyTorch and the ONNX paths (numpy and OpenCV only, no torch).

A class-activation map is computed at the resolution of the CAM layer (7x7 for a 224 px MobileNetV2), then
resized to the caller's image and min-max normalised to [0, 1]. Normalising once, after the resize, gives the
same map as pytorch-grad-cam's normalise-resize-normalise: a bilinear resize commutes with the affine
min-max map, and the second normalisation undoes any affine map applied before it.
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
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"a CAM must be h x w, got shape {cam.shape}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"heat-map size must be positive, got {size}")
    if cam.shape != (height, width):
        # INTER_LINEAR is what pytorch-grad-cam uses; keeping it makes the two maps comparable pixel for pixel
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return normalize01(cam)


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
