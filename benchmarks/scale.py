"""Scaling benchmark: one scan on 1, 2, … GPUs of one host, with identical outputs required.

For each size (synthetic sets from :mod:`benchmarks.datasets`, generated on this machine's
disk) and each GPU count in ``--gpus``, in one command: a ``LocalCUDACluster`` restricted to
the first ``g`` GPUs (start time reported apart, one warm-up scan of a 2M-row set so CuPy's kernel compilation
is not charged), then ``labelscan.scan(..., backend="cupy")`` end to end with the same partitioning for every
count (``--rows-per-partition``, or labelscan's own planning, which depends on the GPU count only
for sets of fewer than 4 partitions per GPU), so every GPU count writes the same files; the sha256 of
every output part is compared across GPU counts. The bare parquet read of the same files is
the floor.

Two read floors are recorded: ``read_floor`` (:func:`benchmarks.cpu.read_floor_once`, files one
after another, pyarrow's own threads inside each) and ``read_floor_parallel`` (every file read the
same way, ``os.cpu_count()`` files at a time: what the host's cores can decode at best).

Each run writes to an empty destination by default (``--destination fresh``: the previous
run's outputs are removed untimed, as for a one-off job); ``--destination rerun`` times scans
that replace the previous run's outputs (the scan removes them first, in its flag stage).
``first_run_seconds`` is the first scan of each fresh cluster.

Large sets: ``--jobs`` processes generate the files (default all CPUs), ``--rows-per-file``
sets the file size (10M rows keeps a 1B-row set at 100 files), and each GPU count's outputs are
deleted once hashed unless ``--keep-outputs`` (a 1B×10 set is ~43 GB on disk, its outputs ~10 GB).

Run: ``python -m benchmarks.scale --sizes 100Mx10 --gpus 1,2 --out benchmarks/results/scale.json``
(tidy JSON records as in :mod:`benchmarks.cpu`);
``python -m benchmarks.scale --sizes 1Bx10 --gpus 1 --rows-per-file 10000000 --repeat 1`` for
the billion-row run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.cpu import Recorder, add_timing, labelscan_once, machine_info, read_floor_once, timed_runs
from benchmarks.datasets import ROWS_PER_FILE, ensure_dataset, list_files, parse_size
from benchmarks.gpu import gpu_versions, print_records


def output_digests(folder: Path) -> dict:
    """sha256 of every parquet part of a scan's outputs, by relative path."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.parquet"))}


WARMUP_ROWS = 2_000_000
"""Rows of the set (same K) scanned once per cluster before the timed runs."""


def read_floor_parallel(paths) -> int:
    """:func:`read_floor_once` of every file, ``os.cpu_count()`` files at a time; rows read."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return sum(pool.map(lambda path: read_floor_once([path]), paths))


def gpu_cluster(count: int, worker_malloc: dict | None = None):
    """A ``LocalCUDACluster`` on the first ``count`` GPUs, its client and the start time
    (``worker_malloc``: see :func:`labelscan.cluster.local_cuda_cluster`)."""
    from distributed import Client

    from labelscan.cluster import local_cuda_cluster

    started = time.perf_counter()
    cluster = local_cuda_cluster(worker_malloc, CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(count)),
                                 dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(count)
    return cluster, client, time.perf_counter() - started


def bench_size(recorder: Recorder, size: str, args) -> None:
    """Every GPU count on one size; outputs must be byte-identical across counts."""
    rows, classes = parse_size(size)
    dataset = ensure_dataset(args.data_dir, rows, classes, jobs=args.jobs, rows_per_file=args.rows_per_file)
    if dataset["generated"]:
        recorder.add("dataset", size, "generate_seconds", dataset["seconds"], "s")
    folder = Path(dataset["folder"])
    warmup_folder = ensure_dataset(args.data_dir, WARMUP_ROWS, classes, jobs=args.jobs)["folder"]
    paths = list_files(folder)
    recorder.add("dataset", size, "bytes_on_disk", sum(path.stat().st_size for path in paths), "B")
    floor = add_timing(recorder, "read_floor", size, timed_runs(lambda: read_floor_once(paths), 1)[0])
    parallel_floor = add_timing(recorder, "read_floor_parallel", size,
                                timed_runs(lambda: read_floor_parallel(paths), 1)[0])
    digests, medians = {}, {}
    for count in args.gpus:
        cluster, client, started = gpu_cluster(count)
        benchmark = f"labelscan_{count}gpu"
        recorder.add(benchmark, size, "cluster_start_seconds", started, "s")
        out = Path(args.data_dir) / "out" / f"{size}-{count}gpu"
        options = {"backend": "cupy", "rows_per_partition": args.rows_per_partition}
        labelscan_once(warmup_folder, out, client, **options)  # warm-up: kernel compilation, imports
        summaries = []
        seconds, _ = timed_runs(lambda: summaries.append(labelscan_once(folder, out, client, **options)),
                                args.repeat, before=lambda: before_run(out, args.destination))
        median = medians[count] = add_timing(recorder, benchmark, size, seconds)
        # the first scan of a fresh cluster (what a one-off job pays): staging memory, pools
        recorder.add(benchmark, size, "first_run_seconds", seconds[0], "s")
        recorder.add(benchmark, size, "rerun_destination", args.destination == "rerun", "bool")
        recorder.add(benchmark, size, "rows_per_second", rows / median, "rows/s")
        recorder.add(benchmark, size, "vs_read_floor", median / floor, "ratio")
        recorder.add(benchmark, size, "vs_read_floor_parallel", median / parallel_floor, "ratio")
        for stage, value in summaries[-1]["timings"].items():
            recorder.add(benchmark, size, f"stage_{stage}", value, "s")
        recorder.add(benchmark, size, "num_cached_partitions", summaries[-1]["num_cached_partitions"], "count")
        recorder.add(benchmark, size, "num_partitions", summaries[-1]["num_partitions"], "count")
        digests[count] = output_digests(out)
        if not args.keep_outputs:
            shutil.rmtree(out)
        client.close()
        cluster.close()
        recorder.save(args.out)   # each GPU count's records survive a later count's failure
        print(f"{size} on {count} GPU(s): {median:.2f} s (median of {len(seconds)})", file=sys.stderr, flush=True)
    add_speedups(recorder, size, medians, digests)


def before_run(out: Path, destination: str) -> None:
    """Untimed, ahead of each scan: with a ``fresh`` destination the previous run's outputs
    go (else the scan removes them itself, timed: a rerun), then every run starts with no
    dirty pages left by the generator or an earlier run's outputs, whose writeback would slow
    its writes (docs/benchmarks.md, tenth session)."""
    if destination == "fresh":
        shutil.rmtree(out, ignore_errors=True)
    os.sync()


def add_speedups(recorder: Recorder, size: str, medians: dict, digests: dict) -> None:
    """Each GPU count against the fewest measured (one GPU when measured), whatever the order they
    ran in: whether its outputs are identical and its speed-up (``outputs_identical_to_<b>gpu``,
    ``speedup_vs_<b>gpu``).

    Parameters
    ----------
    medians, digests : dict
        Per GPU count: median seconds, and :func:`output_digests`.
    """
    baseline = min(medians)
    for count in medians:
        if count == baseline:
            continue
        recorder.add(f"labelscan_{count}gpu", size, f"outputs_identical_to_{baseline}gpu",
                     digests[count] == digests[baseline], "bool")
        recorder.add(f"labelscan_{count}gpu", size, f"speedup_vs_{baseline}gpu", medians[baseline] / medians[count],
                     "ratio")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100Mx10")
    parser.add_argument("--gpus", default="1,2", help="comma-separated GPU counts")
    parser.add_argument("--rows-per-partition", type=int, default=None,
                        help="labelscan partition size (default: labelscan's own planning)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "labelscan-bench"))
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating files")
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE)
    parser.add_argument("--keep-outputs", action="store_true", help="keep each GPU count's scan outputs")
    parser.add_argument("--destination", choices=("fresh", "rerun"), default="fresh",
                        help="fresh: each run writes to an empty destination (the previous run's outputs "
                             "removed untimed, as for a one-off job); rerun: over the previous run's outputs")
    args = parser.parse_args(argv)
    args.gpus = [int(count) for count in args.gpus.split(",")]
    recorder = Recorder(machine_info(), gpu_versions())
    for size in filter(None, args.sizes.split(",")):
        bench_size(recorder, size, args)
        recorder.save(args.out)
    print_records(recorder)


if __name__ == "__main__":
    main()
