"""The one exception type that user-facing code turns into a clear message."""


class RefocusError(ValueError):
    """Bad input or configuration, explained in words a user can act on.

    The CLI prints it and exits non-zero; widgets show it as a napari notification.
    """
