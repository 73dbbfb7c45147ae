"""napari reader: light fields and Lytro focal stacks as layers. Recognition and reading live in
:mod:`.core.lightfield`; this module only turns a :class:`LightField` into layer data tuples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .core.focalstack import StackConfig, centre_view, focal_stack
from .core.errors import RefocusError
from .core.formats.eslf import ESLF_SUFFIXES, has_eslf_name
from .core.lightfield import FORMAT_ESLF, FORMAT_LYTRO, LightField, detect_format, read_lightfield

LayerDataTuple = tuple  # (data, metadata dict, layer type)
PathOrPaths = str | Path | Sequence[str | Path]


def _as_paths(path: PathOrPaths) -> list[Path]:
    if isinstance(path, (str, Path)):
        return [Path(path)]
    return [Path(p) for p in path]


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerDataTuple]] | None:
    """The reader for ``path`` (or a list of paths, all of one recognised format), else None. Never raises."""
    try:
        paths = _as_paths(path)
        # by name first: an ESLF named so is decoded once, by the reader, not also here to recognise it
        if not paths or any((_claimed_by_name(p) or detect_format(p)) is None for p in paths):
            return None
        return read_lightfield_layers
    except Exception:  # napari asks every plugin about every path; a failure here must not surface
        return None


def _claimed_by_name(path: Path) -> str | None:
    """Lytro files and images named as ESLF (``*_eslf.png``, the names the manifest lists) are claimed even
    when their content is not recognised, so that reading them explains what is wrong (truncated, not an LFP,
    a raw capture, too small for 14×14 lenslets) instead of napari's "refused the file"."""
    if not path.is_file():
        return None
    if path.suffix.lower() in (".lfp", ".lfr"):
        return FORMAT_LYTRO
    if path.suffix.lower() in ESLF_SUFFIXES and has_eslf_name(path):
        return FORMAT_ESLF
    return None


def read_lightfield_layers(path: PathOrPaths) -> list[LayerDataTuple]:
    """Layers for each path: the focal stack, the centre (or all-in-focus) view, disparity/depth if any.

    Raises RefocusError when a recognised file turns out unreadable; napari shows its message. Of several
    files, those that read are opened and the others named in a warning (an error when none reads).
    """
    paths = _as_paths(path)
    layers: list[LayerDataTuple] = []
    problems: list[str] = []
    for p in paths:
        try:
            # The paper's stack uses the central 7×7 views; reading no more keeps ESLF memory bounded.
            lf = read_lightfield(p, views=StackConfig().views)
        except RefocusError as exc:
            if len(paths) == 1:
                raise
            problems.append(str(exc))
            continue
        layers.extend(lightfield_layers(lf))
    if problems and not layers:
        raise RefocusError(f"none of the {len(paths)} files opened: " + " ".join(problems))
    if problems:
        from napari.utils.notifications import show_warning

        show_warning(f"{len(problems)} of {len(paths)} files not opened: " + " ".join(problems))
    return layers


def lightfield_layers(lf: LightField) -> list[LayerDataTuple]:
    """Layer data tuples for one light field (see :func:`read_lightfield_layers`)."""
    named = lf.path if lf.path.name not in ("", "..") else lf.path.resolve()  # "." and ".." name no folder
    stem = named.stem if named.suffix else named.name
    common = {"source": lf.source, "path": str(lf.path)}
    described = {k: v for k, v in lf.metadata.items() if not isinstance(v, np.ndarray)}  # arrays are layers
    layers: list[LayerDataTuple] = []
    reference = None
    if lf.views is not None:
        config = StackConfig().within(lf.views.shape[:2])  # paper defaults; fewer views only when the grid is smaller
        stack, slopes, config = focal_stack(lf.views, config)
        stack_meta = {**common, **described, "slopes": [float(s) for s in slopes], "stack_config": asdict(config)}
        reference = centre_view(lf.views)
        reference_name = f"{stem} centre view"
    else:
        stack = lf.focal_stack
        stack_meta = {**common, **described, "lambdas": list(lf.stack_labels or [])}
        if isinstance(lf.metadata.get("all_in_focus"), np.ndarray):
            reference = lf.metadata["all_in_focus"]
            reference_name = f"{stem} all-in-focus view"
        elif stack is not None and lf.stack_labels:
            # Engine-1 stacks hold no all-in-focus view: the camera's default-focus slice is the reference
            k = int(np.argmin([abs(float(v) - _default_lambda(lf)) for v in lf.stack_labels]))
            reference = np.array(stack[k], dtype=np.float32)  # its own copy: a layer of its own
            reference_name = f"{stem} default-focus slice (λ = {float(lf.stack_labels[k]):+.2f})"
    if stack is not None:
        layers.append(
            (
                np.ascontiguousarray(stack, dtype=np.float32),
                {
                    "name": f"{stem} focal stack",
                    "rgb": True,
                    "axis_labels": ("slice", "y", "x"),
                    "contrast_limits": (0.0, 1.0),  # as the reference view: toggling between them keeps brightness
                    "metadata": stack_meta,
                },
                "image",
            )
        )
    if reference is not None:
        layers.append(
            (reference, {"name": reference_name, "rgb": True, "contrast_limits": (0.0, 1.0), "metadata": dict(common)},
             "image")
        )  # fmt: skip
    height, width = _image_size(lf, stack, reference)
    for data, label in ((lf.disparity, "disparity"), (lf.depth, "depth")):
        if data is None:
            continue
        meta = {
            "name": f"{stem} {label}",
            "colormap": "viridis",
            "metadata": {**common, "kind": lf.metadata.get("depth_kind", label)},
        }
        if height and (data.shape[0] != height or data.shape[1] != width):
            # A coarser map (Lytro depth LUT): stretch it over the image, pixel centres aligned.
            sy, sx = height / data.shape[0], width / data.shape[1]
            meta.update(scale=(sy, sx), translate=((sy - 1) / 2, (sx - 1) / 2))
        layers.append((data, meta, "image"))
    return layers


def _default_lambda(lf: LightField) -> float:
    """The camera's default focus λ from the file's metadata; 0 (λ of the optical focus) if absent or not a
    finite number."""
    try:
        value = float(lf.metadata.get("default_lambda"))
    except (TypeError, ValueError):
        return 0.0
    return value if np.isfinite(value) else 0.0


def _image_size(lf: LightField, stack, reference) -> tuple[int, int]:
    if stack is not None:
        return stack.shape[1], stack.shape[2]
    if reference is not None:
        return reference.shape[0], reference.shape[1]
    return 0, 0
