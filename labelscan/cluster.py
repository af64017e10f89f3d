"""Getting a ``distributed.Client``: reuse one, connect to a scheduler, or start a local cluster.

labelscan closes only what it started.
"""

from __future__ import annotations

import contextlib
import logging
import os

import psutil

from labelscan.errors import UsageError
from labelscan.host_work import host_threads_setting
from labelscan.io.threads import available_cores
from labelscan.worker_devices import worker_device_memories
from labelscan.worker_setup import WORKER_SETUP

GPU_WORKER_THREADS = 8
"""Most threads per GPU worker of a started LocalCUDACluster."""


def default_local_cluster_kwargs() -> dict:
    """One worker process using every core (threads share cached partitions without copies).

    Returns
    -------
    dict
        Keyword arguments for ``distributed.LocalCluster``.
    """
    return {
        "n_workers": 1,
        "threads_per_worker": available_cores(),
        "processes": True,
        "memory_limit": int(psutil.virtual_memory().total * 0.8),
        "dashboard_address": ":0",
    }


@contextlib.contextmanager
def get_client(client=None, scheduler=None, gpu=False, **local_kwargs):
    """Yield a client, starting (and then closing) a local cluster if none is given.

    Parameters
    ----------
    client : distributed.Client, optional
        Used as is and left open.
    scheduler : str, optional
        Address (``tcp://host:8786``) or path of a scheduler file; the connection is closed after.
    gpu : bool
        Start a ``dask_cuda.LocalCUDACluster`` (one worker per GPU) instead of a ``LocalCluster``.
    **local_kwargs
        Overrides of :func:`default_local_cluster_kwargs` for a started ``LocalCluster``.

    Yields
    ------
    distributed.Client
    """
    from distributed import Client

    if client is not None:
        yield client
        return
    if scheduler is not None:
        try:
            connection = (Client(scheduler_file=scheduler) if os.path.exists(scheduler)
                          else Client(scheduler, timeout="30s"))
        except (OSError, ValueError) as error:   # ValueError: not an address (no port, a bad port)
            raise UsageError(f"cannot connect to the Dask scheduler at {scheduler}: {error}") from error
        with connection:
            yield connection
        return
    if gpu:
        cluster = local_cuda_cluster(**local_kwargs)
    else:
        cluster = local_cluster(**local_kwargs)
    with cluster, Client(cluster) as local_client:
        yield local_client


WORKER_ENVIRONMENT = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
"""Dask configuration while labelscan starts worker processes.

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it turns off glibc's
adaptive mmap threshold, so every numpy temporary above 128 KiB becomes a fresh mapping whose
pages fault in again on first touch. A scan is dominated by such temporaries: 10M×10 on 2
cores took 3.1 s with the variable set and 2.0 s without (glibc still returns large freed
blocks to the OS). A value already in this process's environment is kept and inherited by the
workers, including one that the nanny of a Dask cluster started earlier in this process wrote
there (it updates its own ``os.environ`` before spawning).
"""


GPU_WORKER_MALLOC = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 32),
                     "MALLOC_TRIM_THRESHOLD_": str(1 << 32)}
"""glibc settings of the GPU workers labelscan starts: one heap that keeps freed memory.

A GPU worker's host work (decoded partitions, masks and issues on their way out) is made of
temporaries of 50-500 MB, allocated by several threads. glibc gives each thread its own arena,
whose heaps are at most 64 MB, so every such temporary is a fresh mapping whose pages fault in
(zeroed) on first touch, and its unmapping blocks the other threads' page faults. One arena
without mmap and trimming reuses the same pages: 400M x 10 on one H100 13.5 -> 11.0 s, on two
7.6 s instead of 9.3 s (medians of 3). The cost: a worker's resident memory stays at its peak,
which on a GPU host is a few GB per worker. CPU workers keep a bounded amount of free memory
instead (:func:`cpu_worker_malloc`): their resident memory is what Dask's memory limit acts on
in bounded-memory scans.
"""


@contextlib.contextmanager
def worker_environment(variables: dict | None = None, settings: dict | None = None):
    """Apply :data:`WORKER_ENVIRONMENT` (and set ``variables`` in the workers) while worker
    processes are spawned; ``settings``: Dask configuration of the workers (e.g.
    ``{"labelscan.host-threads": 16}``).

    The variables go into this process's environment while the workers spawn (the nanny keeps
    a value found there over its configuration's) and are restored after, so clusters started
    later here do not inherit them; the nanny's configuration holds them for worker restarts.
    The settings are set in this process's configuration while the workers spawn: a nanny
    hands its own configuration to its worker, over what the worker's environment says.
    """
    import dask

    variables = variables or {}
    saved = {name: os.environ.get(name) for name in variables}
    config = {**WORKER_ENVIRONMENT, **(settings or {}),
              **{f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in variables.items()}}
    try:
        os.environ.update(variables)
        with dask.config.set(config):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def with_preload(module: str) -> list:
    """Dask's ``distributed.worker.preload`` list with ``module`` added (once)."""
    import dask
    import distributed  # noqa: F401 - registers its defaults: setting a key of a section Dask does
    # not know yet would drop the whole section (defaults included) when the setting is undone

    preload = list(dask.config.get("distributed.worker.preload", None) or [])
    return preload if module in preload else [*preload, module]


CPU_WORKER_KEPT_FRACTION = 0.25
"""Free memory a CPU worker process keeps for reuse, as a fraction of its memory limit
(:func:`cpu_worker_malloc`)."""


def cpu_worker_malloc(memory_limit, n_workers: int) -> dict:
    """glibc settings of the CPU workers labelscan starts: one heap, no mappings of their own
    for large blocks, and up to :data:`CPU_WORKER_KEPT_FRACTION` of the worker's memory limit
    kept free in the heap instead of returned to the kernel.

    A scan's partitions and temporaries are large blocks, freed at the end of each pass or
    scan. Returned to the kernel, their pages come back zeroed, and on a virtual machine
    whose host takes back the guest's free pages (free page reporting, as on the 2-core
    development machine) every page is then faulted in by the host again: after 8 s idle
    between scans (or after another program ran, as cleanlab does between the benchmark's
    scans), glibc's defaults against these settings, 2-core host, two clusters alternating,
    medians of five scans: 10M x 10 2.85 -> 1.89 s, 1M x 100 2.61 -> 2.15 s, 200K x 1000
    3.33 -> 1.54 s (``python -m benchmarks.malloc --cpu --idle 8``; back to back, without the
    idle time, the gain was within noise). The free memory kept is bounded so that Dask's
    memory manager, which reads the process's resident memory, still sees partitions come
    and go in bounded-memory scans.

    Parameters
    ----------
    memory_limit : int, float, str or None
        The workers' ``memory_limit`` as ``LocalCluster`` takes it (bytes, a fraction of the
        host's memory, ``"4GB"``, ``"auto"``, or None / 0 for none).
    n_workers : int

    Returns
    -------
    dict
        Environment variables of the worker processes.
    """
    from distributed.system import MEMORY_LIMIT
    from distributed.worker_memory import parse_memory_limit

    n_workers = max(n_workers, 1)
    # LocalCluster's own reading ("auto": an n_workers-th of the host's memory); no limit: the same share
    limit = parse_memory_limit(memory_limit, 1, n_workers, logger=logging.getLogger(__name__)) \
        or MEMORY_LIMIT / n_workers
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 32),
            "MALLOC_TRIM_THRESHOLD_": str(int(limit * CPU_WORKER_KEPT_FRACTION))}


def local_cluster(worker_malloc: dict | None = None, **kwargs):
    """A ``LocalCluster`` with :func:`default_local_cluster_kwargs` (overridden by ``kwargs``) and
    labelscan's :data:`WORKER_ENVIRONMENT`; worker processes preload :mod:`labelscan.worker_setup`
    (workers in this process do not: its objects are the caller's).

    ``worker_malloc``: the worker processes' glibc allocator variables (:func:`cpu_worker_malloc`
    of the cluster's memory limit when None; ``{}`` for glibc's defaults).
    """
    from distributed import LocalCluster

    options = {**default_local_cluster_kwargs(), **kwargs}
    if not options["processes"]:
        return LocalCluster(**options)
    if worker_malloc is None:
        worker_malloc = cpu_worker_malloc(options.get("memory_limit"), options.get("n_workers") or 1)
    with worker_environment(worker_malloc, settings={"distributed.worker.preload": with_preload(WORKER_SETUP)}):
        return LocalCluster(**options)


def local_cuda_cluster(worker_malloc: dict | None = None, **kwargs):
    """A ``LocalCUDACluster``: one worker per visible GPU.

    ``worker_malloc``: the workers' glibc allocator variables (:data:`GPU_WORKER_MALLOC` when
    None; ``{}`` for glibc's defaults). Each worker runs :data:`GPU_WORKER_THREADS` task threads
    at most, and output encoding on ``labelscan.host-threads`` threads (default: the host's
    cores per GPU; :mod:`labelscan.host_work`).

    Raises
    ------
    UsageError
        When dask-cuda is not installed.
    """
    try:
        from dask_cuda import LocalCUDACluster
        from dask_cuda.utils import get_n_gpus
    except ImportError as error:
        raise UsageError("a GPU scan without a client needs dask-cuda: pip install 'labelscan[gpu]'") from error
    # several threads per GPU worker: parquet decoding and output encoding run on the host and
    # overlap with the device work of other partitions
    cores_per_worker = cores_per_gpu_worker(kwargs.get("CUDA_VISIBLE_DEVICES"), get_n_gpus)
    threads = min(GPU_WORKER_THREADS, cores_per_worker)
    with worker_environment(GPU_WORKER_MALLOC if worker_malloc is None else worker_malloc,
                            {"labelscan.host-threads": host_threads_setting() or cores_per_worker}):
        return LocalCUDACluster(**{"dashboard_address": ":0", "threads_per_worker": threads, **kwargs})


def cores_per_gpu_worker(visible_devices, count_gpus) -> int:
    """The host's cores per worker of a ``LocalCUDACluster`` (one worker per GPU it uses): of the
    GPUs in ``visible_devices`` (``"0,2"``, as its ``CUDA_VISIBLE_DEVICES`` argument) when given,
    else of ``count_gpus()``."""
    num_workers = len(str(visible_devices).split(",")) if visible_devices is not None else max(count_gpus(), 1)
    return max(1, available_cores() // num_workers)


def worker_memory_limit(client) -> int:
    """Sum of the workers' memory limits in bytes (0 when unknown)."""
    workers = client.scheduler_info().get("workers", {})
    return int(sum(info.get("memory_limit") or 0 for info in workers.values()))


def worker_device_memory(client) -> int:
    """Sum over the workers of their current GPU's total memory in bytes (0 without CuPy/GPU;
    :func:`labelscan.worker_devices.worker_device_memories`)."""
    return int(sum(worker_device_memories(client).values()))


def worker_threads(client) -> int:
    """Total worker threads of the cluster (at least 1)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, int(sum(info.get("nthreads") or 0 for info in workers.values())))
