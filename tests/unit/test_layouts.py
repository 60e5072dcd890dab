"""Layout detection and loading (casting, folder-per-class, NEU-DET, MVTec AD) and the defect regions they carry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspectkit.data import folders as D
from inspectkit.data import layouts as L
from inspectkit.engine.training import TrainConfig, prepare_data
from tests.layout_trees import NEU_CLASSES, mvtec_tree, neu_det_tree, voc_xml
from tests.support import NEU_DET, write_images

SIZES = [(40, 40), (36, 52)]  # square and non-square (height, width)


@pytest.fixture
def folders_tree(tmp_path: Path) -> Path:
    r = np.random.default_rng(3)
    root = tmp_path / "folders"
    for c, defect in (("bad", True), ("fine", False), ("other", False)):
        write_images(root / c, r, 4, defect, prefix=c, size=(32, 40))
    return root


def test_detect_layout_tells_the_four_layouts_apart(tmp_path, casting_tree, folders_tree):
    neu = tmp_path / "neu"
    neu_det_tree(neu, n=2)
    mv = mvtec_tree(tmp_path / "bottle")
    assert [L.detect_layout(p) for p in (casting_tree, folders_tree, neu, mv)] == ["casting", "folders", "neu-det",
                                                                                   "mvtec"]
    # the casting split layout is still a split layout; an MVTec category is not (its defects are all in test/)
    assert D.is_split_layout(casting_tree) and not D.is_split_layout(mv)


def test_mvtec_collection_root_and_missing_folder_are_refused(tmp_path):
    mvtec_tree(tmp_path / "mvtec" / "bottle")
    mvtec_tree(tmp_path / "mvtec" / "cable")
    with pytest.raises(ValueError, match=r"MVTec AD categories \['bottle', 'cable'\].*one of them"):
        L.detect_layout(tmp_path / "mvtec")
    with pytest.raises(ValueError, match="data folder not found"):
        L.detect_layout(tmp_path / "nope")


@pytest.mark.parametrize("size", SIZES)
def test_neu_det_loads_classes_from_file_names(tmp_path, size):
    neu_det_tree(tmp_path, n=3, size=size, n_val=1)
    ds = D.load_folder(tmp_path, "train")  # "train" = the whole pool, as for a folder-per-class set
    assert ds.class_names == sorted(NEU_CLASSES)
    assert ds.counts() == {c: 4 for c in sorted(NEU_CLASSES)}
    assert ds.defect_index is None  # multi-class
    assert sum(p.parent.name == "Validation_Images" for p in ds.paths) == 3
    for p, y in zip(ds.paths, ds.labels):
        assert p.name.startswith(ds.class_names[y] + "_")
    # the checkpoint's class order is honoured
    order = ["rolled-in_scale", "crazing", "patches"]
    assert D.load_folder(tmp_path, None, class_names=order).class_names == order


def test_neu_det_errors_name_the_problem(tmp_path):
    neu_det_tree(tmp_path, n=2)
    with pytest.raises(ValueError, match=r"no 'test' folder.*allowed split"):
        D.load_folder(tmp_path, "test")
    with pytest.raises(ValueError, match=r"classes \['rolled-in_scale'\].*not among the model's classes"):
        D.load_folder(tmp_path, None, class_names=["crazing", "patches"])
    (tmp_path / "IMAGES" / "nonumber.jpg").write_bytes((tmp_path / "IMAGES" / "crazing_1.jpg").read_bytes())
    with pytest.raises(ValueError, match=r"'nonumber.jpg' is not <class>_<number>"):
        D.load_folder(tmp_path)


@pytest.mark.parametrize("name, cls", [("rolled-in_scale_12.jpg", "rolled-in_scale"),
                                       ("pitted_surface_7.jpg", "pitted_surface"), ("crazing_1.jpg", "crazing")])
def test_neu_det_class_is_the_prefix(name, cls):
    assert L.neu_det_class(name) == cls


@pytest.mark.parametrize("size", SIZES)
def test_mvtec_is_a_binary_good_defect_pool(tmp_path, size):
    root = mvtec_tree(tmp_path / "screw", size=size, n_good=5, n_test_good=2, defects={"scratch": 3, "hole": 2})
    ds = D.load_folder(root, "train")
    assert ds.class_names == ["defect", "good"] and ds.defect_index == 0
    assert ds.counts() == {"defect": 5, "good": 7}
    with pytest.raises(ValueError, match=r"defect class 'good'.*'defect'"):
        D.load_folder(root, None, defect_class="good")


def test_mvtec_without_defects_is_not_mvtec(tmp_path):
    root = mvtec_tree(tmp_path / "screw", defects={})
    assert not L.is_mvtec(root)


@pytest.mark.parametrize("layout", ["neu-det", "mvtec"])
def test_prepare_data_carves_a_stratified_seeded_test_split(tmp_path, layout):
    if layout == "neu-det":
        neu_det_tree(tmp_path / "d", n=9, n_val=1, size=(32, 32))
        root = tmp_path / "d"
    else:
        root = mvtec_tree(tmp_path / "d", n_good=10, n_test_good=0, defects={"a": 5, "b": 5}, size=(32, 32))
    cfg = TrainConfig(data=str(root), test_fraction=0.2, val_fraction=0.25, seed=3)
    a, b = prepare_data(cfg), prepare_data(cfg)
    assert not a["has_test_folder"]
    y = a["full"].labels
    parts = [set(a[k].tolist()) for k in ("train_idx", "val_idx", "test_idx")]
    assert sum(map(len, parts)) == len(y) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for c in range(len(a["full"].class_names)):  # every class is in every part
        for idx in parts:
            assert any(y[i] == c for i in idx)
    assert np.array_equal(a["test_idx"], b["test_idx"])  # seeded
    other = prepare_data(TrainConfig(data=str(root), test_fraction=0.2, val_fraction=0.25, seed=4))
    assert not np.array_equal(a["test_idx"], other["test_idx"])


# ------------------------------------------------------------------------------------------------ regions

@pytest.mark.parametrize("size", SIZES)
def test_neu_det_region_is_the_union_of_its_boxes(tmp_path, size):
    h, w = size
    neu_det_tree(tmp_path, n=1, size=size)
    stem = "patches_1"
    boxes = [("patches", 1, 1, 5, 4), ("inclusion", w - 2, h - 3, w, h)]  # VOC: 1-based, inclusive
    (tmp_path / "ANNOTATIONS" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", size, boxes))
    m = L.region_mask(tmp_path / "IMAGES" / f"{stem}.jpg", tmp_path, size)
    want = np.zeros(size, bool)
    want[0:4, 0:5] = True
    want[h - 4:h, w - 3:w] = True
    assert m.shape == size and np.array_equal(m, want)


def test_boxes_are_scaled_when_annotated_at_another_size():
    b = [L.Box("x", 10, 20, 19, 39)]  # 0-based inclusive on a 100 x 50 (h x w) image
    m = L.boxes_to_mask(b, (50, 25), annotated_size=(100, 50))
    assert m.sum() == 5 * 10 and m[10:20, 5:10].all()


def test_read_voc_rejects_malformed_boxes(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(voc_xml("a.jpg", (10, 10), [("x", 5, 5, 2, 8)]))
    with pytest.raises(ValueError, match="xmax < xmin"):
        L.read_voc(p)
    p.write_text("<annotation><object><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match="numeric"):
        L.read_voc(p)
    p.write_text("<annotation>")
    with pytest.raises(ValueError, match="not a readable Pascal VOC"):
        L.read_voc(p)


@pytest.mark.parametrize("size", SIZES)
def test_mvtec_region_is_its_mask_and_good_images_have_none(tmp_path, size):
    root = mvtec_tree(tmp_path / "tile", size=size)
    m = L.region_mask(root / "test" / "hole" / "001.png", root, size)
    h, w = size
    assert m.shape == size and m[h // 2, w // 3] and not m[0, w - 1]
    assert L.region_mask(root / "test" / "good" / "000.png", root, size) is None
    assert L.region_mask(root / "train" / "good" / "000.png", root, size) is None


def test_regions_need_a_layout_with_annotations(casting_tree):
    with pytest.raises(ValueError, match="casting data set; defect regions come only with"):
        L.region_mask(casting_tree / "test" / "def_front" / "x.jpg", casting_tree, (10, 10))


def test_describe_command_prints_the_layout(tmp_path, capsys):
    neu_det_tree(tmp_path, n=2)
    assert D.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '"layout": "neu-det"' in out and '"annotated": 9' in out
    assert D.main([str(tmp_path / "missing")]) == 2


@pytest.mark.skipif(not (NEU_DET / "IMAGES").is_dir(), reason=f"the NEU-DET data is not at {NEU_DET}")
def test_real_neu_det_has_1800_images_with_boxes():
    ds = D.load_folder(NEU_DET)
    assert len(ds) == 1800 and set(ds.counts().values()) == {300} and len(ds.class_names) == 6
    m = L.region_mask(ds.paths[0], NEU_DET, (200, 200))
    assert m is not None and m.any()
