"""SML focus measure: known answers."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focus import SMLParams, focus_channel, sml, sml_torch


def _texture(seed=0, size=64):
    return np.random.default_rng(seed).random((size, size)).astype(np.float32)


def test_matches_direct_definition():
    img = _texture()
    p = SMLParams(step=2, window=5, threshold=0.05)
    ip = np.pad(img, 2, mode="edge")
    c = ip[2:-2, 2:-2]
    ml = np.abs(2 * c - ip[2:-2, :-4] - ip[2:-2, 4:]) + np.abs(2 * c - ip[:-4, 2:-2] - ip[4:, 2:-2])
    ml[ml < p.threshold] = 0
    expected = ndimage.uniform_filter(ml, size=5, mode="nearest")
    np.testing.assert_allclose(sml(img, p), expected, atol=1e-5)


def test_the_autograd_path_gives_the_same_map_and_a_gradient():
    # without gradients sml_torch works in place; with them, out of place: one definition, two code paths
    x = torch.from_numpy(_texture(seed=3))[None, None]
    p = SMLParams(step=2, window=5, threshold=0.05)
    plain = sml_torch(x, p)
    leaf = x.clone().requires_grad_(True)
    tracked = sml_torch(leaf, p)
    torch.testing.assert_close(tracked.detach(), plain, atol=1e-6, rtol=0)
    tracked.sum().backward()
    assert leaf.grad is not None and float(leaf.grad.abs().sum()) > 0
    assert torch.equal(x, torch.from_numpy(_texture(seed=3))[None, None])  # the input is untouched


def test_peaks_where_image_is_in_focus():
    img = _texture(size=96)
    blurred = ndimage.gaussian_filter(img, 2.0)
    half = img.copy()
    half[:, 48:] = blurred[:, 48:]  # left half sharp, right half defocused
    m = sml(half)
    assert m[:, 8:40].mean() > 5 * m[:, 56:88].mean()


def test_sharper_slice_scores_higher_in_stack():
    img = _texture()
    stack = np.stack([ndimage.gaussian_filter(img, s) for s in (3.0, 1.5, 0.0, 1.5, 3.0)])
    scores = sml(stack).mean(axis=(1, 2))
    assert int(np.argmax(scores)) == 2
    assert scores[1] > scores[0] and scores[3] > scores[4]


def test_rgb_uses_luminance_and_integer_inputs_are_scaled():
    img = _texture()
    rgb = np.repeat(img[..., None], 3, axis=-1)
    np.testing.assert_allclose(sml(rgb), sml(img), atol=1e-5)
    u8 = (img * 255).round().astype(np.uint8)
    u16 = u8.astype(np.uint16) * 257
    np.testing.assert_allclose(sml(u8), sml(u16), atol=1e-5)


def test_flat_image_has_zero_focus_and_channel_is_bounded():
    assert np.all(sml(np.full((16, 16), 0.4, np.float32)) == 0)
    ch = focus_channel(torch.rand(1, 3, 32, 32))
    assert ch.shape == (1, 1, 32, 32) and ch.min() >= -1 and ch.max() < 1


def test_tiny_and_bad_inputs():
    assert sml(np.ones((1, 1), np.float32)).shape == (1, 1)
    with pytest.raises(RefocusError):
        sml(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(RefocusError):
        sml(np.zeros(5, np.float32))
    with pytest.raises(RefocusError):
        sml(_texture(), SMLParams(window=4))
    with pytest.raises(RefocusError):
        sml_torch(torch.zeros(1, 1, 4, 4), SMLParams(step=0))
    for threshold in (float("nan"), float("inf"), -0.1):
        with pytest.raises(RefocusError, match="threshold"):
            sml(_texture(), SMLParams(threshold=threshold))
    with pytest.raises(RefocusError, match="ambiguous"):
        sml(np.zeros((6, 8, 2), np.float32))
    assert sml(np.zeros((6, 8, 2), np.float32), rgb=False).shape == (6, 8, 2)  # said explicitly: a stack
    img = _texture()
    np.testing.assert_array_equal(sml(img[..., None]), sml(img))  # (H, W, 1) is one gray image, not H of W×1


def test_input_not_modified():
    img = _texture()
    before = img.copy()
    sml(img)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window": 8.5}, "SML window must be a whole number"),  # passed as odd and gave another map
        ({"window": True}, "SML window must be a whole number"),
        ({"step": 2.0}, "SML step must be a whole number"),
        ({"threshold": "0.01"}, "SML threshold must be a finite number"),
        ({"threshold": None}, "SML threshold must be a finite number"),
    ],
)
def test_sml_params_of_the_wrong_type_are_named(fields, message):
    with pytest.raises(RefocusError, match=message):
        SMLParams(**fields).check()


def test_torch_focus_measures_refuse_what_they_would_get_wrong():
    """A uint8 tensor came back all zeros (luma weights cast to uint8); (C, H, W) gave a wrongly shaped map."""
    from napari_refocusgan.core.focus import FOCUS_MEASURES

    x = torch.rand(1, 3, 16, 16)
    for name, measure in FOCUS_MEASURES.items():
        assert measure(x).shape == (1, 1, 16, 16), name
        for bad in ((x * 255).to(torch.uint8), x[0], x.numpy()):
            with pytest.raises(RefocusError, match="float tensor"):
                measure(bad)
    with pytest.raises(RefocusError, match="float tensor"):
        sml_torch((x * 255).to(torch.uint8))
