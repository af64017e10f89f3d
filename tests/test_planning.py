"""Task planning that changes how much work a scan does, not its answer.

- GPU scans plan at least one partition per two worker threads (CPU scans: one per thread);
- ranking at most ``issues_per_part`` issues skips the score-histogram waves, and writes the
  same ranked issues as the histogram path;
- the ranking submitted before the flag pass has counted its issues (ranged by their bound)
  writes the same parts as the one submitted after, however loose the bound;
- a partition's score histogram is read off its sorted images (binary searches), equal to
  counting their top bits.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import labelscan
from labelscan import outcome
from labelscan.scan import GPU_THREADS_PER_PARTITION, WrittenPartition, _image_shift, _plan, rank_histogram

distributed = pytest.importorskip("distributed")

COLUMNS = {"label_column": "label", "pred_probs_column": "pred_probs", "id_column": None}


def _write_set(folder, files=20, rows=500, classes=4, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(files):
        pred_probs = rng.dirichlet(np.full(classes, 0.5), rows).astype(np.float32)
        labels = np.where(rng.random(rows) < 0.3, rng.integers(0, classes, rows), pred_probs.argmax(axis=1))
        table = pa.table({"label": labels, "pred_probs": pa.FixedSizeListArray.from_arrays(
            pa.array(pred_probs.ravel()), classes)})
        pq.write_table(table, folder / f"part-{index:05d}.parquet")
    return folder


def test_gpu_scans_plan_one_partition_per_four_threads_cpu_scans_one_per_thread(tmp_path, monkeypatch):
    """Too few partitions by bytes are cut again from the footers already read."""
    from labelscan.io import dataset

    folder = _write_set(tmp_path / "in")
    threads = 8
    footers_read = []
    original = dataset._read_footer
    monkeypatch.setattr(dataset, "_read_footer", lambda fs, path, *args: footers_read.append(path) or original(
        fs, path, *args))
    gpu = _plan(str(folder), COLUMNS, None, None, threads, backend="cupy")
    assert sorted(footers_read) == sorted(str(path) for path in folder.glob("*.parquet"))
    cpu = _plan(str(folder), COLUMNS, None, None, threads, backend="numpy")
    assert len(gpu.partitions) == threads // GPU_THREADS_PER_PARTITION
    assert len(cpu.partitions) == threads     # one per thread wanted, of about equal rows
    assert {spec.num_rows for spec in cpu.partitions} == {1000, 1500}   # a row group (a file) apart at most


def _ranked_issues(out):
    return pa.concat_tables([pq.read_table(path) for path in sorted((out / "issues").glob("part-*.parquet"))])


def test_issues_fitting_one_part_skip_the_histogram_waves(tmp_path, monkeypatch):
    """One part holds every issue: by their bound (every row here) before the flag pass, or by
    their count after it (the bound too large to rank early: ``EARLY_RANK_SPLITS``); its task
    reads every partition's issues without split tasks."""
    import importlib

    scan_module = importlib.import_module("labelscan.scan")   # labelscan.scan is also the function
    folder = _write_set(tmp_path / "in")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        num_issues = labelscan.scan(str(folder), str(tmp_path / "probe"), client=client).summary["num_issues"]
        stages = {}
        for name, per_part, early_splits in (("one", 10_000, 2048), ("counted", num_issues, 0),
                                              ("ranges", max(1, num_issues // 3), 2048)):
            monkeypatch.setattr(scan_module, "EARLY_RANK_SPLITS", early_splits)
            with distributed.get_task_stream(client) as stream:
                labelscan.scan(str(folder), str(tmp_path / name), client=client, issues_per_part=per_part)
            stages[name] = {task["key"].split("-")[1] + "-" + task["key"].split("-")[2]
                            for task in stream.data if str(task["key"]).startswith("labelscan-rank")}
    assert "rank-histogram" not in stages["one"] | stages["counted"] and "rank-histogram" in stages["ranges"]
    # the single range reads the partitions' issues whole: no split task before it
    assert "rank-split" not in stages["one"] | stages["counted"] and "rank-split" in stages["ranges"]
    for name in ("one", "counted"):
        assert len(list((tmp_path / name / "issues").glob("part-*.parquet"))) == 1
        assert _ranked_issues(tmp_path / name).equals(_ranked_issues(tmp_path / "ranges"))


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "confident_learning"])
def test_ranking_submitted_before_the_counts_writes_the_same_parts(tmp_path, monkeypatch, filter_by):
    """Ranked by the bound of the flagged rows (``confident_learning``'s is every row: most of its
    ranges are empty) or by their count once flagged: the same issue parts, numbered without
    gaps, and the empty ranges write nothing."""
    import importlib

    scan_module = importlib.import_module("labelscan.scan")   # labelscan.scan is also the function
    folder = _write_set(tmp_path / "in")
    per_part = 97
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream:
            early = labelscan.scan(str(folder), str(tmp_path / "early"), client=client, issues_per_part=per_part,
                                   filter_by=filter_by)
        early_ranges = sum(str(task["key"]).startswith("labelscan-rank-0") for task in stream.data)
        monkeypatch.setattr(scan_module, "EARLY_RANK_SPLITS", 0)
        with distributed.get_task_stream(client) as stream:
            late = labelscan.scan(str(folder), str(tmp_path / "late"), client=client, issues_per_part=per_part,
                                  filter_by=filter_by)
        late_ranges = sum(str(task["key"]).startswith("labelscan-rank-0") for task in stream.data)
    num_parts = len(list((tmp_path / "late" / "issues").glob("part-*.parquet")))
    assert early.summary["num_issues"] == late.summary["num_issues"] > 5 * per_part
    assert sorted(path.name for path in (tmp_path / "early" / "issues").iterdir()) == \
        [f"part-{index:05d}.parquet" for index in range(num_parts)]
    assert _ranked_issues(tmp_path / "early").equals(_ranked_issues(tmp_path / "late"))
    assert late_ranges == scan_module.max_ranges(late.summary["num_issues"], per_part) >= num_parts
    assert early_ranges >= late_ranges
    if filter_by == "confident_learning":
        assert early_ranges == scan_module.max_ranges(10_000, per_part) > 5 * num_parts


def _mask_and_issues(out):
    import pandas as pd

    return [pd.concat([pd.read_parquet(path) for path in sorted((out / folder).glob("part-*.parquet"))])
            for folder in ("mask", "issues")]


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "low_self_confidence"])
def test_partitions_beyond_the_memory_budget_are_read_again(tmp_path, monkeypatch, filter_by):
    """cache="auto" keeps the first partitions that fit in its share of the workers' memory and
    re-reads the others each pass: the same outputs as a scan keeping everything."""
    import importlib

    scan_module = importlib.import_module("labelscan.scan")   # labelscan.scan is also the function
    folder = _write_set(tmp_path / "in", files=6, rows=700, classes=5)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        kept = labelscan.scan(str(folder), str(tmp_path / "all"), client=client, cache=True,
                              rows_per_partition=700, filter_by=filter_by, rank_by="normalized_margin")
        row_bytes = 5 * 4
        budget = 2.5 * 700 * row_bytes / scan_module.CACHE_FRACTION   # room for two partitions and a half
        monkeypatch.setattr(scan_module, "worker_memory_limit", lambda client: budget)
        partial = labelscan.scan(str(folder), str(tmp_path / "partial"), client=client,
                                 rows_per_partition=700, filter_by=filter_by, rank_by="normalized_margin")
    assert (kept.summary["num_cached_partitions"], partial.summary["num_cached_partitions"]) == (6, 2)
    assert kept.summary["cached_partitions"] and not partial.summary["cached_partitions"]
    for got, expected in zip(_mask_and_issues(tmp_path / "partial"), _mask_and_issues(tmp_path / "all")):
        assert got.equals(expected)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("num_issues", [0, 1, 7, 50_000])
def test_the_rank_histogram_of_sorted_images_counts_their_top_bits(dtype, num_issues):
    rng = np.random.default_rng(num_issues)
    width = np.dtype(dtype).itemsize * 8
    images = rng.integers(0, np.iinfo(np.uint64).max if width == 64 else (1 << width) - 1, num_issues,
                          dtype=np.uint64, endpoint=True)
    images[: min(num_issues, 3)] = 0   # the first and the last bin's edges
    images[-min(num_issues, 2):] = np.iinfo(np.uint64).max >> np.uint64(64 - width)
    images.sort()
    written = WrittenPartition(issues={"image": images}, issues_per_class=np.zeros(2),
                               rank_shift=_image_shift(dtype), rejected={})
    counted = np.bincount((images >> np.uint64(_image_shift(dtype))).astype(np.int64),
                          minlength=1 << outcome.RANK_BITS)
    histogram = rank_histogram(written)
    assert histogram.dtype == np.int64 and np.array_equal(histogram, counted)


def test_cpu_partitions_are_as_few_as_their_bytes_and_memory_allow(tmp_path):
    """At most TARGET_PARTITION_BYTES of predictions a partition, less under a tight memory
    limit (never below MIN_PARTITION_BYTES); about equal rows each."""
    from labelscan.io.dataset import TARGET_PARTITION_BYTES
    from labelscan.scan import MIN_PARTITION_BYTES, THREAD_MEMORY_PER_PARTITION, cpu_partition_bytes

    assert cpu_partition_bytes(0, 2) == TARGET_PARTITION_BYTES
    assert cpu_partition_bytes(64 * 2**30, 2) == TARGET_PARTITION_BYTES
    assert cpu_partition_bytes(2_500_000_000, 2) == 2_500_000_000 // (2 * THREAD_MEMORY_PER_PARTITION)
    assert cpu_partition_bytes(10**8, 16) == MIN_PARTITION_BYTES
    folder = _write_set(tmp_path / "in", files=7, rows=1_000, classes=8)   # 32 KB of predictions a file
    plan = _plan(str(folder), COLUMNS, None, None, 2, memory_limit=0)
    assert len(plan.partitions) == 2 and [spec.num_rows for spec in plan.partitions] in ([3_000, 4_000], [4_000, 3_000])
