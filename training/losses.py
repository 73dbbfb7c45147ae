"""Losses of the paper's cGANs (§3, after DeblurGAN): a conditional PatchGAN critic trained with WGAN-GP,
and the content term (VGG19 conv3_3 perceptual loss, or a pixel loss when the user chooses one).

The VGG19 layers are defined here with torchvision's parameter names (``features.0.weight`` …) because
torchvision itself is not installed; ImageNet weights are read from torchvision's cache file or from a
path the user gives, never downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.networks import InstanceNorm, _init_weights

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19 checkpoint
VGG19_CONV3_3 = 15  # torchvision vgg19().features[:15] ends at conv3_3, before its ReLU
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchCritic(nn.Module):
    """DeblurGAN's NLayerDiscriminator as a WGAN critic: 4×4 convs with padding 2; ndf, 2ndf, 4ndf … at
    stride 2, then 8ndf at stride 1, then a 1-channel score map. InstanceNorm on all but the first and
    last layers, LeakyReLU 0.2, no sigmoid."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=2), InstanceNorm(), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=2), InstanceNorm(), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=2)]
        self.model = nn.Sequential(*layers)
        self.apply(_init_weights)  # DeblurGAN's init, as the generators: N(0, 0.02), zero bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def critic_loss(
    critic: nn.Module, condition: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, gp_weight: float = 10.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """WGAN-GP critic loss E[D(fake)] − E[D(real)] + λ·E[(‖∇D(x̂)‖ − 1)²] (Gulrajani et al.), with
    x̂ a random mix of real and fake per sample; the critic sees ``cat(condition, image)``.

    Real, fake and mixed images go through the critic in one call: DistributedDataParallel expects one
    forward per backward. ``fake`` must be detached.
    """
    n = real.shape[0]
    eps = torch.rand(n, 1, 1, 1, dtype=real.dtype, device=real.device)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    images = torch.cat([real, fake, mixed], dim=0)
    scores = critic(torch.cat([condition.repeat(3, 1, 1, 1), images], dim=1))
    d_real, d_fake, d_mixed = scores[:n].mean(), scores[n : 2 * n].mean(), scores[2 * n :]
    (grad,) = torch.autograd.grad(d_mixed.sum(), mixed, create_graph=True)
    gp = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
    loss = d_fake - d_real + gp_weight * gp
    return loss, {"w_dist": float((d_real - d_fake).detach()), "gp": float(gp.detach())}


def generator_adversarial_loss(critic: nn.Module, condition: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """−E[D(G(x), x)]."""
    return -critic(torch.cat([condition, fake], dim=1)).mean()


class VGG19Conv33(nn.Module):
    """torchvision's ``vgg19().features[:15]`` (conv1_1 … conv3_3, before its ReLU) with the same
    parameter names, so torchvision's state dict loads as is. Input: RGB in [-1, 1]."""

    def __init__(self):
        super().__init__()
        cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256]
        layers: list[nn.Module] = []
        channels = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(True)]
                channels = v
        self.features = nn.Sequential(*layers[:VGG19_CONV3_3])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision's weights expect ImageNet-normalised [0, 1] RGB
        return self.features(((x + 1) / 2 - self.mean) / self.std)


def default_vgg19_path() -> Path:
    """Where torchvision caches its ImageNet VGG19: ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILENAME


def load_vgg19_conv33(path: str | os.PathLike | None = None) -> VGG19Conv33:
    """VGG19 up to conv3_3 with ImageNet weights from ``path`` (a torchvision ``.pth`` or a
    ``.safetensors`` file) or torchvision's cache; frozen, in eval mode."""
    path = Path(path) if path is not None else default_vgg19_path()
    if not path.is_file():
        raise RefocusError(
            f"VGG19 ImageNet weights not found at {path}. The perceptual loss needs torchvision's "
            f"{VGG19_FILENAME}: put it there (or set TORCH_HOME), pass --vgg-weights PATH, or choose "
            "another content loss with --perceptual l1|l2|none."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        # torch's own messages run to many lines (and advise weights_only=False, which we never use)
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else
                  f"not a safetensors file or a PyTorch state dict of plain tensors ({type(exc).__name__})")  # fmt: skip
        raise RefocusError(f"cannot read VGG19 weights from {path}: {reason}") from exc
    net = VGG19Conv33()
    wanted = net.features.state_dict().keys()
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    missing = [k for k in wanted if k not in features]
    if missing:
        raise RefocusError(f"{path} is not a VGG19 checkpoint: it lacks features.{missing[0]}")
    try:
        net.features.load_state_dict({k: features[k] for k in wanted})
    except RuntimeError as exc:
        raise RefocusError(f"{path} does not match VGG19's layer shapes: {exc}") from exc
    net.eval().requires_grad_(False)
    return net


def ssim_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """1 − SSIM of images in [-1, 1], with the evaluation's window (scikit-image's default: uniform 7×7,
    K1 = 0.01, K2 = 0.03) on the [0, 1] scale, averaged over channels and the batch."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ssim = structural_similarity_index_measure(
        (fake + 1) / 2, (real + 1) / 2, gaussian_kernel=False, kernel_size=7, data_range=1.0
    )
    return 1 - ssim


class ContentLoss(nn.Module):
    """The generator's content term: ``vgg19`` (MSE of conv3_3 features, the paper's perceptual loss),
    ``l1`` or ``l2`` (pixel losses), or ``none`` (zero). ``describe()`` is what the checkpoint and the
    exported weights record."""

    def __init__(self, kind: str = "vgg19", vgg_weights: str | os.PathLike | None = None):
        super().__init__()
        self.kind = kind
        self.vgg: VGG19Conv33 | None = None
        self.vgg_path: str | None = None
        if kind == "vgg19":
            path = Path(vgg_weights) if vgg_weights else default_vgg19_path()
            self.vgg = load_vgg19_conv33(path)
            self.vgg_path = str(path)
        elif kind not in ("l1", "l2", "none"):
            raise RefocusError(f"unknown perceptual loss {kind!r}; choose vgg19, l1, l2 or none")

    def train(self, mode: bool = True) -> "ContentLoss":
        super().train(mode)
        if self.vgg is not None:
            self.vgg.eval()  # frozen feature extractor
        return self

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.kind == "vgg19":
            with torch.no_grad():
                target = self.vgg(real)
            return F.mse_loss(self.vgg(fake), target)
        if self.kind == "l1":
            return F.l1_loss(fake, real)
        if self.kind == "l2":
            return F.mse_loss(fake, real)
        return fake.new_zeros(())

    def describe(self) -> dict[str, str]:
        d = {"perceptual": self.kind}
        if self.kind == "vgg19":
            d["perceptual_layer"] = "vgg19.features[:15] (conv3_3, before ReLU)"
            d["vgg_weights"] = Path(self.vgg_path).name
        return d
