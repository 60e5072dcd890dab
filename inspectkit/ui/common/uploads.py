"""What a ``gr.File`` input hands over, as plain paths (the Inspect tab, the Adapt tab's zips and zones, checkpoints)."""

from __future__ import annotations

import os
from typing import Any


def as_paths(files: Any) -> list[str]:
    """The paths of a ``gr.File`` value: a path, a list of paths, or (older clients) objects with ``.path`` or
    ``.name``; empty entries are dropped."""
    if files is None:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    out = []
    for f in files:
        p = getattr(f, "path", None) or getattr(f, "name", None) or f
        if p:
            out.append(str(p))
    return out
