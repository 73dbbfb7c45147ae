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
    assert set(reader.filename_patterns) == {"*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.lfp", "*.lfr"}
    assert commands[reader.command].python_name == "napari_refocusgan._reader:napari_get_reader"

    (sample,) = manifest.contributions.sample_data
    assert sample.key == "synthetic_scene" and sample.command in commands
