"""Two-stage transfer learning on cached backbone features, fast enough for a 2-core CPU.

Stage 1 trains a new head on the frozen backbone; stage 2 unfreezes the last K blocks at a lower learning
rate. Neither stage changes the frozen prefix of the network, so its output is computed once per image
view (view 0 clean, the others augmented) and cached; every epoch then runs only the last K blocks.
Frozen BatchNorm layers stay in eval mode, so their statistics never move.

Where the data set marks its defects (NEU-DET boxes, MVTec AD masks) and ``region_weight`` > 0, stage 2 also
teaches the heat map where the defect is: the class activation map of the true class, ReLU(sum_k w_ck A_k) on
the last block's maps A (what Grad-CAM computes for a global-pool + linear head), is penalised for the share of
its mass that falls outside the defect region (boxes moved with every augmented view). The penalty acts on the
same maps the logits are pooled from, so the served heat map stays a faithful account of the prediction.

Why one module of this length: data preparation, the feature cache, the losses, one stage (``_fit``) and both
stages (``fit_stages``) are one recipe that shares the cached tensors, the config and the seeding; split, one
change to the recipe would touch several files. ``adaptation.py`` reuses ``fit_stages`` as it is.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from inspectkit.data import folders as D
from inspectkit.heatmap.scale import calibrate
from inspectkit.inference.checkpoint import make_checkpoint
from inspectkit.inference.fast import save_with_graph
from inspectkit.labels import check_display_names
from inspectkit.metrics import choose_threshold, classification_report, fbeta, selection_loss, softmax, threshold_sweep
from inspectkit.model import build_model, head, predict_probs, set_trainable, split_at, train_mode
from inspectkit.preprocess import TURN_DEGREES, augment, default_spec, preprocess
from inspectkit.review import review_band

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in the checkpoint."""

    data: str = "../shared/data/casting"
    arch: str = "mobilenet_v2"
    weights: str = "imagenet"
    defect_class: str | None = None
    size: int = 224
    val_fraction: float = 0.15
    test_fraction: float = 0.2  # only for a folder-per-class set without its own test/ folder
    twin_threshold: float = D.TWIN_SIMILARITY
    max_group_fraction: float = 0.02  # larger near-duplicate groups always stay in train
    views: int = 4  # cached views per train image: the clean one and views-1 augmented ones
    aug_strength: float = 1.0
    aug_rotation: float = TURN_DEGREES  # rotation range of the augmented views in degrees at strength 1 (180: any turn)
    last_blocks: int = 3
    stage1_epochs: int = 30
    stage2_epochs: int = 10
    lr1: float = 3e-3
    lr2: float = 3e-4
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 4
    ema_epochs: float = 0.0  # >0: validate and keep an exponential moving average of the weights, horizon in epochs
    members: int = 1  # >1: that many stage-2 runs from the stage-1 model, their weights averaged (a model soup)
    target_recall: float = 0.995
    region_weight: float = 0.0  # >0: stage 2 also penalises heat-map mass outside the defect boxes/masks
    # >0: both stages add anchor/2 x the squared distance of the trained weights from where the stage started
    # (L2-SP, Li et al. 2018): adaptation stays near the parent, which is what keeps the parent's line
    anchor: float = 0.0
    # 'best': each stage keeps its best epoch on validation and stops early; 'last': each stage runs all its epochs
    # and keeps the last (averaged) weights, validation only watches (a validation part of a few dozen photos
    # chose noise: see docs/research/adaptation.md)
    keep: str = "best"
    seed: int = 0
    split_seed: int | None = None  # seed of the validation (and test) split; None: ``seed``. Set it to compare
    # runs of several seeds on one validation split
    threads: int = 0  # 0: torch's default
    limit: int = 0  # >0: use at most this many images per class (smoke runs and tests)
    # other photo sessions or lines (folder-per-class, the same classes) joined to train and validation: each is
    # split on its own by near-duplicate groups, so every line has its own validation part; none gives a test split
    extra_data: list = field(default_factory=list)
    display_names: dict = field(default_factory=dict)  # class name -> human label; missing ones derived (labels.py)
    out: str = "final_best_model.pt"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if self.anchor < 0:
            raise ValueError(f"anchor must be >= 0 (0: no pull towards the starting weights), got {self.anchor}")
        if not 0 <= self.aug_rotation <= 180:
            raise ValueError(f"aug_rotation must be in 0..180 degrees, got {self.aug_rotation}")


def check_keep(keep: str) -> None:
    """ValueError unless ``keep`` is a known way to pick a stage's weights ('last' or 'best')."""
    if keep not in ("last", "best"):
        raise ValueError(f"keep must be 'last' or 'best', got {keep!r}")


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _limit(ds: D.Dataset, n: int, seed: int) -> D.Dataset:
    if n <= 0:
        return ds
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(len(ds.class_names)):
        idx = np.nonzero(ds.labels == c)[0]
        keep += sorted(rng.permutation(idx)[:n].tolist())
    return ds.subset(sorted(keep))


def prepare_data(cfg: TrainConfig) -> dict:
    """Decode the train pool, group near-duplicates, carve a validation split (and a test split if needed)."""
    full = D.load_folder(cfg.data, "train", cfg.defect_class)
    full = _limit(full, cfg.limit, cfg.seed)
    t0 = time.perf_counter()
    full, images = D.decode_all(full)
    desc = D.descriptors(images)
    hashes = D.file_hashes(full.paths)
    groups = D.duplicate_groups(desc, hashes, cfg.twin_threshold)
    log.info("decoded %d images, %d duplicate groups (largest %d) in %.1fs", len(full), groups.max() + 1,
             np.bincount(groups).max(), time.perf_counter() - t0)
    has_test = D.is_split_layout(Path(cfg.data)) and (Path(cfg.data) / "test").is_dir()
    test_idx = np.zeros(0, dtype=np.int64)
    pool_idx = np.arange(len(full))
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    if not has_test:
        pool_idx, test_idx = D.group_split(full.labels, groups, cfg.test_fraction, split_seed + 1,
                                           cfg.max_group_fraction)
    tr, va = D.group_split(full.labels[pool_idx], groups[pool_idx], cfg.val_fraction, split_seed,
                           cfg.max_group_fraction)
    train_idx, val_idx = pool_idx[tr], pool_idx[va]
    regions = load_regions(full, cfg.data, images) if cfg.region_weight > 0 else None
    prep = {"full": full, "images": images, "groups": groups, "train_idx": train_idx, "val_idx": val_idx,
            "test_idx": test_idx, "has_test_folder": has_test, "regions": regions,
            "lines": [{"root": str(cfg.data), "n": len(full), "train_idx": train_idx, "val_idx": val_idx}]}
    for k, root in enumerate(cfg.extra_data):
        if regions is not None:
            raise ValueError("region_weight > 0 cannot be combined with extra_data (the extra lines carry no regions)")
        _join_line(prep, root, cfg, desc, hashes, line=k + 1)
    return prep


def _join_line(prep: dict, root: str, cfg: TrainConfig, desc: np.ndarray, hashes: list[str], line: int) -> None:
    """Append another line's photos (folder-per-class, the pool's classes) to ``prep``, split on their own.

    A photo with an exact or near twin anywhere in the first line's pool stays in train, so no twin of a train
    photo reaches this line's validation part.
    """
    full = prep["full"]
    defect = full.class_names[full.defect_index] if full.defect_index is not None else None
    ds = D.load_folder(root, None, defect, full.class_names)
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    ds = _limit(ds, cfg.limit, split_seed + line)
    ds, imgs = D.decode_all(ds)
    d2, h2 = D.descriptors(imgs), D.file_hashes(ds.paths)
    twins = D.find_twins(d2, h2, desc, hashes, cfg.twin_threshold)
    has_twin = np.array([t["kind"] != "none" for t in twins], dtype=bool)
    groups = D.duplicate_groups(d2, h2, cfg.twin_threshold)
    free = np.nonzero(~has_twin)[0]
    tr, va = D.group_split(ds.labels[free], groups[free], cfg.val_fraction, split_seed + line, cfg.max_group_fraction)
    train_local = np.sort(np.concatenate([free[tr], np.nonzero(has_twin)[0]]))
    val_local = free[va]
    off = len(full)
    log.info("line %d (%s): %d photos, %d with a twin in line 0 kept in train, %d validation", line, root, len(ds),
             int(has_twin.sum()), len(val_local))
    prep["full"] = D.concat([full, ds])
    prep["images"] = prep["images"] + imgs
    prep["groups"] = np.concatenate([prep["groups"], groups + prep["groups"].max() + 1])
    prep["train_idx"] = np.concatenate([prep["train_idx"], train_local + off])
    prep["val_idx"] = np.concatenate([prep["val_idx"], val_local + off])
    prep["lines"].append({"root": str(root), "n": len(ds), "train_idx": train_local + off, "val_idx": val_local + off,
                          "twins_in_line0": int(has_twin.sum())})


def recorded_validation_hash(ckpt: dict) -> str | None:
    """The hash of the validation file list a checkpoint records (``data.split.validation.files_sha256``)."""
    return ((ckpt.get("data") or {}).get("split") or {}).get("validation", {}).get("files_sha256")


def validation_split(ckpt: dict, data_root: str | Path) -> D.Dataset:
    """The validation images a checkpoint was selected on, re-derived from its train config (the split is seeded).

    For choices between trained models (e.g. localisation on validation) without touching the test split.
    ValueError when the data no longer give the recorded validation files.
    """
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in (ckpt.get("train_config") or {}).items() if k in known})
    cfg = replace(cfg, data=str(data_root), region_weight=0.0)  # the split does not depend on the regions
    prep = prepare_data(cfg)
    val = prep["full"].subset(prep["val_idx"])
    want = recorded_validation_hash(ckpt)
    got = val.fingerprint()["files_sha256"]
    if want != got:
        raise ValueError(f"the validation split re-derived from {data_root} (files hash {got[:12]}) is not the one "
                         f"recorded in the checkpoint ({str(want)[:12]}): the data or the split settings differ")
    return val


def validation_threshold(labels: np.ndarray, probs: np.ndarray, names: list[str], defect_index: int | None,
                         target_recall: float) -> tuple[float | None, dict]:
    """(threshold, metrics) from validation probabilities: binary, the threshold of
    :func:`inspectkit.metrics.choose_threshold` with its choice and sweep; then the validation report at it."""
    threshold, out = None, {}
    if defect_index is not None:
        is_def = labels == defect_index
        out["threshold_choice"] = choose_threshold(is_def, probs[:, defect_index], target_recall)
        threshold = out["threshold_choice"]["threshold"]
        out["validation_sweep"] = threshold_sweep(is_def, probs[:, defect_index])
    out["validation"] = classification_report(labels, probs, names, defect_index, threshold)
    return threshold, out


def load_regions(ds: D.Dataset, root: str | Path, images: list[np.ndarray]) -> list[np.ndarray | None]:
    """The defect-region mask (H x W bool) of each image, None where an image has none; for ``region_weight``.

    ValueError when the layout carries no regions at all (region supervision needs NEU-DET or MVTec AD).
    """
    from inspectkit.data.layouts import region_mask

    masks = [region_mask(p, root, im.shape[:2]) for p, im in zip(ds.paths, images)]
    n = sum(m is not None for m in masks)
    if n == 0:
        raise ValueError(f"region_weight > 0 needs defect regions, but none of the {len(ds)} images of {root} "
                         "has a box or mask; use region_weight 0")
    log.info("defect regions for %d of %d images", n, len(masks))
    return masks


def _stack(imgs, spec) -> torch.Tensor:
    s = int(spec["size"])
    out = np.empty((len(imgs), 3, s, s), dtype=np.float32)
    for i, im in enumerate(imgs):
        preprocess(im, spec, out=out[i])
    return torch.from_numpy(out)


@torch.no_grad()
def cache_prefix(prefix: nn.Module, images: list[np.ndarray], spec: dict, views: int, strength: float,
                 seed: int, batch_size: int, desc: str, masks: list | None = None, rotation: float = TURN_DEGREES):
    """Frozen-prefix outputs (float16) for each image and view: N x V x C x h x w. View 0 is the clean image.

    With ``masks`` (one H x W region or None per image) it returns ``(features, regions)``: regions N x V x h x w
    (float16) hold the share of each feature cell covered by the defect region in that view, -1 where the image
    has no region. ``rotation``: the augmented views' rotation range in degrees (``augment``'s ``max_angle``).
    ``prefix`` is left in its own memory layout.
    """
    prefix.eval().to(memory_format=torch.channels_last)  # measured: ~30% faster than NCHW on this CPU
    try:
        return _cache(prefix, images, spec, views, strength, seed, batch_size, desc, masks, rotation)
    finally:
        # back to the layout a loaded checkpoint has: channels_last takes other kernels, which change the last
        # digits of every later score of the whole model
        prefix.to(memory_format=torch.contiguous_format)


def _cache(prefix, images, spec, views, strength, seed, batch_size, desc, masks, rotation):
    rng = np.random.default_rng(seed)
    jobs = [(i, v) for i in range(len(images)) for v in range(views)]
    seeds = rng.integers(0, 2 ** 31, size=len(jobs))

    def view(k, i, v):
        m = None if masks is None else masks[i]
        if v == 0:
            return images[i], m
        if m is None:
            return augment(images[i], np.random.default_rng(seeds[k]), strength, max_angle=rotation), None
        return augment(images[i], np.random.default_rng(seeds[k]), strength, mask=m, max_angle=rotation)

    def make(batch):
        pairs = [view(k, i, v) for k, (i, v) in batch]
        return _stack([p[0] for p in pairs], spec), [p[1] for p in pairs]

    numbered = list(enumerate(jobs))
    batches = [numbered[s:s + batch_size] for s in range(0, len(numbered), batch_size)]
    out = regions = None
    with ThreadPoolExecutor(1) as pool, tqdm(total=len(jobs), desc=desc, unit="img", mininterval=5) as bar:
        fut = pool.submit(make, batches[0]) if batches else None
        for b, batch in enumerate(batches):
            x, ms = fut.result()
            if b + 1 < len(batches):
                fut = pool.submit(make, batches[b + 1])  # augment the next batch while this one runs
            y = prefix(x.contiguous(memory_format=torch.channels_last)).to(torch.float16)
            if out is None:
                out = torch.empty((len(images), views) + tuple(y.shape[1:]), dtype=torch.float16)
                if masks is not None:
                    regions = torch.full((len(images), views) + tuple(y.shape[2:]), -1.0, dtype=torch.float16)
            for (_, (i, v)), row, m in zip(batch, y, ms):
                out[i, v] = row
                if m is not None:
                    regions[i, v] = torch.from_numpy(region_grid(m, tuple(y.shape[2:])))
            bar.update(len(batch))
    return out if masks is None else (out, regions)


def region_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Share of each cell of an h x w feature grid covered by a region mask (the input is stretched to a square,
    so the grid spans the whole image): float32 in [0, 1]."""
    m = np.asarray(mask, dtype=np.float32)
    return cv2.resize(m, (grid[1], grid[0]), interpolation=cv2.INTER_AREA).clip(0.0, 1.0)


def region_loss(fmap: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Mean share of the true class's activation map lying outside the defect region, over images with a region
    (an all-zero map counts as wholly outside).

    ``fmap`` B x K x h x w (the last block's output), ``weight`` C x K (the linear head), ``regions`` B x h' x w'
    (cell coverage in [0, 1], negative for an image without a region; pooled to h x w when the grids differ).
    The map is ReLU(sum_k w_ck A_k): Grad-CAM's map for a global-average-pool + linear head, up to scale.
    """
    has = regions[:, 0, 0] >= 0
    if not bool(has.any()):
        return fmap.new_zeros(())
    r = regions[has].float()
    if r.shape[-2:] != fmap.shape[-2:]:
        r = nn.functional.adaptive_avg_pool2d(r[:, None], fmap.shape[-2:])[:, 0]
    cam = torch.relu(torch.einsum("bkhw,bk->bhw", fmap[has], weight[labels[has]]))
    # 1 - inside share, not the outside share: an all-zero map points nowhere and must not score as "all inside"
    inside = (cam * r).sum((1, 2)) / (cam.sum((1, 2)) + 1e-6)
    return (1.0 - inside).mean()


def _class_weights(labels: np.ndarray, n: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = counts.sum() / (n * np.maximum(counts, 1))
    return torch.tensor(w, dtype=torch.float32)


def _loss_fn(labels: np.ndarray, n: int) -> nn.CrossEntropyLoss:
    """Cross-entropy weighted by the inverse class frequencies of the train labels."""
    return nn.CrossEntropyLoss(weight=_class_weights(labels, n))


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_weight: torch.Tensor,
                           sample_weight: torch.Tensor) -> torch.Tensor:
    """The mean of ``nn.CrossEntropyLoss(weight=class_weight)`` with each image's term also scaled by its own
    weight: equal weights give exactly that loss, and a weight of 0 drops the image."""
    per = nn.functional.cross_entropy(logits, labels, weight=class_weight, reduction="none")
    return (per * sample_weight).sum() / (class_weight[labels] * sample_weight).sum()


@torch.no_grad()
def _logits(module: nn.Module, feats: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    module.eval()
    return torch.cat([module(feats[i:i + batch_size].float()) for i in range(0, len(feats), batch_size)])


def _maps_and_head(suffix: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """(body, tail) of a stage-2 suffix (see :func:`inspectkit.model.split_at`): the last blocks, whose output maps
    the region loss reads, and pool + flatten + head, which turn them into logits. They share the modules."""
    parts = list(suffix.children())
    return nn.Sequential(*parts[:-3]), nn.Sequential(*parts[-3:])


@torch.no_grad()
def _logits_and_region(body: nn.Module, tail: nn.Module, linear: nn.Linear, feats: torch.Tensor,
                       labels: np.ndarray, regions: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """Logits and the mean region loss (images with a region weighted equally) of the stage-2 network."""
    body.eval(), tail.eval()
    y = torch.from_numpy(labels)
    logits, total, n = [], 0.0, 0
    for i in range(0, len(feats), batch_size):
        fmap = body(feats[i:i + batch_size].float())
        logits.append(tail(fmap))
        r = regions[i:i + batch_size]
        k = int((r[:, 0, 0] >= 0).sum())
        if k:
            total += float(region_loss(fmap, linear.weight, y[i:i + batch_size], r)) * k
            n += k
    return torch.cat(logits), (total / n if n else 0.0)


def _val_score(logits: torch.Tensor, labels: np.ndarray, defect_index: int | None, loss_fn,
               region: float | None = None, region_weight: float = 0.0) -> dict:
    loss = float(loss_fn(logits, torch.from_numpy(labels)))
    probs = softmax(logits.numpy())
    acc = float((probs.argmax(1) == labels).mean())
    extra = {}
    if defect_index is not None:
        # Binary: the defect-weighted log-loss (a missed defect costs beta^2 = 4 false alarms, as in F2). F2 at a
        # fixed 0.5 moved in steps of one image on the near-perfect validation split and ignored the threshold
        # chosen afterwards: it threw away a stage 2 whose validation loss was a third of stage 1's.
        score = -selection_loss(labels, probs, defect_index)
        extra["val_f2"] = fbeta(labels == defect_index, probs[:, defect_index] >= 0.5, beta=2.0)
    else:
        score = acc
    out = {"val_loss": loss, "val_acc": acc, "val_score": score, **extra}
    if region is not None:  # ties in the score are then broken by classification and localisation together
        out["val_region"] = region
        out["val_loss"] = loss + region_weight * region
    return out


def _better(a: dict, b: dict | None) -> bool:
    """Higher validation score first (binary: minus the defect-weighted log-loss; multi-class: accuracy), then
    lower validation loss."""
    if b is None:
        return True
    if a["val_score"] != b["val_score"]:
        return a["val_score"] > b["val_score"]
    return a["val_loss"] < b["val_loss"]


def _ema_update(decay: float):
    """AveragedModel's multi_avg_fn for an EMA that leaves integer buffers (BatchNorm's num_batches_tracked) exact:
    torch's own EMA rounds them through a float product, which can move a frozen layer's count by one."""
    lerp = get_ema_multi_avg_fn(decay)

    def update(ema_params, params, n_averaged):
        if torch.is_floating_point(ema_params[0]):
            lerp(ema_params, params, n_averaged)  # lerp leaves a frozen weight bit-identical
        else:
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return update


def _validate(net: nn.Module, val_feats: torch.Tensor, val_labels: np.ndarray, defect_index: int | None, loss_fn,
              cfg: TrainConfig, val_regions: torch.Tensor | None = None) -> dict:
    """Validation scores of a stage's module (see :func:`_val_score`); with region losses where regions are given."""
    if val_regions is None:
        return _val_score(_logits(net, val_feats), val_labels, defect_index, loss_fn)
    linear = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    lg, reg = _logits_and_region(*_maps_and_head(net), linear, val_feats, val_labels, val_regions)
    return _val_score(lg, val_labels, defect_index, loss_fn, reg, cfg.region_weight)


def average_states(states: list[dict]) -> dict:
    """The uniform average of state dicts of one architecture (a model soup). Entries equal in all of them (frozen
    layers) are copied, not averaged, so they stay bit-identical; integer buffers come from the first."""
    if not states:
        raise ValueError("average_states needs at least one state dict")
    out = {}
    for k, v in states[0].items():
        same = all(torch.equal(v, s[k]) for s in states[1:])
        out[k] = v.clone() if same or not v.is_floating_point() else torch.stack([s[k] for s in states]).mean(0)
    return out


def _fit(module: nn.Module, set_mode, params, lr: float, epochs: int, train_feats: torch.Tensor,
         train_labels: np.ndarray, val_feats: torch.Tensor, val_labels: np.ndarray, cfg: TrainConfig,
         defect_index: int | None, n_classes: int, stage: str, history: list,
         regions: tuple[torch.Tensor, torch.Tensor] | None = None, linear: nn.Linear | None = None,
         member: int = 0, keep_start: bool = False, tick=None, sample_weight: np.ndarray | None = None) -> dict:
    """One stage: AdamW + cosine decay, a random cached view per image each epoch, early stopping, best kept.

    With ``cfg.ema_epochs`` > 0 the validated (and kept) weights are an exponential moving average of the trained
    ones over about that many epochs, as in timm's and torchvision's --model-ema: the validation split is small,
    and single-epoch weights made its score jump 2-5x between epochs.

    ``regions`` (train N x V x h x w, validation M x h x w; see :func:`cache_prefix`) with the head's ``linear``
    layer add ``cfg.region_weight`` x :func:`region_loss`; ``module`` must then end in pool, flatten, head.
    ``cfg.anchor`` > 0 adds the L2-SP penalty towards the stage's starting weights (logged in ``train_loss``).
    ``sample_weight`` (one per train image) scales each image's share of the class-weighted loss.
    """
    # member k of a stage-2 soup sees its own data order and views; member 0 is the single run
    g = torch.Generator().manual_seed(cfg.seed + (1 if stage == "stage1" else 2) + 1000 * member)
    loss_fn = _loss_fn(train_labels, n_classes)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    n, views = train_feats.shape[0], train_feats.shape[1]
    steps = max(1, epochs * math.ceil(n / cfg.batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    y_all = torch.from_numpy(train_labels)
    sw = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float32)

    def data_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if sw is None:
            return loss_fn(logits, y_all[idx])
        return weighted_cross_entropy(logits, y_all[idx], loss_fn.weight, sw[idx])

    start = [p.detach().clone() for p in params] if cfg.anchor > 0 else None
    if regions is not None:
        body, tail = _maps_and_head(module)
    ema, net = None, module
    if cfg.ema_epochs > 0:
        decay = 1.0 - 1.0 / max(1.0, cfg.ema_epochs * math.ceil(n / cfg.batch_size))
        ema = AveragedModel(module, multi_avg_fn=_ema_update(decay), use_buffers=True)
        net = ema.module

    def validate() -> dict:
        return _validate(net, val_feats, val_labels, defect_index, loss_fn, cfg, None if regions is None else regions[1])

    # the starting point competes too: stage 2 is only kept where it beats the stage-1 head on validation (and an
    # adapted model's head only where it beats the parent's)
    last = cfg.keep == "last"  # every epoch runs and the final weights are kept: no copy per epoch, no early stop
    best = None if last or (stage == "stage1" and not keep_start) else validate()
    best_state, bad = None if last else copy.deepcopy(net.state_dict()), 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        set_mode()
        order = torch.randperm(n, generator=g)
        view = torch.randint(0, views, (n,), generator=g)
        total, seen = 0.0, 0
        for s in range(0, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            x = train_feats[idx, view[idx]].float()
            if regions is None:
                loss = data_loss(module(x), idx)
            else:
                fmap = body(x)
                loss = data_loss(tail(fmap), idx) + cfg.region_weight * region_loss(
                    fmap, linear.weight, y_all[idx], regions[0][idx, view[idx]])
            if start is not None:
                loss = loss + 0.5 * cfg.anchor * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(module)
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        val = validate()
        row = {"stage": stage, "member": member, "epoch": epoch, "train_loss": total / seen, **val,
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2)}
        history.append(row)
        if tick is not None:
            tick()
        improved = last or _better(val, best)
        log.info("%s epoch %d/%d train_loss %.4f val_loss %.4f val_acc %.4f val_score %.4f%s %.1fs%s", stage, epoch,
                 epochs, row["train_loss"], val["val_loss"], val["val_acc"], val["val_score"],
                 f" val_region {val['val_region']:.4f}" if "val_region" in val else "", row["seconds"],
                 " *" if improved else "")
        if improved:
            best, bad = val, 0
            if not last:
                best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                log.info("%s: early stop after %d epochs without improvement", stage, bad)
                break
    module.load_state_dict(net.state_dict() if last else best_state)
    return best


def fit_stages(model: nn.Module, cfg: TrainConfig, train_images: list[np.ndarray], y_tr: np.ndarray,
               val_images: list[np.ndarray], y_va: np.ndarray, names: list[str], defect_index: int | None,
               spec: dict, masks: tuple[list, list] | None = None, keep_start: bool = False,
               progress=None, sample_weight: np.ndarray | None = None) -> tuple[dict, list]:
    """Both stages on cached prefix features: the machinery shared by training and adaptation.

    ``model`` is trained in place (left in eval mode) and its last ``cfg.last_blocks`` blocks and head are what
    changes. ``masks`` (train, validation: one region mask or None per image) turns on the region loss.
    ``keep_start``: the model's starting head competes in stage 1 too, so adapting a good model never keeps a
    worse head (training from ImageNet has a random head, which must always be replaced). ``sample_weight`` (one
    per train image) scales each image's share of the loss in both stages. ``progress(fraction, text)`` is called
    as the work advances (for a UI). Returns (metrics with stage bests and timing, history).
    """
    say = progress or (lambda f, t: None)
    set_trainable(model, cfg.arch, cfg.last_blocks)
    prefix, suffix = split_at(model, cfg.arch, cfg.last_blocks)
    t0 = time.perf_counter()
    say(0.0, "caching features")
    # batch 16 is the fastest frozen-prefix throughput measured on the 2-core CPU (64 is 50% slower)
    train_feats = cache_prefix(prefix, train_images, spec, cfg.views, cfg.aug_strength, cfg.seed,
                               16, "cache train", None if masks is None else masks[0], cfg.aug_rotation)
    val_feats = cache_prefix(prefix, val_images, spec, 1, 0.0, cfg.seed, 16, "cache val",
                             None if masks is None else masks[1])
    regions = None
    if masks is not None:
        (train_feats, train_regions), (val_feats, val_regions) = train_feats, val_feats
        regions = (train_regions, val_regions[:, 0])
    val_feats = val_feats[:, 0]
    cache_s = time.perf_counter() - t0
    history: list[dict] = []
    epochs_total = cfg.stage1_epochs + cfg.stage2_epochs * cfg.members

    def tick():
        say(0.3 + 0.7 * min(1.0, len(history) / max(1, epochs_total)), f"epoch {len(history)} of at most {epochs_total}")

    say(0.3, "stage 1")
    # Stage 1: the head alone on pooled features of the frozen network (pooled once, so epochs take a second).
    t1 = time.perf_counter()
    body = nn.Sequential(*list(suffix.children())[:-1]).eval()
    with torch.no_grad():
        pooled_tr = torch.stack([_logits(body, train_feats[:, v]) for v in range(cfg.views)], dim=1)
        pooled_va = _logits(body, val_feats)
    hd = head(model, cfg.arch)
    best1 = _fit(hd, hd.train, list(hd.parameters()), cfg.lr1, cfg.stage1_epochs, pooled_tr, y_tr, pooled_va,
                 y_va, cfg, defect_index, len(names), "stage1", history, keep_start=keep_start, tick=tick,
                 sample_weight=sample_weight)
    stage1_s = time.perf_counter() - t1

    # Stage 2: the last K blocks and the head at a lower learning rate; frozen BatchNorm stays in eval.
    t2 = time.perf_counter()
    params = set_trainable(model, cfg.arch, cfg.last_blocks)

    def mode():
        train_mode(model)

    linear = [m for m in hd.modules() if isinstance(m, nn.Linear)][-1]
    start = copy.deepcopy(suffix.state_dict())
    states, member_best = [], []
    for k in range(cfg.members):
        suffix.load_state_dict(start)
        member_best.append(_fit(suffix, mode, params, cfg.lr2, cfg.stage2_epochs, train_feats, y_tr, val_feats, y_va,
                                cfg, defect_index, len(names), "stage2", history, regions, linear, member=k,
                                tick=tick, sample_weight=sample_weight))
        states.append(copy.deepcopy(suffix.state_dict()))
    best2 = member_best[0]
    if len(states) > 1:
        # Members start from the same stage-1 model and differ only in data order and augmented views, so their
        # weights stay in one basin and their average is a single network that votes like an ensemble
        # (Wortsman et al. 2022, model soups): no extra inference cost, and less of any one run's luck.
        suffix.load_state_dict(average_states(states))
        best2 = _validate(suffix, val_feats, y_va, defect_index, _loss_fn(y_tr, len(names)), cfg,
                          None if regions is None else regions[1])
        log.info("soup of %d stage-2 members: val_loss %.4f val_acc %.4f val_score %.4f (members: %s)", len(states),
                 best2["val_loss"], best2["val_acc"], best2["val_score"],
                 ", ".join(f"{b['val_score']:.4f}" for b in member_best))
    stage2_s = time.perf_counter() - t2
    model.eval()

    metrics: dict = {"stage1_best": best1, "stage2_best": best2}
    if len(member_best) > 1:
        metrics["stage2_members"] = member_best
    if regions is not None:
        _, reg = _logits_and_region(*_maps_and_head(suffix), linear, val_feats, y_va, regions[1])
        metrics["validation_region_energy"] = 1.0 - reg  # share of the true class's map inside the region
    metrics["timing"] = {"cache_s": round(cache_s, 1), "stage1_s": round(stage1_s, 1), "stage2_s": round(stage2_s, 1)}
    say(1.0, "trained")
    return metrics, history


def train(cfg: TrainConfig) -> dict:
    """Run both stages, pick the threshold on validation, save the checkpoint; returns it."""
    if cfg.members < 1:
        raise ValueError(f"members must be at least 1 (one stage-2 run), got {cfg.members}")
    if cfg.ema_epochs < 0:
        raise ValueError(f"ema_epochs must be >= 0 (0: no weight averaging), got {cfg.ema_epochs}")
    t_start = time.perf_counter()
    _seed_all(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    prep = prepare_data(cfg)
    full, images = prep["full"], prep["images"]
    tr, va = prep["train_idx"], prep["val_idx"]
    names, defect_index = full.class_names, full.defect_index
    shown = check_display_names(cfg.display_names or {}, names, "display_names")  # fail before hours of training
    spec = default_spec(cfg.size)
    model = build_model(cfg.arch, len(names), cfg.weights)
    masks = prep["regions"]
    metrics, history = fit_stages(
        model, cfg, [images[i] for i in tr], full.labels[tr], [images[i] for i in va], full.labels[va], names,
        defect_index, spec, None if masks is None else ([masks[i] for i in tr], [masks[i] for i in va]))
    y_va = full.labels[va]
    # The threshold and the validation report come from the scores the app serves: full precision, from the decoded
    # image. The float16 feature cache that training validates on moves a score in its 4th digit, enough to shift a
    # threshold that sits between two validation scores (set_threshold.py, which rereads the images, would then
    # choose another one).
    val_probs = predict_probs(model, [images[i] for i in va], spec)
    threshold, found = validation_threshold(y_va, val_probs, names, defect_index, cfg.target_recall)
    metrics.update(found)
    if len(prep["lines"]) > 1:  # each line's own validation figures at the one threshold
        pos = {int(i): k for k, i in enumerate(va)}
        metrics["validation_lines"] = [
            {"root": ln["root"], **classification_report(full.labels[ln["val_idx"]],
                                                         val_probs[[pos[int(i)] for i in ln["val_idx"]]],
                                                         names, defect_index, threshold)}
            for ln in prep["lines"]]
    timing = {**metrics["timing"], "total_s": round(time.perf_counter() - t_start, 1)}
    metrics["timing"] = timing
    split = {"seed": cfg.seed if cfg.split_seed is None else cfg.split_seed, "val_fraction": cfg.val_fraction, "twin_threshold": cfg.twin_threshold,
             "max_group_fraction": cfg.max_group_fraction,
             "train": full.subset(tr).fingerprint(), "validation": full.subset(va).fingerprint(),
             "groups": int(prep["groups"].max() + 1), "skipped": full.skipped,
             "has_test_folder": prep["has_test_folder"]}
    if len(prep["lines"]) > 1:
        split["lines"] = [{"root": ln["root"], "n": ln["n"], "train": full.subset(ln["train_idx"]).fingerprint(),
                           "validation": full.subset(ln["val_idx"]).fingerprint(),
                           **({"twins_in_line0": ln["twins_in_line0"]} if "twins_in_line0" in ln else {})}
                          for ln in prep["lines"]]
    if len(prep["test_idx"]):
        split["test_fraction"] = cfg.test_fraction
        split["test_files"] = [str(full.paths[i].relative_to(full.root)) for i in prep["test_idx"]]
    # the needs-review band, from the same validation scores as the threshold (rule: inspectkit/review.py)
    band = None if threshold is None else review_band(y_va == defect_index, val_probs[:, defect_index], threshold)
    # the heat map's fixed scale and the validation score histogram, from the same validation images (rule:
    # inspectkit/heatmap/scale.py)
    cal = calibrate(model, cfg.arch, names, defect_index, threshold, spec, [images[i] for i in va], y_va)
    if cal["histogram"] is not None:
        metrics["validation_score_histogram"] = cal["histogram"]
    # the guard (UNUSABLE verdicts, drift reference): training photos of every line, validation for its threshold
    from inspectkit.engine.guard_fit import fit_for_model

    guard = fit_for_model(model, cfg.arch, spec, [images[i] for i in tr], full.labels[tr], [images[i] for i in va],
                          fitted_on={"lines": [ln["root"] for ln in prep["lines"]]})
    ckpt = make_checkpoint(model, cfg.arch, names, defect_index, spec, threshold, metrics=metrics,
                           train_config=asdict(cfg), data={**full.fingerprint(), "split": split}, history=history,
                           review_band=band, heatmap_scale=cal["heatmap_scale"], display_names=shown, guard=guard)
    save_with_graph(ckpt, cfg.out, graph=True)  # + the ONNX graph the Space serves without torch
    log.info("saved %s (threshold %s, val acc %.4f) in %.0fs: %s", cfg.out, threshold,
             metrics["validation"]["accuracy"], timing["total_s"], timing)
    return ckpt


def training_photos(ckpt: dict, data_root: str | Path | None = None) -> dict:
    """The checkpoint's training and validation photos, decoded: ``train_images``, ``train_labels``,
    ``val_images``, ``val_labels``, ``val_lines`` (the line index of each), ``lines`` (roots), ``class_names``. ValueError when the re-derived validation split is not the
    recorded one (other data, or other split settings)."""
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
