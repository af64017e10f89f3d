"""Arrow's decoding threads inside Dask workers.

Dask's nanny starts worker processes with ``OMP_NUM_THREADS=1`` (distributed's
``nanny.pre-spawn-environ``), and Arrow sizes its CPU thread pool from that variable: every
parquet decode of the worker then runs on one pool thread, however many task threads call it
(measured on a 16-core GPU host: 13M rows/s with the pool at 1 thread, 61M rows/s at 16, for
``fixed_size_list<float32, 10>``). labelscan sizes the pool to the process's cores before it
reads.
"""

from __future__ import annotations

import os

import pyarrow as pa


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def ensure_decode_threads() -> None:
    """Grow Arrow's CPU thread pool to :func:`available_cores` if it is smaller (never shrink it)."""
    cores = available_cores()
    if pa.cpu_count() < cores:
        pa.set_cpu_count(cores)
