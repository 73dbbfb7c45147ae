"""The learned tools: "Deblur (radiance)" (G1) and "Refocus" (G2), thin adapters over core.inference.

Both widgets pick a device and a tile size, load weights once (the shipped default or a chosen
``.safetensors`` file) and keep them while the file and device stay the same. The Refocus widget keeps
the radiance it computed, so that turning δ runs G2 only and updates one output layer in place.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_info

from ..core.errors import RefocusError
from ..core.focalstack import CancelFn, ProgressFn, StackConfig
from ..core.focus import SMLParams, sml
from ..core.inference import available_devices, check_delta, deblur, pick_device, refocus, tile_used
from ..core.weights import LoadedModel, default_model, load_generator, read_config
from .layer_io import (
    OutputLayers,
    choice_was_lost,
    chosen_layer,
    display_like,
    displayed_image,
    follow_layer_list,
    image_layer_combo,
    keep_current_choice,
    layer_data_later,
    spatial_placement,
    stack_scale_later,
)
from .workers import TaskRunner

_STACK = StackConfig()
DELTA_TOOLTIP = (
    "δ in slices of the paper's default focal stack: one step changes the refocus slope by "
    f"2·s_max/(S−1) = 3/29 ≈ {_STACK.slope_step:.4f} px per view. δ > 0 moves focus towards higher slice "
    "indices (larger slope), i.e. farther on a Lytro Illum capture; δ < 0 nearer. The box spans the model's "
    "trained range; a typed value runs on Enter."
)
# Widest δ that still lands inside the paper's 30-slice stack; the model's own range is checked by the core.
DELTA_LIMIT = _STACK.slices - 1
TILE_TOOLTIP = (
    "side of a tile's core in pixels; 0 = automatic (whole image up to about 4 MP at the default width, "
    "else 1024-px tiles). "
    "Lower it when the device runs out of memory; tiles share whole-image statistics, so no seams."
)
WEIGHTS_TOOLTIP = "a .safetensors file written by the training 'export' command; empty = the shipped weights"


def device_combo() -> ComboBox:
    return ComboBox(
        label="device", choices=["auto", *available_devices()], value="auto",
        tooltip="where the network runs; auto = CUDA, then Apple MPS, then CPU",
    )  # fmt: skip


def tile_spinbox() -> SpinBox:
    return SpinBox(label="tile (px)", value=0, min=0, max=16384, step=64, tooltip=TILE_TOOLTIP)


def weights_picker(label: str) -> FileEdit:
    return FileEdit(label=label, mode="r", filter="*.safetensors", nullable=True, tooltip=WEIGHTS_TOOLTIP)


class ModelSlot:
    """Loads generator weights of one role on demand and keeps them while file and device are unchanged."""

    def __init__(self, role: str, picker_label: str):
        self.role = role
        self.picker_label = picker_label
        self._key: tuple | None = None
        self._model: LoadedModel | None = None

    def path_for(self, weights: Path | None) -> Path:
        if weights is not None:
            return Path(weights).expanduser()
        try:
            return default_model(self.role).path
        except RefocusError:
            raise RefocusError(
                f"No shipped {self.role} weights are installed; choose a .safetensors file in '{self.picker_label}'."
            ) from None

    def get(self, weights: Path | None, device) -> LoadedModel:
        path = self.path_for(weights)
        try:
            stat = path.stat()
            fingerprint = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            fingerprint = None  # load_generator explains what is wrong with the path
        key = (str(path.resolve()), fingerprint, str(device))
        if key != self._key or self._model is None:
            self._model, self._key = None, None
            spec = path if weights is not None else self.role  # the role name makes the core check the sha256
            self._model = load_generator(spec, device, role=self.role)
            self._key = key
        return self._model

    @property
    def loaded_key(self) -> tuple | None:
        """(file, mtime and size, device) of the loaded weights: changes whenever they do."""
        return self._key


def model_metadata(model: LoadedModel, device, tile: int, image: np.ndarray, rgb: bool) -> dict[str, Any]:
    """What made an output: the model, the device, the tile side asked for (0 = auto) and the one taken for
    ``image``'s slices (0 = whole)."""
    hw = image.shape[-3:-1] if rgb else image.shape[-2:]
    return {
        "model": model.name,
        "role": model.role,
        "weights": str(model.source) if model.source else None,
        "device": str(device),
        "tile": int(tile),
        "tile_used": int(tile_used(model.config, hw, tile) or 0),
    }


def in_phase(progress: ProgressFn, phase: int, phases: int) -> ProgressFn:
    """Map one step's (done, total) onto its share of a run made of ``phases`` equal parts."""

    def report(done: int, total: int) -> None:
        total = max(int(total), 1)
        progress(phase * total + done, phases * total)

    return report


def check_sml_layer(name: str, metadata: dict, sml_map: np.ndarray, image: np.ndarray, rgb: bool) -> SMLParams:
    """The SML parameters of an SML layer (``name``, its ``metadata`` and data ``sml_map``) made from
    ``image`` by the "Focus measure (SML)" widget.

    core.inference.deblur computes G1's focus channel from the image itself; a chosen SML layer therefore
    contributes its parameters, after checking that it really is the SML of this image with them (so that the
    network's focus channel is that map's, computed the same way; on a dim image after its brightening,
    see core.imaging.exposure_gain).
    """
    recorded = metadata.get("sml_params")
    if not recorded:
        raise RefocusError(
            f"Layer {name!r} carries no SML parameters; make it with the 'Focus measure (SML)' "
            "widget, or choose 'compute from the image'."
        )
    params = SMLParams(**recorded)
    expected = sml(image, params, rgb=rgb)
    if sml_map.shape != expected.shape:
        why = f"its shape is {sml_map.shape}, this image's SML would be {expected.shape}"
    elif not np.allclose(sml_map, expected, atol=1e-5):
        worst = float(np.abs(sml_map - expected).max())
        why = f"its values differ from this image's SML with the same settings by up to {worst:.3g}"
    else:
        return params
    raise RefocusError(
        f"SML layer {name!r} was not computed from this image ({why}); recompute it from the image or choose "
        "'compute from the image'."
    )


class DeblurWidget(Container):
    """G1: image layer in, all-in-focus radiance layer ``"<image> radiance"`` out (updated in place)."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._image = image_layer_combo(napari_viewer, label="image", tooltip="image or stack to deblur")
        self._focus = image_layer_combo(
            napari_viewer, label="focus (SML)", optional=True, none_label="compute from the image",
            tooltip="G1's focus channel: computed from the image with the model's SML settings, or an SML "
            "layer made from this image by the 'Focus measure (SML)' widget (its settings are used)",
        )  # fmt: skip
        self._weights = weights_picker("G1 weights")
        self._device = device_combo()
        self._tile = tile_spinbox()
        self._run_button = PushButton(text="Deblur")
        self.runner = TaskRunner()
        self._model = ModelSlot("deblur", "G1 weights")
        self._outputs = OutputLayers(napari_viewer)
        super().__init__(
            widgets=[self._image, self._focus, self._weights, self._device, self._tile, self._run_button, self.runner]
        )
        self._run_button.changed.connect(self.run)
        follow_layer_list(napari_viewer, self)

    def run(self, *_) -> None:
        try:
            layer = chosen_layer(self._image, "an image layer to deblur")
            read = layer_data_later(layer)
            focus_layer = self._focus.value
            focus = None
            if focus_layer is not None:  # name and metadata taken here: the task runs in another thread
                focus = (focus_layer.name, dict(focus_layer.metadata), layer_data_later(focus_layer))
        except Exception as exc:
            self.runner.fail(exc, description="Deblur")
            return
        rgb = bool(layer.rgb)
        weights, device_name, tile = self._weights.value, self._device.value, int(self._tile.value)
        source, name = layer.name, f"{layer.name} radiance"
        placement = spatial_placement(layer, layer.data.ndim - (1 if rgb else 0))

        def task(progress: ProgressFn, cancel: CancelFn):
            data = read()
            params = None
            if focus is not None:
                focus_name, focus_metadata, read_focus = focus
                params = check_sml_layer(focus_name, focus_metadata, read_focus(), data, rgb)
            device = pick_device(device_name)
            model = self._model.get(weights, device)
            out = deblur(
                data, model, rgb=rgb, sml_params=params, device=device, tile=tile or None,
                progress=progress, cancel=cancel,
            )  # fmt: skip
            used = params or model.sml
            metadata = {
                "source": source,
                **model_metadata(model, device, tile, data, rgb),
                "sml_params": asdict(used),
                "focus": focus[0] if focus is not None else "computed from the image",
            }
            return out, metadata

        def show(result) -> None:
            out, metadata = result
            self._outputs.show(
                layer, "radiance", out, name=name, metadata=metadata, rgb=rgb, **placement, **display_like(layer, out)
            )

        self.runner.run(task, show, description="Deblur")


class RefocusWidget(Container):
    """G2: image (+ radiance, computed with G1 and cached when not given) and δ → ``"<image> refocused"``.

    Changing δ reruns G2 only and updates the same output layer.
    """

    RADIANCE_CACHE_SIZE = 2

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._image = image_layer_combo(napari_viewer, label="image", tooltip="image or stack to refocus")
        self._radiance = image_layer_combo(
            napari_viewer, label="radiance", optional=True, none_label="compute with G1 (cached)",
            tooltip="the deblurred (all-in-focus) image, e.g. the Deblur widget's output; computed once and "
            "cached when not given",
        )  # fmt: skip
        self._delta = FloatSpinBox(label="δ (slices)", value=0.0, min=-DELTA_LIMIT, max=DELTA_LIMIT, step=1.0, tooltip=DELTA_TOOLTIP)
        self._live = CheckBox(text="refocus when δ changes", value=True)
        self._slice_only = CheckBox(
            text="only the slice shown (stacks)", value=False,
            tooltip="refocus just the slice of a stack (time, z, focal stack) that the viewer shows: a δ change "
            "then costs one image instead of every slice",
        )  # fmt: skip
        self._weights = weights_picker("G2 weights")
        self._deblur_weights = weights_picker("G1 weights")
        self._deblur_weights.tooltip = WEIGHTS_TOOLTIP + " (used only to compute a missing radiance)"
        self._device = device_combo()
        self._tile = tile_spinbox()
        self._run_button = PushButton(text="Refocus")
        self.runner = TaskRunner()
        self._g2 = ModelSlot("refocus", "G2 weights")
        self._g1 = ModelSlot("deblur", "G1 weights")
        self._outputs = OutputLayers(napari_viewer)
        self._radiance_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._rerun_pending = False
        super().__init__(
            widgets=[
                self._image, self._radiance, self._delta, self._live, self._slice_only, self._weights,
                self._deblur_weights,
                self._device, self._tile, self._run_button, self.runner,
            ]
        )  # fmt: skip
        self._run_button.changed.connect(self._button_pressed)
        # a typed δ runs once, on Enter or leaving the box, not at each keystroke ("3.5" ran δ = 3 first)
        self._delta.native.setKeyboardTracking(False)
        self._delta.changed.connect(self._delta_changed)
        self.runner.finished.connect(self._after_run)
        self.runner.cancelling.connect(self._drop_pending_run)
        self._weights.changed.connect(self._weights_chosen)
        follow_layer_list(napari_viewer, self)
        self._weights_chosen()

    def _weights_chosen(self, *_) -> None:
        """Fit the δ box to the chosen G2's trained range, read from its file's header (no weights loaded): the
        shipped G2's from the registry. A file that cannot be read leaves the box; running it says why."""
        weights = self._weights.value
        try:
            config = default_model("refocus").config if weights is None else read_config(weights, role="refocus")
        except RefocusError:
            return
        self._fit_delta_box(config)

    def _fit_delta_box(self, config) -> None:
        """Limit the δ box to what the G2 ``config`` was trained on (whole steps for one-hot models)."""
        if config.delta_range is None:
            return
        lo, hi = config.delta_range
        if (self._delta.min, self._delta.max) != (lo, hi):
            with self._delta.changed.blocked():  # a clamped value must not start a run by itself
                self._delta.min, self._delta.max = lo, hi
        self._delta.step = 1.0 if config.delta_mode == "onehot" else 0.5

    def _delta_changed(self, *_) -> None:
        if not self._live.value or self._image.value is None:
            return
        if self.runner.busy:  # coalesce: run once more, with the δ of then, when the current run ends
            self._rerun_pending = True
            return
        self._run_unattended()

    def _run_unattended(self) -> None:
        """A run the user did not start with the layer in view (a δ turn, a queued rerun): not on a layer the
        dropdown fell back to after the chosen one was deleted."""
        if choice_was_lost(self._image):
            show_info("Refocus: the image layer it worked on was deleted; choose one and press Refocus.")
            return
        self.run()

    def _button_pressed(self, *_) -> None:
        keep_current_choice(self._image)  # pressed with this layer on screen: the user's choice
        # after Cancel, a click queues the run; during a run it is refused with a warning (a double click
        # must not refocus a whole stack twice)
        if self.runner.stopping:
            self._rerun_pending = True
            return
        self.run()

    def _drop_pending_run(self) -> None:
        # Cancel stops what was asked before it; a δ change or a click after it still runs
        self._rerun_pending = False

    def _after_run(self, status: str) -> None:
        if self._rerun_pending:
            self._rerun_pending = False
            self._run_unattended()

    def run(self, *_) -> None:
        try:
            layer = chosen_layer(self._image, "an image layer to refocus")
            radiance_layer = self._radiance.value
            slice_only = self._slice_only.value

            def reader(lay):  # a stack whole, or (radiance too) only the slice on screen; read in the task
                return displayed_image(self._viewer, lay) if slice_only else (layer_data_later(lay), ())

            read, index = reader(layer)
            read_radiance, radiance_index = reader(radiance_layer) if radiance_layer is not None else (None, ())
            read_scale = stack_scale_later(layer, radiance_layer) if index or radiance_index else lambda: None
        except Exception as exc:
            self.runner.fail(exc, description="Refocus")
            return
        rgb = bool(layer.rgb)
        delta = float(self._delta.value)
        weights, deblur_weights = self._weights.value, self._deblur_weights.value
        device_name, tile = self._device.value, int(self._tile.value)
        # the slice shown gets a layer of its own: switching modes must not drop a whole-stack result
        role = "refocused slice" if index else "refocused"
        source, name = layer.name, f"{layer.name} {role}"
        given_radiance = None
        if radiance_layer is not None:
            given_radiance = f"layer {radiance_layer.name!r}"
            if radiance_index:
                given_radiance += f", slice {list(radiance_index)}"
        placement = spatial_placement(layer, layer.data.ndim - len(index) - (1 if rgb else 0))

        def task(progress: ProgressFn, cancel: CancelFn):
            device = pick_device(device_name)
            g2 = self._g2.get(weights, device)
            d = check_delta(g2, delta)  # before any expensive work
            data = read()
            rad, radiance_note = (read_radiance() if read_radiance else None), given_radiance
            scale = read_scale()  # a float stack's, which its slice shown shares
            phases, phase = 1, 0
            if rad is None and g2.config.in_channels == 6:
                g1 = self._g1.get(deblur_weights, device)
                key = (_digest(data), rgb, scale, self._g1.loaded_key)
                rad = self._radiance_cache.get(key)
                radiance_note = f"computed with {g1.name!r} (cached for δ changes)"
                if rad is None:
                    phases = 2
                    rad = deblur(
                        data, g1, rgb=rgb, device=device, tile=tile or None, full_scale=scale,
                        progress=in_phase(progress, 0, phases), cancel=cancel,
                    )  # fmt: skip
                    self._remember(key, rad)
                    phase = 1
            out = refocus(
                data, d, g2, radiance=rad, rgb=rgb, device=device, tile=tile or None, full_scale=scale,
                progress=in_phase(progress, phase, phases), cancel=cancel,
            )  # fmt: skip
            metadata = {
                "source": source,
                **model_metadata(g2, device, tile, data, rgb),
                "delta": d,
                "delta_slope_px_per_view": d * _STACK.slope_step,
                "radiance": radiance_note,
                **({"slice": list(index)} if index else {}),
            }
            return out, metadata, g2.config

        def show(result) -> None:
            out, metadata, config = result
            self._outputs.show(
                layer, role, out, name=name, metadata=metadata, rgb=rgb, **placement, **display_like(layer, out)
            )
            self._fit_delta_box(config)  # the model that ran may be a user's, with another range

        self.runner.run(task, show, description="Refocus")

    def _remember(self, key: tuple, radiance: np.ndarray) -> None:
        self._radiance_cache[key] = radiance
        while len(self._radiance_cache) > self.RADIANCE_CACHE_SIZE:
            self._radiance_cache.popitem(last=False)


def _digest(data: np.ndarray) -> tuple:
    """Identity of an image's content, for the radiance cache (edits to the layer change it)."""
    h = hashlib.blake2b(np.ascontiguousarray(data).view(np.uint8).reshape(-1), digest_size=16)
    return data.shape, str(data.dtype), h.hexdigest()
