"""InferenceHandler: results, decision rule, heat maps at any size, batches, threads, hooks, loading, real data."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inspectkit.heatmap.render import colorize
from inspectkit.imageio import load_rgb
from inspectkit.inference.handler import STAGES, InferenceHandler, InspectionResult
from inspectkit.metrics import predict_labels
from tests.support import CASTING, COMMITTED_MODEL, REPO, needs_casting, synthetic_casting, write_checkpoint
from tests.trained_tiny import train_tiny

BACKENDS = ["torch", "onnx"]


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("trained"), "mobilenet_v2", size=96)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread for torch in this module: on a shared 2-core machine, OpenMP's spinning makes
    2 threads up to 7x slower than 1 when other processes are busy. Results do not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def handlers(trained_ckpt, cache_dir) -> dict:
    return {b: InferenceHandler(trained_ckpt, backend=b, cache_dir=cache_dir, threads=1 if b == "torch" else None)
            for b in BACKENDS}


def _images(n: int, size=(96, 96), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [synthetic_casting(rng, defect=bool(i % 2 == 0), size=size) for i in range(n)]


def _same(a: InspectionResult, b: InspectionResult, prob_tol=1e-5, heat_tol=1e-4) -> None:
    assert a.verdict == b.verdict and a.label == b.label
    for c in a.probabilities:
        assert abs(a.probabilities[c] - b.probabilities[c]) <= prob_tol
    if a.heatmap is None:
        assert b.heatmap is None
    else:
        assert a.heatmap.shape == b.heatmap.shape
        assert np.abs(a.heatmap - b.heatmap).max() <= heat_tol


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_result_fields(handlers, backend):
    h = handlers[backend]
    img = _images(1, (120, 90))[0]
    r = h.predict(img, name="part-1")
    assert r.name == "part-1" and r.error is None and r.backend == backend
    assert r.verdict in ("OK", "DEFECT") and r.label in h.class_names
    assert r.verdict == ("DEFECT" if r.label == "def_front" else "OK")
    assert set(r.probabilities) == set(h.class_names)
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert r.defect_probability == r.probabilities["def_front"]
    assert r.threshold == h.threshold == 0.5
    assert r.heatmap.shape == (120, 90) and r.heatmap.dtype == np.float32
    assert 0.0 <= r.heatmap.min() and r.heatmap.max() <= 1.0
    # a model with a defect class serves the defect evidence (a good part may have none: an all-zero map);
    # the per-image normalised class CAM reaches 1 somewhere on every photo
    assert r.heatmap_mode == "defect-evidence" and r.target == "def_front" and r.display_label in ("Defect", "OK")
    rc = h.predict(img, heatmap_mode="class-normalised")
    assert rc.heatmap.max() > 0.5 and rc.target == rc.label and rc.heatmap_mode == "class-normalised"
    assert r.overlay.shape == (120, 90, 3) and r.overlay.dtype == np.uint8
    assert np.array_equal(r.image, img)
    assert set(r.timings_ms) == set(STAGES) and all(v >= 0 for v in r.timings_ms.values())
    assert r.timings_ms["total"] >= r.timings_ms["forward"] > 0
    d = r.to_dict()
    assert d["verdict"] == r.verdict and d["heatmap_shape"] == [120, 90] and "heatmap" not in d
    full = r.to_dict(include_arrays=True)
    assert np.allclose(np.array(full["heatmap"]), r.heatmap)
    import json

    json.dumps(full)  # JSON-ready


def test_handler_attributes(handlers, trained_ckpt):
    for h in handlers.values():
        assert h.class_names == ["def_front", "ok_front"] and h.defect_class == "def_front"
        assert h.preprocessing["size"] == 96 and h.cam_layer == "features.18"
        assert "state_dict" not in h.checkpoint_info
        # the handler exposes the checkpoint's metrics; the tiny fixture model is trained (not random) but its last
        # few percent depend on the CPU's float arithmetic (63/64 on some machines), so only "trained" is asserted
        assert h.checkpoint_info["metrics"]["train_accuracy"] >= 0.95
        assert len(h.sha256) == 64
    assert handlers["onnx"].backend == "onnx" and handlers["torch"].backend == "torch"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 0.7, 0.95])
def test_verdict_is_the_evaluation_rule(handlers, backend, threshold):
    h = handlers[backend]
    r = h.predict(_images(1, seed=int(threshold * 100))[0], heatmap=False)
    p = np.array([[r.probabilities[c] for c in h.class_names]])
    want = predict_labels(p, h.defect_index, threshold)[0]
    assert h.decide(r.probabilities, threshold) == ("DEFECT" if want == 0 else "OK")
    assert h.decide(r.probabilities) == r.verdict
    assert h.decide({"def_front": 0.5, "ok_front": 0.5}, 0.5) == "DEFECT"  # p >= t is a defect
    assert h.decide({"def_front": 0.4999, "ok_front": 0.5001}, 0.5) == "OK"


@pytest.mark.parametrize("bad", [{"def_front": 0.5}, {"def_front": "x", "ok_front": 0.5},
                                 {"def_front": 1.5, "ok_front": 0.5}, [0.5, 0.5]])
def test_decide_rejects_bad_probabilities(handlers, bad):
    with pytest.raises(ValueError, match="probabilities"):
        handlers["onnx"].decide(bad)
    with pytest.raises(ValueError, match="threshold"):
        handlers["onnx"].decide({"def_front": 0.5, "ok_front": 0.5}, 2.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["square", "landscape", "portrait", "thin", "big", "gray", "rgba", "gray16",
                                  "rgb16", "float01", "pil", "png_bytes", "path"])
@pytest.mark.slow
def test_any_size_and_kind(handlers, backend, kind, tmp_path):
    h = handlers[backend]
    base = {"square": (96, 96), "landscape": (80, 200), "portrait": (250, 70), "thin": (16, 300),
            "big": (900, 1200)}.get(kind, (100, 130))
    rgb = _images(1, base, seed=3)[0]
    src = {
        "gray": rgb[:, :, 0],
        "rgba": np.dstack([rgb, np.full(base, 255, np.uint8)]),
        "gray16": rgb[:, :, 0].astype(np.uint16) * 257,
        "rgb16": rgb.astype(np.uint16) * 257,
        "float01": rgb.astype(np.float32) / 255.0,
        "pil": Image.fromarray(rgb),
    }.get(kind, rgb)
    if kind == "png_bytes":
        b = io.BytesIO()
        Image.fromarray(rgb).save(b, "PNG")
        src = b.getvalue()
    if kind == "path":
        src = tmp_path / "part.png"
        Image.fromarray(rgb).save(src)
    r = h.predict(src)
    assert r.heatmap.shape == base and r.overlay.shape == (*base, 3) and r.image.shape == (*base, 3)
    assert 0.0 <= r.heatmap.min() and r.heatmap.max() <= 1.0
    # every encoding of the same pixels gets the same answer as the plain RGB array
    ref = h.predict(rgb)
    _same(r, ref, prob_tol=1e-5 if kind != "float01" else 1e-3)
    if kind == "path":
        assert r.name == "part.png"


@pytest.mark.parametrize("backend", BACKENDS)
def test_prediction_only(handlers, backend):
    r = handlers[backend].predict(_images(1)[0], heatmap=False)
    assert r.heatmap is None and r.overlay is None and r.target is None
    assert r.timings_ms["gradcam"] == 0 and r.timings_ms["overlay"] == 0
    full = handlers[backend].predict(_images(1)[0])
    _same(r, full.__class__(**{**full.__dict__, "heatmap": None}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_opacity(handlers, backend):
    h = handlers[backend]
    img = _images(1, (64, 80))[0]
    r0, r1, rm = h.predict(img, opacity=0.0), h.predict(img, opacity=1.0), h.predict(img, opacity=0.6)
    assert np.array_equal(r0.overlay, img)
    assert np.array_equal(r1.overlay, colorize(r1.heatmap))
    want = 0.4 * img.astype(float) + 0.6 * colorize(rm.heatmap).astype(float)
    assert np.abs(rm.overlay.astype(float) - want).max() <= 1.0
    for bad in (-0.01, 1.01, "x", float("nan")):
        with pytest.raises(ValueError, match="opacity"):
            h.predict(img, opacity=bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_class(handlers, backend):
    h = handlers[backend]
    img = _images(2, seed=5)[0]
    by_name = {t: h.predict(img, target=t) for t in ("def_front", "ok_front")}
    assert by_name["def_front"].target == "def_front" and by_name["ok_front"].target == "ok_front"
    assert by_name["def_front"].verdict == by_name["ok_front"].verdict  # the target changes the map only
    _same(h.predict(img, target=0), by_name["def_front"])
    _same(h.predict(img, target="DEFECT"), by_name["def_front"])
    assert not np.allclose(by_name["def_front"].heatmap, by_name["ok_front"].heatmap, atol=0.05)
    for bad in ("scratch", 2, -1, 1.0, True):
        with pytest.raises(ValueError, match="target"):
            h.predict(img, target=bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callers_image_not_modified(handlers, backend):
    h = handlers[backend]
    arr = _images(1, (100, 70))[0]
    keep = arr.copy()
    pil = Image.fromarray(arr)
    pil_keep = np.asarray(pil).copy()
    for src in (arr, pil, arr[:, :, 0], np.dstack([arr, arr[:, :, :1]])):
        r = h.predict(src)
        r.image[:] = 0  # the result's arrays are the handler's own
        r.overlay[:] = 0
    assert np.array_equal(arr, keep) and np.array_equal(np.asarray(pil), pil_keep)
    assert arr.flags.writeable


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batch_equals_one_by_one(handlers, backend, batch_size):
    h = handlers[backend]
    imgs = _images(7, seed=11) + [_images(1, (50, 140), seed=2)[0]]
    batch = h.predict_batch(imgs, batch_size=batch_size)
    assert len(batch) == len(imgs)
    for img, r in zip(imgs, batch):
        _same(r, h.predict(img))
        assert r.heatmap.shape == img.shape[:2]


def test_batch_accepts_stack_and_refuses_single(handlers):
    h = handlers["onnx"]
    stack = np.stack(_images(3))
    assert [r.verdict for r in h.predict_batch(stack)] == [h.predict(i).verdict for i in stack]
    for single in (stack[0], b"bytes", "file.jpg"):
        with pytest.raises(ValueError, match="list of images"):
            h.predict_batch(single)
    with pytest.raises(ValueError, match="batch_size"):
        h.predict_batch(list(stack), batch_size=0)
    with pytest.raises(ValueError, match="on_error"):
        h.predict_batch(list(stack), on_error="ignore")
    with pytest.raises(ValueError, match="names"):
        h.predict_batch(list(stack), names=["a"])
    assert h.predict_batch([]) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [3, 8])  # 8: the fast path's per-core split of big batches
def test_collect_errors_and_progress(handlers, backend, batch_size):
    h = handlers[backend]
    imgs = _images(4)
    items = [imgs[0], b"", imgs[1], None, b"not an image", imgs[2], np.zeros((2, 2, 2, 2)), imgs[3]]
    names = [f"n{i}" for i in range(len(items))]
    seen = []
    res = h.predict_batch(items, batch_size=batch_size, on_error="collect", names=names,
                          progress=lambda done, total: seen.append((done, total)))
    assert [r.name for r in res] == names
    bad = {1, 3, 4, 6}
    for i, r in enumerate(res):
        if i in bad:
            assert r.verdict is None and r.error and r.heatmap is None
        else:
            assert r.error is None and r.verdict in ("OK", "DEFECT")
            _same(r, h.predict(items[i]))
    assert "empty" in res[1].error and "None" in res[3].error and "shape" in res[6].error
    assert seen == ([(3, 8), (6, 8), (8, 8)] if batch_size == 3 else [(8, 8)])
    with pytest.raises(ValueError, match="empty"):
        h.predict_batch(items, on_error="raise")


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_get_sequential_results(handlers, backend):
    h = handlers[backend]
    imgs = [_images(1, (96 + 8 * i, 96), seed=i)[0] for i in range(8)]
    want = [h.predict(im) for im in imgs]
    got, errors = [None] * 8, []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            for _ in range(3):
                got[i] = h.predict(imgs[i]) if i % 2 else h.predict_batch([imgs[i], imgs[i]], batch_size=2)[0]
        except Exception as exc:  # reported below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    for g, w in zip(got, want):
        _same(g, w)
    if backend == "torch":
        from inspectkit.heatmap.gradcam import hook_count

        assert hook_count(h.model) == 0


@pytest.mark.slow
def test_no_hooks_left_torch(handlers, monkeypatch):
    from inspectkit.heatmap.gradcam import hook_count

    h = handlers["torch"]
    img = _images(1)[0]
    for i in range(100):
        h.predict(img, heatmap=bool(i % 2))
    assert hook_count(h.model) == 0
    assert all(p.grad is None for p in h.model.parameters())

    def boom(*a):
        raise RuntimeError("head failure")

    monkeypatch.setattr(h.model.classifier[1], "forward", boom)
    with pytest.raises(RuntimeError, match="head failure"):
        h.predict(img)
    monkeypatch.undo()
    assert hook_count(h.model) == 0
    assert h.predict(img).verdict in ("OK", "DEFECT")


def test_backends_agree(handlers):
    imgs = _images(6, seed=21) + [_images(1, (300, 300))[0]]
    a = handlers["torch"].predict_batch(imgs)
    b = handlers["onnx"].predict_batch(imgs)
    for x, y in zip(a, b):
        _same(x, y, prob_tol=1e-4, heat_tol=1e-3)


@pytest.mark.slow
def test_multiclass_verdict_is_the_class(tmp_path):
    ck = write_checkpoint(tmp_path / "multi.pt", size=64, class_names=("crazing", "inclusion", "patches"),
                          defect_index=None, threshold=None)
    for backend in BACKENDS:
        h = InferenceHandler(ck, backend=backend, cache_dir=tmp_path / "cache")
        r = h.predict(_images(1, (64, 64))[0])
        assert r.verdict == r.label in h.class_names
        assert r.defect_probability is None and r.threshold is None and h.defect_class is None
        assert r.label == max(r.probabilities, key=r.probabilities.get)
        assert h.decide({"crazing": 0.2, "inclusion": 0.5, "patches": 0.3}) == "inclusion"
        # no defect class, no threshold: nothing to review against
        assert h.review_band is None and h.review_band_at() is None and r.needs_review is None
        assert r.to_dict()["needs_review"] is None and r.to_dict()["review_band"] is None


def _z(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def _sig(z: float) -> float:
    return 1 / (1 + math.exp(-z))


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_carry_needs_review_from_the_fallback_band(handlers, backend):
    """A checkpoint without a stored band (like the committed model) gets DEFAULT_MARGIN logits either side of
    its threshold; every result says whether its p(defect) is inside, and to_dict carries both fields."""
    from inspectkit.review import DEFAULT_MARGIN

    h = handlers[backend]
    t = h.threshold
    low, high = _sig(_z(t) - DEFAULT_MARGIN), _sig(_z(t) + DEFAULT_MARGIN)
    assert h.review_band["source"] == "fallback" and h.review_band["threshold"] == t
    assert h.review_band["low"] == pytest.approx(low) and h.review_band["high"] == pytest.approx(high)
    results = h.predict_batch(_images(8, seed=5), heatmap=False)
    for r in results:
        assert r.needs_review is (low <= r.defect_probability <= high)
        assert r.review_band == pytest.approx({"low": low, "high": high})
        d = r.to_dict()
        assert d["needs_review"] is r.needs_review and d["review_band"] == pytest.approx({"low": low, "high": high})
    assert h.predict(_images(1)[0]).needs_review is not None  # the one-image path too


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_review_band_changes_which_results_are_flagged(handlers, backend):
    h = handlers[backend]
    imgs = _images(8, seed=5)
    t = h.threshold
    dist = sorted(abs(_z(r.defect_probability) - _z(t)) for r in h.predict_batch(imgs, heatmap=False))
    assert dist[3] < dist[4], dist  # a margin between them puts exactly half of the images inside
    margin = (dist[3] + dist[4]) / 2
    try:
        band = h.set_review_band(margin=margin)
        assert band["source"] == "user" and band["low"] == pytest.approx(_sig(_z(t) - margin))
        again = h.predict_batch(imgs, heatmap=False)
        flags = [r.needs_review for r in again]
        assert flags == [abs(_z(r.defect_probability) - _z(t)) <= margin for r in again] and sum(flags) == 4
        assert [h.needs_review(r.defect_probability) for r in again] == flags
        h.set_review_band(low=t, high=t)  # explicit edges: only p == t would be flagged
        assert not any(r.needs_review for r in h.predict_batch(imgs, heatmap=False))
        for bad, message in ((dict(low=0.9, high=0.95), "contain its threshold"), (dict(margin=-1), "margin -1"),
                             (dict(margin=1, low=0.1, high=0.9), "not both"), (dict(low=0.1), "both low and high")):
            with pytest.raises(ValueError, match=message):
                h.set_review_band(**bad)
    finally:
        h.set_review_band()  # back to the checkpoint's band: the module's other tests share this handler
    assert h.review_band["source"] == "fallback"


@pytest.mark.slow
def test_a_stored_band_is_used_and_follows_the_threshold(tmp_path):
    """The band train() stores (here lopsided by a missed validation defect) is the handler's, on both backends
    (the ONNX path reads it from its cache's copy of the checkpoint); at another threshold it keeps its logit
    distances below and above."""
    import torch

    from inspectkit.inference.checkpoint import make_checkpoint, save_checkpoint
    from inspectkit.model import build_model
    from inspectkit.preprocess import default_spec
    from inspectkit.review import review_band

    band = review_band([True, False, True], [0.9, 0.1, 0.01], 0.5)
    assert band["low"] == 0.01  # the missed defect's score
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, weights=None).eval()
    ck = tmp_path / "banded.pt"
    save_checkpoint(make_checkpoint(model, "mobilenet_v2", ["def_front", "ok_front"], 0, default_spec(64), 0.5,
                                    review_band=band), ck)
    below, above = _z(0.5) - _z(band["low"]), _z(band["high"]) - _z(0.5)
    for backend in BACKENDS:
        h = InferenceHandler(ck, backend=backend, cache_dir=tmp_path / "cache")
        assert h.review_band == band
        r = h.predict(_images(1, (64, 64))[0], heatmap=False)
        assert r.review_band == {"low": band["low"], "high": band["high"]}
        assert r.needs_review is (band["low"] <= r.defect_probability <= band["high"])
        at = h.review_band_at(0.8)
        assert at["threshold"] == 0.8 and at["low"] == pytest.approx(_sig(_z(0.8) - below))
        assert at["high"] == pytest.approx(_sig(_z(0.8) + above))
        for p in (0.005, 0.02, 0.3, 0.95):
            assert h.needs_review(p) is (band["low"] <= p <= band["high"])
            assert h.needs_review(p, threshold=0.8) is (at["low"] <= p <= at["high"])
            assert h.needs_review(p, margin=1.0) is (abs(_z(p) - _z(0.5)) <= 1.0)
        assert h.needs_review(None) is None


def test_loading_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        InferenceHandler(tiny_checkpoint, backend="tensorrt")
    with pytest.raises(ValueError, match="not found"):
        InferenceHandler(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="SHA-256"):
        InferenceHandler(tiny_checkpoint, expected_sha256="0" * 64)
    with pytest.raises(ValueError, match="threads"):
        InferenceHandler(tiny_checkpoint, threads=0)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for backend in ("auto", "torch", "onnx"):
        with pytest.raises(ValueError, match="bad.pt"):
            InferenceHandler(bad, backend=backend, cache_dir=tmp_path / "cache")
    # a checkpoint changed after its digest was recorded is refused
    changed = tmp_path / "changed.pt"
    changed.write_bytes(Path(tiny_checkpoint).read_bytes() + b"x")
    (tmp_path / "changed.pt.sha256").write_text(Path(str(tiny_checkpoint) + ".sha256").read_text())
    with pytest.raises(ValueError, match="changed or corrupted"):
        InferenceHandler(changed, cache_dir=tmp_path / "cache")


def test_cam_layer_choice(trained_ckpt, cache_dir):
    h = InferenceHandler(trained_ckpt, cam_layer="features.17", cache_dir=cache_dir)
    assert h.backend == "torch" and h.cam_layer == "features.17"  # auto: ONNX's CAM is exact only at the last block
    assert h.predict(_images(1)[0]).heatmap.shape == (96, 96)
    with pytest.raises(ValueError, match="features.17"):
        InferenceHandler(trained_ckpt, backend="onnx", cam_layer="features.17", cache_dir=cache_dir)
    with pytest.raises(ValueError, match="no layer named"):
        InferenceHandler(trained_ckpt, backend="torch", cam_layer="features.99")
    assert InferenceHandler(trained_ckpt, cam_layer="features.18", cache_dir=cache_dir).backend == "onnx"


def test_import_does_not_load_torch():
    code = "import sys, inference_handler; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------- real data

def _evaluation_probs(ckpt_path: Path, rgbs: list[np.ndarray]) -> np.ndarray:
    """Probabilities as evaluation computes them (inspectkit.engine.evaluation.predict_probs when it exists)."""
    import torch

    from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt)
    with torch.inference_mode():
        try:
            from inspectkit.engine.evaluation import predict_probs
        except ImportError:  # before evaluation.py existed: the same steps by hand
            from inspectkit.metrics import softmax
            from inspectkit.preprocess import preprocess

            x = torch.from_numpy(np.stack([preprocess(im, ckpt["preprocessing"]) for im in rgbs]))
            return softmax(model(x).numpy())
        return predict_probs(model, rgbs, ckpt["preprocessing"], batch_size=16)


@pytest.mark.slow
@needs_casting
@pytest.mark.skipif(not COMMITTED_MODEL.is_file(), reason="no committed model final_best_model.pt yet")
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_images_match_evaluation(backend, tmp_path_factory):
    files = [p for c in ("def_front", "ok_front") for p in sorted((CASTING / "test" / c).glob("*"))[:24]]
    h = InferenceHandler(COMMITTED_MODEL, backend=backend, cache_dir=tmp_path_factory.getbasetemp() / "real-cache")
    results = h.predict_batch(files, batch_size=16, heatmap=False)
    want = _evaluation_probs(COMMITTED_MODEL, [load_rgb(f) for f in files])
    got = np.array([[r.probabilities[c] for c in h.class_names] for r in results])
    assert np.abs(got - want).max() <= (1e-6 if backend == "torch" else 1e-4)
    labels = predict_labels(want, h.defect_index, h.threshold)
    assert [r.label for r in results] == [h.class_names[i] for i in labels]
    # and the model is worth its name on these
    truth = ["def_front"] * 24 + ["ok_front"] * 24
    assert np.mean([r.label == t for r, t in zip(results, truth)]) >= 0.9
