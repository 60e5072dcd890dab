"""Inspect casting photos with the trained checkpoint: verdict, class probabilities and a Grad-CAM heat map.

    from inspectkit.inference.handler import InferenceHandler
    handler = InferenceHandler("final_best_model.pt")           # backend="auto": ONNX Runtime when equivalent
    result = handler.predict("part.jpg")                        # path, bytes, PIL image or numpy array
    result.verdict, result.defect_probability, result.overlay   # "DEFECT", 0.97, RGB uint8 at the photo's size

Everything the handler needs (architecture, classes, preprocessing, decision threshold) comes from the
checkpoint; decoding and preprocessing are the functions training and evaluation use, and the verdict is
``inspectkit.metrics.predict_labels`` (defect when p_defect >= threshold).

Needs review: each result of a model with a defect class carries ``needs_review``, true when p_defect lies in the
review band around the threshold (``handler.review_band``: the checkpoint's band derived on validation, or for a
checkpoint without one ``inspectkit.review.DEFAULT_MARGIN`` logits either side of its threshold; see
``inspectkit/review.py``). At another threshold the band moves with it in logit space (``review_band_at``);
``set_review_band`` changes it.

Heat maps (``heatmap_mode``): for a model with a defect class the default is ``"defect-evidence"``, the map
ReLU(sum_k (w_defect,k - w_ok,k) A_k) (Grad-CAM of logit[defect] - logit[ok]) on the checkpoint's fixed scale
calibrated on validation (``inspectkit/heatmap/scale.py``: 0.5 = the OK/defect boundary, 1 = a typical defect), so a
good part stays cool and photos compare; a checkpoint without a scale falls back to each map's own maximum
(``result.heatmap_scale`` is then None). ``"class-normalised"`` is the per-image min-max normalised CAM of the
predicted (or ``target``) class, the default of a model without a defect class. Display names ("Defect", "OK")
come from the checkpoint (``inspectkit/labels.py``) and go beside the raw class names.

Backends: ``"onnx"`` runs an ONNX Runtime graph of the checkpoint - the committed one beside it
(``final_best_model.onnx``, bound to the checkpoint's SHA-256; see inspectkit/inference/fast.py) or one generated from the
checkpoint and cached by its SHA-256 - that returns logits and last-block features, and computes the heat map
from them without a backward pass (exact Grad-CAM for a global-pool + linear head); ``"torch"`` runs the PyTorch
model with autograd Grad-CAM (gradcam.py) at any layer; ``"auto"`` takes ONNX when it is available and exact for
the requested layer.
Importing this module does not import torch, and neither does loading a committed or cached graph: the app
serves without torch installed (requirements.txt). Only ``backend="torch"`` and generating a missing graph need it
(``pip install -r requirements-train.txt``).

Why one file of this length: it is the design's single inference entry point (``InferenceHandler`` and
``InspectionResult``), and its parts (two backends, one forward for prediction and CAM, overlays, timings)
share one object's state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspectkit.guard import guard_from_info
from inspectkit.heatmap.render import (
    cam_from_features,
    check_opacity,
    evidence_from_features,
    heatmap_at,
    heatmap_on_scale,
    heatmap_peak,
)
from inspectkit.heatmap.render import overlay as blend_overlay
from inspectkit.heatmap.scale import scale_for_checkpoint
from inspectkit.imageio import load_rgb, source_name
from inspectkit.inference import fast
from inspectkit.labels import display_names_for
from inspectkit.metrics import predict_labels, softmax
from inspectkit.paths import CHECKOUT
from inspectkit.preprocess import preprocess, validate_spec
from inspectkit.review import band_at, band_for_checkpoint, check_band, in_band, symmetric_band
from inspectkit.verdicts import UNUSABLE

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "final_best_model.pt"
#: "onnx-int8" is never chosen by "auto": it needs a quantised graph made beforehand (benchmarks/benchmark.py --int8)
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
STAGES = ("decode", "preprocess", "forward", "gradcam", "overlay", "total")
#: Heat maps: the defect evidence on the checkpoint's fixed scale, or the per-image normalised CAM of one class.
EVIDENCE, CLASS_NORMALISED = "defect-evidence", "class-normalised"
HEATMAP_MODES = (EVIDENCE, CLASS_NORMALISED)
#: Chunks of at least this many images are decoded, preprocessed and rendered in worker threads.
PARALLEL_MIN = 4
#: Chunks of at least this many images on the fast path run one single-threaded network per core.
SPLIT_MIN = 8


def _torch_installed() -> bool:
    """Whether torch can be imported (imports it: only asked on the way to the torch backend, which needs it)."""
    try:
        import torch  # noqa: F401 (only whether it imports)
    except ImportError:
        return False
    return True


@dataclass
class InspectionResult:
    """The outcome for one image. ``error`` is set (and ``verdict`` None) when the image could not be decoded.

    ``verdict`` is "OK", "DEFECT" or "UNUSABLE" (for a model with a defect class): UNUSABLE when the guard says the
    photo cannot be judged (``unusable_reason``: "too dark", "not a casting", ... see ``inspectkit.guard.REASONS``);
    ``label``, the probabilities and the heat map are still those the network gave, for the engineer to see.
    """

    name: str
    verdict: str | None = None  # "OK"/"DEFECT" for a model with a defect class, else the class name
    label: str | None = None  # the class name predicted
    probabilities: dict[str, float] = field(default_factory=dict)
    defect_probability: float | None = None
    threshold: float | None = None
    heatmap: np.ndarray | None = None  # float32 HxW in [0, 1], the original image's size
    overlay: np.ndarray | None = None  # RGB uint8 HxWx3
    image: np.ndarray | None = None  # the decoded original, RGB uint8 HxWx3
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    target: str | None = None  # the class the heat map explains
    backend: str | None = None  # "onnx", "torch" (or "onnx-int8")
    needs_review: bool | None = None  # p_defect in the review band (None: error, or no defect class)
    review_band: dict | None = None  # {"low": ..., "high": ...} the band it was judged against
    heatmap_mode: str | None = None  # "defect-evidence" or "class-normalised" (None: no heat map)
    heatmap_scale: dict | None = None  # {"threshold", "value"} shown as 0.5 and 1; None: scaled per image
    display_label: str | None = None  # the human label of ``label`` ("Defect"), from the checkpoint
    unusable_reason: str | None = None  # why the verdict is UNUSABLE (None: judged, or no guard)
    novelty: float | None = None  # how unlike the training photos (about 1 for them; None: no guard)
    image_stats: dict | None = None  # the guard's image statistics (brightness, sharpness, ...; None: no guard)

    def to_dict(self, include_arrays: bool = False) -> dict:
        """A JSON-ready dict. Arrays are left out (their shapes are given) unless ``include_arrays``,
        which adds them as nested lists."""
        out = {
            "name": self.name, "verdict": self.verdict, "label": self.label,
            "probabilities": {k: float(v) for k, v in self.probabilities.items()},
            "defect_probability": None if self.defect_probability is None else float(self.defect_probability),
            "threshold": None if self.threshold is None else float(self.threshold),
            "timings_ms": {k: float(v) for k, v in self.timings_ms.items()},
            "error": self.error, "target": self.target, "backend": self.backend,
            "needs_review": self.needs_review,
            "review_band": None if self.review_band is None else {k: float(v) for k, v in self.review_band.items()},
            "heatmap_mode": self.heatmap_mode, "display_label": self.display_label,
            "heatmap_scale": (None if self.heatmap_scale is None
                              else {k: float(v) for k, v in self.heatmap_scale.items()}),
            "unusable_reason": self.unusable_reason,
            "novelty": None if self.novelty is None else float(self.novelty),
            "image_stats": None if self.image_stats is None else {k: float(v) for k, v in self.image_stats.items()},
        }
        for key in ("heatmap", "overlay", "image"):
            arr = getattr(self, key)
            out[f"{key}_shape"] = None if arr is None else list(arr.shape)
            if include_arrays:
                out[key] = None if arr is None else arr.tolist()
        return out


class InferenceHandler:
    """Classify casting photos OK/DEFECT with a checkpoint and explain each verdict with a heat map.

    ``checkpoint``: path of the ``.pt`` (relative paths are also looked up next to this file).
    ``backend``: "auto" | "torch" | "onnx" (or the opt-in "onnx-int8", see BACKENDS). ``cam_layer``: module name
    of the Grad-CAM layer (default: the last convolutional block; another layer needs the torch backend).
    ``expected_sha256``: refuse a checkpoint with another digest (else the ``.sha256`` sidecar is checked when
    present). ``threads``: CPU threads for the network (default: the cores this process may use; for torch
    this sets the process-wide setting).
    ``cache_dir``: where generated ONNX graphs are kept (default ``~/.cache/inspectkit``).
    ``colormap``: OpenCV colour map of the overlay ("jet", "turbo", ... or a cv2.COLORMAP_* int).
    ``heatmap_mode``: "auto" (defect evidence for a model with a defect class, else the class CAM), or one of
    HEATMAP_MODES; ``predict``/``predict_batch`` can override it per call.

    All methods may be called from several threads at once.
    """

    def __init__(self, checkpoint: str | os.PathLike = DEFAULT_CHECKPOINT, backend: str = "auto",
                 cam_layer: str | None = None, expected_sha256: str | None = None, threads: int | None = None,
                 cache_dir: str | os.PathLike | None = None, colormap="jet", heatmap_mode: str = "auto"):
        t0 = time.perf_counter()
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {list(BACKENDS)}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads {threads!r} must be a positive int or None")
        if cam_layer is not None and not isinstance(cam_layer, str):
            raise ValueError(f"cam_layer must be a module name (str) or None, got {type(cam_layer).__name__}")
        from inspectkit.heatmap.render import _colormap

        _colormap(colormap)  # fail now, not at the first overlay
        self.colormap = colormap
        self.checkpoint_path = self._resolve(checkpoint)
        self.sha256 = fast.verified_digest(self.checkpoint_path, expected_sha256)
        self.threads = threads
        self.fallback_reason: str | None = None
        self._fast: fast.FastModel | None = None
        self._model = None
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

        if backend in ("auto", "onnx", "onnx-int8"):
            try:
                if cam_layer is not None and cam_layer not in fast.EXACT_LAYERS.values():
                    raise ValueError(f"the ONNX backend's heat map is exact only at the last block "
                                     f"({sorted(set(fast.EXACT_LAYERS.values()))}), not at {cam_layer!r}; "
                                     "use backend='torch' for other layers")
                fm = fast.load(self.checkpoint_path, cache_dir=cache_dir, threads=threads, digest=self.sha256,
                               onnx_file=fast.INT8_FILE if backend == "onnx-int8" else None)
                if cam_layer is not None and cam_layer != fm.meta["cam_layer"]:
                    raise ValueError(f"cam_layer {cam_layer!r} is not the last block of {fm.meta['arch']} "
                                     f"({fm.meta['cam_layer']!r}); use backend='torch' for other layers")
                self._fast = fm
            except ImportError as exc:  # onnxruntime/onnx not installed
                if backend != "auto":
                    raise RuntimeError(f"backend 'onnx' needs onnxruntime and onnx: {exc}") from exc
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
            except (ValueError, RuntimeError, OSError) as exc:
                if backend != "auto":
                    raise
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
            if self.fallback_reason:
                if not _torch_installed():  # serving without torch (requirements.txt): nothing to fall back to
                    raise RuntimeError(f"the ONNX graph could not be used and torch, the fallback, is not installed: "
                                       f"{self.fallback_reason}")
                log.warning("fast ONNX path not used, falling back to PyTorch: %s", self.fallback_reason)

        if self._fast is not None:
            self.backend = "onnx-int8" if backend == "onnx-int8" else "onnx"
            meta = self._fast.meta
            info = meta["info"]
            self.arch = meta["arch"]
            self.cam_layer = meta["cam_layer"]
            self.load_timings = dict(self._fast.timings)
        else:
            self.backend = "torch"
            info = self._load_torch(cam_layer)
        self.checkpoint_info: dict = info
        self.class_names: list[str] = list(info["class_names"])
        self.defect_index: int | None = info["defect_index"]
        self.defect_class: str | None = None if self.defect_index is None else self.class_names[self.defect_index]
        self.threshold: float | None = None if info["threshold"] is None else float(info["threshold"])
        self.preprocessing: dict = validate_spec(info["preprocessing"])
        self.input_size = int(self.preprocessing["size"])
        # the checkpoint's needs-review band (or the stated fallback); replaced whole by set_review_band, so a
        # thread reading it never sees half an update
        self._checkpoint_band: dict | None = band_for_checkpoint(info) if self.threshold is not None else None
        self._review_band: dict | None = self._checkpoint_band
        self.display_names: dict[str, str] = display_names_for(info)
        # the fixed scale of the defect-evidence map (None: the checkpoint has none, or it was made at another layer)
        self.heatmap_scale: dict | None = scale_for_checkpoint(info, self.cam_layer)
        if heatmap_mode == "auto":
            heatmap_mode = EVIDENCE if self.defect_index is not None else CLASS_NORMALISED
        self.heatmap_mode: str = self._check_mode(heatmap_mode)
        # the guard (UNUSABLE verdicts, drift reference) or why it is off; a checkpoint without one still serves
        self.guard, self.guard_off_reason = guard_from_info(info)
        self.load_time_s = time.perf_counter() - t0

    # -- loading ----------------------------------------------------------------------------------------------
    @staticmethod
    def _resolve(checkpoint) -> Path:
        if checkpoint is None or not isinstance(checkpoint, (str, os.PathLike)):
            raise ValueError(f"checkpoint must be a path to a .pt file, got {checkpoint!r}")
        path = Path(checkpoint)
        if not path.is_file() and not path.is_absolute():
            beside = CHECKOUT / path  # the app may start from another folder
            if beside.is_file():
                return beside
        if not path.is_file():
            raise ValueError(f"checkpoint not found: {path} (train one with train.py, or pass its path)")
        return path

    def _load_torch(self, cam_layer: str | None) -> dict:
        try:
            import torch  # lazy: a cached ONNX load never pays for importing torch
        except ImportError as exc:
            raise RuntimeError(f"backend 'torch' needs torch, which is not installed ({exc}); install it with: "
                               f"{fast.TRAIN_INSTALL}, or use backend 'onnx' (the committed graph "
                               f"{fast.graph_path(self.checkpoint_path).name})") from None

        from inspectkit.heatmap import gradcam
        from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(self.checkpoint_path, expected_sha256=self.sha256)
        model = model_from_checkpoint(ckpt)
        # Our own copy of the network: no parameter gradients are ever needed (Grad-CAM's graph starts at the layer)
        for p in model.parameters():
            p.requires_grad_(False)
        self._model = model
        self.arch = ckpt["arch"]
        self.cam_layer, _ = gradcam.find_layer(model, cam_layer)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.load_timings = {}
        return {k: v for k, v in ckpt.items() if k != "state_dict"}

    @property
    def model(self):
        """The PyTorch model (torch backend only; None for ONNX)."""
        return self._model

    # -- decisions --------------------------------------------------------------------------------------------
    def _verdict(self, label: int) -> str:
        if self.defect_index is None:
            return self.class_names[label]
        return "DEFECT" if label == self.defect_index else "OK"

    def decide(self, probabilities: dict, threshold: float | None = None, unusable_reason: str | None = None) -> str:
        """The verdict for class probabilities (e.g. a stored result's), optionally at another threshold.

        Same rule as inference and evaluation: defect when p_defect >= threshold; multi-class: most likely class.
        A photo with an ``unusable_reason`` stays UNUSABLE at any threshold (the probabilities are still checked).
        """
        if not isinstance(probabilities, dict):
            raise ValueError(f"probabilities must be a dict of class name -> probability, got "
                             f"{type(probabilities).__name__}")
        missing = [c for c in self.class_names if c not in probabilities]
        if missing:
            raise ValueError(f"probabilities lack {missing}; this model's classes are {self.class_names}")
        try:
            p = np.array([[float(probabilities[c]) for c in self.class_names]])
        except (TypeError, ValueError):
            raise ValueError(f"probabilities {probabilities!r} must be numbers") from None
        if not np.all(np.isfinite(p)) or (p < 0).any() or (p > 1).any():
            raise ValueError(f"probabilities {probabilities!r} must be in [0, 1]")
        t = self.threshold
        if threshold is not None:
            try:
                t = float(threshold)
            except (TypeError, ValueError):
                raise ValueError(f"threshold {threshold!r} must be a number in [0, 1]") from None
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"threshold {threshold!r} must be in [0, 1]")
        verdict = self._verdict(int(predict_labels(p, self.defect_index, t)[0]))
        return UNUSABLE if unusable_reason else verdict

    def pooled_features(self, images: Sequence, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(globally pooled last-block features N x K, class probabilities N x C) of decoded RGB uint8 images: what
        the guard's novelty reference is fitted on (``inspectkit.guard.fit_novelty``)."""
        if self._fast is None:  # the torch backend: the same hook training and adaptation use
            from inspectkit.model import pooled_from_model

            return pooled_from_model(self._model, self.arch, list(images), self.preprocessing, batch_size)
        pooled, probs = [np.zeros((0, self._fast.head_weight.shape[1]), np.float32)], [
            np.zeros((0, len(self.class_names)))]
        for start in range(0, len(images), batch_size):
            x = np.stack([preprocess(im, self.preprocessing) for im in images[start:start + batch_size]])
            logits, feats = self._fast.run(x.astype(np.float32), features=True)
            pooled.append(feats.mean(axis=(2, 3)))
            probs.append(softmax(logits))
        return np.concatenate(pooled), np.concatenate(probs)

    # -- needs review -----------------------------------------------------------------------------------------
    @property
    def review_band(self) -> dict | None:
        """The needs-review band in force around the model's threshold: ``threshold``, ``low``, ``high``,
        ``source`` ("validation", "fallback" or "user"), ``rule`` and, when derived on validation, its counts there.
        None for a model without a defect class. A copy: change it with :meth:`set_review_band`."""
        return None if self._review_band is None else dict(self._review_band)

    def set_review_band(self, margin: float | None = None, low: float | None = None,
                        high: float | None = None) -> dict | None:
        """Change the band around the model's threshold and return it: ``margin`` logits either side of it, or the
        explicit edges ``low`` <= threshold <= ``high``; with no argument, back to the checkpoint's band."""
        if self.threshold is None:
            raise ValueError("this model has no defect class and no threshold, so it has no review band")
        if margin is not None and (low is not None or high is not None):
            raise ValueError("give either margin or low and high, not both")
        if margin is not None:
            lo, hi = symmetric_band(self.threshold, margin)
            band = {"threshold": self.threshold, "low": lo, "high": hi, "margin": float(margin), "source": "user",
                    "rule": f"{float(margin):g} logits either side of the threshold, set by the user"}
        elif low is not None or high is not None:
            if low is None or high is None:
                raise ValueError("give both low and high")
            check_band({"threshold": self.threshold, "low": low, "high": high}, "the review band")
            band = {"threshold": self.threshold, "low": float(low), "high": float(high), "source": "user",
                    "rule": "edges set by the user"}
        else:
            band = self._checkpoint_band
        self._review_band = band
        return self.review_band

    def review_band_at(self, threshold: float | None = None, margin: float | None = None) -> dict | None:
        """``{"low", "high", "threshold"}`` of the band around ``threshold`` (default: the model's): the band in
        force moved there in logit space, or with ``margin`` a band of that many logits either side of it.
        None for a model without a defect class."""
        band = self._review_band
        if band is None:
            return None
        t = self.threshold if threshold is None else float(threshold)
        lo, hi = symmetric_band(t, margin) if margin is not None else band_at(band, t)
        return {"low": lo, "high": hi, "threshold": t}

    def needs_review(self, defect_probability: float | None, threshold: float | None = None,
                     margin: float | None = None) -> bool | None:
        """Whether ``defect_probability`` lies in the band around ``threshold`` (see :meth:`review_band_at`);
        None when there is no probability or no band."""
        band = self.review_band_at(threshold, margin)
        if band is None or defect_probability is None:
            return None
        return in_band(float(defect_probability), band["low"], band["high"])

    def _check_mode(self, mode) -> str:
        if mode not in HEATMAP_MODES:
            raise ValueError(f"heatmap_mode {mode!r} must be one of {list(HEATMAP_MODES)} (or None: the handler's "
                             f"{getattr(self, 'heatmap_mode', 'default')!r})")
        if mode == EVIDENCE and self.defect_index is None:
            raise ValueError(f"heatmap_mode {EVIDENCE!r} needs a model with a defect class; this one has the classes "
                             f"{self.class_names}: use {CLASS_NORMALISED!r}")
        return mode

    def _resolve_mode(self, mode, target_index: int | None) -> str:
        """The heat map a call gets: ``mode`` (None: the handler's); a ``target`` class asks for that class's CAM."""
        if target_index is not None:
            if mode == EVIDENCE:
                raise ValueError(f"target names one class's CAM; heatmap_mode {EVIDENCE!r} explains DEFECT against OK "
                                 f"and takes no target (use heatmap_mode={CLASS_NORMALISED!r} or target=None)")
            return CLASS_NORMALISED
        return self.heatmap_mode if mode is None else self._check_mode(mode)

    def shown_label(self, class_name: str | None) -> str | None:
        """The human label of a class ("Defect"), or None for None."""
        return None if class_name is None else self.display_names.get(class_name, class_name)

    def _target_index(self, target) -> int | None:
        if target is None:
            return None
        if isinstance(target, str):
            if target in self.class_names:
                return self.class_names.index(target)
            if self.defect_index is not None and target in ("DEFECT", "OK") and len(self.class_names) == 2:
                return self.defect_index if target == "DEFECT" else 1 - self.defect_index
        elif isinstance(target, (int, np.integer)) and not isinstance(target, bool) \
                and 0 <= int(target) < len(self.class_names):
            return int(target)
        raise ValueError(f"target {target!r} must be None (the predicted class), a class name in "
                         f"{self.class_names} or an index 0..{len(self.class_names) - 1}")

    # -- inference --------------------------------------------------------------------------------------------
    def predict(self, image, heatmap: bool = True, opacity: float = 0.45, target=None,
                name: str | None = None, heatmap_mode: str | None = None) -> InspectionResult:
        """Inspect one image (path, bytes, PIL image or numpy array; grayscale/RGB/RGBA, 8- or 16-bit).

        ``heatmap=False`` skips the heat map and overlay. ``heatmap_mode``: one of HEATMAP_MODES (None: the
        handler's). ``target``: the class whose per-image normalised CAM is shown (implies "class-normalised";
        default: the predicted class). Raises ValueError naming the problem when the image cannot be used.
        """
        return self.predict_batch([image], heatmap=heatmap, opacity=opacity, batch_size=1, on_error="raise",
                                  names=None if name is None else [name], target=target, heatmap_mode=heatmap_mode)[0]

    def predict_batch(self, images: Iterable, heatmap: bool = True, opacity: float = 0.45, batch_size: int = 16,
                      on_error: str = "raise", names: Sequence[str] | None = None,
                      progress: Callable[[int, int], None] | None = None, target=None,
                      heatmap_mode: str | None = None) -> list[InspectionResult]:
        """Inspect many images, ``batch_size`` at a time through the network; one result per image, in order.

        ``on_error="raise"``: the first undecodable image raises its ValueError; ``"collect"``: it yields a result
        with ``error`` set and ``verdict`` None, and the others still complete. ``progress(done, total)`` is
        called after each batch. Per-image timings share the batch's forward (and CAM) time equally.
        """
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)  # N x H x W x C stack
        elif isinstance(images, (str, bytes, bytearray, os.PathLike, np.ndarray)) or hasattr(images, "getpixel"):
            raise ValueError(f"predict_batch takes a list of images, got one {type(images).__name__}; "
                             "use predict() for a single image")
        try:
            images = list(images)
        except TypeError:
            raise ValueError(f"predict_batch takes a list of images, got {type(images).__name__}") from None
        opacity = check_opacity(opacity)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r} must be a positive int")
        if on_error not in ("raise", "collect"):
            raise ValueError(f"on_error {on_error!r} must be 'raise' or 'collect'")
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != len(images):
                raise ValueError(f"{len(names)} names for {len(images)} images")
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be callable(done, total), got {type(progress).__name__}")
        target_index = self._target_index(target)
        mode = self._resolve_mode(heatmap_mode, target_index)

        total = len(images)
        results: list[InspectionResult | None] = [None] * total
        for start in range(0, total, int(batch_size)):
            idx = list(range(start, min(start + int(batch_size), total)))
            self._run_chunk(images, idx, names, results, heatmap, opacity, on_error, target_index, mode)
            if progress is not None:
                progress(idx[-1] + 1, total)
        return results  # type: ignore[return-value]

    def _name(self, image, i: int, names) -> str:
        if names is not None:
            return names[i]
        if isinstance(image, (str, os.PathLike)):
            return Path(image).name
        return source_name(image)

    def _buffer(self, n: int) -> np.ndarray:
        # One input buffer per thread, grown as needed: no 600 KB..20 MB allocation per call, and no
        # sharing between threads that run at the same time.
        s = self.input_size
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < n:
            buf = np.empty((max(n, 1), 3, s, s), dtype=np.float32)
            self._local.buf = buf
        return buf[:n]

    def _map(self, fn, items: list, force: bool = False) -> list:
        """fn over items: in the handler's worker threads for several items (OpenCV, PIL and numpy release the
        GIL, so decoding, resizing and overlays of a batch use every core), inline for one."""
        if len(items) < (1 if force else PARALLEL_MIN):
            return [fn(it) for it in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.threads or fast.default_threads(),
                                                thread_name_prefix="inspect")
        return list(self._pool.map(fn, items))

    def _prepare(self, args):
        """Decode one image and preprocess it into its slot of the input batch: (rgb, timing, guard statistics or
        None), or (the ValueError, None, None). The guard's image statistics count as preprocessing time."""
        source, row = args
        t0 = time.perf_counter()
        try:
            rgb = load_rgb(source)
        except ValueError as exc:
            return exc, None, None
        t1 = time.perf_counter()
        preprocess(rgb, self.preprocessing, out=row)
        stats = None if self.guard is None else self.guard.stats(rgb)
        t2 = time.perf_counter()
        return rgb, {"decode": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3}, stats

    def _run_chunk(self, images, idx, names, results, heatmap, opacity, on_error, target_index,
                   mode: str = CLASS_NORMALISED) -> None:
        evidence = heatmap and mode == EVIDENCE
        guard = self.guard
        feats_needed = heatmap or guard is not None  # novelty is read from the same last-block features
        t_start = time.perf_counter()
        buf = self._buffer(len(idx))
        workers = self.threads or fast.default_threads()
        split = self._fast is not None and workers > 1 and len(idx) >= SPLIT_MIN
        if split:
            # Big batch on the fast path: each core decodes, preprocesses and runs (single-threaded) its own
            # share; measured 4.5 vs 4.65 ms/image for the network and the preprocessing overlaps with it.
            bounds = np.linspace(0, len(idx), workers + 1).astype(int)
            parts = [list(range(bounds[w], bounds[w + 1])) for w in range(workers)]

            def part_job(part):
                prep = [self._prepare((images[idx[k]], buf[k])) for k in part]
                good = [k for k, (_, tm, _) in zip(part, prep) if tm is not None]
                if not good:
                    return prep, None, None, 0.0
                xs = buf[good[0]:good[-1] + 1] if good == list(range(good[0], good[-1] + 1)) else buf[good]
                t = time.perf_counter()
                lg, ft = self._fast.run_single_thread(xs, features=feats_needed)
                return prep, lg, ft, (time.perf_counter() - t) * 1e3 / len(good)

            outs = self._map(part_job, parts, force=True)
            prepared = [p for o in outs for p in o[0]]
        else:
            prepared = self._map(self._prepare, [(images[i], buf[k]) for k, i in enumerate(idx)])
        rgbs, slots, timing, rows, stats = [], [], [], [], []
        for k, (i, (rgb, tm, st)) in enumerate(zip(idx, prepared)):
            if tm is None:  # rgb holds the ValueError
                if on_error == "raise":
                    raise rgb
                results[i] = InspectionResult(name=self._name(images[i], i, names), error=str(rgb),
                                              backend=self.backend)
                continue
            rgbs.append(rgb)
            stats.append(st)
            slots.append(i)
            timing.append(tm)
            rows.append(k)
        n = len(rgbs)
        if n == 0:
            return
        if not split:
            # usually every image decodes and the batch is the buffer itself; else gather the good rows
            x = buf[:n] if rows == list(range(n)) else buf[rows]

        t0 = time.perf_counter()
        if split:
            done = [o for o in outs if o[1] is not None]
            logits = np.concatenate([o[1] for o in done])
            feats = np.concatenate([o[2] for o in done]) if feats_needed else None
            t1 = time.perf_counter()
            # per image: its part's single-threaded time per image, shared by the parts running side by side
            t0 = t1 - float(np.mean([o[3] for o in done])) * 1e-3 * n / len(done)
            probs = softmax(logits)
            labels = predict_labels(probs, self.defect_index, self.threshold)
            targets = labels if target_index is None else np.full(n, target_index)
            cams = self._fast_cams(feats, targets, evidence) if heatmap else None
        elif self._fast is not None:
            logits, feats = self._fast.run(x, features=feats_needed)
            t1 = time.perf_counter()
            probs = softmax(logits)
            labels = predict_labels(probs, self.defect_index, self.threshold)
            targets = labels if target_index is None else np.full(n, target_index)
            cams = self._fast_cams(feats, targets, evidence) if heatmap else None
        else:
            import torch

            from inspectkit.heatmap import gradcam

            xt = torch.from_numpy(x)
            feats = None
            if heatmap:
                with gradcam.GradCAM(self._model, self.cam_layer) as cam, self._last_block() as last:
                    logits = cam.forward(xt).numpy()
                    t1 = time.perf_counter()
                    probs = softmax(logits)
                    labels = predict_labels(probs, self.defect_index, self.threshold)
                    targets = labels if target_index is None else np.full(n, target_index)
                    # evidence: Grad-CAM of logit[defect] - logit[ok] by autograd (x h*w: the fast path's units)
                    cams = cam.evidence(self.defect_index) if evidence else cam.cams(targets)
                feats = last.get("features")
            else:
                with torch.inference_mode(), self._last_block() as last:
                    logits = self._model(xt).numpy()
                feats = last.get("features")
                t1 = time.perf_counter()
                probs = softmax(logits)
                labels = predict_labels(probs, self.defect_index, self.threshold)
                targets, cams = None, None
        t2 = time.perf_counter()
        fwd_ms, cam_ms = (t1 - t0) * 1e3 / n, (t2 - t1) * 1e3 / n
        reasons, novelty = [None] * n, [None] * n
        if guard is not None:
            # pooled last-block features: what the head sees; the guard's novelty is measured there
            novelty = guard.novelty(feats.mean(axis=(2, 3))).tolist()
            reasons = [guard.judge(stats[j], novelty[j]) for j in range(n)]

        scale = self.heatmap_scale if evidence else None
        shown_scale = (None if scale is None
                       else {"threshold": float(scale["threshold"]), "value": float(scale["value"])})

        def render(j):
            """Heat map at the photo's size and its overlay, with their times."""
            ta = time.perf_counter()
            if not evidence:
                hm = heatmap_at(cams[j], rgbs[j].shape[:2])
            elif scale is not None:
                hm = heatmap_on_scale(cams[j], rgbs[j].shape[:2], scale["threshold"], scale["value"])
            else:  # the stated fallback: no calibrated scale in the checkpoint
                hm = heatmap_peak(cams[j], rgbs[j].shape[:2])
            tb = time.perf_counter()
            ov = blend_overlay(rgbs[j], hm, opacity, self.colormap)
            return hm, ov, (tb - ta) * 1e3, (time.perf_counter() - tb) * 1e3

        rendered = self._map(render, list(range(n))) if heatmap else [(None, None, 0.0, 0.0)] * n
        band = self.review_band_at()  # once per chunk: the same band for the whole chunk even if it is changed now
        for j, i in enumerate(slots):
            rgb = rgbs[j]
            label = int(labels[j])
            hm, ov, t_cam, t_ov = rendered[j]
            tm = timing[j]
            tm["forward"] = fwd_ms
            tm["gradcam"] = (cam_ms + t_cam) if heatmap else 0.0
            tm["overlay"] = t_ov
            tm["total"] = sum(tm[k] for k in STAGES[:-1])
            results[i] = InspectionResult(
                name=self._name(images[i], i, names),
                verdict=UNUSABLE if reasons[j] is not None else self._verdict(label),
                label=self.class_names[label],
                probabilities={c: float(p) for c, p in zip(self.class_names, probs[j])},
                defect_probability=None if self.defect_index is None else float(probs[j, self.defect_index]),
                threshold=self.threshold,
                heatmap=hm, overlay=ov, image=rgb, timings_ms=tm,
                target=(self.defect_class if evidence else self.class_names[int(targets[j])]) if heatmap else None,
                backend=self.backend,
                heatmap_mode=mode if heatmap else None,
                heatmap_scale=shown_scale if evidence else None,
                display_label=self.shown_label(self.class_names[label]),
                needs_review=None if band is None else in_band(float(probs[j, self.defect_index]), band["low"],
                                                               band["high"]),
                review_band=None if band is None else {"low": band["low"], "high": band["high"]},
                unusable_reason=reasons[j], novelty=novelty[j],
                image_stats=None if guard is None else guard.stats_dict(stats[j]),
            )
        if n == 1 and len(idx) == 1:
            # a single image: the wall time of the whole call, overheads included
            results[slots[0]].timings_ms["total"] = (time.perf_counter() - t_start) * 1e3

    def _last_block(self):
        """Torch backend: the last block's output kept (``["features"]``) for the guard's novelty; nothing kept (an
        empty dict) when there is no guard."""
        if self.guard is None:
            return nullcontext({})
        from inspectkit.model import last_block_output

        return last_block_output(self._model, self.arch)

    def _fast_cams(self, feats: np.ndarray, targets: np.ndarray, evidence: bool) -> np.ndarray:
        """The fast path's maps from the last block's features: defect evidence or the targets' class CAMs."""
        if evidence:
            return evidence_from_features(feats, self._fast.head_weight, self.defect_index)
        return cam_from_features(feats, self._fast.head_weight, targets)

    def __repr__(self) -> str:
        return (f"InferenceHandler({str(self.checkpoint_path)!r}, backend={self.backend!r}, arch={self.arch!r}, "
                f"classes={self.class_names}, threshold={self.threshold}, cam_layer={self.cam_layer!r})")
