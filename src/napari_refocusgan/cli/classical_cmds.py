"""Commands of the classical baselines: classical, blur-compare, all-in-focus."""

from __future__ import annotations

import argparse

from ..core import blur_compare as bc
from ..core import classical
from ..core import focus_stacking as fs
from ..core.errors import RefocusError
from ..core.focus import FOCUS_MEASURES, SMLParams
from ..core.imaging import (
    check_output_path,
    image_slices,
    input_full_scale,
    read_image,
    store_slice,
    write_image,
)
from ..core.inference import pick_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classical",
        help="single-image classical sharpening baselines (sharpen, unsharp, CLAHE, CLAHE+sharpen, region-wise)",
    )
    p.add_argument("image")
    p.add_argument("-o", "--out", required=True, help="output image; 8/16-bit input keeps its dtype")
    p.add_argument("--method", required=True, choices=[m for m in classical.CLASSICAL_METHODS if m != "identity"])
    g = p.add_argument_group("sharpen (and clahe+sharpen)")
    g.add_argument(
        "--kernel-size", type=int, default=3, choices=classical.SHARPEN_SIZES, help="kernel side (default 3)"
    )
    g.add_argument(
        "--sharpen-amount",
        type=float,
        default=1.0,
        help="detail gain of the kernel; 9 with size 3 is the classic centre-9 kernel (default 1)",
    )
    g = p.add_argument_group("unsharp and regionwise")
    g.add_argument(
        "--radius", type=float, default=None, help="Gaussian radius in px (default 1 unsharp, 1.5 regionwise)"
    )
    g.add_argument("--amount", type=float, default=1.0, help="unsharp amount (default 1)")
    g.add_argument("--strong", type=float, default=2.0, help="regionwise amount where blurred (default 2)")
    g.add_argument("--weak", type=float, default=0.25, help="regionwise amount where sharp (default 0.25)")
    g.add_argument("--sml-window", type=int, default=SMLParams().window, help="regionwise SML window (default 9)")
    g = p.add_argument_group("clahe and clahe+sharpen")
    g.add_argument("--clip-limit", type=float, default=2.0, help="OpenCV-style clip limit, typically 2–4 (default 2)")
    g.add_argument("--tile-size", type=int, default=None, help="tile side in px (default 1/8 of the image)")
    p.set_defaults(func=cmd_classical)

    p = sub.add_parser("blur-compare", help="near↔far refocus by blur-and-compare with a radiance image (paper Fig. 4)")
    p.add_argument("image", help="wide-aperture input G^i")
    p.add_argument("--radiance", required=True, help="in-focus radiance image (G1 output or the centre view)")
    p.add_argument("-o", "--out", required=True, help="refocused image; 8/16-bit input keeps its dtype")
    p.add_argument(
        "--sigma-max",
        type=float,
        default=None,
        help="σ_max in σ' = σ_max − σ, px (default: 99th percentile of the estimated σ)",
    )
    p.add_argument("--sigma-map", default=None, help="also write the estimated defocus radius σ (float32 TIFF)")
    p.add_argument("--kernel", choices=bc.KERNELS, default="disk", help="blur kernel (default disk)")
    p.add_argument(
        "--radii",
        default=None,
        help="candidate radii START:STOP:STEP or R1,R2,… (default 0:4:0.25 disk, 0:2:0.125 gaussian)",
    )
    p.add_argument(
        "--patch", type=int, default=bc.DEFAULT_PATCH, help=f"odd comparison window (default {bc.DEFAULT_PATCH})"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    p.set_defaults(func=cmd_blur_compare)

    p = sub.add_parser("all-in-focus", help="focal stack (S, H, W[, C]) → all-in-focus image and depth-index map")
    p.add_argument("stack", help="focal stack TIFF")
    p.add_argument("-o", "--out", required=True, help="all-in-focus image; 8/16-bit input keeps its dtype")
    p.add_argument("--depth", default=None, help="also write the 0-based depth-index map (float32 TIFF)")
    p.add_argument(
        "--measures",
        default=",".join(fs.DEFAULT_MEASURES),
        help=f"comma-separated focus measures from {', '.join(FOCUS_MEASURES)} (default all)",
    )
    p.add_argument("--window", type=int, default=fs.DEFAULT_WINDOW, help=f"focus window (default {fs.DEFAULT_WINDOW})")
    p.add_argument(
        "--blend-sigma",
        type=float,
        default=fs.DEFAULT_BLEND_SIGMA,
        help=f"seam smoothing in px, 0 = hard argmax (default {fs.DEFAULT_BLEND_SIGMA})",
    )
    p.add_argument("--gray", action="store_true", help="the stack is gray (S, H, W) even if its last axis is 3 or 4")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    p.set_defaults(func=cmd_all_in_focus)


def cmd_classical(args: argparse.Namespace) -> int:
    raw = read_image(args.image)
    arr, slices, _, scale = image_slices(raw, None, args.image)  # the input's checks and scale, before the output's
    out_path = check_output_path(args.out, dtype=raw.dtype, shape=raw.shape, inputs=(args.image,),
                                 full_scale=1.0 if scale is None else scale)  # fmt: skip
    method = args.method
    if method == "sharpen":
        params = dict(size=args.kernel_size, amount=args.sharpen_amount)
    elif method == "unsharp":
        params = dict(radius=1.0 if args.radius is None else args.radius, amount=args.amount)
    elif method == "clahe":
        params = dict(clip_limit=args.clip_limit, tile_size=args.tile_size)
    elif method == "clahe+sharpen":
        params = dict(
            clip_limit=args.clip_limit, tile_size=args.tile_size, size=args.kernel_size, amount=args.sharpen_amount
        )
    else:  # regionwise
        params = dict(
            radius=1.5 if args.radius is None else args.radius,
            strong=args.strong,
            weak=args.weak,
            params=SMLParams(window=args.sml_window),
        )
    out = None
    for index in slices:  # a stack (…, H, W[, C]) slice by slice
        result = classical.apply_classical_image(arr[index], method, name=args.image, full_scale=scale, **params)
        out = store_slice(out, result, arr.shape, slices, index)
    path = write_image(out_path, out)
    print(f"wrote {path}: {method} {params}" + (f", {len(slices)} slices" if len(slices) > 1 else ""))
    return 0


def cmd_blur_compare(args: argparse.Namespace) -> int:
    raw, radiance = read_image(args.image), read_image(args.radiance)
    inputs = (args.image, args.radiance)
    scale = input_full_scale(raw, name=args.image, radiance=radiance, radiance_name=args.radiance)
    out_path = check_output_path(args.out, dtype=raw.dtype, shape=raw.shape, inputs=inputs, full_scale=scale)
    if args.sigma_map:
        check_output_path(args.sigma_map, inputs=(*inputs, out_path), float_data=True)
    radii = bc.parse_radii(args.radii) if args.radii is not None else None
    result = bc.blur_and_compare_image(
        raw,
        radiance,
        names=(args.image, args.radiance),
        sigma_max=args.sigma_max,
        radii=radii,
        patch=args.patch,
        kernel=args.kernel,
        device=pick_device(args.device),
    )
    path = write_image(out_path, store_slice(None, result.refocused, raw.shape, [()], ()))
    print(f"wrote {path}: σ_max {result.sigma_max:.3g} px, σ range {result.sigma.min():.3g}..{result.sigma.max():.3g}")
    if args.sigma_map:
        print(f"wrote {write_image(args.sigma_map, result.sigma)}: defocus radius σ (px)")
    return 0


def cmd_all_in_focus(args: argparse.Namespace) -> int:
    stack = read_image(args.stack)
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    if not measures:
        raise RefocusError("--measures is empty; name at least one focus measure.")
    fs.stack_layout(stack.shape, False if args.gray else None)  # before the output checks, which assume a stack
    out_path = check_output_path(
        args.out, dtype=fs.output_dtype(stack.dtype), shape=stack.shape[1:], inputs=(args.stack,),
        full_scale=input_full_scale(stack, name=args.stack),
    )  # fmt: skip
    if args.depth:
        check_output_path(args.depth, inputs=(args.stack, out_path), float_data=True)
    aif, depth = fs.all_in_focus_image(
        stack,
        measures=measures,
        window=args.window,
        blend_sigma=args.blend_sigma,
        rgb=False if args.gray else None,
        device=pick_device(args.device),
    )
    path = write_image(out_path, aif)
    print(f"wrote {path}: all-in-focus of {stack.shape[0]} slices, {aif.shape}")
    if args.depth:
        print(f"wrote {write_image(args.depth, depth)}: depth index 0..{stack.shape[0] - 1}")
    return 0
