"""The evaluation command: whole and twin-free test metrics, the report files, agreement with the predictions."""

from __future__ import annotations

import json
import shutil

import pytest

from inspectkit.engine.training import TrainConfig, train
from inspectkit.inference.checkpoint import load_checkpoint, weights_digest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import numpy as np

    from tests.support import write_images

    root = tmp_path_factory.mktemp("data") / "casting"
    r = np.random.default_rng(5)
    for split, n in (("train", 20), ("test", 6)):
        write_images(root / split / "def_front", r, n, True, prefix=f"d_{split}")
        write_images(root / split / "ok_front", r, n, False, prefix=f"o_{split}")
    # leak one test image into train: the evaluation must find it and leave it out of the twin-free part
    shutil.copy(root / "test" / "def_front" / "d_test_000.jpg", root / "train" / "def_front" / "leak.jpg")
    out = root.parent / "m.pt"
    train(TrainConfig(data=str(root), weights="none", size=64, views=2, stage1_epochs=3, stage2_epochs=1,
                      batch_size=16, out=str(out)))
    return root, out


def test_evaluate_cli_writes_report_and_updates_checkpoint(trained, tmp_path, capsys):
    import evaluate

    root, ckpt_path = trained
    reports = tmp_path / "reports"
    assert evaluate.main(["--checkpoint", str(ckpt_path), "--data", str(root), "--reports", str(reports),
                          "--update-checkpoint"]) == 0
    rep = json.loads((reports / "evaluation.json").read_text())
    preds = json.loads((reports / "test_predictions.json").read_text())
    assert len(preds) == rep["test"]["all"]["n"] == 12
    correct = sum(p["label"] == p["predicted"] for p in preds)
    assert rep["test"]["all"]["accuracy"] == pytest.approx(correct / 12)
    assert len(rep["misclassified"]) == 12 - correct
    assert rep["test_data"]["twins"]["exact"] == 1
    assert rep["test"]["twin_free"]["n"] == 11
    assert set(rep["robustness"]) >= {"zoom_out_0.85", "shift_+8%", "darker_0.75"}
    assert {p.name for p in reports.iterdir()} >= {"evaluation.md", "training_curves.png", "confusion_matrix.png",
                                                   "threshold_curve.png", "scores.png"}
    assert "twin-free" in (reports / "evaluation.md").read_text()
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["metrics"]["test"]["all"]["n"] == 12 and ckpt["data"]["twins"]["exact"] == 1
    assert json.loads(capsys.readouterr().out)["twin_free"]["n"] == 11


def test_evaluation_does_not_change_threshold(trained, tmp_path):
    from inspectkit.engine.evaluation import run_evaluation

    root, ckpt_path = trained
    before = load_checkpoint(ckpt_path)["threshold"]
    run_evaluation(ckpt_path, root, tmp_path / "r", update_checkpoint=True, robustness=False)
    assert load_checkpoint(ckpt_path)["threshold"] == before


def test_evaluate_cli_names_a_missing_checkpoint(tmp_path, capsys):
    import evaluate

    assert evaluate.main(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_compare_models_scores_checkpoints_on_their_shared_validation_split(trained, tmp_path, capsys):
    import compare_models
    from inspectkit.engine.evaluation import compare_on_validation
    from inspectkit.engine.training import validation_split

    root, first = trained
    second = tmp_path / "second.pt"
    train(TrainConfig(data=str(root), weights="none", size=80, views=2, stage1_epochs=2, stage2_epochs=1,
                      batch_size=16, seed=0, out=str(second)))
    out = tmp_path / "selection.json"
    assert compare_models.main([str(first), str(second), "--data", str(root), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    val = validation_split(load_checkpoint(first), root)
    assert res["split"] == "validation" and res["n"] == len(val) > 0
    assert [m["checkpoint"] for m in res["models"]] == [str(first), str(second)]
    assert [m["input_size"] for m in res["models"]] == [64, 80]
    assert [m["weights_sha256"] for m in res["models"]] == [weights_digest(load_checkpoint(c)["state_dict"])
                                                         for c in (first, second)]
    assert res["models"][0]["weights_sha256"] != res["models"][1]["weights_sha256"]
    for m in res["models"]:
        assert m["missed_defects"] + m["false_alarms"] == round((1 - m["accuracy"]) * m["n"])
        assert m["selection_loss"] > 0 and m["log_loss"] > 0
    assert res["best"] == min(res["models"], key=lambda m: m["selection_loss"])["checkpoint"]
    # the test images are never among those scored
    assert not {p.name for p in val.paths} & {p.name for p in (root / "test").rglob("*.jpg")}
    # a checkpoint selected on another validation split cannot be compared like for like
    other = tmp_path / "other.pt"
    train(TrainConfig(data=str(root), weights="none", size=64, views=1, stage1_epochs=1, stage2_epochs=0,
                      val_fraction=0.4, batch_size=16, out=str(other)))
    with pytest.raises(ValueError, match="other validation files"):
        compare_on_validation([first, other], root)
    assert compare_models.main([str(first), str(other), "--data", str(root)]) == 2
    assert "other validation files" in capsys.readouterr().err


def test_compare_models_can_score_framing_and_light_changes_on_validation(trained, tmp_path):
    import compare_models
    from inspectkit.preprocess import ROBUSTNESS_SHIFTS

    root, first = trained
    out = tmp_path / "selection.json"
    assert compare_models.main([str(first), "--data", str(root), "--robustness", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["models"]
    assert set(row["robustness"]) == set(ROBUSTNESS_SHIFTS)
    for r in row["robustness"].values():
        assert r["missed_defects"] + r["false_alarms"] == round((1 - r["accuracy"]) * row["n"])
    assert row["robustness_worst_accuracy"] == min(r["accuracy"] for r in row["robustness"].values())
    shifted = [r["selection_loss"] for r in row["robustness"].values()]
    assert all(s > 0 for s in shifted)
    assert row["robust_score"] == pytest.approx((row["selection_loss"] + sum(shifted) / len(shifted)) / 2)
    # without the flag the rows stay as they were
    assert compare_models.main([str(first), "--data", str(root), "--json", str(out)]) == 0
    assert "robustness" not in json.loads(out.read_text())["models"][0]


def test_compare_models_robust_rule_names_the_lowest_robust_score(trained, tmp_path):
    import compare_models

    root, first = trained
    second = tmp_path / "second.pt"
    train(TrainConfig(data=str(root), weights="none", size=64, views=2, stage1_epochs=1, stage2_epochs=0,
                      batch_size=16, seed=0, out=str(second)))
    out = tmp_path / "selection.json"
    # --rule robust implies the framing and light changes
    assert compare_models.main([str(first), str(second), "--data", str(root), "--rule", "robust",
                                "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert all("robustness" in m for m in res["models"])
    assert res["best"] == min(res["models"], key=lambda m: m["robust_score"])["checkpoint"]
    assert "robust" in res["rule"]


def test_compare_models_refuses_an_unknown_rule(trained):
    from inspectkit.engine.evaluation import compare_on_validation

    root, first = trained
    with pytest.raises(ValueError, match="'fastest' is not one of"):
        compare_on_validation([first], root, rule="fastest")


@pytest.mark.parametrize("target", [None, 0.5, 1.0])
def test_set_threshold_chooses_again_on_the_validation_split_and_keeps_the_weights(trained, tmp_path, capsys, target):
    import torch

    import set_threshold
    from inspectkit.data import folders as D
    from inspectkit.engine.evaluation import predict_probs, run_evaluation
    from inspectkit.engine.training import validation_split
    from inspectkit.inference.checkpoint import model_from_checkpoint
    from inspectkit.metrics import choose_threshold

    root, first = trained
    src = tmp_path / "src.pt"
    shutil.copy(first, src)
    run_evaluation(src, root, None, update_checkpoint=True, robustness=False)  # test metrics at the old threshold
    old = load_checkpoint(src)
    assert "test" in old["metrics"]
    out = tmp_path / "re.pt"
    extra = [] if target is None else ["--target-recall", str(target)]
    assert set_threshold.main(["--checkpoint", str(src), "--data", str(root), "--out", str(out), *extra]) == 0
    new = load_checkpoint(out)  # saved with its digest
    want = old["train_config"]["target_recall"] if target is None else target
    val, images = D.decode_all(validation_split(old, root))
    d = old["defect_index"]
    probs = predict_probs(model_from_checkpoint(old), images, old["preprocessing"])
    assert new["threshold"] == choose_threshold(val.labels == d, probs[:, d], want)["threshold"]
    assert new["train_config"]["target_recall"] == want
    assert new["metrics"]["rethresholded"] == {"from": old["threshold"], "to": new["threshold"], "target_recall": want}
    assert new["metrics"]["validation"]["n"] == len(val)
    # the test metrics belonged to the old threshold; the weights and the source file are untouched
    assert "test" not in new["metrics"] and "robustness" not in new["metrics"]
    assert all(torch.equal(new["state_dict"][k], v) for k, v in old["state_dict"].items())
    assert load_checkpoint(src)["threshold"] == old["threshold"]
    assert json.loads(capsys.readouterr().out)["to"] == new["threshold"]


def test_set_threshold_names_what_it_cannot_do(trained, tmp_path, capsys):
    import set_threshold
    from inspectkit.engine.evaluation import rethreshold

    root, first = trained
    assert set_threshold.main(["--checkpoint", str(first), "--data", str(root), "--target-recall", "1.5",
                               "--out", str(tmp_path / "x.pt")]) == 2
    assert "target recall 1.5 must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ValueError, match="only a binary checkpoint"):
        rethreshold({**load_checkpoint(first), "defect_index": None}, root)


# ------------------------------------------------------------------------- every image of another labelled set

@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    """A checkpoint with trained weights (tests/trained_tiny.py): random weights score every image alike."""
    from tests.trained_tiny import train_tiny

    return train_tiny(tmp_path_factory.mktemp("scorer"))


@pytest.fixture
def line_folder(tmp_path):
    """A folder-per-class set (another 'line'): 5 def_front, 4 ok_front generated photos and one broken file."""
    import numpy as np

    from tests.support import write_images

    root = tmp_path / "line-x"
    r = np.random.default_rng(11)
    write_images(root / "def_front", r, 5, True, prefix="d")
    write_images(root / "ok_front", r, 4, False, prefix="o")
    (root / "ok_front" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def _split_threshold(ckpt, root):
    """The checkpoint with its threshold in the widest gap between the middle scores on ``root``: the model then
    predicts both classes, so the per-class checks are not vacuous, and no image sits within rounding of it."""
    import numpy as np

    from inspectkit.engine.evaluation import evaluate_folder

    p = np.sort([e["p_defect"] for e in evaluate_folder(ckpt, root)["predictions"]])
    k = 2 + int(np.argmax(np.diff(p[2:-2])))
    assert p[k + 1] - p[k] > 1e-4, p
    return {**ckpt, "threshold": float((p[k] + p[k + 1]) / 2)}


def test_evaluate_folder_scores_every_readable_image_and_names_the_broken_one(line_folder, scorer):
    import numpy as np

    from inspectkit.data import folders as D
    from inspectkit.engine.evaluation import evaluate_folder, report_on_images
    from inspectkit.metrics import roc_auc

    ckpt = _split_threshold(load_checkpoint(scorer), line_folder)
    names, thr = ckpt["class_names"], ckpt["threshold"]
    res = evaluate_folder(ckpt, line_folder)
    a, preds = res["test"]["all"], res["predictions"]
    written = {str(p.relative_to(line_folder)) for p in line_folder.rglob("*.jpg")}
    assert res["split"] == "all" and "twin_free" not in res["test"] and "twins" not in res["data"]
    assert res["data"]["n_listed"] == 10 and res["data"]["n_skipped"] == 1
    assert [f for f, _ in res["data"]["skipped"]] == ["ok_front/broken.jpg"]
    assert {p["file"] for p in preds} == written - {"ok_front/broken.jpg"} and a["n"] == len(preds) == 9
    assert {p["predicted"] for p in preds} == set(names)
    for p in preds:  # the stored threshold decides, and each file is labelled by its class folder
        assert p["predicted"] == ("def_front" if p["p_defect"] >= thr else "ok_front")
        assert p["label"] == p["file"].split("/")[0]
    cm = np.array(a["confusion_matrix"])
    assert cm.sum() == a["n"]
    for i, t in enumerate(names):
        for j, q in enumerate(names):
            assert cm[i, j] == sum(p["label"] == t and p["predicted"] == q for p in preds)
    assert a["accuracy"] == pytest.approx(np.mean([p["label"] == p["predicted"] for p in preds]))
    assert a["missed_defects"] == sum(p["label"] == "def_front" != p["predicted"] for p in preds)
    assert a["false_alarms"] == sum(p["label"] == "ok_front" != p["predicted"] for p in preds)
    scores = [p["p_defect"] for p in preds]
    if len(set(scores)) == len(scores):  # the stored scores are rounded; ties would make the two AUCs differ
        assert a["roc_auc"] == pytest.approx(roc_auc([p["label"] == "def_front" for p in preds], scores))
    assert sorted(e["file"] for e in res["misclassified"]) == sorted(p["file"] for p in preds
                                                                    if p["label"] != p["predicted"])
    assert all("twin" not in e for e in res["misclassified"])
    # the lower-level helper gives the same report from images decoded once
    ds, images = D.decode_all(D.load_folder(line_folder, None, "def_front", names))
    again = report_on_images(ckpt, None, images, ds.labels, [str(p.relative_to(line_folder)) for p in ds.paths])
    assert again["test"] == res["test"] and again["predictions"] == preds
    with pytest.raises(ValueError, match=r"images \(9\), labels \(8\), files \(9\)"):
        report_on_images(ckpt, None, images, ds.labels[:8], [p.name for p in ds.paths])


def test_evaluate_folder_with_the_training_data_finds_twins_there(line_folder, casting_tree, scorer):
    from inspectkit.engine.evaluation import evaluate_folder

    shutil.copy(casting_tree / "train" / "ok_front" / "cast_ok_train_003.jpg", line_folder / "ok_front" / "seen.jpg")
    res = evaluate_folder(load_checkpoint(scorer), line_folder, train_data=casting_tree)
    tw = res["data"]["twins"]
    assert tw["exact"] == 1 and sum(tw.values()) == res["test"]["all"]["n"] == 10
    assert {"file": "ok_front/seen.jpg", "kind": "exact", "similarity": 1.0,
            "train_file": "train/ok_front/cast_ok_train_003.jpg"} in res["data"]["twin_files"]
    assert res["test"]["twin_free"]["n"] == tw["none"]
    assert res["data"]["train_data"]["n"] == 48  # train/ only: the test split is no training data
    assert all("twin" in e for e in res["misclassified"])


def test_evaluate_folder_names_the_classes_expected_and_found(line_folder, casting_tree, tiny_checkpoint, capsys):
    import evaluate
    from inspectkit.engine.evaluation import evaluate_folder

    ckpt = load_checkpoint(tiny_checkpoint)
    (line_folder / "ok_front").rename(line_folder / "scratch")
    with pytest.raises(ValueError, match=r"expected \['def_front', 'ok_front'\], found \['def_front', 'scratch'\]"):
        evaluate_folder(ckpt, line_folder)
    # a split-layout set is not read as one pool (its train images would count as unseen)
    with pytest.raises(ValueError, match="is a casting data set, not a folder-per-class set"):
        evaluate_folder(ckpt, casting_tree)
    out = line_folder.parent / "r"
    assert evaluate.main(["--checkpoint", str(tiny_checkpoint), "--data", str(line_folder), "--split", "all",
                          "--reports", str(out)]) == 2
    assert "found ['def_front', 'scratch']" in capsys.readouterr().err and not out.exists()
    assert evaluate.main(["--checkpoint", str(tiny_checkpoint), "--data", str(line_folder), "--split", "all",
                          "--update-checkpoint"]) == 2
    assert "--update-checkpoint goes with --split test only" in capsys.readouterr().err


def test_evaluate_cli_split_all_writes_the_report_files(line_folder, scorer, tmp_path, capsys):
    import evaluate
    from inspectkit.preprocess import ROBUSTNESS_SHIFTS

    reports = tmp_path / "reports"
    before = load_checkpoint(scorer)["metrics"]
    assert evaluate.main(["--checkpoint", str(scorer), "--data", str(line_folder), "--split", "all",
                          "--reports", str(reports)]) == 0
    summary = json.loads(capsys.readouterr().out)
    rep = json.loads((reports / "evaluation.json").read_text())
    preds = json.loads((reports / "predictions.json").read_text())
    assert {p.name for p in reports.iterdir()} == {"evaluation.json", "evaluation.md", "predictions.json",
                                                   "confusion_matrix.png", "scores.png"}
    assert rep["split"] == "all" and list(rep["test"]) == ["all"] and len(preds) == rep["test"]["all"]["n"] == 9
    assert summary["all"] == {k: rep["test"]["all"][k] for k in summary["all"]}
    assert summary["skipped"] == ["ok_front/broken.jpg"]
    assert set(rep["robustness"]) == set(ROBUSTNESS_SHIFTS)
    assert sum(v["n"] for v in rep["scores"].values()) == 9
    assert sum(v["at_or_above_threshold"] for v in rep["scores"].values()) == sum(
        p["predicted"] == "def_front" for p in preds)
    md = (reports / "evaluation.md").read_text()
    assert "every image of `line-x`" in md and "| line-x, all images | 9 |" in md
    assert "`ok_front/broken.jpg`" in md and "twin-free" not in md and "twin in" not in md
    assert load_checkpoint(scorer)["metrics"] == before  # the checkpoint is left alone
    # the mosaic of the set's own photos only on request
    ckpt = _split_threshold(load_checkpoint(scorer), line_folder)
    moved = tmp_path / "moved.pt"
    from inspectkit.inference.checkpoint import save_checkpoint

    save_checkpoint(ckpt, moved)
    assert evaluate.main(["--checkpoint", str(moved), "--data", str(line_folder), "--split", "all",
                          "--reports", str(tmp_path / "with"), "--no-robustness", "--misclassified-images"]) == 0
    assert (tmp_path / "with" / "misclassified.png").is_file()


def test_report_writer_reads_a_folder_result_with_and_without_twins(line_folder, casting_tree, scorer,
                                                                    tmp_path):
    from inspectkit.engine.evaluation import evaluate_folder
    from inspectkit.engine.reports import write_report

    ckpt = load_checkpoint(scorer)
    ckpt["metrics"]["validation_sweep"] = [{"threshold": 0.5, "recall": 1.0, "false_alarm_rate": 0.1}]
    plain = evaluate_folder(ckpt, line_folder)
    rep = write_report(ckpt, plain, tmp_path / "a", line_folder, misclassified_images=False)
    assert rep["split"] == "all" and rep["test_data"]["n_skipped"] == 1
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"threshold_curve.png", "scores.png"}
    assert "this set recall" in (tmp_path / "a" / "evaluation.md").read_text()
    twins = evaluate_folder(ckpt, line_folder, train_data=casting_tree)
    write_report(ckpt, twins, tmp_path / "b", line_folder, misclassified_images=False)
    md = (tmp_path / "b" / "evaluation.md").read_text()
    assert f"| line-x, twin-free | {twins['test']['twin_free']['n']} |" in md
    assert "## Per class, line-x, twin-free" in md and "with a twin in the training data" in md
    assert not (tmp_path / "b" / "misclassified.png").exists()
