"""Training throughput on the CPU: samples/s of one full training step (critic steps + generator step,
as ``training.train.Trainer.train_step`` runs it) for the ``cpu`` and ``paper`` configs at 128² and 256²
crops, for a plain eager float32 loop and the speed-ups (channels_last, bf16 autocast, torch.compile).

    python benchmarks/bench_training.py                       # everything (slow: the paper config is big)
    python benchmarks/bench_training.py --configs cpu --crops 128 --steps 4
    python benchmarks/bench_training.py --variants eager bf16+cl
    python benchmarks/bench_training.py --perceptual vgg19    # with the paper's VGG19 conv3_3 loss

Each figure is the fastest of ``--steps`` timed steps after warm-up (other processes on a shared machine
only ever make a step slower), with the variants interleaved step by step so that a change in load hits
them alike. Random tensors stand in for data: the data pipeline is not timed here. ImageNet weights cannot be
downloaded here, so ``--perceptual vgg19`` times VGG19 with random weights (the cost is the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _cli import positive_int, run_script  # noqa: E402
from training.configs import get_config  # noqa: E402
from training.train import Trainer  # noqa: E402

VARIANTS = {
    "eager": {},
    "channels_last": {"channels_last": True},
    "bf16": {"bf16": True},
    "bf16+cl": {"bf16": True, "channels_last": True},
    "compile": {"compile": True},
    "compile+bf16+cl": {"compile": True, "bf16": True, "channels_last": True},
}


def make_batch(trainer: Trainer, batch_size: int, crop: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch = {
        "input": torch.rand(batch_size, trainer.gen_cfg.in_channels, crop, crop, generator=g) * 2 - 1,
        "target": torch.rand(batch_size, 3, crop, crop, generator=g) * 2 - 1,
    }
    if trainer.gen_cfg.delta_mode != "none":
        batch["delta"] = torch.full((batch_size,), 3.0)
    return batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--crops", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--task", default="deblur", choices=["deblur", "refocus"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=positive_int, default=3, help="timed steps per variant (cpu config)")
    parser.add_argument("--paper-steps", type=positive_int, default=1, help="timed steps per variant (paper config)")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--perceptual", default="l1", choices=["l1", "vgg19"], help="content loss (default l1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temp:  # the random VGG19 file goes with it
        vgg_weights = _random_vgg19_file(Path(temp)) if args.perceptual == "vgg19" else None
        return _run(args, vgg_weights)


def _run(args, vgg_weights: str | None) -> int:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, task {args.task}, content loss {args.perceptual}")
    print(f"{'config':7s} {'crop':>5s} {'batch':>5s} {'variant':18s} {'s/step':>8s} {'samples/s':>10s} {'vs eager':>8s}")
    for name in args.configs:
        for crop in args.crops:
            base = get_config(name, args.task, crop=crop, scene_size=max(crop, 256), perceptual=args.perceptual,
                              vgg_weights=vgg_weights)  # fmt: skip
            torch._dynamo.reset()  # compile afresh for this size
            trainers, batches = {}, {}
            for v in args.variants:
                cfg = dataclasses.replace(base, **{"channels_last": False, "bf16": False, "compile": False, **VARIANTS[v]})
                torch.manual_seed(0)
                trainers[v] = Trainer(cfg, total_steps=10_000)
                batches[v] = make_batch(trainers[v], cfg.batch_size, crop)
                t0 = time.perf_counter()
                trainers[v].train_step(batches[v])  # warm-up (and compilation)
                trainers[v].train_step(batches[v])
                if "compile" in v:
                    print(f"  ({v}: warm-up incl. compilation {time.perf_counter() - t0:.0f} s)")
            best = {v: float("inf") for v in args.variants}
            for _ in range(args.paper_steps if name == "paper" else args.steps):
                for v in args.variants:
                    t0 = time.perf_counter()
                    trainers[v].train_step(batches[v])
                    best[v] = min(best[v], time.perf_counter() - t0)
            for v in args.variants:
                ratio = f"{best['eager'] / best[v]:7.2f}x" if "eager" in best else "       –"  # no eager run to compare
                print(f"{name:7s} {crop:5d} {base.batch_size:5d} {v:18s} {best[v]:8.2f} {base.batch_size / best[v]:10.2f} {ratio}")
            sys.stdout.flush()
    return 0


def _random_vgg19_file(folder: Path) -> str:
    """VGG19 conv1_1…conv3_3 with random weights in a safetensors file in ``folder`` (timing only)."""
    from safetensors.torch import save_file

    from training.losses import VGG19Conv33

    torch.manual_seed(0)
    state = {f"features.{k}": v.contiguous() for k, v in VGG19Conv33().features.state_dict().items()}
    path = folder / "vgg19_random.safetensors"
    save_file(state, str(path))
    return str(path)


if __name__ == "__main__":
    run_script(main)
