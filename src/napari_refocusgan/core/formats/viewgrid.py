"""Folders of sub-aperture views: the HCI 4D benchmark layout and ``NAME_RR_CC`` grids.

HCI (Honauer et al., ACCV 2016): ``input_Cam000.png … input_Cam080.png``, row-major 9×9
(row = index // 9, column = index % 9), optional ``parameters.cfg`` (INI) and ``gt_disp_lowres.pfm``.
HCI disparities have the opposite sign to this package's convention (checked on the scene "antinous": a
region of HCI disparity d is sharpest in the shift-and-sum slice of slope −d), so the ground truth is
negated on read: :attr:`LightField.disparity` always follows :mod:`..focalstack`.

``NAME_RR_CC.png`` (or .jpg/.tif): 1-based row RR (down the grid) and column CC (to the right).
"""

from __future__ import annotations

import configparser
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RefocusError
from ..imaging import as_rgb, check_float_range, read_image
from ..lightfield import LightField
from .pfm import read_pfm

VIEW_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
HCI_VIEW = re.compile(r"^input_Cam(\d{3})\.png$", re.IGNORECASE)
GRID_VIEW = re.compile(r"^(?P<name>.+?)_(?P<row>\d{1,3})_(?P<col>\d{1,3})\.(?:png|jpe?g|tiff?|bmp)$", re.IGNORECASE)
HCI_DISPARITY_FILE = "gt_disp_lowres.pfm"
HCI_PARAMETERS_FILE = "parameters.cfg"
HCI_GRID = 9  # the benchmark's 9×9 views


@dataclass
class ViewFolder:
    """Which file holds which view, found from the names alone (nothing decoded yet)."""

    kind: str  # "hci" or "view-grid"
    folder: Path
    rows: int
    cols: int
    files: dict[tuple[int, int], Path] = field(default_factory=dict)  # (row, col), 0-based → file
    name: str = ""
    parameters: dict | None = None  # an HCI folder's parameters.cfg, when it has one

    def missing(self, first: int) -> tuple[list[tuple[int, int]], int]:
        """The ``first`` missing views (row-major) and how many are missing: the grid may be declared huge
        (parameters.cfg), so it is never listed whole."""
        every = ((r, c) for r in range(self.rows) for c in range(self.cols) if (r, c) not in self.files)
        return list(itertools.islice(every, first)), self.rows * self.cols - len(self.files)


def _listing(folder: Path) -> list[Path]:
    try:
        # hidden files are not views: macOS leaves "._NAME" copies of every file on foreign disks
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise RefocusError(f"Cannot list {folder}: {exc.strerror or exc}.") from exc


def scan_view_folder(folder: str | Path) -> ViewFolder | None:
    """Find a view grid in ``folder`` from file names; None when no file name matches either layout.

    Raises RefocusError when names match but do not form one grid (two grids, a 0 index, two files for one
    view, HCI views beyond the grid its parameters.cfg declares).
    """
    folder = Path(folder)
    files = _listing(folder)
    hci = {int(m.group(1)): p for p in files if (m := HCI_VIEW.match(p.name))}
    grid: dict[str, dict[tuple[int, int], Path]] = {}
    for p in files:
        m = GRID_VIEW.match(p.name)
        if m and not HCI_VIEW.match(p.name):
            views = grid.setdefault(m.group("name"), {})
            key = (int(m.group("row")), int(m.group("col")))
            if key in views:
                raise RefocusError(
                    f"{folder}: {views[key].name} and {p.name} are both view ({key[0]}, {key[1]}); keep one of them."
                )
            views[key] = p
    if hci and grid:
        raise RefocusError(
            f"{folder} holds both HCI views (input_CamNNN.png) and NAME_RR_CC views ({', '.join(sorted(grid))}); "
            "put each light field in its own folder."
        )
    if hci:
        rows, cols, parameters = _hci_grid(folder, max(hci))
        files = {(i // cols, i % cols): p for i, p in hci.items()}
        return ViewFolder("hci", folder, rows, cols, files, folder.name, parameters)
    if grid:
        if len(grid) > 1:
            raise RefocusError(
                f"{folder} holds view grids with different names ({', '.join(sorted(grid))}); "
                "keep one light field per folder."
            )
        ((name, views),) = grid.items()
        if any(r == 0 or c == 0 for r, c in views):
            raise RefocusError(f"{folder}: NAME_RR_CC view numbers start at 1 (found a row or column 0 in {name}_…).")
        rows, cols = max(r for r, _ in views), max(c for _, c in views)
        return ViewFolder("view-grid", folder, rows, cols, {(r - 1, c - 1): p for (r, c), p in views.items()}, name)
    return None


def _hci_grid(folder: Path, highest: int) -> tuple[int, int, dict | None]:
    """(rows, cols, parameters.cfg or None) of an HCI folder: the grid its parameters.cfg declares, else the
    benchmark's 9×9 (or the smallest square holding the highest index beyond that). Never guessed from the
    number of files: an interrupted copy of the first 64 views would otherwise read as a complete 8×8 grid,
    views misplaced."""
    rows = cols = max(HCI_GRID, math.isqrt(highest) + 1)
    cfg = folder / HCI_PARAMETERS_FILE
    parameters = read_hci_parameters(cfg) if cfg.is_file() else None
    if parameters is not None:
        extr = parameters.get("extrinsics", {})
        declared = (extr.get("num_cams_y"), extr.get("num_cams_x"))
        if any(v is not None for v in declared) and not all(isinstance(v, int) and v > 0 for v in declared):
            raise RefocusError(f"{cfg} declares an invalid camera grid (num_cams_y = {declared[0]}, num_cams_x = "
                               f"{declared[1]}); expected two positive whole numbers.")  # fmt: skip
        if all(v is not None for v in declared):
            rows, cols = declared
            if highest >= rows * cols:
                raise RefocusError(
                    f"{cfg} declares a {rows}×{cols} camera grid but the folder holds views up to "
                    f"input_Cam{highest:03d}.png."
                )
    return rows, cols, parameters


def read_hci_parameters(path: str | Path) -> dict[str, dict[str, object]]:
    """``parameters.cfg`` as {section: {key: number or text}}."""
    parser = configparser.ConfigParser()
    try:
        parser.read_string(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, configparser.Error) as exc:
        reason = str(exc).splitlines()[0]  # configparser adds the offending lines, raw bytes and all
        raise RefocusError(f"Cannot parse {path} as an HCI parameters.cfg (INI) file: {reason}") from exc
    out: dict[str, dict[str, object]] = {}
    for section in parser.sections():
        values: dict[str, object] = {}
        for key, text in parser.items(section):
            try:
                values[key] = int(text)
            except ValueError:
                try:
                    values[key] = float(text)
                except ValueError:
                    values[key] = text
        out[section] = values
    return out


def read_view_folder(folder: str | Path, views: int | None = None) -> LightField:
    """Read a view folder; ``views=n`` reads only the central views, at most n×n (the same block as
    :func:`..focalstack.central_views`; smaller grids are read whole)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RefocusError(f"{folder} is not a folder.")
    found = scan_view_folder(folder)
    if found is None:
        raise RefocusError(
            f"{folder} holds no light-field views: expected HCI files input_Cam000.png … input_Cam080.png or "
            "a grid named NAME_RR_CC.png (1-based row and column)."
        )
    missing, n_missing = found.missing(6)
    if missing:
        shown = ", ".join(_view_name(found, r, c) for r, c in missing)
        more = f" and {n_missing - len(missing)} more" if n_missing > len(missing) else ""
        assumed = ""
        if found.kind == "hci" and found.parameters is None:
            assumed = (
                f" Without {HCI_PARAMETERS_FILE} an HCI folder is taken as the benchmark's {HCI_GRID}×{HCI_GRID}"
                " views; for another grid, declare num_cams_x and num_cams_y under [extrinsics] in it."
            )
        raise RefocusError(
            f"{folder}: the {found.rows}×{found.cols} view grid is incomplete; missing {shown}{more}.{assumed}"
        )
    metadata: dict[str, object] = {"grid_in_file": (found.rows, found.cols), "name": found.name}
    if found.parameters is not None:
        metadata["parameters"] = found.parameters

    nr, nc = found.rows, found.cols
    if views is not None:  # at most the central n×n, as focalstack.central_views cuts it
        nr, nc = min(int(views), found.rows), min(int(views), found.cols)
    r0, c0 = (found.rows - nr) // 2, (found.cols - nc) // 2

    grid: np.ndarray | None = None
    first_shape = None
    for i in range(nr):
        for j in range(nc):
            path = found.files[(r0 + i, c0 + j)]
            rgb = as_rgb(_view_image(path), name=str(path), full_scale=1.0).rgb
            if grid is None:
                first_shape, first_path = rgb.shape, path
                grid = np.empty((nr, nc, *rgb.shape), dtype=np.float32)
            elif rgb.shape != first_shape:
                raise RefocusError(
                    f"{folder}: views differ in size: {first_path.name} is {first_shape[1]}×{first_shape[0]} but "
                    f"{path.name} is {rgb.shape[1]}×{rgb.shape[0]} (width×height); all views must match."
                )
            grid[i, j] = rgb

    metadata["view_offset"] = (r0, c0)  # index of views[0, 0] in the folder's grid
    disparity = None
    if found.kind == "hci":
        pfm = folder / HCI_DISPARITY_FILE
        if pfm.is_file():
            gt = read_pfm(pfm)
            if gt.shape != first_shape[:2]:
                raise RefocusError(
                    f"{pfm} is {gt.shape[1]}×{gt.shape[0]} but the views are {first_shape[1]}×{first_shape[0]}; "
                    "it does not belong to these views."
                )
            disparity = -gt  # HCI sign → ours (see module docstring)
            metadata["disparity_source"] = f"{HCI_DISPARITY_FILE}, negated to this package's sign convention"
    return LightField(source=found.kind, path=folder, views=grid, disparity=disparity, metadata=metadata)


def _view_image(path: Path) -> np.ndarray:
    """One view file; float views hold [0, 1], so that every view of the light field is scaled alike."""
    image = read_image(path)
    if image.dtype.kind == "f":
        check_float_range(image, name=str(path))
    return image


def _view_name(found: ViewFolder, r: int, c: int) -> str:
    if found.kind == "hci":
        return f"input_Cam{r * found.cols + c:03d}.png"
    return f"{found.name}_{r + 1:02d}_{c + 1:02d}.*"
