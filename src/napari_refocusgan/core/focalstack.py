"""Focal stacks from light fields by shift-and-sum (Ng 2005; eq. 9 of the RefocusGAN paper).

The convention every tool shares:

* slice k (0-based) uses slope ``alpha_k = -s_max + k * 2 * s_max / (S - 1)``;
* view (r, c) — r increasing down the view grid, c to the right, grid centre (r_c, c_c) — is sampled as
  ``V_rc(y + alpha (r - r_c), x + alpha (c - c_c))``, i.e. its content moves by ``-alpha`` times its offset;
* slice = mean over views, so a plane whose image in view (r, c) is displaced by ``d (r - r_c, c - c_c)``
  from the centre view is sharpest in the slice whose slope is closest to ``d``.

One δ step of the refocus network is one slice of the default stack: ``2 s_max / (S - 1)`` px per view.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .devices import pick_device
from .errors import RefocusError, check_real, check_whole

ProgressFn = Callable[[int, int], None]  # (done, total)
CancelFn = Callable[[], bool]  # True when the user asked to stop


class Cancelled(Exception):
    """Raised between slices or tiles when the caller's cancel check returns True."""


@dataclass(frozen=True)
class StackConfig:
    """Paper defaults (§4.1): central 7×7 views, 30 slopes in ±1.5 px, keep slices 6..15 (1-based)."""

    views: int = 7
    slices: int = 30
    s_max: float = 1.5
    keep: tuple[int, int] | None = (6, 15)  # 1-based inclusive; None keeps all slices

    def check(self) -> None:
        check_whole(self.views, "views")
        check_whole(self.slices, "slices")
        check_real(self.s_max, "s_max")
        if self.keep is not None:
            if isinstance(self.keep, str):
                raise RefocusError(f"keep must be a (first, last) pair of slice numbers or None, got {self.keep!r}; "
                                   "parse_keep turns text like '6:15' into one; for 'auto' pass "
                                   "keep_auto=True.")  # fmt: skip
            if not (isinstance(self.keep, (tuple, list, np.ndarray)) and len(self.keep) == 2):
                raise RefocusError(f"keep must be a (first, last) pair of slice numbers or None, got {self.keep!r}.")
            for value in self.keep:
                check_whole(value, "keep's slice numbers")
        if self.views < 2:
            raise RefocusError(f"views must be ≥ 2 (one view gives identical slices), got {self.views}.")
        if self.slices < 2:
            raise RefocusError(f"slices must be ≥ 2, got {self.slices}.")
        if not self.s_max > 0:  # finite: check_real above
            raise RefocusError(f"s_max must be a positive number, got {self.s_max}.")
        if self.keep is not None:
            lo, hi = self.keep
            if not 1 <= lo <= hi <= self.slices:
                raise RefocusError(f"keep {lo}:{hi} must satisfy 1 ≤ first ≤ last ≤ slices ({self.slices}); "
                                   "keep all slices with --keep all (or keep=None).")  # fmt: skip

    @property
    def slope_step(self) -> float:
        """Slope change between neighbouring slices, which is also one δ step."""
        return 2 * self.s_max / (self.slices - 1)

    def all_slopes(self) -> np.ndarray:
        return -self.s_max + np.arange(self.slices) * self.slope_step

    def kept_indices(self) -> np.ndarray:
        """0-based indices of the kept slices."""
        if self.keep is None:
            return np.arange(self.slices)
        return np.arange(self.keep[0] - 1, self.keep[1])

    def slopes(self) -> np.ndarray:
        return self.all_slopes()[self.kept_indices()]

    def within(self, grid: tuple[int, int]) -> StackConfig:
        """This config with at most the views of a (rows, cols) grid: smaller grids are used whole."""
        if min(grid) < 2:
            raise RefocusError(
                f"a focal stack needs a grid of at least 2×2 views; this light field has {grid[0]}×{grid[1]}."
            )
        return replace(self, views=min(self.views, *grid))


def check_callbacks(progress, cancel) -> None:
    """``progress(done, total)`` and ``cancel()`` must be functions or None: a bool or a threading.Event
    failed only at the first check, in words that named neither."""
    for value, name in ((progress, "progress"), (cancel, "cancel")):
        if value is not None and not callable(value):
            hint = " (for a threading.Event, pass its is_set)" if name == "cancel" else ""
            raise RefocusError(f"{name} must be a function or None, got {value!r}{hint}.")


def parse_keep(text: str) -> tuple[int, int] | None | str:
    """'6:15' → (6, 15); 'all' → None; 'auto' → 'auto'."""
    t = text.strip().lower()
    if t in ("all", "none", ""):
        return None
    if t == "auto":
        return "auto"
    try:
        lo, hi = (int(v) for v in t.split(":"))
    except ValueError as exc:
        raise RefocusError(f"--keep must look like 6:15, 'all' or 'auto'; got {text!r}.") from exc
    return lo, hi


def _as_tensor(x, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


def shift_bilinear(image: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """Sample ``image`` (..., H, W) at (y + dy, x + dx) with bilinear weights and edge replication."""
    h, w = image.shape[-2:]
    pad = int(math.ceil(max(abs(dy), abs(dx)))) + 1
    p = torch.nn.functional.pad(image.reshape(-1, 1, h, w), (pad, pad, pad, pad), mode="replicate")
    p = p.reshape(*image.shape[:-2], h + 2 * pad, w + 2 * pad)
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix
    y0, x0 = pad + iy, pad + ix
    rows = p[..., y0 : y0 + h, :] * (1 - fy) + p[..., y0 + 1 : y0 + 1 + h, :] * fy if fy else p[..., y0 : y0 + h, :]
    return rows[..., x0 : x0 + w] * (1 - fx) + rows[..., x0 + 1 : x0 + 1 + w] * fx if fx else rows[..., x0 : x0 + w]


def central_views(views: np.ndarray | torch.Tensor, n: int):
    """The central n×n block of a (R, C, …) view grid (all of it when the grid is smaller)."""
    r, c = views.shape[:2]
    if n > min(r, c):
        raise RefocusError(f"asked for the central {n}×{n} views but the light field has only {r}×{c}.")
    r0, c0 = (r - n) // 2, (c - n) // 2
    return views[r0 : r0 + n, c0 : c0 + n]


def shift_and_sum(
    views: np.ndarray | torch.Tensor,
    slopes,
    *,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """Refocused slices of a view grid, one per slope.

    ``views``: (R, C, H, W, ch) float (numpy or torch). Returns a torch tensor (S, H, W, ch) on ``device``.
    Separable Keys cubic interpolation with edge replication: per slope, each grid row is x-shifted and
    summed, then the row sums are y-shifted and summed. Both passes are convolutions whose taps are the
    interpolation weights: the x pass takes the grid columns as input channels and gives every slope at
    once (one pass over the views instead of one per slope and tap), the y pass is depthwise over slopes.
    ``progress`` counts (row band × slope group) units; ``cancel`` is checked before each.
    """
    check_callbacks(progress, cancel)
    device = pick_device(device, default="cpu")
    v = _as_tensor(views, device)
    if v.ndim != 5:
        raise RefocusError(f"views must be (rows, cols, H, W, channels); got shape {tuple(v.shape)}.")
    n_r, n_c, h, w, ch = v.shape
    slopes = [float(a) for a in np.atleast_1d(np.asarray(slopes, dtype=np.float64))]
    half_span = (max(n_r, n_c) - 1) / 2  # views from the centre to the outermost
    widest = max((abs(a) for a in slopes), default=0.0) * half_span
    if not widest <= max(h, w):  # also NaN; beyond this every output pixel is replicated edge
        raise RefocusError(
            f"a slope of {max(slopes, key=abs):+g} px per view shifts the outer views by {widest:g} px, more than "
            f"the {w}×{h} image; use slopes within ±{max(h, w) / max(half_span, 0.5):g} px per view (a smaller "
            "s_max)."
        )
    x_taps = [[_cubic_taps(a * (c - (n_c - 1) / 2)) for c in range(n_c)] for a in slopes]
    y_taps = [[_cubic_taps(a * (r - (n_r - 1) / 2)) for r in range(n_r)] for a in slopes]
    x_lo, x_hi = _offset_range(x_taps)
    y_lo, y_hi = _offset_range(y_taps)
    padded = _padded_for_x_pass(v, (y_lo, y_hi), (x_lo, x_hi))
    n_s = len(slopes)
    wx = _tap_weights(x_taps, x_lo, x_hi - x_lo + 1, v.device) / (n_r * n_c)  # (S, C, 1, kx): the mean
    wy = _tap_weights(y_taps, y_lo, y_hi - y_lo + 1, v.device).transpose(2, 3)  # (S, R, ky, 1)
    ky = y_hi - y_lo + 1
    band, group = _work_units(n_s, h, ky, ch * w * 4)
    units = [(y0, k0) for y0 in range(0, h, band) for k0 in range(0, n_s, group)]
    out = torch.empty((n_s, h, w, ch), dtype=torch.float32, device=v.device)
    with _exact_float32(v.device):
        for done, (y0, k0) in enumerate(units):
            if cancel is not None and cancel():
                raise Cancelled()
            bh, ks = min(band, h - y0), slice(k0, min(k0 + group, n_s))
            n_k = ks.stop - ks.start
            src = padded[:, :, y0 : y0 + bh + ky - 1].reshape(n_r * ch, bh + ky - 1, -1, n_c).permute(0, 3, 1, 2)
            src = src.contiguous(memory_format=torch.channels_last)  # a view already, unless banded
            wx_k = wx[ks].contiguous(memory_format=torch.channels_last)
            acc = None
            for r in range(n_r):  # one grid row at a time: its x-pass output (ch, S, rows, W) stays in cache
                rows = F.conv2d(src[r * ch : (r + 1) * ch], wx_k)
                part = F.conv2d(rows, wy[ks, r : r + 1].contiguous(), groups=n_k)
                acc = part if acc is None else acc.add_(part)  # (ch, S, bh, W)
            out[ks, y0 : y0 + bh] = acc.permute(1, 2, 3, 0)
            if progress is not None:
                progress(done + 1, len(units))
    return out


def _padded_for_x_pass(v: torch.Tensor, y_range: tuple[int, int], x_range: tuple[int, int]) -> torch.Tensor:
    """(R, C, H, W, ch) views → (R, ch, H + ky − 1, W + kx − 1, C), edges replicated: the memory order of
    the x pass's channels_last input (views as channels). Row j is image row j + y_lo, column i is i + x_lo."""
    n_r, n_c, h, w, ch = v.shape
    (y_lo, y_hi), (x_lo, x_hi) = y_range, x_range
    top, left = max(0, -y_lo), max(0, -x_lo)  # offsets may all be ≥ 0 (or ≤ 0) for one-sided slopes
    full_h, full_w = max(h, h + y_hi) + top, max(w, w + x_hi) + left
    p = torch.empty((n_r, ch, full_h, full_w, n_c), dtype=v.dtype, device=v.device)
    p[:, :, top : top + h, left : left + w] = v.permute(0, 4, 2, 3, 1)
    p[:, :, :top] = p[:, :, top : top + 1]
    p[:, :, top + h :] = p[:, :, top + h - 1 : top + h]
    p[:, :, :, :left] = p[:, :, :, left : left + 1]
    p[:, :, :, left + w :] = p[:, :, :, left + w - 1 : left + w]
    return p[:, :, top + y_lo : top + h + y_hi, left + x_lo : left + w + x_hi]


# Scratch for the x-pass output of one grid row (ch·S·rows·W floats): one band and every slope for
# ordinary light fields; larger ones are split by slope, then by rows.
_SCRATCH_BYTES = 256 << 20


def _work_units(n_slopes: int, h: int, ky: int, bytes_per_row_and_slope: int) -> tuple[int, int]:
    """(rows per band, slopes per group) keeping the x-pass output within :data:`_SCRATCH_BYTES`."""
    budget = _SCRATCH_BYTES
    per_slope = bytes_per_row_and_slope * (h + ky - 1)
    if per_slope * n_slopes <= budget:
        return h, n_slopes
    if per_slope <= budget:
        return h, max(1, budget // per_slope)
    return max(8, budget // bytes_per_row_and_slope - (ky - 1)), 1


def _exact_float32(device):
    """cuDNN may compute float32 convolutions in TF32 (10-bit mantissa); the slices must be float32-exact."""
    if device.type != "cuda":
        return nullcontext()
    b = torch.backends.cudnn
    return b.flags(enabled=b.enabled, benchmark=b.benchmark, deterministic=b.deterministic, allow_tf32=False)


def _cubic_taps(shift: float) -> dict[int, float]:
    """Offset → weight of sampling at (index + shift) with Keys cubic convolution.

    Cubic rather than bilinear: bilinear low-passes fractional shifts much more than integer ones, which
    biases the sharpest slice towards slopes whose shifts happen to be whole pixels."""
    i = math.floor(shift)
    f = shift - i
    if f < 1e-9:
        return {i: 1.0}
    return {i + tap: weight for tap, weight in zip((-1, 0, 1, 2), _cubic_weights(f))}


def _offset_range(taps: list[list[dict[int, float]]]) -> tuple[int, int]:
    offsets = [o for per_slope in taps for per_view in per_slope for o in per_view]
    return min(offsets), max(offsets)


def _tap_weights(taps: list[list[dict[int, float]]], lo: int, k: int, device) -> torch.Tensor:
    """(S, views, 1, k) convolution weights: tap j is offset lo + j (convolutions here correlate)."""
    weights = torch.zeros((len(taps), len(taps[0]), 1, k), dtype=torch.float64)
    for s, per_slope in enumerate(taps):
        for view, per_view in enumerate(per_slope):
            for offset, weight in per_view.items():
                weights[s, view, 0, offset - lo] = weight
    return weights.to(device=device, dtype=torch.float32)


def _cubic_weights(f: float) -> tuple[float, float, float, float]:
    """Keys (a = −0.5) cubic convolution weights for taps at −1, 0, 1, 2 around a fractional offset f."""
    a = -0.5

    def near(t):  # |t| ≤ 1
        return (a + 2) * t**3 - (a + 3) * t**2 + 1

    def far(t):  # 1 < |t| < 2
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a

    return far(1 + f), near(f), near(1 - f), far(2 - f)


def peak_histogram(stack: torch.Tensor) -> np.ndarray:
    """How many pixels are sharpest (by SML) in each slice of a (S, H, W, ch) stack."""
    from .focus import SMLParams, sml_torch

    m = sml_torch(stack.permute(0, 3, 1, 2), SMLParams())[:, 0]
    peak = m.argmax(dim=0)
    # Flat regions have no focus signal; only textured pixels vote.
    textured = m.amax(dim=0) > 1e-3
    return np.bincount(peak[textured].cpu().numpy().ravel(), minlength=stack.shape[0])


def auto_keep(stack_all: torch.Tensor, length: int) -> tuple[int, int]:
    """The 1-based window of ``length`` slices that holds the most per-pixel focus peaks (paper §4.1,
    applied to one light field instead of a dataset histogram)."""
    hist = peak_histogram(stack_all)
    length = min(length, len(hist))
    sums = np.convolve(hist, np.ones(length, dtype=np.int64), mode="valid")
    lo = int(np.argmax(sums))
    return lo + 1, lo + length


def focal_stack(
    views: np.ndarray | torch.Tensor,
    config: StackConfig = StackConfig(),
    *,
    keep_auto: bool = False,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> tuple[np.ndarray, np.ndarray, StackConfig]:
    """Paper-protocol focal stack of a (R, C, H, W, ch) view grid.

    Returns (stack (S, H, W, ch) float32, slopes (S,), the config actually used — with ``keep`` filled in
    when ``keep_auto`` chose it).
    """
    config.check()
    sub = central_views(views, config.views)
    if keep_auto:
        everything = shift_and_sum(sub, config.all_slopes(), device=device, progress=progress, cancel=cancel)
        length = (config.keep[1] - config.keep[0] + 1) if config.keep else config.slices
        config = StackConfig(config.views, config.slices, config.s_max, auto_keep(everything, length))
        idx = torch.as_tensor(config.kept_indices(), device=everything.device)
        stack = everything.index_select(0, idx)
    else:
        stack = shift_and_sum(sub, config.slopes(), device=device, progress=progress, cancel=cancel)
    return stack.cpu().numpy(), config.slopes(), config


def centre_view(views: np.ndarray) -> np.ndarray:
    """The in-focus reference: the view at the grid centre (rounded down for even grids)."""
    r, c = views.shape[:2]
    return views[(r - 1) // 2, (c - 1) // 2]
