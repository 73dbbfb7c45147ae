"""The training loop for G1 (deblur) and G2 (refocus): WGAN-GP with a conditional PatchGAN critic plus a
content term (paper §3–4, DeblurGAN's recipe), Adam with a constant-then-linear learning rate.

Run state lives in ``OUT/last.pt``, written atomically (temp file + ``os.replace``) every
``ckpt_every`` steps, at the end, and when SIGINT/SIGTERM asks the run to stop (the handler only sets a
flag; the checkpoint is written at the next step boundary). It holds both networks, both optimisers and
schedulers, the RNG states of every rank (python, numpy, torch), the dataset's own sampling state (when
it has ``state_dict()``/``load_state_dict()``) and the sampler position, so ``resume`` continues exactly
where the run stopped. Everything in it is tensors and plain Python values, so even our own checkpoints
load with ``torch.load(weights_only=True)``: nothing is unpickled.

Under ``torchrun`` (``WORLD_SIZE`` > 1) both networks are wrapped in DistributedDataParallel, the data
is split by a DistributedSampler, and rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pickle
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from napari_refocusgan.core import inference
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.imaging import nearest_existing
from napari_refocusgan.core.networks import Generator, GeneratorConfig
from napari_refocusgan.core.weights import file_sha256, weights_file

from .configs import TrainConfig, radiance_source
from .losses import ContentLoss, PatchCritic, critic_loss, generator_adversarial_loss, ssim_loss

CHECKPOINT_NAME = "last.pt"
LOG_NAME = "log.csv"
CHECKPOINT_FORMAT = 1
# what export, evaluation and --resume read (Trainer.state_dict writes them)
CHECKPOINT_KEYS = (
    "step", "epoch", "batch_in_epoch", "total_steps", "world_size", "config", "generator_config", "metadata",
    "generator", "critic", "opt_g", "opt_d", "sched_g", "sched_d", "rng",
)  # fmt: skip
LOG_FIELDS = [
    "step", "epoch", "time_s", "lr", "loss_g", "loss_adv", "loss_content", "loss_pixel", "loss_ssim", "loss_in_focus",
    "loss_d", "w_dist", "gp", "val_psnr", "val_ssim", "val_psnr_true", "val_ssim_true", "val_psnr_g1", "val_ssim_g1",
]  # fmt: skip


@dataclass
class TrainResult:
    """What one call of :func:`train` did."""

    out_dir: Path
    step: int  # steps done in total (including resumed ones)
    total_steps: int
    stopped_early: bool  # a signal (or ``stop_after``) ended the run before ``total_steps``
    history: list[dict] = field(default_factory=list)  # per-step losses of this call (rank 0)

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME


# --------------------------------------------------------------------------------------------- helpers


def _radiance_g1_sha256(cfg: TrainConfig) -> str:
    """sha256 of the G1 weights that make G2's radiance (``--radiance g1:W|mix:W``; W a file or registry name),
    or "" when G2 gets the true radiance only."""
    weights = radiance_source(cfg.radiance)[1] if cfg.task == "refocus" and not cfg.single_stage else ""
    return file_sha256(weights_file(weights)) if weights else ""


def _init_weights(spec: str, task: str, own: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of the exported generator ``spec`` (--init-weights) and its file's sha256; a clear error
    unless every tensor fits the network whose state dict is ``own``."""
    from napari_refocusgan.core.weights import load_generator

    loaded = load_generator(spec, role=task, as_new_file=True)
    source = loaded.generator.state_dict()
    wrong = [k for k, v in source.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise RefocusError(f"--init-weights {spec}: {len(wrong)} tensor(s) do not fit this network "
                           f"(e.g. {', '.join(wrong[:3])}); it needs the same size and δ setting")  # fmt: skip
    return source, file_sha256(loaded.source)


def check_weight_files(cfg: TrainConfig, *, resume: bool) -> None:
    """Load --init-weights and --vgg-weights up front (the trainer loads them again): a bad file fails before
    the scenes are rendered."""
    with preserved_rng():  # building the networks draws from the global RNGs
        if cfg.init_weights and not resume:
            _init_weights(cfg.init_weights, cfg.task, Generator(cfg.generator_config()).state_dict())
        if cfg.perceptual == "vgg19":
            ContentLoss(cfg.perceptual, cfg.vgg_weights)


def check_writable_folder(path: Path, option: str) -> None:
    """A clear error, before any work, when ``path`` cannot be (or become) a folder to write in: it or a
    parent is a file, or the nearest existing folder refuses writes. Leaves nothing behind."""
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise RefocusError(f"{option} {path}: {existing} is a file, not a folder")
    try:  # a real write: permission bits do not tell for root, read-only mounts or /proc
        with tempfile.TemporaryDirectory(dir=existing):
            pass
    except OSError as exc:
        raise RefocusError(f"{option} {path}: cannot write in {existing} ({exc.strerror or exc})") from exc


def lr_factor(step: int, total_steps: int) -> float:
    """Constant for the first half of training, then linear to 0 at ``total_steps`` (DeblurGAN)."""
    half = total_steps // 2
    if step < half:
        return 1.0
    return max(0.0, (total_steps - step) / max(1, total_steps - half))


def rng_state() -> dict:
    """Python, numpy and torch RNG states as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _as_tuple(x):
    # torch.load may hand Python's RNG state back with lists where tuples were
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing any global RNG (validation must not change the training stream)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically: a crash mid-write leaves the previous file intact."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    remove_torn_writes(path)


def remove_torn_writes(path: Path) -> None:
    """Delete ``path``'s temporary files left by writers that died mid-write (SIGKILL, power loss): a
    ``.tmpPID`` whose process no longer exists. A live writer's file is left alone."""
    for stale in path.parent.glob(f"{path.name}.tmp*"):
        pid = stale.name.removeprefix(f"{path.name}.tmp")
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) sends CTRL_C_EVENT there: never probe, keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`train` (tensors and plain values only: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise RefocusError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False: never for a file given to us, and never needed for ours
        raise RefocusError(f"{path} is not a training checkpoint of this package: it is not a torch file, or it "
                           "holds objects other than tensors and plain values (never unpickled here)") from exc  # fmt: skip
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise RefocusError(f"cannot read checkpoint {path} (truncated or not a training checkpoint): "
                           f"{type(exc).__name__} {first_line}".rstrip()) from exc  # fmt: skip
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise RefocusError(f"{path} is not a training checkpoint of this version")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise RefocusError(f"{path} is not a complete training checkpoint: it lacks {', '.join(missing)}")
    return ckpt


def generator_from_checkpoint(ckpt: dict) -> Generator:
    """The trained generator of a checkpoint, in eval mode."""
    model = Generator(GeneratorConfig.from_dict(ckpt["generator_config"]))
    model.load_state_dict(ckpt["generator"])
    return model.eval()


class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves and leaves at the next step boundary. A second SIGINT
    interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step", file=sys.stderr)

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _collate(items: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}


def _check_item(item, task: str, gen_cfg: GeneratorConfig) -> None:
    """Clear errors for a first batch that does not fit the generator."""
    if not isinstance(item, dict) or "input" not in item or "target" not in item:
        raise RefocusError("the dataset must yield dicts with 'input' and 'target' tensors")
    c = item["input"].shape[1]
    if c != gen_cfg.in_channels:
        raise RefocusError(f"the data has {c} input channels but the generator expects {gen_cfg.in_channels}")
    if task == "refocus" and gen_cfg.delta_mode != "none" and "delta" not in item:
        raise RefocusError("refocus data must carry a 'delta' per item")


# ----------------------------------------------------------------------------------------------- loop


class Trainer:
    """One rank's training state. Use :func:`train`; this class exists so the benchmark can time steps."""

    def __init__(
        self, cfg: TrainConfig, *, rank: int = 0, world: int = 1, total_steps: int = 1, device: str | None = None
    ):
        self.cfg, self.rank, self.world, self.total_steps = cfg, rank, world, total_steps
        self.device = torch.device(device or (f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"))
        self.gen_cfg = cfg.generator_config()
        self.generator = Generator(self.gen_cfg)
        cond_channels = self.gen_cfg.in_channels + self._delta_channel
        self.critic = PatchCritic(cond_channels + 3, ndf=cfg.ndf, n_layers=cfg.critic_layers)
        self.content = ContentLoss(cfg.perceptual, cfg.vgg_weights if cfg.perceptual == "vgg19" else None)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.bf16 = cfg.bf16 and inference.bf16_is_native(self.device)
        if cfg.bf16 and not self.bf16 and rank == 0:
            print(f"note: bf16 has no fast path on this {self.device.type} (several times slower than float32), so "
                  "this run trains in float32.", file=sys.stderr)  # fmt: skip
        for m in (self.generator, self.critic, self.content):
            m.to(device=self.device, memory_format=self.memory_format)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=betas)
        schedule = lambda step: lr_factor(step, total_steps)  # noqa: E731
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, schedule)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, schedule)
        self.init_sha256 = ""
        # the G1 that makes G2's radiance: its path alone would not say which weights, once that file changes
        self.radiance_sha256 = _radiance_g1_sha256(cfg)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        if world > 1:
            # one forward per backward for each wrapper: the critic step feeds real, fake and mixed images
            # in one call; the generator step scores its output with the unwrapped critic (frozen there)
            ddp = {"broadcast_buffers": False, "device_ids": [self.device] if self.device.type == "cuda" else None}
            self.g_net: nn.Module = DistributedDataParallel(self.generator, **ddp)
            self.d_net: nn.Module = DistributedDataParallel(self.critic, **ddp)
        else:
            self.g_net, self.d_net = self.generator, self.critic
        if cfg.compile:
            # the generator only: the critic's gradient penalty needs double backward, which compile lacks
            self.g_net = torch.compile(self.g_net, dynamic=False)  # crops never change size within a run

    def init_generator(self, spec: str) -> None:
        """Copy the weights of an exported generator into this one (fine-tuning). Every tensor of the file
        must exist here with the same shape; tensors it lacks (a head added since) keep their start."""
        own = self.generator.state_dict()
        source, self.init_sha256 = _init_weights(spec, self.cfg.task, own)
        own.update(source)
        self.generator.load_state_dict(own)

    def autocast(self):
        """bf16 autocast when the config asks for it and the hardware has it (weights, optimiser and losses stay
        float32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def _delta_channel(self) -> int:
        return int(self.cfg.critic_sees_delta and self.gen_cfg.delta_mode != "none")

    def condition(self, x: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        """What the critic is conditioned on: the generator input (plus δ as a constant channel)."""
        if not self._delta_channel:
            return x
        lo, hi = self.gen_cfg.delta_range
        scale = max(abs(lo), abs(hi), 1.0)
        plane = (delta.to(x.dtype) / scale).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return torch.cat([x, plane], dim=1)

    def _prepare(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = batch["input"].to(self.device, torch.float32).contiguous(memory_format=self.memory_format)
        y = batch["target"].to(self.device, torch.float32).contiguous(memory_format=self.memory_format)
        delta = batch["delta"].to(self.device, torch.float32).reshape(-1) if self.gen_cfg.delta_mode != "none" else None
        return x, y, delta

    def train_step(self, batch: dict) -> dict[str, float]:
        """One generator step (after ``critic_steps`` critic steps on the same batch, as DeblurGAN)."""
        cfg = self.cfg
        x, y, delta = self._prepare(batch)
        self.generator.train()
        with self.autocast():
            fake = self.g_net(x, delta) if delta is not None else self.g_net(x)
        fake = fake.float()
        cond = self.condition(x, delta)
        stats: dict[str, float] = {}
        if cfg.adversarial:
            self.critic.requires_grad_(True)
            for _ in range(cfg.critic_steps):
                self.opt_d.zero_grad(set_to_none=True)
                with self.autocast():
                    loss_d, d_stats = critic_loss(self.d_net, cond, y, fake.detach(), cfg.gp_weight)
                loss_d.backward()
                self.opt_d.step()
            stats.update(loss_d=float(loss_d.detach()), **d_stats)
            self.critic.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            content = self.content(fake, y).float()
        loss_g = cfg.perceptual_weight * content
        stats["loss_content"] = float(content.detach())
        if cfg.pixel_weight:
            pixel = F.mse_loss(fake, y)
            loss_g = loss_g + cfg.pixel_weight * pixel
            stats["loss_pixel"] = float(pixel.detach())
        if cfg.ssim_weight:
            dissimilarity = ssim_loss(fake.float(), y)
            loss_g = loss_g + cfg.ssim_weight * dissimilarity
            stats["loss_ssim"] = float(dissimilarity.detach())
        if cfg.in_focus_weight:
            if "in_focus" not in batch:
                raise RefocusError("--in-focus-weight needs deblur items with an 'in_focus' mask (training.data adds one)")
            sharp = batch["in_focus"].to(self.device, torch.float32)
            in_focus = ((fake - y) ** 2 * sharp).sum() / (sharp.sum() * fake.shape[1]).clamp_min(1.0)
            loss_g = loss_g + cfg.in_focus_weight * in_focus
            stats["loss_in_focus"] = float(in_focus.detach())
        if cfg.adversarial:
            with self.autocast():
                adv = generator_adversarial_loss(self.critic, cond, fake).float()
            loss_g = loss_g + cfg.adv_weight * adv
            stats["loss_adv"] = float(adv.detach())
        loss_g.backward()
        self.opt_g.step()
        stats["lr"] = self.opt_g.param_groups[0]["lr"]
        self.sched_g.step()
        if cfg.adversarial:
            self.sched_d.step()
        stats["loss_g"] = float(loss_g.detach())
        self.step += 1
        return stats

    @torch.no_grad()
    def validate(self, batches: list[dict]) -> dict[str, float]:
        """Mean PSNR / SSIM (skimage, [0, 1] RGB) of the generator in eval mode on fixed batches."""
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        from .data import from_signed

        psnr, ssim = [], []
        self.generator.eval()
        try:
            for batch in batches:
                x, y, delta = self._prepare(batch)
                out = self.generator(x, delta) if delta is not None else self.generator(x)
                for o, t in zip(out, y):
                    o_np, t_np = from_signed(o), from_signed(t)
                    psnr.append(peak_signal_noise_ratio(t_np, o_np, data_range=1.0))
                    ssim.append(structural_similarity(t_np, o_np, data_range=1.0, channel_axis=2))
        finally:
            self.generator.train()
        return {"val_psnr": float(np.mean(psnr)), "val_ssim": float(np.mean(ssim))}

    # -- checkpoint state

    def state_dict(self, rng_states: list[dict]) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps,
            "world_size": self.world,
            "config": self.cfg.to_dict(),
            "generator_config": self.gen_cfg.to_dict(),
            "metadata": self.metadata(),
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "rng": rng_states,
            "init_sha256": self.init_sha256,
            "radiance_sha256": self.radiance_sha256,
        }

    def load_state_dict(self, ckpt: dict) -> None:
        self.generator.load_state_dict(ckpt["generator"])
        self.critic.load_state_dict(ckpt["critic"])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.opt_d.load_state_dict(ckpt["opt_d"])
        self.sched_g.load_state_dict(ckpt["sched_g"])
        self.sched_d.load_state_dict(ckpt["sched_d"])
        # the schedule is this session's (cfg.lr over total_steps), not the checkpoint's: the optimisers hold
        # the old schedule's last lr, so a resume with another --lr or a longer --steps would start from it
        for opt, sched in ((self.opt_g, self.sched_g), (self.opt_d, self.sched_d)):
            sched.base_lrs = [self.cfg.lr] * len(opt.param_groups)
            for group in opt.param_groups:
                group["initial_lr"] = self.cfg.lr
                group["lr"] = self.cfg.lr * lr_factor(sched.last_epoch, self.total_steps)
        self.step, self.epoch, self.batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self.init_sha256 = ckpt.get("init_sha256", "")
        before = ckpt.get("radiance_sha256", "")
        if before and before != self.radiance_sha256:
            raise RefocusError(
                f"the G1 weights in --radiance {self.cfg.radiance} changed since this run began (sha256 "
                f"{before[:12]}… then, {self.radiance_sha256[:12]}… now); resume with the same file or start a new run"
            )

    def metadata(self) -> dict[str, str]:
        """The model card: how these weights were trained (strings, for safetensors metadata)."""
        cfg = self.cfg
        meta = {
            "task": cfg.task,
            "train_config": cfg.name,
            "steps": str(self.step),
            "crop": str(cfg.crop),
            "batch_size": str(cfg.batch_size * self.world),
            "adv_weight": str(cfg.adv_weight),
            "critic_steps": str(cfg.critic_steps),
            "perceptual_weight": str(cfg.perceptual_weight),
            "pixel_weight": str(cfg.pixel_weight),
            **({"ssim_weight": str(cfg.ssim_weight)} if cfg.ssim_weight else {}),
            **({"in_focus_weight": str(cfg.in_focus_weight)} if cfg.in_focus_weight else {}),
            "train_scenes": str(cfg.train_scenes),
            **({"far_background": str(cfg.far_background)} if cfg.far_background else {}),
            "data": ";".join(cfg.data_paths) or "synthetic",
            "seed": str(cfg.seed),
            "lr": str(cfg.lr),
            "precision": "bf16 autocast" if self.bf16 else "float32",
            "command": _training_command(),
            **({"init_weights": f"{Path(cfg.init_weights).name} (sha256 {self.init_sha256})"} if cfg.init_weights else {}),
            **self.content.describe(),
        }
        if cfg.task == "deblur":
            meta["sml_channel"] = str(not cfg.no_sml).lower()
        else:
            meta.update(refocus_deltas=cfg.refocus_deltas, single_stage=str(cfg.single_stage).lower(), radiance=cfg.radiance)
            if self.radiance_sha256:
                meta["radiance_g1_sha256"] = self.radiance_sha256
            if radiance_source(cfg.radiance)[0] == "mix":
                meta["true_radiance_share"] = str(cfg.true_radiance_share)
        return meta


def _training_command() -> str:
    """The command line of a run started by ``python -m training`` (for the model card), else ''."""
    launched = Path(sys.argv[0])
    if launched.name == "__main__.py" and launched.parent.name == "training":
        return " ".join(["python -m training", *sys.argv[1:]])
    return ""


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _build_dataset(cfg: TrainConfig, split: str) -> Dataset:
    from . import data

    return data.build_dataset(cfg.task, split=split, config=cfg, data_paths=cfg.data_paths or None, seed=cfg.seed)


def _radiance_val_datasets(cfg: TrainConfig) -> dict[str, Dataset]:
    """For a G2 trained on ``--radiance mix:W``: the validation set again with every item given the true
    radiance ("true") and with every item given G1's ("g1"), keyed by the suffix of their log columns.
    The mixed set draws the radiance per item, so a change that helps one radiance and hurts the other can
    leave its score flat. Empty for other runs."""
    kind, g1_path = radiance_source(cfg.radiance)
    if cfg.task != "refocus" or cfg.single_stage or kind != "mix":
        return {}
    return {
        "true": _build_dataset(replace(cfg, radiance="true"), "val"),
        "g1": _build_dataset(replace(cfg, radiance=f"g1:{g1_path}"), "val"),
    }


def _network_differences(saved: TrainConfig, cfg: TrainConfig) -> list[str]:
    """The settings that make ``cfg``'s network differ from the one a run was started with."""
    names = ("task", "ngf", "n_blocks", "no_sml", "single_stage", "refocus_deltas")
    differ = [f"{n} {getattr(saved, n)!r} in the run, {getattr(cfg, n)!r} now" for n in names
              if getattr(saved, n) != getattr(cfg, n)]  # fmt: skip
    if differ:
        return differ
    a, b = saved.generator_config().to_dict(), cfg.generator_config().to_dict()  # e.g. a changed default size
    return [f"generator {k} {a.get(k)!r} in the run, {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_data_paths(paths: list[str]) -> None:
    """Clear errors for data paths that cannot hold training data."""
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise RefocusError(f"data path {p} does not exist")
        if path.is_dir() and not any(path.iterdir()):
            raise RefocusError(f"data folder {p} is empty: it needs light fields or focal stacks to train on")


def read_log_rows(path: Path, up_to_step: int) -> list[dict]:
    """The rows of a run's ``log.csv`` up to ``up_to_step``; a clear error for a file that is not such a log
    (overwritten, truncated mid-row, another file's bytes)."""
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) <= up_to_step]
        for row in rows:
            float(row["time_s"])  # a row cut short has none
        return rows
    except (UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise RefocusError(f"{path} is not a readable training log ({type(exc).__name__}: {exc}); move it away "
                           "and the run starts a new one") from None  # fmt: skip


class RunLog:
    """``log.csv``: one row per ``log_every`` steps and per validation, appended as training goes. On
    resume, rows past the checkpoint's step (logged before a crash) are dropped so each step appears once."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            rows = read_log_rows(path, resume_step)
        self.elapsed = float(rows[-1]["time_s"]) if rows else 0.0  # training time before this session
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow(row)


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    dataset: Dataset | None = None,
    val_dataset: Dataset | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``cfg.task``'s generator, writing ``out_dir/last.pt`` and ``out_dir/log.csv``.

    ``dataset`` / ``val_dataset`` default to :func:`training.data.build_dataset`. ``resume`` continues
    from ``out_dir/last.pt`` exactly (same data order, RNG streams and schedule). ``stop_after`` stops
    (with a checkpoint) once that many steps are done in total, as a signal would.
    """
    cfg.validate()
    out = Path(out_dir)
    rank, world = _distributed()
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    ckpt_path = out / CHECKPOINT_NAME
    check_data_paths(cfg.data_paths)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["world_size"] != world:
            raise RefocusError(f"{ckpt_path} was written by {ckpt['world_size']} processes; resume with as many")
        saved = TrainConfig.from_dict(ckpt["config"])
        if saved.generator_config() != cfg.generator_config() or saved.task != cfg.task:
            raise RefocusError(f"{ckpt_path} holds a different network ({saved.task}, config {saved.name}): "
                               f"{'; '.join(_network_differences(saved, cfg))}; resume with the run's settings, or "
                               "choose another --out")  # fmt: skip
    elif ckpt_path.exists():
        raise RefocusError(f"{out} already holds a run: pass --resume to continue it or choose another --out")
    # everything that can fail on the user's input fails here, before scenes are rendered or --out is made
    if rank == 0:
        check_writable_folder(out, "--out")
    if dataset is None or (val_dataset is None and rank == 0 and cfg.val_size > 0):
        check_writable_folder(Path(cfg.cache_dir), "--cache-dir")
    check_weight_files(cfg, resume=ckpt is not None)

    seed_everything(cfg.seed + rank)
    with preserved_rng():
        dataset = dataset if dataset is not None else _build_dataset(cfg, "train")
        radiance_val: dict[str, Dataset] = {}
        if val_dataset is None and rank == 0 and cfg.val_size > 0:
            val_dataset = _build_dataset(cfg, "val")
            radiance_val = _radiance_val_datasets(cfg)
    if len(dataset) == 0:
        raise RefocusError("the training data is empty: no scenes were found")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=False)
    batches_per_epoch = len(sampler) // cfg.batch_size
    if batches_per_epoch == 0:
        raise RefocusError(f"{len(dataset)} training items are fewer than one batch of {cfg.batch_size} per process")
    total_steps = cfg.steps if cfg.steps is not None else cfg.epochs * batches_per_epoch
    if ckpt is not None and ckpt["step"] >= total_steps:
        done = ckpt["step"]
        if done > total_steps:
            raise RefocusError(f"{out} has already trained {done} steps, more than the {total_steps} asked for; "
                               f"give --steps above {done} to continue it")  # fmt: skip
        if rank == 0:
            print(f"{out} has already trained all {done} steps: nothing to do (give a larger --steps to continue it)",
                  file=sys.stderr)  # fmt: skip
        return TrainResult(out_dir=out, step=done, total_steps=total_steps, stopped_early=False)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    trainer = Trainer(cfg, rank=rank, world=world, total_steps=total_steps)
    seed_everything(cfg.seed + 1000 * (rank + 1))  # then each rank its own stream (dropout, crops, GP mixing)
    if ckpt is None and cfg.init_weights:
        trainer.init_generator(cfg.init_weights)
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
        set_rng_state(ckpt["rng"][rank]["global"])
        if ckpt["rng"][rank]["dataset"] is not None and hasattr(dataset, "load_state_dict"):
            dataset.load_state_dict(ckpt["rng"][rank]["dataset"])

    # validation batches by log-column suffix: "" for the run's own set, then one per radiance (see
    # _radiance_val_datasets), all of the same items
    val_batches: dict[str, list[dict]] = {}
    if rank == 0 and val_dataset is not None and cfg.val_size > 0:
        # spread over the whole validation set: its first items are one scene (and, for G2, one δ sign)
        picks = np.unique(np.linspace(0, len(val_dataset) - 1, min(cfg.val_size, len(val_dataset))).round())
        for suffix, ds in (("", val_dataset), *((f"_{name}", d) for name, d in radiance_val.items())):
            with preserved_rng():
                items = [ds[int(i)] for i in picks]
            val_batches[suffix] = [_collate(items[i : i + cfg.batch_size]) for i in range(0, len(items), cfg.batch_size)]

    if rank == 0:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RefocusError(f"cannot create --out {out}: {exc.strerror or exc}") from exc
    log = RunLog(out / LOG_NAME, trainer.step if ckpt is not None else None) if rank == 0 else None

    def write_checkpoint() -> None:
        # per rank: global RNGs plus the dataset's own sampling state when it keeps one
        states = [{"global": rng_state(), "dataset": dataset.state_dict() if hasattr(dataset, "state_dict") else None}]
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if rank == 0:
            save_checkpoint(trainer.state_dict(states), ckpt_path)

    history: list[dict] = []
    stopped = False
    bar = None
    if rank == 0 and progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=trainer.step, desc=f"train {cfg.task}", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    with _StopFlag() as stop:
        while trainer.step < total_steps:
            sampler.set_epoch(trainer.epoch)
            order = list(sampler)
            start = trainer.batch_in_epoch * cfg.batch_size
            for i in range(start, batches_per_epoch * cfg.batch_size, cfg.batch_size):
                batch = _collate([dataset[j] for j in order[i : i + cfg.batch_size]])
                if trainer.step == 0 or i == start:
                    _check_item(batch, cfg.task, trainer.gen_cfg)
                stats = trainer.train_step(batch)
                trainer.batch_in_epoch += 1
                if trainer.batch_in_epoch == batches_per_epoch:
                    trainer.epoch, trainer.batch_in_epoch = trainer.epoch + 1, 0
                step = trainer.step
                if log is not None:
                    row = {"step": step, "epoch": trainer.epoch, "time_s": round(log.elapsed + time.perf_counter() - t0, 3)}
                    row.update({k: round(v, 7) for k, v in stats.items()})
                    history.append(dict(row))
                    if val_batches and (step % cfg.val_every == 0 or step == total_steps):
                        with preserved_rng():
                            for suffix, batches in val_batches.items():
                                row.update({k + suffix: round(v, 4) for k, v in trainer.validate(batches).items()})
                    if step % cfg.log_every == 0 or "val_psnr" in row or step == total_steps:
                        log.append(row)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss_g=f"{stats['loss_g']:.4f}", lr=f"{stats['lr']:.2e}", refresh=False)
                want_stop = stop.requested or (stop_after is not None and step >= stop_after)
                if world > 1:
                    flag = torch.tensor(int(want_stop), device=trainer.device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    want_stop = bool(flag)
                if want_stop or step % cfg.ckpt_every == 0 or step == total_steps:
                    write_checkpoint()
                if want_stop and step < total_steps:
                    stopped = True
                    break
                if step >= total_steps:
                    break
            if stopped:
                break
    if bar is not None:
        bar.close()
    if rank == 0 and stopped:
        print(f"stopped at step {trainer.step}/{total_steps}; checkpoint {ckpt_path}; continue with --resume",
              file=sys.stderr)  # fmt: skip
    if world > 1:
        dist.barrier()
    return TrainResult(out_dir=out, step=trainer.step, total_steps=total_steps, stopped_early=stopped, history=history)


__all__ = [
    "TrainResult", "Trainer", "train", "lr_factor", "save_checkpoint", "load_checkpoint",
    "generator_from_checkpoint", "check_data_paths", "read_log_rows", "CHECKPOINT_NAME", "LOG_NAME",
]  # fmt: skip
