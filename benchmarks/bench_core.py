"""Core timings (issue 2): focal stack from 7×7 views of 383×552 RGB, SML of a 12 MP RGB image.

    python benchmarks/bench_core.py [--repeat 5]

Prints the best of N runs (the machine is shared and noisy; the minimum is the least disturbed).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _cli import positive_int  # benchmarks/ is on sys.path when run as a script
from napari_refocusgan.core.focalstack import StackConfig, shift_and_sum
from napari_refocusgan.core.focus import sml


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=positive_int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")

    views = rng.random((7, 7, 383, 552, 3), dtype=np.float32)
    slopes = StackConfig().slopes()
    t = best_of(lambda: shift_and_sum(views, slopes), args.repeat)
    print(f"focal stack, 10 slices from 7×7 views of 383×552 RGB: {t:.3f} s (target ≤ 0.25 s)")

    image = rng.random((3000, 4000, 3), dtype=np.float32)
    t = best_of(lambda: sml(image), args.repeat)
    print(f"SML of a 12 MP RGB image: {t:.3f} s (target ≤ 0.5 s)")


if __name__ == "__main__":
    main()
