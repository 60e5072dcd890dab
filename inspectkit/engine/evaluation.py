"""Evaluation of a checkpoint on its test split (whole and twin-free, plus framing and lighting shifts) or on every
image of another labelled folder-per-class set (another line or camera); and the validation-side tools that choose
between checkpoints and re-choose a threshold.

The test split and the other sets are only measured here, never used to choose anything.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from inspectkit.data import folders as D
from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint, weights_digest
from inspectkit.inference.fast import save_with_graph
from inspectkit.metrics import classification_report, predict_labels, selection_loss, threshold_sweep, weighted_log_loss
from inspectkit.model import predict_probs
from inspectkit.preprocess import ROBUSTNESS_SHIFTS, apply_shift

log = logging.getLogger(__name__)


def test_split(ckpt: dict, data_root: str | Path) -> tuple[D.Dataset, D.Dataset]:
    """(reference, test): the test split the checkpoint was not trained on and the pool it was trained from.

    Split layout: ``test/`` vs ``train/``. Folder-per-class: the test files recorded in the checkpoint vs the rest.
    """
    names = ckpt["class_names"]
    defect = names[ckpt["defect_index"]] if ckpt["defect_index"] is not None else None
    root = Path(data_root)
    if D.is_split_layout(root) and (root / "test").is_dir():
        return (D.load_folder(root, "train", defect, names), D.load_folder(root, "test", defect, names))
    files = ckpt.get("data", {}).get("split", {}).get("test_files")
    if not files:
        raise ValueError(f"{root} has no test/ folder and the checkpoint records no test files for it")
    pool = D.load_folder(root, None, defect, names)
    wanted = set(files)
    rel = [str(p.relative_to(pool.root)) for p in pool.paths]
    test_idx = [i for i, r in enumerate(rel) if r in wanted]
    if len(test_idx) != len(wanted):
        raise ValueError(f"{len(wanted) - len(test_idx)} recorded test files are missing from {root}")
    ref_idx = [i for i in range(len(pool)) if rel[i] not in wanted]
    return pool.subset(ref_idx), pool.subset(test_idx)


def robustness_report(model: torch.nn.Module, images: list[np.ndarray], labels: np.ndarray, ckpt: dict) -> dict:
    """Accuracy, ROC-AUC, missed defects and false alarms at the stored threshold, and the selection loss, for each
    framing or light change of :data:`inspectkit.preprocess.ROBUSTNESS_SHIFTS` (a second line in the same factory),
    keyed by its name."""
    spec, names, d, thr = ckpt["preprocessing"], ckpt["class_names"], ckpt["defect_index"], ckpt["threshold"]
    out = {}
    for shift in ROBUSTNESS_SHIFTS:
        p = predict_probs(model, [apply_shift(im, shift) for im in images], spec)
        r = classification_report(labels, p, names, d, thr)
        out[shift] = {k: r[k] for k in ("accuracy", "roc_auc", "missed_defects", "false_alarms") if k in r}
        out[shift]["selection_loss"] = selection_loss(labels, p, d)
        log.info("robustness %s: accuracy %.4f", shift, r["accuracy"])
    return out


def report_on_images(ckpt: dict, model: torch.nn.Module | None, images: Sequence[np.ndarray],
                     labels: Sequence[int] | np.ndarray, files: Sequence[str],
                     twins: Sequence[str] | None = None) -> dict:
    """The report on already-decoded images at the checkpoint's stored threshold, without touching the disk.

    ``images`` are RGB uint8 arrays (as :func:`inspectkit.data.folders.decode_all` returns them), ``labels`` their class
    indices into ``ckpt["class_names"]`` and ``files`` the names to report them by (e.g. paths relative to the data
    root). ``model`` is the checkpoint's network (None builds it from ``ckpt``; pass it to score the same images with
    many checkpoints without decoding them again). ``twins``, when given, is each image's twin kind against the
    training data (``"exact"``, ``"near"`` or ``"none"``, as :func:`inspectkit.data.folders.find_twins` names them): the
    report then also has a ``twin_free`` section and every misclassified image its twin kind.

    Returns ``{"test": {"all": report[, "twin_free": report]}, "test_sweep": [...] (binary only),
    "misclassified": [...], "predictions": [...]}``: the reports are
    :func:`inspectkit.metrics.classification_report`, the sweep :func:`inspectkit.metrics.threshold_sweep` of
    p(defect), and each prediction ``{"file", "label", "predicted", "p_defect"}`` (``p_defect`` for a binary
    checkpoint only), in the order given.
    """
    names, d, thr = ckpt["class_names"], ckpt["defect_index"], ckpt["threshold"]
    y = np.asarray(labels, dtype=np.int64)
    if not (len(images) == len(y) == len(files)) or (twins is not None and len(twins) != len(y)):
        raise ValueError(f"images ({len(images)}), labels ({len(y)}), files ({len(files)})"
                         + (f" and twins ({len(twins)})" if twins is not None else "")
                         + " must be as many")
    if not len(y):
        raise ValueError("no images to evaluate")
    if y.min() < 0 or y.max() >= len(names):
        raise ValueError(f"labels must be class indices 0..{len(names) - 1} of {names}, got {y.min()}..{y.max()}")
    if model is None:
        model = model_from_checkpoint(ckpt).to(memory_format=torch.channels_last)
    probs = predict_probs(model, list(images), ckpt["preprocessing"])
    out = {"test": {"all": classification_report(y, probs, names, d, thr)}}
    if twins is not None:
        kinds = np.asarray(twins, dtype=str)
        free = kinds == "none"
        out["test"]["twin_free"] = classification_report(y[free], probs[free], names, d, thr)
    if d is not None:
        out["test_sweep"] = threshold_sweep(y == d, probs[:, d])
    pred = predict_labels(probs, d, thr)
    reasons = guard_reasons(ckpt, model, images) if d is not None else None
    if reasons is not None:
        out["unusable"] = unusable_report(y, pred, reasons, names)
    out["misclassified"] = [
        {"file": str(files[i]), "true": names[y[i]], "predicted": names[pred[i]],
         "probabilities": {c: round(float(probs[i, j]), 6) for j, c in enumerate(names)},
         **({"twin": str(kinds[i])} if twins is not None else {})}
        for i in np.nonzero(pred != y)[0]
    ]
    out["predictions"] = [
        {"file": str(files[i]), "label": names[y[i]], "predicted": names[pred[i]],
         **({"p_defect": round(float(probs[i, d]), 6)} if d is not None else {}),
         **({"unusable_reason": reasons[i]} if reasons is not None and reasons[i] is not None else {})}
        for i in range(len(y))
    ]
    return out


def guard_reasons(ckpt: dict, model: torch.nn.Module, images: Sequence[np.ndarray]) -> list | None:
    """The guard's reason (or None) for each image, as the handler would give it; None without a guard."""
    from inspectkit.guard import guard_from_info
    from inspectkit.model import pooled_from_model

    guard, _ = guard_from_info(ckpt)
    if guard is None:
        return None
    pooled, _ = pooled_from_model(model, ckpt["arch"], list(images), ckpt["preprocessing"])
    novelty = guard.novelty(pooled)
    return [guard.judge(guard.stats(im), float(n)) for im, n in zip(images, novelty)]


def unusable_report(y: np.ndarray, pred: np.ndarray, reasons: list, names: list[str]) -> dict:
    """UNUSABLE counts per true class (with their reasons), and the accuracy of the photos the guard let through."""
    bad = np.array([r is not None for r in reasons])
    per_class = {}
    for c, name in enumerate(names):
        m = y == c
        per_class[name] = {"n": int(m.sum()), "unusable": int((bad & m).sum()),
                           "reasons": dict(Counter(r for r, k in zip(reasons, m) if k and r is not None))}
    judged = ~bad
    return {"n": int(len(y)), "unusable": int(bad.sum()), "per_class": per_class,
            "judged": int(judged.sum()),
            "accuracy_judged": None if not judged.any() else round(float((pred[judged] == y[judged]).mean()), 6)}


def _checkpoint_summary(ckpt: dict) -> dict:
    names, d = ckpt["class_names"], ckpt["defect_index"]
    return {"arch": ckpt["arch"], "class_names": names, "threshold": ckpt["threshold"],
            "defect_class": names[d] if d is not None else None}


def evaluate(ckpt: dict, data_root: str | Path, robustness: bool = True) -> dict:
    """Every metric on the whole test split and on its twin-free part, the sweep, the errors and the shifts."""
    t0 = time.perf_counter()
    model = model_from_checkpoint(ckpt).to(memory_format=torch.channels_last)
    ref, test = test_split(ckpt, data_root)
    test, test_images = D.decode_all(test)
    ref, ref_images = D.decode_all(ref)
    twin_threshold = ckpt.get("train_config", {}).get("twin_threshold", D.TWIN_SIMILARITY)
    twins = D.find_twins(D.descriptors(test_images), D.file_hashes(test.paths), D.descriptors(ref_images),
                         D.file_hashes(ref.paths), twin_threshold)
    kinds = np.array([t["kind"] for t in twins])
    result = {
        "checkpoint": _checkpoint_summary(ckpt),
        "data": {"root": str(data_root), "test": test.fingerprint(), "skipped": test.skipped,
                 "twins": {k: int((kinds == k).sum()) for k in ("exact", "near", "none")},
                 "twin_threshold": twin_threshold},
    }
    files = [str(p.relative_to(test.root)) for p in test.paths]
    result.update(report_on_images(ckpt, model, test_images, test.labels, files, twins=kinds))
    if robustness:
        result["robustness"] = robustness_report(model, test_images, test.labels, ckpt)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def check_folder_classes(ckpt: dict, data_root: str | Path) -> Path:
    """``data_root`` as a Path once it is a folder-per-class set whose class folders are exactly the checkpoint's
    classes; otherwise a ValueError naming the classes expected and found (or the layout found instead)."""
    from inspectkit.data.layouts import detect_layout

    root = Path(data_root)
    layout = detect_layout(root)  # ValueError for a missing folder
    names = list(ckpt["class_names"])
    if layout != "folders":
        raise ValueError(f"{root} is a {layout} data set, not a folder-per-class set <root>/<class>/* with the "
                         f"checkpoint's classes {names}; evaluate the test split of a {layout} set instead")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if sorted(found) != sorted(names):
        missing, extra = sorted(set(names) - set(found)), sorted(set(found) - set(names))
        raise ValueError(f"the class folders of {root} do not match the checkpoint: expected {names}, found {found}"
                         + (f" (missing {missing})" if missing else "") + (f" (not a class of the model: {extra})"
                                                                           if extra else ""))
    return root


def evaluate_folder(ckpt: dict, data_root: str | Path, robustness: bool = False,
                    train_data: str | Path | None = None) -> dict:
    """Every metric on ALL images of a labelled folder-per-class set, e.g. photos of another line or camera.

    ``data_root`` must hold one folder per class of the checkpoint, named as its ``class_names`` (no more, no fewer;
    otherwise a ValueError names the classes expected and found). Unreadable images are skipped: they are listed
    (path relative to ``data_root``, reason) in ``data.skipped`` and counted in ``data.n_skipped``, and the metrics
    are over the ``data.n_listed - data.n_skipped`` images that were read.

    The result has the structure of :func:`evaluate` (the report writer reads both): ``split`` is ``"all"``,
    ``test.all`` the classification report, ``test_sweep``, ``misclassified`` and ``predictions`` as in
    :func:`report_on_images`, ``robustness`` with ``robustness``. A twin-free part only comes with ``train_data``,
    the data the checkpoint was trained from (read as :func:`test_split` reads it: ``train/`` of a split layout):
    each image is then matched against it (exact bytes or near twin, the checkpoint's twin threshold), which costs
    decoding that data once. ``data.same_as_training`` is true when the folder holds exactly the files the checkpoint
    records as its training data: then nothing here was unseen.
    """
    t0 = time.perf_counter()
    root = check_folder_classes(ckpt, data_root)
    names, d = ckpt["class_names"], ckpt["defect_index"]
    listed = D.load_folder(root, None, names[d] if d is not None else None, names)
    ds, images = D.decode_all(listed)
    skipped = [(str(Path(p).relative_to(root)), err) for p, err in ds.skipped]
    if not len(ds):
        raise ValueError(f"none of the {len(listed)} images in {root} could be read: "
                         + "; ".join(f"{f}: {e}" for f, e in skipped[:5]))
    files = [str(p.relative_to(root)) for p in ds.paths]
    data = {"root": str(data_root), "test": ds.fingerprint(), "n_listed": len(listed), "n_skipped": len(skipped),
            "skipped": skipped}
    trained_on = ckpt.get("data", {}).get("files_sha256")
    data["same_as_training"] = bool(trained_on) and listed.fingerprint()["files_sha256"] == trained_on
    if data["same_as_training"]:
        log.warning("%s holds exactly the files %s was trained from: these are not unseen images", root,
                    ckpt["arch"])
    kinds = None
    if train_data is not None:
        ref, _ = test_split(ckpt, train_data)
        ref, ref_images = D.decode_all(ref)
        twin_threshold = ckpt.get("train_config", {}).get("twin_threshold", D.TWIN_SIMILARITY)
        found = D.find_twins(D.descriptors(images), D.file_hashes(ds.paths), D.descriptors(ref_images),
                             D.file_hashes(ref.paths), twin_threshold)
        kinds = np.array([t["kind"] for t in found])
        data["twins"] = {k: int((kinds == k).sum()) for k in ("exact", "near", "none")}
        data["twin_threshold"] = twin_threshold
        data["train_data"] = {"root": str(train_data), **ref.fingerprint()}
        data["twin_files"] = [{"file": files[t["index"]], "kind": t["kind"], "similarity": t["similarity"],
                               "train_file": str(ref.paths[t["match"]].relative_to(ref.root))}
                              for t in found if t["kind"] != "none"]
    model = model_from_checkpoint(ckpt).to(memory_format=torch.channels_last)
    result = {"checkpoint": _checkpoint_summary(ckpt), "split": "all", "data": data}
    result.update(report_on_images(ckpt, model, images, ds.labels, files, twins=kinds))
    if robustness:
        result["robustness"] = robustness_report(model, images, ds.labels, ckpt)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def run_evaluation(checkpoint: str | Path, data_root: str | Path, reports_dir: str | Path | None = "reports",
                   update_checkpoint: bool = False, robustness: bool = True) -> dict:
    """Evaluate, write the JSON/Markdown/PNG report, and optionally store the test metrics in the checkpoint."""
    from inspectkit.engine.reports import write_report

    ckpt = load_checkpoint(checkpoint)
    result = evaluate(ckpt, data_root, robustness=robustness)
    if update_checkpoint:
        ckpt["metrics"]["test"] = result["test"]
        if "robustness" in result:
            ckpt["metrics"]["robustness"] = result["robustness"]
        ckpt["data"]["test"] = result["data"]["test"]
        ckpt["data"]["twins"] = result["data"]["twins"]
        save_with_graph(ckpt, checkpoint)
    if reports_dir is not None:
        write_report(ckpt, result, reports_dir, data_root)
    t = result["test"]
    log.info("test accuracy %.4f (twin-free %.4f, n=%d), missed defects %s, false alarms %s",
             t["all"]["accuracy"], t["twin_free"]["accuracy"], t["twin_free"]["n"],
             t["all"].get("missed_defects"), t["all"].get("false_alarms"))
    return result


def run_folder_evaluation(checkpoint: str | Path, data_root: str | Path, reports_dir: str | Path | None = "reports",
                          robustness: bool = False, train_data: str | Path | None = None,
                          misclassified_images: bool = False) -> dict:
    """:func:`evaluate_folder` on a checkpoint file, then the same report as the test split's into ``reports_dir``.

    The checkpoint is never changed: its stored test metrics describe its own test split, not this set. The
    mosaic of misclassified images is off unless ``misclassified_images``: it copies the set's photos into the
    report, which their licence may forbid.
    """
    from inspectkit.engine.reports import write_report

    ckpt = load_checkpoint(checkpoint)
    result = evaluate_folder(ckpt, data_root, robustness=robustness, train_data=train_data)
    if reports_dir is not None:
        write_report(ckpt, result, reports_dir, data_root, misclassified_images=misclassified_images)
    a = result["test"]["all"]
    log.info("all %d images of %s: accuracy %.4f, missed defects %s, false alarms %s, ROC-AUC %.4f (%d skipped)",
             a["n"], data_root, a["accuracy"], a.get("missed_defects"), a.get("false_alarms"), a["roc_auc"],
             result["data"]["n_skipped"])
    return result


RULES = {
    "clean": "lowest selection loss (binary: defect-weighted log-loss, beta^2 = 4; else log-loss)",
    "robust": "lowest robust score = (selection loss on the validation images + its mean over the framing and "
              "light changes) / 2",
    "lines": "lowest mean over the lines (photo sessions) of the selection loss on each line's validation part",
}


def compare_on_validation(checkpoints: Sequence[str | Path], data_root: str | Path, robustness: bool = False,
                          rule: str = "clean") -> dict:
    """Score several checkpoints on the validation split they share, never on the test split.

    The first checkpoint's validation files are re-derived from its train config (and checked against its record);
    every other checkpoint must record the same validation files, otherwise the comparison would not be like for
    like. Per checkpoint: the digest of its weights (:func:`inspectkit.inference.checkpoint.weights_digest`, equal for a
    reproduced model), accuracy, missed defects and false alarms at its own stored threshold, ROC-AUC, log-loss
    and the selection loss training early-stops on (binary: the defect-weighted log-loss). The rows come back in
    the order given. With ``robustness`` each row also holds the framing and light changes of
    :func:`robustness_report` on the validation images, their worst accuracy and the robust score (the mean of the
    clean selection loss and the changes' mean selection loss). ``best`` follows ``rule`` (a key of
    :data:`RULES`): ``clean`` names the lowest selection loss, ``robust`` (which implies ``robustness``) the
    lowest robust score; a tie keeps the earlier checkpoint.
    """
    from inspectkit.engine.training import recorded_validation_hash as recorded
    from inspectkit.engine.training import validation_split

    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {sorted(RULES)}")
    robustness = robustness or rule == "robust"
    if len(checkpoints) < 1:
        raise ValueError("compare needs at least one checkpoint")
    rows, want = [], None
    for path in checkpoints:
        ckpt = load_checkpoint(path)
        if want is None:
            # one re-derivation (decoding and grouping the whole train pool) serves every checkpoint
            val, images = D.decode_all(validation_split(ckpt, data_root))
            labels, want = val.labels, recorded(ckpt)
        elif recorded(ckpt) != want:
            raise ValueError(f"{path} was selected on other validation files than {checkpoints[0]}; "
                             "only checkpoints sharing one validation split can be compared")
        model = model_from_checkpoint(ckpt)
        probs = predict_probs(model, images, ckpt["preprocessing"])
        d = ckpt["defect_index"]
        rep = classification_report(labels, probs, ckpt["class_names"], d, ckpt["threshold"])
        row = {"checkpoint": str(path), "weights_sha256": weights_digest(ckpt["state_dict"]),
               "input_size": ckpt["preprocessing"]["size"], "threshold": ckpt["threshold"],
               "n": rep["n"], "accuracy": rep["accuracy"], "roc_auc": rep["roc_auc"],
               "log_loss": weighted_log_loss(labels, probs, np.ones(probs.shape[1]))}
        if d is not None:
            row.update(missed_defects=rep["missed_defects"], false_alarms=rep["false_alarms"])
        row["selection_loss"] = selection_loss(labels, probs, d)
        if robustness:
            row["robustness"] = robustness_report(model, images, labels, ckpt)
            row["robustness_worst_accuracy"] = min(r["accuracy"] for r in row["robustness"].values())
            shifted = np.mean([r["selection_loss"] for r in row["robustness"].values()])
            row["robust_score"] = float((row["selection_loss"] + shifted) / 2)
        rows.append(row)
    key = "selection_loss" if rule == "clean" else "robust_score"
    best = min(rows, key=lambda r: r[key])["checkpoint"]  # min keeps the first of equals
    return {"data": str(data_root), "split": "validation", "n": len(labels), "models": rows, "best": best,
            "rule": RULES[rule]}


def rethreshold(ckpt: dict, data_root: str | Path, target_recall: float | None = None) -> dict:
    """A copy of a binary checkpoint with its threshold chosen again on its own validation split (re-derived and
    checked against the record), by the current rule and ``target_recall`` (default: the one it was trained with).

    The weights do not change. Test metrics measured at the old threshold are dropped (evaluate again). For a new
    operating point without retraining, and to bring a checkpoint up to a corrected threshold rule.
    """
    from inspectkit.engine.training import validation_split, validation_threshold

    if ckpt.get("defect_index") is None:
        raise ValueError("only a binary checkpoint (with a defect class) has a threshold to choose")
    target = float(target_recall if target_recall is not None else ckpt["train_config"].get("target_recall", 0.995))
    val, images = D.decode_all(validation_split(ckpt, data_root))
    probs = predict_probs(model_from_checkpoint(ckpt), images, ckpt["preprocessing"])
    threshold, found = validation_threshold(val.labels, probs, ckpt["class_names"], ckpt["defect_index"], target)
    metrics = {k: v for k, v in ckpt["metrics"].items() if k not in ("test", "robustness")}
    metrics.update(found)
    metrics["rethresholded"] = {"from": ckpt["threshold"], "to": threshold, "target_recall": target}
    return {**ckpt, "threshold": threshold, "metrics": metrics,
            "train_config": {**ckpt["train_config"], "target_recall": target}}


def compare_on_lines(checkpoints: Sequence[str | Path], split_from: str | Path | None = None) -> dict:
    """Score checkpoints on each line's validation part of one multi-line split (train.py ``--extra-data``).

    The split is re-derived from ``split_from`` (default: the first checkpoint that trained on extra lines) and
    checked against its record. A checkpoint trained on line 0 alone (e.g. the model before the new line existed)
    competes when its recorded validation files are line 0's part of that split, so no candidate was trained on
    another's validation photos. Per checkpoint and line: accuracy, missed defects and false alarms at its own
    threshold, ROC-AUC and the selection loss; the score is the mean of the lines' selection losses (each line
    weighs the same), the lowest is ``best`` and a tie keeps the earlier checkpoint.
    """
    from inspectkit.engine.training import TrainConfig, prepare_data, recorded_validation_hash

    ckpts = [(str(p), load_checkpoint(p)) for p in checkpoints]
    if split_from is None:
        multi = [p for p, c in ckpts if (c.get("train_config") or {}).get("extra_data")]
        if not multi:
            raise ValueError("none of the checkpoints was trained on extra lines (train.py --extra-data); "
                             "name the split with split_from")
        split_from = multi[0]
    ref = load_checkpoint(split_from)
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in ref["train_config"].items() if k in known})
    prep = prepare_data(cfg)
    full = prep["full"]
    if full.subset(prep["val_idx"]).fingerprint()["files_sha256"] != recorded_validation_hash(ref):
        raise ValueError(f"the validation split re-derived for {split_from} is not the one it records")
    lines = []
    for ln in prep["lines"]:
        lines.append({"root": ln["root"], "labels": full.labels[ln["val_idx"]],
                      "images": [prep["images"][i] for i in ln["val_idx"]],
                      "files_sha256": full.subset(ln["val_idx"]).fingerprint()["files_sha256"]})
    rows = []
    for path, ckpt in ckpts:
        want = recorded_validation_hash(ckpt)
        own = [((ckpt.get("data") or {}).get("split") or {}).get("lines")]
        if (ckpt.get("train_config") or {}).get("extra_data"):
            got = [x["validation"]["files_sha256"] for x in own[0] or []]
            if got != [ln["files_sha256"] for ln in lines]:
                raise ValueError(f"{path} was validated on other line splits than {split_from}")
        elif want != lines[0]["files_sha256"]:
            raise ValueError(f"{path} was trained on line 0 alone but its validation files are not line 0's part "
                             f"of the split of {split_from}; it cannot be compared fairly")
        model = model_from_checkpoint(ckpt)
        d, names = ckpt["defect_index"], ckpt["class_names"]
        per_line = []
        for ln in lines:
            probs = predict_probs(model, ln["images"], ckpt["preprocessing"])
            rep = classification_report(ln["labels"], probs, names, d, ckpt["threshold"])
            per_line.append({"root": ln["root"], "n": rep["n"], "accuracy": rep["accuracy"], "roc_auc": rep["roc_auc"],
                             "missed_defects": rep.get("missed_defects"), "false_alarms": rep.get("false_alarms"),
                             "selection_loss": selection_loss(ln["labels"], probs, d)})
        rows.append({"checkpoint": path, "weights_sha256": weights_digest(ckpt["state_dict"]),
                     "threshold": ckpt["threshold"], "trained_on_lines": 1 + len(ckpt["train_config"].get("extra_data") or []),
                     "lines": per_line, "score": float(np.mean([x["selection_loss"] for x in per_line]))})
        log.info("%s: score %.5f (%s)", path, rows[-1]["score"],
                 ", ".join(f"{x['accuracy']:.4f}" for x in per_line))
    best = min(rows, key=lambda r: r["score"])["checkpoint"]
    return {"split_from": str(split_from), "split": "validation", "lines": [{"root": ln["root"], "n": len(ln["labels"])}
                                                                           for ln in lines],
            "models": rows, "best": best, "rule": RULES["lines"]}
