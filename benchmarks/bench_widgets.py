"""Widget overhead and the Refocus widget's δ latency (issue 3), in a hidden napari viewer.

    xvfb-run -a python benchmarks/bench_widgets.py [--size 512] [--repeat 3]

Widgets run synchronously here (the same code path as the thread worker, minus the thread), so the
figures are what a user waits for after a click, without the GUI freezing in real use. Generators are
random, of the default training size (ngf 32, 6 blocks); speed does not depend on the weights.
Prints the best of N runs (the machine is shared and noisy; the minimum is the least disturbed).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_core import best_of  # benchmarks/ is on sys.path when run as a script
from _cli import positive_int


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=positive_int, default=512, help="side of the square test image")
    parser.add_argument("--repeat", type=positive_int, default=3)
    args = parser.parse_args()

    import napari

    from napari_refocusgan import _sample_data
    from napari_refocusgan._widgets import workers
    from napari_refocusgan._widgets.focus_widget import SMLWidget
    from napari_refocusgan._widgets.network_widgets import RefocusWidget
    from napari_refocusgan.core.focus import sml
    from napari_refocusgan.core.inference import deblur, refocus
    from napari_refocusgan.core.networks import Generator, deblur_config, refocus_config
    from napari_refocusgan.core.weights import load_generator, save_generator

    workers.RUN_SYNCHRONOUSLY = True
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, image {args.size}² RGB")

    t0 = time.perf_counter()
    _sample_data.make_sample_scene()
    cold = time.perf_counter() - t0
    warm = best_of(_sample_data.make_sample_scene, args.repeat)
    print(f"sample data (render 7×7 views of 240×320 + focal stack): {cold:.2f} s cold, {warm * 1e3:.1f} ms cached")

    viewer = napari.Viewer(show=False)
    temp = tempfile.TemporaryDirectory()  # the random weights, removed at the end even when a run fails
    try:
        stack = viewer.add_image(_sample_data.make_sample_scene()[2][0], name="stack", rgb=True)
        sml_widget = SMLWidget(viewer)
        sml_widget._image.value = stack
        core_sml = best_of(lambda: sml(stack.data, rgb=True), args.repeat)
        widget_sml = best_of(sml_widget._run_button.clicked, args.repeat)
        print(f"SML of the 10×240×320 sample stack: core {core_sml:.3f} s, widget {widget_sml:.3f} s")

        torch.manual_seed(0)
        folder = Path(temp.name)
        g1_path, g2_path = folder / "g1.safetensors", folder / "g2.safetensors"
        save_generator(Generator(deblur_config()), g1_path, "deblur")
        save_generator(Generator(refocus_config()), g2_path, "refocus")
        g1, g2 = load_generator(g1_path, "cpu"), load_generator(g2_path, "cpu")
        image = np.random.default_rng(0).random((args.size, args.size, 3), dtype=np.float32)
        radiance = deblur(image, g1, device="cpu")
        core_g2 = best_of(lambda: refocus(image, 1.0, g2, radiance=radiance, device="cpu"), args.repeat)
        core_g1 = best_of(lambda: deblur(image, g1, device="cpu"), args.repeat)

        layer = viewer.add_image(image, name="photo", rgb=True)
        widget = RefocusWidget(viewer)
        widget._image.value = layer
        widget._weights.value, widget._deblur_weights.value, widget._device.value = g2_path, g1_path, "cpu"
        t0 = time.perf_counter()
        widget._run_button.clicked()  # loads both models, runs G1 then G2
        first = time.perf_counter() - t0
        deltas = iter(range(-9, 10))
        turn = best_of(lambda: setattr(widget._delta, "value", float(next(deltas))), args.repeat)
        assert widget.runner.last_status == "done", widget.runner.last_status
        print(f"refocus core: G1 {core_g1:.3f} s, G2 {core_g2:.3f} s")
        print(f"Refocus widget: first run (load G1+G2, G1, G2) {first:.3f} s; "
              f"δ change (cached radiance, G2 only) {turn:.3f} s, overhead over core G2 {turn - core_g2:+.3f} s")
    finally:
        viewer.close()
        temp.cleanup()


if __name__ == "__main__":
    main()
