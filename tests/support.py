"""What tests share besides fixtures: paths, skip marks for the real data, small synthetic castings, and a checkpoint
written by the real save function (``write_checkpoint``, ``add_guard``). Tests import these from here
(``from tests.support import ...``); the fixtures built on them are in conftest.py. Nothing here downloads
anything; tests that need the real data skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from inspectkit.data.parts import to_grey
from inspectkit.inference.checkpoint import make_checkpoint, save_checkpoint
from inspectkit.model import build_model
from inspectkit.preprocess import default_spec

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CASTING = SHARED / "data" / "casting"
NEU_DET = SHARED / "data" / "neu-det"
LOCAL_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet1k.pth"
COMMITTED_MODEL = REPO / "final_best_model.pt"

needs_casting = pytest.mark.skipif(not (CASTING / "test").is_dir(),
                                   reason=f"the real casting data is not at {CASTING} (a fresh clone has no ../shared)")
needs_weights = pytest.mark.skipif(not LOCAL_WEIGHTS.is_file(), reason=f"no local ImageNet weights at {LOCAL_WEIGHTS}")


def synthetic_casting(rng: np.random.Generator, defect: bool, size: tuple[int, int] = (96, 96)) -> np.ndarray:
    """A grainy grey disc on a dark background (an impeller seen from above); a defect adds a dark pit or a scratch."""
    h, w = size
    img = np.full((h, w), 40, np.uint8)
    c = (w // 2 + int(rng.integers(-3, 4)), h // 2 + int(rng.integers(-3, 4)))
    r = int(min(h, w) * rng.uniform(0.33, 0.42))
    cv2.circle(img, c, r, int(rng.integers(150, 190)), -1)
    cv2.circle(img, c, max(r // 4, 2), 80, -1)
    if defect:
        a = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(0.45, 0.8) * r
        p = (int(c[0] + d * np.cos(a)), int(c[1] + d * np.sin(a)))
        if rng.random() < 0.5:
            cv2.circle(img, p, max(2, min(h, w) // 14), 20, -1)
        else:
            q = (p[0] + int(rng.integers(-12, 13)), p[1] + int(rng.integers(-12, 13)))
            cv2.line(img, p, q, 15, max(1, min(h, w) // 30))
    # every real part has its own surface texture (sand-cast grain); without it all generated parts look alike
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
    img = img.astype(np.float32) + 150 * grain * (img > 60) + rng.integers(-4, 5, size=img.shape)
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def write_images(folder: Path, rng: np.random.Generator, n: int, defect: bool, prefix: str = "img",
                 size: tuple[int, int] = (96, 96)) -> list[Path]:
    """Write n synthetic castings as JPEGs into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}_{i:03d}.jpg"
        cv2.imwrite(str(p), synthetic_casting(rng, defect, size)[:, :, ::-1])
        out.append(p)
    return out


def write_checkpoint(path: Path, arch: str = "mobilenet_v2", size: int = 96, seed: int = 0,
                     class_names=("def_front", "ok_front"), defect_index: int | None = 0,
                     threshold: float | None = 0.5, train_data: Path | None = None) -> Path:
    """A checkpoint with random weights, written by the real save function; ``train_data``, when given, is recorded
    as the data it was trained on (so adaptation's replay finds the parent's line there)."""
    torch.manual_seed(seed)
    model = build_model(arch, len(class_names), weights=None).eval()
    train_config = {"seed": seed, **({"data": str(train_data)} if train_data is not None else {})}
    ckpt = make_checkpoint(model, arch, list(class_names), defect_index, default_spec(size), threshold,
                           metrics={"validation": {}}, train_config=train_config, data={"counts": {}})
    save_checkpoint(ckpt, path)
    return path


def add_guard(path: Path, n_train: int = 48, n_val: int = 24, seed: int = 5) -> Path:
    """Fit a guard (inspectkit.guard.fit_guard) for the checkpoint at ``path`` on generated castings (both classes,
    square and not) and save the checkpoint with it by the real save function; returns ``path``."""
    from inspectkit.engine.guard_fit import fit_on_photos
    from inspectkit.inference.checkpoint import load_checkpoint, stored_guard
    from inspectkit.inference.handler import InferenceHandler

    r = np.random.default_rng(seed)
    sizes = [(96, 96), (96, 120), (120, 96)]
    train = [synthetic_casting(r, i % 2 == 0, sizes[i % 3]) for i in range(n_train)]
    val = [synthetic_casting(r, i % 2 == 0, sizes[i % 3]) for i in range(n_val)]
    labels = np.array([0 if i % 2 == 0 else 1 for i in range(n_train)])
    guard = fit_on_photos(InferenceHandler(path, backend="torch").pooled_features, train, labels, val,
                          fitted_on={"lines": ["generated"]})
    ckpt = load_checkpoint(path)
    ckpt["guard"] = stored_guard(guard)
    save_checkpoint(ckpt, path)
    return path


def labelled_by_the_parent(tmp_path: Path, n: int = 24) -> tuple[Path, Path]:
    """(parent, data): generated photos filed under the class a trained tiny parent itself gives them, at a threshold
    set in the widest gap between its scores, so the parent classifies every photo correctly."""
    from inspectkit.data.folders import decode_all, load_folder
    from inspectkit.engine.adaptation import MIN_PHOTOS_PER_CLASS
    from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint
    from inspectkit.model import predict_probs
    from tests.trained_tiny import train_tiny  # it imports this module

    pool = tmp_path / "pool"
    r = np.random.default_rng(11)
    write_images(pool / "x", r, n // 2, True, prefix="d", size=(120, 100))
    write_images(pool / "x", r, n - n // 2, False, prefix="o")
    ck = load_checkpoint(train_tiny(tmp_path / "trained"))
    ds, images = decode_all(load_folder(pool, None, None, ["x"]))
    scores = predict_probs(model_from_checkpoint(ck), images, ck["preprocessing"])[:, ck["defect_index"]]
    s = np.sort(scores)
    k = MIN_PHOTOS_PER_CLASS + int(np.argmax(np.diff(s)[MIN_PHOTOS_PER_CLASS - 1:n - MIN_PHOTOS_PER_CLASS]))
    threshold = float((s[k - 1] + s[k]) / 2)  # in the widest gap that leaves enough photos in each class
    assert s[k - 1] < threshold < s[k]
    parent = tmp_path / "parent.pt"
    save_checkpoint({**ck, "threshold": threshold}, parent)
    for path, score in zip(ds.paths, scores):
        dst = tmp_path / "data" / ck["class_names"][ck["defect_index"] if score >= threshold else 1 - ck["defect_index"]]
        dst.mkdir(parents=True, exist_ok=True)
        (dst / path.name).write_bytes(path.read_bytes())
    return parent, tmp_path / "data"


SIZE = 512  # generated impellers: as line B's photos
GRAIN = 8.0  # grey levels (s.d.) of the grain on the part


def impeller(seed: int) -> np.ndarray:
    """A 512 px grey photo of a part: one design for every seed; the grain (blurred seeded noise) and a few
    pinholes are the seed's own."""
    rng = np.random.default_rng(seed)
    c = SIZE // 2
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    r = np.hypot(xx - c, yy - c)
    theta = np.arctan2(yy - c, xx - c)
    img = np.full((SIZE, SIZE), 150.0, np.float32)
    img[r < 200] = 190.0  # the disc
    img[r < 125] = 40.0  # the dark blade ring
    blades = np.cos(7 * (theta + r / 60.0)) > 0.85  # seven curved blades
    img[(r < 120) & (r > 65) & blades] = 90.0
    img[r < 65] = 200.0  # the hub
    img[r < 38] = 120.0  # the hole
    # the grain: faint (a few grey levels) beside the design's edges of 50 to 150
    grain = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.6)
    img += np.where(r < 200, GRAIN, 3.0) * grain / grain.std()
    for _ in range(4):  # pinholes on the disc
        a, rad = rng.uniform(0, 2 * np.pi), rng.uniform(135, 190)
        cv2.circle(img, (int(c + rad * np.cos(a)), int(c + rad * np.sin(a))), int(rng.integers(3, 6)), 60.0, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def copy_of(grey: np.ndarray, angle: float, zoom: tuple[float, float], mirrored: bool) -> np.ndarray:
    """``grey`` turned by ``angle`` (degrees, counter-clockwise on screen), zoomed by ``zoom`` along x and y, shifted a
    little, mirrored or not, then resized to 300 px, blurred a little and JPEG-encoded at quality 75 (as
    benchmarks/line_b_twins.py's ``augment``, with the geometry fixed)."""
    t = np.radians(angle)
    a = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) @ np.diag(zoom)
    c = np.array([SIZE / 2, SIZE / 2])
    m = np.hstack([a, (c - a @ c + (9, -7))[:, None]])
    out = cv2.warpAffine(grey, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE)
    out = np.ascontiguousarray(out[:, ::-1]) if mirrored else out
    out = cv2.GaussianBlur(to_grey(out), (0, 0), 0.5)
    ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)


def round_summary(variant: str, line_b: int, line_a: int, seconds: float = 100.0) -> dict:
    """A generated summary of one recipe in an adaptation round (benchmarks/adapt_round8.summarise's keys the rules
    read)."""
    return {"variant": variant, "line_b_errors": line_b, "line_a_errors": line_a, "mean_seconds": seconds}


def round_runs(variant: str, missed_b: int, seeds, seconds: float = 100.0, alarms_a: int = 0) -> list[dict]:
    """Generated runs of adapt_variants.py, one per seed: 10 unused line-B photos (``missed_b`` of the 5 defects
    missed) and 4 line-A validation photos (``alarms_a`` of the 2 OK ones flagged), at threshold 0.5."""
    out = []
    for seed in seeds:
        b = [0.9] * (5 - missed_b) + [0.1] * missed_b + [0.1] * 5
        out.append({"seed": seed, "variant": variant, "seconds": seconds, "threshold": 0.5, "parent_threshold": 0.6,
                    "rest": {"defect": b, "is_defect": [True] * 5 + [False] * 5},
                    "line_a_val": {"defect": [0.9, 0.9] + [0.9] * alarms_a + [0.1] * (2 - alarms_a),
                                   "is_defect": [True, True, False, False]}})
    return out
