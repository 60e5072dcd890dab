"""The adapted model's threshold where the recall target cannot be checked: the parent's unless the
held-out photos contradict it (inspectkit.engine.adaptation.evidence_threshold), on generated scores with few defects;
which rule each --threshold mode applies (no training: the choice alone); and benchmarks/threshold_rule.py end to
end on a generated learning curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspectkit.engine.adaptation import (
    EVIDENCE_ALPHA,
    AdaptConfig,
    _choose_threshold,
    evidence_threshold,
    fallback_threshold,
    sign_test_p,
)
from inspectkit.engine.training import TrainConfig
from tests.support import write_images

REPO = Path(__file__).resolve().parents[2]
SERVED = 0.7108163230484645  # final_best_model.pt's threshold


def held_out(defects, oks) -> tuple[np.ndarray, np.ndarray]:
    s = np.array(list(defects) + list(oks), float)
    return np.arange(len(s)) < len(defects), s


def test_photos_the_parent_already_classifies_perfectly_keep_its_threshold():
    """The served model adapted on photos it already classifies: 15 defects and 15 OK parts all on the right side of 0.7108; the threshold stays."""
    y, s = held_out(np.linspace(0.75, 0.999, 15), np.linspace(0.001, 0.4, 15))
    ev = evidence_threshold(y, s, SERVED)
    assert ev["threshold"] == SERVED and ev["moved"] is False
    assert ev["errors_at_parent"] == ev["errors_at_best"] == 0 and "agree with it" in ev["why"]
    assert fallback_threshold(SERVED) == 0.5  # what auto took before it kept the parent's


def test_a_few_contradicting_photos_are_not_enough():
    """2 defects under the threshold: 0.45 would make 2 fewer errors, p = 1/4 under noise: kept."""
    y, s = held_out([0.55, 0.6] + list(np.linspace(0.8, 0.99, 13)), np.linspace(0.01, 0.4, 15))
    ev = evidence_threshold(y, s, SERVED)
    assert ev["threshold"] == SERVED and ev["moved"] is False
    assert (ev["errors_at_parent"], ev["errors_at_best"], ev["right_only_at_best"], ev["right_only_at_parent"]) == \
        (2, 0, 2, 0)
    assert ev["p_value"] == pytest.approx(0.25) and ev["best_threshold"] < 0.55
    assert "do not contradict it enough" in ev["why"] and "p = 0.25 > 0.05" in ev["why"]


def test_many_contradicting_photos_move_it_down():
    """8 of 15 defects score 0.5-0.69 under the parent's 0.7108, no OK part above 0.4: p = 2^-8, moved between."""
    y, s = held_out(list(np.linspace(0.5, 0.69, 8)) + list(np.linspace(0.8, 0.99, 7)), np.linspace(0.01, 0.4, 15))
    ev = evidence_threshold(y, s, SERVED)
    assert ev["moved"] is True and 0.4 < ev["threshold"] < 0.5
    logit = lambda p: np.log(p / (1 - p))
    assert logit(ev["threshold"]) == pytest.approx((logit(0.4) + logit(0.5)) / 2)  # mid-gap, in logits
    assert (ev["errors_at_parent"], ev["errors_at_best"], ev["changed_verdicts"]) == (8, 0, 8)
    assert ev["p_value"] == pytest.approx(2 ** -8) and "contradict it:" in ev["why"]


def test_many_false_alarms_move_it_up():
    y, s = held_out(np.linspace(0.8, 0.99, 15), list(np.linspace(0.52, 0.6, 6)) + list(np.linspace(0.01, 0.3, 9)))
    ev = evidence_threshold(y, s, 0.5)
    assert ev["moved"] is True and 0.6 < ev["threshold"] < 0.8 and ev["p_value"] == pytest.approx(2 ** -6)


@pytest.mark.parametrize("right_new, right_old, moved", [(4, 0, False), (5, 0, True), (6, 1, False), (7, 1, True),
                                                         (9, 2, True), (8, 3, False)])
def test_the_sign_test_decides_on_the_photos_whose_verdict_changes(right_new, right_old, moved):
    """b defects at 0.46-0.64 and c OK parts at 0.65-0.69 under a parent's 0.7: the threshold that makes fewest
    errors is under all of them, changing b + c verdicts; the move needs P(Binomial(b + c, 1/2) >= b) <= 0.05."""
    y, s = held_out(list(np.linspace(0.46, 0.64, right_new)) + list(np.linspace(0.8, 0.99, 10)),
                    list(np.linspace(0.65, 0.69, right_old)) + list(np.linspace(0.01, 0.3, 12)))
    ev = evidence_threshold(y, s, 0.7)
    p = sign_test_p(right_new, right_old)
    assert ev["moved"] is moved is (p <= EVIDENCE_ALPHA)
    assert (ev["right_only_at_best"], ev["right_only_at_parent"]) == (right_new, right_old)
    if moved:
        assert ev["p_value"] == pytest.approx(p) and ev["threshold"] < 0.46


def test_sign_test_by_hand():
    assert sign_test_p(5, 0) == 1 / 32 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(7, 1) == pytest.approx(9 / 256)  # (1 + 8) / 2^8
    assert sign_test_p(1, 1) == pytest.approx(3 / 4)


def test_no_held_out_photo_keeps_the_parents():
    ev = evidence_threshold([], [], 0.6)
    assert ev["threshold"] == 0.6 and ev["moved"] is False


def test_under_noise_the_rule_rarely_moves_and_a_clearly_wrong_threshold_moves():
    """benchmarks/threshold_rule.py's generated scores: the parent's threshold right (shift 0) or 3 logits too high."""
    from benchmarks.threshold_rule import generated

    g = generated(repeats=200, seed=1, parents=(0.6,), shifts=(0.0, 3.0))
    right, wrong = g["rows"]
    assert right["moved"] <= 0.05 and right["accuracy_new"] >= right["accuracy_parent"] - 0.002
    assert wrong["moved"] >= 0.5 and wrong["accuracy_new"] > wrong["accuracy_parent"]


# ------------------------------------------------------------------------------------------------ the modes


PARENT = {"class_names": ["def_front", "ok_front"], "defect_index": 0, "threshold": SERVED}


def choose(mode: str, where: str, y, s, target: float = 0.998):
    labels = np.where(np.asarray(y), 0, 1)
    probs = np.stack([s, 1 - np.asarray(s)], axis=1)
    return _choose_threshold(AdaptConfig(threshold=mode), PARENT, TrainConfig(target_recall=target), where,
                             labels, probs)[0]


def test_auto_keeps_the_parents_where_held_out_photos_agree_and_records_why():
    y, s = held_out(np.linspace(0.75, 0.999, 15), np.linspace(0.001, 0.4, 15))
    c = choose("auto", "held-out", y, s)
    assert c["threshold"] == SERVED and c["kept_from_parent"] is True and c["applied"] == "parent unless contradicted"
    assert "15 validation defects; checking recall >= 0.998 needs at least 500" in c["why"]
    assert c["evidence"]["errors_at_parent"] == 0 and c["rule"]["threshold"] < 0.75  # the recall rule's, recorded


def test_auto_moves_where_held_out_photos_clearly_contradict():
    y, s = held_out(list(np.linspace(0.5, 0.69, 8)) + list(np.linspace(0.8, 0.99, 7)), np.linspace(0.01, 0.4, 15))
    c = choose("auto", "held-out", y, s)
    assert c["kept_from_parent"] is False and c["threshold"] < 0.5 and c["evidence"]["moved"] is True


def test_in_sample_keeps_the_parents_whatever_the_photos_say():
    y, s = held_out(list(np.linspace(0.5, 0.69, 8)) + list(np.linspace(0.8, 0.99, 7)), np.linspace(0.01, 0.4, 15))
    c = choose("auto", "in-sample", y, s)
    assert c["threshold"] == SERVED and c["kept_from_parent"] is True and "in-sample" in c["why"]
    assert "evidence" not in c


@pytest.mark.parametrize("where", ["held-out", "in-sample"])
def test_lower_and_parent_modes(where):
    y, s = held_out(np.linspace(0.75, 0.999, 15), np.linspace(0.001, 0.4, 15))
    low = choose("lower", where, y, s)
    assert low["threshold"] == 0.5 and low["kept_from_parent"] is False and "class-balanced" in low["why"]
    par = choose("parent", where, y, s)
    assert par["threshold"] == SERVED and par["why"] == "asked for (--threshold parent)"


def test_auto_takes_the_recall_rule_where_validation_can_check_it():
    """At a 0.9 recall target, 10 validation defects check it: train.py's rule, no 'kept_from_parent'."""
    y, s = held_out(np.linspace(0.3, 0.99, 15), np.linspace(0.001, 0.2, 15))
    c = choose("auto", "held-out", y, s, target=0.9)
    assert c["applied"] == "recall rule" and "kept_from_parent" not in c and 0.2 < c["threshold"] < 0.5


# ------------------------------------------------------------------------------------------------ the benchmark


def _fake_curve(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, Path, Path]:
    """A line folder (24 defects, 20 OK), a casting test split (8 + 8, and a train split), and a learning-curve
    JSON whose runs carry generated scores: seed 3 without validation scores (the stand-in), seed 4 with them
    (exact), seed 0 without any scores (as the committed curve's first seeds)."""
    from benchmarks.learning_curve import class_order, draw
    from inspectkit.data import folders as D

    line, casting = tmp_path / "line", tmp_path / "casting"
    write_images(line / "def_front", rng, 24, True, prefix="d", size=(32, 32))
    write_images(line / "ok_front", rng, 20, False, prefix="o", size=(32, 32))
    write_images(casting / "test" / "def_front", rng, 8, True, prefix="cd", size=(32, 32))
    write_images(casting / "test" / "ok_front", rng, 8, False, prefix="co", size=(32, 32))
    for k, name in enumerate(("def_front", "ok_front")):  # the split layout has a train/ beside test/
        write_images(casting / "train" / name, rng, 2, k == 0, prefix="ct", size=(32, 32))
    names = ["def_front", "ok_front"]
    ds = D.load_folder(line, None, names[0], names)
    test_y = D.load_folder(casting, "test", names[0], names).labels == 0
    runs = []
    for seed, with_val in ((0, None), (3, False), (4, True)):
        run = {"seed": seed, "per_class": 10}
        if with_val is not None:
            _, rest = draw(class_order(ds.labels, 2, seed), 10, len(ds))
            y = ds.labels[rest] == 0
            s = np.where(y, rng.uniform(0.55, 1.0, len(y)), rng.uniform(0.0, 0.45, len(y))).round(6)
            cs = np.where(test_y, 0.9, 0.1)
            counts = lambda sc, yy: {"missed_defects": int((~(sc >= 0.5) & yy).sum()),
                                     "false_alarms": int(((sc >= 0.5) & ~yy).sum())}
            run["adapted"] = {"threshold": 0.5, "line_rest": counts(s, y), "casting_test": counts(cs, test_y),
                              "scores": {"line_rest": s.tolist(), "casting_test": cs.tolist()}}
            if with_val:  # 6 defects between 0.55 and 0.65 under a parent's 0.7: the evidence moves it
                run["adapted"]["validation_scores"] = {
                    "defect": [0.56, 0.58, 0.6, 0.61, 0.63, 0.64, 0.9, 0.1, 0.2, 0.3, 0.05, 0.15],
                    "is_defect": [True] * 7 + [False] * 5, "new_line": [True] * 12}
        else:
            run["adapted"] = {"threshold": 0.5}
        runs.append(run)
    curve = tmp_path / "curve.json"
    curve.write_text(json.dumps({"checkpoint": "nowhere.pt", "parent_weights_sha256": "x", "runs": runs}))
    return curve, line, casting


def test_the_benchmark_end_to_end_on_a_generated_curve(tmp_path, rng):
    from benchmarks import threshold_rule as tr

    curve, line, casting = _fake_curve(tmp_path, rng)
    out = tmp_path / "out" / "rule"
    assert tr.main(["--curve", str(curve), "--line", str(line), "--casting", str(casting), "--parent-threshold",
                    "0.7", "--draws", "20", "--repeats", "50", "--val-fraction", "0.3", "--reports", "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["stored"]["learning_curve"]["with_unused_and_casting_scores"] == [[3, 10], [4, 10]]
    assert doc["stored"]["learning_curve"]["with_validation_scores"] == 1
    ex = doc["exact"]
    assert ex["models"] == 1 and ex["runs"][0]["seed"] == 4 and ex["runs"][0]["moved"] is True
    assert ex["runs"][0]["thresholds"]["today"] == 0.5 and ex["runs"][0]["thresholds"]["parent"] == 0.7
    px = doc["proxy"]
    assert px["models"] == 1 and px["runs"][0]["seed"] == 3 and px["runs"][0]["stand_in_per_class"] == 3
    assert px["runs"][0]["scored_photos"] == 24 - 6  # 14 + 10 unused, less 3 per class standing in
    b = px["per_budget"][0]
    assert b["per_class"] == 10 and b["draws"] == 20 and b["new_better"] + b["today_better"] + b["tie"] == 1
    # the generated scores separate at 0.5: today's rule and the parent's make no error on the unused photos
    assert b["line_b_today"] == 1.0 and b["casting_today"] == b["casting_new"] == 1.0
    md = out.with_suffix(".md").read_text()
    assert "## Exact recomputation" in md and "| 10 | 1 | 100.00 % |" in md and "## Generated scores" in md


def test_the_benchmark_refuses_labels_that_do_not_match_the_stored_counts(tmp_path, rng):
    from benchmarks import threshold_rule as tr

    curve, line, casting = _fake_curve(tmp_path, rng)
    doc = json.loads(curve.read_text())
    doc["runs"][1]["adapted"]["line_rest"]["missed_defects"] += 1
    curve.write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match="do not match"):
        tr.main(["--curve", str(curve), "--line", str(line), "--casting", str(casting), "--parent-threshold", "0.7",
                 "--draws", "2", "--repeats", "5", "--reports", "--out", str(tmp_path / "x")])


# ------------------------------------------------------------------------------------------------ the report


def test_the_committed_report_is_the_scripts_markdown_and_the_docs_quote_it():
    from benchmarks.threshold_rule import markdown

    doc = json.loads((REPO / "reports/line-b/threshold_rule.json").read_text())
    assert (REPO / "reports/line-b/threshold_rule.md").read_text() == markdown(doc)
    flat = " ".join((REPO / "docs/research/adaptation.md").read_text().split())
    e = doc["exact"]["per_budget"][0]  # adaptation round 8's ten models, the first that keep their validation scores
    assert doc["exact"]["models"] == e["models"] == 10
    assert (f"the new rule moved the threshold in {round(e['moved'] * e['models'])} of them and scored "
            f"{100 * e['line_b_new']:.2f} % on the unused line-B photos against {100 * e['line_b_today']:.2f} % for the "
            f"old rule (0.5) and {100 * e['line_b_parent']:.2f} % for J's threshold kept") in flat
    assert (f"the old rule made fewer errors on {e['today_better']} models, the new one on {e['new_better']}, "
            f"{e['tie']} tied") in flat
    b = doc["proxy"]["per_budget"][0]
    assert (f"{100 * b['line_b_today']:.2f} % at the old rule against {100 * b['line_b_new']:.2f} % at the new "
            f"rule") in flat
    assert f"fewer errors in {b['new_better']} of the {b['models']} models, more in {b['today_better']}" in flat
    assert f"the casting test split was {100 * b['casting_today']:.2f} % at both" in flat
    assert b["casting_today"] == b["casting_new"] and b["moved"] == 0.0  # "which never moved"
    g = {(r["parent_threshold"], r["shift"]): r for r in doc["generated"]["rows"]}
    cost = [100 * (g[(t, 0.0)]["accuracy_parent"] - g[(t, 0.0)]["accuracy_today"]) for t in (0.6028, 0.7108)]
    gain = [100 * (g[(t, 1.0)]["accuracy_today"] - g[(t, 1.0)]["accuracy_new"]) for t in (0.6028, 0.7108)]
    assert (f"the new rule moved in {100 * g[(0.6028, 0.0)]['moved']:.1f} % of repeats and the old rule cost "
            f"{cost[0]:.1f} points at J's 0.603 and {cost[1]:.1f} at 0.7108") in flat
    assert f"the old rule gained {gain[0]:.1f} and {gain[1]:.1f} points" in flat
