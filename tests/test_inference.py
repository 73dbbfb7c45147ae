"""Inference engine: the model I/O contract, layouts and dtypes, exact tiling, devices, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_refocusgan.core import inference
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import Cancelled, StackConfig
from napari_refocusgan.core.focus import SMLParams, focus_channel
from napari_refocusgan.core.inference import (
    _axis_plan,
    _Moments,
    available_devices,
    check_delta,
    deblur,
    pick_device,
    receptive_field,
    refocus,
)
from napari_refocusgan.core.networks import Generator, InstanceNorm, deblur_config, refocus_config
from napari_refocusgan.core.weights import load_generator, save_generator


def make(cfg, seed: int = 0) -> Generator:
    """A random generator whose output differs from its input (the real init starts as the identity):
    every zero-initialised output head (residual, radiance blend, detail gains) is randomised."""
    torch.manual_seed(seed)
    g = Generator(cfg)
    for head in ("tail", "blend", "detail"):
        if hasattr(g, head):
            torch.nn.init.normal_(getattr(g, head)[1].weight, 0.0, 0.05)
    return g.eval()


@pytest.fixture(scope="module")
def g1():
    return make(deblur_config(ngf=6, n_blocks=2), seed=1)


@pytest.fixture(scope="module")
def g2():
    return make(refocus_config(ngf=6, n_blocks=2), seed=2)


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth blobs plus sharp detail in one half, float32 RGB in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.5 + 0.3 * np.sin(6 * yy[..., None] + np.array([0, 1, 2]) + 9 * xx[..., None])
    detail = rng.random((h, w, 3)) * (xx[..., None] > 0.5) * 0.3
    return np.clip(base + detail, 0, 1).astype(np.float32)


def reference(generator, x: torch.Tensor, delta=None) -> np.ndarray:
    """Run the generator directly on a prepared (1, C, H, W) input; (H, W, 3) in [0, 1]."""
    with torch.no_grad():
        y = generator(x, delta)
    return ((y[0].permute(1, 2, 0) + 1) / 2).numpy()


def to_signed(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] * 2 - 1


# --------------------------------------------------------------------------------------------- contract


def test_deblur_follows_the_model_io_contract(g1):
    img = textured(48, 64)
    rgb01 = torch.from_numpy(img).permute(2, 0, 1)[None]
    x = torch.cat([rgb01 * 2 - 1, focus_channel(rgb01, SMLParams())], dim=1)
    np.testing.assert_allclose(deblur(img, g1), reference(g1, x), atol=2e-6)
    assert np.abs(deblur(img, g1) - img).mean() > 0.01  # the test network really changes the image


def test_refocus_follows_the_model_io_contract(g2):
    img, rad = textured(48, 64, seed=1), textured(48, 64, seed=2)
    x = torch.cat([to_signed(img), to_signed(rad)], dim=1)
    np.testing.assert_allclose(refocus(img, 3.0, g2, radiance=rad), reference(g2, x, 3.0), atol=2e-6)
    assert np.abs(refocus(img, 3.0, g2, radiance=rad) - refocus(img, -3.0, g2, radiance=rad)).mean() > 1e-3


def test_odd_sizes_are_reflection_padded_to_a_multiple_of_4_and_cropped_back(g1):
    img = textured(61, 75)
    rgb01 = torch.from_numpy(img).permute(2, 0, 1)[None]
    x = torch.cat([rgb01 * 2 - 1, focus_channel(rgb01)], dim=1)  # focus on the real pixels, then pad
    expected = reference(g1, F.pad(x, (0, 1, 0, 3), mode="reflect"))[:61, :75]
    out = deblur(img, g1)
    assert out.shape == (61, 75, 3)
    np.testing.assert_allclose(out, expected, atol=2e-6)


def test_inference_instance_norm_matches_the_training_one():
    x = torch.randn(2, 5, 13, 17) * 3 + 1
    norm = InstanceNorm()
    with torch.no_grad():  # the layer_norm fast path
        fast = norm(x)
    x.requires_grad_(True)
    torch.testing.assert_close(fast, norm(x).detach(), atol=2e-6, rtol=0)
    torch.testing.assert_close(fast, F.instance_norm(x.detach(), eps=norm.eps), atol=2e-6, rtol=0)


def test_focus_channel_in_strips_equals_the_whole_image(monkeypatch):
    rgb = torch.from_numpy(textured(70, 40)).permute(2, 0, 1)[None]
    params = SMLParams(step=2, window=7)
    monkeypatch.setattr(inference, "FOCUS_STRIP_ROWS", 16)
    dest = torch.empty(70, 40)
    inference._focus_into(dest, rgb, params)
    torch.testing.assert_close(dest, focus_channel(rgb, params)[0, 0], atol=1e-6, rtol=0)


def test_refocus_computes_the_radiance_with_g1_when_not_given(g1, g2):
    img = textured(40, 52)
    with_g1 = refocus(img, -2.0, g2, deblur_model=g1)
    np.testing.assert_allclose(with_g1, refocus(img, -2.0, g2, radiance=deblur(img, g1)), atol=1e-6)


# --------------------------------------------------------------------------------------------- layouts


def test_dtypes_and_layouts_come_back_as_they_went_in(g1):
    img = textured(40, 44)
    float_out = deblur(img, g1)
    u8 = (img * 255).round().astype(np.uint8)
    out8 = deblur(u8, g1)
    assert out8.dtype == np.uint8 and out8.shape == u8.shape
    u16 = (img * 65535).round().astype(np.uint16)
    out16 = deblur(u16, g1)
    assert out16.dtype == np.uint16
    np.testing.assert_allclose(out16 / 65535, float_out, atol=2e-3)
    i16 = (img * 32767).round().astype(np.int16)  # signed 16 bits without negative values: 15-bit intensities
    out_i16 = deblur(i16, g1)
    assert out_i16.dtype == np.int16
    np.testing.assert_allclose(out_i16 / 32767, float_out, atol=2e-3)
    assert deblur(img.astype(np.float64), g1).dtype == np.float32

    gray = img.mean(axis=-1)
    out_gray = deblur(gray, g1)
    assert out_gray.shape == gray.shape
    np.testing.assert_allclose(out_gray, deblur(np.repeat(gray[..., None], 3, -1), g1).mean(-1), atol=1e-6)
    assert deblur(gray[..., None], g1).shape == (40, 44, 1)

    alpha = np.linspace(0, 1, 40 * 44, dtype=np.float32).reshape(40, 44, 1)
    rgba = np.concatenate([img, alpha], axis=-1)
    out_rgba = deblur(rgba, g1)
    assert out_rgba.shape == (40, 44, 4)
    np.testing.assert_array_equal(out_rgba[..., 3], alpha[..., 0])
    np.testing.assert_allclose(out_rgba[..., :3], float_out, atol=1e-6)


def test_input_array_is_not_modified(g1, g2):
    img = (textured(36, 36) * 255).astype(np.uint8)
    rad = img[::-1].copy()
    before, rad_before = img.copy(), rad.copy()
    deblur(img, g1, tile=16)
    refocus(img, 1.0, g2, radiance=rad)
    np.testing.assert_array_equal(img, before)
    np.testing.assert_array_equal(rad, rad_before)


def test_stacks_run_slice_by_slice(g1, g2):
    a, b = textured(32, 40, seed=3), textured(32, 40, seed=4)
    stack = np.stack([a, b])
    out = deblur(stack, g1)
    assert out.shape == stack.shape
    np.testing.assert_allclose(out[1], deblur(b, g1), atol=1e-6)
    gray = stack.mean(-1)[None]  # (1, 2, H, W): e.g. time × z
    out_gray = deblur(gray, g1)
    assert out_gray.shape == gray.shape
    np.testing.assert_allclose(out_gray[0, 0], deblur(gray[0, 0], g1), atol=1e-6)
    rad = deblur(stack, g1)
    np.testing.assert_allclose(
        refocus(stack, 2.0, g2, radiance=rad)[0], refocus(a, 2.0, g2, radiance=rad[0]), atol=1e-6
    )


# --------------------------------------------------------------------------------------------- tiling


def test_blend_weights_are_a_partition_of_unity():
    for length, tile, margin in [(1000, 256, 64), (128, 64, 32), (4000, 1024, 64), (96, 32, 0)]:
        total = torch.zeros(length, dtype=torch.float64)
        spans = _axis_plan(length, tile, margin)
        for s in spans:
            assert s.c0 % 4 == 0 and s.w0 % 4 == 0 and s.w1 - s.w0 <= s.c1 - s.c0 + 2 * margin
            start, stop, wgt = s.weights()
            assert s.w0 <= start and stop <= s.w1
            total[start:stop] += wgt.double()
        torch.testing.assert_close(total, torch.ones(length, dtype=torch.float64), atol=1e-6, rtol=0)
        assert spans[0].c0 == 0 and spans[-1].c1 == length


def test_moments_merge_like_one_big_sample():
    parts = [torch.randn(3, n) * (i + 1) + i for i, n in enumerate([10, 200, 37])]
    m = _Moments()
    for p in parts:
        var, mean = torch.var_mean(p, dim=1, correction=0)
        m.add(p.shape[1], mean, var)
    mean, var = m.stats("cpu")
    var_ref, mean_ref = torch.var_mean(torch.cat(parts, dim=1), dim=1, correction=0)
    torch.testing.assert_close(mean.view(-1), mean_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(var.view(-1), var_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [
        deblur_config(ngf=6, n_blocks=2),
        deblur_config(ngf=6, n_blocks=1, in_channels=3, focus_gate=False),  # G1 without the SML channel
        refocus_config(ngf=6, n_blocks=2),
        refocus_config(deltas=(-9, -5, 5, 9), mode="onehot", ngf=6, n_blocks=1),
        refocus_config(ngf=6, n_blocks=1, in_channels=3),  # single-stage G2
    ],
    ids=["g1", "g1-no-sml", "g2-continuous", "g2-onehot", "g2-single-stage"],
)
def test_tiled_output_equals_untiled(cfg):
    g = make(cfg, seed=5)
    img, rad = textured(100, 150, seed=6), textured(100, 150, seed=7)
    if cfg.delta_mode == "none":
        run = lambda **kw: deblur(img, g, **kw)
    else:
        run = lambda **kw: refocus(img, 5.0, g, radiance=rad, **kw)
    whole = run()
    calls = []
    tiled = run(tile=64, progress=lambda d, t: calls.append((d, t)))
    n_tiles = calls[-1][1] // inference._tiled_passes(g)
    assert n_tiles > 1 and calls[-1][0] == calls[-1][1]  # it really ran in tiles
    assert np.abs(tiled - whole).mean() < 1e-5  # exact up to float rounding (0.5/255 is the requirement)
    naive = run(tile=64, margin=0)  # no context at all: tiles visibly disagree
    assert np.abs(naive - whole).mean() > 1e-3


def test_threads_sharing_one_model_get_the_results_of_calls_one_at_a_time():
    """A tiled run fixes the norms' statistics on the shared generator: a second thread's run crashed (an
    internal _Stop) or came back up to 8/255 off."""
    import threading

    g = make(deblur_config(ngf=6, n_blocks=1), seed=8)
    images = [textured(96, 96, seed=s) for s in (9, 10)]
    expected = [deblur(img, g, tile=32) for img in images]
    results, errors = [None, None], []

    def work(k):
        try:
            for _ in range(3):
                results[k] = deblur(images[k], g, tile=32)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_a_call_waiting_for_a_shared_model_can_still_be_cancelled():
    import threading

    g = make(deblur_config(ngf=6, n_blocks=1), seed=8)
    held, release = threading.Event(), threading.Event()

    def hold():  # another thread's run, as far as the lock is concerned
        with inference._run_lock(g):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        with pytest.raises(Cancelled):
            deblur(textured(32, 32, seed=1), g, cancel=lambda: True)
        assert holder.is_alive()  # cancelled while waiting, not after the other run let go
    finally:
        release.set()
        holder.join()
    assert deblur(textured(32, 32, seed=1), g).shape == (32, 32, 3)  # the lock is free again


def test_margin_is_the_receptive_field_and_tiles_fit_the_stride_grid():
    cfg = deblur_config(n_blocks=6)  # ngf 32: the untiled budget is UNTILED_MAX_PIXELS
    assert receptive_field(cfg) == 63
    settings = inference.RunSettings(tile=500)
    assert settings.margin_for(cfg) == 64
    assert settings.tile_for(2000, 3000, cfg) == 500
    assert settings.tile_for(400, 480, cfg) is None  # one tile covers it: untiled
    assert inference.RunSettings(tile=50).tile_for(2000, 2000, cfg) == 128  # room for both blend ramps
    assert inference.RunSettings(tile=0).tile_for(4000, 6000, cfg) == inference.DEFAULT_TILE
    assert inference.RunSettings(tile=0).tile_for(1000, 1500, cfg) is None
    wide = deblur_config(ngf=64, n_blocks=9)  # wider generators tile sooner, with a wider margin
    assert inference.RunSettings(tile=0).tile_for(1800, 1500, wide) == inference.DEFAULT_TILE
    assert inference.RunSettings().margin_for(wide) == 88


def test_progress_cancel_and_model_state_are_handled(g1):
    img = textured(100, 100)
    g = make(deblur_config(ngf=6, n_blocks=1), seed=9).train()
    seen = []

    def cancel_after_three():
        return len(seen) >= 3

    with pytest.raises(Cancelled):
        deblur(img, g, tile=32, progress=lambda d, t: seen.append((d, t)), cancel=cancel_after_three)
    assert [d for d, _ in seen] == [1, 2, 3]
    assert g.training  # the caller's mode is restored
    assert all(m.fixed_stats is None for m in g.modules() if isinstance(m, InstanceNorm))
    # and the interrupted model still gives the right untiled result
    g.eval()
    np.testing.assert_allclose(deblur(img, g), deblur(img, make(deblur_config(ngf=6, n_blocks=1), seed=9)), atol=1e-6)


def test_an_untiled_forward_stops_between_residual_blocks_when_cancelled():
    img = textured(64, 64)
    g = make(deblur_config(ngf=4, n_blocks=3), seed=2)
    checks = []

    def cancel_inside_the_forward():
        checks.append(1)
        return len(checks) == 3  # the first check is before the forward; the next ones are between blocks

    with pytest.raises(Cancelled):
        deblur(img, g, tile=0, cancel=cancel_inside_the_forward)
    assert len(checks) == 3
    assert not any(b._forward_pre_hooks for b in g.blocks) and not g.up._forward_pre_hooks  # hooks removed
    np.testing.assert_allclose(deblur(img, g), deblur(img, make(deblur_config(ngf=4, n_blocks=3), seed=2)), atol=1e-6)


def test_loaded_models_carry_their_sml_parameters(tmp_path, g1):
    path = tmp_path / "g1.safetensors"
    params = SMLParams(step=2, window=3, threshold=0.0)
    save_generator(g1, path, "deblur", sml_params=params)
    img = textured(40, 40)
    loaded = load_generator(path)
    assert loaded.sml == params
    np.testing.assert_allclose(deblur(img, loaded), deblur(img, g1, sml_params=params), atol=1e-6)
    assert np.abs(deblur(img, loaded) - deblur(img, g1)).max() > 1e-4


# --------------------------------------------------------------------------------------------- devices


def test_devices():
    assert available_devices()[-1] == "cpu"
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto").type != "cuda"
        with pytest.raises(RefocusError, match="not available here; available: .*cpu"):
            pick_device("cuda:1")
    with pytest.raises(RefocusError, match="unknown device 'gpu0'"):
        pick_device("gpu0")


def test_bf16_on_cpu_stays_close_and_warns_where_it_is_emulated(g1):
    img = textured(32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = deblur(img, g1, precision="bf16")
    assert np.abs(out - deblur(img, g1)).mean() < 0.02
    emulated = not inference.bf16_is_native(torch.device("cpu"))
    assert any("no fast path" in str(w.message) for w in caught) == emulated


# --------------------------------------------------------------------------------------------- bad input


def test_a_bool_mask_runs_as_8_bit_0_and_255(g1):
    """As a 1-bit file reads; it was refused here while the classical tools took it."""
    mask = np.zeros((16, 20), bool)
    mask[4:12, 5:15] = True
    out = deblur(mask, g1)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, deblur(mask.astype(np.uint8) * 255, g1))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((16, 16, 3), np.int32), "dtype int32"),
        (np.zeros((16, 16), np.complex64), "dtype complex64"),
        (np.zeros((1, 1, 3), np.uint8), "1×1 pixels; the networks need at least 8×8"),
        (np.zeros((1, 1), np.float32), "1×1 pixels"),
        (np.zeros((7, 30, 3), np.float32), "7×30 pixels"),
        (np.full((16, 16, 3), np.nan, np.float32), "NaN or Inf"),
        (np.full((16, 16), np.inf), "NaN or Inf"),
        (np.full((16, 16), -0.5, np.float32), "values -0.5…-0.5; intensities cannot be negative"),
        (np.full((16, 16), -3, np.int16), "int16 with values down to -3; intensities cannot be negative"),
        (np.zeros((0, 16, 3), np.uint8), "empty"),
        (np.zeros((16, 16, 2), np.uint8), "last axis of 2"),
        (np.zeros(16, np.uint8), "expected a 2-D image"),
        ("not an image", "dtype <U12"),
    ],
)
def test_bad_images_are_clear_errors(g1, image, message):
    with pytest.raises(RefocusError, match=message):
        deblur(image, g1)


def test_bad_delta_and_wrong_models(g1, g2):
    img = textured(16, 16)
    with pytest.raises(RefocusError, match=r"δ = \+12 is outside this model's trained range -9 … \+9"):
        refocus(img, 12, g2, radiance=img)
    onehot = make(refocus_config(deltas=(-9, -5, 5, 9), mode="onehot", ngf=4, n_blocks=1))
    assert check_delta(onehot, -5) == -5.0
    with pytest.raises(
        RefocusError, match=r"δ = \+2 is not one this model was trained for; choose one of -9, -5, \+5, \+9"
    ):
        check_delta(onehot, 2)
    for bad in (float("nan"), "x", None):
        with pytest.raises(RefocusError, match="δ must be"):
            check_delta(g2, bad)
    with pytest.raises(RefocusError, match="deblur .* model; it takes no δ"):
        check_delta(g1, 1.0)
    with pytest.raises(RefocusError, match="deblurring needs a G1"):
        deblur(img, g2)
    with pytest.raises(RefocusError, match="refocusing needs a G2"):
        refocus(img, 1.0, g1, radiance=img)
    with pytest.raises(RefocusError, match="needs the radiance"):
        refocus(img, 1.0, g2)
    with pytest.raises(RefocusError, match="radiance has shape"):
        refocus(img, 1.0, g2, radiance=textured(16, 20))
    with pytest.raises(RefocusError, match="radiance is grayscale but the image is in colour"):
        refocus(img, 1.0, g2, radiance=img.mean(axis=-1))
    gray = img.mean(axis=-1)
    assert refocus(gray, 1.0, g2, radiance=img).shape == gray.shape  # a colour radiance of a gray image is fine
    with pytest.raises(RefocusError, match="expected a generator"):
        deblur(img, "g1.safetensors")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tile": -1}, "tile must be"),
        ({"tile": 1.5}, "tile must be"),
        ({"margin": 6}, "multiple of 4"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"device": "tpu"}, "unsupported device|unknown device"),
    ],
)
def test_bad_run_settings(g1, kwargs, message):
    with pytest.raises(RefocusError, match=message):
        deblur(textured(16, 16), g1, **kwargs)


def test_slight_float_overshoot_is_clipped_like_the_boundary(g1):
    img = textured(16, 16)
    over = img.copy()
    over[0, 0] = 1.03  # cubic shift-and-sum overshoots a little at edges
    over[1, 1] = -0.02
    clipped = np.clip(over, 0, 1)
    np.testing.assert_array_equal(deblur(over, g1), deblur(clipped, g1))


def test_a_delta_change_reuses_the_encoder_and_blurs_and_gives_the_same_output(monkeypatch):
    """Only δ changed: the δ-free encoder output and source blurs are reused, and the output equals that of
    an independent copy of the network; a new radiance or a weight update recomputes them."""
    import copy

    import napari_refocusgan.core.inference as inf

    g = make(refocus_config(ngf=4, n_blocks=1), seed=4)
    for p in g.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    img, rad, other = textured(40, 44), textured(40, 44, seed=7), textured(40, 44, seed=8)

    pristine = copy.deepcopy(g)

    def expected(radiance, delta):
        twin = copy.deepcopy(pristine)  # another generator: its own cache entry, computed from scratch
        return refocus(img, delta, twin, radiance=radiance, tile=0)

    encodes = []
    real_encode = g.encode
    monkeypatch.setattr(g, "encode", lambda x: encodes.append(1) or real_encode(x))
    inf._delta_cache.clear()
    first = refocus(img, 3.0, g, radiance=rad, tile=0)
    second = refocus(img, -6.0, g, radiance=rad, tile=0)
    assert len(encodes) == 1  # the δ change reused the encoder output
    np.testing.assert_array_equal(first, expected(rad, 3.0))
    np.testing.assert_array_equal(second, expected(rad, -6.0))
    assert not np.array_equal(first, second)

    np.testing.assert_array_equal(refocus(img, -6.0, g, radiance=other, tile=0), expected(other, -6.0))
    assert len(encodes) == 2  # a new radiance
    with torch.no_grad():
        g.head[1].weight.mul_(1.5)  # weights changed in place
        pristine.head[1].weight.mul_(1.5)
    changed = refocus(img, -6.0, g, radiance=other, tile=0)
    assert len(encodes) == 3
    np.testing.assert_array_equal(changed, expected(other, -6.0))
    g.load_state_dict(pristine.state_dict())  # new weights loaded into the same network
    refocus(img, -6.0, g, radiance=other, tile=0)
    assert len(encodes) == 4


def test_images_too_large_for_the_delta_cache_give_the_same_output(monkeypatch):
    import napari_refocusgan.core.inference as inf

    g = make(refocus_config(ngf=4, n_blocks=1), seed=5)
    for p in g.parameters():
        torch.nn.init.normal_(p, 0, 0.05)
    img, rad = textured(40, 44, seed=3), textured(40, 44, seed=4)
    inf._delta_cache.clear()
    cached = refocus(img, 2.5, g, radiance=rad, tile=0)
    monkeypatch.setattr(inf, "DELTA_CACHE_MAX_PIXELS", 100)
    inf._delta_cache.clear()
    np.testing.assert_allclose(refocus(img, 2.5, g, radiance=rad, tile=0), cached, atol=1e-6)
    assert not inf._delta_cache  # nothing kept for a large image


def test_callbacks_that_are_not_functions_are_named_before_any_work(g1):
    """A bool cancel or a number as progress failed at the first check, in words that named neither."""
    import threading

    from napari_refocusgan.core.blur_compare import blur_and_compare
    from napari_refocusgan.core.focus_stacking import all_in_focus

    img = textured(32, 32, seed=3)
    for kwargs, message in (({"progress": 5}, "progress must be a function"),
                            ({"cancel": True}, "cancel must be a function"),
                            ({"cancel": threading.Event()}, "pass its is_set")):  # fmt: skip
        for run in (lambda **kw: deblur(img, g1, **kw), lambda **kw: blur_and_compare(img, img, **kw),
                    lambda **kw: all_in_focus(np.stack([img, img]), **kw)):  # fmt: skip
            with pytest.raises(RefocusError, match=message):
                run(**kwargs)


def test_every_core_function_reads_device_names_the_same_way():
    """Only deblur/refocus took 'CPU' or 'auto'; the others handed the name to torch (a RuntimeError listing
    torch's device types, or an AssertionError for an absent CUDA), and 'meta' weights failed later."""
    import torch

    from napari_refocusgan.core.blur_compare import blur_and_compare
    from napari_refocusgan.core.focalstack import focal_stack
    from napari_refocusgan.core.focus import sml
    from napari_refocusgan.core.focus_stacking import all_in_focus
    from napari_refocusgan.core.weights import load_generator

    img = textured(24, 24, seed=4)
    views = np.broadcast_to(img, (3, 3, 24, 24, 3))
    calls = {
        "sml": lambda d: sml(img, device=d),
        "focal_stack": lambda d: focal_stack(views, StackConfig(views=3, keep=None), device=d),
        "blur_and_compare": lambda d: blur_and_compare(img, img, device=d),
        "all_in_focus": lambda d: all_in_focus(np.stack([img, img]), device=d),
        "load_generator": lambda d: load_generator("deblur", d),
    }
    for name, call in calls.items():
        call("CPU")
        call(torch.device("cpu"))
        call(None)  # None keeps these functions' own default, the CPU (not "auto": a GPU when there is one)
        bad = ["meta", 1] + ([] if torch.cuda.is_available() else ["cuda"])
        for device in bad:
            with pytest.raises(RefocusError, match="device"):
                call(device)


def test_the_bit_depth_that_dim_data_fills_does_not_change_the_result(g1, g2):
    """10-bit and 12-bit data in 16-bit files (the same scene, 4× apart) are brightened alike for the networks
    (imaging.exposure_gain) and come back at their own level: the networks were not trained on images this dim."""
    img12 = np.rint(textured(40, 48, seed=5) * 4095).astype(np.uint16)
    img10 = img12 // 4
    img12 = img10 * 4  # exactly 4× apart
    rad12 = np.rint(textured(40, 48, seed=6) * 4095).astype(np.uint16) // 4 * 4
    runs = {
        "deblur": lambda im, rad: deblur(im, g1),
        "refocus, given radiance": lambda im, rad: refocus(im, 3.0, g2, radiance=rad),
        "refocus, radiance by G1": lambda im, rad: refocus(im, -3.0, g2, deblur_model=g1),
    }
    for name, run in runs.items():
        out12 = run(img12, rad12).astype(np.float64)
        out10 = run(img10, rad12 // 4).astype(np.float64)
        assert out12.max() < 65535 / 2, name  # dimmed back towards the input's level
        np.testing.assert_allclose(out12, 4 * out10, atol=2.5, err_msg=name)  # rounding of each output to counts
        assert np.abs(out12 - img12).mean() > 5, name  # the test networks really change the image


def test_float_images_on_a_scale_of_their_own_come_back_on_it(g1, g2):
    """A float image of 0..4000 (photon counts, say) runs as the same image in [0, 1] and comes back on its
    scale; its radiance shares it, and a radiance on another scale is refused."""
    unit, rad = textured(40, 48, seed=7), textured(40, 48, seed=8)
    unit[0, 0, 0] = rad[0, 0, 0] = 1.0  # full scale 1
    counts = np.float32(4000)
    np.testing.assert_allclose(deblur(unit * counts, g1), deblur(unit, g1) * counts, rtol=1e-5, atol=0.02)
    np.testing.assert_allclose(
        refocus(unit * counts, 2.0, g2, radiance=rad * counts), refocus(unit, 2.0, g2, radiance=rad) * counts,
        rtol=1e-5, atol=0.02,
    )  # fmt: skip
    with pytest.raises(RefocusError, match="image and radiance are on different scales"):
        refocus(unit, 2.0, g2, radiance=rad * counts)


def test_the_slices_of_a_float_stack_share_its_full_scale(g1, g2):
    """Each slice of a float stack used to get its own full scale: a slice peaking at 1.25 in a stack reaching 200
    was taken as [0, 1] and clipped at 1. The whole stack's scale applies to every slice, and a radiance whose peak
    differs from its image's (a sharp one peaks higher) shares the pair's larger scale."""
    unit = textured(32, 40, seed=9)
    unit[0, 0, 0] = 1.0
    stack = np.stack([unit * 200, unit * 1.25]).astype(np.float32)
    out = deblur(stack, g1)
    np.testing.assert_allclose(out[1], deblur(unit * 1.25 / 200, g1) * 200, rtol=1e-5, atol=1e-3)
    assert out[1].max() > 1.0  # not clipped at 1
    dim_image, bright_radiance = unit * 55, unit * 250
    np.testing.assert_allclose(
        refocus(dim_image, 2.0, g2, radiance=bright_radiance),
        refocus(unit * 55 / 250, 2.0, g2, radiance=unit) * 250,
        rtol=1e-5, atol=1e-3,
    )  # fmt: skip
    u8 = np.rint(unit * 255).astype(np.uint8)
    refocus(u8, 2.0, g2, radiance=unit)  # a float [0, 1] radiance goes with an 8-bit image
    with pytest.raises(RefocusError, match="radiance is float on a scale of its own .* partner is an 8/16-bit image"):
        refocus(u8, 2.0, g2, radiance=unit * 255)
    with pytest.raises(RefocusError, match="image and radiance are on different scales"):
        refocus(unit, 2.0, g2, radiance=unit * 255)


def test_one_slice_taken_at_the_scale_of_its_stack(g1, g2):
    """What the widgets' "slice shown" modes do: one slice of a float stack, given the stack's full scale, gives
    that slice of the whole stack's result; a slice beyond the scale it claims is refused."""
    unit = textured(32, 40, seed=12)
    unit[0, 0, 0] = 1.0
    stack = np.stack([unit * 200, unit * 1.25]).astype(np.float32)
    np.testing.assert_allclose(deblur(stack[1], g1, full_scale=200.0), deblur(stack, g1)[1], rtol=1e-5, atol=1e-4)
    radiance = deblur(stack, g1)
    np.testing.assert_allclose(
        refocus(stack[1], 2.0, g2, radiance=radiance[1], full_scale=200.0),
        refocus(stack, 2.0, g2, radiance=radiance)[1],
        rtol=1e-5, atol=1e-4,
    )  # fmt: skip
    with pytest.raises(RefocusError, match="beyond the full scale 100 it must share"):
        deblur(stack[0], g1, full_scale=100.0)


def test_tile_used_is_the_tile_a_run_takes():
    """What the widgets record: a tile too small for the blend margins is enlarged, one larger than the image
    runs it whole, and auto tiles only images beyond the untiled budget."""
    cfg = deblur_config(ngf=32, n_blocks=6)
    margin = inference.RunSettings().margin_for(cfg)
    assert inference.tile_used(cfg, (1000, 1000), 8) == max(2 * margin, 16)
    assert inference.tile_used(cfg, (1000, 1000), 302) == max(304, 2 * margin)
    assert inference.tile_used(cfg, (100, 120), 256) is None
    assert inference.tile_used(cfg, (100, 120)) is None
    assert inference.tile_used(cfg, (4000, 6000), 0) == inference.DEFAULT_TILE
    with pytest.raises(RefocusError, match="tile must be a whole number"):
        inference.tile_used(cfg, (100, 100), -4)
