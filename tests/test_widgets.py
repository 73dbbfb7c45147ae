"""napari plugin layer under Xvfb with real viewers: sample data, widgets, worker machinery, reader.

Widgets run synchronously (``workers.RUN_SYNCHRONOUSLY``) unless a test checks the threaded path.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402

from napari_refocusgan._sample_data import ALL_IN_FOCUS_NAME, DISPARITY_NAME, FOCAL_STACK_NAME  # noqa: E402
from napari_refocusgan._widgets import workers  # noqa: E402
from napari_refocusgan.core.focalstack import Cancelled, StackConfig  # noqa: E402
from napari_refocusgan.core.focus import SMLParams, sml  # noqa: E402

PLUGIN = "napari-refocusgan"
SHARED = Path(__file__).parents[2] / "shared"


# --------------------------------------------------------------------------------------------- helpers


class Notifications:
    """Notifications napari received since the fixture started."""

    def __init__(self):
        self._start = len(notification_manager.records)

    def all(self):
        return notification_manager.records[self._start :]

    def messages(self, severity: NotificationSeverity | None = None) -> list[str]:
        return [str(n.message) for n in self.all() if severity is None or n.severity == severity]

    def errors(self) -> list[str]:
        return self.messages(NotificationSeverity.ERROR)


@pytest.fixture
def notes() -> Notifications:
    return Notifications()


@pytest.fixture
def sync_tasks(monkeypatch):
    monkeypatch.setattr(workers, "RUN_SYNCHRONOUSLY", True)


@pytest.fixture
def viewer(make_napari_viewer, sync_tasks):
    return make_napari_viewer()


def dock(viewer, display_name: str):
    """Open one of the plugin's widgets the way the Plugins menu does (through the manifest)."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, display_name)
    return widget


def snapshot(layer) -> tuple[str, np.ndarray]:
    return layer.name, np.array(layer.data, copy=True)


def assert_unchanged(layer, before: tuple[str, np.ndarray]) -> None:
    name, data = before
    assert layer.name == name
    np.testing.assert_array_equal(np.asarray(layer.data), data)


def shown(part, widget) -> bool:
    """Whether ``part`` shows when ``widget`` does (the test viewer itself stays hidden)."""
    return part.native.isVisibleTo(widget.native)


def open_sample(viewer) -> None:
    viewer.open_sample(PLUGIN, "synthetic_scene")


# --------------------------------------------------------------------------------------------- sample


def test_sample_data_opens_three_named_layers_with_stack_metadata(viewer):
    open_sample(viewer)
    names = [layer.name for layer in viewer.layers]
    assert names == [ALL_IN_FOCUS_NAME, DISPARITY_NAME, FOCAL_STACK_NAME]

    stack = viewer.layers[FOCAL_STACK_NAME]
    assert stack.rgb and not stack.multiscale
    assert stack.data.shape == (10, 240, 320, 3) and stack.data.dtype == np.float32
    config = StackConfig()
    np.testing.assert_allclose(stack.metadata["slopes"], config.slopes())
    assert stack.metadata["slope_step"] == pytest.approx(3 / 29)
    assert stack.metadata["stack_config"]["keep"] == [6, 15]

    centre = viewer.layers[ALL_IN_FOCUS_NAME]
    assert centre.rgb and centre.data.shape == (240, 320, 3)
    disparity = viewer.layers[DISPARITY_NAME]
    assert disparity.data.shape == (240, 320) and disparity.colormap.name == "viridis"
    # every ground-truth disparity is one of the scene's plane disparities
    planes = np.array(disparity.metadata["layer_disparities"])
    assert np.abs(disparity.data[..., None] - planes).min(axis=-1).max() < 1e-6


def test_sample_layers_are_independent_copies(viewer):
    open_sample(viewer)
    viewer.layers[FOCAL_STACK_NAME].data[:] = 0  # vandalise the first copy
    from napari_refocusgan._sample_data import make_sample_scene

    fresh = {kwargs["name"]: data for data, kwargs, _ in make_sample_scene()}
    assert fresh[FOCAL_STACK_NAME].max() > 0.5


def test_sample_focal_stack_focuses_the_far_plane_in_the_right_slice(viewer):
    """Pixels of the back plane are sharpest (by SML) in the slice whose slope is nearest its disparity."""
    open_sample(viewer)
    stack = viewer.layers[FOCAL_STACK_NAME]
    disparity = viewer.layers[DISPARITY_NAME].data
    slopes = np.array(stack.metadata["slopes"])
    far = max(stack.metadata["layer_disparities"])
    m = sml(stack.data, rgb=True)
    region = (disparity == np.float32(far)) & (m.max(axis=0) > 0.01)
    assert region.sum() > 500
    votes = np.bincount(m.argmax(axis=0)[region], minlength=len(slopes))
    assert abs(slopes[votes.argmax()] - far) <= stack.metadata["slope_step"] * 1.01


# --------------------------------------------------------------------------------------------- SML


def test_sml_widget_on_stack_matches_core_and_updates_in_place(viewer, notes):
    open_sample(viewer)
    stack_layer = viewer.layers[FOCAL_STACK_NAME]
    before = snapshot(stack_layer)
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = stack_layer

    widget._run_button.clicked()
    out = viewer.layers[f"{FOCAL_STACK_NAME} SML"]
    n_layers = len(viewer.layers)
    assert out.data.shape == (10, 240, 320) and out.data.dtype == np.float32
    np.testing.assert_allclose(out.data, sml(before[1], SMLParams(), rgb=True), atol=1e-7)
    assert out.metadata["sml_params"] == {"step": 1, "window": 9, "threshold": 0.005}
    assert widget.runner.last_status == "done"

    widget._window.value = 3
    widget._threshold.value = 0.0
    widget._run_button.clicked()
    assert len(viewer.layers) == n_layers  # updated, not added
    assert viewer.layers[f"{FOCAL_STACK_NAME} SML"] is out
    np.testing.assert_allclose(out.data, sml(before[1], SMLParams(window=3, threshold=0.0), rgb=True), atol=1e-7)
    assert out.metadata["sml_params"]["window"] == 3
    assert_unchanged(stack_layer, before)
    assert notes.errors() == []


def test_sml_widget_respects_layer_rgb_flag(viewer):
    # six gray 20×4 slices: the last axis is 4 long but is *not* colour
    data = np.random.default_rng(1).random((6, 20, 4)).astype(np.float32)
    layer = viewer.add_image(data, rgb=False, name="gray stack")
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = layer
    widget._run_button.clicked()
    out = viewer.layers["gray stack SML"].data
    assert out.shape == (6, 20, 4)
    np.testing.assert_allclose(out, sml(data, rgb=False), atol=1e-7)


def test_sml_widget_single_pixel_image_gives_zero_map(viewer, notes):
    layer = viewer.add_image(np.full((1, 1), 200, np.uint8), name="dot")
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = layer
    widget._run_button.clicked()
    np.testing.assert_array_equal(viewer.layers["dot SML"].data, np.zeros((1, 1), np.float32))
    assert notes.errors() == []


def test_sml_widget_reports_bad_input_without_touching_it(viewer, notes):
    bad = np.ones((16, 16), np.float32)
    bad[3, 4] = np.nan
    layer = viewer.add_image(bad, name="holey")
    before = snapshot(layer)
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = layer
    widget._run_button.clicked()
    assert any("NaN" in m for m in notes.errors())
    assert "holey SML" not in viewer.layers
    assert widget.runner.last_status == "failed"

    ok = viewer.add_image(np.zeros((8, 8), np.float32), name="flat")
    widget._image.value = ok
    widget._window.value = 4  # typed in by hand: even windows are invalid
    widget._run_button.clicked()
    assert any("odd" in m for m in notes.errors())
    assert "flat SML" not in viewer.layers
    assert_unchanged(layer, before)
    assert len(viewer.layers) == 2

    pyramid = viewer.add_image([np.zeros((16, 16), np.float32), np.zeros((8, 8), np.float32)], name="pyramid")
    widget._image.value = pyramid
    widget._window.value = 3
    widget._run_button.clicked()
    # advice that works on a pyramid (np.stack of its levels would fail: they differ in size)
    assert any("multiscale" in m and "layer.data[0]" in m for m in notes.errors())
    assert "pyramid SML" not in viewer.layers


@pytest.mark.parametrize(
    "data, rgb, expected_shape",
    [
        ((np.random.default_rng(2).random((12, 16)) * 65535).astype(np.uint16), False, (12, 16)),  # uint16 gray
        (np.random.default_rng(3).random((12, 16, 4)).astype(np.float32), True, (12, 16)),  # RGBA
        (np.random.default_rng(4).random((2, 3, 12, 16)).astype(np.float32), False, (2, 3, 12, 16)),  # 4-D
        (np.random.default_rng(5).random((2, 2, 3, 12, 16)).astype(np.float32), False, (2, 2, 3, 12, 16)),  # 5-D
    ],
)
def test_sml_widget_takes_uint16_rgba_and_nd_layers_as_the_core_does(viewer, notes, data, rgb, expected_shape):
    layer = viewer.add_image(data, rgb=rgb, name="input")
    before = snapshot(layer)
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = layer
    widget._run_button.clicked()
    out = viewer.layers["input SML"].data
    assert out.shape == expected_shape and out.dtype == np.float32
    np.testing.assert_allclose(out, sml(data, rgb=rgb), atol=1e-7)
    assert_unchanged(layer, before)
    assert notes.errors() == []


def test_sml_of_a_float_stack_on_its_own_scale_is_the_same_per_slice_and_accepted_by_deblur():
    """Per slice, each slice of a 0..100 / 0..250 float stack got its own full scale, so the SML widget's maps
    differed from sml(stack) and the Deblur widget refused the SML widget's own layer."""
    from dataclasses import asdict

    from napari_refocusgan._widgets.focus_widget import sml_per_slice
    from napari_refocusgan._widgets.network_widgets import check_sml_layer

    stack = np.random.default_rng(2).uniform(0, 1, (2, 32, 32)).astype(np.float32)
    stack[0] *= 100
    stack[1] *= 250
    maps = sml_per_slice(stack, SMLParams(), rgb=False, progress=lambda *_: None, cancel=lambda: False)
    np.testing.assert_allclose(maps, sml(stack), rtol=1e-5, atol=1e-7)
    assert check_sml_layer("s SML", {"sml_params": asdict(SMLParams())}, maps, stack, False) == SMLParams()


def test_sml_widget_refuses_inf(viewer, notes):
    bad = np.zeros((8, 8), np.float32)
    bad[0, 0] = np.inf
    layer = viewer.add_image(bad, name="hot", contrast_limits=(0, 1))
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = layer
    widget._run_button.clicked()
    assert any("Inf" in m for m in notes.errors()) and "hot SML" not in viewer.layers


def test_widget_without_any_layer_asks_for_one(viewer, notes):
    widget = dock(viewer, "Focus measure (SML)")
    widget._run_button.clicked()
    assert any("Choose an image layer" in m for m in notes.errors())
    assert len(viewer.layers) == 0


def test_layer_dropdown_follows_the_layer_list(viewer):
    widget = dock(viewer, "Focus measure (SML)")
    a = viewer.add_image(np.zeros((4, 4)), name="a")
    viewer.add_points()  # not an image: never offered
    b = viewer.add_image(np.zeros((4, 4)), name="b")
    assert list(widget._image.choices) == [a, b]
    viewer.layers.remove(a)
    assert list(widget._image.choices) == [b]


@pytest.mark.parametrize(
    "display_name, combo", [("Refocus", "_image"), ("Refocus", "_radiance"), ("Focus stacking", "_stack")]
)
def test_renaming_the_chosen_layer_keeps_it_chosen(viewer, display_name, combo):
    """magicgui finds the choice again by name: the first layer was chosen instead, and silently used."""
    widget = dock(viewer, display_name)
    layers = [viewer.add_image(np.zeros((3, 8, 8)), name=n) for n in "abc"]
    box = getattr(widget, combo)
    box.value = layers[1]
    layers[1].name = "b renamed"
    assert box.value is layers[1]
    layers[2].name = "c renamed"  # renaming another layer changes nothing either
    assert box.value is layers[1]


# --------------------------------------------------------------------------------------------- workers


def test_threaded_sml_run_finishes_and_shows_the_result(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()  # threaded: RUN_SYNCHRONOUSLY stays False
    data = np.random.default_rng(2).random((3, 32, 32)).astype(np.float32)
    layer = viewer.add_image(data, name="stack")
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = layer
    widget._run_button.clicked()
    assert widget.runner.worker is not None or widget.runner.last_status == "done"
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=20000)
    assert widget.runner.last_status == "done"
    np.testing.assert_allclose(viewer.layers["stack SML"].data, sml(data), atol=1e-7)
    assert notes.errors() == []


@pytest.mark.parametrize(
    "display_name, slice_shown",
    [("Focus measure (SML)", False), ("Deblur (radiance)", False), ("Refocus", False), ("Refocus", True),
     ("Classical", True), ("Focus stacking", False)],
)  # fmt: skip
def test_lazy_layers_are_read_in_the_worker_not_the_gui_thread(
    make_napari_viewer, qtbot, notes, monkeypatch, display_name, slice_shown
):
    """A dask-backed layer (big files opened lazily) is computed in the task, never while the GUI waits."""
    dask = pytest.importorskip("dask")
    import dask.array as da

    monkeypatch.setitem(dask.config.config, "scheduler", "synchronous")  # blocks run in the thread that asks
    viewer = make_napari_viewer()  # threaded
    data = np.random.default_rng(3).random((3, 32, 32)).astype(np.float32)
    read_in: list[threading.Thread] = []

    def record(block):
        read_in.append(threading.current_thread())
        return block

    layer = viewer.add_image(da.from_array(data, chunks=(1, 32, 32)).map_blocks(record, dtype=data.dtype), name="lazy")
    widget = dock(viewer, display_name)
    (widget._stack if display_name == "Focus stacking" else widget._image).value = layer
    if display_name == "Refocus":
        widget._slice_only.value = slice_shown
    read_in.clear()  # napari itself reads the slice it shows
    widget._run_button.clicked()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60000)
    assert widget.runner.last_status == "done", notes.errors()
    assert len(read_in) == (1 if slice_shown else 3) and threading.main_thread() not in read_in
    if display_name == "Focus measure (SML)":
        np.testing.assert_allclose(viewer.layers["lazy SML"].data, sml(data), atol=1e-7)


def test_threaded_task_reports_progress_and_stops_on_cancel(make_napari_viewer, qtbot, notes):
    make_napari_viewer()
    runner = workers.TaskRunner(synchronous=False)
    qtbot.addWidget(runner.native)
    at_three = threading.Event()
    results = []

    def task(progress, cancel):
        for i in range(1000):
            if cancel():
                raise Cancelled()
            progress(i, 1000)
            if i == 3:
                at_three.set()
            time.sleep(0.005)
        return "finished"

    runner.run(task, results.append, description="Long job")
    assert runner.busy
    qtbot.waitUntil(lambda: runner._bar.max == 1000 and runner._bar.value >= 3, timeout=10000)
    assert runner._cancel_button.enabled
    # a second task is refused while one runs
    runner.run(task, results.append, description="Second job")
    assert any("still running" in m for m in notes.messages(NotificationSeverity.WARNING))

    runner._cancel_button.clicked()
    runner.run(task, results.append, description="Third job")  # the task has not stopped yet: says so
    assert any("stopping after Cancel" in m for m in notes.messages(NotificationSeverity.WARNING))
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert runner.last_status == "cancelled"
    assert results == []  # nothing applied
    assert any("Long job cancelled" in m for m in notes.messages(NotificationSeverity.INFO))
    assert not runner._cancel_button.enabled


def runs_until_cancelled(started: threading.Event, saw_cancel: threading.Event):
    """A task that reports progress until it is cancelled (about 20 s at most), and says when it started and
    when it saw the cancel."""

    def task(progress, cancel):
        started.set()
        for i in range(4000):
            if cancel():
                saw_cancel.set()
                raise Cancelled()
            progress(i, 4000)
            time.sleep(0.005)
        return "finished"

    return task


def test_closing_the_widget_cancels_its_task_and_nothing_writes_to_it_after(make_napari_viewer, qtbot, notes):
    """Closing a widget (or the viewer) mid-run cancels the task; when the worker ends, nothing touches the
    deleted Qt widgets (an exception in that slot would abort the whole process under PyQt)."""
    make_napari_viewer()
    runner = workers.TaskRunner(synchronous=False)
    started, saw_cancel = threading.Event(), threading.Event()
    applied, statuses = [], []
    runner.finished.connect(statuses.append)

    worker = runner.run(runs_until_cancelled(started, saw_cancel), applied.append, description="Long job")
    assert started.wait(10)
    finished = threading.Event()
    worker.finished.connect(finished.set)
    runner.native.deleteLater()
    qtbot.waitUntil(lambda: runner._closed, timeout=10000)
    assert saw_cancel.wait(10)
    qtbot.waitUntil(lambda: finished.is_set() and not runner.busy, timeout=10000)
    qtbot.wait(50)  # let queued progress reports arrive at the deleted widget
    assert applied == [] and statuses == []
    assert notes.errors() == []


def test_closing_the_dock_panel_cancels_the_task(make_napari_viewer, qtbot, notes):
    """napari closes a plugin panel by taking the widget out of its dock, not by destroying it."""
    from magicgui.widgets import Container

    viewer = make_napari_viewer()
    runner = workers.TaskRunner(synchronous=False)
    panel = Container(widgets=[runner])
    dock_widget = viewer.window.add_dock_widget(panel, name="job")
    started, saw_cancel = threading.Event(), threading.Event()
    applied = []

    runner.run(runs_until_cancelled(started, saw_cancel), applied.append, description="Long job")
    assert started.wait(10)
    viewer.window.remove_dock_widget(dock_widget)  # what the panel's close button calls
    assert saw_cancel.wait(10)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert runner.last_status == "cancelled" and applied == []


def test_napari_status_bar_cancel_stops_the_task_too(make_napari_viewer, qtbot, notes):
    make_napari_viewer()
    runner = workers.TaskRunner(synchronous=False)
    qtbot.addWidget(runner.native)
    started = threading.Event()

    def task(progress, cancel):
        started.set()
        for _ in range(2000):
            if cancel():
                raise Cancelled()
            time.sleep(0.005)
        return "finished"

    cancelling = []
    runner.cancelling.connect(lambda: cancelling.append(runner.last_status))
    worker = runner.run(task, lambda _: None, description="Job")
    assert started.wait(10)
    worker.quit()  # what napari's activity/status bar calls
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert runner.last_status == "cancelled"
    # widgets hear of it before `finished`, as of our Cancel (Refocus then drops a δ queued before it)
    assert cancelling == [None]


def test_cancel_between_slices_of_a_widget_run_adds_nothing(viewer, notes, monkeypatch):
    from napari_refocusgan._widgets import focus_widget

    layer = viewer.add_image(np.random.default_rng(0).random((5, 16, 16)).astype(np.float32), name="stack")
    widget = dock(viewer, "Focus measure (SML)")
    widget._image.value = layer
    seen = []

    def sml_then_press_cancel(image, params, rgb, **options):
        seen.append(image.shape)
        widget.runner.request_cancel()  # the user presses Cancel while the first slice runs
        return sml(image, params, rgb=rgb, **options)

    monkeypatch.setattr(focus_widget, "sml", sml_then_press_cancel)
    widget._run_button.clicked()
    assert seen == [(16, 16)]  # stopped before the second slice
    assert widget.runner.last_status == "cancelled"
    assert "stack SML" not in viewer.layers
    assert any("SML cancelled" in m for m in notes.messages(NotificationSeverity.INFO))


def test_threaded_errors_become_notifications(make_napari_viewer, qtbot, notes):
    from napari_refocusgan.core.errors import RefocusError

    make_napari_viewer()
    runner = workers.TaskRunner(synchronous=False)
    qtbot.addWidget(runner.native)

    def bad_input(progress, cancel):
        raise RefocusError("the image is too small")

    runner.run(bad_input, lambda _: None, description="Deblur")
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert runner.last_status == "failed"
    assert "Deblur: the image is too small" in notes.errors()

    def bug(progress, cancel):
        return 1 / 0

    runner.run(bug, lambda _: None, description="Refocus")
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert any(m.startswith("Refocus failed: ZeroDivisionError") for m in notes.errors())

    def oom(progress, cancel):
        raise MemoryError()

    runner.run(oom, lambda _: None, description="Refocus")
    qtbot.waitUntil(lambda: not runner.busy, timeout=10000)
    assert any("out of memory" in m and "tile" in m for m in notes.errors())


def test_failure_while_applying_the_result_is_reported(make_napari_viewer, sync_tasks, notes):
    make_napari_viewer()
    runner = workers.TaskRunner()

    def apply(_):
        raise RuntimeError("viewer went away")

    runner.run(lambda progress, cancel: 42, apply, description="SML")
    assert runner.last_status == "failed"
    assert any("viewer went away" in m for m in notes.errors())
    runner.native.deleteLater()


# --------------------------------------------------------------------------------------------- networks


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Tiny random G1 and G2 (ngf 4, one block) saved as the training export would."""
    import torch

    from napari_refocusgan.core.networks import Generator, deblur_config, refocus_config
    from napari_refocusgan.core.weights import save_generator

    def random_generator(config):
        generator = Generator(config)
        with torch.no_grad():  # new generators are the identity (zero tail); these must do something
            for p in generator.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        return generator

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    g1_path, g2_path = folder / "g1.safetensors", folder / "g2.safetensors"
    save_generator(random_generator(deblur_config(ngf=4, n_blocks=1)), g1_path, "deblur")
    save_generator(random_generator(refocus_config(ngf=4, n_blocks=1)), g2_path, "refocus")
    return g1_path, g2_path


def textured_image(seed: int = 3, shape=(32, 40, 3)) -> np.ndarray:
    from scipy import ndimage

    noise = np.random.default_rng(seed).random(shape)
    return np.clip(ndimage.gaussian_filter(noise, (1.0, 1.0, 0)[: len(shape)]) * 1.5 - 0.25, 0, 1).astype(np.float32)


def set_network_options(widget, weights, *, device="cpu", tile=0):
    widget._weights.value = weights
    widget._device.value = device
    widget._tile.value = tile


def refocus_widget(viewer, layer, tiny_weights):
    """The Refocus widget on ``layer`` with the tiny G2, and the tiny G1 for a missing radiance."""
    g1_path, g2_path = tiny_weights
    widget = dock(viewer, "Refocus")
    widget._image.value = layer
    set_network_options(widget, g2_path)
    widget._deblur_weights.value = g1_path
    return widget


def test_device_dropdown_lists_available_devices(viewer):
    from napari_refocusgan.core.inference import available_devices

    for name in ("Deblur (radiance)", "Refocus"):
        widget = dock(viewer, name)
        assert list(widget._device.choices) == ["auto", *available_devices()]
        assert "cpu" in widget._device.choices


def test_deblur_widget_matches_core_and_records_model_and_device(viewer, tiny_weights, notes):
    from napari_refocusgan.core.inference import deblur
    from napari_refocusgan.core.weights import load_generator

    g1_path, _ = tiny_weights
    image = textured_image()
    layer = viewer.add_image(image, name="photo", rgb=True)
    before = snapshot(layer)
    widget = dock(viewer, "Deblur (radiance)")
    widget._image.value = layer
    set_network_options(widget, g1_path)
    widget._run_button.clicked()

    out = viewer.layers["photo radiance"]
    expected = deblur(image, load_generator(g1_path, "cpu"), device="cpu")
    np.testing.assert_allclose(out.data, expected, atol=1e-6)
    assert not np.allclose(out.data, image, atol=1e-3)  # the network did something
    assert out.rgb and out.data.dtype == np.float32
    meta = out.metadata
    assert meta["model"] == "g1" and meta["role"] == "deblur" and meta["device"] == "cpu"
    assert Path(meta["weights"]) == g1_path and meta["tile"] == 0
    assert meta["focus"] == "computed from the image"
    assert notes.errors() == []

    n = len(viewer.layers)
    widget._tile.value = 256
    widget._run_button.clicked()
    assert len(viewer.layers) == n and viewer.layers["photo radiance"] is out
    assert out.metadata["tile"] == 256 and out.metadata["tile_used"] == 0  # 32×40 runs whole
    widget._tile.value = 8  # too small for both blend margins (24 px each): enlarged past 32×40, so it runs whole
    widget._run_button.clicked()
    assert out.metadata["tile"] == 8 and out.metadata["tile_used"] == 0
    assert_unchanged(layer, before)


def test_widgets_default_to_the_shipped_weights(viewer, notes):
    from napari_refocusgan.core.inference import deblur, refocus
    from napari_refocusgan.core.weights import load_generator

    image = textured_image(13)
    layer = viewer.add_image(image, name="photo", rgb=True)
    widget = dock(viewer, "Refocus")
    widget._image.value = layer
    widget._live.value = False
    widget._delta.value = 2.0
    set_network_options(widget, None)
    widget._run_button.clicked()
    g1, g2 = load_generator("deblur", "cpu"), load_generator("refocus", "cpu")
    expected = refocus(image, 2.0, g2, radiance=deblur(image, g1, device="cpu"), device="cpu")
    out = viewer.layers["photo refocused"]
    np.testing.assert_allclose(out.data, expected, atol=1e-5)
    assert out.metadata["model"] == g2.name and Path(out.metadata["weights"]) == Path(g2.source)
    assert notes.errors() == []


def test_deblur_widget_uses_the_chosen_sml_layer(viewer, tiny_weights, notes):
    from napari_refocusgan.core.inference import deblur
    from napari_refocusgan.core.weights import load_generator

    g1_path, _ = tiny_weights
    image = textured_image(4)
    layer = viewer.add_image(image, name="photo", rgb=True)
    sml_widget = dock(viewer, "Focus measure (SML)")
    sml_widget._image.value = layer
    sml_widget._window.value = 3
    sml_widget._run_button.clicked()

    widget = dock(viewer, "Deblur (radiance)")
    widget._image.value = layer
    widget._focus.value = viewer.layers["photo SML"]
    set_network_options(widget, g1_path)
    widget._run_button.clicked()
    model = load_generator(g1_path, "cpu")
    expected = deblur(image, model, sml_params=SMLParams(window=3), device="cpu")
    out = viewer.layers["photo radiance"]
    np.testing.assert_allclose(out.data, expected, atol=1e-6)
    assert out.metadata["sml_params"]["window"] == 3 and out.metadata["focus"] == "photo SML"
    assert not np.allclose(expected, deblur(image, model, device="cpu"), atol=1e-6)  # the choice matters

    # an SML layer of another image is refused rather than silently ignored
    other = viewer.add_image(textured_image(5), name="other", rgb=True)
    sml_widget._image.value = other
    sml_widget._run_button.clicked()
    widget._focus.value = viewer.layers["other SML"]
    widget._run_button.clicked()
    assert any("not computed from this image (its values differ" in m for m in notes.errors())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.full((1, 1, 3), 0.5, np.float32), "at least 8×8"),
        (np.where(np.eye(16)[..., None] > 0, np.nan, 0.5).repeat(3, -1).astype(np.float32), "NaN"),
    ],
    ids=["1x1", "nan"],
)
def test_deblur_widget_reports_bad_images(viewer, tiny_weights, notes, data, expected):
    layer = viewer.add_image(data, name="bad", rgb=True)
    before = snapshot(layer)
    widget = dock(viewer, "Deblur (radiance)")
    widget._image.value = layer
    set_network_options(widget, tiny_weights[0])
    widget._run_button.clicked()
    assert any(expected in m for m in notes.errors()), notes.errors()
    assert widget.runner.last_status == "failed"
    assert "bad radiance" not in viewer.layers
    assert_unchanged(layer, before)


def test_bad_weights_are_reported(viewer, tiny_weights, tmp_path, notes, monkeypatch):
    from napari_refocusgan._widgets import network_widgets
    from napari_refocusgan.core.errors import RefocusError

    g1_path, g2_path = tiny_weights
    layer = viewer.add_image(textured_image(), name="photo", rgb=True)
    before = snapshot(layer)
    widget = dock(viewer, "Deblur (radiance)")
    widget._image.value = layer

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"this is not a weights file" * 10)
    set_network_options(widget, corrupt)
    widget._run_button.clicked()
    assert any("not a safetensors file" in m for m in notes.errors())

    set_network_options(widget, g2_path)  # a refocus model where a deblur model is needed
    widget._run_button.clicked()
    assert any("refocus generator" in m for m in notes.errors())

    def no_shipped_weights(role):
        raise RefocusError("no shipped weights")

    monkeypatch.setattr(network_widgets, "default_model", no_shipped_weights)
    widget._weights.value = None
    widget._run_button.clicked()
    assert any("No shipped deblur weights" in m and "G1 weights" in m for m in notes.errors())
    assert [lay.name for lay in viewer.layers] == ["photo"]
    assert_unchanged(layer, before)


def test_refocus_widget_caches_radiance_and_updates_one_layer_as_delta_turns(viewer, tiny_weights, notes, monkeypatch):
    from napari_refocusgan._widgets import network_widgets
    from napari_refocusgan.core.inference import deblur, refocus
    from napari_refocusgan.core.weights import load_generator

    g1_path, g2_path = tiny_weights
    calls = {"deblur": 0, "refocus": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(network_widgets, "deblur", counting("deblur", deblur))
    monkeypatch.setattr(network_widgets, "refocus", counting("refocus", refocus))

    image = textured_image(6)
    layer = viewer.add_image(image, name="photo", rgb=True)
    before = snapshot(layer)
    widget = refocus_widget(viewer, layer, tiny_weights)
    widget._run_button.clicked()

    g1, g2 = load_generator(g1_path, "cpu"), load_generator(g2_path, "cpu")
    radiance = deblur(image, g1, device="cpu")
    out = viewer.layers["photo refocused"]
    np.testing.assert_allclose(out.data, refocus(image, 0.0, g2, radiance=radiance, device="cpu"), atol=1e-6)
    assert calls == {"deblur": 1, "refocus": 1}
    n_layers = len(viewer.layers)
    first = np.array(out.data)

    widget._delta.value = 2.0  # live: reruns G2 only
    assert calls == {"deblur": 1, "refocus": 2}
    assert len(viewer.layers) == n_layers and viewer.layers["photo refocused"] is out
    assert not np.array_equal(out.data, first)
    np.testing.assert_allclose(out.data, refocus(image, 2.0, g2, radiance=radiance, device="cpu"), atol=1e-6)
    meta = out.metadata
    assert meta["delta"] == 2.0 and meta["model"] == "g2" and meta["device"] == "cpu"
    assert meta["delta_slope_px_per_view"] == pytest.approx(2 * 3 / 29)
    assert "cached" in meta["radiance"]

    assert (widget._delta.min, widget._delta.max) == (-9.0, 9.0)  # the box spans the model's trained range
    with pytest.raises(ValueError):
        widget._delta.value = 12.0
    np.testing.assert_allclose(out.data, refocus(image, 2.0, g2, radiance=radiance, device="cpu"), atol=1e-6)
    assert calls["deblur"] == 1 and len(viewer.layers) == n_layers
    assert_unchanged(layer, before)


def test_the_delta_box_fits_the_chosen_g2_before_it_runs(viewer, tmp_path, notes):
    """The box widened or narrowed to a user's G2 only after that model had run once: a G2 trained on −4…+4
    let δ = 8 be chosen, and refused it only when it ran."""
    from napari_refocusgan.core.networks import Generator, refocus_config
    from napari_refocusgan.core.weights import default_model, save_generator

    narrow = tmp_path / "narrow.safetensors"
    save_generator(Generator(refocus_config(deltas=(-4, 4), ngf=4, n_blocks=1)), narrow, "refocus")
    widget = dock(viewer, "Refocus")
    shipped = default_model("refocus").config.delta_range
    assert (widget._delta.min, widget._delta.max) == shipped
    widget._weights.value = narrow
    assert (widget._delta.min, widget._delta.max) == (-4.0, 4.0) and "narrow refocused" not in viewer.layers
    widget._weights.value = tmp_path / "missing.safetensors"  # unreadable: the box stays, the run will say why
    assert (widget._delta.min, widget._delta.max) == (-4.0, 4.0)
    widget._weights.value = None
    assert (widget._delta.min, widget._delta.max) == shipped
    assert notes.errors() == []


def test_refocus_output_is_followed_through_renames_and_recreated_when_deleted(viewer, tiny_weights, notes):
    """The widget keeps writing into the layer it made for this input, whatever the user renames (the
    output or the input); a new input gets its own layer, and a deleted output is made again."""
    layer = viewer.add_image(textured_image(6), name="photo", rgb=True)
    widget = refocus_widget(viewer, layer, tiny_weights)
    widget._run_button.clicked()
    out = viewer.layers["photo refocused"]

    out.name = "mine"
    widget._delta.value = 2.0
    assert [lay.name for lay in viewer.layers] == ["photo", "mine"]
    assert out.metadata["delta"] == 2.0

    layer.name = "photo2"
    widget._image.value = layer
    widget._delta.value = -3.0
    assert [lay.name for lay in viewer.layers] == ["photo2", "mine"]
    assert out.metadata["delta"] == -3.0 and out.metadata["source"] == "photo2"

    other = viewer.add_image(textured_image(7), name="other", rgb=True)
    widget._image.value = other
    widget._delta.value = 1.0
    assert viewer.layers["other refocused"].metadata["delta"] == 1.0
    assert out.metadata["delta"] == -3.0  # the first input's result is left as it was

    widget._image.value = layer
    viewer.layers.remove(out)
    widget._delta.value = 4.0
    assert viewer.layers["photo2 refocused"].metadata["delta"] == 4.0
    assert sorted(lay.name for lay in viewer.layers) == ["other", "other refocused", "photo2", "photo2 refocused"]
    assert notes.errors() == []


def test_turning_delta_after_the_chosen_image_was_deleted_refocuses_nothing_else(viewer, tiny_weights, notes):
    """The dropdown falls back to another layer; a δ turn (or a rerun queued during a run) refocused that
    layer, which the user never chose. Pressing Refocus with it on screen chooses it."""
    other = viewer.add_image(textured_image(8), name="other", rgb=True)
    mine = viewer.add_image(textured_image(9), name="mine", rgb=True)
    widget = refocus_widget(viewer, mine, tiny_weights)
    widget._run_button.clicked()
    viewer.layers.remove(mine)
    assert widget._image.value is other
    widget._delta.value = 3.0
    assert [lay.name for lay in viewer.layers] == ["other", "mine refocused"]
    assert any("was deleted" in m for m in notes.messages()), notes.messages()
    widget._run_button.clicked()  # the user's choice now
    assert viewer.layers["other refocused"].metadata["delta"] == 3.0
    widget._delta.value = -2.0
    assert viewer.layers["other refocused"].metadata["delta"] == -2.0
    widget._image.value = viewer.layers["mine refocused"]  # picked in the dropdown: turning δ runs on it
    widget._delta.value = 1.0
    assert viewer.layers["mine refocused refocused"].metadata["delta"] == 1.0
    # the chosen layer deleted again; then the entry the dropdown shows is picked (no value change)
    viewer.layers.remove(viewer.layers["mine refocused"])
    assert widget._image.value is other
    widget._delta.value = 2.0
    assert viewer.layers["other refocused"].metadata["delta"] == -2.0
    widget._image.native.activated.emit(widget._image.native.currentIndex())
    widget._delta.value = 3.0
    assert viewer.layers["other refocused"].metadata["delta"] == 3.0
    assert notes.errors() == []


def test_refocus_of_the_slice_shown_leaves_the_whole_stack_result(viewer, tiny_weights, notes):
    """Both modes wrote one layer: ticking "only the slice shown" replaced a whole-stack result (and the
    user's name and opacity for it) with one slice."""
    stack = viewer.add_image(np.stack([textured_image(s) for s in (31, 32)]), name="stk", rgb=True)
    widget = refocus_widget(viewer, stack, tiny_weights)
    widget._run_button.clicked()
    whole = viewer.layers["stk refocused"]
    whole.name, whole.opacity = "my refocus", 0.3
    kept = np.array(whole.data)
    widget._slice_only.value = True
    widget._delta.value = 2.0
    assert viewer.layers["stk refocused slice"].data.shape == stack.data.shape[1:]
    assert whole in viewer.layers and whole.name == "my refocus" and whole.opacity == 0.3
    np.testing.assert_array_equal(whole.data, kept)
    widget._slice_only.value = False
    widget._delta.value = 1.0
    assert whole.metadata["delta"] == 1.0 and whole.data.shape == stack.data.shape
    assert len(viewer.layers) == 3 and notes.errors() == []


def test_refocus_of_only_the_slice_shown_turns_delta_on_one_image(viewer, tiny_weights, notes):
    from napari_refocusgan.core.inference import deblur, refocus
    from napari_refocusgan.core.weights import load_generator

    g1_path, g2_path = tiny_weights
    stack = np.stack([textured_image(s) for s in (21, 22, 23)])
    layer = viewer.add_image(stack, name="stack", rgb=True)
    widget = refocus_widget(viewer, layer, tiny_weights)
    widget._slice_only.value = True
    viewer.dims.current_step = (2, 0, 0)
    widget._delta.value = 3.0
    out = viewer.layers["stack refocused slice"]
    g1, g2 = load_generator(g1_path, "cpu"), load_generator(g2_path, "cpu")
    radiance = deblur(stack[2], g1, device="cpu")
    np.testing.assert_allclose(out.data, refocus(stack[2], 3.0, g2, radiance=radiance, device="cpu"), atol=1e-6)
    assert out.data.shape == stack.shape[1:] and out.metadata["slice"] == [2]
    # a radiance stack: its slice shown is the one used, and the metadata says which
    radiance_stack = viewer.add_image(np.stack([radiance * 0 + 0.5, radiance * 0 + 0.25, radiance]), name="rads",
                                      rgb=True)  # fmt: skip
    viewer.dims.current_step = (2, 0, 0)
    widget._radiance.value = radiance_stack
    widget._run_button.clicked()
    np.testing.assert_allclose(out.data, refocus(stack[2], 3.0, g2, radiance=radiance, device="cpu"), atol=1e-6)
    assert out.metadata["radiance"] == "layer 'rads', slice [2]"
    assert notes.errors() == []


def test_sample_deblur_refocus_and_turning_delta_updates_one_layer(viewer, notes):
    """The whole flow a user takes, with the shipped weights: sample → Deblur → Refocus with the
    Deblur output as radiance → turn δ."""
    from napari_refocusgan.core.inference import refocus
    from napari_refocusgan.core.weights import load_generator

    open_sample(viewer)
    stack = viewer.layers[FOCAL_STACK_NAME]
    before = snapshot(stack)
    deblur_widget = dock(viewer, "Deblur (radiance)")
    deblur_widget._image.value = stack
    deblur_widget._run_button.clicked()
    radiance = viewer.layers[f"{FOCAL_STACK_NAME} radiance"]
    assert radiance.data.shape == stack.data.shape

    widget = dock(viewer, "Refocus")
    widget._image.value = stack
    widget._radiance.value = radiance
    widget._delta.value = 3.0  # live: runs G2 at once
    out = viewer.layers[f"{FOCAL_STACK_NAME} refocused"]
    n_layers = len(viewer.layers)
    widget._delta.value = -4.0
    assert viewer.layers[f"{FOCAL_STACK_NAME} refocused"] is out and len(viewer.layers) == n_layers
    g2 = load_generator("refocus", "cpu")
    np.testing.assert_allclose(out.data[5], refocus(before[1][5], -4.0, g2, radiance=radiance.data[5], device="cpu"),
                               atol=1e-5)  # fmt: skip
    assert out.metadata["delta"] == -4.0 and "radiance" in out.metadata["radiance"]
    assert_unchanged(stack, before)
    assert notes.errors() == []


def test_refocus_widget_uses_a_given_radiance_layer(viewer, tiny_weights, monkeypatch):
    from napari_refocusgan._widgets import network_widgets
    from napari_refocusgan.core.inference import refocus
    from napari_refocusgan.core.weights import load_generator

    def must_not_deblur(*args, **kwargs):
        raise AssertionError("radiance was given; G1 must not run")

    monkeypatch.setattr(network_widgets, "deblur", must_not_deblur)
    image, radiance = textured_image(7), textured_image(8)
    layer = viewer.add_image(image, name="photo", rgb=True)
    rad_layer = viewer.add_image(radiance, name="sharp", rgb=True)
    before = snapshot(rad_layer)
    widget = dock(viewer, "Refocus")
    widget._image.value = layer
    widget._radiance.value = rad_layer
    widget._live.value = False
    widget._delta.value = -3.0  # not live: nothing runs yet
    assert "photo refocused" not in viewer.layers
    set_network_options(widget, tiny_weights[1])
    widget._run_button.clicked()
    g2 = load_generator(tiny_weights[1], "cpu")
    out = viewer.layers["photo refocused"]
    np.testing.assert_allclose(out.data, refocus(image, -3.0, g2, radiance=radiance, device="cpu"), atol=1e-6)
    assert out.metadata["radiance"] == "layer 'sharp'"
    assert_unchanged(rad_layer, before)


def test_threaded_refocus_coalesces_delta_changes(make_napari_viewer, qtbot, tiny_weights, notes):
    viewer = make_napari_viewer()  # threaded
    image = textured_image(9, (64, 64, 3))
    layer = viewer.add_image(image, name="photo", rgb=True)
    widget = dock(viewer, "Refocus")
    widget._image.value = layer
    set_network_options(widget, tiny_weights[1])
    widget._deblur_weights.value = tiny_weights[0]
    widget._delta.value = 1.0
    widget._delta.value = 3.0  # arrives while δ = 1 runs: runs once more afterwards, no warning
    qtbot.waitUntil(lambda: not widget.runner.busy and not widget._rerun_pending, timeout=30000)
    qtbot.waitUntil(lambda: "photo refocused" in viewer.layers
                    and viewer.layers["photo refocused"].metadata.get("delta") == 3.0, timeout=30000)  # fmt: skip
    assert not widget.runner.busy
    assert notes.errors() == [] and notes.messages(NotificationSeverity.WARNING) == []


@pytest.mark.parametrize("after_cancel", ["turn δ", "press Refocus"])
def test_what_the_user_asks_for_after_cancel_still_runs(make_napari_viewer, qtbot, tiny_weights, notes, monkeypatch,
                                                        after_cancel):  # fmt: skip
    """Cancel stops the run and what was queued before it; a δ change or a click after it used to be lost
    (the output stayed at an older δ, or the click got "still running")."""
    from napari_refocusgan._widgets import network_widgets

    viewer = make_napari_viewer()  # threaded
    started, release = threading.Event(), threading.Event()
    real_refocus = network_widgets.refocus

    def slow_first_refocus(data, delta, *args, cancel, **kwargs):
        if delta == 3.0:  # the run to cancel: holds until the test has cancelled it and changed δ
            started.set()
            release.wait(30)
            if cancel():
                raise Cancelled()
        return real_refocus(data, delta, *args, cancel=cancel, **kwargs)

    monkeypatch.setattr(network_widgets, "refocus", slow_first_refocus)
    layer = viewer.add_image(textured_image(9, (32, 32, 3)), name="photo", rgb=True)
    widget = dock(viewer, "Refocus")
    widget._image.value = layer
    set_network_options(widget, tiny_weights[1])
    widget._deblur_weights.value = tiny_weights[0]
    widget._delta.value = 3.0
    assert started.wait(30)
    widget._run_button.clicked()  # during the run, without Cancel: refused (a double click must not run twice)
    assert not widget._rerun_pending
    widget._delta.value = 4.0  # queued, then cancelled with the run
    widget.runner.request_cancel()
    if after_cancel == "turn δ":
        widget._delta.value = 5.0
    else:
        widget._live.value = False
        widget._delta.value = 5.0
        widget._run_button.clicked()
    release.set()
    qtbot.waitUntil(lambda: "photo refocused" in viewer.layers, timeout=30000)
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=30000)
    assert viewer.layers["photo refocused"].metadata["delta"] == 5.0
    assert any("Refocus cancelled" in m for m in notes.messages(NotificationSeverity.INFO))
    assert notes.errors() == []
    assert [m for m in notes.messages(NotificationSeverity.WARNING)] == [
        "Refocus is still running: wait for it or press Cancel."
    ]


# --------------------------------------------------------------------------------------------- classical


def test_results_are_shown_with_the_contrast_limits_of_their_input(viewer, notes):
    """A dim float image shown at (0, 0.01) gave results pinned to (0, 1): black beside their input."""
    dim = viewer.add_image(textured_image(11)[..., 0] * 0.01, name="dim", contrast_limits=(0, 0.01))
    counts = viewer.add_image((textured_image(12)[..., 0] * 4000).astype(np.uint16), name="counts",
                              contrast_limits=(100, 3000))  # fmt: skip
    widget = dock(viewer, "Classical")
    widget._method.value = "unsharp"
    for layer in (dim, counts):
        widget._image.value = layer
        widget._run_button.clicked()
        out = viewer.layers[f"{layer.name} unsharp"]
        assert out.data.dtype == layer.data.dtype
        np.testing.assert_allclose(out.contrast_limits, layer.contrast_limits)
    assert notes.errors() == []


def test_results_of_a_12_bit_input_stay_uint16_at_its_contrast_limits(viewer, notes):
    """Focus stacking and blur-and-compare turned uint16 into [0, 1] floats; pinned to (0, 1), a 12-bit
    input's results showed nearly black. They now keep the input's dtype, and so its limits."""
    rng = np.random.default_rng(7)
    stack = viewer.add_image((rng.random((3, 24, 24)) * 4095).astype(np.uint16), name="counts", contrast_limits=(0, 4095))
    image = viewer.add_image((textured_image(13)[..., 0] * 4095).astype(np.uint16), name="image",
                             contrast_limits=(10, 4000))  # fmt: skip
    stacking, classical = dock(viewer, "Focus stacking"), dock(viewer, "Classical")
    stacking._stack.value = stack
    stacking._run_button.clicked()
    classical._image.value = image
    classical._method.value = "blur-and-compare"
    classical._radiance.value = image
    classical._run_button.clicked()
    for out, source in ((viewer.layers["counts all-in-focus"], stack), (viewer.layers["image blur-and-compare"], image)):
        assert out.data.dtype == np.uint16
        np.testing.assert_allclose(out.contrast_limits, source.contrast_limits)
    assert notes.errors() == []


def test_float_counts_run_on_their_own_scale_in_every_widget(viewer, tiny_weights, notes):
    """A float layer of photon counts (0..4000) was refused ("float images must hold intensities in [0, 1]"),
    with no way to rescale it from the widget. Every tool now takes it at its own scale: the results are the
    [0, 1] image's times its full scale, shown at the input's contrast limits."""
    from napari_refocusgan.core.classical import apply_classical_image
    from napari_refocusgan.core.inference import deblur
    from napari_refocusgan.core.weights import load_generator

    g1_path, g2_path = tiny_weights
    unit = textured_image(14)
    unit[0, 0, 0] = 1.0  # full scale 1, so that the counts' full scale is 4000
    counts = viewer.add_image(unit * np.float32(4000), name="counts", rgb=True, contrast_limits=(0, 4000))
    before = snapshot(counts)
    deblurring = dock(viewer, "Deblur (radiance)")
    deblurring._image.value = counts
    set_network_options(deblurring, g1_path)
    deblurring._run_button.clicked()
    refocusing = refocus_widget(viewer, counts, tiny_weights)
    refocusing._run_button.clicked()
    classical = dock(viewer, "Classical")
    classical._image.value = counts
    classical._method.value = "unsharp"
    classical._run_button.clicked()
    assert notes.errors() == []

    radiance = viewer.layers["counts radiance"].data
    np.testing.assert_allclose(radiance, deblur(unit, load_generator(g1_path, "cpu")) * 4000, rtol=1e-4, atol=0.05)
    unsharp = viewer.layers["counts unsharp"].data
    np.testing.assert_allclose(unsharp, apply_classical_image(unit, "unsharp") * 4000, rtol=1e-4, atol=0.05)
    for name in ("counts radiance", "counts refocused", "counts unsharp"):
        out = viewer.layers[name]
        assert out.data.dtype == np.float32 and out.data.max() > 1000, name
        np.testing.assert_allclose(out.contrast_limits, (0, 4000))
    assert_unchanged(counts, before)


def test_slice_shown_of_a_float_stack_is_taken_at_the_stack_scale(viewer, tiny_weights, notes):
    """The "slice shown" modes took a float slice at its own scale: in a stack of photon counts (0..4000), a dim
    slice peaking at 1.2 was taken as a [0, 1] image and clipped at 1. It is now taken at the stack's scale, as
    the whole-stack mode and the command line take it."""
    from napari_refocusgan.core.blur_compare import blur_and_compare
    from napari_refocusgan.core.classical import apply_classical
    from napari_refocusgan.core.inference import refocus
    from napari_refocusgan.core.weights import load_generator

    bright, dim = textured_image(41), textured_image(42)
    bright[0, 0] = dim[0, 0] = 1.0
    stack = np.stack([bright * np.float32(4000), dim * np.float32(1.2)])
    layer = viewer.add_image(stack, name="counts", rgb=True, contrast_limits=(0, 4000))
    before = snapshot(layer)
    viewer.dims.current_step = (1, 0, 0)
    classical = dock(viewer, "Classical")
    classical._image.value = layer
    classical._method.value = "unsharp"
    classical._run_button.clicked()
    expected = apply_classical(stack[1] / 4000, "unsharp") * 4000
    np.testing.assert_allclose(viewer.layers["counts unsharp"].data, expected, rtol=1e-4, atol=1e-4)

    classical._method.value = "blur-and-compare"
    classical._radiance.value = layer  # the same stack as its own radiance: a valid pair of one scale
    classical._run_button.clicked()
    expected = blur_and_compare(stack[1] / 4000, stack[1] / 4000).refocused * 4000
    np.testing.assert_allclose(viewer.layers["counts blur-and-compare"].data, expected, rtol=1e-4, atol=1e-4)

    refocusing = refocus_widget(viewer, layer, tiny_weights)
    refocusing._slice_only.value = True
    refocusing._run_button.clicked()
    g1_path, g2_path = tiny_weights
    whole = refocus(stack, 0.0, load_generator(g2_path, "cpu"), deblur_model=load_generator(g1_path, "cpu"))
    np.testing.assert_allclose(viewer.layers["counts refocused slice"].data, whole[1], rtol=1e-4, atol=1e-3)
    assert notes.errors() == []
    assert_unchanged(layer, before)


def test_outputs_keep_the_input_units_and_axis_labels(viewer, tiny_weights, notes):
    """Outputs got units of pixels and default axis labels: with a µm input napari then warned of inconsistent
    units and dropped them from every layer (scale bar, world coordinates)."""
    data = np.stack([textured_image(s)[..., 0] for s in (51, 52, 53)])
    layer = viewer.add_image(data, name="cells", scale=(2, 0.1, 0.1), units=("um",) * 3, axis_labels=("z", "y", "x"))
    focus = dock(viewer, "Focus measure (SML)")
    focus._image.value = layer
    focus._run_button.clicked()
    classical = dock(viewer, "Classical")
    classical._image.value = layer
    classical._run_button.clicked()
    deblurring = dock(viewer, "Deblur (radiance)")
    deblurring._image.value = layer
    set_network_options(deblurring, tiny_weights[0])
    deblurring._run_button.clicked()
    assert notes.errors() == []
    for name in ("cells SML", "cells radiance"):
        out = viewer.layers[name]
        assert [str(u) for u in out.units] == ["micrometer"] * 3 and tuple(out.axis_labels) == ("z", "y", "x"), name
    out = viewer.layers[f"cells {classical._method.value}"]
    assert [str(u) for u in out.units] == ["micrometer"] * 2 and tuple(out.axis_labels) == ("y", "x")
    assert np.allclose(out.scale, (0.1, 0.1))
    layer.units, layer.axis_labels = ("um", "nm", "nm"), ("z", "row", "col")
    classical._run_button.clicked()  # a rerun updates the layer in place, units and labels too
    assert [str(u) for u in out.units] == ["nanometer"] * 2 and tuple(out.axis_labels) == ("row", "col")


def test_the_slice_shown_takes_the_scale_of_stacks_held_in_memory_only(tmp_path):
    """Reading a whole lazy or memory-mapped stack for one slice would cost what the slice mode saves."""
    import dask.array as da
    from napari.layers import Image

    from napari_refocusgan._widgets.layer_io import stack_scale_later

    stack = np.stack([textured_image(s)[..., 0] for s in (71, 72)]) * np.float32(300)
    mapped = np.lib.format.open_memmap(tmp_path / "stack.npy", mode="w+", dtype=np.float32, shape=stack.shape)
    mapped[:] = stack
    assert stack_scale_later(Image(stack))() == pytest.approx(float(stack.max()))
    assert stack_scale_later(Image(stack), Image(stack * 2))() == pytest.approx(float(stack.max()) * 2)
    for lazy in (mapped, da.from_array(stack)):
        assert stack_scale_later(Image(lazy))() is None
    assert stack_scale_later(Image((stack / 300 * 255).astype(np.uint8)))() is None  # integers: their dtype's


def test_a_delta_turn_keeps_the_contrast_limits_the_user_set(viewer, tiny_weights, notes):
    """Every δ turn (and every rerun) gave the output layer the input's contrast limits again, undoing the
    user's. Limits the user set stay; the plugin's own follow the new result."""
    layer = viewer.add_image(textured_image(61), name="img", rgb=True)
    widget = refocus_widget(viewer, layer, tiny_weights)
    widget._delta.value = 1.0
    out = viewer.layers["img refocused"]
    np.testing.assert_allclose(out.contrast_limits, layer.contrast_limits)
    out.contrast_limits = (0.2, 0.6)
    widget._delta.value = 2.0
    assert out.metadata["delta"] == 2.0
    np.testing.assert_allclose(out.contrast_limits, (0.2, 0.6))

    gray = viewer.add_image(textured_image(62)[..., 0], name="gray")
    focus = dock(viewer, "Focus measure (SML)")
    focus._image.value = gray
    focus._run_button.clicked()
    sml_layer = viewer.layers["gray SML"]
    first = tuple(sml_layer.contrast_limits)
    gray.data = gray.data * np.float32(0.5)  # SML is linear in contrast: the plugin's limits halve
    focus._run_button.clicked()
    np.testing.assert_allclose(sml_layer.contrast_limits, np.array(first) * 0.5, rtol=1e-3)
    sml_layer.contrast_limits = (0.0, 0.01)
    gray.data = gray.data * np.float32(2)
    focus._run_button.clicked()
    np.testing.assert_allclose(sml_layer.contrast_limits, (0.0, 0.01))
    assert notes.errors() == []


@pytest.mark.parametrize("method", ["clahe", "clahe+sharpen"])
def test_clahe_of_12_bit_data_in_uint16_is_shown_over_its_range(viewer, notes, method):
    """CLAHE stretches to the dtype's full range, but its output was shown at the 12-bit input's limits: 98 % of
    the pixels displayed white."""
    counts = np.round(textured_image(63)[..., 0] * 4095).astype(np.uint16)
    layer = viewer.add_image(counts, name="camera")
    assert layer.contrast_limits[1] <= 4095
    classical = dock(viewer, "Classical")
    classical._image.value = layer
    classical._method.value = method
    classical._run_button.clicked()
    out = viewer.layers[f"camera {method}"]
    assert out.data.dtype == np.uint16 and out.data.max() > 30000
    assert out.contrast_limits[1] >= out.data.max()
    assert notes.errors() == []


def test_a_typed_delta_runs_once_when_entered(viewer, tiny_weights, notes, qtbot):
    """Typing "3.5" into the δ box refocused at δ = 3 first (a whole G1 + G2 run on a stack) and queued 3.5."""
    from qtpy.QtCore import Qt

    layer = viewer.add_image(textured_image(64), name="img", rgb=True)
    widget = refocus_widget(viewer, layer, tiny_weights)
    deltas = []
    widget._delta.changed.connect(deltas.append)
    box = widget._delta.native
    box.selectAll()
    qtbot.keyClicks(box, "3.5")
    assert deltas == [] and "img refocused" not in viewer.layers
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert deltas == [3.5]
    assert viewer.layers["img refocused"].metadata["delta"] == 3.5
    assert notes.errors() == []


def test_classical_widget_methods_match_core(viewer, notes):
    from napari_refocusgan.core.classical import apply_classical
    from napari_refocusgan.core.imaging import from_float, to_float

    image = (textured_image(10) * 255).round().astype(np.uint8)
    layer = viewer.add_image(image, name="photo", rgb=True)
    before = snapshot(layer)
    widget = dock(viewer, "Classical")
    widget._image.value = layer
    for method in ("sharpen", "unsharp", "clahe", "clahe+sharpen", "regionwise"):
        widget._method.value = method
        assert shown(widget.parameters, widget) and not shown(widget._radiance, widget)
        widget._run_button.clicked()
        out = viewer.layers[f"photo {method}"]
        assert out.data.dtype == np.uint8 and out.rgb
        np.testing.assert_array_equal(out.data, from_float(apply_classical(to_float(image), method), np.uint8))
        assert out.metadata["method"] == method

    n = len(viewer.layers)
    widget._method.value = "unsharp"
    widget.parameters.amount.value = 3.0
    widget.parameters.radius.value = 2.0
    widget._run_button.clicked()
    assert len(viewer.layers) == n
    expected = from_float(apply_classical(to_float(image), "unsharp", radius=2.0, amount=3.0), np.uint8)
    np.testing.assert_array_equal(viewer.layers["photo unsharp"].data, expected)
    assert viewer.layers["photo unsharp"].metadata["parameters"] == {"radius": 2.0, "amount": 3.0}
    assert_unchanged(layer, before)
    assert notes.errors() == []


def test_classical_widget_refuses_a_stack_not_shown_as_its_last_two_axes(viewer, notes):
    stack = viewer.add_image(np.random.default_rng(3).random((4, 20, 24)).astype(np.float32), name="z")
    widget = dock(viewer, "Classical")
    widget._image.value = stack
    widget._method.value = "sharpen"
    for setup in (lambda: setattr(viewer.dims, "order", (2, 0, 1)), lambda: setattr(viewer.dims, "ndisplay", 3)):
        viewer.dims.order, viewer.dims.ndisplay = (0, 1, 2), 2
        setup()
        widget._run_button.clicked()
        assert "2-D view of its last two axes" in notes.errors()[-1]
    assert [lay.name for lay in viewer.layers] == ["z"]


def test_classical_widget_refuses_a_stack_with_no_slice_where_the_viewer_is(viewer, notes):
    """napari draws nothing of a stack outside its slices; the tools took its nearest slice instead."""
    viewer.add_image(np.zeros((8, 16, 16), np.float32), name="long")
    short = viewer.add_image(np.random.default_rng(4).random((3, 16, 16)).astype(np.float32), name="short",
                             translate=(4, 0, 0))  # fmt: skip
    widget = dock(viewer, "Classical")
    widget._image.value = short
    widget._method.value = "sharpen"
    viewer.dims.current_step = (1, 0, 0)
    widget._run_button.clicked()
    assert "no slice at the viewer's position" in notes.errors()[-1], notes.errors()
    assert "short sharpen" not in viewer.layers
    viewer.dims.current_step = (5, 0, 0)
    widget._run_button.clicked()
    assert viewer.layers["short sharpen"].metadata["slice"] == [1]
    # turned across its stack axis, the view is an oblique cut, not one slice (napari only warns)
    c, s = np.cos(0.3), np.sin(0.3)
    short.rotate = [[c, 0, -s], [0, 1, 0], [s, 0, c]]
    widget._run_button.clicked()
    assert "transformed across its stack axes" in notes.errors()[-1], notes.errors()


def test_blur_and_compare_and_focus_stacking_keep_8_and_16_bits_and_alpha(viewer, notes):
    """As the command line writes them (and as the other tools show them)."""
    from napari_refocusgan.core.blur_compare import blur_and_compare
    from napari_refocusgan.core.focus_stacking import all_in_focus
    from napari_refocusgan.core.imaging import from_float

    sharp = textured_image(15, (32, 32, 3))
    alpha = np.random.default_rng(15).integers(0, 256, (32, 32, 1), dtype=np.uint8)
    rgba = viewer.add_image(np.concatenate([from_float(sharp, np.uint8), alpha], axis=-1), name="rgba", rgb=True)
    radiance = viewer.add_image(sharp, name="radiance", rgb=True)
    widget = dock(viewer, "Classical")
    widget._image.value = rgba
    widget._method.value = "blur-and-compare"
    widget._radiance.value = radiance
    widget._run_button.clicked()
    out = viewer.layers["rgba blur-and-compare"]
    assert out.data.dtype == np.uint8 and out.data.shape == (32, 32, 4) and out.rgb
    np.testing.assert_array_equal(out.data[..., 3:], alpha)
    expected = from_float(blur_and_compare(rgba.data[..., :3], sharp).refocused, np.uint8)
    np.testing.assert_array_equal(out.data[..., :3], expected)
    assert out.contrast_limits == rgba.contrast_limits

    stack16 = from_float(np.stack([textured_image(s, (24, 32)) for s in (16, 17, 18)]), np.uint16)
    layer = viewer.add_image(stack16, name="deep")
    stacking = dock(viewer, "Focus stacking")
    stacking._stack.value = layer
    stacking._run_button.clicked()
    aif = viewer.layers["deep all-in-focus"].data
    assert aif.dtype == np.uint16
    np.testing.assert_array_equal(aif, from_float(all_in_focus(stack16)[0], np.uint16))
    assert notes.errors() == []


def test_a_name_taken_by_another_inputs_output_gets_a_new_layer(viewer, notes):
    """Input "a" renamed to "b", then a new "a": each keeps its own output layer."""
    first = viewer.add_image(textured_image(1), name="a", rgb=True)
    widget = dock(viewer, "Classical")
    widget._method.value = "sharpen"
    widget._image.value = first
    widget._run_button.clicked()
    first_out = viewer.layers["a sharpen"]
    first.name = "b"
    second = viewer.add_image(textured_image(2), name="a", rgb=True)
    widget._image.value = second
    widget._run_button.clicked()
    assert first_out.metadata["source"] == "a" and first_out in viewer.layers
    (second_out,) = [lay for lay in viewer.layers if lay.metadata.get("source") == "a" and lay is not first_out]
    widget._image.value = first
    widget._run_button.clicked()
    assert first_out.metadata["source"] == "b" and second_out.metadata["source"] == "a"
    assert len(viewer.layers) == 4 and notes.errors() == []


def test_a_users_own_layer_with_an_outputs_name_is_left_alone(viewer, notes):
    """A labels layer called "photo SML" was deleted and an image called "photo unsharp" overwritten."""
    photo = viewer.add_image(textured_image(3), name="photo", rgb=True)
    labels = viewer.add_labels(np.ones((32, 40), np.int32), name="photo SML")
    own = viewer.add_image(np.full((32, 40, 3), 0.5, np.float32), name="photo unsharp", rgb=True)
    own_before = snapshot(own)
    sml_widget, classical = dock(viewer, "Focus measure (SML)"), dock(viewer, "Classical")
    sml_widget._image.value = photo
    classical._image.value = photo
    classical._method.value = "unsharp"
    for _ in range(2):  # the second run updates the outputs made by the first
        sml_widget._run_button.clicked()
        classical._run_button.clicked()
    assert labels in viewer.layers and np.all(labels.data == 1)
    assert own in viewer.layers
    assert_unchanged(own, own_before)
    outputs = [lay for lay in viewer.layers if lay.metadata.get("source") == "photo"]
    assert sorted(lay.name for lay in outputs) == ["photo SML [1]", "photo unsharp [1]"]
    assert len(viewer.layers) == 5 and notes.errors() == []


def test_outputs_keep_rotation_shear_and_affine_so_they_overlay_their_input(viewer, notes):
    photo = viewer.add_image(textured_image(4), name="photo", rgb=True, rotate=30, scale=(2, 3),
                             translate=(5, -7), shear=[0.2], affine=[[1, 0, 4], [0, 1.5, 0], [0, 0, 1]])  # fmt: skip
    stack = viewer.add_image(np.stack([textured_image(s) for s in (5, 6)]), name="stack", rgb=True, rotate=20,
                             scale=(1, 2, 2))  # fmt: skip
    # napari also takes a whole shear matrix, lower-triangular too, and then gives it back as a matrix
    lower = viewer.add_image(textured_image(7), name="lower", rgb=True, shear=np.array([[1.0, 0.0], [0.3, 1.0]]))
    viewer.dims.current_step = (1, 0, 0)
    sml_widget, classical = dock(viewer, "Focus measure (SML)"), dock(viewer, "Classical")
    classical._method.value = "sharpen"
    for layer in (photo, stack, lower):
        sml_widget._image.value = classical._image.value = layer
        sml_widget._run_button.clicked()
        classical._run_button.clicked()
    points = np.array([[0.0, 0.0], [10.0, 20.0], [31.0, 39.0]])
    for out_name, source, lead in (("photo SML", photo, []), ("photo sharpen", photo, []),
                                   ("stack SML", stack, [1.0]), ("stack sharpen", stack, [1.0]),
                                   ("lower SML", lower, []), ("lower sharpen", lower, [])):  # fmt: skip
        out = viewer.layers[out_name]
        for p in points:
            at = out.data_to_world(list(p) if out.ndim == 2 else lead + list(p))
            expected = source.data_to_world(lead + list(p))
            np.testing.assert_allclose(np.asarray(at)[-2:], np.asarray(expected)[-2:], atol=1e-9, err_msg=out_name)
    sml_widget._image.value = photo
    sml_widget._run_button.clicked()  # in place: the transform is set again, not composed twice
    np.testing.assert_allclose(viewer.layers["photo SML"].data_to_world([10, 20]), photo.data_to_world([10, 20]))
    assert notes.errors() == []


def test_classical_widget_keeps_gray_gray(viewer):
    from napari_refocusgan.core.classical import clahe

    gray = textured_image(11, (40, 48))
    layer = viewer.add_image(gray, name="gray")
    widget = dock(viewer, "Classical")
    widget._image.value = layer
    widget._method.value = "clahe"
    widget.parameters.tile_size.value = 16
    widget._run_button.clicked()
    out = viewer.layers["gray clahe"]
    assert out.data.shape == (40, 48) and not out.rgb
    np.testing.assert_allclose(out.data, clahe(gray, tile_size=16), atol=1e-6)


def test_blur_and_compare_outputs_refocused_and_sigma_layers(viewer, notes):
    from napari_refocusgan.core.blur_compare import blur_and_compare

    sharp = textured_image(12)
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(sharp, (1.5, 1.5, 0)).astype(np.float32)
    img = viewer.add_image(blurred, name="blurred", rgb=True)
    rad = viewer.add_image(sharp, name="sharp", rgb=True)
    widget = dock(viewer, "Classical")
    widget._image.value = img
    widget._method.value = "blur-and-compare"
    assert shown(widget._radiance, widget)
    widget._radiance.value = rad
    widget.parameters.kernel.value = "gaussian"
    widget._run_button.clicked()
    expected = blur_and_compare(blurred, sharp, kernel="gaussian")
    np.testing.assert_allclose(viewer.layers["blurred blur-and-compare"].data, expected.refocused, atol=1e-6)
    sigma = viewer.layers["blurred σ defocus map"]
    np.testing.assert_allclose(sigma.data, expected.sigma)
    assert np.median(sigma.data) == pytest.approx(1.5, abs=0.25)  # the blur we applied, found again
    assert sigma.metadata["sigma_max_used"] == pytest.approx(expected.sigma_max)
    assert notes.errors() == []


def test_classical_widget_works_on_the_slice_shown_and_rejects_mismatched_radiance(viewer, notes):
    from napari_refocusgan.core.classical import apply_classical

    data = np.random.default_rng(5).random((2, 3, 16, 16, 3)).astype(np.float32)
    stack = viewer.add_image(data, name="stack5d", rgb=True)
    before = snapshot(stack)
    widget = dock(viewer, "Classical")
    widget._image.value = stack
    widget._method.value = "sharpen"
    for step in ((1, 2), (0, 1)):
        viewer.dims.current_step = (*step, 0, 0)
        widget._run_button.clicked()
        out = viewer.layers["stack5d sharpen"]
        np.testing.assert_allclose(out.data, apply_classical(data[step], "sharpen"), atol=1e-6)
        assert out.metadata["slice"] == list(step) and out.data.shape == (16, 16, 3)
    assert len(viewer.layers) == 2
    assert_unchanged(stack, before)
    assert notes.errors() == []

    viewer.layers.remove(stack)
    plain = viewer.add_image(np.zeros((16, 16), np.float32), name="plain")
    small = viewer.add_image(np.zeros((8, 8), np.float32), name="small")
    widget._image.value = plain
    widget._method.value = "blur-and-compare"
    widget._radiance.value = small
    widget._run_button.clicked()
    assert any("same size" in m for m in notes.errors())
    assert [lay.name for lay in viewer.layers] == ["stack5d sharpen", "plain", "small"]


def test_classical_widget_bad_layers_are_notifications_and_uint16_stays_uint16(viewer, notes):
    from napari_refocusgan.core.classical import apply_classical
    from napari_refocusgan.core.imaging import from_float, to_float

    widget = dock(viewer, "Classical")
    widget._method.value = "unsharp"
    nan = viewer.add_image(np.full((16, 16), np.nan, np.float32), name="nan")
    before = snapshot(nan)
    widget._image.value = nan
    widget._run_button.clicked()
    assert any("NaN" in m for m in notes.errors()) and "nan unsharp" not in viewer.layers
    assert_unchanged(nan, before)

    tiny = viewer.add_image(np.full((1, 1), 0.5, np.float32), name="tiny")
    widget._image.value = tiny
    widget._run_button.clicked()
    assert viewer.layers["tiny unsharp"].data.shape == (1, 1)

    image16 = (textured_image(13, (24, 32, 3)) * 65535).round().astype(np.uint16)
    deep = viewer.add_image(image16, name="deep", rgb=True)
    widget._image.value = deep
    widget._run_button.clicked()
    out = viewer.layers["deep unsharp"].data
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, from_float(apply_classical(to_float(image16), "unsharp"), np.uint16))

    signed = viewer.add_image((image16 // 2).astype(np.int16), name="signed", rgb=True)  # int16, no negatives
    widget._image.value = signed
    widget._run_button.clicked()
    out = viewer.layers["signed unsharp"].data
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, from_float(apply_classical(to_float(signed.data), "unsharp"), np.int16))
    negative = viewer.add_image(np.full((16, 16), -5, np.int16), name="negative")
    before = snapshot(negative)
    widget._image.value = negative
    widget._run_button.clicked()
    assert any("intensities cannot be negative" in m for m in notes.errors()) and "negative unsharp" not in viewer.layers
    assert_unchanged(negative, before)


def test_blur_and_compare_radii_field(viewer, notes):
    from napari_refocusgan.core.blur_compare import blur_and_compare

    sharp = textured_image(14, (32, 32, 3))
    img = viewer.add_image(sharp, name="img", rgb=True)
    widget = dock(viewer, "Classical")
    widget._image.value = img
    widget._method.value = "blur-and-compare"
    widget._radiance.value = img
    widget.parameters.radii.value = "0:2:0.5"
    widget._run_button.clicked()
    expected = blur_and_compare(sharp, sharp, radii=[0, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(viewer.layers["img blur-and-compare"].data, expected.refocused, atol=1e-6)
    assert viewer.layers["img blur-and-compare"].metadata["parameters"]["radii"] == [0, 0.5, 1, 1.5, 2]
    n = len(viewer.layers)
    widget.parameters.radii.value = "zero to four"
    widget._run_button.clicked()
    assert any("radii must look like" in m for m in notes.errors()) and len(viewer.layers) == n


# --------------------------------------------------------------------------------------------- stacking


def test_focus_stacking_widget_matches_core(viewer, notes):
    from napari_refocusgan.core.focalstack import focal_stack
    from napari_refocusgan.core.focus_stacking import all_in_focus
    from napari_refocusgan.core.synthetic import render_scene

    scene = render_scene(8, size=(48, 64), n_layers=3, supersample=1)
    data, slopes, _ = focal_stack(scene.views)
    layer = viewer.add_image(data, name="stack", rgb=True, metadata={"slopes": slopes.tolist()})
    before = snapshot(layer)
    widget = dock(viewer, "Focus stacking")
    widget._stack.value = layer
    widget._measures.value = ["sml", "tenengrad"]
    widget._run_button.clicked()
    aif, depth = all_in_focus(before[1], measures=["sml", "tenengrad"], rgb=True)
    np.testing.assert_allclose(viewer.layers["stack all-in-focus"].data, aif, atol=1e-6)
    depth_layer = viewer.layers["stack depth index"]
    np.testing.assert_allclose(depth_layer.data, depth, atol=1e-6)
    assert depth_layer.data.shape == (48, 64) and 0 <= depth_layer.data.min() and depth_layer.data.max() <= 9
    assert depth_layer.metadata["slopes"] == slopes.tolist()
    assert depth_layer.metadata["measures"] == ["sml", "tenengrad"]
    assert_unchanged(layer, before)
    # a Lytro stack's slices are labelled by λ: the depth index maps to them too
    layer.metadata = {"lambdas": [float(v) for v in range(-5, 5)]}
    widget._run_button.clicked()
    assert depth_layer.metadata["lambdas"] == [float(v) for v in range(-5, 5)] and "slopes" not in depth_layer.metadata
    assert notes.errors() == []


def test_focus_stacking_widget_offers_stacks_first(viewer):
    open_sample(viewer)
    widget = dock(viewer, "Focus stacking")
    assert widget._stack.value is viewer.layers[FOCAL_STACK_NAME]
    assert list(widget._stack.choices)[1:] == [viewer.layers[ALL_IN_FOCUS_NAME], viewer.layers[DISPARITY_NAME]]


def test_focus_stacking_widget_picks_a_stack_added_after_it_opened_until_the_user_chooses(viewer):
    widget = dock(viewer, "Focus stacking")
    flat = viewer.add_image(np.zeros((16, 16), np.float32), name="flat")
    assert widget._stack.value is flat  # the only choice
    stack = viewer.add_image(np.zeros((3, 16, 16), np.float32), name="stack")
    assert widget._stack.value is stack
    widget._stack.value = flat  # the user (or a script) picks an entry
    viewer.add_image(np.zeros((4, 16, 16), np.float32), name="another stack")
    assert widget._stack.value is flat
    viewer.layers.remove(flat)
    assert widget._stack.value is stack  # the pick is gone: a stack again


def test_focus_stacking_refuses_a_lazy_4d_layer_without_reading_it(viewer, notes):
    """A (T, Z, Y, X) dask layer was read whole, in the task, before the refusal."""
    pytest.importorskip("dask")
    import dask.array as da

    blocks_read = []

    def record(block):
        blocks_read.append(block.shape)
        return block

    lazy = da.zeros((4, 5, 16, 16), chunks=(1, 1, 16, 16), dtype=np.float32).map_blocks(record, dtype=np.float32)
    layer = viewer.add_image(lazy, name="movie", contrast_limits=(0, 1))
    widget = dock(viewer, "Focus stacking")
    widget._stack.value = layer
    shown = len(blocks_read)  # napari reads the slice it displays
    widget._run_button.clicked()
    assert any("expected a gray (S, H, W) stack" in m for m in notes.errors()), notes.errors()
    assert len(blocks_read) == shown  # none of the 20 blocks read for the run
    assert len(viewer.layers) == 1


@pytest.mark.parametrize(
    ("shape", "rgb", "expected"),
    [((2, 2, 16, 16, 3), True, "expected a colour"), ((16, 16), False, "expected a gray"), ((1, 16, 16), False, "at least 2 slices")],
    ids=["5d", "2d", "one-slice"],
)
def test_focus_stacking_widget_reports_unsupported_shapes(viewer, notes, shape, rgb, expected):
    layer = viewer.add_image(np.zeros(shape, np.float32), name="odd", rgb=rgb)
    before = snapshot(layer)
    widget = dock(viewer, "Focus stacking")
    widget._stack.value = layer
    widget._run_button.clicked()
    assert any(expected in m for m in notes.errors()), notes.errors()
    assert len(viewer.layers) == 1
    assert_unchanged(layer, before)


# --------------------------------------------------------------------------------------------- reader


def test_reader_opens_a_synthetic_view_folder(viewer, tmp_path):
    import imageio.v3 as iio

    from napari_refocusgan.core.focalstack import focal_stack
    from napari_refocusgan.core.synthetic import render_scene

    scene = render_scene(5, size=(24, 32), n_layers=2, supersample=1)
    views8 = (scene.views * 255).round().astype(np.uint8)
    folder = tmp_path / "scene"
    folder.mkdir()
    for r in range(7):
        for c in range(7):
            iio.imwrite(folder / f"scene_{r + 1:02d}_{c + 1:02d}.png", views8[r, c])
    viewer.open(str(folder), plugin=PLUGIN)
    stack = viewer.layers["scene focal stack"]
    expected, slopes, _ = focal_stack(views8.astype(np.float32) / 255)
    assert stack.rgb and stack.data.shape == (10, 24, 32, 3)
    np.testing.assert_allclose(stack.data, expected, atol=1e-5)
    np.testing.assert_allclose(stack.metadata["slopes"], slopes)


def test_reader_opens_the_readable_files_of_several_and_warns_about_the_others(viewer, tmp_path, notes):
    """Given several paths at once (npe2.read, napari's open as a stack), one corrupt file lost the good ones
    too. (viewer.open without stack=True asks the reader one path at a time.)"""
    import imageio.v3 as iio

    from napari_refocusgan._reader import read_lightfield_layers

    folder = tmp_path / "grid"
    folder.mkdir()
    for r in range(3):
        for c in range(3):
            iio.imwrite(folder / f"grid_{r + 1:02d}_{c + 1:02d}.png", np.full((12, 16, 3), 40 * (r + c), np.uint8))
    cut = tmp_path / "cut.lfp"
    cut.write_bytes(b"\x89LF")
    layers = read_lightfield_layers([str(folder), str(cut)])
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["grid focal stack", "grid centre view"]
    assert any("1 of 2 files not opened" in m and "cut.lfp" in m for m in notes.messages()), notes.messages()


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "data" / "hci_antinous").is_dir(), reason="needs ../shared/data/hci_antinous")
def test_reader_opens_hci_antinous_as_a_focal_stack(viewer):
    viewer.open(str(SHARED / "data" / "hci_antinous"), plugin=PLUGIN)
    stack = viewer.layers["hci_antinous focal stack"]
    assert stack.rgb and stack.data.ndim == 4 and stack.data.shape[0] == 10 and stack.data.shape[-1] == 3
    assert len(stack.metadata["slopes"]) == 10
    assert "hci_antinous disparity" in viewer.layers


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "data" / "lytro_stk" / "IMG_0001-stk.lfp").is_file(), reason="needs ../shared Lytro data")
def test_reader_opens_a_lytro_stack_file(viewer):
    viewer.open(str(SHARED / "data" / "lytro_stk" / "IMG_0001-stk.lfp"), plugin=PLUGIN)
    stack = viewer.layers["IMG_0001-stk focal stack"]
    assert stack.rgb and stack.data.ndim == 4 and stack.data.shape[0] >= 2 and stack.data.dtype == np.float32
    assert len(stack.metadata["lambdas"]) == stack.data.shape[0]
    assert any(name.startswith("IMG_0001-stk default-focus slice") for name in [layer.name for layer in viewer.layers])
