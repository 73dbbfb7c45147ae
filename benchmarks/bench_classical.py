"""Timings of the classical baselines on the CPU (target: all-in-focus of a 10-slice 512×512 RGB stack ≤ 1 s).

Run: python benchmarks/bench_classical.py [--repeat N] [--threads T]
Prints the median wall time of each tool. The stack is scikit-image's astronaut photo defocused by a
left-to-right depth ramp, so every slice is sharp in one vertical band.

On a machine shared with other jobs, torch's OpenMP threads busy-wait for each other and the wall times
balloon (several seconds); compare the CPU column, or run with --threads 1 or OMP_WAIT_POLICY=PASSIVE.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from scipy import ndimage
from _cli import positive_int


def median_time(fn, repeat: int) -> tuple[float, float]:
    """Median (wall, process CPU) seconds; CPU time stays meaningful on a machine shared with other jobs."""
    fn()  # warm-up (imports, allocator)
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def ramp_stack(image: np.ndarray, slices: int) -> np.ndarray:
    """Slice k is sharp in band k of ``slices`` vertical bands and blurred ∝ band distance elsewhere."""
    w = image.shape[1]
    band = np.minimum(np.arange(w) * slices // w, slices - 1)
    blurs = {d: ndimage.gaussian_filter(image, (0.8 * d, 0.8 * d, 0)) if d else image for d in range(slices)}
    stack = np.empty((slices, *image.shape), np.float32)
    for k in range(slices):
        for d in range(slices):
            cols = np.abs(band - k) == d
            stack[k][:, cols] = blurs[d][:, cols]
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import skimage.data

    from napari_refocusgan.core.blur_compare import blur_and_compare
    from napari_refocusgan.core.classical import CLASSICAL_METHODS
    from napari_refocusgan.core.focus_stacking import all_in_focus

    image = skimage.data.astronaut().astype(np.float32) / 255  # 512×512 RGB
    stack = ramp_stack(image, 10)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.repeat} runs")

    print(f"{'tool':<34s} {'wall ms':>8s} {'cpu ms':>8s}")

    def row(label: str, fn, repeat: int = args.repeat, note: str = "") -> None:
        wall, cpu = median_time(fn, repeat)
        print(f"{label:<34s} {wall * 1000:8.0f} {cpu * 1000:8.0f}   {note}")

    row("all_in_focus 10×512×512×3", lambda: all_in_focus(stack), note="target ≤ 1000 ms wall")
    for name, fn in CLASSICAL_METHODS.items():
        row(f"classical {name} 512×512×3", lambda fn=fn: fn(image))
    row(
        "blur_and_compare 512×512×3",
        lambda: blur_and_compare(stack[0], image),
        max(1, args.repeat // 2),
        "17 disk radii, patch 7",
    )


if __name__ == "__main__":
    main()
