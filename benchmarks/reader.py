"""Reader benchmark: labelscan's partition reader with Arrow's decoder and with the page decoder.

For one synthetic set (:mod:`benchmarks.datasets`), in one command: every partition of the
set read by :func:`labelscan.io.dataset.read_partition` (zero-copy row blocks, as scans read
them) on a pool of each of ``--threads`` threads, the two decoders alternating
(:data:`labelscan.io.pages.MAX_CORES` set so that :func:`~labelscan.io.pages.preferred` picks
each), ``--repeat`` times; records seconds and rows/s per decoder and thread count.

With ``--gpu-scans N`` (a GPU host with dask-cuda), also ``N`` alternating pairs of whole
GPU scans of the set on a one-GPU ``LocalCUDACluster``, the workers' ``MAX_CORES`` set through
``client.run``: the comparison behind the decoder's core limit (inside a GPU worker, other
threads hold the GIL too).

Run: ``python -m benchmarks.reader --size 10Mx10 --threads 1,2 --out benchmarks/results/reader.json``;
on a GPU host ``python -m benchmarks.reader --size 100Mx10 --threads 1,8,16 --gpu-scans 3``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.cpu import Recorder, machine_info, package_versions
from benchmarks.datasets import add_dataset_options, ensure_dataset, parse_size
from labelscan.io import pages
from labelscan.io.dataset import plan_dataset, read_partition

DECODERS = {"arrow": 0, "pages": 1 << 20}
"""``pages.MAX_CORES`` that makes :func:`labelscan.io.pages.preferred` choose each decoder."""


def use_decoder(name: str) -> str:
    """Make this process read list columns with decoder ``name`` (also run on workers)."""
    pages.MAX_CORES = DECODERS[name]
    return name


def read_all(plan, threads: int) -> int:
    """Read every partition of ``plan`` on ``threads`` threads; rows read."""
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(lambda spec: read_partition(plan, spec, row_blocks=True), plan.partitions)
        return sum(len(part.labels) for part in parts)


def bench_reads(recorder: Recorder, size: str, folder: str, threads: list[int], repeat: int) -> None:
    plan = plan_dataset(folder)
    for count in threads:
        seconds = {name: [] for name in DECODERS}
        for _ in range(repeat):
            for name in DECODERS:
                use_decoder(name)
                started = time.perf_counter()
                rows = read_all(plan, count)
                seconds[name].append(time.perf_counter() - started)
        for name, runs in seconds.items():
            median = statistics.median(runs)
            recorder.add(f"read_{name}", size, f"seconds_{count}_threads", median, "s", len(runs))
            recorder.add(f"read_{name}", size, f"rows_per_second_{count}_threads", rows / median, "rows/s", len(runs))
            print(f"{size} {name:6s} threads={count:2d} {median:.3f} s  {rows / median / 1e6:.1f}M rows/s", flush=True)


def bench_gpu_scans(recorder: Recorder, size: str, folder: str, pairs: int, data_dir: str) -> None:
    import labelscan
    from benchmarks.scale import gpu_cluster

    cluster, client, _ = gpu_cluster(1)
    out = os.path.join(data_dir, "out", "reader")
    try:
        labelscan.scan(folder, out, client=client, overwrite=True, backend="cupy")   # warm-up
        seconds = {name: [] for name in DECODERS}
        read_stage = {name: [] for name in DECODERS}
        for _ in range(pairs):
            for name in DECODERS:
                client.run(use_decoder, name)
                started = time.perf_counter()
                result = labelscan.scan(folder, out, client=client, overwrite=True, backend="cupy")
                seconds[name].append(time.perf_counter() - started)
                read_stage[name].append(result.summary["timings"]["read"])
                print(f"{size} GPU scan, {name}: {seconds[name][-1]:.3f} s (read {read_stage[name][-1]:.3f} s)",
                      flush=True)
        for name in DECODERS:
            recorder.add(f"gpu_scan_{name}", size, "seconds", statistics.median(seconds[name]), "s", pairs)
            recorder.add(f"gpu_scan_{name}", size, "stage_read", statistics.median(read_stage[name]), "s", pairs)
    finally:
        client.close()
        cluster.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10Mx10")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--gpu-scans", type=int, default=0, help="alternating pairs of GPU scans (0: none)")
    add_dataset_options(parser)
    parser.add_argument("--out", default="benchmarks/results/reader.json")
    args = parser.parse_args(argv)
    rows, classes = parse_size(args.size)
    folder = ensure_dataset(args.data_dir, rows, classes, jobs=args.jobs)["folder"]
    recorder = Recorder(machine_info(), package_versions())
    bench_reads(recorder, args.size, folder, [int(count) for count in args.threads.split(",")], args.repeat)
    recorder.save(args.out)
    if args.gpu_scans:
        bench_gpu_scans(recorder, args.size, folder, args.gpu_scans, args.data_dir)
        recorder.save(args.out)


if __name__ == "__main__":
    main()
