"""Fitting a checkpoint's guard on the photos it was trained and selected on (needs torch for the re-derived split).

The training photos of every line the model was trained on (the split re-derived from the checkpoint's train
config, checked against the recorded validation files) give the image-check limits, the framing template and the
novelty reference; its validation photos give the novelty threshold and the drift reference. ``fit_guard.py`` is
the command; adaptation calls :func:`fit_on_photos` with the new line's photos and the replayed ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from .guard import fit_guard

log = logging.getLogger(__name__)


def fit_on_photos(features, train_images: Sequence[np.ndarray], train_labels: np.ndarray,
                  val_images: Sequence[np.ndarray], fitted_on: dict | None = None) -> dict:
    """A guard for the network behind ``features`` (decoded photos -> (pooled features, probabilities), e.g. a
    handler's ``pooled_features``) from decoded training photos (with labels) and validation photos."""
    t0 = time.perf_counter()
    guard = fit_guard(train_images, train_labels, val_images, features, fitted_on=fitted_on)
    log.info("guard fitted on %d training and %d validation photos in %.1f s (novelty threshold %.3f)",
             len(train_images), len(val_images), time.perf_counter() - t0, guard["novelty_threshold"])
    return guard


def pooled_from_model(model, arch: str, images: Sequence[np.ndarray], spec: dict, batch_size: int = 32) -> tuple:
    """(pooled last-block features N x K, class probabilities N x C) of decoded images through a torch ``model``
    (training and adaptation hold the network, not a handler)."""
    import torch

    from .metrics import softmax
    from .model import last_block_output
    from .preprocess import preprocess

    pooled, probs = [], []
    model.eval()
    with torch.inference_mode(), last_block_output(model, arch) as kept:
        for start in range(0, len(images), batch_size):
            x = np.stack([preprocess(im, spec) for im in images[start:start + batch_size]]).astype(np.float32)
            probs.append(softmax(model(torch.from_numpy(x)).numpy()))
            pooled.append(kept["features"].mean(axis=(2, 3)))
    return np.concatenate(pooled), np.concatenate(probs)


def fit_for_model(model, arch: str, spec: dict, train_images: Sequence[np.ndarray], train_labels: np.ndarray,
                  val_images: Sequence[np.ndarray], fitted_on: dict | None = None) -> dict:
    """:func:`fit_on_photos` for a torch model (training and adaptation hold the network, not a handler; adaptation
    refits the guard on the new line plus the replayed photos, in the adapted network's features)."""
    return fit_on_photos(lambda images: pooled_from_model(model, arch, images, spec), train_images, train_labels,
                         val_images, fitted_on)


def training_photos(ckpt: dict, data_root: str | Path | None = None) -> dict:
    """The checkpoint's training and validation photos, decoded: ``train_images``, ``train_labels``,
    ``val_images``, ``val_labels``, ``val_lines`` (the line index of each), ``lines`` (roots), ``class_names``. ValueError when the re-derived validation split is not the
    recorded one (other data, or other split settings)."""
    from .training import TrainConfig, prepare_data, recorded_validation_hash

    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in (ckpt.get("train_config") or {}).items() if k in known})
    if data_root is not None:
        cfg = replace(cfg, data=str(data_root))
    cfg = replace(cfg, region_weight=0.0)
    prep = prepare_data(cfg)
    full, images = prep["full"], prep["images"]
    want = recorded_validation_hash(ckpt)
    got = full.subset(prep["val_idx"]).fingerprint()["files_sha256"]
    if want is not None and want != got:
        raise ValueError(f"the validation split re-derived from {cfg.data} (files hash {got[:12]}) is not the one "
                         f"recorded in the checkpoint ({str(want)[:12]}): the data or the split settings differ")
    line_of = np.zeros(len(full), dtype=int)
    for k, ln in enumerate(prep["lines"]):
        line_of[np.concatenate([ln["train_idx"], ln["val_idx"]]).astype(int)] = k
    return {"train_images": [images[i] for i in prep["train_idx"]], "train_labels": full.labels[prep["train_idx"]],
            "val_images": [images[i] for i in prep["val_idx"]], "val_labels": full.labels[prep["val_idx"]],
            "val_lines": line_of[prep["val_idx"]], "lines": [ln["root"] for ln in prep["lines"]],
            "class_names": list(full.class_names)}


def fit_checkpoint_guard(checkpoint: str | Path, out: str | Path | None = None,
                         data_root: str | Path | None = None) -> dict:
    """Fit the guard of ``checkpoint`` on its own training and validation photos and save the checkpoint with it
    (to ``out``, default in place) and its ONNX graph; returns the stored guard."""
    from inference_handler import InferenceHandler  # noqa: PLC0415 (the handler is the one inference entry point)

    from .checkpoint import load_checkpoint, save_checkpoint, stored_guard

    ckpt = load_checkpoint(checkpoint)
    photos = training_photos(ckpt, data_root)
    handler = InferenceHandler(checkpoint)
    guard = fit_on_photos(handler.pooled_features, photos["train_images"], photos["train_labels"], photos["val_images"],
                          fitted_on={"lines": photos["lines"]})
    ckpt["guard"] = stored_guard(guard)
    save_checkpoint(ckpt, out or checkpoint, graph=True)
    return ckpt["guard"]
