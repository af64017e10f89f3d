"""Evaluate label issues and label-quality scores against verified (true) labels, distributedly.

What is measured (``errors`` = rows whose given label differs from the true label):

- the mask (flagged rows): precision, recall and F1 against the errors;
- each label-quality score (``self_confidence``, ``normalized_margin`` with and without
  ``adjust_pred_probs``, ``confidence_weighted_entropy``), as a ranking of the errors, the way
  the label-quality benchmark scores them (Kuan & Mueller, DataPerf 2022): with the *error
  score* ``1 − label_quality`` (computed in the score's dtype, exactly as ``1 - scores`` in
  numpy), AUROC = ``sklearn.metrics.roc_auc_score(errors, 1 − scores)``, AUPRC =
  ``average_precision_score(errors, 1 − scores)`` and lift at k = number of errors =
  (errors among the k highest error scores / k) / (errors / N).

Exactness. AUROC and AUPRC depend on the global order of the scores, ties included, so
partitions cannot simply be averaged. Both are functions of the table ``value → (errors,
clean rows)`` over the *distinct* error-score values in ascending order:

- AUROC = ``Σ_v e_v·(2·c_below(v) + c_v) / (2·E·C)`` (Mann–Whitney; equal to sklearn's
  trapezoid over the ROC curve, ties counting one half). ``2U`` is summed in integers and
  divided once, so the AUROC is the correctly rounded value.
- AUPRC = ``Σ_v (e_v / E) · precision(≥ v)`` over the distinct values (sklearn's step sum).
- lift: the k-th highest value ``v*`` is found from the counts; rows tied at ``v*`` count
  with their average error rate (the expected value under any tie order; equal to an
  argsort-based lift whenever no tie straddles the cut).

The table is built without moving rows to the driver: each partition keeps its error-score
images (``labelscan.stats.order.float_images``, order-preserving integers) sorted on the
worker; the image space is cut into ranges of at most ``range_rows`` rows by merged
histograms (refined 12 bits at a time until every range is small enough or a single value);
for every range the partitions' sorted ``(value, errors, rows)`` runs are merged by a tree
reduction and one task turns the merged run into the range's exact partial sums, given the
counts above and below it. Only per-range scalars reach the driver.

Faces: :func:`evaluate` (arrays in memory, or a finished scan's output directory, writing
``evaluation.json`` there) and ``labelscan evaluate OUT --true-labels PATH|COLUMN``.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from labelscan.errors import InputError, UsageError
from labelscan.passes import InputFailure
from labelscan.stats.order import float_images

SCORE_VARIANTS = (
    ("self_confidence", False),
    ("self_confidence", True),
    ("normalized_margin", False),
    ("normalized_margin", True),
    ("confidence_weighted_entropy", False),
)
"""(method, adjust_pred_probs) pairs evaluated by default (the benchmark's five)."""

RANGE_ROWS = 1 << 22
"""Most rows of one score range (its merged run holds at most this many distinct values)."""

REFINE_BITS = 12
"""Each refinement round splits a too-large range into ``2**REFINE_BITS`` sub-ranges."""

IMAGE_END = 1 << 64
"""Exclusive end of the image space (images are uint64)."""

EVALUATION_NAME = "evaluation.json"


# ---------------------------------------------------------------------------------------------
# partitions


class Packed:
    """An argument Dask must ship as one opaque object (it would walk nested lists looking for
    tasks, and image bounds up to 2**64 do not fit its integer encoding)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __getstate__(self):
        return self.value

    def __setstate__(self, value):
        self.value = value


@dataclass
class ArrayEvalSource:
    """A slice of in-memory arrays."""

    row_start: int
    labels: np.ndarray
    pred_probs: np.ndarray | None
    true_labels: np.ndarray
    mask: np.ndarray | None

    def load(self):
        return self.row_start, self.labels, self.pred_probs, self.true_labels, self.mask


@dataclass
class ScanEvalSource:
    """One input partition of a finished scan, its true labels and its slice of the scan's mask.

    Attributes
    ----------
    plan, spec :
        :class:`labelscan.io.dataset.DatasetPlan` and one of its partitions.
    truth : dict
        ``{"column": name}`` (a column of the input set), ``{"npy": path, "fs": filesystem}``
        or ``{"array": true labels of this partition}``.
    mask_parts : list of (path, row_start, num_rows, sha256)
        The scan's row-aligned mask parts (paths as ``out_fs`` sees them) and their checksums
        in the scan's manifest (each part read is verified).
    out_fs : fsspec.AbstractFileSystem
    with_scores : bool
        Read pred_probs (scores are evaluated).
    validation : dict
        The scan's ``on_bad_rows`` and ``row_sum_tolerance``: with ``on_bad_rows="skip"`` the
        rows the scan skipped are left out of the evaluation too.
    """

    plan: object
    spec: object
    truth: dict
    mask_parts: list
    out_fs: object
    with_scores: bool = True
    validation: dict = field(default_factory=dict)

    def load(self):
        from labelscan.io.dataset import read_labels, read_partition

        start, stop = self.spec.row_start, self.spec.row_start + self.spec.num_rows
        true_labels, mask = self._true_labels(start, stop), self._mask(start, stop)
        self._check_classes(true_labels)
        if self.validation.get("on_bad_rows") == "skip":
            data = read_partition(self.plan, self.spec, self.validation.get("row_sum_tolerance"), "skip")
            kept = data.rejected.kept_rows()
            pred_probs = data.pred_probs if self.with_scores else None
            return start, data.labels, pred_probs, np.asarray(true_labels)[kept], mask[kept]
        if self.with_scores:
            data = read_partition(self.plan, self.spec)
            labels, pred_probs = data.labels, data.pred_probs
        else:
            labels, pred_probs = read_labels(self.plan, self.spec), None
        return start, labels, pred_probs, true_labels, mask

    def _true_labels(self, start, stop):
        from labelscan.io.columns import decode_labels
        from labelscan.io.dataset import _read_table

        if "array" in self.truth:
            return self.truth["array"]
        if "column" in self.truth:
            table = _read_table(self.plan, self.spec, [self.truth["column"]])
            return decode_labels(table.column(self.truth["column"]), self.spec)
        return read_npy_rows(self.truth["fs"], self.truth["npy"], start, stop)

    def _check_classes(self, true_labels):
        """Raise :class:`InputError` naming where the first true label outside ``[0, K)`` is.

        Every row is checked, rows the scan skipped included.
        """
        from labelscan.io.validate import row_error

        outside = _rows_outside_classes(true_labels, self.plan.num_classes)
        if not len(outside):
            return
        message = f"true label values outside [0, {self.plan.num_classes})"
        if "column" in self.truth:
            raise row_error(self.spec, f"{message} (column {self.truth['column']!r})", outside)
        first = self.spec.row_start + int(outside[0])
        location = {"path": self.truth["npy"], "row": first} if "npy" in self.truth else {"global_row": first}
        raise InputError(message, **location, num_rows_affected=len(outside))

    def _mask(self, start, stop):
        import hashlib

        import pyarrow as pa
        import pyarrow.parquet as pq

        pieces = []
        for path, part_start, part_rows, sha256 in self.mask_parts:
            low, high = max(start, part_start), min(stop, part_start + part_rows)
            if low >= high:
                continue
            data = self.out_fs.cat_file(path)
            if hashlib.sha256(data).hexdigest() != sha256:
                raise InputError(f"checksum mismatch for {path}: the scan changed since it was committed")
            column = pq.read_table(pa.BufferReader(data), columns=["is_label_issue"]).column("is_label_issue")
            pieces.append(column.to_numpy()[low - part_start:high - part_start])
        mask = np.concatenate(pieces) if pieces else np.zeros(0, dtype=bool)
        if len(mask) != stop - start:
            raise InputError(f"the scan's mask parts cover {len(mask)} of rows [{start}, {stop}): "
                             "the input changed since the scan")
        return mask.astype(bool)


def read_npy_rows(fs, path, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of a 1-D ``.npy`` file, reading only those bytes.

    Returns
    -------
    numpy.ndarray, shape (stop - start,), int64
    """
    with fs.open(path, "rb") as handle:
        shape, _, dtype = _npy_header(handle, path)
        if len(shape) != 1 or dtype.hasobject:
            raise InputError(f"true labels must be a 1-D numeric array; {path} holds shape {shape} of {dtype}")
        if stop > shape[0]:
            raise InputError(f"true labels {path} hold {shape[0]} rows; the scan has at least {stop}")
        handle.seek(handle.tell() + start * dtype.itemsize)
        values = np.frombuffer(handle.read((stop - start) * dtype.itemsize), dtype=dtype)
    if dtype.kind == "f" and not np.all(values == np.round(values)):
        raise InputError(f"true labels in {path} must be integers")
    return values.astype(np.int64)


def _rows_outside_classes(true_labels, num_classes: int) -> np.ndarray:
    """Positions of the true labels that are not class indices (outside ``[0, num_classes)``).

    Returns
    -------
    numpy.ndarray
        (m,) sorted row positions, empty when every label is a class index.
    """
    true_labels = np.asarray(true_labels)
    return np.flatnonzero((true_labels < 0) | (true_labels >= num_classes))


def npy_length(fs, path) -> int:
    """Number of rows of a 1-D ``.npy`` file (header only)."""
    with fs.open(path, "rb") as handle:
        shape, _, _ = _npy_header(handle, path)
    return int(shape[0]) if len(shape) == 1 else -1


def _npy_header(handle, path):
    """``(shape, fortran_order, dtype)`` of an open ``.npy`` file, positioned at its data."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(handle)
        if version == (1, 0):
            return npy_format.read_array_header_1_0(handle)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(handle)
    except ValueError as error:
        raise InputError(f"{path} is not a .npy file ({error})") from error
    raise InputError(f"{path}: .npy format version {version} is not supported for true labels")


@dataclass
class ScoreRun:
    """One score of one partition: error-score images sorted ascending, and their errors.

    Attributes
    ----------
    images : numpy.ndarray, shape (n,), uint64
    error_prefix : numpy.ndarray, shape (n + 1,), int64
        ``error_prefix[i]`` = errors among the ``i`` smallest images.
    failure : str or None
        Why the score could not be computed (then the arrays are empty).
    """

    images: np.ndarray
    error_prefix: np.ndarray
    failure: str | None = None

    def positions(self, edges: np.ndarray) -> np.ndarray:
        """Index of the first image ``>= edge`` for each edge (``IMAGE_END`` → n)."""
        edges = np.asarray(edges, dtype=object)
        at_end = edges >= IMAGE_END
        clipped = np.where(at_end, 0, edges).astype(np.uint64)
        found = np.searchsorted(self.images, clipped, side="left")
        found[at_end] = len(self.images)
        return found


@dataclass
class EvalPartition:
    """Worker-resident evaluation state of one partition."""

    num_rows: int
    num_errors: int
    mask_counts: np.ndarray | None   # [flagged, flagged errors]
    runs: list


def error_scores(labels, pred_probs, method, adjust, thresholds) -> np.ndarray:
    """``1 − label_quality`` of every row (in the score's dtype), in row order."""
    from labelscan.kernels import grouped

    part = grouped.group_by_label(0, labels, pred_probs)
    scores = part.to_row_order(grouped.label_quality_scores(part, method, adjust, thresholds))
    return 1 - scores


def _score_run(errors, values) -> ScoreRun:
    images = float_images(np.ascontiguousarray(values)).astype(np.uint64)
    order = np.argsort(images, kind="stable")
    prefix = np.zeros(len(images) + 1, dtype=np.int64)
    np.cumsum(errors[order], out=prefix[1:])
    return ScoreRun(images=images[order], error_prefix=prefix)


def prepare(source, *, variants, thresholds) -> EvalPartition | InputFailure:
    """Load a partition, compare labels, and sort its error scores (kept on the worker)."""
    try:
        row_start, labels, pred_probs, true_labels, mask = source.load()
        labels = np.asarray(labels).astype(np.int64)
        true_labels = np.asarray(true_labels)
        if len(true_labels) != len(labels):
            raise InputError(f"rows [{row_start}, {row_start + len(labels)}): {len(true_labels)} true labels "
                             f"for {len(labels)} rows")
    except InputError as error:
        return InputFailure(error)
    errors = labels != true_labels
    mask_counts = None
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        mask_counts = np.asarray([np.count_nonzero(mask), np.count_nonzero(mask & errors)], dtype=np.int64)
    runs = []
    for method, adjust in (variants if pred_probs is not None else ()):
        try:
            values = error_scores(labels, pred_probs, method, adjust, thresholds)
        except ValueError as error:   # confidence_weighted_entropy of probabilities above 1
            runs.append(ScoreRun(np.zeros(0, np.uint64), np.zeros(1, np.int64), failure=str(error)))
            continue
        runs.append(_score_run(errors, values))
    return EvalPartition(num_rows=len(labels), num_errors=int(np.count_nonzero(errors)),
                         mask_counts=mask_counts, runs=runs)


def partition_counts(state) -> dict:
    """The small facts of a partition (or its InputFailure)."""
    if isinstance(state, InputFailure):
        return {"failure": state}
    return {"rows": state.num_rows, "errors": state.num_errors, "mask": state.mask_counts,
            "failures": [run.failure for run in state.runs]}


def merge_counts(*counts) -> dict:
    """Sum partition facts (a tree-reduce step); the first failure wins."""
    failure = next((c["failure"] for c in counts if "failure" in c), None)
    if failure is not None:
        return {"failure": failure}
    masks = [c["mask"] for c in counts]
    return {"rows": sum(c["rows"] for c in counts), "errors": sum(c["errors"] for c in counts),
            "mask": None if any(m is None for m in masks) else np.sum(masks, axis=0),
            "failures": [next((f for f in fs if f), None) for fs in zip(*[c["failures"] for c in counts])]}


def interval_counts(state: EvalPartition, requests: Packed) -> list:
    """Rows and errors of a partition in sub-intervals of the image space.

    Parameters
    ----------
    requests : Packed list (one per score) of list of edge lists
        Each edge list ``[b_0 < b_1 < … < b_m]`` (Python ints, ``b_m ≤ 2**64``) asks for the
        counts of ``[b_i, b_{i+1})``.

    Returns
    -------
    list (per score) of list (per edge list) of numpy.ndarray, shape (2, m), int64
        Rows and errors per sub-interval.
    """
    out = []
    for run, edge_lists in zip(state.runs, requests.value):
        per_score = []
        for edges in edge_lists:
            positions = run.positions(edges)
            per_score.append(np.stack([np.diff(positions), np.diff(run.error_prefix[positions])]))
        out.append(per_score)
    return out


def merge_interval_counts(*counts) -> list:
    """Elementwise sum of :func:`interval_counts` results (a tree-reduce step)."""
    return [[np.sum(arrays, axis=0) for arrays in zip(*per_score)] for per_score in zip(*counts)]


def range_run(state: EvalPartition, score: int, bounds: Packed) -> dict:
    """The partition's distinct values in ``[low, high) = bounds.value`` with their row and error
    counts (sorted)."""
    run = state.runs[score]
    start, stop = run.positions(list(bounds.value))
    images = run.images[start:stop]
    if not len(images):
        return {"values": images, "rows": np.zeros(0, np.int64), "errors": np.zeros(0, np.int64)}
    firsts = np.flatnonzero(np.concatenate([[True], images[1:] != images[:-1]]))
    bounds = np.concatenate([firsts, [len(images)]]) + start
    return {"values": images[firsts], "rows": np.diff(bounds).astype(np.int64),
            "errors": np.diff(run.error_prefix[bounds])}


def merge_runs(*runs) -> dict:
    """Merge sorted distinct-value runs, adding the counts of equal values (a tree-reduce step)."""
    values = np.concatenate([r["values"] for r in runs])
    rows = np.concatenate([r["rows"] for r in runs])
    errors = np.concatenate([r["errors"] for r in runs])
    if not len(values):
        return {"values": values, "rows": rows, "errors": errors}
    order = np.argsort(values, kind="stable")
    values, rows, errors = values[order], rows[order], errors[order]
    firsts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
    return {"values": values[firsts], "rows": np.add.reduceat(rows, firsts),
            "errors": np.add.reduceat(errors, firsts)}


def range_partial(run: dict, *, num_errors: int, clean_below: int, rows_above: int, errors_above: int,
                  k: int) -> dict:
    """Exact partial sums of one score range, given the counts of the ranges around it.

    Parameters
    ----------
    run : dict
        The range's merged distinct values (ascending) with ``rows`` and ``errors``.
    num_errors : int
        E, errors in the dataset.
    clean_below : int
        Clean rows with a smaller error score (ranges below).
    rows_above, errors_above : int
        Rows and errors with a larger error score (ranges above).
    k : int
        Lift cut (rows with the highest error scores).

    Returns
    -------
    dict
        ``twice_u`` (int, twice the Mann–Whitney U of this range's errors), ``ap`` (float, this
        range's share of the average precision), ``top_errors`` (float or None: expected errors
        among the top ``k`` when the cut falls in this range).
    """
    errors = run["errors"].astype(np.int64)
    clean = run["rows"].astype(np.int64) - errors
    below = clean_below + np.cumsum(clean) - clean
    weights = 2 * below + clean
    if len(errors) and int(errors.sum()) * int(weights.max()) >= 2 ** 63:   # beyond int64: Python ints
        twice_u = sum(int(e) * int(w) for e, w in zip(errors, weights))
    else:
        twice_u = int(np.sum(errors * weights, dtype=np.int64))
    ap = 0.0
    top_errors = None
    if len(errors):
        rows_desc, errors_desc = run["rows"][::-1].astype(np.int64), errors[::-1]
        true_positives = errors_above + np.cumsum(errors_desc)
        predicted = rows_above + np.cumsum(rows_desc)
        if num_errors:
            ap = float(np.sum((errors_desc / num_errors) * (true_positives / predicted)))
        if rows_above < k <= predicted[-1]:
            j = int(np.searchsorted(predicted, k, side="left"))
            count_above = int(predicted[j] - rows_desc[j])
            errors_before = int(true_positives[j] - errors_desc[j])
            top_errors = errors_before + (k - count_above) * (errors_desc[j] / rows_desc[j])
    return {"twice_u": twice_u, "ap": ap, "top_errors": top_errors}


# ---------------------------------------------------------------------------------------------
# the driver


def _split(low: int, high: int, bits: int) -> list:
    width = -(-(high - low) // (1 << bits))
    edges = list(range(low, high, width))
    return edges + [high]


def _score_ranges(runner, states, num_rows, num_errors, num_scores, range_rows) -> list:
    """Per score: consecutive image ranges ``(low, high, rows, errors)`` of ≤ ``range_rows`` rows."""
    intervals = [[(0, IMAGE_END, num_rows, num_errors)] for _ in range(num_scores)]
    while True:
        heavy = [[iv for iv in score if iv[2] > range_rows and iv[1] - iv[0] > 1] for score in intervals]
        if not any(heavy):
            break
        requests = [[_split(iv[0], iv[1], REFINE_BITS) for iv in score] for score in heavy]
        counts = runner.gather(runner.reduce(
            "evaluate-histogram-merge", merge_interval_counts,
            runner.map("evaluate-histogram", interval_counts, states, requests=Packed(requests))))
        refined = []
        for score, heavy_score, edge_lists, count_lists in zip(intervals, heavy, requests, counts):
            split = {id(iv): [(a, b, int(r), int(e)) for a, b, r, e in
                              zip(edges[:-1], edges[1:], counted[0], counted[1]) if r]
                     for iv, edges, counted in zip(heavy_score, edge_lists, count_lists)}
            refined.append([piece for iv in score for piece in split.get(id(iv), [iv])])
        intervals = refined
    ranges = []
    for score in intervals:
        packed, current = [], None
        for low, high, rows, errors in score:
            if current is not None and current[2] + rows <= range_rows:
                current = (current[0], high, current[2] + rows, current[3] + errors)
                continue
            if current is not None:
                packed.append(current)
            current = (low, high, rows, errors)
        if current is not None:
            packed.append(current)
        ranges.append(packed)
    return ranges


def _finish_score(partials, num_rows, num_errors) -> dict:
    num_clean = num_rows - num_errors
    twice_u = sum(p["twice_u"] for p in partials)
    top = [p["top_errors"] for p in partials if p["top_errors"] is not None]
    return {
        "auroc": twice_u / (2 * num_errors * num_clean) if num_errors and num_clean else None,
        "auprc": math.fsum(p["ap"] for p in partials) if num_errors else None,
        "lift_at_num_errors": (top[0] / num_errors) / (num_errors / num_rows) if num_errors and top else None,
    }


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def mask_metrics(flagged: int, flagged_errors: int, num_errors: int) -> dict:
    """Precision, recall and F1 of a mask with ``flagged`` rows, ``flagged_errors`` of them errors."""
    flagged, flagged_errors, num_errors = int(flagged), int(flagged_errors), int(num_errors)
    return {
        "num_flagged": flagged,
        "true_positives": flagged_errors,
        "false_positives": flagged - flagged_errors,
        "false_negatives": num_errors - flagged_errors,
        "precision": _ratio(flagged_errors, flagged),
        "recall": _ratio(flagged_errors, num_errors),
        "f1": _ratio(2 * flagged_errors, flagged + num_errors),
    }


def evaluate_sources(runner, sources, *, variants=SCORE_VARIANTS, thresholds=None,
                     range_rows: int = RANGE_ROWS) -> dict:
    """Evaluate partitions on any runner (the distributed core of :func:`evaluate`).

    Returns
    -------
    dict
        ``num_rows``, ``num_true_errors``, ``true_error_rate``, ``mask`` (or None) and
        ``scores`` (one entry per variant: ``method``, ``adjust_pred_probs``, ``auroc``,
        ``auprc``, ``lift_at_num_errors``, ``k``, ``error``).
    """
    states = runner.map("evaluate-read", prepare, sources, variants=list(variants), thresholds=thresholds)
    try:
        totals = runner.gather(runner.reduce("evaluate-counts-merge", merge_counts,
                                             runner.map("evaluate-counts", partition_counts, states)))
        if "failure" in totals:
            raise totals["failure"].error
        num_rows, num_errors = int(totals["rows"]), int(totals["errors"])
        scored = len(totals["failures"]) > 0
        result = {"num_rows": num_rows, "num_true_errors": num_errors,
                  "true_error_rate": _ratio(num_errors, num_rows),
                  "mask": None if totals["mask"] is None else mask_metrics(*totals["mask"], num_errors),
                  "error_score": "1 - label_quality", "scores": []}
        if not scored:
            return result
        ranges = _score_ranges(runner, states, num_rows, num_errors, len(variants), range_rows)
        handles = []
        for index, score_ranges in enumerate(ranges):
            rows_below = errors_below = 0
            per_score = []
            for low, high, rows, errors in score_ranges:
                runs = runner.map("evaluate-range", range_run, states, score=index, bounds=Packed((low, high)))
                merged = runner.reduce("evaluate-range-merge", merge_runs, runs)
                per_score.append(runner.submit(
                    "evaluate-range-score", range_partial, merged, num_errors=num_errors,
                    clean_below=rows_below - errors_below, rows_above=num_rows - rows_below - rows,
                    errors_above=num_errors - errors_below - errors, k=num_errors))
                rows_below, errors_below = rows_below + rows, errors_below + errors
            handles.append(per_score)
        partials = runner.gather(handles)
    finally:
        runner.release(states)
    for (method, adjust), failure, score_partials in zip(variants, totals["failures"], partials):
        entry = {"method": method, "adjust_pred_probs": bool(adjust), "k": num_errors, "error": failure}
        entry.update({"auroc": None, "auprc": None, "lift_at_num_errors": None} if failure
                     else _finish_score(score_partials, num_rows, num_errors))
        result["scores"].append(entry)
    return result


# ---------------------------------------------------------------------------------------------
# faces


def _as_mask(out_or_mask, num_rows):
    values = np.asarray(out_or_mask)
    if values.dtype == bool:
        if values.shape != (num_rows,):
            raise UsageError(f"the mask has shape {values.shape}; expected ({num_rows},)")
        return values
    if values.dtype.kind in "iu":   # indices of flagged rows (a ranked answer)
        mask = np.zeros(num_rows, dtype=bool)
        mask[values] = True
        return mask
    raise UsageError("out_or_mask must be a scan's output directory, a boolean mask or indices of flagged rows")


def _array_thresholds(labels, pred_probs, num_partitions):
    from labelscan.compat import _analyse
    from labelscan.options import ScanOptions

    _, analysis = _analyse(labels, pred_probs, ScanOptions(filter_by="confident_learning"), num_partitions)
    return analysis.stats.confident_thresholds


def evaluate(out_or_mask, true_labels, *, labels=None, pred_probs=None, variants=SCORE_VARIANTS,
             num_partitions=1, input_path=None, storage_options=None, client=None, scheduler=None,
             output=None, write=True, range_rows=RANGE_ROWS, progress=None) -> dict:
    """Precision/recall of the flagged rows and AUROC/AUPRC/lift of label-quality scores vs true labels.

    Parameters
    ----------
    out_or_mask : str or numpy.ndarray
        A finished scan's output directory (local path or fsspec URL), or in memory a boolean
        mask (N,) / int indices of flagged rows (``None``: scores only).
    true_labels : numpy.ndarray, str
        In memory: (N,) verified labels. For a scan: an array, a ``.npy`` path/URL, or the name
        of a column of the scan's input set.
    labels, pred_probs : numpy.ndarray, optional
        In memory: the given labels (N,) and predictions (N, K) (scores need pred_probs).
    variants : sequence of (method, adjust_pred_probs)
        Scores to evaluate (default :data:`SCORE_VARIANTS`; ``()`` for the mask only).
    num_partitions : int
        In memory: cut the rows into this many partitions (the distributed plan, in process).
    input_path : str, optional
        A scan's input set, when it moved since the scan (default: the path in ``summary.json``).
    storage_options, client, scheduler :
        For a scan: fsspec options, and the Dask cluster (default: a local one).
    output : str, optional
        Where to write ``evaluation.json`` (default ``OUT/evaluation.json``).
    write : bool
        Write ``evaluation.json`` (scans only).
    range_rows : int
        Most rows per score range (memory of one merge task).

    Returns
    -------
    dict
        ``num_rows``, ``num_true_errors``, ``true_error_rate``, ``mask`` (``num_flagged``,
        ``true_positives``, ``false_positives``, ``false_negatives``, ``precision``, ``recall``,
        ``f1``; None without a mask) and ``scores`` (``method``, ``adjust_pred_probs``,
        ``auroc``, ``auprc``, ``lift_at_num_errors``, ``k`` = number of true errors, ``error``).
    """
    if isinstance(out_or_mask, str):
        return evaluate_scan(out_or_mask, true_labels, variants=variants, input_path=input_path,
                             storage_options=storage_options, client=client, scheduler=scheduler,
                             output=output, write=write, range_rows=range_rows, progress=progress)
    from labelscan.compat import split_rows, validate_arrays
    from labelscan.runner import InProcessRunner

    if labels is None:
        raise UsageError("evaluating in memory needs the given labels (labels=)")
    labels = np.asarray(labels)
    true_labels = np.asarray(true_labels)
    if true_labels.shape != labels.shape:
        raise UsageError(f"true_labels has shape {true_labels.shape}; labels {labels.shape}")
    # K from pred_probs when given; without them only negative labels are known to be wrong
    num_classes = np.shape(pred_probs)[1] if pred_probs is not None else np.iinfo(np.int64).max
    outside = _rows_outside_classes(true_labels, num_classes)
    if len(outside):
        raise InputError(f"true label values outside [0, {'K' if pred_probs is None else num_classes})",
                         global_row=int(outside[0]), num_rows_affected=len(outside))
    mask = None if out_or_mask is None else _as_mask(out_or_mask, len(labels))
    thresholds = None
    if pred_probs is not None and len(variants):
        labels = validate_arrays(labels, pred_probs, allow_one_class=True)
        if any(adjust for _, adjust in variants):
            thresholds = _array_thresholds(labels, pred_probs, num_partitions)
    else:
        pred_probs = None
    bounds = split_rows(len(labels), num_partitions)
    sources = [ArrayEvalSource(int(a), labels[a:b], None if pred_probs is None else pred_probs[a:b],
                               true_labels[a:b], None if mask is None else mask[a:b])
               for a, b in zip(bounds[:-1], bounds[1:])]
    return evaluate_sources(InProcessRunner(), sources, variants=variants if pred_probs is not None else (),
                            thresholds=thresholds, range_rows=range_rows)


def _mask_parts(out, manifest, storage_options) -> tuple:
    """The scan's mask parts with their row ranges (parquet footers) and manifest checksums."""
    import fsspec
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    entries = sorted((entry for entry in manifest["files"] if entry["path"].startswith("mask/")),
                     key=lambda entry: entry["path"])
    paths = [f"{root.rstrip('/')}/{entry['path']}" for entry in entries]

    def rows(path):
        with fs.open(path, "rb") as handle:
            try:
                return pq.ParquetFile(handle).metadata.num_rows
            except (OSError, ValueError) as error:   # pyarrow's ArrowInvalid is a ValueError
                if isinstance(error, FileNotFoundError):
                    raise InputError(f"the scan at {out} lists {path}, which is missing") from error
                raise InputError(f"cannot read the mask part {path} of the scan at {out} ({error})") from error

    with ThreadPoolExecutor(max_workers=16) as pool:
        counts = list(pool.map(rows, paths))
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    return fs, root, [(path, int(start), int(count), entry["sha256"])
                      for path, start, count, entry in zip(paths, starts, counts, entries)]


def _verified_summary(out, manifest, storage_options) -> dict:
    """``summary.json`` of a committed scan, checked against its manifest entry."""
    import hashlib
    import json

    import fsspec

    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    entry = next((e for e in manifest["files"] if e["path"] == "summary.json"), None)
    data = fs.cat_file(f"{root.rstrip('/')}/summary.json")
    if entry is None or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise InputError(f"summary.json of the scan at {out} does not match its manifest")
    return json.loads(data)


def _thresholds_from_summary(summary) -> np.ndarray:
    """The scan's confident thresholds in cleanlab's dtype (float64 when a class has no label)."""
    statistics = summary["statistics"]
    dtype = np.dtype(summary["pred_probs_dtype"])
    if np.min(statistics["label_counts"]) == 0:
        dtype = np.dtype(np.float64)
    return np.asarray(statistics["confident_thresholds"], dtype=dtype)


def _truth(true_labels, plan, storage_options, summary) -> dict:
    """How workers get the true labels: an input column, or a .npy file."""
    import fsspec
    import pyarrow.parquet as pq

    if isinstance(true_labels, str) and not true_labels.endswith(".npy"):
        with plan.fs.open(plan.partitions[0].pieces[0].path, "rb") as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
        if true_labels not in names:
            raise UsageError(f"--true-labels {true_labels!r} is neither a .npy file nor a column of the input "
                             f"set (columns: {', '.join(names)})")
        return {"column": true_labels}
    if isinstance(true_labels, str):
        fs, path = fsspec.core.url_to_fs(true_labels, **(storage_options or {}))
        if not fs.exists(path):
            raise UsageError(f"true labels file {true_labels} not found")
        length = npy_length(fs, path)
        if length != summary["num_rows"]:
            raise InputError(f"true labels {true_labels} hold {length} rows; the scan has {summary['num_rows']}")
        return {"npy": path, "fs": fs}
    values = np.asarray(true_labels)
    if values.shape != (summary["num_rows"],):
        raise UsageError(f"true_labels has shape {values.shape}; the scan has {summary['num_rows']} rows")
    return {"array": values}


def evaluate_scan(out, true_labels, *, variants=SCORE_VARIANTS, input_path=None, storage_options=None,
                  client=None, scheduler=None, output=None, write=True, range_rows=RANGE_ROWS,
                  progress=None) -> dict:
    """:func:`evaluate` of a finished scan (reads its input again; writes ``evaluation.json``)."""
    import fsspec

    from labelscan.cluster import get_client
    from labelscan.io.commit import read_manifest
    from labelscan.io.atomic import json_bytes, put_bytes
    from labelscan.io.dataset import plan_dataset
    from labelscan.io.redact import redact, scrubbed
    from labelscan.runner import DaskRunner

    started = time.perf_counter()
    with scrubbed(storage_options, [out] + ([input_path] if isinstance(input_path, str) else [])):
        # the manifest is checked here; every file a worker reads is verified against it there
        manifest = read_manifest(out, storage_options=storage_options, verify=False)
        summary = _verified_summary(out, manifest, storage_options)
        if summary.get("multi_label"):
            raise UsageError(f"the scan at {redact(out)} is a multi-label scan: evaluate supports "
                             f"single-label scans only")
        config = summary["config"]
        source_path = input_path if input_path is not None else summary["input"]["path"]
        plan = plan_dataset(source_path, storage_options=storage_options, label_column=config["label_column"],
                            pred_probs_column=config["pred_probs_column"], id_column=None)
        if plan.fingerprint.get("sha256") != summary["input"]["fingerprint"].get("sha256") or \
                plan.num_rows != summary["num_rows"]:
            raise InputError(f"the input set {redact(source_path)} changed since the scan at {out}")
        truth = _truth(true_labels, plan, storage_options, summary)
        out_fs, root, parts = _mask_parts(out, manifest, storage_options)
        with_scores = bool(len(variants))
        thresholds = _thresholds_from_summary(summary) if with_scores else None
        validation = {key: summary.get(key) for key in ("on_bad_rows", "row_sum_tolerance")}
        sources = [ScanEvalSource(plan, spec, _partition_truth(truth, spec), parts, out_fs, with_scores, validation)
                   for spec in plan.partitions]
        with get_client(client, scheduler) as dask_client:
            result = evaluate_sources(DaskRunner(dask_client), sources, variants=variants, thresholds=thresholds,
                                      range_rows=range_rows)
        result["scan"] = {"out": redact(out), "config_hash": summary.get("config_hash"),
                          "input_sha256": summary["input"]["fingerprint"].get("sha256"),
                          "filter_by": config.get("filter_by")}
        result["true_labels"] = ({"column": truth["column"]} if "column" in truth
                                 else {"path": redact(true_labels)} if "npy" in truth else {"array": True})
        result["timings"] = {"evaluate": round(time.perf_counter() - started, 6)}
        if write:
            if output is None:
                fs, path = out_fs, f"{root.rstrip('/')}/{EVALUATION_NAME}"
            else:
                fs, path = fsspec.core.url_to_fs(output, **(storage_options or {}))
            put_bytes(fs, path, json_bytes(result))
    if progress is not None:
        progress("evaluate", result["timings"]["evaluate"])
    return result


def _partition_truth(truth: dict, spec) -> dict:
    if "array" in truth:
        return {"array": truth["array"][spec.row_start:spec.row_start + spec.num_rows]}
    return truth


# ---------------------------------------------------------------------------------------------
# presentation


def table(evaluation: dict) -> str:
    """A plain-text table of an evaluation (for the CLI and reports)."""
    lines = [f"rows {evaluation['num_rows']:,}   true errors {evaluation['num_true_errors']:,}"
             + (f" ({100 * evaluation['true_error_rate']:.2f}%)" if evaluation.get("true_error_rate") else "")]
    mask = evaluation.get("mask")
    if mask:
        def fmt(value):
            return "n/a" if value is None else f"{value:.4f}"
        lines.append(f"flagged {mask['num_flagged']:,}: precision {fmt(mask['precision'])}  "
                     f"recall {fmt(mask['recall'])}  F1 {fmt(mask['f1'])}")
    if evaluation.get("scores"):
        lines.append(f"{'score':<30}{'adjust':>7}{'AUROC':>10}{'AUPRC':>10}{'lift@errors':>13}")
        for entry in evaluation["scores"]:
            values = [entry["auroc"], entry["auprc"], entry["lift_at_num_errors"]]
            cells = "".join(f"{'n/a' if v is None else f'{v:.4f}':>{w}}" for v, w in zip(values, (10, 10, 13)))
            lines.append(f"{entry['method']:<30}{str(entry['adjust_pred_probs']).lower():>7}{cells}"
                         + (f"   ({entry['error']})" if entry.get("error") else ""))
    return "\n".join(lines)
