"""README.md's casting figures match the committed reports and model they were copied from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
EVALUATION = json.loads((REPO / "reports" / "evaluation.json").read_text())

SHIFT_ROWS = {  # README row label -> key in the evaluation's robustness section
    "zoomed out to 0.85": "zoom_out_0.85", "zoomed in to 1.15": "zoom_in_1.15",
    "shifted +8 % (right, down)": "shift_+8%", "shifted −8 % (left, up)": "shift_-8%",
    "rotated 15°": "rotate_15", "darker (gain 0.75)": "darker_0.75", "brighter (gain 1.25)": "brighter_1.25",
    "lower contrast (0.8)": "low_contrast_0.8",
}


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def table_after(anchor: str) -> dict[str, list[str]]:
    """The first Markdown table after ``anchor`` in README.md: its first cell -> the other cells (bold removed)."""
    assert anchor in README, anchor
    lines = README[README.index(anchor):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = {}
    for ln in lines[start + 2:]:  # after the header and the |---| line
        if not ln.startswith("|"):
            break
        cells = [c.strip().strip("*") for c in ln.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


RESULTS = table_after("Decision threshold **")
ROBUSTNESS = table_after("The same test images with the camera framing or light changed")
ROUND5 = table_after("**Round 5 (this model).**")


@pytest.mark.parametrize("label, part", [("test, all", "all"), ("test, twin-free (no exact or near twin in train)",
                                                                 "twin_free")])
def test_results_table_matches_the_evaluation_report(label, part):
    r = EVALUATION["test"][part]
    n, acc, auc, missed, false_alarms = RESULTS[label]
    assert (int(n), acc, int(missed), int(false_alarms)) == (r["n"], pct(r["accuracy"]), r["missed_defects"],
                                                             r["false_alarms"])
    assert float(auc) == pytest.approx(r["roc_auc"], abs=5e-6)


@pytest.mark.parametrize("label, key", SHIFT_ROWS.items())
def test_robustness_table_matches_the_evaluation_report(label, key):
    r = EVALUATION["robustness"][key]
    assert ROBUSTNESS[label] == [pct(r["accuracy"]), str(r["missed_defects"]), str(r["false_alarms"])]


def test_stated_threshold_and_misses_are_the_committed_models():
    from inspectkit.checkpoint import load_checkpoint

    ckpt = load_checkpoint(REPO / "final_best_model.pt")
    assert f"Decision threshold **{ckpt['threshold']:.4f}**" in README
    assert EVALUATION["model"]["threshold"] == ckpt["threshold"]
    for m in EVALUATION["misclassified"]:
        name = Path(m["file"]).stem
        assert f"`{name}`, p(defect) {m['probabilities']['def_front']:.3f}" in README or \
            f"`{name}`, {m['probabilities']['def_front']:.3f}" in README, name


def test_selection_table_matches_the_round_5_comparison():
    res = json.loads((REPO / "reports" / "model_selection_casting_round5.json").read_text())
    letter = {m["checkpoint"]: re.search(r"casting-224(\w)/", m["checkpoint"]).group(1).upper() for m in res["models"]}
    rows = {k.split()[0]: v for k, v in ROUND5.items()}  # "J (committed)" -> "J"
    assert set(rows) == set(letter.values())
    assert f"{letter[res['best']]} (committed)" in ROUND5
    for m in res["models"]:
        name = letter[m["checkpoint"]]
        assert rows[name][1:] == [f"{m['robust_score']:.4f}", f"{m['selection_loss']:.4f}", pct(m["accuracy"]),
                                  str(m["missed_defects"]), str(m["false_alarms"]),
                                  pct(m["robustness_worst_accuracy"]), f"{m['threshold']:.4f}"], name


def test_earlier_rounds_table_matches_their_comparison():
    res = json.loads((REPO / "reports" / "model_selection_casting.json").read_text())
    letter = {m["checkpoint"]: re.search(r"casting-(?:224|300)(\w)/", m["checkpoint"]).group(1).upper()
              for m in res["models"]}
    table = table_after("**Earlier rounds.**")
    assert set(table) == set(letter.values())
    for m in res["models"]:
        name = letter[m["checkpoint"]]
        assert table[name][1:] == [
            f"{m['selection_loss']:.4f}", f"{m['log_loss']:.4f}", f"{m['roc_auc']:.5f}", pct(m["accuracy"]),
            str(m["missed_defects"]), str(m["false_alarms"])], name


def test_stated_training_time_is_the_committed_models():
    total = EVALUATION["timing"]["total_s"]
    assert f"The committed run took **{total:,.0f} s" in README


def test_reproduction_claim_matches_its_report():
    """The rerun of the training command gave the committed weights and threshold, as README says."""
    from inspectkit.checkpoint import load_checkpoint, weights_digest

    rep = json.loads((REPO / "reports" / "reproduction_casting.json").read_text())
    committed, rerun = rep["models"]
    assert committed["checkpoint"] == "final_best_model.pt"
    assert committed["weights_sha256"] == rerun["weights_sha256"]
    assert committed["threshold"] == rerun["threshold"]
    ckpt = load_checkpoint(REPO / "final_best_model.pt")
    assert weights_digest(ckpt["state_dict"]) == committed["weights_sha256"]
    assert f"the same threshold {ckpt['threshold']!r}" in " ".join(README.split())


RELIABILITY = REPO / "reports" / "reliability"
FLAT = " ".join(README.split())  # line breaks as spaces: a figure may wrap


def _reliability(name: str) -> dict:
    return json.loads((RELIABILITY / f"{name}.json").read_text())


def test_reliability_runs_were_made_on_the_committed_model():
    digest = (REPO / "final_best_model.pt.sha256").read_text().split()[0]
    for name in ("fuzz", "fuzz_torch"):
        assert _reliability(name)["checkpoint_sha256"] == digest, name
    for name in ("load", "soak", "load_first_start"):
        assert _reliability(name)["environment"]["model"]["sha256"] == digest, name


def test_fuzz_figures_match_their_reports():
    fuzz, torch_fuzz = _reliability("fuzz"), _reliability("fuzz_torch")
    o = fuzz["outcomes"]
    assert (f"**{fuzz['cases']:,} cases in {fuzz['elapsed_s']:.0f} s, {fuzz['violations']} contract violations** "
            f"({o['refused']:,} refused with a message, {o['accepted']:,} accepted, {o['batch']:,} mixed batches; "
            f"`--seed {fuzz['seed']}`") in FLAT
    assert (f"{torch_fuzz['cases']:,} cases in {torch_fuzz['elapsed_s']:.0f} s, {torch_fuzz['violations']} "
            "violations") in FLAT


def _ms(x: float) -> str:
    return f"{x:,.0f} ms"


def test_load_and_soak_table_matches_their_reports():
    table = table_after("**Load and soak** on loopback")
    load, soak = _reliability("load"), _reliability("soak")
    rows = {"8 clients × 60 s, all": load, "· JSON API": load["per_target"]["api"],
            "· Gradio `/predict`": load["per_target"]["gradio"], "soak, 1,000 sequential": soak}
    for label, r in rows.items():
        requests, errors, rate, p50, p95 = table[label][:5]
        assert (requests, errors, rate) == (f"{r['requests']:,}", str(r["errors"]), f"{r['requests_per_s']:.1f}")
        assert (p50, p95) == (_ms(r["latency_ms"]["p50"]), _ms(r["latency_ms"]["p95"]))
    rss = load["server_rss_mb"]
    assert table["8 clients × 60 s, all"][5] == f"{rss['before']:.1f} → {rss['after']:.1f} MB"
    rss = soak["server_rss_mb"]
    assert table["soak, 1,000 sequential"][5].replace("**", "") == (f"{rss['start']:.1f} → {rss['end']:.1f} MB (+{rss['growth']:.1f} MB)")


def test_first_start_figures_match_their_report():
    r = _reliability("load_first_start")
    rss = r["server_rss_mb"]
    assert (f"{r['requests_per_s']:.1f} req/s, p95 {_ms(r['latency_ms']['p95'])}, {r['errors']} errors, "
            f"RSS {rss['before']:.0f} → {rss['after']:.0f} MB") in FLAT
