"""``python -m training {train,evaluate,export}``: train RefocusGAN's generators, evaluate, export weights.

Examples::

    python -m training train deblur --config cpu --out runs/g1
    python -m training train refocus --config cpu --radiance true --out runs/g2
    python -m training train deblur --config cpu --out runs/g1 --resume      # after Ctrl-C / SIGTERM
    torchrun --nproc_per_node 2 -m training train deblur --config paper --out runs/g1p
    python -m training export runs/g1/last.pt -o deblur.safetensors --name deblur-cpu --registry
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from napari_refocusgan.core.allocator import retain_freed_memory
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.weights import read_config

from .configs import PERCEPTUAL_CHOICES, PRESETS, REFOCUS_DELTAS, TASKS, TrainConfig, get_config, radiance_source

PROG = "python -m training"


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _radiance(text: str) -> str:
    kind, path = radiance_source(text)
    if kind == "true" or (kind is not None and path):
        return text
    raise argparse.ArgumentTypeError(
        "expected 'true', 'g1:W' or 'mix:W' (W: an exported G1 .safetensors or a registered name such as deblur-cpu)"
    )


# CLI option → TrainConfig field, for the plain overrides
_OVERRIDES = [
    ("--steps", int, "total generator steps (overrides the config's epochs)"),
    ("--epochs", int, "epochs over the training set (when --steps is not given)"),
    ("--crop", int, "training crop size in pixels (multiple of 4)"),
    ("--batch-size", int, "items per step and process"),
    ("--ngf", int, "generator width (paper 64)"),
    ("--n-blocks", int, "generator residual blocks (paper 9)"),
    ("--ndf", int, "critic width (paper 64)"),
    ("--critic-steps", int, "critic steps per generator step (DeblurGAN 5)"),
    ("--adv-weight", float, "weight of the adversarial term (paper 1; 0 = no critic)"),
    ("--perceptual-weight", float, "weight of the content term (paper 100)"),
    ("--pixel-weight", float, "weight of an extra pixel MSE term (DeblurGAN-v2 used 0.5)"),
    ("--ssim-weight", float, "weight of an extra 1 − SSIM term (default 0)"),
    ("--in-focus-weight", float, "deblur: weight of an extra squared-error term on the pixels already in focus "
                                 "(ground truth; default 0)"),
    ("--lr", float, "Adam learning rate (paper 1e-4)"),
    ("--scene-size", int, "synthetic scene size in pixels"),
    ("--train-scenes", int, "number of training scenes"),
    ("--clean-prob", float, "share of training inputs left clean (no sensor noise or JPEG; default 0)"),
    ("--true-radiance-share", float, "with --radiance mix:PATH, share of items given the true radiance (default "
                                     "0.5; the rest get G1's)"),
    ("--far-background", float, "share of training scenes whose background lies 8–35 slices beyond the stack "
                                "(default 0)"),
    ("--val-scenes", int, "number of validation scenes"),
    ("--cache-dir", str, "folder of rendered training scenes, reused across runs (default runs/cache)"),
    ("--val-size", int, "validation items scored every --val-every steps"),
    ("--val-every", int, "steps between validations"),
    ("--ckpt-every", int, "steps between checkpoints"),
    ("--log-every", int, "steps between log rows"),
    ("--threads", int, "torch CPU threads per process"),
    ("--seed", int, "random seed"),
]


# options that only one task reads
_TASK_OPTIONS = {"radiance": "refocus", "refocus_deltas": "refocus", "single_stage": "refocus",
                 "true_radiance_share": "refocus", "no_sml": "deblur"}  # fmt: skip


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train G1 (deblur) or G2 (refocus)", description="Train a generator.")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--config", choices=sorted(PRESETS), help="preset (default: cpu; --resume keeps the run's)")
    p.add_argument("--out", required=True, type=Path, help="run folder: last.pt, log.csv")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out where it stopped, with its saved settings (options given "
                        "here override them, e.g. a larger --steps; the learning rate then follows the new --lr "
                        "and --steps from the step reached). A run that already did all its --steps is left "
                        "as it is (exit 0); a --steps below the steps done is an error")  # fmt: skip
    p.add_argument("--data", nargs="+", action="extend", dest="data_paths", metavar="PATH",
                   help="training data (default: synthetic scenes)")  # fmt: skip
    p.add_argument("--perceptual", choices=PERCEPTUAL_CHOICES,
                   help="content loss: vgg19 (paper; needs ImageNet weights), l1, l2 or none")  # fmt: skip
    p.add_argument("--vgg-weights", type=Path, help="VGG19 weights (.pth or .safetensors) for --perceptual vgg19")
    p.add_argument("--refocus-deltas", choices=list(REFOCUS_DELTAS),
                   help="δ set: 8 (δ=+8), 4 ({−9,−5,+5,+9}), 19 (−9..+9), continuous")  # fmt: skip
    p.add_argument("--single-stage", action="store_const", const=True, help="G2 without the radiance input")
    p.add_argument("--radiance", type=_radiance,
                   help="G2's radiance input: true (centre view), g1:W (G1's radiance, as at inference; W an "
                        "exported G1 .safetensors or a registered name) or mix:W (either, at random per item)")  # fmt: skip
    p.add_argument("--no-sml", action="store_const", const=True, help="G1 without the SML focus channel")
    p.add_argument("--init-weights", type=Path,
                   help="start the generator from these exported weights (.safetensors) and fine-tune; output "
                        "heads the file lacks start as the identity")  # fmt: skip
    p.add_argument("--channels-last", type=_bool, metavar="BOOL", help="channels_last memory format")
    p.add_argument("--bf16", type=_bool, metavar="BOOL", help="bf16 autocast")
    p.add_argument("--compile", type=_bool, metavar="BOOL", help="torch.compile the generator")
    p.add_argument("--critic-sees-delta", type=_bool, metavar="BOOL", help="give the critic δ as a channel")
    for flag, kind, text in _OVERRIDES:
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _refuse_radiance_options_without_radiance(single_stage: bool | None, overrides: dict) -> None:
    """A single-stage G2 has no radiance input: its radiance options would only be recorded in its card."""
    if not single_stage:
        return
    for name in ("radiance", "true_radiance_share"):
        if overrides[name] is not None:
            raise RefocusError(f"--{name.replace('_', '-')} has no use with --single-stage (a G2 without the "
                               "radiance input)")  # fmt: skip


def _config_from_args(args) -> TrainConfig:
    from .train import CHECKPOINT_NAME, load_checkpoint

    overrides = {
        name: getattr(args, name, None)
        for name in ("data_paths", "perceptual", "refocus_deltas", "single_stage", "radiance", "no_sml",
                     "channels_last", "bf16", "compile", "critic_sees_delta")  # fmt: skip
    }
    overrides["vgg_weights"] = str(args.vgg_weights) if args.vgg_weights else None
    overrides["init_weights"] = str(args.init_weights) if args.init_weights else None
    for flag, _, _ in _OVERRIDES:
        name = flag[2:].replace("-", "_")
        overrides[name] = getattr(args, name)
    if overrides["steps"] is not None and not args.resume:
        overrides["epochs"] = None
    for name, task in _TASK_OPTIONS.items():  # silently ignored by the other task otherwise
        if overrides[name] is not None and args.task != task:
            raise RefocusError(f"--{name.replace('_', '-')} applies to {task} only, not to {args.task}")
    if args.resume:
        # the run's own settings, with only what this command line changes
        saved = TrainConfig.from_dict(load_checkpoint(args.out / CHECKPOINT_NAME)["config"])
        if saved.task != args.task:
            raise RefocusError(f"{args.out} trains {saved.task}, not {args.task}")
        if args.config is not None and args.config != saved.name:
            raise RefocusError(f"--config {args.config}: the run in {args.out} was made with {saved.name!r}, which "
                               "--resume keeps; give its options (e.g. --steps) to change them")  # fmt: skip
        fields = {**saved.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
        _refuse_radiance_options_without_radiance(fields["single_stage"], overrides)
        if args.epochs is not None and args.steps is None:
            fields["steps"] = None  # the run's steps would win over the --epochs asked for here
        del fields["name"], fields["task"]
        return get_config(saved.name, saved.task, **fields)
    _refuse_radiance_options_without_radiance(overrides["single_stage"], overrides)
    cfg = get_config(args.config or "cpu", args.task, **overrides)
    kind, g1_path = radiance_source(cfg.radiance)
    if kind != "true":
        try:  # a G1 file, or a registered name (as --init-weights and evaluate --g1 take); its header only
            read_config(g1_path, role="deblur")
        except RefocusError as exc:
            raise RefocusError(f"--radiance {cfg.radiance}: {exc}") from exc
    return cfg


def _cmd_train(args) -> int:
    from .train import train

    cfg = _config_from_args(args)
    if args.perceptual is None and cfg.perceptual != "vgg19" and not args.resume:
        print(f"note: config {cfg.name!r} trains with a {cfg.perceptual} content loss, not the paper's VGG19 "
              "perceptual loss (its ImageNet weights cannot be downloaded here); pass --perceptual vgg19 "
              "--vgg-weights FILE for the paper's loss. The choice is recorded in the model card.",
              file=sys.stderr)  # fmt: skip
    train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    return 0  # a signal also ends cleanly, with a checkpoint to --resume from


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint's generator as plugin weights")
    p.add_argument("checkpoint", type=Path, help="a run's last.pt (or the run folder)")
    p.add_argument("-o", "--output", required=True, help="weights file (.safetensors)")  # str: keeps a trailing /
    p.add_argument("--name", help="name in the weights registry (default: the file's stem)")
    p.add_argument("--registry", action="store_true", help="add/update the entry in the plugin's registry")
    p.add_argument("--metric", action="append", default=[], type=_metric, metavar="NAME=VALUE",
                   help="a measured result for the registry entry, e.g. psnr_gain_db_synthetic=0.9 (repeatable)")  # fmt: skip
    p.set_defaults(func=_cmd_export)


def _metric(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (name.strip() and math.isfinite(number)):  # NaN/inf would not be valid JSON in the registry
        raise argparse.ArgumentTypeError(f"--metric must look like NAME=NUMBER, got {text!r}")
    return name.strip(), number


def _cmd_export(args) -> int:
    from .export import export_checkpoint

    if args.metric and not args.registry:
        raise RefocusError("--metric values go into the registry entry: add --registry")
    out = export_checkpoint(args.checkpoint, args.output, name=args.name, registry=args.registry,
                            metrics=dict(args.metric))  # fmt: skip
    print(out)
    return 0


def _add_evaluate(sub) -> None:
    # listed for --help only: main() hands `evaluate ...` to training.evaluate.main unparsed
    sub.add_parser("evaluate", help="the paper's tables (python -m training evaluate --help)", add_help=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Train, evaluate and export RefocusGAN's generators.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    retain_freed_memory()  # this process is ours: see napari_refocusgan.core.allocator
    if argv[:1] == ["evaluate"]:  # its own parser sees every option, --help included
        from . import evaluate

        return int(evaluate.main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RefocusError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
