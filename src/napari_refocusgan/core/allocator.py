"""glibc's malloc, set to keep freed memory for reuse during inference and training.

A forward pass allocates and frees tensors of a few MB to a few tens of MB, layer after layer and run after
run. With glibc's defaults many of them are mapped fresh from the OS and returned on free, so every layer
faults its pages in again: 8 deblur + refocus runs and 8 δ changes of a 376×541 image spent 0.4–4.7 s in
the kernel on the 2-core CPU, against 0.04–0.11 s with this setting, and on one thread a deblur + refocus
took 4–17 % longer without it (README, Performance). :func:`retain_freed_memory` sets the mmap threshold
to glibc's own ceiling for its dynamic threshold (32 MiB) and keeps up to 256 MiB of freed memory at the
top of the heap, once per process.

It changes a process-wide setting, so it stays small and bounded, and ``REFOCUSGAN_MALLOC=default`` in the
environment leaves malloc alone. Elsewhere than glibc (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import threading

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: glibc's dynamic threshold stops here too
TRIM_THRESHOLD = 256 << 20  # freed memory kept at the heap's top; more is returned to the OS
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
        libc = ctypes.CDLL(None)  # the process's own symbols, glibc's among them
        # mallopt returns 1 on success; the mmap threshold first, as setting either ends the dynamic one
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
