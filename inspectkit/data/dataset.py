"""The data set as the code passes it around: a list of image files with labels and class names, built and checked
from ``{class: files}``. Shared by :mod:`inspectkit.data` (the casting and folder-per-class layouts) and
:mod:`inspectkit.data.layouts` (NEU-DET, MVTec AD), so neither needs the other to describe a data set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspectkit.imageio import IMAGE_EXTENSIONS

#: Folder names that mark the casting set's defect class.
KNOWN_DEFECT_CLASSES = ("def_front",)


@dataclass
class Dataset:
    """A list of image files with integer labels; ``skipped`` lists unreadable files with the reason."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    defect_index: int | None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.class_names)}

    def subset(self, idx: Sequence[int]) -> Dataset:
        idx = list(idx)
        return Dataset(self.root, [self.paths[i] for i in idx], self.labels[idx], self.class_names,
                       self.defect_index, [])

    def fingerprint(self) -> dict:
        """Counts and a hash of the sorted relative file list with labels: what the model was trained on."""
        rel = sorted(f"{self.class_names[c]}/{p.name}" for p, c in zip(self.paths, self.labels))
        return {"counts": self.counts(), "n": len(self.paths),
                "files_sha256": hashlib.sha256("\n".join(rel).encode()).hexdigest()}


def concat(parts: Sequence[Dataset]) -> Dataset:
    """One Dataset from several with the same classes (e.g. two photo sessions); root and defect class of the first."""
    if not parts:
        raise ValueError("concat needs at least one data set")
    first = parts[0]
    for ds in parts[1:]:
        if ds.class_names != first.class_names:
            raise ValueError(f"cannot join {ds.root} (classes {ds.class_names}) to {first.root} "
                             f"(classes {first.class_names}): the classes must be the same")
    return Dataset(first.root, [p for ds in parts for p in ds.paths], np.concatenate([ds.labels for ds in parts]),
                   first.class_names, first.defect_index, [s for ds in parts for s in ds.skipped])


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_defect_class(class_names: list[str], defect_class: str | None) -> int | None:
    """Index of the defect class: the named one, the casting set's ``def_front``, or None for multi-class."""
    if defect_class is not None:
        if defect_class not in class_names:
            raise ValueError(f"defect class {defect_class!r} is not one of the classes {class_names}")
        return class_names.index(defect_class)
    for known in KNOWN_DEFECT_CLASSES:
        if known in class_names:
            return class_names.index(known)
    if len(class_names) == 2:
        raise ValueError(
            f"which of the classes {class_names} is the defect class? Name it with --defect-class"
        )
    return None


def from_class_files(root: Path, found: dict[str, list[Path]], defect_class: str | None,
                     class_names: list[str] | None, where: str, kind: str = "class") -> Dataset:
    """A Dataset from ``{class: image files}``, checked: with ``class_names`` (a model's) every class found must be
    one of them; every class needs an image; without ``class_names`` at least two classes are needed.
    ``where`` and ``kind`` ("class folder", "class") name the source in the errors."""
    kinds = "classes" if kind == "class" else kind + "s"
    names = list(class_names) if class_names is not None else sorted(found)
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"{kinds} {unknown} in {where} are not among the model's classes {names}")
    empty = [n for n in names if not found.get(n)]
    if empty:
        raise ValueError(f"{kind}(s) {empty} in {where} hold no images ({', '.join(IMAGE_EXTENSIONS)})")
    if class_names is None and len(names) < 2:
        raise ValueError(f"{where} has only the class {names}; at least two {kinds} are needed")
    paths, labels = [], []
    for i, n in enumerate(names):
        paths += found[n]
        labels += [i] * len(found[n])
    return Dataset(root, paths, np.asarray(labels, dtype=np.int64), names, resolve_defect_class(names, defect_class))
