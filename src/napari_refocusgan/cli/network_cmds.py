"""Commands of the learned pipeline: deblur (G1), refocus (G2), models (the shipped weights)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ..core.errors import RefocusError
from ..core.imaging import TIFF_SUFFIXES, check_output_path, input_full_scale, read_image, write_image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deblur", help="all-in-focus radiance of an image with the deblurring network (G1)")
    p.add_argument("image", help="input image (PNG, JPEG, TIFF; gray, RGB, RGBA or a TIFF stack)")
    p.add_argument("-o", "--out", required=True, help="output image (.png/.tif/.jpg); float input → use .tif")
    p.add_argument("--weights", help="G1 weights: a .safetensors file or a registered name (default: shipped)")
    add_run_arguments(p)
    p.set_defaults(func=cmd_deblur)

    p = sub.add_parser("refocus", help="refocus an image by δ slices with the refocusing network (G2)")
    p.add_argument("image", help="input image (PNG, JPEG, TIFF; gray, RGB, RGBA or a TIFF stack)")
    p.add_argument(
        "--delta", required=True, type=float, help="refocus by this many slices (+ = farther), e.g. --delta=-3"
    )
    p.add_argument("-o", "--out", required=True, help="output image (.png/.tif/.jpg)")
    p.add_argument(
        "--radiance", help="the image's deblurred radiance (output of 'deblur'); computed with G1 when absent"
    )
    p.add_argument("--weights", help="G2 weights: a .safetensors file or a registered name (default: shipped)")
    p.add_argument("--deblur-weights", help="G1 weights for the radiance when --radiance is absent (default: shipped)")
    add_run_arguments(p)
    p.set_defaults(func=cmd_refocus)

    p = sub.add_parser("models", help="list the shipped network weights, where they are, and check their hashes")
    p.set_defaults(func=cmd_models)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda → mps → cpu), cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--tile", type=int, default=0, help="tile side in pixels for large images (default 0 = auto)")
    p.add_argument(
        "--margin",
        type=int,
        default=None,
        help="context around each tile in px, multiple of 4 (default: receptive field)",
    )
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"),
                   help="arithmetic: auto = fp16 autocast on CUDA, fp32 elsewhere (bf16 only where the hardware has it: "
                        "on CPUs without AVX-512 and GPUs before Ampere it is many times slower)")  # fmt: skip


def _read_input(path: str) -> np.ndarray:
    image = read_image(path)
    if image.dtype.kind not in "uif":  # the core names what it takes of these
        raise RefocusError(f"{path} has pixel type {image.dtype}; expected 8/16-bit or float.")
    return image


def _check_output(
    path: str, image: np.ndarray, inputs: tuple[str | None, ...], radiance: np.ndarray | None = None
) -> Path:
    """The output path, checked before any work (the result has the input's dtype and shape, and the scale it
    shares with ``radiance``)."""
    scale = input_full_scale(image, name=inputs[0], radiance=radiance, radiance_name=inputs[-1] or "radiance")
    out = check_output_path(path, dtype=image.dtype, shape=image.shape, inputs=inputs, full_scale=scale)
    if image.dtype.kind == "f" and out.suffix.lower() not in TIFF_SUFFIXES:
        print(f"note: float input is written as 8-bit {out.suffix}; use .tif to keep float32", file=sys.stderr)
    return out


class _ProgressBar:
    """tqdm on a terminal (quiet otherwise), fed by the engine's progress(done, total) calls."""

    def __init__(self, label: str):
        self.label, self.bar = label, None

    def __call__(self, done: int, total: int) -> None:
        if total <= 1:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.label, unit="tile", disable=None, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_kwargs(args: argparse.Namespace, device) -> dict:
    return {"device": device, "tile": args.tile, "margin": args.margin, "precision": args.precision}


def cmd_deblur(args: argparse.Namespace) -> int:
    from ..core.inference import deblur, pick_device
    from ..core.weights import load_generator

    image = _read_input(args.image)
    out = _check_output(args.out, image, (args.image,))
    device = pick_device(args.device)
    model = load_generator(args.weights, device, role="deblur")
    bar = _ProgressBar("deblur")
    try:
        result = deblur(image, model, progress=bar, **_run_kwargs(args, device))
    finally:
        bar.close()
    write_image(out, result)
    print(f"wrote {out}: {result.shape} {result.dtype}, deblurred with {model.describe()} on {device}")
    return 0


def cmd_refocus(args: argparse.Namespace) -> int:
    from ..core.inference import check_delta, pick_device, refocus
    from ..core.weights import load_generator

    image = _read_input(args.image)
    given = _read_input(args.radiance) if args.radiance else None
    out = _check_output(args.out, image, (args.image, args.radiance), given)
    device = pick_device(args.device)
    model = load_generator(args.weights, device, role="refocus")
    delta = check_delta(model, args.delta)  # before any slow work
    radiance = deblur_model = None
    if model.config.in_channels == 6:
        if args.radiance:
            radiance = given
        else:
            deblur_model = load_generator(args.deblur_weights, device, role="deblur")
    bar = _ProgressBar("refocus")
    try:
        result = refocus(image, delta, model, radiance=radiance, deblur_model=deblur_model, progress=bar,
                         **_run_kwargs(args, device))  # fmt: skip
    finally:
        bar.close()
    write_image(out, result)
    via = "given radiance" if radiance is not None else (deblur_model.describe() if deblur_model else "no radiance")
    print(f"wrote {out}: {result.shape} {result.dtype}, δ = {delta:+g} with {model.describe()} ({via}) on {device}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..core.inference import available_devices
    from ..core.weights import REGISTRY_PATH, file_sha256, list_models

    entries = list_models()
    print(f"registry: {REGISTRY_PATH}")
    print(f"devices here: {', '.join(available_devices())}")
    if not entries:
        print("no shipped weights in this installation; pass --weights FILE.safetensors to deblur/refocus.")
        return 0
    bad = 0
    for e in entries:
        if not e.path.exists():
            state, bad = "MISSING", bad + 1
        elif file_sha256(e.path) != e.sha256:
            state, bad = "HASH MISMATCH", bad + 1
        else:
            state = f"ok, {e.path.stat().st_size / 1e6:.1f} MB"
        cfg = e.config
        deltas = ""
        if cfg.delta_range is not None:
            lo, hi = cfg.delta_range
            deltas = f", δ {cfg.delta_mode} {lo:+g}…{hi:+g}" if cfg.delta_mode == "continuous" else (
                f", δ ∈ {{{', '.join(f'{d:+g}' for d in cfg.deltas)}}}")  # fmt: skip
        default = " (default)" if e.default else ""
        print(f"\n{e.name}{default}: {e.role}, ngf {cfg.ngf}, {cfg.n_blocks} blocks{deltas}")
        print(f"  file: {e.path} [{state}]")
        if e.training:
            print("  training: " + ", ".join(f"{k}={v}" for k, v in e.training.items()))
        if e.metrics:
            print("  metrics: " + ", ".join(f"{k}={v}" for k, v in e.metrics.items()))
    if bad:
        raise RefocusError(f"{bad} shipped weight file(s) missing or corrupt; reinstall the package.")
    return 0
