"""Issue-3 quality bar for the shipped weights, on synthetic test scenes and the real HCI scene.

    python benchmarks/bench_quality.py [--g1 deblur] [--g2 refocus] [--synthetic 8] [--hci PATH]

Checks, each printed as PASS / MISS with the margin in dB:

* deblur: G1's PSNR and SSIM against the centre view beat the identity (the input slice) and unsharp
  masking; PSNR on in-focus and out-of-focus pixels is printed alongside (in-focus pixels must survive);
* refocus, δ ∈ {−9, −5, +5, +9}: G2 fed G1's radiance (the plugin's pipeline) and G2 fed the true
  radiance beat the identity and blur-and-compare fed the same radiance (PSNR and SSIM).

Data: synthetic test scenes (seeds never trained on) and ``../shared/data/hci_antinous`` with the paper's
slice window and at half resolution (skipped when absent). Models load by registry name, weights file or
training checkpoint (see ``training/evaluate.py``). Exit status 0 whether or not the bar is met: this is a
report, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import count, positive_int, run_script  # noqa: E402
from training import evaluate as ev  # noqa: E402
from napari_refocusgan.core.errors import RefocusError  # noqa: E402

FOUR = "{-9,-5,+5,+9}"


def _check(label: str, ours: float, other: float, other_name: str, unit: str = " dB") -> bool:
    """PSNR to 3 decimals (dB); SSIM (``unit`` "") to 4, so that a miss never prints as a tie."""
    ok = ours > other
    margin = ours - other
    digits = 3 if unit else 4
    print(f"  {'PASS' if ok else 'MISS'}  {label}: {ours:.{digits}f} vs {other_name} {other:.{digits}f} "
          f"({margin:+.{digits}f}{unit})")  # fmt: skip
    return ok


def run(args) -> int:
    g1 = ev.load_checked(args.g1, "--g1", "deblur", focus_channel=True)
    g2 = ev.load_checked(args.g2, "--g2", "refocus", radiance=True)
    if FOUR not in ev.model_delta_configs(g2):
        raise RefocusError(f"--g2 {args.g2} takes {ev.delta_label(g2)}; the quality bar scores δ ∈ {FOUR}: pass a G2 "
                           "trained on them (continuous δ over −9…+9, or one-hot with those four)")  # fmt: skip
    datasets = []
    if args.synthetic:
        datasets.append((f"synthetic test ({args.synthetic} scenes, {args.scene_size}²)",
                         ev.synthetic_scenes(args.synthetic, args.scene_size, args.cache_dir)))  # fmt: skip
    if (args.hci / "input_Cam000.png").exists():
        for variant in ("paper", "half"):
            scene = ev.hci_scene(args.hci, variant)
            datasets.append((scene.name, [scene]))
    else:
        print(f"note: no HCI scene at {args.hci}; real-data checks skipped")
    passed = total = 0
    for name, scenes in datasets:
        t0 = time.perf_counter()
        methods = ev.deblur_methods(g1, classical=False, reference=False)
        methods["unsharp"] = lambda sc, k: ev.classical_methods()["unsharp"](sc.stack[k])
        rows = {r.method: r for r in ev.deblur_rows(scenes, methods, name)}
        ident, usm, ours = rows["identity (input slice)"], rows["unsharp"], rows["G1 with SML channel"]
        print(f"\n{name}: deblur (G1) vs centre view")
        for r in (ident, usm, ours):
            print(f"  {r.method:28s} PSNR {r.psnr:6.2f}  SSIM {r.ssim:.4f}  in-focus {r.psnr_in_focus:6.2f}  "
                  f"out-of-focus {r.psnr_out_of_focus:6.2f}")  # fmt: skip
        checks = [
            _check("G1 PSNR > identity", ours.psnr, ident.psnr, "identity"),
            _check("G1 PSNR > unsharp", ours.psnr, usm.psnr, "unsharp"),
            _check("G1 SSIM > identity", ours.ssim, ident.ssim, "identity", ""),
            _check("G1 SSIM > unsharp", ours.ssim, usm.ssim, "unsharp", ""),
        ]
        g1_radiance = methods["G1 with SML channel"]
        rmethods = ev.refocus_methods([g2], None, g1_radiance)
        rmethods = {k: (fn, [FOUR]) for k, (fn, configs) in rmethods.items() if FOUR in configs}
        rrows = {r.method: r for r in ev.refocus_rows(scenes, rmethods, name) if r.deltas == FOUR}
        print(f"{name}: refocus δ ∈ {FOUR} vs slice i+δ")
        width = max(len(method) for method in rrows)
        for r in rrows.values():
            print(f"  {r.method:{width}s} PSNR {r.psnr:6.2f}  SSIM {r.ssim:.4f}  gain {r.gain_db:+.2f} dB")
        ident_r = rrows["identity (input slice)"]
        true_key, g1_key = ev.g2_method_names(g2)
        # each G2 against blur-and-compare fed the same radiance
        for key, bc_key in ((g1_key, "blur-and-compare (G1 radiance)"), (true_key, "blur-and-compare (true radiance)")):
            r, bc = rrows[key], rrows[bc_key]
            short = "G2+G1 radiance" if key == g1_key else "G2+true radiance"
            checks += [
                _check(f"{short} PSNR > identity", r.psnr, ident_r.psnr, "identity"),
                _check(f"{short} PSNR > blur-and-compare", r.psnr, bc.psnr, "blur-and-compare"),
                _check(f"{short} SSIM > identity", r.ssim, ident_r.ssim, "identity", ""),
                _check(f"{short} SSIM > blur-and-compare", r.ssim, bc.ssim, "blur-and-compare", ""),
            ]
        passed += sum(checks)
        total += len(checks)
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    print(f"\nquality bar: {passed}/{total} checks pass")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--g1", default="deblur", help="G1: registry name/role, weights file or checkpoint")
    p.add_argument("--g2", default="refocus", help="G2: registry name/role, weights file or checkpoint")
    p.add_argument("--synthetic", type=count, default=8, help="synthetic test scenes (default 8)")
    p.add_argument("--scene-size", type=int, default=192)
    p.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "cache")
    p.add_argument("--hci", type=Path, default=ev.DEFAULT_HCI)
    p.add_argument("--threads", type=positive_int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with torch.no_grad():
        return run(args)


if __name__ == "__main__":
    run_script(main)
