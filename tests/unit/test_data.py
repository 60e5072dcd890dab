"""Data layouts, clear errors for bad folders, unreadable images, near-duplicate groups, the split and the audit."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspectkit.data import folders as D
from tests.support import CASTING, needs_casting, synthetic_casting, write_images


def test_split_layout_reads_classes_and_defect(casting_tree):
    ds = D.load_folder(casting_tree, "train")
    assert ds.class_names == ["def_front", "ok_front"]
    assert ds.defect_index == 0
    assert ds.counts() == {"def_front": 24, "ok_front": 24}
    test = D.load_folder(casting_tree, "test")
    assert len(test) == 16 and not set(test.paths) & set(ds.paths)


def test_folder_per_class_layout(tmp_path, rng):
    for c, n in (("scratch", 3), ("pit", 4), ("good", 5)):
        write_images(tmp_path / c, rng, n, c != "good", prefix=c)
    ds = D.load_folder(tmp_path)
    assert ds.class_names == ["good", "pit", "scratch"]
    assert ds.defect_index is None  # three classes: multi-class
    assert ds.counts() == {"good": 5, "pit": 4, "scratch": 3}
    binary = D.load_folder(tmp_path, defect_class="pit")
    assert binary.defect_index == 1


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "data folder not found"),
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (root / "only").mkdir(parents=True) or write_images(root / "only", np.random.default_rng(0), 2, False),
     "at least two class folders"),
    (lambda root: [(root / c).mkdir(parents=True) for c in ("a", "b")] and
     write_images(root / "a", np.random.default_rng(0), 2, False), "hold no images"),
    (lambda root: [write_images(root / c, np.random.default_rng(0), 2, False) for c in ("a", "b")],
     "which of the classes"),
])
def test_bad_folders_give_clear_errors(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ValueError, match=message):
        D.load_folder(root)


def test_unknown_defect_class_is_named(casting_tree):
    with pytest.raises(ValueError, match="'cracked' is not one of the classes"):
        D.load_folder(casting_tree, "train", defect_class="cracked")


def test_missing_test_split_is_named(casting_tree):
    shutil.rmtree(casting_tree / "test")
    with pytest.raises(ValueError, match="split folder not found"):
        D.load_folder(casting_tree, "test")


def test_unreadable_images_are_skipped_with_names(casting_tree, caplog):
    bad = casting_tree / "train" / "ok_front" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (casting_tree / "train" / "ok_front" / "empty.png").write_bytes(b"")
    ds = D.load_folder(casting_tree, "train")
    assert len(ds) == 50
    kept, images = D.decode_all(ds)
    assert len(kept) == len(images) == 48
    assert sorted(Path(p).name for p, _ in kept.skipped) == ["broken.jpg", "empty.png"]
    assert "skipped 2 unreadable image(s)" in caplog.text and "broken.jpg" in caplog.text


@pytest.mark.parametrize("transform", [
    lambda im: im.copy(),
    lambda im: im[:, ::-1].copy(),
    lambda im: np.rot90(im, 1).copy(),
    lambda im: cv2.GaussianBlur(im, (3, 3), 0.6),
    lambda im: np.clip(im.astype(int) + 12, 0, 255).astype(np.uint8),
])
def test_near_twins_are_similar_and_different_parts_are_not(rng, transform):
    a = synthetic_casting(rng, True, (120, 120))
    others = [synthetic_casting(rng, bool(i % 2), (120, 120)) for i in range(6)]
    desc = D.descriptors([a, transform(a)] + others)
    sim = D.similarity(desc, desc)
    assert sim[0, 1] >= D.TWIN_SIMILARITY
    assert sim[0, 2:].max() < D.TWIN_SIMILARITY


def _groups_with_twins(rng, n_parts=30, copies=3):
    images, labels, part = [], [], []
    for p in range(n_parts):
        base = synthetic_casting(rng, p % 2 == 0, (96, 96))
        for c in range(copies):
            images.append(np.rot90(base, c).copy())
            labels.append(p % 2)
            part.append(p)
    return images, np.array(labels), np.array(part)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_validation_split_keeps_duplicate_groups_together(rng, seed):
    images, labels, part = _groups_with_twins(rng)
    groups = D.duplicate_groups(D.descriptors(images), threshold=D.TWIN_SIMILARITY)
    # every copy of a part lands in the same group
    for p in np.unique(part):
        assert len(np.unique(groups[part == p])) == 1
    tr, va = D.group_split(labels, groups, 0.2, seed)
    assert not set(part[tr]) & set(part[va])
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(labels)))
    for c in (0, 1):  # stratified: each class has validation images
        assert (labels[va] == c).sum() > 0


def test_giant_duplicate_groups_stay_in_train():
    labels = np.array([0] * 600 + [1] * 600)
    groups = np.r_[np.zeros(100, int), np.arange(1, 501), np.full(100, 501), np.arange(502, 1002)]
    for seed in range(5):
        tr, va = D.group_split(labels, groups, 0.2, seed, max_group_fraction=0.05)
        assert not {0, 501} & set(groups[va])  # groups of 100 > 5 % of 600 never go to validation
        assert abs(len(va) - 240) <= 2


def test_group_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="val_fraction 1.5"):
        D.group_split(np.array([0, 1]), np.array([0, 1]), 1.5, 0)


def test_training_split_never_holds_test_files(casting_tree):
    from inspectkit.engine.training import TrainConfig, prepare_data

    # an exact copy of a test image inside train must be grouped, and the pools never mix
    prep = prepare_data(TrainConfig(data=str(casting_tree), size=64))
    names = {p.resolve() for p in prep["full"].paths}
    test_names = {p.resolve() for p in D.load_folder(casting_tree, "test").paths}
    assert not names & test_names
    assert not set(prep["train_idx"]) & set(prep["val_idx"])
    g = prep["groups"]
    assert not set(g[prep["train_idx"]]) & set(g[prep["val_idx"]])


def test_audit_finds_injected_exact_and_near_twins(casting_tree):
    test_files = sorted((casting_tree / "test" / "def_front").iterdir())
    shutil.copy(test_files[0], casting_tree / "train" / "def_front" / "injected_copy.jpg")
    img = cv2.imread(str(test_files[1]))
    cv2.imwrite(str(casting_tree / "train" / "def_front" / "injected_flip.png"), img[:, ::-1])
    train, ti = D.decode_all(D.load_folder(casting_tree, "train"))
    test, si = D.decode_all(D.load_folder(casting_tree, "test"))
    rows = D.audit(train, ti, test, si)
    found = {(Path(r["test"]).name, Path(r["train"]).name, r["kind"]) for r in rows}
    assert (test_files[0].name, "injected_copy.jpg", "exact") in found
    assert (test_files[1].name, "injected_flip.png", "near") in found
    assert len(rows) == 2  # the other generated parts are all different


def test_audit_command_writes_json(casting_tree, tmp_path):
    import json

    import audit

    shutil.copy(sorted((casting_tree / "test" / "ok_front").iterdir())[0], casting_tree / "train" / "ok_front" / "dup.jpg")
    out = tmp_path / "audit.json"
    assert audit.main(["--data", str(casting_tree), "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["summary"]["exact_twins"] == 1 and rep["summary"]["test_images"] == 16


@needs_casting
def test_real_casting_folders_match_the_source_counts():
    train, test = D.load_folder(CASTING, "train"), D.load_folder(CASTING, "test")
    assert train.counts() == {"def_front": 3758, "ok_front": 2875}
    assert test.counts() == {"def_front": 453, "ok_front": 262}
