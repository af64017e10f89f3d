"""Moving partitions to the GPU: one host→device copy through pinned (page-locked) memory.

Pageable copies run at ~7 GB/s on the lent H100 machines, pinned ones at ~54 GB/s. Staging
memory comes from the process's pool of page-locked regions and goes back to it after each
copy (:func:`pinned_buffer`); each worker thread has one CUDA stream for its device work
(:func:`thread_stream`).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from labelscan.kernels.pinned import pinned_array

_thread_state = threading.local()   # each thread's CUDA stream


def pinned_buffer(nbytes: int) -> np.ndarray:
    """Page-locked staging memory of ``nbytes`` bytes from the process's pool
    (:func:`labelscan.kernels.pinned.pinned_array`), back in the pool once the array and its views
    are dropped: a worker holds as many staging regions as it has reads in flight, whichever
    threads run them (a buffer kept per thread registered a new 230 MB region each time a read
    first landed on one of a GPU worker's eight threads, ~50 ms, well into a benchmark's timed
    scans)."""
    return pinned_array(max(nbytes, 1))[:nbytes]


@contextlib.contextmanager
def thread_stream():
    """Run the block's device work on the calling thread's own non-blocking CUDA stream,
    after all work queued before on the default stream, and wait for it at the end.

    Partitions read or flagged at once (one a worker thread) then overlap their copies and
    kernels instead of queueing on the legacy default stream, which every thread shares and
    whose every synchronisation (each copy to the host) waits for all of them (four 2.5M x 10
    partitions read at once on one H100: 81 ms against 101-106 ms, ``scratch``). What the
    block made is complete when it returns, so tasks of other threads may use it.
    """
    import cupy

    stream = getattr(_thread_state, "stream", None)
    if stream is None:
        stream = _thread_state.stream = cupy.cuda.Stream(non_blocking=True)
    stream.wait_event(cupy.cuda.Stream.null.record())   # inputs other tasks made on the default stream
    try:
        with stream:
            yield
    finally:
        stream.synchronize()


def device_work(on_device: bool):
    """:func:`thread_stream` for device work, nothing for host work."""
    return thread_stream() if on_device else contextlib.nullcontext()


def to_host_pinned(array):
    """A host copy of a device array made into page-locked memory of the process's pool
    (:func:`labelscan.kernels.pinned.pinned_array`), which the copy holds until it is freed;
    host arrays are returned as they are.

    For large results a task frees before it ends (a partition's mask columns, its
    self-confidences): a pageable copy runs at ~7 GB/s on the lent H100 machines, a page-locked
    one at ~50 GB/s (the module's note; with this, 400M x 10's flag stage on one H100 went from
    1.54 to 1.20 s, docs/benchmarks.md, fifteenth session). Results kept after the task stay
    pageable (the pool would keep their memory locked).

    Parameters
    ----------
    array : numpy.ndarray or cupy.ndarray, any shape

    Returns
    -------
    numpy.ndarray
        Same shape and dtype, C-contiguous.
    """
    if not type(array).__module__.startswith("cupy"):
        return array
    import cupy

    array = cupy.ascontiguousarray(array)
    host = pinned_array(max(array.nbytes, 1))[:array.nbytes].view(array.dtype).reshape(array.shape)
    array.get(out=host)   # blocking, on the current stream
    return host


def to_device(array):
    """Copy a host array to the current GPU through pinned staging memory (:func:`pinned_buffer`).

    Parameters
    ----------
    array : numpy.ndarray or list of numpy.ndarray or cupy.ndarray
        Any shape (a device array is returned as it is); or row blocks of one dtype and trailing shape (zero-copy chunks of a
        partition), written one after the other into the staging buffer: joined on their way
        to the device instead of in a host copy of their own.

    Returns
    -------
    cupy.ndarray
        Same shape and dtype (blocks: their concatenation), on the device.
    """
    import cupy

    if isinstance(array, cupy.ndarray):
        return array
    blocks = array if isinstance(array, list) else [array]
    first = blocks[0]
    shape = (sum(len(block) for block in blocks), *first.shape[1:])
    nbytes = int(np.prod(shape, dtype=np.int64)) * first.dtype.itemsize
    if not nbytes:   # a partition whose rows were all skipped: nothing to copy
        return cupy.empty(shape, dtype=first.dtype)
    staging = pinned_buffer(nbytes).view(first.dtype).reshape(shape)
    start = 0
    for block in blocks:
        np.copyto(staging[start:start + len(block)], block)
        start += len(block)
    device = cupy.empty(shape, dtype=first.dtype)
    device.set(staging)
    cupy.cuda.get_current_stream().synchronize()  # the staging memory goes back to the pool on return
    return device
