"""Inference with the generators: deblur (G1) and refocus (G2) any image, tiled when it is large.

Model I/O (the contract training uses): images enter in [-1, 1] (``x·2−1``); G1's input is
RGB + :func:`~.focus.focus_channel` computed on the whole image; G2's input is RGB + radiance (the
deblurred image) and δ in slices. Outputs are clamped to [-1, 1] and mapped back with ``(y+1)/2``.

Any H×W: the image is reflection-padded to a multiple of 4 once, the result cropped back.

Tiling. InstanceNorm makes every pixel depend on statistics of the whole image, so tiles run with
their own statistics disagree with the untiled result and show seams. Tiled inference therefore fixes
each InstanceNorm's (mean, var) to whole-image values before the tiles use it:

* the forward is split into stages — the encoder (to the 1/4-size bottleneck), each residual block, the
  decoder — whose output is cached per tile *window* (core + margin) at the bottleneck only: about
  ``16·ngf`` bytes per window pixel (≈ 0.7 GB for 24 MP with the default ngf 32);
* within a stage, InstanceNorm k's statistics are the moments of its input over every tile's *core*
  (a partition of the image), merged over tiles, with norms < k already fixed: one pass over the tiles
  per norm, stopped at that norm. Then one pass computes and caches the stage's output;
* with fixed statistics the network is a local operator, so a window extending ``margin`` pixels
  beyond its core reproduces the untiled activations in the core, exactly once ``margin`` covers the
  receptive field (≈ 15 + 8·n_blocks pixels). Neighbouring outputs are cross-faded with raised-cosine
  weights that sum to one.

Cost: about 2.5 untiled forwards plus the margins; memory: one tile's activations plus the cache.
Statistics that are merely estimated (one pass with per-tile statistics, then iterating) do not
converge: errors grow from layer to layer before the last layer is right.

A generator serves one call at a time (calls from several threads wait for each other): a run switches it
to eval mode, moves it to the device and fixes its InstanceNorm statistics while tiling. Mode and
statistics are restored afterwards; the device and the run's memory layout stay (channels_last on CUDA;
on the CPU after the encoder, or throughout when tiled; see ``_set_memory_layout``).

Tile windows start on multiples of 4 (the stride-2 grid) and tiles at the image edge keep the image's
own borders, so the network's internal reflection padding matches the untiled run there. G2's δ map is
computed once for the whole image and cropped per tile.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import warnings
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .blur_compare import gaussian_kernel1d
from .devices import available_devices, pick_device  # noqa: F401 - the widgets and CLI import them from here
from .errors import RefocusError
from .focalstack import CancelFn, Cancelled, ProgressFn, check_callbacks
from .focus import SMLParams, focus_channel
from .imaging import as_rgb, exposure_gain, image_slices, pair_full_scale, store_slice
from .networks import Generator, GeneratorConfig, InstanceNorm
from .weights import LoadedModel

MIN_SIZE = 8  # the bottleneck (1/4 size) must be ≥ 2 pixels for the blocks' reflection padding
DEFAULT_TILE = 1024  # core side of a tile in pixels
# Context around each tile's core, None = the generator's receptive field (see receptive_field).
DEFAULT_MARGIN: int | None = None
# With ``tile`` None/0, images up to this many (padded) pixels run untiled: about 300 bytes a pixel of
# activations at ngf 32 (1.2 GB), scaled down for wider generators.
UNTILED_MAX_PIXELS = 4_000_000
FOCUS_STRIP_ROWS = 512  # the focus channel is computed in row strips to bound memory on huge images
PRECISIONS = ("auto", "fp32", "fp16", "bf16")

Model = Generator | LoadedModel


# --------------------------------------------------------------------------------------------- devices


def bf16_is_native(device: torch.device) -> bool:
    """Whether bf16 arithmetic has a fast path on ``device``: a CUDA GPU of compute capability 8 or more
    (Ampere; older ones emulate it), or a CPU on which oneDNN runs bf16 kernels (AVX-512 or newer; fastest
    with AVX512-BF16 or AMX). Elsewhere, on AVX2-only CPUs for example, PyTorch falls back to a slow path:
    G1 inference took 60× and a training step 7× as long as in float32 on such a machine."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """None = plain fp32. ``auto``: fp16 autocast on CUDA, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise RefocusError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


# --------------------------------------------------------------------------------------------- settings


def receptive_field(config: GeneratorConfig) -> int:
    """How far (pixels) an output pixel sees: 7×7 head and tail, two stride-2 convs and two transposed
    ones (±1 px at 1/2 and 1/4 size), and two 3×3 convs at 1/4 size per residual block; at least the
    reach of the output head's Gaussian blurs."""
    blur_reach = max((len(gaussian_kernel1d(s)) // 2 for s in config.detail_sigmas), default=0)
    return max(3 + 1 + 2 + 8 * config.n_blocks + 4 + 2 + 3, blur_reach)


@dataclass(frozen=True)
class RunSettings:
    """How to run a generator. ``tile``: core side in pixels; None/0 = untiled up to about
    UNTILED_MAX_PIXELS, else DEFAULT_TILE. ``margin``: context around each core (None: the receptive
    field, which makes tiles exact)."""

    device: torch.device | None = None  # None: wherever the model is
    tile: int | None = None
    margin: int | None = DEFAULT_MARGIN
    precision: str = "auto"

    def check(self) -> None:
        if self.tile is not None and (
            isinstance(self.tile, bool) or not isinstance(self.tile, (int, np.integer)) or self.tile < 0
        ):
            raise RefocusError(f"tile must be a whole number of pixels ≥ 0 (0 = auto), got {self.tile!r}.")
        if self.margin is not None and (
            not isinstance(self.margin, (int, np.integer)) or self.margin < 0 or self.margin % 4
        ):
            raise RefocusError(f"tile margin must be a multiple of 4 pixels ≥ 0, got {self.margin!r}.")

    def margin_for(self, config: GeneratorConfig) -> int:
        return int(self.margin) if self.margin is not None else -(-receptive_field(config) // 4) * 4

    def tile_for(self, hp: int, wp: int, config: GeneratorConfig) -> int | None:
        """Core side for a padded hp×wp image, or None to run it whole."""
        tile = int(self.tile or 0)
        if tile == 0:
            budget = UNTILED_MAX_PIXELS * 32 // max(config.ngf, 1)  # activations scale with ngf
            return None if hp * wp <= budget else DEFAULT_TILE
        # cores must hold the blend ramps of both sides (see _axis_plan) and sit on the stride-4 grid
        tile = max(_round4(tile), 2 * self.margin_for(config), 16)
        return None if tile >= hp and tile >= wp else tile


def _round4(n: float) -> int:
    return int(4 * round(n / 4))


class _Progress:
    def __init__(self, callback: ProgressFn | None, cancel: CancelFn | None, total: int):
        check_callbacks(callback, cancel)
        self.callback, self.cancel, self.total, self.done = callback, cancel, max(1, total), 0

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled()

    def step(self) -> None:
        self.done += 1
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total)


# --------------------------------------------------------------------------------------------- model prep


def _unwrap(model: Model, role: str) -> tuple[Generator, SMLParams]:
    if isinstance(model, LoadedModel):
        generator, sml_params = model.generator, model.sml
    elif isinstance(model, Generator):
        generator, sml_params = model, SMLParams()
    else:
        raise RefocusError(f"expected a generator (see weights.load_generator), got {type(model).__name__}.")
    cfg = generator.cfg
    if role == "deblur":
        if cfg.delta_mode != "none" or cfg.in_channels not in (3, 4):
            raise RefocusError(
                f"deblurring needs a G1 (deblur) model; this one takes δ / {cfg.in_channels} channels (a refocus model)."
            )
    elif cfg.delta_mode == "none":
        raise RefocusError("refocusing needs a G2 (refocus) model; this one takes no δ (a deblur model).")
    elif cfg.in_channels not in (3, 6):
        raise RefocusError(f"a refocus model takes 3 or 6 input channels; this one takes {cfg.in_channels}.")
    return generator, sml_params


def _channels_last(device: torch.device, tiled: bool) -> bool:
    """Whether a run's input and encoder use the channels_last layout: always on CUDA; on the CPU only when
    tiled. oneDNN's convolutions are faster in it on the CPU, but the encoder's full-resolution norms are
    not (see :func:`_channels_last_after_encoder`); tiled runs normalise with fixed statistics, an
    elementwise step."""
    return device.type == "cuda" or (device.type == "cpu" and tiled)


def _channels_last_after_encoder(device: torch.device, channels_last: bool) -> bool:
    """Whether the layers after the encoder (δ fusion, residual blocks, decoder and heads) run channels_last:
    on CUDA, and always on the CPU. There oneDNN's transposed convolutions are 2–4× and the blocks' 3×3 ones
    1.3× faster in that layout (376×541, AVX2 CPU), more than their norms
    (:func:`.networks._instance_norm_channels_last`) cost; the encoder's first convolutions and norms are as
    fast or faster in NCHW, which also saves converting the input (benchmarks/bench_layout.py)."""
    return channels_last or device.type == "cpu"


def _set_memory_layout(generator: Generator, channels_last: bool, after_encoder: bool) -> None:
    """The weights' memory layout: the encoder's (head, down) per ``channels_last``, the rest per
    ``after_encoder``. Parts already in their layout keep their storage (the δ cache keys on the encoder's)."""
    for name, part in generator.named_children():
        cl = channels_last if name in ("head", "down") else after_encoder  # Generator.encode's modules
        part.to(memory_format=torch.channels_last if cl else torch.contiguous_format)


# One lock per generator: a run changes its mode, device, layout and (tiled) norm statistics, so two threads
# sharing one loaded model would corrupt each other's results.
_RUN_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_RUN_LOCKS_GUARD = threading.Lock()


def _run_lock(generator: Generator) -> threading.RLock:
    with _RUN_LOCKS_GUARD:
        return _RUN_LOCKS.setdefault(generator, threading.RLock())


@contextmanager
def _prepared(
    generator: Generator, settings: RunSettings, hw: tuple[int, int], tracker: _Progress
) -> Iterator[tuple[torch.device, torch.dtype | None, bool]]:
    """Eval mode on the device and in the memory layout for a run on (H, W) slices, the generator held by
    this thread (waiting for another thread's run, the ``tracker``'s cancel is still honoured); yields the
    device, the autocast dtype and whether the run is channels_last. The caller's train/eval mode and norms
    are restored after, the device and memory layout are not (see below)."""
    lock = _run_lock(generator)
    while not lock.acquire(timeout=0.1):
        tracker.check()
    with ExitStack() as held:
        held.callback(lock.release)  # released however the run ends
        device = settings.device or next(generator.parameters()).device
        autocast = _autocast_dtype(device, settings.precision)
        if autocast is torch.bfloat16 and not bf16_is_native(device):
            warnings.warn(f"bf16 has no fast path on this {device.type}: expect it to be many times slower than "
                          "fp32.", RuntimeWarning, stacklevel=4)  # fmt: skip
        was_training = generator.training
        generator.eval().to(device)
        tiled = settings.tile_for(_ceil4(hw[0]), _ceil4(hw[1]), generator.cfg) is not None
        channels_last = _channels_last(device, tiled)
        # left so afterwards, as the device is: converting back at every call would give the weights new
        # storage each time, and the δ cache (keyed on the encoder weights' storage) would never hit
        _set_memory_layout(generator, channels_last, _channels_last_after_encoder(device, channels_last))
        try:
            yield device, autocast, channels_last
        finally:
            for m in generator.modules():
                if isinstance(m, InstanceNorm):
                    m.fixed_stats = None
            generator.train(was_training)


def check_delta(model: Model, delta: float) -> float:
    """δ as a float if the model was trained for it, else a RefocusError naming the trained values."""
    cfg = (model.generator if isinstance(model, LoadedModel) else model).cfg
    if cfg.delta_mode == "none":
        raise RefocusError("this is a deblur (G1) model; it takes no δ.")
    try:
        d = float(delta)
    except (TypeError, ValueError) as exc:
        raise RefocusError(f"δ must be a number, got {delta!r}.") from exc
    if not math.isfinite(d):
        raise RefocusError(f"δ must be finite, got {delta!r}.")
    lo, hi = cfg.delta_range
    if cfg.delta_mode == "onehot":
        if not any(abs(d - v) <= 1e-6 for v in cfg.deltas):
            trained = ", ".join(f"{v:+g}" for v in cfg.deltas)
            raise RefocusError(f"δ = {d:+g} is not one this model was trained for; choose one of {trained}.")
    elif not lo - 1e-6 <= d <= hi + 1e-6:
        raise RefocusError(f"δ = {d:+g} is outside this model's trained range {lo:+g} … {hi:+g} (slices).")
    return d


# --------------------------------------------------------------------------------------------- public API


def deblur(
    image: np.ndarray,
    model: Model,
    *,
    rgb: bool | None = None,
    sml_params: SMLParams | None = None,
    device: str | torch.device | None = None,
    tile: int | None = None,
    margin: int | None = DEFAULT_MARGIN,
    precision: str = "auto",
    full_scale: float | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> np.ndarray:
    """The all-in-focus radiance of ``image`` estimated by G1.

    ``image``: gray (H, W), colour (H, W, 3|4) or a stack of either (..., H, W[, 3|4]), uint8/uint16/float;
    ``rgb`` says whether the last axis is colour (guessed when None). Returns the same shape and dtype
    (float input gives float32); gray stays gray (the mean of the output RGB), alpha is kept. Stacks run
    slice by slice. ``sml_params``: the focus channel's SML (default: the model file's). ``device``: None
    keeps the model where it is, else the model is moved there. ``tile``: core side in pixels (None/0 =
    auto). ``progress(done, total)`` is called after each tile/slice; ``cancel()`` returning True stops
    between tiles with :class:`~.focalstack.Cancelled`. ``full_scale``: the scale of a float stack that ``image`` is
    one slice of (see :func:`~.imaging.image_slices`). The caller's array is not modified.
    """
    generator, file_sml = _unwrap(model, "deblur")
    settings = _settings(device, tile, margin, precision)
    params = sml_params or file_sml
    params.check()
    arr, lead, hw, scale = _network_slices(image, rgb, "image", full_scale)
    tracker = _Progress(progress, cancel, len(lead) * _units(settings, hw, generator))
    out = None
    with _prepared(generator, settings, hw, tracker) as run:
        for index in lead:
            tracker.check()
            src = as_rgb(arr[index], name="image", min_size=MIN_SIZE, full_scale=scale)
            gain = exposure_gain(src.rgb)
            x = _deblur_input(src.rgb, generator, params, gain)
            h, w = src.rgb.shape[:2]
            src.rgb = None  # x holds the pixels now; on huge images every full-size copy counts
            y = _forward(generator, x, None, settings, run, tracker)
            del x
            out = store_slice(out, src.restore(_to_image(y, h, w, gain)), arr.shape, lead, index)
    return out


def refocus(
    image: np.ndarray,
    delta: float,
    model: Model,
    *,
    radiance: np.ndarray | None = None,
    deblur_model: Model | None = None,
    rgb: bool | None = None,
    sml_params: SMLParams | None = None,
    device: str | torch.device | None = None,
    tile: int | None = None,
    margin: int | None = DEFAULT_MARGIN,
    precision: str = "auto",
    full_scale: float | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> np.ndarray:
    """``image`` refocused by δ slices (positive δ: focus farther) with G2.

    ``radiance``: the deblurred image (the output of :func:`deblur`, any dtype, same shape as ``image``);
    cache it to change δ cheaply. When None it is computed with ``deblur_model`` (G1). ``full_scale``: the one
    that float stacks of which ``image`` and ``radiance`` are slices share (:func:`~.imaging.pair_full_scale`).
    Other arguments as :func:`deblur`; returns the same shape and dtype as ``image``.
    """
    generator, _ = _unwrap(model, "refocus")
    d = check_delta(generator, delta)
    settings = _settings(device, tile, margin, precision)
    arr, lead, hw, scale = _network_slices(image, rgb, "image", full_scale)
    needs_radiance = generator.cfg.in_channels == 6
    rad = None
    g1 = None
    if needs_radiance and radiance is not None:
        rad, rad_lead, rad_hw, rad_scale = _network_slices(radiance, None, "radiance", full_scale)
        if rad_lead != lead or rad_hw != hw:
            raise RefocusError(f"radiance has shape {rad.shape}; it must match the image's {arr.shape}.")
        scale = pair_full_scale(scale, rad_scale, names=("image", "radiance"))
    elif needs_radiance:
        if deblur_model is None:
            raise RefocusError("refocusing needs the radiance: pass radiance= (deblur output) or deblur_model= (G1).")
        g1, g1_sml = _unwrap(deblur_model, "deblur")
        sml_params = sml_params or g1_sml
        sml_params.check()
    units = _units(settings, hw, generator) + (_units(settings, hw, g1) if g1 is not None else 0)
    tracker = _Progress(progress, cancel, len(lead) * units)
    out = None
    with _prepared(generator, settings, hw, tracker) as run:
        for index in lead:
            tracker.check()
            src = as_rgb(arr[index], name="image", min_size=MIN_SIZE, full_scale=scale)
            h, w = src.rgb.shape[:2]
            gain = exposure_gain(src.rgb)  # the radiance is brightened with the image's gain, not its own
            rad01, rad_gain = None, gain
            if rad is not None:
                rad_src = as_rgb(rad[index], name="radiance", min_size=MIN_SIZE, full_scale=scale)
                if rad_src.rgb.shape != src.rgb.shape:
                    raise RefocusError(
                        f"radiance slices are {rad_src.rgb.shape[:2]}; the image's are {src.rgb.shape[:2]}."
                    )
                if rad_src.was_gray and not src.was_gray:
                    # G2 would take the missing colour as the scene's and shift every hue of the output
                    raise RefocusError(
                        "the radiance is grayscale but the image is in colour: use the radiance deblurred from "
                        "this image (or a colour one of the same scene)."
                    )
                rad01 = rad_src.rgb
            elif g1 is not None:
                with _prepared(g1, settings, hw, tracker) as run1:
                    x = _deblur_input(src.rgb, g1, sml_params, gain)
                    rad01, rad_gain = _to_image(_forward(g1, x, None, settings, run1, tracker), h, w), 1.0
                    del x
            x = _refocus_input(src.rgb, rad01, generator, gain, rad_gain)
            src.rgb = rad01 = None  # x holds the pixels now
            y = _forward(generator, x, d, settings, run, tracker)
            del x
            out = store_slice(out, src.restore(_to_image(y, h, w, gain)), arr.shape, lead, index)
    return out


# --------------------------------------------------------------------------------------------- layout


def _settings(device, tile, margin, precision) -> RunSettings:
    s = RunSettings(None if device is None else pick_device(device), tile, margin, precision)
    s.check()
    _autocast_dtype(s.device or torch.device("cpu"), precision)  # validates the name early
    return s


def _network_slices(
    image, rgb: bool | None, name: str, full_scale: float | None
) -> tuple[np.ndarray, list[tuple], tuple[int, int], float | None]:
    """:func:`~.imaging.image_slices` with the networks' smallest image side."""
    return image_slices(image, rgb, name, min_size=MIN_SIZE, needed_by="the networks", full_scale=full_scale)


def tile_used(config: GeneratorConfig, hw: tuple[int, int], tile: int | None = None,
              margin: int | None = DEFAULT_MARGIN) -> int | None:  # fmt: skip
    """The tile core side that :func:`deblur`/:func:`refocus` take for H×W images when asked for ``tile`` (0 or
    None: auto): rounded to the stride grid and at least both blend margins; None when the image runs whole."""
    settings = RunSettings(None, tile or None, margin)
    settings.check()
    return settings.tile_for(_ceil4(hw[0]), _ceil4(hw[1]), config)


def _units(settings: RunSettings, hw: tuple[int, int], generator: Generator) -> int:
    """Progress steps per generator run on one slice."""
    hp, wp = (_ceil4(n) for n in hw)
    tile = settings.tile_for(hp, wp, generator.cfg)
    if tile is None:
        return 1
    margin = settings.margin_for(generator.cfg)
    n_tiles = len(_axis_plan(hp, tile, margin)) * len(_axis_plan(wp, tile, margin))
    return n_tiles * _tiled_passes(generator)


def _ceil4(n: int) -> int:
    return -(-n // 4) * 4


# --------------------------------------------------------------------------------------------- per slice


def _deblur_input(rgb01: np.ndarray, generator: Generator, sml_params: SMLParams, gain: float = 1.0) -> torch.Tensor:
    """G1's input for an (H, W, 3) image in [0, 1], brightened by ``gain`` (see imaging.exposure_gain): (1, 3|4, Hp,
    Wp), RGB in [-1, 1] + the focus channel of the brightened image."""
    h, w = rgb01.shape[:2]
    with torch.inference_mode():
        rgb_t = torch.from_numpy(rgb01).permute(2, 0, 1)[None]  # (1, 3, H, W), a view
        channels = generator.cfg.in_channels
        x = torch.empty((1, channels, _ceil4(h), _ceil4(w)), dtype=torch.float32)
        x[0, :3, :h, :w] = rgb_t[0]
        if gain != 1:
            x[0, :3, :h, :w].mul_(gain)
        x[0, :3, :h, :w].clamp_(0, 1)  # float input may overshoot [0, 1] slightly (FLOAT_RANGE_SLACK)
        if channels == 4:
            _focus_into(x[0, 3, :h, :w], x[:, :3, :h, :w], sml_params)
        return _signed_and_padded(x, h, w, 3)


def _refocus_input(
    rgb01: np.ndarray,
    radiance01: np.ndarray | None,
    generator: Generator,
    gain: float = 1.0,
    radiance_gain: float = 1.0,
) -> torch.Tensor:
    """G2's input: (1, 6, Hp, Wp) RGB + radiance in [-1, 1] (or RGB only for a single-stage G2), each multiplied by
    its gain (see imaging.exposure_gain)."""
    h, w = rgb01.shape[:2]
    with torch.inference_mode():
        channels = generator.cfg.in_channels
        x = torch.empty((1, channels, _ceil4(h), _ceil4(w)), dtype=torch.float32)
        x[0, :3, :h, :w] = torch.from_numpy(rgb01).permute(2, 0, 1)
        if channels == 6:
            x[0, 3:, :h, :w] = torch.from_numpy(radiance01).permute(2, 0, 1)
        for image, image_gain in ((x[0, :3, :h, :w], gain), (x[0, 3:, :h, :w], radiance_gain)):
            if image_gain != 1:
                image.mul_(image_gain)
        return _signed_and_padded(x, h, w, channels)


def _focus_into(dest: torch.Tensor, rgb_t: torch.Tensor, params: SMLParams) -> None:
    """G1's focus channel of the whole image, computed in row strips whose overlap covers SML's reach
    (window radius + Laplacian step), so that every strip equals the whole-image result."""
    h = rgb_t.shape[-2]
    reach = params.window // 2 + params.step
    for y0 in range(0, h, FOCUS_STRIP_ROWS):
        y1 = min(h, y0 + FOCUS_STRIP_ROWS)
        a, b = max(0, y0 - reach), min(h, y1 + reach)
        dest[y0:y1] = focus_channel(rgb_t[:, :, a:b], params)[0, 0, y0 - a : y1 - a]


def _signed_and_padded(x: torch.Tensor, h: int, w: int, n_image_channels: int) -> torch.Tensor:
    """Map the image channels [0, 1] → [-1, 1] in place (the focus channel already is) and fill the pad
    rows/columns by reflection, as F.pad(mode="reflect") would, without a second full-size copy."""
    images = x[0, :n_image_channels, :h, :w]
    images.clamp_(0, 1).mul_(2).sub_(1)  # float input may overshoot [0, 1] slightly (FLOAT_RANGE_SLACK)
    hp, wp = x.shape[-2:]
    for j in range(wp - w):  # columns w, w+1, … mirror w−2, w−3, …
        x[0, :, :h, w + j] = x[0, :, :h, w - 2 - j]
    for i in range(hp - h):
        x[0, :, h + i, :] = x[0, :, h - 2 - i, :]
    return x


def _to_image(y: torch.Tensor, h: int, w: int, gain: float = 1.0) -> np.ndarray:
    """(3, Hp, Wp) in [-1, 1] → (H, W, 3) float32 in [0, 1], divided by the input's ``gain``, reusing ``y``'s
    memory for the arithmetic."""
    with torch.inference_mode():
        return y.add_(1).mul_(0.5 / gain)[:, :h, :w].permute(1, 2, 0).contiguous().numpy()


# --------------------------------------------------------------------------------------------- forward


@torch.inference_mode()
def _forward(generator, x, delta, settings, run, tracker) -> torch.Tensor:
    """(1, C, Hp, Wp) CPU input → (3, Hp, Wp) CPU float32 output, whole or tiled. ``run``: what
    :func:`_prepared` yields (device, autocast dtype, channels_last)."""
    device, autocast, channels_last = run
    hp, wp = x.shape[-2:]
    tile = settings.tile_for(hp, wp, generator.cfg)
    if tile is None:
        tracker.check()
        # and between residual blocks, so that a large untiled image stops within a fraction of a forward
        hooks = [m.register_forward_pre_hook(lambda *_: tracker.check()) for m in (*generator.blocks, generator.up)]
        try:
            y = _run(generator, x, delta, device, autocast, channels_last)[0]
        finally:
            for h in hooks:
                h.remove()
        tracker.step()
        return y
    return _tiled_forward(generator, x, delta, tile, settings, device, autocast, channels_last, tracker)


def _run(generator, x: torch.Tensor, delta, device, autocast, channels_last: bool) -> torch.Tensor:
    x_cpu = x
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with nullcontext() if autocast is None else torch.autocast(device.type, dtype=autocast):
        if delta is None:
            y = generator(x, delta, encoded=_encode(generator, x, device, channels_last))
        else:
            encoded, blurs = _delta_free_parts(generator, x, x_cpu, device, autocast, channels_last)
            y = generator(x, delta, encoded=encoded, blurs=blurs)
    return y.float().cpu()


def _encode(generator: Generator, x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """The encoder's output in the layout of the layers after it (see :func:`_set_memory_layout`)."""
    y = generator.encode(x)
    return y.contiguous(memory_format=torch.channels_last) if _channels_last_after_encoder(device, channels_last) else y


# The last G2 input's encoder output and blurs, which do not depend on δ: turning the δ box reruns only
# the rest of the network. One entry, for images up to DELTA_CACHE_MAX_PIXELS (bounded memory).
_delta_cache: dict = {}
DELTA_CACHE_MAX_PIXELS = 1 << 20


def _delta_free_parts(generator, x, x_cpu, device, autocast, channels_last):
    if x.shape[-2] * x.shape[-1] > DELTA_CACHE_MAX_PIXELS:
        return _encode(generator, x, device, channels_last), None  # not kept: too large
    # the encoder's weights: where they live and their versions (in-place updates, load_state_dict, bump them)
    weights = tuple((p.data_ptr(), p._version) for p in (*generator.head.parameters(), *generator.down.parameters()))
    data = np.ascontiguousarray(x_cpu.numpy())
    key = (id(generator), weights, str(device), str(autocast), x.shape,
           hashlib.blake2b(memoryview(data).cast("B"), digest_size=16).digest())  # fmt: skip
    cached_key, parts = _delta_cache.get("entry", (None, None))
    if cached_key != key:
        _delta_cache.clear()  # drop the old tensors before making new ones
        parts = (_encode(generator, x, device, channels_last), generator.source_blurs(x))
        _delta_cache["entry"] = (key, parts)  # one assignment: threads see a matching key and value
    return parts


@dataclass(frozen=True)
class _Span:
    """One tile along one axis: core [c0, c1) inside window [w0, w1), blended over ``blend`` pixels."""

    c0: int
    c1: int
    w0: int
    w1: int
    length: int
    blend: int

    def weights(self) -> tuple[int, int, torch.Tensor]:
        """(start, stop, weight) over the part of the window that contributes. Raised-cosine ramps
        centred on the core edges: at a shared edge this tile's cos² and the neighbour's sin² sum to 1."""
        b = self.blend
        start = self.w0 if self.c0 == 0 else self.c0 - b // 2
        stop = self.w1 if self.c1 == self.length else self.c1 + b // 2
        p = torch.arange(start, stop, dtype=torch.float64) + 0.5
        wgt = torch.ones_like(p)
        if b > 0:
            if self.c0 > 0:
                wgt *= torch.sin(0.5 * math.pi * ((p - (self.c0 - b / 2)) / b).clamp(0, 1)) ** 2
            if self.c1 < self.length:
                wgt *= torch.cos(0.5 * math.pi * ((p - (self.c1 - b / 2)) / b).clamp(0, 1)) ** 2
        return start, stop, wgt.float()


def _axis_plan(length: int, tile: int, margin: int) -> list[_Span]:
    """Split [0, length) into nearly equal cores on the stride-4 grid, each widened by ``margin``."""
    n = max(1, math.ceil(length / tile))
    bounds = [min(length, _round4(length * i / n)) for i in range(n + 1)]
    bounds[-1] = length
    blend = margin // 2  # the least context any weighted pixel gets is margin − blend/2
    return [
        _Span(a, b, max(0, a - margin), min(length, b + margin), length, blend) for a, b in itertools.pairwise(bounds)
    ]


class _Moments:
    """Per-channel mean and variance merged over tiles (Chan et al.'s parallel update, in float64)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, n: int, mean: torch.Tensor, var: torch.Tensor) -> None:
        mean, var = mean.double().cpu(), var.double().cpu()
        if self.n == 0:
            self.n, self.mean, self.m2 = n, mean, var * n
            return
        total = self.n + n
        diff = mean - self.mean
        self.mean = self.mean + diff * (n / total)
        self.m2 = self.m2 + var * n + diff**2 * (self.n * n / total)
        self.n = total

    def stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        return self.mean.float().view(shape).to(device), (self.m2 / self.n).float().view(shape).to(device)


class _CoreMoments(_Moments):
    """A pre-hook for one InstanceNorm: adds the moments of its input over the current tile's core, then
    stops the forward (nothing after this norm is needed for its statistics)."""

    tile: tuple[_Span, _Span]

    def hook(self, module, args) -> None:
        a = args[0]
        r, c = self.tile
        s = (r.w1 - r.w0) // a.shape[-2]  # this layer's stride: 1, 2 or 4
        core = a[..., (r.c0 - r.w0) // s : (r.c1 - r.w0) // s, (c.c0 - c.w0) // s : (c.c1 - c.w0) // s]
        var, mean = torch.var_mean(core.float(), dim=(0, 2, 3), correction=0)
        self.add(core.shape[0] * core.shape[-2] * core.shape[-1], mean, var)
        raise _Stop


class _Stop(Exception):
    """Ends a statistics pass at the InstanceNorm being measured; the rest of the stage is not needed."""


def _stages(
    generator: Generator, x: torch.Tensor, delta_map: torch.Tensor | None, modulations: list | None, channels_last: bool
):
    """The generator's forward split at the bottleneck, as (run(tile, cached input) → output, modules whose
    InstanceNorms it runs, in order): the encoder (head, down, δ fusion), each residual block, and the
    decoder (up, then :meth:`Generator.output`). Together they compute exactly :meth:`Generator.forward`
    (the tiled-vs-untiled tests hold them to it)."""

    def window(tile, device) -> torch.Tensor:
        r, c = tile
        xw = x[..., r.w0 : r.w1, c.w0 : c.w1].to(device, non_blocking=True)
        return xw.contiguous(memory_format=torch.channels_last) if channels_last else xw

    def encode(tile, _, device):
        y = generator.down(generator.head(window(tile, device)))
        if delta_map is not None:
            r, c = tile
            crop = delta_map[..., r.w0 // 4 : r.w1 // 4, c.w0 // 4 : c.w1 // 4]
            y = generator.fuse(torch.cat([y, crop.to(y.dtype)], dim=1))
        return y

    def block(k):
        module, modulation = generator.blocks[k], None if modulations is None else modulations[k]
        return lambda tile, y, device: module(y, modulation)

    def decode(tile, y, device):
        return generator.output(window(tile, device), generator.up(y))

    return (
        [(encode, [generator.head, generator.down])]
        + [(block(k), [b]) for k, b in enumerate(generator.blocks)]
        + [(decode, [generator.up])]
    )


def _tiled_passes(generator: Generator) -> int:
    """Passes over the tiles: one per InstanceNorm (its statistics) plus one per stage (its output)."""
    n_norms = sum(isinstance(m, InstanceNorm) for m in generator.modules())
    return n_norms + len(generator.blocks) + 2


def _tiled_forward(generator, x, delta, tile, settings, device, autocast, channels_last, tracker) -> torch.Tensor:
    """Exact tiled forward: stage by stage, each InstanceNorm's whole-image statistics are measured over
    the tile cores with the earlier ones fixed, then the stage's output is cached per tile window."""
    hp, wp = x.shape[-2:]
    margin = settings.margin_for(generator.cfg)
    tiles = [(r, c) for r in _axis_plan(hp, tile, margin) for c in _axis_plan(wp, tile, margin)]
    delta_map = modulations = None
    if generator.cfg.delta_mode != "none":
        # the whole image's δ map, cropped per tile (run whole, the network resizes it to the image)
        delta_t = torch.tensor([float(delta)], device=device)
        delta_map = generator.delta(delta_t, (hp // 4, wp // 4))
        modulations = generator.block_modulations(delta_t)
    norms = [m for m in generator.modules() if isinstance(m, InstanceNorm)]
    cache: list[torch.Tensor | None] = [None] * len(tiles)
    out = torch.zeros((3, hp, wp), dtype=torch.float32)
    stages = _stages(generator, x, delta_map, modulations, channels_last)

    def run(fn, i):
        cached = cache[i] if cache[i] is None else cache[i].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast) if autocast is not None else nullcontext():
            return fn(tiles[i], cached, device)

    try:
        for k, (fn, modules) in enumerate(stages):
            for norm in [m for mod in modules for m in mod.modules() if isinstance(m, InstanceNorm)]:
                recorder = _CoreMoments()
                handle = norm.register_forward_pre_hook(recorder.hook)
                try:
                    for i, tile_i in enumerate(tiles):
                        tracker.check()
                        recorder.tile = tile_i
                        try:
                            run(fn, i)
                        except _Stop:
                            pass
                        tracker.step()
                finally:
                    handle.remove()
                norm.fixed_stats = recorder.stats(device)
            last = k == len(stages) - 1
            for i, (r, c) in enumerate(tiles):
                tracker.check()
                y = run(fn, i)
                if last:
                    y0, y1, wy = r.weights()
                    x0, x1, wx = c.weights()
                    crop = y[0, :, y0 - r.w0 : y1 - r.w0, x0 - c.w0 : x1 - c.w0].float().cpu()
                    out[:, y0:y1, x0:x1] += crop * (wy[:, None] * wx[None, :])
                    cache[i] = None
                else:
                    cache[i] = y if device.type == "cpu" else y.cpu()
                tracker.step()
        return out
    finally:
        for norm in norms:
            norm.fixed_stats = None
