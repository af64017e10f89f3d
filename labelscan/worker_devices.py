"""What GPU each worker of a cluster has, asked once per worker process.

Asking the workers is a round trip to every one of them (``client.run``: 2-3 ms at the start of
a 10M-row GPU scan of a quarter of a second, before its first read). A scan needs the answer
twice (:func:`labelscan.backend.cluster_backend` and the device memory that decides what stays
cached: :func:`labelscan.cluster.worker_device_memory`), and a notebook or benchmark scans many
times with one client: the answers are kept per client and worker process. A worker process is
known by its address and its local directory (a worker restarted at the same address gets a
new one), so a restarted or added worker is asked again; the scheduler's list of workers is
fetched every time (one request to the scheduler, no worker involved).
"""

from __future__ import annotations

import threading
import weakref

_answers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # client -> {identity: bytes}
_lock = threading.Lock()


def _device_memory() -> int:
    """This process's current GPU's total memory in bytes (0 without CuPy or a CUDA device)."""
    from labelscan.xp import cupy_or_none

    cupy = cupy_or_none()
    return int(cupy.cuda.Device().mem_info[1]) if cupy is not None else 0


def worker_device_memories(client) -> dict:
    """Per worker address, the total memory of its current GPU in bytes (0: no CuPy or device).

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    dict of str to int
        Every worker the scheduler lists now (empty without workers).
    """
    workers = client.scheduler_info().get("workers", {})
    identities = {address: (address, info.get("local_directory")) for address, info in workers.items()}
    with _lock:
        known = _answers.setdefault(client, {})
        missing = [address for address, identity in identities.items() if identity not in known]
    if missing:
        answers = client.run(_device_memory, workers=missing)
        with _lock:
            known.update({identities[address]: int(memory) for address, memory in answers.items()
                          if address in identities})
    return {address: known[identity] for address, identity in identities.items() if identity in known}
