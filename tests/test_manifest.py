"""The napari manifest is valid and every command it names imports."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

npe2 = pytest.importorskip("npe2")

PLUGIN = "napari-refocusgan"


def _npe2_command() -> list[str]:
    exe = shutil.which("npe2")
    return [exe] if exe else [sys.executable, "-m", "npe2"]


def test_npe2_validate_with_imports():
    result = subprocess.run(
        [*_npe2_command(), "validate", PLUGIN, "--imports"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_contributions():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution(PLUGIN)
    assert set(manifest.categories) == {"Image Processing", "IO"}
    commands = {c.id: c for c in manifest.contributions.commands}
    assert all(cid.startswith(f"{PLUGIN}.") for cid in commands)
    widgets = {w.display_name: w.command for w in manifest.contributions.widgets}
    assert set(widgets) == {"Focus measure (SML)", "Deblur (radiance)", "Refocus", "Classical", "Focus stacking"}
    assert all(3 <= len(name) <= 90 for name in widgets)
    assert all(command in commands for command in widgets.values())

    (reader,) = manifest.contributions.readers
    assert reader.command == f"{PLUGIN}.get_reader" and reader.accepts_directories
    assert set(reader.filename_patterns) == {"*_eslf.png", "*_eslf.tif", "*_eslf.tiff", "*.lfp", "*.lfr"}
    assert commands[reader.command].python_name == "napari_refocusgan._reader:napari_get_reader"

    (sample,) = manifest.contributions.sample_data
    assert sample.key == "synthetic_scene" and sample.command in commands


def test_the_reader_is_offered_for_light_fields_only(tmp_path):
    """napari asks the user to choose whenever two readers match a file name, whatever their get_reader
    returns: claiming every PNG/JPEG/TIFF would put that question in front of each ordinary image. Folders
    (HCI and view grids) can only be claimed all together; napari's own reader claims them too."""
    pm = npe2.PluginManager.instance()
    pm.discover()

    def offered(path) -> bool:
        return any(r.plugin_name == PLUGIN for r in pm.iter_compatible_readers([str(path)]))

    for plain in ("photo.png", "scan.tif", "scan.tiff", "photo.jpg", "photo.jpeg", "notes_eslf.txt"):
        assert not offered(tmp_path / plain), plain
    for light_field in ("IMG_0001_eslf.png", "IMG_0001_eslf.tif", "IMG_0001-stk.lfp", "IMG_0001.LFP", "raw.lfr"):
        assert offered(tmp_path / light_field), light_field
    assert offered(tmp_path)  # a folder
