"""Moving partitions to the GPU: one host→device copy through pinned (page-locked) memory.

Pageable copies run at ~7 GB/s on the lent H100 machines, pinned ones at ~54 GB/s. Each
worker thread keeps one pinned staging buffer, grown as needed and reused across partitions.
"""

from __future__ import annotations

import threading

import numpy as np

_staging = threading.local()


def _pinned_buffer(nbytes: int) -> np.ndarray:
    import cupy

    buffer = getattr(_staging, "buffer", None)
    if buffer is None or buffer.nbytes < nbytes:
        memory = cupy.cuda.alloc_pinned_memory(max(nbytes, 1))
        buffer = np.frombuffer(memory, dtype=np.uint8, count=max(nbytes, 1))
        _staging.buffer = buffer
    return buffer[:nbytes]


def to_device(array: np.ndarray):
    """Copy a host array to the current GPU through the thread's pinned staging buffer.

    Parameters
    ----------
    array : numpy.ndarray
        Any shape; made C-contiguous.

    Returns
    -------
    cupy.ndarray
        Same shape and dtype, on the device.
    """
    import cupy

    array = np.ascontiguousarray(array)
    if not array.size:   # a partition whose rows were all skipped: nothing to copy
        return cupy.empty(array.shape, dtype=array.dtype)
    staging = _pinned_buffer(array.nbytes).view(array.dtype).reshape(array.shape)
    np.copyto(staging, array)
    device = cupy.empty(array.shape, dtype=array.dtype)
    device.set(staging)
    cupy.cuda.get_current_stream().synchronize()  # the staging buffer is reused next time
    return device
