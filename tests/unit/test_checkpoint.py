"""Checkpoint format: round trip, clear refusals (pickled code, tampering, missing keys), weight options."""

from __future__ import annotations

import os
import urllib.error

import pytest
import torch

from inspectkit.inference import checkpoint as C
from inspectkit.model import build_model, local_weights, official_weights
from inspectkit.preprocess import default_spec
from tests.support import LOCAL_WEIGHTS, needs_weights, write_checkpoint


@pytest.mark.parametrize("names, defect, threshold, size", [
    (["def_front", "ok_front"], 0, 0.37, 96),
    (["good", "pit", "scratch"], None, None, 80),
])
@pytest.mark.slow
def test_round_trip_keeps_classes_preprocessing_threshold(tmp_path, names, defect, threshold, size):
    p = write_checkpoint(tmp_path / "m.pt", class_names=names, defect_index=defect, threshold=threshold, size=size)
    ckpt = C.load_checkpoint(p)
    assert ckpt["class_names"] == names and ckpt["defect_index"] == defect and ckpt["threshold"] == threshold
    assert ckpt["preprocessing"] == default_spec(size)
    model = C.model_from_checkpoint(ckpt)
    torch.manual_seed(0)
    original = build_model("mobilenet_v2", len(names), weights=None)
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), model.state_dict().values()))


def test_review_band_round_trips_weights_only_and_is_optional(tmp_path):
    """A band given to make_checkpoint is stored as plain numbers and strings (weights-only loading accepts it);
    a checkpoint without one has no key, and the fallback around its threshold applies."""
    from inspectkit.review import band_for_checkpoint, fallback_band, review_band

    band = review_band([True, True, False], [0.95, 0.03, 0.2], 0.37)  # one missed defect widens it below
    torch.manual_seed(0)
    model = build_model("mobilenet_v2", 2, weights=None)
    ckpt = C.make_checkpoint(model, "mobilenet_v2", ["def_front", "ok_front"], 0, default_spec(64), 0.37,
                             review_band=band)
    C.save_checkpoint(ckpt, tmp_path / "b.pt")
    loaded = C.load_checkpoint(tmp_path / "b.pt")  # weights_only=True inside
    assert loaded["review_band"] == band and band_for_checkpoint(loaded) == band
    assert loaded["review_band"]["low"] == 0.03  # the missed defect's own score
    old = C.load_checkpoint(write_checkpoint(tmp_path / "old.pt", threshold=0.37))
    assert "review_band" not in old and band_for_checkpoint(old) == fallback_band(0.37)


def test_weights_digest_names_the_weights_not_the_file(tmp_path):
    """Same weights in two files that differ elsewhere: same digest; any change to a value, a name or a dtype:
    another digest. Integer and 0-d buffers (num_batches_tracked) count too."""
    a = C.load_checkpoint(write_checkpoint(tmp_path / "a.pt", threshold=0.3))
    b = C.load_checkpoint(write_checkpoint(tmp_path / "b.pt", threshold=0.7))
    assert C.sha256_file(tmp_path / "a.pt") != C.sha256_file(tmp_path / "b.pt")
    sd = a["state_dict"]
    digest = C.weights_digest(sd)
    assert digest == C.weights_digest(b["state_dict"]) == C.weights_digest(dict(reversed(list(sd.items()))))
    counter = next(k for k, v in sd.items() if v.dim() == 0)
    changed = [
        {**sd, "classifier.1.bias": sd["classifier.1.bias"] + 1e-3},
        {**sd, counter: sd[counter] + 1},
        {**sd, "classifier.1.bias": sd["classifier.1.bias"].double()},
        {("x" + k if k == "classifier.1.bias" else k): v for k, v in sd.items()},
    ]
    assert len({digest, *(C.weights_digest(c) for c in changed)}) == 1 + len(changed)


def test_save_is_atomic_and_records_digest(tmp_path):
    p = write_checkpoint(tmp_path / "m.pt")
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []
    assert C.digest_path(p).read_text().split()[0] == C.sha256_file(p)


def test_pickled_code_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format_version": 1, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="Python objects or code"):
        C.load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_tampered_file_is_refused(tmp_path):
    p = write_checkpoint(tmp_path / "m.pt")
    data = bytearray(p.read_bytes())
    data[-100] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 .* was recorded"):
        C.load_checkpoint(p)


def test_expected_digest_is_checked(tmp_path):
    p = write_checkpoint(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        C.load_checkpoint(p, expected_sha256="0" * 64)
    assert C.load_checkpoint(p, expected_sha256=C.sha256_file(p))["arch"] == "mobilenet_v2"


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.pop("threshold"), r"missing \['threshold'\]"),
    (lambda c: c.update(format_version=99), "format_version 99"),
    (lambda c: c.update(arch="vgg16"), "arch 'vgg16'"),
    (lambda c: c.update(class_names=["only"]), "at least two distinct"),
    (lambda c: c.update(threshold=1.5), "threshold 1.5"),
    (lambda c: c.update(defect_index=7), "defect_index 7"),
    (lambda c: c["preprocessing"].update(size=3), "size 3"),
    (lambda c: c.update(state_dict={}), "state_dict"),
    (lambda c: c.update(review_band={"threshold": 0.5, "low": 0.7, "high": 0.9}), "must contain its threshold"),
    (lambda c: c.update(review_band={"threshold": 0.5, "low": 0.0, "high": 0.9}), r"low 0.0 must be .* in \(0, 1\)"),
    (lambda c: c.update(review_band=[0.1, 0.9]), "review_band must be a dict"),
])
@pytest.mark.slow
def test_malformed_checkpoints_name_the_problem(tmp_path, mutate, message):
    p = write_checkpoint(tmp_path / "m.pt")
    ckpt = torch.load(p, weights_only=True)
    mutate(ckpt)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=message):
        C.load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("content", [b"", b"hello", b"PK\x03\x04garbage"])
def test_garbage_files_are_refused(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(ValueError, match="not a readable torch file"):
        C.load_checkpoint(tmp_path / "x.pt")


def test_state_dict_of_wrong_shape_is_named(tmp_path):
    p = write_checkpoint(tmp_path / "m.pt")
    ckpt = C.load_checkpoint(p)
    ckpt["class_names"] = ["a", "b", "c"]
    with pytest.raises(ValueError, match="does not fit mobilenet_v2 with 3 classes"):
        C.model_from_checkpoint(ckpt)


def test_imagenet_offline_names_the_local_file_option(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="local state_dict file.*mobilenet_v2_imagenet1k.pth"):
        official_weights("mobilenet_v2")


def test_local_weights_file_round_trip_and_errors(tmp_path):
    torch.manual_seed(1)
    src = build_model("mobilenet_v2", 2, weights=None)
    torch.save({k: v for k, v in src.state_dict().items() if not k.startswith("classifier")}, tmp_path / "w.pth")
    m = build_model("mobilenet_v2", 3, weights=tmp_path / "w.pth")
    assert torch.equal(m.features[0][0].weight, src.features[0][0].weight)
    with pytest.raises(ValueError, match="weights file not found"):
        local_weights(tmp_path / "missing.pth")
    torch.save({"features.0.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="do not fit torchvision's mobilenet_v2"):
        build_model("mobilenet_v2", 2, weights=tmp_path / "bad.pth")


@needs_weights
def test_shared_imagenet_weights_load():
    m = build_model("mobilenet_v2", 2, weights=LOCAL_WEIGHTS)
    ref = torch.load(LOCAL_WEIGHTS, weights_only=True)
    assert torch.equal(m.features[5].conv[0][0].weight, ref["features.5.conv.0.0.weight"])
