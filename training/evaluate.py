"""The paper's evaluation tables (Tables 1 and 2) on our data, with baselines and gains over identity.

``python -m training evaluate [--g1 W] [--g1-nosml W] [--g2 W [W ...]] [--g2-single W] [--hci DIR] --out DIR``
writes ``tables.md`` (markdown) and ``deblur.csv`` / ``refocus.csv`` (one row per method, data set and
δ configuration).

* Table 1 (deblur): every slice of the paper's 10-slice stack against the centre view. Rows: the input
  itself (identity), the classical single-image methods (sharpen, unsharp masking, CLAHE, region-wise;
  :data:`napari_refocusgan.core.classical.CLASSICAL_METHODS` with default parameters),
  G1 with and without the SML channel, and the full-stack composite focus measure (the reference that
  sees every slice). PSNR / SSIM over the whole image, and PSNR separately over in-focus pixels
  (ground-truth disparity within half a slice of the slice's slope, i.e. a blur disk under 0.3 px) and
  out-of-focus pixels (more than two slices away, a blur disk over 1.2 px); pixels in between count for
  neither.
* Table 2 (refocus): slice i → slice i+δ for the paper's δ configurations (+8; {−9,−5,+5,+9}; −9..+9).
  Rows: identity (the unrefocused input), blur-and-compare (fed the true radiance, and fed G1's),
  single-stage G2, and each two-stage G2 given (e.g. one per δ configuration, as in the paper) with the
  true radiance and fed G1's radiance (the paper's last row and the plugin's actual pipeline); a G2 is
  scored on the configurations its δ covers.

Data: synthetic test scenes (seeds never used in training; :func:`training.data.split_seeds`) and the
HCI scene ``antinous`` (skipped with a note when absent) — with the paper's slice window, with the window
chosen per scene (``keep auto``), and at half resolution (which halves its disparities, ≈ −1.4…+1.6 px per
view, into the ±1.5 range of Lytro Illum captures that the paper's window was chosen for).

Models load through :func:`napari_refocusgan.core.weights.load_generator` (a registry name or a weights
file; training checkpoints ``*.pt`` are accepted too) and run through :mod:`napari_refocusgan.core.inference`,
the plugin's own path.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import centre_view, focal_stack

from . import data
from .configs import radiance_source

# In-focus / out-of-focus masks, in slices of |disparity − slope|: half a slice (data.IN_FOCUS_SLICES) is a
# blur disk under 0.3 px over 7×7 views (sharp); beyond two slices the disk exceeds 1.2 px (visibly blurred).
OUT_OF_FOCUS_SLICES = 2.0
DELTA_CONFIGS: dict[str, tuple[int, ...]] = {
    "+8": (8,),
    "{-9,-5,+5,+9}": (-9, -5, 5, 9),
    "-9..+9 (δ≠0)": tuple(range(-9, 10)),
}
DEFAULT_HCI = Path(__file__).resolve().parents[2] / "shared" / "data" / "hci_antinous"
HCI_VARIANTS = ("paper", "auto", "half")


# -------------------------------------------------------------------------------------------- metrics


def psnr(reference: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB for [0, 1] images, over the pixels of ``mask`` (H, W) when given (NaN if it is empty)."""
    if mask is not None:
        if not mask.any():
            return float("nan")
        reference, image = reference[mask], image[mask]
    if np.array_equal(reference, image):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, image, data_range=1.0))


def ssim(reference: np.ndarray, image: np.ndarray) -> float:
    return float(structural_similarity(reference, image, channel_axis=2, data_range=1.0))


def focus_masks(disparity: np.ndarray, slope: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(in-focus, out-of-focus) pixel masks of the slice at ``slope`` (see the module constants)."""
    return data.in_focus_mask(disparity, slope, step), data.defocus_slices(disparity, slope, step) > OUT_OF_FOCUS_SLICES


def _mean(values: Sequence[float]) -> float:
    v = [x for x in values if np.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


# --------------------------------------------------------------------------------------------- scenes


@dataclass
class EvalScene:
    """One test focal stack: stack (S, H, W, 3), its slopes, the centre view and (when known) the
    centre-view disparity in the stack's slope convention."""

    name: str
    stack: np.ndarray
    slopes: np.ndarray
    centre: np.ndarray
    disparity: np.ndarray | None = None
    step: float = data.STACK.slope_step


def synthetic_scenes(count: int, size: int, cache_dir: Path, workers: int = 1) -> list[EvalScene]:
    """The first ``count`` synthetic test scenes (rendered into the training cache when missing)."""
    folders = data.scene_folders("test", size=size, n_synthetic=count, data_paths=None, cache_dir=cache_dir, workers=workers)
    scenes = []
    for folder in folders:
        s = data.CachedScene(folder)
        scenes.append(
            EvalScene(
                name=f"synthetic/{folder.name}",
                stack=np.asarray(s.stack, dtype=np.float32),
                slopes=data.STACK.slopes(),  # the configuration the cached stacks were made with
                centre=s.centre,
                disparity=np.asarray(s.get("disparity"), dtype=np.float32),
            )
        )
    return scenes


def hci_scene(folder: Path, variant: str = "paper") -> EvalScene:
    """The HCI scene's paper stack. ``variant``: "paper" (slices 6..15), "auto" (the 10-slice window with
    the most focus peaks) or "half" (views downsampled 2×, paper window)."""
    if variant not in HCI_VARIANTS:
        raise RefocusError(f"unknown HCI variant {variant!r}; choose from {', '.join(HCI_VARIANTS)}.")
    scale = 2 if variant == "half" else 1
    views = data.read_hci_views(folder, scale=scale)
    stack, slopes, cfg = focal_stack(views, data.STACK, keep_auto=variant == "auto")
    disparity = data.read_hci_disparity(folder, scale=scale)
    label = f"hci/{Path(folder).name}/{variant}" + (f" (keep {cfg.keep[0]}:{cfg.keep[1]})" if variant == "auto" else "")
    return EvalScene(label, stack, np.asarray(slopes), centre_view(views), disparity, cfg.slope_step)


def data_scenes(data_paths: Sequence[str]) -> tuple[list[EvalScene], int]:
    """The test split of the light fields under ``data_paths`` (the training split's hash of the file name;
    anything under hci_antinous is test-only), as paper stacks; also how many light fields were found."""
    found = data.list_lightfields(data_paths)
    scenes = []
    for path in found:
        if data.file_split(path) != "test":
            continue
        scene = data.lightfield_scene(path)
        disparity = scene.get("disparity")
        scenes.append(EvalScene(f"data/{path.name}", np.asarray(scene["stack"], np.float32), data.STACK.slopes(),
                                scene["centre"], None if disparity is None else np.asarray(disparity, np.float32)))  # fmt: skip
    return scenes, len(found)


# --------------------------------------------------------------------------------------------- models


def load_model(spec: str):
    """A :class:`~napari_refocusgan.core.weights.LoadedModel` from a registry name, a weights file, or a
    training checkpoint (``*.pt``, or a run folder holding ``last.pt``)."""
    from napari_refocusgan.core import weights

    path = Path(spec)
    if path.suffix == ".pt" or (path.is_dir() and (path / "last.pt").exists()):
        from .train import generator_from_checkpoint, load_checkpoint

        ckpt_path = path / "last.pt" if path.is_dir() else path
        ckpt = load_checkpoint(ckpt_path)
        generator = generator_from_checkpoint(ckpt)
        return weights.LoadedModel(generator, weights.role_of(generator.cfg), ckpt_path.stem, ckpt_path,
                                   metadata=dict(ckpt.get("metadata", {})))  # fmt: skip
    return weights.load_generator(spec)


def load_checked(
    spec: str | None,
    option: str,
    role: str,
    radiance: bool | None = None,
    *,
    focus_channel: bool | None = None,
    other_option: str | None = None,
):
    """``load_model(spec)`` (None when not given), with a clear error unless it is a ``role`` generator, and for G2
    one with or without the radiance input as ``radiance`` says, for G1 with or without the SML focus channel as
    ``focus_channel`` says. ``other_option`` names the option that takes the other kind, for the message."""
    if not spec:
        return None
    model = load_model(spec)
    if model.role != role:
        raise RefocusError(f"{option} {spec} holds a {model.role} generator (G{1 if model.role == 'deblur' else 2}); "
                           f"{option} needs a {role} one (G{1 if role == 'deblur' else 2})")  # fmt: skip
    in_channels = _generator(model).cfg.in_channels
    inputs = [  # wanted, has it, what the model is with it and without it
        (radiance, in_channels == 6, "two-stage G2 (with a radiance input)", "single-stage G2 (no radiance input)"),
        (focus_channel, in_channels == 4, "G1 with the SML channel", "G1 without the SML channel"),
    ]
    for wanted, has, with_it, without_it in inputs:
        if wanted is not None and has != wanted:
            where = f"pass it as {other_option}" if other_option else f"{option} needs a {without_it if has else with_it}"
            raise RefocusError(f"{option} {spec} is a {with_it if has else without_it}: {where}")
    return model


def training_radiance(model) -> str:
    """What radiance a G2 was trained on, from its model card: "true", "G1" or "true or G1"."""
    source = str(getattr(model, "metadata", {}).get("radiance", "true"))
    return {"true": "true", "g1": "G1", "mix": "true or G1"}.get(radiance_source(source)[0], source)


def _generator(model) -> torch.nn.Module:
    return getattr(model, "generator", model)


def run_deblur(model, image: np.ndarray) -> np.ndarray:
    """G1 on an (H, W, 3) [0, 1] image through the plugin's inference engine."""
    from napari_refocusgan.core import inference

    return _result_image(inference.deblur(image, model))


def run_refocus(model, image: np.ndarray, delta: float, radiance: np.ndarray | None) -> np.ndarray:
    """G2 on an (H, W, 3) image with δ (slices) and the radiance (None for single-stage models)."""
    from napari_refocusgan.core import inference

    return _result_image(inference.refocus(image, float(delta), model, radiance=radiance))


def _result_image(result) -> np.ndarray:
    if isinstance(result, tuple):
        result = result[0]
    image = getattr(result, "image", result)
    return np.clip(np.asarray(image, dtype=np.float32), 0, 1)


# ---------------------------------------------------------------------------------------- baselines


def classical_methods() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Single-image sharpening rows: the classical registry (with its default parameters) minus identity,
    which every table already starts with."""
    from napari_refocusgan.core.classical import CLASSICAL_METHODS

    return {name: fn for name, fn in CLASSICAL_METHODS.items() if name != "identity"}


def composite_reference(stack: np.ndarray) -> np.ndarray:
    from napari_refocusgan.core.focus_stacking import all_in_focus

    return np.clip(all_in_focus(stack)[0], 0, 1).astype(np.float32)


def blur_compare(image: np.ndarray, radiance: np.ndarray) -> np.ndarray:
    from napari_refocusgan.core.blur_compare import blur_and_compare

    return blur_and_compare(image, radiance).refocused


# ------------------------------------------------------------------------------------------- tables


@dataclass
class Row:
    table: str  # "deblur" | "refocus"
    dataset: str
    method: str
    deltas: str = ""
    psnr: float = float("nan")
    ssim: float = float("nan")
    psnr_in_focus: float = float("nan")
    psnr_out_of_focus: float = float("nan")
    gain_db: float = float("nan")  # PSNR minus identity's PSNR on the same items
    items: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


DeblurMethod = Callable[[EvalScene, int], np.ndarray]  # (scene, slice index) → estimate of the centre view
RefocusMethod = Callable[[EvalScene, int, int], np.ndarray]  # (scene, slice, δ) → estimate of slice i+δ


def deblur_rows(scenes: Sequence[EvalScene], methods: dict[str, DeblurMethod], dataset: str) -> list[Row]:
    """Table 1 on ``scenes``: per method, means over every (scene, slice) of PSNR / SSIM against the centre
    view, and of the masked PSNRs where the scene has a disparity map. The first method is the identity
    reference for ``gain_db``."""
    rows = []
    for name, method in methods.items():
        p, s, pin, pout = [], [], [], []
        t0 = time.perf_counter()
        for scene in scenes:
            for k in range(scene.stack.shape[0]):
                out = method(scene, k)
                p.append(psnr(scene.centre, out))
                s.append(ssim(scene.centre, out))
                if scene.disparity is not None:
                    m_in, m_out = focus_masks(scene.disparity, float(scene.slopes[k]), scene.step)
                    pin.append(psnr(scene.centre, out, m_in))
                    pout.append(psnr(scene.centre, out, m_out))
        rows.append(Row("deblur", dataset, name, psnr=_mean(p), ssim=_mean(s), psnr_in_focus=_mean(pin),
                        psnr_out_of_focus=_mean(pout), items=len(p), seconds=time.perf_counter() - t0))  # fmt: skip
    _fill_gains(rows)
    return rows


def refocus_rows(
    scenes: Sequence[EvalScene],
    methods: dict[str, tuple[RefocusMethod, Sequence[str]]],
    dataset: str,
    max_pairs: int | None = None,
) -> list[Row]:
    """Table 2 on ``scenes``: per method and δ configuration it supports, PSNR / SSIM of slice i → slice
    i+δ over every valid (scene, i, δ) — or, with ``max_pairs``, over that many pairs per scene and
    configuration, evenly spaced through the list (the paper also scored a subset for −9..+9). The first
    method is the identity reference for ``gain_db``."""
    rows = []
    for config, deltas in DELTA_CONFIGS.items():
        group = []
        for name, (method, configs) in methods.items():
            if config not in configs:
                continue
            p, s = [], []
            t0 = time.perf_counter()
            for scene in scenes:
                n = scene.stack.shape[0]
                # δ = 0 asks for the input itself: identity scores infinite PSNR there, which would leave
                # those items out of its mean but not out of the others' — so no row scores them.
                pairs = data.refocus_pairs([float(d) for d in deltas if d != 0], n)
                for i, delta in subsample(pairs, max_pairs):
                    j = int(i + delta)
                    out = method(scene, i, int(delta))
                    p.append(psnr(scene.stack[j], out))
                    s.append(ssim(scene.stack[j], out))
            group.append(Row("refocus", dataset, name, config, psnr=_mean(p), ssim=_mean(s), items=len(p),
                             seconds=time.perf_counter() - t0))  # fmt: skip
        _fill_gains(group)
        rows += group
    return rows


def subsample(pairs: list, count: int | None) -> list:
    """``count`` evenly spaced items of ``pairs`` (all of them when count is None or large enough)."""
    if count is None or count >= len(pairs):
        return pairs
    return [pairs[i] for i in np.linspace(0, len(pairs) - 1, count).round().astype(int)]


def _fill_gains(rows: list[Row]) -> None:
    if rows:
        for r in rows:
            r.gain_db = r.psnr - rows[0].psnr


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if not np.isfinite(x) else f"{x:.{digits}f}"


def _gain(x: float) -> str:
    return "–" if not np.isfinite(x) else f"{x:+.2f}"


def markdown_tables(rows: Sequence[Row]) -> str:
    """Markdown: one Table 1 and one Table 2 block per data set."""
    out: list[str] = []
    for dataset in dict.fromkeys(r.dataset for r in rows):
        deblur = [r for r in rows if r.table == "deblur" and r.dataset == dataset]
        if deblur:
            out += [f"#### Table 1 (deblur) — {dataset}", "",
                    "| Method | PSNR | SSIM | Δ vs identity (dB) | PSNR in focus | PSNR out of focus | items |",
                    "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
            out += [f"| {r.method} | {_fmt(r.psnr)} | {_fmt(r.ssim, 3)} | {_gain(r.gain_db)} | "
                    f"{_fmt(r.psnr_in_focus)} | {_fmt(r.psnr_out_of_focus)} | {r.items} |" for r in deblur]  # fmt: skip
            out.append("")
        refocus = [r for r in rows if r.table == "refocus" and r.dataset == dataset]
        if refocus:
            out += [f"#### Table 2 (refocus) — {dataset}", "",
                    "| Method | δ | PSNR | SSIM | Δ vs identity (dB) | items |",
                    "|---|---|---:|---:|---:|---:|"]  # fmt: skip
            out += [f"| {r.method} | {r.deltas} | {_fmt(r.psnr)} | {_fmt(r.ssim, 3)} | {_gain(r.gain_db)} | {r.items} |"
                    for r in refocus]  # fmt: skip
            out.append("")
    return "\n".join(out)


CSV_FIELDS = ("table", "dataset", "method", "deltas", "psnr", "ssim", "psnr_in_focus", "psnr_out_of_focus",
              "gain_db", "items", "seconds")  # fmt: skip


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in rows:
            w.writerow([getattr(r, k) if not isinstance(getattr(r, k), float) else f"{getattr(r, k):.4f}" for k in CSV_FIELDS])


# ------------------------------------------------------------------------------------ method factory


class Memo:
    """Caches per-(scene, slice) outputs that several rows share (e.g. G1's radiance)."""

    def __init__(self, fn: Callable[[EvalScene, int], np.ndarray], *, per_slice: bool = True):
        self.fn, self.store, self.per_slice = fn, {}, per_slice

    def __call__(self, scene: EvalScene, k: int) -> np.ndarray:
        key = (scene.name, k if self.per_slice else None)
        if key not in self.store:
            self.store[key] = self.fn(scene, k)
        return self.store[key]


def model_delta_configs(model: torch.nn.Module) -> list[str]:
    """The δ configurations a G2 can be evaluated on: all for continuous δ, else those in its one-hot set."""
    cfg = _generator(model).cfg
    if cfg.delta_mode == "continuous":
        lo, hi = cfg.delta_range
        return [c for c, ds in DELTA_CONFIGS.items() if lo - 1e-6 <= min(ds) and max(ds) <= hi + 1e-6]
    known = {round(float(d)) for d in cfg.deltas}
    return [c for c, ds in DELTA_CONFIGS.items() if set(ds) <= known]


def deblur_methods(g1=None, g1_nosml=None, *, classical: bool = True, reference: bool = True) -> dict[str, DeblurMethod]:
    methods: dict[str, DeblurMethod] = {"identity (input slice)": lambda sc, k: sc.stack[k]}
    if classical:
        for name, fn in classical_methods().items():
            methods[name] = lambda sc, k, fn=fn: _result_image(fn(sc.stack[k]))
    if g1_nosml is not None:
        methods["G1 without SML channel"] = lambda sc, k: run_deblur(g1_nosml, sc.stack[k])
    if g1 is not None:
        methods["G1 with SML channel"] = Memo(lambda sc, k: run_deblur(g1, sc.stack[k]))
    if reference:
        methods["composite focus measure (all slices)"] = Memo(lambda sc, k: composite_reference(sc.stack), per_slice=False)
    return methods


def delta_label(model) -> str:
    """How a G2 takes δ, for row names: "continuous δ", "one-hot δ=+8", "one-hot δ ∈ {-9,-5,+5,+9}", …"""
    cfg = _generator(model).cfg
    if cfg.delta_mode == "continuous":
        return "continuous δ"
    values = sorted(round(float(d)) for d in cfg.deltas)
    if len(values) == 1:
        return f"one-hot δ={values[0]:+d}"
    if len(values) > 4 and values == list(range(values[0], values[-1] + 1)):
        return f"one-hot δ ∈ {values[0]:+d}..{values[-1]:+d}"
    return "one-hot δ ∈ {" + ",".join(f"{v:+d}" for v in values) + "}"


def g2_method_names(model) -> tuple[str, str]:
    """Row names of a two-stage G2 fed the true radiance and fed G1's."""
    label = delta_label(model)
    return (f"two-stage G2 ({label}), true radiance",
            f"two-stage G2 ({label}), G1 radiance (trained on {training_radiance(model)})")  # fmt: skip


def refocus_methods(g2s: Sequence = (), g2_single=None, g1_radiance: Memo | None = None, *, baselines: bool = True):
    """Table 2's rows: identity, blur-and-compare, and each G2 in ``g2s`` (e.g. one per δ configuration) on
    the δ configurations it was trained for."""
    every = list(DELTA_CONFIGS)
    methods: dict[str, tuple[RefocusMethod, Sequence[str]]] = {"identity (input slice)": (lambda sc, i, d: sc.stack[i], every)}
    if baselines:
        bc = Memo(lambda sc, i: blur_compare(sc.stack[i], sc.centre))
        methods["blur-and-compare (true radiance)"] = (lambda sc, i, d: bc(sc, i), every)
        if g1_radiance is not None:
            bc1 = Memo(lambda sc, i: blur_compare(sc.stack[i], g1_radiance(sc, i)))
            methods["blur-and-compare (G1 radiance)"] = (lambda sc, i, d: bc1(sc, i), every)
    if g2_single is not None:
        methods["single-stage G2 (no radiance)"] = (
            lambda sc, i, d: run_refocus(g2_single, sc.stack[i], d, None), model_delta_configs(g2_single))
    for g2 in g2s:
        configs = model_delta_configs(g2)
        true_name, g1_name = g2_method_names(g2)
        if true_name in methods:
            raise RefocusError(f"two G2s take δ the same way ({delta_label(g2)}): their rows would share a name")
        methods[true_name] = (lambda sc, i, d, g2=g2: run_refocus(g2, sc.stack[i], d, sc.centre), configs)
        if g1_radiance is not None:
            methods[g1_name] = (lambda sc, i, d, g2=g2: run_refocus(g2, sc.stack[i], d, g1_radiance(sc, i)), configs)
    return methods


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--g1", help="G1 with the SML channel: registry name, weights file or checkpoint")
    p.add_argument("--g1-nosml", help="G1 trained without the SML channel (Table 1 ablation)")
    p.add_argument("--g2", nargs="+", action="extend", default=[], metavar="W",
                   help="two-stage G2(s) (radiance input), e.g. one per δ configuration: each is scored on the "
                        "configurations its δ covers")  # fmt: skip
    p.add_argument("--g2-single", help="single-stage G2 (no radiance input)")
    p.add_argument("--synthetic", type=int, default=16, help="synthetic test scenes (0: none; default 16)")
    p.add_argument("--scene-size", type=int, default=192, help="synthetic scene size (default 192)")
    p.add_argument("--cache-dir", type=Path, default=Path(data.DEFAULT_CACHE_DIR), help="scene cache")
    p.add_argument("--data", nargs="+", action="extend", dest="data_paths", metavar="PATH", default=[],
                   help="light-field files or folders: their test split (as in training) is scored too")  # fmt: skip
    p.add_argument("--hci", type=Path, default=DEFAULT_HCI, help="HCI antinous folder (skipped when absent)")
    p.add_argument("--hci-variants", default="paper,auto,half", help="comma list of paper, auto, half")
    p.add_argument("--tables", default="deblur,refocus", help="comma list of deblur, refocus")
    p.add_argument("--no-reference", action="store_true", help="skip the composite focus reference row")
    p.add_argument("--no-classical", action="store_true", help="skip the classical sharpening rows")
    p.add_argument("--no-baselines", action="store_true", help="skip blur-and-compare in Table 2")
    p.add_argument("--pairs-per-scene", type=int, default=None,
                   help="Table 2: at most this many (i, δ) pairs per scene and δ configuration (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="folder for tables.md, deblur.csv, refocus.csv")
    return p


TABLES = ("deblur", "refocus")


def _comma_list(text: str, option: str, choices: Sequence[str], *, empty: bool) -> list[str]:
    items = [t.strip().lower() for t in text.split(",") if t.strip()]  # as focal-stack --keep: " Paper" is paper
    unknown = [t for t in items if t not in choices]
    if unknown or not (items or empty):
        raise RefocusError(f"{option} {text!r}: give a comma list of {', '.join(choices)}"
                           + (f" (unknown: {', '.join(unknown)})" if unknown else ""))  # fmt: skip
    return items


def check_args(args) -> None:
    """Clear errors for options that cannot work, before any scene is rendered or model run."""
    from .train import check_writable_folder

    for option, value, least in (("--synthetic", args.synthetic, 0), ("--pairs-per-scene", args.pairs_per_scene, 1),
                                 ("--threads", args.threads, 1), ("--scene-size", args.scene_size, 16)):  # fmt: skip
        if value is not None and value < least:
            raise RefocusError(f"{option} must be at least {least}, got {value}")
    check_writable_folder(args.out, "--out")
    if args.synthetic > 0:
        check_writable_folder(args.cache_dir, "--cache-dir")


def evaluate(args) -> tuple[list[Row], list[str]]:
    """All requested rows plus notes (skipped data, chosen windows); :func:`main` checks ``args`` first."""
    # the options and models first: a wrong one fails before the scenes are rendered
    variants = _comma_list(args.hci_variants, "--hci-variants", HCI_VARIANTS, empty=True)
    tables = set(_comma_list(args.tables, "--tables", TABLES, empty=False))
    g1 = load_checked(args.g1, "--g1", "deblur", focus_channel=True, other_option="--g1-nosml")
    g1_nosml = load_checked(args.g1_nosml, "--g1-nosml", "deblur", focus_channel=False, other_option="--g1")
    g2s = [load_checked(spec, "--g2", "refocus", radiance=True, other_option="--g2-single") for spec in args.g2]
    g2_single = load_checked(args.g2_single, "--g2-single", "refocus", radiance=False, other_option="--g2")
    if "refocus" in tables:
        refocus_methods(g2s, g2_single)  # builds nothing costly; two G2s that would share a row name fail here
    notes: list[str] = []
    datasets: list[tuple[str, list[EvalScene]]] = []
    if args.synthetic > 0:
        datasets.append((f"synthetic test ({args.synthetic} scenes, {args.scene_size}²)",
                         synthetic_scenes(args.synthetic, args.scene_size, args.cache_dir)))  # fmt: skip
    if args.data_paths:
        scenes, found = data_scenes(args.data_paths)
        if scenes:
            datasets.append((f"light-field test split ({len(scenes)} of {found})", scenes))
        else:
            notes.append(f"none of the {found} light field(s) under --data falls in the test split (a hash of the "
                         "file name puts about 25 % there): no rows for them.")  # fmt: skip
    if variants:
        if args.hci is not None and (Path(args.hci) / "input_Cam000.png").exists():
            for v in variants:
                scene = hci_scene(args.hci, v)
                datasets.append((scene.name, [scene]))
        else:
            notes.append(f"HCI scene not found at {args.hci}: its rows are skipped.")
    if not datasets:  # else empty tables replaced the results of an earlier run in --out
        raise RefocusError("nothing to evaluate: " + " ".join(notes or ["--synthetic 0 and no --hci-variants or --data."]))
    rows: list[Row] = []
    for name, scenes in datasets:
        d_methods = deblur_methods(g1, g1_nosml, classical=not args.no_classical, reference=not args.no_reference)
        g1_radiance = d_methods.get("G1 with SML channel")
        if "deblur" in tables:
            rows += deblur_rows(scenes, d_methods, name)
            print(f"[evaluate] deblur done on {name}", flush=True)
        if "refocus" in tables:
            rows += refocus_rows(scenes, refocus_methods(g2s, g2_single, g1_radiance, baselines=not args.no_baselines), name,
                                 args.pairs_per_scene)
            print(f"[evaluate] refocus done on {name}", flush=True)
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    text = ""
    try:
        check_args(args)
        if args.threads:
            torch.set_num_threads(args.threads)
        with torch.no_grad():
            rows, notes = evaluate(args)
        text = markdown_tables(rows)
        if notes:
            text += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "tables.md").write_text(text)
            write_csv(args.out / "deblur.csv", [r for r in rows if r.table == "deblur"])
            write_csv(args.out / "refocus.csv", [r for r in rows if r.table == "refocus"])
        except OSError as exc:  # checked up front, but the folder may have changed since
            raise RefocusError(f"cannot write the tables into --out {args.out}: {exc}") from exc
    except RefocusError as exc:
        print(text, end="")  # the tables, when only writing them failed
        print(f"python -m training evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
