"""Localisation metrics on constructed heat maps and regions whose answers are known, and the randomisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspectkit.engine import localization as Z
from inspectkit.model import blocks, build_model, head

SHAPES = [(20, 20), (16, 30)]  # square and non-square (height, width)


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def peak(shape, y, x, sigma=2.0):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma ** 2)).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_pointing_game_hits_inside_and_misses_outside(shape):
    h, w = shape
    m = box(shape, 2, 8, 3, 9)
    assert Z.pointing_hit(peak(shape, 5, 6), m)
    assert not Z.pointing_hit(peak(shape, h - 1, w - 1), m)
    # 3 rows below the box's last row (7): a miss strictly, a hit with a tolerance that reaches it
    assert not Z.pointing_hit(peak(shape, 10, 6), m)
    assert Z.pointing_hit(peak(shape, 10, 6), m, tolerance=3)
    assert not Z.pointing_hit(peak(shape, 10, 6), m, tolerance=2)


@pytest.mark.parametrize("inside, expected", [(3, True), (2, True), (1, False)])
def test_pointing_plateau_needs_half_its_pixels_inside(inside, expected):
    hm = np.zeros((10, 10), np.float32)
    hm[0, 0:4] = 1.0  # a plateau of 4 maximal pixels
    m = box((10, 10), 0, 1, 0, inside)
    assert Z.pointing_hit(hm, m) is expected


def test_flat_map_points_nowhere_and_spreads_evenly():
    m = box((10, 10), 0, 10, 0, 5)  # half the image
    for flat in (np.zeros((10, 10)), np.full((10, 10), 0.3)):
        assert not Z.pointing_hit(flat, m)
        assert Z.energy_in_region(flat, m) == pytest.approx(0.5)


@pytest.mark.parametrize("shape", SHAPES)
def test_energy_in_region_known_values(shape):
    m = box(shape, 0, 4, 0, 5)
    assert Z.energy_in_region(m.astype(np.float32), m) == pytest.approx(1.0)
    assert Z.energy_in_region((~m).astype(np.float32), m) == pytest.approx(0.0)
    hm = np.ones(shape, np.float32)
    hm[m] = 3.0  # 20 pixels of 3 inside, the rest 1 outside
    n_out = shape[0] * shape[1] - 20
    assert Z.energy_in_region(hm, m) == pytest.approx(60 / (60 + n_out))
    # an unrelated smooth map puts about the area's share inside only when it is uniform; a peak in the box beats it
    assert Z.energy_in_region(peak(shape, 2, 2), m) > m.mean()


def test_metrics_refuse_bad_inputs():
    with pytest.raises(ValueError, match=r"same H x W"):
        Z.energy_in_region(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="negative"):
        Z.pointing_hit(np.full((4, 4), -1.0), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="NaN"):
        Z.energy_in_region(np.full((4, 4), np.nan), np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="tolerance -1"):
        Z.pointing_hit(peak((4, 4), 1, 1), np.ones((4, 4), bool), tolerance=-1)


def test_rankdata_averages_ties():
    assert Z.rankdata(np.array([10, 20, 20, 30, 5])).tolist() == [2.0, 3.5, 3.5, 5.0, 1.0]


def test_spearman_known_values():
    a = np.arange(12, dtype=float).reshape(3, 4)
    assert Z.spearman(a, a ** 3) == pytest.approx(1.0)  # monotone: perfect rank agreement
    assert Z.spearman(a, -a) == pytest.approx(-1.0)
    # d = rank differences (0, 0, 1, -1, 0): rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert Z.spearman(np.array([1, 2, 3, 4, 5.]), np.array([1, 2, 4, 3, 5.])) == pytest.approx(0.9)
    assert np.isnan(Z.spearman(a, np.zeros_like(a)))
    with pytest.raises(ValueError, match="shapes"):
        Z.spearman(a, a.T)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    r = np.random.default_rng(0)
    a, b = r.integers(0, 5, 200).astype(float), r.integers(0, 5, 200).astype(float)
    assert Z.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_image_scores_and_summary():
    shape = (20, 30)
    m = box(shape, 0, 10, 0, 10)  # area 100/600, contains the centre? no: centre (9, 14) is outside
    rows = [Z.image_scores(peak(shape, 5, 5), m, tolerance=2), Z.image_scores(peak(shape, 15, 25), m, tolerance=2)]
    s = Z.summarize(rows, tolerance=2)
    assert s["n"] == 2 and s["pointing_game"] == 0.5 and s["pointing_game_2px"] == 0.5
    assert s["area_fraction"] == pytest.approx(100 / 600) == s["pointing_chance"]
    assert s["pointing_chance_2px"] > s["pointing_chance"]
    assert s["centre_pointing"] == 0.0 and s["flat_maps"] == 0
    # one peak almost wholly inside, one almost wholly outside
    assert 0.45 < s["energy_in_region"] < 0.5


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("k", [0, 1, 100])
def test_randomize_changes_exactly_the_cascade_modules(arch, k):
    torch.manual_seed(0)
    model = build_model(arch, 3, weights=None).eval()
    with torch.no_grad():  # make every tensor distinguishable from a fresh init (BN weights and statistics too)
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.add_(0.5)
    before = {n: v.clone() for n, v in model.state_dict().items()}
    ((name, modules),) = Z.cascade(model, arch, [k])
    n_blocks = len(blocks(model, arch))
    assert name == {0: "head", 1: "head+last1", 100: "all"}[k]
    rnd = Z.randomize(model, modules, seed=1)
    changed = {n for n, v in rnd.state_dict().items() if not torch.equal(v, before[n]) and v.is_floating_point()}
    chosen = {id(p) for m in modules for p in list(m.parameters()) + list(m.buffers())}
    expected = {n for n, v in list(model.named_parameters()) + list(model.named_buffers())
                if id(v) in chosen and v.is_floating_point()}
    assert changed == expected and changed  # the chosen modules, nothing else
    assert all(torch.equal(v, before[n]) for n, v in model.state_dict().items())  # the original is untouched
    if k >= n_blocks:
        assert len(changed) == sum(v.is_floating_point() for v in before.values())
    hp = {id(p) for p in head(model, arch).parameters()}
    assert hp <= chosen


def test_randomize_is_seeded_and_leaves_the_global_rng_alone():
    model = build_model("mobilenet_v2", 2, weights=None)
    mods = [head(model, "mobilenet_v2")]
    torch.manual_seed(5)
    a = Z.randomize(model, mods, seed=1)
    after = torch.rand(1)
    torch.manual_seed(5)
    b = Z.randomize(model, mods, seed=1)
    assert torch.equal(torch.rand(1), after)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="not part of the model"):
        Z.randomize(model, [torch.nn.Linear(2, 2)], seed=0)
