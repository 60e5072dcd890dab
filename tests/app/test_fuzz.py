"""Fuzz the whole upload path (decode -> preprocess -> forward -> heat map -> overlay) of the InferenceHandler.

The contract under test: whatever a user uploads, ``predict`` either returns a complete, consistent result or
raises the documented ``ValueError`` with a message; no other exception may leave the handler, and
``predict_batch(on_error="collect")`` never raises for bad images at all. A result's verdict is OK or DEFECT (by the
threshold rule), or, for a model with a guard, UNUSABLE with one of the guard's reasons (:func:`check_verdict`); the
same holds for the JSON of POST /api/inspect and the Gradio /predict function, at any threshold.

Inputs come from hypothesis: random bytes (bare and behind real magic numbers), structured mutations of real
JPEG/PNG/GIF/BMP/TIFF/WebP files generated here with PIL and OpenCV (bit flips, overwrites with "interesting"
integers, truncation, insertion, deletion, duplication, splicing two files), PNG headers with forged sizes
(pixel bombs with valid CRCs), numpy arrays of every dtype/shape and PIL images of every mode.

Example counts come from a settings profile chosen by ``FUZZ_PROFILE``: ``fuzz-ci`` (default, a few hundred
examples per test) or ``fuzz-long``; ``FUZZ_EXAMPLES`` overrides the count. ``benchmarks/fuzz_long.py`` reuses
the strategies and :func:`check_prediction` for runs of 10,000+ cases.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib
from functools import lru_cache

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from inspectkit.serve.http_api import create_api
from tests.support import synthetic_casting

# -- settings ---------------------------------------------------------------------------------------------------
# Registered under our own names and applied per test (not load_profile), so other test modules' hypothesis
# settings are untouched. deadline=None: a CI machine shared with other jobs has no stable per-example time.
_COMMON = dict(deadline=None, database=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
settings.register_profile("fuzz-ci", max_examples=250, **_COMMON)
settings.register_profile("fuzz-long", max_examples=10_000, **_COMMON)
_PROFILE = settings.get_profile(os.environ.get("FUZZ_PROFILE", "fuzz-ci"))
if os.environ.get("FUZZ_EXAMPLES"):
    _PROFILE = settings(_PROFILE, max_examples=int(os.environ["FUZZ_EXAMPLES"]))


def fuzz_settings(share: float = 1.0) -> settings:
    """The chosen profile, with ``share`` of its examples (cheap tests get all, slower ones fewer)."""
    return settings(_PROFILE, max_examples=max(10, int(_PROFILE.max_examples * share)))


# -- seed files ---------------------------------------------------------------------------------------------------
def _pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@lru_cache(maxsize=1)
def seed_files() -> dict[str, bytes]:
    """Small real image files in every format and mode the app may meet (generated, nothing read from disk).

    Small (40x48) so a mutation that still decodes runs through the network in milliseconds; the size limits
    themselves are reached by the header mutations, not by big seeds.
    """
    rng = np.random.default_rng(7)
    rgb = synthetic_casting(rng, True, (40, 48))
    gray = rgb[:, :, 0]
    im = Image.fromarray(rgb)
    L = Image.fromarray(gray)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation "rotate 90": exercises exif_transpose on the decode path
    frames = [im.convert("P"), Image.fromarray(255 - rgb).convert("P")]
    seeds = {
        "jpeg_rgb": _pil_bytes(im, "JPEG", quality=85),
        "jpeg_gray": _pil_bytes(L, "JPEG"),
        "jpeg_cmyk": _pil_bytes(im.convert("CMYK"), "JPEG"),
        "jpeg_progressive_exif": _pil_bytes(im, "JPEG", progressive=True, exif=exif.tobytes()),
        "png_rgb": _pil_bytes(im, "PNG"),
        "png_rgba": _pil_bytes(im.convert("RGBA"), "PNG"),
        "png_la": _pil_bytes(im.convert("LA"), "PNG"),
        "png_palette": _pil_bytes(im.convert("P"), "PNG"),
        "png_1bit": _pil_bytes(L.convert("1"), "PNG"),
        "png_cv2": cv2.imencode(".png", rgb)[1].tobytes(),
        "png_16bit_cv2": cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes(),
        "jpeg_cv2": cv2.imencode(".jpg", rgb[:, :, ::-1])[1].tobytes(),
        "gif": _pil_bytes(im.convert("P"), "GIF"),
        "gif_animated": _pil_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "bmp_rgb": _pil_bytes(im, "BMP"),
        "bmp_1bit": _pil_bytes(L.convert("1"), "BMP"),
        "bmp_palette": _pil_bytes(im.convert("P"), "BMP"),
        "tiff_raw": _pil_bytes(im, "TIFF"),
        "tiff_lzw": _pil_bytes(im, "TIFF", compression="tiff_lzw"),
        "tiff_deflate_gray": _pil_bytes(L, "TIFF", compression="tiff_adobe_deflate"),
        "tiff_16bit_cv2": cv2.imencode(".tiff", gray.astype(np.uint16) * 257)[1].tobytes(),
        "tiff_float": _pil_bytes(Image.fromarray(gray.astype(np.float32) / 255), "TIFF"),
        "tiff_multipage": _pil_bytes(im, "TIFF", save_all=True, append_images=[L.convert("RGB")]),
        "webp": _pil_bytes(im, "WEBP", quality=80),
    }
    return seeds


MAGIC = [b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"GIF87a", b"BM",
         b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00", b"P6\n", b"%PDF-1.4",
         b"<svg xmlns='http://www.w3.org/2000/svg'>", b"PK\x03\x04"]
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


# -- strategies ---------------------------------------------------------------------------------------------------
# A position: half the time inside the first 64 bytes (where the headers and the sizes are), else anywhere;
# taken modulo the length when applied, so it stays valid as the data grows and shrinks.
_pos = st.one_of(st.integers(0, 63), st.integers(0, 1 << 20))


def _op():
    return st.one_of(
        st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
        st.tuples(st.just("overwrite"), _pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("interesting"), _pos, st.sampled_from(INTERESTING), st.sampled_from([1, 2, 4]),
                  st.sampled_from("<>")),
        st.tuples(st.just("truncate"), _pos),
        st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("delete"), _pos, st.integers(1, 256)),
        st.tuples(st.just("duplicate"), _pos, st.integers(1, 512), st.integers(1, 8)),
        st.tuples(st.just("splice"), _pos, st.sampled_from(sorted(seed_files())), _pos),
    )


def apply_op(data: bytes, op: tuple) -> bytes:
    """Apply one mutation; every op is defined for any length (including empty data)."""
    kind, n = op[0], len(data)
    p = op[1] % (n + 1)
    if kind == "flip":
        if n == 0:
            return data
        p = op[1] % n
        return data[:p] + bytes([data[p] ^ (1 << op[2])]) + data[p + 1:]
    if kind == "overwrite":
        return data[:p] + op[2] + data[p + len(op[2]):]
    if kind == "interesting":
        value, width, endian = op[2], op[3], op[4]
        packed = struct.pack(endian + {1: "B", 2: "H", 4: "I"}[width], value & ((1 << (8 * width)) - 1))
        return data[:p] + packed + data[p + width:]
    if kind == "truncate":
        return data[:p]
    if kind == "insert":
        return data[:p] + op[2] + data[p:]
    if kind == "delete":
        return data[:p] + data[p + op[2]:]
    if kind == "duplicate":
        chunk = data[p:p + op[2]]
        return data[:p] + chunk * (op[3] + 1) + data[p + len(chunk):]
    if kind == "splice":
        other = seed_files()[op[2]]
        return data[:p] + other[op[3] % (len(other) + 1):]
    raise AssertionError(kind)


@st.composite
def mutated_file(draw) -> bytes:
    """A real image file with 1..6 mutations."""
    data = seed_files()[draw(st.sampled_from(sorted(seed_files())))]
    for op in draw(st.lists(_op(), min_size=1, max_size=6)):
        data = apply_op(data, op)
    return data


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with a valid CRC (so only our size check can stop it)."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + ihdr
    return data[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + data[33:]


@st.composite
def forged_png(draw) -> bytes:
    """A real PNG that claims another size: tiny, huge (pixel bomb), extreme aspect, or zero."""
    side = st.one_of(st.integers(0, 64), st.integers(0, 1 << 16), st.sampled_from([1 << 31 - 1, 7072, 100_000]))
    seed = seed_files()[draw(st.sampled_from(["png_rgb", "png_palette", "png_1bit", "png_rgba"]))]
    return png_with_size(seed, draw(side), draw(side))


def random_bytes():
    """Noise: bare, or behind a real format's magic number so each parser gets past its first check."""
    return st.one_of(st.binary(max_size=4096),
                     st.builds(lambda m, b: m + b, st.sampled_from(MAGIC), st.binary(max_size=4096)))


def upload_bytes():
    """Everything the HTTP endpoint could receive as a file body."""
    return st.one_of(mutated_file(), mutated_file(), random_bytes(), forged_png(),
                     st.sampled_from(sorted(seed_files().values())))


_DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.float16,
           np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def odd_array(draw) -> np.ndarray:
    """Arrays of every dtype and rank, around the 16-px limit, with NaN/inf/negative/huge values;
    sometimes a non-contiguous view (transposed or reversed)."""
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 2), (h, w, 3), (h, w, 4), (h, w, 5), (h,),
                                  (2, h, w, 3), (h, w, 3, 1), ()]))
    # random fill is enough here: the element strategy would be slow for ~5,000 elements
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    style = draw(st.sampled_from(["unit", "byte", "wide", "special"]))
    if dtype.kind == "b":
        arr = rng.random(shape) < 0.5
    elif dtype.kind in "fc":
        base = {"unit": rng.random(shape), "byte": rng.random(shape) * 255,
                "wide": rng.normal(0, 1e6, shape), "special": rng.random(shape)}[style]
        with np.errstate(over="ignore", invalid="ignore"):  # float16 overflows to inf on purpose
            arr = base.astype(dtype)
            if style == "special" and arr.size:
                arr.flat[int(rng.integers(arr.size))] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 1e30]))
    else:
        info = np.iinfo(dtype)
        hi = {"unit": 1, "byte": min(255, int(info.max)), "wide": int(info.max), "special": int(info.max)}[style]
        lo = 0 if style != "special" else int(info.min)
        arr = rng.integers(lo, hi, size=shape, dtype=dtype, endpoint=True)
    view = draw(st.sampled_from(["plain", "reversed", "transposed", "fortran"]))
    if view == "reversed" and arr.ndim >= 1:
        arr = arr[::-1]
    elif view == "transposed" and arr.ndim >= 2:
        arr = np.swapaxes(arr, 0, 1)
    elif view == "fortran":
        arr = np.asfortranarray(arr)
    return arr


_PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "I;16B", "LA",
              "PA", "RGBX", "RGBa", "La"]


@st.composite
def odd_pil(draw) -> Image.Image:
    """PIL images of every mode and a range of sizes (including 0 and just under/over 16 px), or a lazily
    opened file whose pixel data is broken (PIL reads pixels only on load(), inside the handler)."""
    if draw(st.booleans()):
        mode = draw(st.sampled_from(_PIL_MODES))
        size = (draw(st.integers(0, 48)), draw(st.integers(0, 48)))
        img = Image.new(mode, size)
        if size[0] * size[1]:
            noise = Image.effect_noise(size, draw(st.integers(1, 100)))
            try:
                img.paste(noise.convert(mode) if mode not in ("I;16", "I;16B") else noise, (0, 0))
            except (ValueError, OSError):
                pass  # some modes cannot take a pasted L image; the blank one is still a valid input
        return img
    data = draw(mutated_file())
    try:
        return Image.open(io.BytesIO(data))  # header parsed, pixels not yet read
    except Exception:
        # an unreadable header never becomes a PIL image in the app either; hand over the bytes instead
        return data  # type: ignore[return-value]


# -- the contract -------------------------------------------------------------------------------------------------
VERDICTS = ("OK", "DEFECT", "UNUSABLE")


def check_verdict(verdict, reason, novelty, defect_probability, threshold, guarded: bool) -> None:
    """The verdict contract shared by results and their JSON: OK/DEFECT by the threshold rule and without a reason,
    or UNUSABLE with one of the guard's reasons (only a model with a guard says UNUSABLE); novelty is a finite
    number exactly when the model has a guard."""
    from inspectkit.guard import REASONS

    assert verdict in VERDICTS, verdict
    if verdict == "UNUSABLE":
        assert guarded and isinstance(reason, str) and reason in REASONS, (verdict, reason)
    else:
        assert reason is None, reason
        assert (verdict == "DEFECT") == (defect_probability >= threshold)
    if guarded:
        assert isinstance(novelty, float) and math.isfinite(novelty), novelty
    else:
        assert novelty is None, novelty


def check_result(result, handler) -> None:
    """Invariants of a successful prediction: what the UI, the API JSON and the CSV rely on."""
    assert result.error is None
    guarded = getattr(handler, "guard", None) is not None
    check_verdict(result.verdict, result.unusable_reason, result.novelty, result.defect_probability,
                  result.threshold, guarded)
    if guarded:
        assert all(math.isfinite(v) for v in result.image_stats.values()), result.image_stats
    assert result.label in handler.class_names
    img = result.image
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 16
    assert result.overlay.dtype == np.uint8 and result.overlay.shape == img.shape
    hm = result.heatmap
    assert hm.shape == img.shape[:2] and np.all(np.isfinite(hm)) and hm.min() >= 0.0 and hm.max() <= 1.0
    probs = list(result.probabilities.values())
    assert all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs) and abs(sum(probs) - 1.0) < 1e-4
    assert 0.0 <= result.defect_probability <= 1.0
    json.dumps(result.to_dict(), allow_nan=False)  # the API answer must be strict JSON


def check_json(body: dict, handler) -> None:
    """Invariants of a 200 answer of POST /api/inspect or the Gradio /predict: strict JSON, the verdict contract."""
    json.dumps(body, allow_nan=False)
    assert body["error"] is None
    check_verdict(body["verdict"], body["unusable_reason"], body["novelty"], body["defect_probability"],
                  body["threshold"], getattr(handler, "guard", None) is not None)


def check_prediction(handler, source) -> str:
    """Run one upload through ``handler.predict``; 'accepted' or 'refused' (ValueError), else the exception
    propagates. A refusal must say something: an empty message tells the user nothing."""
    try:
        result = handler.predict(source, heatmap=True)
    except ValueError as exc:
        assert str(exc).strip(), f"ValueError without a message for {type(source).__name__}"
        return "refused"
    check_result(result, handler)
    return "accepted"


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_handler(guarded_checkpoint, tmp_path_factory):
    """The same on a checkpoint with a guard: odd uploads may now be answered UNUSABLE (with a reason)."""
    from inspectkit.inference.handler import InferenceHandler

    h = InferenceHandler(guarded_checkpoint, backend="auto", cache_dir=tmp_path_factory.getbasetemp() / "onnx-cache",
                         threads=1)
    assert h.guard is not None, h.guard_off_reason
    return h


# -- tests --------------------------------------------------------------------------------------------------------
def test_every_seed_file_is_accepted(handler):
    """The unmutated seeds are valid images: if they were refused, the mutation tests would only test refusal."""
    refused = {k: v for k, v in seed_files().items() if check_prediction(handler, v) != "accepted"}
    assert not refused, sorted(refused)


@pytest.mark.slow
@fuzz_settings(1.0)
@given(data=mutated_file())
def test_mutated_files_only_raise_valueerror(handler, data):
    event(check_prediction(handler, data))  # --hypothesis-show-statistics shows the accepted/refused split


@fuzz_settings(0.6)
@given(data=random_bytes())
def test_random_bytes_only_raise_valueerror(handler, data):
    event(check_prediction(handler, data))


@fuzz_settings(0.4)
@given(data=forged_png())
def test_forged_png_sizes_are_refused_or_decoded(handler, data):
    """A header that claims more than the pixel limit is refused before any pixel is allocated."""
    width, height = struct.unpack(">II", data[16:24])
    outcome = check_prediction(handler, data)
    if width * height > 50_000_000 or min(width, height) < 16:
        assert outcome == "refused"


@fuzz_settings(0.4)
@given(data=mutated_file(), as_kind=st.sampled_from(["bytes", "bytearray", "memoryview", "path"]))
def test_every_source_kind_follows_the_contract(handler, tmp_path_factory, data, as_kind):
    """The same bytes as a path, bytearray or memoryview meet the same contract (Gradio hands the app paths)."""
    if as_kind == "path":
        p = tmp_path_factory.getbasetemp() / "fuzz-upload.img"
        p.write_bytes(data)
        source = p
    else:
        source = {"bytes": bytes, "bytearray": bytearray, "memoryview": memoryview}[as_kind](data)
    check_prediction(handler, source)


@fuzz_settings(0.6)
@given(arr=odd_array())
def test_odd_arrays_only_raise_valueerror(handler, arr):
    before = arr.copy()
    event(check_prediction(handler, arr))
    assert np.array_equal(arr, before, equal_nan=arr.dtype.kind in "fc")  # the caller's array is untouched


@fuzz_settings(0.4)
@given(img=odd_pil())
def test_odd_pil_images_only_raise_valueerror(handler, img):
    event(check_prediction(handler, img))


@fuzz_settings(0.2)
@given(items=st.lists(st.one_of(upload_bytes(), odd_array()), min_size=1, max_size=6))
def test_batch_collect_never_raises_for_bad_images(handler, items):
    """on_error="collect": bad images become results with an error; the good ones in the same batch still
    complete, in order."""
    results = handler.predict_batch(items, on_error="collect", batch_size=4)
    assert len(results) == len(items)
    for r in results:
        if r.error is None:
            check_result(r, handler)
        else:
            assert r.verdict is None and r.error.strip()


@pytest.mark.parametrize("shape, dtype", [
    ((16, 16, 3), np.uint8),  # the smallest accepted image
    ((16, 20_000, 3), np.uint8),  # extreme aspect ratios: the heat map is resized to 20,000 px wide
    ((20_000, 16), np.uint8),
    ((64, 64, 4), np.uint16),
    ((50, 70), np.float32),
    ((33, 17, 1), np.bool_),
])
@pytest.mark.parametrize("fill", ["zeros", "max", "noise"])
def test_valid_edge_images_are_accepted(handler, shape, dtype, fill):
    """Valid but unusual images (constant, extreme aspect, 16-bit, bool) must be accepted, not refused."""
    if fill == "zeros":
        arr = np.zeros(shape, dtype)
    elif fill == "max":
        arr = np.ones(shape, dtype) if dtype in (np.float32, np.bool_) else np.full(shape, np.iinfo(dtype).max, dtype)
    else:
        arr = (np.random.default_rng(0).random(shape) * (1 if dtype in (np.float32, np.bool_) else 255)).astype(dtype)
    assert check_prediction(handler, arr) == "accepted"


@pytest.mark.parametrize("source, fragment", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (None, "no image"),
    (12345, "unsupported"),
    ({"path": "x.jpg"}, "unsupported"),
    ("does/not/exist.jpg", "not found"),
    ("x" * 5000 + ".jpg", "name too long"),  # longer than any file name the OS allows: OSError must not escape
    ("bad\x00name.jpg", "not found"),
    (np.zeros((15, 400, 3), np.uint8), "16"),
    (np.zeros((8000, 8000), np.uint8), "pixels"),
])
def test_named_bad_inputs_are_refused_with_a_message(handler, source, fragment):
    with pytest.raises(ValueError) as exc:
        handler.predict(source)
    assert fragment.lower() in str(exc.value).lower()


def test_torch_backend_follows_the_same_contract(tiny_checkpoint):
    """The PyTorch/autograd backend (the fallback when ONNX Runtime is unusable) on a fixed sample of fuzz
    cases: it shares decoding, but the Grad-CAM and the overlay are its own."""
    from inspectkit.inference.handler import InferenceHandler

    h = InferenceHandler(tiny_checkpoint, backend="torch", threads=1)
    rng = np.random.default_rng(3)
    seeds = list(seed_files().values())
    outcomes = []
    for i in range(24):
        data = seeds[i % len(seeds)]
        if i % 2:  # every other one mutated: a few random overwrites
            buf = bytearray(data)
            for p in rng.integers(0, len(buf), size=4):
                buf[p] = int(rng.integers(256))
            data = bytes(buf)
        outcomes.append(check_prediction(h, data))
    outcomes.append(check_prediction(h, np.zeros((16, 5000, 3), np.uint8)))
    assert "accepted" in outcomes


# -- the same uploads one layer up: the JSON endpoint and the Gradio /predict function ---------------------------
@pytest.fixture(scope="module")
def api_client(handler):
    """The app's FastAPI app (create_api) in-process: the JSON endpoint's whole path without a socket."""
    from fastapi.testclient import TestClient


    with TestClient(create_api(handler), raise_server_exceptions=False) as c:
        yield c


@fuzz_settings(0.3)
@given(data=upload_bytes(), name=st.text(max_size=40))
def test_json_endpoint_answers_every_upload_without_a_server_error(api_client, handler, data, name):
    """POST /api/inspect: a verdict (200) or a refusal with a message (4xx); never a 500, always valid JSON."""
    r = api_client.post("/api/inspect?heatmap=true", files={"file": (name or "x", data, "application/octet-stream")})
    assert r.status_code in (200, 400, 413, 422), (r.status_code, r.text[:300])
    body = json.loads(r.text)
    if r.status_code == 200:
        check_json(body, handler)
        assert body["heatmap_png_base64"]
    else:
        assert isinstance(body["detail"], str) and body["detail"].strip()
    event(str(r.status_code))


@fuzz_settings(0.2)
@given(data=upload_bytes())
def test_gradio_predict_function_raises_only_gradio_errors(handler, tmp_path_factory, data):
    """The function behind the Gradio /predict endpoint on a stored upload: JSON or a gr.Error (shown to the
    user as a message); any other exception would surface as a generic 'Error' in the UI."""
    import gradio as gr

    from inspectkit.ui.common import support as ui

    p = tmp_path_factory.getbasetemp() / "gradio-upload.jpg"
    p.write_bytes(data)
    try:
        out = ui.api_predict(handler, str(p), None, True)
    except gr.Error as exc:
        assert str(exc.message).strip()
        event("gr.Error")
        return
    check_json(out, handler)
    event("answer")


# -- a model with a guard: a third verdict, same contract --------------------------------------------------------
@pytest.fixture(scope="module")
def guarded_api_client(guarded_handler):
    from fastapi.testclient import TestClient


    with TestClient(create_api(guarded_handler), raise_server_exceptions=False) as c:
        yield c


@fuzz_settings(0.3)
@given(source=st.one_of(mutated_file(), odd_array(), odd_pil()))
def test_guarded_model_follows_the_contract(guarded_handler, source):
    """Odd uploads through a model with a guard: OK/DEFECT, or UNUSABLE with a reason and novelty, or refused."""
    outcome = check_prediction(guarded_handler, source)
    event(outcome)


@pytest.mark.slow
@fuzz_settings(0.2)
@given(items=st.lists(st.one_of(upload_bytes(), odd_array()), min_size=1, max_size=6))
def test_guarded_batch_collect_follows_the_contract(guarded_handler, items):
    results = guarded_handler.predict_batch(items, on_error="collect", batch_size=4)
    assert len(results) == len(items)
    for r in results:
        if r.error is None:
            check_result(r, guarded_handler)
            event(r.verdict)
        else:
            assert r.verdict is None and r.error.strip() and r.unusable_reason is None and r.novelty is None


@pytest.mark.slow
@fuzz_settings(0.2)
@given(data=upload_bytes(), threshold=st.sampled_from([None, 0.01, 0.5, 0.99]))
def test_guarded_json_endpoint_keeps_the_contract_at_any_threshold(guarded_api_client, guarded_handler, data,
                                                                   threshold):
    """POST /api/inspect on a model with a guard: the verdict contract at any threshold (UNUSABLE stays), never a
    500; the server's drift monitor counts the answered photos without breaking an answer."""
    params = {} if threshold is None else {"threshold": threshold}
    r = guarded_api_client.post("/api/inspect", params=params, files={"file": ("x", data, "image/png")})
    assert r.status_code in (200, 400, 413, 422), (r.status_code, r.text[:300])
    if r.status_code == 200:
        body = r.json()
        check_json(body, guarded_handler)
        event(body["verdict"])
    health = guarded_api_client.get("/api/health")
    assert health.status_code == 200 and isinstance(health.json()["drift"]["alarm"], bool)
