"""Probe (not adopted): train only a G1 gain path on top of the frozen shipped G1, then score it.

    python benchmarks/probe_g1_gain_path.py --steps 1500 --out runs/gain_path

The gain path (``GeneratorConfig.gain_path_width``) maps per-pixel focus cues (the SML channel and the
re-blur ratios at σ0 = 1, 2 px) to G1's sharpening gains at full resolution. Everything else is the shipped
G1, frozen and in eval mode; the loss is the sixth session's G1 fine-tune loss (pixel MSE ×1000, 1 − SSIM
×10, in-focus squared error ×1500), on the training scenes with 70 % of the inputs clean. Prints PSNR / SSIM
/ in-focus PSNR on the synthetic test scenes and the HCI scene (paper window, half resolution).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import data  # noqa: E402
from training import evaluate as ev  # noqa: E402
from training.configs import get_config  # noqa: E402
from training.losses import ssim_loss  # noqa: E402

from napari_refocusgan.core.networks import GAIN_PATH_REBLUR_SIGMAS, Generator, GeneratorConfig  # noqa: E402
from napari_refocusgan.core.weights import load_generator  # noqa: E402


def score(g: Generator, scenes) -> tuple[float, float, float]:
    rows = []
    for sc in scenes:
        for k in range(sc.stack.shape[0]):
            out = ev.run_deblur(g, sc.stack[k])
            mask = data.in_focus_mask(sc.disparity, float(sc.slopes[k]), sc.step)
            rows.append((ev.psnr(sc.centre, out), ev.ssim(sc.centre, out), ev.psnr(sc.centre, out, mask)))
    r = np.array(rows)
    return float(r[:, 0].mean()), float(r[:, 1].mean()), float(np.nanmean(r[:, 2]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--in-focus-weight", type=float, default=1500)
    p.add_argument("--out", type=Path, required=True, help="where the path's weights go (a .pt of tensors)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = load_generator("deblur", role="deblur").generator
    cfg = GeneratorConfig.from_dict({**base.cfg.to_dict(), "gain_path_width": args.width,
                                     "gain_path_reblur_sigmas": list(GAIN_PATH_REBLUR_SIGMAS)})  # fmt: skip
    g = Generator(cfg)
    own = g.state_dict()
    own.update(base.state_dict())
    g.load_state_dict(own)
    g.eval()
    trained = [prm for name, prm in g.named_parameters() if name.startswith("gain_path")]
    for prm in g.parameters():
        prm.requires_grad_(False)
    for prm in trained:
        prm.requires_grad_(True)
    opt = torch.optim.Adam(trained, lr=args.lr)
    half = args.steps // 2
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < half else max(0.0, 2 * (1 - s / args.steps)))
    dataset = data.build_dataset("deblur", split="train", config=get_config("cpu", "deblur", clean_prob=0.7, steps=1), seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=1, drop_last=True)
    t0, step = time.time(), 0
    while step < args.steps:
        for batch in loader:
            x, y, sharp = batch["input"], batch["target"], batch["in_focus"]
            with torch.no_grad():
                features = g.up(g.blocks(g.encode(x)))
            out = g.output(x, features)
            loss = 1000 * F.mse_loss(out, y) + 10 * ssim_loss(out, y)
            loss = loss + args.in_focus_weight * ((out - y) ** 2 * sharp).sum() / (3 * sharp.sum()).clamp_min(1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
            if step >= args.steps:
                break
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in g.state_dict().items() if k.startswith("gain_path")}, args.out)
    with torch.no_grad():
        print("synthetic test: PSNR %.2f  SSIM %.4f  in-focus %.2f" % score(g, ev.synthetic_scenes(8, 192, ROOT / data.DEFAULT_CACHE_DIR)))
        if (ev.DEFAULT_HCI / "input_Cam000.png").exists():
            for variant in ("paper", "half"):
                print(f"HCI {variant}: PSNR %.2f  SSIM %.4f  in-focus %.2f" % score(g, [ev.hci_scene(ev.DEFAULT_HCI, variant)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
