"""gradcam.py against pytorch-grad-cam's GradCAM (the reference), hooks, batches, threads, overlay.

What remains between the two implementations (why the comparison is not bit-exact):
pytorch-grad-cam min-max normalises the 7x7 (here 3x3/3x4) map with ``/ (1e-7 + max)``, resizes it with
cv2.resize (bilinear) to the input size and normalises again; gradcam.py resizes with the same cv2 call and
normalises once. A bilinear resize commutes with an affine map and the second min-max undoes the first, so
the maps are mathematically equal; only the 1e-7 epsilon and float32 rounding differ (observed ~1e-6,
asserted <= 0.01 as required, and also <= 1e-4 so a real regression cannot hide under 0.01).
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from inspectkit.heatmap.gradcam import (
    GradCAM,
    cam_from_features,
    colorize,
    default_layer,
    find_layer,
    gradcam,
    heatmap_at,
    hook_count,
    linear_head,
    overlay,
)
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint
from tests.trained_tiny import ARCHS as MODELS
from tests.trained_tiny import train_tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Trained(dict):
    """arch -> (model, input size), each trained on first use (see tests/trained_tiny.py)."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def __missing__(self, arch):
        path = train_tiny(self.folder, arch, **MODELS[arch])
        self[arch] = (model_from_checkpoint(load_checkpoint(path)), MODELS[arch]["size"])
        return self[arch]


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory):
    return _Trained(tmp_path_factory.mktemp("trained"))


def _batch(size_hw, n, seed=0):
    # real-looking inputs: synthetic castings normalised like the model's inputs
    import cv2

    from inspectkit.preprocess import default_spec, normalize
    from tests.support import synthetic_casting

    rng = np.random.default_rng(seed)
    imgs = [cv2.resize(synthetic_casting(rng, bool(i % 2 == 0), (96, 96)), (size_hw[1], size_hw[0]))
            for i in range(n)]
    spec = default_spec(96)
    return torch.from_numpy(np.stack([normalize(im, spec) for im in imgs]))


def _reference(model, layer_name, x, targets):
    ref = copy.deepcopy(model)  # pytorch-grad-cam leaves parameter gradients behind; keep ours clean
    layer = dict(ref.named_modules())[layer_name]
    with ReferenceGradCAM(ref, [layer]) as cam:
        return cam(x, targets=None if targets is None else [ClassifierOutputTarget(int(t)) for t in targets])


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("shape", ["square", "wide", "tall"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("target", ["predicted", "class0", "class1"])
def test_matches_pytorch_grad_cam(trained_models, arch, shape, batch, target):
    model, size = trained_models[arch]
    hw = {"square": (size, size), "wide": (size, size + size // 3), "tall": (size + size // 2, size)}[shape]
    x = _batch(hw, batch, seed=batch)
    targets = None if target == "predicted" else [int(target[-1])] * batch
    layer = default_layer(model)
    logits, ours = gradcam(model, x, layer, targets, size=hw)
    theirs = _reference(model, layer, x, targets)
    assert ours.shape == theirs.shape == (batch, *hw)
    # The predicted class's maps must be real maps, not flat ones, or the comparison would prove nothing.
    # A class with no positive evidence anywhere has an all-zero map after the ReLU: both must then give zeros.
    if target == "predicted":
        assert all(m.max() - m.min() > 0.5 for m in ours), "degenerate CAM: the test model is not trained enough"
    for o, t in zip(ours, theirs):
        if o.max() - o.min() <= 0.5:
            assert not o.any() and not t.any()
    diff = float(np.abs(ours - theirs).max())
    assert diff <= 0.01
    assert diff <= 1e-4
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("layer", ["features.17", "features.16.conv.0"])
def test_other_layers_match_reference(trained_models, layer):
    model, size = trained_models["mobilenet_v2"]
    x = _batch((size, size), 2)
    _, ours = gradcam(model, x, layer, [0, 1], size=(size, size))
    theirs = _reference(model, layer, x, [0, 1])
    assert np.abs(ours - theirs).max() <= 1e-4


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_linear_head_cam_equals_autograd(trained_models, arch):
    """Global-average-pool + linear head: ReLU(sum_k w_ck A_k) is Grad-CAM up to normalisation (no backward)."""
    model, size = trained_models[arch]
    layer = default_layer(model)
    w_b = linear_head(model, layer)
    assert w_b is not None
    x = _batch((size, size + 8), 4, seed=3)
    feats = []
    handle = find_layer(model, layer)[1].register_forward_hook(lambda m, i, o: feats.append(o.detach()))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    np.testing.assert_allclose(feats[0].mean(dim=(2, 3)).numpy() @ w_b[0].T + w_b[1], logits.numpy(), atol=1e-4)
    for targets in ([0, 0, 0, 0], [1, 0, 1, 0]):
        analytic = cam_from_features(feats[0].numpy(), w_b[0], targets)
        _, autograd = gradcam(model, x, layer, targets)
        for a, g in zip(analytic, autograd):
            assert np.abs(heatmap_at(a, (size, size + 8)) - heatmap_at(g, (size, size + 8))).max() <= 1e-5


@pytest.mark.parametrize("layer", ["features.17", "features.0"])
def test_linear_head_refuses_inexact_layers(trained_models, layer):
    assert linear_head(trained_models["mobilenet_v2"][0], layer) is None
    assert linear_head(trained_models["resnet18"][0], "layer3") is None


def test_one_forward_serves_prediction_and_cam(trained_models):
    model, size = trained_models["mobilenet_v2"]
    calls = []
    h = model.register_forward_pre_hook(lambda m, i: calls.append(1))
    try:
        with GradCAM(model) as cam:
            logits = cam.forward(_batch((size, size), 2))
            maps = cam.cams()
    finally:
        h.remove()
    assert len(calls) == 1
    assert maps.shape == (2, 3, 3) and logits.shape == (2, 2)


@pytest.mark.slow
def test_no_hook_left_after_100_calls_and_no_gradients(trained_models):
    model, size = trained_models["mobilenet_v2"]
    x = _batch((size, size), 1)
    before = hook_count(model)
    grad_mode = torch.is_grad_enabled()
    for _ in range(100):
        gradcam(model, x)
    assert hook_count(model) == before == 0
    assert torch.is_grad_enabled() == grad_mode
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("failure", ["bad_target", "layer_raises", "body_raises", "wrong_input"])
def test_no_hook_left_after_an_error(trained_models, failure, monkeypatch):
    model, size = trained_models["mobilenet_v2"]
    x = _batch((size, size), 2)
    with pytest.raises((ValueError, RuntimeError, KeyError)):
        with GradCAM(model, "features.18") as cam:
            assert hook_count(model) == 1  # the hook is there while the context is open
            if failure == "bad_target":
                cam.forward(x)
                cam.cams([0, 7])
            elif failure == "layer_raises":
                def boom(*a):
                    raise RuntimeError("layer failure")
                monkeypatch.setattr(model.classifier[1], "forward", boom)
                cam.forward(x)
            elif failure == "body_raises":
                raise KeyError("caller's own error")
            else:
                cam.forward(torch.zeros(2, 5, size, size))  # 5 channels: conv refuses
    monkeypatch.undo()
    assert hook_count(model) == 0
    assert torch.is_grad_enabled()
    # and the model still works
    assert gradcam(model, x)[1].shape == (2, 3, 3)


def test_inference_mode_and_no_grad_callers(trained_models):
    model, size = trained_models["mobilenet_v2"]
    x = _batch((size, size), 2)
    want = gradcam(model, x)[1]
    with torch.no_grad():
        got_ng = gradcam(model, x)[1]
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        got_im = gradcam(model, x)[1]
    np.testing.assert_allclose(got_ng, want, atol=1e-6)
    np.testing.assert_allclose(got_im, want, atol=1e-6)


def test_batch_equals_one_by_one(trained_models):
    model, size = trained_models["mobilenet_v2"]
    x = _batch((size, size), 5, seed=7)
    targets = [0, 1, 1, 0, 1]
    logits, maps = gradcam(model, x, targets=targets, size=(size, size))
    for i in range(5):
        li, mi = gradcam(model, x[i:i + 1], targets=targets[i:i + 1], size=(size, size))
        np.testing.assert_allclose(li[0], logits[i], atol=1e-4)
        assert np.abs(mi[0] - maps[i]).max() <= 1e-4


def test_threads_share_one_model(trained_models):
    """8 threads with their own GradCAM context on one model get the sequential results."""
    model, size = trained_models["mobilenet_v2"]
    xs = [_batch((size, size), 2, seed=s) for s in range(8)]
    want = [gradcam(model, x, targets=[s % 2, 1 - s % 2])[1] for s, x in enumerate(xs)]
    got, errors = [None] * 8, []
    barrier = threading.Barrier(8)

    def work(s):
        try:
            barrier.wait()
            for _ in range(3):
                got[s] = gradcam(model, xs[s], targets=[s % 2, 1 - s % 2])[1]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert hook_count(model) == 0


@pytest.mark.parametrize("size", [(96, 96), (37, 250), (301, 17), (1, 1)])
def test_heatmap_in_unit_range_with_requested_shape(size):
    cam = np.random.default_rng(0).random((7, 7)).astype(np.float32) * 5
    h = heatmap_at(cam, size)
    assert h.shape == size and h.dtype == np.float32
    assert h.min() >= 0.0 and h.max() <= 1.0
    if size != (1, 1):
        assert h.min() == 0.0 and h.max() == pytest.approx(1.0)


def test_flat_and_bad_cams():
    assert not heatmap_at(np.zeros((7, 7), np.float32), (20, 30)).any()
    assert not heatmap_at(np.full((7, 7), 3.0, np.float32), (20, 30)).any()
    with pytest.raises(ValueError, match="NaN"):
        heatmap_at(np.full((7, 7), np.nan, np.float32), (20, 30))
    with pytest.raises(ValueError, match="h x w"):
        heatmap_at(np.zeros((1, 7, 7), np.float32), (20, 30))


@pytest.mark.parametrize("opacity", [0.0, 0.3, 1.0])
def test_overlay(opacity):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    heat = rng.random((40, 60)).astype(np.float32)
    img0, heat0 = img.copy(), heat.copy()
    out = overlay(img, heat, opacity)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, img0) and np.array_equal(heat, heat0)  # inputs untouched
    want = (1 - opacity) * img.astype(np.float64) + opacity * colorize(heat).astype(np.float64)
    assert np.abs(out.astype(np.float64) - want).max() <= 1.0
    if opacity == 0.0:
        assert np.array_equal(out, img)


def test_overlay_colours_follow_the_map():
    heat = np.zeros((10, 20), np.float32)
    heat[:, 10:] = 1.0
    c = colorize(heat, "jet")
    assert c[0, 0, 2] > 100 and c[0, 0, 0] < 50  # jet: 0 is blue (RGB order)
    assert c[0, 19, 0] > 100 and c[0, 19, 2] < 50  # 1 is red


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "half", None])
def test_overlay_rejects_bad_opacity(bad):
    with pytest.raises(ValueError, match="opacity"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), bad)


def test_overlay_rejects_bad_colormap_and_shapes():
    with pytest.raises(ValueError, match="colour map"):
        colorize(np.zeros((4, 4), np.float32), "rainbowz")
    with pytest.raises(ValueError, match="does not match"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.float32))


def test_layer_lookup(trained_models):
    model = trained_models["mobilenet_v2"][0]
    assert find_layer(model, None)[0] == "features.18"
    assert default_layer(trained_models["resnet18"][0]) == "layer4"
    with pytest.raises(ValueError, match="no layer named 'features.99'"):
        find_layer(model, "features.99")
    with pytest.raises(ValueError, match="module name"):
        find_layer(model, 3)


def test_cams_needs_forward_and_context(trained_models):
    model, size = trained_models["mobilenet_v2"]
    cam = GradCAM(model)
    with pytest.raises(RuntimeError, match="with"):
        cam.forward(_batch((size, size), 1))
    with cam:
        with pytest.raises(RuntimeError, match="forward"):
            cam.cams()
    assert hook_count(model) == 0
