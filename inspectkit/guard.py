"""Knowing when a photo cannot be judged: image checks on the decoded photo and novelty in the backbone's features.

A classifier trained on OK and DEFECT castings answers OK or DEFECT for anything, a blank frame included. The guard
gives the handler a third outcome, ``UNUSABLE``, with the reason, from two kinds of evidence measured on their own:

* **Image checks** on the decoded photo (:func:`image_stats`, at a fixed analysis size so that every camera
  resolution is measured alike): exposure (``brightness``, ``highlights``, ``shadows``, ``clipped``), focus
  (``sharpness``: Laplacian energy over the photo's own contrast, so a darker photo is not called blurred) and
  framing (``framing``: correlation of a 32 x 32 thumbnail with the mean training photo, a radially symmetric
  part in the middle of the frame). Their limits are learnt from the training photos' own distribution, widened by
  the changes a line tolerates (:func:`tolerated`: each training photo once more under a random exposure x0.7 to
  x1.3, a blur up to 1 px, a zoom of 0.9 to 1.1 or a turn), each tail stretched beyond its 0.1 % quantile
  (:func:`fit_limits`), not typed constants.
* **Novelty** (:func:`fit_novelty`, after PatchCore's memory bank, Roth et al. 2022, on whole-photo features):
  the direction of the globally pooled last-block features (what the head sees) of the training photos of every
  class and line, a greedy coreset of them kept as the bank. A photo's novelty is the cosine distance to its
  nearest neighbour in the bank, so a real defect (its neighbours are training defects) is not novel. The
  features' direction, not their size, tells a casting from anything else: their length varies six-fold among
  real castings, which is why a Gaussian on the raw features (anomalib's DFM) failed here (docs/guard.md). The
  threshold is chosen on validation photos (:func:`novelty_threshold`).

Everything is numpy and OpenCV (the ONNX path serves without torch); the fitted guard is a dict of numbers, strings
and float32 arrays stored in the checkpoint (``ckpt["guard"]``) and, base64-encoded, in the ONNX graph's metadata,
so it is bound to the checkpoint's digest like the graph. The rules of the outcome: :meth:`Guard.judge`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from inspectkit.drift import STATS, fit_reference
from inspectkit.verdicts import UNUSABLE  # noqa: F401 (the verdict this module decides; imported from here too)

#: Bump when the stored guard changes meaning; a checkpoint with another format is served with the guard off.
GUARD_FORMAT = 1
#: Photos are measured as grey at this size (stretched, like the model's input), whatever their resolution.
ANALYSIS_SIZE = 128
#: The framing template's side.
TEMPLATE_SIZE = 32
#: (statistic, side, reason), in the order they are checked: the first that fails gives the reason.
CHECKS = (
    ("highlights", "low", "too dark"),
    ("brightness", "low", "too dark"),
    ("clipped", "high", "overexposed"),
    ("brightness", "high", "overexposed"),
    ("sharpness", "low", "out of focus"),
    ("shadows", "high", "overexposed"),  # washed out; after focus, since a blur lifts the darkest pixels too
    ("framing", "low", "part not fully in frame"),
)
NOVEL = "not a casting"
#: Every reason an UNUSABLE verdict can give, in the order the checks run (novelty last).
REASONS = tuple(dict.fromkeys([c[2] for c in CHECKS] + [NOVEL]))
#: Quantiles of the training photos that anchor each limit, and how far beyond them a limit lies (a multiple of the
#: distance from the median to that quantile): real photos of the line sit inside, a failed lamp far outside.
LIMIT_QUANTILE = 0.001
LIMIT_STRETCH = 1.5
#: Novelty threshold: this multiple of the validation photos' 99.9 % quantile of novelty.
NOVELTY_QUANTILE = 0.999
NOVELTY_MARGIN = 1.0
#: Training photos kept in the novelty reference's memory bank.
BANK_SIZE = 512


def _grey(rgb: np.ndarray, size: int) -> np.ndarray:
    """Luminance of an RGB uint8 photo, stretched to size x size, uint8: averaged down by whole factors (OpenCV's
    fast area path; a fractional area resize costs ten times more), then bilinear for the rest (less than 2x)."""
    g = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    kx, ky = max(1, w // size), max(1, h // size)
    if kx > 1 or ky > 1:
        g = cv2.resize(g, (w // kx, h // ky), interpolation=cv2.INTER_AREA)
    return cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)


def _normalised(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32).ravel()
    x = x - x.mean()
    n = float(np.linalg.norm(x))
    return x / n if n > 1e-8 else x


def _thumb(grey: np.ndarray) -> np.ndarray:
    return _normalised(cv2.resize(grey, (TEMPLATE_SIZE, TEMPLATE_SIZE), interpolation=cv2.INTER_AREA))


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """The framing thumbnail of a photo: grey, TEMPLATE_SIZE x TEMPLATE_SIZE, zero mean and unit norm (flattened)."""
    return _thumb(_grey(rgb, ANALYSIS_SIZE))


def make_template(thumbs: Sequence[np.ndarray]) -> np.ndarray:
    """The framing template: the mean of the training photos' thumbnails, averaged over quarter turns and flips
    (the part may lie at any angle), normalised like a thumbnail."""
    m = np.mean(np.stack([np.asarray(t, np.float32).reshape(TEMPLATE_SIZE, TEMPLATE_SIZE) for t in thumbs]), axis=0)
    turns = [np.rot90(m, k) for k in range(4)]
    m = np.mean(turns + [t.T for t in turns], axis=0)
    return _normalised(m)


_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def image_stats(rgb: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
    """The statistics of :data:`STATS` for one RGB uint8 photo (``framing`` is NaN without a ``template``).

    brightness: mean luminance in [0, 1]; highlights / shadows: its 99th / 1st percentile; clipped: the share of
    pixels at 250 or more; sharpness: log10 of the Laplacian's variance over the luminance variance (contrast-free);
    framing: correlation of the thumbnail with ``template`` (1: framed like the mean training photo).
    Measured on the ANALYSIS_SIZE grey photo (about 1 ms for a 300 px photo: it runs on every inspection).
    """
    g8 = _grey(rgb, ANALYSIS_SIZE)
    hist = np.bincount(g8.ravel(), minlength=256).astype(np.float64)
    n = hist.sum()
    cdf = np.cumsum(hist) / n
    lo, hi = np.searchsorted(cdf, 0.01) / 255.0, np.searchsorted(cdf, 0.99) / 255.0
    mean = float(hist @ _LEVELS / n)
    var = float(hist @ (_LEVELS - mean) ** 2 / n)
    lap = cv2.Laplacian(g8, cv2.CV_32F, ksize=3, scale=1 / 255.0)
    lap_sd = float(cv2.meanStdDev(lap)[1][0, 0])
    sharp = float(np.log10((lap_sd ** 2 + 1e-9) / (var + 1e-6)))
    framing = float("nan")
    if template is not None:
        framing = float(np.dot(_thumb(g8), np.asarray(template, np.float32).ravel()))
    return np.array([mean, hi, lo, float(hist[250:].sum() / n), sharp, framing], dtype=np.float64)


def tolerated(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo under one random change a line tolerates and the model is expected to judge: exposure x0.7 to
    x1.3, a Gaussian blur of up to 1 px at 300 px, JPEG quality 25 to 60, a slight colour cast, a zoom of 0.9 to
    1.1, or a turn by any angle."""
    kind = int(rng.integers(6))
    h, w = rgb.shape[:2]
    if kind == 0:
        return np.clip(rgb.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
    if kind == 1:
        return cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.3, 1.0) * min(h, w) / 300.0)
    if kind == 2:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 61))])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    if kind == 3:
        cast = 1.0 + rng.uniform(-0.1, 0.1, 3)
        return np.clip(rgb.astype(np.float32) * cast, 0, 255).astype(np.uint8)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(0, 360) if kind == 5 else 0.0,
                                rng.uniform(0.9, 1.1) if kind == 4 else 1.0)
    return cv2.warpAffine(np.ascontiguousarray(rgb), m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _gain(rgb: np.ndarray, g) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * np.asarray(g, np.float32), 0, 255).astype(np.uint8)


def at_the_edges(rgb: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The photo at each edge of what a line tolerates (the far end of each :func:`tolerated` change): exposure x0.7
    and x1.3, blur 1 px at 300 px, JPEG quality 25, a colour cast either way, zoom 0.9 and 1.1, a random turn.
    The novelty threshold is chosen on validation photos and these (:func:`fit_guard`)."""
    h, w = rgb.shape[:2]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 25])

    def warp(angle, scale):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        return cv2.warpAffine(np.ascontiguousarray(rgb), m, (w, h), borderMode=cv2.BORDER_REPLICATE)

    return [_gain(rgb, 0.7), _gain(rgb, 1.3), cv2.GaussianBlur(rgb, (0, 0), min(h, w) / 300.0),
            cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy(), _gain(rgb, [1.1, 1.0, 0.9]),
            _gain(rgb, [0.9, 1.0, 1.1]), warp(0.0, 0.9), warp(0.0, 1.1), warp(float(rng.uniform(0, 360)), 1.0)]


def fit_limits(stats: np.ndarray, quantile: float = LIMIT_QUANTILE, stretch: float = LIMIT_STRETCH) -> dict:
    """Lower and upper limits of each statistic from the training photos' ``stats`` (N x len(STATS)).

    limit = median -/+ ``stretch`` x (distance from the median to the ``quantile`` / 1 - ``quantile`` quantile).
    """
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] != len(STATS) or len(stats) < 2:
        raise ValueError(f"stats must be N x {len(STATS)} with N >= 2, got shape {stats.shape}")
    q_lo, med, q_hi = np.nanquantile(stats, [quantile, 0.5, 1 - quantile], axis=0)
    return {"low": (med - stretch * (med - q_lo)).tolist(), "high": (med + stretch * (q_hi - med)).tolist(),
            "quantile": float(quantile), "stretch": float(stretch)}


def check_reason(stats: np.ndarray, limits: Mapping) -> str | None:
    """The first failing image check of :data:`CHECKS` for one photo's ``stats``, or None when all pass."""
    for name, side, reason in CHECKS:
        k = STATS.index(name)
        v = float(stats[k])
        if not np.isfinite(v):
            continue
        if side == "low" and v < limits["low"][k] or side == "high" and v > limits["high"][k]:
            return reason
    return None


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def coreset(x: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of a greedy k-centre coreset of the unit rows ``x`` (PatchCore's subsampling): each pick is the row
    farthest (in cosine distance) from those picked so far, so the bank covers the rare photos too."""
    rng = np.random.default_rng(seed)
    first = int(rng.integers(len(x)))
    picked = [first]
    dmin = 1.0 - x @ x[first]
    for _ in range(min(size, len(x)) - 1):
        i = int(np.argmax(dmin))
        picked.append(i)
        np.minimum(dmin, 1.0 - x @ x[i], out=dmin)
    return np.array(picked)


def fit_novelty(pooled: np.ndarray, labels: np.ndarray, bank_size: int = BANK_SIZE, seed: int = 0) -> dict:
    """The novelty reference from training photos' pooled features (N x K) of every class and line: a memory bank
    of ``bank_size`` of their directions (unit vectors), picked by :func:`coreset`."""
    x = _unit(pooled)
    y = np.asarray(labels).reshape(-1)
    if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"pooled features {x.shape} must be N x K (N >= 2) with one label each ({len(y)} labels)")
    idx = coreset(x, bank_size, seed)
    counts = {str(int(c)): int((y[idx] == c).sum()) for c in np.unique(y)}
    return {"bank": x[idx].astype(np.float32), "bank_classes": counts, "fitted_photos": int(len(x))}


def novelty_scores(pooled: np.ndarray, ref: Mapping, bank_t: np.ndarray | None = None) -> np.ndarray:
    """Novelty of each photo (N) from its pooled features (N x K): the cosine distance of its feature direction to
    the nearest one in the reference's bank (0: like a training photo; a blank frame or a cat: far). ``bank_t``: the
    bank transposed and contiguous (K x M), when the caller keeps one (:class:`Guard` does)."""
    x = np.asarray(pooled, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if bank_t is None:
        bank_t = np.ascontiguousarray(np.asarray(ref["bank"], np.float32).T)
    # einsum, not @: BLAS's own threads would spin against ONNX Runtime's for the same cores (7 ms a photo on two
    # cores, against 0.1 ms in numpy's single-threaded loop, which runs fastest over a K x M bank)
    sims = np.einsum("ij,jk->ik", _unit(x), bank_t)
    return (1.0 - sims.max(axis=1)).astype(np.float64)


def novelty_threshold(validation_novelty: np.ndarray, quantile: float = NOVELTY_QUANTILE,
                      margin: float = NOVELTY_MARGIN) -> float:
    """The novelty above which a photo is UNUSABLE: ``margin`` x the ``quantile`` of the validation photos'."""
    v = np.asarray(validation_novelty, dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("the novelty threshold needs finite novelty scores of at least one validation photo")
    # never 0: with photos identical to the bank's (a tiny in-sample adaptation) every new photo would be novel
    return float(max(margin * np.quantile(v, quantile), 1e-6))


# -- storage: numpy in memory; float32 tensors in the checkpoint; base64 in the ONNX metadata -----------------------
ARRAYS = ("template", "bank")


def _as_array(v: Any) -> np.ndarray:
    if isinstance(v, Mapping) and "b64" in v:
        return np.frombuffer(base64.b64decode(v["b64"]), dtype="<f4").astype(np.float32).reshape(v["shape"])
    if hasattr(v, "numpy"):  # a torch tensor from the checkpoint (no torch import here)
        v = v.numpy()
    return np.asarray(v, dtype=np.float32)


def encode(stored: Mapping) -> dict:
    """The guard with every array as ``{"b64", "shape"}`` (float32 little-endian): JSON-ready, for the graph."""
    out = {}
    for key, v in stored.items():
        if isinstance(v, Mapping) and key in ("novelty",):
            out[key] = encode(v)
        elif key in ARRAYS:
            a = np.ascontiguousarray(_as_array(v), dtype="<f4")
            out[key] = {"b64": base64.b64encode(a.tobytes()).decode("ascii"), "shape": list(a.shape)}
        else:
            out[key] = v
    return out


def to_numpy(stored: Mapping) -> dict:
    """The guard with every array as numpy float32, whichever form it was stored in."""
    out = {}
    for key, v in stored.items():
        if isinstance(v, Mapping) and key in ("novelty",):
            out[key] = to_numpy(v)
        elif key in ARRAYS:
            out[key] = _as_array(v)
        else:
            out[key] = v
    return out


def check_stored(stored: Any, name: str = "guard") -> None:
    """ValueError naming the problem unless ``stored`` is a guard this code can read."""
    if not isinstance(stored, Mapping):
        raise ValueError(f"{name} must be a dict, got {type(stored).__name__}")
    missing = [k for k in ("format", "stats", "limits", "template", "novelty", "novelty_threshold") if k not in stored]
    if missing:
        raise ValueError(f"{name} is missing {missing}")
    if list(stored["stats"]) != list(STATS):
        raise ValueError(f"{name} stats {stored['stats']!r} are not this code's {list(STATS)}")
    g = to_numpy(stored)
    if g["template"].size != TEMPLATE_SIZE ** 2:
        raise ValueError(f"{name} template has {g['template'].size} values, not {TEMPLATE_SIZE ** 2}")
    bank = g["novelty"].get("bank") if isinstance(g["novelty"], Mapping) else None
    if bank is None or bank.ndim != 2 or len(bank) < 1 or not np.all(np.isfinite(bank)):
        raise ValueError(f"{name} novelty bank must be a finite M x K array")
    t = stored["novelty_threshold"]
    if not isinstance(t, (int, float)) or not np.isfinite(t) or t <= 0:
        raise ValueError(f"{name} novelty_threshold {t!r} must be a positive number")


@dataclass
class Verdict:
    """The guard's view of one photo: ``reason`` (None: it can be judged), ``novelty`` and its ``stats``."""

    reason: str | None
    novelty: float | None
    stats: dict


class Guard:
    """A fitted guard (:func:`fit_guard`): judges photos from their decoded pixels and pooled features."""

    def __init__(self, stored: Mapping):
        g = to_numpy(stored)  # decoded once (base64 from the graph's metadata, tensors from the checkpoint)
        check_stored(g)
        self.format = g["format"]
        self.limits = g["limits"]
        self.template = g["template"]
        self.novelty_ref = g["novelty"]
        self.novelty_threshold = float(g["novelty_threshold"])
        self._bank_t = np.ascontiguousarray(self.novelty_ref["bank"].T)
        self.drift_reference = g.get("drift")
        self.fitted_on = g.get("fitted_on", {})

    def stats(self, rgb: np.ndarray) -> np.ndarray:
        """:func:`image_stats` with this guard's framing template."""
        return image_stats(rgb, self.template)

    def novelty(self, pooled: np.ndarray) -> np.ndarray:
        """:func:`novelty_scores` against this guard's reference."""
        return novelty_scores(pooled, self.novelty_ref, self._bank_t)

    def stats_dict(self, stats: np.ndarray) -> dict:
        """One photo's statistics by name (for the JSON and the rows)."""
        return {name: round(float(v), 5) for name, v in zip(STATS, stats) if np.isfinite(v)}

    def judge(self, stats: np.ndarray, novelty: float) -> str | None:
        """The reason a photo cannot be judged, or None: the first failing image check (exposure, then focus, then
        framing), else "not a casting" when its novelty exceeds the threshold."""
        reason = check_reason(stats, self.limits)
        if reason is None and novelty > self.novelty_threshold:
            reason = NOVEL
        return reason

    def summary(self) -> dict:
        """What the page and the API say about the guard: on, its threshold and what it was fitted on."""
        return {"on": True, "novelty_threshold": round(self.novelty_threshold, 4), "reasons": list(REASONS),
                "fitted_on": self.fitted_on}


def guard_from_info(info: Mapping) -> tuple[Guard | None, str | None]:
    """(the checkpoint's guard, None), or (None, why the guard is off): none stored, one this code cannot read, or a
    model without a defect class (its verdicts are class names, not OK/DEFECT). ``info``: the checkpoint's keys."""
    stored = info.get("guard")
    if stored is None:
        return None, "this checkpoint has no guard (fit one with fit_guard.py): UNUSABLE is never returned"
    if info.get("defect_index") is None:
        return None, "the guard needs a model with a defect class"
    if isinstance(stored, Mapping) and stored.get("format") != GUARD_FORMAT:
        return None, f"the checkpoint's guard has format {stored.get('format')!r}; this code reads {GUARD_FORMAT}"
    try:
        return Guard(stored), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, f"the checkpoint's guard cannot be read ({exc}): UNUSABLE is never returned"


def fit_guard(train_rgb: Sequence[np.ndarray], train_labels: np.ndarray, val_rgb: Sequence[np.ndarray],
              features: Callable[[list], tuple[np.ndarray, np.ndarray]], fitted_on: Mapping | None = None,
              bank_size: int = BANK_SIZE, seed: int = 0, edges_per_photo: int | None = None) -> dict:
    """Fit a guard for the network behind ``features`` (decoded RGB photos -> (pooled last-block features N x K,
    class probabilities N x C)).

    The training photos and each of them once more under a :func:`tolerated` change give the image-check limits,
    the framing template (unchanged photos) and the novelty bank (both classes, every line the photos come from);
    the validation photos and their variants :func:`at_the_edges` of the tolerance give the novelty threshold; the
    unchanged validation photos give the drift reference (a steady line). ``edges_per_photo``: each validation
    photo gives only this many of its edge variants, drawn at random (None: all of them); adaptation uses a few,
    because the network's passes over the variants are most of the fit's time and a few dozen held-out photos times
    three edges already put the 99.9 % quantile at the top of the sample. Returns the stored form (numpy arrays;
    :func:`inspectkit.inference.checkpoint.make_checkpoint` makes tensors).
    """
    train_rgb, val_rgb = list(train_rgb), list(val_rgb)
    labels = np.asarray(train_labels).reshape(-1)
    if len(train_rgb) != len(labels) or len(train_rgb) < 2 or not val_rgb:
        raise ValueError(f"the guard needs at least 2 labelled training photos ({len(train_rgb)} photos, "
                         f"{len(labels)} labels) and at least one validation photo ({len(val_rgb)})")
    rng = np.random.default_rng(seed)
    tr_var = [tolerated(im, rng) for im in train_rgb]
    va_var = []
    for im in val_rgb:
        edges = at_the_edges(im, rng)
        if edges_per_photo is not None and edges_per_photo < len(edges):
            edges = [edges[k] for k in sorted(rng.choice(len(edges), max(1, edges_per_photo), replace=False))]
        va_var += edges
    template = make_template([thumbnail(im) for im in train_rgb])
    limits = fit_limits(np.stack([image_stats(im, template) for im in train_rgb + tr_var]))
    tr_pooled, _ = features(train_rgb + tr_var)
    ref = fit_novelty(tr_pooled, np.concatenate([labels, labels]), bank_size, seed)
    va_pooled, va_probs = features(val_rgb + va_var)
    va_nov = novelty_scores(va_pooled, ref)
    n = len(val_rgb)
    va_stats = np.stack([image_stats(im, template) for im in val_rgb])
    return {"format": GUARD_FORMAT, "stats": list(STATS), "limits": limits, "template": template,
            "novelty": ref, "novelty_threshold": novelty_threshold(va_nov),
            "drift": fit_reference(va_stats, va_nov[:n], va_probs[:n].argmax(axis=1)),
            "fitted_on": dict(fitted_on or {}, train_photos=len(train_rgb), validation_photos=n,
                              tolerated_variants=len(tr_var) + len(va_var))}
