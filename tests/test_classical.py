"""Classical single-image baselines: known answers against direct numpy/scipy references."""

import numpy as np
import pytest
from scipy import ndimage

from napari_refocusgan.cli import main
from napari_refocusgan.core import classical
from napari_refocusgan.core.classical import (
    CLASSICAL_METHODS,
    apply_classical,
    blur_map,
    clahe,
    clahe_sharpen,
    regionwise_sharpen,
    sharpen,
    sharpening_kernel,
    unsharp,
)
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.imaging import LUMA_WEIGHTS, read_image, write_image


def _texture(seed=0, shape=(64, 64), lo=0.0, hi=1.0):
    return (lo + (hi - lo) * np.random.default_rng(seed).random(shape)).astype(np.float32)


def _colour_texture(seed=0, size=64):
    """Smooth coloured content with fine texture on top, channels in different proportions."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.random((size, size)), 3)
    base = (base - base.min()) / (base.max() - base.min())
    tint = np.array([0.9, 0.6, 0.3], np.float32)
    return np.clip((0.15 + 0.5 * base)[..., None] * tint, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------- sharpen


@pytest.mark.parametrize("size", [3, 5, 7])
@pytest.mark.parametrize("amount", [0.5, 1.0, 4.0])
def test_sharpening_kernel_sums_to_one_with_minus_ones_around(size, amount):
    k = sharpening_kernel(size, amount)
    assert k.shape == (size, size)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    scale = 1 / (-k[0, 0])  # undo the normalisation: the surround was −1
    raw = k * scale
    centre = raw[size // 2, size // 2]
    raw[size // 2, size // 2] = -1
    np.testing.assert_allclose(raw, -1, rtol=1e-5)
    assert centre >= 5


def test_classic_three_by_three_kernel():
    expected = -np.ones((3, 3), np.float32)
    expected[1, 1] = 9
    np.testing.assert_allclose(sharpening_kernel(3, 9.0), expected, atol=1e-6)


@pytest.mark.parametrize("size", [3, 5, 7])
def test_sharpen_keeps_uniform_image_and_matches_detail_gain_reference(size):
    flat = np.full((20, 24, 3), 0.37, np.float32)
    np.testing.assert_allclose(sharpen(flat, size, 2.0), flat, atol=1e-6)
    img = _texture(1, (40, 48), 0.3, 0.7)
    amount = 0.5
    # identity + amount·(identity − box mean), mirrored borders
    expected = np.clip(img + amount * (img - ndimage.uniform_filter(img, size, mode="reflect")), 0, 1)
    np.testing.assert_allclose(sharpen(img, size, amount), expected, atol=1e-5)


def test_sharpen_size_accepts_whole_floats_and_refuses_others():
    img = np.random.default_rng(1).random((12, 12)).astype(np.float32)
    np.testing.assert_array_equal(sharpen(img, size=5.0), sharpen(img, size=5))
    for size in (4, 5.5, "5"):
        with pytest.raises(RefocusError, match="size"):
            sharpen(img, size=size)


def test_sharpen_works_per_channel():
    rgb = np.stack([_texture(s, (32, 32), 0.2, 0.8) for s in range(3)], axis=-1)
    out = sharpen(rgb, 5, 1.0)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], sharpen(rgb[..., c], 5, 1.0), atol=1e-6)


# -------------------------------------------------------------------------------------------- unsharp


def test_unsharp_matches_numpy_reference_on_rgb():
    # scikit-image 0.26 unsharp_mask(channel_axis=-1) is wrong on RGB; this catches a regression to it.
    rgb = np.stack([_texture(s, (40, 50)) for s in range(3)], axis=-1)
    radius, amount = 2.0, 1.5
    blurred = ndimage.gaussian_filter(rgb.astype(np.float64), sigma=(radius, radius, 0), mode="reflect")
    expected = np.clip(rgb + amount * (rgb - blurred), 0, 1)
    np.testing.assert_allclose(unsharp(rgb, radius, amount), expected, atol=1e-5)
    for c in range(3):
        np.testing.assert_allclose(
            unsharp(rgb, radius, amount)[..., c], unsharp(rgb[..., c], radius, amount), atol=1e-6
        )


def test_unsharp_amount_zero_is_identity_and_uniform_is_kept():
    img = _texture(2)
    np.testing.assert_allclose(unsharp(img, 1.0, 0.0), img, atol=1e-6)
    flat = np.full((16, 16, 3), 0.6, np.float32)
    np.testing.assert_allclose(unsharp(flat, 3.0, 5.0), flat, atol=1e-6)


# ---------------------------------------------------------------------------------------------- CLAHE


def test_clahe_on_gray_is_scikit_image_with_opencv_clip_convention():
    from skimage.exposure import equalize_adapthist

    img = _texture(3, (64, 64), 0.3, 0.5)
    expected = equalize_adapthist(img, kernel_size=16, clip_limit=3.0 / 256, nbins=256)
    np.testing.assert_allclose(clahe(img, clip_limit=3.0, tile_size=16), expected, atol=1e-6)
    # larger clip limits allow more contrast (on a bell-shaped histogram, where clipping matters)
    bell = ndimage.gaussian_filter(_texture(3, (64, 64)), 1.5)
    assert clahe(bell, 4.0, 16).std() > clahe(bell, 1.0, 16).std() > bell.std()


@pytest.mark.parametrize("fn", [clahe, clahe_sharpen])
def test_luminance_methods_keep_channel_ratios(fn):
    rgb = _colour_texture(4)
    out = fn(rgb)
    ok = (out.max(axis=-1) < 0.999) & (out.min(axis=-1) > 0.01)  # away from black and from the gamut edge
    assert ok.mean() > 0.8
    for a, b in ((0, 1), (2, 1)):
        np.testing.assert_allclose((out[..., a] / out[..., b])[ok], (rgb[..., a] / rgb[..., b])[ok], rtol=1e-3)
    # ...while the luminance did change (contrast went up)
    y_in, y_out = rgb @ LUMA_WEIGHTS, out @ LUMA_WEIGHTS
    assert y_out.std() > 1.2 * y_in.std()
    # per-channel equalisation would have shifted the colour: show the test can tell the difference
    per_channel = np.stack([clahe(rgb[..., c]) for c in range(3)], axis=-1)
    assert np.abs(per_channel[..., 0] / per_channel[..., 1] - rgb[..., 0] / rgb[..., 1])[ok].mean() > 0.05


def test_clahe_luminance_equals_gray_clahe_of_luminance():
    rgb = _colour_texture(5)
    out = clahe(rgb, 2.0, 16)
    y = rgb @ LUMA_WEIGHTS
    ok = out.max(axis=-1) < 0.999
    np.testing.assert_allclose((out @ LUMA_WEIGHTS)[ok], clahe(y, 2.0, 16)[ok], atol=1e-4)


def test_clahe_sharpen_is_sharpened_clahe_on_luminance():
    rgb = _colour_texture(6)
    out = clahe_sharpen(rgb, 3.0, 16, size=5, amount=2.0)
    y = rgb @ LUMA_WEIGHTS
    expected = sharpen(clahe(y, 3.0, 16), 5, 2.0)
    ok = (out.max(axis=-1) < 0.999) & (expected > 0)
    np.testing.assert_allclose((out @ LUMA_WEIGHTS)[ok], expected[ok], atol=1e-4)
    grad = lambda im: np.abs(np.diff(im @ LUMA_WEIGHTS, axis=1)).mean()  # noqa: E731
    assert grad(out) > 1.1 * grad(clahe(rgb, 3.0, 16))


# ----------------------------------------------------------------------------------------- region-wise


def _half_blurred(seed=7, size=96):
    img = _texture(seed, (size, size), 0.3, 0.7)
    blurred = ndimage.gaussian_filter(img, 2.0)
    out = img.copy()
    out[:, size // 2 :] = blurred[:, size // 2 :]
    return out


def test_blur_map_finds_the_blurred_half():
    b = blur_map(_half_blurred())
    assert b[:, 8:40].mean() < 0.2
    assert b[:, 56:88].mean() > 0.8


def test_regionwise_sharpens_blurred_regions_more_than_sharp_ones():
    img = _half_blurred()
    radius, strong, weak = 1.5, 2.0, 0.25
    out = regionwise_sharpen(img, radius=radius, strong=strong, weak=weak)
    detail = img - ndimage.gaussian_filter(img.astype(np.float64), radius, mode="reflect")

    def gain(cols):  # effective unsharp amount applied in a region
        return float(np.abs(out - img)[:, cols].sum() / np.abs(detail)[:, cols].sum())

    sharp_gain, blurred_gain = gain(slice(8, 40)), gain(slice(56, 88))
    assert blurred_gain > 1.6 and sharp_gain < 0.5
    # and in absolute terms the blurred half changed more, relative to the detail it had
    assert blurred_gain > 4 * sharp_gain


# ------------------------------------------------------------------------------------ registry & inputs


@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_registry_methods_keep_shape_range_and_input(name):
    rgb = _colour_texture(8, 48)
    before = rgb.copy()
    out = CLASSICAL_METHODS[name](rgb)
    assert out.shape == rgb.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    np.testing.assert_array_equal(rgb, before)
    gray = CLASSICAL_METHODS[name](rgb[..., 0])
    assert gray.shape == rgb.shape[:2]
    tiny = CLASSICAL_METHODS[name](np.full((1, 1, 3), 0.5, np.float32))
    assert tiny.shape == (1, 1, 3) and np.isfinite(tiny).all()
    if name == "identity":
        np.testing.assert_array_equal(out, rgb)
    else:
        assert np.abs(out - rgb).max() > 1e-3


@pytest.mark.parametrize("name", [n for n in CLASSICAL_METHODS if n != "identity"])
def test_uint16_input_is_scaled_like_float(name):
    img = _colour_texture(9, 32)
    u16 = np.rint(img * 65535).astype(np.uint16)
    np.testing.assert_allclose(CLASSICAL_METHODS[name](u16), CLASSICAL_METHODS[name](u16 / 65535.0), atol=1e-4)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((0, 5, 3), np.float32), "empty"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 4), np.float32), "as_rgb"),
        (np.zeros((2, 8, 8), np.float32)[..., None], "shape"),
    ],
)
@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_bad_images_raise_refocus_error(name, image, match):
    with pytest.raises(RefocusError, match=match):
        CLASSICAL_METHODS[name](image)


@pytest.mark.parametrize(
    "call",
    [
        lambda im: sharpen(im, size=4),
        lambda im: sharpen(im, amount=0),
        lambda im: unsharp(im, radius=0),
        lambda im: unsharp(im, amount=float("nan")),
        lambda im: clahe(im, clip_limit=-1),
        lambda im: clahe(im, tile_size=1),
        lambda im: regionwise_sharpen(im, strong=-1),
        lambda im: unsharp(im, radius=1e7),  # took minutes and gigabytes before the bound
        lambda im: sharpen(im, amount=1e300),  # gave NaN: the kernel summed to 0
        lambda im: regionwise_sharpen(im, radius=300),
        lambda im: apply_classical(im, "median"),
        lambda im: apply_classical(im, "sharpen", radius=2),
    ],
)
def test_bad_parameters_raise_refocus_error(call):
    with pytest.raises(RefocusError):
        call(_texture(0, (16, 16)))


def test_a_tiny_sharpening_amount_is_nearly_the_identity():
    img = _texture(3, (16, 16))
    np.testing.assert_allclose(sharpen(img, 3, 1e-320), img, atol=1e-6)  # size²/amount overflowed before


@pytest.mark.parametrize("value", [0.0, 0.2, 1.0])
def test_clahe_leaves_a_constant_image_as_it_is(value):
    """scikit-image stretches the luminance first; with no range to stretch it made every constant white."""
    for image in (np.full((16, 20), value, np.float32), np.full((16, 20, 3), value, np.float32)):
        np.testing.assert_array_equal(clahe(image), image)


def test_apply_classical_passes_parameters():
    img = _texture(10, (32, 32), 0.3, 0.7)
    np.testing.assert_array_equal(apply_classical(img, "sharpen", size=5, amount=2.0), sharpen(img, 5, 2.0))
    assert set(classical.CLASSICAL_METHODS) >= {
        "identity",
        "sharpen",
        "unsharp",
        "clahe",
        "clahe+sharpen",
        "regionwise",
    }


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("method", ["sharpen", "unsharp", "clahe", "clahe+sharpen", "regionwise"])
def test_cli_classical_keeps_uint8(tmp_path, method):
    img = np.rint(_colour_texture(11, 40) * 255).astype(np.uint8)
    src = write_image(tmp_path / "in.png", img)
    out = tmp_path / "out.png"
    assert main(["classical", str(src), "--method", method, "-o", str(out)]) == 0
    res = read_image(out)
    assert res.dtype == np.uint8 and res.shape == img.shape
    expected = apply_classical(img.astype(np.float32) / 255, method)
    assert np.abs(res.astype(np.float32) / 255 - expected).max() <= 1 / 255 + 1e-6


def test_cli_classical_options_and_uint16_gray(tmp_path):
    img = np.rint(_texture(12, (40, 40), 0.2, 0.8) * 65535).astype(np.uint16)
    src = write_image(tmp_path / "in.tif", img)
    out = tmp_path / "out.tif"
    args = ["classical", str(src), "--method", "sharpen", "--kernel-size", "7", "--sharpen-amount", "2", "-o", str(out)]
    assert main(args) == 0
    res = read_image(out)
    assert res.dtype == np.uint16 and res.shape == img.shape
    expected = sharpen(img.astype(np.float32) / 65535, 7, 2.0)
    assert np.abs(res / 65535 - expected).max() < 2e-5


def test_cli_classical_runs_stacks_slice_by_slice_and_keeps_the_layout(tmp_path):
    stack = np.rint(np.stack([_colour_texture(s, 24) for s in (1, 2, 3)]) * 255).astype(np.uint8)
    src = write_image(tmp_path / "stack.tif", stack)
    assert main(["classical", str(src), "--method", "unsharp", "-o", str(tmp_path / "out.tif")]) == 0
    res = read_image(tmp_path / "out.tif")
    assert res.shape == stack.shape and res.dtype == np.uint8
    for s in range(3):
        expected = apply_classical(stack[s].astype(np.float32) / 255, "unsharp")
        assert np.abs(res[s] / 255 - expected).max() <= 1 / 255 + 1e-6
    one_channel = write_image(tmp_path / "c1.tif", stack[0, ..., :1])  # (H, W, 1) stays (H, W, 1)
    assert main(["classical", str(one_channel), "--method", "sharpen", "-o", str(tmp_path / "c1o.tif")]) == 0
    assert read_image(tmp_path / "c1o.tif").shape == (24, 24, 1)


def test_cli_classical_bad_input_exits_2(tmp_path, capsys):
    assert main(["classical", str(tmp_path / "missing.png"), "--method", "clahe", "-o", str(tmp_path / "o.png")]) == 2
    assert "error:" in capsys.readouterr().err
    src = write_image(tmp_path / "in.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["classical", str(src), "--method", "clahe", "--clip-limit", "0", "-o", str(tmp_path / "o.png")]) == 2
