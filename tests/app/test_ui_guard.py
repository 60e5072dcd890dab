"""UNUSABLE and drift in the UI: the Inspect tab's badge, colour, counts, gallery, table, CSV, "Label these next",
threshold re-decision and, over a long drop, the drift alarm; the Model tab's guard summary (or "guard off:
<reason>"). Rendering with the fake handler; the real handler on the generated-casting guard (``guarded_checkpoint``)
and on a checkpoint without one (``tiny_checkpoint``)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import app
from inspectkit.ui.adapt.tab import send_to_adapt
from inspectkit.ui.common import session
from inspectkit.ui.common.export import CSV_HEADERS
from inspectkit.ui.common.job import display_copy
from inspectkit.ui.common.job_view import summary_html
from inspectkit.ui.common.render import (
    TABLE_HEADERS,
    _esc,
    badge_html,
    blend,
    not_judged,
    reason_counts,
    verdict_text,
)
from inspectkit.ui.common.report_view import initial_status, model_status
from inspectkit.ui.common.session import DETAIL_OUTPUTS
from tests.app_server import FakeHandler, by_name, inspect_all
from tests.support import synthetic_casting

SIZES = [(96, 96), (96, 120), (120, 96)]


class GuardedFake(FakeHandler):
    """The fake handler as if it had a guard: a photo with "dark" in its name is UNUSABLE, too dark."""

    unusable = {"dark": "too dark"}
    guard = object()  # only "is there one" is read by the Inspect tab


def _csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))


def _write(folder: Path, name: str, rgb: np.ndarray) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    cv2.imwrite(str(p), np.ascontiguousarray(rgb[:, :, ::-1]))
    return str(p)


@pytest.fixture
def fake_batch(tmp_path) -> list[str]:
    """A defect, an OK part and a dark photo (UNUSABLE for GuardedFake), as uploaded files."""
    r = np.random.default_rng(0)
    return [_write(tmp_path, "def_1.png", synthetic_casting(r, True)),
            _write(tmp_path, "ok_1.png", synthetic_casting(r, False)),
            _write(tmp_path, "dark_ok_1.png", (synthetic_casting(r, False) * 0.3).astype(np.uint8))]


# ------------------------------------------------------------------------------------------ rendering functions


@pytest.mark.parametrize("verdict, reason, css, text", [
    ("UNUSABLE", "too dark", "unusable", "UNUSABLE \u2014 too dark"),
    ("UNUSABLE", "not a casting", "unusable", "UNUSABLE \u2014 not a casting"),
    ("OK", None, "ok", "OK"),
    ("DEFECT", None, "defect", "DEFECT"),
])
def test_badge_has_its_own_colour_and_text(verdict, reason, css, text):
    item = {"name": "part.png", "error": None, "label": "ok_front", "defect_probability": 0.2, "novelty": 3.5,
            "probabilities": {"def_front": 0.2, "ok_front": 0.8}, "unusable_reason": reason}
    html = badge_html(item, verdict, 0.5, None, GuardedFake())
    badge = re.search(r"<span class='badge (\w+)'>([^<]*)</span>", html)
    assert badge.groups() == (css, text)
    assert verdict_text(verdict, reason) == text
    judged = verdict != "UNUSABLE"
    # the network's probability is still there; for UNUSABLE it is greyed and said to be no verdict
    assert "0.200" in html and ("not-judged" not in html) == judged and ("Not judged" not in html) == judged
    if not judged:
        assert "what the network saw" in html and "novelty 3.5" in html and "OK (ok_front)" in html


def test_unusable_colour_is_neither_ok_green_nor_defect_red():
    colours = {k: re.search(rf"\.badge\.{k} \{{background:(#[0-9a-f]{{6}})", app.CSS).group(1)
               for k in ("ok", "defect", "unusable", "error")}
    assert len(set(colours.values())) == 4, colours
    assert re.search(r"\.count\.unusable \{color:#[0-9a-f]{6}\}", app.CSS)


@pytest.mark.parametrize("verdicts, reasons, want", [
    (["OK", "DEFECT", "UNUSABLE"], [None, None, "too dark"], ["1 DEFECT", "1 OK", "1 UNUSABLE</span> (1 too dark)"]),
    (["UNUSABLE", "UNUSABLE", "UNUSABLE", "OK"], ["too dark", "out of focus", "too dark", None],
     ["0 DEFECT", "1 OK", "3 UNUSABLE</span> (2 too dark, 1 out of focus)"]),
    (["OK", "OK"], [None, None], ["0 DEFECT", "2 OK", "0 UNUSABLE"]),
])
def test_summary_counts_unusable_on_its_own(verdicts, reasons, want):
    items = [{"name": f"{i}.png", "error": None, "defect_probability": 0.3, "unusable_reason": r}
             for i, r in enumerate(reasons)]
    html = summary_html(items, verdicts, 0.5, None, guard_on=True)
    for w in want:
        assert w in html, html
    assert "other" not in html  # UNUSABLE is a verdict, not "other"
    assert reason_counts(items, verdicts) == {r: reasons.count(r) for r in reasons if r}


def test_summary_of_a_model_without_a_guard_has_no_unusable_count():
    items = [{"name": "a.png", "error": None, "defect_probability": 0.3}]
    assert "UNUSABLE" not in summary_html(items, ["OK"], 0.5, None, guard_on=False)


def test_not_judged_greys_the_overlay_and_marks_it():
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[..., 0] = 255  # saturated red: a hot heat map
    out = not_judged(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    body = out[30:100, 20:140].astype(int)
    assert (body.max(axis=2) - body.min(axis=2)).mean() < 0.5 * 255  # mostly desaturated
    assert np.median(out[:13]) < 100 and (out[:13] > 200).any()  # a dark band with white text


# ------------------------------------------------------------------------------------------ the Inspect tab


def _decoded(path: str) -> np.ndarray:
    return cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1].astype(int)


def test_inspect_tab_shows_unusable_everywhere(fake_batch):
    h = GuardedFake()
    v = by_name(inspect_all(h, fake_batch))
    state, summary, table = v["state"], v["summary"], v["table"]
    assert [r[1] for r in table] == ["DEFECT", "OK", "UNUSABLE"]
    assert "1 UNUSABLE</span> (1 too dark)" in summary and "1 DEFECT" in summary and "1 OK" in summary
    # the table: its own columns, the probability marked as not judged
    reason_col, novelty_col = TABLE_HEADERS.index("unusable reason"), TABLE_HEADERS.index("novelty")
    assert [r[reason_col] for r in table] == ["", "", "too dark"]
    assert table[2][novelty_col] == "9" and table[0][novelty_col] == "0.8"
    assert table[2][2] == "0.2000 (not judged)" and table[1][2] == "0.2000"
    # the CSV: verdict, reason and novelty; the label is what the network's probabilities point to
    rows = _csv(v["csv"])
    want = [("DEFECT", ""), ("OK", ""), ("UNUSABLE", "too dark")]
    assert [(r["verdict"], r["unusable_reason"]) for r in rows] == want
    assert rows[2]["label"] == "ok_front" and float(rows[2]["novelty"]) == 9.0
    # the gallery: right after the defect, with its caption and a greyed, marked overlay
    tile, cap = v["gallery"][1]
    assert cap == "dark_ok_1.png \u2014 UNUSABLE \u2014 too dark (p=0.200, not judged)"
    photo, heat = display_copy(state["rows"][2])
    normal = blend(photo, heat, 0.45, "jet")
    assert np.abs(_decoded(tile) - not_judged(normal).astype(int)).mean() < 4  # the same picture, as a JPEG
    # the detail panel of the UNUSABLE photo
    d = by_name(session.select(h, state, 1), DETAIL_OUTPUTS)
    assert "UNUSABLE \u2014 too dark" in d["badge"] and "badge unusable" in d["badge"]
    assert "NEEDS REVIEW" not in d["badge"]
    assert np.array_equal(d["overlay"], not_judged(normal)) and not np.array_equal(d["original"], d["overlay"])
    assert set(d["probabilities"]) == {"Defect (def_front) (not judged)", "OK (ok_front) (not judged)"}


@pytest.mark.parametrize("threshold, others", [(0.0, ["DEFECT", "DEFECT"]), (0.15, ["DEFECT", "DEFECT"]),
                                               (0.5, ["DEFECT", "OK"]), (0.95, ["OK", "OK"]), (1.0, ["OK", "OK"])])
def test_the_threshold_slider_keeps_unusable(fake_batch, threshold, others):
    h = GuardedFake()
    state = inspect_all(h, fake_batch)[0]
    seen = h.images_seen
    v = by_name(session.redecide(h, state, threshold))
    assert [r[1] for r in v["table"]] == others + ["UNUSABLE"]
    assert [r["verdict"] for r in _csv(v["csv"])] == others + ["UNUSABLE"]
    assert "1 UNUSABLE" in v["summary"] and h.images_seen == seen  # no forward pass


def test_label_these_next_lists_unusable_first(fake_batch, tmp_path):
    """At a threshold of 0.85 the defect (p 0.9) is the nearest and the dark photo (p 0.2) as far as the OK part:
    the UNUSABLE photo still comes first, in the list, the CSV's rank and what is sent to the Adapt tab."""
    h = GuardedFake()
    state = inspect_all(h, fake_batch)[0]
    v = by_name(session.redecide(h, state, 0.85))  # the defect (0.9) is closest, the two 0.2 photos far
    label_next = v["label_next"]
    rows = [line for line in label_next.splitlines() if line.startswith("| ") and ".png" in line]
    assert [re.search(r"\| (\S+\.png) \|", r).group(1) for r in rows] == ["dark_ok_1.png", "def_1.png", "ok_1.png"]
    assert "UNUSABLE \u2014 too dark" in rows[0] and "(not judged)" in rows[0]
    assert "UNUSABLE first" in label_next
    assert [r["review_rank"] for r in _csv(v["csv"])] == ["2", "3", "1"]
    # and the photos sent to the Adapt tab to be labelled follow the same order
    sent, *_ = send_to_adapt(h, None, state)
    assert [s["name"] for s in sent] == ["dark_ok_1.png", "def_1.png", "ok_1.png"]


# ------------------------------------------------------------------------------------- real handler, real guard


@pytest.fixture(scope="module")
def guarded(guarded_checkpoint):
    from inspectkit.inference.handler import InferenceHandler

    return InferenceHandler(str(guarded_checkpoint), backend="torch")


@pytest.fixture(scope="module")
def unguarded(tiny_checkpoint):
    from inspectkit.inference.handler import InferenceHandler

    return InferenceHandler(str(tiny_checkpoint), backend="torch")


def test_a_blank_frame_is_unusable_on_the_inspect_tab_at_any_threshold(guarded, tmp_path):
    r = np.random.default_rng(2)
    files = [_write(tmp_path, "blank.png", np.full((96, 96, 3), 255, np.uint8)),
             _write(tmp_path, "part.png", synthetic_casting(r, False))]
    v = by_name(inspect_all(guarded, files))
    state, table = v["state"], v["table"]
    assert table[0][1] == "UNUSABLE" and table[1][1] in ("OK", "DEFECT")
    reason = state["rows"][0]["unusable_reason"]
    assert reason in ("overexposed", "not a casting") and f"UNUSABLE \u2014 {reason}" in v["badge"]
    assert "1 UNUSABLE" in v["summary"]
    assert v["label_next"].index("blank.png") < v["label_next"].index("part.png")
    for t in (0.0, 0.01, 0.99, 1.0):
        table = by_name(session.redecide(guarded, state, t))["table"]
        assert table[0][1] == "UNUSABLE"
        if t == 0.0:  # everything the network judged is DEFECT at threshold 0: the slider works, UNUSABLE stays
            assert table[1][1] == "DEFECT"


def test_the_model_tab_shows_the_guard_summary(guarded):
    status, _, details = model_status(guarded)
    assert "guard on" in status and "guard off" not in status
    g = guarded.guard.summary()
    row = next(line for line in details.splitlines() if line.startswith("| guard |"))
    assert "**on**" in row and str(g["novelty_threshold"]) in row and "too dark" in row and "generated" in row
    assert any(line.startswith("| drift monitor | CUSUM") for line in details.splitlines())
    assert "guard on" in initial_status(guarded)


def test_a_model_without_a_guard_says_guard_off(unguarded, tmp_path):
    why = unguarded.guard_off_reason
    assert unguarded.guard is None and why
    status, _, details = model_status(unguarded)
    want = f"guard off: {_esc(why)}"
    assert want in status and want in initial_status(unguarded)  # the line above the tabs
    assert "| guard | **guard off: " in details  # the Model tab
    files = [_write(tmp_path, "blank.png", np.full((96, 96, 3), 255, np.uint8))]
    v = by_name(inspect_all(unguarded, files))
    assert v["table"][0][1] in ("OK", "DEFECT") and "UNUSABLE" not in v["badge"]  # nobody to say otherwise
    assert "count unusable" not in v["summary"]
    assert _csv(v["csv"])[0]["unusable_reason"] == "" and _csv(v["csv"])[0]["novelty"] == ""
    assert f"Drift monitor off: guard off: {_esc(why)}" in v["summary"]


# ------------------------------------------------------------------------------------------- a long drop: drift


@pytest.fixture(scope="module")
def line_photos(tmp_path_factory) -> dict:
    """A steady line: 60 generated castings (both classes, three frame sizes); then a failing lamp: 60 more at 35 %
    brightness."""
    d = tmp_path_factory.mktemp("line")
    r = np.random.default_rng(11)
    normal = [_write(d, f"a{i:03d}_part.png", synthetic_casting(r, i % 4 == 0, SIZES[i % 3])) for i in range(60)]
    dark = [_write(d, f"b{i:03d}_dim.png", (synthetic_casting(r, i % 4 == 0, SIZES[i % 3]) * 0.35).astype(np.uint8))
            for i in range(60)]
    return {"normal": normal, "dark": dark}


@pytest.mark.slow
@pytest.mark.slow
def test_summary_leads_with_the_drift_alarm_when_the_lamp_fails(guarded, line_photos):
    files = line_photos["normal"] + line_photos["dark"]
    v = by_name(inspect_all(guarded, files))
    state, summary = v["state"], v["summary"]
    # the alarm is the summary's first line, and names the photo (input order) and what changed
    assert summary.startswith("<div class='drift alarm'"), summary[:200]
    m = re.search(r"DRIFT ALARM from photo (\d+) \(([^)]+)\)", summary)
    assert m, summary[:400]
    photo, name = int(m.group(1)), m.group(2)
    assert 60 < photo <= 120 and name == Path(files[photo - 1]).name and "darker photos" in summary
    drift = state["drift"]
    assert drift["alarm"] and drift["photos"] == 120 and "darker" in {c["indicator"] for c in drift["changed"]}
    # UNUSABLE photos are counted with their reasons, and the CSV has the guard's columns for every photo
    rows = {r["file"]: r for r in _csv(v["csv"])}
    assert len(rows) == 120 and set(CSV_HEADERS) <= set(next(iter(rows.values())))
    dim = [rows[Path(p).name] for p in line_photos["dark"]]
    n_unusable = sum(r["verdict"] == "UNUSABLE" for r in rows.values())
    assert sum(r["verdict"] == "UNUSABLE" and r["unusable_reason"] == "too dark" for r in dim) >= 50
    assert f"{n_unusable} UNUSABLE</span>" in summary and "too dark" in summary
    assert all(r["novelty"] != "" for r in rows.values())
    assert [int(rows[Path(p).name]["photo"]) for p in files[:3]] == [1, 2, 3]
    # the gallery: defects, then UNUSABLE, then the rest
    order = [cap.split(" \u2014 ")[1].split(" ")[0] for _, cap in v["gallery"]]
    groups = [0 if x == "DEFECT" else 1 if x == "UNUSABLE" else 2 for x in order]
    assert groups == sorted(groups) and order.count("UNUSABLE") == n_unusable
    unusable_caps = [cap for _, cap in v["gallery"] if " \u2014 UNUSABLE \u2014 " in cap]
    assert unusable_caps and all("not judged" in c for c in unusable_caps)
    first = unusable_caps[0].split(" \u2014 ")[0]
    reason_col = TABLE_HEADERS.index("unusable reason")
    assert next(r for r in v["table"] if r[0] == first)[reason_col] != ""


def test_a_steady_line_has_no_drift_alarm(guarded, line_photos):
    v = by_name(inspect_all(guarded, line_photos["normal"]))
    assert v["summary"].startswith("<div class='drift steady'>No drift over 60 photos"), v["summary"][:200]
    assert "DRIFT ALARM" not in v["summary"] and not v["state"]["drift"]["alarm"]
