"""benchmarks/learning_curve.py end to end on small generated data: a parent written by the real save function, a
generated 'line B' and a generated casting tree (its test split measures forgetting)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import learning_curve
from inspectkit.inference.checkpoint import load_checkpoint
from tests.support import write_checkpoint, write_images

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture
def curve(tmp_path, casting_tree):
    """One seed, 12 photos per class of a 20-per-class line, at 64 px: (the output's JSON, its stem, the parent)."""
    parent = write_checkpoint(tmp_path / "parent.pt", train_data=casting_tree)
    r = np.random.default_rng(3)
    write_images(tmp_path / "line" / "def_front", r, 20, True, prefix="b_def", size=(120, 100))
    write_images(tmp_path / "line" / "ok_front", r, 20, False, prefix="b_ok", size=(100, 100))
    out = tmp_path / "curve"
    assert learning_curve.main(["--checkpoint", str(parent), "--line", str(tmp_path / "line"), "--casting",
                                str(casting_tree), "--sizes", "12", "--seeds", "0", "--no-replay-at", "--threads", "1",
                                "--size", "64", "--val-fraction", "0.5", "--aug-rotation", "180",
                                "--work", str(tmp_path / "work"),
                                "--out", str(out)]) == 0
    return json.loads(out.with_suffix(".json").read_text()), out, parent


def test_every_adapted_model_is_measured_on_the_unused_photos_and_the_casting_test_split(curve):
    doc, out, parent = curve
    assert doc["size"] == 64 and len(doc["runs"]) == 1
    assert doc["defect_weight"] == learning_curve.AdaptConfig.defect_weight  # adapt.py's default recipe
    assert doc["val_fraction"] == 0.5 and doc["aug_rotation"] == 180
    assert doc["aug_strength"] == learning_curve.AdaptConfig.aug_strength
    run = doc["runs"][0]
    assert run["per_class"] == 12 and run["used"] == 24
    adapted = run["adapted"]
    assert adapted["line_rest"]["n"] == 40 - 24 and adapted["casting_test"]["n"] == 16
    assert "adapted_no_replay" not in run
    # every photo's score is kept, and the figures follow from them at the model's threshold
    for where in ("line_rest", "casting_test"):
        scores = np.array(adapted["scores"][where])
        assert len(scores) == adapted[where]["n"] and ((0 <= scores) & (scores <= 1)).all()
        flagged = int((scores >= adapted["threshold"]).sum())
        n_def = adapted[where]["n"] // 2
        assert flagged == n_def - adapted[where]["missed_defects"] + adapted[where]["false_alarms"]
    assert out.with_suffix(".png").stat().st_size > 0
    md = out.with_suffix(".md").read_text()
    w = learning_curve.AdaptConfig.defect_weight
    assert (f"adapted: `adapt.py` with replay of line A, at 64 px, the new line's defects weighing {w:g} times in the "
            "loss, 0.5 of the labelled photos held out, views turned by up to 180 degrees;") in md
    assert "| 12 | 1 |" in md
    assert load_checkpoint(parent)["preprocessing"]["size"] == 96  # the parent is measured at its own size


def test_merge_refuses_a_run_twice_and_outputs_of_different_recipes(curve, tmp_path):
    doc, out, _ = curve
    with pytest.raises(SystemExit, match="seed 0, 12 per class is in two outputs"):
        learning_curve.main(["--merge", str(out.with_suffix(".json")), str(out.with_suffix(".json")),
                             "--out", str(tmp_path / "m")])
    for field, value in (("size", 0), ("defect_weight", 4.0), ("eval_fraction", 0.4), ("keep", "best"),
                         ("val_fraction", 0.3), ("aug_rotation", 0.0), ("aug_strength", 1.5)):
        other = tmp_path / f"other_{field}.json"
        other.write_text(json.dumps({**doc, field: value, "runs": []}))
        with pytest.raises(SystemExit, match=r"one recipe and protocol \(--keep, --size, --eval-fraction, "
                                             r"--defect-weight, --val-fraction, --aug-rotation, --aug-strength\)"):
            learning_curve.main(["--merge", str(out.with_suffix(".json")), str(other), "--out", str(tmp_path / "m")])


@pytest.mark.parametrize("fraction, expected_held", [(0.0, 0), (0.25, 5 + 3), (0.5, 10 + 6)])
def test_the_evaluation_set_is_the_tail_of_every_class_and_never_in_the_pool(fraction, expected_held):
    order = {0: list(range(20)), 1: list(range(20, 32))}
    pool, held = learning_curve.split_pool(order, fraction)
    assert len(held) == expected_held
    assert not set(held) & {i for c in pool for i in pool[c]}
    assert sorted(list(held) + [i for c in pool for i in pool[c]]) == list(range(32))
    assert pool[0] == order[0][:len(pool[0])]  # the pool keeps the seed's order


def test_uncertain_picks_follow_the_review_order_and_top_up_the_rarer_class():
    labels = np.array([0] * 6 + [1] * 6)
    # the defects (class 0) sit near the threshold 0.5; the OK photos are sure, one of them less so
    p = np.array([0.5, 0.55, 0.45, 0.6, 0.4, 0.3, 0.01, 0.02, 0.2, 0.001, 0.03, 0.04])
    picked = learning_curve.uncertain_pick(list(range(12)), labels, p, 0.5, budget=4, min_per_class=2)
    # the four most uncertain are defects 0, 1, 2, 3 (|logit| 0, 0.2, 0.2, 0.41); then the two least sure OK photos
    assert picked == [0, 1, 2, 3, 8, 11]
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        learning_curve.split_pool({0: [1]}, 1.0)


def test_the_uncertain_row_is_measured_on_the_same_photos_as_the_random_one(tmp_path, casting_tree):
    parent = write_checkpoint(tmp_path / "parent.pt", train_data=casting_tree)
    r = np.random.default_rng(5)
    write_images(tmp_path / "line" / "def_front", r, 20, True, prefix="b_def", size=(90, 120))
    write_images(tmp_path / "line" / "ok_front", r, 20, False, prefix="b_ok", size=(100, 100))
    out = tmp_path / "curve"
    assert learning_curve.main(["--checkpoint", str(parent), "--line", str(tmp_path / "line"), "--casting",
                                str(casting_tree), "--sizes", "8", "--seeds", "0", "--no-replay-at",
                                "--uncertain-at", "8", "--eval-fraction", "0.3", "--threads", "1", "--size", "64",
                                "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    run = doc["runs"][0]
    assert doc["eval_fraction"] == 0.3
    # 6 of each class are held out for every model of the seed; both rows label 16 photos (topped up if needed)
    for key in ("parent", "bn", "adapted", "adapted_uncertain"):
        assert run[key]["line_rest"]["n"] == 12
    assert sum(run["uncertain_used"].values()) >= 16 and min(run["uncertain_used"].values()) >= 4
    assert run["uncertain_defects"] == run["uncertain_used"]["def_front"]
    u = doc["summary"][0]["uncertain_minus_random"]
    assert u["mean"] == pytest.approx(run["adapted_uncertain"]["line_rest"]["accuracy"]
                                      - run["adapted"]["line_rest"]["accuracy"])
    md = out.with_suffix(".md").read_text()
    assert "Labels well spent?" in md and "| 8 | " in md
    assert "measured on the same photos: the last 0.3 of every class" in md


def test_uncertain_picks_need_a_fixed_evaluation_set(tmp_path):
    with pytest.raises(SystemExit):
        learning_curve.main(["--uncertain-at", "10", "--out", str(tmp_path / "x")])
