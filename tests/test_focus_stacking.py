"""Focus measures and full-stack focus stacking: known answers on constructed and synthetic stacks."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_refocusgan.cli import main
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import Cancelled, StackConfig, focal_stack
from napari_refocusgan.core.focus import (
    FOCUS_MEASURES,
    SMLParams,
    box_mean_torch,
    gradient_energy_torch,
    laplacian_variance_torch,
    sml_measure_torch,
    tenengrad_torch,
)
from napari_refocusgan.core.focus_stacking import all_in_focus, composite_focus
from napari_refocusgan.core.imaging import read_image, write_image
from napari_refocusgan.core.synthetic import render_scene


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small tensors: one thread is as fast, and avoids OpenMP spin-waiting on a machine shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def _texture(seed=0, shape=(64, 64)):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _t(img):
    return torch.from_numpy(np.ascontiguousarray(img))[None, None]


# -------------------------------------------------------------------------------------- focus measures


def test_measures_match_direct_definitions():
    img = _texture(0, (40, 48)).astype(np.float64)
    sx = ndimage.sobel(img, axis=1, mode="nearest")
    sy = ndimage.sobel(img, axis=0, mode="nearest")
    np.testing.assert_allclose(tenengrad_torch(_t(img.astype(np.float32)), 1)[0, 0], sx**2 + sy**2, atol=1e-4)
    box = lambda a: ndimage.uniform_filter(a, 5, mode="nearest")  # noqa: E731
    np.testing.assert_allclose(tenengrad_torch(_t(img.astype(np.float32)), 5)[0, 0], box(sx**2 + sy**2), atol=1e-4)

    lap = ndimage.laplace(img, mode="nearest")
    np.testing.assert_allclose(
        laplacian_variance_torch(_t(img.astype(np.float32)), 5)[0, 0], box(lap**2) - box(lap) ** 2, atol=1e-4
    )

    p = np.pad(img, ((0, 1), (0, 1)), mode="edge")
    ge = (p[:-1, 1:] - p[:-1, :-1]) ** 2 + (p[1:, :-1] - p[:-1, :-1]) ** 2
    np.testing.assert_allclose(gradient_energy_torch(_t(img.astype(np.float32)), 5)[0, 0], box(ge), atol=1e-5)

    c = np.pad(img, 1, mode="edge")
    ml = np.abs(2 * img - c[1:-1, :-2] - c[1:-1, 2:]) + np.abs(2 * img - c[:-2, 1:-1] - c[2:, 1:-1])
    ml[ml < SMLParams().threshold] = 0
    np.testing.assert_allclose(sml_measure_torch(_t(img.astype(np.float32)), 5)[0, 0], box(ml), atol=1e-5)


def test_box_mean_cpu_fast_path_equals_pooling():
    x = torch.rand(2, 2, 20, 25, requires_grad=True)  # autograd takes the pooling path
    pooled = box_mean_torch(x, 7)
    with torch.no_grad():
        fast = box_mean_torch(x, 7)
    torch.testing.assert_close(pooled.detach(), fast, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", list(FOCUS_MEASURES))
def test_every_measure_prefers_the_sharp_image(name):
    img = _texture(1, (64, 64))
    blurred = ndimage.gaussian_filter(img, 1.5)
    m = FOCUS_MEASURES[name](torch.from_numpy(np.stack([img, blurred]))[:, None], 9)
    assert m.shape == (2, 1, 64, 64)
    assert (m[0] > m[1]).float().mean() > 0.99
    flat = FOCUS_MEASURES[name](torch.full((1, 3, 8, 8), 0.4), 9)
    assert torch.all(flat.abs() < 1e-6)
    with pytest.raises(RefocusError, match="odd"):
        FOCUS_MEASURES[name](torch.rand(1, 1, 8, 8), 4)


# ------------------------------------------------------------------------------- constructed stacks


def _striped_stack(n=4, size=96, seed=2, rgb=True):
    """Slice k is sharp in vertical stripe k and blurred (σ 2) elsewhere; the truth is known exactly."""
    rng = np.random.default_rng(seed)
    sharp = rng.random((size, size, 3) if rgb else (size, size)).astype(np.float32)
    sigma = (2.0, 2.0, 0) if rgb else 2.0
    blurred = ndimage.gaussian_filter(sharp, sigma, mode="nearest")
    width = size // n
    stack = np.repeat(blurred[None], n, axis=0)
    for k in range(n):
        stack[k][:, k * width : (k + 1) * width] = sharp[:, k * width : (k + 1) * width]
    return stack, sharp, width


@pytest.mark.parametrize("rgb", [True, False])
def test_striped_stack_depth_and_all_in_focus(rgb):
    stack, sharp, width = _striped_stack(rgb=rgb)
    before = stack.copy()
    aif, depth = all_in_focus(stack)
    np.testing.assert_array_equal(stack, before)
    assert aif.shape == sharp.shape and aif.dtype == np.float32 and depth.dtype == np.float32
    m = 8  # stay a focus window away from the stripe borders
    for k in range(stack.shape[0]):
        cols = slice(k * width + m, (k + 1) * width - m)
        np.testing.assert_allclose(depth[:, cols], k, atol=0.5)
        assert psnr(aif[:, cols], sharp[:, cols]) > 50
    assert all(psnr(aif, sharp) > psnr(s, sharp) + 6 for s in stack)


def test_depth_index_is_fractional_between_slices():
    # The sharp image sits "between" slices 1 and 2: equal blur on both sides of the peak gives x.5
    img = _texture(3, (64, 64))
    sigmas = (3.0, 1.0, 1.0, 3.0)
    stack = np.stack([ndimage.gaussian_filter(img, s, mode="nearest") for s in sigmas])
    _, depth = all_in_focus(stack)
    np.testing.assert_allclose(depth[8:-8, 8:-8], 1.5, atol=0.05)
    sigmas = (3.0, 2.0, 0.0, 2.0, 3.0)
    stack = np.stack([ndimage.gaussian_filter(img, s, mode="nearest") for s in sigmas])
    _, depth = all_in_focus(stack)
    np.testing.assert_allclose(depth[8:-8, 8:-8], 2.0, atol=0.05)


def test_hard_blend_takes_pixels_from_one_slice():
    stack, sharp, width = _striped_stack(n=3, size=60)
    aif, depth = all_in_focus(stack, blend_sigma=0)
    idx = np.rint(depth).astype(int)
    taken = np.take_along_axis(stack, idx[None, ..., None].repeat(3, -1), axis=0)[0]
    np.testing.assert_allclose(aif, taken, atol=1e-6)


def test_integer_stacks_are_scaled():
    stack, _, _ = _striped_stack(n=3, size=48)
    ref_aif, ref_depth = all_in_focus(stack)
    u16 = np.rint(stack * 65535).astype(np.uint16)
    aif, depth = all_in_focus(u16)
    assert np.abs(aif - ref_aif).max() < 1e-3
    assert np.mean(np.abs(depth - ref_depth) < 0.05) > 0.99
    aif8, _ = all_in_focus(np.rint(stack * 255).astype(np.uint8))
    # 8-bit rounding may flip the sharpest slice at a few stripe-border pixels; elsewhere ±½ step
    assert np.quantile(np.abs(aif8 - ref_aif), 0.99) < 1 / 255


# ------------------------------------------------------------------------------------ synthetic scene


@pytest.fixture(scope="module")
def scene_stack():
    scene = render_scene(5, (96, 96))
    stack, slopes, config = focal_stack(scene.views, StackConfig())
    return scene, stack, slopes, config


def test_synthetic_all_in_focus_beats_every_slice(scene_stack):
    scene, stack, _, _ = scene_stack
    aif, _ = all_in_focus(stack)
    best_slice = max(psnr(s, scene.centre) for s in stack)
    assert psnr(aif, scene.centre) > best_slice + 2


def test_synthetic_depth_index_follows_plane_order(scene_stack):
    scene, stack, slopes, config = scene_stack
    _, depth = all_in_focus(stack)
    layers = []  # (true fractional slice, median estimated index) of layers with enough visible interior
    for d in scene.layer_disparities:
        interior = ndimage.binary_erosion(scene.disparity == d, iterations=8)
        if interior.sum() > 200:
            layers.append(((d - slopes[0]) / config.slope_step, float(np.median(depth[interior]))))
    assert len(layers) >= 3
    truth, est = np.array(layers).T
    # the same front-to-back order, and each layer within a slice of its truth (clipped to the stack)
    assert list(np.argsort(truth)) == list(np.argsort(est))
    np.testing.assert_allclose(est, np.clip(truth, 0, len(stack) - 1), atol=1.0)


# ------------------------------------------------------------------------------------ inputs, callbacks


@pytest.mark.parametrize(
    "stack, match",
    [
        (np.zeros((0, 8, 8, 3), np.float32), "empty"),
        (np.zeros((1, 8, 8, 3), np.float32), "at least 2 slices"),
        (np.zeros((8, 8, 3), np.float32), "single image"),
        (np.zeros((8, 8, 1), np.float32), "single image"),  # not 8 slices one pixel wide
        (np.zeros((8, 8, 2), np.float32), "single image"),  # gray + alpha, not 8 slices two pixels wide
        (np.zeros((8, 8), np.float32), "focal stack must be"),
        (np.full((3, 8, 8, 3), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_stacks_raise_refocus_error(stack, match):
    with pytest.raises(RefocusError, match=match):
        all_in_focus(stack)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(measures=("sml", "entropy")), dict(measures=()), dict(measures="entropy"), dict(window=4),
        dict(window=5.5), dict(blend_sigma=-1.0), dict(blend_sigma="a"), dict(blend_sigma=1e7), dict(rgb=False),
    ],  # fmt: skip
)
def test_bad_options_raise_refocus_error(kwargs):
    with pytest.raises(RefocusError):
        all_in_focus(np.zeros((3, 8, 8, 3), np.float32), **kwargs)


def test_one_measure_name_is_one_measure():
    stack = np.random.default_rng(0).random((3, 12, 12, 3)).astype(np.float32)
    for a, b in zip(all_in_focus(stack, measures="sml"), all_in_focus(stack, measures=["sml"])):
        np.testing.assert_array_equal(a, b)


def test_tiny_and_gray_stacks():
    aif, depth = all_in_focus(np.full((3, 1, 1, 3), 0.25, np.float32))
    assert aif.shape == (1, 1, 3) and depth.shape == (1, 1) and np.allclose(aif, 0.25)
    gray_width3 = _texture(4, (3, 16, 3))  # a gray stack whose width happens to be 3
    aif, depth = all_in_focus(gray_width3, rgb=False)
    assert aif.shape == (16, 3)


def test_single_measure_and_composite_range():
    stack, _, width = _striped_stack(n=3, size=48)
    t = torch.from_numpy(stack).permute(0, 3, 1, 2)
    c = composite_focus(t, ("tenengrad",))
    assert c.shape == (3, 48, 48) and float(c.min()) >= 0 and float(c.max()) <= 1 + 1e-6
    _, depth = all_in_focus(stack, measures=("gradient_energy",))
    np.testing.assert_allclose(depth[:, 8 : width - 8], 0, atol=0.5)


def test_progress_and_cancel():
    stack, _, _ = _striped_stack(n=3, size=32)
    seen = []
    all_in_focus(stack, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (seen[-1][1], seen[-1][1]) and seen[-1][1] == 4 * 3 + 1
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        all_in_focus(stack, cancel=cancel)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_all_in_focus_keeps_uint8_and_writes_depth(tmp_path):
    stack, sharp, width = _striped_stack(n=4, size=64)
    src = write_image(tmp_path / "stack.tif", np.rint(stack * 255).astype(np.uint8))
    out, dep = tmp_path / "aif.tif", tmp_path / "depth.tif"
    assert main(["all-in-focus", str(src), "-o", str(out), "--depth", str(dep)]) == 0
    aif, depth = read_image(out), read_image(dep)
    assert aif.dtype == np.uint8 and aif.shape == (64, 64, 3)
    assert depth.dtype == np.float32 and depth.shape == (64, 64)
    np.testing.assert_allclose(depth[:, width + 6 : 2 * width - 6], 1, atol=0.5)
    assert psnr(aif / 255, sharp) > psnr(stack[0], sharp) + 6


def test_cli_all_in_focus_float_stack_and_errors(tmp_path, capsys):
    stack, _, _ = _striped_stack(n=3, size=32)
    src = write_image(tmp_path / "stack.tif", stack)
    out = tmp_path / "aif.tif"
    assert main(["all-in-focus", str(src), "-o", str(out), "--measures", "sml,tenengrad", "--blend-sigma", "0"]) == 0
    assert read_image(out).dtype == np.float32
    single = write_image(tmp_path / "one.tif", stack[:1])
    assert main(["all-in-focus", str(single), "-o", str(out)]) == 2
    # a plain gray image is refused as one, also with a .png output (that check said "a result of shape (32,)")
    flat = write_image(tmp_path / "flat.png", np.rint(stack[0, ..., 0] * 255).astype(np.uint8))
    capsys.readouterr()
    assert main(["all-in-focus", str(flat), "-o", str(tmp_path / "aif.png")]) == 2
    assert "a focal stack must be (slices, H, W)" in capsys.readouterr().err
    assert main(["all-in-focus", str(src), "-o", str(out), "--measures", "nope"]) == 2


def test_all_in_focus_image_keeps_8_and_16_bits_and_takes_bool_masks_as_8_bit():
    """One rule for the widget and the command line (the widget gave a bool stack back as float)."""
    from napari_refocusgan.core.focus_stacking import all_in_focus_image
    from napari_refocusgan.core.imaging import from_float

    rng = np.random.default_rng(21)
    mask = rng.random((3, 24, 24)) > 0.5
    image, _ = all_in_focus_image(mask)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, all_in_focus_image(mask.astype(np.uint8) * 255)[0])
    deep = from_float(rng.random((3, 24, 24)), np.uint16).astype(">u2")  # big-endian comes back native
    image, depth = all_in_focus_image(deep)
    assert image.dtype == np.uint16 and image.dtype.isnative and depth.dtype == np.float32
    np.testing.assert_array_equal(image, from_float(all_in_focus(deep.astype(np.uint16))[0], np.uint16))
    assert all_in_focus_image(rng.random((3, 24, 24)))[0].dtype == np.float32
