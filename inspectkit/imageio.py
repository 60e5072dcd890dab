"""Decode any image a user can hand us into an RGB uint8 array, or raise a ValueError that says why.

One function serves training, evaluation and inference, so every path sees the same pixels.
Accepted sources: a file path, raw bytes, a PIL image or a numpy array (grayscale, RGB or RGBA;
uint8, uint16 or float). EXIF orientation is applied; grayscale becomes 3 channels; alpha is dropped.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest image we decode, in pixels. A 12,000 x 12,000 frame is already far beyond any line camera;
#: bigger headers are pixel bombs (a few KB of PNG that inflate to gigabytes).
MAX_PIXELS = 50_000_000
#: Largest encoded file we read, in bytes.
MAX_FILE_BYTES = 50 * 1024 * 1024
#: Smallest side we accept: below this there is nothing left to inspect after resizing.
MIN_SIDE = 16

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

# PIL's own bomb guard raises DecompressionBombError only above 2x its limit and warns below;
# we check the size ourselves before decoding, so turn PIL's check off to get one clear message.
Image.MAX_IMAGE_PIXELS = None


def _check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"{what} is {width}x{height} = {width * height:,} pixels; the limit is {MAX_PIXELS:,} pixels"
        )
    if min(width, height) < MIN_SIDE:
        raise ValueError(f"{what} is {width}x{height}; each side must be at least {MIN_SIDE} pixels")


def _read_bytes(path: Path) -> bytes:
    try:
        return _read_bytes_checked(path)
    except OSError as exc:  # a name too long for the OS, a permission, an I/O error: still the caller's bad input
        raise ValueError(f"cannot read image file {path.name[:200]!r}: {exc.strerror or type(exc).__name__}") \
            from None


def _read_bytes_checked(path: Path) -> bytes:
    if not path.exists():
        raise ValueError(f"image file not found: {path}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"image file is empty (0 bytes): {path.name}")
    if size > MAX_FILE_BYTES:
        raise ValueError(f"image file {path.name} is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes")
    return path.read_bytes()


def _decode_bytes(data: bytes, name: str) -> np.ndarray:
    if len(data) == 0:
        raise ValueError(f"{name}: empty data (0 bytes) is not an image")
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{name} is {len(data):,} bytes; the limit is {MAX_FILE_BYTES:,} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            _check_size(img.width, img.height, name)
            img.load()
    except ValueError:
        raise
    except UnidentifiedImageError:
        raise ValueError(
            f"{name}: not a readable image (supported formats: JPEG, PNG, BMP, TIFF, WebP, GIF)"
        ) from None
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{name}: broken or truncated image ({exc})") from None
    except Exception as exc:  # any decoder bug is still a bad file for the caller
        raise ValueError(f"{name}: could not decode image ({type(exc).__name__}: {exc})") from None
    return _pil_to_rgb(img, name)


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    _check_size(img.width, img.height, name)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP/TIFF stack: inspect the first frame
        img = ImageOps.exif_transpose(img)
        mode = img.mode
        if mode.startswith("I") or mode == "F":
            # 16/32-bit integer or float: go through numpy so the range is scaled, not clipped
            return array_to_rgb(np.asarray(img), name)
        if mode != "RGB":
            img = img.convert("RGB")
        arr = np.asarray(img, dtype=np.uint8)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"{name}: could not convert image to RGB ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(arr)


def array_to_rgb(arr: np.ndarray, name: str = "array") -> np.ndarray:
    """Convert a numpy image (HxW, HxWx1, HxWx3 or HxWx4; uint8, uint16, int or float) to RGB uint8.

    Floats must be finite; values in [0, 1] are taken as fractions, otherwise as 0..255.
    16-bit data is scaled down by 257 (65535 -> 255). Alpha is dropped. The input is never modified.
    """
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        pass
    elif arr.ndim != 2:
        raise ValueError(
            f"{name}: array of shape {arr.shape} is not an image; expected HxW, HxWx1, HxWx3 or HxWx4"
        )
    _check_size(arr.shape[1], arr.shape[0], name)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: float image contains NaN or infinite values")
        scale = 255.0 if float(arr.max(initial=0.0)) <= 1.0 else 1.0
        arr = np.clip(arr.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{name}: integer image values must be in 0..65535, got {arr.min()}..{arr.max()}")
        if arr.dtype in (np.uint16, np.int32, np.uint32, np.int64, np.uint64) and arr.size and arr.max() > 255:
            arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
        else:
            arr = arr.astype(np.uint8)
    else:
        raise ValueError(f"{name}: unsupported array dtype {arr.dtype}; use uint8, uint16 or float")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def source_name(source: object) -> str:
    """A short, printable name for an image source, for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name or str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL {source.mode} {source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape} {source.dtype}>"
    return f"<{type(source).__name__}>"


def load_rgb(source: ImageSource) -> np.ndarray:
    """Decode ``source`` to an RGB uint8 array of shape HxWx3 (a new array; the source is untouched).

    Raises ValueError naming the problem for anything that is not a usable image.
    """
    if source is None:
        raise ValueError("no image given (None)")
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _decode_bytes(_read_bytes(path), path.name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(source), name)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, name).copy()
    if isinstance(source, np.ndarray):
        out = array_to_rgb(source, name)
        return out.copy() if np.shares_memory(out, source) else out
    raise ValueError(
        f"unsupported image type {type(source).__name__}; give a file path, bytes, a PIL image or a numpy array"
    )
