"""Decision threshold and classification metrics (numpy only, so the app does not need scikit-learn)."""

from __future__ import annotations

import numpy as np

SWEEP = tuple(round(x, 2) for x in np.arange(0.05, 0.951, 0.05))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def choose_threshold(is_defect: np.ndarray, scores: np.ndarray, target_recall: float = 0.995) -> dict:
    """The threshold with the lowest false-alarm rate whose defect recall is at least ``target_recall``; among
    thresholds with that false-alarm rate, the one that keeps the most defects.

    A defect is declared when ``score >= threshold``. The threshold is the midpoint of the gap below the lowest
    defect score it keeps, to leave a margin on both sides.
    """
    y = np.asarray(is_defect).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall {target_recall} must be in (0, 1]")
    if y.sum() == 0 or (~y).sum() == 0:
        raise ValueError(f"threshold selection needs both defect and OK examples, got {int(y.sum())} defect "
                         f"and {int((~y).sum())} OK")
    cuts = np.unique(s)[::-1]  # every distinct threshold, highest first
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    kept = len(pos) - np.searchsorted(pos, cuts, side="left")  # defects with score >= cut
    alarms = len(neg) - np.searchsorted(neg, cuts, side="left")
    need = min(max(int(np.ceil(target_recall * len(pos) - 1e-9)), 1), len(pos))
    ok = kept >= need
    # Going down, both counts only grow: the feasible cuts with the fewest alarms are one run, and its lowest cut
    # keeps the most defects. The highest feasible cut alone would throw away recall that costs no false alarm
    # (on a confident model it sat at p = 0.998, just under the second-lowest validation defect).
    j = int(np.nonzero(ok & (alarms == alarms[ok].min()))[0].max())
    t_lo = cuts[j + 1] if j + 1 < len(cuts) else 0.0
    t = float(np.clip((cuts[j] + t_lo) / 2.0, 1e-6, 1 - 1e-6))
    pred = s >= t
    return {"threshold": t, "target_recall": float(target_recall),
            "recall": float(pred[y].mean()), "false_alarm_rate": float(pred[~y].mean())}


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half."""
    y = np.asarray(is_positive).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """n x n matrix: rows are true classes, columns predicted ones."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def per_class(cm: np.ndarray, class_names: list[str]) -> dict:
    """Precision, recall, F1 and support of each class from a confusion matrix."""
    out = {}
    for i, c in enumerate(class_names):
        tp = cm[i, i]
        pred = cm[:, i].sum()
        true = cm[i, :].sum()
        p = tp / pred if pred else 0.0
        r = tp / true if true else 0.0
        out[c] = {"precision": float(p), "recall": float(r), "f1": float(2 * p * r / (p + r)) if p + r else 0.0,
                  "support": int(true)}
    return out


def predict_labels(probs: np.ndarray, defect_index: int | None, threshold: float | None) -> np.ndarray:
    """Binary models: defect when its probability >= threshold, else the most likely other class. Else argmax."""
    probs = np.asarray(probs)
    if defect_index is None or threshold is None:
        return probs.argmax(axis=1)
    rest = probs.copy()
    rest[:, defect_index] = -1.0
    return np.where(probs[:, defect_index] >= threshold, defect_index, rest.argmax(axis=1))


def classification_report(y_true: np.ndarray, probs: np.ndarray, class_names: list[str],
                          defect_index: int | None, threshold: float | None) -> dict:
    """Accuracy, per-class precision/recall/F1, confusion matrix, ROC-AUC (and missed defects / false alarms)."""
    y_true = np.asarray(y_true)
    pred = predict_labels(probs, defect_index, threshold)
    cm = confusion(y_true, pred, len(class_names))
    out = {"n": int(len(y_true)), "accuracy": float((pred == y_true).mean()) if len(y_true) else float("nan"),
           "per_class": per_class(cm, class_names), "confusion_matrix": cm.tolist(), "threshold": threshold}
    if defect_index is not None:
        is_def = y_true == defect_index
        out["roc_auc"] = roc_auc(is_def, probs[:, defect_index])
        out["missed_defects"] = int(((pred != defect_index) & is_def).sum())
        out["false_alarms"] = int(((pred == defect_index) & ~is_def).sum())
    else:
        aucs = [roc_auc(y_true == i, probs[:, i]) for i in range(len(class_names))]
        out["roc_auc"] = float(np.nanmean(aucs))
    return out


def threshold_sweep(is_defect: np.ndarray, scores: np.ndarray, thresholds=SWEEP) -> list[dict]:
    """Recall, false-alarm rate, precision and accuracy at each threshold (defect when score >= t)."""
    y = np.asarray(is_defect).astype(bool)
    s = np.asarray(scores)
    rows = []
    for t in thresholds:
        p = s >= t
        tp, fp = int((p & y).sum()), int((p & ~y).sum())
        rows.append({"threshold": float(t), "recall": float(tp / max(y.sum(), 1)),
                     "false_alarm_rate": float(fp / max((~y).sum(), 1)),
                     "precision": float(tp / (tp + fp)) if tp + fp else 1.0,
                     "accuracy": float((p == y).mean()), "missed_defects": int((~p & y).sum()),
                     "false_alarms": fp})
    return rows


def fbeta(is_defect: np.ndarray, pred_defect: np.ndarray, beta: float = 2.0) -> float:
    """F-beta of the defect class; beta > 1 favours recall."""
    y = np.asarray(is_defect).astype(bool)
    p = np.asarray(pred_defect).astype(bool)
    tp = (p & y).sum()
    if tp == 0:
        return 0.0
    prec, rec = tp / p.sum(), tp / y.sum()
    return float((1 + beta ** 2) * prec * rec / (beta ** 2 * prec + rec))


def weighted_log_loss(y_true: np.ndarray, probs: np.ndarray, class_weights) -> float:
    """Cross-entropy where every sample counts with its class's weight: sum_i w_yi * -log p_i(y_i) / sum_i w_yi."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    w = np.asarray(class_weights, dtype=np.float64)[y]
    if not len(y):
        raise ValueError("weighted_log_loss needs at least one sample")
    nll = -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))
    return float((w * nll).sum() / w.sum())


def recall_weighted_loss(y_true: np.ndarray, probs: np.ndarray, defect_index: int, beta: float = 2.0) -> float:
    """Log-loss in which a defect image counts ``beta**2`` times an OK one (as F-beta weighs recall): smooth where
    F-beta at a fixed threshold moves in steps of one image, and it favours defect recall the same way."""
    w = np.ones(np.asarray(probs).shape[1])
    w[defect_index] = beta ** 2
    return weighted_log_loss(y_true, probs, w)


def selection_loss(labels: np.ndarray, probs: np.ndarray, defect_index: int | None) -> float:
    """The loss models are compared on: binary, the defect-weighted log-loss (beta^2 = 4) that training early-stops
    on; multi-class, the plain log-loss."""
    if defect_index is None:
        return weighted_log_loss(labels, probs, np.ones(probs.shape[1]))
    return recall_weighted_loss(labels, probs, defect_index)
