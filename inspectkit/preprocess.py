"""The one preprocessing function used by training, evaluation and inference, and training augmentation.

The spec is a plain dict stored in the checkpoint, so inference rebuilds exactly what training used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# OpenCV's own thread pool fights torch's for the two cores; the callers parallelise over images.
cv2.setNumThreads(1)


def default_spec(size: int = 224) -> dict:
    """Preprocessing of an ImageNet backbone: the whole frame resized to size x size, RGB, mean/std."""
    return {
        "size": int(size),
        "resize": "stretch",  # the whole part must stay in view: no crop that could cut off a defect
        "interpolation": "area",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "channels": 3,
    }


def validate_spec(spec: Mapping) -> dict:
    """Check a preprocessing spec and return it as a plain dict; ValueError names what is wrong."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"preprocessing must be a dict, got {type(spec).__name__}")
    missing = [k for k in ("size", "mean", "std", "channels") if k not in spec]
    if missing:
        raise ValueError(f"preprocessing is missing {missing}; it needs size, mean, std, channels")
    size = spec["size"]
    if not isinstance(size, int) or not 16 <= size <= 2048:
        raise ValueError(f"preprocessing size {size!r} must be an int in 16..2048")
    if spec["channels"] != 3:
        raise ValueError(f"preprocessing channels {spec['channels']!r}: only 3 (RGB) is supported")
    for key in ("mean", "std"):
        v = spec[key]
        if len(v) != 3 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in v):
            raise ValueError(f"preprocessing {key} {v!r} must be three finite numbers")
    if any(x <= 0 for x in spec["std"]):
        raise ValueError(f"preprocessing std {spec['std']!r} must be positive")
    if spec.get("resize", "stretch") != "stretch":
        raise ValueError(f"preprocessing resize {spec.get('resize')!r}: only 'stretch' is supported")
    return dict(spec)


def resize_rgb(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to size x size (area averaging when shrinking, bilinear when growing)."""
    h, w = rgb.shape[:2]
    if (h, w) == (size, size):
        return rgb
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp)


def normalize(resized: np.ndarray, spec: Mapping, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ``(x/255 - mean) / std``; writes into ``out`` when given."""
    scale = (1.0 / (255.0 * np.asarray(spec["std"], dtype=np.float32)))
    offset = -np.asarray(spec["mean"], dtype=np.float32) / np.asarray(spec["std"], dtype=np.float32)
    chw = resized.transpose(2, 0, 1)
    if out is None:
        out = np.empty(chw.shape, dtype=np.float32)
    np.multiply(chw, scale[:, None, None], out=out, casting="unsafe")
    out += offset[:, None, None]
    return out


def preprocess(rgb: np.ndarray, spec: Mapping, out: np.ndarray | None = None) -> np.ndarray:
    """The model input for one decoded RGB uint8 image: float32 array of shape 3 x size x size."""
    return normalize(resize_rgb(rgb, int(spec["size"])), spec, out)


#: the augmented views' rotation range in degrees at strength 1, as every model so far was trained with
TURN_DEGREES = 20.0


def augment(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
            mask: np.ndarray | None = None, max_angle: float = TURN_DEGREES):
    """A random camera-on-a-line variation of ``rgb`` (same size, uint8).

    Small rotation, flips, scale and position of the part in the frame, brightness and contrast.
    ``strength`` scales every range (0 gives the image back unchanged); ``max_angle`` is the rotation range in
    degrees at strength 1 (180: any turn, as a round part on a conveyor may lie). With a defect-region ``mask``
    (H x W, bool or float) the same flips and warp move the mask too, and ``(image, mask)`` is returned;
    the random draws are the same with or without a mask, so a seed gives the same image either way.
    """
    h, w = rgb.shape[:2]
    if mask is not None and np.shape(mask) != (h, w):
        raise ValueError(f"region mask {np.shape(mask)} must have the image's height and width {(h, w)}")
    if not 0 <= max_angle <= 180:
        raise ValueError(f"max_angle must be in 0..180 degrees, got {max_angle}")
    angle = rng.uniform(-max_angle, max_angle) * strength  # the same draw for any range: seeds stay comparable
    scale = 1.0 + rng.uniform(-0.15, 0.15) * strength
    tx = rng.uniform(-0.08, 0.08) * strength * w
    ty = rng.uniform(-0.08, 0.08) * strength * h
    out, m = rgb, (None if mask is None else np.asarray(mask, dtype=np.float32))
    if rng.random() < 0.5 * min(strength, 1.0):
        out = out[:, ::-1]
        m = None if m is None else m[:, ::-1]
    if rng.random() < 0.5 * min(strength, 1.0):
        out = out[::-1, :]
        m = None if m is None else m[::-1, :]
    out = warp(out, angle=angle, scale=scale, shift=(tx, ty))
    gain = 1.0 + rng.uniform(-0.25, 0.25) * strength
    contrast = 1.0 + rng.uniform(-0.2, 0.2) * strength
    out = photometric(out, gain=gain, contrast=contrast)
    if m is None:
        return out
    # the image's border repeats edge pixels, but no defect is invented there: the mask's border is empty
    return out, warp(m, angle=angle, scale=scale, shift=(tx, ty), border=cv2.BORDER_CONSTANT)


def warp(rgb: np.ndarray, angle: float = 0.0, scale: float = 1.0, shift: tuple = (0.0, 0.0),
         border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Rotate (degrees), scale about the centre and shift (pixels); borders repeat the edge pixels by default."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    m[:, 2] += shift
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=border)


def photometric(rgb: np.ndarray, gain: float = 1.0, contrast: float = 1.0) -> np.ndarray:
    """Brightness gain and contrast about the image mean, clipped to uint8."""
    x = rgb.astype(np.float32)
    mean = float(x.mean())
    x = (x - mean) * contrast + mean * gain
    return np.clip(x, 0, 255).astype(np.uint8)


#: Deterministic changes of framing and light used to check robustness (a second line in the factory).
ROBUSTNESS_SHIFTS = {
    "zoom_out_0.85": dict(scale=0.85),
    "zoom_in_1.15": dict(scale=1.15),
    "shift_+8%": dict(shift_frac=(0.08, 0.08)),
    "shift_-8%": dict(shift_frac=(-0.08, -0.08)),
    "rotate_15": dict(angle=15.0),
    "darker_0.75": dict(gain=0.75),
    "brighter_1.25": dict(gain=1.25),
    "low_contrast_0.8": dict(contrast=0.8),
}


def apply_shift(rgb: np.ndarray, name: str) -> np.ndarray:
    """Apply one named deterministic variation from ROBUSTNESS_SHIFTS."""
    p = ROBUSTNESS_SHIFTS[name]
    h, w = rgb.shape[:2]
    sx, sy = p.get("shift_frac", (0.0, 0.0))
    out = rgb
    if "angle" in p or "scale" in p or "shift_frac" in p:
        out = warp(out, angle=p.get("angle", 0.0), scale=p.get("scale", 1.0), shift=(sx * w, sy * h))
    if "gain" in p or "contrast" in p:
        out = photometric(out, gain=p.get("gain", 1.0), contrast=p.get("contrast", 1.0))
    return out
