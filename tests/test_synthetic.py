"""Synthetic light fields: deterministic, correct geometry and occlusion."""

import re

import numpy as np
import pytest
from scipy import ndimage

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import StackConfig, focal_stack, shift_and_sum
from napari_refocusgan.core.focus import sml
from napari_refocusgan.core.synthetic import render_scene


@pytest.fixture(scope="module")
def scene():
    return render_scene(7, size=(64, 80), n_layers=3)


def test_deterministic_and_seed_dependent(scene):
    again = render_scene(7, size=(64, 80), n_layers=3)
    np.testing.assert_array_equal(scene.views, again.views)
    other = render_scene(8, size=(64, 80), n_layers=3)
    assert not np.array_equal(scene.views, other.views)


def test_shapes_ranges_and_disparity_labels(scene):
    assert scene.views.shape == (7, 7, 64, 80, 3) and scene.views.dtype == np.float32
    assert 0 <= scene.views.min() and scene.views.max() <= 1
    assert set(np.unique(scene.disparity)) <= set(np.float32(scene.layer_disparities))
    # far-to-near order: the background (first, largest d) is behind everything
    assert scene.layer_disparities == sorted(scene.layer_disparities, reverse=True)


def test_each_layer_is_sharpest_near_its_disparity(scene):
    stack, slopes, _ = focal_stack(scene.views, StackConfig(keep=None))
    focus = sml(stack)
    tested = 0
    for d in scene.layer_disparities:
        # away from occlusion edges, where the neighbour's blur and the SML window spill over
        region = ndimage.binary_erosion(np.abs(scene.disparity - d) < 1e-6, iterations=8)
        if region.sum() < 100:
            continue
        best = slopes[int(np.argmax([f[region].mean() for f in focus]))]
        assert abs(best - d) <= 1.5 * StackConfig().slope_step
        tested += 1
    assert tested >= 2


def test_a_far_back_layer_is_sharpest_at_its_own_slope_far_beyond_the_range():
    far = render_scene(7, size=(64, 80), n_layers=2, disparity_range=(-0.5, 0.0), back_disparity=2.0)
    assert far.layer_disparities[0] == 2.0 and far.layer_disparities[1] <= 0.0
    back = ndimage.binary_erosion(far.disparity == np.float32(2.0), iterations=10)
    assert back.sum() > 200
    slopes = np.linspace(-0.5, 2.5, 13)
    focus = [sml(s)[back].mean() for s in shift_and_sum(far.views, slopes).numpy()]
    assert abs(slopes[int(np.argmax(focus))] - 2.0) <= 0.25
    # a slice inside the range (slope 0) sees the background 2 px/view away: heavily blurred
    assert focus[2] < 0.2 * max(focus)
    with pytest.raises(RefocusError, match="back_disparity"):
        render_scene(7, size=(32, 32), disparity_range=(-0.5, 0.0), back_disparity=-0.2)


def test_views_shift_by_disparity_times_offset():
    s = render_scene(3, size=(48, 48), n_layers=1, disparity_range=(1.0, 1.0))
    # a single plane at d = 1 px: view (r, c) is the centre view moved by (r − 3, c − 3) px
    np.testing.assert_allclose(s.views[3, 5, 10:38, 12:40], s.views[3, 3, 10:38, 10:38], atol=1e-4)
    np.testing.assert_allclose(s.views[1, 3, 8:36, 10:38], s.views[3, 3, 10:38, 10:38], atol=1e-4)


def test_photometric_randomisation_darkens_some_scenes():
    means = [render_scene(s, size=(32, 32), n_layers=2, randomize_photometric=True).views.mean() for s in range(6)]
    assert min(means) < 0.3 and max(means) - min(means) > 0.05


def test_too_small_is_an_error():
    with pytest.raises(RefocusError):
        render_scene(0, size=(4, 4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"disparity_range": (-100.0, 100.0)}, "shift the outer views"),  # took 10 s and 0.8 GB for 32×32
        ({"back_disparity": 1e5}, "shift the outer views"),  # asked for 17 TB
        ({"disparity_range": (1.0, -1.0)}, "must be ordered"),
        ({"disparity_range": (float("nan"), 1.0)}, "disparity must be a finite number"),
        ({"n_layers": 0}, "one layer"),
        ({"supersample": 0}, "supersample ≥ 1"),
        ({"grid": 7.0}, "grid must be a whole number"),
        ({"size": 32}, "(height, width) pair"),
    ],
)
def test_render_scene_refuses_settings_it_cannot_render(kwargs, message):
    args = {"size": (32, 32), **kwargs}
    with pytest.raises(RefocusError, match=re.escape(message)):
        render_scene(1, **args)
    with pytest.raises(RefocusError, match="seed must be a whole number"):
        render_scene(None, (32, 32))  # another scene at every call
