"""End to end beyond the casting set: train.py on generated NEU-DET and MVTec trees (MobileNetV2 and ResNet-18,
weights none), the multi-class checkpoint, its evaluation, the localisation command and the handler serving it.
Also ResNet-18's weight options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train as train_cli
from inspectkit.engine import evaluation as E
from inspectkit.engine import localization as Z
from inspectkit.imageio import load_rgb
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint
from inspectkit.model import build_model, cam_layer_name
from tests.layout_trees import NEU_CLASSES, mvtec_tree, neu_det_tree

pytestmark = pytest.mark.slow

ARGS = ["--weights", "none", "--size", "64", "--views", "2", "--stage1-epochs", "3", "--stage2-epochs", "2",
        "--last-blocks", "1", "--test-fraction", "0.25", "--val-fraction", "0.25", "--batch-size", "16",
        "--no-eval"]


@pytest.fixture(scope="module")
def neu_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("neu") / "neu-det"
    neu_det_tree(root, n=7, n_val=1, size=(48, 48))
    return root


@pytest.fixture(scope="module", params=["mobilenet_v2", "resnet18"])
def neu_model(request, neu_tree, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param) / "model.pt"
    assert train_cli.main(["--data", str(neu_tree), "--arch", request.param, "--out", str(out), *ARGS]) == 0
    return request.param, out


def _initial(arch: str, n: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)  # train() seeds torch like this just before it builds the network
    return build_model(arch, n, weights=None).state_dict()


def test_multiclass_checkpoint_and_its_test_split(neu_model, neu_tree):
    arch, path = neu_model
    ckpt = load_checkpoint(path)
    assert ckpt["arch"] == arch and ckpt["class_names"] == sorted(NEU_CLASSES)
    assert ckpt["defect_index"] is None and ckpt["threshold"] is None  # multi-class: argmax, no threshold
    files = ckpt["data"]["split"]["test_files"]
    assert len(files) == 6  # 25 % of 8 per class, 3 classes
    assert {f.split("/")[-1].rsplit("_", 1)[0] for f in files} == set(NEU_CLASSES)  # stratified
    train_pool, test = E.test_split(ckpt, neu_tree)
    assert len(test) == 6 and len(train_pool) == 18
    res = E.evaluate(ckpt, neu_tree, robustness=False)
    assert res["test"]["all"]["n"] == 6 and len(res["test"]["all"]["per_class"]) == 3


def test_stage_two_trained_only_the_last_stage(neu_model):
    arch, path = neu_model
    ckpt = load_checkpoint(path)
    state, before = ckpt["state_dict"], _initial(arch, 3)
    changed = {k for k, v in state.items() if v.is_floating_point() and not torch.equal(v, before[k])}
    last, first = ("layer4.", "layer1.") if arch == "resnet18" else ("features.18.", "features.1.")
    head = "fc." if arch == "resnet18" else "classifier."
    assert any(k.startswith(head) for k in changed)  # stage 1 trained the new head
    assert all(k.startswith((last, head)) for k in changed), sorted(changed)[:5]  # nothing before the last stage
    assert not any(k.startswith(first) for k in changed)
    # stage 2 ran on the last stage; its weights are kept only when an epoch beat the stage-1 model on validation
    rows = [r for r in ckpt["history"] if r["stage"] == "stage2"]
    assert rows
    best = ckpt["metrics"]["stage2_best"]
    kept = any(all(r[k] == best[k] for k in ("val_loss", "val_acc", "val_score")) for r in rows)
    assert any(k.startswith(last) for k in changed) == kept


def test_localize_command_on_the_generated_test_split(neu_model, neu_tree, tmp_path):
    pytest.importorskip("gradcam", reason="the localisation command computes heat maps with gradcam.py")
    arch, path = neu_model
    rc = Z.main(["--checkpoint", str(path), "--data", str(neu_tree), "--out", str(tmp_path), "--cascade", "0,100",
                 "--tolerance", "3", "--per-image"])
    assert rc in (0, 1)  # 1 = the sanity check failed (possible for an untrained toy model); it still reports
    res = json.loads((tmp_path / "localization.json").read_text())
    assert res["checkpoint"]["cam_layer"] == cam_layer_name(arch) == ("layer4" if arch == "resnet18" else "features.18")
    rows, s = json.loads((tmp_path / "localization_images.json").read_text()), res["summary"]
    assert "images" not in res
    assert len(rows) == s["n"] == 6 == res["data"]["with_region"]
    assert s["pointing_game"] == pytest.approx(np.mean([r["hit"] for r in rows]))
    assert s["area_fraction"] == pytest.approx(np.mean([r["area"] for r in rows]), abs=1e-3)
    assert 0.0 <= s["energy_in_region"] <= 1.0 and set(res["per_class"]) == set(NEU_CLASSES)
    assert list(res["sanity_check"]["steps"]) == ["head", "all"]
    assert res["sanity_check"]["passed"] == (rc == 0)
    md = (tmp_path / "localization.md").read_text()
    assert "| **all** | 6 |" in md
    assert res["checkpoint"]["region_weight"] == 0.0 and "no region supervision" in md  # the report says how it was trained


def test_localize_on_the_validation_split_uses_the_recorded_validation_files(neu_model, neu_tree, tmp_path):
    pytest.importorskip("gradcam", reason="the localisation command computes heat maps with gradcam.py")
    _, path = neu_model
    ckpt = load_checkpoint(path)
    res = Z.localize(path, neu_tree, cascade_steps=(100,), split="validation")
    assert res["data"]["split"] == "validation"
    val = {r["file"] for r in res["images"]}
    assert val and not val & set(ckpt["data"]["split"]["test_files"])  # never the test images
    assert len(val) == ckpt["data"]["split"]["validation"]["n"]


def test_localize_validation_split_refuses_changed_data(neu_model, neu_tree, tmp_path):
    import shutil

    _, path = neu_model
    changed = tmp_path / "neu-det"
    shutil.copytree(neu_tree, changed)
    next((changed / "IMAGES").glob("patches_*.jpg")).unlink()
    with pytest.raises(ValueError, match="is not the one recorded in the checkpoint"):
        Z.localize(path, changed, cascade_steps=(100,), split="validation")
    with pytest.raises(ValueError, match="split 'train': choose 'test' or 'validation'"):
        Z.localize(path, neu_tree, split="train")


def test_localize_refuses_data_without_regions(neu_model, casting_tree, tmp_path, capsys):
    _, path = neu_model
    assert Z.main(["--checkpoint", str(path), "--data", str(casting_tree), "--out", str(tmp_path)]) == 2
    assert "without defect regions" in capsys.readouterr().err
    with pytest.raises(ValueError, match="target 'best'"):
        Z.localize(path, casting_tree, target="best")


def test_handler_serves_the_multiclass_model_with_the_measured_heat_maps(neu_model, neu_tree):
    handler_mod = pytest.importorskip("inference_handler")
    arch, path = neu_model
    h = handler_mod.InferenceHandler(str(path), backend="torch")
    img = load_rgb(neu_tree / "IMAGES" / "patches_3.jpg")
    r = h.predict(img)
    assert set(r.probabilities) == set(NEU_CLASSES) and sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert r.label == max(r.probabilities, key=r.probabilities.get) and r.verdict == r.label
    assert r.heatmap.shape == img.shape[:2]
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    for target in NEU_CLASSES:  # the heat map of any chosen class is the one the localisation command measures
        got = h.predict(img, target=target).heatmap
        _, (want,) = Z.heatmaps(model, cam_layer_name(arch), [img], ckpt["preprocessing"],
                                [ckpt["class_names"].index(target)])
        assert np.allclose(got, want, atol=1e-4)


def test_mvtec_category_trains_as_binary(tmp_path):
    root = mvtec_tree(tmp_path / "grid", size=(40, 56), n_good=8, n_test_good=4, defects={"cut": 6, "hole": 6})
    out = tmp_path / "m.pt"
    assert train_cli.main(["--data", str(root), "--out", str(out), *ARGS]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["class_names"] == ["defect", "good"] and ckpt["defect_index"] == 0
    assert 0.0 < ckpt["threshold"] < 1.0
    assert ckpt["data"]["split"]["test_files"] and not ckpt["data"]["split"]["has_test_folder"]
    pytest.importorskip("gradcam", reason="the localisation command computes heat maps with gradcam.py")
    res = Z.localize(out, root, cascade_steps=[100], tolerance=2)
    # only the test defects carry masks: good test images are left out of localisation
    defects = [f for f in ckpt["data"]["split"]["test_files"] if "/good/" not in f]
    assert res["data"]["with_region"] == len(defects) > 0


# ------------------------------------------------------------------------------------------------ ResNet-18 weights

def test_resnet18_local_weights_file_is_loaded(tmp_path):
    torch.manual_seed(7)
    src = torchvision_resnet18_state()
    path = tmp_path / "r18.pth"
    torch.save(src, path)
    m = build_model("resnet18", 4, weights=str(path))
    got = m.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.items() if not k.startswith("fc."))
    assert m.fc.out_features == 4


def test_resnet18_mismatched_weights_are_refused(tmp_path):
    path = tmp_path / "mb.pth"
    torch.save(build_model("mobilenet_v2", 2, weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="do not fit torchvision's resnet18"):
        build_model("resnet18", 2, weights=str(path))


def test_resnet18_official_weights_offline_name_the_local_option(monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="official resnet18 ImageNet weights.*local state_dict file"):
        build_model("resnet18", 2, weights="imagenet")


def torchvision_resnet18_state() -> dict:
    import torchvision

    return torchvision.models.resnet18().state_dict()
