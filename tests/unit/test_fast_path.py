"""The fast CPU path (inspectkit/inference/fast.py + the handler's "onnx" backend) against PyTorch and autograd Grad-CAM.

Equality claims: logits within 1e-3 of PyTorch, the same verdicts, heat maps within 1e-3 of autograd
Grad-CAM (gradcam.py, itself checked against pytorch-grad-cam in test_gradcam.py) - on synthetic castings
with trained_archs weights here, and on the whole real casting test split when it and the committed model exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import gradcam
from inspectkit.heatmap.render import cam_from_features, heatmap_at
from inspectkit.imageio import load_rgb
from inspectkit.inference import fast
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint
from inspectkit.inference.handler import InferenceHandler
from inspectkit.metrics import predict_labels, softmax
from inspectkit.preprocess import preprocess
from tests.support import CASTING, COMMITTED_MODEL, REPO, needs_casting, synthetic_casting

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def _images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return [synthetic_casting(rng, defect=bool(i % 2 == 0), size=size) for i in range(n)]


def _autograd(ckpt_path, rgbs, targets=None):
    """(logits, heat maps at each image's size) from the PyTorch model with autograd Grad-CAM."""
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt)
    x = torch.from_numpy(np.stack([preprocess(im, ckpt["preprocessing"]) for im in rgbs]))
    with gradcam.GradCAM(model) as cam:
        logits = cam.forward(x).numpy()
        if targets is None:
            targets = predict_labels(softmax(logits), ckpt["defect_index"], ckpt["threshold"])
        maps = cam.cams(targets)
    return logits, [heatmap_at(m, im.shape[:2]) for m, im in zip(maps, rgbs)]


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("size", [(96, 96), (70, 150), (301, 97)])
@pytest.mark.parametrize("target", [None, "def_front", "ok_front"])
def test_heatmap_without_backward_equals_autograd_gradcam(trained_archs, arch, size, target, tmp_path):
    h = InferenceHandler(trained_archs[arch], backend="onnx", cache_dir=tmp_path)
    rgbs = _images(4, size, seed=size[0])
    # the class CAM (the defect-evidence map is checked against pytorch-grad-cam in test_heatmap_scale.py)
    results = h.predict_batch(rgbs, target=target, heatmap_mode=None if target else "class-normalised")
    targets = None if target is None else [h.class_names.index(target)] * 4
    logits, maps = _autograd(trained_archs[arch], rgbs, targets)
    probs = softmax(logits)
    for r, p, m in zip(results, probs, maps):
        assert r.heatmap.shape == size
        assert np.abs(r.heatmap - m).max() <= 1e-3
        # the tiny random-prefix model has BatchNorm channels with near-zero variance: folding them into the convs
        # (ONNX export) moves its logits (up to ~35) by up to ~1e-3; the real model is checked at 1e-3 below
        assert abs(r.probabilities["def_front"] - p[0]) <= 1e-3
    if target is None:  # the predicted class's maps are real maps, not flat ones (a class without evidence is 0)
        assert all(r.heatmap.max() - r.heatmap.min() > 0.5 for r in results)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_graph_logits_and_features_match_pytorch(trained_archs, arch, tmp_path):
    fm = fast.load(trained_archs[arch], cache_dir=tmp_path)
    ckpt = load_checkpoint(trained_archs[arch])
    model = model_from_checkpoint(ckpt)
    s = ckpt["preprocessing"]["size"]
    x = np.stack([preprocess(im, ckpt["preprocessing"]) for im in _images(5, (s, s), seed=4)])
    feats = []
    layer = gradcam.find_layer(model, fast.exact_layer(arch))[1]
    handle = layer.register_forward_hook(lambda m, i, o: feats.append(o))
    try:
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
    finally:
        handle.remove()
    logits, f = fm.run(x)
    assert np.abs(logits - want).max() <= 1e-3
    assert np.abs(f - feats[0].numpy()).max() <= 1e-3
    # batch size does not change the answer
    one = np.concatenate([fm.run(x[i:i + 1], features=False)[0] for i in range(5)])
    assert np.abs(one - logits).max() <= 1e-4
    # the head stored beside the graph is the checkpoint's
    w, b = gradcam.linear_head(model, fast.exact_layer(arch))
    np.testing.assert_array_equal(fm.head_weight, w)
    np.testing.assert_array_equal(fm.head_bias, b)
    np.testing.assert_allclose(f.mean(axis=(2, 3)) @ w.T + b, logits, atol=1e-4)
    cams = cam_from_features(f, w, [0] * 5)
    assert cams.shape == (5, *f.shape[2:]) and (cams >= 0).all()


def test_cache_is_keyed_by_the_checkpoint_and_reused(trained_archs, tmp_path):
    path = trained_archs["mobilenet_v2"]
    first = fast.load(path, cache_dir=tmp_path)
    assert first.timings["generated"] is True
    digest = fast.sha256_file(path)
    entry = tmp_path / digest
    assert first.onnx_path == entry / "model.onnx"
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["sha256"] == digest and meta["cam_layer"] == "features.18"
    assert meta["check"]["max_logit_diff"] <= 1e-3 and meta["check"]["max_feature_diff"] <= 1e-3
    assert "state_dict" not in meta["info"] and meta["info"]["class_names"] == ["def_front", "ok_front"]
    second = fast.load(path, cache_dir=tmp_path)
    assert second.timings["generated"] is False and second.timings["generate_s"] == 0.0
    # a damaged entry is generated again, not trusted
    (entry / "meta.json").write_text("{not json")
    assert fast.load(path, cache_dir=tmp_path).timings["generated"] is True
    # another checkpoint gets its own entry
    other = fast.load(trained_archs["resnet18"], cache_dir=tmp_path)
    assert other.onnx_path.parent != entry and other.meta["arch"] == "resnet18"


def test_generated_graphs_are_git_ignored():
    out = subprocess.run(["git", "check-ignore", "-q", "final_best_model/model.onnx"], cwd=REPO)
    assert out.returncode == 0


def test_export_mismatch_is_refused_and_auto_falls_back(trained_archs, tmp_path, monkeypatch):
    monkeypatch.setattr(fast, "EXPORT_TOLERANCE", -1.0)  # no graph can pass: simulates a wrong export
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        fast.load(trained_archs["mobilenet_v2"], cache_dir=tmp_path)
    assert not list(tmp_path.rglob("meta.json")) and not list(tmp_path.rglob("*.onnx"))
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        InferenceHandler(trained_archs["mobilenet_v2"], backend="onnx", cache_dir=tmp_path)
    h = InferenceHandler(trained_archs["mobilenet_v2"], backend="auto", cache_dir=tmp_path, threads=1)
    assert h.backend == "torch" and "differs from PyTorch" in h.fallback_reason
    assert h.predict(_images(1, (96, 96))[0]).verdict in ("OK", "DEFECT")


def test_missing_onnxruntime_falls_back(trained_archs, tmp_path, monkeypatch):
    def no_ort(*a, **k):
        raise ImportError("No module named 'onnxruntime'")

    monkeypatch.setattr(fast, "load", no_ort)
    h = InferenceHandler(trained_archs["mobilenet_v2"], cache_dir=tmp_path, threads=1)
    assert h.backend == "torch" and "onnxruntime" in h.fallback_reason
    with pytest.raises(RuntimeError, match="onnxruntime"):
        InferenceHandler(trained_archs["mobilenet_v2"], backend="onnx", cache_dir=tmp_path)


def test_changed_checkpoint_never_meets_its_old_graph(trained_archs, tmp_path):
    src = trained_archs["mobilenet_v2"]
    fast.load(src, cache_dir=tmp_path)
    copy = tmp_path / "model.pt"
    copy.write_bytes(src.read_bytes())
    (tmp_path / "model.pt.sha256").write_text(Path(str(src) + ".sha256").read_text())
    InferenceHandler(copy, backend="onnx", cache_dir=tmp_path)  # same bytes: the cached entry is used
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle of the weights
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        InferenceHandler(copy, backend="onnx", cache_dir=tmp_path)


def test_cached_load_does_not_import_torch(trained_archs, tmp_path):
    fast.load(trained_archs["mobilenet_v2"], cache_dir=tmp_path)  # generate the entry here (needs torch)
    code = ("import sys, numpy as np; from inference_handler import InferenceHandler; "
            f"h = InferenceHandler({str(trained_archs['mobilenet_v2'])!r}, cache_dir={str(tmp_path)!r}); "
            "r = h.predict(np.full((96, 96, 3), 128, np.uint8)); "
            "print(h.backend, r.heatmap.shape, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["onnx", "(96,", "96)", "False"]


# ---------------------------------------------------------------------------------------------- real data

@needs_casting
@pytest.mark.skipif(not COMMITTED_MODEL.is_file(), reason="no committed model final_best_model.pt yet")
def test_whole_casting_test_split(tmp_path):
    """All 715 test images: same verdicts, logits within 1e-3, heat maps within 1e-3 of autograd Grad-CAM."""
    files = sorted((CASTING / "test" / "def_front").glob("*")) + sorted((CASTING / "test" / "ok_front").glob("*"))
    assert len(files) == 715
    ckpt = load_checkpoint(COMMITTED_MODEL)
    model = model_from_checkpoint(ckpt)
    spec, di, thr = ckpt["preprocessing"], ckpt["defect_index"], ckpt["threshold"]
    fm = fast.load(COMMITTED_MODEL, cache_dir=tmp_path)
    worst_logit = worst_heat = 0.0
    disagreements = []
    with gradcam.GradCAM(model, fast.exact_layer(ckpt["arch"])) as cam:
        for start in range(0, len(files), 32):
            chunk = files[start:start + 32]
            rgbs = [load_rgb(f) for f in chunk]
            x = np.stack([preprocess(im, spec) for im in rgbs])
            ref_logits = cam.forward(torch.from_numpy(x)).numpy()
            ref_labels = predict_labels(softmax(ref_logits), di, thr)
            ref_maps = cam.cams(ref_labels)
            logits, feats = fm.run(x)
            labels = predict_labels(softmax(logits), di, thr)
            maps = cam_from_features(feats, fm.head_weight, labels)
            worst_logit = max(worst_logit, float(np.abs(logits - ref_logits).max()))
            disagreements += [str(f.name) for f, a, b in zip(chunk, labels, ref_labels) if a != b]
            for im, a, b in zip(rgbs, maps, ref_maps):
                hw = im.shape[:2]
                worst_heat = max(worst_heat, float(np.abs(heatmap_at(a, hw) - heatmap_at(b, hw)).max()))
    assert disagreements == []
    assert worst_logit <= 1e-3
    assert worst_heat <= 1e-3
