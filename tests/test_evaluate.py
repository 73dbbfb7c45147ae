"""The evaluation tables: metrics, masks, identity rows against direct computations, and the CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_refocusgan.core.focalstack import StackConfig
from napari_refocusgan.core.networks import Generator, deblur_config, refocus_config
from training import evaluate as ev

SHARED_HCI = Path(__file__).parents[2] / "shared" / "data" / "hci_antinous"


def tiny_scene(seed: int = 0, size: int = 24) -> ev.EvalScene:
    rng = np.random.default_rng(seed)
    centre = rng.random((size, size, 3)).astype(np.float32)
    stack = np.clip(centre[None] + rng.normal(0, 0.05, (10, size, size, 3)), 0, 1).astype(np.float32)
    slopes = StackConfig().slopes()
    disparity = np.full((size, size), slopes[3], np.float32)
    disparity[: size // 2] = slopes[8]
    return ev.EvalScene(f"tiny{seed}", stack, slopes, centre, disparity)


def test_identity_deblur_row_equals_a_direct_computation():
    scenes = [tiny_scene(0), tiny_scene(1)]
    methods = {"identity": lambda sc, k: sc.stack[k], "truth": lambda sc, k: sc.centre * 0.98}
    rows = ev.deblur_rows(scenes, methods, "tiny")
    direct_psnr = np.mean([peak_signal_noise_ratio(sc.centre, sc.stack[k], data_range=1) for sc in scenes for k in range(10)])
    direct_ssim = np.mean([structural_similarity(sc.centre, sc.stack[k], channel_axis=2, data_range=1) for sc in scenes for k in range(10)])
    identity = rows[0]
    assert identity.items == 20
    assert identity.psnr == pytest.approx(direct_psnr, abs=1e-9)
    assert identity.ssim == pytest.approx(direct_ssim, abs=1e-6)
    assert identity.gain_db == 0
    assert rows[1].gain_db == pytest.approx(rows[1].psnr - identity.psnr)
    # slice 3: the lower half is in focus, the upper half is 5 slices away (out of focus)
    sc = scenes[0]
    lower = np.zeros(sc.disparity.shape, bool)
    lower[12:] = True
    in3, out3 = ev.focus_masks(sc.disparity, float(sc.slopes[3]), sc.step)
    np.testing.assert_array_equal(in3, lower)
    np.testing.assert_array_equal(out3, ~lower)
    expected_in = np.mean(
        [peak_signal_noise_ratio(s.centre[m], s.stack[k][m], data_range=1)
         for s in scenes for k in range(10) for m in [ev.focus_masks(s.disparity, float(s.slopes[k]), s.step)[0]] if m.any()]
    )  # fmt: skip
    assert identity.psnr_in_focus == pytest.approx(expected_in, abs=1e-9)


def test_masks_use_half_a_slice_and_two_slices():
    step = StackConfig().slope_step
    disparity = np.array([[0.0, 0.4 * step, 0.6 * step, 2.5 * step]], np.float32)
    in_focus, out_of_focus = ev.focus_masks(disparity, 0.0, step)
    assert in_focus.tolist() == [[True, True, False, False]]
    assert out_of_focus.tolist() == [[False, False, False, True]]


def test_identity_refocus_row_compares_slice_i_with_slice_i_plus_delta():
    scenes = [tiny_scene(2)]
    rows = ev.refocus_rows(scenes, {"identity": (lambda sc, i, d: sc.stack[i], list(ev.DELTA_CONFIGS))}, "tiny")
    by_config = {r.deltas: r for r in rows}
    sc = scenes[0]
    four = [peak_signal_noise_ratio(sc.stack[i + d], sc.stack[i], data_range=1)
            for d in (-9, -5, 5, 9) for i in range(10) if 0 <= i + d <= 9]  # fmt: skip
    assert by_config["{-9,-5,+5,+9}"].items == 12 == len(four)
    assert by_config["{-9,-5,+5,+9}"].psnr == pytest.approx(np.mean(four), abs=1e-9)
    assert by_config["+8"].items == 2
    # δ = 0 pairs (the input itself) are scored by no row: 90 pairs for the 18 non-zero δ
    assert by_config["-9..+9 (δ≠0)"].items == 90 and np.isfinite(by_config["-9..+9 (δ≠0)"].psnr)


def test_psnr_handles_masks_and_identical_images():
    a = np.zeros((4, 4, 3), np.float32)
    b = a.copy()
    b[0, 0] = 0.1
    assert ev.psnr(a, a) == float("inf")
    assert ev.psnr(a, b) == pytest.approx(10 * np.log10(1 / (0.01 * 3 / 48)))
    mask = np.zeros((4, 4), bool)
    assert np.isnan(ev.psnr(a, b, mask))
    mask[0, 0] = True
    assert ev.psnr(a, b, mask) == pytest.approx(20.0)


def test_models_run_with_the_right_channels():
    g1 = Generator(deblur_config(ngf=4, n_blocks=1))
    g2 = Generator(refocus_config(ngf=4, n_blocks=1))
    img = np.random.default_rng(0).random((22, 30, 3)).astype(np.float32)
    assert ev.run_deblur(g1, img).shape == img.shape
    assert ev.run_refocus(g2, img, 5.0, img).shape == img.shape
    assert ev.model_delta_configs(g2) == list(ev.DELTA_CONFIGS)
    four = Generator(refocus_config(deltas=(-9, -5, 5, 9), mode="onehot", ngf=4, n_blocks=1))
    assert ev.model_delta_configs(four) == ["{-9,-5,+5,+9}"]


def test_cli_writes_tables_and_notes_missing_hci(tmp_path):
    out = tmp_path / "eval"
    code = ev.main(["--synthetic", "1", "--scene-size", "48", "--cache-dir", str(tmp_path / "cache"),
                    "--hci", str(tmp_path / "no_hci"), "--out", str(out), "--no-reference"])  # fmt: skip
    assert code == 0
    text = (out / "tables.md").read_text()
    assert "Table 1 (deblur)" in text and "Table 2 (refocus)" in text and "HCI scene not found" in text
    with open(out / "deblur.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["method"].startswith("identity") and float(rows[0]["gain_db"]) == 0
    assert int(rows[0]["items"]) == 10


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_HCI.exists(), reason="../shared/data/hci_antinous is absent")
def test_hci_disparity_is_in_the_stack_slope_convention():
    """HCI's disparity sign is opposite to ours: after the flip, the half-resolution scene's pixels peak
    (by SML) near their ground-truth slope."""
    from napari_refocusgan.core.focus import SMLParams, sml_torch
    import torch

    scene = ev.hci_scene(SHARED_HCI, "half")
    assert scene.stack.shape == (10, 256, 256, 3)
    assert -1.6 < float(np.percentile(scene.disparity, 1)) and float(np.percentile(scene.disparity, 99)) < 1.7
    m = sml_torch(torch.from_numpy(scene.stack).permute(0, 3, 1, 2), SMLParams())[:, 0].numpy()
    peak = scene.slopes[m.argmax(0)]
    inside = (scene.disparity > scene.slopes[1]) & (scene.disparity < scene.slopes[-2]) & (m.max(0) > 0.01)
    assert inside.sum() > 1000
    assert np.median(np.abs(peak[inside] - scene.disparity[inside])) < 2 * scene.step


def test_cli_tables_hold_every_baseline_row(tmp_path):
    out = tmp_path / "eval"
    code = ev.main(["--synthetic", "1", "--scene-size", "48", "--cache-dir", str(tmp_path / "cache"),
                    "--hci", str(tmp_path / "no_hci"), "--out", str(out), "--pairs-per-scene", "2"])  # fmt: skip
    assert code == 0
    with open(out / "deblur.csv") as f:
        deblur = {row["method"]: row for row in csv.DictReader(f)}
    for method in ("identity (input slice)", "sharpen", "unsharp", "clahe", "clahe+sharpen", "regionwise",
                   "composite focus measure (all slices)"):  # fmt: skip
        assert method in deblur, sorted(deblur)
    # the full-stack reference sees every slice: it must beat the single input slice
    assert float(deblur["composite focus measure (all slices)"]["gain_db"]) > 0
    with open(out / "refocus.csv") as f:
        refocus = {row["method"] for row in csv.DictReader(f)}
    assert {"identity (input slice)", "blur-and-compare (true radiance)"} <= refocus


def test_the_g2_row_names_the_radiance_it_was_trained_on():
    from types import SimpleNamespace

    assert ev.training_radiance(SimpleNamespace(metadata={"radiance": "mix:w.safetensors"})) == "true or G1"
    assert ev.training_radiance(SimpleNamespace(metadata={"radiance": "g1:w.safetensors"})) == "G1"
    assert ev.training_radiance(SimpleNamespace(metadata={})) == "true"


def _view_grid(folder: Path, seed: int, n: int = 7, size: int = 24) -> None:
    """A NAME_RR_CC view folder of a textured plane displaced by one pixel per view."""
    import imageio.v3 as iio

    folder.mkdir(parents=True)
    texture = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    for r in range(n):
        for c in range(n):
            view = np.roll(texture, (r - n // 2, c - n // 2), axis=(0, 1))
            iio.imwrite(folder / f"{folder.name}_{r + 1:02d}_{c + 1:02d}.png", view)


def test_cli_scores_the_test_split_of_data_light_fields(tmp_path, capsys):
    from training import data

    names = [f"scene{i}" for i in range(200)]
    test_names = [n for n in names if data.file_split(Path(n)) == "test"][:2]
    train_name = next(n for n in names if data.file_split(Path(n)) == "train")
    root = tmp_path / "lf"
    for seed, name in enumerate([*test_names, train_name]):
        _view_grid(root / name, seed)
    common = ["--synthetic", "0", "--hci-variants", "", "--tables", "deblur", "--no-reference", "--no-classical"]
    assert ev.main([*common, "--data", str(root), "--out", str(tmp_path / "eval")]) == 0
    text = (tmp_path / "eval" / "tables.md").read_text()
    assert "light-field test split (2 of 3)" in text
    with open(tmp_path / "eval" / "deblur.csv") as f:
        (identity,) = [r for r in csv.DictReader(f) if r["method"].startswith("identity")]
    assert int(identity["items"]) == 20  # 2 light fields × 10 slices; the training one is left out

    # nothing left to score: an error that says why (empty tables would replace an earlier run's)
    assert ev.main([*common, "--data", str(root / train_name), "--out", str(tmp_path / "eval2")]) == 2
    assert "nothing to evaluate: none of the 1 light field(s)" in capsys.readouterr().err
    assert not (tmp_path / "eval2" / "tables.md").exists()


def test_each_g2_is_scored_on_the_delta_configurations_it_was_trained_for(monkeypatch):
    """Table 2's δ configurations: one G2 per configuration, each in its own rows, run by its own model."""
    g2s = [Generator(refocus_config(deltas=deltas, mode=mode, ngf=4, n_blocks=1))
           for deltas, mode in ((range(-9, 10), "continuous"), ((-9, -5, 5, 9), "onehot"), (range(-9, 10), "onehot"),
                                ((8,), "onehot"))]  # fmt: skip
    assert [ev.delta_label(g) for g in g2s] == ["continuous δ", "one-hot δ ∈ {-9,-5,+5,+9}", "one-hot δ ∈ -9..+9",
                                                "one-hot δ=+8"]  # fmt: skip
    calls = []
    real_run = ev.run_refocus
    monkeypatch.setattr(ev, "run_refocus", lambda model, *a: calls.append(model) or real_run(model, *a))
    methods = ev.refocus_methods(g2s, baselines=False)
    rows = []
    for name, method in methods.items():
        calls.clear()
        rows += ev.refocus_rows([tiny_scene(3)], {name: method}, "tiny", max_pairs=2)
        expected = [g for g in g2s if f"({ev.delta_label(g)})" in name]
        assert {id(m) for m in calls} == ({id(expected[0])} if expected else set()), name
    scored = {(r.method, r.deltas) for r in rows}
    plus8, four, every = "+8", "{-9,-5,+5,+9}", "-9..+9 (δ≠0)"
    assert {c for m, c in scored if m == "two-stage G2 (one-hot δ=+8), true radiance"} == {plus8}
    assert {c for m, c in scored if m == "two-stage G2 (one-hot δ ∈ {-9,-5,+5,+9}), true radiance"} == {four}
    for label in ("one-hot δ ∈ -9..+9", "continuous δ"):
        assert {c for m, c in scored if m == f"two-stage G2 ({label}), true radiance"} == {plus8, four, every}
    with pytest.raises(ev.RefocusError, match="share a name"):
        ev.refocus_methods([g2s[0], g2s[0]])


def test_cli_refuses_bad_options_and_models_before_rendering_anything(tmp_path, capsys):
    from napari_refocusgan.core.weights import save_generator

    g1 = tmp_path / "g1.safetensors"
    save_generator(Generator(deblur_config(ngf=4, n_blocks=1)), g1, "deblur")
    single = tmp_path / "g2s.safetensors"
    save_generator(Generator(refocus_config(in_channels=3, ngf=4, n_blocks=1)), single, "refocus")
    g2 = tmp_path / "g2.safetensors"
    save_generator(Generator(refocus_config(ngf=4, n_blocks=1)), g2, "refocus")
    no_sml = tmp_path / "g1ns.safetensors"
    save_generator(Generator(deblur_config(in_channels=3, ngf=4, n_blocks=1)), no_sml, "deblur")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cache = tmp_path / "cache"
    common = ["--synthetic", "1", "--scene-size", "48", "--cache-dir", str(cache), "--hci-variants", ""]
    out = ["--out", str(tmp_path / "eval")]
    for args, message in (
        (["--tables", "deblr", *out], "unknown: deblr"),
        (["--tables", ",", *out], "--tables"),
        (["--hci-variants", "paper,full", *out], "unknown: full"),
        (["--synthetic", "-3", *out], "--synthetic must be at least 0"),
        (["--pairs-per-scene", "0", *out], "--pairs-per-scene must be at least 1"),
        (["--g2", str(g1), *out], "holds a deblur generator"),
        (["--g1", str(single), *out], "holds a refocus generator"),
        (["--g2", str(single), *out], "pass it as --g2-single"),
        # swapped G1s were scored under each other's names
        (["--g1", str(no_sml), *out], "is a G1 without the SML channel: pass it as --g1-nosml"),
        (["--g1-nosml", str(g1), *out], "is a G1 with the SML channel: pass it as --g1"),
        (["--g2", str(g2), str(g2), *out], "two G2s take δ the same way"),  # was found after Table 1
        (["--out", str(afile)], "is a file"),
        # empty tables over an earlier run's results: nothing selected is an error
        (["--synthetic", "0", "--hci-variants", "", *out], "nothing to evaluate"),
        (["--synthetic", "0", "--hci-variants", "paper", "--hci", str(tmp_path / "nowhere"), *out],
         "nothing to evaluate: HCI scene not found"),
    ):
        assert ev.main([*common, *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
        assert not cache.exists() and not (tmp_path / "eval").exists(), args  # nothing rendered or written
    assert afile.read_text() == "x"


def test_comma_lists_take_spaces_and_capitals_as_focal_stack_keep_does():
    assert ev._comma_list(" Paper, HALF ,", "--hci-variants", ev.HCI_VARIANTS, empty=True) == ["paper", "half"]
