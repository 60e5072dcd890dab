"""benchmarks/learning_curve.py end to end on small generated data: a parent written by the real save function, a
generated 'line B' and a generated casting tree (its test split measures forgetting)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_checkpoint, write_images
from inspectkit.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import learning_curve  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
                                "--size", "64", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    return json.loads(out.with_suffix(".json").read_text()), out, parent


def test_every_adapted_model_is_measured_on_the_unused_photos_and_the_casting_test_split(curve):
    doc, out, parent = curve
    assert doc["size"] == 64 and len(doc["runs"]) == 1
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
    assert "adapted: `adapt.py` with replay of line A, at 64 px;" in md
    assert "| 12 | 1 |" in md
    assert load_checkpoint(parent)["preprocessing"]["size"] == 96  # the parent is measured at its own size


def test_merge_refuses_a_run_twice_and_outputs_of_different_sizes(curve, tmp_path):
    doc, out, _ = curve
    with pytest.raises(SystemExit, match="seed 0, 12 per class is in two outputs"):
        learning_curve.main(["--merge", str(out.with_suffix(".json")), str(out.with_suffix(".json")),
                             "--out", str(tmp_path / "m")])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**doc, "size": 0, "runs": []}))
    with pytest.raises(SystemExit, match=r"one recipe \(--keep, --size\)"):
        learning_curve.main(["--merge", str(out.with_suffix(".json")), str(other), "--out", str(tmp_path / "m")])
