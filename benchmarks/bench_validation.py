"""G2 on the synthetic *validation* pairs, scored separately for each radiance and for noisy or clean inputs.

    python benchmarks/bench_validation.py [--g2 refocus [W ...]] [--scenes 8] [--deltas 4]

Training validates on a few items (``--val-size``), with the radiance drawn at random and, for ``--radiance
mix:W``, with each radiance in turn. A change can help one radiance and hurt the other, so this report
scores every pair of a δ set (``--deltas``, default {−9, −5, +5, +9}) on the validation scenes four ways:
the true radiance or the shipped G1's, inputs degraded as validation inputs are (the scene's sensor noise
and, half the time, JPEG; fixed per item) or clean. The scenes and 128² centre crops are training's
validation ones; the pairs are the δ set's, not the items training scores. Two-stage G2s only (RGB +
radiance), loaded by registry name, weights file or training checkpoint (see ``training/evaluate.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import data  # noqa: E402
from _cli import positive_int, run_script  # noqa: E402
from training import evaluate as ev  # noqa: E402
from napari_refocusgan.core.errors import RefocusError  # noqa: E402


def run(args) -> None:
    ev.load_checked(args.g1, "--g1", "deblur", focus_channel=True)  # before any scoring
    wanted = {round(d) for d in data.DELTA_SETS[args.deltas]}
    models = {}
    for spec in args.g2:
        g2 = ev.load_checked(spec, "--g2", "refocus", radiance=True).generator
        trained = ev.model_delta_configs(g2)
        if not any(set(ev.DELTA_CONFIGS[c]) >= wanted for c in trained):  # a one-hot G2 would take the nearest δ
            raise RefocusError(f"--g2 {spec} takes {ev.delta_label(g2)}, not all of --deltas {args.deltas} "
                               f"({', '.join(f'{d:+d}' for d in sorted(wanted))})")  # fmt: skip
        models[spec] = g2
    for radiance in ("true", f"g1:{args.g1}"):
        for clean in (0.0, 1.0):
            config = SimpleNamespace(crop=args.crop, scene_size=args.scene_size, val_scenes=args.scenes,
                                     refocus_deltas=args.deltas, cache_dir=str(args.cache_dir), radiance=radiance,
                                     clean_prob=clean)  # fmt: skip
            items = data.build_dataset("refocus", split="val", config=config)
            identity, scores = [], {spec: [] for spec in models}
            for k in range(len(items)):
                item = items[k]
                target = data.from_signed(item["target"])
                identity.append(ev.psnr(target, data.from_signed(item["input"][:3])))
                with torch.no_grad():
                    for spec, g2 in models.items():
                        out = g2(item["input"][None], item["delta"][None])[0]
                        scores[spec].append(ev.psnr(target, data.from_signed(out)))
            base = float(np.mean(identity))
            label = f"{'true' if radiance == 'true' else 'G1'} radiance, {'clean' if clean else 'noisy'} inputs"
            print(f"{label:30s} {len(items):4d} pairs  identity {base:6.2f} dB", flush=True)
            for spec, values in scores.items():
                print(f"  {spec:60s} {np.mean(values):6.2f} dB ({np.mean(values) - base:+.2f})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--g2", nargs="+", default=["refocus"], help="G2s to score (default: the shipped one)")
    p.add_argument("--g1", default=str(ROOT / "src/napari_refocusgan/weights/deblur-cpu.safetensors"),
                   help="G1 weights file for the G1-radiance items (default: the shipped G1)")  # fmt: skip
    p.add_argument("--scenes", type=positive_int, default=8, help="validation scenes (default 8)")
    p.add_argument("--deltas", default="4", choices=list(data.DELTA_SETS), help="δ set (default 4: {−9, −5, +5, +9})")
    p.add_argument("--scene-size", type=int, default=192)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--cache-dir", type=Path, default=ROOT / "runs/cache")
    p.add_argument("--threads", type=positive_int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    run_script(main)
