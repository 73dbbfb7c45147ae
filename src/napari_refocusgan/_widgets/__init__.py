"""napari widgets: thin adapters over :mod:`napari_refocusgan.core`.

``workers`` runs core functions off the GUI thread (progress, cancel, notifications); ``layer_io`` picks
input layers and writes results by name; each ``*_widget(s)`` module holds the widgets of one tool.
"""
