"""Synthetic light fields: layered, occluding fronto-parallel planes at known disparities.

Deterministic from a seed. Used as the embedded sample, by the tests and by training. Each plane carries
a texture (a photograph bundled with scikit-image or a procedural pattern) and a "dead leaves" or blob
mask. Views are rendered at ``supersample``× resolution and box-downsampled, so that off-centre views
carry no more interpolation blur than the centre view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .errors import RefocusError, check_real, check_whole
from .focalstack import StackConfig, shift_bilinear

# Photographs shipped inside scikit-image (no download).
_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
    "brick", "grass", "gravel", "camera", "moon", "coins", "text", "page", "retina",
)  # fmt: skip


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


@dataclass(frozen=True)
class Photometric:
    """Camera-like effects applied identically to every view: exposure, gamma, vignetting, sensor noise."""

    exposure: float = 1.0
    gamma: float = 1.0
    vignetting: float = 0.0  # relative darkening at the image corners
    noise_sigma: float = 0.0  # per-view Gaussian noise, in [0, 1] units

    @staticmethod
    def random(rng: np.random.Generator) -> "Photometric":
        # Real Lytro captures are dark (mean ≈ 0.17); renders of photographs are ≈ 0.4. Cover both.
        return Photometric(
            exposure=float(np.exp(rng.uniform(np.log(0.3), np.log(1.2)))),
            gamma=float(rng.uniform(0.8, 1.6)),
            vignetting=float(rng.uniform(0.0, 0.3)),
            noise_sigma=float(rng.choice([0.0, rng.uniform(0.0, 0.02)])),
        )


@dataclass
class SyntheticScene:
    """views: (R, C, H, W, 3) float32 in [0, 1]; disparity: (H, W) of the centre view, px per view step."""

    views: np.ndarray
    disparity: np.ndarray
    layer_disparities: list[float]
    seed: int
    photometric: Photometric = field(default_factory=Photometric)

    @property
    def centre(self) -> np.ndarray:
        r, c = self.views.shape[:2]
        return self.views[(r - 1) // 2, (c - 1) // 2]


def default_disparity_range(config: StackConfig = StackConfig()) -> tuple[float, float]:
    """Slopes spanned by the kept slices, widened by one slice on each side."""
    s = config.slopes()
    return float(s[0] - config.slope_step), float(s[-1] + config.slope_step)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An (h, w, 3) texture: a randomly scaled, flipped, colour-jittered photo crop, or procedural noise."""
    kind = rng.random()
    if kind < 0.75:
        photo = _photo(str(rng.choice(_PHOTOS)))
        scale = float(np.exp(rng.uniform(np.log(0.6), np.log(3.0))))
        ch = min(photo.shape[0], int(np.ceil(h / scale)))
        cw = min(photo.shape[1], int(np.ceil(w / scale)))
        y0 = rng.integers(0, photo.shape[0] - ch + 1)
        x0 = rng.integers(0, photo.shape[1] - cw + 1)
        crop = photo[y0 : y0 + ch, x0 : x0 + cw]
        t = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None]
        tex = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        tex = tex[0].permute(1, 2, 0).numpy()
        if rng.random() < 0.5:
            tex = tex[:, ::-1]
        gain = rng.uniform(0.6, 1.3, size=3).astype(np.float32)
        tex = np.clip(tex * gain + rng.uniform(-0.1, 0.1), 0, 1)
    else:
        # 1/f coloured noise: natural-image-like spectrum, no photo structure
        noise = rng.standard_normal((h, w, 3)).astype(np.float32)
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.fftfreq(w)[None, :]
        amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w)) ** rng.uniform(0.8, 1.3)
        tex = np.real(np.fft.ifft2(np.fft.fft2(noise, axes=(0, 1)) * amp[..., None], axes=(0, 1)))
        tex = (tex - tex.mean()) / (tex.std() + 1e-8) * rng.uniform(0.08, 0.2) + rng.uniform(0.2, 0.8, size=3)
        tex = np.clip(tex, 0, 1).astype(np.float32)
    return np.ascontiguousarray(tex, dtype=np.float32)


def _mask(rng: np.random.Generator, h: int, w: int, coverage: float) -> np.ndarray:
    """A binary occluder mask: a few dead-leaves disks or a smooth blob, roughly ``coverage`` of the frame."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        m = np.zeros((h, w), dtype=bool)
        n = int(rng.integers(1, 6))
        for _ in range(n):
            r = np.sqrt(coverage * h * w / (np.pi * n)) * rng.uniform(0.6, 1.4)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            m |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    else:
        smooth = ndimage.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), sigma=min(h, w) / 10)
        m = smooth > np.quantile(smooth, 1 - coverage)
    return m.astype(np.float32)


def render_scene(
    seed: int,
    size: tuple[int, int] = (256, 256),
    *,
    grid: int = 7,
    n_layers: int | None = None,
    disparity_range: tuple[float, float] | None = None,
    supersample: int = 2,
    randomize_photometric: bool = False,
    back_disparity: float | None = None,
) -> SyntheticScene:
    """Render a grid×grid light field of a layered scene.

    A plane of disparity d appears in view (r, c) displaced by d·(r − r_c, c − c_c) from the centre view,
    the same convention as :mod:`.focalstack`, so its sharpest slice has slope ≈ d. Larger d is farther
    (it is occluded by smaller d). ``back_disparity`` (at least the range's far end) puts the back layer,
    which covers the whole frame, at that disparity: a background far outside the range, as in real scenes.
    """
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise RefocusError(f"size must be a (height, width) pair, got {size!r}.")
    h, w = size
    for value, what in ((seed, "seed"), (h, "height"), (w, "width"), (grid, "grid"), (supersample, "supersample")):
        check_whole(value, what)  # seed=None would give another scene at each call
    if n_layers is not None:
        check_whole(n_layers, "n_layers")
    if h < 8 or w < 8 or grid < 1 or supersample < 1 or seed < 0 or (n_layers is not None and n_layers < 1):
        raise RefocusError(f"synthetic scenes need at least 8×8 pixels, one view, one layer, supersample ≥ 1 and "
                           f"a seed ≥ 0; got size {size}, grid {grid}, n_layers {n_layers}, supersample "
                           f"{supersample}, seed {seed}.")  # fmt: skip
    rng = np.random.default_rng(seed)
    lo, hi = disparity_range if disparity_range is not None else default_disparity_range()
    far = hi if back_disparity is None else back_disparity
    for value in (lo, hi, far):
        check_real(value, "disparity")
    # as shift_and_sum: beyond a shift of the image's size between centre and outer views there is no scene left
    if not lo <= hi or max(abs(lo), abs(far)) * (grid - 1) / 2 > max(h, w):
        raise RefocusError(f"disparities {lo:g}…{far:g} px/view must be ordered and shift the outer views of a "
                           f"{grid}×{grid} grid by at most the {h}×{w} image's size.")  # fmt: skip
    n = int(n_layers) if n_layers is not None else int(rng.integers(2, 7))
    disparities = sorted(rng.uniform(lo, hi, size=n).tolist(), reverse=True)  # far (large d) first
    if back_disparity is not None:
        if not back_disparity >= hi:
            raise RefocusError(f"back_disparity {back_disparity} must be at least the range's far end {hi}.")
        disparities[0] = float(back_disparity)
    ss = supersample
    half = (grid - 1) / 2
    margin = int(np.ceil(max(abs(lo), abs(hi), abs(disparities[0])) * half * ss)) + 2
    hh, ww = h * ss + 2 * margin, w * ss + 2 * margin

    layers = []  # (rgb+mask tensor (4, hh, ww), d)
    for i, d in enumerate(disparities):
        tex = _texture(rng, hh, ww)
        mask = np.ones((hh, ww), np.float32) if i == 0 else _mask(rng, hh, ww, rng.uniform(0.1, 0.45))
        rgba = torch.from_numpy(np.concatenate([tex, mask[..., None]], axis=-1)).permute(2, 0, 1).contiguous()
        layers.append((rgba, d))

    views = np.empty((grid, grid, h, w, 3), np.float32)
    for r in range(grid):
        for c in range(grid):
            acc = torch.zeros((3, hh, ww))
            for rgba, d in layers:  # back to front
                # Content moves by +d·offset, i.e. sample at −d·offset (supersampled pixels).
                moved = shift_bilinear(rgba, -d * (r - half) * ss, -d * (c - half) * ss)
                a = moved[3:4]
                acc = acc * (1 - a) + moved[:3] * a
            crop = acc[:, margin : margin + h * ss, margin : margin + w * ss]
            views[r, c] = F.avg_pool2d(crop[None], ss)[0].permute(1, 2, 0).numpy()

    # Centre-view disparity: the front-most layer covering each pixel.
    disparity = np.full((h, w), disparities[0], np.float32)
    for rgba, d in layers[1:]:
        m = F.avg_pool2d(rgba[3:4, margin : margin + h * ss, margin : margin + w * ss][None], ss)[0, 0].numpy()
        disparity[m >= 0.5] = d

    photometric = Photometric.random(rng) if randomize_photometric else Photometric()
    views = apply_photometric(views, photometric, rng)
    return SyntheticScene(views, disparity, disparities, seed, photometric)


def apply_photometric(views: np.ndarray, p: Photometric, rng: np.random.Generator) -> np.ndarray:
    """Exposure, gamma and vignetting (same for every view), then independent noise per view."""
    if p == Photometric():
        return views
    h, w = views.shape[-3:-1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rad2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    vignette = (1 - p.vignetting * rad2 / 2)[..., None]
    out = np.clip(views * p.exposure, 0, 1) ** p.gamma * vignette
    if p.noise_sigma > 0:
        out = out + rng.normal(0, p.noise_sigma, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 1).astype(np.float32)


SAMPLE_SEED = 20181008  # ECCV 2018 opening day; any fixed seed would do


def sample_scene() -> SyntheticScene:
    """The embedded sample for the demo, napari's sample data and the README."""
    return render_scene(SAMPLE_SEED, size=(240, 320), n_layers=4)
