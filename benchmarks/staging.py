"""Staging memory benchmark: getting page-locked host memory for a GPU worker's reads.

A GPU worker's threads each keep a page-locked (pinned) staging buffer about the size of their
largest partition (:func:`labelscan.kernels.device.pinned_buffer`), so the first scan of a fresh
cluster allocates several GB of it. This benchmark times both ways of getting it, one buffer at
a time and ``N`` threads at once (as a worker's threads do on their first partitions):
``cuda_host_alloc`` (CuPy's ``alloc_pinned_memory``, which labelscan used before the fourteenth
session) and ``registered_huge_pages`` (:func:`labelscan.kernels.pinned.pinned_array`: an
anonymous region advised to use transparent huge pages, touched, then registered with CUDA),
and the host→device copy rate from a buffer of each (the reason to pin at all). Records per
method: ``seconds_1_thread`` (median of ``--repeat``), ``wall_seconds_<N>_threads``,
``h2d_gb_per_second``; plus the host's transparent huge page setting.

Run: ``python -m benchmarks.staging --mib 512 --threads 8 --out benchmarks/results/staging.json``
(needs CuPy and a GPU; allocates ``(repeat + threads) × mib`` MiB of page-locked memory per
method; it stays page-locked, pooled, until the process ends: CuPy's pinned memory pool keeps
``cudaHostAlloc``'s and labelscan's pool keeps the registered regions, never unregistered).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time

from benchmarks.cpu import Recorder, machine_info
from benchmarks.gpu import gpu_versions
from labelscan.kernels.pinned import HUGE_PAGE_BYTES

THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def allocators() -> dict:
    """The two ways of getting ``nbytes`` of page-locked memory, each returning what keeps it alive
    and its address."""
    import cupy

    from labelscan.kernels.pinned import pinned_array

    def cuda_host_alloc(nbytes: int):
        memory = cupy.cuda.alloc_pinned_memory(nbytes)
        return memory, memory.ptr

    def registered_huge_pages(nbytes: int):
        array = pinned_array(nbytes)
        return array, array.ctypes.data

    return {"cuda_host_alloc": cuda_host_alloc, "registered_huge_pages": registered_huge_pages}


def timed(allocate, nbytes: int) -> tuple:
    started = time.perf_counter()
    kept = allocate(nbytes)
    return time.perf_counter() - started, kept


def h2d_rate(address: int, nbytes: int, copies: int = 3) -> float:
    """GB/s of ``copies`` host→device copies of ``nbytes`` from ``address`` on a non-blocking stream."""
    import cupy

    device = cupy.empty(nbytes, dtype=cupy.uint8)
    stream = cupy.cuda.Stream(non_blocking=True)
    device.data.copy_from_host_async(address, nbytes, stream)   # warm-up
    stream.synchronize()
    started = time.perf_counter()
    for _ in range(copies):
        device.data.copy_from_host_async(address, nbytes, stream)
    stream.synchronize()
    return copies * nbytes / (time.perf_counter() - started) / 1e9


def bench_method(recorder: Recorder, name: str, allocate, nbytes: int, threads: int, repeat: int) -> None:
    """Time ``allocate`` alone ``repeat`` times and on ``threads`` threads at once; the memory goes
    back to its pool when this returns (distinct sizes: a buffer of this call never reuses one of
    an earlier call)."""
    kept = []
    seconds = []
    for attempt in range(repeat):
        elapsed, memory = timed(allocate, nbytes + attempt * HUGE_PAGE_BYTES)   # distinct sizes: no pooled block reused
        seconds.append(elapsed)
        kept.append(memory)
    recorder.add(name, None, "seconds_1_thread", statistics.median(seconds), "s", len(seconds))
    recorder.add(name, None, "h2d_gb_per_second", h2d_rate(kept[0][1], nbytes), "GB/s")
    results = []
    workers = [threading.Thread(target=lambda: results.append(timed(allocate, nbytes + repeat * HUGE_PAGE_BYTES)))
               for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    recorder.add(name, None, f"wall_seconds_{threads}_threads", wall, "s", threads)
    print(f"{name:22s} {nbytes >> 20} MiB: {statistics.median(seconds):.3f} s alone, {wall:.3f} s for {threads} "
          f"threads at once", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB of each buffer")
    parser.add_argument("--threads", type=int, default=8, help="threads asking for a buffer at once")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/staging.json")
    args = parser.parse_args(argv)
    recorder = Recorder(machine_info(), gpu_versions())
    recorder.add("staging", None, "buffer_bytes", args.mib << 20, "bytes")
    try:
        with open(THP_SETTING) as setting:   # e.g. "always [madvise] never"
            chosen = setting.read().split("[")[1].split("]")[0]
        recorder.add("staging", None, f"transparent_huge_pages_{chosen}", True, "bool")
    except (OSError, IndexError):
        pass
    for name, allocate in allocators().items():
        bench_method(recorder, name, allocate, args.mib << 20, args.threads, args.repeat)
        gc.collect()   # the method's buffers go before the next one's
    recorder.save(args.out)


if __name__ == "__main__":
    main()
