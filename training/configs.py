"""Training configurations, selectable by name (``--config paper|cpu|smoke``) and overridable from the CLI.

One :class:`TrainConfig` describes one run of one task (``deblur`` = G1, ``refocus`` = G2): the generator
size, the data (read by :mod:`training.data`), the losses and the optimiser. :func:`get_config` resolves a
named preset for a task and applies overrides; :meth:`TrainConfig.generator_config` turns it into the
plugin's :class:`~napari_refocusgan.core.networks.GeneratorConfig`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.networks import GeneratorConfig, deblur_config, refocus_config
from napari_refocusgan.core.weights import MAX_BLOCKS

Task = Literal["deblur", "refocus"]
TASKS: tuple[str, ...] = ("deblur", "refocus")
PERCEPTUAL_CHOICES: tuple[str, ...] = ("vgg19", "none", "l1", "l2")
# --refocus-deltas: the paper's three configurations (δ=+8; {−9,−5,+5,+9}; −9..+9) and continuous δ.
REFOCUS_DELTAS: dict[str, tuple[float, ...]] = {
    "8": (8.0,),
    "4": (-9.0, -5.0, 5.0, 9.0),
    "19": tuple(float(d) for d in range(-9, 10)),
    "continuous": tuple(float(d) for d in range(-9, 10)),
}


def radiance_source(text: str) -> tuple[str | None, str]:
    """A ``--radiance`` value → (kind, G1 weights path): ("true", ""), ("g1", PATH) or ("mix", PATH);
    kind None when the text is none of these."""
    if text == "true":
        return "true", ""
    kind, sep, path = text.partition(":")
    return (kind, path) if sep and kind in ("g1", "mix") else (None, "")


def check_share(name: str, value: float) -> float:
    """``value`` if it is a share (in [0, 1]), else a :class:`RefocusError` naming ``name``."""
    if not 0.0 <= value <= 1.0:
        raise RefocusError(f"{name} is a share, in [0, 1]; got {value}")
    return value


@dataclass
class TrainConfig:
    """Everything one training run needs. Fields left ``None`` take the task's default."""

    name: str = "custom"
    task: str = "deblur"

    # generator (None: the plugin's default size from deblur_config()/refocus_config())
    ngf: int | None = None
    n_blocks: int | None = None
    # critic (PatchGAN)
    ndf: int = 64
    critic_layers: int = 3  # stride-2 layers (ndf, 2ndf, 4ndf), then 8ndf at stride 1, then the 1-channel map
    # give the critic a constant δ channel (refocus with several δ): without it, it cannot tell which δ was asked
    critic_sees_delta: bool = False

    # data (read by training.data.build_dataset)
    crop: int = 256
    batch_size: int = 1
    scene_size: int = 256
    train_scenes: int = 2500
    val_scenes: int = 16
    refocus_deltas: str = "19"  # key of REFOCUS_DELTAS
    no_sml: bool = False  # G1 without the focus channel (Table 1 ablation)
    single_stage: bool = False  # G2 without the radiance input (Table 2 ablation)
    # G2's radiance input: "true" (centre view), "g1:PATH" (a G1's output, as at inference) or "mix:PATH"
    # (either, at random per item: G2 learns to use a sharp radiance and not to rely on one)
    radiance: str = "true"
    data_paths: list[str] = field(default_factory=list)
    # start the generator from exported weights (.safetensors) instead of a fresh initialisation; heads
    # the file lacks keep their usual (identity) start
    init_weights: str | None = None
    test_scenes: int = 16
    clean_prob: float = 0.0  # share of training inputs left without sensor noise and JPEG
    far_background: float = 0.0  # share of training scenes whose background lies far beyond the stack
    true_radiance_share: float = 0.5  # with --radiance mix:PATH, share of items given the true radiance
    cache_dir: str = "runs/cache"  # rendered scenes, reused across runs
    cache_workers: int | None = None  # processes rendering the cache (None: the data module's default)

    # length: steps wins over epochs when both are set
    epochs: int | None = None
    steps: int | None = None

    # losses
    critic_steps: int = 5
    gp_weight: float = 10.0
    adv_weight: float = 1.0
    perceptual: str = "vgg19"
    perceptual_weight: float = 100.0
    pixel_weight: float = 0.0  # DeblurGAN-v2 mixed 0.5·MSE into the content loss
    ssim_weight: float = 0.0  # weight of a 1 − SSIM term (the metric of the quality bar)
    # deblur: weight of a squared-error term on the pixels the ground truth says are already in focus. A
    # content loss over the whole crop barely sees them (their error is small), so sharpening can overshoot
    # there unpunished; the quality bar scores them apart.
    in_focus_weight: float = 0.0
    vgg_weights: str | None = None

    # optimiser: Adam, constant lr for the first half, then linear decay to 0
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999

    # speed
    channels_last: bool = False
    bf16: bool = False  # bf16 autocast (CPUs with AMX/AVX512-BF16, recent GPUs)
    compile: bool = False  # torch.compile the generator
    threads: int | None = None

    # bookkeeping
    seed: int = 0
    log_every: int = 10
    val_every: int = 500
    val_size: int = 4
    ckpt_every: int = 500

    def generator_config(self) -> GeneratorConfig:
        """The plugin's architecture description for this run."""
        size = {k: v for k, v in (("ngf", self.ngf), ("n_blocks", self.n_blocks)) if v is not None}
        if self.task == "deblur":
            if self.no_sml:
                return deblur_config(in_channels=3, focus_gate=False, **size)
            return deblur_config(**size)
        deltas = REFOCUS_DELTAS[self.refocus_deltas]
        mode = "continuous" if self.refocus_deltas == "continuous" else "onehot"
        return refocus_config(deltas=deltas, mode=mode, in_channels=3 if self.single_stage else 6, **size)

    @property
    def deltas(self) -> tuple[float, ...]:
        """The δ values (slices) trained on; empty for deblur."""
        return REFOCUS_DELTAS[self.refocus_deltas] if self.task == "refocus" else ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{k: v for k, v in d.items() if k in known})

    def validate(self) -> "TrainConfig":
        """Raise :class:`RefocusError` for settings that cannot train."""
        if self.task not in TASKS:
            raise RefocusError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.perceptual not in PERCEPTUAL_CHOICES:
            raise RefocusError(f"unknown perceptual loss {self.perceptual!r}; choose one of {', '.join(PERCEPTUAL_CHOICES)}")
        if self.refocus_deltas not in REFOCUS_DELTAS:
            raise RefocusError(f"unknown --refocus-deltas {self.refocus_deltas!r}; choose one of {', '.join(REFOCUS_DELTAS)}")
        if self.crop % 4 or self.crop < 16:
            raise RefocusError(f"crop must be a multiple of 4 and at least 16 pixels, got {self.crop}")
        if self.crop > self.scene_size:
            raise RefocusError(f"crop {self.crop} is larger than the scenes ({self.scene_size})")
        if radiance_source(self.radiance)[0] is None:
            raise RefocusError(f"--radiance must be 'true', 'g1:PATH' or 'mix:PATH', got {self.radiance!r}")
        for name in ("batch_size", "critic_steps", "log_every", "val_every", "ckpt_every"):
            if getattr(self, name) < 1 and not (name == "critic_steps" and self.adv_weight == 0):
                raise RefocusError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is None and self.epochs is None:
            raise RefocusError("give the run a length: --steps N (or a config with epochs)")
        if self.steps is not None and self.steps < 1:
            raise RefocusError(f"--steps must be at least 1, got {self.steps}")
        if self.n_blocks is not None and self.n_blocks > MAX_BLOCKS:  # the plugin would refuse its weights
            raise RefocusError(f"--n-blocks must be at most {MAX_BLOCKS}, got {self.n_blocks}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise RefocusError(f"--lr must be a positive number, got {self.lr}")
        for name, least in (("ngf", 1), ("ndf", 1), ("n_blocks", 0), ("threads", 1), ("seed", 0), ("epochs", 1),
                            ("train_scenes", 0), ("val_scenes", 0), ("val_size", 0)):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < least:
                raise RefocusError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
        for name in ("adv_weight", "perceptual_weight", "pixel_weight", "ssim_weight", "gp_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise RefocusError(f"{name} must be a number ≥ 0, got {getattr(self, name)}")
        if not self.in_focus_weight >= 0:  # NaN included
            raise RefocusError(f"--in-focus-weight must be ≥ 0, got {self.in_focus_weight}")
        if self.in_focus_weight and self.task != "deblur":
            raise RefocusError("--in-focus-weight applies to deblur (G1) only")
        if self.in_focus_weight and self.data_paths:
            # their scenes carry no ground-truth disparity, so the term would only ever see sharp items
            raise RefocusError("--in-focus-weight needs the synthetic scenes' ground-truth disparity; light fields "
                               "given with --data have none")
        for name in ("clean_prob", "far_background", "true_radiance_share"):
            check_share(name, getattr(self, name))
        return self

    @property
    def adversarial(self) -> bool:
        return self.adv_weight > 0


def _paper(task: str) -> TrainConfig:
    # §4: 30 epochs deblur, 60 refocus, batch 1, 256² crops, λ=100, Adam 1e-4; DeblurGAN: 5 critic steps, GP 10.
    return TrainConfig(
        name="paper", task=task, ngf=64, n_blocks=9, ndf=64, crop=256, batch_size=1, scene_size=256,
        train_scenes=2500, val_scenes=16, epochs=30 if task == "deblur" else 60, critic_steps=5,
        adv_weight=1.0, perceptual="vgg19", perceptual_weight=100.0, pixel_weight=0.0,
        refocus_deltas="19",
    )  # fmt: skip


def _cpu(task: str) -> TrainConfig:
    # The shipped default weights: synthetic scenes, about an hour on 2 CPU cores. Sized from
    # benchmarks/bench_training.py: with torch.compile + bf16 autocast + channels_last (about 2.5× the
    # eager loop on this AMX CPU; resume stays bitwise exact) a 4×128² step takes about 2.3 s on a
    # shared 2-core machine, so 1500 steps ≈ 1 h plus about a minute of compilation.
    # ImageNet VGG19 weights cannot be fetched here, so the content term is pixel L1 (recorded in the
    # weights' model card); a small adversarial weight with one critic step keeps the GAN's sharpening
    # without costing PSNR in an hour. lr 2e-4 (pix2pix's, with the same β1 = 0.5) for the short run.
    return TrainConfig(
        name="cpu", task=task, ngf=None, n_blocks=None, ndf=32, crop=128, batch_size=4, scene_size=192,
        train_scenes=200, val_scenes=8, steps=1500, critic_steps=1, adv_weight=0.01, perceptual="l1",
        perceptual_weight=100.0, pixel_weight=0.0, refocus_deltas="continuous",
        critic_sees_delta=True, channels_last=True, bf16=True, compile=True, threads=2, log_every=10, val_every=250,
        val_size=4, ckpt_every=100, lr=2e-4,
    )  # fmt: skip


def _smoke(task: str) -> TrainConfig:
    # Tiny, for tests: seconds on a CPU.
    return TrainConfig(
        name="smoke", task=task, ngf=4, n_blocks=1, ndf=4, crop=32, batch_size=1, scene_size=48,
        train_scenes=4, val_scenes=2, steps=4, critic_steps=1, adv_weight=0.01, perceptual="l1",
        perceptual_weight=100.0, pixel_weight=0.0, refocus_deltas="continuous", critic_sees_delta=True,
        threads=1, log_every=1, val_every=2, val_size=1, ckpt_every=2,
    )  # fmt: skip


PRESETS = {"paper": _paper, "cpu": _cpu, "smoke": _smoke}


def get_config(name: str, task: str, **overrides) -> TrainConfig:
    """The named preset for ``task`` with ``overrides`` (None values are ignored) applied and validated."""
    if name not in PRESETS:
        raise RefocusError(f"unknown config {name!r}; choose one of {', '.join(PRESETS)}")
    if task not in TASKS:
        raise RefocusError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    cfg = PRESETS[name](task)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise RefocusError(f"unknown config field(s): {', '.join(sorted(unknown))}")
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    if overrides.get("epochs") is not None and overrides.get("steps") is None:
        cfg = dataclasses.replace(cfg, steps=None)  # epochs asked for: the preset's steps would win over them
    return cfg.validate()
