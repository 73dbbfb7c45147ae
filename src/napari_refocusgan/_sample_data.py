"""napari sample data: the embedded synthetic light-field scene (no download).

Three layers: the paper-protocol focal stack made from the scene's 7×7 views, the all-in-focus centre
view, and the ground-truth disparity of the centre view.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

import numpy as np

from .core.focalstack import StackConfig, centre_view, focal_stack
from .core.synthetic import sample_scene

FOCAL_STACK_NAME = "synthetic focal stack"
ALL_IN_FOCUS_NAME = "synthetic all-in-focus"
DISPARITY_NAME = "synthetic disparity"


@lru_cache(maxsize=1)
def _sample_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, StackConfig, dict]:
    scene = sample_scene()
    stack, slopes, config = focal_stack(scene.views, StackConfig())
    scene_info = {
        "seed": scene.seed,
        "layer_disparities": [float(d) for d in scene.layer_disparities],
        "views": list(scene.views.shape[:2]),
    }
    return stack, slopes, np.array(centre_view(scene.views)), scene.disparity, config, scene_info


def make_sample_scene() -> list[tuple]:
    """Layer data tuples (focal stack, all-in-focus view, disparity) of the synthetic sample scene."""
    stack, slopes, centre, disparity, config, scene_info = _sample_arrays()
    source = {"source": "napari-refocusgan synthetic sample", **scene_info}
    stack_meta = {
        **source,
        "slopes": [float(s) for s in slopes],
        "slope_step": float(config.slope_step),
        "stack_config": {**asdict(config), "keep": list(config.keep) if config.keep else None},
        "note": "slice k is shift-and-sum refocused at slope slopes[k] (px per view); larger = farther",
    }
    # Copies: each viewer gets its own arrays, so editing one layer cannot leak into the cache.
    return [
        (centre.copy(), {"name": ALL_IN_FOCUS_NAME, "rgb": True, "contrast_limits": (0.0, 1.0),
                         "metadata": {**source, "note": "centre view of the 7×7 light field"}}, "image"),
        (disparity.copy(), {"name": DISPARITY_NAME, "colormap": "viridis", "visible": False,
                            "metadata": {**source, "units": "px per view step (= focal-stack slope)"}}, "image"),
        (stack.astype(np.float32, copy=True), {"name": FOCAL_STACK_NAME, "rgb": True,
                                                         "contrast_limits": (0.0, 1.0), "metadata": stack_meta}, "image"),
    ]  # fmt: skip
