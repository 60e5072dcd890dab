"""How well heat maps point at the real defects: pointing game, energy in the defect region, and a sanity check.

    python localize.py --checkpoint runs/neu-det/model.pt --data ../shared/data/neu-det --out reports/neu-det

On the checkpoint's test split (the files train.py held out), for every image with a ground-truth region
(NEU-DET boxes, MVTec AD masks; see :mod:`inspectkit.data.layouts`):

- pointing game (Zhang et al., "Top-down neural attention by excitation backprop", 2016): a hit when the heat
  map's maximum lies inside the defect region; reported strictly and with the usual 15-pixel tolerance;
- energy in region: the share of the heat map's total mass that falls inside the region;
- the chance levels of both: a random point hits with probability = the region's area fraction, and a flat
  map puts exactly that fraction of its energy inside, so a score is only worth its lift over the area.

Which map: by default the one the app serves (``--map served``): for a model with a defect class (MVTec AD-style
binary sets) the defect evidence, Grad-CAM of logit[defect] - logit[ok] (inspectkit/heatmap/render.py), each map divided by
its own maximum (the pointing game, the energy share and rank correlations do not change under a positive factor;
the fixed scale's clipping at 1 is left out so that a saturated map still points at its strongest cell); for a
model without one (NEU-DET) the class CAM of the labelled or predicted class, min-max normalised. ``--map class``
measures the class CAM on any model.

Sanity check (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018, model-randomisation test): the
same heat maps from copies of the model whose weights are re-initialised, cascading from the head down to the
whole network. A map that explains the trained model must change when the learned weights are gone, so the
Spearman rank correlation between the trained and the fully randomised model's maps must be low.

The metric functions work on plain arrays (heat map H x W, boolean mask H x W), so they can be tested on
constructed maps whose answers are known.

Why one module of this length: the metrics, the model-randomisation sanity check and the ``localize.py`` run
and report are one experiment, read top to bottom.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

#: Pointing-game tolerance in pixels used by Zhang et al. (a hit within 15 px of the region also counts).
TOLERANCE_PX = 15
#: Sanity check: mean Spearman rank correlation (trained vs fully randomised model) must stay below this.
MAX_RANK_CORRELATION = 0.3
#: Heat-map values within this of the maximum count as "the maximum" (bilinear upsampling can make plateaus).
MAX_TIE = 1e-6


# ------------------------------------------------------------------------------------------------ metrics

def _check_pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(heatmap, dtype=np.float64)
    m = np.asarray(mask).astype(bool)
    if h.ndim != 2 or h.shape != m.shape:
        raise ValueError(f"heat map {h.shape} and region mask {m.shape} must be two arrays of the same H x W shape")
    if not np.isfinite(h).all():
        raise ValueError("heat map contains NaN or infinite values")
    if (h < 0).any():
        raise ValueError(f"heat map has negative values (min {h.min():.3g}); Grad-CAM maps are >= 0")
    return h, m


def is_flat(heatmap: np.ndarray) -> bool:
    """True when the map has no maximum to point with (all values equal, e.g. an all-zero Grad-CAM)."""
    h = np.asarray(heatmap)
    return bool(h.size == 0 or float(h.max()) - float(h.min()) <= MAX_TIE)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The region grown by ``pixels`` (Euclidean disc), for the pointing game's tolerance."""
    if pixels < 0:
        raise ValueError(f"tolerance {pixels} must be >= 0 pixels")
    m = np.asarray(mask).astype(np.uint8)
    if pixels == 0:
        return m.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(m, k).astype(bool)


def pointing_hit(heatmap: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """Pointing game: does the heat map's maximum fall inside the region (grown by ``tolerance`` pixels)?

    When several pixels share the maximum (a plateau), it is a hit when at least half of them are inside.
    A flat map points nowhere and is a miss.
    """
    h, m = _check_pair(heatmap, mask)
    if is_flat(h):
        return False
    at_max = h >= h.max() - MAX_TIE
    return bool(dilate(m, tolerance)[at_max].mean() >= 0.5)


def energy_in_region(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heat map's total mass inside the region: sum(H * M) / sum(H), in [0, 1].

    A flat map (no mass or all values equal) spreads evenly, so it scores the region's area fraction.
    """
    h, m = _check_pair(heatmap, mask)
    total = h.sum()
    if is_flat(h) or total <= 0:
        return float(m.mean())
    return float((h * m).sum() / total)


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the flattened array, ties given their average rank (as scipy.stats.rankdata)."""
    a = np.asarray(a).ravel()
    sorter = np.argsort(a, kind="mergesort")
    inv = np.empty_like(sorter)
    inv[sorter] = np.arange(len(a))
    s = a[sorter]
    starts = np.r_[True, s[1:] != s[:-1]]
    dense = np.cumsum(starts)[inv]
    bounds = np.r_[np.nonzero(starts)[0], len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two same-shaped maps, in [-1, 1]; NaN when either is constant (no ranking)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {a.shape} and {b.shape} cannot be compared pixel by pixel")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None}
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v)),
            "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}


def summarize(rows: Sequence[dict], tolerance: int = TOLERANCE_PX) -> dict:
    """Pointing game, energy and their chance levels over per-image rows (see :func:`image_scores`)."""
    n = len(rows)
    if n == 0:
        return {"n": 0}

    def mean(key):
        return float(np.mean([r[key] for r in rows]))

    return {"n": n, "pointing_game": mean("hit"), f"pointing_game_{tolerance}px": mean("hit_tol"),
            "energy_in_region": mean("energy"), "area_fraction": mean("area"),
            "pointing_chance": mean("area"), f"pointing_chance_{tolerance}px": mean("area_tol"),
            "centre_pointing": mean("centre_hit"), "flat_maps": int(sum(r["flat"] for r in rows))}


def image_scores(heatmap: np.ndarray, mask: np.ndarray, tolerance: int = TOLERANCE_PX) -> dict:
    """One image's localisation numbers: hit (strict and with tolerance), energy, the region's area fractions,
    and whether a fixed point at the image centre would have hit (a trivial baseline)."""
    h, m = _check_pair(heatmap, mask)
    grown = dilate(m, tolerance)
    return {"hit": pointing_hit(h, m), "hit_tol": pointing_hit(h, m, tolerance), "energy": energy_in_region(h, m),
            "area": float(m.mean()), "area_tol": float(grown.mean()),
            "centre_hit": bool(m[(m.shape[0] - 1) // 2, (m.shape[1] - 1) // 2]), "flat": is_flat(h)}


# ------------------------------------------------------------------------------------------------ models

def randomize(model: nn.Module, modules: Sequence[nn.Module], seed: int) -> nn.Module:
    """A copy of ``model`` whose given modules (found by identity in the original) get fresh random weights.

    Parameters are re-drawn with each layer's own initialiser (``reset_parameters``) and BatchNorm statistics
    are reset, so nothing learned survives in those modules.
    """
    names = {id(m): n for n, m in model.named_modules()}
    chosen = []
    for m in modules:
        # a block may be a grouping made on the fly (ResNet's stem: conv1 + bn1), so match its submodules
        found = [names[id(sub)] for sub in m.modules() if id(sub) in names]
        if not found:
            raise ValueError(f"module {type(m).__name__} is not part of the model")
        chosen += found
    out = copy.deepcopy(model)
    lookup = dict(out.named_modules())
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for name in dict.fromkeys(chosen):  # each once, in order
            sub = lookup[name]
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.reset_running_stats()
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    return out.eval()


def cascade(model: nn.Module, arch: str, steps: Sequence[int]) -> list[tuple[str, list[nn.Module]]]:
    """Adebayo's cascading randomisation: (name, modules) for the head plus the last k blocks, for each k in steps.

    k = 0 randomises the head only; k >= the number of blocks randomises the whole network ("all").
    """
    from inspectkit.model import blocks, head

    bl = blocks(model, arch)
    out = []
    for k in steps:
        k = min(int(k), len(bl))
        name = "head" if k == 0 else ("all" if k == len(bl) else f"head+last{k}")
        out.append((name, [head(model, arch)] + bl[len(bl) - k:]))
    return out


@torch.no_grad()
def _batch(images: Sequence[np.ndarray], spec: dict) -> torch.Tensor:
    from inspectkit.preprocess import preprocess

    s = int(spec["size"])
    x = np.empty((len(images), 3, s, s), dtype=np.float32)
    for i, im in enumerate(images):
        preprocess(im, spec, out=x[i])
    return torch.from_numpy(x)


def heatmaps(model: nn.Module, layer: str, images: Sequence[np.ndarray], spec: dict,
             targets: Sequence[int] | None = None, batch_size: int = 16,
             evidence: int | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """(logits N x C, Grad-CAM heat maps in [0, 1] at each image's own size) with gradcam.py's Grad-CAM.

    ``targets``: one class index per image (None: each image's predicted class). ``evidence``: the defect class
    index: the defect-evidence maps instead (Grad-CAM of logit[defect] - logit[ok]), each divided by its maximum.
    """
    from inspectkit.heatmap.gradcam import (
        GradCAM,  # the product's Grad-CAM (top-level module), so these are the maps users see
    )
    from inspectkit.heatmap.render import heatmap_at, heatmap_peak

    logits, maps = [], []
    model.eval()
    with GradCAM(model, layer) as cam:
        for s in range(0, len(images), batch_size):
            chunk = images[s:s + batch_size]
            lg = cam.forward(_batch(chunk, spec))
            if evidence is not None:
                raw = cam.evidence(evidence)
                logits.append(lg.numpy())
                maps += [heatmap_peak(m, im.shape[:2]) for m, im in zip(raw, chunk)]
                continue
            t = None if targets is None else np.asarray(targets[s:s + batch_size], dtype=np.int64)
            raw = cam.cams(t)
            logits.append(lg.numpy())
            maps += [heatmap_at(m, im.shape[:2]) for m, im in zip(raw, chunk)]
    return (np.concatenate(logits) if logits else np.zeros((0, 0), np.float32)), maps


# ------------------------------------------------------------------------------------------------ command

def localize(checkpoint: str | Path, data_root: str | Path, target: str = "true", tolerance: int = TOLERANCE_PX,
             cascade_steps: Sequence[int] = (0, 1, 3, 1000), seed: int = 0,
             max_rank_correlation: float = MAX_RANK_CORRELATION, limit: int = 0, batch_size: int = 16,
             split: str = "test", heatmap: str = "served") -> dict:
    """Localisation metrics and the sanity check on the checkpoint's test split (images with a region only).

    ``target``: "true" (Grad-CAM of the labelled class) or "predicted". ``limit`` > 0: at most that many images
    per class (smoke runs). ``split="validation"`` measures the validation images instead (re-derived from the
    train config), for choosing between models without the test split. ``heatmap``: "served" (the app's map:
    defect evidence for a model with a defect class, else the class CAM), "class" or "evidence" (see the module
    docstring). Returns the report dict (summary, per class, sanity check, per-image rows).
    """
    from inspectkit.data import folders as D
    from inspectkit.data.layouts import detect_layout, region_mask
    from inspectkit.engine.evaluation import test_split
    from inspectkit.inference.checkpoint import load_checkpoint, model_from_checkpoint
    from inspectkit.model import cam_layer_name

    if split not in ("test", "validation"):
        raise ValueError(f"split {split!r}: choose 'test' or 'validation'")
    if heatmap not in ("served", "class", "evidence"):
        raise ValueError(f"heatmap {heatmap!r}: choose 'served', 'class' or 'evidence'")
    if target not in ("true", "predicted"):
        raise ValueError(f"target {target!r}: choose 'true' (the labelled class) or 'predicted'")
    if not 0.0 < max_rank_correlation <= 1.0:
        raise ValueError(f"max_rank_correlation {max_rank_correlation} must be in (0, 1]")
    t0 = time.perf_counter()
    ckpt = load_checkpoint(checkpoint)
    layout = detect_layout(data_root)
    if layout not in ("neu-det", "mvtec"):
        raise ValueError(f"{data_root} is a {layout} data set without defect regions; localisation needs "
                         "NEU-DET (VOC boxes) or an MVTec AD category (ground_truth masks)")
    if split == "test":
        _, test = test_split(ckpt, data_root)
    else:
        from inspectkit.engine.training import validation_split

        test = validation_split(ckpt, data_root)
    if limit > 0:
        keep = [i for c in range(len(test.class_names)) for i in np.nonzero(test.labels == c)[0][:limit]]
        test = test.subset(sorted(keep))
    test, images = D.decode_all(test)
    masks = [region_mask(p, data_root, im.shape[:2]) for p, im in zip(test.paths, images)]
    idx = [i for i, m in enumerate(masks) if m is not None]
    if not idx:
        raise ValueError(f"none of the {len(test)} test images of {data_root} has a defect region")
    names, arch, spec = ckpt["class_names"], ckpt["arch"], ckpt["preprocessing"]
    layer = cam_layer_name(arch)
    d = ckpt["defect_index"]
    if heatmap == "evidence" and d is None:
        raise ValueError(f"heatmap 'evidence' needs a model with a defect class; {checkpoint} has {names}")
    use_evidence = heatmap == "evidence" or (heatmap == "served" and d is not None)
    ev = d if use_evidence else None
    model = model_from_checkpoint(ckpt)
    imgs = [images[i] for i in idx]
    y = test.labels[idx]
    logits, maps = heatmaps(model, layer, imgs, spec, y if target == "true" else None, batch_size, ev)
    pred = logits.argmax(1)
    targets = y if target == "true" else pred
    rows = []
    for k, i in enumerate(idx):
        s = image_scores(maps[k], masks[i], tolerance)
        rows.append({"file": str(test.paths[i].relative_to(test.root)), "class": names[y[k]],
                     "predicted": names[pred[k]], **s})
    summary = summarize(rows, tolerance)
    per_class = {c: summarize([r for r in rows if r["class"] == c], tolerance) for c in names
                 if any(r["class"] == c for r in rows)}
    log.info("pointing game %.4f (%d px: %.4f), energy in region %.4f (area %.4f), %d images",
             summary["pointing_game"], tolerance, summary[f"pointing_game_{tolerance}px"],
             summary["energy_in_region"], summary["area_fraction"], len(rows))

    sanity = {"method": "model-randomisation test (Adebayo et al. 2018): Spearman rank correlation of each "
                        "image's heat map (same target class) from the trained model and from copies with "
                        "re-initialised weights, cascading from the head down",
              "seed": seed, "max_mean_rank_correlation": max_rank_correlation, "steps": {}}
    for step, (name, modules) in enumerate(cascade(model, arch, cascade_steps)):
        rnd = randomize(model, modules, seed + step)
        _, rmaps = heatmaps(rnd, layer, imgs, spec, targets, batch_size, ev)
        rho = [spearman(a, b) for a, b in zip(maps, rmaps)]
        for r, v in zip(rows, rho):
            r[f"rho_{name}"] = None if not np.isfinite(v) else round(v, 4)
        st = _stats(rho)
        st["flat_maps"] = int(sum(is_flat(m) for m in rmaps))
        sanity["steps"][name] = st
        log.info("sanity check %s: mean rank correlation %s over %d images (%d flat maps)", name,
                 None if st["mean"] is None else round(st["mean"], 4), st["n"], st["flat_maps"])
    full = sanity["steps"][list(sanity["steps"])[-1]]
    sanity["final_step"] = list(sanity["steps"])[-1]
    sanity["passed"] = bool(full["mean"] is not None and abs(full["mean"]) < max_rank_correlation)

    for r in rows:  # JSON-friendly and compact
        for k in ("energy", "area", "area_tol"):
            r[k] = round(r[k], 4)
    return {
        "checkpoint": {"path": str(checkpoint), "arch": arch, "class_names": names, "cam_layer": layer,
                       "input_size": spec["size"],
                       # > 0: training saw the boxes of its train images (never the test ones measured here)
                       "region_weight": float((ckpt.get("train_config") or {}).get("region_weight", 0.0))},
        "data": {"root": str(data_root), "layout": layout, "split": split, "test_images": len(test),
                 "with_region": len(rows), "region": "union of all defect boxes" if layout == "neu-det"
                 else "ground-truth mask"},
        "settings": {"target": "defect evidence" if use_evidence else target, "tolerance_px": tolerance,
                     "map": "defect-evidence" if use_evidence else "class",
                     "heatmap": (f"defect evidence (Grad-CAM of logit[defect] - logit[ok]) at {layer}, bilinear to the "
                                 "image size, divided by its maximum") if use_evidence else
                     f"Grad-CAM at {layer}, bilinear to the image size, min-max to [0, 1]"},
        "accuracy_on_these_images": float((pred == y).mean()),
        "summary": summary, "per_class": per_class, "sanity_check": sanity,
        "seconds": round(time.perf_counter() - t0, 1), "images": rows,
    }


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _supervision(weight: float, split: str) -> str:
    if weight > 0:
        seen = ("were never seen in training" if split == "test"
                else "entered training only through the validation loss that picked the epoch")
        return (f"Trained with region supervision (`--region-weight {weight:g}`): stage 2 penalised heat-map mass "
                f"outside the defect boxes of the *train* images; the {split} boxes measured here {seen}.")
    return "Trained on class labels alone (no region supervision): the boxes were never used in training."


def markdown(res: dict) -> str:
    """The report as a short Markdown page."""
    s, tol = res["summary"], res["settings"]["tolerance_px"]
    lines = [
        "# Heat-map localisation", "",
        f"Checkpoint `{res['checkpoint']['path']}` ({res['checkpoint']['arch']}, Grad-CAM at "
        f"`{res['checkpoint']['cam_layer']}`), data `{res['data']['root']}` ({res['data']['layout']}); "
        f"{res['data']['with_region']} {res['data'].get('split', 'test')} images with a defect region "
        f"({res['data']['region']}); "
        + ("heat map: the defect evidence (the served map). " if res["settings"].get("map") == "defect-evidence"
           else f"heat map of the {res['settings']['target']} class. ") + "Accuracy on these images: "
        f"{_pct(res['accuracy_on_these_images'])}.",
        "", _supervision(res["checkpoint"].get("region_weight", 0.0), res["data"].get("split", "test")), "",
        f"| class | n | pointing game | pointing ({tol} px) | energy in region | region area (chance) | centre point |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in [*res["per_class"].items(), ("**all**", s)]:
        lines.append(f"| {name} | {c['n']} | {_pct(c['pointing_game'])} | {_pct(c[f'pointing_game_{tol}px'])} | "
                     f"{_pct(c['energy_in_region'])} | {_pct(c['area_fraction'])} | {_pct(c['centre_pointing'])} |")
    sc = res["sanity_check"]
    lines += ["", "## Sanity check (model randomisation)", "",
              f"Spearman rank correlation between the trained model's heat maps and those of copies with "
              f"re-initialised weights (seed {sc['seed']}); passes when the mean for `{sc['final_step']}` is below "
              f"{sc['max_mean_rank_correlation']}: **{'passed' if sc['passed'] else 'FAILED'}**.", "",
              "| randomised | mean | median | 10th pct | 90th pct | flat maps |", "|---|---:|---:|---:|---:|---:|"]
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    for name, st in sc["steps"].items():
        lines.append(f"| {name} | {f(st['mean'])} | {f(st['median'])} | {f(st['p10'])} | {f(st['p90'])} | "
                     f"{st['flat_maps']} |")
    lines += ["", f"({res['seconds']} s)", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: compute the report and write ``localization.json`` and ``localization.md`` into ``--out``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    p.add_argument("--data", required=True, help="the NEU-DET tree or MVTec AD category it was trained on")
    p.add_argument("--out", default="reports", help="folder for localization.json and localization.md")
    p.add_argument("--target", default="true", choices=["true", "predicted"],
                   help="class whose heat map is measured: the labelled one (default) or the predicted one")
    p.add_argument("--map", default="served", choices=["served", "class", "evidence"],
                   help="heat map measured: the app's (default: defect evidence for a model with a defect class, "
                        "else the class CAM), the class CAM, or the defect evidence")
    p.add_argument("--tolerance", type=int, default=TOLERANCE_PX, help="pointing-game tolerance in pixels")
    p.add_argument("--cascade", default="0,1,3,1000",
                   help="sanity check: randomise the head plus the last k blocks for each k (>= blocks: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomised weights")
    p.add_argument("--max-rank-correlation", type=float, default=MAX_RANK_CORRELATION,
                   help="the sanity check passes when the fully randomised mean rank correlation is below this")
    p.add_argument("--limit", type=int, default=0, help="at most this many test images per class (smoke runs)")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="measure the test split (default) or the validation split the model was selected on")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--per-image", action="store_true",
                   help="also write localization_images.json (one row per image; large, so off by default)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.threads:
        torch.set_num_threads(a.threads)
    from inspectkit.data.folders import save_json

    try:
        steps = [int(x) for x in a.cascade.split(",") if x.strip()]
        if not steps or min(steps) < 0:
            raise ValueError(f"--cascade {a.cascade!r} must be comma-separated block counts >= 0, e.g. 0,1,3,1000")
        res = localize(a.checkpoint, a.data, a.target, a.tolerance, steps, a.seed, a.max_rank_correlation, a.limit,
                       split=a.split, heatmap=a.map)
    except ValueError as exc:
        print(f"localize: error: {exc}", file=sys.stderr)
        return 2
    out = Path(a.out)
    rows = res.pop("images")
    save_json(res, out / "localization.json")
    if a.per_image:
        out.joinpath("localization_images.json").write_text(json.dumps(rows, separators=(",", ":")) + "\n")
    (out / "localization.md").write_text(markdown(res))
    s = res["summary"]
    print(f"pointing game {_pct(s['pointing_game'])} ({a.tolerance} px: {_pct(s[f'pointing_game_{a.tolerance}px'])}), "
          f"energy in region {_pct(s['energy_in_region'])} (area {_pct(s['area_fraction'])}), sanity check "
          f"{'passed' if res['sanity_check']['passed'] else 'FAILED'} -> {out / 'localization.json'}")
    return 0 if res["sanity_check"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
