"""Training on two photo sessions (train.py --extra-data) and choosing between models on each line's validation part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import compare_models
from inspectkit.data import folders as D
from inspectkit.engine.evaluation import compare_on_lines
from inspectkit.engine.training import TrainConfig, prepare_data, train
from tests.support import write_images

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture
def line_b(tmp_path: Path, casting_tree: Path) -> Path:
    """A second session: folder-per-class, other photo size (not square), plus one byte copy of a line-A photo."""
    r = np.random.default_rng(9)
    root = tmp_path / "line-b"
    write_images(root / "def_front", r, 16, True, prefix="b_def", size=(110, 90))
    write_images(root / "ok_front", r, 16, False, prefix="b_ok", size=(110, 90))
    twin = sorted((casting_tree / "train" / "ok_front").iterdir())[0]
    (root / "ok_front" / "copy_of_a.jpg").write_bytes(twin.read_bytes())
    return root


def cfg(casting_tree, tmp_path, name, **kw) -> TrainConfig:
    base = dict(data=str(casting_tree), weights="none", size=64, views=1, stage1_epochs=2, stage2_epochs=1,
                batch_size=16, patience=10, seed=0, split_seed=0, last_blocks=2, out=str(tmp_path / f"{name}.pt"))
    base.update(kw)
    return TrainConfig(**base)


def test_each_line_is_split_on_its_own_and_line_a_keeps_its_split(casting_tree, line_b, tmp_path):
    one = prepare_data(cfg(casting_tree, tmp_path, "a"))
    two = prepare_data(cfg(casting_tree, tmp_path, "ab", extra_data=[str(line_b)]))
    assert [len(x["val_idx"]) for x in two["lines"]][0] == len(one["val_idx"])
    assert np.array_equal(two["lines"][0]["val_idx"], one["val_idx"])  # line A's split does not move
    b = two["lines"][1]
    assert len(b["val_idx"]) > 0 and set(b["val_idx"]) <= set(two["val_idx"])
    assert b["twins_in_line0"] >= 1
    copy = [i for i, p in enumerate(two["full"].paths) if p.name == "copy_of_a.jpg"][0]
    assert copy in set(two["train_idx"]) and copy not in set(two["val_idx"])  # a twin of line A never validates
    assert not set(two["train_idx"]) & set(two["val_idx"])


def test_extra_line_must_have_the_same_classes(casting_tree, tmp_path):
    r = np.random.default_rng(0)
    write_images(tmp_path / "other" / "def_front", r, 4, True)
    write_images(tmp_path / "other" / "scratch", r, 4, True)
    with pytest.raises(ValueError, match=r"\['scratch'\].*not among the model's classes"):
        prepare_data(cfg(casting_tree, tmp_path, "x", extra_data=[str(tmp_path / "other")]))


def test_two_line_model_records_each_line_and_competes_with_a_one_line_model(casting_tree, line_b, tmp_path, capsys):
    a = train(cfg(casting_tree, tmp_path, "a"))
    ab = train(cfg(casting_tree, tmp_path, "ab", extra_data=[str(line_b)], seed=1))
    lines = ab["data"]["split"]["lines"]
    assert [Path(x["root"]) for x in lines] == [casting_tree, line_b]
    assert lines[0]["validation"]["files_sha256"] == a["data"]["split"]["validation"]["files_sha256"]
    per_line = ab["metrics"]["validation_lines"]
    assert sum(x["n"] for x in per_line) == ab["metrics"]["validation"]["n"]
    res = compare_on_lines([tmp_path / "a.pt", tmp_path / "ab.pt"])
    assert res["split_from"] == str(tmp_path / "ab.pt")
    assert [r["trained_on_lines"] for r in res["models"]] == [1, 2]
    for r in res["models"]:
        assert [x["n"] for x in r["lines"]] == [x["n"] for x in per_line]
        assert r["score"] == pytest.approx(np.mean([x["selection_loss"] for x in r["lines"]]))
    assert res["best"] == min(res["models"], key=lambda r: r["score"])["checkpoint"]
    assert compare_models.main([str(tmp_path / "a.pt"), str(tmp_path / "ab.pt"), "--rule", "lines",
                                "--json", str(tmp_path / "sel.json")]) == 0
    assert (tmp_path / "sel.json").is_file()


def test_a_one_line_model_on_another_split_is_refused(casting_tree, line_b, tmp_path):
    train(cfg(casting_tree, tmp_path, "a", split_seed=5, seed=5))
    train(cfg(casting_tree, tmp_path, "ab", extra_data=[str(line_b)]))
    with pytest.raises(ValueError, match="cannot be compared fairly"):
        compare_on_lines([tmp_path / "a.pt", tmp_path / "ab.pt"])


def test_concat_refuses_other_classes(tmp_path):
    a = D.Dataset(tmp_path, [tmp_path / "x.jpg"], np.array([0]), ["a", "b"], None)
    b = D.Dataset(tmp_path, [tmp_path / "y.jpg"], np.array([0]), ["a", "c"], None)
    with pytest.raises(ValueError, match="the classes must be the same"):
        D.concat([a, b])
    assert len(D.concat([a, a])) == 2
