"""Bad and unusual inputs through InferenceHandler.predict / predict_batch, on both backends.

Each kind either works correctly (a verdict, a heat map of the image's displayed size, the same answer as the
plain RGB pixels) or raises a ValueError whose message names the problem. Nothing else may escape. A verdict is OK
or DEFECT, or for a model with a guard UNUSABLE with its reason (the last test).
Limits (inspectkit.imageio): MAX_PIXELS = 50,000,000 pixels, MAX_FILE_BYTES = 50 MiB, MIN_SIDE = 16 pixels.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from inspectkit import imageio
from inspectkit.inference.handler import InferenceHandler
from tests.support import synthetic_casting
from tests.trained_tiny import train_tiny

BACKENDS = ["onnx", "torch"]
RGB = synthetic_casting(np.random.default_rng(7), defect=True, size=(60, 80))  # 60 high, 80 wide


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    import torch

    path = train_tiny(tmp_path_factory.mktemp("trained"), "mobilenet_v2", size=96)
    before = torch.get_num_threads()
    out = {b: InferenceHandler(path, backend=b, cache_dir=tmp_path_factory.mktemp("cache"),
                               threads=1 if b == "torch" else None) for b in BACKENDS}
    yield out
    torch.set_num_threads(before)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def _png_with_size(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims width x height (a pixel bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + \
        chunk(b"IEND", b"")


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; display rotated 90 degrees clockwise
    return _encode(Image.fromarray(RGB), "JPEG", quality=95, exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [_palette(RGB), _palette(255 - RGB)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _png16_rgb() -> bytes:
    ok, buf = cv2.imencode(".png", (RGB[:, :, ::-1].astype(np.uint16) * 257))
    assert ok
    return buf.tobytes()


def _with_nan() -> np.ndarray:
    arr = RGB / 255.0
    arr[30, 40, 1] = np.nan
    return arr


def _palette(img: np.ndarray) -> Image.Image:
    return Image.fromarray(img).quantize(256)  # adaptive palette: close to the original pixels


JPEG = _encode(Image.fromarray(RGB), "JPEG", quality=95)

# kind -> (source factory taking tmp_path, expected: regex of the ValueError, or the displayed (h, w) when it works)
CASES = {
    "zero_bytes": (lambda t: b"", r"empty"),
    "zero_byte_file": (lambda t: (t / "empty.jpg").write_bytes(b"") or t / "empty.jpg", r"empty \(0 bytes\)"),
    "truncated_jpeg": (lambda t: JPEG[: len(JPEG) // 2], r"broken or truncated"),
    "truncated_png": (lambda t: _encode(Image.fromarray(RGB), "PNG")[:300], r"broken or truncated"),
    "text_renamed_jpg": (lambda t: (t / "notes.jpg").write_text("inspection notes\n" * 20) and t / "notes.jpg",
                         r"notes\.jpg: not a readable image"),
    "pdf": (lambda t: b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
            r"not a readable image"),
    "random_bytes": (lambda t: np.random.default_rng(0).bytes(5000), r"not a readable image"),
    "pixel_bomb": (lambda t: _png_with_size(20_000, 20_000),
                   r"20000x20000 = 400,000,000 pixels; the limit is 50,000,000"),
    "file_too_big": (lambda t: b"\xff\xd8" + b"\0" * (imageio.MAX_FILE_BYTES + 1), r"the limit is 52,428,800 bytes"),
    "one_by_one": (lambda t: _encode(Image.new("RGB", (1, 1), (90, 90, 90)), "PNG"),
                   r"1x1; each side must be at least 16"),
    "too_thin_array": (lambda t: np.zeros((8, 300, 3), np.uint8), r"at least 16"),
    "empty_array": (lambda t: np.zeros((0, 0, 3), np.uint8), r"at least 16"),
    "png16_gray": (lambda t: _encode(Image.fromarray(RGB[:, :, 0].astype(np.uint16) * 257), "PNG"), (60, 80)),
    "png16_rgb": (lambda t: _png16_rgb(), (60, 80)),
    "cmyk_jpeg": (lambda t: _encode(Image.fromarray(RGB).convert("CMYK"), "JPEG", quality=95), (60, 80)),
    "rgba_png": (lambda t: _encode(Image.fromarray(np.dstack([RGB, np.full(RGB.shape[:2], 200, np.uint8)])), "PNG"),
                 (60, 80)),
    "la_png": (lambda t: _encode(Image.fromarray(RGB[:, :, 0]).convert("LA"), "PNG"), (60, 80)),
    "palette_png": (lambda t: _encode(_palette(RGB), "PNG"), (60, 80)),
    "animated_gif": (lambda t: _animated_gif(), (60, 80)),
    "exif_rotated_jpeg": (lambda t: _exif_rotated(), (80, 60)),
    "bmp": (lambda t: _encode(Image.fromarray(RGB), "BMP"), (60, 80)),
    "tiff": (lambda t: _encode(Image.fromarray(RGB), "TIFF"), (60, 80)),
    "webp": (lambda t: _encode(Image.fromarray(RGB), "WEBP", lossless=True), (60, 80)),
    "pil_mode_1": (lambda t: Image.fromarray(RGB[:, :, 0] > 100), (60, 80)),
    "pil_mode_F": (lambda t: Image.fromarray(RGB[:, :, 0].astype(np.float32)), (60, 80)),
    "float_array_nan": (lambda t: _with_nan(), r"float image contains NaN"),
    "float_array_inf": (lambda t: np.full((60, 80), np.inf, np.float32), r"NaN or infinite"),
    "float_array_ok": (lambda t: RGB.astype(np.float64) / 255.0, (60, 80)),
    "array_4d": (lambda t: RGB[None], r"shape \(1, 60, 80, 3\) is not an image"),
    "array_5_channels": (lambda t: np.zeros((60, 80, 5), np.uint8), r"shape \(60, 80, 5\)"),
    "array_negative": (lambda t: RGB.astype(np.int32) - 300, r"0\.\.65535"),
    "array_complex": (lambda t: RGB.astype(np.complex64), r"unsupported array dtype complex64"),
    "array_uint16_rgb": (lambda t: RGB.astype(np.uint16) * 257, (60, 80)),
    "array_bool": (lambda t: RGB[:, :, 0] > 100, (60, 80)),
    "none": (lambda t: None, r"no image given \(None\)"),
    "int": (lambda t: 42, r"unsupported image type int"),
    "list": (lambda t: [[1, 2], [3, 4]], r"unsupported image type list"),
    "missing_path": (lambda t: t / "nowhere.jpg", r"not found: .*nowhere\.jpg"),
    "directory": (lambda t: t, r"not a regular file"),
}


def judged(handler: InferenceHandler, result) -> bool:
    """OK or DEFECT without a reason; or, only for a model with a guard, UNUSABLE with one of its reasons."""
    from inspectkit.guard import REASONS

    if result.verdict == "UNUSABLE":
        return handler.guard is not None and result.unusable_reason in REASONS
    return result.verdict in ("OK", "DEFECT") and result.unusable_reason is None


def _expect(handler: InferenceHandler, kind: str, tmp_path):
    make, expected = CASES[kind]
    source = make(tmp_path)
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            handler.predict(source)
        return None
    result = handler.predict(source)  # any other exception fails the test here
    assert result.error is None and judged(handler, result)
    assert result.heatmap.shape == expected and result.overlay.shape == (*expected, 3)
    assert result.image.shape == (*expected, 3) and result.image.dtype == np.uint8
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0
    return result


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(CASES))
def test_each_kind_works_or_is_refused_by_name(handlers, backend, kind, tmp_path):
    _expect(handlers[backend], kind, tmp_path)


@pytest.mark.parametrize("kind", ["png16_rgb", "array_uint16_rgb", "rgba_png", "bmp", "tiff", "webp",
                                  "float_array_ok", "cmyk_jpeg", "palette_png", "animated_gif"])
def test_working_kinds_give_the_plain_pixels_answer(handlers, kind, tmp_path):
    """Lossless encodings decode to RGB exactly; lossy ones (CMYK JPEG, palette, GIF) closely."""
    h = handlers["onnx"]
    got = _expect(h, kind, tmp_path)
    want = h.predict(RGB)
    lossless = kind not in ("cmyk_jpeg", "palette_png", "animated_gif")
    if lossless:
        assert np.array_equal(got.image, RGB)
        assert got.verdict == want.verdict
        assert abs(got.defect_probability - want.defect_probability) <= 1e-6
    else:
        assert np.abs(got.image.astype(int) - RGB.astype(int)).mean() <= 3


def test_exif_orientation_is_applied(handlers, tmp_path):
    h = handlers["onnx"]
    r = h.predict(_exif_rotated())
    upright = np.rot90(imageio.load_rgb(JPEG), k=-1)  # orientation 6: rotate 90 degrees clockwise
    assert r.image.shape == upright.shape == (80, 60, 3)
    assert np.abs(r.image.astype(int) - upright.astype(int)).mean() <= 3  # same JPEG pixels, turned upright


def test_animated_gif_uses_the_first_frame(handlers):
    r = handlers["onnx"].predict(_animated_gif())
    first = np.asarray(_palette(RGB).convert("RGB"))
    assert np.array_equal(r.image, first)


def test_batch_collects_every_kind(handlers, tmp_path):
    """All kinds in one predict_batch(on_error='collect'): refused ones carry their message, the rest complete."""
    h = handlers["onnx"]
    kinds = list(CASES)
    sources = [CASES[k][0](tmp_path) for k in kinds]
    results = h.predict_batch(sources, batch_size=8, on_error="collect", names=kinds)
    assert [r.name for r in results] == kinds
    import re

    for kind, r in zip(kinds, results):
        expected = CASES[kind][1]
        if isinstance(expected, str):
            assert r.verdict is None and r.heatmap is None and re.search(expected, r.error), (kind, r.error)
        else:
            assert r.error is None and r.heatmap.shape == expected, kind


def test_stated_limits():
    assert imageio.MAX_PIXELS == 50_000_000 and imageio.MAX_FILE_BYTES == 50 * 1024 * 1024
    assert imageio.MIN_SIDE == 16


LOSSLESS = ["png16_rgb", "array_uint16_rgb", "rgba_png", "bmp", "tiff", "webp", "float_array_ok"]


def test_a_guarded_model_judges_every_kind_like_its_plain_pixels(guarded_checkpoint, tmp_path_factory, tmp_path):
    """With a guard, every kind that decodes gets a verdict (UNUSABLE only with a reason) and the guard's image
    statistics; a lossless encoding gets the plain pixels' verdict, reason and novelty; a refused kind gets no
    guard fields at all."""
    h = InferenceHandler(guarded_checkpoint, cache_dir=tmp_path_factory.getbasetemp() / "onnx-cache")
    assert h.guard is not None, h.guard_off_reason
    kinds = list(CASES)
    results = h.predict_batch([CASES[k][0](tmp_path) for k in kinds], heatmap=False, batch_size=8,
                              on_error="collect", names=kinds)
    want = h.predict(RGB, heatmap=False)
    assert judged(h, want)
    for kind, r in zip(kinds, results):
        if isinstance(CASES[kind][1], str):
            assert r.verdict is None and r.unusable_reason is None and r.novelty is None and r.image_stats is None
            continue
        assert r.error is None and judged(h, r), (kind, r.verdict, r.unusable_reason)
        assert np.isfinite(r.novelty) and all(np.isfinite(v) for v in r.image_stats.values()), kind
        if kind in LOSSLESS:
            assert (r.verdict, r.unusable_reason) == (want.verdict, want.unusable_reason), kind
            assert abs(r.novelty - want.novelty) <= 1e-4 and r.image_stats == want.image_stats, kind
