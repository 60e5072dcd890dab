"""The checkpoint: a plain dict of tensors, strings and numbers, saved atomically and loaded without unpickling code.

Everything inference needs (architecture, classes, preprocessing, threshold) is in it, so inference is built
from the checkpoint and cannot drift from training. A ``<file>.sha256`` beside it records its digest;
loading checks it when present.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inspectkit.digest import sha256_file
from inspectkit.model import ARCHS, build_model
from inspectkit.preprocess import validate_spec
from inspectkit.review import check_band

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "arch", "state_dict", "class_names", "defect_index", "preprocessing",
                 "threshold")


def library_versions() -> dict:
    """Versions of the libraries that produced a checkpoint."""
    import cv2
    import numpy
    import torchvision

    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "numpy": str(numpy.__version__), "opencv": str(cv2.__version__), "python": platform.python_version()}


def plain(obj: Any) -> Any:
    """Numbers, strings, lists and dicts only (numpy scalars and tuples converted), so weights-only loading accepts it."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def make_checkpoint(model: nn.Module, arch: str, class_names: list[str], defect_index: int | None,
                    preprocessing: dict, threshold: float | None, metrics: dict | None = None,
                    train_config: dict | None = None, data: dict | None = None,
                    history: list | None = None, review_band: dict | None = None, heatmap_scale: dict | None = None,
                    display_names: dict | None = None, guard: dict | None = None) -> dict:
    """Assemble the checkpoint dict (tensors on the CPU, contiguous).

    ``review_band``: the needs-review band derived on validation (:func:`inspectkit.review.review_band`), stored
    as the optional key ``"review_band"`` (plain floats, ints and strings); a checkpoint without it gets the
    fallback band around its threshold when loaded (:func:`inspectkit.review.band_for_checkpoint`).
    ``heatmap_scale``: the heat map's fixed scale calibrated on validation (:mod:`inspectkit.heatmap.scale`), the
    optional key ``"heatmap_scale"``; without it the defect-evidence map falls back to per-image scaling.
    ``display_names``: class name -> human label (:mod:`inspectkit.labels`), the optional key ``"display_names"``;
    without it the labels are derived from the class names.
    ``guard``: the fitted guard (:func:`inspectkit.guard.fit_guard`), the optional key ``"guard"`` with its arrays as
    float32 tensors; without it the handler never says UNUSABLE and says that the guard is off.
    """
    ckpt = {
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
        "class_names": list(class_names),
        "defect_index": defect_index,
        "preprocessing": validate_spec(preprocessing),
        "threshold": None if threshold is None else float(threshold),
        "metrics": plain(metrics or {}),
        "train_config": plain(train_config or {}),
        "data": plain(data or {}),
        "history": plain(history or []),
        "versions": library_versions(),
    }
    if review_band is not None:
        ckpt["review_band"] = plain(review_band)
    if heatmap_scale is not None:
        ckpt["heatmap_scale"] = plain(heatmap_scale)
    if display_names is not None:
        ckpt["display_names"] = plain(display_names)
    if guard is not None:
        ckpt["guard"] = stored_guard(guard)
    validate(ckpt, "checkpoint")
    return ckpt


def stored_guard(guard: dict) -> dict:
    """A fitted guard as the checkpoint stores it: arrays as float32 tensors, everything else plain."""
    from inspectkit.guard import ARRAYS, to_numpy

    g = to_numpy(guard)
    out = {}
    for key, v in g.items():
        if key == "novelty":
            out[key] = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) if k in ARRAYS else plain(a)
                        for k, a in v.items()}
        elif key in ARRAYS:
            out[key] = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        else:
            out[key] = plain(v)
    return out


def weights_digest(state_dict: dict) -> str:
    """SHA-256 of a state_dict's names, dtypes, shapes and values, in name order.

    Two trainings with the same weights have the same digest even though their files differ (the file also holds
    timings, history and library versions): this is how a rerun shows it reproduced a model.
    """
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digest_path(path: str | Path) -> Path:
    """Where a checkpoint's recorded SHA-256 lives."""
    return Path(str(path) + ".sha256")


def save_checkpoint(ckpt: dict, path: str | Path) -> str:
    """Validate and save atomically (temp file in the same folder, fsync, rename); record and return its SHA-256.

    Only the checkpoint: the ONNX graph beside it (what the Space serves without torch) is its caller's step,
    :func:`inspectkit.inference.fast.save_with_graph` does both.
    """
    validate(ckpt, "checkpoint")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    digest = sha256_file(path)
    digest_path(path).write_text(f"{digest}  {path.name}\n")
    return digest


def load_checkpoint(path: str | Path, expected_sha256: str | None = None, verify: bool = True) -> dict:
    """Load a checkpoint with ``weights_only=True`` and validate it.

    The digest is checked against ``expected_sha256`` when given, else against ``<path>.sha256`` when that
    exists (``verify=False`` skips the sidecar). Every problem is a ValueError that names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    want = expected_sha256
    if want is None and verify and digest_path(path).is_file():
        want = (digest_path(path).read_text().split() or [""])[0]
        if not re.fullmatch(r"[0-9a-fA-F]{64}", want):
            raise ValueError(f"{digest_path(path)} does not hold a SHA-256 digest (64 hex digits)")
    if want:
        got = sha256_file(path)
        if got != want.lower():
            raise ValueError(
                f"checkpoint {path} has SHA-256 {got}, but {want} was recorded: the file was changed or "
                "corrupted; refusing to load it"
            )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise ValueError(
            f"checkpoint {path} holds Python objects or code that weights-only loading refuses to run "
            f"(only tensors, numbers, strings, lists and dicts are allowed)"
            + (f"; it asks for {found.group(1)}" if found else "")
        ) from None
    except Exception as exc:
        raise ValueError(f"checkpoint {path} is not a readable torch file: {type(exc).__name__}: {exc}") from exc
    validate(ckpt, str(path))
    return ckpt


def validate(ckpt: Any, name: str) -> None:
    """Check the checkpoint's structure; ValueError names the first problem."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"{name} must be a dict with {list(REQUIRED_KEYS)}, got {type(ckpt).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{name} is missing {missing}; a checkpoint needs {list(REQUIRED_KEYS)}")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{name} has format_version {ckpt['format_version']!r}; this code reads {FORMAT_VERSION}")
    if ckpt["arch"] not in ARCHS:
        raise ValueError(f"{name} has arch {ckpt['arch']!r}; supported: {list(ARCHS)}")
    names = ckpt["class_names"]
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(c, str) for c in names) \
            or len(set(names)) != len(names):
        raise ValueError(f"{name} class_names {names!r} must be a list of at least two distinct strings")
    d = ckpt["defect_index"]
    if d is not None and (not isinstance(d, int) or not 0 <= d < len(names)):
        raise ValueError(f"{name} defect_index {d!r} must be None or an index into {names}")
    t = ckpt["threshold"]
    if d is not None and (not isinstance(t, float) or not 0.0 < t < 1.0):
        raise ValueError(f"{name} threshold {t!r} must be a float in (0, 1) for a model with a defect class")
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{name} state_dict must be a non-empty dict of tensors")
    try:
        validate_spec(ckpt["preprocessing"])
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    band = ckpt.get("review_band")
    if band is not None:  # optional: older checkpoints have none
        check_band(band, f"{name} review_band")
        if not all(isinstance(v, (str, int, float)) for v in band.values()):
            raise ValueError(f"{name} review_band must hold only numbers and strings")
    if ckpt.get("heatmap_scale") is not None:  # optional, like the band
        from inspectkit.heatmap.scale import check_scale

        check_scale(ckpt["heatmap_scale"], f"{name} heatmap_scale")
    guard = ckpt.get("guard")
    if guard is not None:  # optional: a checkpoint without it (or with a newer format) serves with the guard off
        from inspectkit.guard import GUARD_FORMAT, check_stored

        if not isinstance(guard, dict):
            raise ValueError(f"{name} guard must be a dict, got {type(guard).__name__}")
        if guard.get("format") == GUARD_FORMAT:
            check_stored(guard, f"{name} guard")
    if ckpt.get("display_names") is not None:
        from inspectkit.labels import check_display_names

        check_display_names(ckpt["display_names"], names, f"{name} display_names")


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """The network described by the checkpoint, its weights loaded, in eval mode."""
    model = build_model(ckpt["arch"], len(ckpt["class_names"]), weights=None)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint state_dict does not fit {ckpt['arch']} with {len(ckpt['class_names'])} classes: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return model.eval()
