"""Choosing where per-partition work runs: ``"numpy"`` (CPU) or ``"cupy"`` (GPU).

``"auto"`` picks CuPy when it imports and sees a CUDA device. On a cluster, the workers
decide: :func:`cluster_backend` asks them (once per worker process:
:mod:`labelscan.worker_devices`).
"""

from __future__ import annotations

from labelscan.errors import UsageError
from labelscan.worker_devices import worker_device_memories
from labelscan.xp import cupy_or_none

BACKENDS = ("auto", "numpy", "cupy")


def resolve_backend(backend: str) -> str:
    """``"numpy"`` or ``"cupy"`` for this process.

    Raises
    ------
    UsageError
        Unknown name, or ``"cupy"`` without CuPy or a CUDA device.
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "numpy":
        return backend
    has_gpu = cupy_or_none() is not None
    if backend == "cupy" and not has_gpu:
        raise UsageError("backend='cupy' needs CuPy and a CUDA device (pip install 'labelscan[gpu]')")
    return "cupy" if has_gpu else "numpy"


def cluster_backend(client, backend: str) -> str:
    """``"numpy"`` or ``"cupy"`` for the workers of ``client``.

    ``"auto"`` is ``"cupy"`` only when every worker has CuPy and a device.
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "numpy":
        return backend
    memories = worker_device_memories(client)
    every_worker = bool(memories) and all(memories.values())
    if backend == "cupy" and not every_worker:
        raise UsageError("backend='cupy' needs CuPy and a CUDA device on every worker")
    return "cupy" if every_worker else "numpy"
