"""What every light-field reader returns, and the dispatcher that picks a reader from the content."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RefocusError
from .imaging import read_image


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


# ---------------------------------------------------------------------------------------------------------
# Reading: the format is recognised from the content (file magic, lenslet structure, view file names).

FORMAT_ESLF = "eslf"  # lenslet-interleaved PNG/TIFF, 14×14 views
FORMAT_HCI = "hci"  # folder of input_CamNNN.png
FORMAT_VIEW_GRID = "view-grid"  # folder of NAME_RR_CC.png
FORMAT_LYTRO = "lytro-lfp"  # .lfp/.lfr container (processed files are read; raw ones refused with a reason)
FORMATS = (FORMAT_ESLF, FORMAT_HCI, FORMAT_VIEW_GRID, FORMAT_LYTRO)


def detect_format(path) -> str | None:
    """One of :data:`FORMATS`, or None for anything else (ordinary images, TIFF stacks, junk, missing
    paths). Never raises. A folder whose names look like a view grid is recognised even when the grid is
    incomplete, so that reading it explains what is missing."""
    try:
        return _detect(Path(path))
    except Exception:  # detection must never fail the caller (napari asks every reader about every file)
        return None


def _detect(path: Path) -> str | None:
    from .formats import eslf, lfp, viewgrid

    if path.is_dir():
        try:
            found = viewgrid.scan_view_folder(path)
        except RefocusError:
            return FORMAT_VIEW_GRID  # names match but do not form one grid: reading explains why
        return None if found is None else (FORMAT_HCI if found.kind == "hci" else FORMAT_VIEW_GRID)
    if not path.is_file():
        return None
    if lfp.is_lfp(path):
        return FORMAT_LYTRO
    if path.suffix.lower() in eslf.ESLF_SUFFIXES and _header_size_fits_eslf(path):
        image = eslf.decode_lenslet_image(path)
        if eslf.looks_like_eslf(image, name_hint=eslf.has_eslf_name(path)):
            return FORMAT_ESLF
    return None


def _header_size_fits_eslf(path: Path) -> bool:
    """Cheap pre-check from the file header: one 2-D image, big enough to hold enough lenslets."""
    from .formats.eslf import LENSLET, MIN_LENSLETS

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if len(tif.pages) != 1:
                return False  # a stack, not an ESLF
            page = tif.pages[0]
            shape = (page.imagelength, page.imagewidth)  # page.shape of planar colour starts with the samples
    else:
        from PIL import Image

        with Image.open(path) as im:
            shape = (im.height, im.width)
    return min(shape[:2]) >= LENSLET * MIN_LENSLETS


def read_lightfield(path, *, views: int | None = None) -> LightField:
    """Read a light field or processed focal stack, choosing the reader from the content.

    ``views=n`` keeps only the central views of view-based formats (ESLF, HCI, NAME_RR_CC), at most n×n
    (smaller grids come whole); for ESLF this also bounds memory, as only those views are converted to
    float. Processed Lytro files ignore it.
    Raises :class:`RefocusError` with the reason when the path cannot be read.
    """
    from .formats import eslf, lfp, viewgrid

    path = Path(path)
    if not path.exists():
        raise RefocusError(f"{path} does not exist.")
    if views is not None and (not isinstance(views, (int, np.integer)) or views < 1):
        raise RefocusError(f"views must be a whole number ≥ 1, got {views!r}.")
    if path.is_dir():
        return viewgrid.read_view_folder(path, views)  # also explains why a folder is not a light field
    if lfp.is_lfp(path):
        return lfp.read_lfp(path)
    if path.suffix.lower() in (".lfp", ".lfr"):
        raise RefocusError(
            f"{path} is not a Lytro LFP/LFR file (the file magic \\x89LFP is missing); it may be truncated or corrupt."
        )
    could_be_eslf = path.suffix.lower() in eslf.ESLF_SUFFIXES
    # Decoded once, for both the ESLF test and the views.
    image = eslf.decode_lenslet_image(path) if could_be_eslf else read_image(path)
    hinted = eslf.has_eslf_name(path)
    if could_be_eslf and eslf.looks_like_eslf(image, name_hint=hinted):
        return eslf.eslf_lightfield(eslf.lenslets_from_array(image, name=str(path), path=path), views)
    if hinted:
        eslf.lenslets_from_array(image, name=str(path))  # explains a wrong size
        raise RefocusError(
            f"{path} is named like an ESLF but shows no 14×14-pixel lenslet structure (no dark lenslet corners, "
            "no repeat every 14 pixels); it may have been resized or saved as JPEG."
        )
    raise RefocusError(
        f"{path} is an ordinary {'×'.join(map(str, image.shape))} image, not a light field. Light fields are "
        "read from ESLF lenslet images (PNG/TIFF, 14×14 pixels per lenslet), folders of views (HCI "
        "input_CamNNN.png or NAME_RR_CC.png) and Lytro .lfp focal stacks; for a single photo use the refocus "
        "tools directly."
    )
