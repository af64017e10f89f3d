"""Worker allocator benchmark: scans with labelscan's glibc settings for its workers and with glibc's defaults.

labelscan starts GPU workers with one glibc arena that keeps freed memory
(:data:`labelscan.cluster.GPU_WORKER_MALLOC`) and CPU workers with one that keeps a bounded
amount of it (:func:`labelscan.cluster.cpu_worker_malloc`). For each GPU count of ``--gpus`` (or,
with ``--cpu``, the default CPU ``LocalCluster``), in one command: a cluster with glibc's defaults
and one with labelscan's settings, each given a warm-up scan and one untimed scan of the set, then
``--repeat`` timed scans, each after ``--idle`` seconds of waiting (time in which a virtual
machine's host may take back the pages a worker freed); records the median seconds and that
run's stages per setting.

Run on a GPU host: ``python -m benchmarks.malloc --size 400Mx10 --gpus 1,2 --rows-per-file
10000000 --out benchmarks/results/malloc.json``; on CPU: ``python -m benchmarks.malloc --cpu
--size 10Mx10 --idle 8``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

from benchmarks.cpu import Recorder, machine_info, package_versions
from benchmarks.datasets import ROWS_PER_FILE, add_dataset_options, ensure_dataset, parse_size
from labelscan import cluster as clusters

SETTINGS = {"glibc": {}, "labelscan": None}
"""Worker allocator variables of each setting (None: labelscan's own for the kind of cluster)."""

WARMUP_ROWS = 20_000


@contextlib.contextmanager
def started_cluster(setting: str, gpus: int | None):
    """A client of a cluster whose workers start with ``setting``: ``gpus`` GPU workers, or
    labelscan's default CPU cluster when ``gpus`` is None."""
    from distributed import Client

    from benchmarks.scale import gpu_cluster

    if gpus is None:
        cluster = clusters.local_cluster(worker_malloc=SETTINGS[setting], dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client, _ = gpu_cluster(gpus, worker_malloc=SETTINGS[setting])
    with cluster, client:
        yield client


def bench_setting(recorder: Recorder, size: str, folders: tuple, setting: str, gpus: int | None,
                  repeat: int, out: str, idle: float = 0.0) -> None:
    import labelscan

    folder, warmup_folder = folders
    backend = "numpy" if gpus is None else "cupy"
    with started_cluster(setting, gpus) as client:
        for source in (warmup_folder, folder):   # imports, kernels, the page cache
            labelscan.scan(source, out, client=client, overwrite=True, backend=backend)
        seconds, timings = [], []
        for _ in range(repeat):
            time.sleep(idle)
            started = time.perf_counter()
            result = labelscan.scan(folder, out, client=client, overwrite=True, backend=backend)
            seconds.append(time.perf_counter() - started)
            timings.append(result.summary["timings"])
    median = statistics.median(seconds)
    benchmark = f"malloc_{setting}_{'cpu' if gpus is None else f'{gpus}gpu'}"
    recorder.add(benchmark, size, "seconds", median, "s", repeat)
    for stage, value in timings[seconds.index(median)].items():
        recorder.add(benchmark, size, f"stage_{stage}", value, "s")
    print(f"{benchmark:26s} {size}: median {median:.3f} s of {[round(s, 3) for s in seconds]}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="400Mx10")
    parser.add_argument("--gpus", default="1,2", help="comma-separated GPU counts")
    parser.add_argument("--cpu", action="store_true", help="the default CPU LocalCluster instead of GPUs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of waiting before each timed scan")
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE)
    add_dataset_options(parser)
    parser.add_argument("--out", default="benchmarks/results/malloc.json")
    args = parser.parse_args(argv)
    rows, classes = parse_size(args.size)
    folders = (ensure_dataset(args.data_dir, rows, classes, jobs=args.jobs, rows_per_file=args.rows_per_file)["folder"],
               ensure_dataset(args.data_dir, WARMUP_ROWS, classes, jobs=1)["folder"])
    out = os.path.join(args.data_dir, "out", "malloc")
    recorder = Recorder(machine_info(), package_versions())
    for gpus in [None] if args.cpu else [int(count) for count in args.gpus.split(",")]:
        for setting in SETTINGS:
            bench_setting(recorder, args.size, folders, setting, gpus, args.repeat, out, args.idle)
            recorder.save(args.out)


if __name__ == "__main__":
    main()
