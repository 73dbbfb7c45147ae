"""Pixel conventions shared by every tool: dtype scaling, channel layout, validation, file I/O.

Arrays handed around the core are float32, channels last, values in [0, 1].
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import RefocusError

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
# Float input may overshoot its full scale by this share of it (then it is clipped): a focal stack's cubic (Keys)
# shift-and-sum of [0, 1] views stays within [-0.282, 1.266] (the sums of the 2-D kernel's negative and positive
# weights at half-pixel shifts). Float data reaching further past 1 is on a scale of its own (0..255, photon counts).
FLOAT_RANGE_SLACK = 0.3
SUPPORTED_DTYPES = "uint8, uint16 or float (or int8/int16 without negative values)"


# The networks learnt from scenes whose bright end (99.9th percentile) lies at 0.19…0.88 of full scale. Much dimmer
# input, such as 12-bit data in a 16-bit file, falls outside that: at 1/16 of the synthetic test scenes' exposure
# the shipped G1 loses 0.3 dB to the identity, where it gains 0.5 dB at their own. exposure_gain brightens such
# images for the networks; the results are dimmed back.
DIM_PEAK = 0.25
PEAK_PERCENTILE = 99.9  # the target ignores a few hot pixels; the brightest still caps the gain (nothing clips)
PEAK_SAMPLE_VALUES = 250_000  # the percentile is taken on every k-th value of larger images (about 5 ms)
# Float maxima of an image and its radiance differ by far more than this only when one is in [0, 1] and the other
# on 0..255 or 0..65535: a defocused point is dimmer than in focus, but not 100 times within a focal stack.
MAX_PAIR_SCALE_RATIO = 100.0


def check_float_range(arr: np.ndarray, *, name: str = "image") -> None:
    """Float data written to an 8/16-bit file holds [0, 1] intensities: NaN/Inf, or values beyond [0, 1] by more
    than FLOAT_RANGE_SLACK, are a clear error. Slight overshoot (cubic shift-and-sum, sharpening) is allowed; a
    float image on another scale (0..255, 0..65535, signed) would otherwise be written wrong."""
    lo, hi = _finite_range(arr, name)
    if lo < -FLOAT_RANGE_SLACK or hi > 1 + FLOAT_RANGE_SLACK:
        raise RefocusError(
            f"{name} is a float image with values {lo:.4g}…{hi:.4g}; float images must hold intensities "
            "in [0, 1]. Divide by the full-scale value (e.g. 255) or pass it as uint8/uint16."
        )


def _finite_range(arr: np.ndarray, name: str) -> tuple[float, float]:
    if arr.size == 0:
        raise RefocusError(f"{name} is empty (shape {arr.shape}).")
    if not np.isfinite(arr).all():
        raise RefocusError(f"{name} contains NaN or Inf values; clean the data first.")
    return float(arr.min()), float(arr.max())


def float_full_scale(arr: np.ndarray, *, name: str = "image", full_scale: float | None = None) -> float:
    """The full scale of float data, which the tools divide it by: 1 for intensities in [0, 1] (overshoot up to
    FLOAT_RANGE_SLACK is clipped), else the data's maximum, so that a float image on a scale of its own (0..255,
    0..4095, photon counts) is taken at that scale and its results come back on it. ``full_scale``: the scale
    the data must share (a radiance that of its image), checked instead. NaN/Inf, and negative values beyond the
    slack, are clear errors."""
    lo, hi = _finite_range(arr, name)
    scale = full_scale if full_scale is not None else (1.0 if hi <= 1 + FLOAT_RANGE_SLACK else hi)
    if lo < -FLOAT_RANGE_SLACK * scale:
        raise RefocusError(
            f"{name} is a float image with values {lo:.4g}…{hi:.4g}; intensities cannot be negative. Shift or clip "
            "the data to non-negative values first."
        )
    if hi > (1 + FLOAT_RANGE_SLACK) * scale:
        raise RefocusError(f"{name} holds values up to {hi:.4g}, beyond the full scale {scale:.4g} it must share.")
    return scale


def float_scale_or_none(image: np.ndarray, *, name: str = "image", full_scale: float | None = None) -> float | None:
    """:func:`float_full_scale` of a whole float input (a stack's slices then share it), None for integer data
    (checked by :func:`integer_full_scale`: their dtype is their scale) and bool masks. ``full_scale``: that of a
    larger whole the float input is part of (the stack it is one slice of), checked instead of taken."""
    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        return float_full_scale(arr, name=name, full_scale=full_scale)
    if arr.dtype.kind in "ui":
        integer_full_scale(arr, name=name)
    return None


def input_full_scale(
    image: np.ndarray, *, name: str = "image", radiance: np.ndarray | None = None, radiance_name: str = "radiance"
) -> float:
    """The full scale a command's result comes back on, 1 for integers: :func:`float_scale_or_none` of the image,
    or :func:`pair_full_scale` with its ``radiance``. What the command checks its output against, before any
    work (so a bad input is named before its output)."""
    scale = float_scale_or_none(image, name=name)
    if radiance is not None:
        scale = pair_full_scale(scale, float_scale_or_none(radiance, name=radiance_name), names=(name, radiance_name))
    return 1.0 if scale is None else scale


def pair_full_scale(
    image_scale: float | None, radiance_scale: float | None, *, names: tuple[str, str]
) -> float | None:
    """One full scale for an image and its radiance (their :func:`float_scale_or_none`), so that both are divided
    alike: None when both are integers (each has its dtype's); the larger of the two float scales (a sharp radiance
    peaks above its blurred image), unless one is a hundred times the other (0..255 against [0, 1]); 1 for a float
    partner of an integer image, which must then hold [0, 1] as the integer's does."""
    if image_scale is None and radiance_scale is None:
        return None
    if image_scale is None or radiance_scale is None:
        float_name, scale = (names[1], radiance_scale) if image_scale is None else (names[0], image_scale)
        if scale != 1:
            raise RefocusError(
                f"{float_name} is float on a scale of its own (full scale {scale:.4g}) but its partner is an 8/16-bit "
                "image; give both as integers, or the float one in [0, 1]."
            )
        return 1.0
    low, high = sorted((image_scale, radiance_scale))
    if high > MAX_PAIR_SCALE_RATIO * low:
        raise RefocusError(
            f"{names[0]} and {names[1]} are on different scales (full scales {image_scale:.4g} and "
            f"{radiance_scale:.4g}); give both on one scale."
        )
    return high


def to_float(image: np.ndarray, *, name: str = "image", full_scale: float | None = None) -> np.ndarray:
    """Scale an integer or float array to float32 in [0, 1]: integers by their dtype's full scale, floats by
    :func:`float_full_scale` (``full_scale`` as there; slight overshoot clipped). Empty input is an error."""
    arr = np.asarray(image)
    if arr.size == 0:
        raise RefocusError(f"{name} is empty (shape {arr.shape}).")
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float32) / np.float32(integer_full_scale(arr, name=name))
    if np.issubdtype(arr.dtype, np.floating):
        return _scaled_float(arr, float_full_scale(arr, name=name, full_scale=full_scale))
    raise RefocusError(f"{name} has unsupported dtype {arr.dtype}; expected {SUPPORTED_DTYPES}.")


def integer_full_scale(arr: np.ndarray, *, name: str = "image") -> int:
    """The full scale of 8/16-bit integer data, its dtype's maximum. Signed int8/int16 (some cameras and TIFF
    writers) hold intensities too, unless a value is negative; 32/64-bit counts have no conventional full scale."""
    if arr.dtype.itemsize > 2:
        raise RefocusError(f"{name} has integer dtype {arr.dtype}; expected {SUPPORTED_DTYPES}.")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise RefocusError(
            f"{name} is {arr.dtype} with values down to {int(arr.min())}; intensities cannot be negative. Shift or "
            "clip the data to non-negative values first."
        )
    return int(np.iinfo(arr.dtype).max)


def _scaled_float(arr: np.ndarray, scale: float) -> np.ndarray:
    """Float data divided by its full ``scale`` into a new float32 array in [0, 1] (the caller's is never touched)."""
    out = np.clip(arr, 0.0, scale, dtype=np.float32)
    if scale != 1:
        out *= np.float32(1 / scale)
    return out


def from_float(image: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Inverse of :func:`to_float`: clip to [0, 1] and rescale to ``dtype`` (floats stay float32)."""
    dtype = np.dtype(dtype)
    clipped = np.clip(image, 0.0, 1.0)
    if np.issubdtype(dtype, np.integer):
        return np.rint(clipped * np.iinfo(dtype).max).astype(dtype)
    return clipped.astype(np.float32)


def exposure_gain(rgb: np.ndarray) -> float:
    """The gain ≥ 1 that lifts the bright end (99.9th percentile) of a dim image in [0, 1] to DIM_PEAK, capped so
    that no pixel passes 1; 1 for an image that is already as bright, or black."""
    brightest = float(rgb.max())
    if brightest <= 0:
        return 1.0
    step = max(1, rgb.size // PEAK_SAMPLE_VALUES)
    row = math.prod(rgb.shape[1:])  # values in one row
    while math.gcd(step, row) != 1:  # a step dividing the row length reads the same columns (or channel) of each row
        step += 1
    peak = float(np.percentile(rgb.reshape(-1)[::step], PEAK_PERCENTILE))
    gain = 1.0 / brightest if peak <= 0 else min(DIM_PEAK / peak, 1.0 / brightest)
    return max(1.0, gain)


@dataclass
class RGBImage:
    """An image split into RGB float32 (H, W, 3) plus what is needed to put it back as it came."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    was_gray: bool
    dtype: np.dtype
    full_scale: float = 1.0  # of float data (see float_full_scale); integers use their dtype's

    def restore(self, rgb: np.ndarray) -> np.ndarray:
        """Return ``rgb`` in the caller's original layout, dtype and scale (gray stays gray, alpha re-attached)."""
        out = rgb.mean(axis=-1) if self.was_gray else rgb
        if self.alpha is not None:
            out = np.concatenate([out, self.alpha[..., None]], axis=-1)
        restored = from_float(out, self.dtype)
        if self.full_scale != 1:
            restored *= np.float32(self.full_scale)
        return restored


def as_rgb(image: np.ndarray, *, name: str = "image", min_size: int = 1, full_scale: float | None = None) -> RGBImage:
    """Normalise a single 2-D image, gray (H, W), (H, W, 1), RGB or RGBA, to float RGB. ``full_scale``: the scale
    of float data shared with the rest of its stack or with its pair (see :func:`float_scale_or_none`,
    :func:`pair_full_scale`); integer data ignores it."""
    arr = native_8bit(np.asarray(image))
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    scale = 1.0
    if arr.dtype.kind == "f":
        scale = float_full_scale(arr, name=name, full_scale=full_scale)

    def scaled() -> np.ndarray:
        return _scaled_float(arr, scale) if arr.dtype.kind == "f" else to_float(arr, name=name)

    if arr.ndim == 2:
        was_gray, alpha = True, None
        rgb = np.repeat(scaled()[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        was_gray = False
        f = scaled()
        rgb, alpha = f[..., :3], (f[..., 3] if arr.shape[-1] == 4 else None)
    else:
        raise RefocusError(
            f"{name} has shape {arr.shape}; expected a 2-D gray image (H, W) or colour (H, W, 3|4): this tool "
            "takes one image at a time."
        )
    h, w = rgb.shape[:2]
    if h < min_size or w < min_size:
        raise RefocusError(f"{name} is {h}×{w} pixels; at least {min_size}×{min_size} is needed.")
    return RGBImage(np.ascontiguousarray(rgb), alpha, was_gray, arr.dtype, scale)  # native order: native_8bit above


def native_8bit(arr: np.ndarray) -> np.ndarray:
    """:func:`native_byte_order`, and a 1-bit (bool) mask as 8-bit 0/255, so that it runs and comes back as
    an 8-bit image in every tool."""
    arr = native_byte_order(arr)
    return arr.astype(np.uint8) * np.uint8(255) if arr.dtype == bool else arr


def native_byte_order(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the machine's byte order: a big-endian '>u2' array would otherwise compare unequal to
    np.uint16 and keep its byte order into results and files (a 16-bit image then wrote as all-white 8-bit)."""
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def image_slices(
    image,
    rgb: bool | None,
    name: str,
    *,
    min_size: int = 1,
    needed_by: str = "the tools",
    full_scale: float | None = None,
) -> tuple[np.ndarray, list[tuple], tuple[int, int], float | None]:
    """Validate an image or stack (…, H, W[, C]) and list its 2-D slices: (array, slice indices, (H, W), full
    scale). The full scale is that of the whole input (:func:`float_scale_or_none`, given ``full_scale`` when the
    input is one slice of a larger float stack): pass it to each slice's :func:`as_rgb`, so that the slices of a
    float stack are scaled alike.

    ``rgb``: whether the last axis holds colour (1, 3 or 4 channels); guessed when None. Images smaller than
    ``min_size`` pixels a side are refused, naming ``needed_by``.
    """
    arr = native_8bit(np.asarray(image))
    if arr.dtype.kind not in "uif" or (arr.dtype.kind in "ui" and arr.dtype.itemsize > 2):
        raise RefocusError(f"{name} has dtype {arr.dtype}; expected {SUPPORTED_DTYPES}.")
    if arr.size == 0:
        raise RefocusError(f"{name} is empty (shape {arr.shape}).")
    full_scale = float_scale_or_none(arr, name=name, full_scale=full_scale)
    if rgb is None:
        rgb = arr.ndim >= 3 and arr.shape[-1] in (1, 3, 4)
        if arr.ndim == 3 and arr.shape[-1] < 8 and not rgb:  # 2, 5, 6, 7: neither colour nor a likely width
            raise RefocusError(
                f"{name} has shape {arr.shape}: a last axis of {arr.shape[-1]} is neither colour (3 or 4) nor an "
                "image width; expected (H, W), (H, W, 3|4) or stacks (..., H, W[, 3|4])."
            )
    if rgb and (arr.ndim < 3 or arr.shape[-1] not in (1, 3, 4)):
        raise RefocusError(f"{name} has shape {arr.shape}; colour images need a last axis of 3 or 4.")
    spatial = 3 if rgb else 2
    if arr.ndim < spatial:
        raise RefocusError(f"{name} has shape {arr.shape}; expected a 2-D image (H, W) or (H, W, 3|4).")
    lead_shape = arr.shape[: arr.ndim - spatial]
    h, w = arr.shape[len(lead_shape) : len(lead_shape) + 2]
    if h < min_size or w < min_size:
        raise RefocusError(f"{name} is {h}×{w} pixels; {needed_by} need at least {min_size}×{min_size}.")
    return arr, list(np.ndindex(*lead_shape)) if lead_shape else [()], (h, w), full_scale


def store_slice(
    out: np.ndarray | None, result: np.ndarray, shape: tuple, lead: list[tuple], index: tuple
) -> np.ndarray:
    """Put the result of slice ``index`` of an input of ``shape`` (slices ``lead``, from :func:`image_slices`)
    in place; the first call allocates ``out``. (H, W, 1) input gets (H, W, 1) back, not (H, W)."""
    result = result.reshape(shape[len(index) :]) if result.size == math.prod(shape[len(index) :]) else result
    if lead == [()]:
        return result
    if out is None:
        out = np.empty(shape[: len(index)] + result.shape, dtype=result.dtype)
    out[index] = result
    return out


def luminance(image: np.ndarray) -> np.ndarray:
    """Gray (…, H, W) from float gray or RGB(A) channels-last data."""
    if image.ndim >= 3 and image.shape[-1] in (3, 4):
        return image[..., :3] @ LUMA_WEIGHTS
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file (PNG, JPEG, TIFF, …) as stored, with a clear error for missing or corrupt files.

    The decoder is chosen by the file's content, not its suffix. Pixels come as they are shown: an EXIF
    orientation is applied, CMYK becomes RGB, gray + alpha becomes RGBA (the tools take gray, RGB or RGBA)
    and a 1-bit image becomes uint8 0/255.
    """
    path = Path(path)
    if not path.exists():
        raise RefocusError(f"{path} does not exist.")
    if path.is_dir():
        raise RefocusError(f"{path} is a folder; expected an image file.")
    try:
        if path.stat().st_size == 0:
            raise RefocusError(f"{path} is empty (0 bytes); expected an image file.")
        with open(path, "rb") as f:
            head = f.read(26)  # enough for the TIFF magic and a PNG's IHDR
        if head[:4] in TIFF_MAGIC:
            data = _read_tiff(path)
        elif _is_16bit_colour_png(head):  # Pillow silently reads these as 8-bit; FFmpeg keeps 16 bits
            data = _read_16bit_colour_png(path)
        else:
            data = _read_with_pillow_or_imageio(path)
    except RefocusError:
        raise
    except Exception as exc:  # decoders raise many types; all mean "not a readable image"
        raise RefocusError(f"Cannot read {path} as an image ({type(exc).__name__}: {exc}).") from exc
    return native_8bit(np.asarray(data))


def _read_with_pillow_or_imageio(path: Path) -> np.ndarray:
    import imageio.v3 as iio
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # the header only
            mode = {"CMYK": "RGB", "LA": "RGBA", "La": "RGBA", "PA": "RGBA"}.get(im.mode)
            key = im.info.get("transparency")
            if key is not None and im.mode in ("P", "L", "RGB", "1"):
                mode = "RGBA"  # a palette or colour-key transparency (pngquant's PNGs, GIFs) is an alpha channel
            deep_gray_key = key if isinstance(key, int) and im.mode.startswith("I") else None
    except UnidentifiedImageError:  # not a Pillow format: imageio finds a plugin
        return iio.imread(path)
    data = iio.imread(path, plugin="pillow", mode=mode, rotate=True)
    if deep_gray_key is not None and data.ndim == 2:  # 16-bit gray with a colour key: Pillow's RGBA has 8 bits
        alpha = np.where(data == deep_gray_key, 0, np.iinfo(data.dtype).max if data.dtype.kind in "ui" else 1)
        data = np.stack([data, data, data, alpha.astype(data.dtype)], axis=-1)
    return data


def _read_tiff(path: Path) -> np.ndarray:
    """The image series, colour last: planar RGB(A) (axes SYX, samples before the rows) would otherwise be
    taken for three gray slices. ImageJ channels (C) stay where they are: they are usually separate stains,
    not the red, green and blue of one colour image. Single images appended page by page (several 2-D series
    of one shape and dtype, as tifffile's append=True writes) are stacked as slices; otherwise the first
    series is the image (later ones may be thumbnails, other positions of an OME file, masks). Gray + alpha
    becomes RGBA, as it does from a PNG."""
    import tifffile

    def read(s) -> np.ndarray:
        page = s.keyframe
        gray_alpha = page.photometric == tifffile.PHOTOMETRIC.MINISBLACK and tuple(page.extrasamples) in ((1,), (2,))
        return _colour_last(s.asarray(), s.axes, gray_alpha=gray_alpha)

    with tifffile.TiffFile(path) as tif:
        series = tif.series
        first = series[0]
        appended = len(series) > 1 and not tif.is_ome and all(
            s.axes in ("YX", "YXS") and s.shape == first.shape and s.dtype == first.dtype for s in series
        )
        if appended:
            return np.stack([read(s) for s in series])
        return read(first)


def _colour_last(data: np.ndarray, axes: str, *, gray_alpha: bool = False) -> np.ndarray:
    """The samples axis (S) of colour (3, 4) or, when ``gray_alpha``, of gray + alpha (2) moved last; gray +
    alpha as RGBA. Contiguous or planar, alike."""
    i = axes.find("S")
    if i < 0 or i >= data.ndim or data.shape[i] not in ((2,) if gray_alpha else (3, 4)):
        return data
    data = np.moveaxis(data, i, -1)
    return data[..., [0, 0, 0, 1]] if gray_alpha else data


def _is_16bit_colour_png(head: bytes) -> bool:
    """From a file's first 26 bytes: signature, IHDR length and type, width, height, bit depth, colour type."""
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16 and head[25] in (2, 4, 6)


def open_image_with_ffmpeg(path: Path):
    """A PyAV container reading exactly the image file ``path``. Absolute: FFmpeg reads "a:b.png" as protocol
    "a"; pattern_type none: it reads "w%d.png" as the numbered sequence w1.png, w2.png, …"""
    import av

    return av.open(str(Path(path).absolute()), format="image2", options={"pattern_type": "none"})


def _read_16bit_colour_png(path: Path) -> np.ndarray:
    with open_image_with_ffmpeg(path) as container:
        frame = next(container.decode(video=0))
        has_alpha = "a" in frame.format.name
        return frame.to_ndarray(format="rgba64le" if has_alpha else "rgb48le")


def _write_16bit_colour_png(path: Path, image: np.ndarray) -> None:
    """Pillow cannot write 16-bit RGB(A) PNGs; FFmpeg's PNG encoder can."""
    import av

    alpha = image.shape[-1] == 4
    # update=1: one file under exactly this name ('%d' in a name would otherwise be a frame-number pattern)
    with av.open(str(path.absolute()), "w", format="image2", options={"update": "1"}) as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height = image.shape[1], image.shape[0]
        stream.pix_fmt = "rgba64be" if alpha else "rgb48be"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgba64le" if alpha else "rgb48le")
        for packet in (*stream.encode(frame), *stream.encode()):
            container.mux(packet)


TIFF_SUFFIXES = (".tif", ".tiff")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
OUTPUT_SUFFIXES = (".png", *TIFF_SUFFIXES, ".jpg", ".jpeg")


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists: where a missing folder would be made."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_path(
    path: str | Path,
    *,
    dtype: np.dtype = np.dtype(np.float32),
    shape: tuple[int, ...] = (),
    inputs: tuple[str | Path | None, ...] = (),
    float_data: bool = False,
    full_scale: float = 1.0,
) -> Path:
    """Refuse, before any work, an output that :func:`write_image` could not write as asked: an unknown
    suffix, a folder, one of the ``inputs`` (the command's input files and its other outputs), a stack or
    float data (``float_data``: SML maps, focal stacks; or a float image whose ``full_scale`` is not 1, see
    :func:`input_full_scale`) in anything but TIFF, 16 bits or alpha in JPEG. ``dtype``/``shape``: the
    result's, as written."""
    out = Path(path)
    suffix = _output_suffix(out)
    if out.is_dir():
        raise RefocusError(f"output {out} is a folder; give a file name.")
    if any(i is not None and Path(i).resolve() == out.resolve() for i in inputs):
        raise RefocusError(f"output {out} is an input file or another output; write the result under another name.")
    check_writable(out)
    if suffix in TIFF_SUFFIXES:
        return out
    if float_data:
        raise RefocusError(f"this result is float32 data; write it as .tif ({suffix} would round it to 8 bits).")
    if np.dtype(dtype).kind == "f" and full_scale != 1:
        raise RefocusError(
            f"the result is a float image on a scale of its own (full scale {full_scale:.4g}), as its input is; "
            f"write it as .tif ({suffix} would round it to 8 bits of [0, 1])."
        )
    dtype = np.dtype(dtype).newbyteorder("=")
    if dtype.kind == "i":
        raise RefocusError(f"{suffix} holds unsigned 8 or 16 bits; write the {dtype} result as .tif.")
    single = len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))
    if not single:
        raise RefocusError(f"a result of shape {tuple(shape)} is a stack; write it as .tif.")
    if suffix in (".jpg", ".jpeg"):
        if dtype == np.uint16:
            raise RefocusError("JPEG cannot hold 16-bit images; write .png or .tif to keep 16 bits.")
        if len(shape) == 3 and shape[-1] == 4:
            raise RefocusError("JPEG cannot hold an alpha channel; write .png or .tif to keep it.")
    return out


def _output_suffix(path: Path) -> str:
    """The suffix of an output file, lower case, when :func:`write_image` has a writer for it."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise RefocusError(f"output {path} must end in one of {', '.join(OUTPUT_SUFFIXES)}.")
    return suffix


def check_writable(path: str | Path) -> None:
    """Refuse an output file that cannot be written, before the work rather than after it: a new file needs
    a writable folder (the nearest existing one: missing folders are made); an existing file must be
    writable itself, as for ``cp`` (:func:`write_image` then writes beside it and renames, or in place in a
    read-only folder)."""
    out = Path(path)
    for parent in out.parents:
        if parent.is_symlink() and not parent.exists():  # mkdir cannot make the folder it points to
            raise RefocusError(f"output {out}: {parent} is a link to {os.path.realpath(parent)}, which does not exist.")
    folder = nearest_existing(out.parent)
    if not folder.is_dir():
        raise RefocusError(f"output {out}: {folder} is a file, not a folder.")
    target = Path(os.path.realpath(out))  # write_image writes beside the file a symlink points to
    if target.is_file():
        if os.access(target, os.W_OK):
            return
        raise RefocusError(f"output {out} is read-only; make it writable or write the result under another name.")
    if out.is_symlink():  # a link to a file not there yet: write_image makes that file, in the folder it names
        if not target.parent.is_dir():
            problem = "is a file, not a folder" if target.parent.exists() else "does not exist"
            raise RefocusError(f"output {out} is a link to {target}, whose folder {problem}.")
        folder = target.parent
    try:  # really try: os.access says yes to root on folders where creating a file fails (/sys, /proc)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise RefocusError(f"output {out}: cannot write into {folder} ({exc.strerror or exc}).") from exc


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image``: TIFF keeps any dtype (float32 stacks); PNG/JPEG need uint8/uint16 (floats are
    written as 8 bits).

    The file appears whole or not at all: it is written beside the target (through a symlink, beside the
    file it points to) and renamed over it, keeping an existing file's permissions. Where no file can be
    made beside it (a read-only folder), it is written in place.
    """
    path = Path(path)
    image = native_8bit(np.asarray(image))
    _check_writable_data(path, image)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = Path(os.path.realpath(path))
    try:
        partial = _new_partial_file(target, path.suffix)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        _write_file(target, image, path, path.suffix)
        return path
    try:
        if target.exists():
            shutil.copymode(target, partial)
        _write_file(partial, image, path, path.suffix)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return path


def _check_writable_data(path: Path, image: np.ndarray) -> None:
    """What :func:`write_image` refuses rather than write wrongly: a suffix it has no writer for (it would
    have written TIFF under any name), and for 8/16-bit formats integers it cannot scale (int32, int64) or
    floats outside [0, 1] (0..255 floats were clipped to nearly all white)."""
    suffix = _output_suffix(path)
    if suffix in TIFF_SUFFIXES or image.dtype in (np.uint8, np.uint16):
        return
    if image.dtype.kind == "f":
        check_float_range(image, name=f"the image for {path.name}")
    else:
        raise RefocusError(f"cannot write {image.dtype} data to {path.name}: {suffix} holds uint8 or uint16; "
                           "convert it, or pass floats in [0, 1] (written as 8 bits), or write .tif.")  # fmt: skip


def _new_partial_file(target: Path, suffix: str) -> Path:
    """An empty new file beside ``target``: a short hidden name (long target names stay valid) ending in
    ``suffix``, with the permissions a new file gets (umask)."""
    for _ in range(100):
        partial = target.with_name(f".rg-{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return partial
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")


def _write_file(path: Path, image: np.ndarray, shown: Path, suffix: str) -> None:
    """Write ``image`` to ``path`` in the format that ``suffix`` names (the user's path ``shown``: a symlink
    may point to a file named otherwise); errors name ``shown``."""
    suffix = suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            photometric = "rgb" if image.ndim >= 3 and image.shape[-1] in (3, 4) else "minisblack"
            tifffile.imwrite(path, image, photometric=photometric)
            return
        if image.dtype not in (np.uint8, np.uint16):
            image = from_float(image, np.uint8)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]  # PNG/JPEG have no one-channel layout but gray
        if image.dtype == np.uint16 and image.ndim == 3 and image.shape[-1] in (3, 4) and suffix == ".png":
            _write_16bit_colour_png(path, image)
        else:
            import imageio.v3 as iio

            iio.imwrite(path, image, extension=suffix)
    except Exception as exc:  # writers raise many types (Pillow a TypeError for unsupported modes)
        raise RefocusError(f"cannot write {shown}: {exc}") from exc
