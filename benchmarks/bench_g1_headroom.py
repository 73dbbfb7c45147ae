"""How far G1's output form can go on the synthetic test scenes, with its gains chosen by an oracle.

    python benchmarks/bench_g1_headroom.py [--synthetic 8] [--g1 deblur]

G1 returns its input plus per-pixel gains on the input's high-pass at σ = 1 and 2 px (gains within ±2;
``networks.DEBLUR_DETAIL_SIGMAS``), and a tail residual that stays near zero. This fits those two gains by
least squares against the centre view, pooled over all test slices, per bin of

* the true defocus, |disparity − slope| in slices (an oracle: G1 does not see the disparity), and
* the SML focus channel, the cue G1 is given, pixel by pixel;

then scores the result as the quality bar does (PSNR, SSIM, in-focus PSNR), next to the identity,
unsharp masking and G1 itself. The true-defocus fit is repeated with the gain maps blurred, to see how sharp
in space the gains must be. The fits see the answer (they are made on the test scenes, the first with the
true disparity), so they show the headroom of this form, not a method.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training import data  # noqa: E402
from _cli import positive_int, run_script  # noqa: E402
from training import evaluate as ev  # noqa: E402

from napari_refocusgan.core.blur_compare import gaussian_blurs_torch  # noqa: E402
from napari_refocusgan.core.networks import DEBLUR_DETAIL_SIGMAS  # noqa: E402

MAX_GAIN = 2.0  # the gains' tanh range in the network
DEFOCUS_BINS = 13  # 0, 1, …, 11 slices, then 12 and beyond
SML_BINS = 20  # over the focus channel's range [-1, 1)


def high_passes(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (K, H, W, 3): image − Gaussian_σ(image) for each of G1's σ, with the network's blur."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    blurs = gaussian_blurs_torch(x, DEBLUR_DETAIL_SIGMAS)
    return np.stack([(x - b)[0].permute(1, 2, 0).numpy() for b in blurs])


def fit_gains(items: list[dict], key: str, n_bins: int) -> np.ndarray:
    """Least-squares gains (n_bins, K) per bin of ``items[i][key]``, clipped to the network's range."""
    k = len(DEBLUR_DETAIL_SIGMAS)
    lhs, rhs = np.zeros((n_bins, k, k)), np.zeros((n_bins, k))
    for it in items:
        h = it["high"].reshape(k, -1, 3).transpose(1, 2, 0)  # (P, 3, K)
        r = (it["centre"] - it["input"]).reshape(-1, 3)
        bins = it[key].reshape(-1)
        for b in np.unique(bins):
            m = bins == b
            hm = h[m].reshape(-1, k)
            lhs[b] += hm.T @ hm
            rhs[b] += hm.T @ r[m].reshape(-1)
    gains = np.array([np.linalg.lstsq(lhs[b] + 1e-9 * np.eye(k), rhs[b], rcond=None)[0] for b in range(n_bins)])
    return np.clip(gains, -MAX_GAIN, MAX_GAIN)


def score(items: list[dict], outputs) -> tuple[float, float, float]:
    p, s, pin = [], [], []
    for it, out in zip(items, outputs):
        p.append(ev.psnr(it["centre"], out))
        s.append(ev.ssim(it["centre"], out))
        pin.append(ev.psnr(it["centre"], out, it["in_focus"]))
    return float(np.mean(p)), float(np.mean(s)), float(np.nanmean(pin))


def with_gains(it: dict, gain_map: np.ndarray) -> np.ndarray:
    """it's input plus Σ_k gain_map[..., k] · high-pass_k, clipped to [0, 1]."""
    out = it["input"] + sum(gain_map[..., k : k + 1] * it["high"][k] for k in range(gain_map.shape[-1]))
    return np.clip(out, 0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synthetic", type=positive_int, default=8, help="synthetic test scenes (default 8)")
    p.add_argument("--scene-size", type=int, default=192)
    p.add_argument("--g1", default="deblur", help="G1 to score alongside (registry name or file)")
    p.add_argument("--cache-dir", type=Path, default=ROOT / data.DEFAULT_CACHE_DIR)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from scipy import ndimage

    t0 = time.perf_counter()
    g1 = ev.load_checked(args.g1, "--g1", "deblur")
    items = []
    for sc in ev.synthetic_scenes(args.synthetic, args.scene_size, args.cache_dir):
        for k in range(sc.stack.shape[0]):
            x = sc.stack[k]
            defocus = data.defocus_slices(sc.disparity, float(sc.slopes[k]), sc.step)
            focus = data.focus_map(x)[..., 0]
            items.append({
                "input": x, "centre": sc.centre, "high": high_passes(x), "g1": ev.run_deblur(g1, x),
                "in_focus": data.in_focus_mask(sc.disparity, float(sc.slopes[k]), sc.step),
                "defocus_bin": np.minimum(np.floor(defocus), DEFOCUS_BINS - 1).astype(int),
                "sml_bin": np.clip(((focus + 1) / 2 * SML_BINS).astype(int), 0, SML_BINS - 1),
            })  # fmt: skip
    unsharp = ev.classical_methods()["unsharp"]  # as the quality bar scores it
    rows = [
        ("identity (input slice)", score(items, [it["input"] for it in items])),
        ("unsharp (registry defaults)", score(items, [unsharp(it["input"]) for it in items])),
        (f"G1 ({args.g1})", score(items, [it["g1"] for it in items])),
    ]  # fmt: skip
    by_defocus = fit_gains(items, "defocus_bin", DEFOCUS_BINS)
    for blur in (0, 4):
        maps = [by_defocus[it["defocus_bin"]] for it in items]
        if blur:
            maps = [ndimage.gaussian_filter(m, (blur, blur, 0)) for m in maps]
        label = "gains per true-defocus bin (oracle)" + (f", gain maps blurred σ = {blur} px" if blur else "")
        rows.append((label, score(items, [with_gains(it, m) for it, m in zip(items, maps)])))
    by_sml = fit_gains(items, "sml_bin", SML_BINS)
    rows.append(("gains per SML-channel bin", score(items, [with_gains(it, by_sml[it["sml_bin"]]) for it in items])))

    print(f"synthetic test ({args.synthetic} scenes, {args.scene_size}²), {len(items)} slices; G1's form, σ = "
          f"{', '.join(f'{s:g}' for s in DEBLUR_DETAIL_SIGMAS)} px, gains within ±{MAX_GAIN:g}; PSNR in dB")  # fmt: skip
    for name, (psnr, ssim, pin) in rows:
        print(f"  {name:64s} PSNR {psnr:6.2f}  SSIM {ssim:.4f}  in-focus {pin:6.2f}")
    print("  gains per true-defocus bin (slices: σ = 1 px, 2 px):")
    for b, g in enumerate(by_defocus):
        print(f"    {b:>2d}{'+' if b == DEFOCUS_BINS - 1 else ' '}  {g[0]:+.2f} {g[1]:+.2f}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    run_script(main)
