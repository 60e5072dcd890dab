"""The guard: image checks, novelty, storage in the checkpoint and the graph, and the UNUSABLE verdict of the handler."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from inspectkit import guard as G
from inspectkit.inference.checkpoint import load_checkpoint, save_checkpoint, stored_guard
from inspectkit.inference.fast import save_with_graph
from inspectkit.inference.handler import UNUSABLE, InferenceHandler
from tests.support import synthetic_casting, write_checkpoint

SIZES = [(96, 96), (96, 128), (140, 100)]


def castings(n: int, seed: int = 3) -> list[np.ndarray]:
    r = np.random.default_rng(seed)
    return [synthetic_casting(r, i % 2 == 0, SIZES[i % len(SIZES)]) for i in range(n)]


@pytest.fixture(scope="module")
def limits_and_template():
    train = castings(90)
    template = G.make_template([G.thumbnail(im) for im in train])
    r = np.random.default_rng(0)
    stats = np.stack([G.image_stats(im, template) for im in train]
                     + [G.image_stats(G.tolerated(im, r), template) for im in train])
    return G.fit_limits(stats), template


def gain(im, g):
    return np.clip(im.astype(np.float32) * g, 0, 255).astype(np.uint8)


def shifted(im, frac):
    h, w = im.shape[:2]
    m = np.float32([[1, 0, frac * w], [0, 1, frac * h]])
    return cv2.warpAffine(im, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(40, 40, 40))


@pytest.mark.parametrize("make, reason", [
    (lambda im: gain(im, 0.1), "too dark"),
    (lambda im: np.zeros_like(im), "too dark"),
    (lambda im: gain(im, 4.0), "overexposed"),
    (lambda im: np.full_like(im, 255), "overexposed"),
    (lambda im: cv2.GaussianBlur(im, (0, 0), 5), "out of focus"),
    (lambda im: shifted(im, 0.6), "part not fully in frame"),
])
@pytest.mark.parametrize("size", SIZES)
def test_each_reason_on_generated_photos(limits_and_template, make, reason, size):
    limits, template = limits_and_template
    im = synthetic_casting(np.random.default_rng(11), False, size)
    assert G.check_reason(G.image_stats(im, template), limits) is None
    assert G.check_reason(G.image_stats(make(im), template), limits) == reason


@pytest.mark.parametrize("change", [lambda im: gain(im, 0.75), lambda im: gain(im, 1.25),
                                    lambda im: np.ascontiguousarray(np.rot90(im)), lambda im: im[:, ::-1]])
def test_mild_changes_pass_the_image_checks(limits_and_template, change):
    limits, template = limits_and_template
    flagged = [G.check_reason(G.image_stats(change(im), template), limits) for im in castings(12, seed=8)]
    assert flagged.count(None) >= 10, flagged  # 12 generated photos against limits fitted on 90


def test_limits_come_from_the_photos_not_constants():
    dark = np.array([[0.2, 0.5, 0.05, 0.0, 0.0, 0.9]] * 5 + [[0.25, 0.55, 0.06, 0.0, 0.1, 0.95]] * 5)
    bright = dark + [0.4, 0.4, 0.4, 0, 0, 0]
    assert G.fit_limits(bright)["low"][0] > G.fit_limits(dark)["high"][0]
    with pytest.raises(ValueError, match="N x 6"):
        G.fit_limits(np.zeros((5, 3)))


def test_novelty_is_the_cosine_distance_to_the_nearest_bank_photo():
    r = np.random.default_rng(0)
    a = np.abs(r.normal(size=(50, 8))) + np.array([5, 0, 0, 0, 0, 0, 0, 0])
    ref = G.fit_novelty(a, np.arange(50) % 2, bank_size=20)
    assert ref["bank"].shape == (20, 8)
    np.testing.assert_allclose(np.linalg.norm(ref["bank"], axis=1), 1, atol=1e-5)
    inside = G.novelty_scores(a[:5] * 3.0, ref)  # the length of a feature vector does not matter
    outside = G.novelty_scores(np.eye(8)[1:3] * 10, ref)
    assert inside.max() < 0.2 < outside.min()
    assert G.novelty_threshold(np.array([0.1, 0.2, 0.3])) == pytest.approx(np.quantile([0.1, 0.2, 0.3], 0.999))


def test_coreset_covers_the_rare_photos():
    x = np.concatenate([np.tile([1.0, 0, 0], (100, 1)), [[0, 1.0, 0]], [[0, 0, 1.0]]])
    picked = set(G.coreset(x, 3).tolist())
    assert {100, 101} <= picked


@pytest.mark.parametrize("bad, match", [
    ({"format": 1}, "missing"),
    (lambda g: {**g, "stats": ["brightness"]}, "stats"),
    (lambda g: {**g, "template": np.zeros(5, np.float32)}, "template"),
    (lambda g: {**g, "novelty": {"bank": np.full((2, 3), np.nan, np.float32)}}, "bank"),
    (lambda g: {**g, "novelty_threshold": -1.0}, "novelty_threshold"),
])
def test_a_bad_stored_guard_is_refused_by_name(guarded_checkpoint, bad, match):
    g = G.to_numpy(load_checkpoint(guarded_checkpoint)["guard"])
    with pytest.raises(ValueError, match=match):
        G.check_stored(bad(g) if callable(bad) else bad)


def test_guard_is_stored_as_plain_tensors_and_loads_weights_only(guarded_checkpoint):
    raw = torch.load(guarded_checkpoint, weights_only=True)
    assert isinstance(raw["guard"]["novelty"]["bank"], torch.Tensor)
    assert raw["guard"]["novelty"]["bank"].dtype == torch.float32
    assert raw["guard"]["stats"] == list(G.STATS)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("make, reason", [
    (lambda r: np.full((90, 120, 3), 255, np.uint8), "overexposed"),
    (lambda r: np.zeros((100, 100, 3), np.uint8), "too dark"),
    (lambda r: gain(synthetic_casting(r, False), 0.15), "too dark"),
    (lambda r: cv2.GaussianBlur(synthetic_casting(r, False), (0, 0), 4), "out of focus"),
])
def test_handler_says_unusable_with_the_reason_and_still_scores(guarded_checkpoint, backend, make, reason):
    h = InferenceHandler(guarded_checkpoint, backend=backend)
    res = h.predict(make(np.random.default_rng(2)))
    assert res.verdict == UNUSABLE and res.unusable_reason == reason
    assert res.defect_probability is not None and res.heatmap is not None  # what the network saw is kept
    assert res.novelty is not None and set(res.image_stats) == set(G.STATS)
    d = res.to_dict()
    assert d["verdict"] == "UNUSABLE" and d["unusable_reason"] == reason


def test_generated_castings_are_judged(guarded_checkpoint):
    h = InferenceHandler(guarded_checkpoint)
    res = h.predict_batch(castings(12, seed=21), heatmap=False)
    assert sum(r.verdict in ("OK", "DEFECT") for r in res) >= 11


def test_onnx_and_torch_agree_on_verdicts_and_novelty(guarded_checkpoint):
    imgs = castings(6, seed=4) + [np.full((96, 96, 3), 255, np.uint8), gain(castings(1)[0], 0.1)]
    a = InferenceHandler(guarded_checkpoint, backend="onnx").predict_batch(imgs, heatmap=False)
    b = InferenceHandler(guarded_checkpoint, backend="torch").predict_batch(imgs, heatmap=True)
    assert [r.verdict for r in a] == [r.verdict for r in b]
    assert [r.unusable_reason for r in a] == [r.unusable_reason for r in b]
    np.testing.assert_allclose([r.novelty for r in a], [r.novelty for r in b], atol=1e-3)


def test_unusable_stays_unusable_at_any_threshold(guarded_checkpoint):
    h = InferenceHandler(guarded_checkpoint)
    res = h.predict(np.zeros((64, 64, 3), np.uint8))
    for t in (0.01, 0.5, 0.99):
        assert h.decide(res.probabilities, t, res.unusable_reason) == UNUSABLE
    assert h.decide(res.probabilities, 0.01) in ("OK", "DEFECT")


def test_a_checkpoint_without_a_guard_loads_and_says_the_guard_is_off(tiny_checkpoint):
    h = InferenceHandler(tiny_checkpoint)
    assert h.guard is None and "no guard" in h.guard_off_reason
    res = h.predict(np.full((64, 64, 3), 255, np.uint8))
    assert res.verdict in ("OK", "DEFECT") and res.unusable_reason is None and res.novelty is None


def test_a_guard_of_another_format_is_off_not_fatal(tmp_path, guarded_checkpoint):
    ckpt = load_checkpoint(guarded_checkpoint)
    ckpt["guard"] = {**ckpt["guard"], "format": 99}
    path = tmp_path / "m.pt"
    save_checkpoint(ckpt, path)  # a newer guard than this code reads: the model still serves, the guard is off
    h = InferenceHandler(path, backend="torch")
    assert h.guard is None and "format 99" in h.guard_off_reason
    assert h.predict(np.zeros((64, 64, 3), np.uint8)).verdict in ("OK", "DEFECT")


def test_guard_travels_in_the_committed_graph_bound_to_the_checkpoint(tmp_path, guarded_checkpoint):
    from inspectkit.inference import fast

    path = tmp_path / "model.pt"
    ckpt = load_checkpoint(guarded_checkpoint)
    save_with_graph(ckpt, path, graph=True)
    meta = fast.graph_metadata(fast.graph_path(path))
    assert meta["info"]["guard"]["novelty"]["bank"]["b64"]
    h = InferenceHandler(path, backend="onnx")
    assert h._fast.meta["source"] == "committed" and h.guard is not None
    np.testing.assert_allclose(h.guard.novelty_ref["bank"], G.to_numpy(ckpt["guard"])["novelty"]["bank"])


def test_stored_guard_roundtrip_keeps_every_value(guarded_checkpoint):
    g = G.to_numpy(load_checkpoint(guarded_checkpoint)["guard"])
    back = G.to_numpy(G.encode(stored_guard(g)))
    np.testing.assert_array_equal(back["template"], g["template"])
    np.testing.assert_array_equal(back["novelty"]["bank"], g["novelty"]["bank"])
    assert back["limits"] == g["limits"] and back["novelty_threshold"] == g["novelty_threshold"]


def test_write_checkpoint_fixture_has_no_guard(tmp_path):
    assert "guard" not in load_checkpoint(write_checkpoint(tmp_path / "m.pt"))
