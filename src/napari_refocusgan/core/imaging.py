"""Pixel conventions shared by every tool: dtype scaling, channel layout, validation, file I/O.

Arrays handed around the core are float32, channels last, values in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import RefocusError

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
FLOAT_RANGE_SLACK = 0.05  # float input may overshoot [0, 1] by this much (then it is clipped)


def check_float_range(arr: np.ndarray, *, name: str = "image") -> None:
    """Float images hold [0, 1] intensities: NaN/Inf, or values beyond [0, 1] by more than
    FLOAT_RANGE_SLACK, are a clear error. Slight overshoot (cubic shift-and-sum, sharpening) is allowed; a
    float image on another scale (0..255, 0..65535, signed) would otherwise be silently wrong."""
    if not np.isfinite(arr).all():
        raise RefocusError(f"{name} contains NaN or Inf values; clean the data first.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -FLOAT_RANGE_SLACK or hi > 1 + FLOAT_RANGE_SLACK:
        raise RefocusError(
            f"{name} is a float image with values {lo:.4g}…{hi:.4g}; float images must hold intensities "
            "in [0, 1]. Divide by the full-scale value (e.g. 255) or pass it as uint8/uint16."
        )


def to_float(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Scale an integer or float array to float32 in [0, 1]: integers by their dtype's full scale, floats as
    they are (checked by :func:`check_float_range`, slight overshoot clipped). Empty input is an error."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise RefocusError(f"{name} is empty (shape {arr.shape}).")
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0:
            raise RefocusError(f"{name} has signed integer dtype {arr.dtype}; expected uint8, uint16 or float.")
        return arr.astype(np.float32) / np.float32(info.max)
    if np.issubdtype(arr.dtype, np.floating):
        check_float_range(arr, name=name)
        return np.clip(arr, 0.0, 1.0, dtype=np.float32)  # a new array: the caller's is never touched
    raise RefocusError(f"{name} has unsupported dtype {arr.dtype}; expected uint8, uint16 or float.")


def from_float(image: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Inverse of :func:`to_float`: clip to [0, 1] and rescale to ``dtype`` (floats stay float32)."""
    dtype = np.dtype(dtype)
    clipped = np.clip(image, 0.0, 1.0)
    if np.issubdtype(dtype, np.integer):
        return np.rint(clipped * np.iinfo(dtype).max).astype(dtype)
    return clipped.astype(np.float32)


@dataclass
class RGBImage:
    """An image split into RGB float32 (H, W, 3) plus what is needed to put it back as it came."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    was_gray: bool
    dtype: np.dtype

    def restore(self, rgb: np.ndarray) -> np.ndarray:
        """Return ``rgb`` in the caller's original layout and dtype (gray stays gray, alpha re-attached)."""
        out = rgb.mean(axis=-1) if self.was_gray else rgb
        if self.alpha is not None:
            out = np.concatenate([out, self.alpha[..., None]], axis=-1)
        return from_float(out, self.dtype)


def as_rgb(image: np.ndarray, *, name: str = "image", min_size: int = 1) -> RGBImage:
    """Normalise a single 2-D image, gray (H, W), (H, W, 1), RGB or RGBA, to float RGB."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        was_gray, alpha = True, None
        rgb = np.repeat(to_float(arr, name=name)[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        was_gray = False
        f = to_float(arr, name=name)
        rgb, alpha = f[..., :3], (f[..., 3] if arr.shape[-1] == 4 else None)
    else:
        raise RefocusError(
            f"{name} has shape {arr.shape}; expected a 2-D gray image (H, W) or colour (H, W, 3|4). "
            "For stacks use the per-slice tools."
        )
    h, w = rgb.shape[:2]
    if h < min_size or w < min_size:
        raise RefocusError(f"{name} is {h}×{w} pixels; at least {min_size}×{min_size} is needed.")
    return RGBImage(np.ascontiguousarray(rgb), alpha, was_gray, arr.dtype)


def luminance(image: np.ndarray) -> np.ndarray:
    """Gray (…, H, W) from float gray or RGB(A) channels-last data."""
    if image.ndim >= 3 and image.shape[-1] in (3, 4):
        return image[..., :3] @ LUMA_WEIGHTS
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file (PNG, JPEG, TIFF, …) as stored, with a clear error for missing or corrupt files."""
    path = Path(path)
    if not path.exists():
        raise RefocusError(f"{path} does not exist.")
    if path.is_dir():
        raise RefocusError(f"{path} is a folder; expected an image file.")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return tifffile.imread(path)
        if _is_16bit_colour_png(path):  # Pillow silently reads these as 8-bit; FFmpeg keeps 16 bits
            return _read_16bit_colour_png(path)
        import imageio.v3 as iio

        return iio.imread(path)
    except Exception as exc:  # decoders raise many types; all mean "not a readable image"
        raise RefocusError(f"Cannot read {path} as an image: {exc}") from exc


def _is_16bit_colour_png(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)  # signature, IHDR length and type, width, height, bit depth, colour type
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16 and head[25] in (2, 4, 6)


def _read_16bit_colour_png(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        has_alpha = "a" in frame.format.name
        return frame.to_ndarray(format="rgba64le" if has_alpha else "rgb48le")


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image``: TIFF keeps any dtype (float32 stacks); PNG/JPEG need uint8/uint16."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        photometric = "rgb" if image.ndim >= 3 and image.shape[-1] in (3, 4) else "minisblack"
        tifffile.imwrite(path, image, photometric=photometric)
    else:
        import imageio.v3 as iio

        if image.dtype not in (np.uint8, np.uint16):
            image = from_float(image, np.uint8)
        iio.imwrite(path, image)
    return path
