"""Training and evaluation data: paper-protocol focal stacks from light fields, as (input, target) pairs.

Sources
-------
* Synthetic layered scenes (:func:`napari_refocusgan.core.synthetic.render_scene`), split by seed:
  train seeds ``0 … train_scenes−1``, validation seeds from ``VAL_SEED_BASE``, test seeds from
  ``TEST_SEED_BASE`` — disjoint and the same on every run.
* Light-field files or view folders given as ``data_paths`` (read with
  :func:`napari_refocusgan.core.lightfield.read_lightfield`), split deterministically by a hash of the
  file name: 70 % train, 5 % validation, 25 % test (the paper's 2500 / 843 of 3343 is 75 / 25).
  The HCI benchmark scene (any path containing ``hci_antinous``) is test-only, never trained on.

Every scene becomes the paper's stack (:func:`~napari_refocusgan.core.focalstack.focal_stack` with the
default :class:`StackConfig`: central 7×7 views, 10 slices) plus the centre view (the in-focus target).
Scenes are rendered once into ``cache_dir`` (one folder of ``.npy`` files per scene, float16 to halve
the disk size) by a process pool and memory-mapped afterwards.

Pairs
-----
* deblur (G1): every slice → the centre view. The focus channel is computed on the whole (augmented)
  slice before cropping, exactly as inference computes it on the whole image.
* refocus (G2): slice i → slice i+δ, both inside the 10-slice stack (|δ| ≤ 9). Continuous δ renders
  the target at the fractional slope ``α_i + δ·step`` from the cached views (shift-and-sum accepts any
  slope), on the crop window plus a margin so that it equals the full-image slice.

Realism (the shipped weights must work on real captures, which are darker, noisier and JPEG-compressed
than clean renders): scenes draw their layer count, textures, disparity range (sometimes far wider than
the kept slopes: real scenes are not confined to them; with ``far_background`` a share of the training
scenes also has its background far beyond the stack), exposure, gamma and vignetting at random; the
*input* slice then gets sensor noise and JPEG compression (quality 70–95) while the target stays clean —
a real wide-aperture photo carries its own noise, which the network should not learn to reproduce.
A fraction of deblur items are already-sharp images (the centre view itself) mapped to themselves, so
that in-focus content learns to pass through unchanged.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import StackConfig, centre_view, focal_stack, shift_and_sum
from napari_refocusgan.core.focus import focus_channel
from napari_refocusgan.core.synthetic import Photometric, apply_photometric, render_scene

from .configs import check_share, radiance_source

TASKS = ("deblur", "refocus")
SPLITS = ("train", "val", "test")
VAL_SEED_BASE = 500_000
TEST_SEED_BASE = 1_000_000
# Salt of every random stream of a synthetic training scene (its seed comes first).
SCENE_SALT = 20181008
# Bump when the rendering recipe changes, so that stale caches are not reused.
CACHE_VERSION = "v2"
DEFAULT_CACHE_DIR = "runs/cache"
HCI_MARKER = "hci_antinous"  # test-only real scene
STACK = StackConfig()  # the paper protocol: 7×7 views, 30 slopes in ±1.5, keep 6..15
# A far background (``far_background``): the back layer this many slices beyond the last kept slice.
# HCI's background lies 23–30 slices beyond the paper window. With 7×7 views a slice blurs a plane k slices
# away over a disk of radius 3·k·step px: 2.5 px (8 slices from the last kept slice) to 13.7 px (44 from the
# first). Cached under its own key; changing this range changes the scenes, so bump CACHE_VERSION with it.
FAR_BACKGROUND_SLICES = (8.0, 35.0)
MAX_DELTA = len(STACK.slopes()) - 1  # 9: both slices must stay inside the 10-slice stack
# A pixel is in focus in a slice when its disparity lies within this many slices of the slice's slope
# (the quality bar's in-focus pixels, and what --in-focus-weight protects in training).
IN_FOCUS_SLICES = 0.5
DELTA_SETS = {
    "8": (8.0,),
    "4": (-9.0, -5.0, 5.0, 9.0),
    "19": tuple(float(d) for d in range(-9, 10)),
}


# ----------------------------------------------------------------------------------------------- config


def _cfg(config, name: str, default):
    value = getattr(config, name, default)
    return default if value is None else value


@dataclass(frozen=True)
class Augment:
    """Input-only degradations and pair mixing, each drawn per item (train split only)."""

    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (70, 95)
    noise_prob: float = 0.5  # on top of the scene's own sensor noise level
    max_noise: float = 0.015
    identity_prob: float = 0.1  # deblur: a sharp image that must come out unchanged
    clean_prob: float = 0.0  # input left clean (no sensor noise, no JPEG): clean inputs must not be smoothed
    true_radiance_share: float = 0.5  # "mix:PATH" radiance: share of G2 items given the true one, not G1's
    flips: bool = True

    @staticmethod
    def from_config(config) -> "Augment":
        base = Augment()
        return replace(
            base,
            jpeg_prob=float(_cfg(config, "jpeg_prob", base.jpeg_prob)),
            noise_prob=float(_cfg(config, "noise_prob", base.noise_prob)),
            identity_prob=float(_cfg(config, "identity_prob", base.identity_prob)),
            clean_prob=float(_cfg(config, "clean_prob", base.clean_prob)),
            true_radiance_share=float(_cfg(config, "true_radiance_share", base.true_radiance_share)),
        )


# -------------------------------------------------------------------------------------------- synthetic


def split_seeds(split: str, count: int) -> list[int]:
    """The scene seeds of a split: disjoint ranges, identical on every run."""
    if split not in SPLITS:
        raise RefocusError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    if count < 0:
        raise RefocusError(f"the number of scenes must be ≥ 0, got {count}.")
    if split == "train" and count > VAL_SEED_BASE:
        raise RefocusError(f"at most {VAL_SEED_BASE} training scenes (seed ranges must stay disjoint).")
    base = {"train": 0, "val": VAL_SEED_BASE, "test": TEST_SEED_BASE}[split]
    return list(range(base, base + count))


def scene_disparity_range(rng: np.random.Generator) -> tuple[float, float]:
    """Half the scenes span the kept slopes (±1 slice, the paper's data); the rest are wider, shifted or
    narrow, so that slices also see heavy blur and nearly all-in-focus content, as real captures do."""
    s = STACK.slopes()
    lo, hi = float(s[0] - STACK.slope_step), float(s[-1] + STACK.slope_step)
    u = rng.random()
    if u < 0.5:
        return lo, hi
    centre = float(rng.uniform(lo, hi))
    if u < 0.8:  # wide: up to ±2.5 px per view around a random centre (HCI reaches ±3)
        half = float(rng.uniform(0.8, 2.5))
    else:  # narrow: few distinct depths, a slice is either sharp or not
        half = float(rng.uniform(0.1, 0.5))
    return centre - half, centre + half


def has_far_background(seed: int, share: float) -> bool:
    """Whether training scene ``seed`` is one of the ``share`` whose background lies far beyond the stack.
    Drawn from a random stream of its own, so that a scene's layer count, disparity range and photometry
    do not depend on ``share``; a smaller share picks a subset of a larger one's scenes."""
    return share > 0 and float(np.random.default_rng([seed, SCENE_SALT, 1]).random()) < share


def render_training_scene(seed: int, size: int, far_background: bool = False) -> dict[str, np.ndarray]:
    """One synthetic scene as the cache stores it: stack (10, H, W, 3), centre (H, W, 3), views
    (7, 7, H, W, 3), disparity (H, W) and the scene's input-noise level, all deterministic in ``seed``.
    With ``far_background`` the back layer sits FAR_BACKGROUND_SLICES beyond the last kept slice (or at
    the scene's far end, if that is farther): every slice sees it heavily blurred, as in real captures."""
    rng = np.random.default_rng([seed, SCENE_SALT])
    n_layers = int(rng.integers(1, 7))
    lo, hi = scene_disparity_range(rng)
    back = None
    if far_background:
        beyond = float(np.random.default_rng([seed, SCENE_SALT, 2]).uniform(*FAR_BACKGROUND_SLICES))
        back = max(hi, float(STACK.slopes()[-1]) + beyond * STACK.slope_step)
    scene = render_scene(
        seed, (size, size), grid=STACK.views, n_layers=n_layers, disparity_range=(lo, hi), back_disparity=back
    )
    # Exposure, gamma and vignetting on every view (targets included); sensor noise only on the input.
    photo = Photometric.random(rng)
    views = apply_photometric(scene.views, replace(photo, noise_sigma=0.0), rng)
    stack, _, _ = focal_stack(views, STACK)
    return {
        "stack": stack,
        "centre": centre_view(views),
        "views": views,
        "disparity": scene.disparity,
        "noise": np.float32(photo.noise_sigma),
    }


# ------------------------------------------------------------------------------------------ real data

LF_SUFFIXES = (".png", ".lfr", ".lfp", ".tif", ".tiff", ".jpg", ".jpeg")  # files the plugin's readers take


def _is_view_folder(path: Path) -> bool:
    """An HCI (input_CamNNN) or NAME_RR_CC view folder, recognised by the plugin's own format detection."""
    from napari_refocusgan.core.lightfield import FORMAT_HCI, FORMAT_VIEW_GRID, detect_format

    return path.is_dir() and detect_format(path) in (FORMAT_HCI, FORMAT_VIEW_GRID)


def list_lightfields(data_paths: Sequence[str]) -> list[Path]:
    """Every light field under ``data_paths`` (files or view folders), sorted, with a clear error for
    paths that do not exist or hold nothing readable."""
    found: list[Path] = []
    for raw in data_paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise RefocusError(f"data path {path} does not exist.")
        if path.is_file():
            from napari_refocusgan.core.lightfield import detect_format

            if detect_format(path) is None:  # else an ordinary image was blamed on the data split
                raise RefocusError(f"data path {path} is not a light field (expected an ESLF image, a Lytro file or a "
                                   "view folder); an ordinary image or stack cannot be trained on.")  # fmt: skip
            found.append(path)
            continue
        if _is_view_folder(path):
            found.append(path)
            continue
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        items = [p for p in entries if _is_view_folder(p) or (p.is_file() and p.suffix.lower() in LF_SUFFIXES)]
        if not items:
            raise RefocusError(
                f"data path {path} holds no light fields (expected HCI or NAME_RR_CC view folders, or "
                f"light-field files: {', '.join(LF_SUFFIXES)})."
            )
        found.extend(items)
    return sorted(set(found))


def file_split(path: Path) -> str:
    """train / val / test for a light-field file, from a hash of its name (stable across machines)."""
    if HCI_MARKER in str(path).lower():
        return "test"
    h = int(hashlib.sha1(path.name.encode()).hexdigest()[:8], 16) / 16**8
    return "train" if h < 0.70 else ("val" if h < 0.75 else "test")


def read_views(path: Path) -> np.ndarray:
    """(R, C, H, W, 3) float32 views of a light field, through the plugin's reader when it exists."""
    if HCI_MARKER in str(path) or _is_view_folder(path):
        try:
            return read_hci_views(path)
        except RefocusError:
            if not _is_view_folder(path):
                raise
    try:
        from napari_refocusgan.core.lightfield import read_lightfield
    except ImportError as exc:
        raise RefocusError(f"cannot read {path}: this build has no light-field reader yet.") from exc
    lf = read_lightfield(path)
    if lf.views is None:
        raise RefocusError(f"{path} holds no views (a processed focal stack?); training needs light fields.")
    return np.asarray(lf.views, dtype=np.float32)


def read_hci_views(folder: Path, scale: int = 1) -> np.ndarray:
    """The HCI benchmark's 9×9 ``input_CamNNN.png`` views (row-major) as (9, 9, H, W, 3) float32, read by the
    plugin's reader (which places each view by its number and names missing ones); ``scale`` > 1
    box-downsamples them (which divides the disparities by ``scale``)."""
    from napari_refocusgan.core.formats.viewgrid import read_view_folder

    views = read_view_folder(folder).views
    rows, cols = views.shape[:2]
    if scale > 1:
        h, w = (views.shape[2] // scale) * scale, (views.shape[3] // scale) * scale
        v = views[:, :, :h, :w].reshape(rows, cols, h // scale, scale, w // scale, scale, 3)
        views = v.mean(axis=(3, 5), dtype=np.float32)
    return np.ascontiguousarray(views)


def read_hci_disparity(folder: Path, scale: int = 1) -> np.ndarray | None:
    """Ground-truth centre-view disparity **in this project's slope convention** (HCI's sign is the
    opposite: a pixel with HCI disparity d is sharpest at slope −d), or None when the file is missing."""
    from napari_refocusgan.core.formats.pfm import read_pfm

    path = Path(folder) / "gt_disp_lowres.pfm"
    if not path.exists():
        return None
    d = -read_pfm(path)
    if scale > 1:
        h, w = (d.shape[0] // scale) * scale, (d.shape[1] // scale) * scale
        d = d[:h, :w].reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3)) / scale
    return d.astype(np.float32)


def lightfield_scene(path: Path) -> dict[str, np.ndarray]:
    views = read_views(path)
    try:
        stack, _, _ = focal_stack(views, STACK)
    except RefocusError as exc:  # of several --data paths, say which
        raise RefocusError(f"{path}: {exc}") from None
    scene = {"stack": stack, "centre": centre_view(views), "views": views, "noise": np.float32(0)}
    if HCI_MARKER in str(path).lower():
        disp = read_hci_disparity(path)
        if disp is not None:
            scene["disparity"] = disp
    return scene


# -------------------------------------------------------------------------------------------- caching


def _scene_dir(cache_dir: Path, key: str) -> Path:
    return cache_dir / key


def synthetic_key(seed: int, size: int, far_background: bool = False) -> str:
    return f"synthetic-{CACHE_VERSION}{'-far' if far_background else ''}-{size}/seed_{seed:07d}"


def file_key(path: Path) -> str:
    p = path.resolve()
    digest = hashlib.sha1(f"{p}:{p.stat().st_mtime_ns}".encode()).hexdigest()[:12]
    return f"lightfield-{CACHE_VERSION}/{p.stem}-{digest}"


def _write_scene(target: Path, scene: dict[str, np.ndarray]) -> None:
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, arr in scene.items():
        arr = np.asarray(arr)
        np.save(tmp / f"{name}.npy", arr.astype(np.float16) if arr.ndim >= 2 else arr.astype(np.float32))
    if (target / "stack.npy").exists():  # another process (a DDP rank) finished it first: same scene
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)  # a leftover without stack.npy
    try:
        tmp.rename(target)  # atomic: a half-written scene is never read
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "stack.npy").exists():
            raise


# A job's source: a synthetic scene (seed, far background?) or a light-field path.
SceneSource = tuple[int, bool] | str


def _render_job(job: tuple[str, str, SceneSource, int]) -> str:
    cache_dir, key, source, size = job
    torch.set_num_threads(1)  # the pool provides the parallelism
    target = _scene_dir(Path(cache_dir), key)
    if not (target / "stack.npy").exists():
        if isinstance(source, tuple):
            scene = render_training_scene(source[0], size, far_background=source[1])
        else:
            scene = lightfield_scene(Path(source))
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_scene(target, scene)
    return key


def prepare_cache(jobs: list[tuple[str, SceneSource]], cache_dir: Path, size: int, workers: int) -> None:
    """Render the scenes that are not cached yet (``jobs``: (key, seed or light-field path))."""
    todo = [(str(cache_dir), k, s, size) for k, s in jobs if not (_scene_dir(cache_dir, k) / "stack.npy").exists()]
    if not todo:
        return
    print(f"[data] rendering {len(todo)} scene(s) into {cache_dir} with {workers} process(es)", flush=True)
    if workers <= 1 or len(todo) == 1:
        for job in todo:
            _render_job(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(_render_job, todo, chunksize=1):
            pass


class CachedScene:
    """Memory-mapped arrays of one cached scene (float32 on access)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray | None:
        if name not in self._arrays:
            path = self.folder / f"{name}.npy"
            if not path.exists():
                return None
            self._arrays[name] = np.load(path, mmap_mode="r")
        return self._arrays[name]

    @property
    def stack(self) -> np.ndarray:
        return self.get("stack")

    def slice(self, i: int) -> np.ndarray:
        return np.asarray(self.stack[i], dtype=np.float32)

    @property
    def centre(self) -> np.ndarray:
        return np.asarray(self.get("centre"), dtype=np.float32)

    @property
    def noise(self) -> float:
        n = self.get("noise")
        return 0.0 if n is None else float(n)


# ------------------------------------------------------------------------------------ item helpers


def to_signed(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, C) in [0, 1] → (C, H, W) float32 in [-1, 1]."""
    t = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
    return (t.permute(2, 0, 1) * 2 - 1).contiguous()


def from_signed(t: torch.Tensor) -> np.ndarray:
    """The inverse of :func:`to_signed` for a network output: (C, H, W) in [-1, 1] → (H, W, C) float32
    numpy, clipped to [0, 1]."""
    return ((t.detach().float().permute(1, 2, 0).cpu().numpy() + 1) / 2).clip(0, 1)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an (H, W, 3) float image as JPEG at ``quality`` (what a camera file went through)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def degrade_input(image: np.ndarray, rng: np.random.Generator, scene_noise: float, aug: Augment) -> np.ndarray:
    """Sensor noise then JPEG on an input image (never on the target); with ``clean_prob``, none."""
    if aug.clean_prob > 0 and rng.random() < aug.clean_prob:
        return image
    out = image
    sigma = scene_noise + (rng.uniform(0, aug.max_noise) if rng.random() < aug.noise_prob else 0.0)
    if sigma > 0:
        out = np.clip(out + rng.normal(0, sigma, size=out.shape).astype(np.float32), 0, 1)
    if rng.random() < aug.jpeg_prob:
        out = jpeg_roundtrip(out, int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
    return out.astype(np.float32)


def defocus_slices(disparity: np.ndarray, slope: float, step: float = STACK.slope_step) -> np.ndarray:
    """How far each pixel lies from focus in a slice at ``slope``: |disparity − slope| in slices of ``step``."""
    return np.abs(np.asarray(disparity, dtype=np.float32) - slope) / step


def in_focus_mask(disparity: np.ndarray, slope: float, step: float = STACK.slope_step) -> np.ndarray:
    """Where a slice at ``slope`` shows the scene in focus: disparity within IN_FOCUS_SLICES slices."""
    return defocus_slices(disparity, slope, step) < IN_FOCUS_SLICES


def focus_map(image: np.ndarray) -> np.ndarray:
    """G1's focus channel (H, W, 1) in [-1, 1) of a whole (H, W, 3) image in [0, 1]."""
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        return focus_channel(t)[0].permute(1, 2, 0).numpy()


def refocus_pairs(deltas: Sequence[float], n_slices: int = MAX_DELTA + 1) -> list[tuple[int, float]]:
    """(input slice, δ) for every δ and every input slice that keeps slice i+δ inside the stack."""
    return [(i, float(d)) for d in deltas for i in range(n_slices) if 0 <= i + d <= n_slices - 1]


def render_slice(views: np.ndarray, slope: float, window: tuple[int, int, int, int]) -> np.ndarray:
    """The slice at any ``slope`` over ``window`` = (y0, y1, x0, x1), equal to cropping the full slice:
    shift-and-sum runs on the window plus a margin of the largest view shift (clipped at the image
    border, where the full computation replicates the same edge pixels)."""
    sub = views if views.shape[0] == STACK.views else _central(views)
    h, w = sub.shape[2:4]
    y0, y1, x0, x1 = window
    margin = int(math.ceil(abs(slope) * (STACK.views - 1) / 2)) + 2
    wy0, wy1, wx0, wx1 = max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)
    part = np.asarray(sub[:, :, wy0:wy1, wx0:wx1], dtype=np.float32)
    out = shift_and_sum(part, [slope])[0].numpy()
    return out[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]


def _central(views: np.ndarray) -> np.ndarray:
    r, c = views.shape[:2]
    r0, c0 = (r - STACK.views) // 2, (c - STACK.views) // 2
    return views[r0 : r0 + STACK.views, c0 : c0 + STACK.views]


# ------------------------------------------------------------------------------------------- datasets


class FocalStackPairs(Dataset):
    """(input, target[, delta]) pairs from cached focal stacks; see the module docstring."""

    def __init__(
        self,
        task: str,
        split: str,
        scenes: list[Path],
        *,
        crop: int,
        deltas: str = "19",
        no_sml: bool = False,
        single_stage: bool = False,
        radiance: str = "true",
        seed: int = 0,
        augment: Augment | None = None,
        items_per_scene: int | None = None,
    ):
        if task not in TASKS:
            raise RefocusError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}.")
        if not scenes:
            raise RefocusError(f"no {split} scenes for {task}: give {split}_scenes > 0 (synthetic scenes) or data "
                               f"paths with light fields in the {split} split.")  # fmt: skip
        self.task, self.split, self.crop, self.seed = task, split, int(crop), int(seed)
        self.scenes = [CachedScene(p) for p in scenes]
        self.no_sml, self.single_stage = bool(no_sml), bool(single_stage)
        self.train = split == "train"
        self.augment = augment if augment is not None else Augment()
        self.continuous = task == "refocus" and deltas == "continuous"
        if task == "refocus" and not self.continuous and deltas not in DELTA_SETS:
            raise RefocusError(f"unknown refocus deltas {deltas!r}; choose one of 8, 4, 19, continuous.")
        self.pairs = refocus_pairs(DELTA_SETS.get(deltas, DELTA_SETS["19"])) if task == "refocus" else []
        self.per_scene = items_per_scene or (len(self.pairs) if task == "refocus" else MAX_DELTA + 1)
        if task == "refocus" and self.continuous and items_per_scene is None:
            self.per_scene = 19
        self.radiance_source = radiance
        self._g1 = None
        self._calls = 0
        for scene in self.scenes:  # every one: data paths may hold light fields smaller than the synthetic scenes
            h, w = scene.stack.shape[1:3]
            if self.crop > min(h, w):
                raise RefocusError(f"crop {self.crop} is larger than the {split} scene {scene.folder.name} ({h}×{w}); "
                                   "use a smaller --crop or leave that light field out")  # fmt: skip

    def __len__(self) -> int:
        return len(self.scenes) * self.per_scene

    # the training loop checkpoints this so that --resume draws the same crops (training/train.py)
    def state_dict(self) -> dict:
        return {"calls": self._calls}

    def load_state_dict(self, state: dict) -> None:
        self._calls = int(state["calls"])

    def _rng(self, index: int) -> np.random.Generator:
        # Train items differ on every access (fresh crops and degradations per epoch); val/test are fixed.
        if self.train:
            self._calls += 1
            return np.random.default_rng([self.seed, index, self._calls])
        return np.random.default_rng([self.seed, index, 99])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = self._rng(index)
        scene = self.scenes[index // self.per_scene]
        k = index % self.per_scene
        if self.task == "deblur":
            return self._deblur_item(scene, k, rng)
        return self._refocus_item(scene, k, rng)

    # -- windows and flips
    def _window(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        c = self.crop
        if self.train:
            y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        else:
            y0, x0 = (h - c) // 2, (w - c) // 2
        return y0, y0 + c, x0, x0 + c

    def _flip(self, tensors: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if not (self.train and self.augment.flips):
            return tensors
        dims = [d for d, flip in ((-1, rng.random() < 0.5), (-2, rng.random() < 0.5)) if flip]
        if not dims:
            return tensors
        return {k: (v.flip(dims).contiguous() if v.ndim == 3 else v) for k, v in tensors.items()}

    def _degrade(self, image: np.ndarray, scene: CachedScene, rng: np.random.Generator) -> np.ndarray:
        if not self.train:
            # val/test inputs keep a fixed, mild degradation so that scores are comparable run to run
            return degrade_input(image, rng, scene.noise, replace(self.augment, noise_prob=0.0))
        return degrade_input(image, rng, scene.noise, self.augment)

    # -- deblur
    def _deblur_item(self, scene: CachedScene, k: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        centre = scene.centre
        disparity = scene.get("disparity")
        if self.train and rng.random() < self.augment.identity_prob:
            source = centre  # already sharp: the output must equal the input's content
            in_focus = np.ones(centre.shape[:2], bool)
        else:
            i = k % scene.stack.shape[0]
            source = scene.slice(i)
            if disparity is None:  # unknown without a disparity map: then no pixel counts as in focus
                in_focus = np.zeros(centre.shape[:2], bool)
            else:
                in_focus = in_focus_mask(disparity, float(STACK.slopes()[i]))
        image = self._degrade(source, scene, rng)
        y0, y1, x0, x1 = self._window(*image.shape[:2], rng)
        parts = [image]
        if not self.no_sml:
            parts.append(focus_map(image) * 0.5 + 0.5)  # back to [0, 1]; to_signed maps it to [-1, 1)
        inp = to_signed(np.concatenate(parts, axis=-1)[y0:y1, x0:x1])
        item = {
            "input": inp,
            "target": to_signed(centre[y0:y1, x0:x1]),
            "in_focus": torch.from_numpy(np.ascontiguousarray(in_focus[None, y0:y1, x0:x1], dtype=np.float32)),
        }
        return self._flip(item, rng)

    # -- refocus
    def _refocus_item(self, scene: CachedScene, k: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        n = scene.stack.shape[0]
        if self.continuous:
            if self.train:
                delta = float(rng.uniform(-MAX_DELTA, MAX_DELTA))
            else:  # fixed, spread over the range
                delta = float(np.linspace(-MAX_DELTA, MAX_DELTA, self.per_scene)[k])
            lo, hi = max(0, math.ceil(-delta - 1e-9)), min(n - 1, math.floor(n - 1 - delta + 1e-9))
            i = int(rng.integers(lo, hi + 1)) if self.train else (lo + hi) // 2
        else:
            i, delta = self.pairs[k]
        image = self._degrade(scene.slice(i), scene, rng)
        y0, y1, x0, x1 = self._window(*image.shape[:2], rng)
        j = i + delta
        if abs(j - round(j)) < 1e-6:
            target = scene.slice(int(round(j)))[y0:y1, x0:x1]
        else:
            views = scene.get("views")
            if views is None:
                raise RefocusError(f"{scene.folder} has no cached views; continuous δ needs them.")
            slopes = STACK.slopes()
            target = render_slice(views, float(slopes[0] + j * STACK.slope_step), (y0, y1, x0, x1))
        parts = [image[y0:y1, x0:x1]]
        if not self.single_stage:
            parts.append(self._radiance(scene, i, image, rng)[y0:y1, x0:x1])
        item = {
            "input": to_signed(np.concatenate(parts, axis=-1)),
            "target": to_signed(target),
            "delta": torch.tensor(delta, dtype=torch.float32),
        }
        return self._flip(item, rng)

    def _radiance(self, scene: CachedScene, i: int, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        source = self.radiance_source or "true"
        kind, g1_path = radiance_source(source)
        if kind == "true" or (kind == "mix" and rng.random() < self.augment.true_radiance_share):
            return scene.centre
        # "g1:PATH" (or the other half of "mix:PATH"): the deblurring network's output on this (degraded)
        # input, as at inference
        if self._g1 is None:
            from napari_refocusgan.core.weights import load_generator

            # building the network draws from torch's global RNG; after a resume this load happens at
            # another step, so it must leave the training stream untouched for resume to stay exact
            with torch.random.fork_rng(devices=[]):
                self._g1 = load_generator(g1_path if kind is not None else source)  # a bare path: G1 weights
        from napari_refocusgan.core.inference import deblur

        return np.asarray(deblur(image, self._g1), dtype=np.float32)


# --------------------------------------------------------------------------------------------- builder


def scene_folders(
    split: str,
    *,
    size: int,
    n_synthetic: int,
    data_paths: Sequence[str] | None,
    cache_dir: Path,
    workers: int,
    far_background: float = 0.0,
) -> list[Path]:
    """Render (if needed) and return the cache folders of a split's scenes, synthetic first. A share
    ``far_background`` of the *training* scenes gets a far background; validation and test scenes never
    do, so that their scores stay comparable across runs."""
    jobs: list[tuple[str, SceneSource]] = []
    for seed in split_seeds(split, n_synthetic):
        far = split == "train" and has_far_background(seed, far_background)
        jobs.append((synthetic_key(seed, size, far), (seed, far)))
    per_path = {raw: list_lightfields([raw]) for raw in data_paths or []}  # each path listed once
    for raw, files in per_path.items():
        if split == "train" and not any(file_split(p) == "train" for p in files):
            # a path adding nothing to training would still be named in the model card
            raise RefocusError(
                f"data path {raw}: none of its {len(files)} light field(s) is in the training split (files "
                f"are split 70/5/25 % into train/val/test by a hash of their name, and {HCI_MARKER} is "
                "test-only), so it would add nothing to training; leave it out or add light fields."
            )
    for path in sorted({p for files in per_path.values() for p in files}):  # as list_lightfields(data_paths)
        if file_split(path) == split:
            jobs.append((file_key(path), str(path)))
    prepare_cache(jobs, cache_dir, size, workers)
    return [_scene_dir(cache_dir, k) for k, _ in jobs]


def default_workers(config=None) -> int:
    return max(1, int(_cfg(config, "cache_workers", min(2, os.cpu_count() or 1))))


def build_dataset(
    task: str, *, split: str, config, data_paths: list[str] | None = None, seed: int = 0
) -> torch.utils.data.Dataset:
    """The dataset the training loop and the evaluation read; items are dicts of tensors:

    * ``input``: (C, H, W) float32 in [-1, 1] — G1: RGB + focus channel (C=4; 3 with ``no_sml``);
      G2: RGB + radiance (C=6; 3 with ``single_stage``);
    * ``target``: (3, H, W) float32 in [-1, 1];
    * ``delta``: () float32, refocus only (δ in slices).
    """
    if task not in TASKS:
        raise RefocusError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    if split not in SPLITS:
        raise RefocusError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")
    size = int(_cfg(config, "scene_size", 256))
    crop = int(_cfg(config, "crop", min(256, size)))
    if crop % 4 or crop < 16:
        raise RefocusError(f"crop must be a multiple of 4 and at least 16 pixels, got {crop}.")
    if crop > size:
        raise RefocusError(f"crop {crop} is larger than the scenes ({size}).")
    count = {
        "train": int(_cfg(config, "train_scenes", 100)),
        "val": int(_cfg(config, "val_scenes", 8)),
        "test": int(_cfg(config, "test_scenes", 16)),
    }[split]
    paths = list(data_paths) if data_paths is not None else list(_cfg(config, "data_paths", []))
    cache_dir = Path(_cfg(config, "cache_dir", DEFAULT_CACHE_DIR))
    far_background = check_share("far_background", float(_cfg(config, "far_background", 0.0)))
    folders = scene_folders(
        split,
        size=size,
        n_synthetic=count,
        data_paths=paths,
        cache_dir=cache_dir,
        workers=default_workers(config),
        far_background=far_background,
    )
    radiance = str(_cfg(config, "radiance", "true"))
    return FocalStackPairs(
        task,
        split,
        folders,
        crop=crop,
        deltas=str(_cfg(config, "refocus_deltas", "19")),
        no_sml=bool(_cfg(config, "no_sml", False)),
        single_stage=bool(_cfg(config, "single_stage", False)),
        radiance=radiance,
        seed=seed,
        augment=Augment.from_config(config),
    )
