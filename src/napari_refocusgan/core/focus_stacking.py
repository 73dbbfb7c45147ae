"""Full-stack focus stacking: an all-in-focus image and a depth-index map from a focal stack.

The upper reference of the paper's Table 1, which builds it with the composite focus measure of
Sakurikar & Narayanan (ICCV 2017). Here the composite is the mean of several focus measures, each first
normalised per pixel across the slices to [0, 1] (the "normalised response at each slice" of the paper's
§4.1), so that measures of very different scales vote equally.

Per pixel, the sharpest slice is the argmax of the composite; the depth index refines it to a fraction of a
slice by a parabola through the peak and its neighbours. The all-in-focus image blends the slices with the
one-hot argmax maps smoothed by a Gaussian of ``blend_sigma`` px, so that seams between regions taken from
different slices stay invisible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .blur_compare import gaussian_blur_torch
from .devices import pick_device
from .errors import RefocusError
from .focalstack import CancelFn, Cancelled, ProgressFn, check_callbacks
from .focus import FOCUS_MEASURES, _gray_torch
from .imaging import float_full_scale, from_float, native_8bit, to_float

DEFAULT_MEASURES = ("sml", "tenengrad", "laplacian_variance", "gradient_energy")
DEFAULT_WINDOW = 9
DEFAULT_BLEND_SIGMA = 1.5
MAX_BLEND_SIGMA = 256.0  # wider smooths nothing more, but its Gaussian costs minutes and gigabytes


def stack_layout(shape: tuple[int, ...], rgb: bool | None) -> bool:
    """Whether a stack of ``shape`` is (S, H, W, C) colour rather than (S, H, W) gray, with clear errors
    otherwise. The shape alone: callers check it before reading (a lazy layer) or writing anything."""
    shape = tuple(shape)
    if math.prod(shape) == 0:
        raise RefocusError(f"the focal stack is empty (shape {shape}).")
    if rgb is None:
        if len(shape) == 4 and shape[-1] in (1, 3, 4):
            rgb = True
        elif len(shape) == 3 and shape[-1] in (1, 2, 3, 4):  # 2: gray + alpha
            raise RefocusError(
                f"shape {shape} looks like a single image, not a focal stack; a stack is "
                "(slices, H, W) gray or (slices, H, W, 3) colour (for a gray stack 1 to 4 pixels wide, "
                "pass rgb=False, or --gray on the command line)."
            )
        elif len(shape) == 3:
            rgb = False
        else:
            raise RefocusError(
                f"a focal stack must be (slices, H, W) gray or (slices, H, W, 3) colour; got shape {shape}."
            )
    if len(shape) != (4 if rgb else 3):
        raise RefocusError(
            f"expected a {'colour (S, H, W, C)' if rgb else 'gray (S, H, W)'} stack; got shape {shape}."
        )
    if shape[0] < 2:
        raise RefocusError(
            f"focus stacking needs at least 2 slices; got {shape[0]}. A single image is already its own "
            "all-in-focus composite — use the single-image (classical) tools instead."
        )
    return rgb


def composite_focus(
    stack: torch.Tensor,
    measures: Sequence[str] = DEFAULT_MEASURES,
    *,
    window: int = DEFAULT_WINDOW,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """Composite focus volume (S, H, W) of a stack tensor (S, C, H, W) in [0, 1]: the mean over ``measures``
    of each measure normalised per pixel across slices to [0, 1]."""
    if isinstance(measures, str):
        measures = [measures]
    if not measures:
        raise RefocusError(f"name at least one focus measure from {', '.join(FOCUS_MEASURES)}.")
    unknown = [m for m in measures if m not in FOCUS_MEASURES]
    if unknown:
        raise RefocusError(f"unknown focus measure(s) {', '.join(unknown)}; choose from {', '.join(FOCUS_MEASURES)}.")
    gray = _gray_torch(stack)  # once for all measures
    n = gray.shape[0]
    composite = torch.zeros((n, *gray.shape[-2:]), dtype=torch.float32, device=gray.device)
    volume = torch.empty_like(composite)
    total = len(measures) * n
    for mi, name in enumerate(measures):
        measure = FOCUS_MEASURES[name]
        for s in range(n):  # slice by slice: cancel and progress stay responsive on big stacks
            if cancel is not None and cancel():
                raise Cancelled()
            volume[s] = measure(gray[s : s + 1], window)[0, 0]
            if progress is not None:
                progress(mi * n + s + 1, total)
        lo = volume.amin(dim=0)
        span = volume.amax(dim=0) - lo
        # Where a measure is flat across the stack (no texture) it has no vote: 0 for every slice.
        composite += (volume - lo) / torch.where(span > 1e-12, span, torch.ones_like(span))
    return composite / len(measures)


def all_in_focus(
    stack: np.ndarray,
    *,
    measures: Sequence[str] = DEFAULT_MEASURES,
    window: int = DEFAULT_WINDOW,
    blend_sigma: float = DEFAULT_BLEND_SIGMA,
    rgb: bool | None = None,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All-in-focus image and depth-index map of a focal stack.

    ``stack``: (S, H, W) gray or (S, H, W, C) colour, uint8/uint16/float (scaled by :func:`~.imaging.to_float`;
    the image is returned in [0, 1] of that scale), S ≥ 2; ``rgb`` says which when the shape is ambiguous.
    ``measures``: names from :data:`FOCUS_MEASURES`; ``window``: their odd window side; ``blend_sigma``: seam
    smoothing of the blending weights in px (0 = hard argmax).
    Returns (all-in-focus float32 (H, W[, C]), depth index float32 (H, W): 0-based sharpest slice, fractional
    by parabolic refinement). ``progress`` counts measure evaluations plus one blending step.
    """
    check_callbacks(progress, cancel)
    device = pick_device(device, default="cpu")
    rgb = stack_layout(np.shape(stack), rgb)
    if isinstance(measures, str):
        measures = [measures]  # one name, not a sequence of letters
    if not (isinstance(blend_sigma, (int, float, np.number)) and 0 <= blend_sigma <= MAX_BLEND_SIGMA):
        raise RefocusError(f"blend_sigma must be a number from 0 to {MAX_BLEND_SIGMA:g} px, got {blend_sigma!r}.")
    if not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise RefocusError(f"focus-measure window must be a positive odd number, got {window}.")
    data = to_float(stack, name="focal stack")  # a new float32 array: the caller's stack is never touched
    if not rgb:
        data = data[..., None]
    n = data.shape[0]
    total = len(measures) * n + 1
    with torch.no_grad():
        t = torch.from_numpy(data).to(device).permute(0, 3, 1, 2)  # (S, C, H, W) view, no copy on CPU
        c = t if t.shape[1] in (1, 3) else t[:, :3]  # focus on colour, not alpha
        focus = composite_focus(c, measures, window=window, progress=progress, cancel=cancel)
        if cancel is not None and cancel():
            raise Cancelled()

        best = focus.argmax(dim=0)  # (H, W)
        # Sub-slice depth: vertex of the parabola through the peak and its neighbours (clamped at the ends).
        prev = focus.gather(0, (best - 1).clamp_min(0)[None])[0]
        peak = focus.gather(0, best[None])[0]
        nxt = focus.gather(0, (best + 1).clamp_max(n - 1)[None])[0]
        curv = prev - 2 * peak + nxt
        offset = torch.where(curv < -1e-9, 0.5 * (prev - nxt) / curv.clamp_max(-1e-9), torch.zeros_like(curv))
        interior = (best > 0) & (best < n - 1)
        depth = best.to(torch.float32) + torch.where(interior, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))

        # Blending weights: the one-hot argmax, smoothed so that slice transitions are gradual.
        weights = torch.zeros((1, n, *best.shape), dtype=torch.float32, device=best.device)
        weights[0].scatter_(0, best[None], 1.0)
        if blend_sigma > 0:
            weights = gaussian_blur_torch(weights, blend_sigma)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        aif = torch.einsum("shw,schw->chw", weights[0], t)
        if progress is not None:
            progress(total, total)
    aif_np = aif.permute(1, 2, 0).cpu().numpy()
    if not rgb:
        aif_np = aif_np[..., 0]
    return np.ascontiguousarray(np.clip(aif_np, 0, 1), dtype=np.float32), depth.cpu().numpy().astype(np.float32)


def output_dtype(stack_dtype) -> np.dtype:
    """The dtype an all-in-focus image is given back in: 8 and 16 bits (signed too) stay (a bool mask's is 8-bit
    0/255, as it is read), anything else float32."""
    dtype = np.dtype(stack_dtype)
    if dtype == bool:
        return np.dtype(np.uint8)
    return dtype.newbyteorder("=") if dtype.kind in "ui" and dtype.itemsize <= 2 else np.dtype(np.float32)


def all_in_focus_image(stack: np.ndarray, **options) -> tuple[np.ndarray, np.ndarray]:
    """:func:`all_in_focus` (``options`` are its keywords) with the image in :func:`output_dtype` of the stack's:
    what the command line writes and the widget shows. The depth index stays float32."""
    stack = native_8bit(np.asarray(stack))
    aif, depth = all_in_focus(stack, **options)
    image = from_float(aif, output_dtype(stack.dtype))
    if stack.dtype.kind == "f":
        image *= np.float32(float_full_scale(stack, name="focal stack"))  # back on the stack's own scale
    return image, depth
