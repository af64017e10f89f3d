"""CPU benchmark: labelscan against the parquet read floor and cleanlab 2.9, plus a bounded-memory run.

For each size ``<rows>x<classes>`` (synthetic sets from :mod:`benchmarks.datasets`,
generated once and cached under ``--data-dir``), in this one process:

1. **read floor**: ``pyarrow.parquet.read_table`` of every file (all columns) and
   ``pred_probs`` to numpy (``flatten().to_numpy()``), single process;
2. **labelscan**: ``labelscan.scan(folder, out, client=client, overwrite=True)`` on one
   ``LocalCluster(n_workers=1, threads_per_worker=--threads)`` started as labelscan starts its
   own (:func:`labelscan.cluster.local_cluster`: its worker environment) once
   (start time reported apart) and warmed up with one tiny scan; stage timings from
   ``summary["timings"]`` and ``num_issues`` are recorded;
3. **cleanlab**: ``cleanlab.filter.find_label_issues(labels, pred_probs, n_jobs=--threads)``
   on the same arrays, loaded beforehand (load time excluded); repeats stop early once
   ``--cleanlab-budget`` seconds are spent (the number of runs is recorded). Its flagged
   count is checked against labelscan's ``num_issues`` (``counts_equal``) and its mask
   against the scan's ``mask/`` output, row by row (``mask_rows_differing``).

The three run in ``--repeat`` interleaved rounds (floor, labelscan, cleanlab, floor, ...: the
machine's speed drifts, and each round's runs see the same drift); each timing is the median
of its rounds (OS page cache warm: the files were just written or read). Ratios:
``speedup_vs_cleanlab = cleanlab_s / labelscan_s`` and ``vs_read_floor = labelscan_s /
read_floor_s`` of the medians, and ``speedup_vs_cleanlab_paired`` / ``vs_read_floor_paired``,
the medians of the per-round ratios.

4. **memory** (``--memory-size``, ``none`` to skip): one scan of a large set in a child
   process (``python -m benchmarks.cpu --child-scan ...``) whose own LocalCluster worker has
   a memory limit (``--worker-memory-limit``) and runs with ``cache=False``; the peak RSS of
   the child's whole process tree (psutil, polled every 0.2 s, RSS summed over the process
   and all its descendants) and the wall time are recorded, next to cleanlab's time on the
   largest measured size with the same K scaled linearly by rows.

Results go to ``--out`` as tidy JSON (a list of records ``{benchmark, size, rows, classes,
metric, value, unit, repeats, machine, versions}``) and a markdown table is printed
(``--report FILE`` prints the table of a saved result again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq

from benchmarks.datasets import ensure_dataset, format_size, load_arrays, parse_size

DEFAULT_SIZES = "10Mx10,1Mx100,200Kx1000"
DEFAULT_MEMORY_SIZE = "100Mx10"
WARMUP_SIZE = "10Kx10"
POLL_SECONDS = 0.2
GB = 1e9
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- records

class Recorder:
    """Collects tidy result records that share the machine and version context.

    Parameters
    ----------
    machine : dict
        See :func:`machine_info`.
    versions : dict
        See :func:`package_versions`.
    """

    def __init__(self, machine: dict, versions: dict):
        self.machine = machine
        self.versions = versions
        self.records: list[dict] = []

    def add(self, benchmark: str, size: str | None, metric: str, value, unit: str,
            repeats: int = 1) -> None:
        """Append one record; ``rows`` and ``classes`` are parsed from ``size``."""
        rows, classes = parse_size(size) if size else (None, None)
        if isinstance(value, (np.generic,)):
            value = value.item()
        if isinstance(value, float):
            value = round(value, 6)
        self.records.append({"benchmark": benchmark, "size": size, "rows": rows, "classes": classes,
                             "metric": metric, "value": value, "unit": unit, "repeats": repeats,
                             "machine": self.machine, "versions": self.versions})

    def save(self, path) -> None:
        """Write the records as a JSON list."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.records, indent=1) + "\n")


def machine_info() -> dict:
    """CPU count, memory, platform, CPU model and load average (other jobs) of this machine."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / GB, 1),
            "platform": platform.platform(), "cpu_model": model,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def package_versions() -> dict:
    """Versions of labelscan, cleanlab and the libraries the timings depend on."""
    import cleanlab
    import dask
    import distributed
    import pyarrow

    import labelscan

    return {"labelscan": labelscan.__version__, "cleanlab": cleanlab.__version__,
            "dask": dask.__version__, "distributed": distributed.__version__,
            "numpy": np.__version__, "pyarrow": pyarrow.__version__,
            "python": platform.python_version()}


# --------------------------------------------------------------------------- timing helpers

def timed_runs(function, repeat: int, budget_s: float = float("inf"), before=None) -> tuple[list[float], object]:
    """Run ``function()`` up to ``repeat`` times (at least once; stop once ``budget_s`` is spent).

    ``before()``, when given, runs ahead of each run, untimed (e.g. :func:`os.sync`).

    Returns
    -------
    seconds : list of float
        Wall time of each run.
    result : object
        The last run's return value.
    """
    seconds, result = [], None
    for _ in range(max(1, repeat)):
        if before is not None:
            before()
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
        if sum(seconds) >= budget_s:
            break
    return seconds, result


def add_timing(recorder: Recorder, benchmark: str, size: str, seconds: list[float]) -> float:
    """Record the median (``seconds``) and the extremes of ``seconds``; return the median."""
    median = statistics.median(seconds)
    recorder.add(benchmark, size, "seconds", median, "s", len(seconds))
    recorder.add(benchmark, size, "seconds_min", min(seconds), "s", len(seconds))
    recorder.add(benchmark, size, "seconds_max", max(seconds), "s", len(seconds))
    return median


# --------------------------------------------------------------------------- the three runs

def read_floor_once(paths) -> int:
    """Read every file whole and turn ``pred_probs`` into numpy; return the number of rows."""
    rows = 0
    for path in paths:
        table = pq.read_table(path)
        table.column("label").to_numpy()
        for chunk in table.column("pred_probs").chunks:
            chunk.flatten().to_numpy()
        rows += table.num_rows
    return rows


def start_cluster(threads: int, memory_limit="auto"):
    """Start a one-worker ``LocalCluster`` (processes, no dashboard) and a client.

    Returns
    -------
    cluster : distributed.LocalCluster
    client : distributed.Client
    seconds : float
        Start time until the worker is up.
    """
    from distributed import Client

    from labelscan.cluster import local_cluster

    started = time.perf_counter()
    cluster = local_cluster(n_workers=1, threads_per_worker=threads, memory_limit=memory_limit,
                            dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(1)
    return cluster, client, time.perf_counter() - started


def add_scan_options(parser, scans: int, out: str) -> None:
    """``--size``, ``--backend``, ``--scans`` (default ``scans``), ``--warmup``, the dataset
    options (:func:`benchmarks.datasets.add_dataset_options`) and ``--out`` (default ``out``):
    the options of a benchmark timing repeated scans of one set in one process."""
    from benchmarks.datasets import add_dataset_options

    parser.add_argument("--size", default="10Mx10")
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--scans", type=int, default=scans, help="timed scans of a process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed scans of a process before them")
    add_dataset_options(parser)
    parser.add_argument("--out", default=out)


def labelscan_once(folder, out, client, **scan_options) -> dict:
    """One ``labelscan.scan``; return its summary."""
    import labelscan

    return labelscan.scan(str(folder), str(out), client=client, overwrite=True, **scan_options).summary


def median_stage_timings(summaries: list[dict]) -> dict:
    """Median of each stage of ``summary["timings"]`` over runs (stage order kept)."""
    stages = list(summaries[0]["timings"])
    return {stage: statistics.median(s["timings"][stage] for s in summaries if stage in s["timings"])
            for stage in stages}


def cleanlab_once(labels, pred_probs, n_jobs: int) -> np.ndarray:
    """cleanlab 2.9 ``find_label_issues`` (defaults); return its boolean mask."""
    from cleanlab.filter import find_label_issues

    return find_label_issues(labels, pred_probs, n_jobs=n_jobs)


def labelscan_mask(out) -> np.ndarray:
    """The ``is_label_issue`` column of a finished scan's mask parts, in row order."""
    table = pq.read_table(Path(out) / "mask", columns=["row_id", "is_label_issue"])
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[table.column("row_id").to_numpy()] = table.column("is_label_issue").to_numpy()
    return mask


# --------------------------------------------------------------------------- one size

def interleaved_rounds(runs: dict, repeat: int, budgets: dict) -> dict:
    """Time every run of ``runs`` once per round, round after round (A B C A B C ...).

    The 2-core machine's speed drifts by up to 2x within minutes (cleanlab 200K x 1000 took
    1.9 s and 3.5 s in one session): timed back to back in each round, the runs see the same
    drift, and the per-round ratios (:func:`paired_ratio`) cancel it.

    Parameters
    ----------
    runs : dict
        ``name -> function()``, timed in this order each round.
    repeat : int
        Rounds (at least one).
    budgets : dict
        ``name -> seconds``: once a run's total time reaches its budget, later rounds skip it
        (every run runs in the first round).

    Returns
    -------
    dict
        ``name -> {"seconds": [per round], "result": last return value}``.
    """
    timed = {name: {"seconds": [], "result": None} for name in runs}
    for _ in range(max(1, repeat)):
        for name, function in runs.items():
            spent = timed[name]["seconds"]
            if spent and sum(spent) >= budgets.get(name, float("inf")):
                continue
            seconds, timed[name]["result"] = timed_runs(function, 1)
            timed[name]["seconds"] += seconds
    return timed


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median over the rounds both ran of ``numerator / denominator`` (see :func:`interleaved_rounds`)."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def record_labelscan(recorder: Recorder, size: str, seconds: list[float], summaries: list[dict]) -> None:
    """Record labelscan's timings, its median stage timings and what its last scan found."""
    add_timing(recorder, "labelscan", size, seconds)
    for stage, value in median_stage_timings(summaries).items():
        recorder.add("labelscan", size, f"stage_{stage}", value, "s", len(summaries))
    recorder.add("labelscan", size, "num_issues", int(summaries[-1]["num_issues"]), "rows", len(summaries))
    recorder.add("labelscan", size, "num_partitions", int(summaries[-1]["num_partitions"]), "count")
    recorder.add("labelscan", size, "cached_partitions", bool(summaries[-1]["cached_partitions"]), "bool")


def record_agreement(recorder: Recorder, size: str, scan_issues: int, cleanlab_mask: np.ndarray,
                     out) -> None:
    """Record ``counts_equal`` (flagged counts) and ``mask_rows_differing`` (row by row)."""
    cleanlab_issues = int(np.count_nonzero(cleanlab_mask))
    recorder.add("cleanlab", size, "counts_equal", cleanlab_issues == scan_issues, "bool")
    differing = int(np.count_nonzero(labelscan_mask(out) != cleanlab_mask))
    recorder.add("cleanlab", size, "mask_rows_differing", differing, "rows")
    if cleanlab_issues != scan_issues or differing:
        _log(f"WARNING {size}: cleanlab flags {cleanlab_issues} rows, labelscan {scan_issues}; "
             f"{differing} rows differ")


def bench_size(recorder: Recorder, size: str, client, args) -> None:
    """The read floor, labelscan and cleanlab for one size, in interleaved rounds, and the ratios:
    of the medians, and the medians of the per-round ratios (``*_paired``)."""
    rows, classes = parse_size(size)
    dataset = ensure_dataset(args.data_dir, rows, classes, seed=args.seed, verbose=True,
                             row_group_rows=args.row_group_rows)
    if dataset["generated"]:
        recorder.add("dataset", size, "generate_seconds", dataset["seconds"], "s")
    paths = dataset["paths"]
    recorder.add("dataset", size, "bytes_on_disk", sum(os.path.getsize(p) for p in paths), "bytes")
    started = time.perf_counter()
    arrays = load_arrays(dataset["folder"])   # cleanlab's (labels, pred_probs), loaded once, untimed
    recorder.add("cleanlab", size, "load_arrays_seconds", time.perf_counter() - started, "s")
    out = Path(args.data_dir) / "out" / size
    scan_options = {"rows_per_partition": args.rows_per_partition, "tie_break": args.tie_break}
    summaries = []
    _log(f"{size}: {args.repeat} rounds of read floor, labelscan, cleanlab")
    timed = interleaved_rounds({
        "read_floor": lambda: read_floor_once(paths),
        "labelscan": lambda: summaries.append(labelscan_once(dataset["folder"], out, client, **scan_options)),
        "cleanlab": lambda: cleanlab_once(*arrays, args.threads),
    }, args.repeat, {"cleanlab": args.cleanlab_budget})
    floor, scan, reference = (timed[name]["seconds"] for name in ("read_floor", "labelscan", "cleanlab"))
    floor_s = add_timing(recorder, "read_floor", size, floor)
    record_labelscan(recorder, size, scan, summaries)
    cleanlab_s = add_timing(recorder, "cleanlab", size, reference)
    cleanlab_mask = timed["cleanlab"]["result"]
    recorder.add("cleanlab", size, "num_issues", int(np.count_nonzero(cleanlab_mask)), "rows", len(reference))
    record_agreement(recorder, size, int(summaries[-1]["num_issues"]), cleanlab_mask, out)
    scan_s, paired_speedup = statistics.median(scan), paired_ratio(reference, scan)
    recorder.add("comparison", size, "speedup_vs_cleanlab", cleanlab_s / scan_s, "x")
    recorder.add("comparison", size, "speedup_vs_cleanlab_paired", paired_speedup, "x", len(reference))
    recorder.add("comparison", size, "vs_read_floor", scan_s / floor_s, "x")
    recorder.add("comparison", size, "vs_read_floor_paired", paired_ratio(scan, floor), "x", len(scan))
    _log(f"{size}: floor {floor_s:.2f} s, labelscan {scan_s:.2f} s, cleanlab {cleanlab_s:.2f} s; "
         f"paired speedup {paired_speedup:.2f}x")


def warm_up(recorder: Recorder, client, args) -> None:
    """One tiny scan so that worker-side imports are not charged to the first size."""
    rows, classes = parse_size(WARMUP_SIZE)
    dataset = ensure_dataset(args.data_dir, rows, classes, seed=args.seed)
    started = time.perf_counter()
    labelscan_once(dataset["folder"], Path(args.data_dir) / "out" / WARMUP_SIZE, client)
    recorder.add("cluster", None, "warmup_scan_seconds", time.perf_counter() - started, "s")


# --------------------------------------------------------------------------- memory run

def tree_rss(process: psutil.Process) -> int:
    """RSS in bytes of ``process`` plus all its descendants (vanished ones count 0)."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_watched(command: list[str], interval: float = POLL_SECONDS, **popen_options) -> dict:
    """Run ``command`` and poll the peak RSS of its process tree.

    Returns
    -------
    dict
        ``returncode``, ``seconds`` (wall time) and ``peak_rss`` (bytes).
    """
    started = time.perf_counter()
    child = subprocess.Popen(command, **popen_options)
    process, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(process))
        time.sleep(interval)
    return {"returncode": child.wait(), "seconds": time.perf_counter() - started, "peak_rss": peak}


def child_command(folder, out, args) -> list[str]:
    """Command line of the memory-run child (``--child-scan``)."""
    command = [sys.executable, "-m", "benchmarks.cpu", "--child-scan", str(folder),
               "--child-out", str(out), "--threads", str(args.threads),
               "--worker-memory-limit", args.worker_memory_limit]
    if args.rows_per_partition:
        command += ["--rows-per-partition", str(args.rows_per_partition)]
    return command


def run_child_scan(folder, out, args) -> dict:
    """Run the child scan under the RSS poller; return its measurements and its own report."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        watched = run_watched(child_command(folder, out, args), cwd=REPO_ROOT, env=env,
                              stdout=stdout, stderr=stderr)
        stdout.seek(0)
        stderr.seek(0)
        lines = stdout.read().strip().splitlines()
        if watched["returncode"] != 0 or not lines:
            raise RuntimeError(f"memory-run child failed ({watched['returncode']}):\n"
                               f"{stderr.read()[-4000:]}")
    return {**watched, "report": json.loads(lines[-1])}


def cleanlab_reference(records: list[dict], classes: int) -> tuple[str, float] | None:
    """The largest measured size with ``classes`` classes and its median cleanlab seconds."""
    candidates = [(r["rows"], r["size"], r["value"]) for r in records
                  if r["benchmark"] == "cleanlab" and r["metric"] == "seconds" and r["classes"] == classes]
    if not candidates:
        return None
    _, size, seconds = max(candidates)
    return size, seconds


def bench_memory(recorder: Recorder, size: str, args) -> None:
    """The bounded-memory scan of ``size`` in a child process, and the cleanlab estimate."""
    rows, classes = parse_size(size)
    dataset = ensure_dataset(args.data_dir, rows, classes, seed=args.seed, verbose=True,
                             row_group_rows=args.row_group_rows)
    _log(f"{size}: memory run (worker limit {args.worker_memory_limit}, cache=False)")
    run = run_child_scan(dataset["folder"], Path(args.data_dir) / "out" / f"{size}-memory", args)
    report = run["report"]
    recorder.add("memory", size, "wall_seconds", run["seconds"], "s")
    recorder.add("memory", size, "scan_seconds", report["scan_seconds"], "s")
    recorder.add("memory", size, "cluster_start_seconds", report["cluster_start_seconds"], "s")
    recorder.add("memory", size, "peak_rss_gb", run["peak_rss"] / GB, "GB")
    recorder.add("memory", size, "worker_memory_limit_gb", report["worker_memory_limit"] / GB, "GB")
    recorder.add("memory", size, "num_issues", report["num_issues"], "rows")
    recorder.add("memory", size, "in_memory_arrays_gb", rows * (classes * 4 + 8) / GB, "GB")
    for stage, value in report["timings"].items():
        recorder.add("memory", size, f"stage_{stage}", value, "s")
    reference = cleanlab_reference(recorder.records, classes)
    if reference is not None:
        ref_size, ref_seconds = reference
        scale = rows / parse_size(ref_size)[0]
        recorder.add("memory", size, "cleanlab_estimate_seconds", ref_seconds * scale, "s")
        recorder.add("memory", size, "cleanlab_estimate_basis", ref_size, "size")
        recorder.add("memory", size, "cleanlab_estimate_scale", scale, "x")
        recorder.add("memory", size, "speedup_vs_cleanlab_estimate", ref_seconds * scale / run["seconds"], "x")
    _log(f"{size}: wall {run['seconds']:.1f} s, peak RSS {run['peak_rss'] / GB:.2f} GB")


def child_scan(args) -> None:
    """Body of ``--child-scan``: own cluster with a worker memory limit, one uncached scan.

    Prints one JSON line: ``cluster_start_seconds``, ``scan_seconds``, ``num_issues``,
    ``worker_memory_limit`` (bytes) and the scan's ``timings``.
    """
    from dask.utils import parse_bytes

    limit = parse_bytes(args.worker_memory_limit)
    cluster, client, start_s = start_cluster(args.threads, memory_limit=limit)
    try:
        started = time.perf_counter()
        summary = labelscan_once(args.child_scan, args.child_out, client, cache=False,
                                 rows_per_partition=args.rows_per_partition)
        scan_s = time.perf_counter() - started
    finally:
        client.close()
        cluster.close()
    print(json.dumps({"cluster_start_seconds": start_s, "scan_seconds": scan_s,
                      "num_issues": int(summary["num_issues"]), "worker_memory_limit": limit,
                      "timings": summary["timings"]}), flush=True)


# --------------------------------------------------------------------------- report

def _index(records: list[dict], benchmark: str) -> dict:
    """``{(size, metric): record}`` for one benchmark."""
    return {(r["size"], r["metric"]): r for r in records if r["benchmark"] == benchmark}


def _value(index: dict, size, metric: str):
    """A record's value, or None when it is missing."""
    record = index.get((size, metric))
    return None if record is None else record["value"]


def _fmt(value, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _sizes(records: list[dict], benchmark: str) -> list[str]:
    """Sizes measured by ``benchmark``, in run order."""
    return list(dict.fromkeys(r["size"] for r in records if r["benchmark"] == benchmark and r["size"]))


def main_table(records: list[dict]) -> str:
    """Per size: read floor, labelscan, cleanlab, ratios, issue counts."""
    floor, scan, clean, ratio = (_index(records, b) for b in
                                 ("read_floor", "labelscan", "cleanlab", "comparison"))
    rows = []
    for size in _sizes(records, "labelscan"):
        runs = "/".join(str(index[(size, "seconds")]["repeats"]) if (size, "seconds") in index else "–"
                        for index in (floor, scan, clean))
        rows.append([size, _fmt(_value(floor, size, "seconds"), 3), _fmt(_value(scan, size, "seconds"), 3),
                     _fmt(_value(clean, size, "seconds"), 3), runs,
                     _fmt(_value(ratio, size, "speedup_vs_cleanlab"), suffix="×"),
                     _fmt(_value(ratio, size, "speedup_vs_cleanlab_paired"), suffix="×"),
                     _fmt(_value(ratio, size, "vs_read_floor"), suffix="×"),
                     _fmt(_value(scan, size, "num_issues")), _fmt(_value(clean, size, "num_issues")),
                     _fmt(_value(clean, size, "counts_equal")),
                     _fmt(_value(clean, size, "mask_rows_differing"))])
    return _table(["size (N×K)", "read floor (s)", "labelscan (s)", "cleanlab 2.9 (s)",
                   "runs (floor/ls/cl)", "speedup vs cleanlab", "paired speedup (median of rounds)",
                   "labelscan ÷ read floor",
                   "issues (labelscan)", "issues (cleanlab)", "counts equal", "rows differing"], rows)


def stage_table(records: list[dict], benchmark: str = "labelscan") -> str:
    """Per size: median seconds of each labelscan stage."""
    index = _index(records, benchmark)
    stages = list(dict.fromkeys(metric[len("stage_"):] for _, metric in index if metric.startswith("stage_")))
    rows = [[size] + [_fmt(_value(index, size, f"stage_{stage}")) for stage in stages]
            for size in _sizes(records, benchmark)]
    return _table(["size"] + stages, rows)


def memory_table(records: list[dict]) -> str:
    """The memory run(s): wall time, peak RSS, cleanlab's linear estimate."""
    index = _index(records, "memory")
    rows = []
    for size in _sizes(records, "memory"):
        estimate = _fmt(_value(index, size, "cleanlab_estimate_seconds"), 1)
        basis = _value(index, size, "cleanlab_estimate_basis")
        if basis:
            estimate += f" ({basis} × {_value(index, size, 'cleanlab_estimate_scale'):g})"
        rows.append([size, _fmt(_value(index, size, "wall_seconds"), 1),
                     _fmt(_value(index, size, "scan_seconds"), 1),
                     _fmt(_value(index, size, "peak_rss_gb")),
                     _fmt(_value(index, size, "worker_memory_limit_gb")),
                     _fmt(_value(index, size, "in_memory_arrays_gb")), estimate,
                     _fmt(_value(index, size, "speedup_vs_cleanlab_estimate"), suffix="×"),
                     _fmt(_value(index, size, "num_issues"))])
    return _table(["size (N×K)", "wall (s)", "scan (s)", "peak RSS, process tree (GB)",
                   "worker memory limit (GB)", "N×K float32 + labels in RAM (GB)",
                   "cleanlab, linear estimate (s)", "estimate ÷ wall", "issues"], rows)


def context_lines(records: list[dict]) -> list[str]:
    """Markdown bullets: machine, versions, cluster start and warm-up."""
    machine, versions = records[0]["machine"], records[0]["versions"]
    cluster = _index(records, "cluster")
    lines = [f"- Machine: {machine['cpus']} CPUs ({machine.get('cpu_model', '?')}), "
             f"{machine['memory_gb']} GB RAM, {machine['platform']}; load average at start "
             f"{machine.get('load_average_at_start', '?')}",
             "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items())]
    start = _value(cluster, None, "start_seconds")
    if start is not None:
        warm = _value(cluster, None, "warmup_scan_seconds")
        lines.append(f"- LocalCluster start: {start:.2f} s"
                     + (f"; warm-up scan ({WARMUP_SIZE}): {warm:.2f} s" if warm is not None else "")
                     + " (neither is included in the timings)")
    return lines


def markdown_report(records: list[dict]) -> str:
    """The whole markdown report of a result list."""
    if not records:
        return "(no results)"
    parts = context_lines(records)
    if _sizes(records, "labelscan"):
        parts += ["", main_table(records), "", "labelscan stage timings (median s):", "",
                  stage_table(records)]
    if _sizes(records, "memory"):
        parts += ["", "Bounded-memory run (child process, `cache=False`):", "", memory_table(records)]
    return "\n".join(parts)


# --------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu",
                                     description="CPU benchmark of labelscan vs the read floor and cleanlab 2.9")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated NxK (default {DEFAULT_SIZES})")
    parser.add_argument("--memory-size", default=DEFAULT_MEMORY_SIZE,
                        help=f"size of the bounded-memory run, or 'none' (default {DEFAULT_MEMORY_SIZE})")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--out", default="benchmarks/results/cpu.json", help="JSON results file")
    parser.add_argument("--data-dir", default="/tmp/labelscan-bench", help="datasets and scan outputs")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="worker threads and cleanlab n_jobs (default: all CPUs)")
    parser.add_argument("--cleanlab-budget", type=float, default=600.0,
                        help="stop repeating cleanlab once this many seconds are spent on a size")
    parser.add_argument("--row-group-rows", type=int, default=None,
                        help="row group size of the generated sets (default: benchmarks.datasets."
                             "default_row_group_rows, about 32 MiB of predictions, at most 250k rows)")
    parser.add_argument("--rows-per-partition", type=int, default=None, help="labelscan partition size")
    parser.add_argument("--tie-break", choices=("numpy", "stable"), default="numpy",
                        help="labelscan's rounding tie rule: 'numpy' reproduces stock cleanlab on this "
                             "machine, so the row-by-row check is exact (default numpy)")
    parser.add_argument("--worker-memory-limit", default="2.5GB", help="worker memory limit of the memory run")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="skip the tiny warm-up scan after the cluster starts")
    parser.add_argument("--report", metavar="JSON", help="print the table of a saved result and exit")
    parser.add_argument("--child-scan", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", metavar="FOLDER", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _split_sizes(text: str) -> list[str]:
    """Normalised size names (``10mx10`` -> ``10Mx10``); empty for ``none``."""
    if not text or text.strip().lower() == "none":
        return []
    return [format_size(*parse_size(size)) for size in text.split(",") if size.strip()]


def run_benchmark(args) -> list[dict]:
    """Every size on one cluster, then the memory run; return the records."""
    recorder = Recorder(machine_info(), package_versions())
    sizes, memory_sizes = _split_sizes(args.sizes), _split_sizes(args.memory_size)
    if sizes:
        cluster, client, start_s = start_cluster(args.threads)
        recorder.add("cluster", None, "start_seconds", start_s, "s")
        try:
            if args.warmup:
                warm_up(recorder, client, args)
            for size in sizes:
                bench_size(recorder, size, client, args)
        finally:
            client.close()
            cluster.close()
    for size in memory_sizes:
        bench_memory(recorder, size, args)
    recorder.save(args.out)
    return recorder.records


def main(argv=None) -> None:
    """Entry point of ``python -m benchmarks.cpu``."""
    args = parse_args(argv)
    if args.child_scan:
        child_scan(args)
        return
    if args.report:
        print(markdown_report(json.loads(Path(args.report).read_text())))
        return
    records = run_benchmark(args)
    print(markdown_report(records))
    _log(f"results written to {args.out}")


if __name__ == "__main__":
    main()
