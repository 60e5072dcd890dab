"""The photos nobody could judge, and the mild changes a line really sees: the sets the guard is measured on.

Every set is built here, deterministically (seeded), from sources reachable offline; nothing is downloaded and
nothing built here is committed (the casting photos are CC BY-NC-ND: no derivatives are stored).

Non-casting images (:func:`non_casting`), five sources:
  generated      blank and uniform frames (white, black, greys, colours), noise, gradients, checkerboards, stripes,
                 random shapes, text on paper
  scikit-image   the photos shipped in ``skimage/data`` (cat, coffee cup, brick wall, astronaut, rocket, coins,
                 moon, gravel, ...), whole and cropped
  faces          the LFW subset shipped with scikit-image (25 x 25 faces, enlarged)
  matplotlib     the sample photos shipped with matplotlib (Grace Hopper, logos)
  neu-det        NEU-DET hot-rolled steel surfaces, every defect class (``../shared/data/neu-det``)
Severely degraded castings (:func:`degraded`): held-out casting photos, each made unjudgeable one way:
  heavy blur (Gaussian sigma 6 px at 300 px), far too dark (x0.12), blown out (x4), most of the frame covered
  (75 % of the area by a flat board), the part pushed out of the frame (shifted by 60 % of the side) and a 4x zoom
  on one corner.
Mild changes (:data:`MILD`): exposure x0.7 and x1.3, blur sigma 1 px at 300 px, JPEG quality 25, a rotation by any
angle, zoom 0.9 and 1.1, a slight colour cast.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
NEU_DET = REPO.parent / "shared" / "data" / "neu-det" / "IMAGES"


def _rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float64) / (img.max() or 1) * 255, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def generated(rng: np.random.Generator, n: int = 80) -> list[tuple[str, np.ndarray]]:
    """Frames a broken camera, an empty fixture or a wrong feed could give."""
    out = []
    size = 300
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kinds = ["white", "black", "grey", "colour", "noise", "colour_noise", "gradient", "radial", "checker", "stripes",
             "shapes", "text"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "white":
            img = np.full((size, size, 3), 255 - int(rng.integers(0, 6)), np.uint8)
        elif kind == "black":
            img = np.full((size, size, 3), int(rng.integers(0, 6)), np.uint8)
        elif kind == "grey":
            img = np.full((size, size, 3), int(rng.integers(60, 200)), np.uint8)
        elif kind == "colour":
            img = np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (size, size, 3)).copy()
        elif kind == "noise":
            img = np.repeat(np.clip(rng.normal(128, 50, (size, size)), 0, 255).astype(np.uint8)[:, :, None], 3, 2)
        elif kind == "colour_noise":
            img = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
        elif kind == "gradient":
            g = (xx if rng.random() < 0.5 else yy) * 255
            img = np.repeat(g.astype(np.uint8)[:, :, None], 3, 2)
        elif kind == "radial":
            r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
            img = np.repeat((np.clip(1 - r * 1.5, 0, 1) * 255).astype(np.uint8)[:, :, None], 3, 2)
        elif kind == "checker":
            k = int(rng.integers(4, 40))
            g = (((np.arange(size)[:, None] // k) + (np.arange(size)[None] // k)) % 2) * 255
            img = np.repeat(g.astype(np.uint8)[:, :, None], 3, 2)
        elif kind == "stripes":
            g = (np.sin(xx * rng.uniform(10, 80)) > 0) * 200 + 30
            img = np.repeat(g.astype(np.uint8)[:, :, None], 3, 2)
        elif kind == "shapes":
            img = np.full((size, size, 3), int(rng.integers(0, 256)), np.uint8)
            for _ in range(8):
                c = tuple(int(v) for v in rng.integers(0, 256, 3))
                if rng.random() < 0.5:
                    cv2.circle(img, tuple(int(v) for v in rng.integers(0, size, 2)), int(rng.integers(5, 80)), c, -1)
                else:
                    p, q = rng.integers(0, size, 2), rng.integers(0, size, 2)
                    cv2.rectangle(img, tuple(int(v) for v in p), tuple(int(v) for v in q), c, -1)
        else:  # text on paper
            img = np.full((size, size, 3), 245, np.uint8)
            for k in range(8):
                cv2.putText(img, "Lot 0412 OK " * 2, (5, 30 + 33 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (20, 20, 20), 1)
        out.append((f"generated_{kind}_{i:03d}", img))
    return out


def _crops(img: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    h, w = img.shape[:2]
    out = []
    for _ in range(n):
        s = int(min(h, w) * rng.uniform(0.4, 0.8))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        out.append(img[y:y + s, x:x + s].copy())
    return out


def skimage_photos(rng: np.random.Generator, crops: int = 3) -> list[tuple[str, np.ndarray]]:
    """Every photo in scikit-image's data folder (no download), whole and ``crops`` random square crops."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    out = []
    for path in sorted(glob.glob(str(folder / "*.png")) + glob.glob(str(folder / "*.jpg"))):
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim not in (2, 3) or min(img.shape[:2]) < 64:
            continue
        img = _rgb(img if img.ndim == 2 else cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB))
        name = Path(path).stem
        out.append((f"skimage_{name}", img))
        out += [(f"skimage_{name}_crop{k}", c) for k, c in enumerate(_crops(img, rng, crops))]
    return out


def faces(rng: np.random.Generator, n: int = 40) -> list[tuple[str, np.ndarray]]:
    """Faces of the LFW subset shipped with scikit-image, enlarged to 250 px."""
    import skimage

    arr = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    pick = rng.choice(len(arr), size=min(n, len(arr)), replace=False)
    return [(f"lfw_{int(i):03d}", _rgb(cv2.resize((arr[i] * 255).astype(np.uint8), (250, 250)))) for i in pick]


def matplotlib_photos(rng: np.random.Generator, crops: int = 4) -> list[tuple[str, np.ndarray]]:
    """The sample photos shipped with matplotlib, whole and cropped."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "sample_data"
    out = []
    for path in sorted(glob.glob(str(folder / "*.jpg")) + glob.glob(str(folder / "*.png"))):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None or min(img.shape[:2]) < 64:
            continue
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        name = Path(path).stem
        out.append((f"matplotlib_{name}", img))
        out += [(f"matplotlib_{name}_crop{k}", c) for k, c in enumerate(_crops(img, rng, crops))]
    return out


def neu_det(rng: np.random.Generator, per_class: int = 20) -> list[tuple[str, np.ndarray]]:
    """NEU-DET steel surfaces, ``per_class`` of each of its six defect classes (empty when the data is absent)."""
    if not NEU_DET.is_dir():
        return []
    out = []
    files = sorted(os.listdir(NEU_DET))
    for cls in sorted({f.rsplit("_", 1)[0] for f in files}):
        mine = [f for f in files if f.rsplit("_", 1)[0] == cls]
        for f in rng.choice(mine, size=min(per_class, len(mine)), replace=False):
            img = cv2.imread(str(NEU_DET / f), cv2.IMREAD_COLOR)
            if img is not None:
                out.append((f"neu_{Path(f).stem}", cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
    return out


SOURCES: dict[str, Callable] = {"generated": generated, "scikit-image": skimage_photos, "faces": faces,
                                "matplotlib": matplotlib_photos, "neu-det": neu_det}


def non_casting(seed: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """(source, name, RGB) of every non-casting image, each source with its own seeded generator."""
    out = []
    for k, (source, make) in enumerate(SOURCES.items()):
        out += [(source, name, img) for name, img in make(np.random.default_rng(seed + k))]
    return out


# -- severely degraded castings ----------------------------------------------------------------------------------
def _scale(rgb: np.ndarray) -> float:
    return min(rgb.shape[:2]) / 300.0


def _gain(rgb: np.ndarray, g: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * g, 0, 255).astype(np.uint8)


def _border_colour(rgb: np.ndarray) -> tuple:
    edge = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return tuple(int(v) for v in np.median(edge, axis=0))


def heavy_blur(rgb, rng):
    return cv2.GaussianBlur(rgb, (0, 0), 6.0 * _scale(rgb))


def far_too_dark(rgb, rng):
    return _gain(rgb, 0.12)


def blown_out(rgb, rng):
    return _gain(rgb, 4.0)


def covered(rgb, rng):
    out = rgb.copy()
    h, w = out.shape[:2]
    s = np.sqrt(0.75)
    ch, cw = int(h * s), int(w * s)
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out[y:y + ch, x:x + cw] = int(rng.choice([15, 120, 235]))
    return out


def pushed_out(rgb, rng):
    h, w = rgb.shape[:2]
    a = rng.uniform(0, 2 * np.pi)
    m = np.float32([[1, 0, 0.6 * w * np.cos(a)], [0, 1, 0.6 * h * np.sin(a)]])
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=_border_colour(rgb))


def corner_zoom(rgb, rng):
    h, w = rgb.shape[:2]
    ch, cw = h // 4, w // 4
    y = int(rng.choice([0, h - ch]) + rng.integers(-ch // 4, ch // 4 + 1))
    x = int(rng.choice([0, w - cw]) + rng.integers(-cw // 4, cw // 4 + 1))
    y, x = int(np.clip(y, 0, h - ch)), int(np.clip(x, 0, w - cw))
    return cv2.resize(rgb[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


DEGRADATIONS: dict[str, Callable] = {"heavy blur": heavy_blur, "far too dark": far_too_dark, "blown out": blown_out,
                                     "most of the frame covered": covered, "part pushed out of the frame": pushed_out,
                                     "4x zoom on a corner": corner_zoom}


def degraded(photos: list[np.ndarray], per_kind: int = 50, seed: int = 0) -> list[tuple[str, int, np.ndarray]]:
    """(degradation, index of the photo, degraded RGB): ``per_kind`` photos drawn for each degradation."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, fn in DEGRADATIONS.items():
        for i in rng.choice(len(photos), size=min(per_kind, len(photos)), replace=False):
            out.append((kind, int(i), fn(photos[int(i)], rng)))
    return out


# -- mild changes ----------------------------------------------------------------------------------------------------
def _jpeg(rgb, q):
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def _zoom(rgb, z):
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, z)
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _rotate(rgb, rng):
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(0, 360)), 1.0)
    return cv2.warpAffine(rgb, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def _cast(rgb, rng):
    g = np.array([1.08, 1.0, 0.92]) if rng.random() < 0.5 else np.array([0.92, 1.0, 1.08])
    return np.clip(rgb.astype(np.float32) * g, 0, 255).astype(np.uint8)


MILD: dict[str, Callable] = {
    "exposure x0.7": lambda im, rng: _gain(im, 0.7),
    "exposure x1.3": lambda im, rng: _gain(im, 1.3),
    "blur sigma 1 px": lambda im, rng: cv2.GaussianBlur(im, (0, 0), 1.0 * _scale(im)),
    "JPEG quality 25": lambda im, rng: _jpeg(im, 25),
    "rotation (any angle)": _rotate,
    "zoom 0.9": lambda im, rng: _zoom(im, 0.9),
    "zoom 1.1": lambda im, rng: _zoom(im, 1.1),
    "colour cast": _cast,
}


def mild(photos: list[np.ndarray], kind: str, seed: int = 0) -> list[np.ndarray]:
    """Every photo with the mild change ``kind`` (a key of :data:`MILD`)."""
    rng = np.random.default_rng(seed)
    return [MILD[kind](im, rng) for im in photos]


def drift_change(kind: str) -> Callable:
    """The change a drift stream switches to: "blur" (sigma 2 to 3 px at 300 px), "dark" (exposure x0.5)."""
    if kind == "blur":
        return lambda im, rng: cv2.GaussianBlur(im, (0, 0), float(rng.uniform(2, 3)) * _scale(im))
    if kind == "dark":
        return lambda im, rng: _gain(im, 0.5)
    raise ValueError(f"drift change {kind!r} must be 'blur' or 'dark'")
