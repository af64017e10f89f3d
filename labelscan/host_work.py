"""Host-only work of a task (encoding and writing output parts) outside the worker's thread pool.

A GPU worker that labelscan starts runs few task threads (:data:`labelscan.cluster.GPU_WORKER_THREADS`,
8): more would launch kernels from more threads at once and cut small sets into more
partitions, both slower on the device (docs/benchmarks.md, "Threads per GPU worker"). Its flag
and rank tasks end in host work — parquet encoding of the mask and issue parts in Arrow's
GIL-free writer, hashing, writing — that the host's other cores could share (a billion-row
scan on one H100 of a 64-core host spent 10.2 s in the flag stage on its worker's 8 threads,
against 4.8 and 3.2 s on two and four workers).

With ``labelscan.host-threads`` above a worker's thread count, a task entering :func:`host_work`
leaves the worker's thread pool (:func:`distributed.secede`), so the worker starts its next
task meanwhile; at most ``host-threads`` tasks of the worker do host work at once, and a task
finding every slot taken waits for one inside the pool (so the host results waiting to be
written stay bounded: ``host-threads`` plus the worker's threads). Otherwise (the default
null, CPU workers whose threads already use every core, code running outside a Dask task) it
changes nothing. The outputs do not depend on it. Measured so far (docs/benchmarks.md, tenth
session): flag 11.8 -> 10.7 s and rank 5.7 -> 4.1 s for a billion rows on one H100 of a
64-core host, one run each, within the run-to-run spread of those hosts: the single GPU
worker's flag stage is bound by more than its thread count.
"""

from __future__ import annotations

import contextlib
import threading

from labelscan import config

_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


@contextlib.contextmanager
def host_work():
    """Run the body in a host-work slot, outside the worker's thread pool when it has spare cores."""
    slots = _worker_slots()
    if slots is None:
        yield
        return
    from distributed import secede

    with slots:
        secede()
        yield


def host_threads_setting():
    """``labelscan.host-threads`` as a positive int, or None.

    Raises
    ------
    ValueError
        When it is set to anything but a positive integer.
    """
    value = config.get("host-threads")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"labelscan.host-threads must be a positive integer or null; got {value!r}")
    return value


def _worker_slots():
    """This worker's semaphore of ``host-threads`` slots, or None when host work stays in the task's thread."""
    limit = host_threads_setting()
    if limit is None:
        return None
    from distributed.worker import get_worker, thread_state

    try:
        worker = get_worker()
    except ValueError:   # not in a worker
        return None
    if getattr(thread_state, "key", None) is None or limit <= worker.state.nthreads:
        return None   # not a task thread, or no cores beyond the pool's threads
    with _slots_lock:
        return _slots.setdefault(limit, threading.BoundedSemaphore(limit))
