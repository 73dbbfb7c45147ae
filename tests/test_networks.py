"""The generators themselves: identity start, δ conditioning that survives InstanceNorm, old configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_refocusgan.core.networks import Generator, GeneratorConfig, deblur_config, refocus_config


def _batch(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 6, size, size), generator=g) * 2 - 1


@pytest.mark.parametrize("cfg", [deblur_config(ngf=4, n_blocks=1), refocus_config(ngf=4, n_blocks=1)])
def test_a_fresh_generator_is_the_identity(cfg):
    torch.manual_seed(0)
    model = Generator(cfg).eval()
    x = _batch()[:, : cfg.in_channels]
    delta = None if cfg.delta_mode == "none" else torch.full((4,), 3.0)
    with torch.no_grad():
        assert torch.equal(model(x, delta), x[:, :3].clamp(-1, 1))


def test_a_spatially_constant_delta_map_barely_passes_instance_norm_but_modulation_does():
    # Why G2 modulates its blocks: a δ that enters only as a constant map is removed by the next
    # InstanceNorm, except for what the transposed convs' stride pattern lets through.
    gaps = {}
    for modulation in (False, True):
        torch.manual_seed(0)
        model = Generator(refocus_config(ngf=4, n_blocks=1, delta_modulation=modulation)).eval()
        torch.nn.init.normal_(model.tail[1].weight, 0, 0.02)  # a trained-looking tail
        last = model.delta.net[-1]
        with torch.no_grad():  # every position of the δ map gets the same value, which still depends on δ
            last.weight[:] = last.weight[0:1].clone()
            last.bias[:] = last.bias[0].clone()
            x = _batch(1)
            gaps[modulation] = float((model(x, torch.tensor([-9.0])) - model(x, torch.tensor([9.0]))).abs().mean())
    assert gaps[True] > 0.01
    assert gaps[False] < 0.02 * gaps[True], gaps


def test_g2_learns_a_target_that_depends_on_the_sign_of_delta():
    # δ < 0: keep the image; δ > 0: blur it. No δ-blind network can get both: the best it can do is an
    # L1 of half the blur's change. The conditioned G2 must get well below that on a fixed batch.
    torch.manual_seed(0)
    model = Generator(refocus_config(ngf=8, n_blocks=1, dropout=0.0))
    x = _batch(4, seed=1)
    x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # smoother: blur is learnable
    blurred = F.avg_pool2d(x[:, :3], 5, stride=1, padding=2, count_include_pad=False)
    delta = torch.tensor([-9.0, 9.0, -9.0, 9.0])
    target = torch.where((delta > 0).view(-1, 1, 1, 1), blurred, x[:, :3])
    blind_floor = 0.5 * (blurred - x[:, :3]).abs().mean()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(150):
        opt.zero_grad()
        loss = (model(x, delta) - target).abs().mean()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * float(blind_floor), (float(loss), float(blind_floor))


def test_configs_saved_before_delta_modulation_load_without_it():
    old = refocus_config(ngf=4, n_blocks=1).to_dict()
    del old["delta_modulation"]
    cfg = GeneratorConfig.from_dict(old)
    assert not cfg.delta_modulation
    assert not hasattr(Generator(cfg), "modulation")


def test_radiance_blend_of_one_returns_the_radiance_and_of_minus_one_extrapolates():
    torch.manual_seed(0)
    model = Generator(refocus_config(ngf=4, n_blocks=1)).eval()
    assert model.cfg.radiance_blend
    x = _batch(2) * 0.3  # 2·rgb − radiance stays inside (−1, 1): nothing clamps
    for bias, expected in ((20.0, x[:, 3:6]), (-20.0, 2 * x[:, :3] - x[:, 3:6])):
        torch.nn.init.constant_(model.blend[1].bias, bias)  # tanh(±20) = ±1 everywhere
        with torch.no_grad():
            torch.testing.assert_close(model(x, torch.tensor([2.0, -2.0])), expected, atol=1e-6, rtol=0)


def test_single_stage_g2_has_no_radiance_blend():
    assert not refocus_config(in_channels=3).radiance_blend
    with pytest.raises(ValueError, match="radiance"):
        Generator(GeneratorConfig(in_channels=3, delta_mode="continuous", deltas=(-9.0, 9.0), radiance_blend=True))


def test_g1_detail_gains_are_unsharp_masks_at_their_sigmas():
    import math

    from scipy import ndimage

    torch.manual_seed(0)
    model = Generator(deblur_config(ngf=4, n_blocks=1, focus_gate=False, detail_sigmas=(1.0, 2.0))).eval()
    x = _batch(1)[:, :4] * 0.2  # small enough that nothing clamps
    torch.nn.init.constant_(model.detail[1].bias, math.atanh(0.25))  # gain 2·tanh = 0.5 at both σ
    with torch.no_grad():
        out = model(x).numpy()
    rgb = x[:, :3].numpy()
    expected = rgb.copy()
    for sigma in (1.0, 2.0):
        expected += 0.5 * (rgb - ndimage.gaussian_filter(rgb, (0, 0, sigma, sigma), mode="nearest", truncate=4.0))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_g2_detail_gains_blur_the_input_and_the_radiance():
    """G2's gains act on RGB (first 3) and radiance (last 3): gain −1 at σ gives the Gaussian blur at σ, so
    G2 can blur what leaves focus and re-blur the radiance where the target is only partly sharper."""
    import math

    from scipy import ndimage

    torch.manual_seed(0)
    model = Generator(refocus_config(ngf=4, n_blocks=1)).eval()
    assert model.cfg.detail_sigmas == (1.0, 2.0, 4.0) and model.detail[1].out_channels == 6
    x = _batch(1) * 0.3

    def blurred(channels, sigma):
        return ndimage.gaussian_filter(x[:, channels].numpy(), (0, 0, sigma, sigma), mode="nearest", truncate=4.0)

    for blend_bias, gain_index, expected in (
        (0.0, 2, lambda: blurred(slice(0, 3), 4.0)),  # keep the input, blur it by σ = 4
        (20.0, 4, lambda: blurred(slice(3, 6), 2.0)),  # take the radiance, blur it by σ = 2
    ):
        torch.nn.init.constant_(model.blend[1].bias, blend_bias)
        bias = torch.zeros(6)
        bias[gain_index] = math.atanh(-0.5)  # gain 2·tanh = −1
        with torch.no_grad():
            model.detail[1].bias.copy_(bias)
            out = model(x, torch.tensor([5.0])).numpy()
        np.testing.assert_allclose(out, expected(), atol=1e-5)


def test_configs_saved_before_detail_sigmas_have_none():
    old = deblur_config(ngf=4, n_blocks=1).to_dict()
    del old["detail_sigmas"]
    assert GeneratorConfig.from_dict(old).detail_sigmas == ()
    assert GeneratorConfig.from_dict(deblur_config().to_dict()) == deblur_config()


def test_instance_norm_gives_the_same_result_in_either_memory_layout():
    # channels_last takes another code path (tiled CPU runs and CUDA use that layout). A channel whose mean
    # dwarfs its spread (a flat background) is where float32 one-pass variances (group_norm's) lose whole units.
    from napari_refocusgan.core.networks import InstanceNorm

    x = torch.randn(2, 8, 200, 300) + 100
    norm = InstanceNorm()
    with torch.no_grad():
        plane = norm(x)
        last = norm(x.contiguous(memory_format=torch.channels_last))
    exact = F.instance_norm(x.double()).float()
    torch.testing.assert_close(last, exact, atol=1e-4, rtol=0)  # float32 steps near 100 are 8e-6
    torch.testing.assert_close(plane, exact, atol=1e-4, rtol=0)
