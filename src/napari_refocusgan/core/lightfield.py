"""What every light-field reader returns, and the dispatcher that picks a reader from the content."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class LightField:
    """A light field or a processed focal stack, as read from disk.

    views: (R, C, H, W, 3) float32 in [0, 1], rows down the grid, columns to the right; None for files
        that hold only a processed focal stack (Lytro Desktop ``-stk.lfp``).
    disparity: (H, W) float32 centre-view disparity in px per view step, when the data has it.
    focal_stack: (S, H, W, 3) float32, for files that already hold one.
    stack_labels: one label per stored slice (e.g. Lytro ``lambda``), same order as ``focal_stack``.
    depth: (H, W) float32 depth map (e.g. Lytro ``-dm.lfp`` or a stack's depth LUT).
    """

    source: str
    path: Path
    views: np.ndarray | None = None
    disparity: np.ndarray | None = None
    focal_stack: np.ndarray | None = None
    stack_labels: list | None = None
    depth: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
