"""Classical single-image "in-focus" baselines: sharpening kernels, unsharp masking, CLAHE, CLAHE then
sharpening, and region-wise sharpening driven by the SML focus map.

These are the methods of the student report on single-image in-focus methods (Onyemaobi & Belkasim),
made comparable with the learned tools. Every function takes a gray (H, W) or colour (H, W, 3) image, scaled to
[0, 1] by :func:`~.imaging.to_float`, and returns a new float32 array of the same shape, clipped to [0, 1]; the
input is never modified. Use :func:`apply_classical_image` (:func:`~.imaging.as_rgb` /
:meth:`~.imaging.RGBImage.restore`) for other layouts, alpha, or to return the caller's dtype and scale.

Colour: CLAHE and the CLAHE + sharpening combination work on the BT.601 luminance and scale R, G, B by
the same per-pixel factor, so hue and the channel ratios are kept (the report's complaint was colour
shifts). Sharpening and unsharp masking are linear filters applied to each channel, as in the report.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .errors import RefocusError
from .focus import SMLParams, sml
from .imaging import as_rgb, luminance, to_float

SHARPEN_SIZES = (3, 5, 7)


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """A float32 copy of a gray (H, W) or RGB (H, W, 3) image, with clear errors for anything else."""
    arr = np.asarray(image)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)):
        raise RefocusError(
            f"{name} has shape {arr.shape}; expected gray (H, W) or RGB (H, W, 3). "
            "Convert RGBA or other layouts with imaging.as_rgb first."
        )
    return to_float(arr, name=name)


# Beyond these the result no longer changes (a blur wider than any image; a gain that saturates every
# edge) while the cost or the rounding does: a 1e7 px radius took minutes and gigabytes on a tiny image.
MAX_RADIUS = 256.0
MAX_AMOUNT = 1000.0


def _finite_positive(value: float, what: str, *, allow_zero: bool = True, most: float = math.inf) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise RefocusError(f"{what} must be a finite number {'≥' if allow_zero else '>'} 0, got {value}.")
    if v > most:
        raise RefocusError(f"{what} must be at most {most:g}, got {value}.")
    return v


# ----------------------------------------------------------------------------------------------- kernels


def sharpening_kernel(size: int = 3, amount: float = 1.0) -> np.ndarray:
    """A brightness-preserving size×size sharpening kernel: −1 everywhere around a positive centre, divided by
    its sum so that it sums to 1.

    The centre is ``size² − 1 + size²/amount``, which makes the kernel ``identity + amount·(identity − box
    mean)``: ``amount`` is the gain on detail and means the same for every size. The classic 3×3 kernel
    (centre 9, −1 around, sum 1) is ``size=3, amount=9``; amount 1 gives centre 17/9 = 1.89 after
    normalisation (17 before, always ≥ 5 as the report asks).
    """
    if isinstance(size, (float, np.floating)) and float(size).is_integer():
        size = int(size)  # 5.0 from a float spin box or a config file
    if not isinstance(size, (int, np.integer)) or size not in SHARPEN_SIZES:
        raise RefocusError(f"sharpening kernel size must be one of {SHARPEN_SIZES}, got {size!r}.")
    amount = _finite_positive(amount, "sharpening amount", allow_zero=False, most=MAX_AMOUNT)
    # identity + amount·(identity − box mean), the same kernel as the one above divided by its sum, written
    # without that division: for tiny amounts size²/amount overflowed to infinity
    n2 = size * size
    kernel = np.full((size, size), -amount / n2, dtype=np.float64)
    kernel[size // 2, size // 2] += 1 + amount
    return kernel.astype(np.float32)


def sharpen(image: np.ndarray, size: int = 3, amount: float = 1.0) -> np.ndarray:
    """Convolve each channel with :func:`sharpening_kernel` (mirrored borders), clip to [0, 1]."""
    img = _check_image(image)
    kernel = sharpening_kernel(size, amount)
    if img.ndim == 3:
        kernel = kernel[..., None]  # no mixing across channels
    return np.clip(ndimage.correlate(img, kernel, mode="reflect"), 0, 1).astype(np.float32)


def unsharp(image: np.ndarray, radius: float = 1.0, amount: float = 1.0) -> np.ndarray:
    """Unsharp masking, ``image + amount·(image − Gaussian_radius(image))`` (mirrored borders), clipped to [0, 1].

    scikit-image's ``unsharp_mask``; note that in scikit-image 0.26 ``channel_axis=-1`` gives wrong
    results on RGB, so the channel axis is passed as 2.
    """
    return np.clip(unsharp_mask_unclipped(_check_image(image), radius, amount), 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------------- luminance


def apply_on_luminance(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Run ``fn`` (gray [0, 1] → gray [0, 1]) on the luminance of an RGB image and carry the change back by
    scaling R, G, B with the same per-pixel factor, so channel ratios (hue, saturation) are kept. Where the
    factor would push a channel above 1, the pixel is scaled down as a whole instead of clipping one channel.
    Gray images go straight through ``fn``."""
    img = _check_image(image)
    if img.ndim == 2:
        return np.clip(fn(img), 0, 1).astype(np.float32)
    y = luminance(img)
    y_new = np.clip(fn(y), 0, 1)
    # Black pixels have no hue to keep: they become gray at the new luminance.
    dark = y < 1e-4
    gain = np.where(dark, 0.0, y_new / np.where(dark, 1.0, y))
    out = img * gain[..., None]
    out[dark] = y_new[dark][:, None]
    peak = out.max(axis=-1, keepdims=True)
    out = np.where(peak > 1, out / np.maximum(peak, 1e-12), out)
    return np.clip(out, 0, 1).astype(np.float32)


def _clahe_gray(gray: np.ndarray, clip_limit: float, tile_size: int | None) -> np.ndarray:
    from skimage.exposure import equalize_adapthist

    nbins = 256
    h, w = gray.shape
    if tile_size is None:
        kernel_size = None  # scikit-image default: 1/8 of each side, like OpenCV's 8×8 tile grid
    else:
        kernel_size = (min(int(tile_size), h), min(int(tile_size), w))
    if np.ptp(gray) == 0:  # no contrast to equalise; scikit-image's stretch would make it white
        return gray.copy()
    # The report's clip limits (2–4) are OpenCV's: a multiple of the mean bin count (tile pixels / bins);
    # scikit-image wants a fraction of the tile pixels, so divide by the number of bins.
    return equalize_adapthist(gray, kernel_size=kernel_size, clip_limit=clip_limit / nbins, nbins=nbins)


def _check_clahe(clip_limit: float, tile_size: int | None) -> tuple[float, int | None]:
    clip_limit = _finite_positive(clip_limit, "CLAHE clip limit", allow_zero=False)
    if tile_size is not None:
        if int(tile_size) != tile_size or tile_size < 2:
            raise RefocusError(f"CLAHE tile size must be a whole number of pixels ≥ 2, got {tile_size}.")
        tile_size = int(tile_size)
    return clip_limit, tile_size


def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_size: int | None = None) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of the luminance (colours kept, see
    :func:`apply_on_luminance`).

    ``clip_limit``: OpenCV convention, a multiple of the mean histogram bin count (the report's 2–4;
    larger = more contrast). ``tile_size``: contextual-region side in px (None = 1/8 of the image side).
    scikit-image's ``equalize_adapthist`` first stretches the luminance to the full [0, 1] range; a constant
    image, with nothing to stretch, is returned as it is.
    """
    clip_limit, tile_size = _check_clahe(clip_limit, tile_size)
    return apply_on_luminance(image, lambda y: _clahe_gray(y, clip_limit, tile_size))


def clahe_sharpen(
    image: np.ndarray,
    clip_limit: float = 2.0,
    tile_size: int | None = None,
    size: int = 3,
    amount: float = 1.0,
) -> np.ndarray:
    """The report's combination: CLAHE, then a sharpening kernel, both on the luminance so colours don't shift."""
    clip_limit, tile_size = _check_clahe(clip_limit, tile_size)
    sharpening_kernel(size, amount)  # validate before the slow part
    return apply_on_luminance(
        image, lambda y: sharpen(np.clip(_clahe_gray(y, clip_limit, tile_size), 0, 1), size, amount)
    )


# ------------------------------------------------------------------------------------------ region-wise


def blur_map(image: np.ndarray, params: SMLParams = SMLParams(), *, sharp_quantile: float = 0.95) -> np.ndarray:
    """How blurred each pixel looks, in [0, 1] (0 = as sharp as the sharpest part of this image), from the SML
    focus map relative to its ``sharp_quantile`` and smoothed over one SML window."""
    img = _check_image(image)
    if not 0 < sharp_quantile <= 1:
        raise RefocusError(f"sharp_quantile must be in (0, 1], got {sharp_quantile}.")
    m = sml(img, params, rgb=img.ndim == 3)
    ref = float(np.quantile(m, sharp_quantile))
    if ref <= 0:  # no texture anywhere: nothing to judge, treat all as blurred
        return np.ones(m.shape, np.float32)
    sharpness = np.clip(m / ref, 0, 1)
    sharpness = ndimage.uniform_filter(sharpness, params.window, mode="nearest")
    return np.clip(1 - sharpness, 0, 1).astype(np.float32)


def regionwise_sharpen(
    image: np.ndarray,
    radius: float = 1.5,
    strong: float = 2.0,
    weak: float = 0.25,
    params: SMLParams = SMLParams(),
    *,
    sharp_quantile: float = 0.95,
) -> np.ndarray:
    """The report's proposed next step: unsharp masking whose amount follows the SML focus map — ``strong``
    where the image looks blurred, ``weak`` where it is already sharp (linear in :func:`blur_map`)."""
    img = _check_image(image)
    strong = _finite_positive(strong, "strong amount", most=MAX_AMOUNT)
    weak = _finite_positive(weak, "weak amount", most=MAX_AMOUNT)
    b = blur_map(img, params, sharp_quantile=sharp_quantile)
    if img.ndim == 3:
        b = b[..., None]
    # Unsharp masking is linear in its amount before clipping, so blending the two results is the same as
    # a per-pixel amount weak + (strong − weak)·b (the clip happens after the blend).
    detail_weak = unsharp_mask_unclipped(img, radius, weak)
    detail_strong = unsharp_mask_unclipped(img, radius, strong)
    return np.clip((1 - b) * detail_weak + b * detail_strong, 0, 1).astype(np.float32)


def unsharp_mask_unclipped(image: np.ndarray, radius: float, amount: float) -> np.ndarray:
    """scikit-image's unsharp masking without its final clip (``preserve_range``), channel axis 2 for RGB."""
    from skimage.filters import unsharp_mask

    radius = _finite_positive(radius, "unsharp radius", allow_zero=False, most=MAX_RADIUS)
    amount = _finite_positive(amount, "unsharp amount", most=MAX_AMOUNT)
    return unsharp_mask(
        image, radius=radius, amount=amount, preserve_range=True, channel_axis=2 if image.ndim == 3 else None
    )


# -------------------------------------------------------------------------------------------- registry


def identity(image: np.ndarray) -> np.ndarray:
    """The do-nothing baseline (a float32 copy)."""
    return np.clip(_check_image(image), 0, 1)


# Single-image methods with their default parameters, for evaluation tables and the method selectors.
# Blur-and-compare (needs a radiance image) and full-stack focus stacking (needs a stack) have their own
# signatures: see blur_compare.blur_and_compare and focus_stacking.all_in_focus.
CLASSICAL_METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": identity,
    "sharpen": sharpen,
    "unsharp": unsharp,
    "clahe": clahe,
    "clahe+sharpen": clahe_sharpen,
    "regionwise": regionwise_sharpen,
}


def apply_classical(image: np.ndarray, method: str, **params) -> np.ndarray:
    """Run the named method of :data:`CLASSICAL_METHODS` with keyword parameters (unknown names are errors)."""
    try:
        fn = CLASSICAL_METHODS[method]
    except KeyError:
        raise RefocusError(f"unknown method {method!r}; choose one of {', '.join(CLASSICAL_METHODS)}.") from None
    try:
        inspect.signature(fn).bind(image, **params)
    except TypeError:
        accepted = [n for n in inspect.signature(fn).parameters][1:]
        raise RefocusError(
            f"method {method!r} takes {', '.join(accepted) or 'no parameters'}; got {', '.join(params)}."
        ) from None
    return fn(image, **params)


def apply_classical_image(
    image: np.ndarray, method: str, *, name: str = "image", full_scale: float | None = None, **params
) -> np.ndarray:
    """:func:`apply_classical` on one image as it comes (gray, RGB or RGBA; 8/16-bit or float on any scale), the
    result put back the same way: gray stays gray, alpha is re-attached, the dtype and scale kept. What the
    command line writes and the widget shows; ``name`` names the image in error messages, ``full_scale`` is that
    of the stack the image is a slice of (see :func:`~.imaging.image_slices`)."""
    img = as_rgb(image, name=name, full_scale=full_scale)
    return img.restore(apply_classical(img.rgb, method, **params))
