"""Process settings that make small-batch CPU inference fast."""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Let glibc reuse freed heap memory for large tensors instead of mapping fresh pages each time.

    Every forward allocates activations of a few MB; by default glibc serves those with mmap and
    returns them on free, so each forward pays page faults: on the digits model that was half the
    CPU time. Returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
