"""GUI-free core: focus measures, light-field formats, focal stacks, networks, inference, baselines."""

from .errors import RefocusError

__all__ = ["RefocusError"]
