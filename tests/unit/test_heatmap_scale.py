"""The served heat map is the defect evidence (exact Grad-CAM of logit[defect] - logit[ok], checked against
pytorch-grad-cam on both backends and the fast path) on a fixed scale read from the checkpoint (with the stated
fallback for a checkpoint without one); a good part stays cool and a caught defect lights up on the tiny trained_archs
model; display names; the validation score histogram; the calibrate command; the colour bar and score plot."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM as ReferenceGradCAM

import gradcam
from inspectkit import labels as L
from inspectkit.heatmap import scale as C
from inspectkit.heatmap.render import (
    cam_from_features,
    evidence_coefficients,
    evidence_from_features,
    heatmap_at,
    heatmap_on_scale,
    heatmap_peak,
    on_scale,
)
from inspectkit.inference.checkpoint import (
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    weights_digest,
)
from inspectkit.inference.handler import CLASS_NORMALISED, EVIDENCE, InferenceHandler
from inspectkit.model import build_model
from inspectkit.preprocess import default_spec, preprocess
from inspectkit.serve.results import HEATMAP_MODES, result_json
from inspectkit.ui.common import heatmap_view as uh
from tests.support import synthetic_casting, write_checkpoint
from tests.trained_tiny import ARCHS

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def _synthetic(n: int, size, seed: int):
    """n synthetic castings (even: defect, odd: OK) and their labels (0 = def_front, 1 = ok_front)."""
    rng = np.random.default_rng(seed)
    y = np.array([i % 2 for i in range(n)])
    return [synthetic_casting(rng, defect=bool(v == 0), size=size) for v in y], y


@pytest.fixture(scope="module")
def calibrated(trained_archs, tmp_path_factory):
    """The tiny MobileNetV2 with a scale, a histogram and display names calibrated on 80 synthetic photos."""
    path = trained_archs["mobilenet_v2"]
    ckpt = load_checkpoint(path)
    imgs, y = _synthetic(80, (96, 96), seed=11)
    cal = C.calibrate(model_from_checkpoint(ckpt), "mobilenet_v2", ckpt["class_names"], 0, ckpt["threshold"],
                      ckpt["preprocessing"], imgs, y)
    assert cal["heatmap_scale"] is not None
    ckpt["heatmap_scale"] = cal["heatmap_scale"]
    ckpt["metrics"] = {**ckpt["metrics"], "validation_score_histogram": cal["histogram"]}
    ckpt["display_names"] = {"def_front": "Porosity", "ok_front": "Good part"}
    out = tmp_path_factory.mktemp("calibrated") / "calibrated.pt"
    save_checkpoint(ckpt, out)
    return out


class LogitDifference:
    """pytorch-grad-cam target: logit[defect] - logit[ok] of one image's output row."""

    def __init__(self, defect: int, ok: int):
        self.defect, self.ok = defect, ok

    def __call__(self, output):
        return output[..., self.defect] - output[..., self.ok]


def _reference(model, layer_name, x, defect=0, ok=1):
    """pytorch-grad-cam on the logit difference: (its normalised maps at the input size, its raw maps = the ReLU of
    its channel-weighted sum before any normalisation)."""
    ref = copy.deepcopy(model)  # pytorch-grad-cam leaves parameter gradients behind; keep ours clean
    layer = dict(ref.named_modules())[layer_name]
    targets = [LogitDifference(defect, ok)] * len(x)
    with ReferenceGradCAM(ref, [layer]) as cam:
        normalised = cam(x, targets=targets)
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(cam.get_cam_image(x, layer, targets, acts, grads), 0)
    return normalised, raw


def _batch(ckpt, imgs):
    return torch.from_numpy(np.stack([preprocess(im, ckpt["preprocessing"]) for im in imgs]))


def _features(model, layer_name, x):
    caught = []
    handle = dict(model.named_modules())[layer_name].register_forward_hook(lambda m, i, o: caught.append(o))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return logits.numpy(), caught[0].numpy()


# ------------------------------------------------------------------------------------ the exact identity

@pytest.mark.parametrize("arch", list(ARCHS))
def test_defect_evidence_is_exact_gradcam_of_the_logit_difference(trained_archs, arch):
    ckpt = load_checkpoint(trained_archs[arch])
    model = model_from_checkpoint(ckpt)
    s = ckpt["preprocessing"]["size"]
    imgs, _ = _synthetic(6, (s, s), seed=3)
    x = _batch(ckpt, imgs)
    layer = gradcam.default_layer(model)
    w, _ = gradcam.linear_head(model, layer)
    logits, feats = _features(model, layer, x)
    closed = evidence_from_features(feats, w, 0)
    with gradcam.GradCAM(model, layer) as cam:
        cam.forward(x)
        autograd = cam.evidence(0)
    ref_norm, ref_raw = _reference(model, layer, x)
    hw = feats.shape[2] * feats.shape[3]
    assert closed.max() > 0, "degenerate maps: the comparison would prove nothing"
    # absolute, not just up to normalisation: the closed form is h*w x Grad-CAM of the difference
    np.testing.assert_allclose(closed, ref_raw * hw, rtol=1e-4, atol=1e-4 * float(closed.max()))
    np.testing.assert_allclose(autograd, closed, rtol=1e-4, atol=1e-4 * float(closed.max()))
    # and pytorch-grad-cam's normalised maps are ours normalised the same way
    for ours, theirs in zip(closed, ref_norm):
        if ours.max() - ours.min() > 0:
            assert np.abs(heatmap_at(ours, (s, s)) - theirs).max() <= 1e-4
    # before the ReLU the map's mean plus the bias difference is the logit difference itself (logit units)
    v = evidence_coefficients(2, 0)
    pre = np.einsum("k,bkhw->bhw", v @ w, feats)
    b = gradcam.linear_head(model, layer)[1]
    np.testing.assert_allclose(pre.mean(axis=(1, 2)) + v @ b, logits @ v, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("size", [(96, 96), (70, 150)])
def test_handler_serves_the_reference_difference_map_on_the_stored_scale(calibrated, backend, size, tmp_path):
    h = InferenceHandler(calibrated, backend=backend, cache_dir=tmp_path, threads=1)
    assert h.backend == backend and h.heatmap_mode == EVIDENCE
    ckpt = load_checkpoint(calibrated)
    scale = ckpt["heatmap_scale"]
    assert h.heatmap_scale == scale  # read from the checkpoint, as stored
    imgs, _ = _synthetic(4, size, seed=size[1])
    results = h.predict_batch(imgs)
    model = model_from_checkpoint(ckpt)
    _, ref_raw = _reference(model, "features.18", _batch(ckpt, imgs))
    hw = ref_raw.shape[1] * ref_raw.shape[2]
    tol = 1e-4 if backend == "torch" else 1e-3  # the ONNX graph folds BatchNorm: features within ~1e-3
    for r, raw in zip(results, ref_raw):
        want = heatmap_on_scale(raw * hw, size, scale["threshold"], scale["value"])
        assert r.heatmap.shape == size and np.abs(r.heatmap - want).max() <= tol
        assert r.heatmap_mode == EVIDENCE and r.target == "def_front"
        assert r.heatmap_scale == {"threshold": scale["threshold"], "value": scale["value"]}


def test_fast_path_and_torch_agree_and_the_class_cam_is_unchanged(calibrated, tmp_path):
    fast_h = InferenceHandler(calibrated, backend="onnx", cache_dir=tmp_path)
    torch_h = InferenceHandler(calibrated, backend="torch", threads=1)
    imgs, _ = _synthetic(6, (96, 96), seed=5)
    for mode in (EVIDENCE, CLASS_NORMALISED):
        a, b = fast_h.predict_batch(imgs, heatmap_mode=mode), torch_h.predict_batch(imgs, heatmap_mode=mode)
        assert all(np.abs(x.heatmap - y.heatmap).max() <= 1e-3 for x, y in zip(a, b))
    # the per-image normalised class CAM is still the old map: min-max of the predicted class's CAM
    fm = fast_h._fast
    x = np.stack([preprocess(im, load_checkpoint(calibrated)["preprocessing"]) for im in imgs])
    logits, feats = fm.run(x)
    got = fast_h.predict_batch(imgs, heatmap_mode=CLASS_NORMALISED)
    for r, f, lab in zip(got, feats, [fast_h.class_names.index(r.label) for r in got]):
        want = heatmap_at(cam_from_features(f[None], fm.head_weight, [lab])[0], (96, 96))
        assert np.abs(r.heatmap - want).max() <= 1e-5 and r.heatmap_scale is None and r.target == r.label


# ------------------------------------------------------------------------------- scale and fallback

def test_old_checkpoint_without_a_scale_gets_the_per_image_fallback(trained_archs, tmp_path):
    path = trained_archs["mobilenet_v2"]
    assert "heatmap_scale" not in load_checkpoint(path)
    for backend in ("torch", "onnx"):
        h = InferenceHandler(path, backend=backend, cache_dir=tmp_path, threads=1)
        assert h.heatmap_mode == EVIDENCE and h.heatmap_scale is None
        imgs, _ = _synthetic(4, (96, 96), seed=2)
        ckpt = load_checkpoint(path)
        _, ref_raw = _reference(model_from_checkpoint(ckpt), "features.18", _batch(ckpt, imgs))
        for r, raw in zip(h.predict_batch(imgs), ref_raw):
            assert r.heatmap_scale is None and r.heatmap_mode == EVIDENCE
            assert np.abs(r.heatmap - heatmap_peak(raw, (96, 96))).max() <= 1e-3
            # its own maximum is 1 (the bilinear upsampling need not land on the strongest cell's centre)
            assert r.heatmap.max() >= 0.95 or not raw.any()
        j = result_json(h.predict(imgs[0]), h)
        assert j["heatmap_mode"] == EVIDENCE and j["heatmap_scale"] is None
        assert "UNCALIBRATED" in uh.legend_html(h) and "calibrate_heatmap.py" in uh.legend_html(h)
        assert "uncalibrated" in uh.heatmap_row(h)


def test_the_scale_changes_the_map_and_a_damaged_scale_is_refused(calibrated, tmp_path):
    ckpt = load_checkpoint(calibrated)
    s = ckpt["heatmap_scale"]
    doubled = {**s, "threshold": 2 * s["threshold"], "value": 2 * s["value"]}
    other = tmp_path / "doubled.pt"
    save_checkpoint({**ckpt, "heatmap_scale": doubled}, other)
    img = _synthetic(1, (96, 96), seed=0)[0][0]
    a = InferenceHandler(calibrated, backend="torch", threads=1).predict(img).heatmap
    b = InferenceHandler(other, backend="torch", threads=1).predict(img).heatmap
    assert not np.allclose(a, b) and b.max() <= a.max() + 1e-6  # twice the scale: cooler everywhere
    for bad, why in (({**s, "threshold": s["value"] + 1}, "below its value"), ({**s, "value": -1.0}, "> 0"),
                     ({**s, "value": float("nan")}, "finite"), ("x", "must be a dict")):
        with pytest.raises(ValueError, match=why):
            save_checkpoint({**ckpt, "heatmap_scale": bad}, tmp_path / "bad.pt")
        assert C.scale_for_checkpoint({"defect_index": 0, "heatmap_scale": bad}) is None  # never stops inspection
    # made at another layer: its units do not apply
    assert C.scale_for_checkpoint({"defect_index": 0, "heatmap_scale": s}, "layer4") is None


def test_on_scale_anchors():
    e = np.array([[0.0, 5.0, 10.0], [20.0, 40.0, 80.0]], np.float32)
    np.testing.assert_allclose(on_scale(e, 10.0, 40.0), [[0, 0.25, 0.5], [0.5 + 0.5 / 3, 1.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="0 < threshold < value"):
        on_scale(e, 40.0, 10.0)
    up = heatmap_on_scale(e, (20, 30), 10.0, 40.0)
    assert up.shape == (20, 30) and up.min() >= 0 and up.max() <= 1
    assert not heatmap_peak(np.zeros((3, 3)), (5, 5)).any()  # no evidence is never coloured


def test_the_rule_on_constructed_peaks():
    maps = np.zeros((8, 2, 2))
    caught = [10.0, 20.0, 30.0, 40.0]
    for i, v in enumerate(caught):
        maps[i, 0, 0] = v
    maps[4:, 1, 1] = [1.0, 2.0, 3.0, 4.0]
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    p = np.array([0.9] * 4 + [0.1] * 4)
    s = C.heatmap_scale(maps, y, p, 0.5, "features.18")
    assert s["value"] == pytest.approx(25.0)  # the median caught defect
    assert s["threshold"] == pytest.approx(math.sqrt(np.percentile([1, 2, 3, 4], 99) * np.percentile(caught, 1)))
    assert s["validation_defects_reaching_half"] == 1.0 and s["validation_ok_reaching_half"] == 0.0
    C.check_scale(s)
    # good parts without any evidence: half the weakest caught defects
    assert C.heatmap_scale(np.where(y[:, None, None], maps, 0), y, p, 0.5)["threshold"] == pytest.approx(
        np.percentile(caught, 1) / 2)
    # a missed defect (p < threshold) does not count; no caught defect at all: no scale
    assert C.heatmap_scale(maps, y, np.where(y, 0.1, 0.1), 0.5) is None
    # overlapping peaks: the boundary is kept below the value
    over = C.heatmap_scale(maps[::-1].copy(), y, p, 0.5)
    assert 0 < over["threshold"] < over["value"]


# ---------------------------------------------------------------------------- OK cool, defect lit

def test_good_parts_stay_cool_and_caught_defects_light_up(calibrated, tmp_path):
    """Fresh synthetic photos (not the calibration ones): the served map against the per-image normalised one."""
    h = InferenceHandler(calibrated, backend="onnx", cache_dir=tmp_path)
    imgs, y = _synthetic(80, (96, 96), seed=12)
    served = h.predict_batch(imgs)
    old = h.predict_batch(imgs, heatmap_mode=CLASS_NORMALISED)
    ok = [i for i, v in enumerate(y) if v == 1 and served[i].verdict == "OK"]
    caught = [i for i, v in enumerate(y) if v == 0 and served[i].verdict == "DEFECT"]
    assert len(ok) >= 10 and len(caught) >= 10, "the tiny model must call enough photos right to measure anything"
    hot_ok = np.mean([(served[i].heatmap > 0.5).mean() for i in ok])
    hot_ok_before = np.mean([(old[i].heatmap > 0.5).mean() for i in ok])
    lit = np.mean([served[i].heatmap.max() >= 0.5 for i in caught])
    assert hot_ok <= 0.02, f"good parts: {hot_ok:.1%} of pixels above 0.5"
    assert hot_ok_before >= 0.2  # what the per-image normalisation showed on the same good parts
    assert lit >= 0.9, f"only {lit:.0%} of the caught defects reach 0.5"


# ------------------------------------------------------------------------------------------- modes

def test_modes_targets_and_multiclass_default(calibrated, tmp_path):
    h = InferenceHandler(calibrated, backend="torch", threads=1)
    img = _synthetic(1, (96, 96), seed=0)[0][0]
    assert h.predict(img, target="ok_front").heatmap_mode == CLASS_NORMALISED  # a target asks for that class's CAM
    with pytest.raises(ValueError, match="takes no target"):
        h.predict(img, target="ok_front", heatmap_mode=EVIDENCE)
    with pytest.raises(ValueError, match="must be one of"):
        h.predict(img, heatmap_mode="fancy")
    assert InferenceHandler(calibrated, backend="torch", heatmap_mode=CLASS_NORMALISED).heatmap_mode == CLASS_NORMALISED
    multi = write_checkpoint(tmp_path / "multi.pt", class_names=("crack", "pit", "scratch"), defect_index=None,
                             threshold=None)
    hm = InferenceHandler(multi, backend="torch", threads=1)
    assert hm.heatmap_mode == CLASS_NORMALISED and hm.heatmap_scale is None
    assert hm.predict(img).heatmap_mode == CLASS_NORMALISED
    with pytest.raises(ValueError, match="needs a model with a defect class"):
        hm.predict(img, heatmap_mode=EVIDENCE)
    assert "no defect class" in uh.score_distribution_html(hm)
    assert [v for _, v in uh.MODE_CHOICES] == list(HEATMAP_MODES)


# ------------------------------------------------------------------------------------- display names

def test_display_names_defaults_parsing_and_checks(tmp_path):
    assert L.default_names(["def_front", "ok_front"]) == {"def_front": "Defect", "ok_front": "OK"}
    assert L.default_names(["rolled-in_scale", "good"]) == {"rolled-in_scale": "Rolled In Scale", "good": "OK"}
    assert L.default_names(["def_front", "def_back"]) == {"def_front": "Def Front", "def_back": "Def Back"}
    assert L.parse_display_names("def_front=Defect, ok_front = Good part") == {"def_front": "Defect",
                                                                               "ok_front": "Good part"}
    for bad, why in (("def_front", "class=Label"), ("=x", "class=Label"), ("a=x,a=y", "twice")):
        with pytest.raises(ValueError, match=why):
            L.parse_display_names(bad)
    with pytest.raises(ValueError, match=r"not classes of this model; its classes are \['def_front', 'ok_front'\]"):
        L.check_display_names({"deffront": "Defect"}, ["def_front", "ok_front"])
    with pytest.raises(ValueError, match="more than one class"):
        L.check_display_names({"def_front": "OK"}, ["def_front", "ok_front"])
    with pytest.raises(ValueError, match="printable"):
        L.check_label("x" * 41)
    assert L.shown("def_front", {"def_front": "Defect"}) == "Defect (def_front)"
    model = build_model("mobilenet_v2", 2, weights=None)
    with pytest.raises(ValueError, match="display_names"):
        make_checkpoint(model, "mobilenet_v2", ["def_front", "ok_front"], 0, default_spec(64), 0.5,
                        display_names={"nope": "x"})
    from inspectkit.cli.train import parse_args

    cfg, _ = parse_args(["--display-names", "def_front=Porosity,ok_front=Good"])
    assert cfg.display_names == {"def_front": "Porosity", "ok_front": "Good"}
    with pytest.raises(SystemExit):
        parse_args(["--display-names", "def_front"])


def test_display_names_reach_the_handler_and_the_api(calibrated, tiny_checkpoint):
    h = InferenceHandler(calibrated, backend="torch", threads=1)
    assert h.display_names == {"def_front": "Porosity", "ok_front": "Good part"}
    r = h.predict(_synthetic(1, (96, 96), seed=0)[0][0])
    assert r.display_label == h.display_names[r.label] and r.to_dict()["display_label"] == r.display_label
    for t in (1e-9, 1 - 1e-9):  # a re-decided verdict carries its class's label
        j = result_json(r, h, threshold=t)
        assert j["display_label"] == h.display_names[j["label"]] and j["display_names"] == h.display_names
    assert result_json(r, h, threshold=1e-9)["display_label"] == "Porosity"
    old = InferenceHandler(tiny_checkpoint, backend="torch", threads=1)  # no names stored: derived from the folders
    assert old.display_names == {"def_front": "Defect", "ok_front": "OK"}


# ------------------------------------------------------------------------------------------ histogram

def test_score_histogram_and_the_plot(calibrated):
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.999, 0.9, 1.0, 0.01, 0.0])
    hist = C.score_histogram(y, p, ["def_front", "ok_front"])
    assert sum(hist["counts"]["def_front"]) == 3 and sum(hist["counts"]["ok_front"]) == 2
    assert hist["counts"]["def_front"][-1] == 1 and hist["counts"]["ok_front"][0] == 1  # 1.0 and 0.0: end bins
    json.dumps(hist)
    C.check_histogram(hist)
    with pytest.raises(ValueError, match="counts of 'ok_front'"):
        C.check_histogram({**hist, "counts": {"ok_front": [1, 2]}})
    h = InferenceHandler(calibrated, backend="torch", threads=1)
    svg = uh.score_distribution_html(h)
    assert "<svg" in svg and "class='threshold'" in svg and "class='review-band'" in svg
    assert "data-class='def_front'" in svg and "data-class='ok_front'" in svg
    assert "Porosity" in svg and "Good part" in svg and f"threshold {h.threshold:.4f}" in svg


def test_legend_says_what_the_colours_mean(calibrated):
    h = InferenceHandler(calibrated, backend="torch", threads=1)
    cal = uh.legend_html(h)
    assert "fixed scale" in cal and "no defect evidence" in cal and "typical defect" in cal
    assert "linear-gradient" in cal and "rgb(" in cal and "data-value='0.5'" in cal
    assert f"{h.heatmap_scale['value']:.1f}" in cal
    norm = uh.legend_html(h, CLASS_NORMALISED)
    assert "per-image normalised class CAM" in norm and "cannot be compared" in norm
    assert "calibrated on validation" in uh.heatmap_row(h)


# ------------------------------------------------------------------------- training and the command

def test_training_stores_scale_histogram_and_names_and_the_command_reproduces_them(casting_tree, tmp_path):
    import calibrate_heatmap
    from inspectkit.engine.training import TrainConfig, train

    out = tmp_path / "m.pt"
    cfg = TrainConfig(data=str(casting_tree), weights="none", size=64, views=2, stage1_epochs=2, stage2_epochs=1,
                      batch_size=16, patience=10, seed=3, out=str(out), last_blocks=3,
                      display_names={"ok_front": "Good"})
    train(cfg)
    ckpt = load_checkpoint(out)
    assert ckpt["display_names"] == {"def_front": "Defect", "ok_front": "Good"}
    hist = ckpt["metrics"]["validation_score_histogram"]
    assert sum(map(sum, hist["counts"].values())) == ckpt["metrics"]["validation"]["n"]
    scale = ckpt["heatmap_scale"]
    assert scale["source"] == "validation" and 0 < scale["threshold"] < scale["value"]
    assert scale["validation_defects_called"] >= 1
    # an "old" checkpoint: the same file without the three; the command gives them back from the same validation
    old = {k: v for k, v in ckpt.items() if k not in ("heatmap_scale", "display_names")}
    old["metrics"] = {k: v for k, v in ckpt["metrics"].items() if k != "validation_score_histogram"}
    save_checkpoint(old, tmp_path / "old.pt")
    assert calibrate_heatmap.main(["--checkpoint", str(tmp_path / "old.pt"), "--data", str(casting_tree),
                                   "--out", str(tmp_path / "new.pt"), "--display-names", "ok_front=Good"]) == 0
    new = load_checkpoint(tmp_path / "new.pt")
    assert new["heatmap_scale"]["value"] == pytest.approx(scale["value"], rel=1e-5)
    assert new["heatmap_scale"]["threshold"] == pytest.approx(scale["threshold"], rel=1e-5)
    assert new["metrics"]["validation_score_histogram"]["counts"] == hist["counts"]
    assert new["display_names"] == ckpt["display_names"]
    assert weights_digest(new["state_dict"]) == weights_digest(ckpt["state_dict"])
    assert new["threshold"] == ckpt["threshold"]
    assert "heatmap_scale" not in load_checkpoint(tmp_path / "old.pt")  # --out leaves the input alone


def test_calibrate_command_names_bad_input(tmp_path, capsys, casting_tree):
    import calibrate_heatmap

    ckpt = write_checkpoint(tmp_path / "random.pt", size=64)  # records no validation split
    assert calibrate_heatmap.main(["--checkpoint", str(ckpt), "--data", str(casting_tree)]) == 2
    assert "validation split" in capsys.readouterr().err
    assert calibrate_heatmap.main(["--checkpoint", str(ckpt), "--data", str(casting_tree),
                                   "--display-names", "nope"]) == 2
    assert "class=Label" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ localisation

def test_localisation_measures_the_served_map_on_a_binary_set(tmp_path):
    """MVTec-style binary set: the localisation command measures the defect evidence (the served map) by default,
    the class CAM on request; on a multi-class set 'served' stays the class CAM."""
    import train as train_cli
    from inspectkit.engine import localization as Z
    from tests.layout_trees import mvtec_tree

    root = mvtec_tree(tmp_path / "grid", size=(40, 56), n_good=8, n_test_good=4, defects={"cut": 6, "hole": 6})
    out = tmp_path / "m.pt"
    assert train_cli.main(["--data", str(root), "--out", str(out), "--weights", "none", "--size", "64", "--views",
                           "2", "--stage1-epochs", "2", "--stage2-epochs", "1", "--last-blocks", "1",
                           "--test-fraction", "0.25", "--val-fraction", "0.25", "--batch-size", "16", "--no-eval"]) == 0
    served = Z.localize(out, root, cascade_steps=[0, 100], tolerance=2)
    assert served["settings"]["map"] == "defect-evidence" and "defect evidence" in Z.markdown(served)
    cls = Z.localize(out, root, cascade_steps=[100], tolerance=2, heatmap="class")
    assert cls["settings"]["map"] == "class"
    assert served["data"]["with_region"] == cls["data"]["with_region"] > 0
    assert set(served["sanity_check"]["steps"]) == {"head", "all"} and "passed" in served["sanity_check"]
    # the maps measured are the handler's (up to the positive factor of the fixed scale)
    ckpt = load_checkpoint(out)
    model = model_from_checkpoint(ckpt)
    from inspectkit.imageio import load_rgb

    f = next(p for p in ckpt["data"]["split"]["test_files"] if "/good/" not in p)
    img = load_rgb(root / f)
    _, (want,) = Z.heatmaps(model, "features.18", [img], ckpt["preprocessing"], evidence=0)
    got = InferenceHandler(out, backend="torch", threads=1).predict(img)
    assert got.heatmap_mode == EVIDENCE
    if got.heatmap_scale is None:  # no scale (no caught validation defect): the same per-image map
        assert np.abs(got.heatmap - want).max() <= 1e-4
    elif want.max() > 0:  # on the fixed scale: a monotone function of the same map
        assert Z.spearman(got.heatmap, want) > 0.9
    with pytest.raises(ValueError, match="choose 'served', 'class' or 'evidence'"):
        Z.localize(out, root, heatmap="best")
