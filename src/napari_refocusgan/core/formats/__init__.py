"""Light-field file formats. Use :func:`..lightfield.read_lightfield` / :func:`..lightfield.detect_format`
unless you need one format's details."""

from .eslf import ESLFLenslets, interleave_eslf, looks_like_eslf, open_eslf, read_eslf
from .lfp import pack_lfp, read_lfp
from .pfm import read_pfm, write_pfm
from .viewgrid import read_hci_parameters, read_view_folder, scan_view_folder

__all__ = [
    "ESLFLenslets",
    "interleave_eslf",
    "looks_like_eslf",
    "open_eslf",
    "pack_lfp",
    "read_eslf",
    "read_hci_parameters",
    "read_lfp",
    "read_pfm",
    "read_view_folder",
    "scan_view_folder",
    "write_pfm",
]
