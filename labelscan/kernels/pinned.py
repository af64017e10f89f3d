"""Page-locked host memory that is quick to get: huge pages registered with CUDA, kept for reuse.

``cudaHostAlloc`` (CuPy's ``alloc_pinned_memory``) locks 4 KiB pages one by one under the
driver's lock; on the lent H100 machines (virtual machines) a 512 MiB buffer took 0.24-0.57 s,
and eight worker threads asking for one each waited 3.8 s, which made the first scan of a
fresh GPU cluster several seconds slower than the next (400M x 10: 17-20 s of allocation
across a worker's threads). Anonymous memory advised to use transparent huge pages, touched,
then registered (``cudaHostRegister``) copies to the device as fast (55 GB/s) and took
0.12 s alone, 0.25 s for eight threads at once (docs/benchmarks.md, fourteenth session;
``python -m benchmarks.staging`` times both). Without transparent huge pages (``never``) the
region has 4 KiB pages and is still registered.

A registered region is never unregistered nor unmapped: it stays registered for the life of the
process, and an array freed hands its region back to a process-wide pool that the next request
of at most its size takes. Unregistering and unmapping regions while the worker allocated device
memory made CUDA's device allocations fail now and then with ``cudaErrorAlreadyMapped`` (fifteenth
session: 400M x 10 on one H100, 1-4 of 31 read tasks of a scan failed and were retried; none with
regions kept registered, nor with ``cudaHostAlloc``). The pool grows only when a request finds no
free region large enough: with a scan's few sizes (a partition's staging memory while it is
copied, :func:`labelscan.kernels.device.pinned_buffer`, and its result copies,
:func:`labelscan.kernels.device.to_host_pinned`) that is on the first partitions.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import threading
import weakref
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

HUGE_PAGE_BYTES = 2 << 20
"""Alignment of the registered regions: the x86-64 transparent huge page size."""


@dataclass(eq=False)
class Region:
    """A registered part of an anonymous memory map: ``nbytes`` bytes from ``offset`` (2 MiB-aligned)."""

    memory: mmap.mmap
    offset: int
    nbytes: int

    def array(self, nbytes: int) -> np.ndarray:
        """A new array over the region's first ``nbytes`` bytes, based on the map itself: views of
        it keep *it* alive (a view of a view of an array would collapse to the outer array)."""
        return np.frombuffer(self.memory, dtype=np.uint8, count=nbytes, offset=self.offset)


class _RegionPool:
    """The process's registered regions that no array holds."""

    def __init__(self):
        # reentrant: a garbage collection inside take() may run a freed array's finalizer, put()
        self.lock = threading.RLock()
        self.free = []
        self.registration_refused = False   # then every request is cudaHostAlloc's (asked once)

    def take(self, nbytes: int):
        """The smallest free region of at least ``nbytes``, or ``None``."""
        with self.lock:
            fitting = [index for index, region in enumerate(self.free) if region.nbytes >= nbytes]
            if not fitting:
                return None
            return self.free.pop(min(fitting, key=lambda index: self.free[index].nbytes))

    def put(self, region) -> None:
        with self.lock:
            self.free.append(region)

    def free_bytes(self) -> int:
        """Bytes of the free regions (registered, held by no array)."""
        with self.lock:
            return sum(region.nbytes for region in self.free)


POOL = _RegionPool()


def pinned_array(nbytes: int) -> np.ndarray:
    """A page-locked host array of ``nbytes`` bytes: a free registered region of the pool, else a
    new one (its size rounded up to whole huge pages); its region goes back to the pool when the
    array is garbage collected (its views, and views of them, keep it alive).

    Parameters
    ----------
    nbytes : int
        At least 1.

    Returns
    -------
    numpy.ndarray, shape (nbytes,), uint8
        Writable, its first byte 2 MiB-aligned, zero-filled when new (a reused region holds what
        it held); where CUDA refuses to register host memory, ``cudaHostAlloc``'s instead (a
        warning is logged; CuPy pools that memory itself).
    """
    region = POOL.take(nbytes)
    if region is None and not POOL.registration_refused:
        region = registered_region(-(-nbytes // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES)
        POOL.registration_refused = region is None
    if region is None:
        import cupy

        return np.frombuffer(cupy.cuda.alloc_pinned_memory(nbytes), dtype=np.uint8, count=nbytes)
    array = region.array(nbytes)
    weakref.finalize(array, POOL.put, region).atexit = False
    return array


def registered_region(nbytes: int):
    """A new anonymous region of ``nbytes`` bytes, 2 MiB-aligned, advised to use transparent huge
    pages, touched and registered with CUDA for the life of the process (never unregistered, see
    the module's note); ``None`` where CUDA refuses to register host memory (a warning is logged).

    Returns
    -------
    Region or None
    """
    import cupy

    memory = mmap.mmap(-1, nbytes + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    offset = -ctypes.addressof(ctypes.c_char.from_buffer(memory)) % HUGE_PAGE_BYTES
    _advise_huge_pages(memory, offset, nbytes)
    region = Region(memory, offset, nbytes)
    pages = region.array(nbytes)
    pages[::mmap.PAGESIZE] = 0   # fault every page in now (huge ones where granted), not in the driver
    try:
        cupy.cuda.runtime.hostRegister(pages.ctypes.data, nbytes, 0)
    except cupy.cuda.runtime.CUDARuntimeError as error:   # a platform that registers no host memory
        logger.warning("page-locking host memory by registration failed (%s); allocating it with "
                       "cudaHostAlloc, slower to get", error)
        return None
    return region


def _advise_huge_pages(region: mmap.mmap, offset: int, nbytes: int) -> None:
    advice = getattr(mmap, "MADV_HUGEPAGE", None)   # Linux only
    if advice is None:
        return
    try:
        region.madvise(advice, offset, nbytes)
    except OSError:   # transparent huge pages off: 4 KiB pages
        pass
