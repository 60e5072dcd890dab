"""Which photos show the same physical part, whatever the turn, mirror and zoom: local features on the part's grain,
checked by their geometry.

Every part of one product shares its design (an impeller: disc, blades, holes), so a global image similarity scores
different parts as high as the same part. What belongs to one part is its surface grain, burrs and pinholes, so:

1. **Features** (:func:`features`, :func:`describe`): grey at 300 px; SIFT keypoints with a low contrast threshold
   (the grain gets keypoints, not only the design's edges), as RootSIFT; a query also mirrored.
2. **Candidates** (:class:`Index`): each query descriptor votes for the photos among its nearest neighbours that
   stand out from the crowd of its 16 nearest (a blade edge has hundreds of near-equal neighbours and votes for
   nobody).
3. **Verification** (:func:`verify`): ratio-test matches, then RANSAC with a bounded affine map; the score counts
   inliers once per 15 px cell, so only agreement spread over the part scores high.

:data:`THRESHOLD` was calibrated by ``benchmarks/line_b_twins.py`` on the casting photos
(``reports/line-b/twins.md``): augmented copies of a part score 33 to 146, different parts at most 18. Used by that
benchmark and by adaptation's part-aware split (``AdaptConfig.group_by_part``). Needs only numpy and OpenCV.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SIDE = 300  # line A's size; line B (512 px) is resized to it so that both show the part at about one scale
NEIGHBOURS = 16  # nearest neighbours per query descriptor in retrieval; the last is the "crowd" a vote must beat
#: a pair of photos scoring at least this is one part (calibrated: reports/line-b/twins.md)
THRESHOLD = 27


@dataclass(frozen=True)
class Params:
    """The measure's knobs; the defaults are what the report uses."""

    features: int = 1000  # keypoints per photo at most
    contrast: float = 0.01  # SIFT contrast threshold (OpenCV's default 0.04 gives ~170 keypoints, mostly the design)
    ratio: float = 0.8  # Lowe's ratio, for both retrieval votes and pair matches
    reproj: float = 2.0  # RANSAC reprojection threshold, px at 300 px (true pairs fit to ~0.5 px in the median)
    min_scale: float = 0.5  # each axis of the affine map (its singular values) within these
    max_scale: float = 2.0
    max_anisotropy: float = 1.5  # the axes' ratio at most (line-A twins: up to ~1.2; zoom is per axis)
    iters: int = 4000  # RANSAC iterations: 10 % inliers among the matches still get found (3-point samples)
    cell: float = 15.0  # px: the score counts inliers once per cell, so a cluster in one patch counts little


DEFAULT = Params()


# ------------------------------------------------------------------------------------------------ features


def to_grey(image: np.ndarray, side: int | None = SIDE) -> np.ndarray:
    """``image`` (grey or BGR) as a grey uint8 ``side`` x ``side`` image (INTER_AREA when shrinking)."""
    g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if side and g.shape[:2] != (side, side):
        inter = cv2.INTER_AREA if max(g.shape[:2]) > side else cv2.INTER_LINEAR
        g = cv2.resize(g, (side, side), interpolation=inter)
    return np.ascontiguousarray(g)


def load_grey(path: Path | str, side: int | None = SIDE) -> np.ndarray:
    """The photo at ``path`` as a grey ``side`` px image; ValueError if OpenCV cannot read it."""
    g = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if g is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    return to_grey(g, side)


def rootsift(raw: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square root; unit L2 norm, so Euclidean distance
    compares histograms by the Hellinger kernel, which matches SIFT better than plain L2."""
    d = raw.astype(np.float32)
    d /= d.sum(axis=1, keepdims=True) + 1e-7
    return np.sqrt(d)


def sift_raw(grey: np.ndarray, params: Params = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions (n x 2 float32) and raw SIFT descriptors (n x 128 uint8, what the cache stores)."""
    sift = cv2.SIFT_create(nfeatures=params.features, contrastThreshold=params.contrast)
    kps, desc = sift.detectAndCompute(grey, None)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    xy = np.float32([k.pt for k in kps])
    return xy, np.clip(np.round(desc), 0, 255).astype(np.uint8)  # OpenCV's SIFT values are integers 0..255


def features(grey: np.ndarray, params: Params = DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints of a grey image: ``(xy, desc)``, positions (n x 2 float32, pixels) and RootSIFT descriptors
    (n x 128 float32, unit norm). At most ``params.features`` keypoints, the strongest."""
    xy, raw = sift_raw(grey, params)
    return xy, rootsift(raw)


def describe(grey: np.ndarray, params: Params = DEFAULT) -> dict[bool, tuple[np.ndarray, np.ndarray]]:
    """A query's features as it is (key False) and mirrored left-right (key True): SIFT is not mirror-invariant, and
    the augmentation may have mirrored the copy. Mirrored positions are in the mirrored image's frame."""
    return {False: features(grey, params), True: features(np.ascontiguousarray(grey[:, ::-1]), params)}


# ------------------------------------------------------------------------------------------------ verification


def ratio_matches(da: np.ndarray, db: np.ndarray, ratio: float = DEFAULT.ratio) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(ia, ib)`` of the descriptors of ``da`` whose nearest neighbour in ``db`` is closer than ``ratio``
    times the second nearest (Lowe's ratio test: a repeated design element has a near-equal runner-up and drops)."""
    if len(da) < 2 or len(db) < 2:
        return np.zeros(0, int), np.zeros(0, int)
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [(m[0].queryIdx, m[0].trainIdx) for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if not good:
        return np.zeros(0, int), np.zeros(0, int)
    ia, ib = np.array(good).T
    return ia, ib


def distinct(points: np.ndarray, cell: float) -> int:
    """How many distinct ``cell`` px cells ``points`` fall in."""
    return len(np.unique(np.floor(points / cell).astype(np.int64), axis=0)) if len(points) else 0


NOTHING = {"score": 0, "inliers": 0, "scale": 0.0, "angle": 0.0, "anisotropy": 0.0}


def _verify_one(a, b, params: Params) -> dict:
    (xa, da), (xb, db) = a, b
    ia, ib = ratio_matches(da, db, params.ratio)
    if len(ia) < 4:
        return dict(NOTHING, matches=int(len(ia)))
    p, q = xa[ia], xb[ib]
    cv2.setRNGSeed(0)  # RANSAC draws from OpenCV's RNG: seeded, the score of a pair is repeatable
    # a full affine map, not a similarity: the dataset's augmentation zooms x and y apart (a similarity fit to real
    # twins leaves 1.5 px residuals and keeps a third to a half of the inliers an affine fit keeps)
    m, inl = cv2.estimateAffine2D(p, q, method=cv2.RANSAC, ransacReprojThreshold=params.reproj,
                                  maxIters=params.iters, confidence=0.999, refineIters=10)
    if m is None:
        return dict(NOTHING, matches=int(len(ia)))
    u, sv, vt = np.linalg.svd(m[:, :2])
    # a mirror image is the other orientation's job (SIFT is not mirror-invariant); det < 0 here is a degenerate fit
    if (np.linalg.det(m[:, :2]) <= 0 or sv[1] < params.min_scale or sv[0] > params.max_scale
            or sv[0] > params.max_anisotropy * sv[1]):
        return dict(NOTHING, matches=int(len(ia)))
    rot = u @ vt  # the rotation of the polar decomposition
    keep = inl.ravel().astype(bool)
    # both sides: several query keypoints at one place (orientations), or matched to one place, count once
    return {"score": min(distinct(p[keep], params.cell), distinct(q[keep], params.cell)),
            "inliers": min(distinct(p[keep], 1.0), distinct(q[keep], 1.0)),
            "scale": round(float(math.sqrt(sv[0] * sv[1])), 4),
            # counter-clockwise on screen (y points down), as cv2.getRotationMatrix2D counts it
            "angle": round(float(math.degrees(math.atan2(-rot[1, 0], rot[0, 0]))), 2),
            "anisotropy": round(float(sv[0] / sv[1]), 4), "matches": int(len(ia))}


def verify(a, b, a_mirrored=None, params: Params = DEFAULT) -> dict:
    """Geometric verification of query ``a`` against reference ``b`` (each ``(xy, desc)`` from :func:`features`;
    ``a_mirrored`` the query's mirror image's features, tried as well when given).

    Ratio-test matches, then RANSAC with an affine map (``params.reproj`` px; each axis scaled within
    ``params.min_scale..max_scale``, the axes at most ``params.max_anisotropy`` apart, no reflection). Returns, for the
    better orientation, ``{"score", "inliers", "scale", "angle", "anisotropy", "mirrored", "matches"}``: ``score``
    the inliers counted once per ``params.cell`` px cell (the measure), ``inliers`` counted once per pixel, and the
    map's mean scale, rotation (degrees, counter-clockwise on screen) and anisotropy, from the query
    (mirrored first if ``mirrored``) to the reference."""
    best = dict(_verify_one(a, b, params), mirrored=False)
    if a_mirrored is not None:
        other = dict(_verify_one(a_mirrored, b, params), mirrored=True)
        if (other["score"], other["inliers"]) > (best["score"], best["inliers"]):
            best = other
    return best


# ------------------------------------------------------------------------------------------------ retrieval


class Index:
    """A FLANN kd-tree over the descriptors of a set of reference photos, for voting (step 2 of the method)."""

    def __init__(self, descs: list[np.ndarray], trees: int = 4, checks: int = 64):
        self.n = len(descs)
        sizes = np.array([len(d) for d in descs])
        self.owner = np.repeat(np.arange(self.n), sizes)
        data = np.ascontiguousarray(np.concatenate(descs).astype(np.float32)) if len(self.owner) else None
        if data is None or len(data) < NEIGHBOURS:
            raise ValueError("Index: too few reference descriptors")
        self._data = data  # FLANN keeps a pointer to it
        self.checks = checks
        self.flann = cv2.flann_Index(data, {"algorithm": 1, "trees": trees})

    def neighbours(self, desc: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
        """Owners (photo numbers) and squared distances of the ``k`` nearest reference descriptors of each row."""
        if len(desc) == 0:
            return np.zeros((0, k), int), np.zeros((0, k), np.float32)
        idx, d2 = self.flann.knnSearch(np.ascontiguousarray(desc, np.float32), k, params={"checks": self.checks})
        return self.owner[idx], d2

    def votes(self, desc: np.ndarray, ratio: float = DEFAULT.ratio, extra: list[np.ndarray] = ()) -> np.ndarray:
        """Votes per reference photo (and per photo of ``extra`` after them, as if they were in the tree): each query
        descriptor votes once for every photo among its nearest neighbours closer than ``ratio`` times the last."""
        owners, d2 = self.neighbours(desc)
        return crowd_votes(owners, d2, self.n, ratio, desc, extra)


def crowd_votes(owners: np.ndarray, d2: np.ndarray, n: int, ratio: float, desc: np.ndarray = None,
                extra: list[np.ndarray] = ()) -> np.ndarray:
    """The vote rule of :class:`Index` on given neighbour lists; ``extra`` photos (descriptor arrays) are merged into
    the lists exactly as a tree holding them would have returned them (photo numbers ``n``, ``n + 1``, ...)."""
    k = owners.shape[1]
    if len(extra) and len(desc):
        more_o, more_d = [owners], [d2]
        for j, e in enumerate(extra):
            if len(e) == 0:
                continue
            kk = min(k, len(e))
            dist = np.maximum(2.0 - 2.0 * desc @ e.T, 0.0)  # unit vectors: squared Euclidean distance
            part = np.partition(dist, kk - 1, axis=1)[:, :kk]
            more_d.append(part.astype(np.float32))
            more_o.append(np.full(part.shape, n + j))
        o, d = np.concatenate(more_o, axis=1), np.concatenate(more_d, axis=1)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        owners, d2 = np.take_along_axis(o, order, 1), np.take_along_axis(d, order, 1)
    total = n + len(extra)
    if len(owners) == 0:
        return np.zeros(total, int)
    crowd = d2[:, -1:]  # squared distance of the k-th neighbour
    ok = d2[:, :-1] < (ratio ** 2) * crowd
    rows = np.repeat(np.arange(len(owners))[:, None], k - 1, axis=1)[ok]
    pairs = np.unique(rows.astype(np.int64) * total + owners[:, :-1][ok])  # one vote per descriptor and photo
    return np.bincount(pairs % total, minlength=total)


def top_candidates(votes: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """The ``k`` photos with the most votes (ties by number), only among ``allowed`` (a boolean mask) if given."""
    v = votes.astype(float)
    if allowed is not None:
        v = np.where(allowed, v, -1.0)
    order = np.argsort(-v, kind="stable")[:k]
    return order[v[order] >= 0]


def find_twins(queries: list[dict], references: list[tuple[np.ndarray, np.ndarray]], candidates: int = 15,
               threshold: float = THRESHOLD, params: Params = DEFAULT, index: Index | None = None,
               allowed: np.ndarray | list | None = None, threads: int = 1, extra: list | None = None,
               progress: str = "") -> list[dict]:
    """For each query (a :func:`describe` dict), its best reference among the top ``candidates`` of retrieval.

    ``references``: :func:`features` of the reference photos (``index`` is built over them if not given).
    ``allowed``: a mask over the references (a list of masks, one per query, also works). ``extra``: per query, a
    list of further reference features placed among the references for that query only (numbered after them).
    Returns per query ``{"ref", "score", "twin", "inliers", "mirrored", "scale", "angle", "anisotropy", "votes",
    "candidates"}``: ``ref`` the best candidate's number (None if none verified), the rest :func:`verify`'s for it."""
    index = index or Index([d for _, d in references])
    refs = list(references)

    def one(qi: int) -> dict:
        q = queries[qi]
        more = (extra[qi] if extra is not None else None) or []
        descs = [f[1] for f in more]
        v = np.maximum(index.votes(q[False][1], params.ratio, descs), index.votes(q[True][1], params.ratio, descs))
        ok = allowed[qi] if isinstance(allowed, list) else allowed
        if ok is not None and more:
            ok = np.concatenate([np.asarray(ok, bool), np.ones(len(more), bool)])
        cand = top_candidates(v, candidates, ok)
        pool = refs + list(more)
        best = dict(NOTHING, ref=None, mirrored=False)
        for j in cand:
            r = verify(q[False], pool[j], q[True], params)
            if (r["score"], r["inliers"]) > (best["score"], best["inliers"]):
                best = {"ref": int(j), **{k: r[k] for k in (*NOTHING, "mirrored")}}
        best["twin"] = best["score"] >= threshold
        best["votes"] = int(v[best["ref"]]) if best["ref"] is not None else 0
        best["candidates"] = [int(j) for j in cand]
        return best

    return threaded(one, range(len(queries)), threads, progress)


def same_part_groups(photos: list[dict], threshold: float, candidates: int = 15, params: Params = DEFAULT,
                     threads: int = 1) -> np.ndarray:
    """Group photos of one set by part: each photo (a :func:`describe` dict) is verified against its ``candidates``
    best-voted others, every pair scoring >= ``threshold`` is one part, and parts are joined transitively. Returns a
    group number per photo (0, 1, ...; a photo with no twin in the set is a group of its own)."""
    refs = [q[False] for q in photos]
    index = Index([d for _, d in refs])
    n = len(photos)

    def edges(i: int) -> list[int]:
        q = photos[i]
        v = np.maximum(index.votes(q[False][1], params.ratio), index.votes(q[True][1], params.ratio))
        others = np.ones(n, bool)
        others[i] = False
        return [int(j) for j in top_candidates(v, candidates, others)
                if verify(q[False], refs[j], q[True], params)["score"] >= threshold]

    return components(n, [(i, j) for i, js in enumerate(threaded(edges, range(n), threads)) for j in js])


def components(n: int, pairs) -> np.ndarray:
    """Connected components of ``n`` items joined by ``pairs`` (i, j): a group number per item, 0, 1, ... in order of
    first appearance."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[root(i)] = root(j)
    roots = [root(i) for i in range(n)]
    number = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return np.array([number[r] for r in roots], int)


def threaded(fn, items, threads: int, progress: str = "") -> list:
    """``[fn(x) for x in items]`` on ``threads`` threads (OpenCV and numpy release the GIL), printing progress."""
    items = list(items)
    out, t0 = [], time.perf_counter()
    step = max(1, len(items) // 10)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for i, r in enumerate(pool.map(fn, items)):
            out.append(r)
            if progress and ((i + 1) % step == 0 or i + 1 == len(items)):
                print(f"  {progress}: {i + 1}/{len(items)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def image_part_groups(rgb_images: list[np.ndarray], threshold: float = THRESHOLD, candidates: int = 15,
                      threads: int = 1) -> np.ndarray:
    """:func:`same_part_groups` of decoded RGB photos (as ``inspectkit.data.folders.decode_all`` gives them)."""
    if len(rgb_images) < 2:
        return np.zeros(len(rgb_images), int)
    photos = threaded(lambda im: describe(to_grey(cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY))),
                      rgb_images, threads)
    return same_part_groups(photos, threshold, candidates, threads=threads)


def joined(*groupings: np.ndarray) -> np.ndarray:
    """One group number per item such that items sharing a group in any of ``groupings`` share one here (the finest
    partition coarser than all of them), numbered 0, 1, ... in order of first appearance."""
    pairs = []
    for g in groupings:
        first: dict = {}
        for i, label in enumerate(np.asarray(g).tolist()):
            pairs.append((i, first.setdefault(label, i)))
    return components(len(groupings[0]), pairs)
