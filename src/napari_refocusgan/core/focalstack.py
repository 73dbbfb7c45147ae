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
from dataclasses import dataclass

import numpy as np
import torch

from .errors import RefocusError

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
        if self.views < 1:
            raise RefocusError(f"views must be ≥ 1, got {self.views}.")
        if self.slices < 2:
            raise RefocusError(f"slices must be ≥ 2, got {self.slices}.")
        if not (self.s_max > 0 and math.isfinite(self.s_max)):
            raise RefocusError(f"s_max must be a positive number, got {self.s_max}.")
        if self.keep is not None:
            lo, hi = self.keep
            if not 1 <= lo <= hi <= self.slices:
                raise RefocusError(f"keep {lo}:{hi} must satisfy 1 ≤ first ≤ last ≤ slices ({self.slices}).")

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
    Separable cubic interpolation: per slope, each grid row is x-shifted and summed, then the row sums
    are y-shifted and summed.
    """
    v = _as_tensor(views, device)
    if v.ndim != 5:
        raise RefocusError(f"views must be (rows, cols, H, W, channels); got shape {tuple(v.shape)}.")
    n_r, n_c, h, w, ch = v.shape
    slopes = [float(a) for a in np.atleast_1d(np.asarray(slopes, dtype=np.float64))]
    rc, cc = (n_r - 1) / 2, (n_c - 1) / 2
    pad = int(math.ceil(max(abs(a) for a in slopes) * max(rc, cc, 0))) + 2  # + cubic support
    # (R, C, ch, H, W), edge-replicated once for all slopes
    vp = torch.nn.functional.pad(
        v.permute(0, 1, 4, 2, 3).reshape(n_r * n_c, ch, h, w), (pad, pad, pad, pad), mode="replicate"
    ).reshape(n_r, n_c, ch, h + 2 * pad, w + 2 * pad)
    out = torch.empty((len(slopes), ch, h, w), dtype=torch.float32, device=v.device)
    # Work in bands of output rows (bounded scratch memory for big light fields), every slope of a band
    # before the next band so that the band's views are read from memory once. On 2 CPU threads large
    # bands measured fastest (per-op overhead outweighs cache misses); GPUs take the whole image at once.
    band = h if v.device.type != "cpu" else max(8, _CPU_BAND_BYTES // (n_r * ch * (w + 2 * pad) * 4) - 2 * pad)
    rows = torch.empty((n_r, ch, min(band, h) + 2 * pad, w), dtype=torch.float32, device=v.device)
    starts = list(range(0, h, band))
    for b, y0 in enumerate(starts):
        bh = min(band, h - y0)
        rows_b = rows[:, :, : bh + 2 * pad]
        for k, a in enumerate(slopes):
            if cancel is not None and cancel():
                raise Cancelled()
            rows_b.zero_()
            for c in range(n_c):
                src = vp[:, c, :, y0 : y0 + bh + 2 * pad]
                _add_shifted(rows_b, src, a * (c - cc), pad, w, dim=-1)
            acc = out[k, :, y0 : y0 + bh]
            acc.zero_()
            for r in range(n_r):
                _add_shifted(acc, rows_b[r], a * (r - rc), pad, bh, dim=-2)
            if progress is not None:
                progress(b * len(slopes) + k + 1, len(starts) * len(slopes))
    out.mul_(1.0 / (n_r * n_c))
    return out.permute(0, 2, 3, 1)


_CPU_BAND_BYTES = 64 << 20  # measured: larger bands win on 2 threads (per-op overhead beats cache misses)


def _cubic_weights(f: float) -> tuple[float, float, float, float]:
    """Keys (a = −0.5) cubic convolution weights for taps at −1, 0, 1, 2 around a fractional offset f."""
    a = -0.5

    def near(t):  # |t| ≤ 1
        return (a + 2) * t**3 - (a + 3) * t**2 + 1

    def far(t):  # 1 < |t| < 2
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a

    return far(1 + f), near(f), near(1 - f), far(2 - f)


def _add_shifted(acc: torch.Tensor, src: torch.Tensor, shift: float, pad: int, n: int, dim: int) -> None:
    """acc += src sampled at (index + shift) along ``dim`` with cubic convolution (src padded by ``pad``).

    Cubic rather than bilinear: bilinear low-passes fractional shifts much more than integer ones, which
    biases the sharpest slice towards slopes whose shifts happen to be whole pixels."""
    i = math.floor(shift)
    f = shift - i
    start = pad + i
    if f < 1e-9:
        acc.add_(src.narrow(dim, start, n))
        return
    for tap, weight in zip((-1, 0, 1, 2), _cubic_weights(f)):
        acc.add_(src.narrow(dim, start + tap, n), alpha=weight)


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
