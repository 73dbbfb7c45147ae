"""Layer plumbing shared by the widgets: choosing input layers, copying their data, showing results.

Running a widget again (or turning δ) updates the same output layer in place instead of piling up new
ones: the layer it made before for that input (:class:`OutputLayers`), whatever it is called now, else
the layer with the output's name.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container
from napari.layers import Image

from ..core.errors import RefocusError
from ..core.imaging import float_scale_or_none, pair_full_scale


def image_layer_combo(
    viewer,
    *,
    label: str,
    tooltip: str,
    optional: bool = False,
    none_label: str = "none",
    prefer: Callable[[Image], bool] | None = None,
) -> ComboBox:
    """A dropdown of the viewer's image layers, headed by a ``none_label`` entry (value None) when ``optional``.

    ``prefer``: layers it accepts are listed first, so that the default choice is a sensible one.
    """

    def choices(_widget=None) -> list[tuple[str, Any]]:
        layers = [layer for layer in viewer.layers if isinstance(layer, Image)]
        if prefer is not None:
            layers.sort(key=lambda layer: not prefer(layer))  # stable: layer-list order otherwise
        return ([(none_label, None)] if optional else []) + [(layer.name, layer) for layer in layers]

    # Not `nullable`: that would add magicgui's own "-----" entry next to ours.
    combo = ComboBox(label=label, choices=choices, tooltip=tooltip)
    _keep_the_choice_through_renames(combo)
    if prefer is not None:
        _keep_a_preferred_choice(combo, prefer)
    _note_a_lost_choice(combo)
    return combo


# Dropdowns whose chosen layer was deleted, until a layer is chosen again: magicgui then shows another layer,
# which work started without the user looking (a δ turn, a queued rerun) must not take for the user's choice.
_LOST_CHOICE: weakref.WeakSet = weakref.WeakSet()


def _note_a_lost_choice(combo: ComboBox) -> None:
    resetting: list[bool] = []  # non-empty while the choices are reset (value changes then are not a pick)

    def on_changed(_value: Any) -> None:
        if not resetting:
            _LOST_CHOICE.discard(combo)

    combo.changed.connect(on_changed)
    # a pick of the entry already shown changes no value: Qt's `activated` still reports the user's choice
    combo.native.activated.connect(lambda *_: _LOST_CHOICE.discard(combo))
    reset = combo.reset_choices

    def reset_noting_a_lost_choice(*args: Any) -> None:
        chosen = _unproxied(combo.value)
        resetting.append(True)
        try:
            reset(*args)
        finally:
            resetting.pop()
        if combo.value is None:
            _LOST_CHOICE.discard(combo)  # nothing chosen now: the next layer offered is a fresh default
        elif chosen is not None and not any(_unproxied(layer) is chosen for layer in combo.choices):
            _LOST_CHOICE.add(combo)

    combo.reset_choices = reset_noting_a_lost_choice


def choice_was_lost(combo: ComboBox) -> bool:
    """Whether the layer chosen in ``combo`` was deleted and the layer shown now was put there by the
    dropdown, not chosen (see :func:`keep_current_choice`)."""
    return combo in _LOST_CHOICE


def keep_current_choice(combo: ComboBox) -> None:
    """Take the layer ``combo`` shows now as chosen (the user pressed a run button with it on screen)."""
    _LOST_CHOICE.discard(combo)


def _keep_the_choice_through_renames(combo: ComboBox) -> None:
    """Keep the chosen layer chosen when the choices are reset. magicgui finds the current choice again by
    its name, so renaming the chosen layer selected the first layer instead, and the next run (or δ turn)
    worked on a layer the user never chose."""
    reset = combo.reset_choices

    def reset_keeping_the_layer(*args: Any) -> None:
        chosen = _unproxied(combo.value)
        reset(*args)
        if chosen is None or _unproxied(combo.value) is chosen:
            return
        same = next((layer for layer in combo.choices if layer is not None and _unproxied(layer) is chosen), None)
        if same is not None:
            combo.value = same

    combo.reset_choices = reset_keeping_the_layer


def _keep_a_preferred_choice(combo: ComboBox, prefer: Callable[[Image], bool]) -> None:
    """Until the user (or a script) picks an entry, select a preferred layer whenever the choices are reset:
    magicgui keeps the current value, so the first layer added would stay chosen (a sample's all-in-focus
    view rather than its focal stack, added after it). A pick holds while its layer is offered."""
    choosing: list[bool] = []  # non-empty while this function changes the value
    picked: list[Any] = []  # the layer the user (or a script) chose, while it is still offered

    def on_changed(value: Any) -> None:
        if not choosing:
            picked[:] = [_unproxied(value)]  # napari's proxies are new objects at each access

    combo.changed.connect(on_changed)
    reset = combo.reset_choices

    def reset_and_prefer(*args: Any) -> None:
        choosing.append(True)
        try:
            reset(*args)
            if picked and not any(_unproxied(layer) is picked[0] for layer in combo.choices):
                picked.clear()  # the chosen layer is gone: prefer again
            current = combo.value
            if picked or (current is not None and prefer(current)):
                return
            first = next((layer for layer in combo.choices if layer is not None and prefer(layer)), None)
            if first is not None:
                combo.value = first
        finally:
            choosing.pop()

    combo.reset_choices = reset_and_prefer


def follow_layer_list(viewer, widget: Container) -> None:
    """Refresh ``widget``'s layer dropdowns whenever layers are added, removed, reordered or renamed.

    napari does this for docked magicgui widgets; doing it here as well keeps undocked widgets (scripts,
    tests) correct. napari's events hold the bound method weakly, and a destroyed widget disconnects.
    """
    events = viewer.layers.events
    emitters = (events.inserted, events.removed, events.reordered, events.renamed)
    for emitter in emitters:
        emitter.connect(widget.reset_choices)
    alive = weakref.ref(widget)

    def disconnect(*_):
        w = alive()
        if w is not None:
            for emitter in emitters:
                emitter.disconnect(w.reset_choices)

    widget.native.destroyed.connect(disconnect)


def is_stack(layer: Image) -> bool:
    """A layer with one more axis than a single image (gray (S, H, W) or colour (S, H, W, C))."""
    return layer.ndim == 3


def chosen_layer(combo: ComboBox, what: str) -> Image:
    """The selected layer, or a clear error when there is none."""
    layer = combo.value
    if layer is None:
        raise RefocusError(f"Choose {what} first (open an image or a sample: File ▸ Open Sample ▸ napari-refocusgan).")
    return layer


def layer_data_later(layer: Image) -> Callable[[], np.ndarray]:
    """A function, for the worker thread to call, that returns a private numpy copy of ``layer``'s data (the
    widgets never write into the caller's array); see :func:`_copy_later`."""
    if layer.multiscale:
        raise RefocusError(
            f"Layer {layer.name!r} is a multiscale (pyramid) image; add one level of it as a plain image layer "
            "(e.g. the full resolution, layer.data[0]). A list of equal-size slices opens as a pyramid too: "
            "np.stack them into one array."
        )
    return _copy_later(layer.data)


def _copy_later(data: Any, index: tuple[int, ...] = ()) -> Callable[[], np.ndarray]:
    """A function returning a private numpy copy of ``data[index]``. In-memory (numpy) data is copied now, so
    edits made while the task runs cannot reach it; lazy data (dask, zarr, …) is read when the function is
    called, in the worker, so the GUI does not wait on a disk or a computation."""
    if isinstance(data, np.ndarray):
        copied = np.array(data[index], copy=True)
        return lambda: copied
    return lambda: np.array(data[index], copy=True)


def displayed_image(viewer, layer: Image) -> tuple[Callable[[], np.ndarray], tuple[int, ...]]:
    """The one 2-D image (gray or colour) of ``layer`` that the viewer shows, as :func:`layer_data_later`
    gives it (a function returning a private copy, for the worker thread), and its indices: the whole layer
    (indices ``()``), or for a stack (slices, time, z, …) the slice at the viewer's current position. Only
    that slice is read, also from a lazy (dask) layer."""
    if layer.multiscale:
        return layer_data_later(layer), ()  # its message
    spatial_ndim = 3 if layer.rgb else 2
    lead = layer.data.ndim - spatial_ndim
    if lead < 0:
        raise RefocusError(f"layer {layer.name!r} has shape {layer.data.shape}; expected a 2-D gray or colour image.")
    if lead == 0:
        return layer_data_later(layer), ()
    dims = viewer.dims
    if dims.ndisplay != 2 or tuple(dims.displayed) != (dims.ndim - 2, dims.ndim - 1):
        raise RefocusError(
            f"layer {layer.name!r} is a stack: this tool takes the slice on screen, which needs the 2-D view of "
            "its last two axes (toggle 2D/3D, and roll or transpose the axes back)."
        )
    point = np.asarray(dims.point[-layer.ndim :], dtype=float)
    position = layer.world_to_data(point)
    across = layer.world_to_data(point + np.r_[np.zeros(lead), 1.0, 1.0])  # another spot of the same view
    if not np.allclose(across[:lead], position[:lead], atol=1e-6):
        raise RefocusError(
            f"layer {layer.name!r} is rotated, sheared or transformed across its stack axes: the view cuts through "
            "several of its slices, so there is no one slice on screen to take. Reset its rotate/shear/affine."
        )
    index = tuple(int(np.round(p)) for p in position[:lead])
    shape = layer.data.shape[:lead]
    outside = [k for k, (i, n) in enumerate(zip(index, shape)) if not 0 <= i < n]
    if outside:
        # napari draws nothing of the layer there; a clamped slice would be one the user does not see
        k = outside[0]
        axis = dims.ndim - layer.ndim + k
        lo, hi = (float(v) for v in layer.extent.world[:, k])
        raise RefocusError(
            f"layer {layer.name!r} has no slice at the viewer's position ({dims.point[axis]:g} on axis {axis}; "
            f"the layer spans {lo:g}…{hi:g} there): move the slider onto the layer."
        )
    return _copy_later(layer.data, index), index


def stack_scale_later(layer: Image, partner: Image | None = None) -> Callable[[], float | None]:
    """For a task on the slice shown (:func:`displayed_image`): a function, for the worker thread, returning the
    float full scale of the whole ``layer`` (shared with its radiance ``partner``, see
    :func:`~..core.imaging.pair_full_scale`), so that the slice is scaled as the stack's other slices and its
    result comes back on the stack's scale. None, and the slice is taken on its own scale, for lazy data (reading
    all of it is what the slice mode avoids; a memory-mapped file too) or when the whole stack gives no scale (a
    NaN in another slice). The scan takes about 0.15 s per 400 MB of float stack, on every run."""
    layers = [lay for lay in (layer, partner) if lay is not None]
    arrays = [lay.data for lay in layers]
    in_memory = [isinstance(a, np.ndarray) and not isinstance(a, np.memmap) for a in arrays]
    if any(lay.multiscale for lay in layers) or not all(in_memory):
        return lambda: None

    def scale() -> float | None:
        try:
            scales = [float_scale_or_none(a) for a in arrays]
            return scales[0] if len(scales) == 1 else pair_full_scale(*scales, names=("image", "radiance"))
        except RefocusError:
            return None  # the slice's own check names the problem, if the slice has it

    return scale


def display_like(layer: Image, data: np.ndarray) -> dict[str, Any]:
    """Contrast limits for a result ``data`` of ``layer``, so that the two compare side by side: the input's
    own when the result is in the same units (same dtype kind: the tools give 8 and 16 bits back as they
    came, so a 12-bit image in uint16 keeps its limits); else [0, 1] for a float result (a bool mask's), and
    napari's defaults otherwise."""
    if np.dtype(layer.dtype).kind == data.dtype.kind:
        return {"contrast_limits": tuple(float(v) for v in layer.contrast_limits)}
    return {"contrast_limits": (0.0, 1.0)} if data.dtype.kind == "f" else {}


def spatial_placement(layer: Image, ndim: int) -> dict[str, Any]:
    """The world transform (scale, translate, rotate, shear, affine), units and axis labels of ``layer``'s last
    ``ndim`` (non-channel) axes, so that results overlay their input in its physical units (napari drops the
    units of every layer when two disagree). For a slice of a stack, the trailing blocks of the transform's
    matrices: exact when the stack axes do not mix with the image axes (the usual case)."""
    d = layer.ndim
    shear = np.asarray(layer.shear, dtype=float)
    if shear.ndim == 1:  # napari gives the upper-triangular entries as a vector, a lower-triangular shear whole
        shear = np.eye(d)
        shear[np.triu_indices(d, 1)] = layer.shear
    affine = np.asarray(layer.affine.affine_matrix)
    trailing = np.eye(ndim + 1)
    trailing[:ndim, :ndim] = affine[d - ndim : d, d - ndim : d]
    trailing[:ndim, ndim] = affine[d - ndim : d, d]
    return {
        "scale": tuple(layer.scale[-ndim:]),
        "translate": tuple(layer.translate[-ndim:]),
        "rotate": np.asarray(layer.rotate)[-ndim:, -ndim:],
        "shear": shear[-ndim:, -ndim:],
        "affine": trailing,
        "units": tuple(layer.units[-ndim:]),
        "axis_labels": tuple(layer.axis_labels[-ndim:]),
    }


# The layers this plugin made, held weakly, with the contrast limits it last gave each. Only these layers are ever
# updated in place or replaced by name: a layer of the user's own that happens to have an output's name is left
# alone, and the result gets a new layer (napari makes its name unique). Limits that differ from those given are
# the user's, and an update in place keeps them (a δ turn must not undo the user's display).
_MADE_HERE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def show_image(
    viewer,
    data: np.ndarray,
    *,
    name: str,
    metadata: dict[str, Any],
    rgb: bool = False,
    on_new: Callable[[Image], None] | None = None,
    target: Image | None = None,
    new_layer: bool = False,
    **layer_kwargs: Any,
) -> Image:
    """Put ``data`` into the image layer ``target`` if it is still in the viewer (keeping its current name),
    else into the layer called ``name`` if this plugin made it (and not ``new_layer``), else into a new layer.

    The layer's metadata is replaced by ``metadata`` (what made this result). Contrast limits the user set on an
    existing layer are kept while the data type stays (else ``contrast_limits``, or napari's for the new data, are
    given). An existing output layer whose kind does not fit (RGB vs gray, other dimensionality) is replaced at the
    same position.
    """
    view_ndim = data.ndim - (1 if rgb else 0)
    existing = target if target is not None and target in viewer.layers else None
    if existing is None and name in viewer.layers and not new_layer and _unproxied(viewer.layers[name]) in _MADE_HERE:
        existing = viewer.layers[name]
    if existing is not None:
        if isinstance(existing, Image) and bool(existing.rgb) == rgb and existing.ndim == view_ndim:
            users_limits = tuple(existing.contrast_limits) if _limits_set_by_user(existing, data) else None
            existing.data = data
            existing.metadata = dict(metadata)
            for key in ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels"):
                if key in layer_kwargs:
                    setattr(existing, key, layer_kwargs[key])
            if users_limits is not None:
                existing.contrast_limits = users_limits
            elif "contrast_limits" in layer_kwargs:
                existing.contrast_limits = layer_kwargs["contrast_limits"]
            else:
                existing.reset_contrast_limits()
            _MADE_HERE[_unproxied(existing)] = tuple(existing.contrast_limits)
            return existing
        index = viewer.layers.index(existing)
        viewer.layers.remove(existing)
        layer = viewer.add_image(data, name=name, metadata=dict(metadata), rgb=rgb, **layer_kwargs)
        viewer.layers.move(viewer.layers.index(layer), index)
    else:
        layer = viewer.add_image(data, name=name, metadata=dict(metadata), rgb=rgb, **layer_kwargs)
    _MADE_HERE[_unproxied(layer)] = tuple(layer.contrast_limits)
    if on_new is not None:
        on_new(layer)
    return layer


def _limits_set_by_user(layer: Image, new_data: np.ndarray) -> bool:
    """Whether ``layer``'s contrast limits are the user's rather than this plugin's, and still fit ``new_data``
    (same data type)."""
    given = _MADE_HERE.get(_unproxied(layer))
    changed = given is not None and not np.allclose(layer.contrast_limits, given, rtol=1e-6, atol=0)
    return changed and np.dtype(layer.dtype) == new_data.dtype


class OutputLayers:
    """The output layers a widget made, by input layer and role ("radiance", "refocused", …), held weakly.

    A later result for the same input goes into the layer made before, even after the user renamed it or
    the input, rather than into a new layer named after the input; one the user deleted is made again.
    """

    def __init__(self, viewer):
        self._viewer = viewer
        self._made: dict[tuple[int, str], tuple[weakref.ref, weakref.ref]] = {}

    def show(self, source: Image, role: str, data: np.ndarray, *, name: str, **kwargs: Any) -> Image:
        """:func:`show_image` into the layer made before for ``source`` and ``role``, else ``name`` (unless
        that layer is another input's output: then a new layer, which napari names uniquely)."""
        self._made = {k: v for k, v in self._made.items() if v[0]() is not None and v[1]() is not None}
        source = _unproxied(source)
        key = (id(source), role)
        made = self._made.get(key)
        target = made[1]() if made is not None and made[0]() is source else None
        others = {id(out()) for src, out in self._made.values() if src() is not source}
        taken = target is None and name in self._viewer.layers and id(_unproxied(self._viewer.layers[name])) in others
        layer = show_image(self._viewer, data, name=name, target=target, new_layer=taken, **kwargs)
        self._made[key] = (weakref.ref(source), weakref.ref(_unproxied(layer)))
        return layer


def _unproxied(obj: Any) -> Any:
    """The object behind napari's PublicOnlyProxy (napari hands plugin widgets a proxied viewer, and each
    access makes a new proxy of a layer): identity and weak references need the layer itself."""
    while hasattr(type(obj), "__wrapped__"):
        obj = obj.__wrapped__
    return obj
