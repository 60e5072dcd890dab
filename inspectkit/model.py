"""Backbones with a new head, their ImageNet weights (official or a local file), and the two training stages.

A model is described by its ``arch`` name and number of classes; everything else (which layers are
"blocks", where the head is, which layer Grad-CAM looks at) is looked up here so training, inference
and Grad-CAM agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from inspectkit.metrics import softmax
from inspectkit.preprocess import preprocess

ARCHS = ("mobilenet_v2", "resnet18")
#: Where the offline weights live in this project's layout; named in the error when 'imagenet' is unreachable.
LOCAL_WEIGHTS_HINT = "../shared/weights/mobilenet_v2_imagenet1k.pth"


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {list(ARCHS)}")


def head_prefix(arch: str) -> str:
    """State-dict prefix of the classification head (the part replaced for our classes)."""
    _check_arch(arch)
    return "classifier." if arch == "mobilenet_v2" else "fc."


def cam_layer_name(arch: str) -> str:
    """Default Grad-CAM layer: the last convolutional block, whose output feeds global pooling and the head."""
    _check_arch(arch)
    return "features.18" if arch == "mobilenet_v2" else "layer4"


@contextmanager
def last_block_output(model: nn.Module, arch: str):
    """While open, ``kept["features"]`` holds the last block's output of the latest forward pass (numpy B x K x h x
    w): what the head pools, and what the guard's novelty reads. The forward hook is removed on exit."""
    kept: dict = {}

    def keep(module, inputs, output):
        kept["features"] = output.detach().float().numpy().copy()

    handle = model.get_submodule(cam_layer_name(arch)).register_forward_hook(keep)
    try:
        yield kept
    finally:
        handle.remove()


def build_model(arch: str, num_classes: int, weights: str | Path | None = None, dropout: float = 0.2) -> nn.Module:
    """A torchvision backbone with a new ``num_classes`` head.

    ``weights``: ``"imagenet"`` (torchvision's official weights: downloaded or from the torch hub cache),
    a path to a local state_dict of the backbone in torchvision's layout, or ``None``/``"none"``.
    """
    _check_arch(arch)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes {num_classes!r} must be an int >= 2")
    model = torchvision.models.mobilenet_v2() if arch == "mobilenet_v2" else torchvision.models.resnet18()
    if weights not in (None, "none", ""):
        state = official_weights(arch) if weights == "imagenet" else local_weights(weights)
        load_backbone(model, arch, state)
    if arch == "mobilenet_v2":
        model.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.last_channel, num_classes))
    else:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def official_weights(arch: str) -> dict:
    """torchvision's ImageNet weights; a clear error naming the local-file option when they cannot be had."""
    enum = (torchvision.models.MobileNet_V2_Weights if arch == "mobilenet_v2"
            else torchvision.models.ResNet18_Weights).IMAGENET1K_V1
    try:
        return enum.get_state_dict(progress=False)
    except Exception as exc:  # URLError, socket errors, SSL errors, HTTP errors: all mean "not reachable"
        raise RuntimeError(
            f"could not get torchvision's official {arch} ImageNet weights ({type(exc).__name__}: {exc}); "
            f"offline, pass a local state_dict file instead, e.g. --weights {LOCAL_WEIGHTS_HINT}"
        ) from exc


def local_weights(path: str | Path) -> dict:
    """A backbone state_dict from a file, loaded without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path} (use 'imagenet', 'none' or a path to a state_dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"weights file {path} is not a loadable weights-only state_dict: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state_dict of tensors")
    return state


def load_backbone(model: nn.Module, arch: str, state: dict) -> None:
    """Load every backbone tensor from ``state`` (its head is ignored); missing or mis-shaped keys are an error."""
    prefix = head_prefix(arch)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    given = {k: v for k, v in state.items() if not k.startswith(prefix)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    bad_shape = sorted(k for k in set(own) & set(given) if own[k].shape != given[k].shape)
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"weights do not fit torchvision's {arch}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(bad_shape)} of wrong shape "
            f"(e.g. {bad_shape[:3]})"
        )
    model.load_state_dict(given, strict=False)


def blocks(model: nn.Module, arch: str) -> list[nn.Module]:
    """The backbone as an ordered list of blocks; stage 2 unfreezes the last K of them."""
    _check_arch(arch)
    if arch == "mobilenet_v2":
        return list(model.features)
    stem = nn.ModuleList([model.conv1, model.bn1])
    return [stem, model.layer1, model.layer2, model.layer3, model.layer4]


def head(model: nn.Module, arch: str) -> nn.Module:
    """The classification head (new for our classes)."""
    _check_arch(arch)
    return model.classifier if arch == "mobilenet_v2" else model.fc


def set_trainable(model: nn.Module, arch: str, last_blocks: int) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the head and the last ``last_blocks`` blocks; returns the trainable params."""
    all_blocks = blocks(model, arch)
    if not 0 <= last_blocks <= len(all_blocks):
        raise ValueError(f"last_blocks {last_blocks} must be in 0..{len(all_blocks)} for {arch}")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [head(model, arch)] + (all_blocks[len(all_blocks) - last_blocks:] if last_blocks else [])
    for m in trainable:
        for p in m.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model: nn.Module) -> None:
    """model.train(), but BatchNorm layers whose parameters are frozen stay in eval (their statistics do not move)."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.eval()


def split_at(model: nn.Module, arch: str, last_blocks: int) -> tuple[nn.Module, nn.Module]:
    """(prefix, suffix): prefix = the frozen blocks, suffix = last blocks + pooling + head; suffix(prefix(x)) == model(x)."""
    all_blocks = blocks(model, arch)
    cut = len(all_blocks) - last_blocks
    if arch == "mobilenet_v2":
        prefix = model.features[:cut]
        suffix = nn.Sequential(model.features[cut:], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), model.classifier)
        return prefix, suffix
    layers = [nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool), model.layer1, model.layer2,
              model.layer3, model.layer4]
    prefix = nn.Sequential(*layers[:cut])
    suffix = nn.Sequential(*layers[cut:], model.avgpool, nn.Flatten(1), model.fc)
    return prefix, suffix


@torch.no_grad()
def predict_probs(model: torch.nn.Module, images: Sequence[np.ndarray], spec: dict, batch_size: int = 16) -> np.ndarray:
    """Class probabilities (N x C, float64) of decoded RGB images, with the checkpoint's preprocessing."""
    model.eval()
    s = int(spec["size"])
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        x = np.empty((len(chunk), 3, s, s), dtype=np.float32)
        for i, im in enumerate(chunk):
            preprocess(im, spec, out=x[i])
        out.append(model(torch.from_numpy(x)).numpy())
    if not out:
        return np.zeros((0, 0))
    return softmax(np.concatenate(out))


def pooled_from_model(model, arch: str, images: Sequence[np.ndarray], spec: dict, batch_size: int = 32) -> tuple:
    """(pooled last-block features N x K, class probabilities N x C) of decoded images through a torch ``model``
    (training and adaptation hold the network, not a handler)."""
    pooled, probs = [], []
    model.eval()
    with torch.inference_mode(), last_block_output(model, arch) as kept:
        for start in range(0, len(images), batch_size):
            x = np.stack([preprocess(im, spec) for im in images[start:start + batch_size]]).astype(np.float32)
            probs.append(softmax(model(torch.from_numpy(x)).numpy()))
            pooled.append(kept["features"].mean(axis=(2, 3)))
    return np.concatenate(pooled), np.concatenate(probs)
