"""A scan of a parquet prediction set on a Dask cluster, written to an output directory.

Outputs (``DESIGN.md`` §3): ``mask/part-NNNNN.parquet`` (one per input partition, row
aligned), ``issues/part-NNNNN.parquet`` (ranked; parts in name order give rank order),
``rejected/part-NNNNN.parquet`` (one per input partition, with ``on_bad_rows="skip"`` only),
``statistics/<name>.parquet`` (the K x K statistics of scans of more than 256 classes,
:mod:`labelscan.summary_statistics`), ``summary.json``, and ``_SUCCESS`` (the manifest) last.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa

from labelscan import __version__, engine, health, outcome, passes
from labelscan.backend import cluster_backend, resolve_backend
from labelscan.cluster import get_client, worker_device_memory, worker_memory_limit, worker_threads
from labelscan.errors import UsageError
from labelscan.io.column_set import ColumnSet, Consecutive
from labelscan.io.commit import OutputCommit
from labelscan.host_work import host_work
from labelscan.io import device_pages, grouped_read
from labelscan.io.dataset import TARGET_PARTITION_BYTES, plan_dataset, read_ids, read_partition
from labelscan.io.rejects import kept_row_ids, rejected_per_reason, with_rejected_rows
from labelscan.io.unique import check_unique_ids
from labelscan.io.redact import protect_workers, redact
from labelscan.options import ScanOptions
from labelscan.runner import REDUCE_PRIORITY, DaskRunner
from labelscan.summary_statistics import summary_statistics
from labelscan.xp import array_module, to_host

ISSUES_PER_PART = 4_000_000
"""Target rows per ranked issues part."""

PARTITIONS_PER_THREAD = 1
"""Smallest number of partitions per worker thread the default planning aims for (CPU scans).
Two until the twenty-third session; one, on the 2-core host (one cluster, the partitionings
alternating, medians of five scans): 1M x 100 4 -> 2 partitions 1.40 -> 1.27 s, 200K x 1000 1.17
-> 1.10 s, 10M x 10 1.57 -> 1.54 s."""

GPU_THREADS_PER_PARTITION = 4
"""GPU scans aim for at least one partition per this many worker threads: the host work of a
few partitions (decoding, output encoding) overlaps, while each more partition pays its own
task overhead, which does not overlap: a GPU task's launches and synchronisations are Python
holding the GIL, so concurrent tasks of one worker run nearly one after the other (10M x 10 on
one H100 with 8 threads, partitions by their task streams: thresholds 12 ms a task at 4
partitions, 3.5 ms a task alone; whole scans, medians of 8 on two hosts: 4 partitions 0.336 /
0.361 s, 2 partitions 0.236 / 0.277 s, 1 partition 0.243 / 0.279 s, where its single mask
part is written last; 20 partitions took 1.8-2.1 s in the fourth session, 4 partitions 1.1 s)."""

WRITE_PRIORITY = 1
"""Dask priority of a flagged partition's mask write and issue extraction: each runs as soon as
its partition is flagged, before flag tasks still waiting, so flagged partitions' host columns
do not pile up while the device flags others."""

RANK_PRIORITY = 2
"""Dask priority of the ranking's tasks: they run before the mask writes still waiting (they end
the scan; the writes overlap them)."""

EARLY_RANK_SPLITS = 2048
"""The ranking is submitted before the flag pass has counted its issues (once the cutoffs are
in), ranged by the bound of the flagged rows known before it
(:attr:`labelscan.engine.Analysis.most_issues`), when that bound's ranges times the partitions
make at most this many split tasks (a loose bound costs that many empty ones); otherwise once
the flag pass has counted its issues."""

CACHE_FRACTION = 0.4
"""Cache decoded partitions when they take at most this fraction of the workers' memory."""

GPU_CACHE_FRACTION = 0.6
"""The same fraction of the GPUs' memory, for partitions cached on the device."""

GPU_PARTITION_BYTES = 512 * 2**20
"""Predictions per partition of a GPU scan (fewer, larger tasks: per-task host work dominates)."""

GROUPED_ROW_BYTES = 8
"""Device bytes per row of a grouped partition besides its predictions: its ``order`` (labels and
row ids are computed when asked, :class:`labelscan.kernels.grouped.GroupedPartition`)."""


@dataclass
class ParquetSource:
    """One partition of a parquet set, read on the worker and computed on ``backend``.

    Its rows are validated as they are read, so their predictions are finite (``finite``).
    On ``backend="cupy"`` (bad rows raising, no row-sum check) the predictions and labels are
    decoded on the device where they can be (:mod:`labelscan.io.device_pages`); on the host,
    list columns are decoded straight into grouped order where the page decoder reads them
    (:mod:`labelscan.io.grouped_read`); otherwise list-column predictions come as zero-copy
    chunks (``row_blocks``), which grouping gathers straight from on the host and which reach
    the device through one staging copy.
    """

    finite = True
    plan: object
    spec: object
    backend: str = "numpy"
    row_sum_tolerance: float | None = None
    on_bad_rows: str = "error"

    def load(self):
        data = None
        every_row_kept = self.on_bad_rows == "error" and self.row_sum_tolerance is None
        if every_row_kept and self.backend == "cupy" and device_pages.enabled():
            data = device_pages.read_partition_on_device(self.plan, self.spec)
        elif every_row_kept and self.backend == "numpy" and grouped_read.applies(self.plan):
            data = grouped_read.read_partition_grouped(self.plan, self.spec)
        if data is None:
            data = read_partition(self.plan, self.spec, self.row_sum_tolerance, self.on_bad_rows, row_blocks=True)
        return data.row_start, data.labels, data.pred_probs, data.ids, data.rejected

    def load_ids(self):
        """``(global rows, ids)`` of the kept rows (global duplicate check of uncached scans): the id
        column alone, or the whole partition when bad rows are skipped (which rows are is decided
        by every column)."""
        if self.on_bad_rows == "skip":
            data = self.load()
            return kept_row_ids(self.spec.row_start, len(data[1]), data[4]), data[3]
        return kept_row_ids(self.spec.row_start, self.spec.num_rows, None), read_ids(self.plan, self.spec)


ON_BAD_ROWS = ("error", "skip")


def check_validation_options(row_sum_tolerance, on_bad_rows) -> None:
    """Raise :class:`UsageError` for a bad ``row_sum_tolerance`` or ``on_bad_rows``."""
    if on_bad_rows not in ON_BAD_ROWS:
        raise UsageError(f"on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}; got {on_bad_rows!r}")
    if row_sum_tolerance is not None and not (float(row_sum_tolerance) >= 0):
        raise UsageError(f"row_sum_tolerance must be >= 0; got {row_sum_tolerance}")


@dataclass
class WrittenPartition:
    """A partition's flagged issues kept on the worker until ranked: its sorted issues, issues per
    class and rejected rows per reason (skipped bad rows). Its mask part is written by a task of
    its own (:func:`write_mask`)."""

    issues: dict
    issues_per_class: np.ndarray
    rank_shift: int
    rejected: dict


def mask_table(result: outcome.PartitionOutcome):
    """Row-aligned mask part: row_id, [id], is_label_issue, label_quality, predicted_label.

    One row per input row, skipped bad rows included (see :func:`labelscan.io.rejects.with_rejected_rows`).

    Returns
    -------
    labelscan.io.column_set.ColumnSet or pyarrow.Table
        The columns as the partition holds them (its row range, narrow class indices) when no
        row was rejected, else the widened Arrow table.
    """
    columns = {"row_id": result.row_ids}
    if result.ids is not None:
        columns["id"] = result.ids
    columns.update(is_label_issue=result.is_label_issue, label_quality=result.label_quality,
                   predicted_label=result.predicted_label)
    table = ColumnSet(columns, types={"predicted_label": pa.int64()})
    return table if result.rejected is None else with_rejected_rows(table.to_arrow(), result.rejected)


def flag_partition(part, facts, family_keys, index: int, *, family_cutoffs, request,
                   issues_on_device: bool = False) -> outcome.PartitionOutcome:
    """Flag one partition: its row-order mask columns on the host, its sorted issues on the host
    or, with ``issues_on_device``, where the partition lives (see
    :func:`labelscan.outcome.partition_outcome`)."""
    return outcome.partition_outcome(part, facts, family_keys, index, family_cutoffs=family_cutoffs,
                                     request=request, issues_on_device=issues_on_device)


def partition_issues(result: outcome.PartitionOutcome) -> WrittenPartition:
    """What the ranking needs of a flagged partition (its mask columns stay behind: once its mask
    part is written, they are freed)."""
    return WrittenPartition(issues=result.issues, issues_per_class=result.issues_per_class,
                            rank_shift=_image_shift(result.label_quality.dtype),
                            rejected=result.rejected.counts() if result.rejected is not None else {})


def write_mask(result: outcome.PartitionOutcome, index: int, *, commit: OutputCommit) -> list:
    """Write a flagged partition's mask part (and its rejected part, when bad rows are skipped).

    Returns
    -------
    list of dict
        The manifest entries of the parts written.
    """
    with host_work():   # host work only: the worker may go on with its next partition
        entries = [commit.write_mask_part(index, mask_table(result))]
        if result.rejected is not None:
            entries.append(commit.write_table(f"rejected/part-{index:05d}.parquet", result.rejected.table))
    return entries


def _image_shift(dtype) -> int:
    return max(np.dtype(dtype).itemsize * 8 - outcome.RANK_BITS, 0)


def written_summary(written: WrittenPartition) -> dict:
    """The small part of a flagged partition the driver needs."""
    return {"issues_per_class": written.issues_per_class, "rank_shift": written.rank_shift,
            "rejected": written.rejected}


def flagged_summary(result: outcome.PartitionOutcome) -> dict:
    """:func:`written_summary` of a flagged partition (computed from the flag task's result, beside
    the issue extraction: one task level less before the ranking starts)."""
    return written_summary(partition_issues(result))


def rank_histogram(written: WrittenPartition) -> np.ndarray:
    """Top-bits histogram of a partition's issue scores (stays on the workers).

    Computed when asked, not kept in :class:`WrittenPartition`: 2**RANK_BITS int64 (512 KiB)
    per partition, invisible to Dask's memory accounting, adds up over thousands of partitions.
    The issues are sorted by image, so each bin's count is the distance between the positions of
    its edges (one binary search an edge): 1.35M issues in 3 ms against 10 ms to count them
    (this 2-core machine).

    Returns
    -------
    numpy.ndarray, shape (2**RANK_BITS,), int64
    """
    images = written.issues["image"]
    edges = np.arange(1, 1 << outcome.RANK_BITS, dtype=np.uint64) << np.uint64(written.rank_shift)
    xp = array_module(images)   # issues kept on the device: searched there
    ends = to_host(xp.searchsorted(images, xp.asarray(edges.astype(images.dtype, copy=False)), side="left"))
    return np.diff(ends, prepend=0, append=len(images)).astype(np.int64)


def rank_plan(histogram: np.ndarray, per_part: int) -> dict:
    """Score ranges of the ranked parts and the first rank of each (runs on a worker)."""
    bounds = rank_ranges(histogram, per_part)
    sizes = [int(histogram[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]
    return {"bounds": bounds, "first_ranks": np.concatenate([[0], np.cumsum(sizes)])[:-1]}


def rank_ranges(histogram: np.ndarray, per_part: int) -> np.ndarray:
    """Split the top-bits histogram of all issues into consecutive ranges of ≈ ``per_part`` rows.

    Returns
    -------
    numpy.ndarray, shape (R + 1,)
        Bin boundaries; range r holds bins ``[b_r, b_{r+1})``.
    """
    cumulative = np.cumsum(histogram)
    total = int(cumulative[-1]) if len(cumulative) else 0
    if total <= per_part:
        return np.asarray([0, len(histogram)])
    targets = np.arange(per_part, total, per_part)
    cuts = np.unique(np.searchsorted(cumulative, targets, side="left") + 1)
    cuts = cuts[(cuts > 0) & (cuts < len(histogram))]
    return np.concatenate([[0], cuts, [len(histogram)]])


def issues_in_range(written: WrittenPartition, low_bin: int, high_bin: int, shift: int,
                    quality_images: bool = False) -> dict:
    """A partition's issues whose score image's top bits fall in ``[low_bin, high_bin)``.

    The issues are sorted by image, so the range is one slice found by binary search: the
    ``R`` ranges of ``P`` partitions cost ``O(P R log n)`` plus the rows moved, not ``O(P R n)``.
    ``quality_images``: see :func:`all_issues`.
    """
    images = written.issues["image"]
    start, stop = (_first_at_or_above(images, edge, shift) for edge in (low_bin, high_bin))
    return {name: values[start:stop] for name, values in all_issues(written, quality_images).items()}


def all_issues(written: WrittenPartition, quality_images: bool = False) -> dict:
    """A partition's sorted issues, whole (the only score range).

    ``quality_images``: the images are those of ``label_quality``, so they stay behind (the
    ranking task recomputes them: 8 of 24 bytes an issue that would travel between workers).
    """
    if not quality_images:
        return written.issues
    return {name: values for name, values in written.issues.items() if name != "image"}


def _first_at_or_above(sorted_images: np.ndarray, top_bits: int, shift: int) -> int:
    """Position of the first image whose top bits (``image >> shift``) are ``>= top_bits``."""
    if top_bits >= 1 << (64 - shift):   # past every image (the edge itself overflows uint64)
        return len(sorted_images)
    xp = array_module(sorted_images)
    edge = xp.asarray([np.uint64(top_bits) << np.uint64(shift)], dtype=sorted_images.dtype)
    return int(xp.searchsorted(sorted_images, edge, side="left")[0])


def write_ranked(first_rank: int, index: int, commit: OutputCommit, *issue_sets, on_device: bool = False) -> dict:
    """Merge one score range's issues from every partition, rank and write them (host work, but
    for the merge's sort and gathers on the GPU with ``on_device``: :func:`labelscan.outcome.merge_ranked`)."""
    with host_work():
        merged = outcome.merge_ranked(list(issue_sets), on_device=on_device)
        columns = {"rank": Consecutive(first_rank, len(merged["row_id"])), "row_id": merged["row_id"]}
        if "id" in merged:
            columns["id"] = merged["id"]
        columns.update(given_label=merged["given_label"], predicted_label=merged["predicted_label"],
                       label_quality=merged["label_quality"])
        table = ColumnSet(columns, types={"given_label": pa.int64(), "predicted_label": pa.int64()})
        return commit.write_table(f"issues/part-{index:05d}.parquet", table)


def config_hash(options: ScanOptions, columns: dict) -> str:
    """Stable hash of everything that decides a scan's outputs besides the input."""
    config = {**asdict(options), **columns}
    config["confident_joint"] = None if options.confident_joint is None else np.asarray(
        options.confident_joint).tolist()
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict:
    import dask
    import distributed

    return {"labelscan": __version__, "dask": dask.__version__, "distributed": distributed.__version__,
            "numpy": np.__version__, "pyarrow": pa.__version__, "python": platform.python_version()}


def run_scan(input_path, out_path, *, options: ScanOptions, label_column="label", pred_probs_column="pred_probs",
             id_column=None, storage_options=None, client=None, scheduler=None, rows_per_partition=None,
             overwrite=False, cache="auto", retries=2, issues_per_part=ISSUES_PER_PART, report=None,
             backend="auto", resume=False, class_names=None, row_sum_tolerance=None,
             on_bad_rows="error") -> dict:
    """Scan a parquet prediction set and commit the outputs. See :func:`labelscan.scan`.

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    started = time.perf_counter()
    check_validation_options(row_sum_tolerance, on_bad_rows)
    columns = {"label_column": label_column, "pred_probs_column": pred_probs_column, "id_column": id_column}
    start_gpu_cluster = client is None and scheduler is None and resolve_backend(backend) == "cupy"
    with get_client(client, scheduler, gpu=start_gpu_cluster) as dask_client:
        backend = cluster_backend(dask_client, backend)
        from labelscan.batching import shorten_batching   # imports distributed: not at labelscan's import

        shorten_batching(dask_client)
        timings = {"cluster": round(time.perf_counter() - started, 6)}
        protect_workers(dask_client, storage_options, [out_path, *_paths(input_path)])   # mask worker logs
        plan = _plan(input_path, columns, storage_options, rows_per_partition, worker_threads(dask_client),
                     backend, worker_memory_limit(dask_client))
        options.check_classes(plan.num_classes)
        class_names = _class_names(class_names, plan)
        commit = OutputCommit(out_path, storage_options=storage_options, overwrite=overwrite,
                              config_hash=config_hash(options, columns), input_fingerprint=plan.fingerprint,
                              track_progress=True, resume=resume,
                              layout=_layout(plan, issues_per_part, backend, [row_sum_tolerance, on_bad_rows]))
        commit.check()   # a destination begin() would refuse fails the scan before any pass
        reader = plan.reader()   # not the whole plan in every task: it grows with the number of files
        sources = [ParquetSource(reader, spec, backend, row_sum_tolerance, on_bad_rows) for spec in plan.partitions]
        timings["plan"] = round(time.perf_counter() - started - timings["cluster"], 6)
        runner = DaskRunner(dask_client, retries=retries)
        num_cached = cached_partitions(cache, plan, dask_client, backend)
        analysis = engine.analyse(runner, sources, plan.num_classes, plan.pred_probs_dtype, options,
                                  report=report, cache=num_cached, cache_keys=backend != "cupy")
        clock = analysis.clock
        if id_column is not None:   # before anything is written: a bad input leaves OUT untouched
            engine.wait_for_cutoffs(runner, analysis)
            check_unique_ids(runner, analysis.parts, plan)
            clock.lap("unique-ids")
        commit.begin()
        writes = _flag_and_write(runner, analysis, commit, issues_per_part, clock,
                                 cutoffs_pending=id_column is None, rank_on_device=backend == "cupy")
        # the summary is made while the mask parts and the ranked parts are written
        summary, statistics_entries = _summary(analysis, plan, commit, writes.summaries,
                                               config={**asdict(options), **columns, "confident_joint": None},
                                               input_path=input_path, num_cached=num_cached, backend=backend,
                                               class_names=class_names, on_bad_rows=on_bad_rows,
                                               row_sum_tolerance=row_sum_tolerance)
        entries = writes.collect() + statistics_entries
        timings.update(clock.timings)
    summary["timings"] = {**timings, "total": round(time.perf_counter() - started, 6)}
    entries.append(commit.write_json("summary.json", summary))
    commit.commit(entries, {"num_issues": summary["num_issues"], "num_rows": plan.num_rows})
    return summary


def _summary(analysis, plan, commit, summaries, *, config, input_path, num_cached, backend, class_names,
             on_bad_rows, row_sum_tolerance) -> tuple[dict, list]:
    """``summary.json`` without its timings, and the manifest entries of the statistics files it
    refers to (K x K matrices written apart when wide: :func:`labelscan.summary_statistics.summary_statistics`).

    ``summaries``: the flagged partitions' (:func:`flagged_summary`).
    """
    issues_per_class = np.sum([s["issues_per_class"] for s in summaries], axis=0).astype(np.int64)
    num_rows_scanned = int(analysis.stats.label_counts.sum())
    statistics, statistics_entries = summary_statistics(analysis.stats, commit)   # K x K files when wide
    summary = {
        "labelscan_version": __version__,
        "versions": _versions(),
        "config": config,
        "config_hash": commit.config_hash,
        "input": {"path": redact(input_path if isinstance(input_path, str) else list(input_path)),
                  "fingerprint": plan.fingerprint},
        "num_rows": plan.num_rows,
        "num_rows_scanned": num_rows_scanned,
        "num_rows_rejected": plan.num_rows - num_rows_scanned,
        "num_rows_rejected_per_reason": rejected_per_reason([s["rejected"] for s in summaries]),
        "on_bad_rows": on_bad_rows,
        "row_sum_tolerance": row_sum_tolerance,
        "num_classes": plan.num_classes,
        "num_partitions": len(plan.partitions),
        "pred_probs_dtype": np.dtype(plan.pred_probs_dtype).name,
        "class_names": class_names,
        "cached_partitions": num_cached == len(plan.partitions),
        "num_cached_partitions": num_cached,
        "backend": backend,
        "statistics": statistics,
        "num_issues": int(issues_per_class.sum()),
        "num_issues_per_class": issues_per_class.tolist(),
        "health": health.summary_section(analysis.stats, num_rows_scanned, class_names=class_names),
    }
    return summary, statistics_entries


def _class_names(given, plan):
    """The class names of the summary: ``given`` (checked against K), else the parquet metadata's."""
    if given is None:
        return list(plan.class_names) if plan.class_names else None
    names = [str(name) for name in given]
    if len(names) != plan.num_classes:
        raise UsageError(f"class_names has {len(names)} names, but pred_probs has K={plan.num_classes}")
    return names


def _layout(plan, issues_per_part, backend, validation) -> str:
    """Hash of what besides config and input decides the parts' bytes; resumed parts must match it."""
    layout = {"partitions": [[[piece.path, list(piece.row_groups)] for piece in spec.pieces]
                             for spec in plan.partitions],
              "issues_per_part": issues_per_part, "backend": str(backend), "versions": _versions(),
              "validation": validation}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()


def _paths(input_path) -> list:
    return [input_path] if isinstance(input_path, str) else list(input_path)


THREAD_MEMORY_PER_PARTITION = 16
"""A CPU partition's predictions take at most 1/16 of a worker thread's share of its worker's
memory limit (a thread holds its partition, grouped, and temporaries of a few times its size;
cached partitions are counted apart, :data:`CACHE_FRACTION`)."""

MIN_PARTITION_BYTES = 64 * 2**20
"""Smallest partition a tight memory limit makes (the default planning's until the
twenty-third session)."""


def cpu_partition_bytes(memory_limit: int, threads: int) -> int:
    """Most bytes of predictions per partition of a CPU scan: :data:`TARGET_PARTITION_BYTES`,
    less under a tight memory limit (:data:`THREAD_MEMORY_PER_PARTITION`), at least
    :data:`MIN_PARTITION_BYTES`.

    Parameters
    ----------
    memory_limit : int
        Sum of the workers' memory limits in bytes (0: unknown or none).
    threads : int
        Worker threads of the cluster.
    """
    if memory_limit <= 0:
        return TARGET_PARTITION_BYTES
    share = memory_limit // (max(threads, 1) * THREAD_MEMORY_PER_PARTITION)
    return int(max(MIN_PARTITION_BYTES, min(TARGET_PARTITION_BYTES, share)))


def _plan(input_path, columns, storage_options, rows_per_partition, threads: int, backend: str = "numpy",
          memory_limit: int = 0):
    """Plan the partitions; by default at least one per worker thread when row groups allow, of
    at most :func:`cpu_partition_bytes` (GPU scans: partitions of :data:`GPU_PARTITION_BYTES`, at
    least one per :data:`GPU_THREADS_PER_PARTITION` threads: fewer tasks of more rows)."""
    gpu = backend == "cupy"
    wanted = max(1, threads // GPU_THREADS_PER_PARTITION) if gpu else PARTITIONS_PER_THREAD * threads
    return plan_dataset(input_path, storage_options=storage_options, rows_per_partition=rows_per_partition,
                        partition_bytes=GPU_PARTITION_BYTES if gpu else cpu_partition_bytes(memory_limit, threads),
                        min_partitions=wanted, **columns)


def cached_partitions(cache, plan, client, backend: str = "numpy") -> int:
    """How many partitions, from the first, stay decoded on the workers between passes.

    ``cache`` True: all; False: none. ``"auto"``: as many as take at most
    :data:`CACHE_FRACTION` of the workers' memory (on GPU workers :data:`GPU_CACHE_FRACTION`
    of the devices' memory, counting the grouped copy's per-row indices); the others are
    read again by each pass, so a set slightly larger than that memory costs a few re-reads
    instead of a re-read of everything.

    Returns
    -------
    int
        In ``[0, len(plan.partitions)]``.
    """
    num_partitions = len(plan.partitions)
    if cache != "auto":
        return num_partitions if cache else 0
    row_bytes = plan.num_classes * np.dtype(plan.pred_probs_dtype).itemsize
    if backend == "cupy":
        row_bytes += GROUPED_ROW_BYTES
        limit = worker_device_memory(client)
    else:
        limit = worker_memory_limit(client)
    if limit == 0:
        return num_partitions
    fraction = GPU_CACHE_FRACTION if backend == "cupy" else CACHE_FRACTION
    cumulative_bytes = np.cumsum([spec.num_rows for spec in plan.partitions]) * row_bytes
    return int(np.searchsorted(cumulative_bytes, fraction * limit, side="right"))


def _flag_and_write(runner, analysis, commit, per_part, clock, cutoffs_pending: bool,
                    rank_on_device: bool = False) -> "PendingWrites":
    """The flag pass, the ranking and every part submitted for writing; returns once the flag pass
    is done (the per-partition summaries, :func:`flagged_summary`), the writes still running.

    Each partition's mask part is written by a task of its own, which runs as soon as the
    partition is flagged (ahead of flag tasks still waiting: :data:`WRITE_PRIORITY`). The flag
    tasks are submitted before the cutoffs are in (``cutoffs_pending``: the ``cutoffs`` stage is
    timed here). The ranking is submitted once the cutoffs are in when the bound of the flagged
    rows allows (:data:`EARLY_RANK_SPLITS`), else once the flag pass has counted them; its tasks
    run as their inputs are ready, the mask parts still being written overlap them. Stages:
    ``flag`` ends when every partition is flagged, ``rank`` when every part is written.
    ``rank_on_device``: the ranked parts are merged on the workers' GPUs (:func:`write_ranked`),
    and the flagged partitions' issues stay there until then.
    """
    write = functools.partial(write_ranked, on_device=rank_on_device)
    flagged = runner.map("flag", flag_partition, analysis.parts, analysis.facts, analysis.family_keys,
                         list(range(len(analysis.parts))), family_cutoffs=analysis.family_cutoffs,
                         request=analysis.request, issues_on_device=rank_on_device)
    runner.release(analysis.parts)
    written = runner.map("flag-issues", partition_issues, flagged, priority=WRITE_PRIORITY)
    masks = runner.map("mask", write_mask, flagged, list(range(len(flagged))), commit=commit,
                       priority=WRITE_PRIORITY)
    summaries = runner.map("flag-summary", flagged_summary, flagged, priority=WRITE_PRIORITY)
    runner.release(flagged)
    if cutoffs_pending:
        engine.wait_for_cutoffs(runner, analysis)
    ranked = None
    if max_ranges(analysis.most_issues, per_part) * len(flagged) <= EARLY_RANK_SPLITS:
        # the bound of the flagged rows is known before the flag pass: no need to wait for it.
        # Submitted once the cutoffs are in: the scheduler takes in these tasks while the flag
        # pass runs, not while the last cutoff tasks wait for it
        ranked = rank_issues(runner, written, commit, per_part, num_issues=analysis.most_issues,
                             write=write, priority=RANK_PRIORITY)
    summaries = runner.gather(summaries)
    clock.lap("flag")
    if ranked is None:
        ranked = rank_issues(runner, written, commit, per_part, num_issues=_num_issues(summaries),
                             write=write, priority=RANK_PRIORITY)
    runner.release(written)
    return PendingWrites(summaries, runner, masks, ranked, clock)


@dataclass
class PendingWrites:
    """The flag pass done, its parts being written.

    Attributes
    ----------
    summaries : list of dict
        Per flagged partition, :func:`flagged_summary`.
    runner, masks, ranked, clock
        The runner, the handles of the mask parts' and the ranked parts' writes, and the stage
        clock whose ``rank`` lap :meth:`collect` ends.
    """

    summaries: list
    runner: object
    masks: list
    ranked: list
    clock: object

    def collect(self) -> list:
        """Wait until every mask and ranked part is written (the ``rank`` stage ends); return
        their manifest entries."""
        parts_written = self.runner.gather([*self.masks, *self.ranked])   # one round trip for both
        entries = [entry for part_entries in parts_written[:len(self.masks)] for entry in part_entries]
        self.clock.lap("rank")
        return entries + ranked_entries(parts_written[len(self.masks):])


def ranked_entries(results: list) -> list:
    """The manifest entries of :func:`rank_issues`' ranges that wrote a part."""
    return [entry for entry in results if entry is not None]


def rank_issues(runner, written, commit, per_part, *, num_issues: int, write=write_ranked, priority=0) -> list:
    """Rank every partition's issues (sorted by the images of their ``label_quality``) by score
    ranges and write each range with ``write``; returns a handle per range to its manifest entry,
    or to ``None`` for a range the plan does not fill (gather them and drop the ``None``).

    Submitted whole, nothing waited for: the issues' score histogram and the ranges' plan are
    tasks, and each range's pieces and part read the plan on the workers (no round trip to the
    driver between the flag pass and the writes). ``num_issues`` is the issues in all or an
    upper bound of them: at most ``per_part`` make one range without histogram or plan, whose
    task reads the partitions' issues whole (:func:`write_whole`); otherwise the plan's ranges
    are at most ``ceil(num_issues / per_part)`` (:func:`rank_ranges`), one task (and one split
    per partition) each.
    """
    if num_issues <= per_part:
        return [runner.submit("rank", write_whole, write, commit, *written, priority=priority)]
    plan = _rank_plan_task(runner, written, per_part, priority)
    handles = []
    for index in range(max_ranges(num_issues, per_part)):
        pieces = runner.map("rank-split", planned_issues, written, plan=plan, index=index, priority=priority)
        handles.append(runner.submit("rank", write_planned, plan, index, write, commit, *pieces, priority=priority))
    return handles


def write_whole(write, commit: OutputCommit, *written):
    """``write`` the only range: every partition's issues as they are, their images included.

    No split task stands between the flag pass and this one (10M x 10 on one H100: a task level,
    3-5 ms); the images travel with the issues from other workers (8 of 32 bytes an issue, at
    most ``issues_per_part`` issues) and need not be recomputed.
    """
    return write(0, 0, commit, *(all_issues(partition) for partition in written))


def max_ranges(num_issues: int, per_part: int) -> int:
    """Most ranges :func:`rank_ranges` makes of ``num_issues`` issues (or fewer)."""
    return max(-(-num_issues // per_part), 1)


def planned_issues(written: WrittenPartition, *, plan: dict, index: int) -> dict | None:
    """A partition's issues in range ``index`` of ``plan`` (:func:`rank_plan`), without their
    images (:func:`all_issues`); ``None`` past the plan's last range."""
    if not _in_plan(plan, index):
        return None
    bounds = plan["bounds"]
    return issues_in_range(written, int(bounds[index]), int(bounds[index + 1]), written.rank_shift,
                           quality_images=True)


def write_planned(plan: dict, index: int, write, commit: OutputCommit, *issue_sets):
    """``write`` range ``index`` of ``plan`` (its first rank from the plan), or ``None`` past the
    plan's last range (nothing written)."""
    if not _in_plan(plan, index):
        return None
    return write(int(plan["first_ranks"][index]), index, commit, *issue_sets)


def _in_plan(plan: dict, index: int) -> bool:
    """Whether ``plan`` (:func:`rank_plan`) has a range ``index``."""
    return index < len(plan["first_ranks"])


def _rank_plan_task(runner, written, per_part: int, priority: int):
    """Handle of :func:`rank_plan` over every partition's issues (their histograms merged; the
    root merge plans)."""
    return runner.reduce("rank-histogram-merge", passes.sum_arrays,
                         runner.map("rank-histogram", rank_histogram, written, priority=priority),
                         priority=max(priority, REDUCE_PRIORITY), finish=rank_plan, finish_args=(per_part,))


def _num_issues(summaries) -> int:
    return int(sum(np.sum(s["issues_per_class"]) for s in summaries))


def rank_by_ranges(runner, written, shift: int, per_part: int, combine, *args) -> tuple:
    """Split every partition's sorted issues into global score ranges; one task per range (the
    driver waits for the plan: it gets each range's first rank).

    Parameters
    ----------
    written : list
        Per partition (in partition order), a handle to an object with ``issues`` (dict of
        arrays sorted by ``issues["image"]``) and ``rank_shift``.
    shift : int
        Bits dropped from the images to get the ranking's top bits.
    per_part : int
        About this many issues per range.
    combine : callable
        ``combine(first_rank, index, *args, *pieces)``: range ``index``, whose first global rank
        is ``first_rank``, from its piece of every partition (in partition order).

    Returns
    -------
    handles : list
        ``combine``'s result per range (left on the workers).
    first_ranks : numpy.ndarray, shape (R,)
        The first global rank of each range.
    """
    ranges = runner.gather(_rank_plan_task(runner, written, per_part, priority=0))
    bounds, first_ranks = ranges["bounds"], ranges["first_ranks"]
    handles = []
    for index, (low, high) in enumerate(zip(bounds[:-1], bounds[1:])):
        pieces = runner.map("rank-split", issues_in_range, written, low_bin=int(low), high_bin=int(high), shift=shift)
        handles.append(runner.submit("rank", combine, int(first_ranks[index]), index, *args, *pieces))
    return handles, np.asarray(first_ranks, dtype=np.int64)
