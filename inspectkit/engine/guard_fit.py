"""Fitting a checkpoint's guard on the photos it was trained and selected on (needs torch for the re-derived split).

The training photos of every line the model was trained on (the split re-derived from the checkpoint's train
config, checked against the recorded validation files) give the image-check limits, the framing template and the
novelty reference; its validation photos give the novelty threshold and the drift reference. ``fit_guard.py`` is
the command; adaptation calls :func:`fit_on_photos` with the new line's photos and the replayed ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from inspectkit.guard import fit_guard
from inspectkit.model import pooled_from_model

log = logging.getLogger(__name__)


def fit_on_photos(features, train_images: Sequence[np.ndarray], train_labels: np.ndarray,
                  val_images: Sequence[np.ndarray], fitted_on: dict | None = None,
                  edges_per_photo: int | None = None) -> dict:
    """A guard for the network behind ``features`` (decoded photos -> (pooled features, probabilities), e.g. a
    handler's ``pooled_features``) from decoded training photos (with labels) and validation photos
    (``edges_per_photo``: :func:`inspectkit.guard.fit_guard`'s)."""
    t0 = time.perf_counter()
    guard = fit_guard(train_images, train_labels, val_images, features, fitted_on=fitted_on,
                      edges_per_photo=edges_per_photo)
    log.info("guard fitted on %d training and %d validation photos in %.1f s (novelty threshold %.3f)",
             len(train_images), len(val_images), time.perf_counter() - t0, guard["novelty_threshold"])
    return guard


def fit_for_model(model, arch: str, spec: dict, train_images: Sequence[np.ndarray], train_labels: np.ndarray,
                  val_images: Sequence[np.ndarray], fitted_on: dict | None = None,
                  edges_per_photo: int | None = None) -> dict:
    """:func:`fit_on_photos` for a torch model (training and adaptation hold the network, not a handler; adaptation
    refits the guard on the new line plus the replayed photos, in the adapted network's features)."""
    return fit_on_photos(lambda images: pooled_from_model(model, arch, images, spec), train_images, train_labels,
                         val_images, fitted_on, edges_per_photo)
