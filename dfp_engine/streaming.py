"""Passes over memory-mapped arrays that never hold the whole array in memory.

Chunked column reductions, and `release_pages`, which tells the kernel that rows already read
through a mapping need not stay in this process's resident set.
"""

from __future__ import annotations

import mmap

import numpy as np

# Rows read per chunk by a streaming pass (statistics, means): about this many bytes.
STREAM_CHUNK_BYTES = 16 * 2**20


def chunk_rows(z: np.ndarray) -> int:
    """Rows per chunk for a streaming pass over z: about STREAM_CHUNK_BYTES."""
    row_bytes = max(1, int(np.prod(z.shape[1:])) * z.dtype.itemsize)
    return max(1, STREAM_CHUNK_BYTES // row_bytes)


def column_means(z: np.ndarray) -> np.ndarray:
    """Column means (d,) in float64, chunk by chunk so a memory-mapped z is never loaded whole."""
    n = z.shape[0]
    step = chunk_rows(z)
    total = np.zeros(z.shape[1], dtype=np.float64)
    for start in range(0, n, step):
        total += z[start : start + step].sum(axis=0, dtype=np.float64)
        release_pages(z, start, start + step)
    out: np.ndarray = total / n
    return out


def release_pages(z: np.ndarray, start: int, stop: int) -> None:
    """Let the kernel drop the pages of rows start … stop of a memory-mapped z from our RSS.

    Pages read through a mapping count as resident until reclaimed; a pass over a file larger
    than memory would otherwise show the whole file in the process's RSS. Shared mappings
    keep their data in the page cache (written data included); private ones are left alone.
    """
    handle = getattr(z, "_mmap", None)
    if not isinstance(handle, mmap.mmap) or getattr(z, "mode", "c") == "c":
        return
    rows = z[start:stop]
    if rows.size == 0:
        return
    lo, hi = _byte_bounds(rows)
    base = np.frombuffer(handle, dtype=np.uint8)
    origin = base.ctypes.data
    del base
    page = mmap.PAGESIZE
    # Only whole pages inside the rows are dropped; partial edge pages are shared with neighbours.
    first = -(-(lo - origin) // page) * page
    last = (hi - origin) // page * page
    if last > first:
        handle.madvise(mmap.MADV_DONTNEED, first, last - first)


def _byte_bounds(a: np.ndarray) -> tuple[int, int]:
    """Lowest and one-past-highest byte address an array's elements occupy."""
    lo = hi = int(a.__array_interface__["data"][0])
    for size, stride in zip(a.shape, a.strides, strict=True):
        if stride < 0:
            lo += (size - 1) * stride
        else:
            hi += (size - 1) * stride
    return lo, hi + a.itemsize
