"""The non-learning tools: "Classical sharpening" (single-image baselines and blur-and-compare) and
"Focus stacking" (focal stack → all-in-focus + depth index). Thin adapters over core.classical,
core.blur_compare and core.focus_stacking."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, LineEdit, PushButton, Select, SpinBox, Widget

from ..core.blur_compare import DEFAULT_PATCH, KERNELS, MAX_RADIUS, blur_and_compare_image, parse_radii
from ..core.classical import CLASSICAL_METHODS, MAX_AMOUNT, SHARPEN_SIZES, apply_classical_image
from ..core.classical import MAX_RADIUS as MAX_SHARPEN_RADIUS
from ..core.errors import RefocusError
from ..core.focalstack import CancelFn, ProgressFn
from ..core.focus import FOCUS_MEASURES
from ..core.focus_stacking import (
    DEFAULT_BLEND_SIGMA,
    DEFAULT_MEASURES,
    DEFAULT_WINDOW,
    all_in_focus_image,
    stack_layout,
)
from .layer_io import (
    OutputLayers,
    chosen_layer,
    display_like,
    displayed_image,
    follow_layer_list,
    image_layer_combo,
    is_stack,
    layer_data_later,
    spatial_placement,
    stack_scale_later,
)
from .workers import TaskRunner

BLUR_AND_COMPARE = "blur-and-compare"
CONTRAST_STRETCHING = ("clahe", "clahe+sharpen")
# Single-image methods offered (identity is an evaluation baseline, not a tool), then blur-and-compare.
METHODS = [m for m in CLASSICAL_METHODS if m != "identity"] + [BLUR_AND_COMPARE]

_TOOLTIPS = {
    "size": "sharpening kernel side (3, 5 or 7)",
    "amount": "gain on detail (1 = double the local contrast of fine detail)",
    "radius": "Gaussian radius of the unsharp mask in pixels",
    "clip_limit": "CLAHE clip limit, OpenCV convention (2–4 typical; larger = more contrast)",
    "tile_size": "CLAHE contextual region side in pixels; 0 = 1/8 of the image side",
    "strong": "unsharp amount where the SML focus map says the image is blurred",
    "weak": "unsharp amount where the image is already sharp",
    "kernel": "blur model: disk (defocused lens) or Gaussian",
    "patch": "odd side of the window compared between blurred radiance and input",
    "sigma_max": "σ_max of σ' = σ_max − σ in pixels; 0 = automatic (99th percentile of σ)",
    "radii": "candidate defocus radii in px: START:STOP:STEP or R1,R2,…; empty = the kernel's default "
    "(disk 0:4:0.25, Gaussian 0:2:0.125)",
}


def _parameter_widget(name: str, default: Any) -> Widget:
    tooltip = _TOOLTIPS.get(name, "")
    if name == "size":
        return ComboBox(name=name, label=name, choices=list(SHARPEN_SIZES), value=default, tooltip=tooltip)
    if name == "tile_size":
        return SpinBox(name=name, label="tile size", value=default or 0, min=0, max=4096, tooltip=tooltip)
    if name == "kernel":
        return ComboBox(name=name, label=name, choices=list(KERNELS), value=default, tooltip=tooltip)
    if name == "patch":
        return SpinBox(name=name, label=name, value=default, min=1, max=99, step=2, tooltip=tooltip)
    if name == "radii":
        return LineEdit(name=name, label="candidate radii", value=default, tooltip=tooltip)
    if name == "sigma_max":
        return FloatSpinBox(name=name, label="sigma max", value=default, min=0.0, max=MAX_RADIUS, step=0.25,
                            tooltip=tooltip)  # fmt: skip
    most = MAX_SHARPEN_RADIUS if name == "radius" else MAX_AMOUNT  # the core's bounds
    return FloatSpinBox(name=name, label=name.replace("_", " "), value=float(default or 0.0), min=0.0, max=most,
                        step=0.1, tooltip=tooltip)  # fmt: skip


def _method_parameters(method: str) -> Container:
    """One widget per tunable parameter of ``method``, with the core function's defaults."""
    if method == BLUR_AND_COMPARE:
        widgets = [
            _parameter_widget("kernel", "disk"),
            _parameter_widget("patch", DEFAULT_PATCH),
            _parameter_widget("sigma_max", 0.0),
            _parameter_widget("radii", ""),
        ]
    else:
        signature = inspect.signature(CLASSICAL_METHODS[method])
        widgets = [
            _parameter_widget(p.name, p.default)
            for p in list(signature.parameters.values())[1:]
            if p.kind is p.POSITIONAL_OR_KEYWORD and isinstance(p.default, (int, float, type(None)))
        ]
    # names must be identifiers; the label is what the user sees next to the parameters
    box = Container(widgets=widgets, name=method.replace("+", "_").replace("-", "_"), label="parameters")
    box.margins = (0, 0, 0, 0)
    return box


def _parameter_values(box: Container) -> dict[str, Any]:
    values = {w.name: w.value for w in box}
    if values.get("tile_size") == 0:
        values["tile_size"] = None  # automatic
    if values.get("sigma_max") == 0:
        values["sigma_max"] = None
    if "radii" in values:  # raises RefocusError on a malformed text, before any work starts
        values["radii"] = parse_radii(values["radii"]) if values["radii"].strip() else None
    return values


class ClassicalWidget(Container):
    """Classical baselines on one image: sharpen, unsharp, CLAHE, CLAHE + sharpen, region-wise sharpening,
    and blur-and-compare with a radiance layer (which also outputs the σ defocus map)."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._image = image_layer_combo(
            napari_viewer, label="image", tooltip="a gray or colour image; of a stack, the slice shown"
        )
        self._method = ComboBox(label="method", choices=METHODS, value="unsharp")
        self._radiance = image_layer_combo(
            napari_viewer, label="radiance", tooltip="all-in-focus image of the same scene (e.g. Deblur's output)"
        )
        self._parameters = {m: _method_parameters(m) for m in METHODS}
        self._run_button = PushButton(text="Apply")
        self.runner = TaskRunner()
        self._outputs = OutputLayers(napari_viewer)
        super().__init__(
            widgets=[self._image, self._method, self._radiance, *self._parameters.values(), self._run_button, self.runner]
        )
        self._method.changed.connect(self._show_parameters)
        self._run_button.changed.connect(self.run)
        follow_layer_list(napari_viewer, self)
        self._show_parameters()

    @property
    def parameters(self) -> Container:
        """The parameter widgets of the selected method."""
        return self._parameters[self._method.value]

    def _show_parameters(self, *_) -> None:
        for method, box in self._parameters.items():
            box.visible = method == self._method.value
        self._radiance.visible = self._method.value == BLUR_AND_COMPARE

    def run(self, *_) -> None:
        method = self._method.value
        description = f"Classical ({method})"
        try:
            layer = chosen_layer(self._image, "an image layer")
            # one image: of a stack, the slice on screen
            read, index = displayed_image(self._viewer, layer)
            radiance_index = ()
            if method == BLUR_AND_COMPARE:
                radiance_layer = chosen_layer(self._radiance, "a radiance layer (the all-in-focus image)")
                read_radiance, radiance_index = displayed_image(self._viewer, radiance_layer)
            partner = radiance_layer if method == BLUR_AND_COMPARE else None
            read_scale = stack_scale_later(layer, partner) if index or radiance_index else lambda: None
            params = _parameter_values(self.parameters)
        except Exception as exc:
            self.runner.fail(exc, description=description)
            return
        rgb = bool(layer.rgb)
        placement = spatial_placement(layer, 2)
        source = layer.name  # names are fixed when the run starts, whatever happens to the layer meanwhile
        base = {"source": source, "method": method, "parameters": dict(params)}
        if index:
            base["slice"] = list(index)

        if method == BLUR_AND_COMPARE:
            base["radiance"] = radiance_layer.name
            if radiance_index:
                base["radiance_slice"] = list(radiance_index)
            names = (f"layer {source!r}", f"layer {radiance_layer.name!r}")

            def task(progress: ProgressFn, cancel: CancelFn):
                return blur_and_compare_image(read(), read_radiance(), names=names, full_scale=read_scale(), **params,
                                              progress=progress, cancel=cancel)  # fmt: skip

            def show(result) -> None:
                out_rgb = rgb
                metadata = {**base, "sigma_max_used": result.sigma_max}
                self._outputs.show(layer, method, result.refocused, name=f"{source} {method}", metadata=metadata,
                                   rgb=out_rgb, **display_like(layer, result.refocused), **placement)  # fmt: skip
                self._outputs.show(layer, "σ defocus map", result.sigma, name=f"{source} σ defocus map",
                                   metadata={**metadata, "units": "px (blur radius of the input)"}, colormap="magma",
                                   **placement)  # fmt: skip

        else:

            def task(progress: ProgressFn, cancel: CancelFn):
                progress(0, 1)
                out = apply_classical_image(read(), method, name=f"layer {source!r}", full_scale=read_scale(), **params)
                progress(1, 1)
                return out

            def show(out: np.ndarray) -> None:
                # CLAHE stretches to the full range, beyond a 12-bit image's limits in uint16: napari's fit its data
                display = {} if method in CONTRAST_STRETCHING else display_like(layer, out)
                self._outputs.show(layer, method, out, name=f"{source} {method}", metadata=base, rgb=rgb,
                                   **display, **placement)  # fmt: skip

        self.runner.run(task, show, description=description)


class FocusStackingWidget(Container):
    """Full-stack focus stacking: focal stack layer in → ``"<stack> all-in-focus"`` and
    ``"<stack> depth index"`` (0-based sharpest slice, fractional) out."""

    def __init__(self, napari_viewer):
        self._viewer = napari_viewer
        self._stack = image_layer_combo(
            napari_viewer, label="focal stack", tooltip="(slices, H, W) gray or (slices, H, W, 3) colour",
            prefer=is_stack,
        )
        self._measures = Select(
            label="focus measures", choices=list(FOCUS_MEASURES), value=list(DEFAULT_MEASURES),
            tooltip="composite focus measure: the mean of these, each normalised per pixel across slices",
        )  # fmt: skip
        self._window = SpinBox(label="window", value=DEFAULT_WINDOW, min=1, max=99, step=2,
                               tooltip="odd window side of the focus measures")  # fmt: skip
        self._blend = FloatSpinBox(label="blend σ (px)", value=DEFAULT_BLEND_SIGMA, min=0.0, max=50.0, step=0.5,
                                   tooltip="smoothing of the slice-selection weights; 0 = hard per-pixel choice")  # fmt: skip
        self._run_button = PushButton(text="Stack")
        self.runner = TaskRunner()
        self._outputs = OutputLayers(napari_viewer)
        super().__init__(
            widgets=[self._stack, self._measures, self._window, self._blend, self._run_button, self.runner]
        )
        self._run_button.changed.connect(self.run)
        follow_layer_list(napari_viewer, self)

    def run(self, *_) -> None:
        try:
            layer = chosen_layer(self._stack, "a focal-stack layer")
            read = layer_data_later(layer)  # lazy data is read later, in the task
            rgb = bool(layer.rgb)
            stack_layout(layer.data.shape, rgb)  # before anything is read: a big lazy (T, Z, Y, X) layer at once
        except Exception as exc:
            self.runner.fail(exc, description="Focus stacking")
            return
        measures = list(self._measures.value)
        window, blend = int(self._window.value), float(self._blend.value)
        placement = spatial_placement(layer, 2)
        slices = layer.data.shape[0]
        source = layer.name
        metadata = {"source": source, "measures": measures, "window": window, "blend_sigma": blend}
        for key in ("slopes", "lambdas"):  # depth index k ↔ slope (px per view) or Lytro λ of slice k
            if layer.metadata.get(key) is not None:
                metadata[key] = list(layer.metadata[key])

        def task(progress: ProgressFn, cancel: CancelFn):
            if not measures:
                raise RefocusError("choose at least one focus measure.")
            return all_in_focus_image(  # 8 and 16 bits stay, as on the command line
                read(), measures=measures, window=window, blend_sigma=blend, rgb=rgb, progress=progress, cancel=cancel
            )

        def show(result) -> None:
            aif, depth = result
            self._outputs.show(layer, "all-in-focus", aif, name=f"{source} all-in-focus", metadata=metadata, rgb=rgb,
                               **display_like(layer, aif), **placement)  # fmt: skip
            self._outputs.show(layer, "depth index", depth, name=f"{source} depth index",
                               metadata={**metadata, "units": "slice index (0-based)"}, colormap="viridis",
                               contrast_limits=(0.0, max(float(slices - 1), 1.0)), **placement)  # fmt: skip

        self.runner.run(task, show, description="Focus stacking")
