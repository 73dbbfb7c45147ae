"""The non-learning CLI commands: clear messages and non-zero exits on bad input."""

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_refocusgan.cli import main
from napari_refocusgan.core.focalstack import StackConfig
from napari_refocusgan.core.focus import SMLParams, sml
from napari_refocusgan.core.imaging import write_image


def test_sml_command_writes_the_core_sml(tmp_path, capsys):
    img = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "in.png", img)
    assert main(["sml", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.tif"), "--window", "5"]) == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == (20, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out, sml(img, SMLParams(window=5)), rtol=1e-5, atol=1e-7)
    assert "wrote" in capsys.readouterr().out


def write_plane_folder(folder, d: float, n: int = 7, size: int = 40):
    """NAME_RR_CC views of a textured plane that moves d px per view: sharpest at slope d."""
    rng = np.random.default_rng(3)
    spectrum = np.fft.fft2(ndimage.gaussian_filter(rng.random((size, size)), 1.5, mode="wrap"))
    folder.mkdir()
    for r in range(n):
        for c in range(n):
            shift = (d * (r - (n - 1) / 2), d * (c - (n - 1) / 2))
            view = np.real(np.fft.ifft2(ndimage.fourier_shift(spectrum, shift)))
            write_image(folder / f"plane_{r + 1:02d}_{c + 1:02d}.png", (np.clip(view, 0, 1) * 255).round().astype(np.uint8))
    return folder


@pytest.mark.parametrize("d", [-0.9, 0.35])
def test_focal_stack_command_puts_a_plane_in_focus_at_its_disparity(tmp_path, capsys, d):
    folder = write_plane_folder(tmp_path / "views", d)
    out = tmp_path / "stack.tif"
    assert main(["focal-stack", str(folder), "-o", str(out), "--keep", "all"]) == 0
    stack = tifffile.imread(out)
    assert stack.shape == (30, 40, 40, 3) and stack.dtype == np.float32
    slopes = StackConfig(keep=None).slopes()
    focus = sml(stack)[:, 8:-8, 8:-8].mean(axis=(1, 2))
    assert slopes[int(np.argmax(focus))] == pytest.approx(slopes[np.argmin(np.abs(slopes - d))])
    assert "30 slices" in capsys.readouterr().out


def test_focal_stack_command_uses_a_grid_smaller_than_7x7_whole(tmp_path, capsys):
    folder = write_plane_folder(tmp_path / "views", -0.5, n=5)
    assert main(["focal-stack", str(folder), "-o", str(tmp_path / "s.tif"), "--keep", "all"]) == 0
    stack = tifffile.imread(tmp_path / "s.tif")
    slopes = StackConfig(keep=None).slopes()
    focus = sml(stack)[:, 8:-8, 8:-8].mean(axis=(1, 2))
    assert slopes[int(np.argmax(focus))] == pytest.approx(slopes[np.argmin(np.abs(slopes + 0.5))])


def test_focal_stack_refuses_an_output_inside_its_light_field_folder(tmp_path, capsys):
    """`-o views/plane_04_04.tif` replaced a view of the input (or added a second one), destroying it."""
    folder = write_plane_folder(tmp_path / "views", 0.2, n=3, size=16)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for name in ("plane_02_02.tif", "stack.tif"):
        assert main(["focal-stack", str(folder), "-o", str(folder / name)]) == 2
        assert "inside the light-field folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_read_only_output_file_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    """It failed after the work, naming a hidden partial file (the copied mode made that read-only too)."""
    import os

    from napari_refocusgan.core import imaging

    folder = write_plane_folder(tmp_path / "views", 0.2, n=3, size=16)
    locked = tmp_path / "locked.tif"
    locked.write_bytes(b"keep me")
    real_access = os.access
    # tests may run as root, for whom every file is writable: pretend this one is not
    monkeypatch.setattr(imaging.os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    assert main(["focal-stack", str(folder), "-o", str(locked)]) == 2
    assert "locked.tif is read-only" in capsys.readouterr().err
    assert locked.read_bytes() == b"keep me"


def test_out_of_memory_is_a_message_and_other_runtime_errors_are_not_hidden(tmp_path, capsys, monkeypatch):
    from napari_refocusgan.cli import stack_cmds

    def fail_with(message):
        def command(args):
            raise RuntimeError(message)

        return command

    write_image(tmp_path / "in.png", np.zeros((8, 8), np.uint8))
    argv = ["sml", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.tif")]
    monkeypatch.setattr(stack_cmds, "cmd_sml", fail_with("[enforce fail] DefaultCPUAllocator: can't allocate memory"))
    assert main(argv) == 3
    assert "out of memory" in capsys.readouterr().err
    monkeypatch.setattr(stack_cmds, "cmd_sml", fail_with("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        main(argv)


def test_focal_stack_command_paper_window_and_auto(tmp_path, capsys):
    folder = write_plane_folder(tmp_path / "views", 1.2)
    assert main(["focal-stack", str(folder), "-o", str(tmp_path / "paper.tif")]) == 0
    assert tifffile.imread(tmp_path / "paper.tif").shape[0] == 10
    assert main(["focal-stack", str(folder), "-o", str(tmp_path / "auto.tif"), "--keep", "auto"]) == 0
    auto = tifffile.imread(tmp_path / "auto.tif")
    # the plane at +1.2 px/view lies outside the paper's window (−0.98…−0.05): auto moves the window to it
    assert auto.shape[0] == 10
    printed = capsys.readouterr().out.splitlines()[-1]
    first, last = (float(v) for v in printed.split("slopes ")[1].split(" px")[0].split(".."))
    assert first <= 1.2 <= last + 1e-6


@pytest.mark.parametrize(
    "argv, message",
    [
        (["focal-stack", "{tmp}/missing", "-o", "{tmp}/o.tif"], "does not exist"),
        (["focal-stack", "{tmp}/empty", "-o", "{tmp}/o.tif"], "empty"),
        (["focal-stack", "{tmp}/cut.lfp", "-o", "{tmp}/o.tif"], "LFP"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--views", "0"], "views"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--keep", "12:3"], "keep"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--slices", "10"], "default --keep 6:15 (the paper's"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--slices", "10", "--keep", "3:12"],
         "keep all slices with --keep all"),  # fmt: skip
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--device", "tpu"], "device"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/afile/o.tif", "--views", "3"], "afile"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--views", "7"], "has a 3×3 grid of views"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--s-max", "1000"], "shifts the outer views by 655.172 px"),
        (["focal-stack", "{tmp}/views", "-o", "{tmp}/o.tif", "--s-max", "1e300"], "more than the 16×16 image"),
        (["focal-stack", "{tmp}/missing", "-o", "{tmp}/o.tif", "--slices", "1"], "slices must be ≥ 2"),  # first
        (["demo", "--out", "{tmp}/afile"], "is a file"),  # was a raw "[Errno 17] File exists"
        (["demo", "--out", ""], "--out is empty"),  # wrote into the current folder
    ],
)
def test_focal_stack_bad_input_exits_nonzero_with_message(tmp_path, capsys, argv, message):
    write_plane_folder(tmp_path / "views", 0.5, n=3, size=16)
    (tmp_path / "empty").mkdir()
    (tmp_path / "cut.lfp").write_bytes(b"\x89LF")
    (tmp_path / "afile").write_text("a file, not a folder")
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message.lower() in err.lower() and "Traceback" not in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sml", "{tmp}/missing.png", "-o", "{tmp}/o.tif"], "does not exist"),
        (["sml", "{tmp}/corrupt.png", "-o", "{tmp}/o.tif"], "Cannot read"),
        (["sml", "{tmp}/nan.tif", "-o", "{tmp}/o.tif"], "NaN"),
        (["sml", "{tmp}/in.png", "-o", "{tmp}/o.tif", "--window", "4"], "odd"),
    ],
)
def test_bad_input_exits_nonzero_with_message(tmp_path, capsys, argv, message):
    write_image(tmp_path / "in.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage")
    tifffile.imwrite(tmp_path / "nan.tif", np.full((4, 4), np.nan, np.float32))
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_demo_writes_every_pipeline_stage(tmp_path, capsys):
    import imageio.v3 as iio

    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    stack = tifffile.imread(tmp_path / "demo" / "focal_stack.tif")
    assert stack.shape[0] == 10 and stack.shape[-1] == 3
    np.testing.assert_allclose(tifffile.imread(tmp_path / "demo" / "sml.tif"), sml(stack), rtol=1e-5, atol=1e-7)
    printed = capsys.readouterr().out
    stages = ("focal_stack.tif", "sml.tif", "centre_view.png", "disparity.tif", "input_slice.png", "radiance.png",
              "refocus_delta-4.png", "refocus_delta+5.png")  # fmt: skip
    for name in stages:
        assert (tmp_path / "demo" / name).exists() and name in printed
    for name in stages[4:]:
        assert iio.imread(tmp_path / "demo" / name).shape == stack.shape[1:]
    assert printed.count(" dB") == 6  # each network output against its ground truth, and the identity


def test_ctrl_c_while_the_commands_load_is_an_interruption(monkeypatch, capsys):
    """The command modules import torch, which takes a second or two: a Ctrl-C then printed a traceback."""
    import napari_refocusgan.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["models"]) == 130
    assert capsys.readouterr().err.strip() == "refocusgan: interrupted"


def test_a_reader_that_leaves_early_is_no_error():
    """`refocusgan models | head -1`: the closed pipe was reported as an output error ("[Errno 32] Broken pipe",
    exit 2). It now ends quietly with 141, as a shell tool ended by SIGPIPE does."""
    import subprocess
    import sys

    code = "import sys; from napari_refocusgan.cli import main; sys.exit(main(['models']))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has printed anything: it starts by importing torch
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "error" not in err and "Traceback" not in err and "Exception ignored" not in err, err
