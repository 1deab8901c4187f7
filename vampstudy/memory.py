"""Handing freed heap memory back to the operating system.

A study allocates and frees the same large buffers trial after trial (decoded
audio, spectrograms, figure canvases). glibc keeps freed chunks in its heap, so
the process' resident size creeps up with every trial although the memory is
free. :func:`release_free_memory` asks glibc (``malloc_trim(0)``) to return the
free pages; the runner calls it after each recorded trial and after the
analysis. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_trim = None   # glibc's malloc_trim, False where there is none


def _malloc_trim():
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
            else:
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
                _trim = fn
    return _trim


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; True if glibc released any."""
    trim = _malloc_trim()
    return bool(trim and trim(0))
