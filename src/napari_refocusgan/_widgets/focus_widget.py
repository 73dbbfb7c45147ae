"""The "Focus measure (SML)" widget: image layer in, Sum-of-Modified-Laplacian map out."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from magicgui.widgets import Container, FloatSpinBox, PushButton, SpinBox

from ..core.focalstack import Cancelled, CancelFn, ProgressFn
from ..core.focus import SMLParams, sml
from ..core.imaging import float_scale_or_none
from .layer_io import (
    OutputLayers,
    chosen_layer,
    follow_layer_list,
    image_layer_combo,
    layer_data_later,
    spatial_placement,
)
from .workers import TaskRunner


def sml_per_slice(
    data: np.ndarray, params: SMLParams, *, rgb: bool, progress: ProgressFn, cancel: CancelFn
) -> np.ndarray:
    """:func:`core.focus.sml` slice by slice over the leading axes of a stack, reporting progress. A float stack's
    slices share its full scale, so that the maps equal ``sml(data)``."""
    params.check()
    scale = float_scale_or_none(data, name="SML input")
    spatial_ndim = 3 if rgb else 2
    lead = data.shape[: max(data.ndim - spatial_ndim, 0)]
    if not lead:
        progress(0, 1)
        out = sml(data, params, rgb=rgb)
        progress(1, 1)
        return out
    slices = data.reshape(-1, *data.shape[len(lead) :])
    maps = []
    for i, image in enumerate(slices):
        if cancel():
            raise Cancelled()
        maps.append(sml(image, params, rgb=rgb, full_scale=scale))
        progress(i + 1, len(slices))
    return np.stack(maps).reshape(*lead, *maps[0].shape)


class SMLWidget(Container):
    """Focus measure (SML, Nayar & Nakagawa 1994) of an image or of every slice of a stack.

    The output layer ``"<input> SML"`` is float32 (…, H, W) and is updated in place on re-runs.
    """

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        d = SMLParams()
        self._image = image_layer_combo(napari_viewer, label="image", tooltip="image or stack (colour uses luminance)")
        self._step = SpinBox(label="step", value=d.step, min=1, max=64, tooltip="Laplacian stride in pixels")
        self._window = SpinBox(
            label="window", value=d.window, min=1, max=255, step=2,
            tooltip="side of the averaging window in pixels (odd)",
        )  # fmt: skip
        self._threshold = FloatSpinBox(
            label="threshold", value=d.threshold, min=0.0, max=1.0, step=0.001,
            tooltip="modified-Laplacian values below this noise floor count as zero (in units of full scale)",
        )  # fmt: skip
        self._run_button = PushButton(text="Compute SML")
        self.runner = TaskRunner()
        self._outputs = OutputLayers(napari_viewer)
        super().__init__(
            widgets=[self._image, self._step, self._window, self._threshold, self._run_button, self.runner]
        )
        self._run_button.changed.connect(self.run)
        follow_layer_list(napari_viewer, self)

    def run(self, *_) -> None:
        try:
            layer = chosen_layer(self._image, "an image layer")
            read = layer_data_later(layer)
        except Exception as exc:
            self.runner.fail(exc, description="SML")
            return
        params = SMLParams(self._step.value, self._window.value, float(self._threshold.value))
        rgb = bool(layer.rgb)
        name = f"{layer.name} SML"
        metadata = {"source": layer.name, "measure": "SML", "sml_params": asdict(params)}
        placement = spatial_placement(layer, layer.data.ndim - (1 if rgb else 0))

        def task(progress: ProgressFn, cancel: CancelFn) -> np.ndarray:
            return sml_per_slice(read(), params, rgb=rgb, progress=progress, cancel=cancel)

        def show(result: np.ndarray) -> None:
            self._outputs.show(layer, "SML", result, name=name, metadata=metadata, colormap="magma", **placement)

        self.runner.run(task, show, description="SML")

