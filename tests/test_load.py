"""Load: many small files, very wide K, one partition 100x the others (issue 6).

Each scan runs on a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``
whose worker processes are restarted first. Reported per scan (terminal summary and
``<pytest basetemp>/reliability.json``): tasks run (a scheduler plugin counts every task sent
to a worker, recomputations included) by stage, seconds, the peak RSS of each worker process
and the driver's RSS growth, sampled with psutil every 20 ms. (``ru_maxrss`` is no use here: a
worker process spawned by this process starts with this process's peak.)

Small files are packed into shared partitions, so the task count does not grow with the
number of files. CI sizes: 1,000 files of 200 rows; K=1,000 with 2,000 rows; 20 partitions of 500 rows next to
one of 50,000. ``slow``: 5,000 files of 2,000 rows. K=10,000: ``tests/test_wide_classes.py``.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import labelscan

distributed = pytest.importorskip("distributed")

MiB = 2**20
WORKER_MEMORY = "3GiB"


class TaskCounter(distributed.diagnostics.plugin.SchedulerPlugin):
    """Counts tasks sent to workers, by labelscan stage (``labelscan-<stage>-<token>-<i>``)."""

    name = "labelscan-task-counter"

    def __init__(self):
        self.counts = collections.Counter()

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing" and isinstance(key, str) and key.startswith("labelscan-"):
            self.counts[key[len("labelscan-"):].rsplit("-", 2)[0]] += 1


class PeakRSS:
    """Samples the RSS of processes in a thread: ``peaks[pid]`` and ``starts[pid]``, bytes."""

    def __init__(self, pids, interval=0.02):
        self.processes = {pid: psutil.Process(pid) for pid in pids}
        self.interval = interval
        self.starts = {pid: self._rss(pid) for pid in self.processes}
        self.peaks = dict(self.starts)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self, pid):
        try:
            return self.processes[pid].memory_info().rss
        except psutil.Error:   # a process that ended
            return 0

    def _sample_once(self):
        for pid in self.processes:
            self.peaks[pid] = max(self.peaks[pid], self._rss(pid))

    def _sample(self):
        while not self.stopped.is_set():
            self._sample_once()
            time.sleep(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        self._sample_once()


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=WORKER_MEMORY) as local, distributed.Client(local) as client:
        yield local, client


def measured_scan(cluster, data, out, label, figures, **scan_options) -> dict:
    """Scan on freshly restarted workers; record tasks, seconds, peak RSS under ``label``."""
    local, client = cluster
    client.restart()
    worker_pids = sorted(client.run(os.getpid).values())
    counter = TaskCounter()
    local.scheduler.add_plugin(counter, name=TaskCounter.name)
    try:
        started = time.perf_counter()
        with PeakRSS([os.getpid(), *worker_pids]) as rss:
            result = labelscan.scan(str(data), str(out), client=client, **scan_options)
        seconds = time.perf_counter() - started
    finally:
        local.scheduler.remove_plugin(name=TaskCounter.name)
    workers = [rss.peaks[pid] for pid in worker_pids]
    driver_growth = rss.peaks[os.getpid()] - rss.starts[os.getpid()]
    figure = {"rows": result.summary["num_rows"], "K": result.summary["num_classes"],
              "partitions": result.summary["num_partitions"], "tasks": sum(counter.counts.values()),
              "tasks_by_stage": dict(counter.counts.most_common()), "seconds": round(seconds, 1),
              "worker_peak_rss_mib": [round(value / MiB) for value in workers],
              "driver_rss_growth_mib": round(driver_growth / MiB)}
    figures[f"load: {label}"] = figure
    print(f"{label}: {figure}")
    return {**figure, "result": result, "worker_peak": max(workers), "driver_growth": driver_growth}


def write_files(folder, sizes, num_classes, row_group_rows=None, seed=0, dtype=np.float32):
    """One parquet file per entry of ``sizes``; returns (labels, pred_probs) of the whole set."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    total = int(sum(sizes))
    labels = rng.integers(0, num_classes, total)
    pred_probs = rng.dirichlet(np.full(num_classes, 0.5), total).astype(dtype)
    noisy = rng.random(total) < 0.2
    labels[noisy] = rng.integers(0, num_classes, int(noisy.sum()))
    start = 0
    for index, size in enumerate(sizes):
        block = slice(start, start + size)
        table = pa.table({"label": labels[block], "pred_probs": pa.FixedSizeListArray.from_arrays(
            pa.array(pred_probs[block].ravel()), num_classes)})
        pq.write_table(table, folder / f"part-{index:05d}.parquet", row_group_size=row_group_rows or size)
        start += size
    return labels, pred_probs


def check_many_files(cluster, tmp_path, figures, num_files, rows, max_tasks):
    write_files(tmp_path / "in", [rows] * num_files, 4)
    got = measured_scan(cluster, tmp_path / "in", tmp_path / "out", f"{num_files} files x {rows} rows",
                        figures)
    # small files are packed into partitions: one per worker thread (the default plan's floor)
    assert got["partitions"] == 2
    assert got["rows"] == num_files * rows
    assert len(list((tmp_path / "out" / "mask").glob("part-*.parquet"))) == got["partitions"]
    assert got["tasks"] < max_tasks                      # independent of the number of files
    assert got["worker_peak"] < 1536 * MiB
    assert got["driver_growth"] < 1024 * MiB


def test_many_small_files(cluster, tmp_path, reliability_figures):
    check_many_files(cluster, tmp_path, reliability_figures, 1_000, 200, max_tasks=100)


@pytest.mark.slow
def test_many_small_files_slow(cluster, tmp_path, reliability_figures):
    check_many_files(cluster, tmp_path, reliability_figures, 5_000, 2_000, max_tasks=100)   # the issue's example


def test_task_payload_does_not_grow_with_the_number_of_files(tmp_path):
    """Each task carries its own partition, not the plan of every file (that made the graph and the
    workers' memory grow as files²: 350 MiB per worker at 1,000 files)."""
    import pickle

    import cloudpickle

    from labelscan.io.commit import OutputCommit
    from labelscan.io.dataset import plan_dataset
    from labelscan.scan import ParquetSource

    write_files(tmp_path / "in", [5] * 400, 3)
    plan = plan_dataset(str(tmp_path / "in"), rows_per_partition=5)   # one file per partition
    assert len(pickle.dumps(plan)) > 40_000                       # ≈ 120 bytes per file
    assert len(cloudpickle.dumps(ParquetSource(plan.reader(), plan.partitions[7]))) < 2_000
    commit = OutputCommit(str(tmp_path / "out"), config_hash="x", input_fingerprint=plan.fingerprint)
    clone = pickle.loads(pickle.dumps(commit))
    assert len(pickle.dumps(commit)) < 2_000
    assert clone._identity == commit._identity


def test_wide_k(cluster, tmp_path, reliability_figures):
    labels, pred_probs = write_files(tmp_path / "in", [1_000, 1_000], 1_000, row_group_rows=250)
    got = measured_scan(cluster, tmp_path / "in", tmp_path / "out", "K=1000 x 2000 rows", reliability_figures)
    expected = labelscan.find_label_issues(labels, pred_probs)
    np.testing.assert_array_equal(got["result"].mask(columns=["is_label_issue"])["is_label_issue"].to_numpy(),
                                  expected)
    assert got["worker_peak"] < 2 * 1024 * MiB
    assert got["driver_growth"] < 3 * 1024 * MiB        # K x K statistics: ~1 GiB at K=1000 today


def test_skewed_partitions(cluster, tmp_path, reliability_figures):
    sizes = [500] * 10 + [50_000] + [500] * 10       # the big file is one row group: one partition
    labels, pred_probs = write_files(tmp_path / "in", sizes, 10)
    got = measured_scan(cluster, tmp_path / "in", tmp_path / "out", "skewed: 20 x 500 rows + 1 x 50000 rows",
                        reliability_figures, rows_per_partition=500)
    assert got["partitions"] == len(sizes)
    expected = labelscan.find_label_issues(labels, pred_probs)
    np.testing.assert_array_equal(got["result"].mask(columns=["is_label_issue"])["is_label_issue"].to_numpy(),
                                  expected)
    assert got["worker_peak"] < 1536 * MiB
    assert got["driver_growth"] < 1024 * MiB
