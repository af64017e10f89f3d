"""Scaling benchmark: one scan on 1, 2, … GPUs of one host, with identical outputs required.

For each size (synthetic sets from :mod:`benchmarks.datasets`, generated on this machine's
disk) and each GPU count in ``--gpus``, in one command: a ``LocalCUDACluster`` restricted to
the first ``g`` GPUs (start time reported apart, one warm-up scan so CuPy's kernel compilation
is not charged), then ``labelscan.scan(..., backend="cupy")`` end to end with a fixed
partitioning (``--rows-per-partition``), so every GPU count writes the same files; the sha256 of
every output part is compared across GPU counts. The bare parquet read of the same files is
the floor.

Run: ``python -m benchmarks.scale --sizes 100Mx10 --gpus 1,2 --out benchmarks/results/scale.json``
(tidy JSON records as in :mod:`benchmarks.cpu`).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from benchmarks.cpu import Recorder, add_timing, labelscan_once, machine_info, read_floor_once, timed_runs
from benchmarks.datasets import ensure_dataset, list_files, parse_size
from benchmarks.gpu import gpu_versions, print_records


def output_digests(folder: Path) -> dict:
    """sha256 of every parquet part of a scan's outputs, by relative path."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*.parquet"))}


def gpu_cluster(count: int):
    """A ``LocalCUDACluster`` on the first ``count`` GPUs, its client and the start time."""
    from distributed import Client

    from labelscan.cluster import local_cuda_cluster

    started = time.perf_counter()
    cluster = local_cuda_cluster(CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(count)),
                                 dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(count)
    return cluster, client, time.perf_counter() - started


def bench_size(recorder: Recorder, size: str, args) -> None:
    """Every GPU count on one size; outputs must be byte-identical across counts."""
    rows, classes = parse_size(size)
    folder = Path(args.data_dir) / ensure_dataset(args.data_dir, rows, classes)["spec"].folder_name
    paths = list_files(folder)
    floor = add_timing(recorder, "read_floor", size, timed_runs(lambda: read_floor_once(paths), 1)[0])
    digests = {}
    for count in args.gpus:
        cluster, client, started = gpu_cluster(count)
        benchmark = f"labelscan_{count}gpu"
        recorder.add(benchmark, size, "cluster_start_seconds", started, "s")
        out = Path(args.data_dir) / "out" / f"{size}-{count}gpu"
        options = {"backend": "cupy", "rows_per_partition": args.rows_per_partition}
        labelscan_once(folder, out, client, **options)  # warm-up: kernel compilation
        summaries = []
        seconds, _ = timed_runs(lambda: summaries.append(labelscan_once(folder, out, client, **options)),
                                args.repeat)
        median = add_timing(recorder, benchmark, size, seconds)
        recorder.add(benchmark, size, "rows_per_second", rows / median, "rows/s")
        recorder.add(benchmark, size, "vs_read_floor", median / floor, "ratio")
        for stage, value in summaries[-1]["timings"].items():
            recorder.add(benchmark, size, f"stage_{stage}", value, "s")
        digests[count] = output_digests(out)
        client.close()
        cluster.close()
    first = args.gpus[0]
    for count in args.gpus[1:]:
        recorder.add(f"labelscan_{count}gpu", size, "outputs_identical_to_1gpu",
                     digests[count] == digests[first], "bool")
        one = [r["value"] for r in recorder.records if r["benchmark"] == f"labelscan_{first}gpu"
               and r["size"] == size and r["metric"] == "seconds"][0]
        many = [r["value"] for r in recorder.records if r["benchmark"] == f"labelscan_{count}gpu"
                and r["size"] == size and r["metric"] == "seconds"][0]
        recorder.add(f"labelscan_{count}gpu", size, "speedup_vs_1gpu", one / many, "ratio")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100Mx10")
    parser.add_argument("--gpus", default="1,2", help="comma-separated GPU counts")
    parser.add_argument("--rows-per-partition", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "labelscan-bench"))
    parser.add_argument("--out", default="benchmarks/results/scale.json")
    args = parser.parse_args(argv)
    args.gpus = [int(count) for count in args.gpus.split(",")]
    recorder = Recorder(machine_info(), gpu_versions())
    for size in filter(None, args.sizes.split(",")):
        bench_size(recorder, size, args)
        recorder.save(args.out)
    print_records(recorder)


if __name__ == "__main__":
    main()
