"""Grad-CAM for the inspection classifier, with hooks that never outlive the call.

    with GradCAM(model, "features.18") as cam:
        logits = cam.forward(x)              # the prediction's own forward pass records the layer
        maps = cam.cams(targets)             # B x h x w, ReLU(sum_k alpha_k A_k), not normalised
    heat = heatmap_at(maps[0], image.shape[:2])   # [0, 1], the image's size
    picture = overlay(image, heat, opacity=0.45)

The forward hook detaches the layer's output and makes it the start of a small autograd graph, with
gradients off before the layer: the backward pass then only runs through the layers after it (for the last
block: pooling and the linear head), and no parameter gradients are computed or left on the model.
The hook acts only in the thread that opened the context, so several threads may use one model at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from inspectkit.heatmap.render import COLORMAPS, cam_from_features, colorize, heatmap_at, normalize01, overlay

__all__ = ["GradCAM", "gradcam", "find_layer", "default_layer", "linear_head", "cam_from_features",
           "heatmap_at", "normalize01", "overlay", "colorize", "COLORMAPS", "hook_count"]


def default_layer(model: nn.Module) -> str:
    """Name of the last convolutional block: the layer whose output feeds global pooling and the head.

    torchvision's MobileNetV2 -> "features.<last>", ResNet -> "layer4"; any other network -> the last
    Conv2d module.
    """
    if hasattr(model, "features") and isinstance(model.features, nn.Sequential) and hasattr(model, "classifier"):
        return f"features.{len(model.features) - 1}"
    if hasattr(model, "layer4") and hasattr(model, "fc"):
        return "layer4"
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer; name the Grad-CAM layer explicitly")
    return convs[-1]


def find_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """(name, module) of the layer called ``name`` (a dotted module name); None means :func:`default_layer`."""
    if name is None:
        name = default_layer(model)
    if not isinstance(name, str):
        raise ValueError(f"Grad-CAM layer must be a module name (str), got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        convish = [n for n, m in modules.items() if n and n.count(".") <= 1 and any(
            isinstance(c, nn.Conv2d) for c in m.modules())]
        raise ValueError(f"no layer named {name!r} in {type(model).__name__}; candidates include "
                         f"{convish[-6:]}")
    return name, modules[name]


def linear_head(model: nn.Module, layer: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(W, b) of the head when ``layer``'s output goes straight into global average pooling and one linear layer.

    That is when Grad-CAM needs no backward pass (see :func:`inspectkit.heatmap.render.cam_from_features`).
    Recognised: torchvision MobileNetV2 at its last ``features`` block with a (Dropout, Linear) or Linear
    classifier, ResNet at ``layer4`` with a Linear ``fc``. Anything else returns None (use autograd).
    """
    lin = None
    if hasattr(model, "features") and hasattr(model, "classifier") and isinstance(model.features, nn.Sequential):
        if layer == f"features.{len(model.features) - 1}":
            cls = model.classifier
            parts = list(cls) if isinstance(cls, nn.Sequential) else [cls]
            # Dropout is the identity in eval mode; anything else between pooling and Linear breaks linearity
            if parts and isinstance(parts[-1], nn.Linear) and all(isinstance(p, nn.Dropout) for p in parts[:-1]):
                lin = parts[-1]
    elif hasattr(model, "layer4") and isinstance(getattr(model, "fc", None), nn.Linear) and layer == "layer4":
        pool = getattr(model, "avgpool", None)
        if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1)):
            lin = model.fc
    if lin is None:
        return None
    w = lin.weight.detach().cpu().numpy().astype(np.float32)
    b = (lin.bias.detach().cpu().numpy() if lin.bias is not None else np.zeros(w.shape[0])).astype(np.float32)
    return w, b


def hook_count(model: nn.Module) -> int:
    """Forward, pre-forward and backward hooks registered on any module of ``model`` (0 when clean)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


class GradCAM:
    """Grad-CAM at one layer of a classifier; a context manager that removes its hook on exit, even on error.

    ``forward(x)`` runs the model (the prediction itself) and keeps the layer's activations;
    ``cams(targets)`` back-propagates the target logits to them and returns B x h x w maps
    ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of d logit / d A_k (not normalised).
    """

    def __init__(self, model: nn.Module, layer: str | None = None):
        self.model = model
        self.layer_name, self.layer = find_layer(model, layer)
        self._handle = None
        self._owner: int | None = None
        self._activations: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None

    # -- context management -------------------------------------------------------------------------------
    def __enter__(self) -> GradCAM:
        if self._handle is not None:
            raise RuntimeError("this GradCAM context is already open")
        self._owner = threading.get_ident()
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hook and drop the stored tensors (safe to call twice)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activations = None
        self._logits = None

    def _hook(self, module, inputs, output):
        # Another thread's forward pass through the same model: not ours, leave it alone.
        if threading.get_ident() != self._owner or not isinstance(output, torch.Tensor):
            return None
        # Gradients start here: everything before the layer ran without autograd bookkeeping.
        torch.set_grad_enabled(True)
        act = output.detach().requires_grad_(True)
        self._activations = act
        return act

    # -- the two steps ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on the batch ``x``; returns the logits (with the graph from the layer kept for ``cams``)."""
        if self._handle is None:
            raise RuntimeError("use GradCAM inside a 'with' block (it registers its hook on entry)")
        self._activations = None
        previous = torch.is_grad_enabled()
        # inference_mode(False): a caller's inference_mode would forbid the small graph after the layer
        with torch.inference_mode(False):
            torch.set_grad_enabled(False)
            try:
                logits = self.model(x)
            finally:
                torch.set_grad_enabled(previous)
        if self._activations is None:
            raise RuntimeError(f"layer {self.layer_name!r} did not run in the forward pass")
        if logits.ndim != 2:
            raise ValueError(f"the model must return B x classes logits, got shape {tuple(logits.shape)}")
        self._logits = logits
        return logits.detach()

    def cams(self, targets: Sequence[int] | np.ndarray | None = None,
             coefficients: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """B x h x w Grad-CAM maps (float32, >= 0) for ``targets`` (one class index per image; None = argmax).

        ``coefficients`` (instead of ``targets``): Grad-CAM of the score ``sum_c v_c logit_c``, one vector ``v`` of
        length C for every image (or B x C, one per image); e.g. +1/-1 for the defect evidence
        logit[defect] - logit[ok] (:func:`inspectkit.heatmap.render.evidence_coefficients`).
        """
        if self._logits is None or self._activations is None:
            raise RuntimeError("call forward(x) before cams()")
        logits, act = self._logits, self._activations
        n, c = logits.shape
        coef = None
        if coefficients is not None:
            if targets is not None:
                raise ValueError("give targets or coefficients, not both")
            coef = np.asarray(coefficients, dtype=np.float32)
            if coef.shape not in ((c,), (n, c)) or not np.all(np.isfinite(coef)):
                raise ValueError(f"coefficients of shape {coef.shape} must be finite, of shape ({c},) or ({n}, {c})")
        elif targets is None:
            t = logits.detach().argmax(dim=1).numpy()
        else:
            t = np.asarray(targets).reshape(-1)
            if len(t) != n or not np.issubdtype(t.dtype, np.integer) or (t < 0).any() or (t >= c).any():
                raise ValueError(f"targets {np.asarray(targets).tolist()!r} must be {n} class indices in 0..{c - 1}")
        # Images in a batch do not interact in eval mode, so one backward of the summed scores gives each
        # image the gradient of its own target logit. The caller may be under no_grad or inference_mode.
        with torch.inference_mode(False), torch.enable_grad():
            if coef is not None:
                score = (logits * torch.from_numpy(np.broadcast_to(coef, (n, c)).copy())).sum()
            else:
                idx = torch.as_tensor(t, dtype=torch.long)
                score = logits.gather(1, idx.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, act)
        with torch.no_grad():
            weights = grads.mean(dim=(2, 3), keepdim=True)
            maps = torch.relu((weights * act.detach()).sum(dim=1))
        self._logits = None  # the graph is spent; free it now
        return maps.numpy().astype(np.float32, copy=False)

    def evidence(self, defect_index: int) -> np.ndarray:
        """B x h x w defect-evidence maps: h * w times Grad-CAM of logit[defect] - logit[ok] (the mean of the other
        logits with more than two classes). At the last block of a global-pool + linear head this is exactly
        ``ReLU(sum_k (w_defect,k - w_ok,k) A_k)`` (:func:`inspectkit.heatmap.render.evidence_from_features`), in logit
        units, the units of the checkpoint's fixed heat-map scale."""
        from inspectkit.heatmap.render import evidence_coefficients

        if self._logits is None or self._activations is None:
            raise RuntimeError("call forward(x) before evidence()")
        h, w = self._activations.shape[-2:]
        maps = self.cams(coefficients=evidence_coefficients(self._logits.shape[1], defect_index))
        maps *= np.float32(h * w)
        return maps

    def __call__(self, x: torch.Tensor, targets: Iterable[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(logits as numpy B x C, Grad-CAM maps B x h x w) for one batch."""
        logits = self.forward(x)
        return logits.numpy(), self.cams(None if targets is None else np.asarray(list(targets)))


def gradcam(model: nn.Module, x: torch.Tensor, layer: str | None = None, targets=None,
            size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-call Grad-CAM: (logits B x C, maps) with the hook removed afterwards.

    ``size`` = (height, width): each map resized there and normalised to [0, 1] (B x height x width);
    None returns the raw maps at the layer's resolution.
    """
    with GradCAM(model, layer) as cam:
        logits, maps = cam(x, targets)
    if size is not None:
        maps = np.stack([heatmap_at(m, size) for m in maps])
    return logits, maps
