"""The one exception type that user-facing code turns into a clear message, and the checks of settings
that raise it."""

import math
from numbers import Integral, Real


class RefocusError(ValueError):
    """Bad input or configuration, explained in words a user can act on.

    The CLI prints it and exits non-zero; widgets show it as a napari notification.
    """


def is_out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, torch's OutOfMemoryError (CUDA/MPS), or the plain RuntimeError that torch's CPU
    allocator raises."""
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or (isinstance(exc, RuntimeError) and any(s in str(exc) for s in ("can't allocate", "not enough memory")))
    )


def check_whole(value, what: str) -> None:
    """A setting that counts pixels, views or slices must be a whole number (not a bool, not 8.5): a float
    passed some range checks and silently changed results, or failed deep inside torch."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise RefocusError(f"{what} must be a whole number, got {value!r}.")


def check_real(value, what: str) -> None:
    """A setting that must be a finite real number (not a bool, a string or None)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise RefocusError(f"{what} must be a finite number, got {value!r}.")
