"""Timeline benchmark: where one scan's time goes, task by task, from Dask's task stream.

Stage timings (``summary["timings"]``) say how long each stage took on the driver's clock; they
do not say which tasks ran when, on which worker thread, nor where the gaps between task levels
lie (scheduler round trips, the driver's plan). This module starts a cluster (a ``LocalCluster``
as :func:`benchmarks.cpu.start_cluster` starts it, or a ``LocalCUDACluster`` with ``--backend
cupy``), scans a synthetic set ``--warmup`` times, then ``--scans`` times under
``distributed.get_task_stream``, and records every task's compute interval relative to its
scan's start: one tidy record per task (benchmark ``task``, its stage as the metric, its
duration in ms as the value; with ``scan``, ``key``, ``worker``, ``thread``, ``start_ms``,
``stop_ms``), and per stage the median over the scans of its first task's start and of its span
(first start to last stop). It prints each stage's figures and the last scan's tasks in start
order.

Run: ``python -m benchmarks.timeline --size 10Mx10 --backend cupy --scans 3
--out benchmarks/results/timeline.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

TASK_PREFIX = "labelscan-"


def task_prefix(key) -> str:
    """A task key's stage name: ``labelscan-cutoffs-resolve-0fecefcf0ff2747d-3`` (or the tuple
    ``("labelscan-cutoffs-resolve-0fecefcf0ff2747d", 3)``) → ``cutoffs-resolve``."""
    name = key[0] if isinstance(key, tuple) else str(key)
    name = name[len(TASK_PREFIX):] if name.startswith(TASK_PREFIX) else name
    parts = name.split("-")
    while len(parts) > 1 and (parts[-1].isdigit() or _is_token(parts[-1])):
        parts.pop()
    return "-".join(parts)


def _is_token(part: str) -> bool:
    return len(part) >= 8 and all(character in "0123456789abcdef" for character in part)


def task_records(stream: list, scan: int, started: float) -> list[dict]:
    """One record per computed task of a task stream (``distributed``'s ``TaskStreamPlugin``
    records), times in ms from ``started`` (seconds since the epoch), in start order."""
    records = [{"scan": scan, "prefix": task_prefix(task["key"]), "key": str(task["key"]),
                "worker": task.get("worker"), "thread": task.get("thread"),
                "start_ms": (interval["start"] - started) * 1e3, "stop_ms": (interval["stop"] - started) * 1e3}
               for task in stream for interval in task["startstops"] if interval["action"] == "compute"]
    return sorted(records, key=lambda record: record["start_ms"])


def prefix_spans(records: list[dict]) -> dict:
    """``{(scan, prefix): (first start, last stop)}`` in ms."""
    spans: dict = {}
    for record in records:
        span_key = (record["scan"], record["prefix"])
        first, last = spans.get(span_key, (record["start_ms"], record["stop_ms"]))
        spans[span_key] = (min(first, record["start_ms"]), max(last, record["stop_ms"]))
    return spans


def run(args) -> list[dict]:
    """The scans and their records (see the module's note); writes ``args.out``."""
    from distributed import get_task_stream

    import labelscan
    from benchmarks.cpu import Recorder, machine_info, package_versions, start_cluster
    from benchmarks.datasets import ensure_dataset, parse_size

    rows, classes = parse_size(args.size)
    folder = ensure_dataset(args.data_dir, rows, classes, jobs=args.jobs)["folder"]
    if args.backend == "cupy":
        from benchmarks.gpu import start_gpu_cluster

        cluster, client, _ = start_gpu_cluster()
    else:
        cluster, client, _ = start_cluster(os.cpu_count())
    out = str(Path(args.data_dir) / "out" / f"timeline-{args.size}")
    records, totals = [], []
    with cluster, client:
        for scan in range(args.warmup + args.scans):
            with get_task_stream(client) as stream:
                started = time.time()
                labelscan.scan(folder, out, client=client, overwrite=True, backend=args.backend, tie_break="numpy")
                totals.append((time.time() - started) * 1e3)
            if scan >= args.warmup:
                records += task_records(stream.data, scan - args.warmup, started)
    recorder = Recorder(machine_info(), {**package_versions(), "backend": args.backend})
    for record in records:
        recorder.records.append({"benchmark": "task", "size": args.size, "metric": record["prefix"],
                                 "value": record["stop_ms"] - record["start_ms"], "unit": "ms", **record})
    spans = prefix_spans(records)
    by_prefix: dict = {}
    for (_, prefix), (start, stop) in spans.items():
        by_prefix.setdefault(prefix, []).append((start, stop - start))
    for prefix, intervals in sorted(by_prefix.items(), key=lambda item: statistics.median(s for s, _ in item[1])):
        start, width = (statistics.median(values) for values in zip(*intervals))
        recorder.add("span", args.size, f"{prefix}_start_ms", start, "ms", len(intervals))
        recorder.add("span", args.size, f"{prefix}_ms", width, "ms", len(intervals))
        print(f"{prefix:>22}: starts {start:7.1f} ms, spans {width:7.1f} ms")
    recorder.add("scan", args.size, "seconds", statistics.median(totals[args.warmup:]) / 1e3, "s", args.scans)
    recorder.save(args.out)
    last = [record for record in records if record["scan"] == args.scans - 1]
    print(f"last scan ({totals[-1]:.1f} ms), tasks in start order:")
    for record in last:
        print(f"  {record['start_ms']:8.1f} {record['stop_ms']:8.1f} {record['stop_ms'] - record['start_ms']:7.1f} "
              f"{str(record['thread'])[-6:]:>6} {record['key'][:72]}")
    return recorder.records


def parse_arguments(argv=None) -> argparse.Namespace:
    """The command line's options (see the module's note)."""
    from benchmarks.cpu import add_scan_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scan_options(parser, scans=3, out="benchmarks/results/timeline.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    run(parse_arguments())
