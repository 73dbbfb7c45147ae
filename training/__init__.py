"""Training of RefocusGAN's generators (paper §3–5): G1 (deblur) and G2 (refocus).

Not part of the plugin wheel. The generators come from the plugin (``napari_refocusgan.core.networks``),
so trained weights load in the plugin unchanged. Run ``python -m training --help``.
"""
