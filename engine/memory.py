"""Handing freed memory back to the system, for the explorer's two long-lived processes.

Both processes allocate and free many small buffers a second while training runs (events pickled
across the pipe, pictures redrawn). glibc keeps what is freed in its arenas, so the resident size
of a process that has long stopped growing its live data still creeps up as the arenas fragment.
``release_memory`` asks glibc to return the free pages (``malloc_trim``); it takes a few
milliseconds and does nothing on other C libraries. Torch-free: the interface process calls it too.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_LIBC = None


def release_memory() -> bool:
    """Return freed heap pages to the system; True when the C library could be asked."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True
