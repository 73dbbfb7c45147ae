"""Light-field readers (ESLF, HCI / NAME_RR_CC folders, PFM, Lytro LFP) and the napari reader adapter.

Synthetic files are written to tmp_path; tests on the real samples in ../shared skip when it is absent.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_refocusgan._reader import napari_get_reader, read_lightfield_layers
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.focalstack import StackConfig, central_views, focal_stack, shift_and_sum
from napari_refocusgan.core.focus import sml
from napari_refocusgan.core.formats import eslf as eslf_mod
from napari_refocusgan.core.formats.eslf import interleave_eslf, lenslets_from_array, looks_like_eslf, open_eslf
from napari_refocusgan.core.formats.lfp import LFPFile, pack_lfp, section_id
from napari_refocusgan.core.formats.pfm import read_pfm, write_pfm
from napari_refocusgan.core.imaging import from_float
from napari_refocusgan.core.lightfield import detect_format, read_lightfield
from napari_refocusgan.core.synthetic import render_scene

SHARED = Path(__file__).parents[2] / "shared"
HCI_SCENE = SHARED / "data" / "hci_antinous"
LYTRO = SHARED / "data" / "lytro_stk"
needs_hci = pytest.mark.skipif(not HCI_SCENE.is_dir(), reason="../shared/data/hci_antinous is absent")
needs_lytro = pytest.mark.skipif(not LYTRO.is_dir(), reason="../shared/data/lytro_stk is absent")

Q8 = 1 / 255 + 1e-6  # uint8 quantisation tolerance


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def scene8():
    """An 8×8-view scene with parallax: the central views of a synthetic ESLF."""
    return render_scene(11, size=(40, 56), grid=8, n_layers=3, disparity_range=(-1.0, 1.0))


def eslf_from_views(views8: np.ndarray, outer_gain: float = 0.1) -> np.ndarray:
    """A 14×14-view float lenslet image: ``views8`` in the central 8×8, the outer ring copied from the
    nearest edge view and darkened like the vignetted outer views of a real Illum."""
    full = np.pad(views8, ((3, 3), (3, 3), (0, 0), (0, 0), (0, 0)), mode="edge")
    gain = np.full((14, 14), outer_gain, np.float32)
    gain[3:11, 3:11] = 1.0
    return interleave_eslf(full * gain[:, :, None, None, None])


@pytest.fixture(scope="module")
def hci_scene():
    return render_scene(5, size=(32, 40), grid=9, n_layers=3, supersample=1)


def write_hci(folder: Path, scene, *, cfg: str | None = None, pfm: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for idx in range(81):
        iio.imwrite(folder / f"input_Cam{idx:03d}.png", from_float(scene.views[idx // 9, idx % 9], np.uint8))
    if pfm:
        write_pfm(folder / "gt_disp_lowres.pfm", -scene.disparity)  # HCI sign is the opposite of ours
    if cfg is not None:
        (folder / "parameters.cfg").write_text(cfg)
    (folder / "LICENSE.txt").write_text("not an image")
    return folder


HCI_CFG = """[intrinsics]
focal_length_mm = 100
image_resolution_x_px = 40
image_resolution_y_px = 32

[extrinsics]
num_cams_x = {n}
num_cams_y = {n}
baseline_mm = 50.5

[meta]
disp_min = -1.5
disp_max = 1.5
"""


def coded_view(r: int, c: int, shape=(20, 24)) -> np.ndarray:
    """A uint8 RGB view whose colour encodes its grid position."""
    img = np.zeros((*shape, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 20 * r, 20 * c, 7
    return img


def write_grid(folder: Path, rows: int, cols: int, *, name="scene", ext="png", skip=(), shape=(20, 24)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            if (r, c) not in skip:
                iio.imwrite(folder / f"{name}_{r:02d}_{c:02d}.{ext}", coded_view(r, c, shape))
    return folder


def write_png16(path: Path, image: np.ndarray) -> None:
    """A 16-bit RGB(A) PNG (Pillow cannot write those): unfiltered rows, one zlib stream."""
    import struct
    import zlib

    h, w, c = image.shape
    rows = b"".join(b"\0" + image[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def jpeg_bytes(image: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", image, extension=".jpg", quality=95)


def lfp_json(accelerations: list, frames: list | None = None) -> bytes:
    doc = {
        "picture": {"frameArray": frames or [], "viewArray": [], "accelerationArray": accelerations},
        "version": {"major": 1, "minor": 0},
    }
    return json.dumps(doc).encode()


SLICE_COLOURS = {2.0: (200, 40, 40), -1.0: (40, 200, 40), 0.5: (40, 40, 200)}


def engine1_lfp(depth_lut: np.ndarray) -> bytes:
    """An Engine-1-like stack: JPEG slices listed out of lambda order, a depth LUT, an unrelated section."""
    contents, entries = [], []
    for lam, colour in SLICE_COLOURS.items():
        data = jpeg_bytes(np.broadcast_to(np.array(colour, np.uint8), (32, 48, 3)).copy())
        contents.append(data)
        entries.append(
            {"representation": "jpeg", "width": 48, "height": 32, "lambda": lam, "imageRef": section_id(data)}
        )
    lut = depth_lut.astype("<f4").tobytes()
    accel = {
        "type": "com.lytro.acceleration.refocusStack",
        "generator": "Lytro Lightfield Engine 1.000000",
        "vendorContent": {
            "defaultLambda": 0,
            "depthLut": {
                "width": depth_lut.shape[1],
                "height": depth_lut.shape[0],
                "representation": "raw",
                "imageRef": section_id(lut),
            },
            "imageArray": entries,
        },
    }
    frame = [
        {"frame": {"metadataRef": "sha1-" + "0" * 40, "imageRef": "sha1-" + "1" * 40}}
    ]  # absent, as in real -stk files
    return pack_lfp([("M", lfp_json([accel], frame)), ("C", lut), *(("C", c) for c in contents), ("C", b"unrelated")])


def raw_lfp(top_key: str = "picture") -> bytes:
    """A raw-looking capture: a frame whose image section (a packed sensor mosaic) is present."""
    mosaic = np.random.default_rng(0).integers(0, 255, 64 * 64 * 10 // 8, dtype=np.uint8).tobytes()
    frame_meta = json.dumps({"image": {"width": 64, "height": 64, "representation": "rawPacked"}}).encode()
    frame = [{"frame": {"metadataRef": section_id(frame_meta), "imageRef": section_id(mosaic)}}]
    top = lfp_json([], frame) if top_key == "picture" else json.dumps({"frames": frame}).encode()
    return pack_lfp([("M", top), ("M", frame_meta), ("C", mosaic)])


# ------------------------------------------------------------------------------------------------ ESLF


def test_interleave_puts_view_vu_at_lenslet_pixel_vu():
    views = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(np.uint16)
    img = interleave_eslf(views)
    assert img.shape == (8, 15)
    for v in range(2):
        for u in range(3):
            np.testing.assert_array_equal(img[v::2, u::3], views[v, u])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_eslf_png_roundtrip_detect_and_central_views(tmp_path, scene8, dtype):
    lens = eslf_from_views(scene8.views)
    stored = from_float(lens, dtype)
    if dtype == np.uint16:  # an RGBA export: alpha must be dropped
        stored = np.concatenate([stored, np.full(stored.shape[:2] + (1,), 65535, np.uint16)], axis=-1)
    path = tmp_path / "IMG_0001.png"
    if dtype == np.uint16:
        write_png16(path, stored)
    else:
        iio.imwrite(path, stored)
    assert detect_format(path) == "eslf"

    lf = read_lightfield(path, views=8)
    assert lf.source == "eslf"
    assert lf.views.shape == (8, 8, 40, 56, 3) and lf.views.dtype == np.float32
    tol = 1 / np.iinfo(dtype).max + 1e-6
    np.testing.assert_allclose(lf.views, scene8.views, atol=tol)
    assert lf.metadata["view_offset"] == (3, 3) and lf.metadata["stored_dtype"] == np.dtype(dtype).name

    # central 7×7 of the file = central 7×7 of the 8×8 block, as focalstack.central_views cuts it
    lf7 = read_lightfield(path, views=7)
    np.testing.assert_array_equal(lf7.views, central_views(lf.views, 7))
    full = read_lightfield(path)
    assert full.views.shape[:2] == (14, 14)
    np.testing.assert_array_equal(full.views[3:11, 3:11], lf.views)


def test_eslf_crops_partial_lenslets(tmp_path, scene8):
    lens = from_float(eslf_from_views(scene8.views), np.uint8)
    ragged = np.pad(lens, ((0, 5), (0, 9), (0, 0)), mode="reflect")  # 565×793: not multiples of 14
    path = tmp_path / "ragged_eslf.png"
    iio.imwrite(path, ragged)
    assert detect_format(path) == "eslf"
    lf = read_lightfield(path, views=8)
    assert lf.views.shape == (8, 8, 40, 56, 3)
    assert lf.metadata["cropped_px"] == (5, 9)
    np.testing.assert_allclose(lf.views, scene8.views, atol=Q8)

    tif = tmp_path / "ragged.tif"  # lossless TIFF exports are read the same way
    tifffile.imwrite(tif, ragged, photometric="rgb")
    assert detect_format(tif) == "eslf"
    np.testing.assert_array_equal(read_lightfield(tif, views=8).views, lf.views)
    planar = tmp_path / "planar.tif"  # was read but not recognised: its header shape starts with the 3 samples
    tifffile.imwrite(planar, np.moveaxis(ragged, -1, 0), photometric="rgb", planarconfig="separate")
    assert detect_format(planar) == "eslf" and napari_get_reader(str(planar)) is not None
    np.testing.assert_array_equal(read_lightfield(planar, views=8).views, lf.views)


def test_lazy_lenslet_access_converts_only_requested_views(scene8):
    lens = lenslets_from_array(from_float(eslf_from_views(scene8.views), np.uint8))
    assert lens.lenslets.dtype == np.uint8  # nothing converted yet
    assert lens.view_shape == (40, 56)
    np.testing.assert_allclose(lens.view(3, 10), scene8.views[0, 7], atol=Q8)
    assert lens.views(2).shape == (2, 2, 40, 56, 3)
    with pytest.raises(RefocusError, match="outside"):
        lens.view(14, 0)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "brick", "text", "checkerboard", "hubble_deep_field"])
def test_ordinary_photos_are_not_eslf_even_with_the_name_hint(name):
    import skimage.data
    from skimage.transform import resize

    img = getattr(skimage.data, name)()
    if min(img.shape[:2]) < 300:
        img = (resize(img, (img.shape[0] * 2, img.shape[1] * 2)) * 255).astype(np.uint8)
    assert not looks_like_eslf(img)
    assert not looks_like_eslf(img, name_hint=True)


def test_plain_photo_file_not_detected_and_read_says_why(tmp_path):
    import skimage.data

    path = tmp_path / "holiday_eslf.png"  # the name hint alone must not make it an ESLF
    iio.imwrite(path, skimage.data.astronaut())
    assert detect_format(path) is None
    with pytest.raises(RefocusError, match="no 14×14-pixel lenslet structure"):
        read_lightfield(path)
    plain = tmp_path / "photo.png"
    iio.imwrite(plain, skimage.data.astronaut())
    with pytest.raises(RefocusError, match="not a light field"):
        read_lightfield(plain)


def test_shorter_repeats_are_not_taken_for_14_px_lenslets(scene8):
    """An ESLF resized by half (7-px lenslets) and a 1-px checkerboard also repeat every 14 px: they were read
    as 14×14-view light fields of scrambled views."""
    full = eslf_from_views(scene8.views)
    assert looks_like_eslf(full)
    weak = eslf_from_views(scene8.views, outer_gain=0.8)  # faint vignetting: found by its 14-px repeat alone
    assert eslf_mod.eslf_evidence(weak)["vignette"] < eslf_mod.VIGNETTE_MIN and looks_like_eslf(weak)
    h, w = full.shape[0] // 2 * 2, full.shape[1] // 2 * 2
    half = full[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    checker = np.indices((600, 800)).sum(axis=0) % 2 * np.float32(0.5) + np.float32(0.25)
    for image in (half, checker):
        assert not looks_like_eslf(image) and not looks_like_eslf(image, name_hint=True)


def test_name_hint_tips_weak_evidence_only(tmp_path):
    # Nearly no parallax and mild vignetting (outer views at 80 %): too weak alone, enough with "_eslf".
    flat = np.broadcast_to(render_scene(2, size=(20, 24), grid=1, n_layers=1).views, (8, 8, 20, 24, 3))
    img = from_float(eslf_from_views(np.ascontiguousarray(flat), outer_gain=0.8), np.uint8)
    ev = eslf_mod.eslf_evidence(img)
    assert eslf_mod.VIGNETTE_MIN_HINTED < ev["vignette"] < eslf_mod.VIGNETTE_MIN
    iio.imwrite(tmp_path / "weak.png", img)
    iio.imwrite(tmp_path / "weak_eslf.png", img)
    assert detect_format(tmp_path / "weak.png") is None
    assert detect_format(tmp_path / "weak_eslf.png") == "eslf"


def test_a_float_eslf_must_hold_unit_intensities():
    """Its views were each scaled by their own maximum (one view 4× another's brightness for the same point)."""
    lenslets = np.linspace(0, 200, 280 * 280 * 3, dtype=np.float32).reshape(280, 280, 3)
    with pytest.raises(RefocusError, match="values 0…200; float images must hold intensities"):
        lenslets_from_array(lenslets)
    ok = lenslets_from_array(lenslets / 200)
    np.testing.assert_allclose(ok.view(0, 0), lenslets[0::14, 0::14] / 200, rtol=1e-6)


def test_eslf_wrong_sizes_are_explained(tmp_path):
    with pytest.raises(RefocusError, match="at least 224×224"):
        lenslets_from_array(np.zeros((100, 3000, 3), np.uint8))
    with pytest.raises(RefocusError, match="single gray, RGB or RGBA"):
        lenslets_from_array(np.zeros((300, 300, 3, 2), np.uint8))
    small = tmp_path / "tiny_eslf.png"
    iio.imwrite(small, np.zeros((140, 140, 3), np.uint8))
    assert detect_format(small) is None
    with pytest.raises(RefocusError, match="140×140 pixels"):
        read_lightfield(small)


def test_truncated_and_corrupt_png(tmp_path, scene8):
    good = tmp_path / "good_eslf.png"
    iio.imwrite(good, from_float(eslf_from_views(scene8.views), np.uint8))
    cut = tmp_path / "cut_eslf.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    for path in (cut, junk):
        assert detect_format(path) is None
        with pytest.raises(RefocusError, match="Cannot read"):
            read_lightfield(path)
    # The explicit reader reports the same clearly.
    with pytest.raises(RefocusError, match="Cannot read"):
        open_eslf(cut)


# ------------------------------------------------------------------------------------------------- PFM


def test_pfm_roundtrip_gray_and_colour(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.normal(size=(5, 7)).astype(np.float32)
    colour = rng.normal(size=(4, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(read_pfm(write_pfm(tmp_path / "g.pfm", gray)), gray)
    np.testing.assert_array_equal(read_pfm(write_pfm(tmp_path / "c.pfm", colour)), colour)


def test_pfm_rows_bottom_up_and_big_endian(tmp_path):
    stored = np.array([[1, 2, 3], [4, 5, 6]], dtype=">f4")  # file order: bottom row first
    path = tmp_path / "be.pfm"
    path.write_bytes(b"Pf\n3 2\n1.0\n" + stored.tobytes())
    np.testing.assert_array_equal(read_pfm(path), [[4, 5, 6], [1, 2, 3]])


def test_pfm_bad_inputs(tmp_path):
    nan = tmp_path / "nan.pfm"
    nan.write_bytes(b"Pf\n2 1\n-1\n" + np.array([1.0, np.nan], "<f4").tobytes())
    with pytest.raises(RefocusError, match="NaN"):
        read_pfm(nan)
    short = tmp_path / "short.pfm"
    short.write_bytes(b"Pf\n4 4\n-1\n" + b"\0" * 10)
    with pytest.raises(RefocusError, match="truncated"):
        read_pfm(short)
    other = tmp_path / "other.pfm"
    other.write_bytes(b"P6\n4 4\n255\n" + b"\0" * 48)
    with pytest.raises(RefocusError, match="not a PFM"):
        read_pfm(other)
    with pytest.raises(RefocusError, match="Cannot read"):
        read_pfm(tmp_path / "missing.pfm")


# ---------------------------------------------------------------------------------------- view folders


def test_hci_folder_order_disparity_sign_and_parameters(tmp_path, hci_scene):
    folder = write_hci(tmp_path / "scene", hci_scene, cfg=HCI_CFG.format(n=9))
    assert detect_format(folder) == "hci"
    lf = read_lightfield(folder)
    assert lf.source == "hci"
    assert lf.views.shape == (9, 9, 32, 40, 3)
    np.testing.assert_allclose(lf.views, hci_scene.views, atol=Q8)  # row = idx // 9, col = idx % 9
    np.testing.assert_array_equal(lf.disparity, hci_scene.disparity)  # HCI sign flipped back to ours
    params = lf.metadata["parameters"]
    assert params["extrinsics"]["num_cams_x"] == 9 and params["meta"]["disp_min"] == -1.5

    five = read_lightfield(folder, views=5)
    np.testing.assert_array_equal(five.views, lf.views[2:7, 2:7])
    np.testing.assert_array_equal(five.disparity, lf.disparity)


def test_hci_folder_bad_inputs(tmp_path, hci_scene):
    folder = write_hci(tmp_path / "a", hci_scene, cfg=HCI_CFG.format(n=8), pfm=False)
    with pytest.raises(RefocusError, match="declares a 8×8 camera grid"):
        read_lightfield(folder)
    # a grid of 0 was ignored (9×9 taken instead, without a word); a garbled file gave configparser's dump
    (folder / "parameters.cfg").write_text(HCI_CFG.format(n=0))
    with pytest.raises(RefocusError, match=r"invalid camera grid \(num_cams_y = 0, num_cams_x = 0\)"):
        read_lightfield(folder)
    (folder / "parameters.cfg").write_bytes(b"\x00\xff garbage\nno = section\n")
    with pytest.raises(RefocusError, match=r"Cannot parse .*\(INI\) file: File contains no section headers\.$"):
        read_lightfield(folder)

    folder = write_hci(tmp_path / "b", hci_scene, pfm=False)
    (folder / "input_Cam080.png").unlink()
    (folder / "input_Cam040.png").unlink()
    assert detect_format(folder) == "hci"  # recognised, so that reading can say what is missing
    with pytest.raises(RefocusError, match=r"missing input_Cam040\.png, input_Cam080\.png"):
        read_lightfield(folder)

    folder = write_hci(tmp_path / "c", hci_scene, pfm=False)
    write_pfm(folder / "gt_disp_lowres.pfm", np.zeros((8, 8), np.float32))
    with pytest.raises(RefocusError, match="does not belong to these views"):
        read_lightfield(folder)

    # An interrupted copy: the first 64 views are a square number, but not an 8×8 light field
    folder = write_hci(tmp_path / "d", hci_scene, pfm=False)
    for idx in range(64, 81):
        (folder / f"input_Cam{idx:03d}.png").unlink()
    with pytest.raises(RefocusError, match=r"9×9 view grid is incomplete; missing input_Cam064\.png.*Without "
                       r"parameters\.cfg an HCI folder is taken as the benchmark's 9×9 views"):
        read_lightfield(folder)
    from training.data import read_hci_views  # training reads HCI folders through the same reader

    with pytest.raises(RefocusError, match="9×9 view grid is incomplete"):
        read_hci_views(folder)
    (folder / "parameters.cfg").write_text(HCI_CFG.format(n=8))  # unless the folder declares 8×8
    assert read_lightfield(folder).views.shape[:2] == (8, 8)


def test_name_rr_cc_grid_placement_and_formats(tmp_path):
    folder = write_grid(tmp_path / "g", 3, 4)
    (folder / "notes.txt").write_text("ignored")
    assert detect_format(folder) == "view-grid"
    lf = read_lightfield(folder)
    assert lf.views.shape == (3, 4, 20, 24, 3)
    for r in range(3):
        for c in range(4):
            np.testing.assert_allclose(lf.views[r, c, 0, 0], coded_view(r + 1, c + 1)[0, 0] / 255, atol=1e-6)
    assert lf.metadata["name"] == "scene"

    tif = tmp_path / "t"
    tif.mkdir()
    for r in (1, 2):
        for c in (1, 2):
            tifffile.imwrite(tif / f"lf_{r}_{c}.tif", coded_view(r, c).astype(np.uint16) * 257)
    lf = read_lightfield(tif)
    np.testing.assert_allclose(lf.views[1, 0, 0, 0], coded_view(2, 1)[0, 0] / 255, atol=1e-6)

    deep = tmp_path / "deep"  # 16-bit colour PNG views keep all 16 bits (Pillow alone would keep 8)
    deep.mkdir()
    fine = np.random.default_rng(3).integers(0, 65536, (2, 2, 6, 5, 3)).astype(np.uint16)
    for r in range(2):
        for c in range(2):
            write_png16(deep / f"v_{r + 1}_{c + 1}.png", fine[r, c])
    np.testing.assert_array_equal(read_lightfield(deep).views, fine / np.float32(65535))


def test_view_folder_bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect_format(empty) is None
    with pytest.raises(RefocusError, match="holds no light-field views"):
        read_lightfield(empty)

    text_only = tmp_path / "text"
    text_only.mkdir()
    (text_only / "readme.md").write_text("hello")
    assert detect_format(text_only) is None
    with pytest.raises(RefocusError, match="holds no light-field views"):
        read_lightfield(text_only)

    missing = write_grid(tmp_path / "missing", 2, 3, skip={(2, 2)})
    with pytest.raises(RefocusError, match=r"missing scene_02_02"):
        read_lightfield(missing)

    mixed = write_grid(tmp_path / "mixed", 2, 2)
    iio.imwrite(mixed / "scene_02_02.png", coded_view(2, 2, shape=(20, 25)))
    with pytest.raises(RefocusError, match="differ in size"):
        read_lightfield(mixed)

    fake = write_grid(tmp_path / "fake", 2, 2)
    (fake / "scene_01_02.png").write_text("not a png")
    with pytest.raises(RefocusError, match="Cannot read .*scene_01_02.png"):
        read_lightfield(fake)

    two = write_grid(tmp_path / "two", 2, 2)
    write_grid(two, 2, 2, name="other")
    with pytest.raises(RefocusError, match="different names"):
        read_lightfield(two)

    zero = write_grid(tmp_path / "zero", 1, 1)
    iio.imwrite(zero / "scene_00_01.png", coded_view(0, 1))
    with pytest.raises(RefocusError, match="start at 1"):
        read_lightfield(zero)

    duplicated = write_grid(tmp_path / "duplicated", 2, 2)
    iio.imwrite(duplicated / "scene_1_1.png", coded_view(9, 9))
    with pytest.raises(RefocusError, match=r"scene_01_01\.png and scene_1_1\.png are both view \(1, 1\)"):
        read_lightfield(duplicated)

    hidden = write_grid(tmp_path / "hidden", 2, 2)
    (hidden / "._scene_01_01.png").write_bytes(b"AppleDouble")  # macOS leaves these on foreign disks
    assert read_lightfield(hidden).views.shape[:2] == (2, 2)

    with pytest.raises(RefocusError, match="views must be a whole number"):
        read_lightfield(write_grid(tmp_path / "ok", 1, 1), views=0)
    with pytest.raises(RefocusError, match="does not exist"):
        read_lightfield(tmp_path / "nowhere")
    assert detect_format(tmp_path / "nowhere") is None


def test_reader_does_not_keep_or_modify_caller_arrays(scene8):
    lens = from_float(eslf_from_views(scene8.views), np.uint8)
    before = lens.copy()
    views = lenslets_from_array(lens).views(4)
    views += 1.0
    np.testing.assert_array_equal(lens, before)


# ------------------------------------------------------------------------------------------------- LFP


def test_engine1_like_lfp_sorted_by_lambda_with_depth_lut(tmp_path):
    lut = np.arange(20, dtype=np.float32).reshape(4, 5) - 7
    path = tmp_path / "IMG_0001-stk.lfp"
    path.write_bytes(engine1_lfp(lut))
    assert detect_format(path) == "lytro-lfp"
    lf = read_lightfield(path)
    assert lf.views is None
    assert lf.stack_labels == [-1.0, 0.5, 2.0]
    assert lf.focal_stack.shape == (3, 32, 48, 3) and lf.focal_stack.dtype == np.float32
    for k, lam in enumerate(lf.stack_labels):
        np.testing.assert_allclose(lf.focal_stack[k].mean(axis=(0, 1)), np.array(SLICE_COLOURS[lam]) / 255, atol=0.03)
    np.testing.assert_array_equal(lf.depth, lut)
    assert lf.metadata["stack_encoding"] == "jpeg"


def test_engine10_like_h264_lfp(tmp_path):
    av = pytest.importorskip("av")
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no H.264 encoder")
    levels = {1.5: 60, -2.0: 200, 0.25: 120}  # lambda → grey level, written out of order
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=1, options={"qp": "0", "bf": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for level in levels.values():
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), level, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    block = buf.getvalue()
    accel = {
        "type": "com.lytro.acceleration.refocusStack",
        "generator": "Lytro Lightfield Engine 10.000000",
        "vendorContent": {
            "blockOfImages": {
                "blockOfImagesRef": section_id(block),
                "representation": "h264",
                "metadataArray": [{"width": 64, "height": 48, "lambda": lam} for lam in levels],
            }
        },
    }
    path = tmp_path / "e10-stk.lfp"
    path.write_bytes(pack_lfp([("M", lfp_json([accel])), ("C", block)]))
    lf = read_lightfield(path)
    assert lf.stack_labels == [-2.0, 0.25, 1.5]
    assert lf.focal_stack.shape == (3, 48, 64, 3)
    np.testing.assert_allclose(lf.focal_stack.mean(axis=(1, 2, 3)), [200 / 255, 120 / 255, 60 / 255], atol=0.02)

    # A block that decodes to fewer frames than declared is an error, not a short stack.
    accel["vendorContent"]["blockOfImages"]["metadataArray"].append({"width": 64, "height": 48, "lambda": 9.0})
    path.write_bytes(pack_lfp([("M", lfp_json([accel])), ("C", block)]))
    with pytest.raises(RefocusError, match="declares 4 slices .* 3 frames"):
        read_lightfield(path)


@pytest.mark.parametrize("top_key,suffix", [("picture", ".lfp"), ("frames", ".lfr")])
def test_raw_lytro_is_refused_with_what_is_needed(tmp_path, top_key, suffix):
    path = tmp_path / f"raw{suffix}"
    path.write_bytes(raw_lfp(top_key))
    assert detect_format(path) == "lytro-lfp"
    with pytest.raises(RefocusError) as info:
        read_lightfield(path)
    message = str(info.value)
    assert "raw Lytro" in message and "caldata" in message and "white-image calibration" in message
    assert "ESLF" in message and "-stk.lfp" in message
    # napari: recognised, so the reader runs and napari shows this message instead of "no reader"
    reader = napari_get_reader(str(path))
    assert reader is not None
    with pytest.raises(RefocusError, match="raw Lytro"):
        reader(str(path))


def test_lfp_truncated_corrupt_and_fake(tmp_path):
    data = engine1_lfp(np.zeros((2, 2), np.float32))
    for cut in (len(data) - 300, 120, 40, 14):
        path = tmp_path / f"cut{cut}.lfp"
        path.write_bytes(data[:cut])
        assert detect_format(path) == "lytro-lfp"
        with pytest.raises(RefocusError, match="truncated") as info:
            read_lightfield(path)
        assert "magic" not in str(info.value)  # 14 bytes hold the magic: it was said to be missing
    corrupt = tmp_path / "corrupt.lfp"
    corrupt.write_bytes(data[:16] + b"garbage!" * 20)
    with pytest.raises(RefocusError, match="corrupt"):
        read_lightfield(corrupt)
    bad_json = tmp_path / "badjson.lfp"
    bad_json.write_bytes(pack_lfp([("M", b"{not json")]))
    with pytest.raises(RefocusError, match="not valid JSON"):
        read_lightfield(bad_json)
    odd_json = tmp_path / "oddjson.lfp"
    odd_json.write_bytes(pack_lfp([("M", b"[1, 2]")]))
    with pytest.raises(RefocusError, match="unexpected Lytro metadata layout"):
        read_lightfield(odd_json)
    dangling = tmp_path / "dangling.lfp"
    dangling.write_bytes(engine1_lfp(np.zeros((2, 2), np.float32)).replace(b"unrelated", b"UNRELATED"))
    lf = read_lightfield(dangling)  # an unreferenced section changing does not matter
    assert lf.focal_stack.shape[0] == 3
    fake = tmp_path / "fake.lfp"
    fake.write_bytes(b"hello world, not a container")
    assert detect_format(fake) is None
    with pytest.raises(RefocusError, match="not a Lytro LFP/LFR file"):
        read_lightfield(fake)


def test_lfp_missing_referenced_section(tmp_path):
    data = engine1_lfp(np.zeros((2, 2), np.float32))
    path = tmp_path / "x.lfp"
    path.write_bytes(data)
    lfp = LFPFile(path)  # rebuild the file without the depth LUT (the only 16-byte section)
    kept = [(s.kind, lfp.data[s.offset : s.offset + s.length]) for s in lfp.sections if s.length != 16]
    path.write_bytes(pack_lfp(kept))
    with pytest.raises(RefocusError, match="depth LUT refers to section sha1-"):
        read_lightfield(path)


# ---------------------------------------------------------------------------------------------- napari


def test_get_reader_declines_junk_and_never_raises(tmp_path):
    import skimage.data

    photo = tmp_path / "photo.png"
    iio.imwrite(photo, skimage.data.astronaut())
    text = tmp_path / "a.txt"
    text.write_text("x")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((5, 300, 300), np.uint8))
    empty = tmp_path / "empty"
    empty.mkdir()
    grid = write_grid(tmp_path / "g", 2, 2)
    lfp = tmp_path / "s.lfp"
    lfp.write_bytes(engine1_lfp(np.zeros((2, 2), np.float32)))
    for junk in (
        photo,
        text,
        stack,
        empty,
        tmp_path / "nowhere.png",
        str(photo),
        [],
        [grid, photo],
        42,
        None,
    ):
        assert napari_get_reader(junk) is None, junk
    assert napari_get_reader([str(grid), str(grid)]) is read_lightfield_layers
    assert napari_get_reader([grid, lfp]) is read_lightfield_layers  # each file by its own format
    assert napari_get_reader(lfp) is read_lightfield_layers


def test_reader_claims_unreadable_lytro_files_to_say_what_is_wrong(tmp_path):
    """napari would only say that no reader accepts the file; ours explains."""
    cut = tmp_path / "cut.lfp"
    cut.write_bytes(b"\x89LF")
    reader = napari_get_reader(str(cut))
    assert reader is read_lightfield_layers
    with pytest.raises(RefocusError, match=r"magic .* is missing\); it may be truncated or corrupt"):
        reader(str(cut))


def test_reader_claims_images_named_as_eslf_to_say_what_is_wrong(tmp_path, monkeypatch):
    """A `*_eslf.png` too small for 14×14 lenslets was declined: napari said only "refused the file"."""
    small = tmp_path / "tiny_eslf.png"
    iio.imwrite(small, np.zeros((140, 140, 3), np.uint8))
    reader = napari_get_reader(str(small))
    assert reader is read_lightfield_layers
    with pytest.raises(RefocusError, match="140×140 pixels"):
        reader(str(small))
    # recognised by its name: decoded once, to read it, not also to recognise it
    calls = []
    decode = eslf_mod.decode_lenslet_image
    monkeypatch.setattr(eslf_mod, "decode_lenslet_image", lambda path: calls.append(path) or decode(path))
    big = tmp_path / "noise_eslf.png"
    iio.imwrite(big, np.random.default_rng(2).integers(0, 255, (240, 240, 3), dtype=np.uint8))
    assert napari_get_reader(str(big)) is read_lightfield_layers and calls == []
    plain = tmp_path / "tiny.png"  # the same image without the name is not ours
    iio.imwrite(plain, np.zeros((140, 140, 3), np.uint8))
    assert napari_get_reader(str(plain)) is None


def test_reader_of_several_files_that_all_fail_names_each(tmp_path):
    cut, fake = tmp_path / "cut.lfp", tmp_path / "fake.lfp"
    cut.write_bytes(b"\x89LF")
    fake.write_bytes(b"not a light field at all")
    with pytest.raises(RefocusError, match=r"none of the 2 files opened: .*cut\.lfp.*fake\.lfp"):
        read_lightfield_layers([cut, fake])


def test_focal_stack_and_reference_view_open_at_the_same_contrast(tmp_path):
    """napari's auto contrast differed per layer, so toggling between them changed the scene's brightness."""
    stack, centre = read_lightfield_layers(write_grid(tmp_path / "grid", 3, 3))[:2]
    assert stack[1]["name"].endswith("focal stack") and centre[1]["name"].endswith("centre view")
    assert stack[1]["contrast_limits"] == centre[1]["contrast_limits"] == (0.0, 1.0)


def test_reader_refuses_a_single_row_of_views_and_names_the_current_folder(tmp_path, monkeypatch):
    row = write_grid(tmp_path / "row", 1, 5)
    with pytest.raises(RefocusError, match="at least 2×2 views; this light field has 1×5"):
        read_lightfield_layers(row)
    monkeypatch.chdir(write_grid(tmp_path / "here", 2, 2))
    assert read_lightfield_layers(".")[0][1]["name"] == "here focal stack"
    (tmp_path / "here" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "here" / "sub")
    assert read_lightfield_layers("..")[0][1]["name"] == "here focal stack"  # was ".. focal stack"


def test_focal_stack_command_names_the_real_grid_and_the_default_window(tmp_path, capsys):
    """`--views 7` on a 5×9 folder said the light field had "only 5×7" (the block already cut to 7 columns);
    `--slices 10` alone blamed a "keep 6:15" the user never typed."""
    from napari_refocusgan.cli import main

    folder = write_grid(tmp_path / "wide", 5, 9, shape=(12, 12))
    out = str(tmp_path / "stack.tif")
    assert main(["focal-stack", str(folder), "-o", out, "--views", "7"]) == 2
    assert "has a 5×9 grid of views" in capsys.readouterr().err
    assert main(["focal-stack", str(folder), "-o", out, "--slices", "10"]) == 2
    assert "the default --keep 6:15 (the paper's window of its 30 slices) does not fit --slices 10" in (
        capsys.readouterr().err
    )
    assert main(["focal-stack", str(folder), "-o", out, "--slices", "10", "--keep", "auto"]) == 0
    assert main(["focal-stack", str(folder), "-o", out]) == 0  # the default window on the default 30 slices
    assert tifffile.imread(out).shape[0] == 10


def test_a_huge_declared_grid_is_reported_without_listing_it(tmp_path):
    """A parameters.cfg declaring 4000×4000 cameras listed all 16 million missing views (seconds, gigabytes)
    before saying the grid was incomplete; 100000×100000 ran out of memory."""
    folder = tmp_path / "hci"
    folder.mkdir()
    for i in range(4):
        iio.imwrite(folder / f"input_Cam{i:03d}.png", np.zeros((8, 8, 3), np.uint8))
    (folder / "parameters.cfg").write_text("[extrinsics]\nnum_cams_x = 100000\nnum_cams_y = 100000\n")
    with pytest.raises(RefocusError, match=r"100000×100000 view grid is incomplete; missing input_Cam004.png, .* and "
                                           r"9999999990 more"):  # fmt: skip
        read_lightfield(folder)


@pytest.mark.parametrize("value", ["abc", float("nan"), None])
def test_a_bad_default_lambda_falls_back_to_the_optical_focus(tmp_path, value):
    from napari_refocusgan._reader import lightfield_layers

    path = tmp_path / "IMG-stk.lfp"
    path.write_bytes(engine1_lfp(np.ones((4, 4), np.float32)))
    lf = read_lightfield(path)
    lf.metadata["default_lambda"] = value
    names = [m["name"] for _, m, _ in lightfield_layers(lf)]
    assert "IMG-stk default-focus slice (λ = +0.50)" in names  # the slice nearest λ = 0


def test_reader_layers_for_a_view_folder(tmp_path, hci_scene):
    napari = pytest.importorskip("napari")
    folder = write_hci(tmp_path / "antinous_like", hci_scene)
    reader = napari_get_reader(str(folder))
    assert reader is not None
    layers = reader(str(folder))
    assert [meta["name"] for _, meta, _ in layers] == [
        "antinous_like focal stack", "antinous_like centre view", "antinous_like disparity"
    ]  # fmt: skip
    (stack, smeta, kind), (centre, _, _), (disp, _, _) = layers
    assert kind == "image" and stack.shape == (10, 32, 40, 3) and stack.dtype == np.float32
    assert smeta["rgb"] and smeta["axis_labels"] == ("slice", "y", "x")
    np.testing.assert_allclose(smeta["metadata"]["slopes"], StackConfig().slopes())
    expected, _, _ = focal_stack(read_lightfield(folder).views, StackConfig())
    np.testing.assert_allclose(stack, expected, atol=1e-5)
    np.testing.assert_allclose(centre, hci_scene.views[4, 4], atol=Q8)
    np.testing.assert_array_equal(disp, hci_scene.disparity)
    for data, meta, _ in layers:  # napari accepts every keyword we pass
        napari.layers.Image(data, **meta)


def test_reader_small_grid_eslf_and_lfp_depth_scaling(tmp_path, scene8):
    napari = pytest.importorskip("napari")
    grid = write_grid(tmp_path / "g", 3, 3)
    (stack, meta, _), _ = read_lightfield_layers(grid)
    assert stack.shape == (10, 20, 24, 3) and meta["metadata"]["stack_config"]["views"] == 3

    eslf = tmp_path / "flower_eslf.png"
    iio.imwrite(eslf, from_float(eslf_from_views(scene8.views), np.uint8))
    (stack, meta, _), (centre, _, _) = napari_get_reader(eslf)(eslf)
    expected, _, _ = focal_stack(scene8.views, StackConfig())  # central 7×7 of the file's 14×14
    np.testing.assert_allclose(stack, expected, atol=Q8)
    np.testing.assert_allclose(centre, scene8.views[3, 3], atol=Q8)  # file view (6, 6)
    assert meta["metadata"]["view_offset"] == (3, 3)

    path = tmp_path / "IMG-stk.lfp"
    path.write_bytes(engine1_lfp(np.ones((4, 4), np.float32)))
    layers = read_lightfield_layers(path)
    names = ["IMG-stk focal stack", "IMG-stk default-focus slice (λ = +0.50)", "IMG-stk depth"]
    assert [m["name"] for _, m, _ in layers] == names
    assert layers[0][1]["metadata"]["lambdas"] == [-1.0, 0.5, 2.0]
    np.testing.assert_array_equal(layers[1][0], layers[0][0][1])  # the slice nearest λ = 0
    depth_meta = layers[2][1]
    assert depth_meta["scale"] == (8.0, 12.0)  # 4×4 LUT over a 32×48 image
    for data, meta, _ in layers:
        napari.layers.Image(data, **meta)


# -------------------------------------------------------------------------------------- shared samples


@needs_hci
def test_hci_antinous_loads_with_disparity():
    lf = read_lightfield(HCI_SCENE)
    assert lf.source == "hci"
    assert lf.views.shape == (9, 9, 512, 512, 3) and lf.views.dtype == np.float32
    assert lf.disparity.shape == (512, 512)
    assert -3.5 < lf.disparity.min() < lf.disparity.max() < 3.5


@needs_hci
def test_hci_disparity_follows_our_slope_convention():
    """A region whose returned disparity is d is sharpest in the shift-and-sum slice of slope ≈ d."""
    lf = read_lightfield(HCI_SCENE, views=5)
    crop = (slice(128, 384), slice(128, 384))
    views = lf.views[:, :, crop[0], crop[1]]
    truth = lf.disparity[crop]
    slopes = np.linspace(-3.5, 3.5, 15)
    focus = sml(shift_and_sum(views, slopes).numpy())
    peak = slopes[focus.argmax(axis=0)]
    textured = focus.max(axis=0) > np.percentile(focus.max(axis=0), 50)
    assert np.corrcoef(peak[textured], truth[textured])[0, 1] > 0.8
    assert np.median(np.abs(peak[textured] - truth[textured])) < 0.5


def _declared(path: Path) -> tuple[int, list[float]]:
    """Slice count and lambdas as the file's own JSON declares them."""
    for meta in LFPFile(path).metadata:
        for accel in meta.get("picture", {}).get("accelerationArray", []):
            if accel["type"].endswith("refocusStack"):
                vc = accel["vendorContent"]
                entries = vc.get("imageArray") or vc["blockOfImages"]["metadataArray"]
                return len(entries), [e["lambda"] for e in entries]
    raise AssertionError("no refocus stack declared")


def _sharpest_lambda_tracks_depth_lut(lf) -> float:
    """Correlation, over LUT cells, between the lambda of the sharpest slice and the depth LUT value."""
    from skimage.transform import resize

    focus = sml(lf.focal_stack[:, ::2, ::2])
    s, h, w = focus.shape
    g = 20
    cells = focus[:, : h // g * g, : w // g * g].reshape(s, g, h // g, g, w // g).mean(axis=(2, 4))
    best = np.asarray(lf.stack_labels)[cells.argmax(axis=0)]
    lut = resize(lf.depth, (g, g), order=1, anti_aliasing=True)
    textured = cells.max(axis=0) > np.percentile(cells.max(axis=0), 30)
    return float(np.corrcoef(best[textured], lut[textured])[0, 1])


@needs_lytro
@pytest.mark.parametrize("name,slices,encoding", [("IMG_0001-stk.lfp", 12, "jpeg"), ("IMG_0002-stk.lfp", 11, "h264")])
def test_lytro_stacks_match_what_the_files_declare(name, slices, encoding):
    path = LYTRO / name
    assert detect_format(path) == "lytro-lfp"
    count, lambdas = _declared(path)
    lf = read_lightfield(path)
    assert count == slices
    assert lf.focal_stack.shape == (slices, 1080, 1080, 3) and lf.focal_stack.dtype == np.float32
    assert lf.stack_labels == sorted(lambdas)
    assert lf.metadata["stack_encoding"] == encoding
    assert 0.05 < lf.focal_stack.mean() < 0.95
    # Slices in lambda order and the depth LUT in row-major order agree with each other.
    assert _sharpest_lambda_tracks_depth_lut(lf) > 0.9
    if encoding == "h264":
        assert lf.metadata["all_in_focus"].shape == (1080, 1080, 3)


@needs_lytro
def test_lytro_depth_map_file():
    lf = read_lightfield(LYTRO / "IMG_0002-dm.lfp")
    assert lf.focal_stack is None
    assert lf.depth.shape == (330, 330)
    lo, hi = lf.metadata["lambda_range"]
    assert lo <= lf.depth.min() < lf.depth.max() <= hi
    assert lf.metadata["confidence"].shape == (330, 330)
    layers = read_lightfield_layers(LYTRO / "IMG_0002-dm.lfp")
    assert [m["name"] for _, m, _ in layers] == ["IMG_0002-dm depth"]


def _uniform_grid(folder: Path, view: np.ndarray, ext: str) -> Path:
    folder.mkdir()
    for r in range(1, 4):
        for c in range(1, 4):
            path = folder / f"s_{r:02d}_{c:02d}.{ext}"
            tifffile.imwrite(path, view) if ext == "tif" else iio.imwrite(path, view)
    return folder


@pytest.mark.parametrize(
    "view, ext, message",
    [
        (np.full((8, 8, 3), np.nan, np.float32), "tif", "NaN or Inf"),
        (np.full((8, 8, 3), np.inf, np.float32), "tif", "NaN or Inf"),
        (np.zeros((2, 8, 8, 3), np.float32), "tif", "shape (2, 8, 8, 3)"),
        # float views on a scale of their own would each be scaled by their own maximum: refused, as before
        (np.linspace(0, 250, 192, dtype=np.float32).reshape(8, 8, 3), "tif", "float images must hold intensities"),
    ],
)
def test_view_folders_with_bad_pixels_or_shapes_are_refused(tmp_path, view, ext, message):
    with pytest.raises(RefocusError, match=re.escape(message)):
        read_lightfield(_uniform_grid(tmp_path / "views", view, ext))


@pytest.mark.parametrize(
    "view",
    [np.full((8, 8, 4), 100, np.uint8), np.full((8, 8), 100, np.uint8), np.full((1, 1, 3), 100, np.uint8)],
    ids=["rgba", "gray", "1x1"],
)
def test_rgba_gray_and_single_pixel_views_become_rgb_float(tmp_path, view):
    lf = read_lightfield(_uniform_grid(tmp_path / "views", view, "png"))
    assert lf.views.shape == (3, 3, *view.shape[:2], 3) and lf.views.dtype == np.float32
    np.testing.assert_allclose(lf.views, 100 / 255, atol=1e-6)  # alpha dropped, gray replicated


def test_grayscale_eslf_is_read_as_gray_replicated_views(tmp_path, scene8):
    gray = from_float(eslf_from_views(scene8.views).mean(axis=-1), np.uint8)
    path = tmp_path / "gray_eslf.png"
    iio.imwrite(path, gray)
    assert detect_format(path) == "eslf"
    lf = read_lightfield(path, views=7)
    assert lf.views.shape == (7, 7, 40, 56, 3)
    np.testing.assert_array_equal(lf.views[..., 0], lf.views[..., 2])
    # central 7×7 of the file's 14×14 = views 1..7 of the 8×8 scene
    np.testing.assert_allclose(lf.views[..., 0], scene8.views[:7, :7].mean(axis=-1), atol=Q8 + 1e-6)
