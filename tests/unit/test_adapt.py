"""adapt.py: a trained checkpoint adapted to a new line from its own photos (small generated data, real code path).

The parent is written by the real save function; adaptation runs both stages on a tiny budget (96 px, few views
and epochs) so each case takes seconds on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import adapt as adapt_cli
from inspectkit.engine.adaptation import (
    GUARD_EDGES_PER_PHOTO,
    MIN_PHOTOS_PER_CLASS,
    AdaptConfig,
    adapt,
    checkable_defects,
    evidence_threshold,
    fallback_threshold,
    line_weights,
    photo_weights,
)
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint, weights_digest
from inspectkit.inference.handler import InferenceHandler
from inspectkit.metrics import choose_threshold
from inspectkit.model import predict_probs
from tests.support import labelled_by_the_parent, write_checkpoint, write_images

# val_fraction 0.3 (adapt.py's 0.1 needs 30 photos a class to hold any out): a dozen photos a class test held-out mode
TINY = dict(views=2, stage1_epochs=2, stage2_epochs=2, patience=2, threads=1, replay="none", val_fraction=0.3)


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def new_line(root: Path, n_def: int, n_ok: int, seed: int = 5, sizes=((120, 100), (100, 100))) -> Path:
    """A folder-per-class 'line B': photos of both shapes (not square and square)."""
    r = np.random.default_rng(seed)
    write_images(root / "def_front", r, n_def, True, prefix="b_def", size=sizes[0])
    write_images(root / "ok_front", r, n_ok, False, prefix="b_ok", size=sizes[1])
    return root


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("parent") / "base.pt", threshold=0.5)


def run(parent: Path, data: Path, out: Path, **kw) -> dict:
    cfg = AdaptConfig(data=str(data), checkpoint=str(parent), out=str(out), **{**TINY, **kw})
    return adapt(load_checkpoint(parent), cfg)


def test_adapted_checkpoint_records_its_parent_data_and_before_after(parent, tmp_path):
    data = new_line(tmp_path / "lineb", 14, 14)
    (data / "ok_front" / "broken.jpg").write_bytes(b"this is not a jpeg")
    out = tmp_path / "adapted.pt"
    ckpt = run(parent, data, out)
    saved = load_checkpoint(out)  # saved atomically with its .sha256, loads weights-only
    assert weights_digest(saved["state_dict"]) == weights_digest(ckpt["state_dict"])
    a = saved["metrics"]["adaptation"]
    p = load_checkpoint(parent)
    assert a["parent"]["weights_sha256"] == weights_digest(p["state_dict"])
    assert a["mode"] == "held-out"
    assert a["data"]["n"] == 28 and a["data"]["n_skipped"] == 1
    assert a["data"]["skipped"][0][0].endswith("broken.jpg")
    assert len(a["data"]["content_sha256"]) == 64
    held_out = sum(a["split"]["validation"].values())
    assert 0 < held_out < 28 and held_out + sum(a["split"]["train"].values()) == 28
    for side in ("before", "after"):
        r = a[side]["new_line"]
        assert r["n"] == held_out == int(np.sum(r["confusion_matrix"]))
    assert a["before"]["new_line"]["threshold"] == p["threshold"]
    assert a["after"]["new_line"]["threshold"] == saved["threshold"]
    assert saved["class_names"] == p["class_names"] and saved["preprocessing"] == p["preprocessing"]
    # only the last blocks and the head may move: the frozen prefix is the parent's, bit for bit
    frozen = [k for k in p["state_dict"] if k.startswith("features.") and int(k.split(".")[1]) < 11]
    assert frozen and all(torch.equal(p["state_dict"][k], saved["state_dict"][k]) for k in frozen)
    assert any(not torch.equal(p["state_dict"][k], saved["state_dict"][k]) for k in p["state_dict"] if k not in frozen)


def test_adaptation_is_seeded(parent, tmp_path):
    data = new_line(tmp_path / "lineb", 12, 12)
    a = run(parent, data, tmp_path / "a.pt", seed=3)
    b = run(parent, data, tmp_path / "b.pt", seed=3)
    assert weights_digest(a["state_dict"]) == weights_digest(b["state_dict"])
    assert a["threshold"] == b["threshold"]


def test_the_handler_serves_an_adapted_checkpoint(parent, tmp_path, rng):
    from tests.support import synthetic_casting

    data = new_line(tmp_path / "lineb", 12, 12)
    out = tmp_path / "adapted.pt"
    ckpt = run(parent, data, out)
    h = InferenceHandler(out, backend="torch")
    for shape in ((96, 96), (80, 130)):
        r = h.predict(synthetic_casting(rng, True, shape), heatmap=True)
        # a guard fitted on square photos may call a stretched one "not fully in frame": still scored, never OK
        assert r.verdict in ("OK", "DEFECT", "UNUSABLE") and r.threshold == pytest.approx(ckpt["threshold"])
        assert r.label in ckpt["class_names"] and r.heatmap is not None and r.heatmap.shape == shape


def test_adaptation_refits_the_guard_on_the_new_line_and_the_replayed_photos(tmp_path, casting_tree):
    parent = write_checkpoint(tmp_path / "parent.pt", train_data=casting_tree)
    data = new_line(tmp_path / "lineb", 12, 12)
    ckpt = run(parent, data, tmp_path / "adapted.pt", replay="auto", replay_per_class=10)
    fitted = ckpt["guard"]["fitted_on"]
    assert fitted["lines"] == [str(data), str(casting_tree)]  # the new line and the parent's, replayed
    assert fitted["train_photos"] > 24  # the new line's training photos plus the replayed ones
    # one tolerated variant per training photo, a few edge variants per held-out photo (not all nine: time)
    assert fitted["tolerated_variants"] == fitted["train_photos"] + GUARD_EDGES_PER_PHOTO * fitted["validation_photos"]
    h = InferenceHandler(tmp_path / "adapted.pt", backend="torch")
    assert h.guard is not None
    assert h.predict(np.full((96, 96, 3), 255, np.uint8)).verdict == "UNUSABLE"


@pytest.mark.parametrize("folders, message", [
    (("def_front", "good"), "expected ['def_front', 'ok_front'], found ['def_front', 'good']"),
    (("def_front",), "expected ['def_front', 'ok_front'], found ['def_front']"),
    (("def_front", "ok_front", "scratch"), "found ['def_front', 'ok_front', 'scratch']"),
])
def test_class_folders_must_be_the_parents(parent, tmp_path, folders, message):
    r = np.random.default_rng(0)
    for f in folders:
        write_images(tmp_path / "d" / f, r, 6, f == "def_front")
    with pytest.raises(ValueError) as e:
        run(parent, tmp_path / "d", tmp_path / "x.pt")
    assert message in str(e.value)
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("n_def, n_ok", [(MIN_PHOTOS_PER_CLASS - 1, 8), (8, 1)])
def test_too_few_photos_is_an_error_that_names_the_counts(parent, tmp_path, n_def, n_ok):
    data = new_line(tmp_path / "few", n_def, n_ok)
    with pytest.raises(ValueError, match=f"too few readable photos.*at least {MIN_PHOTOS_PER_CLASS} per class"):
        run(parent, data, tmp_path / "x.pt")


@pytest.mark.parametrize("mode, parent_threshold, want", [("auto", 0.3, 0.3), ("auto", 0.7, 0.7),
                                                           ("lower", 0.3, 0.3), ("lower", 0.7, 0.5)])
def test_very_few_photos_adapt_in_sample_and_keep_the_parents_threshold(tmp_path, mode, parent_threshold, want):
    """Nothing held out can contradict the parent's threshold: 'auto' keeps it; 'lower' (the former auto) takes
    the lower of it and 0.5."""
    parent = write_checkpoint(tmp_path / "base.pt", threshold=parent_threshold)
    data = new_line(tmp_path / "few", 5, 5)  # 5 x 0.3 < 3 held-out photos per class: nothing can be held out
    ckpt = run(parent, data, tmp_path / "x.pt", threshold=mode)
    a = ckpt["metrics"]["adaptation"]
    assert a["mode"] == "in-sample"
    assert ckpt["threshold"] == want
    choice = ckpt["metrics"]["threshold_choice"]
    assert choice["kept_from_parent"] is (want == parent_threshold) and choice["parent_threshold"] == parent_threshold
    assert "in-sample" in choice["why"]
    if mode == "auto":
        assert choice["applied"] == "parent unless contradicted" and "nothing held out" in choice["why"]
    else:
        assert want == fallback_threshold(parent_threshold) and choice["applied"] == "lower of parent and 0.5"
        assert ("0.5, the class-balanced decision" in choice["why"]) == (want != parent_threshold)
    assert a["after"]["new_line"]["n"] == 10  # measured on the photos it trained on, and labelled so


def test_a_parent_without_a_defect_class_adapts_without_a_threshold(tmp_path):
    """Several classes and no defect class (e.g. NEU-DET's six): the predicted class is the argmax, nothing to cut."""
    names = ("crazing", "inclusion", "patches")
    parent = write_checkpoint(tmp_path / "base.pt", class_names=names, defect_index=None, threshold=None)
    r = np.random.default_rng(3)
    for k, name in enumerate(names):
        write_images(tmp_path / "line" / name, r, 10, k == 0, prefix=name, size=(100, 120) if k else (96, 96))
    ckpt = run(parent, tmp_path / "line", tmp_path / "x.pt")
    assert ckpt["threshold"] is None and ckpt["defect_index"] is None
    assert ckpt["metrics"]["threshold_choice"]["kept_from_parent"] is True
    assert load_checkpoint(tmp_path / "x.pt")["class_names"] == list(names)


@pytest.mark.parametrize("target, need", [(0.998, 500), (0.995, 200), (0.9, 10), (0.5, 2), (1.0, float("inf"))])
def test_a_recall_target_is_checkable_with_one_over_its_miss_rate_in_defects(target, need):
    assert checkable_defects(target) == need


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5])
def test_a_recall_target_outside_0_1_is_refused(target):
    with pytest.raises(ValueError, match=f"target recall {target} must be in"):
        checkable_defects(target)


@pytest.mark.parametrize("parent_threshold", [0.3, 0.7])
@pytest.mark.parametrize("mode", ["auto", "parent", "rule", "lower"])
def test_the_threshold_is_the_rules_only_where_validation_can_check_it(tmp_path, mode, parent_threshold):
    parent = write_checkpoint(tmp_path / "base.pt", threshold=parent_threshold)
    data = new_line(tmp_path / "lineb", 14, 14)
    # defects weighing as OK photos: under adapt.py's weight this tiny network can score all 10 held-out photos
    # alike to the stored 6 decimals, and the rule on those ties is not the rule on the scores it saw
    ckpt = run(parent, data, tmp_path / "x.pt", threshold=mode, defect_weight=1.0)
    p = load_checkpoint(parent)
    v = ckpt["metrics"]["adaptation"]["validation_scores"]
    target = p["train_config"].get("target_recall", 0.995)
    scores = np.array(v["defect"])
    rule = choose_threshold(np.array(v["is_defect"]), scores, target)["threshold"]

    def same_verdicts(t):  # the stored scores are rounded to 6 decimals, which can move the gap's midpoint
        return np.array_equal(scores >= t, scores >= rule)

    choice = ckpt["metrics"]["threshold_choice"]
    if mode == "rule":
        assert same_verdicts(ckpt["threshold"]) and "kept_from_parent" not in choice
        assert choice["applied"] == "recall rule"
    else:  # a few validation defects cannot check a recall target
        assert sum(v["is_defect"]) < checkable_defects(target)
        if mode == "auto":  # the parent's, unless the held-out photos (all of them, both lines) contradict it
            evidence = evidence_threshold(np.array(v["is_defect"]), np.array(v["defect"]), parent_threshold)
            want = evidence["threshold"]
            assert choice["evidence"] == evidence and choice["applied"] == "parent unless contradicted"
            assert evidence["held_out"] == len(v["defect"])
        else:
            want = parent_threshold if mode == "parent" else min(parent_threshold, 0.5)
        assert ckpt["threshold"] == want and choice["kept_from_parent"] is (want == p["threshold"])
        assert same_verdicts(choice["rule"]["threshold"])
        assert ("needs at least" in choice["why"]) == (mode != "parent")
    assert ckpt["metrics"]["validation"]["threshold"] == ckpt["threshold"]


def test_fixed_epochs_run_every_epoch_whatever_validation_says(parent, tmp_path):
    data = new_line(tmp_path / "lineb", 12, 12)
    ckpt = run(parent, data, tmp_path / "x.pt", keep="last", patience=1, stage1_epochs=3, stage2_epochs=3)
    stages = [h["stage"] for h in ckpt["history"]]
    assert stages.count("stage1") == 3 and stages.count("stage2") == 3


def _distance(a: dict, b: dict) -> float:
    return float(sum(((a[k] - b[k]) ** 2).sum() for k in a if a[k].is_floating_point() and "running_" not in k))


def test_the_anchor_keeps_the_adapted_weights_nearer_the_parents(parent, tmp_path):
    data = new_line(tmp_path / "lineb", 12, 12)
    start = load_checkpoint(parent)["state_dict"]
    free, anchored = (run(parent, data, tmp_path / f"a{a}.pt", keep="last", stage1_epochs=4, stage2_epochs=4,
                          lr1=1e-2, lr2=1e-2, anchor=a)["state_dict"] for a in (0.0, 100.0))
    assert 0 < _distance(anchored, start) < 0.5 * _distance(free, start)
    assert load_checkpoint(tmp_path / "a100.0.pt")["train_config"]["adaptation"]["anchor"] == 100.0


@pytest.mark.parametrize("last_blocks", [1, 2])
def test_last_blocks_sets_how_much_of_the_parent_adapts(parent, tmp_path, last_blocks):
    """Unfrozen blocks move (their batch-norm statistics at least: the random parent's deep gradients are ~0);
    the blocks before them stay bit-identical."""
    data = new_line(tmp_path / "lineb", 8, 8)
    p = load_checkpoint(parent)
    assert p["arch"] == "mobilenet_v2"
    after = run(parent, data, tmp_path / "x.pt", last_blocks=last_blocks)["state_dict"]
    n_blocks = 1 + max(int(k.split(".")[1]) for k in after if k.startswith("features."))
    for i in range(n_blocks):
        keys = [k for k in after if k.startswith(f"features.{i}.") and after[k].is_floating_point()]
        changed = any(not torch.equal(after[k], p["state_dict"][k]) for k in keys)
        assert changed == (i >= n_blocks - last_blocks), f"block {i}"


@pytest.mark.parametrize("n_new, n_replay", [(70, 140), (35, 35), (3, 200), (10, 0), (0, 10)])
def test_line_weights_give_both_lines_the_same_total_and_a_mean_of_one(n_new, n_replay):
    w = line_weights(n_new, n_replay)
    assert len(w) == n_new + n_replay and w.mean() == pytest.approx(1.0)
    if n_new and n_replay:
        assert w[:n_new].sum() == pytest.approx(w[n_new:].sum())
        assert len(set(w[:n_new])) == 1 and len(set(w[n_new:])) == 1


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("defect_weight", [1.0, 0.5, 4.0])
def test_photo_weights_scale_only_the_new_lines_defects(balance, defect_weight):
    labels = np.array([0, 1, 1, 0, 1])  # the new line's training photos; class 0 is the defect
    w = photo_weights(labels, 3, 0, balance, defect_weight)
    if not balance and defect_weight == 1.0:
        assert w is None  # the unweighted loss, exactly
        return
    base = line_weights(5, 3) if balance else np.ones(8)
    assert len(w) == 8
    assert np.allclose(w[:5][labels == 0], defect_weight * base[:5][labels == 0])
    assert np.allclose(w[:5][labels == 1], base[:5][labels == 1])
    assert np.allclose(w[5:], base[5:])  # the replayed line keeps its weights


def test_defect_weight_changes_the_training_and_is_recorded(parent, tmp_path):
    data = new_line(tmp_path / "lineb", 8, 8)
    plain, weighted = (run(parent, data, tmp_path / f"w{w}.pt", lr1=1e-2, lr2=1e-2, defect_weight=w)
                       for w in (1.0, 4.0))
    assert _distance(plain["state_dict"], weighted["state_dict"]) > 0
    assert weighted["metrics"]["adaptation"]["config"]["defect_weight"] == 4.0


@pytest.mark.parametrize("field, value", [("aug_rotation", 180.0), ("aug_strength", 1.5)])
def test_wider_augmentation_changes_the_training_and_is_recorded(parent, tmp_path, field, value):
    data = new_line(tmp_path / "lineb", 8, 8)
    plain, wide = (run(parent, data, tmp_path / f"{field}{i}.pt", lr1=1e-2, lr2=1e-2, **kw)
                   for i, kw in enumerate(({}, {field: value})))
    assert _distance(plain["state_dict"], wide["state_dict"]) > 0
    assert wide["metrics"]["adaptation"]["config"][field] == value
    assert plain["metrics"]["adaptation"]["config"][field] == 0.0  # 0: the parent's own range


def test_balance_lines_changes_the_training_and_is_recorded(tmp_path, casting_tree):
    """With replay, the balanced loss weights the (smaller) new line up: the weights differ from the plain run's."""
    parent = write_checkpoint(tmp_path / "parent.pt", train_data=casting_tree)
    data = new_line(tmp_path / "lineb", 8, 8)
    plain, balanced = (run(parent, data, tmp_path / f"b{b}.pt", replay="auto", replay_per_class=20, lr1=1e-2,
                           lr2=1e-2, balance_lines=b) for b in (False, True))
    assert _distance(plain["state_dict"], balanced["state_dict"]) > 0
    assert balanced["metrics"]["adaptation"]["config"]["balance_lines"] is True


def test_members_average_several_stage2_runs(parent, tmp_path):
    data = new_line(tmp_path / "lineb", 8, 8)
    ckpt = run(parent, data, tmp_path / "x.pt", members=2)
    assert len(ckpt["metrics"]["stage2_members"]) == 2
    assert {h["member"] for h in ckpt["history"] if h["stage"] == "stage2"} == {0, 1}


@pytest.mark.parametrize("field, value, message", [("keep", "first", "keep must be 'last' or 'best', got 'first'"),
                                                   ("threshold", "0.5",
                                                    "threshold must be 'auto', 'rule', 'parent' or 'lower'"),
                                                   ("anchor", -1.0, "anchor and last_blocks must be >= 0"),
                                                   ("last_blocks", -2, "anchor and last_blocks must be >= 0"),
                                                   ("members", 0, "members must be >= 1, got 0"),
                                                   ("size", 8, "size must be 0 .the parent's. or in 32..1024, got 8"),
                                                   ("defect_weight", 0.0, r"defect_weight must be in \(0, 100\]"),
                                                   ("val_fraction", 0.0, "val_fraction must be between 0 and 1"),
                                                   ("replay_val_fraction", 1.0,
                                                    "replay_val_fraction must be between 0 and 1 .the share held "
                                                    "out., got 1.0"),
                                                   ("aug_rotation", 181.0, "aug_rotation in 0..180 degrees"),
                                                   ("aug_strength", -1.0, "aug_strength must be in 0..3")])
def test_unknown_recipe_options_are_refused_before_any_work(parent, tmp_path, field, value, message):
    data = new_line(tmp_path / "lineb", 6, 6)
    with pytest.raises(ValueError, match=message):
        run(parent, data, tmp_path / "x.pt", **{field: value})
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("size", [0, 64, 128])
def test_size_sets_the_adapted_models_input_and_the_handler_follows_it(parent, tmp_path, rng, size):
    from tests.support import synthetic_casting

    data = new_line(tmp_path / "lineb", 12, 12)
    out = tmp_path / "adapted.pt"
    ckpt = run(parent, data, out, size=size)
    p = load_checkpoint(parent)
    expected = size or p["preprocessing"]["size"]
    saved = load_checkpoint(out)
    assert saved["preprocessing"] == {**p["preprocessing"], "size": expected}
    assert saved["train_config"]["adaptation"]["size"] == size
    # "before" is the parent at its own size: the same whatever size the adapted model takes
    before = run(parent, data, tmp_path / "ref.pt")["metrics"]["adaptation"]["before"]
    assert ckpt["metrics"]["adaptation"]["before"] == before
    h = InferenceHandler(out, backend="torch")
    model = model_from_checkpoint(saved)
    for shape in ((96, 96), (80, 130)):
        image = synthetic_casting(rng, True, shape)
        r = h.predict(image, heatmap=True)
        expected_p = predict_probs(model, [image], saved["preprocessing"])[0, saved["defect_index"]]
        assert r.defect_probability == pytest.approx(expected_p, abs=1e-5)
        assert r.heatmap is not None and r.heatmap.shape == shape


@pytest.mark.parametrize("val_fraction, replay_val_fraction", [(0.3, 0.3), (0.5, 0.3), (0.3, 0.5)])
def test_replay_samples_the_parents_training_data(tmp_path, casting_tree, val_fraction, replay_val_fraction):
    parent = write_checkpoint(tmp_path / "parent.pt", train_data=casting_tree)
    data = new_line(tmp_path / "lineb", 12, 12)
    out = run(parent, data, tmp_path / "x.pt", replay="auto", replay_per_class=10, val_fraction=val_fraction,
              replay_val_fraction=replay_val_fraction)
    a = out["metrics"]["adaptation"]
    rp = a["replay"]
    assert Path(rp["root"]) == casting_tree
    assert sum(rp["train"].values()) + sum(rp["validation"].values()) == 20
    assert a["after"]["replay"]["n"] == sum(rp["validation"].values()) > 0
    # each line's held-out share is its own fraction (near-duplicate groups may round it)
    assert sum(rp["validation"].values()) == pytest.approx(20 * replay_val_fraction, abs=2)
    assert sum(a["split"]["validation"].values()) == pytest.approx(24 * val_fraction, abs=2)


def test_cli_writes_a_checkpoint_and_prints_before_and_after(parent, tmp_path, capsys):
    data = new_line(tmp_path / "lineb", 12, 12)
    out = tmp_path / "cli.pt"
    rc = adapt_cli.main(["--checkpoint", str(parent), "--data", str(data), "--out", str(out), "--views", "1",
                         "--stage1-epochs", "1", "--stage2-epochs", "1", "--replay", "none", "--threads", "1",
                         "--val-fraction", "0.3"])
    assert rc == 0 and out.is_file() and Path(str(out) + ".sha256").is_file()
    text = capsys.readouterr().out
    assert "parent, new line" in text and "adapted, new line" in text
    assert "warning: few photos: def_front has 12, ok_front has 12, under 25 per class" in text
    # every rate with its 90 % interval and the photos behind it, and why the threshold is what it is
    a = load_checkpoint(out)["metrics"]["adaptation"]
    r = a["after"]["new_line"]
    iv = r["intervals"]
    n_def = sum(r["confusion_matrix"][0])
    assert (iv["accuracy"]["n"], iv["missed_defects"]["n"], iv["false_alarms"]["n"]) == (r["n"], n_def, r["n"] - n_def)
    row = next(ln for ln in text.splitlines() if ln.startswith("| adapted, new line |"))
    assert f"{100 * r['accuracy']:.1f} % (90 % CI " in row and f"n={r['n']})" in row
    assert f"{r['missed_defects']} of {n_def}: " in row and f"n={n_def})" in row
    assert "90 % Wilson score intervals" in text and "threshold: " in text
    # held out by near-duplicate photos, not by part: said, since other photos of a part flatter the figures
    assert a["mode"] == "held-out" and "not by part" in text


@pytest.mark.parametrize("args, message", [
    (["--data", "{missing}"], "adaptation data folder not found"),
    (["--checkpoint", "{missing}"], "checkpoint not found"),
])
def test_cli_names_a_bad_path(parent, tmp_path, capsys, args, message):
    data = new_line(tmp_path / "lineb", 6, 6)
    base = {"--checkpoint": str(parent), "--data": str(data), "--out": str(tmp_path / "o.pt")}
    base[args[0]] = str(tmp_path / "nope")
    argv = [x for kv in base.items() for x in kv] + ["--replay", "none"]
    assert adapt_cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("counts, named", [({"def_front": 24, "ok_front": 25}, ["def_front has 24"]),
                                           ({"def_front": 4, "ok_front": 10}, ["def_front has 4", "ok_front has 10"]),
                                           ({"def_front": 25, "ok_front": 500}, [])])
def test_few_photos_per_class_are_warned_about_by_name(counts, named):
    from inspectkit.engine.adaptation import few_photos_warning

    w = few_photos_warning(counts)
    assert (w is None) is (not named)
    for n in named:
        assert n in w and "under 25 per class" in w


@pytest.mark.parametrize("n, errors, nothing", [(30, 0, True), (30, 1, False), (5, 0, True), (0, 0, False)])
def test_nothing_to_learn_is_a_parent_without_an_error_on_the_new_photos(n, errors, nothing):
    from inspectkit.engine.adaptation import nothing_to_learn

    report = {"n": n, "accuracy": (n - errors) / n if n else float("nan")}
    assert nothing_to_learn(report) is nothing
    assert nothing_to_learn({}) is False


def test_photos_the_parent_already_classifies_keep_it_unchanged(tmp_path):
    parent, data = labelled_by_the_parent(tmp_path)
    out = tmp_path / "kept.pt"
    ckpt = run(parent, data, out)
    p, saved = load_checkpoint(parent), load_checkpoint(out)  # written, with its digest, weights-only
    assert weights_digest(saved["state_dict"]) == weights_digest(p["state_dict"]) == weights_digest(ckpt["state_dict"])
    assert saved["threshold"] == p["threshold"] and saved.get("guard") == p.get("guard")
    a = saved["metrics"]["adaptation"]
    assert a["outcome"] == "kept the parent" and "all 24 new photos correctly" in a["why"]
    assert sorted(a["split"]["train"]) == ["def_front", "ok_front"]
    assert a["all_new_photos"]["n"] == 24 and a["all_new_photos"]["accuracy"] == 1.0
    assert a["before"] == a["after"] and a["before"]["new_line"]["n"] == sum(a["split"]["validation"].values())
    assert saved["metrics"]["threshold_choice"]["kept_from_parent"] is True
    assert out.with_suffix(".onnx").is_file()  # servable without torch, like any adapted model


def test_force_adapts_even_when_there_is_nothing_to_learn(tmp_path):
    parent, data = labelled_by_the_parent(tmp_path)
    ckpt = run(parent, data, tmp_path / "forced.pt", force=True)
    assert "outcome" not in ckpt["metrics"]["adaptation"]
    assert weights_digest(ckpt["state_dict"]) != weights_digest(load_checkpoint(parent)["state_dict"])


def test_cli_says_when_it_kept_the_parent(tmp_path, capsys):
    parent, data = labelled_by_the_parent(tmp_path)
    out = tmp_path / "kept.pt"
    assert adapt_cli.main(["--checkpoint", str(parent), "--data", str(data), "--out", str(out), "--threads", "1",
                           "--replay", "none"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: the parent unchanged" in text and "not adapted" in text
    assert "all 24 new photos correctly" in text and '"outcome": "kept the parent"' in text


@pytest.mark.parametrize("by_part", [True, False])
def test_group_by_part_holds_out_whole_parts(tmp_path, monkeypatch, by_part):
    """Two photos of each of 20 generated parts (one design, each its own grain), turned and zoomed differently. Held
    out by part, every held-out part has both its photos held out; by photo, some part is split across. (The
    near-duplicate thumbnails, which lump these generated parts of one design together, are switched off here, so
    only the part grouping acts.)"""
    import cv2

    import inspectkit.engine.adaptation as adaptation
    from tests.support import copy_of, impeller

    for part in range(20):
        cls = "def_front" if part < 10 else "ok_front"
        (tmp_path / "parts" / cls).mkdir(parents=True, exist_ok=True)
        for shot, (angle, zoom) in enumerate(((23.0 + 37.0 * part, (1.03, 0.98)), (151.0 + 37.0 * part, (0.97, 1.04)))):
            grey = copy_of(impeller(100 + part), angle, zoom, False)
            cv2.imwrite(str(tmp_path / "parts" / cls / f"part{part:02d}_shot{shot}.jpg"), grey)
    monkeypatch.setattr(adaptation.D, "duplicate_groups", lambda desc, hashes=None, twin=0.93: np.arange(len(desc)))
    parent = write_checkpoint(tmp_path / "parent.pt")
    ckpt = run(parent, tmp_path / "parts", tmp_path / "adapted.pt", group_by_part=by_part)
    a = ckpt["metrics"]["adaptation"]
    assert a["mode"] == "held-out"
    assert a["split"]["grouping"] == ("parts" if by_part else "near-duplicate photos")
    held = a["split"]["validation_files"]
    parts = {f.split("/")[1].split("_")[0] for f in held}
    assert (len(held) == 2 * len(parts)) is by_part  # by part: both photos of every held-out part, nothing else


@pytest.mark.parametrize("option, value", [("--aug-rotation", "180"), ("--aug-strength", "1.5")])
def test_cli_sets_the_augmentation_ranges(option, value):
    from inspectkit.cli.adapt import parse_args

    base = ["--checkpoint", "p.pt", "--data", "d", "--out", "o.pt"]
    cfg, default = parse_args(base + [option, value]), parse_args(base)
    field = option[2:].replace("-", "_")
    assert getattr(cfg, field) == float(value) and getattr(default, field) == getattr(AdaptConfig(), field)
