"""inspectkit.preprocess.augment: the rotation range of the augmented views (what adapt.py --aug-rotation sets)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspectkit.preprocess import augment


def _two_marks(h: int, w: int) -> np.ndarray:
    """A grey image with a red mark at the centre and a green one to its right: the vector between them turns
    with the view, whatever the view's shift, and a flip mirrors it."""
    img = np.full((h, w, 3), 90, np.uint8)
    cy, cx, r = h // 2, w // 2, min(h, w) // 4
    img[cy - 2:cy + 3, cx - 2:cx + 3] = (255, 0, 0)
    img[cy - 2:cy + 3, cx + r - 2:cx + r + 3] = (0, 255, 0)
    return img


def _turn(view: np.ndarray) -> float:
    """The angle in degrees between the horizontal axis and the line through the two marks (0 to 90: a flip maps a
    turn of a to -a or 180 - a, all the same line)."""
    x = view.astype(int)
    def centre(ch, others):
        m = (x[..., ch] > 150) & (x[..., others[0]] < 100) & (x[..., others[1]] < 100)
        ys, xs = np.nonzero(m)
        return ys.mean(), xs.mean()
    (ry, rx), (gy, gx) = centre(0, (1, 2)), centre(1, (0, 2))
    a = abs(math.degrees(math.atan2(gy - ry, gx - rx))) % 180
    return min(a, 180 - a)


@pytest.mark.parametrize("shape", [(96, 96), (80, 120)])
@pytest.mark.parametrize("max_angle", [0.0, 20.0, 60.0])
def test_views_turn_within_the_range(shape, max_angle):
    img = _two_marks(*shape)
    turns = [_turn(augment(img, np.random.default_rng(s), 1.0, max_angle=max_angle)) for s in range(60)]
    assert max(turns) <= max_angle + 3  # a few degrees of pixel rounding
    if max_angle:
        assert max(turns) > max_angle / 2  # and the range is used, not only its middle


def test_any_turn_reaches_past_a_quarter():
    img = _two_marks(96, 96)
    turns = [_turn(augment(img, np.random.default_rng(s), 1.0, max_angle=180.0)) for s in range(60)]
    assert max(turns) > 60 and min(turns) < 30


def test_the_default_range_is_the_20_degrees_every_model_so_far_trained_with():
    """Views drawn before the range was an option are drawn again the same, seed for seed."""
    img = _two_marks(64, 64)
    for s in range(10):
        assert np.array_equal(augment(img, np.random.default_rng(s), 1.0),
                              augment(img, np.random.default_rng(s), 1.0, max_angle=20.0))


@pytest.mark.parametrize("max_angle", [-1.0, 180.5, 360.0])
def test_a_range_outside_0_180_is_refused(max_angle):
    with pytest.raises(ValueError, match=f"max_angle must be in 0..180 degrees, got {max_angle}"):
        augment(_two_marks(32, 32), np.random.default_rng(0), 1.0, max_angle=max_angle)
