"""Blur-and-compare refocusing, the simple method that motivates G2 in the paper (§3.2, Fig. 4).

Given a wide-aperture image G^i and its in-focus radiance image (G1's output, or the centre view of a
light field):

1. blur the radiance with every candidate defocus radius and, per pixel, keep the radius whose blurred
   patch best matches the input patch (sum of squared differences over a ``patch``×``patch`` window): σ;
2. invert, σ' = σ_max − σ, and re-blur the radiance with the per-pixel radius σ' (linear interpolation
   between the two nearest blur levels).

This turns a near-focused image far-focused and back; it cannot refocus to an arbitrary plane because σ
carries no front/back sign. The σ map is returned as well, to show as a defocus-map layer.

Blur kernels: ``"disk"`` (default) is the pillbox PSF of a defocused lens, anti-aliased at its rim, with
σ its radius in pixels; ``"gaussian"`` uses σ as the Gaussian standard deviation. A focal-stack slice made
from an n×n view grid at a slope error Δ px/view has a square PSF of half-width (n−1)/2·Δ, whose second
moment matches a disk of radius ≈ 2·sqrt(((n²−1)/12))·Δ (4Δ for 7×7 views) or a Gaussian of σ ≈ 2Δ.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .devices import pick_device
from .errors import RefocusError, check_whole
from .focalstack import CancelFn, Cancelled, ProgressFn, check_callbacks
from .focus import box_mean_torch
from .imaging import as_rgb, float_scale_or_none, pair_full_scale, to_float

KERNELS = ("disk", "gaussian")
# Kept slices of the default stack differ by up to ~0.93 px/view, i.e. a disk of radius ≈ 3.7 px over 7×7 views.
DEFAULT_RADII = {
    "disk": tuple(np.round(np.arange(0.0, 4.01, 0.25), 2)),
    "gaussian": tuple(np.round(np.arange(0.0, 2.01, 0.125), 3)),
}
DEFAULT_PATCH = 7
# Largest blur radius (px) for the candidates and σ_max, and most blur levels: beyond them the kernels
# and the level grid would take minutes and gigabytes, far past any defocus a focal stack produces.
MAX_RADIUS = 32.0
MAX_LEVELS = 512
CACHE_BYTES = 256 * 2**20  # keep candidate blurs between the two passes up to this size


def disk_kernel(radius: float, *, supersample: int = 16) -> np.ndarray:
    """A normalised pillbox of ``radius`` px, each tap weighted by the fraction of its pixel inside the disk
    (so that fractional radii change the kernel smoothly). Radius 0 is the identity (a 1×1 kernel)."""
    if not (radius >= 0 and math.isfinite(radius)):
        raise RefocusError(f"blur radius must be a finite number ≥ 0, got {radius}.")
    half = int(math.ceil(radius - 0.5)) if radius > 0.5 else 0
    if radius <= 0.5:  # the disk lies inside the centre pixel
        return np.ones((1, 1), np.float32)
    n = 2 * half + 1
    sub = (np.arange(n * supersample) + 0.5) / supersample - half - 0.5
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = (yy**2 + xx**2 <= radius**2).astype(np.float64)
    k = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    return (k / k.sum()).astype(np.float32)


def gaussian_kernel1d(sigma: float, *, truncate: float = 4.0) -> np.ndarray:
    """A normalised 1-D Gaussian with standard deviation ``sigma`` px; sigma 0 is the identity."""
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise RefocusError(f"Gaussian sigma must be a finite number ≥ 0, got {sigma}.")
    if sigma == 0:
        return np.ones(1, np.float32)
    half = max(1, int(truncate * sigma + 0.5))
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def gaussian_blur_torch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W), each channel on its own, replicated borders."""
    k = gaussian_kernel1d(sigma)
    if k.size == 1:
        return x
    if x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled()):
        # scipy's separable filter is ~6× faster than conv2d here, with the same kernel (radius 4σ)
        a = np.ascontiguousarray(x.detach().numpy())
        return torch.from_numpy(ndimage.gaussian_filter(a, (0, 0, sigma, sigma), mode="nearest", truncate=4.0))
    n, c, h, w = x.shape
    r = k.size // 2
    kt = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    flat = x.reshape(n * c, 1, h, w)
    flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="replicate"), kt.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="replicate"), kt.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


def gaussian_blurs_torch(x: torch.Tensor, sigmas) -> list[torch.Tensor]:
    """:func:`gaussian_blur_torch` of ``x`` at each σ. On the CPU without autograd the σ run side by side
    in threads (scipy releases the GIL), up to torch's thread count: the generators' output heads need
    several blurs of the same image, and one alone uses a single core."""
    sigmas = list(sigmas)
    workers = min(len(sigmas), torch.get_num_threads())
    if workers < 2 or x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
        return [gaussian_blur_torch(x, s) for s in sigmas]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda s: gaussian_blur_torch(x, s), sigmas))


def defocus_blur_torch(x: torch.Tensor, radius: float, kernel: str = "disk") -> torch.Tensor:
    """Blur (N, C, H, W) by a defocus ``radius`` with the given kernel (see the module docstring)."""
    if kernel == "gaussian":
        return gaussian_blur_torch(x, radius)
    if kernel != "disk":
        raise RefocusError(f"unknown blur kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")
    k = disk_kernel(radius)
    if k.size == 1:
        return x
    n, c, h, w = x.shape
    if x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled()):
        # scipy is as fast as conv2d here and single-threaded, so it does not fight other jobs for cores
        a = np.ascontiguousarray(x.detach().numpy()).reshape(n * c, h, w)
        return torch.from_numpy(ndimage.correlate(a, k[None], mode="nearest")).reshape(n, c, h, w)
    r = k.shape[0] // 2
    kt = torch.as_tensor(k, dtype=x.dtype, device=x.device).view(1, 1, *k.shape)
    return F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode="replicate"), kt).reshape(n, c, h, w)


@dataclass
class BlurCompareResult:
    """refocused: float32 like the input; sigma: (H, W) float32 estimated defocus radius of the input (px);
    sigma_max: the σ_max actually used."""

    refocused: np.ndarray
    sigma: np.ndarray
    sigma_max: float


def _as_chw(image: np.ndarray, name: str, full_scale: float | None = None) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return to_float(arr, name=name, full_scale=full_scale)[None]
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return np.ascontiguousarray(np.moveaxis(to_float(arr, name=name, full_scale=full_scale)[..., :3], -1, 0))
    raise RefocusError(f"{name} has shape {arr.shape}; expected a gray (H, W) or colour (H, W, 3|4) image.")


def _pair_scale(image: np.ndarray, radiance: np.ndarray, names: tuple[str, str]) -> float | None:
    """The full scale an image and its radiance share (see imaging.pair_full_scale)."""
    scales = (float_scale_or_none(image, name=names[0]), float_scale_or_none(radiance, name=names[1]))
    return pair_full_scale(*scales, names=names)


def _check_radiance_colour(*, image_gray: bool, radiance_gray: bool) -> None:
    """The result is the re-blurred radiance: a gray one would silently drop a colour image's colour (refocus
    refuses the same pair)."""
    if radiance_gray and not image_gray:
        raise RefocusError("the radiance is grayscale but the image is in colour: the result (the re-blurred "
                           "radiance) would lose the colour; use a colour radiance of the same scene.")  # fmt: skip


def _check_radii(radii, kernel: str) -> np.ndarray:
    try:
        r = np.asarray(DEFAULT_RADII[kernel] if radii is None else radii, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise RefocusError(f"candidate radii must be numbers (e.g. [0, 0.5, 1, 2]); got {radii!r}.") from exc
    if r.size > MAX_LEVELS:
        raise RefocusError(f"at most {MAX_LEVELS} candidate radii; got {r.size}.")
    if r.size < 2:
        raise RefocusError(f"blur-and-compare needs at least two candidate radii; got {r.tolist()}.")
    if not np.isfinite(r).all() or (r < 0).any() or (r > MAX_RADIUS).any():
        raise RefocusError(f"candidate radii must lie in 0…{MAX_RADIUS:g} px; got {r.tolist()}.")
    r = np.unique(r)
    if r.size < 2:
        raise RefocusError("candidate radii must hold at least two different values.")
    return r


def parse_radii(text: str) -> list[float]:
    """'0:4:0.25' (start:stop:step, stop included) or '0,0.5,1,2' → list of radii."""
    t = text.strip()
    try:
        if ":" in t:
            start, stop, step = (float(v) for v in t.split(":"))
            if not step > 0:
                raise ValueError
        else:
            items = t.split(",")
            if not all(v.strip() for v in items):
                raise ValueError  # "0,1,,2": a typo, not a list of radii
            return [float(v) for v in items]
    except ValueError as exc:
        raise RefocusError(f"radii must look like START:STOP:STEP (step > 0) or R1,R2,…; got {text!r}.") from exc
    count = (stop - start) / step + 1
    if not count <= MAX_LEVELS:  # also NaN and inf; checked before np.arange allocates them
        raise RefocusError(f"at most {MAX_LEVELS} candidate radii; {text!r} gives {count:.3g}.")
    return np.round(np.arange(start, stop + step / 2, step), 6).tolist()


def _hat_weights(values: torch.Tensor, levels: np.ndarray, j: int) -> torch.Tensor:
    """Piecewise-linear interpolation weight of level ``j`` for each value (values clamped to the levels)."""
    v = values.clamp(float(levels[0]), float(levels[-1]))
    w = torch.zeros_like(v)
    if j > 0:
        lo, mid = float(levels[j - 1]), float(levels[j])
        w = torch.where((v >= lo) & (v <= mid), (v - lo) / (mid - lo), w)
    if j < len(levels) - 1:
        mid, hi = float(levels[j]), float(levels[j + 1])
        w = torch.where((v >= mid) & (v <= hi), (hi - v) / (hi - mid), w)
    if len(levels) == 1:
        w = torch.ones_like(v)
    return w


def blur_and_compare(
    image: np.ndarray,
    radiance: np.ndarray,
    *,
    sigma_max: float | None = None,
    radii=None,
    patch: int = DEFAULT_PATCH,
    kernel: str = "disk",
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> BlurCompareResult:
    """Refocus ``image`` near↔far with its in-focus ``radiance`` (paper Fig. 4).

    ``image``, ``radiance``: the same shape, gray (H, W) or colour (H, W, 3|4), uint8/uint16/float (in [0, 1],
    or on a scale of its own, shared by both: see :func:`~.imaging.pair_full_scale`; the result is in [0, 1]).
    ``radii``: candidate defocus radii in px (default: 0…4 by 0.25 for disks, 0…2 by 0.125 for Gaussians).
    ``sigma_max``: σ_max of σ' = σ_max − σ; None takes the 99th percentile of the estimated σ, which is the
    blur of the farthest-from-focus content when the input is focused at one end of the scene.
    ``patch``: odd side of the comparison window. Returns the re-blurred radiance (float32, the input's
    layout; alpha is not carried) and the σ map. ``progress`` counts blur levels; ``cancel`` is checked
    before each.
    """
    check_callbacks(progress, cancel)
    device = pick_device(device, default="cpu")
    if kernel not in KERNELS:
        raise RefocusError(f"unknown blur kernel {kernel!r}; choose one of {', '.join(KERNELS)}.")
    check_whole(patch, "patch")
    if patch < 1 or patch % 2 == 0:
        raise RefocusError(f"patch must be a positive odd number of pixels, got {patch}.")
    levels = _check_radii(radii, kernel)
    shared = _pair_scale(image, radiance, ("input image", "radiance image"))
    src = _as_chw(image, "input image", shared)
    rad = _as_chw(radiance, "radiance image", shared)
    if src.shape[1:] != rad.shape[1:]:
        raise RefocusError(
            f"input image is {src.shape[1]}×{src.shape[2]} but the radiance is "
            f"{rad.shape[1]}×{rad.shape[2]}; they must be the same size."
        )
    _check_radiance_colour(image_gray=src.shape[0] == 1, radiance_gray=rad.shape[0] == 1)
    if src.shape[0] != rad.shape[0]:  # a gray image, a colour radiance: compare in colour
        # repeat only the gray one: a broadcast view of the colour one would reach torch read-only
        src, rad = (np.repeat(a, 3, axis=0) if a.shape[0] == 1 else a for a in (src, rad))
    if sigma_max is not None and not (
        isinstance(sigma_max, (int, float, np.number)) and not isinstance(sigma_max, bool)
        and math.isfinite(sigma_max) and 0 <= sigma_max <= MAX_RADIUS
    ):
        raise RefocusError(f"sigma_max must be a number in 0…{MAX_RADIUS:g} px, got {sigma_max!r}.")

    gray_out = np.asarray(image).ndim == 2 or (np.asarray(image).ndim == 3 and np.asarray(image).shape[-1] == 1)
    x = torch.from_numpy(np.ascontiguousarray(src)).to(device)[None]
    g = torch.from_numpy(np.ascontiguousarray(rad)).to(device)[None]
    h, w = x.shape[-2:]

    # The re-blur grid: the candidates, extended with their last spacing when σ_max lies beyond them
    # (an automatic σ_max never does: it is one of the candidates).
    reblur_levels = levels
    if sigma_max is not None and sigma_max > levels[-1]:
        step = levels[-1] - levels[-2]
        extra = levels[-1] + step * np.arange(1, int(math.ceil((sigma_max - levels[-1]) / step)) + 1)
        reblur_levels = np.concatenate([levels, extra])
    total = len(levels) + len(reblur_levels)
    # Keep the candidate blurs for step 2 when they fit in a modest amount of memory (halves the work).
    cache: dict[int, torch.Tensor] | None = {} if len(levels) * g.numel() * 4 <= CACHE_BYTES else None

    with torch.no_grad():
        # 1. σ: the candidate radius whose blurred radiance best matches the input patch
        best_err = torch.full((1, 1, h, w), float("inf"), device=x.device)
        best_idx = torch.zeros((1, 1, h, w), dtype=torch.long, device=x.device)
        for k, radius in enumerate(levels):
            if cancel is not None and cancel():
                raise Cancelled()
            blurred = defocus_blur_torch(g, float(radius), kernel)
            if cache is not None:
                cache[k] = blurred
            err = box_mean_torch(((blurred - x) ** 2).sum(1, keepdim=True), patch)
            better = err < best_err  # strict: ties (flat regions) keep the smaller radius
            best_err = torch.where(better, err, best_err)
            best_idx = torch.where(better, torch.full_like(best_idx, k), best_idx)
            if progress is not None:
                progress(k + 1, total)
        sigma = torch.as_tensor(levels, dtype=torch.float32, device=x.device)[best_idx]

        # 2. σ' = σ_max − σ and re-blur, interpolating linearly between blur levels
        if sigma_max is None:
            sigma_max = float(np.percentile(sigma.cpu().numpy(), 99, method="nearest"))
        target = (sigma_max - sigma).clamp_min(0)
        out = torch.zeros_like(g)
        for j, radius in enumerate(reblur_levels):
            if cancel is not None and cancel():
                raise Cancelled()
            weight = _hat_weights(target, reblur_levels, j)
            if bool((weight > 0).any()):
                blurred = cache[j] if cache is not None and j in cache else defocus_blur_torch(g, float(radius), kernel)
                out += weight * blurred
            if progress is not None:
                progress(len(levels) + j + 1, total)

    refocused = out[0].cpu().numpy()
    refocused = refocused.mean(0) if gray_out else np.moveaxis(refocused, 0, -1)
    return BlurCompareResult(
        np.ascontiguousarray(np.clip(refocused, 0, 1), dtype=np.float32),
        sigma[0, 0].cpu().numpy().astype(np.float32),
        float(sigma_max),
    )


def blur_and_compare_image(
    image: np.ndarray,
    radiance: np.ndarray,
    *,
    names: tuple[str, str] = ("image", "radiance"),
    full_scale: float | None = None,
    **options,
) -> BlurCompareResult:
    """:func:`blur_and_compare` (``options`` are its keywords) with the refocused image put back as ``image``
    came: gray stays gray, RGBA keeps its alpha, 8 and 16 bits stay. What the command line writes and the
    widget shows. ``names`` name the two images in error messages. ``full_scale``: the one that float stacks of
    which the two are slices share (:func:`~.imaging.pair_full_scale`), in place of the pair's own."""
    shared = full_scale if full_scale is not None else _pair_scale(image, radiance, names)
    img, rad = (as_rgb(a, name=n, full_scale=shared) for a, n in zip((image, radiance), names))
    _check_radiance_colour(image_gray=img.was_gray, radiance_gray=rad.was_gray)
    result = blur_and_compare(img.rgb, rad.rgb, **options)
    return replace(result, refocused=img.restore(result.refocused))
