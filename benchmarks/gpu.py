"""GPU benchmark: labelscan on CuPy workers against cleanlab, labelscan on CPU, the parquet read floor
and the HBM bandwidth floor, in one command on one machine.

For each size ``<rows>x<classes>`` (synthetic sets from :mod:`benchmarks.datasets`, generated on
this machine's disk):

1. **read floor**: ``pyarrow.parquet.read_table`` of every file and pred_probs to numpy;
2. **labelscan GPU**: ``labelscan.scan(..., backend="cupy")`` on one ``LocalCUDACluster``
   (one worker per GPU; its start time is reported apart), end to end: parquet in, outputs
   written, after the size's first scan (reported apart as ``first_scan_seconds``: it grows
   the worker's staging and device memory pools);
3. **labelscan CPU**: the same scan with ``backend="numpy"`` on a ``LocalCluster`` using every
   core (``--cpu-sizes`` only, it is slow at 100M rows);
4. **cleanlab 2.9**: ``find_label_issues(labels, pred_probs, n_jobs=<all cores>)`` in memory
   (``--cleanlab-sizes``), with its count and mask checked against labelscan's;

1-4 run in ``--repeat`` interleaved rounds (floor, GPU, CPU, cleanlab, floor, ...; CPU scans and
cleanlab until their ``--cpu-budget`` / ``--cleanlab-budget`` seconds are spent), each figure the
median of its rounds, each ratio also as the median of the per-round ratios (``*_paired``);
5. **kernels vs HBM floor**: one partition of ``--kernel-rows`` rows resident on the device;
   the confident-joint pass (``passes.row_facts``) and the key pass (``selection.partition_keys``)
   timed with device synchronisation, against ``bytes touched / bandwidth`` where bandwidth is
   the measured device-to-device copy rate (``cupy`` memcpy of the same bytes).

Run: ``python -m benchmarks.gpu --out benchmarks/results/gpu.json`` (tidy JSON records, as in
:mod:`benchmarks.cpu`; a markdown table is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import (Recorder, add_timing, cleanlab_once, interleaved_rounds, labelscan_mask, labelscan_once,
                            machine_info, median_stage_timings, paired_ratio, read_floor_once, start_cluster,
                            timed_runs)
from benchmarks.datasets import ensure_dataset, list_files, load_arrays, parse_size

DEFAULT_SIZES = "10Mx10,100Mx10,1Mx1000,10Mx100"
WARMUP_SIZE = "200Kx10"


def gpu_versions() -> dict:
    """Library versions and the device name."""
    import cupy
    import dask
    import distributed

    import labelscan

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return {"labelscan": labelscan.__version__, "cupy": cupy.__version__, "dask": dask.__version__,
            "distributed": distributed.__version__, "numpy": np.__version__, "device": name,
            "gpus": cupy.cuda.runtime.getDeviceCount()}


def start_gpu_cluster():
    """A ``LocalCUDACluster`` and its client, with the start time in seconds."""
    from distributed import Client

    from labelscan.cluster import local_cuda_cluster

    started = time.perf_counter()
    cluster = local_cuda_cluster(dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(len(cluster.workers))
    return cluster, client, time.perf_counter() - started


def copy_bandwidth(nbytes: int) -> float:
    """Measured device-to-device copy bandwidth in bytes/s (reads + writes counted)."""
    import cupy

    source = cupy.empty(nbytes // 4, dtype=np.float32)
    target = cupy.empty_like(source)
    target[...] = source
    cupy.cuda.Device().synchronize()
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        target[...] = source
        cupy.cuda.Device().synchronize()
        seconds.append(time.perf_counter() - started)
    return 2 * source.nbytes / float(np.median(seconds))


def device_seconds(function, repeat: int = 5) -> float:
    """Median wall time of ``function()`` with the device synchronised after each run."""
    import cupy

    function()
    cupy.cuda.Device().synchronize()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        cupy.cuda.Device().synchronize()
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds))


def bench_kernels(recorder: Recorder, rows: int, classes: int) -> None:
    """Time the confident-joint and key passes on a device-resident partition against the HBM floor."""
    import cupy

    from labelscan import passes, plan, selection
    from labelscan.kernels import grouped
    from labelscan.options import ScanOptions

    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, rows)
    logits = rng.standard_normal((rows, classes), dtype=np.float32)
    logits[np.arange(rows), labels] += 3
    pred_probs = np.exp(logits)
    pred_probs /= pred_probs.sum(axis=1, keepdims=True)
    part = grouped.group_by_label(0, cupy.asarray(labels), cupy.asarray(pred_probs))
    del logits, pred_probs
    thresholds = np.full(classes, 0.5, dtype=np.float32)
    size = f"{rows // 1_000_000}Mx{classes}"
    bandwidth = copy_bandwidth(part.columns.nbytes)
    recorder.add("kernels", size, "copy_bandwidth", bandwidth / 1e9, "GB/s")
    facts = passes.row_facts(part, thresholds)
    counts = part.class_counts()
    joint_counts = facts.joint_counts.dense()
    stats = plan.NoiseStatistics(label_counts=counts, confident_thresholds=thresholds,
                                 confident_joint=joint_counts, calibrated_confident_joint=joint_counts,
                                 joint=None, noise_matrix=None, inverse_noise_matrix=None, py=None,
                                 num_label_issues=0, prune_counts=joint_counts.T.copy())
    tasks = plan.noise_rate_tasks(stats, ScanOptions(), part.dtype)
    # bytes each pass must at least touch: every probability once, labels once, per-row outputs
    row_bytes = part.columns.nbytes + part.labels.nbytes
    fact_bytes = row_bytes + rows * (2 + 1 + 1)
    key_bytes = row_bytes + rows * (len(tasks) / max(classes, 1)) * part.dtype.itemsize
    for name, function, nbytes in (
            ("row_facts", lambda: passes.row_facts(part, thresholds), fact_bytes),
            ("partition_keys", lambda: selection.partition_keys(part, tasks=tasks), key_bytes)):
        seconds = device_seconds(function)
        floor = nbytes / bandwidth
        recorder.add("kernels", size, f"{name}_seconds", seconds, "s", 5)
        recorder.add("kernels", size, f"{name}_floor_seconds", floor, "s")
        recorder.add("kernels", size, f"{name}_vs_floor", seconds / floor, "ratio")


def warm_up(client, args) -> float:
    """One small scan per worker thread's first use: CuPy compiles its kernels once per process
    (cached on disk after), which must not be charged to the first measured size."""
    folder = ensure_dataset(args.data_dir, *parse_size(WARMUP_SIZE), jobs=os.cpu_count() or 1)["folder"]
    started = time.perf_counter()
    for filter_by in ("prune_by_noise_rate", "low_self_confidence"):
        labelscan_once(folder, Path(args.data_dir) / "out" / "warmup", client, backend="cupy",
                       filter_by=filter_by)
    return time.perf_counter() - started


def bench_size(recorder: Recorder, size: str, clients: dict, args) -> None:
    """Read floor, GPU scan, optional CPU scan and cleanlab for one size, in interleaved rounds
    (:func:`benchmarks.cpu.interleaved_rounds`: the host's speed drifts between runs, 0.21 to
    0.26 s for the same 10M x 10 scans within minutes on an H200 host), with the ratios of the
    medians and the medians of the per-round ratios (``*_paired``)."""
    rows, classes = parse_size(size)
    folder = Path(ensure_dataset(args.data_dir, rows, classes, jobs=os.cpu_count() or 1)["folder"])
    paths = list_files(folder)
    out = Path(args.data_dir) / "out" / size
    summaries = []
    scan = lambda: summaries.append(labelscan_once(folder, out / "gpu", clients["gpu"], backend="cupy",
                                                   tie_break="numpy"))
    # the size's first scan grows the worker's pinned staging and device memory pools to its
    # partitions (a one-time cost of a worker process): timed, reported apart, not in the rounds
    recorder.add("labelscan_gpu", size, "first_scan_seconds", timed_runs(scan, 1)[0][0], "s")
    runs = {"read_floor": lambda: read_floor_once(paths), "labelscan_gpu": scan}
    if size in args.cpu_sizes:
        runs["labelscan_cpu"] = lambda: labelscan_once(folder, out / "cpu", clients["cpu"], backend="numpy",
                                                       tie_break="numpy")
    if size in args.cleanlab_sizes:
        labels, pred_probs = load_arrays(folder)
        runs["cleanlab"] = lambda: cleanlab_once(labels, pred_probs, os.cpu_count())
    timed = interleaved_rounds(runs, args.repeat, {"labelscan_cpu": args.cpu_budget,
                                                   "cleanlab": args.cleanlab_budget})
    seconds = {name: timed[name]["seconds"] for name in runs}
    floor = add_timing(recorder, "read_floor", size, seconds["read_floor"])
    gpu = add_timing(recorder, "labelscan_gpu", size, seconds["labelscan_gpu"])
    for stage, value in median_stage_timings(summaries[1:]).items():
        recorder.add("labelscan_gpu", size, f"stage_{stage}", value, "s", len(summaries) - 1)
    recorder.add("labelscan_gpu", size, "num_issues", summaries[-1]["num_issues"], "rows")
    recorder.add("labelscan_gpu", size, "vs_read_floor", gpu / floor, "ratio")
    recorder.add("labelscan_gpu", size, "vs_read_floor_paired",
                 paired_ratio(seconds["labelscan_gpu"], seconds["read_floor"]), "ratio")
    recorder.add("labelscan_gpu", size, "rows_per_second", rows / gpu, "rows/s")
    for name, figure in (("labelscan_cpu", "speedup_vs_labelscan_cpu"), ("cleanlab", "speedup_vs_cleanlab")):
        if name not in runs:
            continue
        reference = add_timing(recorder, name, size, seconds[name])
        recorder.add("labelscan_gpu", size, figure, reference / gpu, "ratio")
        recorder.add("labelscan_gpu", size, f"{figure}_paired", paired_ratio(seconds[name], seconds["labelscan_gpu"]),
                     "ratio", len(seconds[name]))
    if "cleanlab" in runs:
        recorder.add("labelscan_gpu", size, "mask_rows_differing",
                     int((labelscan_mask(out / "gpu") != timed["cleanlab"]["result"]).sum()), "rows")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--cpu-sizes", default="10Mx10,1Mx1000", help="sizes also scanned on CPU workers")
    parser.add_argument("--cleanlab-sizes", default="10Mx10,1Mx1000", help="sizes also run through cleanlab")
    parser.add_argument("--kernel-rows", default="100Mx10", help="partition of the kernel timing (NxK)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of each size")
    parser.add_argument("--cleanlab-budget", type=float, default=60.0,
                        help="seconds of cleanlab a size, after which later rounds skip it (it runs at least once)")
    parser.add_argument("--cpu-budget", type=float, default=20.0,
                        help="seconds of CPU scans a size, after which later rounds skip them")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "labelscan-bench"))
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    args = parser.parse_args(argv)
    args.cpu_sizes = set(filter(None, args.cpu_sizes.split(",")))
    args.cleanlab_sizes = set(filter(None, args.cleanlab_sizes.split(",")))
    recorder = Recorder(machine_info(), gpu_versions())
    if args.kernel_rows:
        bench_kernels(recorder, *parse_size(args.kernel_rows))
    gpu_cluster, gpu_client, started = start_gpu_cluster()
    recorder.add("labelscan_gpu", None, "cluster_start_seconds", started, "s")
    recorder.add("labelscan_gpu", None, "warmup_scan_seconds", warm_up(gpu_client, args), "s")
    clients = {"gpu": gpu_client}
    if args.cpu_sizes:
        cpu_cluster, clients["cpu"], started = start_cluster(os.cpu_count())
        recorder.add("labelscan_cpu", None, "cluster_start_seconds", started, "s")
    for size in filter(None, args.sizes.split(",")):
        bench_size(recorder, size, clients, args)
        recorder.save(args.out)
    recorder.save(args.out)
    print_records(recorder)


def print_records(recorder: Recorder) -> None:
    """One aligned line per record (benchmark, size, metric, value, unit) on stdout."""
    for record in recorder.records:
        print(f"{record['benchmark']:>16} {str(record['size']):>9} {record['metric']:>28} "
              f"{record['value']} {record['unit']}", file=sys.stdout)


if __name__ == "__main__":
    main()
