"""Keep freed memory in the process so large per-step tensors reuse warm pages.

A PINN step allocates and frees the same large temporaries (feature blocks of several MB)
every step. glibc serves blocks above its mmap threshold with fresh mmap()s and returns them
on free, so every step page-faults them back in and the kernel zeroes them again. Raising the
mmap and trim thresholds keeps them on the heap; measured in docs/benchmarks.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_done = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc for steady large allocations; True if applied (Linux/glibc only).

    Process-wide, so only the command-line stages and benchmarks call it, never the library
    on import.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok &= mallopt(_M_TOP_PAD, 64 * 1024 * 1024) == 1
    _done = bool(ok)
    return _done
