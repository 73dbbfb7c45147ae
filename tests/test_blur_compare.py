"""Blur-and-compare refocusing (paper Fig. 4): kernels, σ estimation with known blur, synthetic near↔far."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_refocusgan.cli import main
from napari_refocusgan.core.blur_compare import (
    blur_and_compare,
    defocus_blur_torch,
    disk_kernel,
    gaussian_blur_torch,
    gaussian_kernel1d,
    parse_radii,
)
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import Cancelled, StackConfig, focal_stack
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


def _texture(seed=0, size=64, channels=3):
    rng = np.random.default_rng(seed)
    shape = (size, size, channels) if channels else (size, size)
    return (0.2 + 0.6 * rng.random(shape)).astype(np.float32)


def _disk_blur(img, radius):
    k = disk_kernel(radius)
    if img.ndim == 3:
        k = k[..., None]
    return ndimage.correlate(img.astype(np.float64), k, mode="nearest").astype(np.float32)


# --------------------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("radius", [0.75, 1.0, 2.0, 3.3, 4.0])
def test_disk_kernel_is_a_normalised_pillbox(radius):
    k = disk_kernel(radius).astype(np.float64)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k[::-1], atol=1e-7)
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    # the support area is π r² and the per-axis variance of a uniform disk is r²/4
    assert k.max() * np.pi * radius**2 == pytest.approx(1.0, rel=0.02)
    if radius >= 2:  # below that the pixel grid dominates the shape
        c = np.arange(k.shape[0]) - k.shape[0] // 2
        var = (k * c[None, :] ** 2).sum()
        assert var == pytest.approx(radius**2 / 4 + 1 / 12, rel=0.05)  # + pixel-box variance


def test_radius_zero_is_identity_and_gaussian_kernel_is_normalised():
    np.testing.assert_array_equal(disk_kernel(0.0), [[1.0]])
    np.testing.assert_array_equal(gaussian_kernel1d(0.0), [1.0])
    k = gaussian_kernel1d(1.5)
    assert k.sum() == pytest.approx(1.0, abs=1e-6) and k.size == 2 * 6 + 1
    x = torch.rand(1, 3, 10, 12)
    assert torch.equal(defocus_blur_torch(x, 0.0, "disk"), x)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_blurs_match_scipy(requires_grad):
    img = _texture(1, 40)
    x = torch.from_numpy(np.moveaxis(img, -1, 0).copy())[None].requires_grad_(requires_grad)
    g = gaussian_blur_torch(x, 1.7)[0].detach().numpy()
    expected = ndimage.gaussian_filter(img, (1.7, 1.7, 0), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(np.moveaxis(g, 0, -1), expected, atol=1e-5)
    d = defocus_blur_torch(x, 2.5, "disk")[0].detach().numpy()
    np.testing.assert_allclose(np.moveaxis(d, 0, -1), _disk_blur(img, 2.5), atol=1e-5)


def test_parse_radii():
    assert parse_radii("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_radii("0, 1.5,3") == [0.0, 1.5, 3.0]
    for bad in ("a:b:c", "0:1:0", "0:1", "0,1,,2"):
        with pytest.raises(RefocusError, match="must look like"):
            parse_radii(bad)
    with pytest.raises(RefocusError, match="at most 512 candidate radii"):
        parse_radii("0:4:1e-300")  # a positive step, but far too many levels


# ------------------------------------------------------------------------------------- known defocus


def test_uniform_known_blur_is_found_and_inverted():
    radiance = _texture(2, 64)
    blurred = _disk_blur(radiance, 2.0)
    res = blur_and_compare(blurred, radiance, sigma_max=3.0)
    inner = res.sigma[8:-8, 8:-8]
    assert np.median(inner) == 2.0 and np.mean(inner == 2.0) > 0.95
    # σ' = 3 − 2 = 1: the output is the radiance blurred by a disk of radius 1
    assert psnr(res.refocused[8:-8, 8:-8], _disk_blur(radiance, 1.0)[8:-8, 8:-8]) > 45
    assert res.sigma_max == 3.0 and res.refocused.dtype == np.float32 and res.sigma.shape == (64, 64)


def test_two_regions_swap_focus():
    radiance = _texture(3, 96)
    near_focused = radiance.copy()
    near_focused[:, 48:] = _disk_blur(radiance, 3.0)[:, 48:]  # right half out of focus
    res = blur_and_compare(near_focused, radiance)  # σ_max from the data: 3
    assert res.sigma_max == pytest.approx(3.0)
    assert np.all(res.sigma[8:-8, 8:40] == 0) and np.all(res.sigma[8:-8, 56:88] == 3.0)
    far_focused = radiance.copy()
    far_focused[:, :48] = _disk_blur(radiance, 3.0)[:, :48]
    crop = (slice(8, -8), np.r_[8:40, 56:88])
    assert psnr(res.refocused[crop], far_focused[crop]) > 45


def test_uncached_second_pass_gives_the_same_result(monkeypatch):
    from napari_refocusgan.core import blur_compare as bc

    radiance = _texture(8, 48)
    blurred = _disk_blur(radiance, 1.0)
    cached = blur_and_compare(blurred, radiance, sigma_max=4.5)  # beyond the candidates: extended grid
    monkeypatch.setattr(bc, "CACHE_BYTES", 0)
    uncached = blur_and_compare(blurred, radiance, sigma_max=4.5)
    np.testing.assert_array_equal(cached.refocused, uncached.refocused)
    np.testing.assert_array_equal(cached.sigma, uncached.sigma)
    # σ' = 3.5 on the 1-px-blurred content
    assert psnr(cached.refocused[8:-8, 8:-8], _disk_blur(radiance, 3.5)[8:-8, 8:-8]) > 40


def test_gaussian_kernel_finds_gaussian_blur_and_gray_works():
    radiance = _texture(4, 64, channels=0)
    blurred = ndimage.gaussian_filter(radiance, 1.0, mode="nearest")
    res = blur_and_compare(blurred, radiance, kernel="gaussian", sigma_max=1.5)
    assert res.refocused.shape == (64, 64)
    assert np.median(res.sigma[8:-8, 8:-8]) == 1.0
    expected = ndimage.gaussian_filter(radiance, 0.5, mode="nearest")
    assert psnr(res.refocused[8:-8, 8:-8], expected[8:-8, 8:-8]) > 40


# ---------------------------------------------------------------------------------- synthetic scenes


@pytest.mark.parametrize("seed", [0, 3])
def test_synthetic_near_to_far_and_back_beats_identity(seed):
    scene = render_scene(seed, (96, 96))
    stack, slopes, _ = focal_stack(scene.views, StackConfig())
    near = int(np.argmin(np.abs(slopes - min(scene.layer_disparities))))
    far = int(np.argmin(np.abs(slopes - max(scene.layer_disparities))))
    assert far - near >= 5  # the scene spans most of the stack
    for src, dst in ((near, far), (far, near)):
        out = blur_and_compare(stack[src], scene.centre).refocused
        assert psnr(out, stack[dst]) > psnr(stack[src], stack[dst]) + 5


# ------------------------------------------------------------------------------ inputs and callbacks


def test_integer_inputs_are_scaled_and_inputs_untouched():
    radiance = _texture(5, 48)
    blurred = _disk_blur(radiance, 1.5)
    ref = blur_and_compare(blurred, radiance, sigma_max=2.0)
    u16 = np.rint(blurred * 65535).astype(np.uint16)
    r16 = np.rint(radiance * 65535).astype(np.uint16)
    before = (u16.copy(), r16.copy())
    res = blur_and_compare(u16, r16, sigma_max=2.0)
    np.testing.assert_array_equal(u16, before[0])
    np.testing.assert_array_equal(r16, before[1])
    assert np.abs(res.refocused - ref.refocused).max() < 1e-3
    one = blur_and_compare(np.full((1, 1, 3), 0.5, np.float32), np.full((1, 1, 3), 0.5, np.float32))
    assert one.refocused.shape == (1, 1, 3) and one.sigma.shape == (1, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(image=np.zeros((0, 4, 3))), "empty"),
        (dict(image=np.full((16, 16, 3), np.nan)), "NaN"),
        (dict(radiance=np.zeros((16, 20, 3))), "same size"),
        (dict(image=np.zeros((2, 16, 16, 3))), "shape"),
        (dict(radii=[1.0]), "two"),
        (dict(radii=[0.0, -1.0]), "0…32"),
        (dict(radii=[0.0, 1e6]), "0…32"),  # would build a 2-million-pixel kernel
        (dict(radii="0,1,2"), "numbers"),
        (dict(radii=list(range(600))), "at most"),
        (dict(radiance=np.full((16, 16, 3), np.nan)), "NaN"),
        (dict(radiance=np.zeros((0, 16, 3))), "empty"),
        (dict(patch=4), "odd"),
        (dict(kernel="box"), "kernel"),
        (dict(sigma_max=-1.0), "sigma_max"),
        (dict(sigma_max=1e9), "sigma_max"),
        (dict(sigma_max="2"), "sigma_max"),
    ],
)
def test_bad_inputs_raise_refocus_error(kwargs, match):
    args = dict(image=np.zeros((16, 16, 3), np.float32), radiance=np.zeros((16, 16, 3), np.float32))
    args.update(kwargs)
    image, radiance = args.pop("image"), args.pop("radiance")
    with pytest.raises(RefocusError, match=match):
        blur_and_compare(image, radiance, **args)


def test_progress_and_cancel():
    img = _texture(6, 24)
    seen = []
    blur_and_compare(img, img, radii=[0, 1, 2], progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and len(seen) == seen[-1][1]
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        blur_and_compare(img, img, cancel=cancel)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_blur_compare_writes_refocused_and_sigma_map(tmp_path):
    radiance = _texture(7, 48)
    blurred = _disk_blur(radiance, 2.0)
    src = write_image(tmp_path / "in.png", np.rint(blurred * 255).astype(np.uint8))
    rad = write_image(tmp_path / "radiance.png", np.rint(radiance * 255).astype(np.uint8))
    out, smap = tmp_path / "out.png", tmp_path / "sigma.tif"
    argv = [
        "blur-compare",
        str(src),
        "--radiance",
        str(rad),
        "--sigma-max",
        "3",
        "-o",
        str(out),
        "--sigma-map",
        str(smap),
    ]
    assert main(argv) == 0
    res, sigma = read_image(out), read_image(smap)
    assert res.dtype == np.uint8 and res.shape == (48, 48, 3)
    assert sigma.dtype == np.float32 and np.median(sigma[8:-8, 8:-8]) == 2.0
    assert psnr(res[8:-8, 8:-8] / 255, _disk_blur(radiance, 1.0)[8:-8, 8:-8]) > 40
    bad = ["blur-compare", str(src), "--radiance", str(rad), "--radii", "x", "-o", str(out)]
    assert main(bad) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "tpu"], "device"),
        (["--sigma-max", "1e9"], "sigma_max"),
        (["--radiance", "{tmp}/missing.png"], "does not exist"),
        (["--sigma-map", "{tmp}/in.png/sigma.tif"], "is a file, not a folder"),  # checked before writing -o
    ],
)
def test_cli_blur_compare_bad_options_are_messages(tmp_path, capsys, extra, message):
    img = write_image(tmp_path / "in.png", np.zeros((16, 16, 3), np.uint8))
    argv = ["blur-compare", str(img), "--radiance", str(img), "-o", str(tmp_path / "o.png")]
    assert main(argv + [a.format(tmp=tmp_path) for a in extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_a_gray_image_with_a_colour_radiance_gives_torch_no_read_only_array():
    """The colour side reached torch as a read-only broadcast view: a UserWarning on every such run."""
    import warnings

    sharp = np.random.default_rng(8).random((24, 28, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = blur_and_compare(sharp.mean(axis=-1), sharp)
    assert result.refocused.shape == (24, 28)


def test_a_colour_image_with_a_gray_radiance_is_refused():
    """The result is the re-blurred radiance: the image's colour was silently dropped."""
    from napari_refocusgan.core.blur_compare import blur_and_compare_image

    sharp = np.random.default_rng(8).random((24, 28, 3)).astype(np.float32)
    for run in (blur_and_compare, blur_and_compare_image):
        with pytest.raises(RefocusError, match="radiance is grayscale but the image is in colour"):
            run(sharp, sharp.mean(axis=-1))


def test_blur_and_compare_image_gives_the_result_back_as_the_input_came():
    """8 bits stay 8 bits and RGBA keeps its alpha (the CLI and the widget both use this)."""
    from napari_refocusgan.core.blur_compare import blur_and_compare_image
    from napari_refocusgan.core.imaging import from_float

    rng = np.random.default_rng(9)
    sharp = ndimage.gaussian_filter(rng.random((32, 32, 3)), (1, 1, 0)).astype(np.float32)
    alpha = rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)
    rgba = np.concatenate([from_float(sharp, np.uint8), alpha], axis=-1)
    result = blur_and_compare_image(rgba, sharp)
    assert result.refocused.dtype == np.uint8 and result.refocused.shape == (32, 32, 4)
    np.testing.assert_array_equal(result.refocused[..., 3:], alpha)
    expected = blur_and_compare(rgba[..., :3], sharp).refocused
    np.testing.assert_array_equal(result.refocused[..., :3], from_float(expected, np.uint8))
    with pytest.raises(RefocusError, match="layer 'r' has shape"):
        blur_and_compare_image(sharp, np.zeros((32, 32, 2), np.float32), names=("i", "layer 'r'"))


@pytest.mark.parametrize(("kwargs", "message"), [({"patch": 6.5}, "patch must be a whole number"),
                                                 ({"sigma_max": True}, "sigma_max must be a number")])
def test_blur_and_compare_settings_of_the_wrong_type_are_named(kwargs, message):
    """patch 6.5 passed the odd test; sigma_max=True failed inside torch."""
    img = np.random.default_rng(3).random((24, 24)).astype(np.float32)
    with pytest.raises(RefocusError, match=message):
        blur_and_compare(img, img, **kwargs)
