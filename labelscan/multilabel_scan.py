"""A multi-label scan of a parquet prediction set on Dask: cleanlab 2.9's multi-label answer.

cleanlab reduces a multi-label set to K one-vs-rest binary problems (``CLEANLAB_SPEC.md``
§14). Here all K run together, each pass touching every partition once
(:mod:`labelscan.multilabel_passes`); only O(K) states reach the driver::

    read ─▶ rows having each class ──(K per partition)──▶ binary class offsets
         ─▶ threshold pieces of every class ──tree merge──▶ 2 exact thresholds per class
         ─▶ 2×2 confident joints, confident-learning union, AudioSet counts ──tree sum──▶
            per-class plan (calibration, prune counts: 2×2 each, on the driver)
         ─▶ key images of every class's selections ──▶ selection rounds of all classes at
            once (the engine's histogram refinement, :func:`labelscan.engine.find_cutoffs`)
         ─▶ flag pass: per class the engine's flag rule, OR over classes; multi-label score;
            mask parts ─▶ ranked issues parts (by score ranges; ``low_*`` filters: the flagged
            rows, kept on the workers, scored on their own — with ``adjust_pred_probs`` by
            their own merged thresholds — then cleanlab's order, :mod:`labelscan.multilabel_order`)
         ─▶ summary.json, _SUCCESS

Passes over the data: read, thresholds, joint, keys (one per selection family), the
refinement rounds (over cached key images: 2–4 rounds), flag (then, for the ``low_*``
filters with ``adjust_pred_probs``, a thresholds pass over the flagged rows only). With
``cache=False`` the read, thresholds, joint, keys and flag passes each re-read their partition;
the key images of each selection family stay on the workers either way (one unsigned integer
per row and class, the size of pred_probs). Each pass does K binary groupings per partition (a stable sort of n
0/1 labels and a copy of one column each), O(n·K) like reading the partition.

Outputs (``docs/outputs.md``, "Multi-label scans"): ``mask/`` (row_id, [id], is_label_issue,
label_quality), ``issues/`` ranked by (label_quality, row_id) with the given labels and the
classes whose binary problem flagged each row, ``summary.json`` with per-class statistics and
the AudioSet threshold counts, ``_SUCCESS`` last.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa

from labelscan import __version__, engine, multilabel, outcome, plan as planning, scan
from labelscan import multilabel_order as mlo
from labelscan import multilabel_passes as mlp
from labelscan.cluster import get_client, worker_memory_limit, worker_threads
from labelscan.errors import InputError, UsageError
from labelscan.io.commit import OutputCommit
from labelscan.io.multilabels import read_multilabel_partition
from labelscan.io.redact import protect_workers, redact
from labelscan.io.unique import check_unique_ids
from labelscan.options import LOW_SCORE_FILTERS, PRUNING_FILTERS, ScanOptions
from labelscan.runner import DaskRunner
from labelscan.stats.order import float_images

LIST_OF_INT = pa.list_(pa.int64())


@dataclass
class MultiLabelParquetSource:
    """One partition of a multi-label parquet set, read on the worker."""

    plan: object
    spec: object

    def load(self):
        return read_multilabel_partition(self.plan, self.spec)


@dataclass
class MultiLabelAnalysis:
    """Everything known after the driver planned the flag pass.

    Attributes
    ----------
    parts : list
        Per-partition handles (worker-resident on Dask).
    label_counts : numpy.ndarray, shape (K,)
        Rows having each class.
    class_stats : list of labelscan.plan.NoiseStatistics, length K
        Each class's binary statistics.
    num_label_issues : int
        Rows that are a ``confident_learning`` issue of any class (cleanlab's multi-label count).
    threshold_counts : numpy.ndarray, shape (T, 3)
        :func:`labelscan.multilabel.threshold_counts` of the whole set.
    request : mlp.MultiLabelRequest
        The same for every partition.
    cutoffs : list of list
        Per partition, its cutoffs of each selection family.
    timings : dict[str, float]
    """

    parts: list
    label_counts: np.ndarray
    class_stats: list
    num_label_issues: int
    threshold_counts: np.ndarray
    request: mlp.MultiLabelRequest
    cutoffs: list
    timings: dict


def check_labels(label_counts: np.ndarray, num_rows: int, filter_by: str) -> None:
    """cleanlab's multi-label label checks, from the class totals (raises :class:`InputError`)."""
    if not label_counts.any():
        raise InputError("no row has any label (cleanlab: max() arg is an empty sequence)")
    everywhere = np.flatnonzero(label_counts == num_rows)
    if len(everywhere):
        raise InputError(f"class {int(everywhere[0])} is a label of every row: its one-vs-rest problem has one "
                         "class (cleanlab: Labels must contain at least 2 classes.)")
    nowhere = np.flatnonzero(label_counts == 0)
    if filter_by == "predicted_neq_given" and len(nowhere):
        raise InputError(f"class {int(nowhere[0])} is a label of no row, which filter_by='predicted_neq_given' "
                         "refuses (cleanlab: Labels must contain at least 2 classes.)")


def class_options(options: ScanOptions, c: int) -> ScanOptions:
    """The binary options of class ``c`` (``num_to_remove_per_class[c]`` rows having ``c``)."""
    pruning = options.filter_by in PRUNING_FILTERS
    return replace(options, filter_by=options.filter_by if pruning else "confident_learning",
                   frac_noise=options.frac_noise if pruning else 1.0,
                   num_to_remove_per_class=None if options.num_to_remove_per_class is None
                   else (int(options.num_to_remove_per_class[c]), 0))


def binary_thresholds(runner, parts, with_class: np.ndarray, part_rows: np.ndarray, dtype):
    """Each class's binary confident thresholds over the rows of ``parts``, exactly cleanlab's.

    The rows of all ``parts`` in order are the set cleanlab's ``np.mean`` runs over; the means
    are merged from per-partition pairwise-sum pieces (:mod:`labelscan.stats.pairwise`).

    Parameters
    ----------
    parts : list
        Partition handles (:class:`labelscan.multilabel_passes.MultiLabelPartition` or sources).
    with_class : numpy.ndarray, shape (P, K), int64
        Rows of each partition having each class.
    part_rows : numpy.ndarray, shape (P,), int64
        Rows of each partition.
    dtype : numpy.dtype
        Of pred_probs.

    Returns
    -------
    totals : numpy.ndarray, shape (K, 2), int64
        Rows without / with each class.
    thresholds : list of numpy.ndarray, length K
        Each class's binary confident thresholds (2,).
    """
    binary_counts = np.stack([part_rows[:, None] - with_class, with_class], axis=2)   # (P, K, 2)
    totals = binary_counts.sum(axis=0)
    offsets = np.cumsum(binary_counts, axis=0) - binary_counts
    pieces = runner.map("thresholds", mlp.threshold_pieces, parts, list(offsets), class_totals=totals)
    return totals, runner.gather(runner.reduce("thresholds-merge", mlp.merge_threshold_pieces, pieces,
                                               finish=mlp.fold_thresholds, finish_args=(totals, dtype)))


def analyse(runner, sources, row_starts, num_rows: int, num_classes: int, dtype, options: ScanOptions,
            report=None, cache: bool = True) -> MultiLabelAnalysis:
    """Run every pass up to the flag pass (see the module docstring).

    Parameters
    ----------
    sources : list
        Partition sources in global row order (``load()`` gives ``(row_start, Y, P, ids)``).
    row_starts : numpy.ndarray, shape (P,)
    num_rows, num_classes : int
    dtype : numpy.dtype
        Of pred_probs.
    options : ScanOptions
    report : callable(stage, seconds), optional
    cache : bool
        Keep decoded partitions in worker memory between passes.
    """
    options.check_classes(num_classes)
    clock = engine.Stopwatch(report)
    parts = runner.map("read", mlp.prepare, sources) if cache else list(sources)
    counts = runner.gather(runner.map("counts", mlp.class_counts, parts))
    failures = [c for c in counts if isinstance(c, mlp.passes.InputFailure)]
    if failures:
        runner.release(parts)
        raise failures[0].error
    with_class = np.asarray(counts, dtype=np.int64).reshape(len(sources), num_classes)
    part_rows = np.diff(np.append(np.asarray(row_starts, dtype=np.int64), num_rows))
    label_counts = with_class.sum(axis=0)
    check_labels(label_counts, num_rows, options.filter_by)
    clock.lap("read")

    totals, thresholds = binary_thresholds(runner, parts, with_class, part_rows, dtype)
    clock.lap("thresholds")

    joint = runner.gather(runner.reduce("joint-merge", mlp.merge_joint_summaries, runner.map(
        "joint", mlp.joint_summary, parts, thresholds=thresholds,
        audioset_thresholds=multilabel.AUDIOSET_THRESHOLDS)))
    per_class_options = [class_options(options, c) for c in range(num_classes)]
    class_stats = [planning.noise_statistics(totals[c], thresholds[c], joint["joint_counts"][c],
                                             joint["num_off_diagonal_issues"][c], per_class_options[c])
                   for c in range(num_classes)]
    num_label_issues = int(joint["num_confident_issues"])
    clock.lap("joint")

    families, low_score, keyed = [], None, []
    if options.filter_by in LOW_SCORE_FILTERS:
        low_score = planning.low_score_tasks(num_label_issues, num_rows, np.float64)
        keyed.append((low_score, runner.map("keys", mlp.low_score_keys, parts, tasks=low_score)))
    elif options.filter_by in PRUNING_FILTERS:
        per_family = zip(*[planning.selection_families(stats, opts, dtype, num_rows)
                           for stats, opts in zip(class_stats, per_class_options)])
        families = [mlp.ClassFamily.of(list(tasks), dtype) for tasks in per_family]
        keyed = [(family.combined, runner.map("keys", mlp.family_keys, parts, family=family))
                 for family in families]
    cutoffs = []
    for tasks, keys in keyed:
        cutoffs.append(runner.gather(engine.find_cutoffs(runner, keys, tasks)))   # before the keys go
        runner.release(keys)
    clock.lap("cutoffs")
    request = mlp.MultiLabelRequest(filter_by=options.filter_by, thresholds=thresholds, families=families,
                                    low_score=low_score, rank_by=options.rank_by,
                                    adjust_pred_probs=options.adjust_pred_probs)
    return MultiLabelAnalysis(parts=parts, label_counts=label_counts, class_stats=class_stats,
                              num_label_issues=num_label_issues, threshold_counts=joint["threshold_counts"],
                              request=request, cutoffs=[[cut.for_partition(i) for cut in cutoffs]
                                                        for i in range(len(sources))],
                              timings=clock.timings)


@dataclass
class WrittenPartition:
    """Flag-pass result kept on the worker (what :func:`labelscan.scan.rank_issues` ranks).

    Attributes
    ----------
    entry : dict
        Manifest entry of the mask part.
    issues : dict[str, numpy.ndarray] or None
        Flagged rows sorted by (label_quality, row_id): ``row_id``, [``id``], ``given_labels``,
        [``issue_classes``], ``label_quality``, ``image`` (the order image of label_quality).
        None for the ``low_*`` filters.
    issues_per_class : numpy.ndarray, shape (K,), int64
        Rows flagged by each class's binary problem.
    rank_shift : int
        Bits dropped from the score images to get the ranking's top bits.
    default_order : dict[str, numpy.ndarray] or None
        ``low_*`` filters: the flagged rows sorted by (default multi-label score, row_id), the
        columns of ``issues`` with ``image`` the default score's; else None.
    flagged : labelscan.multilabel_passes.MultiLabelPartition or None
        ``low_*`` filters: the flagged rows' labels and predictions (E_p, K), in row order,
        which cleanlab scores on their own (:mod:`labelscan.multilabel_order`); else None.
    """

    entry: dict
    issues: dict | None
    issues_per_class: np.ndarray
    rank_shift: int
    default_order: dict | None = None
    flagged: mlp.MultiLabelPartition | None = None

    @property
    def num_issues(self) -> int:
        """Flagged rows of the partition."""
        return len((self.default_order if self.issues is None else self.issues)["row_id"])


def _lists(matrix: np.ndarray) -> np.ndarray:
    """Per row, the indices of its True entries: object array (n,) of int64 arrays."""
    lists = np.empty(len(matrix), dtype=object)
    lists[:] = [np.flatnonzero(row) for row in matrix]
    return lists


def write_partition(part, cutoffs: list, index: int, *, request: mlp.MultiLabelRequest, commit: OutputCommit):
    """Flag one partition, write its mask part, keep its issues sorted by (score, row) (``low_*``
    filters: by default score, and the flagged rows themselves, :mod:`labelscan.multilabel_order`).

    Returns
    -------
    WrittenPartition
    """
    part = mlp.as_partition(part)
    flagged, per_class, quality = mlp.flag(part, request, cutoffs)
    row_ids = part.row_ids
    columns = {"row_id": row_ids}
    if part.ids is not None:
        columns["id"] = part.ids
    columns.update(is_label_issue=flagged, label_quality=quality)
    entry = commit.write_mask_part(index, pa.table(columns))
    rows = np.flatnonzero(flagged)
    shift = scan._image_shift(quality.dtype)
    counts = np.count_nonzero(per_class, axis=0).astype(np.int64)
    if request.low_score is not None:
        default = quality if (request.rank_by, request.adjust_pred_probs) == ("self_confidence", False) else \
            mlp.quality_scores(part, "self_confidence", False, [None] * part.num_classes)
        flagged_rows = mlp.MultiLabelPartition(int(part.row_start), part.multi_hot[rows], part.pred_probs[rows])
        return WrittenPartition(entry=entry, issues=None, issues_per_class=counts, rank_shift=shift,
                                default_order=_issue_columns(part, rows, quality, None, default),
                                flagged=flagged_rows)
    return WrittenPartition(entry=entry, issues=_issue_columns(part, rows, quality, per_class, quality),
                            issues_per_class=counts, rank_shift=shift)


def _issue_columns(part, rows, quality, per_class, key) -> dict:
    """The issues columns of ``rows`` sorted by (``key``, row): ``row_id``, ``given_labels``,
    [``issue_classes``, unless ``per_class`` is None], ``label_quality``, [``id``] and ``image``
    (of ``key``); ``quality`` and ``key`` have shape (n,), ``per_class`` (n, K)."""
    images = float_images(key[rows]).astype(np.uint64)
    ranked = np.argsort(images, kind="stable")
    rows = rows[ranked]
    columns = {"row_id": part.row_ids[rows], "given_labels": _lists(part.multi_hot[rows]),
               "label_quality": quality[rows], "image": images[ranked]}
    if per_class is not None:
        columns["issue_classes"] = _lists(per_class[rows])
    if part.ids is not None:
        columns["id"] = part.ids[rows]
    return columns


def flagged_images(runner, written, summaries, options: ScanOptions, num_classes: int, dtype) -> list:
    """``low_*`` filters: the ``rank_by`` score images of every partition's flagged rows, as cleanlab
    scores them (on the flagged rows alone: with ``adjust_pred_probs``, each class's thresholds are
    the flagged rows' own, :func:`binary_thresholds` over the flagged rows kept on the workers).

    Parameters
    ----------
    written : list
        Handles of every partition's :class:`WrittenPartition`, in partition order.
    summaries : list of dict
        Their :func:`written_summary`.
    options : ScanOptions
        ``rank_by`` and ``adjust_pred_probs``.
    num_classes : int
    dtype : numpy.dtype
        Of pred_probs.

    Returns
    -------
    list
        Handles of :func:`labelscan.multilabel_order.pairing_images`, one per partition.
    """
    flagged = runner.map("flagged-rows", mlo.flagged_rows, written)
    thresholds = [None] * num_classes
    if options.adjust_pred_probs:
        with_class = np.asarray(runner.gather(runner.map("flagged-counts", mlp.class_counts, flagged)),
                                dtype=np.int64).reshape(len(written), num_classes)
        part_rows = np.asarray([s["num_issues"] for s in summaries], dtype=np.int64)
        _, thresholds = binary_thresholds(runner, flagged, with_class, part_rows, dtype)
    images = runner.map("pairing-images", mlo.pairing_images, flagged, method=options.rank_by,
                        adjust=options.adjust_pred_probs, thresholds=thresholds)
    runner.release(flagged)
    return images


def written_summary(written: WrittenPartition) -> dict:
    """The small part of a written partition the driver needs."""
    return {"entry": written.entry, "issues_per_class": written.issues_per_class,
            "rank_shift": written.rank_shift, "num_issues": written.num_issues}


def write_ranked(first_rank: int, index: int, commit: OutputCommit, *issue_sets) -> dict:
    """Merge one score range's issues from every partition, rank and write them."""
    merged = outcome.merge_ranked(list(issue_sets))
    columns = {"rank": pa.array(np.arange(first_rank, first_rank + len(merged["row_id"]), dtype=np.int64)),
               "row_id": pa.array(merged["row_id"])}
    if "id" in merged:
        columns["id"] = pa.array(merged["id"])
    columns["given_labels"] = pa.array(list(merged["given_labels"]), type=LIST_OF_INT)
    if "issue_classes" in merged:
        columns["issue_classes"] = pa.array(list(merged["issue_classes"]), type=LIST_OF_INT)
    columns["label_quality"] = pa.array(merged["label_quality"])
    return commit.write_table(f"issues/part-{index:05d}.parquet", pa.table(columns))


def statistics_section(analysis: MultiLabelAnalysis) -> dict:
    """``summary.json``'s ``statistics`` of a multi-label scan (per class: the binary statistics)."""
    per_class = [stats.as_dict() for stats in analysis.class_stats]
    section = {f"class_{name}": [entry[name] for entry in per_class] for name in per_class[0]}
    best, f1 = multilabel.best_threshold(analysis.threshold_counts)
    section.update(label_counts=analysis.label_counts.tolist(), num_label_issues=analysis.num_label_issues,
                   audioset={"thresholds": multilabel.AUDIOSET_THRESHOLDS.tolist(), "micro_f1": f1.tolist(),
                             "counts": np.asarray(analysis.threshold_counts).tolist(), "threshold": best})
    return section


def layout_hash(plan, issues_per_part: int) -> str:
    """Hash of what besides config and input decides the parts' bytes (resumed parts must match it)."""
    layout = {"partitions": [asdict(spec) for spec in plan.partitions], "issues_per_part": issues_per_part,
              "versions": scan._versions(), "multi_label": True}
    return hashlib.sha256(json.dumps(layout, sort_keys=True, default=str).encode()).hexdigest()


def run_multilabel_scan(input_path, out_path, *, options: ScanOptions, label_column="label",
                        pred_probs_column="pred_probs", id_column=None, storage_options=None, client=None,
                        scheduler=None, rows_per_partition=None, overwrite=False, cache="auto", retries=2,
                        issues_per_part=scan.ISSUES_PER_PART, report=None, backend="auto", resume=False,
                        class_names=None, row_sum_tolerance=None, on_bad_rows="error") -> dict:
    """Scan a multi-label parquet prediction set and commit the outputs. See :func:`labelscan.scan`.

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    started = time.perf_counter()
    if on_bad_rows != "error":
        raise UsageError("multi-label scans stop at the first bad row (on_bad_rows='error')")
    if row_sum_tolerance is not None:
        raise UsageError("row_sum_tolerance does not apply to multi-label scans (rows need not sum to 1)")
    if backend == "cupy":
        raise UsageError("multi-label scans run on the CPU (backend='numpy' or 'auto')")
    columns = {"label_column": label_column, "pred_probs_column": pred_probs_column, "id_column": id_column,
               "multi_label": True}
    with get_client(client, scheduler) as dask_client:
        from labelscan.batching import shorten_batching   # imports distributed: not at labelscan's import

        shorten_batching(dask_client)
        timings = {"cluster": round(time.perf_counter() - started, 6)}
        protect_workers(dask_client, storage_options, [out_path, *scan._paths(input_path)])
        plan = scan._plan(input_path, columns, storage_options, rows_per_partition, worker_threads(dask_client),
                          memory_limit=worker_memory_limit(dask_client))
        options.check_classes(plan.num_classes)
        class_names = scan._class_names(class_names, plan)
        commit = OutputCommit(out_path, storage_options=storage_options, overwrite=overwrite,
                              config_hash=scan.config_hash(options, columns), input_fingerprint=plan.fingerprint,
                              track_progress=True, resume=resume, layout=layout_hash(plan, issues_per_part))
        commit.check()   # a destination begin() would refuse fails the scan before any pass
        reader = plan.reader()
        sources = [MultiLabelParquetSource(reader, spec) for spec in plan.partitions]
        row_starts = np.asarray([spec.row_start for spec in plan.partitions], dtype=np.int64)
        timings["plan"] = round(time.perf_counter() - started - timings["cluster"], 6)
        runner = DaskRunner(dask_client, retries=retries)
        keep_cached = scan.cached_partitions(cache, plan, dask_client) == len(plan.partitions)   # all or none
        analysis = analyse(runner, sources, row_starts, plan.num_rows, plan.num_classes, plan.pred_probs_dtype,
                           options, report=report, cache=keep_cached)
        timings.update(analysis.timings)
        clock = engine.Stopwatch(report)
        if id_column is not None:
            check_unique_ids(runner, analysis.parts, plan)
            clock.lap("unique-ids")
        commit.begin()
        written = runner.map("flag", write_partition, analysis.parts, analysis.cutoffs,
                             list(range(len(sources))), request=analysis.request, commit=commit)
        runner.release(analysis.parts)
        summaries = runner.gather(runner.map("flag-summary", written_summary, written))
        clock.lap("flag")
        entries = [s["entry"] for s in summaries]
        if options.filter_by in LOW_SCORE_FILTERS:
            images = flagged_images(runner, written, summaries, options, plan.num_classes, plan.pred_probs_dtype)
            entries += mlo.write_low_score_ranked(runner, written, images, summaries, commit, issues_per_part,
                                                  write_ranked)
            runner.release(images)
        else:
            entries += scan.ranked_entries(runner.gather(scan.rank_issues(
                runner, written, commit, issues_per_part, num_issues=scan._num_issues(summaries), write=write_ranked)))
        runner.release(written)
        clock.lap("rank")
        timings.update(clock.timings)
    issues_per_class = np.sum([s["issues_per_class"] for s in summaries], axis=0).astype(np.int64)
    num_issues = int(sum(s["num_issues"] for s in summaries))
    summary = {
        "labelscan_version": __version__,
        "versions": scan._versions(),
        "config": {**asdict(options), **columns, "confident_joint": None},
        "config_hash": commit.config_hash,
        "input": {"path": redact(input_path if isinstance(input_path, str) else list(input_path)),
                  "fingerprint": plan.fingerprint},
        "multi_label": True,
        "num_rows": plan.num_rows,
        "num_classes": plan.num_classes,
        "num_partitions": len(sources),
        "pred_probs_dtype": np.dtype(plan.pred_probs_dtype).name,
        "class_names": class_names,
        "cached_partitions": keep_cached,
        "num_cached_partitions": len(sources) if keep_cached else 0,
        "backend": "numpy",
        "statistics": statistics_section(analysis),
        "num_issues": num_issues,
        "num_issues_per_class": None if options.filter_by in LOW_SCORE_FILTERS else issues_per_class.tolist(),
        "timings": {**timings, "total": round(time.perf_counter() - started, 6)},
    }
    entries.append(commit.write_json("summary.json", summary))
    commit.commit(entries, {"num_issues": summary["num_issues"], "num_rows": plan.num_rows})
    return summary
