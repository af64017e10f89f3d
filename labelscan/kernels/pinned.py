"""Page-locked host memory that is quick to get: huge pages registered with CUDA.

``cudaHostAlloc`` (CuPy's ``alloc_pinned_memory``) locks 4 KiB pages one by one under the
driver's lock; on the lent H100 machines (virtual machines) a 512 MiB buffer took 0.24-0.57 s,
and eight worker threads asking for one each waited 3.8 s, which made the first scan of a
fresh GPU cluster several seconds slower than the next (400M x 10: 17-20 s of allocation
across a worker's threads). Anonymous memory advised to use transparent huge pages, touched,
then registered (``cudaHostRegister``) copies to the device as fast (55 GB/s) and took
0.12 s alone, 0.25 s for eight threads at once (docs/benchmarks.md, fourteenth session;
``python -m benchmarks.staging`` times both). Without transparent huge pages (``never``) the
region has 4 KiB pages and is still registered.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import weakref

import numpy as np

logger = logging.getLogger(__name__)

HUGE_PAGE_BYTES = 2 << 20
"""Alignment of the registered regions: the x86-64 transparent huge page size."""


def pinned_array(nbytes: int) -> np.ndarray:
    """A new page-locked host array of ``nbytes`` bytes, registered with CUDA until it is
    garbage collected (views keep it alive).

    Parameters
    ----------
    nbytes : int
        At least 1.

    Returns
    -------
    numpy.ndarray, shape (nbytes,), uint8
        Writable, zero-filled, its first byte 2 MiB-aligned; where CUDA refuses to register host
        memory, ``cudaHostAlloc``'s instead (a warning is logged).
    """
    import cupy

    region = mmap.mmap(-1, nbytes + HUGE_PAGE_BYTES, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    offset = -ctypes.addressof(ctypes.c_char.from_buffer(region)) % HUGE_PAGE_BYTES
    _advise_huge_pages(region, offset, nbytes)
    array = np.frombuffer(region, dtype=np.uint8, count=nbytes, offset=offset)
    array[::mmap.PAGESIZE] = 0   # fault every page in now (huge ones where granted), not in the driver
    try:
        cupy.cuda.runtime.hostRegister(array.ctypes.data, nbytes, 0)
    except cupy.cuda.runtime.CUDARuntimeError as error:   # a platform that registers no host memory
        logger.warning("page-locking host memory by registration failed (%s); allocating it with "
                       "cudaHostAlloc, slower to get", error)
        return np.frombuffer(cupy.cuda.alloc_pinned_memory(nbytes), dtype=np.uint8, count=nbytes)
    finalizer = weakref.finalize(array, cupy.cuda.runtime.hostUnregister, array.ctypes.data)
    finalizer.atexit = False   # at exit the process unmaps it; CUDA may be gone by then
    return array


def _advise_huge_pages(region: mmap.mmap, offset: int, nbytes: int) -> None:
    advice = getattr(mmap, "MADV_HUGEPAGE", None)   # Linux only
    if advice is None:
        return
    try:
        region.madvise(advice, offset, nbytes)
    except OSError:   # transparent huge pages off: 4 KiB pages
        pass
