"""One process-wide setting for training runs on a CPU: keep freed memory in the process.

glibc's malloc hands blocks above its mmap threshold (128 KiB, adapting up to 32 MiB)
back to the system when they are freed, so every new large tensor, such as the
[T, B, N] intermediates of the vectorised methods, is page-faulted in afresh: on this
project's 2-core CPU a fresh 8 MiB tensor cost 1.5-3 ms where an in-place pass over it
cost 0.2 ms. With freed memory kept, a single-spike Fashion-MNIST step (784-1000-10,
T = 16, batch 128, 2 threads) went from 55 to 48 ms and a BPTT step from 52 to 49 ms
(means of three runs of 15 steps each). The price: the process keeps its peak memory
until it exits. ``spikeacc train`` and the benchmarks call ``keep_freed_memory``; a
library user may call it too (nothing calls it on import).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
INT_MAX = 2 ** 31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc malloc never to trim its heap and to serve blocks up to 1 GiB (32 MiB
    where glibc refuses more) from it. True if that took effect; False where the C
    library has no ``mallopt`` (macOS, musl) or refuses."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not mallopt(M_TRIM_THRESHOLD, INT_MAX):
        return False
    return any(mallopt(M_MMAP_THRESHOLD, size) for size in (2 ** 30, 2 ** 25))
