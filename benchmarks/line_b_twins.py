"""Which line-B photos have a twin (the same physical part) in line A? Line B holds the dataset's un-augmented
512x512 photos; many are the originals of parts that appear in the 300x300 set augmented: turned by any angle,
mirrored or not, zoomed a little, re-framed, resized and re-encoded. A figure on line B is worth most on its photos
without such a twin.

    python -m benchmarks.line_b_twins --json reports/line-b/twins.json --md reports/line-b/twins.md

All parts share one design (an impeller: disc, blades, holes), so a global image similarity scores different parts
as high as the same part (an earlier polar cross-correlation: different parts up to 0.94). What belongs to one part
is its surface grain, burrs on the rim and pinholes; the measure therefore uses local features with geometric
verification, the standard near-duplicate retrieval approach:

1. **Features.** Each photo grey at 300 px (line B resized from 512, line A as it is; the part fills about the same
   share of both frames, and step 3 allows any turn and zoom anyway). SIFT keypoints with a low contrast threshold
   (0.01: the grain gets keypoints, not only the design's edges), at most ``--features`` per photo, as RootSIFT.
   A query is described twice, as it is and mirrored, since the augmentation may mirror.
2. **Candidates.** One FLANN kd-tree over the descriptors of every line-A photo. Each query descriptor looks up its
   16 nearest neighbours and votes for the photo of each neighbour closer than 0.8 times the 16th (a ratio test
   against the crowd: a blade edge has hundreds of near-equal neighbours and votes for nobody; a pinhole's
   neighbours are the few copies of its part). The ``--candidates`` K photos with the most votes go on; photos
   that end below the threshold are searched again with ``--recheck`` candidates.
3. **Verification.** Ratio-test matches between the query (and its mirror image) and each candidate, then RANSAC
   (2 px) with an **affine** map: the dataset's augmentation zooms x and y apart (a full affine fit to real twins
   has singular values up to ~1.2 apart and keeps two to three times the inliers of a similarity fit), so each axis
   may scale 0.5 to 2, the two at most 1.5 apart, without reflection. The **score** is the number of inliers counted
   once per 15 px cell (on both photos), so that a cluster of matches in one patch of turning marks counts little
   and only agreement spread over the part scores high. A line-B photo's score is its best candidate's; a twin is a
   score >= the threshold.
4. **Calibration** (``--calibrate N`` line-B photos, seeded). *Same part*: a copy of each photo made as the
   dataset's augmentation made its copies (turned 0 to 360 degrees, mirrored or not, zoomed 0.85 to 1.15 per axis,
   shifted up to 4 %, resized to 300, blurred 0.3 to 0.7 px as line A is softer, brightness changed, JPEG quality 75),
   placed among the line-A photos: does retrieval reach it, and the best score. *Different parts*: the same
   pipeline's best score when every candidate is of another part: the photo against line-B photos and against
   line-A photos of the OTHER class (a part keeps its label in its photos; within a class line B has several photos
   of one part, so same-class pairs are no null), and for ``--brute`` photos against every other-class line-B photo
   without retrieval. Other-class pairs that score like same-part copies (>= their 1st percentile) are the same
   part under two labels (there are such parts in the data); they are set aside and listed. The threshold (unless
   ``--threshold`` is given) is ``THRESHOLD_RULE`` applied to the largest remaining different-part score. Sanity:
   line-A test photos against line-A train (most have augmented twins there).

The JSON holds the command, the parameters, the calibration, the counts and one row per line-B photo (``file``,
``twin``, ``score``, ``inliers``, ``match``, ``mirrored``, ``scale``, ``angle``, ``anisotropy``). Descriptors are
cached under ``runs/twins/``. Needs only numpy and OpenCV. About 4 minutes on 2 cores (8 without the cache).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from inspectkit.data.parts import (  # noqa: F401 (the measure's pieces, used here and by its tests as T.*)
    DEFAULT,
    NEIGHBOURS,
    NOTHING,
    SIDE,
    THRESHOLD,
    Index,
    Params,
    crowd_votes,
    describe,
    distinct,
    features,
    find_twins,
    load_grey,
    ratio_matches,
    rootsift,
    same_part_groups,
    sift_raw,
    threaded,
    to_grey,
    top_candidates,
    verify,
)
from inspectkit.paths import CHECKOUT

THRESHOLD_RULE = ("1.5 x the largest different-part score (both nulls and the brute-force check, pairs set aside as "
                  "the same part under two labels excluded), rounded up, and at least 12")
DEFAULT_THRESHOLD = 12  # used only without calibration (--calibrate 0) and without --threshold
CACHE = CHECKOUT / "runs" / "twins"


# ------------------------------------------------------------------------------------------------ the data


def photos(root: Path) -> list[Path]:
    """The photos under ``root``, sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def augment(grey: np.ndarray, rng: np.random.Generator, zoom=(0.85, 1.15), shift: float = 0.04,
            quality: int = 75, blur_sigma=(0.3, 0.7)) -> tuple[np.ndarray, dict]:
    """A copy of ``grey`` made as the dataset's augmentation made its copies: turned by a random angle (0..360),
    zoomed along x and y independently (as Keras' ``zoom_range`` does; the real line-A copies show it: a full affine
    fit to a line-B photo and its line-A twin has unequal singular values, up to ~1.2 apart), shifted (re-framed) by
    up to ``shift`` of the side, mirrored or not, resized to 300 px, blurred a little, brightness and contrast changed
    a little, JPEG re-encoded. Returns the copy and what was done."""
    h, w = grey.shape
    angle = float(rng.uniform(0, 360))
    zx, zy = (float(z) for z in rng.uniform(*zoom, 2))
    t = math.radians(angle)
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])  # counter-clockwise on screen
    a = rot @ np.diag([zx, zy])
    c = np.array([w / 2, h / 2])
    m = np.hstack([a, (c - a @ c + rng.uniform(-shift, shift, 2) * (w, h))[:, None]])
    out = cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mirrored = bool(rng.random() < 0.5)
    if mirrored:
        out = out[:, ::-1]
    out = to_grey(np.ascontiguousarray(out), SIDE)
    # line A is softer than line B resized to 300 px (Laplacian s.d. ~17 against ~24): blur a little as well
    blur = float(rng.uniform(*blur_sigma))
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    gain, offset = float(rng.uniform(0.9, 1.1)), float(rng.uniform(-12, 12))
    out = np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE), {"angle": round(angle, 1), "zoom_x": round(zx, 3),
                                                      "zoom_y": round(zy, 3), "mirrored": mirrored,
                                                      "blur": round(blur, 2)}


def cached_features(files: list[Path], params: Params, threads: int, label: str, cache: Path | None = CACHE,
                    mirrored: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`features` of every file (mirrored first if ``mirrored``), read from / written to ``cache`` (keyed by
    the parameters, the paths, sizes and modification times)."""
    key = hashlib.sha256(json.dumps([params.features, params.contrast, SIDE, mirrored,
                                     [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]]).encode())
    path = cache / f"{label}-{key.hexdigest()[:16]}.npz" if cache else None
    if path and path.exists():
        z = np.load(path)
        cut = np.cumsum(z["sizes"])[:-1]
        print(f"  {label}: {len(files)} photos' features from {path.relative_to(CHECKOUT) if path.is_relative_to(CHECKOUT) else path}")
        return [(xy, rootsift(d)) for xy, d in zip(np.split(z["xy"], cut), np.split(z["desc"], cut))]

    def one(f: Path):
        g = load_grey(f)
        return sift_raw(np.ascontiguousarray(g[:, ::-1]) if mirrored else g, params)

    raw = threaded(one, files, threads, f"{label} features")
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, xy=np.concatenate([r[0] for r in raw]), desc=np.concatenate([r[1] for r in raw]),
                 sizes=np.array([len(r[0]) for r in raw]))
    return [(xy, rootsift(d)) for xy, d in raw]


def stats(x) -> dict:
    """Count, median, percentiles and extremes of scores."""
    x = np.asarray(x, float)
    if not len(x):
        return {"n": 0}
    p = np.percentile(x, [1, 5, 25, 50, 75, 95, 99])
    return {"n": int(len(x)), "min": int(x.min()), "p1": round(float(p[0]), 1), "p5": round(float(p[1]), 1),
            "p25": round(float(p[2]), 1), "median": round(float(p[3]), 1), "p75": round(float(p[4]), 1),
            "p95": round(float(p[5]), 1), "p99": round(float(p[6]), 1), "max": int(x.max())}


def threshold_rule(null_max: int) -> int:
    """:data:`THRESHOLD_RULE`: well above the best different-part score seen."""
    return max(DEFAULT_THRESHOLD, math.ceil(1.5 * null_max))


# ------------------------------------------------------------------------------------------------ the run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--line-a", default=str(CHECKOUT.parent / "shared" / "data" / "casting"),
                    help="line A root: train|test/<class>/*.jpeg (default: ../shared/data/casting)")
    ap.add_argument("--line-b", default=str(CHECKOUT.parent / "shared" / "data" / "casting-line-b"),
                    help="line B root: <class>/*.jpeg (default: ../shared/data/casting-line-b)")
    ap.add_argument("--threshold", type=int, default=None,
                    help=f"score for a twin (default: from the calibration: {THRESHOLD_RULE})")
    ap.add_argument("--candidates", type=int, default=15, help="line-A photos verified per query (K)")
    ap.add_argument("--recheck", type=int, default=60,
                    help="line-B photos below the threshold are searched again with this many candidates; the "
                         "different-part nulls use as many (0: no second search)")
    ap.add_argument("--calibrate", type=int, default=300, help="line-B photos in the calibration (0: none)")
    ap.add_argument("--brute", type=int, default=20,
                    help="of those, photos verified against every other-class line-B photo (no retrieval)")
    ap.add_argument("--features", type=int, default=DEFAULT.features, help="SIFT keypoints per photo at most")
    ap.add_argument("--contrast", type=float, default=DEFAULT.contrast, help="SIFT contrast threshold")
    ap.add_argument("--reproj", type=float, default=DEFAULT.reproj, help="RANSAC reprojection threshold (px)")
    ap.add_argument("--cell", type=float, default=DEFAULT.cell, help="px: the score counts inliers once per cell")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(CACHE), help="descriptor cache folder ('' for none)")
    ap.add_argument("--json", default="reports/line-b/twins.json")
    ap.add_argument("--md", default=None)
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)  # parallel over photos instead, on --threads threads
    t0 = time.perf_counter()
    params = Params(features=a.features, contrast=a.contrast, reproj=a.reproj, cell=a.cell)
    root_a, root_b = Path(a.line_a), Path(a.line_b)
    la, lb = photos(root_a), photos(root_b)
    if not la or not lb:
        raise SystemExit(f"line_b_twins.py: error: no photos under {root_a} or {root_b}")
    name_a = [p.relative_to(root_a).as_posix() for p in la]
    name_b = [p.relative_to(root_b).as_posix() for p in lb]
    cls_a = np.array([str(p.parent.name) for p in la])
    cls_b = np.array([str(p.parent.name) for p in lb])
    cache = Path(a.cache) if a.cache else None
    print(f"line A: {len(la)} photos, line B: {len(lb)} photos; {a.threads} threads", flush=True)

    fa = cached_features(la, params, a.threads, "line-a", cache)
    fb = cached_features(lb, params, a.threads, "line-b", cache)
    fbm = cached_features(lb, params, a.threads, "line-b-mirrored", cache, mirrored=True)
    qb = [{False: f, True: m} for f, m in zip(fb, fbm)]
    timing = {"features_s": round(time.perf_counter() - t0, 1)}
    t = time.perf_counter()
    index = Index([d for _, d in fa])
    timing["index_s"] = round(time.perf_counter() - t, 1)
    print(f"index over {len(index.owner)} line-A descriptors in {timing['index_s']} s", flush=True)

    calibration = None
    threshold = a.threshold if a.threshold is not None else DEFAULT_THRESHOLD
    if a.calibrate:
        t = time.perf_counter()
        calibration = calibrate(a, params, index, fa, qb, la, lb, name_a, name_b, cls_a, cls_b)
        timing["calibration_s"] = round(time.perf_counter() - t, 1)
        if a.threshold is None:
            threshold = calibration["threshold_from_rule"]

    # the real question: every line-B photo against all of line A; those below the threshold once more with
    # --recheck candidates, so that a twin retrieval ranked low is not missed
    t = time.perf_counter()
    found = find_twins(qb, fa, a.candidates, threshold, params, index, threads=a.threads, progress="line B vs line A")
    low = [i for i, r in enumerate(found) if not r["twin"]]
    rechecked = 0
    if a.recheck > a.candidates and low:
        again = find_twins([qb[i] for i in low], fa, a.recheck, threshold, params, index, threads=a.threads,
                           progress=f"line B below the threshold, {a.recheck} candidates")
        for i, r in zip(low, again):
            rechecked += r["twin"]
            if (r["score"], r["inliers"]) > (found[i]["score"], found[i]["inliers"]):
                found[i] = r
    timing["search_s"] = round(time.perf_counter() - t, 1)

    if calibration:
        same = np.array([s["score"] for s in calibration["same_part_rows"]])
        calibration["same_part_below_threshold"] = int((same < threshold).sum())
        nulls = np.array(calibration.pop("_null_scores"))
        calibration["different_part_at_or_above_threshold"] = int((nulls >= threshold).sum())
        calibration["different_part_pairs"] = int(len(nulls))
        sanity = calibration["line_a_test_vs_train"]
        sanity["found"] = int(sum(s >= threshold for s in sanity.pop("_scores")))
        sanity["share_found"] = round(sanity["found"] / max(1, sanity["photos"]), 4)

    rows = []
    for name, c, r in zip(name_b, cls_b, found):
        match = name_a[r["ref"]] if r["ref"] is not None else None
        rows.append({"file": name, "class": str(c), "twin": bool(r["score"] >= threshold), "score": r["score"],
                     "inliers": r["inliers"], "match": match, "mirrored": r["mirrored"], "scale": r["scale"],
                     "angle": r["angle"], "anisotropy": r["anisotropy"], "votes": r["votes"],
                     "match_class_differs": bool(match and Path(match).parent.name != c)})
    counts = {}
    for c in sorted(set(cls_b)):
        mine = [r for r in rows if r["class"] == c]
        counts[c] = {"photos": len(mine), "with_twin": sum(r["twin"] for r in mine),
                     "without_twin": sum(not r["twin"] for r in mine)}
    counts["all"] = {k: sum(v[k] for v in counts.values()) for k in ("photos", "with_twin", "without_twin")}
    scores = np.array([r["score"] for r in rows])
    null_max = calibration["different_part_max"] if calibration else None
    summary = {
        "scores": stats(scores),
        "histogram": {f"{lo}-{hi - 1}": int(((scores >= lo) & (scores < hi)).sum())
                      for lo, hi in zip((0, 5, 10, 15, 20, 25, 30, 40, 60, 100), (5, 10, 15, 20, 25, 30, 40, 60, 100, 10**6))},
        "twins_matched_in": {s: sum(r["twin"] and r["match"].startswith(s + "/") for r in rows) for s in ("train", "test")},
        "twins_whose_match_has_the_other_class": [r["file"] for r in rows if r["twin"] and r["match_class_differs"]],
        "recheck": {"photos": len(low), "candidates": a.recheck, "found_a_twin": int(rechecked)},
        "above_null_max_below_threshold": None if null_max is None else int(((scores > null_max) & (scores < threshold)).sum()),
        "within_20_percent_of_threshold": int(((scores >= 0.8 * threshold) & (scores < 1.2 * threshold)).sum()),
    }
    timing["total_s"] = round(time.perf_counter() - t0, 1)
    cmd = "python -m benchmarks.line_b_twins " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {"command": cmd.strip(), "line_a_root": str(root_a), "line_b_root": str(root_b), "line_a_photos": len(la),
           "line_b_photos": len(lb),
           "parameters": {**asdict(params), "side": SIDE, "neighbours": NEIGHBOURS, "candidates": a.candidates,
                          "recheck": a.recheck, "calibrate": a.calibrate, "brute": a.brute, "seed": a.seed, "threads": a.threads},
           "threshold": threshold,
           "threshold_source": "--threshold" if a.threshold is not None else (
               f"calibration rule: {THRESHOLD_RULE}" if a.calibrate else "default (no calibration)"),
           "calibration": calibration, "counts": counts, "line_b": summary, "seconds": timing, "photos": rows}
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    if a.md:
        Path(a.md).parent.mkdir(parents=True, exist_ok=True)
        Path(a.md).write_text(markdown(doc))
    print(f"{counts['all']['with_twin']} of {len(lb)} line-B photos have a line-A twin (score >= {threshold}): "
          + ", ".join(f"{c} {v['with_twin']}" for c, v in counts.items()) + f"; {timing['total_s']} s", flush=True)
    return 0


def calibrate(a, params: Params, index: Index, fa, qb, la, lb, name_a, name_b, cls_a, cls_b) -> dict:
    """Step 4 of the method: same-part copies, the two different-part nulls, the brute-force check, the line-A
    sanity check; see the module docstring."""
    rng = np.random.default_rng(a.seed)
    n = min(a.calibrate, len(lb))
    pick = np.sort(rng.choice(len(lb), n, replace=False))
    qs = [qb[i] for i in pick]

    # same part: a copy of each picked line-B photo, placed among line A (for that query only)
    def copy_of(i: int):
        g, info = augment(load_grey(lb[i], None), np.random.default_rng([a.seed, int(i)]))
        return features(g, params), info

    copies = threaded(copy_of, pick, a.threads, "same-part copies' features")
    res = find_twins(qs, fa, a.candidates, 0, params, index, threads=a.threads,
                     extra=[[c[0]] for c in copies], progress="same part (copy among line A)")
    # the copy's own score, also where retrieval missed it or a line-A twin scored higher
    direct = threaded(lambda k: verify(qs[k][False], copies[k][0], qs[k][True], params)["score"], range(n), a.threads,
                  "same part (copy verified directly)")
    same_rows = []
    for i, (_, info), r, d in zip(pick, copies, res, direct):
        is_copy = r["ref"] == len(fa)
        same_rows.append({"file": name_b[i], **info, "score": r["score"], "copy_score": d,
                          "copy_is_best": bool(is_copy), "copy_in_candidates": len(fa) in r["candidates"],
                          "best_other": None if is_copy or r["ref"] is None else name_a[r["ref"]]})
    same = np.array([r["score"] for r in same_rows])
    # a cross-class pair scoring like a same-part copy is the same part under two labels (the data set has such
    # parts: a line-B ok photo whose part is in line A both as ok and as def); set aside, listed, not in the null
    aside_at = float(np.percentile(same, 1))

    # different parts, line A: the pipeline restricted to line-A photos of the other class
    k_null = max(a.candidates, a.recheck)  # a photo without a twin ends up with this many candidates
    null_a = find_twins(qs, fa, k_null, 0, params, index, allowed=[cls_a != cls_b[i] for i in pick],
                        threads=a.threads, progress="different parts: line-A photos of the other class")
    # different parts, line B: the same against line-B photos of the other class (a tree over line B)
    fb = [q[False] for q in qb]
    index_b = Index([d for _, d in fb])
    null_b = find_twins(qs, fb, k_null, 0, params, index_b, allowed=[cls_b != cls_b[i] for i in pick],
                        threads=a.threads, progress="different parts: line-B photos of the other class")
    # does retrieval hide a higher different-part score? A few photos against every other-class line-B photo
    brute = []
    for k in range(min(a.brute, n)):
        i = pick[k]
        others = np.flatnonzero(cls_b != cls_b[i])
        s = threaded(lambda j, i=i: verify(qb[i][False], fb[j], qb[i][True], params)["score"], others, a.threads)
        brute.append({"file": name_b[i], "against": int(len(others)), "max": int(max(s)),
                      "retrieval_max": null_b[k]["score"]})
    if brute:
        print(f"  brute force: {len(brute)} photos, max {max(b['max'] for b in brute)}", flush=True)

    def split(null, names):
        kept, aside = [], []
        for i, r in zip(pick, null):
            row = {"file": name_b[i], "score": r["score"], "inliers": r["inliers"],
                   "match": names[r["ref"]] if r["ref"] is not None else None}
            (aside if r["score"] >= aside_at else kept).append(row)
        return kept, aside

    kept_a, aside_a = split(null_a, name_a)
    kept_b, aside_b = split(null_b, name_b)
    brute_kept = [b["max"] for b in brute if b["max"] < aside_at]
    null_scores = [r["score"] for r in kept_a + kept_b]
    null_max = int(max(null_scores + brute_kept))

    # sanity: line-A test photos against line-A train
    test = np.flatnonzero([n_.startswith("test/") for n_ in name_a])
    test = np.sort(rng.choice(test, min(n, len(test)), replace=False))
    train_mask = np.array([n_.startswith("train/") for n_ in name_a])
    mir = threaded(lambda i: features(np.ascontiguousarray(load_grey(la[i])[:, ::-1]), params), test, a.threads,
               "line-A test photos mirrored")
    sanity = find_twins([{False: fa[i], True: m} for i, m in zip(test, mir)], fa, a.candidates, 0, params, index,
                        allowed=train_mask, threads=a.threads, progress="line-A test vs train")

    top = lambda rows: sorted(rows, key=lambda r: -r["score"])[:5]
    return {
        "photos": n,
        "same_part": {**stats(same), "copy_is_best": sum(r["copy_is_best"] for r in same_rows),
                      "copy_in_candidates": sum(r["copy_in_candidates"] for r in same_rows)},
        "same_part_copy_direct": stats([r["copy_score"] for r in same_rows]),
        "different_part_line_a": stats([r["score"] for r in kept_a]),
        "different_part_line_b": stats([r["score"] for r in kept_b]),
        "different_part_brute_force_line_b": {"photos": len(brute), "max": max((b["max"] for b in brute), default=0),
                                              "retrieval_max": max((b["retrieval_max"] for b in brute), default=0),
                                              "rows": brute},
        "set_aside_rule": f"other-class pairs scoring >= the same-part copies' 1st percentile ({aside_at:.1f})",
        "set_aside_line_a": aside_a, "set_aside_line_b": aside_b,
        "different_part_line_a_with_set_aside": stats([r["score"] for r in null_a]),
        "different_part_line_b_with_set_aside": stats([r["score"] for r in null_b]),
        "different_part_highest_line_a": top(kept_a), "different_part_highest_line_b": top(kept_b),
        "different_part_max": null_max,
        "threshold_rule": THRESHOLD_RULE, "threshold_from_rule": threshold_rule(null_max),
        "line_a_test_vs_train": {"photos": len(test), "scores": stats([r["score"] for r in sanity]),
                                 "_scores": [r["score"] for r in sanity]},
        "same_part_rows": same_rows,
        "_null_scores": null_scores,
    }


def markdown(doc: dict) -> str:
    """The short report."""
    c, p = doc["calibration"], doc["parameters"]
    lines = ["# Line-B photos with a twin (the same part) in line A", "", f"`{doc['command']}`", "",
             "**Method** (`benchmarks/line_b_twins.py`, docstring for the details): each photo grey at 300 px; up to "
             f"{p['features']} SIFT keypoints (contrast threshold {p['contrast']}, so the part's grain gets keypoints) "
             "as RootSIFT; the line-B photo is described as it is and mirrored. Candidates: a FLANN kd-tree over all "
             f"line-A descriptors; each query descriptor votes for the photos among its {p['neighbours']} nearest "
             f"neighbours closer than {p['ratio']} x the last one; the top {p['candidates']} photos are verified: "
             f"ratio-test matches, RANSAC with an affine map ({p['reproj']} px; axes scaled {p['min_scale']}-"
             f"{p['max_scale']}, at most {p['max_anisotropy']} apart, no reflection). **Score** = inliers counted once "
             f"per {p['cell']:g} px cell (so a cluster in one patch counts little). A line-B photo's score is its best "
             "candidate's.", ""]
    if c:
        kn = max(p["candidates"], p["recheck"])
        rows = ((f"same part: copy of the photo among line A, best of {p['candidates']}", c["same_part"]),
                ("same part: the copy verified directly", c["same_part_copy_direct"]),
                (f"different parts: best of {kn} line-A photos of the other class", c["different_part_line_a"]),
                (f"different parts: best of {kn} line-B photos of the other class", c["different_part_line_b"]),
                ("line-A test photo vs line-A train (sanity)", c["line_a_test_vs_train"]["scores"]))
        bf = c["different_part_brute_force_line_b"]
        aside = c["set_aside_line_a"] + c["set_aside_line_b"]
        lines += ["## Calibration", "",
                  f"{c['photos']} line-B photos (seeded). Same-part copies: turned 0-360 degrees, mirrored or not, "
                  "zoomed 0.85-1.15 per axis, shifted up to 4 %, resized to 300, blurred, brightness changed, JPEG 75. "
                  "Different parts: the other class (a part keeps its label in all its photos; within a class, line B "
                  "has several photos of one part).", "",
                  "| pairs (score of the best candidate) | n | min | p1 | p5 | median | p95 | p99 | max |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {k} | {s['n']} | {s['min']} | {s['p1']} | {s['p5']} | {s['median']} | {s['p95']} | {s['p99']} | "
                  f"{s['max']} |" for k, s in rows]
        lines += ["",
                  f"- Retrieval put the copy among the {p['candidates']} candidates for {c['same_part']['copy_in_candidates']} "
                  f"of {c['photos']}; it was the best candidate for {c['same_part']['copy_is_best']} (otherwise a line-A "
                  "twin of the photo scored higher).",
                  f"- Brute force, {bf['photos']} photos against every other-class line-B photo (no retrieval): max "
                  f"{bf['max']} (retrieval's max for them: {bf['retrieval_max']}).",
                  f"- Set aside from the null ({c['set_aside_rule']}): {len(aside)} pairs"
                  + (": " + "; ".join(f"`{r['file']}` ~ `{r['match']}` ({r['score']})" for r in aside[:8]) if aside else "")
                  + ". They score like same-part copies, with inliers over the whole part: the same part under two labels "
                  "(checked by eye for the committed run's pairs). With them the null's max would be "
                  f"{max(c['different_part_line_a_with_set_aside']['max'], c['different_part_line_b_with_set_aside']['max'])}.",
                  f"- Largest different-part score **{c['different_part_max']}**; rule: {c['threshold_rule']} -> "
                  f"**{c['threshold_from_rule']}**.",
                  f"- Threshold used: **{doc['threshold']}** ({'--threshold' if doc['threshold_source'] == '--threshold' else 'the rule'}). "
                  f"Same-part copies below it: {c['same_part_below_threshold']} of {c['photos']}; different-part "
                  f"pairs at or above it: {c['different_part_at_or_above_threshold']} of {c['different_part_pairs']}.",
                  f"- Sanity: {c['line_a_test_vs_train']['found']} of {c['line_a_test_vs_train']['photos']} line-A test "
                  f"photos ({100 * c['line_a_test_vs_train']['share_found']:.1f} %) have a twin in line-A train.", ""]
    s = doc["line_b"]
    lines += ["## Line B", "", "| class | photos | with a twin | without |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {k} | {v['photos']} | {v['with_twin']} | {v['without_twin']} |" for k, v in doc["counts"].items()]
    lines += ["", "Scores of all line-B photos: " + ", ".join(f"{k}: {v}" for k, v in s["histogram"].items()) + ".",
              f"Twins matched in line-A train: {s['twins_matched_in']['train']}, in test: {s['twins_matched_in']['test']}; "
              f"whose best match has the other class: {len(s['twins_whose_match_has_the_other_class'])}. "
              f"Photos below the threshold after {p['candidates']} candidates: {s['recheck']['photos']}, searched again "
              f"with {s['recheck']['candidates']}: {s['recheck']['found_a_twin']} found a twin.", "",
              "## How sure", ""]
    if c:
        lines += [f"- {s['above_null_max_below_threshold']} line-B photos score above the largest different-part score "
                  f"({c['different_part_max']}) but below the threshold; {s['within_20_percent_of_threshold']} lie within "
                  "20 % of the threshold. Outside that band the call does not hang on the threshold.",
                  f"- The same-part copies are the dataset's augmentation as far as it is known; {c['same_part_below_threshold']} "
                  "of them fall below the threshold. A twin made from another photo of the part (line B has several per "
                  "part) or by a harsher augmentation could score lower than the copies do.",
                  f"- Retrieval missed the copy (not among the top {p['candidates']}) {c['photos'] - c['same_part']['copy_in_candidates']} "
                  f"times of {c['photos']}; photos below the threshold are therefore searched again with {p['recheck']} "
                  f"candidates ({s['recheck']['found_a_twin']} of {s['recheck']['photos']} found a twin that way).",
                  ""]
    lines += [f"Run time: {doc['seconds']['total_s']} s on {p['threads']} threads "
              f"(features {doc['seconds']['features_s']} s, cached under runs/twins/ after the first run).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
