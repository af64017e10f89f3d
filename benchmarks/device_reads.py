"""Device-read benchmark: a GPU worker's partition read, pages decoded on the device vs by Arrow.

For one synthetic set (:mod:`benchmarks.datasets`), in one command, the first partition (of
``--rows-per-partition`` rows, by default a GPU scan's 512 MiB of predictions) read
``--repeat`` times each way, page cache warm, medians recorded:

- ``host``: what GPU page decoding costs the host — the column chunks' stored bytes read
  into memory and their page headers walked (:func:`labelscan.io.device_pages.stored_columns`,
  predictions and labels in one batch). Runs on any machine.
- ``device`` (a GPU present): the whole read as a scan's GPU worker does it
  (:func:`labelscan.io.device_pages.read_partition_on_device`, its device work synchronized);
- ``arrow`` (a GPU present): Arrow's decoding and validation
  (:func:`labelscan.io.dataset.read_partition`) and the copy to the device, as with
  ``labelscan.gpu-page-decoding`` off.

Run: ``python -m benchmarks.device_reads --size 100Mx10 --repeat 4 --out benchmarks/results/device-reads.json``.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from benchmarks.cpu import Recorder, machine_info, package_versions, timed_runs
from benchmarks.datasets import add_dataset_options, ensure_dataset, parse_size
from labelscan.io import device_pages
from labelscan.io.dataset import plan_dataset, read_partition
from labelscan.io.threads import ensure_decode_threads
from labelscan.scan import GPU_PARTITION_BYTES
from labelscan.xp import cupy_or_none


def host_part(plan, spec) -> int:
    """Read and tabulate the partition's prediction and label pages into host memory; bytes read."""
    allocate = lambda size: np.empty(size, dtype=np.uint8)   # noqa: E731 - plain (not pinned) memory
    stored = device_pages.stored_columns(plan, spec, allocate,
                                         [device_pages.prediction_leaves(plan), device_pages.label_leaves(plan)])
    return sum(len(piece.uploads[0]) for piece in stored)


def device_read(plan, spec) -> None:
    """The partition read onto the current GPU by page decoding (raising if it fell back)."""
    import cupy

    data = device_pages.read_partition_on_device(plan, spec)
    if data is None or not isinstance(data.labels, cupy.ndarray):
        raise RuntimeError("the partition was not decoded on the device")
    cupy.cuda.get_current_stream().synchronize()


def arrow_read(plan, spec) -> None:
    """The partition decoded by Arrow and copied to the current GPU."""
    import cupy

    from labelscan.kernels.device import to_device

    data = read_partition(plan, spec, row_blocks=True)
    to_device(data.labels), to_device(data.pred_probs)
    cupy.cuda.get_current_stream().synchronize()


def median_seconds(function, repeat: int) -> tuple[float, int]:
    """Median wall time of ``repeat`` calls after an untimed one; and the timed calls' count."""
    function()
    seconds, _ = timed_runs(function, repeat)
    return statistics.median(seconds), len(seconds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="100Mx10")
    parser.add_argument("--rows-per-partition", type=int, default=None,
                        help="rows of the partition read (default: 512 MiB of predictions)")
    parser.add_argument("--repeat", type=int, default=4)
    add_dataset_options(parser)
    parser.add_argument("--out", default="benchmarks/results/device-reads.json")
    args = parser.parse_args(argv)
    rows, classes = parse_size(args.size)
    folder = ensure_dataset(args.data_dir, rows, classes, jobs=args.jobs)["folder"]
    ensure_decode_threads()
    partition_rows = args.rows_per_partition or max(1, GPU_PARTITION_BYTES // (classes * 4))
    plan = plan_dataset(folder, rows_per_partition=partition_rows)
    spec = plan.partitions[0]
    recorder = Recorder(machine_info(), package_versions())
    recorder.add("device_reads", args.size, "partition_rows", spec.num_rows, "rows")
    recorder.add("device_reads", args.size, "stored_bytes", host_part(plan, spec), "B")
    ways = {"host": host_part}
    if cupy_or_none() is not None:
        ways.update(device=device_read, arrow=arrow_read)
    for name, function in ways.items():
        seconds, runs = median_seconds(lambda: function(plan, spec), args.repeat)
        recorder.add("device_reads", args.size, f"{name}_seconds", seconds, "s", runs)
        print(f"{args.size}, {spec.num_rows} rows: {name} {seconds * 1e3:.1f} ms", flush=True)
    if "device" in ways:
        found = {record["metric"]: record["value"] for record in recorder.records}
        recorder.add("device_reads", args.size, "arrow_vs_device", found["arrow_seconds"] / found["device_seconds"],
                     "ratio")
    recorder.save(args.out)


if __name__ == "__main__":
    main()
