"""Data sets on disk: layouts, decoding with a skip report, near-duplicate groups, the validation split, the audit.

Layouts:
- split layout (the Kaggle casting set): ``<root>/train/<class>/*``, ``<root>/test/<class>/*``;
- folder-per-class: ``<root>/<class>/*``.
Class names are the folder names, sorted. The casting set's ``def_front`` is its defect class; for other
binary sets the defect class must be named.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from inspectkit.data.dataset import (  # noqa: F401 (this  # module's API since before dataset.py)
    KNOWN_DEFECT_CLASSES,
    Dataset,
    _class_dirs,
    _list_images,
    concat,
    from_class_files,
    resolve_defect_class,
)
from inspectkit.data.layouts import annotation_for, detect_layout, is_mvtec, load_special
from inspectkit.imageio import load_rgb

log = logging.getLogger(__name__)

#: Similarity of high-passed 64x64 thumbnails (best over flips and right-angle turns) at or above which two
#: images are twins. Chosen by looking at train pairs only (0.85-0.95 pairs were visibly the same part, turned
#: or zoomed); 0.93 keeps the largest train group under 500 images so a stratified split remains possible.
TWIN_SIMILARITY = 0.93
THUMB = 64


def is_split_layout(root: Path) -> bool:
    """True when ``root`` holds ``train/`` (and maybe ``test/``) folders of class folders (not an MVTec AD category)."""
    # an MVTec category's defects are all in test/, so it is one pool to split, like a folder-per-class set
    return (root / "train").is_dir() and bool(_class_dirs(root / "train")) and not is_mvtec(root)


def load_folder(root: str | Path, split: str | None = None, defect_class: str | None = None,
                class_names: list[str] | None = None) -> Dataset:
    """List the images of a data set.

    ``split`` picks ``train``/``test`` in the split layout (None means ``train`` there and the root
    itself in the folder-per-class layout). ``class_names`` forces the class order (e.g. from a checkpoint).
    Raises ValueError for a missing folder, no class folders, or a class folder with no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data folder not found: {root}")
    special = load_special(root, split, defect_class, class_names)
    if special is not None:
        return special
    folder = root
    if is_split_layout(root):
        folder = root / (split or "train")
        if not folder.is_dir():
            raise ValueError(f"split folder not found: {folder} (expected {root}/train and {root}/test)")
    elif split not in (None, "train", "all"):
        raise ValueError(f"{root} has no {split}/ folder; it is a folder-per-class data set")
    dirs = _class_dirs(folder)
    if not dirs:
        raise ValueError(
            f"no class folders in {folder}; expected {folder}/<class>/*.jpg (e.g. def_front/ and ok_front/)"
        )
    return from_class_files(root, {d.name: _list_images(d) for d in dirs}, defect_class, class_names,
                            str(folder), "class folder")


def decode_all(ds: Dataset, workers: int = 2) -> tuple[Dataset, list[np.ndarray]]:
    """Decode every image once; unreadable ones are dropped and listed in ``skipped`` (and logged)."""

    def one(p: Path):
        try:
            return load_rgb(p), None
        except ValueError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, ds.paths))
    keep = [i for i, (img, _) in enumerate(results) if img is not None]
    skipped = [(str(ds.paths[i]), err) for i, (img, err) in enumerate(results) if img is None]
    out = ds.subset(keep)
    out.skipped = ds.skipped + skipped
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped),
                    "; ".join(f"{Path(p).name}: {e}" for p, e in skipped[:20]))
    return out, [results[i][0] for i in keep]


# ----------------------------------------------------------------------------------------- twins

def thumbnail_descriptor(rgb: np.ndarray) -> np.ndarray:
    """The 8 dihedral variants (flips, right-angle turns) of a high-passed 64x64 grey thumbnail.

    Shape 8 x 4096, each zero-mean unit-norm. All impellers look alike at low frequencies, so a plain
    thumbnail correlates about equally with every other part; subtracting a blurred copy keeps the
    texture, pits and marks that tell one physical part from another. The casting set was made by
    augmenting photos of a few hundred parts, so twins are often flipped or turned copies; comparing
    all 8 variants catches those.
    """
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    t = cv2.resize(g, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
    t = t - cv2.GaussianBlur(t, (0, 0), 3.0)
    variants = []
    for k in range(4):
        r = np.rot90(t, k)
        variants += [r, r[:, ::-1]]
    v = np.stack([x.ravel() for x in variants])
    v -= v.mean(axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-6
    return v.astype(np.float32)


def descriptors(images: Sequence[np.ndarray]) -> np.ndarray:
    """Descriptors (N x 8 x 1024) of decoded images."""
    return np.stack([thumbnail_descriptor(im) for im in images]) if images else np.zeros((0, 8, THUMB * THUMB))


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Best correlation over dihedral variants between each of ``a`` (N x 8 x D) and ``b`` (M x 8 x D)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    base = b[:, 0, :]  # the variant of a that matches b's identity view covers every relative turn/flip
    n, v, d = a.shape
    sims = (a.reshape(n * v, d) @ base.T).reshape(n, v, len(b))
    return sims.max(axis=1)


def file_hashes(paths: Sequence[Path]) -> list[str]:
    """SHA-256 of each file's bytes (exact twins)."""
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def duplicate_groups(desc: np.ndarray, hashes: Sequence[str] | None = None,
                     threshold: float = TWIN_SIMILARITY, chunk: int = 1024) -> np.ndarray:
    """Group ids: images joined (transitively) when they are byte-identical or their similarity >= threshold."""
    n = len(desc)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    for start in range(0, n, chunk):
        s = similarity(desc[start:start + chunk], desc)
        ii, jj = np.nonzero(s >= threshold)
        for i, j in zip(ii + start, jj):
            if i < j:
                union(int(i), int(j))
    if hashes is not None:
        first: dict[str, int] = {}
        for i, h in enumerate(hashes):
            if h in first:
                union(first[h], i)
            else:
                first[h] = i
    roots = np.array([find(i) for i in range(n)])
    _, groups = np.unique(roots, return_inverse=True)
    return groups


def group_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int,
                max_group_fraction: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded train/validation split that never puts one duplicate group on both sides.

    Each group goes to the class most of its images have; groups are drawn at random per class until
    the validation part holds ``val_fraction`` of that class. Groups larger than ``max_group_fraction`` of
    their class (and of at least 10 images) always stay in train: near-duplicate chains can join hundreds of images of one look, and
    drawing such a chain into validation would both remove that look from training and let a single
    group dominate the validation score. Returns (train_idx, val_idx), sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction} must be between 0 and 1")
    rng = np.random.default_rng(seed)
    gids = np.unique(groups)
    members = {g: np.nonzero(groups == g)[0] for g in gids}
    major = {g: int(np.bincount(labels[m]).argmax()) for g, m in members.items()}
    val: list[int] = []
    for c in np.unique(labels):
        n_c = int((labels == c).sum())
        want = val_fraction * n_c
        cap = max(10.0, max_group_fraction * n_c)
        cg = [g for g in gids if major[g] == c and len(members[g]) <= cap]
        rng.shuffle(cg)
        taken = 0
        for g in cg:
            if taken >= want:
                break
            val += list(members[g])
            taken += len(members[g])
    val_idx = np.array(sorted(val), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def find_twins(query_desc: np.ndarray, query_hashes: Sequence[str], ref_desc: np.ndarray,
               ref_hashes: Sequence[str], threshold: float = TWIN_SIMILARITY) -> list[dict]:
    """For each query image: its best match in the reference set and whether that is an exact or near twin."""
    ref_index = {h: i for i, h in enumerate(ref_hashes)}
    out = []
    for start in range(0, len(query_desc), 512):
        s = similarity(query_desc[start:start + 512], ref_desc)
        best = s.argmax(axis=1) if s.shape[1] else np.zeros(len(s), dtype=int)
        for k in range(len(s)):
            i = start + k
            exact = ref_index.get(query_hashes[i])
            sim = float(s[k, best[k]]) if s.shape[1] else 0.0
            kind = "exact" if exact is not None else ("near" if sim >= threshold else "none")
            out.append({"index": i, "kind": kind, "match": int(exact if exact is not None else best[k]),
                        "similarity": 1.0 if exact is not None else round(sim, 4)})
    return out


def audit(train: Dataset, train_images: Sequence[np.ndarray], test: Dataset, test_images: Sequence[np.ndarray],
          threshold: float = TWIN_SIMILARITY) -> list[dict]:
    """Test images with an exact or near twin in train: one row each (test file, train file, kind, similarity)."""
    rows = find_twins(descriptors(test_images), file_hashes(test.paths), descriptors(train_images),
                      file_hashes(train.paths), threshold)
    return [{"test": str(test.paths[r["index"]]), "test_class": test.class_names[test.labels[r["index"]]],
             "train": str(train.paths[r["match"]]), "kind": r["kind"], "similarity": r["similarity"]}
            for r in rows if r["kind"] != "none"]


def save_json(obj, path: str | Path) -> None:
    """Write JSON atomically (tmp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------------ CLI

def describe(root: str | Path) -> dict:
    """Layout, class counts and (for NEU-DET/MVTec) how many images carry a defect region."""
    layout = detect_layout(root)
    ds = load_folder(root, None if layout != "casting" else "train")
    out = {"root": str(root), "layout": layout, "classes": ds.class_names, "counts": ds.counts(), "n": len(ds),
           "defect_class": ds.class_names[ds.defect_index] if ds.defect_index is not None else None}
    if layout in ("neu-det", "mvtec"):
        out["annotated"] = sum(annotation_for(p, root) is not None for p in ds.paths)
    return out


def main(argv=None) -> int:
    """``python -m inspectkit.data DATA``: print the detected layout and the class counts as JSON."""
    p = argparse.ArgumentParser(description="Detect a data set's layout and count its classes.")
    p.add_argument("data", help="data folder (casting, folder-per-class, NEU-DET or one MVTec AD category)")
    a = p.parse_args(argv)
    try:
        print(json.dumps(describe(a.data), indent=2))
    except ValueError as exc:
        print(f"data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
