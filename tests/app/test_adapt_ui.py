"""The Adapt tab's logic (inspectkit/ui/adapt/) with the real handler and a random-weight 96 px checkpoint:
photos from zips and drop zones (bad zips, path traversal, bombs, wrong classes, too few photos), the score of
the current model, a tiny real adaptation, one adaptation at a time, checkpoint uploads good and bad, the
per-session model switch, and "Label these next" sent to the tab."""

from __future__ import annotations

import json
import os
import shutil
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import app
from inspectkit.digest import sha256_file
from inspectkit.inference.checkpoint import weights_digest
from inspectkit.ui.adapt import intake
from inspectkit.ui.adapt import tab as aui
from inspectkit.ui.adapt.settings import BACKENDS, AdaptSettings
from inspectkit.ui.adapt.view import adaptation_html
from inspectkit.ui.common import session, session_models
from inspectkit.ui.common.render import review_ranks
from inspectkit.ui.common.session_models import pick
from tests.app_server import inspect_all
from tests.support import write_checkpoint, write_images

CLASSES = ["def_front", "ok_front"]


def inspect_with(shared, choice, files) -> dict:
    """The Inspect tab's session once ``files`` are inspected with this session's model (``choice``)."""
    *_, last = session.stream(session.inspect, shared, choice, files, None, 0.45, None)
    return last[0]
TINY = AdaptSettings(views=1, stage1_epochs=1, stage2_epochs=1, replay="none", threads=1, backend="torch")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test writes under its own folder and starts with no session models cached; one torch thread."""
    monkeypatch.setattr(intake, "WORK_DIR", tmp_path / "adapt-work")
    session_models._MODELS.clear()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    session_models._MODELS.clear()


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("parent") / "base.pt", threshold=0.5)


@pytest.fixture(scope="module")
def parent_handler(parent):
    from inspectkit.inference.handler import InferenceHandler

    return InferenceHandler(str(parent), backend="torch")


def zones_of(root: Path, n_def: int, n_ok: int, seed: int = 3) -> list[list[str]]:
    """Photos as two drop zones hold them (paths), def_front first."""
    r = np.random.default_rng(seed)
    d = write_images(root / "zone_def", r, n_def, True, prefix="d")
    o = write_images(root / "zone_ok", r, n_ok, False, prefix="o")
    return [[str(p) for p in d], [str(p) for p in o], [], []]


def make_zip(path: Path, entries: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def photo_bytes(tmp_path: Path, n: int, defect: bool, seed: int = 0) -> list[bytes]:
    return [p.read_bytes() for p in write_images(tmp_path / f"src_{defect}_{seed}", np.random.default_rng(seed), n,
                                                 defect, prefix="z")]


# ------------------------------------------------------------------------------------------------ settings


def test_constants_repeated_here_agree_with_their_sources():
    from inspectkit.engine.adaptation import FEW_PHOTOS_PER_CLASS, MIN_PHOTOS_PER_CLASS, AdaptConfig
    from inspectkit.imageio import IMAGE_EXTENSIONS
    from inspectkit.inference.handler import BACKENDS as HANDLER_BACKENDS

    assert intake.MIN_PER_CLASS == MIN_PHOTOS_PER_CLASS
    assert intake.FEW_PER_CLASS == FEW_PHOTOS_PER_CLASS
    cfg = AdaptConfig()
    assert intake.HELD_OUT_SHARE == cfg.val_fraction
    assert intake.HELD_OUT_MIN == next(n for n in range(1, 100) if n * cfg.val_fraction >= cfg.min_val_per_class)
    assert tuple(intake.IMAGE_TYPES) == tuple(IMAGE_EXTENSIONS)
    assert tuple(BACKENDS) == tuple(HANDLER_BACKENDS)


def test_settings_from_the_environment():
    s = AdaptSettings.from_env({"INSPECT_ADAPT_VIEWS": "2", "INSPECT_ADAPT_REPLAY": "none",
                                    "INSPECT_ADAPT_BACKEND": "torch", "INSPECT_ADAPT_STAGE2_EPOCHS": ""})
    assert (s.views, s.replay, s.backend, s.stage2_epochs) == (2, "none", "torch", AdaptSettings().stage2_epochs)
    with pytest.raises(ValueError, match=r"INSPECT_ADAPT_THREADS='two' is not a whole number"):
        AdaptSettings.from_env({"INSPECT_ADAPT_THREADS": "two"})
    with pytest.raises(ValueError, match=r"views=0 must be a whole number from 1 to 100"):
        AdaptSettings.from_env({"INSPECT_ADAPT_VIEWS": "0"})
    with pytest.raises(ValueError, match=r"backend='gpu' must be one of"):
        AdaptSettings(backend="gpu")


def test_build_demo_has_the_adapt_tab_with_its_limits(parent_handler):
    demo = app.build_demo(parent_handler, adapt_settings=TINY)
    config = json.dumps(demo.get_config_file(), default=str)
    assert "Adapt" in config and f"at most **{intake.MAX_PHOTOS} photos**" in config
    assert f"**{intake.MAX_PHOTO_MB} MB\\nper photo**" in config or f"{intake.MAX_PHOTO_MB} MB" in config
    assert "One adaptation at a time" in config and "1 view per photo" in config
    assert {"adapt_run", "adapt_score"} <= {d.api_name for d in demo.fns.values()}
    assert "Send 'Label these next' to the Adapt tab" in config


# ------------------------------------------------------------------------------------------------ photos


def test_zip_with_class_folders_inside_one_top_folder(tmp_path):
    d, o = photo_bytes(tmp_path, 5, True), photo_bytes(tmp_path, 4, False, 1)
    entries = {f"line_b/def_front/d{i}.jpg": b for i, b in enumerate(d)}
    entries.update({f"line_b/ok_front/sub/o{i}.jpg": b for i, b in enumerate(o)})
    entries.update({"line_b/notes.txt": b"hello", "__MACOSX/line_b/._d0.jpg": b"junk", "line_b/.DS_Store": b"x"})
    z = make_zip(tmp_path / "line_b.zip", entries)
    photos = intake.prepare_photos([str(z)], [[], []], CLASSES)
    try:
        assert photos.counts == {"def_front": 5, "ok_front": 4}
        assert sorted(p.name for p in photos.files["def_front"]) == [f"d{i}.jpg" for i in range(5)]
        assert all(p.read_bytes() in d for p in photos.files["def_front"])
        assert photos.ignored == ["line_b.zip: line_b/notes.txt"]  # named; the OS litter is skipped silently
    finally:
        photos.cleanup()
    assert not photos.folder.exists()


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    bad = tmp_path / "photos.zip"
    bad.write_bytes(b"PK\x03\x04 but not really a zip")
    with pytest.raises(ValueError, match=r"photos.zip is not a readable zip archive"):
        intake.prepare_photos([str(bad)], [], CLASSES)


@pytest.mark.parametrize("name, why", [("../evil.jpg", "path traversal"), ("def_front/../../evil.jpg", "traversal"),
                                       ("/tmp/evil.jpg", "absolute path"), ("C:\\evil.jpg", "absolute path"),
                                       ("def_front\\..\\..\\evil.jpg", "traversal")])
def test_zip_entries_leading_out_of_the_archive_are_refused(tmp_path, name, why):
    good = {f"def_front/d{i}.jpg": b for i, b in enumerate(photo_bytes(tmp_path, 4, True))}
    z = make_zip(tmp_path / "evil.zip", {**good, name: b"\xff\xd8 not a photo"})
    with pytest.raises(ValueError, match=why):
        intake.prepare_photos([str(z)], [], CLASSES)
    assert not list(tmp_path.rglob("evil.jpg")) and not Path("/tmp/evil.jpg").exists()
    assert not list((intake.WORK_DIR / "data").iterdir())  # the partial copy was removed


def test_zip_links_bombs_and_big_entries_are_refused(tmp_path):
    good = {f"def_front/d{i}.jpg": b for i, b in enumerate(photo_bytes(tmp_path, 4, True))}
    link = make_zip(tmp_path / "link.zip", good, symlinks=("ok_front/passwd.jpg",))
    with pytest.raises(ValueError, match="symbolic link"):
        intake.prepare_photos([str(link)], [], CLASSES)
    bomb = make_zip(tmp_path / "bomb.zip", {**good, "ok_front/zeros.bmp": b"\0" * (5 << 20)})
    with pytest.raises(ValueError, match=r"decompression bomb"):
        intake.prepare_photos([str(bomb)], [], CLASSES)
    big = make_zip(tmp_path / "big.zip", {**good, "ok_front/big.png": os.urandom(intake.MAX_PHOTO_BYTES + 1)})
    with pytest.raises(ValueError, match=rf"big.png is 10.5 MB; the limit is {intake.MAX_PHOTO_MB} MB per photo"):
        intake.prepare_photos([str(big)], [], CLASSES)


def test_zip_with_other_class_folders_names_the_expected_ones(tmp_path):
    d = photo_bytes(tmp_path, 4, True)
    z = make_zip(tmp_path / "wrong.zip", {**{f"bad/{i}.jpg": b for i, b in enumerate(d)},
                                         **{f"good/{i}.jpg": b for i, b in enumerate(d)}})
    with pytest.raises(ValueError, match=r"wrong.zip has folders \['bad', 'good'\] that are not classes of the model; "
                                         r"expected one folder per class: \['def_front', 'ok_front'\]"):
        intake.prepare_photos([str(z)], [], CLASSES)
    loose = make_zip(tmp_path / "loose.zip", {"a.jpg": d[0]})
    with pytest.raises(ValueError, match=r"'a.jpg' is not inside a class folder"):
        intake.prepare_photos([str(loose)], [], CLASSES)


def test_drop_zones_and_a_zip_together(tmp_path):
    zones = zones_of(tmp_path, 4, 5)
    z = make_zip(tmp_path / "more.zip", {"def_front/d_000.jpg": photo_bytes(tmp_path, 1, True, 9)[0]})
    photos = intake.prepare_photos([str(z)], zones, CLASSES)
    try:
        assert photos.counts == {"def_front": 5, "ok_front": 5}
        # the same name from the zip and a zone: both kept
        assert sorted(p.name for p in photos.files["def_front"])[:2] == ["d_000.jpg", "d_000_2.jpg"]
    finally:
        photos.cleanup()


def test_drop_zone_limits(tmp_path, monkeypatch):
    zones = zones_of(tmp_path, 4, 4)
    text = tmp_path / "notes.txt"
    text.write_text("not a photo")
    with pytest.raises(ValueError, match=r"notes.txt in the ok_front zone is not a photo"):
        intake.prepare_photos(None, [zones[0], zones[1] + [str(text)]], CLASSES)
    monkeypatch.setattr(intake, "MAX_PHOTOS", 6)
    with pytest.raises(ValueError, match=r"more than 6 photos were given .*the limit is 6 photos per adaptation"):
        intake.prepare_photos(None, zones, CLASSES)
    monkeypatch.setattr(intake, "MAX_PHOTO_BYTES", 100)
    with pytest.raises(ValueError, match=r"d_000.jpg in the def_front zone is .* MB; the limit is 10 MB per photo"):
        intake.prepare_photos(None, zones, CLASSES)


def test_too_few_photos_says_how_many_are_needed(tmp_path):
    zones = zones_of(tmp_path, 2, 6)
    with pytest.raises(ValueError, match=r"too few photos in def_front \(def_front: 2, ok_front: 6\); adaptation "
                                         r"needs at least 4 photos per class"):
        intake.prepare_photos(None, zones, CLASSES)
    with pytest.raises(ValueError, match=r"no photos were given"):
        intake.prepare_photos(None, [[], []], CLASSES)


# ------------------------------------------------------------------------------------------------ scoring and adapting


def test_score_of_the_current_model(parent_handler, tmp_path):
    zones = zones_of(tmp_path, 5, 4)
    broken = tmp_path / "zone_ok" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    zones[1].append(str(broken))
    out = aui.score(parent_handler, None, None, zones)
    assert "The current model on these photos" in out and "10 photos (def_front: 5, ok_front: 5)" in out
    assert "Confusion matrix" in out and "Unreadable, skipped</b> (1)" in out and "ok_front/broken.jpg" in out
    assert "90 % CI" in out and ", n=9<" in out  # 9 readable photos behind the accuracy
    assert ", n=5" in out and ", n=4" in out  # 5 defects behind the missed ones, 4 OK parts behind the false alarms
    assert "in-sample" in out  # fewer than HELD_OUT_MIN per class: said before adapting
    assert "Few photos</b>: under 25 in a class" in out
    assert not list((intake.WORK_DIR / "data").iterdir())  # the copy is gone


@pytest.mark.slow
def test_adaptation_shows_before_and_after_and_offers_the_files(parent_handler, tmp_path):
    zones = zones_of(tmp_path, intake.HELD_OUT_MIN, intake.HELD_OUT_MIN)  # the fewest that hold some out
    seen = []
    result, html_out, files = aui.run_adaptation(parent_handler, None, TINY, None, zones,
                                                 lambda f, desc="": seen.append((f, desc)))
    assert seen and seen[-1][0] == 1.0 and all(d.startswith("Adapting: ") for _, d in seen)
    assert "Before: the current model" in html_out and "After: the adapted model" in html_out
    assert "Held-out" in html_out and html_out.count("<table class='cm'>") == 2
    assert "missed defects" in html_out
    # every rate with its 90 % interval and the number of held-out photos behind it
    a = torch.load(files[0], weights_only=True)["metrics"]["adaptation"]
    for side_name in ("before", "after"):
        r = a[side_name]["new_line"]
        n_def = sum(r["confusion_matrix"][0])
        assert f"{100 * r['accuracy']:.1f} %<br><span class='ci'" in html_out
        assert f", n={r['n']}</span>" in html_out and f"{r['missed_defects']} of {n_def} (" in html_out
    assert html_out.count("90 % CI") >= 6 and "Wilson score interval" in html_out
    ckpt, side = files
    assert side == ckpt + ".sha256" and Path(side).read_text().split()[0] == sha256_file(ckpt) == result["sha256"]
    assert result["mode"] == "held-out" and result["parent_sha256"] == parent_handler.sha256
    assert not list((intake.WORK_DIR / "data").iterdir())  # the photos are not kept
    assert aui.adaptation_status() is None and not aui.ADAPT_LOCK.locked()


def _fake_adapted(threshold_choice: dict, threshold: float) -> dict:
    """What adaptation_html reads of an adapted checkpoint: 30 held-out photos (15 + 15), all right after."""
    from inspectkit.intervals import report_intervals

    def rep(cm, thr):
        r = {"n": 30, "accuracy": (cm[0][0] + cm[1][1]) / 30, "roc_auc": 1.0, "missed_defects": cm[0][1],
             "false_alarms": cm[1][0], "confusion_matrix": cm, "threshold": thr}
        return {**r, "intervals": report_intervals(r, 0)}

    a = {"mode": "held-out", "split": {"validation": {"def_front": 15, "ok_front": 15}, "train": {"def_front": 35}},
         "before": {"new_line": rep([[13, 2], [0, 15]], 0.7108), "replay": {}},
         "after": {"new_line": rep([[15, 0], [0, 15]], threshold), "replay": {}},
         "parent": {"threshold": 0.7108}, "data": {"skipped": []}, "replay": None}
    return {"class_names": CLASSES, "threshold": threshold,
            "metrics": {"adaptation": a, "threshold_choice": threshold_choice}}


RESULT = {"seconds": 1.0, "sha256": "ab" * 32, "weights_sha256": "cd" * 32}


def test_before_and_after_give_each_rate_with_its_interval_and_photo_count():
    kept = {"threshold": 0.7108, "kept_from_parent": True, "parent_threshold": 0.7108,
            "applied": "parent unless contradicted", "why": "the 30 held-out photos agree with it"}
    out = adaptation_html(_fake_adapted(kept, 0.7108), RESULT)
    assert "100.0 %<br>" in out and "90 % CI 91.7\u2013100, n=30" in out  # all 30 right: at least 91.7 %
    assert "0 of 15 (0.0 %)<br>" in out and "90 % CI 0\u201315.3, n=15" in out  # no missed defect of 15: < 15.3 %
    assert "2 of 15 (13.3 %)<br>" in out  # before: 2 of the 15 defects missed
    assert "The current model's threshold was kept (the 30 held-out photos agree with it)" in out


def test_a_threshold_moved_by_the_held_out_photos_is_said_so():
    moved = {"threshold": 0.42, "kept_from_parent": False, "parent_threshold": 0.7108,
             "applied": "parent unless contradicted", "why": "the held-out photos contradict it: ..."}
    out = adaptation_html(_fake_adapted(moved, 0.42), RESULT)
    assert "The threshold moved from 0.711 to 0.420 because these photos contradict the current one" in out
    assert "flatters the after-figures" in out
    lower = {"threshold": 0.5, "kept_from_parent": False, "parent_threshold": 0.7108,
             "applied": "lower of parent and 0.5", "why": "... (--threshold lower)"}
    assert "The threshold was not chosen on them: 0.500" in adaptation_html(_fake_adapted(lower, 0.5), RESULT)


def test_nothing_to_learn_says_the_current_model_was_kept():
    from inspectkit.intervals import report_intervals

    seen = {"n": 100, "accuracy": 1.0, "missed_defects": 0, "false_alarms": 0, "confusion_matrix": [[50, 0], [0, 50]]}
    ckpt = _fake_adapted({"threshold": 0.7108, "kept_from_parent": True}, 0.7108)
    ckpt["metrics"]["adaptation"].update(outcome="kept the parent", all_new_photos={
        **seen, "intervals": report_intervals(seen, 0)}, why="the current model already classifies all 100 new "
        "photos correctly at its threshold 0.7108: there is nothing to correct")
    out = adaptation_html(ckpt, RESULT)
    assert "Nothing to learn" in out and "all 100 new photos correctly" in out
    assert "90 % CI 97.4\u2013100, n=100" in out  # 100 of 100 right: at least n / (n + z²) = 97.4 %
    assert "After: the adapted model" not in out and "adapt.py --force" in out


@pytest.mark.slow
@pytest.mark.parametrize("force", [False, True])
def test_the_tab_keeps_a_model_that_gets_every_photo_right_unless_told_to_adapt(tmp_path, force):
    from inspectkit.inference.handler import InferenceHandler
    from tests.support import labelled_by_the_parent

    parent, data = labelled_by_the_parent(tmp_path)
    zones = [sorted(str(x) for x in (data / c).iterdir()) for c in CLASSES] + [[], []]
    h = InferenceHandler(str(parent), backend="torch")
    result, html_out, files = aui.run_adaptation(h, None, TINY, None, zones, None, force)
    kept = torch.load(files[0], weights_only=True)
    assert ("Nothing to learn" in html_out) is not force and ("After: the adapted model" in html_out) is force
    assert (result["weights_sha256"] == weights_digest(torch.load(parent, weights_only=True)["state_dict"])) \
        is not force
    assert kept["threshold"] == h.threshold


@pytest.mark.slow
def test_in_sample_is_said_plainly(parent_handler, tmp_path):
    result, html_out, _ = aui.run_adaptation(parent_handler, None, TINY, None, zones_of(tmp_path, 5, 5))
    assert result["mode"] == "in-sample" and "IN-SAMPLE" in html_out and "fit, not accuracy" in html_out
    assert "Few photos</b>: under 25 in a class" in html_out


@pytest.mark.parametrize("counts, held_out, few", [
    ({"def_front": 9, "ok_front": 40}, False, True),
    ({"def_front": 25, "ok_front": 29}, False, False),  # not few, but too few to hold 10 % out: in-sample
    ({"def_front": 30, "ok_front": 30}, True, False),
    ({"def_front": 300, "ok_front": 31}, True, False),
])
def test_the_score_says_what_adapting_these_counts_will_do(counts, held_out, few):
    from inspectkit.ui.adapt.view import _mode_hint

    hint = _mode_hint(counts)
    assert ("hold about 10 % of them out" in hint) is held_out and ("in-sample" in hint) is not held_out
    assert ("Few photos" in hint) is few


@pytest.mark.slow
def test_one_adaptation_at_a_time(parent_handler, tmp_path):
    import gradio as gr

    zones = zones_of(tmp_path, 5, 5)
    started, release = threading.Event(), threading.Event()

    def slow(fraction, desc=""):
        started.set()
        release.wait(60)

    out = {}
    first = threading.Thread(target=lambda: out.setdefault("r", aui.run_adaptation(parent_handler, None, TINY, None, zones,
                                                                                   slow)))
    first.start()
    try:
        assert started.wait(60)
        with pytest.raises(aui.AdaptationBusy, match=r"another adaptation is running on this server \(started "
                                                     r"\d\d:\d\d:\d\d, \d+ % done"):
            aui.run_adaptation(parent_handler, None, TINY, None, zones)
        with pytest.raises(gr.Error, match="one runs at a time"):
            aui.adapt_call(aui.run_adaptation, parent_handler, None, TINY, None, zones)
    finally:
        release.set()
        first.join(120)
    assert out["r"][0]["mode"] == "in-sample"
    assert not aui.ADAPT_LOCK.locked()
    aui.run_adaptation(parent_handler, None, TINY, None, zones)  # free again


def test_wrong_photos_leave_the_lock_free(parent_handler, tmp_path):
    with pytest.raises(ValueError, match="too few photos"):
        aui.run_adaptation(parent_handler, None, TINY, None, zones_of(tmp_path, 1, 5))
    assert not aui.ADAPT_LOCK.locked() and aui.adaptation_status() is None
    runs = intake.WORK_DIR / "runs"
    assert not runs.is_dir() or not list(runs.iterdir())


# ------------------------------------------------------------------------------------------------ switching


@pytest.mark.slow
def test_switching_makes_this_sessions_inspection_use_the_adapted_model(parent_handler, tmp_path):
    zones = zones_of(tmp_path, 10, 10)
    result, _, _ = aui.run_adaptation(parent_handler, None, TINY, None, zones)
    out = aui.use_adapted(parent_handler, None, result)
    assert len(out) == len(aui.SWITCH_OUTPUTS)
    choice = out[0]
    assert choice["sha256"] == result["sha256"] and choice["source"] == "adapted"
    assert "This session: adapted model" in out[aui.SWITCH_OUTPUTS.index("status")]
    assert "adapted model" in out[aui.SWITCH_OUTPUTS.index("session_line")]
    session_h = pick(parent_handler, choice)
    assert session_h is not parent_handler and session_h.sha256 == result["sha256"]
    assert pick(parent_handler, None) is parent_handler  # other sessions keep the default model

    # the Inspect tab follows the switch: its results (from the other model) are cleared, its sliders move
    before = inspect_with(parent_handler, None, zones[0][:1])
    state, *_view, threshold, _band = session.switched(session_h, before)
    assert state["rows"] == [] and threshold["value"] == round(session_h.threshold, 4)

    # a drop of any size runs on the session's model
    photo = zones[0][0]
    mine = inspect_with(parent_handler, choice, [photo])["rows"][0]
    theirs = inspect_with(parent_handler, None, [photo])["rows"][0]
    assert mine["defect_probability"] == pytest.approx(session_h.predict(photo, heatmap=False).defect_probability)
    assert theirs["defect_probability"] == pytest.approx(parent_handler.predict(photo, heatmap=False).defect_probability)
    assert mine["defect_probability"] != pytest.approx(theirs["defect_probability"], abs=1e-6)

    session_models._MODELS.clear()  # dropped from the cache: loaded again from its file, checked
    assert pick(parent_handler, choice).sha256 == result["sha256"]
    back = aui.use_default(parent_handler, choice)
    assert back[0] is None and "default model" in back[aui.SWITCH_OUTPUTS.index("session_line")]


def test_using_without_an_adaptation_is_a_clear_error(parent_handler):
    import gradio as gr

    with pytest.raises(gr.Error, match="run an adaptation first"):
        aui.adapt_call(aui.use_adapted, parent_handler, None, None)


def test_a_session_model_whose_file_is_gone(parent_handler, tmp_path):
    import gradio as gr

    choice = {"path": str(tmp_path / "gone.pt"), "sha256": "0" * 64, "name": "gone.pt"}
    with pytest.raises(gr.Error, match="no longer on the server"):
        inspect_with(parent_handler, choice, [])


# ------------------------------------------------------------------------------------------------ checkpoint upload


def upload_copy(src: Path, folder: Path, name: str | None = None) -> Path:
    """A file as Gradio leaves an upload: in its own folder, under the user's name."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / (name or src.name)
    shutil.copyfile(src, dst)
    return dst


def test_upload_a_good_checkpoint_with_its_sha256(parent_handler, tmp_path):
    from inspectkit.inference.checkpoint import load_checkpoint, weights_digest

    other = write_checkpoint(tmp_path / "made" / "line_c.pt", seed=7, threshold=0.4)
    pt = upload_copy(other, tmp_path / "up1")
    side = upload_copy(Path(str(other) + ".sha256"), tmp_path / "up2")
    info, *switched = aui.load_uploaded_checkpoint(parent_handler, None, [str(pt), str(side)], TINY)
    sha, wd = sha256_file(other), weights_digest(load_checkpoint(other)["state_dict"])
    assert sha in info and wd in info and "the uploaded .sha256" in info and "0.4000" in info
    choice = switched[0]
    assert choice["source"] == "uploaded" and choice["sha256"] == sha and choice["weights_sha256"] == wd
    assert pick(parent_handler, choice).threshold == pytest.approx(0.4)
    assert session.switched(pick(parent_handler, choice), None)[-2]["value"] == 0.4  # the Inspect tab's slider
    # the session's copy survives Gradio emptying its upload cache
    shutil.rmtree(tmp_path / "up1")
    session_models._MODELS.clear()
    assert pick(parent_handler, choice).sha256 == sha
    # without the sidecar: loaded, the digest computed here
    info2, *_ = aui.load_uploaded_checkpoint(parent_handler, None, [str(upload_copy(other, tmp_path / "up3"))], TINY)
    assert "nothing uploaded" in info2 and sha in info2


class Evil:
    """Pickled, this would run a shell command on an unsafe load."""

    def __reduce__(self):
        return (os.system, (f"touch {EVIL_MARK}",))


EVIL_MARK = "/tmp/inspect-adapt-test-evil-ran"


@pytest.mark.parametrize("kind", ["garbage", "truncated", "code", "not a checkpoint",
                                  "digest mismatch", "two files", "text"])
def test_a_bad_checkpoint_is_a_clear_error_and_the_model_stays(parent_handler, tmp_path, kind):
    import gradio as gr

    up = tmp_path / "up"
    up.mkdir()
    pt = up / "model.pt"
    files = [str(pt)]
    if kind == "garbage":
        pt.write_bytes(b"definitely not a torch file")
        want = r"model.pt is not a torch checkpoint .*the session keeps its current model"
    elif kind == "code":
        torch.save({"state_dict": Evil()}, pt)
        want = r"not a usable checkpoint: .*weights-only loading refuses"
    elif kind == "not a checkpoint":
        torch.save({"weights": torch.zeros(3)}, pt)
        want = r"not a usable checkpoint: .*is missing \['format_version'"
    elif kind == "digest mismatch":
        write_checkpoint(pt)
        (up / "model.pt.sha256").write_text("a" * 64 + "  model.pt\n")
        files.append(str(up / "model.pt.sha256"))
        want = r"model.pt has SHA-256 [0-9a-f]{64}, but model.pt.sha256 says a{64}"
    elif kind == "two files":
        write_checkpoint(pt)
        files.append(str(write_checkpoint(up / "other.pt")))
        want = r"give exactly one checkpoint \(.pt or .pth\), optionally with its .sha256"
    elif kind == "truncated":
        write_checkpoint(pt)
        pt.write_bytes(pt.read_bytes()[:5000])
        want = r"model.pt is not a usable checkpoint: .*not a readable torch file.*keeps its current model"
    else:
        pt = up / "model.txt"
        pt.write_text("hello")
        files = [str(pt)]
        want = r"give exactly one checkpoint"
    choice_before = {"keep": "me"}
    with pytest.raises(gr.Error, match=want):
        aui.adapt_call(aui.load_uploaded_checkpoint, parent_handler, choice_before, files, TINY)
    assert choice_before == {"keep": "me"} and not session_models._MODELS
    assert not Path(EVIL_MARK).exists()
    models = intake.WORK_DIR / "models"
    assert not models.is_dir() or not list(models.iterdir())  # a refused file is not kept


# ------------------------------------------------------------------------------------------------ to label


def test_label_these_next_goes_to_the_adapt_tab_and_into_the_class_zones(parent_handler, tmp_path):
    import gradio as gr

    zones = zones_of(tmp_path, 3, 3)
    batch = zones[0] + zones[1]
    state = inspect_all(parent_handler, batch)[0]
    to_label, gallery, *ticks_upd, tabs, box = aui.send_to_adapt(parent_handler, None, state)
    assert tabs["selected"] == "adapt" and box["open"] is True
    assert len(to_label) == len(gallery) == 6 and len(ticks_upd) == aui.MAX_CLASS_ZONES
    thr = parent_handler.threshold
    ranks = review_ranks(state["rows"], thr)
    first = state["rows"][ranks.index(1)]["name"]
    assert to_label[0]["name"] == first  # closest to the threshold first
    assert all(Path(t["path"]).read_bytes() == Path(next(p for p in batch if Path(p).name == t["name"])).read_bytes()
               for t in to_label)
    assert ticks_upd[0]["choices"] == [t["name"] for t in to_label]

    names = [t["name"] for t in to_label]
    with pytest.raises(gr.Error, match=rf"{names[0]} is ticked as both def_front and ok_front"):
        aui.adapt_call(aui.apply_labels, parent_handler, None, to_label, [None] * 4, [[names[0]], [names[0]], [], []])
    with pytest.raises(gr.Error, match="nothing is ticked"):
        aui.adapt_call(aui.apply_labels, parent_handler, None, to_label, [None] * 4, [[], [], [], []])
    out = aui.apply_labels(parent_handler, None, to_label, [[zones[0][0]], None, None, None],
                           [[names[0], names[1]], [names[2]], [], []])
    z = out[:aui.MAX_CLASS_ZONES]
    left, left_gallery = out[aui.MAX_CLASS_ZONES], out[aui.MAX_CLASS_ZONES + 1]
    assert z[0] == [zones[0][0], to_label[0]["path"], to_label[1]["path"]] and z[1] == [to_label[2]["path"]]
    assert [t["name"] for t in left] == names[3:] and len(left_gallery) == 3
    assert out[-1]["choices"] == names[3:] and out[-1]["value"] == []


def test_label_these_next_without_the_uploads_uses_the_kept_copies(parent_handler, tmp_path):
    zones = zones_of(tmp_path, 2, 2)
    state = inspect_all(parent_handler, zones[0] + zones[1])[0]
    for p in zones[0] + zones[1]:  # Gradio's upload cache was emptied
        Path(p).unlink()
    to_label, *_ = aui.send_to_adapt(parent_handler, None, state)
    assert len(to_label) == 4 and all(t["path"].endswith(".png") and Path(t["path"]).is_file() for t in to_label)
    import gradio as gr

    with pytest.raises(gr.Error, match="inspect some photos first"):
        aui.adapt_call(aui.send_to_adapt, parent_handler, None, session.new_state())


@pytest.mark.slow
def test_inspection_answers_while_an_adaptation_runs(parent_handler, tmp_path):
    """Adaptation holds its own lock, never the inference lock: an inspection in between completes."""
    import time

    zones = zones_of(tmp_path, 5, 5)
    in_training, release = threading.Event(), threading.Event()

    def gate(fraction, desc=""):
        if "stage" in desc or "epoch" in desc:  # inside fit_stages: the adaptation is really under way
            in_training.set()
            release.wait(60)

    worker = threading.Thread(target=aui.run_adaptation, args=(parent_handler, None, TINY, None, zones, gate))
    worker.start()
    try:
        assert in_training.wait(120)
        t0 = time.perf_counter()
        state = inspect_with(parent_handler, None, zones[0][:2])
        took = time.perf_counter() - t0
        assert worker.is_alive() and aui.ADAPT_LOCK.locked()
        assert [r["error"] for r in state["rows"]] == [None, None] and took < 30
        assert "% done" in aui.adaptation_status()
    finally:
        release.set()
        worker.join(120)


def test_page_load_names_the_zones_after_the_models_classes(parent_handler):
    out = aui.on_load(parent_handler, None)
    assert len(out) == 2 * aui.MAX_CLASS_ZONES + 1
    assert out[0]["label"] == "Photos of class def_front" and out[1]["label"] == "Photos of class ok_front"
    assert out[2]["visible"] is False and out[aui.MAX_CLASS_ZONES]["label"] == "Label as def_front"
    assert "default model" in out[-1]
