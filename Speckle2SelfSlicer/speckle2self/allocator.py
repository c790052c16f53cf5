"""Large freed memory blocks kept by the C allocator for the next frame instead of given back to the system.

glibc's malloc returns large freed blocks to the system (mmap and heap trimming), so the next frame's
layers fault their pages in again. On the 2-core test VM the eager fp32 network at 512 x 512 took 286 ms
with every large block given back and 132 ms with them kept (docs/performance.md compares a plain
process). glibc's own setting (`mallopt`) does it without a preloaded allocator such as jemalloc, which
would have to be installed and set before the process starts. Only speckle2self's own processes call it
(the CLI, the Slicer module's despeckling process, batch workers), never a host such as Slicer itself.
"""
from __future__ import annotations

import ctypes
import functools
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's mallopt parameters (malloc.h)."""
MMAP_THRESHOLD = 64 << 20
"""Blocks up to this size come from the heap and are reused: the network's buffers for frames up to
1024 x 1024 (32 MiB at half resolution). Larger ones, such as whole cines, are still mapped on their own
and given back when freed (with 256 MiB a 1000-frame cine kept 160 MiB more)."""
TRIM_THRESHOLD = 128 << 20
"""Freed memory at the top of the heap up to this much stays with the process (the most it keeps unused)."""


@functools.lru_cache(maxsize=1)
def keep_freed_blocks() -> bool:
    """Set the thresholds for this process (once); False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
