"""The one exception type that user-facing code turns into a clear message."""


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
