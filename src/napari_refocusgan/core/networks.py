"""RefocusGAN generators (paper §3, DeblurGAN's ResnetGenerator), the one definition used by the plugin
and by training.

Images enter and leave in [-1, 1]. G1 (deblur) takes RGB + SML focus channel; G2 (refocus) takes
RGB + radiance and a refocus parameter δ, injected at the bottleneck (the paper's δ map) and, with
``delta_modulation``, as a per-channel scale and shift after each residual block's first InstanceNorm.
InstanceNorm removes any spatially constant signal, so a δ that only enters by concatenation reaches the
decoder solely through the map's learned spatial pattern; a G2 built that way stayed at the identity for
4000 steps. Modulating after the norm (conditional instance normalisation) carries δ past every norm.
Both generators also have an output head that mixes in full-resolution detail (G2: the radiance; G1: the
input's own high-pass), see ``radiance_blend`` and ``detail_sigmas``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blur_compare import gaussian_blurs_torch

DeltaMode = Literal["none", "onehot", "continuous"]

# The paper's δ map: a fully connected layer makes a 64×64 channel for 256×256 inputs (the bottleneck).
DELTA_MAP_SIZE = 64


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of one generator. ``ngf=64, n_blocks=9`` is the paper's size."""

    in_channels: int = 4
    ngf: int = 32
    n_blocks: int = 6
    dropout: float = 0.5
    delta_mode: DeltaMode = "none"
    # onehot: the δ values, in order; continuous: (min, max) of the trained range
    deltas: tuple[float, ...] = field(default_factory=tuple)
    # gate the residual by the SML channel (G1): sharp pixels get less correction
    focus_gate: bool = False
    # δ also scales and shifts each residual block's first InstanceNorm output (see the module docstring).
    # False in configs saved before it existed, so their weights still load.
    delta_modulation: bool = False
    # G2 with a radiance input: out = rgb + m·(radiance − rgb) + residual, with a per-pixel blend m ∈ (−1, 1)
    # from the decoder. The decoder has no full-resolution skip, so fine detail is hard for it to
    # synthesise; m only has to follow depth and δ, which vary slowly, and the detail comes from the
    # radiance. m = 1 focuses a pixel fully, m < 0 blurs it further (extrapolates away from the radiance).
    radiance_blend: bool = False
    # out also adds g_k·(src − Gaussian_σk(src)) with per-pixel gains g_k ∈ (−2, 2) from the decoder, for each
    # σ_k (px) and each source image: the RGB input, and for G2 with radiance_blend also the radiance. A
    # learned, spatially varying unsharp mask (g > 0) or blur (g = −1 gives Gaussian_σk(src)), for the same
    # reason as the radiance blend. G1 sharpens with it and leaves sharp pixels alone (g = 0; unsharp masking
    # is one constant gain); G2 blurs what moves out of focus, and re-blurs the radiance where the target is
    # sharper than the input but not in focus. Empty in configs saved before it existed.
    detail_sigmas: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["deltas"] = list(self.deltas)
        d["detail_sigmas"] = list(self.detail_sigmas)
        return d

    @staticmethod
    def from_dict(d: dict) -> "GeneratorConfig":
        d = dict(d)
        d["deltas"] = tuple(float(v) for v in d.get("deltas", ()))
        d["detail_sigmas"] = tuple(float(v) for v in d.get("detail_sigmas", ()))
        return GeneratorConfig(**d)

    @property
    def delta_range(self) -> tuple[float, float] | None:
        if self.delta_mode == "none" or not self.deltas:
            return None
        return float(min(self.deltas)), float(max(self.deltas))


class InstanceNorm(nn.Module):
    """InstanceNorm2d without affine parameters (as in DeblurGAN), with statistics that tiled inference
    can fix to whole-image values: when ``fixed_stats`` is set to (mean, var), each of shape
    (N, C, 1, 1), they replace the per-input statistics."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.fixed_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_stats is None:
            # Inference only, so training runs keep the op they were started with.
            if not torch.is_grad_enabled() and x.is_contiguous():
                # Same normalisation as layer_norm over each (n, c) plane; 3–7× faster than instance_norm
                # on CPU.
                n, c, h, w = x.shape
                return F.layer_norm(x.reshape(n * c, h * w), (h * w,), eps=self.eps).view(n, c, h, w)
            channels_last = x.is_contiguous(memory_format=torch.channels_last)
            if not torch.is_grad_enabled() and x.device.type == "cpu" and channels_last:
                return _instance_norm_channels_last(x, self.eps)
            return F.instance_norm(x, eps=self.eps)
        mean, var = self.fixed_stats
        return (x - mean) * torch.rsqrt(var + self.eps)


def _instance_norm_channels_last(x: torch.Tensor, eps: float) -> torch.Tensor:
    """InstanceNorm of a channels_last CPU tensor, in that layout: the mean, then the variance of the centred
    values (so a channel whose mean dwarfs its spread keeps its precision), both as reductions over pixels.
    2–3× faster than instance_norm or var_mean on this layout on an AVX2 CPU."""
    n, c, h, w = x.shape
    with torch.autocast("cpu", enabled=False):  # float32 sums, also under bf16 autocast
        pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c).float()  # a view: channels are the fastest axis
        centred = pixels - pixels.mean(dim=1, keepdim=True)
        # squared in chunks of pixels: a whole-size temporary would add a plane of activations per norm
        var = sum(chunk.square().sum(dim=1, keepdim=True) for chunk in centred.split(1 << 16, dim=1)) / (h * w)
        out = centred.mul_(var.add_(eps).rsqrt_())
    return out.to(x.dtype).view(n, h, w, c).permute(0, 3, 1, 2)


class ResnetBlock(nn.Module):
    """conv-IN-ReLU-Dropout-conv-IN plus the skip (DeblurGAN commit dd9e940, the intended block)."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm(), nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), InstanceNorm()]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, modulation: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if modulation is None:
            return x + self.block(x)
        scale, shift = modulation  # (N, C, 1, 1) each, after the first norm and before its ReLU
        h = self.block[:3](x)
        return x + self.block[3:](h * (1 + scale) + shift)


class DeltaEmbedding(nn.Module):
    """δ → one bottleneck channel. One-hot through a linear layer to a 64×64 map (paper), or a scalar
    through a small MLP (continuous δ, the paper's future work); resized to the bottleneck size."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.mode = cfg.delta_mode
        self.deltas = tuple(cfg.deltas)
        n = DELTA_MAP_SIZE * DELTA_MAP_SIZE
        if self.mode == "onehot":
            self.net = nn.Linear(self.encoded_width(cfg), n)
        else:
            lo, hi = cfg.delta_range
            self.register_buffer("centre", torch.tensor((lo + hi) / 2))
            self.register_buffer("half_span", torch.tensor(max((hi - lo) / 2, 1.0)))
            self.net = nn.Sequential(nn.Linear(1, 64), nn.ReLU(True), nn.Linear(64, n))

    @staticmethod
    def encoded_width(cfg: GeneratorConfig) -> int:
        """K of :meth:`encode`'s (N, K) output: one-hot over the δ values, or one scalar."""
        return len(cfg.deltas) if cfg.delta_mode == "onehot" else 1

    def encode(self, delta: torch.Tensor) -> torch.Tensor:
        """(N,) δ values → (N, K) network input."""
        if self.mode == "onehot":
            table = torch.tensor(self.deltas, device=delta.device, dtype=delta.dtype)
            idx = (delta[:, None] - table[None]).abs().argmin(dim=1)
            return F.one_hot(idx, len(self.deltas)).to(delta.dtype)
        return ((delta - self.centre) / self.half_span)[:, None]

    def forward(self, delta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        m = self.net(self.encode(delta)).view(-1, 1, DELTA_MAP_SIZE, DELTA_MAP_SIZE)
        if tuple(size) != (DELTA_MAP_SIZE, DELTA_MAP_SIZE):
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        return m


class DeltaModulation(nn.Module):
    """δ → a (scale, shift) pair of (N, C, 1, 1) tensors for each residual block. PyTorch's default Linear
    initialisation on purpose: δ must shape the features from the first step, or the zero-initialised
    last layer sees no δ in them and its gradient averages out over near and far targets."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.channels, self.n_blocks = 4 * cfg.ngf, cfg.n_blocks
        self.net = nn.Sequential(nn.Linear(DeltaEmbedding.encoded_width(cfg), 64), nn.ReLU(True), nn.Linear(64, 2 * self.channels * self.n_blocks))

    def forward(self, encoded_delta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``encoded_delta``: :meth:`DeltaEmbedding.encode`'s (N, K) output."""
        params = self.net(encoded_delta).view(-1, self.n_blocks, 2, self.channels, 1, 1)
        return [(params[:, k, 0], params[:, k, 1]) for k in range(self.n_blocks)]


class Generator(nn.Module):
    """ResNet generator with a global residual: out = clamp(rgb + residual, -1, 1).

    Input (N, in_channels, H, W) with H and W multiples of 4; channels 0..2 are the RGB image in [-1, 1].
    For G1 channel 3 is :func:`..focus.focus_channel`; for G2 channels 3..5 are the radiance.
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        ngf = cfg.ngf
        self.head = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(cfg.in_channels, ngf, 7), InstanceNorm(), nn.ReLU(True)
        )
        self.down = nn.Sequential(
            nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1), InstanceNorm(), nn.ReLU(True),
            nn.Conv2d(2 * ngf, 4 * ngf, 3, stride=2, padding=1), InstanceNorm(), nn.ReLU(True),
        )  # fmt: skip
        if cfg.delta_mode != "none":
            self.delta = DeltaEmbedding(cfg)
            self.fuse = nn.Conv2d(4 * ngf + 1, 4 * ngf, 1)  # bring the concatenated δ channel into the blocks
            if cfg.delta_modulation:
                self.modulation = DeltaModulation(cfg)
        self.blocks = nn.Sequential(*[ResnetBlock(4 * ngf, cfg.dropout) for _ in range(cfg.n_blocks)])
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * ngf, 2 * ngf, 3, stride=2, padding=1, output_padding=1), InstanceNorm(), nn.ReLU(True),
            nn.ConvTranspose2d(2 * ngf, ngf, 3, stride=2, padding=1, output_padding=1), InstanceNorm(), nn.ReLU(True),
        )  # fmt: skip
        self.tail = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh())
        if cfg.radiance_blend:
            if cfg.in_channels != 6:
                raise ValueError("radiance_blend needs the radiance as input channels 3..5 (in_channels=6)")
            self.blend = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, 1, 7), nn.Tanh())
        if cfg.detail_sigmas:
            n_gains = len(cfg.detail_sigmas) * len(self.detail_sources(cfg))
            self.detail = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, n_gains, 7), nn.Tanh())
        if cfg.focus_gate:
            # gate = sigmoid(scale · (shift − focus)): ≈1 on blurred pixels, smaller on sharp ones; learned.
            self.gate_scale = nn.Parameter(torch.tensor(2.0))
            self.gate_shift = nn.Parameter(torch.tensor(0.5))
        self.apply(_init_weights)
        # Start as the identity (zero residual): a random N(0, 0.02) tail makes residuals of ~0.25 that
        # take many steps to unlearn and wreck in-focus pixels meanwhile. Gradients still reach the tail.
        nn.init.zeros_(self.tail[1].weight)
        if cfg.radiance_blend:
            nn.init.zeros_(self.blend[1].weight)
        if cfg.detail_sigmas:
            nn.init.zeros_(self.detail[1].weight)

    @staticmethod
    def detail_sources(cfg: GeneratorConfig) -> tuple[slice, ...]:
        """Input channels of the images that the detail gains act on: RGB, plus the radiance for G2."""
        return (slice(0, 3), slice(3, 6)) if cfg.radiance_blend else (slice(0, 3),)

    def block_modulations(self, delta: torch.Tensor) -> list | None:
        """Each residual block's (scale, shift) for ``delta`` (N,), or None without δ modulation."""
        if not self.cfg.delta_modulation:
            return None
        return self.modulation(self.delta.encode(delta))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder (head and down-sampling) up to the bottleneck: the part that never sees δ."""
        return self.down(self.head(x))

    def source_blurs(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """The Gaussian blurs of the detail head's source images (channels 0..2, or 0..5 with the radiance),
        one per σ; None without a detail head. They depend on ``x`` only, not on δ."""
        if not self.cfg.detail_sigmas:
            return None
        return gaussian_blurs_torch(x[:, : 3 * len(self.detail_sources(self.cfg))], self.cfg.detail_sigmas)

    def forward(
        self,
        x: torch.Tensor,
        delta: torch.Tensor | None = None,
        *,
        encoded: torch.Tensor | None = None,
        blurs: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``encoded`` / ``blurs``: :meth:`encode` and :meth:`source_blurs` of this ``x``, computed earlier
        (inference reuses them when only δ changes)."""
        y = self.encode(x) if encoded is None else encoded
        modulations = None
        if self.cfg.delta_mode != "none":
            if delta is None:
                raise ValueError("this generator needs a δ value")
            delta = torch.as_tensor(delta, dtype=y.dtype, device=y.device).reshape(-1).expand(y.shape[0])
            y = self.fuse(torch.cat([y, self.delta(delta, y.shape[-2:])], dim=1))
            modulations = self.block_modulations(delta)
        for k, block in enumerate(self.blocks):
            y = block(y, None if modulations is None else modulations[k])
        return self.output(x, self.up(y), blurs)

    def output(self, x: torch.Tensor, features: torch.Tensor, blurs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The last layers: decoder ``features`` (N, ngf, H, W) and the input ``x`` → the image. Tiled
        inference calls this too, so that both paths share one definition."""
        heads = iter(self._heads(features))
        residual = next(heads)
        if self.cfg.focus_gate:
            residual = residual * torch.sigmoid(self.gate_scale * (self.gate_shift - x[:, 3:4]))
        rgb = x[:, :3]
        if self.cfg.radiance_blend:
            residual = residual + next(heads) * (x[:, 3:6] - rgb)
        if self.cfg.detail_sigmas:
            gains = 2 * next(heads)
            blurs = self.source_blurs(x) if blurs is None else blurs
            k = 0
            for channels in self.detail_sources(self.cfg):
                src = x[:, channels]
                for b in blurs:
                    residual = torch.addcmul(residual, gains[:, k : k + 1], src - b[:, channels])
                    k += 1
        return torch.clamp(rgb + residual, -1, 1)

    def _heads(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The output heads (tail, then blend and detail when present: each reflection pad, 7×7 conv, tanh)
        as one convolution with their weights stacked: a 7×7 conv over ngf full-resolution channels costs
        about the same for 1 output channel as for 10, so three separate ones took three times as long.
        Only the heads' convolutions are used; the pad-conv-tanh Sequentials stay for their parameter names
        (``tail.1.weight`` …), which every saved weights file uses."""
        convs = [self.tail[1]]
        if self.cfg.radiance_blend:
            convs.append(self.blend[1])
        if self.cfg.detail_sigmas:
            convs.append(self.detail[1])
        padded = F.pad(features, (3, 3, 3, 3), mode="reflect")
        if len(convs) == 1:
            out = convs[0](padded)
        else:
            out = F.conv2d(padded, torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]))
        return torch.tanh(out).split([c.out_channels for c in convs], dim=1)


def _init_weights(m: nn.Module) -> None:
    # DeblurGAN: conv weights N(0, 0.02), biases zero
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# G1's detail scales: the blur of the kept slices spans about 0…4 px of disk radius (blur_compare.DEFAULT_RADII)
DEBLUR_DETAIL_SIGMAS = (1.0, 2.0)
# G2's: one δ step adds about 0.2 px of blur σ (7 views spaced 3/29 px/view), δ = ±9 about 1.9 px on
# content in focus, more on content already out of focus
REFOCUS_DETAIL_SIGMAS = (1.0, 2.0, 4.0)


def deblur_config(**overrides) -> GeneratorConfig:
    """G1: RGB + SML channel, gated residual, learned unsharp masks at :data:`DEBLUR_DETAIL_SIGMAS`."""
    return GeneratorConfig(**{"in_channels": 4, "focus_gate": True, "detail_sigmas": DEBLUR_DETAIL_SIGMAS, **overrides})


def refocus_config(deltas=tuple(range(-9, 10)), mode: DeltaMode = "continuous", **overrides) -> GeneratorConfig:
    """G2: RGB + radiance with δ. Default: continuous δ trained on −9..+9, δ-modulated blocks, learned
    blurs at :data:`REFOCUS_DETAIL_SIGMAS` and, with a radiance input, the radiance blend."""
    settings = {
        "in_channels": 6, "delta_mode": mode, "deltas": tuple(float(d) for d in deltas), "delta_modulation": True,
        "detail_sigmas": REFOCUS_DETAIL_SIGMAS,
    }  # fmt: skip
    settings.update(overrides)
    settings.setdefault("radiance_blend", settings["in_channels"] == 6)
    return GeneratorConfig(**settings)
