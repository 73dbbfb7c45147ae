"""Shift-and-sum convention: a plane at disparity d is sharpest at slope d."""

import re

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import (
    Cancelled,
    StackConfig,
    auto_keep,
    central_views,
    focal_stack,
    parse_keep,
    shift_and_sum,
    shift_bilinear,
)
from napari_refocusgan.core.focus import sml


def _plane_views(d: float, n: int = 7, size: int = 48, seed: int = 0) -> np.ndarray:
    """A textured fronto-parallel plane seen by an n×n grid: view (r, c) shows it moved by d·offset.

    Views are shifted exactly (Fourier shift of a periodic, mildly smoothed texture), so only the
    stack's own interpolation is under test."""
    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.random((size, size)), 1.5, mode="wrap")
    spectrum = np.fft.fft2(tex)
    half = (n - 1) / 2
    views = np.empty((n, n, size, size, 3), np.float32)
    for r in range(n):
        for c in range(n):
            moved = np.real(np.fft.ifft2(ndimage.fourier_shift(spectrum, (d * (r - half), d * (c - half)))))
            views[r, c] = moved[..., None]
    return views


def test_paper_slopes():
    cfg = StackConfig()
    s = cfg.all_slopes()
    assert len(s) == 30 and s[0] == pytest.approx(-1.5) and s[-1] == pytest.approx(1.5)
    assert cfg.slope_step == pytest.approx(3 / 29)
    np.testing.assert_allclose(cfg.slopes(), s[5:15])


# values chosen away from the midpoints between slice slopes, where "closest" would be a coin toss
@pytest.mark.parametrize("d", [-1.2, -0.9, -0.45, 0.05, 0.35, 1.2])
def test_plane_sharpest_at_its_disparity(d):
    views = _plane_views(d)
    slopes = StackConfig(keep=None).slopes()
    stack = shift_and_sum(views, slopes).numpy()
    focus = sml(stack)[:, 8:-8, 8:-8].mean(axis=(1, 2))
    assert slopes[int(np.argmax(focus))] == pytest.approx(slopes[np.argmin(np.abs(slopes - d))])


def test_integer_slope_recovers_plane_exactly():
    views = _plane_views(1.0, n=3, size=32)
    out = shift_and_sum(views, [1.0]).numpy()[0]
    np.testing.assert_allclose(out[4:-4, 4:-4], views[1, 1][4:-4, 4:-4], atol=1e-5)


def _keys(t):
    t = np.abs(t)
    return np.where(t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1, np.where(t < 2, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2, 0.0))


def _naive_shift_1d(img, shift, axis):
    """Keys cubic resampling at index + shift, clamping indices at the edges."""
    n = img.shape[axis]
    out = np.zeros_like(img, dtype=np.float64)
    base = np.floor(shift)
    for tap in (-1, 0, 1, 2):
        idx = np.clip(np.arange(n) + int(base) + tap, 0, n - 1)
        out += _keys(shift - (base + tap)) * np.take(img, idx, axis=axis)
    return out


def test_shift_and_sum_matches_naive_cubic_resampling():
    rng = np.random.default_rng(1)
    views = rng.random((3, 5, 20, 24, 2), dtype=np.float32)
    slopes = [-0.7, 0.25, 1.0]
    fast = shift_and_sum(views, slopes).numpy()
    for k, a in enumerate(slopes):
        naive = np.zeros((20, 24, 2))
        for r in range(3):
            for c in range(5):
                naive += _naive_shift_1d(_naive_shift_1d(views[r, c], a * (r - 1), 0), a * (c - 2), 1)
        np.testing.assert_allclose(fast[k], naive / 15, atol=1e-5)


def test_auto_keep_covers_the_peaks():
    views = _plane_views(1.1)  # near the far end of the slope range, outside the paper's window
    stack = shift_and_sum(views, StackConfig(keep=None).all_slopes())
    lo, hi = auto_keep(stack, 10)
    assert hi - lo == 9
    peak = int(np.argmin(np.abs(StackConfig().all_slopes() - 1.1))) + 1
    assert lo <= peak <= hi
    _, slopes, cfg = focal_stack(views, StackConfig(), keep_auto=True)
    assert cfg.keep == (lo, hi) and len(slopes) == 10


def test_focal_stack_uses_central_views_and_reports_progress():
    views = np.zeros((9, 9, 8, 8, 3), np.float32)
    views[1:8, 1:8] = 1.0  # only the central 7×7 are bright
    calls = []
    stack, slopes, cfg = focal_stack(views, progress=lambda d, t: calls.append((d, t)))
    assert stack.shape == (10, 8, 8, 3) and stack.dtype == np.float32
    np.testing.assert_allclose(stack, 1.0, atol=1e-6)
    done, total = zip(*calls)
    assert list(done) == list(range(1, total[0] + 1)) and set(total) == {total[0]}


def test_large_light_fields_are_split_into_bands_and_slope_groups_with_the_same_result(monkeypatch):
    import napari_refocusgan.core.focalstack as fs

    rng = np.random.default_rng(3)
    views = rng.random((5, 5, 40, 36, 3), dtype=np.float32)
    slopes = StackConfig(keep=None).all_slopes()[::3]
    whole = shift_and_sum(views, slopes).numpy()
    row_bytes = 3 * 36 * 4  # one image row of one grid row's x-pass output, for one slope
    for scratch in (row_bytes * 60 * 4, row_bytes * 20):  # a few slopes per group; then row bands of one slope
        monkeypatch.setattr(fs, "_SCRATCH_BYTES", scratch)
        calls = []
        split = shift_and_sum(views, slopes, progress=lambda d, t: calls.append((d, t))).numpy()
        assert calls[-1][1] > 1 and calls[-1][0] == calls[-1][1]
        np.testing.assert_allclose(split, whole, atol=1e-6)


def test_cancel_stops_between_slices():
    with pytest.raises(Cancelled):
        focal_stack(np.zeros((7, 7, 8, 8, 3), np.float32), cancel=lambda: True)


@pytest.mark.parametrize(
    "cfg",
    [StackConfig(views=0), StackConfig(slices=1), StackConfig(s_max=-1), StackConfig(keep=(0, 3)), StackConfig(keep=(5, 40))],
)
def test_bad_configs(cfg):
    with pytest.raises(RefocusError):
        focal_stack(np.zeros((7, 7, 8, 8, 3), np.float32), cfg)


def test_bad_views():
    with pytest.raises(RefocusError, match="central 7×7"):
        central_views(np.zeros((5, 5, 4, 4, 3)), 7)
    with pytest.raises(RefocusError):
        focal_stack(np.zeros((7, 7, 8, 8), np.float32))


def test_parse_keep():
    assert parse_keep("6:15") == (6, 15)
    assert parse_keep("all") is None
    assert parse_keep("auto") == "auto"
    with pytest.raises(RefocusError):
        parse_keep("6-15")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"slices": 30.5}, "slices must be a whole number"),  # gave other slopes without a word
        ({"views": 7.0}, "views must be a whole number"),
        ({"views": True}, "views must be a whole number"),
        ({"s_max": "1.5"}, "s_max must be a finite number"),
        ({"keep": (6.0, 15.0)}, "keep's slice numbers must be a whole number"),
        ({"keep": "6:15"}, "parse_keep"),
        ({"keep": 6}, "(first, last) pair"),
    ],
)
def test_stack_config_fields_of_the_wrong_type_are_named(fields, message):
    with pytest.raises(RefocusError, match=re.escape(message)):
        StackConfig(**fields).check()


def test_stack_config_takes_keep_as_any_pair_of_whole_numbers():
    for keep in ((6, 15), [6, 15], np.array([6, 15]), (np.int64(6), np.int64(15))):
        StackConfig(keep=keep).check()
