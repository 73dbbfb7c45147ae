"""glibc's malloc, set to keep freed memory for reuse, for the processes this project owns.

A forward pass allocates and frees tensors of a few MB to a few tens of MB, layer after layer and run after
run. With glibc's defaults many of them are mapped fresh from the OS and returned on free, so every layer
faults its pages in again: 8 deblur + refocus runs and 8 δ changes of a 376×541 image spent 0.4–4.7 s in
the kernel on the 2-core CPU, against 0.04–0.11 s with this setting (README, Performance, for what that
did to the wall-clock time). :func:`retain_freed_memory` sets the mmap threshold to glibc's own ceiling
for its dynamic threshold (32 MiB) and lets each malloc arena keep up to 256 MiB of freed memory at its top.

The setting is process-wide and lasts until the process ends, so only entry points that own their process
apply it: the ``refocusgan`` command and ``python -m training``. The napari plugin and the core functions
leave the malloc of the process they run in (napari's, or a user's script) alone.
``REFOCUSGAN_MALLOC=default`` in the environment opts out. Elsewhere than glibc (macOS, Windows, musl) it
does nothing.
"""

from __future__ import annotations

import ctypes
import os
import threading

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: glibc's dynamic threshold stops here too
TRIM_THRESHOLD = 256 << 20  # freed memory an arena keeps at its top; more is returned to the OS
OPT_OUT_VARIABLE = "REFOCUSGAN_MALLOC"

_lock = threading.Lock()
_applied: bool | None = None  # None: not tried yet in this process


def retain_freed_memory() -> bool:
    """Apply the settings above once per process; True when they are in effect (glibc, not opted out)."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = _apply()
        return _applied


def is_glibc() -> bool:
    """Whether this process runs on glibc (asked of the C library itself; no file is read)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name (macOS, musl)
        return False


def _apply() -> bool:
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "default":
        return False
    if not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols, glibc's among them
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success. Setting either threshold ends glibc's dynamic one, so the trim threshold
    # is set only once the mmap threshold is (alone it would pin the mmap threshold at 128 KiB).
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return False
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return True
