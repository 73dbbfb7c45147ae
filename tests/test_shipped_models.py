"""The shipped weights do their job on a synthetic scene never used in training (a test seed), through the same
inference engine as the plugin and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from napari_refocusgan.core import inference, weights
from training import data
from training.evaluate import psnr

SLICES = (0, 3, 6, 9)


@pytest.fixture(scope="module")
def scene():
    seed = data.split_seeds("test", 1)[0]
    rendered = data.render_training_scene(seed, 128)
    return np.clip(rendered["stack"], 0, 1), rendered["centre"]  # cubic shift-and-sum overshoots [0, 1] a little


@pytest.fixture(scope="module")
def models():
    return weights.load_generator("deblur"), weights.load_generator("refocus")


def as_uint16(image: np.ndarray, full_scale: int) -> np.ndarray:
    return np.rint(image * full_scale).astype(np.uint16)


@pytest.mark.parametrize("full_scale", [65535, 4095], ids=["16-bit", "12-bit data in a 16-bit file"])
def test_shipped_g1_brings_every_slice_closer_to_the_all_in_focus_view(scene, models, full_scale):
    stack, centre = scene
    for k in SLICES:
        image = as_uint16(stack[k], full_scale)
        radiance = inference.deblur(image, models[0]).astype(np.float32) / full_scale
        gain = psnr(centre, radiance) - psnr(centre, image.astype(np.float32) / full_scale)
        assert gain > 0.1, f"slice {k}: G1 {gain:+.2f} dB against the identity"


def test_shipped_pipeline_moves_the_focus_towards_the_target_slice(models):
    """The quality bar's refocus measure on two unseen scenes: the mean PSNR over every pair (slice i, slice i+δ),
    δ ∈ {−9, −5, +5, +9}, beats the identity's. It is a mean: on single pairs G2 can lose several dB."""
    g1, g2 = models
    gains = []
    for seed in data.split_seeds("test", 2):
        stack = as_uint16(np.clip(data.render_training_scene(seed, 128)["stack"], 0, 1), 65535)
        for delta in (-9, -5, 5, 9):
            for k in range(max(0, -delta), min(len(stack), len(stack) - delta)):
                target = stack[k + delta] / 65535
                out = inference.refocus(stack[k], delta, g2, deblur_model=g1)
                gains.append(psnr(target, out / 65535) - psnr(target, stack[k] / 65535))
    assert len(gains) == 24
    assert np.mean(gains) > 0.5, f"mean gain over the identity {np.mean(gains):+.2f} dB"
