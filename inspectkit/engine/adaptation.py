"""Adaptation to a new line: fine-tune a trained checkpoint on a few labelled photos of another camera or session.

The photos (folder-per-class, the parent's class names) are split by near-duplicate groups into an adaptation
part and a held-out validation part; with ``group_by_part`` the photos of one part (turned, re-shot) are found by
:mod:`inspectkit.data.parts` and kept on one side too, so the held-out figures are on parts not trained on. Both stages of :func:`inspectkit.engine.training.fit_stages` then run from the
parent's weights for a fixed number of epochs (``keep='last'``).

A validation part of a few dozen photos is too small to choose much on, and the first recipe did: early
stopping on it (``keep='best'``) often kept the parent's own head on a lucky validation part, and the threshold
rule of ``train.py``, which may miss no defect on so few, let a single low-scoring defect drag the threshold to
~0. So the threshold is the rule's only where validation holds enough defects to check the recall target
(:func:`checkable_defects`). Otherwise the parent's threshold, chosen on hundreds of photos of its line, stays
unless the held-out photos (the new line's and the replayed ones) contradict it: another threshold makes fewer
errors on them, by a margin a sign test finds unlikely under noise (:func:`evidence_threshold`). Until issue 28 it
was the lower of the parent's and 0.5 (:func:`fallback_threshold`, ``threshold='lower'``), which moved a served
model's 0.7108 to 0.5 on photos it already classified perfectly. The choices and their measurements are in
docs/research/adaptation.md (``benchmarks/adapt_variants.py``, the learning curve, ``benchmarks/threshold_rule.py``).

What the parent knew about its own line is kept by small steps pulled towards its weights (``lr1``/``lr2`` half the
first recipes', ``anchor``: L2-SP), which forgot fewest of its validation photos on development seeds, and by
**replay**: a seeded sample of the parent's training photos
(``replay_per_class`` per class, from ``replay``; by default the parent's training data where it is on disk) is
trained on beside the new photos and has its own validation part, so the before/after figures cover both
lines. Without replay data (e.g. a Space without the training set) the model adapts to the new line alone and
may forget the old one; the checkpoint records which kind ran.

First the parent inspects every new photo: where it makes no error there is nothing to correct, and adapting could
only move what it knows of its own line, so the parent is returned (and saved) unchanged with a record that says so
(:func:`nothing_to_learn`; ``force`` adapts anyway).

The before/after figures carry 90 % Wilson intervals and their photo counts (:mod:`inspectkit.intervals`): on a
few dozen held-out photos "100 %" means "probably above 92 %", and the report says so.

With very few photos (fewer than ``min_val_per_class / val_fraction`` of some class) no validation part can be
held out: the model trains on all of them, the threshold is the parent's (nothing held out can contradict it;
``threshold='lower'``: :func:`fallback_threshold`'s), and the before/after figures are measured on the training
photos themselves (``mode: in-sample``): they show fit, not accuracy on the line.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from inspectkit.data import folders as D
from inspectkit.engine.guard_fit import fit_for_model
from inspectkit.engine.training import TrainConfig, check_keep, fit_stages, validation_threshold
from inspectkit.heatmap.scale import calibrate
from inspectkit.inference.checkpoint import make_checkpoint, model_from_checkpoint, weights_digest
from inspectkit.inference.fast import save_with_graph
from inspectkit.intervals import report_intervals
from inspectkit.metrics import classification_report
from inspectkit.model import predict_probs
from inspectkit.review import review_band

log = logging.getLogger(__name__)

#: Fewer photos than this in a class is an error: nothing useful can be learned or checked.
MIN_PHOTOS_PER_CLASS = 4
#: Fewer photos than this in a class adapt, with a warning (:func:`few_photos_warning`): on line B's learning curves,
#: 10 random photos per class made J worse with round 9's recipe and better with round 10's, by a few points either
#: way and by draw (docs/line_b.md, sections 4 and 5): so few labels are a gamble, and too few to hold any out.
FEW_PHOTOS_PER_CLASS = 25
KIND = "two-stage fine-tuning of the last blocks and the head (torch)"
#: Edge variants per held-out photo when the guard is refitted (inspectkit.guard.fit_guard): the network's passes over
#: all nine made the guard's refit most of the time adaptation spent after training.
GUARD_EDGES_PER_PHOTO = 3


#: AdaptConfig.threshold's values (adapt.py --threshold)
THRESHOLD_MODES = ("auto", "rule", "parent", "lower")


def few_photos_warning(counts: dict[str, int], few: int = FEW_PHOTOS_PER_CLASS) -> str | None:
    """A warning when some class has fewer than ``few`` photos (``counts``: photos per class), else None."""
    small = {c: n for c, n in counts.items() if n < few}
    if not small:
        return None
    return (f"few photos: {', '.join(f'{c} has {n}' for c, n in small.items())}, under {few} per class. On line B's "
            f"learning curves, 10 random photos per class made the model better or worse by a few points depending "
            f"on the recipe and the draw; label more photos (the 'label these next' list picks the most useful) "
            f"and check the adapted model on photos it did not use before serving it")


@dataclass
class AdaptConfig:
    """Everything that decides an adaptation run; stored in the adapted checkpoint."""

    data: str = ""
    checkpoint: str = "final_best_model.pt"
    out: str = "adapted_model.pt"
    seed: int = 0
    # the share of the new photos held out (for the before/after figures and the threshold's evidence). Adaptation
    # round 10 (reports/line-b/adapt_round10.md): on development seeds, 0.1 made 118 line-B errors against 152 for
    # 0.3 at the same line-A errors (8), training on 45 of 50 photos per class instead of 35; on the confirmatory
    # curve's draws the two were about even (+0.19 points, learning_curve_round10_val03.md)
    val_fraction: float = 0.1
    min_val_per_class: int = 3  # below this many held-out photos per class, adapt in-sample (see module doc)
    views: int = 8  # cached views per photo: the clean one and views-1 augmented ones
    # the augmented views' ranges (TrainConfig.aug_strength, .aug_rotation); 0: the parent's own. A round part may
    # lie at any turn, and the new line's parts that no label shows are where adaptation errs most
    aug_strength: float = 0.0
    aug_rotation: float = 0.0
    # input size of the adapted model (0: the parent's); the network is convolutional with a global pool, so the
    # same weights take any size, and a larger one keeps small defects (pinholes near the rim) more pixels wide
    size: int = 0
    stage1_epochs: int = 20
    stage2_epochs: int = 10
    # half the first recipe's rates and a pull towards the parent (L2-SP): fewer line-A photos forgotten on
    # development seeds at no cost on the new line (docs/research/adaptation.md, reports/line-b/adapt_forgetting.md)
    lr1: float = 5e-4
    lr2: float = 1.5e-4
    patience: int = 4
    keep: str = "last"  # 'last': fixed epochs, validation only reports; 'best': stages stop early on validation
    # 'auto': train.py's rule where validation holds enough defects to check its recall target, else the parent's
    # threshold unless the held-out photos contradict it (checkable_defects, evidence_threshold); 'rule': always the
    # rule; 'parent': always the parent's threshold; 'lower': 'auto' as it was until issue 28, the lower of the
    # parent's threshold and 0.5 where the rule cannot be checked (fallback_threshold)
    threshold: str = "auto"
    ema_epochs: float = 1.0
    anchor: float = 1.0  # L2-SP pull towards the parent's weights (TrainConfig.anchor); 0: none
    last_blocks: int = 0  # blocks unfrozen in stage 2; 0: the parent's own training setting
    members: int = 1  # stage-2 runs averaged into one network (TrainConfig.members, a model soup)
    # weight each line's photos so that the new line and the replayed one count equally in the loss (without it,
    # each photo counts the same and the replayed line, often the larger, dominates)
    balance_lines: bool = False
    # loss weight of the new line's defect photos against its OK ones: a missed new-line defect costs more than a
    # false alarm while the model learns the line, as train.py's recall-first threshold weighs them when it chooses.
    # Adaptation round 9 (reports/line-b/adapt_round9.md): on development seeds, 8 made 99 line-B errors against 118
    # and 7 line-A validation errors against 14 for 1 (every photo the same), in the same time
    defect_weight: float = 8.0
    batch_size: int = 32
    replay: str = "auto"  # the parent's line: 'auto' (its training data when on disk), a folder, or 'none'
    replay_per_class: int = 100
    # share of the replayed photos held out for the line-A figures and the threshold's evidence; apart from
    # val_fraction, so that holding out fewer new photos does not also grow the replayed training set (and the time)
    replay_val_fraction: float = 0.3
    threads: int = 0
    limit: int = 0  # >0: use at most this many new photos per class (learning curves)
    # adapt even when the parent already classifies every new photo correctly (see nothing_to_learn)
    force: bool = False
    # hold out whole parts, not only near-duplicate photos: the new line's photos of one part (turned, re-shot) are
    # found by inspectkit.data.parts and kept on one side, so the before/after figures are on parts not trained on
    group_by_part: bool = False

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.anchor < 0 or self.last_blocks < 0:
            raise ValueError(f"anchor and last_blocks must be >= 0, got {self.anchor} and {self.last_blocks}")
        for name in ("val_fraction", "replay_val_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1 (the share held out), got {getattr(self, name)}")
        if not 0 <= self.aug_strength <= 3 or not 0 <= self.aug_rotation <= 180:
            raise ValueError(f"aug_strength must be in 0..3 and aug_rotation in 0..180 degrees (0: the parent's), "
                             f"got {self.aug_strength} and {self.aug_rotation}")
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if self.size and not 32 <= self.size <= 1024:
            raise ValueError(f"size must be 0 (the parent's) or in 32..1024, got {self.size}")
        if not 0 < self.defect_weight <= 100:
            raise ValueError(f"defect_weight must be in (0, 100] (1: defects and OK photos weigh the same), "
                             f"got {self.defect_weight}")
        if self.threshold not in THRESHOLD_MODES:
            raise ValueError(f"threshold must be 'auto', 'rule', 'parent' or 'lower', got {self.threshold!r}")


#: the defect score at which a model trained with class-balanced weights is indifferent between the classes
BALANCED = 0.5


def fallback_threshold(parent_threshold: float) -> float:
    """``threshold='lower'`` (``auto`` from adaptation round 5 until issue 28) where validation cannot check the
    recall target: the lower of the parent's and :data:`BALANCED`.

    A threshold above the balanced point trades missed defects for fewer false alarms, which only a checked
    recall target justifies; the parent's was checked on its own line, not on the new one. On development seeds
    of line B this kept fewer defects unseen than J's 0.603 (in 22 of 41 adapted models, worse in 4;
    docs/research/adaptation.md, adaptation round 5), and a parent whose threshold is already lower keeps it. It moves the threshold whatever the
    new photos say, though (a served model's 0.7108 went to 0.5 on photos it classified perfectly), so ``auto`` now
    takes :func:`evidence_threshold`.
    """
    return min(float(parent_threshold), BALANCED)


#: One-sided level of the sign test that lets the held-out photos move the parent's threshold
#: (:func:`evidence_threshold`): at 0.05, at least 5 changed verdicts all in the new threshold's favour.
EVIDENCE_ALPHA = 0.05
#: Scores are clipped to [EPS, 1 - EPS] before taking logits (a model can output exactly 0 or 1).
EPS = 1e-6


def sign_test_p(right_only_new: int, right_only_old: int) -> float:
    """One-sided exact sign test (McNemar's, on the discordant photos): P(X >= b) for X ~ Binomial(b + c, 1/2),
    b = photos only the new threshold gets right, c = photos only the old one gets right. 1.0 when none differ."""
    b, c = int(right_only_new), int(right_only_old)
    n = b + c
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(b, n + 1)) / 2.0 ** n


def _logit(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(np.asarray(x, dtype=np.float64), EPS, 1 - EPS)
    return np.log(x) - np.log1p(-x)


def evidence_threshold(is_defect, scores, parent_threshold: float, alpha: float = EVIDENCE_ALPHA) -> dict:
    """The parent's threshold unless the held-out photos contradict it; the rule of ``--threshold auto`` where the
    recall target cannot be checked. Returns the threshold and the evidence (a dict, recorded in the checkpoint).

    A defect is declared at ``score >= t``; an error is a missed defect or a false alarm, counted alike.

    1. E(t0): the errors on the held-out photos at the parent's threshold t0. Every other threshold is a cut between
       two neighbouring distinct held-out scores; E(cut) its errors.
    2. If no cut makes fewer errors than t0, t0 stays ("the photos agree with it").
    3. Else t* is the cut with the fewest errors; among equals, the one that changes the fewest held-out verdicts
       from t0's, then the lower. Its threshold is the logit midpoint of the two scores around the cut.
    4. The photos whose verdict differs between t0 and t* (scores between the two) decide: b of them are right only
       at t*, c only at t0, b - c = E(t0) - E(t*) > 0. Under noise (each such photo as likely to favour either
       threshold) b ~ Binomial(b + c, 1/2); t* replaces t0 only if P(X >= b) <= ``alpha`` (one-sided exact sign
       test; at 0.05 that needs at least 5 changed verdicts all for t*, or 7 against 1, 9 against 2, ...).

    t* is the best of many cuts on the same photos, so the test's nominal level understates how often noise moves
    the threshold; benchmarks/threshold_rule.py measures that rate on generated scores. With no held-out photo the
    parent's threshold stays.
    """
    y = np.asarray(is_defect, dtype=bool)
    s = np.clip(np.asarray(scores, dtype=np.float64), EPS, 1 - EPS)
    t0 = float(parent_threshold)
    out = {"rule": "parent unless the held-out photos contradict it", "parent_threshold": t0, "threshold": t0,
           "moved": False, "held_out": int(len(y)), "defects": int(y.sum()), "alpha": float(alpha)}
    if len(y) == 0:
        return {**out, "errors_at_parent": 0,
                "why": "no held-out photos: nothing can contradict the parent's threshold"}
    e0 = int((y & (s < t0)).sum() + (~y & (s >= t0)).sum())
    u = np.unique(s)  # cut j: defect iff s >= u[j]; j = len(u): no defect at all
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    missed = np.searchsorted(pos, np.append(u, np.inf), side="left")  # defects below each cut
    alarms = len(neg) - np.searchsorted(neg, np.append(u, np.inf), side="left")  # OK parts at or above it
    errors = missed + alarms
    best = int(errors.min())
    out["errors_at_parent"] = e0
    if best >= e0:
        return {**out, "errors_at_best": e0,
                "why": f"the {len(y)} held-out photos agree with it: no threshold makes fewer errors on them "
                       f"({e0} at the parent's)"}
    below = np.searchsorted(np.sort(s), np.append(u, np.inf), side="left")  # photos below each cut
    j0 = int(np.searchsorted(u, t0, side="left"))  # t0's cut: the same verdicts as s >= t0
    cuts = np.nonzero(errors == best)[0]
    changed = np.abs(below[cuts] - below[j0])  # verdicts that differ from t0's
    j = int(cuts[np.lexsort((cuts, changed))[0]])  # fewest changed, then the lowest cut
    lo = np.log(EPS) - np.log1p(-EPS) if j == 0 else float(_logit(u[j - 1]))
    hi = np.log1p(-EPS) - np.log(EPS) if j == len(u) else float(_logit(u[j]))
    t_star = float(1.0 / (1.0 + math.exp(-(lo + hi) / 2.0)))
    low_t, high_t = sorted((t0, t_star))
    between = (s >= low_t) & (s < high_t)  # the verdicts that differ between t0 and t*
    lowering = t_star < t0  # then the photos between become defects: right for defects, wrong for OK parts
    b = int((between & (y if lowering else ~y)).sum())
    c = int((between & (~y if lowering else y)).sum())
    p = sign_test_p(b, c)
    moved = p <= alpha
    out.update(errors_at_best=best, best_threshold=t_star, changed_verdicts=b + c, right_only_at_best=b,
               right_only_at_parent=c, p_value=p, moved=bool(moved), threshold=t_star if moved else t0)
    said = (f"{t_star:.4g} makes {e0 - best} fewer errors on the {len(y)} held-out photos ({e0} -> {best}), "
            f"changing {b + c} verdicts, {b} right against {c}: sign test p = {p:.2g}")
    out["why"] = (f"the held-out photos contradict it: {said} <= {alpha}" if moved else
                  f"the held-out photos do not contradict it enough: {said} > {alpha}")
    return out


def nothing_to_learn(report: dict) -> bool:
    """True when the parent makes no error on the new photos (``report``: its classification report on all of
    them, training and held-out part alike), so adaptation has nothing to correct.

    Adapting then can only move what the parent knew: on 100 line-B photos the served model already classified
    perfectly, the recipe kept the threshold but changed 3 of the 715 casting-test verdicts
    (reports/line-b/adapt_no_harm_forced.md). Photos the parent gets right, however close to its threshold, give no
    evidence that another model would do better, and the held-out part cannot show one: its errors are already 0.
    ``AdaptConfig.force`` adapts anyway.
    """
    return bool(report) and report["n"] > 0 and round(report["accuracy"] * report["n"]) == report["n"]


def checkable_defects(target_recall: float) -> int:
    """Validation defects needed before a threshold can be chosen there for ``target_recall``: 1 / (1 - target).

    With fewer, the rule of train.py may miss none, so the lowest-scoring validation defect sets the threshold by
    itself. On development seeds of line B one defect scored 1e-4 and the threshold went with it (78 % on the
    unused photos, against 96 % at the parent's threshold): :func:`adapt` then keeps the parent's threshold,
    which was chosen on hundreds of photos, and the validation part reports at it.
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall {target_recall} must be in (0, 1]")
    return math.inf if target_recall >= 1.0 else math.ceil(1.0 / (1.0 - target_recall) - 1e-9)


def line_weights(n_new: int, n_replay: int) -> np.ndarray:
    """Per-photo loss weights (new line first, then replay) that give both lines the same total, mean 1."""
    n = n_new + n_replay
    if n_new == 0 or n_replay == 0:
        return np.ones(n)
    return np.concatenate([np.full(n_new, n / (2 * n_new)), np.full(n_replay, n / (2 * n_replay))])


def photo_weights(new_labels: np.ndarray, n_replay: int, defect_index: int | None, balance_lines: bool = False,
                  defect_weight: float = 1.0) -> np.ndarray | None:
    """Per-photo loss weights of an adaptation's training photos (the new line's, labelled ``new_labels``, then
    ``n_replay`` replayed ones), or None where every photo weighs the same.

    ``balance_lines`` gives both lines the same total (:func:`line_weights`); ``defect_weight`` then multiplies the
    weight of the new line's defect photos. The training loss normalises by the weights' sum, so only their ratios
    matter."""
    n_new = len(new_labels)
    w = line_weights(n_new, n_replay) if balance_lines else np.ones(n_new + n_replay)
    if defect_weight != 1.0 and defect_index is not None:
        w[:n_new][np.asarray(new_labels) == defect_index] *= defect_weight
    return None if np.all(w == 1.0) else w


def content_fingerprint(ds: D.Dataset, hashes: list[str]) -> dict:
    """Counts, the hash of the class/file-name list, and a hash of the files' bytes (order-free): which photos."""
    fp = ds.fingerprint()
    fp["content_sha256"] = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()
    return fp


def load_new_line(root: str | Path, parent: dict) -> D.Dataset:
    """The new line's photos, folder-per-class with exactly the parent's classes; ValueError names both lists."""
    root = Path(root)
    names = parent["class_names"]
    if not root.is_dir():
        raise ValueError(f"adaptation data folder not found: {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if found != sorted(names):
        raise ValueError(f"{root} must hold one folder per class of the model: expected {sorted(names)}, "
                         f"found {found or 'no class folders'}")
    defect = names[parent["defect_index"]] if parent["defect_index"] is not None else None
    return D.load_folder(root, None, defect, names)


def _check_counts(ds: D.Dataset, what: str) -> None:
    small = {c: n for c, n in ds.counts().items() if n < MIN_PHOTOS_PER_CLASS}
    if small:
        raise ValueError(f"too few readable photos in {what}: {small}; adaptation needs at least "
                         f"{MIN_PHOTOS_PER_CLASS} per class ({ds.counts()} found)")


def _sample(ds: D.Dataset, per_class: int, seed: int) -> D.Dataset:
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(len(ds.class_names)):
        idx = np.nonzero(ds.labels == c)[0]
        keep += rng.permutation(idx)[:per_class].tolist()
    return ds.subset(sorted(keep))


def replay_pool(parent: dict, cfg: AdaptConfig) -> D.Dataset | None:
    """A seeded sample of the parent's training photos, or None (``replay='none'``, or 'auto' without the data)."""
    if cfg.replay in ("none", "") or cfg.replay_per_class <= 0:
        return None
    root = (parent.get("train_config") or {}).get("data") if cfg.replay == "auto" else cfg.replay
    if not root or not Path(root).is_dir():
        if cfg.replay == "auto":
            log.warning("no replay: the parent's training data %s is not on disk; the model may forget its line", root)
            return None
        raise ValueError(f"replay data folder not found: {root}")
    names = parent["class_names"]
    defect = names[parent["defect_index"]] if parent["defect_index"] is not None else None
    pool = D.load_folder(root, "train", defect, names)
    test_files = set(((parent.get("data") or {}).get("split") or {}).get("test_files") or [])
    if test_files:  # a folder-per-class parent carved its test split out of the same folder: never replay it
        pool = pool.subset([i for i, p in enumerate(pool.paths) if str(p.relative_to(pool.root)) not in test_files])
    return _sample(pool, cfg.replay_per_class, cfg.seed + 7)


def _split(ds: D.Dataset, images: list, val_fraction: float, seed: int, twin: float, by_part: bool = False):
    hashes = D.file_hashes(ds.paths)
    groups = D.duplicate_groups(D.descriptors(images), hashes, twin)
    if by_part:
        from inspectkit.data.parts import image_part_groups, joined

        groups = joined(groups, image_part_groups(images, threads=max(1, torch.get_num_threads())))
    tr, va = D.group_split(ds.labels, groups, val_fraction, seed)
    return tr, va, hashes


def _report(model, images, labels, names, d, thr, spec) -> dict:
    if not len(labels):
        return {}
    return classification_report(labels, predict_probs(model, images, spec), names, d, thr)


def _short(rep: dict, d: int | None) -> dict:
    """The report's headline figures, with the 90 % Wilson interval and photo count of accuracy, missed defects (of
    the defects) and false alarms (of the OK parts) under ``intervals``."""
    keys = ("n", "accuracy", "roc_auc", "missed_defects", "false_alarms", "confusion_matrix", "threshold")
    out = {k: rep[k] for k in keys if k in rep}
    if rep:
        out["intervals"] = report_intervals(rep, d)
    return out


def adapt(parent: dict, cfg: AdaptConfig, progress: Callable[[float, str], None] | None = None,
          save: bool = True) -> dict:
    """Adapt ``parent`` (a loaded checkpoint) to the photos in ``cfg.data``; returns the new checkpoint (saved to
    ``cfg.out`` unless ``save`` is False).

    ValueError for data that does not fit: other class folders than the parent's, or fewer than
    :data:`MIN_PHOTOS_PER_CLASS` readable photos in a class. Unreadable photos are skipped and listed in
    ``metrics.adaptation.data.skipped``. ``progress(fraction, text)`` follows the work (for a progress bar).
    """
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _adapt(parent, cfg, progress or (lambda f, t: None), save)
    finally:
        torch.set_num_threads(threads)  # the thread count is process-wide: a server's inspections share it


def _choose_threshold(cfg: AdaptConfig, parent: dict, tcfg: TrainConfig, mode: str, y_va: np.ndarray,
                      val_probs: np.ndarray) -> tuple[dict, dict | None]:
    """(``metrics["threshold_choice"]``, train.py's rule's validation figures or None): which threshold the adapted
    model takes under ``cfg.threshold``, which rule applied (``applied``) and why (``why``).

    ``kept_from_parent`` is absent only where train.py's recall rule chose (the Adapt tab reads it so).
    """
    names, d, p_thr = parent["class_names"], parent["defect_index"], parent["threshold"]
    if d is None or p_thr is None:  # without a defect class there is no defect-score cut to move
        return {"threshold": p_thr, "kept_from_parent": True, "parent_threshold": p_thr, "applied": "parent",
                "why": "the model has no defect class: the predicted class is the most likely one"}, None
    found = None
    n_def, need = int((y_va == d).sum()), checkable_defects(tcfg.target_recall)
    if mode == "held-out":
        _, found = validation_threshold(y_va, val_probs, names, d, tcfg.target_recall)
        if cfg.threshold == "rule" or (cfg.threshold in ("auto", "lower") and n_def >= need):
            why = ("asked for (--threshold rule)" if cfg.threshold == "rule" else
                   f"{n_def} validation defects check recall >= {tcfg.target_recall} (needs {need})")
            return {**found["threshold_choice"], "applied": "recall rule", "parent_threshold": p_thr,
                    "why": why}, found
    unchecked = (f"{n_def} validation defects; checking recall >= {tcfg.target_recall} needs at least {need}"
                 if mode == "held-out" else "no held-out validation photos (in-sample mode)")
    if cfg.threshold == "parent":
        choice = {"threshold": p_thr, "applied": "parent", "why": "asked for (--threshold parent)"}
    elif cfg.threshold == "lower":
        t = fallback_threshold(p_thr)
        choice = {"threshold": t, "applied": "lower of parent and 0.5",
                  "why": unchecked + (f": the lower of the parent's threshold ({p_thr:.4g}) and {BALANCED}, the "
                                      "class-balanced decision (--threshold lower)" if t != p_thr else
                                      f": the parent's threshold, already at or below {BALANCED} (--threshold lower)")}
    elif mode == "held-out":
        # on the scores as metrics.adaptation.validation_scores records them, so the choice can be redone from them
        ev = evidence_threshold(y_va == d, np.round(val_probs[:, d], 6), p_thr)
        choice = {"threshold": ev["threshold"], "applied": "parent unless contradicted",
                  "why": f"{unchecked}; {ev['why']}", "evidence": ev}
    else:
        choice = {"threshold": p_thr, "applied": "parent unless contradicted",
                  "why": f"{unchecked}: nothing held out can contradict the parent's threshold, so it is kept"}
    choice.update(kept_from_parent=choice["threshold"] == p_thr, parent_threshold=p_thr)
    if found is not None:
        choice["rule"] = found["threshold_choice"]
    return choice, found


def _adapt(parent: dict, cfg: AdaptConfig, say: Callable[[float, str], None], save: bool) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    names, d, p_spec = parent["class_names"], parent["defect_index"], parent["preprocessing"]
    spec = {**p_spec, "size": int(cfg.size)} if cfg.size else p_spec  # the adapted model's input
    pcfg = parent.get("train_config") or {}
    known = {f.name for f in fields(TrainConfig)}
    tcfg = TrainConfig(**{k: v for k, v in pcfg.items() if k in known})
    twin = tcfg.twin_threshold
    say(0.0, "reading photos")
    new = load_new_line(cfg.data, parent)
    if cfg.limit > 0:
        new = _sample(new, cfg.limit, cfg.seed)
    new, new_images = D.decode_all(new)
    _check_counts(new, str(cfg.data))
    counts = new.counts()
    per_class = min(counts.values())
    few = few_photos_warning(counts)
    if few:
        log.warning(few)
    mode = "held-out" if per_class * cfg.val_fraction >= cfg.min_val_per_class else "in-sample"
    if mode == "held-out":
        tr, va, hashes = _split(new, new_images, cfg.val_fraction, cfg.seed, twin, cfg.group_by_part)
        if min(np.bincount(new.labels[va], minlength=len(names))) < 1:
            mode = "in-sample"  # near-duplicate groups left a class without held-out photos
    if mode == "in-sample":
        hashes = D.file_hashes(new.paths)
        tr = va = np.arange(len(new))
        log.warning("only %d photos in the smallest class: no held-out validation (needs %d per class); training on "
                    "all, the threshold not chosen on the line, before/after measured on the training photos",
                    per_class, math.ceil(cfg.min_val_per_class / cfg.val_fraction))
    model = model_from_checkpoint(parent)
    if not cfg.force:
        say(0.04, "checking what the current model gets wrong")
        probs = predict_probs(model, new_images, p_spec)
        seen = classification_report(new.labels, probs, names, d, parent["threshold"])
        if nothing_to_learn(seen):
            held = classification_report(new.labels[va], probs[va], names, d, parent["threshold"])
            return _keep_parent(parent, cfg, new, tr, va, hashes, mode, seen, held, t_start, save, say)
    say(0.05, "reading replay photos")
    rep = replay_pool(parent, cfg)
    r_images, r_tr, r_va = [], np.zeros(0, int), np.zeros(0, int)
    if rep is not None:
        rep, r_images = D.decode_all(rep)
        r_tr, r_va, _ = _split(rep, r_images, cfg.replay_val_fraction, cfg.seed + 1, twin)
    train_images = [new_images[i] for i in tr] + [r_images[i] for i in r_tr]
    val_images = [new_images[i] for i in va] + [r_images[i] for i in r_va]
    y_tr = np.concatenate([new.labels[tr], rep.labels[r_tr] if rep is not None else np.zeros(0, int)])
    y_va = np.concatenate([new.labels[va], rep.labels[r_va] if rep is not None else np.zeros(0, int)])
    n_new_va = len(va)

    before_new = _report(model, val_images[:n_new_va], y_va[:n_new_va], names, d, parent["threshold"], p_spec)
    before_rep = _report(model, val_images[n_new_va:], y_va[n_new_va:], names, d, parent["threshold"], p_spec)
    fcfg = replace(tcfg, seed=cfg.seed, views=cfg.views, stage1_epochs=cfg.stage1_epochs,
                   stage2_epochs=cfg.stage2_epochs, lr1=cfg.lr1, lr2=cfg.lr2, patience=cfg.patience,
                   ema_epochs=cfg.ema_epochs, keep=cfg.keep, anchor=cfg.anchor, batch_size=cfg.batch_size,
                   last_blocks=cfg.last_blocks or tcfg.last_blocks, members=cfg.members, region_weight=0.0,
                   aug_strength=cfg.aug_strength or tcfg.aug_strength,
                   aug_rotation=cfg.aug_rotation or tcfg.aug_rotation)
    weight = photo_weights(new.labels[tr], len(r_tr), d, cfg.balance_lines, cfg.defect_weight)
    metrics, history = fit_stages(model, fcfg, train_images, y_tr, val_images, y_va, names, d, spec,
                                  keep_start=True, progress=lambda f, t: say(0.1 + 0.8 * f, t), sample_weight=weight)
    say(0.92, "choosing the threshold")
    val_probs = predict_probs(model, val_images, spec)
    metrics["threshold_choice"], rule_found = _choose_threshold(cfg, parent, tcfg, mode, y_va, val_probs)
    threshold = metrics["threshold_choice"]["threshold"]
    if rule_found is not None and metrics["threshold_choice"].get("applied") == "recall rule":
        metrics.update({k: v for k, v in rule_found.items() if k != "threshold_choice"})
    else:
        metrics["validation"] = classification_report(y_va, val_probs, names, d, threshold)
        if rule_found is not None:
            metrics["validation_sweep"] = rule_found["validation_sweep"]
    after_new = classification_report(y_va[:n_new_va], val_probs[:n_new_va], names, d, threshold)
    after_rep = (classification_report(y_va[n_new_va:], val_probs[n_new_va:], names, d, threshold)
                 if len(r_va) else {})
    new_fp = content_fingerprint(new, hashes)
    adaptation = {
        "kind": KIND,
        "mode": mode,
        "few_photos": few,  # the warning when a class has under FEW_PHOTOS_PER_CLASS photos, else None
        "parent": {"path": str(cfg.checkpoint), "weights_sha256": weights_digest(parent["state_dict"]),
                   "threshold": parent["threshold"]},
        "data": {"root": str(cfg.data), **new_fp, "skipped": new.skipped, "n_skipped": len(new.skipped)},
        "split": {"train": new.subset(tr).counts(), "validation": new.subset(va).counts(),
                  "grouping": "parts" if cfg.group_by_part else "near-duplicate photos",
                  "validation_files": sorted(f"{names[new.labels[i]]}/{new.paths[i].name}" for i in va)},
        "replay": None if rep is None else {"root": str(rep.root), "per_class": cfg.replay_per_class,
                                            "train": rep.subset(r_tr).counts(), "validation": rep.subset(r_va).counts(),
                                            "skipped": rep.skipped},
        "before": {"new_line": _short(before_new, d), "replay": _short(before_rep, d)},
        # every validation score, so the threshold can be audited (a few hundred numbers at most)
        "validation_scores": None if d is None else {
            "defect": [round(float(x), 6) for x in val_probs[:, d]], "is_defect": [bool(x) for x in y_va == d],
            "new_line": [i < n_new_va for i in range(len(y_va))]},
        "after": {"new_line": _short(after_new, d), "replay": _short(after_rep, d)},
        "config": asdict(cfg),
    }
    metrics["adaptation"] = adaptation
    data = {**new_fp, "split": {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "mode": mode,
                                "train": new.subset(tr).fingerprint(), "validation": new.subset(va).fingerprint()},
            "parent_data": {k: v for k, v in (parent.get("data") or {}).items() if k != "split"}}
    band = parent.get("review_band")
    if mode == "held-out" and d is not None:  # the needs-review band, from the same validation scores as the threshold
        band = review_band(y_va == d, val_probs[:, d], threshold)
    # the heat map's scale from the adapted weights (the parent's is in the parent's units), on the validation photos
    # (in-sample mode: the training photos themselves, recorded as such); the parent's display names are kept
    cal = calibrate(model, parent["arch"], names, d, threshold, spec, val_images, y_va)
    scale = cal["heatmap_scale"]
    if scale is not None and mode == "in-sample":
        scale["source"] = "in-sample"
    if cal["histogram"] is not None:
        metrics["validation_score_histogram"] = {**cal["histogram"], "source": mode}
    # the guard refitted in the adapted network's features, on the new line's photos plus the replayed ones, so the
    # new line is not "novel" and the image checks' limits cover both lines
    say(0.95, "fitting the guard")
    guard = fit_for_model(model, parent["arch"], spec, train_images, y_tr, val_images,
                          fitted_on={"lines": [str(cfg.data)] + ([str(rep.root)] if rep is not None else []),
                                     "mode": mode}, edges_per_photo=GUARD_EDGES_PER_PHOTO)
    metrics["timing"]["total_s"] = round(time.perf_counter() - t_start, 1)  # the guard included
    ckpt = make_checkpoint(model, parent["arch"], names, d, spec, threshold, metrics=metrics,
                           train_config={**pcfg, "adaptation": asdict(cfg)}, data=data, history=history,
                           review_band=band, heatmap_scale=scale, display_names=parent.get("display_names"),
                           guard=guard)
    if save:
        save_with_graph(ckpt, cfg.out, graph=True)  # + the ONNX graph the Space serves without torch
    say(1.0, "done")
    log.info("adapted in %.0fs (%s): new-line validation accuracy %.4f -> %.4f", metrics["timing"]["total_s"], mode,
             before_new.get("accuracy", float("nan")), after_new.get("accuracy", float("nan")))
    return ckpt


def _keep_parent(parent: dict, cfg: AdaptConfig, new: D.Dataset, tr, va, hashes: list[str], mode: str, seen: dict,
                 held: dict, t_start: float, save: bool, say: Callable[[float, str], None]) -> dict:
    """The checkpoint :func:`adapt` returns when there is :func:`nothing_to_learn` (``seen``: the parent's report on
    all the new photos, ``held``: on the held-out part): the parent's network, threshold, guard and scales unchanged,
    with an adaptation record that says so (``outcome``) and why."""
    names, d, thr = parent["class_names"], parent["defect_index"], parent["threshold"]
    why = (f"the current model already classifies all {seen['n']} new photos correctly at its threshold"
           + (f" {thr:.4g}" if thr is not None else "") + ": there is nothing to correct, and adapting would only "
           "move what it knows of its own line, so it is kept unchanged (force adapts anyway)")
    new_fp = content_fingerprint(new, hashes)
    adaptation = {
        "kind": KIND, "mode": mode, "outcome": "kept the parent", "why": why,
        "parent": {"path": str(cfg.checkpoint), "weights_sha256": weights_digest(parent["state_dict"]),
                   "threshold": thr},
        "data": {"root": str(cfg.data), **new_fp, "skipped": new.skipped, "n_skipped": len(new.skipped)},
        "split": {"train": new.subset(tr).counts(), "validation": new.subset(va).counts(),
                  "grouping": "parts" if cfg.group_by_part else "near-duplicate photos",
                  "validation_files": sorted(f"{names[new.labels[i]]}/{new.paths[i].name}" for i in va)},
        "replay": None,
        "all_new_photos": _short(seen, d),
        "before": {"new_line": _short(held, d), "replay": {}},
        "after": {"new_line": _short(held, d), "replay": {}},
        "validation_scores": None,
        "config": asdict(cfg),
    }
    metrics = {**(parent.get("metrics") or {}), "adaptation": adaptation,
               "threshold_choice": {"threshold": thr, "applied": "parent: nothing to learn", "why": why,
                                    "kept_from_parent": True, "parent_threshold": thr},
               "timing": {"total_s": round(time.perf_counter() - t_start, 1)}}
    ckpt = {**parent, "metrics": metrics,
            "train_config": {**(parent.get("train_config") or {}), "adaptation": asdict(cfg)}}
    if save:
        save_with_graph(ckpt, cfg.out, graph=True)
    say(1.0, "done: nothing to learn, the current model kept")
    log.info("nothing to learn: %s", why)
    return ckpt


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, images: list[np.ndarray], spec: dict,
                          batch_size: int = 16) -> torch.nn.Module:
    """The cheapest adaptation, needing no labels: every BatchNorm layer's running statistics re-estimated on
    ``images`` of the new line (a cumulative average over batches); the weights are untouched. In place, left in
    eval mode. The baseline that labelled adaptation must beat."""
    from torch import nn

    from inspectkit.preprocess import preprocess

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not images:
        raise ValueError("batch-norm recalibration needs at least one image")
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    model.eval()
    for m in bns:
        m.train()
    s = int(spec["size"])
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = np.stack([preprocess(im, spec) for im in chunk]).astype(np.float32)
        model(torch.from_numpy(x.reshape(len(chunk), 3, s, s)))
    return model.eval()
