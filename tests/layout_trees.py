"""Generated data-set trees in the NEU-DET and MVTec AD layouts (tiny images, boxes and masks known exactly)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: Three of the six NEU-DET classes, including the one whose name has a dash and an underscore.
NEU_CLASSES = ("crazing", "patches", "rolled-in_scale")


def textured(rng: np.random.Generator, size: tuple[int, int], level: int) -> np.ndarray:
    """A grey steel-like texture of ``size`` = (height, width), RGB uint8."""
    h, w = size
    g = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.0)
    img = np.clip(level + 25 * g, 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def voc_xml(filename: str, size: tuple[int, int], boxes: list[tuple[str, int, int, int, int]]) -> str:
    """A Pascal VOC annotation; boxes are (name, xmin, ymin, xmax, ymax), 1-based inclusive like VOC."""
    h, w = size
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for n, x0, y0, x1, y1 in boxes)
    return (f"<annotation><folder>x</folder><filename>{filename}</filename><source><database>NEU-DET</database>"
            f"</source><size><width>{w}</width><height>{h}</height><depth>1</depth></size>"
            f"<segmented>0</segmented>{objs}</annotation>")


def neu_det_tree(root: Path, n: int = 6, size: tuple[int, int] = (40, 40), n_val: int = 1,
                 classes=NEU_CLASSES, seed: int = 0) -> dict[str, list]:
    """A NEU-DET tree: IMAGES/ + ANNOTATIONS/ with ``n`` images per class, Validation_* with ``n_val``.

    Each class has its own look (brightness level and defect mark) so a tiny model can learn it; each image
    has one box around its mark. Returns {file stem: [(name, xmin, ymin, xmax, ymax)]} (VOC, 1-based).
    """
    rng = np.random.default_rng(seed)
    h, w = size
    boxes: dict[str, list] = {}
    for img_dir, ann_dir, count in (("IMAGES", "ANNOTATIONS", n), ("Validation_Images", "Validation_Annotations",
                                                                   n_val)):
        (root / img_dir).mkdir(parents=True, exist_ok=True)
        (root / ann_dir).mkdir(parents=True, exist_ok=True)
        for ci, c in enumerate(classes):
            for k in range(count):
                num = k + 1 + (0 if img_dir == "IMAGES" else 1000)
                stem = f"{c}_{num}"
                img = textured(rng, size, 90 + 40 * ci)
                bw, bh = max(4, w // 4), max(4, h // 4)
                x0 = int(rng.integers(0, w - bw))
                y0 = int(rng.integers(0, h - bh))
                colour = (20, 230, 20)[ci % 3]
                if ci % 3 == 1:
                    cv2.circle(img, (x0 + bw // 2, y0 + bh // 2), min(bw, bh) // 2, (colour,) * 3, -1)
                else:
                    cv2.rectangle(img, (x0, y0), (x0 + bw - 1, y0 + bh - 1), (colour,) * 3, -1)
                cv2.imwrite(str(root / img_dir / f"{stem}.jpg"), img)
                b = [(c, x0 + 1, y0 + 1, x0 + bw, y0 + bh)]
                boxes[stem] = b
                (root / ann_dir / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", size, b))
    return boxes


def mvtec_tree(root: Path, size: tuple[int, int] = (40, 48), n_good: int = 6, n_test_good: int = 3,
               defects: dict[str, int] | None = None, with_masks: bool = True, seed: int = 0) -> Path:
    """One MVTec AD category: train/good, test/good, test/<defect> with ground_truth/<defect>/<stem>_mask.png."""
    rng = np.random.default_rng(seed)
    defects = {"scratch": 3, "hole": 2} if defects is None else defects
    h, w = size

    def write(folder: Path, k: int, defect: str | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        img = textured(rng, size, 120)
        if defect:
            mask = np.zeros((h, w), np.uint8)
            cv2.circle(mask, (w // 3, h // 2), max(3, min(h, w) // 6), 255, -1)
            img[mask > 0] = 20
            if with_masks:
                gt = root / "ground_truth" / defect
                gt.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(gt / f"{k:03d}_mask.png"), mask)
        cv2.imwrite(str(folder / f"{k:03d}.png"), img)

    for k in range(n_good):
        write(root / "train" / "good", k, None)
    for k in range(n_test_good):
        write(root / "test" / "good", k, None)
    for d, count in defects.items():
        for k in range(count):
            write(root / "test" / d, k, d)
    return root
