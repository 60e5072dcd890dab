"""benchmarks/line_b_twins.py on generated "impellers": every part has the same design (disc, blade ring, hub, hole),
only its grain and pinholes differ, as on the real line. The measure must find a part's augmented copy under any
turn, zoom and mirror, and must not take another part of the same design for it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import line_b_twins as T
from tests.support import copy_of, impeller


@pytest.fixture(scope="module")
def parts() -> dict[int, np.ndarray]:
    return {s: impeller(s) for s in range(5)}


@pytest.fixture(scope="module")
def queries(parts) -> dict[int, dict]:
    return {s: T.describe(T.to_grey(g)) for s, g in parts.items()}


def test_parts_share_the_design(parts):
    # the premise: two parts are far more alike than unlike at low resolution (global correlation cannot tell them)
    a, b = (cv2.resize(parts[s], (64, 64), interpolation=cv2.INTER_AREA).astype(float).ravel() for s in (0, 1))
    assert np.corrcoef(a, b)[0, 1] > 0.9


@pytest.mark.parametrize("angle, zoom, mirrored", [(0, (1.0, 1.0), False), (37, (0.9, 0.9), False),
                                                   (143, (1.12, 1.12), True), (270, (0.88, 1.1), True),
                                                   (301, (1.1, 0.95), False)])
def test_a_copy_verifies_and_another_part_does_not(parts, queries, angle, zoom, mirrored):
    same = T.verify(queries[0][False], T.features(copy_of(parts[0], angle, zoom, mirrored)), queries[0][True])
    other = T.verify(queries[0][False], T.features(copy_of(parts[1], angle, zoom, mirrored)), queries[0][True])
    assert same["score"] >= T.DEFAULT_THRESHOLD, same
    assert other["score"] < T.DEFAULT_THRESHOLD, other
    assert same["score"] >= 3 * max(other["score"], 1)
    # and the map found is the one applied: line B's 512 px at 300 px, then the zoom and the turn
    assert same["mirrored"] is mirrored
    assert same["scale"] == pytest.approx(np.sqrt(zoom[0] * zoom[1]), rel=0.03)
    assert same["anisotropy"] == pytest.approx(max(zoom) / min(zoom), rel=0.03)
    if zoom[0] == zoom[1]:  # (with unequal zooms the polar rotation is not the turn applied)
        turn = -angle if mirrored else angle  # a mirror image turns the other way
        assert (same["angle"] - turn + 180) % 360 - 180 == pytest.approx(0, abs=2)


def test_find_twins_picks_the_right_reference(parts, queries):
    rng = np.random.default_rng(3)
    # references: augmented copies of parts 1..4 (two of part 2), not of part 0
    ref_parts = [1, 2, 2, 3, 4]
    refs = [T.features(T.augment(parts[s], rng)[0]) for s in ref_parts]
    found = T.find_twins([queries[s] for s in (0, 1, 2, 3, 4)], refs, candidates=3, threshold=T.DEFAULT_THRESHOLD)
    assert not found[0]["twin"], found[0]  # part 0 has no copy among the references
    for s, r in zip((1, 2, 3, 4), found[1:]):
        assert r["twin"], (s, r)
        assert ref_parts[r["ref"]] == s, (s, r)
        assert r["score"] >= 3 * max(found[0]["score"], 1)


def test_votes_ignore_the_crowd():
    # a descriptor with many near-equal neighbours (the design) votes for nobody; a unique one votes for its owner
    owners = np.array([[0, 1, 2, 3], [4, 1, 2, 3]])
    d2 = np.array([[0.10, 0.11, 0.11, 0.12], [0.01, 0.30, 0.31, 0.32]], np.float32)
    votes = T.crowd_votes(owners, d2, n=5, ratio=0.8)
    assert votes.tolist() == [0, 0, 0, 0, 1]
    # an extra photo merged in takes its place among the neighbours as a tree holding it would
    desc = np.eye(2, 4, dtype=np.float32)
    extra = [np.eye(1, 4, dtype=np.float32)]  # identical to the first descriptor: distance 0
    votes = T.crowd_votes(owners, d2, n=5, ratio=0.8, desc=desc, extra=extra)
    assert votes[5] == 1 and votes[0] == 0


def test_photos_of_one_part_form_one_group(parts):
    """Two photos each of parts 0 and 1 (turned, zoomed, one mirrored) and one of part 2: three groups, each part's
    photos together."""
    shots = [copy_of(parts[0], 0, (1, 1), False), copy_of(parts[1], 40, (1.05, 1), False),
             copy_of(parts[0], 170, (0.95, 0.95), True), copy_of(parts[2], 10, (1, 1), False),
             copy_of(parts[1], -95, (1, 1.05), False)]
    groups = T.same_part_groups([T.describe(g) for g in shots], threshold=27, candidates=4)
    assert groups[0] == groups[2] and groups[1] == groups[4]
    assert len({groups[0], groups[1], groups[3]}) == 3


@pytest.mark.parametrize("a, b, want", [
    ([0, 1, 2, 3], [0, 0, 1, 1], [0, 0, 1, 1]),
    ([0, 0, 1, 2], [0, 1, 1, 2], [0, 0, 0, 1]),  # joined through the middle item
    ([5, 6, 7], [9, 8, 7], [0, 1, 2]),  # no shared group: each alone, renumbered
])
def test_joined_keeps_together_whatever_any_grouping_keeps_together(a, b, want):
    from inspectkit.data.parts import joined

    assert joined(np.array(a), np.array(b)).tolist() == want


def test_decoded_photos_are_grouped_by_part(parts):
    from inspectkit.data.parts import image_part_groups

    shots = [copy_of(parts[3], 25, (1, 1), False), copy_of(parts[4], 0, (1, 1), False),
             copy_of(parts[3], 200, (1.05, 1.0), True)]
    rgb = [np.repeat(g[:, :, None], 3, axis=2) for g in shots]  # as decode_all gives them
    groups = image_part_groups(rgb)
    assert groups[0] == groups[2] != groups[1]
