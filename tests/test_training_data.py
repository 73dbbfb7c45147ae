"""The training data pipeline: shapes, ranges, splits, refocus targets and clear errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import StackConfig, focal_stack, shift_and_sum
from training import data
from training.data import build_dataset

SIZE, CROP = 48, 32


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("scene_cache")


def make_config(cache: Path, **overrides):
    base = dict(
        crop=CROP, scene_size=SIZE, train_scenes=2, val_scenes=1, test_scenes=1, refocus_deltas="19",
        cache_dir=str(cache), cache_workers=1,
    )  # fmt: skip
    base.update(overrides)
    return SimpleNamespace(**base)


@pytest.mark.parametrize(
    ("task", "overrides", "channels"),
    [
        ("deblur", {}, 4),
        ("deblur", {"no_sml": True}, 3),
        ("refocus", {}, 6),
        ("refocus", {"single_stage": True}, 3),
        ("refocus", {"refocus_deltas": "continuous"}, 6),
    ],
)
def test_items_have_the_documented_shapes_and_ranges(cache, task, overrides, channels):
    ds = build_dataset(task, split="train", config=make_config(cache, **overrides))
    assert len(ds) > 0
    for index in (0, len(ds) - 1):
        item = ds[index]
        assert item["input"].shape == (channels, CROP, CROP)
        assert item["target"].shape == (3, CROP, CROP)
        for key in ("input", "target"):
            assert item[key].dtype == torch.float32
            assert -1.0 <= float(item[key].min()) and float(item[key].max()) <= 1.0
        if task == "refocus":
            assert item["delta"].shape == () and abs(float(item["delta"])) <= 9
        else:
            assert "delta" not in item


def test_dataset_lengths_follow_the_paper_configurations(cache):
    deblur = build_dataset("deblur", split="train", config=make_config(cache))
    assert len(deblur) == 2 * 10  # every slice of every scene
    four = build_dataset("refocus", split="train", config=make_config(cache, refocus_deltas="4"))
    assert len(four) == 2 * 12  # the paper: 12 pairs per stack for {−9, −5, +5, +9}
    eight = build_dataset("refocus", split="train", config=make_config(cache, refocus_deltas="8"))
    assert len(eight) == 2 * 2


def test_split_seeds_are_disjoint_and_deterministic():
    train, val, test = (data.split_seeds(s, 50) for s in ("train", "val", "test"))
    assert train == list(range(50))
    assert train == data.split_seeds("train", 50)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    with pytest.raises(RefocusError, match="split"):
        data.split_seeds("holdout", 3)


def test_scene_rendering_is_deterministic_and_matches_the_paper_stack():
    a = data.render_training_scene(7, SIZE)
    b = data.render_training_scene(7, SIZE)
    np.testing.assert_array_equal(a["stack"], b["stack"])
    assert a["stack"].shape == (10, SIZE, SIZE, 3)
    stack, _, _ = focal_stack(a["views"], StackConfig())
    np.testing.assert_allclose(a["stack"], stack, atol=1e-6)
    c = data.render_training_scene(8, SIZE)
    assert not np.allclose(a["centre"], c["centre"])


def _cached_scene(cache: Path, seed: int) -> data.CachedScene:
    return data.CachedScene(cache / data.synthetic_key(seed, SIZE))


def test_refocus_targets_are_slice_i_plus_delta(cache):
    ds = build_dataset("refocus", split="val", config=make_config(cache, refocus_deltas="4", jpeg_prob=0.0))
    seed = data.split_seeds("val", 1)[0]
    scene = data.render_training_scene(seed, SIZE)  # independent of the cache
    stack, _, _ = focal_stack(scene["views"], StackConfig())
    o = (SIZE - CROP) // 2  # val items are centre crops, no flips
    for k, (i, delta) in enumerate(ds.pairs):
        item = ds[k]
        j = int(i + delta)
        assert 0 <= j <= 9
        expected_target = stack[j, o : o + CROP, o : o + CROP]
        got = item["target"].permute(1, 2, 0).numpy() * 0.5 + 0.5
        np.testing.assert_allclose(got, expected_target, atol=2e-3)  # float16 cache
        assert float(item["delta"]) == delta
        # the radiance channels are the centre view (true radiance)
        radiance = item["input"][3:].permute(1, 2, 0).numpy() * 0.5 + 0.5
        np.testing.assert_allclose(radiance, scene["centre"][o : o + CROP, o : o + CROP], atol=2e-3)


def test_continuous_targets_equal_the_full_slice_at_the_fractional_slope(cache):
    build_dataset("refocus", split="train", config=make_config(cache))  # ensures the cache exists
    views = np.asarray(_cached_scene(cache, 0).get("views"), dtype=np.float32)
    slope = float(StackConfig().slopes()[2] + 3.4 * StackConfig().slope_step)
    full = shift_and_sum(views, [slope])[0].numpy()
    for window in ((0, CROP, 0, CROP), (5, 5 + CROP, 11, 11 + CROP), (SIZE - CROP, SIZE, SIZE - CROP, SIZE)):
        y0, y1, x0, x1 = window
        np.testing.assert_allclose(data.render_slice(views, slope, window), full[y0:y1, x0:x1], atol=1e-5)


def test_deblur_targets_are_the_centre_view_and_inputs_carry_the_focus_channel(cache, monkeypatch):
    monkeypatch.setattr(data.CachedScene, "noise", property(lambda self: 0.0))  # a noiseless input
    ds = build_dataset("deblur", split="val", config=make_config(cache, jpeg_prob=0.0))
    seed = data.split_seeds("val", 1)[0]
    scene = _cached_scene(cache, seed)
    o = (SIZE - CROP) // 2
    item = ds[3]
    np.testing.assert_allclose(item["target"].permute(1, 2, 0).numpy() * 0.5 + 0.5, scene.centre[o : o + CROP, o : o + CROP], atol=1e-6)
    # focus channel computed on the whole slice, then cropped (what inference does on a whole image)
    full_focus = data.focus_map(scene.slice(3))[..., 0]
    np.testing.assert_allclose(item["input"][3].numpy(), full_focus[o : o + CROP, o : o + CROP], atol=1e-5)


def test_deblur_items_mark_the_pixels_in_focus_from_the_disparity(cache):
    ds = build_dataset("deblur", split="val", config=make_config(cache))
    scene = _cached_scene(cache, data.split_seeds("val", 1)[0])
    o = (SIZE - CROP) // 2
    disparity = np.asarray(scene.get("disparity"))[o : o + CROP, o : o + CROP]
    shares = []
    for k, slope in enumerate(data.STACK.slopes()):
        mask = ds[k]["in_focus"]
        assert mask.shape == (1, CROP, CROP) and mask.dtype == torch.float32
        expected = np.abs(disparity - slope) / data.STACK.slope_step < data.IN_FOCUS_SLICES
        np.testing.assert_array_equal(mask[0].numpy().astype(bool), expected)
        shares.append(float(mask.mean()))
    assert 0 < max(shares) and min(shares) < 1  # the scene is in focus somewhere, and not everywhere
    # an already-sharp training item (the centre view) is in focus everywhere
    sharp = build_dataset("deblur", split="train", config=make_config(cache, identity_prob=1.0))
    assert float(sharp[0]["in_focus"].min()) == 1.0


def test_a_flipped_training_item_flips_its_in_focus_mask_with_the_image(cache, monkeypatch):
    # the centred window, so that the only unknown is which flips each item drew
    monkeypatch.setattr(data.FocalStackPairs, "_window", lambda self, h, w, rng: ((h - CROP) // 2, (h + CROP) // 2,
                                                                             (w - CROP) // 2, (w + CROP) // 2))
    ds = build_dataset("deblur", split="train", config=make_config(cache, identity_prob=0.0))
    scene = _cached_scene(cache, data.split_seeds("train", 1)[0])
    o = (SIZE - CROP) // 2
    centre = torch.from_numpy(scene.centre[o : o + CROP, o : o + CROP] * 2 - 1).permute(2, 0, 1)
    disparity = np.asarray(scene.get("disparity"))[o : o + CROP, o : o + CROP]
    flips_seen = set()
    for k, slope in enumerate(data.STACK.slopes()):
        item = ds[k]
        expected = torch.from_numpy(data.in_focus_mask(disparity, float(slope))[None].astype(np.float32))
        dims = next(d for d in ((), (-1,), (-2,), (-1, -2)) if torch.allclose(item["target"], centre.flip(d) if d else centre, atol=1e-6))
        flips_seen.add(dims)
        assert torch.equal(item["in_focus"], expected.flip(dims) if dims else expected), (k, dims)
    assert len(flips_seen) > 1  # some items were flipped and some not


def test_jpeg_degrades_only_the_input():
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3)).astype(np.float32)
    before = img.copy()
    out = data.degrade_input(img, rng, 0.0, data.Augment(jpeg_prob=1.0, noise_prob=0.0))
    np.testing.assert_array_equal(img, before)  # caller's array untouched
    assert out.shape == img.shape and 0 < np.abs(out - img).mean() < 0.2


def test_missing_and_empty_data_paths_give_clear_errors(cache, tmp_path):
    with pytest.raises(RefocusError, match="does not exist"):
        build_dataset("deblur", split="train", config=make_config(cache), data_paths=[str(tmp_path / "nope")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RefocusError, match="holds no light fields"):
        build_dataset("deblur", split="train", config=make_config(cache), data_paths=[str(empty)])
    with pytest.raises(RefocusError, match="no train scenes"):
        build_dataset("deblur", split="train", config=make_config(cache, train_scenes=0))
    with pytest.raises(RefocusError, match="unknown task"):
        build_dataset("denoise", split="train", config=make_config(cache))
    with pytest.raises(RefocusError, match="crop"):
        build_dataset("deblur", split="train", config=make_config(cache, crop=SIZE + 4))


def test_file_split_is_stable_and_keeps_hci_out_of_training():
    names = [Path(f"/data/flowers/IMG_{i:04d}_eslf.png") for i in range(400)]
    splits = [data.file_split(p) for p in names]
    assert splits == [data.file_split(p) for p in names]
    share = splits.count("train") / len(splits)
    assert 0.6 < share < 0.8 and splits.count("test") > 60
    assert data.file_split(Path("/work/shared/data/hci_antinous")) == "test"


def test_view_folder_light_fields_split_and_cache(cache, tmp_path):
    """An HCI-like folder of 9×9 views is read, cached as a paper stack, and lands in the test split."""
    import imageio.v3 as iio

    from napari_refocusgan.core.synthetic import render_scene

    folder = tmp_path / "hci_antinous"
    folder.mkdir()
    views = render_scene(3, (SIZE, SIZE), grid=9, n_layers=2).views
    for k, v in enumerate(views.reshape(81, SIZE, SIZE, 3)):
        iio.imwrite(folder / f"input_Cam{k:03d}.png", np.rint(v * 255).astype(np.uint8))
    cfg = make_config(cache, train_scenes=1, test_scenes=0)
    # it would add nothing to training (while the model card named it): refused, saying why
    for scenes in (1, 0):
        with pytest.raises(RefocusError, match=r"none of its 1 light field\(s\) is in the training split.*test-only"):
            build_dataset("deblur", split="train", config=make_config(cache, train_scenes=scenes),
                          data_paths=[str(folder)])  # fmt: skip
    test = build_dataset("deblur", split="test", config=cfg, data_paths=[str(folder)])
    assert len(test) == 10
    stack, _, _ = focal_stack(data.read_hci_views(folder), StackConfig())
    np.testing.assert_allclose(test.scenes[0].slice(4), stack[4], atol=2e-3)


def test_mixed_radiance_is_either_the_centre_view_or_g1s_output(cache, tmp_path):
    from napari_refocusgan.core.networks import Generator, deblur_config
    from napari_refocusgan.core.weights import save_generator

    torch.manual_seed(0)
    g1_path = tmp_path / "g1.safetensors"
    save_generator(Generator(deblur_config(ngf=4, n_blocks=1)), g1_path, "deblur", {"steps": 0})  # the identity

    def kinds(**overrides) -> list[str]:
        config = make_config(cache, radiance=f"mix:{g1_path}", refocus_deltas="19", noise_prob=0.0, jpeg_prob=0.0,
                             **overrides)  # fmt: skip
        ds = build_dataset("refocus", split="train", config=config)
        found = []
        for index in range(0, len(ds), 3):
            item = ds[index]
            rgb, radiance = item["input"][:3], item["input"][3:]
            # an untrained G1 returns its input, so its radiance is the input slice itself
            found.append("g1" if torch.allclose(radiance, rgb, atol=2e-2) else "true")
        return found

    mixed = kinds()
    assert mixed.count("g1") >= 2 and mixed.count("true") >= 2, mixed
    assert set(kinds(true_radiance_share=1.0)) == {"true"} and set(kinds(true_radiance_share=0.0)) == {"g1"}


def test_view_grid_folders_are_training_light_fields_and_hci_is_test_only(tmp_path):
    import imageio.v3 as iio

    root = tmp_path / "data"
    for name in ("garden", "HCI_Antinous"):
        folder = root / name
        folder.mkdir(parents=True)
        for r in range(1, 4):
            for c in range(1, 4):
                iio.imwrite(folder / f"{name}_{r:02d}_{c:02d}.png", np.full((8, 8, 3), 10 * r + c, np.uint8))
    (root / "notes.txt").write_text("not a light field")
    assert data.list_lightfields([str(root)]) == [root / "HCI_Antinous", root / "garden"]
    assert data.file_split(root / "HCI_Antinous") == "test"  # whatever the case of its name
    views = data.read_views(root / "garden")
    assert views.shape == (3, 3, 8, 8, 3)
    np.testing.assert_allclose(views[1, 2, 0, 0, 0], 23 / 255, atol=1e-6)  # row 2, column 3 (1-based)


def training_view_folder(root: Path, prefix: str, *, grid: int, size: int) -> tuple[str, Path]:
    """A NAME_RR_CC folder of grid×grid flat size² views whose name falls in the training split."""
    import imageio.v3 as iio

    name = next(f"{prefix}{i}" for i in range(100) if data.file_split(root / f"{prefix}{i}") == "train")
    folder = root / name
    folder.mkdir()
    for r in range(1, grid + 1):
        for c in range(1, grid + 1):
            iio.imwrite(folder / f"{name}_{r:02d}_{c:02d}.png", np.full((size, size, 3), 10 * r + c, np.uint8))
    return name, folder


def test_a_light_field_smaller_than_the_crop_is_a_clear_error(cache, tmp_path):
    """Only the first scene was checked: a small light field after the synthetic ones crashed a training step
    (numpy's "high <= 0")."""
    name, folder = training_view_folder(tmp_path, "garden", grid=7, size=8)
    with pytest.raises(RefocusError, match=rf"crop {CROP} is larger than the train scene {name}-\w+ \(8×8\)"):
        build_dataset("deblur", split="train", config=make_config(cache, train_scenes=1), data_paths=[str(folder)])


def test_data_paths_that_are_no_light_fields_or_too_small_grids_say_so_and_which(cache, tmp_path):
    import imageio.v3 as iio

    photo = tmp_path / "photo.png"  # was blamed on the data split: "none of its light fields is in the training split"
    iio.imwrite(photo, np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(RefocusError, match=r"photo.png is not a light field"):
        build_dataset("deblur", split="train", config=make_config(cache, train_scenes=1), data_paths=[str(photo)])
    name, folder = training_view_folder(tmp_path, "grid", grid=3, size=48)
    with pytest.raises(RefocusError, match=rf"{name}: asked for the central 7×7 views but the light field has only 3×3"):
        build_dataset("deblur", split="train", config=make_config(cache, train_scenes=1), data_paths=[str(folder)])


def test_clean_prob_leaves_inputs_without_noise_or_jpeg(cache):
    noisy = build_dataset("deblur", split="val", config=make_config(cache))
    clean = build_dataset("deblur", split="val", config=make_config(cache, clean_prob=1.0))
    seed = data.split_seeds("val", 1)[0]
    stack = _cached_scene(cache, seed).stack
    o = (SIZE - CROP) // 2
    for k in (0, 7):
        expected = stack[k, o : o + CROP, o : o + CROP]
        got = clean[k]["input"][:3].permute(1, 2, 0).numpy() * 0.5 + 0.5
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert not np.allclose(noisy[k]["input"][:3].permute(1, 2, 0).numpy() * 0.5 + 0.5, expected, atol=1e-6)


def test_far_background_puts_the_back_layer_far_beyond_the_stack_for_a_share_of_training_scenes(cache):
    chosen = [seed for seed in range(400) if data.has_far_background(seed, 0.5)]
    assert 150 < len(chosen) < 250
    assert set(seed for seed in range(400) if data.has_far_background(seed, 0.25)) < set(chosen)
    assert not any(data.has_far_background(seed, 0.0) for seed in range(400))

    plain = data.render_training_scene(chosen[0], SIZE)
    far = data.render_training_scene(chosen[0], SIZE, far_background=True)
    nearest = float(data.STACK.slopes()[-1]) + data.FAR_BACKGROUND_SLICES[0] * data.STACK.slope_step
    assert float(far["disparity"].max()) >= max(nearest, float(plain["disparity"].max())) - 1e-5

    # only training scenes get one: validation and test scenes stay comparable across runs
    config = make_config(cache, train_scenes=8, far_background=0.5)
    train = data.build_dataset("refocus", split="train", config=config).scenes
    far_scenes = [s for s in train if "-far-" in str(s.folder)]
    assert len(far_scenes) == sum(data.has_far_background(s, 0.5) for s in range(8)) > 0
    for scene in far_scenes:  # rendered as the far variant, not just filed under its name
        assert float(np.max(scene.get("disparity"))) >= nearest - 1e-3
    val_seed = data.split_seeds("val", 1)[0]
    assert data.has_far_background(val_seed, 0.5)  # so the rule below is what keeps it plain
    val = data.build_dataset("refocus", split="val", config=config).scenes
    assert not any("-far-" in str(s.folder) for s in val)
    with pytest.raises(RefocusError, match="far_background"):
        data.build_dataset("refocus", split="train", config=make_config(cache, far_background=1.5))
