"""Display names: the human labels a checkpoint carries for its classes ("Defect", "OK"), shown beside the raw
class names (the folder names, e.g. ``def_front``) that the API has always returned and still returns.

A checkpoint may store the optional key ``display_names`` (class name -> label, plain strings). A checkpoint
without it gets the defaults derived from the folder names: ``def_*`` -> "Defect", ``ok_*`` -> "OK", anything else
in title case (``rolled-in_scale`` -> "Rolled In Scale"). ``train.py --display-names def_front=Defect,ok_front=OK``
overrides them at training. numpy-free and torch-free: the app imports it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

#: Longest label accepted: a label is shown in a badge, a table cell and a legend.
MAX_CHARS = 40
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def default_name(class_name: str) -> str:
    """The label a folder name gets by default: ``def_*``/``defect*`` -> "Defect", ``ok_*``/``good`` -> "OK",
    else the name with ``_``/``-`` as spaces, in title case."""
    low = str(class_name).lower()
    if low == "def" or low.startswith(("def_", "def-", "defect")):
        return "Defect"
    if low in ("ok", "good") or low.startswith(("ok_", "ok-")):
        return "OK"
    words = re.sub(r"[_\-]+", " ", str(class_name)).split()
    return " ".join(w[:1].upper() + w[1:] for w in words) or str(class_name)


def default_names(class_names: Iterable[str]) -> dict[str, str]:
    """Defaults for every class (see :func:`default_name`). Two classes that would share a label (``def_front``,
    ``def_back``) each get their title-cased folder name instead, so labels stay distinct."""
    names = list(class_names)
    out = {c: default_name(c) for c in names}
    counts: dict[str, int] = {}
    for v in out.values():
        counts[v] = counts.get(v, 0) + 1
    for c in names:
        if counts[out[c]] > 1:
            out[c] = " ".join(w[:1].upper() + w[1:] for w in re.sub(r"[_\-]+", " ", c).split()) or c
    return out


def check_label(label: Any, name: str = "display name") -> str:
    """``label`` stripped, if it is a usable label (1..MAX_CHARS printable characters); else ValueError naming it."""
    if not isinstance(label, str):
        raise ValueError(f"{name} {label!r} must be a string")
    text = unicodedata.normalize("NFC", label).strip()
    if not text or len(text) > MAX_CHARS or _CONTROL.search(text):
        raise ValueError(f"{name} {label!r} must be 1 to {MAX_CHARS} printable characters")
    return text


def check_display_names(names: Any, class_names: Iterable[str], what: str = "display_names") -> dict[str, str]:
    """A full, checked mapping class name -> label. Every key must be one of ``class_names``; classes not given get
    their default; labels must be distinct. ValueError names the bad key or label and what is allowed."""
    classes = list(class_names)
    if not isinstance(names, dict):
        raise ValueError(f"{what} must be a dict of class name -> label, got {type(names).__name__}")
    unknown = [k for k in names if k not in classes]
    if unknown:
        raise ValueError(f"{what} names {unknown}, which are not classes of this model; its classes are {classes}")
    out = default_names(classes)
    for k, v in names.items():
        out[k] = check_label(v, f"{what}[{k!r}]")
    labels = list(out.values())
    dup = sorted({v for v in labels if labels.count(v) > 1})
    if dup:
        raise ValueError(f"{what} gives the label(s) {dup} to more than one class; each class needs its own label")
    return out


def parse_display_names(text: str) -> dict[str, str]:
    """``"def_front=Defect,ok_front=OK"`` -> ``{"def_front": "Defect", "ok_front": "OK"}`` (checked against the
    classes later, when they are known). ValueError for an item without ``=`` or an empty side."""
    out: dict[str, str] = {}
    if text is None or not str(text).strip():
        return out
    for item in str(text).split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"display name {item.strip()!r} must look like class=Label, e.g. def_front=Defect")
        if key.strip() in out:
            raise ValueError(f"display name for {key.strip()!r} is given twice")
        out[key.strip()] = check_label(value, f"display name for {key.strip()!r}")
    return out


def display_names_for(info: dict) -> dict[str, str]:
    """The labels of a loaded checkpoint (or its info dict): its stored ``display_names`` when usable, else the
    defaults from its class names. A damaged entry never stops inspection: the defaults are always defined."""
    classes = list(info.get("class_names") or [])
    stored = info.get("display_names")
    if stored is not None:
        try:
            return check_display_names(stored, classes, "the checkpoint's display_names")
        except ValueError:
            pass
    return default_names(classes)


def shown(class_name: str | None, names: dict[str, str] | None) -> str | None:
    """``"Defect (def_front)"``: the label beside the raw class name, or the raw name alone when they are equal."""
    if class_name is None:
        return None
    label = (names or {}).get(class_name)
    if not label or label == class_name:
        return str(class_name)
    return f"{label} ({class_name})"


def label_for(handler: Any, probabilities: dict, verdict: str | None) -> str | None:
    """The class that goes with a (re-decided) binary verdict: the defect class for DEFECT, else the most
    probable other class. For a model without a defect class the verdict is the class."""
    defect = getattr(handler, "defect_class", None)
    if verdict is None or defect is None:
        return verdict
    if verdict == "DEFECT":
        return defect
    others = {k: v for k, v in probabilities.items() if k != defect}
    return max(others, key=others.get) if others else None
