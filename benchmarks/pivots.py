"""Pivot benchmark: scans with and without sampled cutoff pivots, alternating on one cluster.

Few-class scans start each per-class cutoff search from an interval a sample of the class
suggests (:mod:`labelscan.selection_pivots`, configuration key ``labelscan.pivots``). For each
size of ``--sizes``, on one cluster (``--gpus N`` GPU workers, or labelscan's default CPU
``LocalCluster``): a warm-up scan and one untimed scan per setting, then ``--repeat`` rounds
of one scan per setting in alternating order; records the median seconds and the stages of the
median run per setting, and whether both settings wrote byte-identical outputs.

GPU host: ``python -m benchmarks.pivots --sizes 10Mx10,400Mx10 --gpus 1 --rows-per-file 10000000
--out benchmarks/results/pivots-gpu.json``; CPU: ``python -m benchmarks.pivots --sizes 10Mx10``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dask.config

from benchmarks.cpu import Recorder, machine_info, package_versions
from benchmarks.datasets import ROWS_PER_FILE, ensure_dataset, parse_size
from benchmarks.scale import gpu_cluster, output_digests

SETTINGS = {"pivots": True, "whole-range": False}
"""Value of ``labelscan.pivots`` for each setting."""

WARMUP_ROWS = 20_000


@contextlib.contextmanager
def started_client(gpus: int | None):
    """A client of ``gpus`` GPU workers, or of labelscan's default CPU cluster when None."""
    from distributed import Client

    from labelscan import cluster as clusters

    if gpus is None:
        cluster = clusters.local_cluster(dashboard_address=None)
        client = Client(cluster)
    else:
        cluster, client, _ = gpu_cluster(gpus)
    with cluster, client:
        yield client


def scan_once(folder, out: Path, client, setting: str, backend: str) -> tuple:
    """One scan with ``setting``: (seconds, summary timings)."""
    import labelscan

    with dask.config.set({"labelscan.pivots": SETTINGS[setting]}):
        started = time.perf_counter()
        result = labelscan.scan(str(folder), str(out), client=client, overwrite=True, backend=backend)
        return time.perf_counter() - started, result.summary["timings"]


def bench_size(recorder: Recorder, size: str, client, args, backend: str, label: str) -> None:
    rows, classes = parse_size(size)
    folder = ensure_dataset(args.data_dir, rows, classes, jobs=args.jobs, rows_per_file=args.rows_per_file)["folder"]
    warmup = ensure_dataset(args.data_dir, WARMUP_ROWS, classes, jobs=1)["folder"]
    outputs = {setting: Path(args.data_dir) / "out" / f"pivots-{size}-{setting}" for setting in SETTINGS}
    for setting, out in outputs.items():   # imports, kernels, the page cache
        scan_once(warmup, out, client, setting, backend)
        scan_once(folder, out, client, setting, backend)
    runs = {setting: [] for setting in SETTINGS}
    for round_index in range(args.repeat):
        order = list(SETTINGS) if round_index % 2 == 0 else list(reversed(SETTINGS))
        for setting in order:
            runs[setting].append(scan_once(folder, outputs[setting], client, setting, backend))
    medians = {}
    for setting, measured in runs.items():
        seconds = [run[0] for run in measured]
        median = medians[setting] = statistics.median(seconds)
        benchmark = f"{setting}_{label}"
        recorder.add(benchmark, size, "seconds", median, "s", len(seconds))
        recorder.add(benchmark, size, "seconds_min", min(seconds), "s")
        recorder.add(benchmark, size, "seconds_max", max(seconds), "s")
        for stage, value in min(measured, key=lambda run: abs(run[0] - median))[1].items():
            recorder.add(benchmark, size, f"stage_{stage}", value, "s")
        print(f"{benchmark:22s} {size}: median {median:.3f} s of {[round(s, 3) for s in seconds]}", flush=True)
    digests = {setting: output_digests(out) for setting, out in outputs.items()}
    recorder.add(f"comparison_{label}", size, "speedup_of_pivots", medians["whole-range"] / medians["pivots"], "ratio")
    recorder.add(f"comparison_{label}", size, "outputs_identical", int(digests["pivots"] == digests["whole-range"]), "bool")
    for out in outputs.values():
        shutil.rmtree(out, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10Mx10")
    parser.add_argument("--gpus", type=int, default=None, help="GPU workers (default: the CPU cluster)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE)
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "labelscan-bench"))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating files")
    parser.add_argument("--out", default="benchmarks/results/pivots.json")
    args = parser.parse_args(argv)
    recorder = Recorder(machine_info(), package_versions())
    backend, label = ("numpy", "cpu") if args.gpus is None else ("cupy", f"{args.gpus}gpu")
    with started_client(args.gpus) as client:
        for size in args.sizes.split(","):
            bench_size(recorder, size, client, args, backend, label)
            recorder.save(args.out)


if __name__ == "__main__":
    main()
