"""The non-learning CLI commands: clear messages and non-zero exits on bad input."""

import numpy as np
import pytest
import tifffile

from napari_refocusgan.cli import main
from napari_refocusgan.core.imaging import write_image


def test_sml_command(tmp_path, capsys):
    img = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    write_image(tmp_path / "in.png", img)
    assert main(["sml", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.tif")]) == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == (20, 24) and out.dtype == np.float32 and out.max() > 0
    assert "wrote" in capsys.readouterr().out


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


def test_demo_writes_the_pipeline_outputs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    stack = tifffile.imread(tmp_path / "demo" / "focal_stack.tif")
    assert stack.shape[0] == 10 and stack.shape[-1] == 3
    printed = capsys.readouterr().out
    for name in ("focal_stack.tif", "sml.tif", "centre_view.png", "disparity.tif"):
        assert (tmp_path / "demo" / name).exists() and name in printed
