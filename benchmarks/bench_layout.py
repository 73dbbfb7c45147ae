"""Untiled CPU inference: channels_last after the encoder (the default) against NCHW throughout (the layout
before the ninth session), interleaved round by round in one process so that a shared machine's load hits
both alike. Run it on a new kind of CPU to check that the default still wins there.

    python benchmarks/bench_layout.py [--rounds 9] [--threads 2]

Prints, per job (deblur; deblur + refocus of a new image; δ change with the radiance cached), the best and
the median time of each layout and the median of the per-round ratios new / old.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_inference import generators, test_image  # benchmarks/ is on sys.path when run as a script
from _cli import positive_int

from napari_refocusgan.core import inference
from napari_refocusgan.core.inference import deblur, refocus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=positive_int, default=9)
    parser.add_argument("--threads", type=positive_int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    default_rule = inference._channels_last_after_encoder
    layouts = {
        "NCHW throughout": lambda device, channels_last: channels_last,  # CUDA and tiled runs stay channels_last
        "channels_last after the encoder": default_rule,
    }
    image = test_image(376, 541)
    g1, g2 = generators()
    radiance = deblur(image, g1)
    deltas = iter(np.linspace(-9, 9, 4 * args.rounds * len(layouts)))

    def new_image(fn):
        inference._delta_cache.clear()
        return fn()

    jobs = {
        "deblur": lambda: deblur(image, g1),
        "deblur + refocus": lambda: new_image(lambda: refocus(image, 3.0, g2, deblur_model=g1)),
        "δ change": lambda: refocus(image, float(next(deltas)), g2, radiance=radiance),
    }
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for layout, rule in layouts.items():
                inference._channels_last_after_encoder = rule
                inference._delta_cache.clear()
                for job, fn in jobs.items():
                    fn()  # warm-up: the weights change layout, the δ cache fills
                    t0 = time.perf_counter()
                    fn()
                    times.setdefault((job, layout), []).append(time.perf_counter() - t0)
    finally:
        inference._channels_last_after_encoder = default_rule

    old, new = layouts
    print(f"376×541 RGB, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds; best / median in s")
    for job in jobs:
        a, b = np.array(times[(job, old)]), np.array(times[(job, new)])
        print(f"  {job:17s} {old}: {a.min():.3f} / {np.median(a):.3f}   {new}: {b.min():.3f} / {np.median(b):.3f}"
              f"   median ratio {np.median(b / a):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
