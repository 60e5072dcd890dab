"""Region supervision: boxes and masks move with the augmentation, the region loss has known answers on
constructed maps, and training with it puts more of the heat map inside the defect boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from inspectkit.engine.training import TrainConfig, region_grid, region_loss, train
from inspectkit.preprocess import augment
from tests.layout_trees import neu_det_tree


def _marked(shape: tuple[int, int], box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A dark image with one bright rectangle, and the rectangle as a boolean mask."""
    h, w = shape
    img = np.full((h, w, 3), 30, np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 230
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return img, mask


@pytest.mark.parametrize("shape, box", [((64, 64), (8, 10, 30, 28)), ((48, 80), (50, 5, 70, 20)),
                                        ((90, 40), (5, 60, 25, 80))])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augment_moves_the_mask_with_the_image(shape, box, seed):
    img, mask = _marked(shape, box)
    out, m = augment(img, np.random.default_rng(seed), 1.0, mask=mask)
    assert out.shape == img.shape and m.shape == shape and m.dtype == np.float32
    bright = out[:, :, 0] > (out.mean() + out.max()) / 2  # the rectangle, wherever the view moved it
    region = m > 0.5
    iou = (bright & region).sum() / max((bright | region).sum(), 1)
    assert iou > 0.8, iou
    # the draws are the same with or without a mask: a seed gives the same image either way
    assert np.array_equal(augment(img, np.random.default_rng(seed), 1.0), out)


def test_augment_mask_border_is_empty_not_repeated():
    img, mask = _marked((40, 40), (0, 0, 40, 10))  # the region touches the top edge
    for seed in range(20):
        _, m = augment(img, np.random.default_rng(seed), 1.0, mask=mask)
        assert m.sum() <= mask.sum() * 1.45  # a replicated border would smear the top rows down the image


def test_augment_refuses_a_mask_of_another_size():
    img, _ = _marked((40, 50), (1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"region mask \(40, 40\) must have the image's height and width \(40, 50\)"):
        augment(img, np.random.default_rng(0), 1.0, mask=np.zeros((40, 40), bool))


@pytest.mark.parametrize("shape, grid", [((40, 40), (2, 2)), ((30, 60), (3, 4)), ((100, 50), (5, 5))])
def test_region_grid_is_the_covered_share_of_each_cell(shape, grid):
    h, w = shape
    mask = np.zeros(shape, bool)
    mask[:, : w // 2] = True  # left half
    g = region_grid(mask, grid)
    assert g.shape == grid and g.dtype == np.float32
    gw = grid[1]
    left = g[:, : gw // 2]
    assert np.allclose(left, 1.0) and np.allclose(g.mean(), 0.5, atol=1e-6)
    if gw % 2 == 0:
        assert np.allclose(g[:, gw // 2:], 0.0)
    assert np.allclose(region_grid(np.zeros(shape, bool), grid), 0.0)


def _fmap_with_activation(cells: list[tuple[int, int]], k: int = 2, hw: int = 4) -> torch.Tensor:
    f = torch.zeros(k, hw, hw)
    for y, x in cells:
        f[0, y, x] = 1.0  # channel 0 is the evidence for class 0
    return f


def test_region_loss_on_constructed_maps():
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # class c reads channel c
    region = torch.zeros(4, 4)
    region[:2, :2] = 1.0  # the top-left quarter is the defect
    no_region = torch.full((4, 4), -1.0)
    fmap = torch.stack([_fmap_with_activation([(0, 0), (1, 1)]),  # all evidence inside
                        _fmap_with_activation([(3, 3)]),  # all evidence outside
                        _fmap_with_activation([(0, 1), (2, 2)]),  # half inside
                        _fmap_with_activation([(3, 3)])])  # outside, but this image has no region
    labels = torch.tensor([0, 0, 0, 0])
    regions = torch.stack([region, region, region, no_region])
    one = lambda i: float(region_loss(fmap[i:i + 1], weight, labels[i:i + 1], regions[i:i + 1]))
    assert one(0) == pytest.approx(0.0, abs=1e-6)
    assert one(1) == pytest.approx(1.0, abs=1e-6)
    assert one(2) == pytest.approx(0.5, abs=1e-6)
    assert one(3) == 0.0  # nothing to supervise
    assert float(region_loss(fmap, weight, labels, regions)) == pytest.approx(0.5, abs=1e-6)  # mean of 0, 1, 0.5
    # the map of the image's own class is the one judged: class 1 reads channel 1, which is empty; a map with no
    # mass points nowhere, so it scores as all outside rather than all inside
    assert float(region_loss(fmap[:1], weight, torch.tensor([1]), regions[:1])) == pytest.approx(1.0)


def test_region_loss_pools_a_finer_region_grid_and_has_gradients():
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fine = torch.zeros(1, 8, 8)
    fine[0, :, :4] = 1.0  # left half at twice the map's resolution
    fmap = torch.rand(1, 2, 4, 4, requires_grad=True)
    loss = region_loss(fmap, weight, torch.tensor([0]), fine)
    expected = float((fmap[0, 0, :, 2:].sum() / fmap[0, 0].sum()).detach())
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    g = fmap.grad[0, 0]
    assert (g[:, 2:] > 0).all() and (g[:, :2] < 0).all()  # descending moves the evidence into the region
    assert torch.count_nonzero(fmap.grad[0, 1]) == 0


def _cues(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Features (n x 1 view x 2 channels x 4 x 4) with two equally good cues for class 1: channel 0 lights the
    defect region (a random 2 x 2 block), channel 1 a cell outside it. Class 0 has neither and no region."""
    g = np.random.default_rng(seed)
    feats = torch.zeros(n, 1, 2, 4, 4)
    regions = torch.full((n, 1, 4, 4), -1.0)
    labels = np.arange(n) % 2
    for i in np.nonzero(labels == 1)[0]:
        y, x = g.integers(0, 3, size=2)
        region = torch.zeros(4, 4)
        region[y:y + 2, x:x + 2] = 1.0
        outside = [(a, b) for a in range(4) for b in range(4) if region[a, b] == 0]
        a, b = outside[g.integers(len(outside))]
        feats[i, 0, 0] = region
        feats[i, 0, 1, a, b] = 4.0  # as much evidence as the region's 4 cells, in one cell
        regions[i, 0] = region
    feats += 0.05 * torch.from_numpy(g.normal(size=feats.shape).astype(np.float32)).abs()
    return feats, labels, regions


def _inside_share(net: torch.nn.Sequential, feats: torch.Tensor, labels: np.ndarray, regions: torch.Tensor) -> float:
    with torch.no_grad():
        fmap = net[0](feats[:, 0])
        loss = region_loss(fmap, net[-1].weight, torch.from_numpy(labels), regions[:, 0])
    return 1.0 - float(loss)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_region_loss_in_stage_two_moves_the_class_map_into_the_region(seed):
    from inspectkit.engine.training import _fit

    tr, va = _cues(96, seed), _cues(48, seed + 100)
    shares = {}
    for weight in (0.0, 2.0):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(2, 8, 1), torch.nn.ReLU()),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1), torch.nn.Linear(8, 2))
        cfg = TrainConfig(batch_size=16, patience=100, seed=seed, region_weight=weight, weight_decay=0.0)
        history: list = []
        best = _fit(net, net.train, list(net.parameters()), 0.05, 40, tr[0], tr[1], va[0][:, 0], va[1], cfg, None, 2,
                    "stage2", history, (tr[2], va[2][:, 0]) if weight else None, net[-1])
        assert best["val_acc"] == 1.0  # both cues separate the classes; the region loss costs no accuracy
        shares[weight] = _inside_share(net, *va)
    # without the region loss the map spreads over both cues; with it, the map sits on the defect region
    assert shares[2.0] > 0.9 and shares[2.0] > shares[0.0] + 0.2, shares


@pytest.fixture(scope="module")
def neu_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("neu-regions") / "neu-det"
    neu_det_tree(root, n=8, n_val=0, size=(48, 48))
    return root


@pytest.mark.slow
def test_train_with_region_weight_records_the_region_share(neu_tree, tmp_path):
    cfg = TrainConfig(data=str(neu_tree), weights="none", size=64, views=2, stage1_epochs=2, stage2_epochs=2,
                      last_blocks=1, batch_size=16, val_fraction=0.25, test_fraction=0.25, region_weight=1.0,
                      out=str(tmp_path / "m.pt"))
    ckpt = train(cfg)
    assert ckpt["train_config"]["region_weight"] == 1.0
    rows = [r for r in ckpt["history"] if r["stage"] == "stage2"]
    assert len(rows) == 2 and all(0.0 <= r["val_region"] <= 1.0 for r in rows)
    assert 0.0 <= ckpt["metrics"]["validation_region_energy"] <= 1.0
    plain = train(TrainConfig(**{**cfg.__dict__, "region_weight": 0.0, "out": str(tmp_path / "p.pt")}))
    assert "validation_region_energy" not in plain["metrics"]
    assert all("val_region" not in r for r in plain["history"])


def _cfg(root: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(data=str(root), weights="none", size=64, views=2, stage1_epochs=1, stage2_epochs=1,
                       out=str(out), **kw)


def test_region_weight_needs_a_layout_with_regions(casting_tree, tmp_path):
    with pytest.raises(ValueError, match="defect regions come only with"):
        train(_cfg(casting_tree, tmp_path / "m.pt", region_weight=1.0))
