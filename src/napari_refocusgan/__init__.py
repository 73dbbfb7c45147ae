"""napari-refocusgan: single-image refocusing (RefocusGAN, ECCV 2018) for napari.

The core (``napari_refocusgan.core``) imports neither Qt nor napari; the widgets, reader and sample data
are thin adapters over it.
"""

__version__ = "0.1.0"
