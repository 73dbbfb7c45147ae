"""Commands of the non-learning pipeline: focal-stack, sml, demo."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..core.errors import RefocusError
from ..core.focalstack import StackConfig, centre_view, focal_stack, parse_keep
from ..core.focus import SMLParams, sml
from ..core.imaging import check_output_path, from_float, read_image, write_image

PAPER_KEEP = StackConfig().keep  # the paper's window of its 30 slices, the default


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("focal-stack", help="light field (folder, ESLF PNG or .lfp) → float32 TIFF (S, H, W, C)")
    p.add_argument("path", help="light-field file or view folder")
    p.add_argument("-o", "--out", required=True, help="output .tif")
    p.add_argument("--views", type=int, default=None,
                   help="use the central N×N views (default 7, or the whole grid when it is smaller)")
    p.add_argument("--slices", type=int, default=30, help="number of slopes S (default 30)")
    p.add_argument("--s-max", type=float, default=1.5, help="largest slope in px per view (default 1.5)")
    p.add_argument("--keep", help="1-based slice window FIRST:LAST, 'all' or 'auto' (default 6:15, the paper's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    p.set_defaults(func=cmd_focal_stack)

    p = sub.add_parser("sml", help="Sum-of-Modified-Laplacian focus map of an image or stack → float32 TIFF")
    p.add_argument("image")
    p.add_argument("-o", "--out", required=True)
    add_sml_arguments(p)
    p.add_argument("--gray", action="store_true", help="gray slices (S, H, W) even if the last axis is 3 or 4 long")
    p.set_defaults(func=cmd_sml)

    p = sub.add_parser("demo", help="run the whole pipeline on the embedded synthetic sample")
    p.add_argument("--out", default="demo", help="output folder (default demo/)")
    p.add_argument("--device", default="auto", help="auto (cuda → mps → cpu), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=cmd_demo)


def add_sml_arguments(p: argparse.ArgumentParser) -> None:
    d = SMLParams()
    p.add_argument("--step", type=int, default=d.step, help=f"Laplacian step in px (default {d.step})")
    p.add_argument("--window", type=int, default=d.window, help=f"odd window side (default {d.window})")
    p.add_argument("--threshold", type=float, default=d.threshold, help=f"noise threshold (default {d.threshold})")


def sml_params(args: argparse.Namespace) -> SMLParams:
    return SMLParams(step=args.step, window=args.window, threshold=args.threshold)


def stack_config(args: argparse.Namespace) -> tuple[StackConfig, bool]:
    views = StackConfig().views if args.views is None else args.views
    if args.keep is None and args.slices < PAPER_KEEP[1]:
        StackConfig(views, args.slices, args.s_max, None).check()  # their own errors first (slices ≥ 2, …)
        raise RefocusError(f"the default --keep {PAPER_KEEP[0]}:{PAPER_KEEP[1]} (the paper's window of its 30 slices) "
                           f"does not fit --slices {args.slices}: pass --keep auto, all or a window FIRST:LAST.")  # fmt: skip
    keep = PAPER_KEEP if args.keep is None else parse_keep(args.keep)
    auto = keep == "auto"
    cfg = StackConfig(views, args.slices, args.s_max, PAPER_KEEP if auto else keep)
    if auto and cfg.slices < PAPER_KEEP[1]:  # the paper's window does not fit: keep its length when S allows it
        length = PAPER_KEEP[1] - PAPER_KEEP[0] + 1
        cfg = StackConfig(views, args.slices, args.s_max, (1, min(length, cfg.slices)))
    cfg.check()
    return cfg, auto


def cmd_focal_stack(args: argparse.Namespace) -> int:
    from ..core.inference import pick_device
    from ..core.lightfield import read_lightfield

    cfg, auto = stack_config(args)  # bad options fail before any reading
    out = check_output_path(args.out, inputs=(args.path,), float_data=True)
    folder = Path(args.path)
    if folder.is_dir() and out.resolve().parent == folder.resolve():
        raise RefocusError(
            f"output {out} is inside the light-field folder {folder}: there it could replace a view or be read as "
            "one next time. Write it elsewhere."
        )
    device = pick_device(args.device)
    lf = read_lightfield(args.path, views=cfg.views)  # only the central views: bounds ESLF memory
    if lf.views is not None:
        if args.views is None:  # as the napari reader does: a smaller grid is used whole
            cfg = cfg.within(lf.views.shape[:2])
        elif cfg.views > min(lf.views.shape[:2]):  # the reader kept at most n×n: name the file's whole grid
            rows, cols = lf.metadata.get("grid_in_file", lf.views.shape[:2])
            raise RefocusError(f"--views {cfg.views}: {args.path} has a {rows}×{cols} grid of views; the central "
                               f"n×n must fit in it (at most --views {min(rows, cols)}).")  # fmt: skip
        stack, slopes, cfg = focal_stack(lf.views, cfg, keep_auto=auto, device=device)
        write_image(out, stack.astype(np.float32))
        print(f"wrote {out}: {stack.shape[0]} slices {cfg.keep or 'all'} of {cfg.slices}, "
              f"slopes {slopes[0]:+.3f}..{slopes[-1]:+.3f} px/view, shape {stack.shape}")
    elif lf.focal_stack is not None:
        write_image(out, lf.focal_stack.astype(np.float32))
        print(f"wrote {out}: the file's own {lf.source} focal stack, {lf.focal_stack.shape[0]} slices "
              "(shift-and-sum options do not apply)")
    else:
        raise RefocusError(f"{args.path} holds neither views nor a focal stack ({lf.source}).")
    return 0


def cmd_sml(args: argparse.Namespace) -> int:
    image = read_image(args.image)
    out = check_output_path(args.out, inputs=(args.image,), float_data=True)
    m = sml(image, sml_params(args), rgb=False if args.gray else None)
    write_image(out, m)
    print(f"wrote {out}: SML {m.shape}, range {m.min():.4g}..{m.max():.4g}")
    return 0


# The demo refocuses the middle slice of the 10-slice stack to both ends (δ counts slices).
DEMO_INPUT_SLICE = 4
DEMO_DELTAS = (-4, 5)


def cmd_demo(args: argparse.Namespace) -> int:
    from skimage.metrics import peak_signal_noise_ratio as psnr

    from ..core.inference import deblur, pick_device, refocus
    from ..core.synthetic import sample_scene
    from ..core.weights import load_generator

    device = pick_device(args.device)  # a bad device fails before anything is written
    if not args.out.strip():
        raise RefocusError("--out is empty; name the folder for the demo's files (default demo/).")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise RefocusError(f"--out {out} is a file; the demo writes several files into a folder.")
    out.mkdir(parents=True, exist_ok=True)
    scene = sample_scene()
    stack, slopes, _ = focal_stack(scene.views)
    centre = np.clip(centre_view(scene.views), 0, 1).astype(np.float32)
    written = [
        write_image(out / "focal_stack.tif", stack),
        write_image(out / "centre_view.png", from_float(centre, np.uint8)),
        write_image(out / "disparity.tif", scene.disparity),
        write_image(out / "sml.tif", sml(stack)),
    ]
    for path in written:
        print(f"wrote {path}")

    g1 = load_generator(None, device, role="deblur")
    g2 = load_generator(None, device, role="refocus")
    k = DEMO_INPUT_SLICE
    image = np.clip(stack[k], 0, 1)
    print(f"input: slice {k + 1} of {len(stack)} (slope {slopes[k]:+.3f} px/view); PSNR against the truth, "
          "identity = the input itself")  # fmt: skip
    print(f"wrote {write_image(out / 'input_slice.png', from_float(image, np.uint8))}")
    radiance = deblur(image, g1, device=device)
    path = write_image(out / "radiance.png", from_float(radiance, np.uint8))
    print(f"wrote {path}: G1 {g1.name}, {psnr(centre, radiance, data_range=1):.2f} dB against the centre view "
          f"(identity {psnr(centre, image, data_range=1):.2f} dB)")  # fmt: skip
    for delta in DEMO_DELTAS:
        target = np.clip(stack[k + delta], 0, 1)
        result = refocus(image, delta, g2, radiance=radiance, device=device)
        path = write_image(out / f"refocus_delta{delta:+d}.png", from_float(result, np.uint8))
        print(f"wrote {path}: G2 {g2.name}, δ = {delta:+d}, {psnr(target, result, data_range=1):.2f} dB against "
              f"slice {k + delta + 1} (identity {psnr(target, image, data_range=1):.2f} dB)")  # fmt: skip
    return 0
