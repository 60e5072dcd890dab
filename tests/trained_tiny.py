"""A small checkpoint with *trained* weights for the Grad-CAM and handler tests (no download, a few seconds).

Random weights give near-constant logits and degenerate heat maps, which would let a wrong CAM pass a
comparison. Here the last blocks and the head of a randomly initialised network are trained with SGD on
synthetic castings (96 px) until they separate OK from DEFECT; the frozen prefix's outputs are computed once.
The checkpoint is written by the real save function. One model per (arch, size) per test session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from inspectkit.inference.checkpoint import make_checkpoint, save_checkpoint
from inspectkit.model import build_model, split_at
from inspectkit.preprocess import default_spec, preprocess
from tests.support import synthetic_casting

_CACHE: dict = {}
#: How many of the last blocks are trained (the rest stay at their random initialisation).
LAST_BLOCKS = {"mobilenet_v2": 2, "resnet18": 1}
#: The tests' model of each backbone: train_tiny's options (ResNet-18 smaller, so it trains in seconds too).
ARCHS = {"mobilenet_v2": dict(size=96), "resnet18": dict(size=64, n=16, steps=10)}


def train_tiny(folder: Path, arch: str = "mobilenet_v2", size: int = 96, steps: int = 60, n: int = 64,
               seed: int = 0) -> Path:
    """Train (once per session) and save a binary checkpoint; returns its path. Accuracy is in its metrics."""
    key = (arch, size, steps, n, seed)
    if key in _CACHE:
        return _CACHE[key]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the tests' one_torch_thread fixtures: far faster on a busy 2-core machine
    try:
        return _train(folder, arch, size, steps, n, seed, key)
    finally:
        torch.set_num_threads(threads)


def _train(folder, arch, size, steps, n, seed, key) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = default_spec(size)
    labels = np.array([i % 2 for i in range(n)])  # 0 = def_front (defect), 1 = ok_front
    imgs = [synthetic_casting(rng, defect=bool(y == 0), size=(size, size)) for y in labels]
    x = torch.from_numpy(np.stack([preprocess(im, spec) for im in imgs]))
    y = torch.from_numpy(labels)
    model = build_model(arch, 2, weights=None)
    prefix, suffix = split_at(model, arch, LAST_BLOCKS[arch])
    # BatchNorm statistics of a random network are not those of its activations: recalibrate them on the data
    # (one pass in train mode with a cumulative average = this batch's statistics), so features are well scaled.
    with torch.no_grad():
        for m in prefix.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        prefix.train()
        prefix(x)
        prefix.eval()
        cached = prefix(x)
    opt = torch.optim.SGD(suffix.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    suffix.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = torch.randint(0, n, (16,), generator=g)
        opt.zero_grad()
        loss = loss_fn(suffix(cached[b]), y[b])
        loss.backward()
        opt.step()
    # a few passes in train mode without updates let BatchNorm's running statistics settle on the data
    with torch.no_grad():
        for _ in range(5):
            suffix(cached)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1  # back to the default (not saved, but keep the module as build_model made it)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    ckpt = make_checkpoint(model, arch, ["def_front", "ok_front"], 0, spec, 0.5,
                           metrics={"train_accuracy": acc}, train_config={"seed": seed, "steps": steps},
                           data={"synthetic": n})
    path = Path(folder) / f"trained_{arch}_{size}.pt"
    save_checkpoint(ckpt, path)
    _CACHE[key] = path
    return path


def train_archs(folder: Path) -> dict[str, Path]:
    """:func:`train_tiny` for every backbone of :data:`ARCHS` (cached per session): arch -> checkpoint path."""
    return {arch: train_tiny(folder, arch, **kw) for arch, kw in ARCHS.items()}
