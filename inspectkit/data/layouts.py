"""Data-set layouts beyond the casting set: NEU-DET and MVTec AD, detected automatically, plus their defect regions.

Every layout comes out as the same :class:`inspectkit.data.folders.Dataset` (files, integer labels, class names), so
training, evaluation and inference need no layout-specific code. The layouts:

- ``casting`` (split layout): ``<root>/train/<class>/*`` and ``<root>/test/<class>/*``;
- ``folders`` (folder-per-class): ``<root>/<class>/*``;
- ``neu-det``: ``<root>/IMAGES/*.jpg`` (+ optional ``Validation_Images/``), class = file-name prefix
  (``rolled-in_scale_12.jpg`` -> ``rolled-in_scale``), one Pascal-VOC XML per image in ``ANNOTATIONS/``
  (``Validation_Annotations/``) with one or more ``<bndbox>`` defect boxes. Both image folders form one pool;
  train.py carves a seeded, stratified train/validation/test split from it (NEU-DET's own 30 validation
  images are too few to measure anything).
- ``mvtec`` (one MVTec AD category): ``<root>/train/good/*``, ``<root>/test/good/*``, ``<root>/test/<defect>/*``
  and optional ``<root>/ground_truth/<defect>/<stem>_mask.png``. Read as a binary ``defect``/``good`` pool
  (every ``test/<defect>`` folder is ``defect``): the category's only defect images are in ``test/``, so the
  supervised split is carved from train+test together, as for a folder-per-class set.

:func:`detect_layout` tells them apart from the folder structure alone; :func:`region_mask` finds the
ground-truth defect region (boxes or mask) of an image file of a NEU-DET or MVTec tree.

The VOC files are parsed with the standard library's ``xml.etree.ElementTree``: they are local files of a data
set the user chose, and ElementTree does not fetch external entities (defusedxml would add a dependency for
a threat - entity-expansion bombs - that does not apply to trusted local annotations).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspectkit.data.dataset import Dataset, from_class_files
from inspectkit.imageio import IMAGE_EXTENSIONS

LAYOUTS = ("casting", "folders", "neu-det", "mvtec")
#: NEU-DET: (image folder, annotation folder) pairs; the first pair must exist, the second is optional.
NEU_DET_FOLDERS = (("IMAGES", "ANNOTATIONS"), ("Validation_Images", "Validation_Annotations"))
#: The six NEU-DET classes, for a clear error when a file name carries another prefix.
NEU_DET_CLASSES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
MVTEC_GOOD = "good"
MVTEC_DEFECT = "defect"
_NEU_NAME = re.compile(r"^(?P<cls>.+)_(?P<num>\d+)$")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_neu_det(root: str | Path) -> bool:
    """True for a NEU-DET tree: ``IMAGES/`` and ``ANNOTATIONS/`` folders side by side."""
    root = Path(root)
    return (root / "IMAGES").is_dir() and (root / "ANNOTATIONS").is_dir()


def is_mvtec(root: str | Path) -> bool:
    """True for one MVTec AD category: ``train/good`` is train's only folder and ``test/`` has a defect folder."""
    root = Path(root)
    if not ((root / "train").is_dir() and (root / "test").is_dir()):
        return False
    return _subdirs(root / "train") == [MVTEC_GOOD] and any(d != MVTEC_GOOD for d in _subdirs(root / "test"))


def _mvtec_categories(root: Path) -> list[str]:
    return [d for d in _subdirs(root) if is_mvtec(root / d)]


def detect_layout(root: str | Path) -> str:
    """The layout of the data set at ``root``: one of :data:`LAYOUTS`.

    ValueError when ``root`` is missing, or is the top of the MVTec AD collection (one category must be chosen).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data folder not found: {root}")
    if is_neu_det(root):
        return "neu-det"
    if is_mvtec(root):
        return "mvtec"
    cats = _mvtec_categories(root)
    if cats:
        raise ValueError(f"{root} holds the MVTec AD categories {cats}; point --data at one of them, "
                         f"e.g. {root / cats[0]}")
    if (root / "train").is_dir() and _subdirs(root / "train"):
        return "casting"
    return "folders"


# ------------------------------------------------------------------------------------------------ loading

def neu_det_class(path: str | Path) -> str:
    """NEU-DET class of an image file: its name without the trailing ``_<number>`` (``patches_28.jpg`` -> patches)."""
    m = _NEU_NAME.match(Path(path).stem)
    if not m:
        raise ValueError(f"NEU-DET file name {Path(path).name!r} is not <class>_<number>.<ext> "
                         f"(classes: {list(NEU_DET_CLASSES)})")
    return m.group("cls")


def _check_split(root: Path, split: str | None, layout: str) -> None:
    if split not in (None, "train", "all"):
        raise ValueError(f"{root} is a {layout} data set with no {split!r} folder of its own; allowed split: "
                         "None, 'train' or 'all' (the whole pool; train.py records the test files it carves out)")


def load_neu_det(root: str | Path, split: str | None = None, defect_class: str | None = None,
                 class_names: list[str] | None = None) -> Dataset:
    """All NEU-DET images (``IMAGES/`` and ``Validation_Images/``) with the class taken from the file name."""
    root = Path(root)
    _check_split(root, split, "NEU-DET")
    files: dict[str, list[Path]] = {}
    for img_dir, _ in NEU_DET_FOLDERS:
        if (root / img_dir).is_dir():
            for p in _images(root / img_dir):
                files.setdefault(neu_det_class(p), []).append(p)
    if not files:
        raise ValueError(f"no images in {root / 'IMAGES'} ({', '.join(IMAGE_EXTENSIONS)})")
    return from_class_files(root, files, defect_class, class_names, f"NEU-DET {root}")


def load_mvtec(root: str | Path, split: str | None = None, defect_class: str | None = None,
               class_names: list[str] | None = None) -> Dataset:
    """One MVTec AD category as a binary pool: ``good`` (train/good, test/good) vs ``defect`` (test/<defect>)."""
    root = Path(root)
    _check_split(root, split, "MVTec AD")
    if defect_class not in (None, MVTEC_DEFECT):
        raise ValueError(f"defect class {defect_class!r}: an MVTec AD category is read as "
                         f"{[MVTEC_DEFECT, MVTEC_GOOD]} and its defect class is {MVTEC_DEFECT!r}")
    files: dict[str, list[Path]] = {MVTEC_GOOD: [], MVTEC_DEFECT: []}
    files[MVTEC_GOOD] += _images(root / "train" / MVTEC_GOOD)
    for d in _subdirs(root / "test"):
        files[MVTEC_GOOD if d == MVTEC_GOOD else MVTEC_DEFECT] += _images(root / "test" / d)
    return from_class_files(root, files, MVTEC_DEFECT, class_names, f"MVTec AD category {root}")


def load_special(root: str | Path, split: str | None = None, defect_class: str | None = None,
                 class_names: list[str] | None = None) -> Dataset | None:
    """The Dataset of a NEU-DET or MVTec tree; None for the casting and folder-per-class layouts.

    :func:`inspectkit.data.folders.load_folder` calls this first, so every command accepts these layouts as ``--data``.
    """
    layout = detect_layout(root)
    if layout == "neu-det":
        return load_neu_det(root, split, defect_class, class_names)
    if layout == "mvtec":
        return load_mvtec(root, split, defect_class, class_names)
    return None


# ------------------------------------------------------------------------------------------------ regions

@dataclass(frozen=True)
class Box:
    """A defect box in pixel coordinates, corners inclusive (Pascal VOC convention, converted to 0-based)."""

    name: str
    x0: int
    y0: int
    x1: int
    y1: int


def read_voc(xml_path: str | Path) -> tuple[tuple[int, int] | None, list[Box]]:
    """((height, width) from ``<size>`` or None, boxes) of a Pascal VOC annotation file.

    VOC coordinates are 1-based and inclusive; they are returned 0-based. ValueError names a malformed box.
    """
    xml_path = Path(xml_path)
    try:
        tree = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{xml_path} is not a readable Pascal VOC XML file: {exc}") from None
    size = None
    s = tree.find("size")
    if s is not None and s.findtext("width") and s.findtext("height"):
        size = (int(float(s.findtext("height"))), int(float(s.findtext("width"))))
    boxes = []
    for obj in tree.iter("object"):
        b = obj.find("bndbox")
        if b is None:
            continue
        try:
            x0, y0, x1, y1 = (int(round(float(b.findtext(k)))) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise ValueError(f"{xml_path}: a <bndbox> lacks a numeric xmin/ymin/xmax/ymax") from None
        if x1 < x0 or y1 < y0:
            raise ValueError(f"{xml_path}: box ({x0}, {y0}, {x1}, {y1}) has xmax < xmin or ymax < ymin")
        boxes.append(Box(obj.findtext("name") or "", x0 - 1, y0 - 1, x1 - 1, y1 - 1))
    return size, boxes


def boxes_to_mask(boxes: list[Box], shape: tuple[int, int], annotated_size: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean mask (``shape`` = height, width) of the union of ``boxes``.

    When the annotation was made on an image of another size (``annotated_size``), the boxes are scaled to
    ``shape``. Boxes are clipped to the image (VOC files often put an edge box at coordinate 0 or width).
    """
    h, w = int(shape[0]), int(shape[1])
    sy = h / annotated_size[0] if annotated_size else 1.0
    sx = w / annotated_size[1] if annotated_size else 1.0
    mask = np.zeros((h, w), dtype=bool)
    for b in boxes:
        x0 = int(np.clip(np.floor(b.x0 * sx), 0, w - 1))
        y0 = int(np.clip(np.floor(b.y0 * sy), 0, h - 1))
        x1 = int(np.clip(np.ceil((b.x1 + 1) * sx) - 1, 0, w - 1))
        y1 = int(np.clip(np.ceil((b.y1 + 1) * sy) - 1, 0, h - 1))
        mask[y0:y1 + 1, x0:x1 + 1] = True
    return mask


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A ground-truth mask image (any non-zero pixel is defect) as a boolean array of ``shape`` (nearest resize)."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"mask {path} cannot be read as an image")
    if m.shape != tuple(shape):
        m = cv2.resize(m, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_NEAREST)
    return m > 0


def annotation_for(image: str | Path, root: str | Path) -> Path | None:
    """The ground-truth file of one image of a NEU-DET or MVTec tree (VOC XML or ``*_mask.png``), or None.

    A NEU-DET image's XML has its stem in the paired annotation folder; an MVTec test image
    ``test/<defect>/<stem>.png`` has ``ground_truth/<defect>/<stem>_mask.png``. Good MVTec images have none.
    """
    image, root = Path(image), Path(root)
    layout = detect_layout(root)
    if layout == "neu-det":
        for img_dir, ann_dir in NEU_DET_FOLDERS:
            if image.parent.name == img_dir:
                xml = root / ann_dir / (image.stem + ".xml")
                return xml if xml.is_file() else None
        return None
    if layout == "mvtec":
        defect = image.parent.name
        if image.parent.parent.name != "test" or defect == MVTEC_GOOD:
            return None
        for ext in (".png", ".bmp", ".jpg"):
            m = root / "ground_truth" / defect / f"{image.stem}_mask{ext}"
            if m.is_file():
                return m
        return None
    raise ValueError(f"{root} is a {layout} data set; defect regions come only with the NEU-DET (VOC boxes) "
                     "and MVTec AD (ground_truth masks) layouts")


def region_mask(image: str | Path, root: str | Path, shape: tuple[int, int]) -> np.ndarray | None:
    """Boolean defect-region mask of ``shape`` (height, width) for one image, or None when it has no annotation.

    NEU-DET: the union of all its boxes (whatever class each box is labelled with: every box marks a defect).
    MVTec AD: its ground-truth mask. An annotation that marks nothing also gives None.
    """
    ann = annotation_for(image, root)
    if ann is None:
        return None
    if ann.suffix.lower() == ".xml":
        size, boxes = read_voc(ann)
        mask = boxes_to_mask(boxes, shape, size)
    else:
        mask = read_mask(ann, shape)
    return mask if mask.any() else None
