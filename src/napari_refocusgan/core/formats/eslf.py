"""Lenslet-interleaved ESLF images (Lytro Illum exports: Flowers, Stanford Lytro archive, Kalantari et al.).

An ESLF PNG stores 14×14 pixels per lenslet: pixel (v, u) of every lenslet belongs to view (v, u), so view
(v, u) is ``img[v::14, u::14]``. Rows of views run down the grid, columns to the right, matching
:mod:`..focalstack`. A partial lenslet at the bottom/right edge is cropped.

The outer views are vignetted (dark lenslet corners) and the data is dark and close to linear: the
Flowers loader keeps the central 8×8 views and brightens with a gamma of about 0.4–0.5. This reader
returns the values as stored.

Memory: only the views asked for are converted to float; the decoded lenslet image (uint8 or uint16) is
the one full-size array held while reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RefocusError
from ..imaging import LUMA_WEIGHTS, check_float_range, open_image_with_ffmpeg, read_image, to_float
from ..lightfield import LightField

LENSLET = 14  # pixels per lenslet side in Lytro Illum ESLF exports
MIN_LENSLETS = 16  # fewer lenslets per side than this cannot be told from an ordinary image
ESLF_SUFFIXES = (".png", ".tif", ".tiff")  # lossless only: JPEG smears the per-lenslet structure

# Detection thresholds (see :func:`eslf_evidence`); the looser pair applies when the name contains "_eslf".
VIGNETTE_MIN, VIGNETTE_MIN_HINTED = 0.30, 0.15
PERIOD_DIP_MAX, PERIOD_DIP_MAX_HINTED = 0.50, 0.75
SUB_PERIOD_MAX = 0.8  # the 14-px repeat must beat the 6/7/8-px ones (a half-size ESLF, a checkerboard do not)


@dataclass
class ESLFLenslets:
    """A decoded lenslet image with views cut out on demand (float32 only for the views asked for).

    ``lenslets``: (H·14, W·14, ch) uint8/uint16/float as stored, partial lenslets already cropped.
    """

    lenslets: np.ndarray
    path: Path | None = None
    cropped: tuple[int, int] = (0, 0)  # pixels dropped at the bottom and right (partial lenslets)

    @property
    def grid(self) -> tuple[int, int]:
        return LENSLET, LENSLET

    @property
    def view_shape(self) -> tuple[int, int]:
        return self.lenslets.shape[0] // LENSLET, self.lenslets.shape[1] // LENSLET

    def view(self, v: int, u: int) -> np.ndarray:
        """View (v, u) — v down the grid, u to the right — as float32 (H, W, 3) in [0, 1]."""
        if not (0 <= v < LENSLET and 0 <= u < LENSLET):
            raise RefocusError(f"view ({v}, {u}) is outside the {LENSLET}×{LENSLET} ESLF grid.")
        return _rgb_float(self.lenslets[v::LENSLET, u::LENSLET])

    def central_block(self, n: int | None = None) -> tuple[int, int]:
        """(first view index, count) of the central block of at most n×n views along each grid axis
        (all 14 for None); same rounding as :func:`..focalstack.central_views`."""
        n = LENSLET if n is None else min(int(n), LENSLET)
        if n < 1:
            raise RefocusError(f"asked for the central {n}×{n} views; at least 1×1 is needed.")
        return (LENSLET - n) // 2, n

    def views(self, n: int | None = None) -> np.ndarray:
        """The central n×n views (n ≤ 14; all 14×14 for None) as float32 (n, n, H, W, 3)."""
        first, n = self.central_block(n)
        h, w = self.view_shape
        out = np.empty((n, n, h, w, 3), dtype=np.float32)
        for i in range(n):
            for j in range(n):
                out[i, j] = self.view(first + i, first + j)
        return out


def _rgb_float(pixels: np.ndarray) -> np.ndarray:
    """(H, W[, ch]) strided slice → contiguous float32 RGB, alpha dropped, gray repeated."""
    if pixels.ndim == 2:
        return np.repeat(to_float(pixels, name="ESLF view", full_scale=1.0)[..., None], 3, axis=-1)
    if pixels.shape[-1] == 1:
        return np.repeat(to_float(pixels[..., 0], name="ESLF view", full_scale=1.0)[..., None], 3, axis=-1)
    return to_float(np.ascontiguousarray(pixels[..., :3]), name="ESLF view", full_scale=1.0)


def _check_lenslet_image(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        pass
    elif arr.ndim != 2:
        raise RefocusError(f"{name} has shape {arr.shape}; an ESLF is a single gray, RGB or RGBA image.")
    if arr.dtype not in (np.uint8, np.uint16) and not np.issubdtype(arr.dtype, np.floating):
        raise RefocusError(f"{name} has dtype {arr.dtype}; an ESLF is 8- or 16-bit.")
    if arr.dtype.kind == "f":
        check_float_range(arr, name=name)  # every view is scaled alike: one full scale, 1, for all
    h, w = arr.shape[:2]
    if h < LENSLET * MIN_LENSLETS or w < LENSLET * MIN_LENSLETS:
        raise RefocusError(
            f"{name} is {h}×{w} pixels; an ESLF with {LENSLET}×{LENSLET} pixels per lenslet needs at least "
            f"{LENSLET * MIN_LENSLETS}×{LENSLET * MIN_LENSLETS} (Lytro Illum exports are about 5264×7574)."
        )
    return arr


def lenslets_from_array(image: np.ndarray, *, name: str = "ESLF image", path: Path | None = None) -> ESLFLenslets:
    """Wrap a decoded lenslet image, cropping partial lenslets (no copy: views are cut lazily)."""
    arr = _check_lenslet_image(image, name)
    h, w = arr.shape[:2]
    hh, ww = h - h % LENSLET, w - w % LENSLET
    return ESLFLenslets(arr[:hh, :ww], path, (h - hh, w - ww))


def open_eslf(path: str | Path) -> ESLFLenslets:
    """Decode an ESLF file without converting any view yet."""
    path = Path(path)
    return lenslets_from_array(decode_lenslet_image(path), name=str(path), path=path)


# FFmpeg pixel formats of decoded PNGs → (sample dtype, channels) of their single packed plane.
_PNG_FORMATS = {
    "rgb24": ("u1", 3), "rgba": ("u1", 4), "gray": ("u1", 1),
    "rgb48be": (">u2", 3), "rgba64be": (">u2", 4), "gray16be": (">u2", 1),
}  # fmt: skip


def decode_lenslet_image(path: str | Path) -> np.ndarray:
    """A PNG/TIFF decoded as stored, holding as little as possible at once.

    A 5264×7574 RGB PNG is 114 MiB decoded. Through Pillow the process grows by about 4× that (a padded
    RGBX image plus copies); through FFmpeg (PyAV) by about 2× at the peak, and the array returned shares
    the decoded frame's memory (see benchmarks/bench_eslf_memory.py). Anything FFmpeg decodes to another
    layout, or cannot decode, goes through :func:`..imaging.read_image`.
    """
    path = Path(path)
    if path.suffix.lower() == ".png" and path.is_file():
        try:
            with open_image_with_ffmpeg(path) as container:
                frame = next(container.decode(video=0))
                if frame.format.name in _PNG_FORMATS:
                    return _packed_plane(frame, *_PNG_FORMATS[frame.format.name])
        except Exception:  # any FFmpeg trouble: read_image decodes it or explains what is wrong
            pass
    return read_image(path)


def _packed_plane(frame, sample: str, channels: int) -> np.ndarray:
    """A decoded frame's packed plane as a native-endian (H, W[, ch]) array sharing the frame's memory
    (16-bit samples are byte-swapped in place; the frame is ours alone)."""
    dtype = np.dtype(sample)
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(frame.height, plane.line_size)
    pixels = rows[:, : frame.width * channels * dtype.itemsize].view(dtype).reshape(frame.height, frame.width, channels)
    native = dtype.newbyteorder("=")
    if pixels.dtype != native:
        if pixels.flags.writeable:
            pixels = pixels.byteswap(inplace=True).view(native)
        else:
            pixels = pixels.astype(native)
    return pixels[..., 0] if channels == 1 else pixels


def read_eslf(path: str | Path, views: int | None = None) -> LightField:
    """Read an ESLF as a :class:`LightField`; ``views=n`` keeps only the central n×n views (n ≤ 14), and
    only those are converted to float (memory ∝ n²)."""
    return eslf_lightfield(open_eslf(path), views)


def eslf_lightfield(lens: ESLFLenslets, views: int | None = None) -> LightField:
    """The central views (at most n×n; all for None) of decoded lenslets as a :class:`LightField`."""
    first, n = lens.central_block(views)
    return LightField(
        source="eslf",
        path=lens.path if lens.path is not None else Path(),
        views=lens.views(n),
        metadata={
            "lenslet_size": LENSLET,
            "grid_in_file": lens.grid,
            "view_offset": (first, first),  # index of views[0, 0] in the file's 14×14 grid
            "stored_dtype": str(lens.lenslets.dtype),
            "cropped_px": lens.cropped,
        },
    )


def interleave_eslf(views: np.ndarray) -> np.ndarray:
    """Inverse of the view cut: (R, C, H, W, ch) views → (H·R, W·C, ch) lenslet image, pixel (v, u) of a
    lenslet from view (v, u). With R = C = 14 this writes an ESLF."""
    v = np.asarray(views)
    if v.ndim not in (4, 5):
        raise RefocusError(f"views must be (rows, cols, H, W[, channels]); got shape {v.shape}.")
    r, c, h, w = v.shape[:4]
    out = v.transpose(2, 0, 3, 1, *range(4, v.ndim))  # (H, R, W, C, ch)
    return np.ascontiguousarray(out.reshape(h * r, w * c, *v.shape[4:]))


def eslf_evidence(image: np.ndarray) -> dict[str, float]:
    """Statistics of a decoded image that tell a 14-px lenslet image from an ordinary one.

    * ``vignette``: how much darker the lenslet corners are than the lenslet centres, relative to the mean
      (means per pixel phase mod 14). Real ESLF exports: ≈ 1; photos: ≈ 0, because nothing in a photo is
      locked to a 14-pixel phase.
    * ``period_dip_x`` / ``_y``: mean |I(x) − I(x+14)| over the median of |I(x) − I(x+k)|, k = 5..9.
      In an ESLF, x+14 is the same view one lenslet over (a close neighbour) while x+5..9 are other views
      seen through the same lenslet (parallax) or the next one, so the ratio is well below 1. Photos have
      differences that grow with distance: the ratio is ≥ 1.
    * ``sub_period_x`` / ``_y``: mean |I(x) − I(x+14)| over the smallest of those at k = 6, 7, 8. A repeat
      every 7 px (an ESLF resized by half) or every 2 px (a fine checkerboard) also repeats every 14 px,
      but then as well at 7, or at 6 and 8: the ratio is ≈ 1 or above, while in an ESLF it stays below.

    Computed on a centred block of at most 128×128 lenslets.
    """
    arr = np.asarray(image)
    h, w = arr.shape[:2]
    # A centred block of at most 128×128 lenslets keeps detection fast and small on 5264×7574 files.
    nh, nw = min(h // LENSLET, 128), min(w // LENSLET, 128)
    y0 = (h // LENSLET - nh) // 2 * LENSLET
    x0 = (w // LENSLET - nw) // 2 * LENSLET
    g = arr[y0 : y0 + nh * LENSLET, x0 : x0 + nw * LENSLET].astype(np.float32)
    if g.ndim == 3:
        g = g[..., :3] @ LUMA_WEIGHTS if g.shape[-1] >= 3 else g[..., 0]
    scale = float(g.mean())
    phase = g.reshape(nh, LENSLET, nw, LENSLET).mean(axis=(0, 2))  # (v, u) phase means
    centre = phase[5:9, 5:9].mean()
    corners = np.mean([phase[:2, :2].mean(), phase[:2, -2:].mean(), phase[-2:, :2].mean(), phase[-2:, -2:].mean()])
    vignette = float((centre - corners) / scale) if scale > 0 else 0.0

    def dips(a: np.ndarray) -> tuple[float, float]:
        d = {k: float(np.abs(a[:, k:] - a[:, :-k]).mean()) for k in (5, 6, 7, 8, 9, LENSLET)}
        ref = float(np.median([d[k] for k in (5, 6, 7, 8, 9)]))
        shorter = min(d[6], d[7], d[8])
        return (d[LENSLET] / ref if ref > 0 else 1.0), (d[LENSLET] / shorter if shorter > 0 else 1.0)

    (dip_x, sub_x), (dip_y, sub_y) = dips(g), dips(g.T)
    return {"vignette": vignette, "period_dip_x": dip_x, "period_dip_y": dip_y, "sub_period_x": sub_x,
            "sub_period_y": sub_y}  # fmt: skip


def looks_like_eslf(image: np.ndarray, *, name_hint: bool = False) -> bool:
    """True when ``image`` has the 14-px lenslet structure of an ESLF (see :func:`eslf_evidence`).

    ``name_hint`` (the file name contains ``_eslf``) loosens the thresholds but is never enough on its own.
    """
    arr = np.asarray(image)
    single_image = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4))
    if not single_image or min(arr.shape[:2]) < LENSLET * MIN_LENSLETS:
        return False
    ev = eslf_evidence(arr)
    vmin = VIGNETTE_MIN_HINTED if name_hint else VIGNETTE_MIN
    dmax = PERIOD_DIP_MAX_HINTED if name_hint else PERIOD_DIP_MAX
    periodic = ev["period_dip_x"] < dmax and ev["period_dip_y"] < dmax
    fourteen = ev["sub_period_x"] < SUB_PERIOD_MAX and ev["sub_period_y"] < SUB_PERIOD_MAX  # not 7 or 2 px
    return ev["vignette"] > vmin or (periodic and fourteen)


def has_eslf_name(path: Path) -> bool:
    """The Flowers / Stanford naming (``IMG_1234_eslf.png``): extra evidence, never proof."""
    return "_eslf" in Path(path).stem.lower()
