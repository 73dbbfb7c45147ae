from pathlib import Path

import numpy as np
import pytest

from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.imaging import (
    DIM_PEAK,
    as_rgb,
    check_output_path,
    exposure_gain,
    from_float,
    read_image,
    to_float,
    write_image,
)


def test_dtype_round_trip():
    u8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(from_float(to_float(u8), np.uint8), u8)
    u16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    np.testing.assert_array_equal(from_float(to_float(u16), np.uint16), u16)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[np.nan]]), "NaN"),
        (np.array([[np.inf, 0]]), "NaN or Inf"),
        (np.zeros((0, 3)), "empty"),
        (np.array([[-1, 5]], np.int16), "int16 with values down to -1; intensities cannot be negative"),
        (np.zeros((2, 2), np.int32), "integer dtype int32"),
    ],
)
def test_bad_values(bad, message):
    with pytest.raises(RefocusError, match=message):
        to_float(bad)


def test_signed_16_bit_intensities_run_as_15_bits_and_come_back_signed():
    """int16 without negative values (some cameras' and TIFF writers' 16 bits) is scaled by 32767, like uint16 by
    65535, and every tool gives it back as int16; a PNG output is refused before the work."""
    from napari_refocusgan.core.classical import apply_classical_image
    from napari_refocusgan.core.focus_stacking import all_in_focus_image

    rng = np.random.default_rng(9)
    signed = rng.integers(0, 32768, (16, 18, 3)).astype(np.int16)
    np.testing.assert_array_equal(to_float(signed), signed.astype(np.float32) / 32767)
    np.testing.assert_array_equal(from_float(to_float(signed), np.int16), signed)
    sharpened = apply_classical_image(signed, "unsharp")
    assert sharpened.dtype == np.int16
    np.testing.assert_array_equal(sharpened, from_float(apply_classical_image(to_float(signed), "unsharp"), np.int16))
    assert all_in_focus_image(np.stack([signed, signed // 2]))[0].dtype == np.int16
    with pytest.raises(RefocusError, match="holds unsigned 8 or 16 bits; write the int16 result as .tif"):
        check_output_path(Path("out.png"), dtype=np.int16, shape=signed.shape)


def test_gray_and_rgba_layouts_restore():
    gray = np.random.default_rng(0).integers(0, 255, (5, 6), dtype=np.uint8)
    im = as_rgb(gray)
    assert im.rgb.shape == (5, 6, 3) and im.was_gray
    np.testing.assert_array_equal(im.restore(im.rgb), gray)
    rgba = np.random.default_rng(1).random((5, 6, 4)).astype(np.float32)
    im = as_rgb(rgba)
    assert im.alpha is not None
    np.testing.assert_allclose(im.restore(im.rgb), rgba, atol=1e-6)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4, 3), (4, 4, 2)])
def test_unsupported_shapes(shape):
    with pytest.raises(RefocusError, match="shape"):
        as_rgb(np.zeros(shape, np.float32))


def test_read_write(tmp_path):
    img = (np.random.default_rng(2).random((8, 9, 3)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.png", img)), img)
    stack = np.random.default_rng(3).random((4, 8, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "s.tif", stack)), stack)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(RefocusError, match="Cannot read"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(RefocusError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(RefocusError, match="folder"):
        read_image(tmp_path)


def test_float_images_on_a_scale_of_their_own_come_back_on_it_everywhere():
    """A float image on a 0..255 scale (or of photon counts) is taken at its own full scale, its maximum, by
    every tool (classical, blur-and-compare, focus stacking, SML), and the images come back on it: the [0, 1]
    image's results times the scale. Negative intensities, and a radiance on another scale, are clear errors."""
    from napari_refocusgan.core.blur_compare import blur_and_compare_image
    from napari_refocusgan.core.classical import apply_classical_image
    from napari_refocusgan.core.focus import sml
    from napari_refocusgan.core.focus_stacking import all_in_focus_image

    rng = np.random.default_rng(3)
    unit = rng.random((32, 32, 3)).astype(np.float32)
    unit[0, 0, 0] = 1.0  # full scale 1: the scaled image's maximum is then its scale
    blurred = (unit + np.roll(unit, 1, 0) + np.roll(unit, 1, 1)) / 3
    scale = np.float32(255)
    for name, run in {
        "unsharp": lambda k: apply_classical_image(unit * k, "unsharp"),
        "clahe": lambda k: apply_classical_image(unit * k, "clahe"),
        "blur-and-compare": lambda k: blur_and_compare_image(blurred * k, unit * k).refocused,
        "all-in-focus": lambda k: all_in_focus_image(np.stack([unit, blurred]) * k)[0],
    }.items():
        np.testing.assert_allclose(run(scale), run(1) * scale, rtol=1e-5, atol=1e-3, err_msg=name)
    np.testing.assert_allclose(sml(unit * scale), sml(unit), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(to_float(unit * scale), unit, rtol=1e-6)
    np.testing.assert_array_equal(to_float(unit * scale - 25) == 0, unit * scale < 25)  # slight undershoot: clipped
    with pytest.raises(RefocusError, match=r"values -99\.9.*…155; intensities cannot be negative"):
        to_float(unit * scale - 100)
    with pytest.raises(RefocusError, match="on different scales"):
        blur_and_compare_image(blurred, unit * scale)
    overshoot = np.array([[-0.03, 0.5, 1.04]], np.float32)
    original = overshoot.copy()
    np.testing.assert_array_equal(to_float(overshoot), [[0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(overshoot, original)  # the caller's array is untouched


def test_16_bit_colour_png_round_trips(tmp_path):
    rng = np.random.default_rng(6)
    for channels in (3, 4):
        img = (rng.random((9, 11, channels)) * 65535).astype(np.uint16)
        np.testing.assert_array_equal(read_image(write_image(tmp_path / f"c{channels} 100%d.png", img)), img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c3 100%d.png", "c4 100%d.png"]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_percent_d_in_a_file_name_is_not_a_numbered_sequence(tmp_path, dtype):
    """FFmpeg (16-bit colour PNGs, ESLF decoding) reads "w%d.png" as the pattern of w1.png, w2.png, …"""
    from napari_refocusgan.core.formats.eslf import decode_lenslet_image

    image = np.random.default_rng(0).integers(1, 200, (6, 7, 3)).astype(dtype)
    write_image(tmp_path / "w%d.png", image)
    write_image(tmp_path / "w1.png", np.zeros_like(image))
    np.testing.assert_array_equal(read_image(tmp_path / "w%d.png"), image)
    np.testing.assert_array_equal(decode_lenslet_image(tmp_path / "w%d.png"), image)


def test_tiff_colour_channels_come_last_whatever_the_file_order(tmp_path):
    import tifffile

    rgb = np.random.default_rng(1).integers(0, 255, (10, 12, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), rgb)
    planar_stack = np.stack([rgb, rgb[::-1]])  # (Z, Y, X, S) stored as ZSYX
    tifffile.imwrite(tmp_path / "zs.tif", np.moveaxis(planar_stack, -1, 1), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "zs.tif"), planar_stack)
    stains = np.moveaxis(planar_stack, -1, 1)  # ImageJ channels (C) are stains, not colour: they stay slices
    tifffile.imwrite(tmp_path / "ij.tif", stains, imagej=True, metadata={"axes": "ZCYX"})
    np.testing.assert_array_equal(read_image(tmp_path / "ij.tif"), stains)
    gray_stack = rgb[..., 0][None].repeat(3, axis=0)  # three gray slices stay three gray slices
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "g.tif", gray_stack)), gray_stack)


def test_a_failed_write_leaves_the_existing_file_whole(tmp_path, monkeypatch):
    import tifffile

    target = write_image(tmp_path / "result.tif", np.zeros((4, 4), np.float32))
    before = target.read_bytes()

    def broken(path, *args, **kwargs):
        open(path, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(RefocusError, match="cannot write .*disk full"):
        write_image(target, np.ones((4, 4), np.float32))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.tif"]


def test_images_are_read_as_shown_cmyk_exif_orientation_and_gray_alpha(tmp_path):
    from PIL import Image

    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[:, :5] = (255, 0, 0)  # red left half
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (6, 10, 3)
    assert cmyk[:, :4, 0].min() > 200 and cmyk[:, :4, 1:].max() < 60 and cmyk[:, 6:].max() < 60

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer turns the stored pixels 90° clockwise
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif, quality=100)
    turned = read_image(tmp_path / "turned.jpg")
    assert turned.shape == (10, 6, 3)
    assert turned[:4, :, 0].min() > 200 and turned[6:, :, 0].max() < 60  # the red half is now on top

    la = np.stack([np.arange(60, dtype=np.uint8).reshape(6, 10), np.full((6, 10), 128, np.uint8)], axis=-1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    rgba = read_image(tmp_path / "la.png")
    assert rgba.shape == (6, 10, 4)
    np.testing.assert_array_equal(rgba[..., 0], la[..., 0])
    np.testing.assert_array_equal(rgba[..., 1], la[..., 0])
    np.testing.assert_array_equal(rgba[..., 3], la[..., 1])


def test_png_transparency_without_an_alpha_channel_is_read_as_rgba(tmp_path):
    """A palette PNG with transparent entries (what pngquant writes) was read as opaque RGB: its transparent
    pixels showed their hidden colours and the result was written without alpha."""
    from PIL import Image

    rgba = np.zeros((6, 10, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 3] = 200, np.arange(10, dtype=np.uint8)[None] * 20, 255
    rgba[:, :4, 3] = 0
    Image.fromarray(rgba, "RGBA").quantize(16).save(tmp_path / "palette.png")
    read = read_image(tmp_path / "palette.png")
    assert read.shape == (6, 10, 4)
    np.testing.assert_array_equal(read[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(read[:, 4:, :3], rgba[:, 4:, :3])
    gray = np.arange(60, dtype=np.uint8).reshape(6, 10)
    Image.fromarray(gray).save(tmp_path / "key.png", transparency=7)  # colour key: value 7 is transparent
    keyed = read_image(tmp_path / "key.png")
    assert keyed.shape == (6, 10, 4)
    np.testing.assert_array_equal(keyed[..., 3], np.where(gray == 7, 0, 255))
    np.testing.assert_array_equal(keyed[..., 1], gray)
    deep = gray.astype(np.uint16) * 1000  # 16-bit gray with a key: the 16 bits are kept
    Image.fromarray(deep).save(tmp_path / "key16.png", transparency=7000)
    keyed16 = read_image(tmp_path / "key16.png")
    assert keyed16.shape == (6, 10, 4) and keyed16.dtype == np.uint16
    np.testing.assert_array_equal(keyed16[..., 3], np.where(deep == 7000, 0, 65535))
    np.testing.assert_array_equal(keyed16[..., 2], deep)
    Image.fromarray(gray > 30).save(tmp_path / "key1.png", transparency=0)  # 1-bit, black transparent
    keyed1 = read_image(tmp_path / "key1.png")
    np.testing.assert_array_equal(keyed1[..., 3], np.where(gray > 30, 255, 0))


def test_compressed_and_gray_alpha_tiffs_are_read(tmp_path):
    """LZW-compressed TIFFs were refused ("requires the 'imagecodecs' package"); a gray + alpha TIFF was read
    as two gray slices (planar) or refused (contiguous) while a gray + alpha PNG is read as RGBA."""
    import tifffile
    from PIL import Image

    rgb = np.random.default_rng(2).integers(0, 255, (10, 12, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), rgb)
    deep = rgb.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "deflate16.tif", deep, photometric="rgb", compression="zlib")
    np.testing.assert_array_equal(read_image(tmp_path / "deflate16.tif"), deep)

    gray, alpha = rgb[..., 0], rgb[..., 1]
    tifffile.imwrite(tmp_path / "planar.tif", np.stack([gray, alpha]), photometric="minisblack",
                     planarconfig="separate", extrasamples=["unassalpha"])  # fmt: skip
    tifffile.imwrite(tmp_path / "contig.tif", np.dstack([gray, alpha]), photometric="minisblack",
                     extrasamples=["unassalpha"])  # fmt: skip
    for name in ("planar.tif", "contig.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), np.dstack([gray, gray, gray, alpha]), name)
    # two planes that are not gray + alpha stay two slices
    tifffile.imwrite(tmp_path / "two.tif", np.stack([gray, alpha]), photometric="minisblack")
    np.testing.assert_array_equal(read_image(tmp_path / "two.tif"), np.stack([gray, alpha]))


def test_a_link_into_a_missing_folder_is_refused_before_the_work(tmp_path):
    """An output that is a symlink into a missing folder passed the check and failed after the work, with a raw
    "No such file or directory" naming a hidden temporary file."""
    from napari_refocusgan.core.imaging import check_writable

    dangling = tmp_path / "out.png"
    dangling.symlink_to(tmp_path / "missing" / "x.png")
    with pytest.raises(RefocusError, match="is a link to .*x.png, whose folder does not exist"):
        check_writable(dangling)
    into_a_file = tmp_path / "into_file.png"
    (tmp_path / "a_file").write_bytes(b"")
    into_a_file.symlink_to(tmp_path / "a_file" / "x.png")
    with pytest.raises(RefocusError, match="whose folder is a file, not a folder"):
        check_writable(into_a_file)
    folder_link = tmp_path / "results"
    folder_link.symlink_to(tmp_path / "missing_folder")  # a folder link pointing nowhere: mkdir cannot pass it
    with pytest.raises(RefocusError, match="results is a link to .*missing_folder, which does not exist"):
        check_writable(folder_link / "out.png")
    pointing = tmp_path / "new.png"
    pointing.symlink_to(tmp_path / "y.png")  # a link to a file not made yet, in a folder that exists
    check_writable(pointing)
    write_image(pointing, np.zeros((4, 5), np.uint8))
    assert pointing.is_symlink() and (tmp_path / "y.png").is_file()


def test_writing_keeps_symlinks_permissions_and_works_for_long_and_odd_names(tmp_path, monkeypatch):
    img = np.zeros((4, 5), np.uint8)
    real = write_image(tmp_path / "real.png", img)
    link = tmp_path / "link.png"
    link.symlink_to(real)
    real.chmod(0o600)
    write_image(link, img + 9)
    assert link.is_symlink() and (real.stat().st_mode & 0o777) == 0o600
    np.testing.assert_array_equal(read_image(real), img + 9)

    fresh = write_image(tmp_path / "fresh.tif", img)
    assert (fresh.stat().st_mode & 0o777) == 0o666 & ~_umask()
    long_name = tmp_path / ("x" * 240 + ".png")
    np.testing.assert_array_equal(read_image(write_image(long_name, img)), img)
    monkeypatch.chdir(tmp_path)
    colour16 = np.full((4, 5, 3), 40000, np.uint16)
    np.testing.assert_array_equal(read_image(write_image("a:b.png", colour16)), colour16)  # not an FFmpeg protocol
    assert not any(p.name.startswith(".rg-") for p in tmp_path.iterdir())


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_focal_stack_overshoot_is_accepted_and_clipped():
    """Cubic shift-and-sum of [0, 1] views stays within [-0.282, 1.266]: the tools take such stacks."""
    from napari_refocusgan.core.focus_stacking import all_in_focus

    rng = np.random.default_rng(8)
    stack = rng.random((3, 24, 24)).astype(np.float32) * 1.5 - 0.25  # -0.25 … 1.25
    aif, _ = all_in_focus(stack)
    assert 0.0 <= aif.min() and aif.max() <= 1.0
    np.testing.assert_array_equal(to_float(stack), np.clip(stack, 0, 1))


def test_tiff_pages_appended_one_by_one_are_read_as_a_stack(tmp_path):
    """tifffile's append=True writes one series per page: only the first page used to be read."""
    import tifffile

    pages = np.random.default_rng(1).integers(0, 255, (4, 12, 16), dtype=np.uint8)
    appended = tmp_path / "appended.tif"
    for page in pages:
        tifffile.imwrite(appended, page, append=True)
    np.testing.assert_array_equal(read_image(appended), pages)
    colour = tmp_path / "colour.tif"
    for page in np.stack([pages[..., None]] * 3, axis=-1)[..., 0, :]:
        tifffile.imwrite(colour, page, append=True, photometric="rgb")
    assert read_image(colour).shape == (4, 12, 16, 3)
    # series that are stacks themselves (positions of a ZYX acquisition, also as OME) are not merged
    positions = tmp_path / "positions.tif"
    volumes = np.stack([pages[:2], pages[2:]])
    for volume in volumes:
        tifffile.imwrite(positions, volume, append=True, metadata={"axes": "ZYX"})
    np.testing.assert_array_equal(read_image(positions), volumes[0])
    ome = tmp_path / "planes.ome.tif"
    with tifffile.TiffWriter(ome, ome=True) as writer:
        for page in pages[:2]:
            writer.write(page)
    np.testing.assert_array_equal(read_image(ome), pages[0])
    # series of different shapes (an image and its thumbnail): the first one is the image
    with_thumbnail = tmp_path / "thumb.tif"
    tifffile.imwrite(with_thumbnail, pages[0])
    tifffile.imwrite(with_thumbnail, pages[1, :6, :8], append=True)
    np.testing.assert_array_equal(read_image(with_thumbnail), pages[0])


def test_files_are_decoded_by_content_and_odd_files_get_clear_messages(tmp_path):
    import tifffile
    from PIL import Image

    rgb16 = (np.random.default_rng(2).random((10, 12, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", rgb16, photometric="rgb")
    (tmp_path / "deep.png").write_bytes((tmp_path / "deep.tif").read_bytes())  # a TIFF named .png
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), rgb16)  # 16 bits kept
    rgb8 = (rgb16 >> 8).astype(np.uint8)
    Image.fromarray(rgb8).save(tmp_path / "photo.png")
    (tmp_path / "photo.tif").write_bytes((tmp_path / "photo.png").read_bytes())  # a PNG named .tif
    np.testing.assert_array_equal(read_image(tmp_path / "photo.tif"), rgb8)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(RefocusError, match=r"empty \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(RefocusError, match="Cannot read .*junk.png as an image"):
        read_image(tmp_path / "junk.png")


def test_a_1_bit_image_is_read_as_8_bit(tmp_path):
    from PIL import Image

    bits = np.random.default_rng(3).random((8, 10)) > 0.5
    Image.fromarray(bits).save(tmp_path / "bits.png")
    image = read_image(tmp_path / "bits.png")
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, bits.astype(np.uint8) * 255)


def test_big_endian_16_bit_data_is_read_processed_and_written_as_16_bit(tmp_path):
    """A '>u2' array compared unequal to np.uint16: it was written as an all-white 8-bit PNG."""
    import tifffile

    from napari_refocusgan.core.imaging import check_output_path

    values = (np.random.default_rng(4).random((10, 12, 3)) * 65535).astype(np.uint16)
    big = values.astype(">u2")
    tifffile.imwrite(tmp_path / "big.tif", big, photometric="rgb", byteorder=">")
    read = read_image(tmp_path / "big.tif")
    assert read.dtype == np.uint16 and read.dtype.isnative
    np.testing.assert_array_equal(read, values)
    write_image(tmp_path / "out.png", big)
    np.testing.assert_array_equal(read_image(tmp_path / "out.png"), values)
    with pytest.raises(RefocusError, match="JPEG cannot hold 16-bit"):
        check_output_path(tmp_path / "out.jpg", dtype=big.dtype, shape=big.shape)
    rgb = as_rgb(big)
    restored = rgb.restore(to_float(big))
    assert restored.dtype == np.uint16 and restored.dtype.isnative


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    from napari_refocusgan.core.imaging import check_output_path

    with pytest.raises(RefocusError, match="cannot write into /proc"):
        check_output_path("/proc/result.png", shape=(8, 8))  # root may write almost anywhere, but not here
    check_output_path(tmp_path / "new" / "result.png", shape=(8, 8))  # a folder to be made under a writable one is fine


def test_write_image_refuses_what_it_would_write_wrongly(tmp_path):
    """int64 and 0..255 float data came out of a PNG as two grey levels, and an unknown suffix got a TIFF."""
    counts = np.arange(100).reshape(10, 10)
    for image, name, message in (
        (counts, "a.png", "cannot write int64 data to a.png"),
        (counts.astype(np.float64) * 2.5, "b.png", "values 0…247.5; float images must hold intensities in"),
        (np.full((4, 4), np.nan, np.float32), "c.jpg", "NaN"),
        (np.zeros((4, 4), np.uint8), "d.bmpx", "must end in one of"),
    ):
        with pytest.raises(RefocusError, match=message):
            write_image(tmp_path / name, image)
        assert not (tmp_path / name).exists()
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "counts.tif", counts)), counts)  # TIFF keeps it
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "mask.png", counts > 50)), (counts > 50) * 255)


def test_exposure_gain_lifts_only_dim_images_and_never_clips():
    rng = np.random.default_rng(0)
    bright = rng.uniform(0, 0.9, (64, 64, 3)).astype(np.float32)
    assert exposure_gain(bright) == 1.0
    assert exposure_gain(np.zeros((8, 8, 3), np.float32)) == 1.0
    dim = bright / 16  # 12-bit data in a 16-bit file
    gain = exposure_gain(dim)
    assert gain == pytest.approx(DIM_PEAK / np.percentile(dim, 99.9), rel=1e-6)
    assert np.percentile(dim * gain, 99.9) == pytest.approx(DIM_PEAK, rel=1e-6)
    hot = dim.copy()
    hot[0, 0] = 0.5  # one hot pixel: the percentile ignores it, but it must not pass 1
    assert exposure_gain(hot) == pytest.approx(2.0)
    beads = np.zeros((64, 64, 3), np.float32)
    beads[10, 10] = 0.01  # sparse signal on black: the percentile is 0, the brightest pixel sets the gain
    assert exposure_gain(beads) == pytest.approx(100.0)


def test_exposure_gain_sees_a_compact_highlight_anywhere_in_a_large_image():
    """Sampling every k-th row missed a bright band of 11 rows (0.1 % of the image) and gave gain 5 instead of
    0.25 / 0.2 = 1.25."""
    rgb = np.random.default_rng(1).uniform(0, 0.02, (1000, 1000, 3)).astype(np.float32)
    rgb[397:408, 300:600] = 0.2
    assert exposure_gain(rgb) == pytest.approx(1.25, rel=0.05)
    columns = np.random.default_rng(2).uniform(0, 0.02, (1700, 2000, 3)).astype(np.float32)
    columns[:, 1001:1013] = 0.2  # a step dividing the row length (40 into 6000) read the same columns of every row
    assert exposure_gain(columns) == pytest.approx(1.25, rel=0.05)
    columns[:, 1001:1013, 1:] = 0.01  # one channel only
    assert exposure_gain(columns) == pytest.approx(1.25, rel=0.05)
