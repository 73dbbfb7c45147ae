"""``refocusgan deblur / refocus / models`` against the inference API and with bad input."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from napari_refocusgan.cli import main
from napari_refocusgan.core import weights
from napari_refocusgan.core.imaging import read_image
from napari_refocusgan.core.inference import deblur, refocus
from napari_refocusgan.core.networks import Generator, deblur_config, refocus_config
from napari_refocusgan.core.weights import load_generator, register_weights, save_generator


def assert_8bit_close(a: np.ndarray, b: np.ndarray) -> None:
    """Same pixels up to a rounding flip: float sums may differ in the last bit between runs."""
    assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01


def make(cfg, seed):
    torch.manual_seed(seed)
    g = Generator(cfg)
    torch.nn.init.normal_(g.tail[1].weight, 0.0, 0.05)
    return g


@pytest.fixture
def files(tmp_path):
    g1, g2 = tmp_path / "g1.safetensors", tmp_path / "g2.safetensors"
    save_generator(make(deblur_config(ngf=4, n_blocks=1), 1), g1, "deblur")
    save_generator(make(refocus_config(ngf=4, n_blocks=1), 2), g2, "refocus")
    rng = np.random.default_rng(0)
    image = (rng.random((37, 45, 3)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "in.png", image)
    return {"g1": g1, "g2": g2, "image": image, "png": tmp_path / "in.png", "dir": tmp_path}


@pytest.fixture
def empty_registry(tmp_path, monkeypatch):
    registry = tmp_path / "registry" / "registry.json"
    registry.parent.mkdir()
    registry.write_text("[]")
    monkeypatch.setattr(weights, "REGISTRY_PATH", registry)
    return registry


def test_deblur_writes_8_bit_like_the_api(files, capsys):
    out = files["dir"] / "out.png"
    assert main(["deblur", str(files["png"]), "-o", str(out), "--weights", str(files["g1"]), "--device", "cpu"]) == 0
    result = iio.imread(out)
    assert result.dtype == np.uint8 and result.shape == files["image"].shape
    assert_8bit_close(result, deblur(files["image"], load_generator(files["g1"])))
    assert "wrote" in capsys.readouterr().out


def test_float_tiff_in_float32_tiff_out(files):
    image = files["image"].astype(np.float32) / 255
    tifffile.imwrite(files["dir"] / "in.tif", image, photometric="rgb")
    out = files["dir"] / "out.tif"
    args = ["deblur", str(files["dir"] / "in.tif"), "-o", str(out), "--weights", str(files["g1"])]
    assert main(args) == 0
    result = tifffile.imread(out)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, deblur(image, load_generator(files["g1"])), atol=1e-5)


def test_float_counts_run_on_their_own_scale_and_must_be_written_as_tiff(files, capsys):
    """A float TIFF of photon counts (0..4000) was refused; every command now takes it at its own scale and
    writes the result on it. A PNG or JPEG output, which holds [0, 1] as 8 bits, is refused before the work."""
    counts = files["image"].astype(np.float32) / 255 * 4000
    counts[0, 0, 0] = 4000  # full scale 4000
    path, d = files["dir"] / "counts.tif", files["dir"]
    tifffile.imwrite(path, counts, photometric="rgb")
    assert main(["deblur", str(path), "-o", str(d / "rad.tif"), "--weights", str(files["g1"])]) == 0
    expected = deblur(counts / 4000, load_generator(files["g1"])) * 4000
    np.testing.assert_allclose(tifffile.imread(d / "rad.tif"), expected, rtol=1e-5, atol=0.05)
    stack = d / "stack.tif"
    tifffile.imwrite(stack, np.stack([counts, counts * 0.5]), photometric="rgb")
    capsys.readouterr()
    for args in (
        ["deblur", str(path), "-o", str(d / "out.png"), "--weights", str(files["g1"])],
        ["refocus", str(path), "--delta", "2", "-o", str(d / "out.jpg"), "--weights", str(files["g2"])],
        ["classical", str(path), "--method", "unsharp", "-o", str(d / "out.png")],
        ["blur-compare", str(path), "--radiance", str(d / "rad.tif"), "-o", str(d / "out.png")],
        ["all-in-focus", str(stack), "-o", str(d / "out.png")],
    ):
        assert main(args) == 2, args
        assert "float image on a scale of its own (full scale 4000)" in capsys.readouterr().err, args
    assert not list(d.glob("out.*"))
    # an image in [0, 1] with a radiance on 0..50: the result comes back on 0..50, so PNG is refused before the work
    unit = counts / 4000
    tifffile.imwrite(d / "unit.tif", unit, photometric="rgb")
    tifffile.imwrite(d / "rad50.tif", unit * 50, photometric="rgb")
    for args in (
        ["refocus", str(d / "unit.tif"), "--delta", "2", "--radiance", str(d / "rad50.tif"), "-o", str(d / "out.png"),
         "--weights", str(files["g2"])],
        ["blur-compare", str(d / "unit.tif"), "--radiance", str(d / "rad50.tif"), "-o", str(d / "out.png")],
    ):  # fmt: skip
        assert main(args) == 2, args
        assert "float image on a scale of its own (full scale 50)" in capsys.readouterr().err, args
    assert not list(d.glob("out.*"))


def test_int16_tiff_in_int16_tiff_out_and_png_refused_before_the_work(files, capsys):
    signed = (files["image"].astype(np.int16) * 128).astype(np.int16)  # 15-bit intensities
    path, d = files["dir"] / "signed.tif", files["dir"]
    tifffile.imwrite(path, signed, photometric="rgb")
    assert main(["deblur", str(path), "-o", str(d / "out.tif"), "--weights", str(files["g1"])]) == 0
    written = tifffile.imread(d / "out.tif")
    assert written.dtype == np.int16
    np.testing.assert_array_equal(written, deblur(signed, load_generator(files["g1"])))
    capsys.readouterr()
    assert main(["deblur", str(path), "-o", str(d / "out.png"), "--weights", str(files["g1"])]) == 2
    assert "holds unsigned 8 or 16 bits; write the int16 result as .tif" in capsys.readouterr().err
    assert not (d / "out.png").exists()
    for dtype, values, message in ((np.int32, 5, "integer dtype int32"), (np.int16, -5, "values down to -5")):
        tifffile.imwrite(d / "bad.tif", np.full((16, 16), values, dtype))
        assert main(["deblur", str(d / "bad.tif"), "-o", str(d / "out.png"), "--weights", str(files["g1"])]) == 2
        assert message in capsys.readouterr().err  # the input's problem first, not its output's


def test_refocus_with_given_radiance_or_with_g1(files):
    rad_path, out1, out2 = (files["dir"] / n for n in ("rad.png", "r1.png", "r2.png"))
    assert main(["deblur", str(files["png"]), "-o", str(rad_path), "--weights", str(files["g1"])]) == 0
    base = ["refocus", str(files["png"]), "--delta=-4.5", "--weights", str(files["g2"])]
    assert main(base + ["-o", str(out1), "--radiance", str(rad_path)]) == 0
    g2 = load_generator(files["g2"])
    expected = refocus(files["image"], -4.5, g2, radiance=iio.imread(rad_path))
    assert_8bit_close(iio.imread(out1), expected)
    assert main(base + ["-o", str(out2), "--deblur-weights", str(files["g1"])]) == 0
    via_g1 = refocus(files["image"], -4.5, g2, deblur_model=load_generator(files["g1"]))
    assert_8bit_close(iio.imread(out2), via_g1)


def test_default_weights_come_from_the_registry(files, empty_registry, capsys):
    out = files["dir"] / "out.png"
    assert main(["deblur", str(files["png"]), "-o", str(out)]) == 2
    assert "no shipped weights for deblur (G1); pass --weights" in capsys.readouterr().err
    shipped = empty_registry.parent / "g1.safetensors"
    shipped.write_bytes(files["g1"].read_bytes())
    register_weights(shipped, name="g1-test", registry=empty_registry)
    assert main(["deblur", str(files["png"]), "-o", str(out)]) == 0
    assert "g1-test" in capsys.readouterr().out


def test_models_lists_and_checks_the_shipped_weights(files, empty_registry, capsys):
    assert main(["models"]) == 0
    assert "no shipped weights" in capsys.readouterr().out
    shipped = empty_registry.parent / "g2.safetensors"
    shipped.write_bytes(files["g2"].read_bytes())
    register_weights(
        shipped, name="g2-test", metadata={"steps": "100"}, metrics={"psnr": 31.5}, registry=empty_registry
    )
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "g2-test (default): refocus, ngf 4, 1 blocks, δ continuous -9…+9" in text
    assert str(shipped) in text and "[ok," in text and "psnr=31.5" in text and "steps=100" in text
    shipped.write_bytes(shipped.read_bytes()[:-4] + b"\0\0\0\0")
    assert main(["models"]) == 2
    captured = capsys.readouterr()
    assert "HASH MISMATCH" in captured.out and "missing or corrupt" in captured.err


def test_bad_inputs_exit_2_with_a_message(files, capsys, tmp_path):
    pickle_file = tmp_path / "model.pt"
    torch.save(make(deblur_config(ngf=4, n_blocks=1), 0).state_dict(), pickle_file)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(files["g1"].read_bytes()[:200])
    png, out = str(files["png"]), str(tmp_path / "o.png")
    cases = [
        (
            ["refocus", png, "--delta", "12", "-o", out, "--weights", str(files["g2"])],
            "outside this model's trained range",
        ),
        (["deblur", png, "-o", out, "--weights", str(pickle_file)], "we never unpickle"),
        (["deblur", png, "-o", out, "--weights", str(corrupt)], "not a safetensors file"),
        (["deblur", png, "-o", out, "--weights", str(files["g2"])], "a deblur generator is needed"),
        (["deblur", str(tmp_path / "missing.png"), "-o", out, "--weights", str(files["g1"])], "does not exist"),
        (["deblur", png, "-o", str(tmp_path / "o.gif"), "--weights", str(files["g1"])], "must end in one of"),
        (["deblur", png, "-o", out, "--weights", str(files["g1"]), "--device", "tpu"], "device"),
        (["deblur", png, "-o", out, "--weights", str(files["g1"]), "--tile", "-5"], "tile must be"),
    ]
    if not torch.cuda.is_available():
        cases.append(
            (["deblur", png, "-o", out, "--weights", str(files["g1"]), "--device", "cuda"], "not available here")
        )
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    tiny = tmp_path / "tiny.png"
    iio.imwrite(tiny, np.zeros((1, 1, 3), np.uint8))
    assert main(["deblur", str(tiny), "-o", out, "--weights", str(files["g1"])]) == 2
    assert "1×1 pixels" in capsys.readouterr().err


def test_16_bit_colour_png_in_gives_16_bit_colour_png_out(files):
    image16 = (np.random.default_rng(4).random((21, 30, 3)) * 65535).astype(np.uint16)
    src, out = files["dir"] / "in16.tif", files["dir"] / "out16.png"
    tifffile.imwrite(src, image16, photometric="rgb")
    assert main(["deblur", str(src), "-o", str(out), "--weights", str(files["g1"]), "--device", "cpu"]) == 0
    written = read_image(out)
    assert written.dtype == np.uint16 and written.shape == image16.shape
    expected = deblur(image16, load_generator(files["g1"]))
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1


def test_outputs_that_cannot_be_written_fail_before_the_work_and_leave_files_alone(files, capsys):
    d, g1 = files["dir"], str(files["g1"])
    rgba = d / "rgba.png"
    iio.imwrite(rgba, np.full((20, 24, 4), 200, np.uint8))
    keep = d / "keep.jpg"
    iio.imwrite(keep, np.zeros((8, 8, 3), np.uint8))
    kept = keep.read_bytes()
    stack = d / "stack.tif"
    tifffile.imwrite(stack, np.zeros((2, 16, 16, 3), np.uint8), photometric="rgb")
    wide = d / "wide.tif"
    tifffile.imwrite(wide, np.full((16, 16), 7, np.uint32))
    png = str(files["png"])
    original = files["png"].read_bytes()
    cases = [
        (["deblur", str(rgba), "-o", str(keep), "--weights", g1], "JPEG cannot hold an alpha channel"),
        (["deblur", png, "-o", png, "--weights", g1], "is an input file"),
        (["deblur", str(stack), "-o", str(d / "s.png"), "--weights", g1], "is a stack; write it as .tif"),
        (["deblur", str(wide), "-o", str(d / "w.tif"), "--weights", g1], "expected uint8, uint16 or float"),
        (["sml", png, "-o", str(d / "sml.png")], "float32 data; write it as .tif"),
        (["focal-stack", str(d), "-o", str(d / "fs.png")], "float32 data; write it as .tif"),
        (["classical", png, "--method", "unsharp", "-o", str(d / "c")], "must end in one of"),
        (["blur-compare", png, "--radiance", png, "-o", str(d / "b.png"), "--sigma-map", str(d / "s.png")],
         "float32 data"),  # fmt: skip
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert keep.read_bytes() == kept and files["png"].read_bytes() == original
    assert not any(p.name.startswith(".") for p in d.iterdir())  # no partial files left behind
    for name in ("s.png", "w.tif", "sml.png", "fs.png", "c", "b.png"):
        assert not (d / name).exists(), name


def test_gray_with_a_channel_axis_writes_png_and_two_outputs_must_differ(files, capsys):
    d = files["dir"]
    gray = d / "gray1.tif"
    tifffile.imwrite(gray, (np.arange(40 * 48) % 251).astype(np.uint8).reshape(40, 48, 1))
    assert main(["classical", str(gray), "--method", "unsharp", "-o", str(d / "g.png")]) == 0
    png = str(files["png"])
    argv = ["blur-compare", png, "--radiance", png, "-o", str(d / "x.tif"), "--sigma-map", str(d / "x.tif")]
    assert main(argv) == 2
    assert "another output" in capsys.readouterr().err


@pytest.mark.parametrize("text, value", [("-1e-3", -1e-3), ("-2E+0", -2.0), ("-.5", -0.5), ("-3", -3.0), ("-1.5e-1", -0.15)])
def test_negative_delta_in_any_number_notation_needs_no_equals_sign(text, value):
    from napari_refocusgan.cli import build_parser

    args = build_parser().parse_args(["refocus", "in.png", "--delta", text, "-o", "out.png"])
    assert args.delta == pytest.approx(value)
    with pytest.raises(SystemExit):  # an option-like word is still not a number
        build_parser().parse_args(["refocus", "in.png", "--delta", "-o", "out.png"])
