"""G1 on noisy, JPEG-compressed inputs: does it sharpen the noise?

    python benchmarks/bench_g1_noisy.py [--g1 deblur [FILE ...]] [--synthetic 8]

The synthetic test slices (every third) get the training's input degradations with a fixed seed: sensor
noise of σ = 0.005 plus up to 0.015 more, then JPEG at quality 70–95 on half of them
(``training.data.degrade_input``). Prints each G1's PSNR / SSIM against the clean centre view next to the
degraded input's (the identity). A G1 trained only on clean inputs falls below the identity here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import data  # noqa: E402
from _cli import positive_int, run_script  # noqa: E402
from training import evaluate as ev  # noqa: E402

SCENE_NOISE = 0.005  # sensor noise of every degraded input, before the random extra
SLICE_STRIDE = 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--g1", nargs="+", default=["deblur"], help="G1s to score (registry names or files)")
    p.add_argument("--synthetic", type=positive_int, default=8, help="synthetic test scenes (default 8)")
    p.add_argument("--scene-size", type=int, default=192)
    p.add_argument("--cache-dir", type=Path, default=ROOT / data.DEFAULT_CACHE_DIR)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {name: ev.load_checked(name, "--g1", "deblur") for name in args.g1}
    augment = data.Augment(noise_prob=1.0)
    scores: dict[str, tuple[list, list]] = {}
    for n, sc in enumerate(ev.synthetic_scenes(args.synthetic, args.scene_size, args.cache_dir)):
        for k in range(0, sc.stack.shape[0], SLICE_STRIDE):
            x = data.degrade_input(sc.stack[k], np.random.default_rng([n, k]), SCENE_NOISE, augment)
            for name, model in [("identity (degraded input)", None), *models.items()]:
                y = x if model is None else ev.run_deblur(model, x)
                psnrs, ssims = scores.setdefault(name, ([], []))
                psnrs.append(ev.psnr(sc.centre, y))
                ssims.append(ev.ssim(sc.centre, y))
    identity = np.mean(scores["identity (degraded input)"][0])
    print(f"synthetic test ({args.synthetic} scenes, every {SLICE_STRIDE}rd slice), noisy + JPEG inputs; PSNR in dB (gain over the identity)")
    for name, (psnrs, ssims) in scores.items():
        print(f"  {name:40s} PSNR {np.mean(psnrs):6.2f} ({np.mean(psnrs) - identity:+.2f})  SSIM {np.mean(ssims):.4f}")
    return 0


if __name__ == "__main__":
    run_script(main)
