"""Partition-side steps of the engine: pure functions of one partition and small broadcast state.

Each function runs on a worker (or in process) and returns either a small mergeable state
(travels to the driver) or per-row facts that stay where they were computed.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import numpy as np

from labelscan.errors import InputError
from labelscan.io.rejects import kept_row_ids
from labelscan.kernels import grouped
from labelscan.kernels.device import device_work, to_host_pinned
from labelscan.stats.joint import DENSE_COUNT_CELLS, JointCounts
from labelscan.stats.pairwise import RAW_SEQUENCE_MAX, PairwiseSumState, ShortSequences, partial_sums


OUTRANKED_BLOCK_CELLS = 1 << 22
"""Predictions compared per block of rows in :func:`outranked_counts` (memory: a few times
this many bytes, whatever the partition)."""

OUTRANKED_MAX_CLASSES = 1024
"""Outranked rows are counted up to this many classes: their K x K counts stay small at the
driver."""


class RowFacts:
    """Per-row results of the confident-joint pass, in grouped order (stay on the worker).

    On the host the two per-row flags are kept as bits (``numpy.packbits``): 2.25 bytes a row
    with ``predicted`` instead of 4, for as long as the scan keeps them (every pass to the flag
    pass, for every partition: 100M rows, 0.4 GB -> 0.23 GB of worker memory). Device flags
    stay one byte a row. :meth:`__sizeof__` counts the host arrays, so Dask sees that memory.

    Attributes
    ----------
    predicted : numpy.ndarray, shape (n,), int16 (int32 when K > 32767)
        ``argmax(P[i])``.
    off_diagonal : numpy.ndarray, shape (n,), bool
        Confident and counted in a class other than the given label (unpacked when read).
    given_is_argmax : numpy.ndarray, shape (n,), bool
        ``argmax(P[i] + 1e-6·e_y) == y`` (unflagged by cleanlab's ``_reduce_issues``; unpacked
        when read).
    joint_counts : labelscan.stats.joint.JointCounts
        Confident-joint counts ``[given, guess]`` of this partition (no diagonal clip), sparse:
        O(rows) whatever K.
    num_off_diagonal_issues : int
        ``Σ off_diagonal & ~given_is_argmax``.
    outranked_counts : labelscan.stats.joint.JointCounts or None
        Rows of given label ``k`` with ``P_j > P_k``, in cells ``[k, j]`` (the rows whose
        noise-rate key ``P_k - P_j`` is negative): counted on host partitions when asked,
        else None (see :func:`outranked_counts`).
    """

    def __init__(self, predicted, off_diagonal, given_is_argmax, joint_counts: JointCounts,
                 num_off_diagonal_issues: int, outranked_counts: JointCounts | None = None):
        self.predicted = predicted
        self._off_diagonal = _stored_flags(off_diagonal)
        self._given_is_argmax = _stored_flags(given_is_argmax)
        self.joint_counts = joint_counts
        self.num_off_diagonal_issues = num_off_diagonal_issues
        self.outranked_counts = outranked_counts

    @property
    def off_diagonal(self):
        return _read_flags(self._off_diagonal, len(self.predicted))

    @property
    def given_is_argmax(self):
        return _read_flags(self._given_is_argmax, len(self.predicted))

    def __sizeof__(self) -> int:
        """Python object plus host arrays (device arrays are not the worker's host memory, which
        Dask's sizeof measures)."""
        return object.__sizeof__(self) + sum(int(values.nbytes) for values in
                                             (self.predicted, self._off_diagonal, self._given_is_argmax)
                                             if isinstance(values, np.ndarray))


def _stored_flags(flags):
    """Host flags as bits; device flags as they are."""
    return np.packbits(flags) if isinstance(flags, np.ndarray) else flags


def _read_flags(stored, num_rows: int):
    """The bool flags of :func:`_stored_flags`, shape (num_rows,)."""
    if isinstance(stored, np.ndarray):
        return np.unpackbits(stored, count=num_rows).view(bool)
    return stored


@dataclass
class InputFailure:
    """Bad input found while reading a partition, returned (not raised) so Dask does not retry
    a task that would fail the same way every time; the driver raises ``error``."""

    error: Exception


def prepare(source):
    """Load a partition and group it by given label.

    Parameters
    ----------
    source : object with ``load()`` returning ``(row_start, labels, pred_probs, ids[, rejected])``
        ``rejected`` (:class:`labelscan.io.rejects.Rejections` or None): rows of the partition
        left out of the others, which then hold the kept rows only. Its optional ``backend``
        attribute (``"numpy"`` or ``"cupy"``) says where the partition lives: ``"cupy"`` copies
        it to the GPU (through pinned host memory) before grouping, all on the thread's own
        CUDA stream (:func:`labelscan.kernels.device.device_work`). A true ``finite``
        attribute says its predictions were validated (no NaN). Host predictions may be a
        list of (rows, K) blocks in row order.

    Returns
    -------
    GroupedPartition or InputFailure
    """
    on_device = getattr(source, "backend", "numpy") == "cupy"
    with device_work(on_device):
        return _load_and_group(source, on_device)


def _load_and_group(source, on_device: bool):
    try:
        row_start, labels, pred_probs, ids, *rejected = source.load()
    except InputError as error:
        return InputFailure(error)
    rejected = rejected[0] if rejected else None
    if on_device:
        from labelscan.kernels.device import to_device

        labels, pred_probs = to_device(labels), to_device(pred_probs)
    # without rejected rows the partition's rows are its range: no array of them (5M rows: 40 MB
    # built for nothing, 9 ms of a GPU read)
    row_ids = None if rejected is None else kept_row_ids(row_start, len(labels), rejected)
    return grouped.group_by_label(row_start, labels, pred_probs, ids, rejected=rejected, row_ids=row_ids,
                                  has_nan=False if getattr(source, "finite", False) else None)


def as_partition(part) -> grouped.GroupedPartition:
    """The grouped partition itself (cached on the worker), or a source read and grouped now."""
    if isinstance(part, grouped.GroupedPartition):
        return part
    prepared = part if isinstance(part, InputFailure) else prepare(part)
    if isinstance(prepared, InputFailure):
        raise prepared.error
    return prepared


def label_counts(part):
    """Rows per given label in the partition, shape (K,), int64 — or the partition's InputFailure.

    This is the first pass over every partition: input errors surface here, as values.
    """
    if not isinstance(part, grouped.GroupedPartition):
        part = part if isinstance(part, InputFailure) else prepare(part)
        if isinstance(part, InputFailure):
            return part
    return part.class_counts()  # class_starts live on the host


@dataclass
class ClassLayout:
    """Where each partition's rows of each class sit among the dataset's rows of that class.

    Attributes
    ----------
    offsets : numpy.ndarray, shape (P, K), int64
        Rows of each class in earlier partitions.
    totals : numpy.ndarray, shape (K,), int64
        Rows of each class in the whole dataset ``n_k``.
    """

    offsets: np.ndarray
    totals: np.ndarray

    @property
    def num_rows(self) -> int:
        """The rows scanned (skipped bad rows are not counted)."""
        return int(self.totals.sum())


def passing_failures(function):
    """Decorate a pass so that an :class:`InputFailure` among its arguments is returned at once
    instead of running it: passes submitted after a bad partition's read (before the driver
    knows of it) end without work and without a failed task."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            if isinstance(value, InputFailure):
                return value
        return function(*args, **kwargs)

    return run


@passing_failures
def class_layout(num_classes: int, *per_partition_counts) -> ClassLayout:
    """The :class:`ClassLayout` of every partition's :func:`label_counts` (in partition order).

    Returns
    -------
    ClassLayout or InputFailure
        The first partition's input failure, or one of an
        :class:`~labelscan.errors.InputError` when every row was skipped as bad input.
    """
    counts = np.asarray(per_partition_counts, dtype=np.int64).reshape(len(per_partition_counts), num_classes)
    totals = counts.sum(axis=0)
    if not totals.sum():
        return InputFailure(InputError("no rows to scan: every row of the input was skipped as bad input"))
    return ClassLayout(offsets=np.cumsum(counts, axis=0) - counts, totals=totals)


def sum_arrays(*arrays):
    """Elementwise sum of same-shaped arrays (a tree-reduce step)."""
    total = arrays[0].astype(np.int64) if arrays[0].dtype.kind in "iu" else arrays[0].copy()
    for array in arrays[1:]:
        total += array
    return total


@dataclass
class ThresholdPieces:
    """Mergeable pieces of every class's self-confidence sum (:mod:`labelscan.stats.pairwise`).

    Attributes
    ----------
    states : dict[int, PairwiseSumState]
        Tree pieces of the classes of more than :data:`~labelscan.stats.pairwise.RAW_SEQUENCE_MAX` rows.
    short : ShortSequences
        The values of the other classes, as they are.
    """

    states: dict
    short: ShortSequences

    def __sizeof__(self) -> int:
        """Bytes held (the short sequences' arrays; Dask's sizeof measures)."""
        return object.__sizeof__(self) + self.short.nbytes


def threshold_pieces(part: grouped.GroupedPartition, class_offsets: np.ndarray, class_totals: np.ndarray) -> ThresholdPieces:
    """Pieces of every class's pairwise self-confidence sum held by this partition.

    Parameters
    ----------
    class_offsets : numpy.ndarray, shape (K,)
        Rows of each class in earlier partitions.
    class_totals : numpy.ndarray, shape (K,)
        Rows of each class in the whole dataset ``n_k``.

    Returns
    -------
    ThresholdPieces
    """
    part = as_partition(part)
    confidences = to_host_pinned(grouped.self_confidence(part))  # class blocks are contiguous
    counts = part.class_counts()
    is_short = np.asarray(class_totals) <= RAW_SEQUENCE_MAX
    present = np.flatnonzero(counts)
    states = {int(k): partial_sums(confidences[part.class_rows(int(k))], int(class_offsets[k]), int(class_totals[k]))
              for k in present[~is_short[present]]}
    short = present[is_short[present]]
    return ThresholdPieces(states, ShortSequences(
        classes=short.astype(np.int64), starts=np.asarray(class_offsets, dtype=np.int64)[short],
        counts=counts[short], values=confidences[np.repeat(is_short, counts)]))


@passing_failures
def partition_threshold_pieces(part, index: int, layout: ClassLayout) -> dict:
    """:func:`threshold_pieces` of partition ``index`` of ``layout``."""
    return threshold_pieces(part, layout.offsets[index], layout.totals)


@passing_failures
def merge_threshold_pieces(*piece_sets) -> ThresholdPieces:
    """Union of threshold pieces from disjoint partitions (a tree-reduce step)."""
    states: dict = {}
    for pieces in piece_sets:
        for k, state in pieces.states.items():
            states.setdefault(k, PairwiseSumState()).merge(state)
    return ThresholdPieces(states, ShortSequences.concatenate([pieces.short for pieces in piece_sets]))


@passing_failures
def row_facts(part: grouped.GroupedPartition, thresholds: np.ndarray, count_outranked: bool = False) -> RowFacts:
    """Confident-joint pass: per-row facts and this partition's joint counts.

    GPU partitions use the fused kernel while its dense K x K device counts are small
    (:data:`~labelscan.stats.joint.DENSE_COUNT_CELLS`); wider ones run the array code on the device.
    ``count_outranked``: also count :func:`outranked_counts` where the keys can use them
    (:func:`_keys_use_outranked`; the noise-rate filters' keys then skip the rows no selection
    can reach).
    """
    part = as_partition(part)
    num_classes, xp = part.num_classes, part.xp
    predicted_dtype = np.dtype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32)
    if xp is not np and not part.has_nan and num_classes * num_classes <= DENSE_COUNT_CELLS:
        from labelscan.kernels.cuda_joint import fused_row_facts

        predicted, off_diagonal, given_is_argmax, dense, num_off_diagonal_issues = fused_row_facts(
            part, thresholds, predicted_dtype)
        given, guess = np.nonzero(dense)
        joint = JointCounts(num_classes, given * num_classes + guess, dense[given, guess])
    else:
        predicted, off_diagonal, given_is_argmax, joint = _array_row_facts(part, thresholds)
        predicted = predicted.astype(predicted_dtype)
        num_off_diagonal_issues = int(xp.count_nonzero(off_diagonal & ~given_is_argmax))
    return RowFacts(
        predicted=predicted,
        off_diagonal=off_diagonal,
        given_is_argmax=given_is_argmax,
        joint_counts=joint,
        num_off_diagonal_issues=num_off_diagonal_issues,
        outranked_counts=outranked_counts(part, predicted) if count_outranked and _keys_use_outranked(part) else None,
    )


def _keys_use_outranked(part: grouped.GroupedPartition) -> bool:
    """Whether this partition's noise-rate keys can be its outranked rows only: a host partition
    of at most :data:`OUTRANKED_MAX_CLASSES` classes whose keys stay in class blocks (flat keys
    and device keys take every row of a class: counting would be wasted, 200K x 1000 joint pass
    0.54 -> 1.46 s)."""
    from labelscan.selection import host_keys_in_blocks

    num_blocks = int(np.count_nonzero(part.class_counts()))
    return (part.xp is np and part.num_classes <= OUTRANKED_MAX_CLASSES
            and host_keys_in_blocks(part.num_rows, num_blocks))


def outranked_rows(part: grouped.GroupedPartition, predicted: np.ndarray) -> tuple:
    """Grouped rows whose given label is not their argmax, and where each class's run of them starts.

    They include every row with some ``P_j > P_k`` (``k`` its given label): NaN-free, such a
    row's maximum is not at ``k``; with a NaN, the argmax is the first NaN, and ``P_k`` is not
    one when a comparison with it is true.

    Returns
    -------
    rows : numpy.ndarray, shape (m,), intp
        Increasing grouped rows.
    class_bounds : numpy.ndarray, shape (K + 1,), intp
        The rows of class ``k`` are ``rows[class_bounds[k]:class_bounds[k + 1]]``.
    """
    rows = np.flatnonzero(predicted != part.labels)
    return rows, np.searchsorted(rows, part.class_starts)


def outranked_counts(part: grouped.GroupedPartition, predicted: np.ndarray) -> JointCounts:
    """Rows of each given label ``k`` with ``P_j > P_k``, per other class ``j`` (cells ``[k, j]``).

    A noise-rate selection (class ``k``, column ``j``) takes the rows of ``k`` with the
    smallest ``P_k - P_j``; when it takes no more rows than this count, all it takes have a
    negative key, and so lie among :func:`outranked_rows` (about a quarter of the rows on the
    benchmark sets): the driver then lets the keys skip the other rows.

    Parameters
    ----------
    part : GroupedPartition (host)
    predicted : numpy.ndarray, shape (n,)
        Row argmax.

    Returns
    -------
    JointCounts
    """
    counts = np.zeros((part.num_classes, part.num_classes), dtype=np.int64)
    block_rows = max(1, OUTRANKED_BLOCK_CELLS // part.num_classes)   # bounds the compared copy
    rows, class_bounds = outranked_rows(part, predicted)
    for k in np.flatnonzero(np.diff(class_bounds)):
        for start in range(class_bounds[k], class_bounds[k + 1], block_rows):
            values = part.columns_at(rows[start:min(start + block_rows, class_bounds[k + 1])])
            counts[k] += np.count_nonzero(values > values[k], axis=1)
    given, other = np.nonzero(counts)
    return JointCounts(part.num_classes, given * part.num_classes + other, counts[given, other])


def _array_row_facts(part: grouped.GroupedPartition, thresholds: np.ndarray):
    """:func:`row_facts` with array operations: ``(predicted, off_diagonal, given_is_argmax,
    joint_counts)``; host partitions stored row-major (many classes) go through row blocks."""
    if part.xp is np and part.row_major_storage:
        row_max, predicted, confident, guess = grouped.row_major_guesses(part, thresholds)
    else:
        row_max = part.columns.max(axis=0)
        predicted = grouped.argmax_rows(part, row_max)
        confident, guess = grouped.confident_guesses(part, thresholds, predicted)
    labels = part.labels
    joint = JointCounts.from_rows(labels, guess, part.num_classes, counted=confident)
    off_diagonal = confident & (guess != labels)
    return predicted, off_diagonal, grouped.given_label_is_argmax(part, row_max), joint


@passing_failures
def joint_summary(facts: RowFacts) -> dict:
    """The small part of :class:`RowFacts` the driver needs."""
    return {"joint_counts": facts.joint_counts, "num_off_diagonal_issues": facts.num_off_diagonal_issues,
            "outranked_counts": facts.outranked_counts}


@passing_failures
def merge_joint_summaries(*summaries) -> dict:
    """Sum joint summaries (a tree-reduce step); outranked counts are None unless every
    summary has them."""
    outranked = [s["outranked_counts"] for s in summaries]
    return {
        "joint_counts": JointCounts.merge(*[s["joint_counts"] for s in summaries]),
        "num_off_diagonal_issues": sum(s["num_off_diagonal_issues"] for s in summaries),
        "outranked_counts": None if any(o is None for o in outranked) else JointCounts.merge(*outranked),
    }


def scores(part: grouped.GroupedPartition, method: str, adjust: bool, thresholds) -> np.ndarray:
    """Label-quality scores of every row, grouped order, shape (n,)."""
    part = as_partition(part)
    return grouped.label_quality_scores(part, method, adjust, thresholds)


@dataclass
class FlagRequest:
    """Everything the flag pass needs besides the partition and its cutoffs: one object, the
    same for every partition (shipped to the workers once).

    Attributes
    ----------
    filter_by : str
    families : list of SelectionTasks
        Selections whose union (``'both'``: intersection of the two families) is flagged.
        The flag pass receives each family's cutoffs in the partition
        (:class:`~labelscan.selection.PartitionCutoffs`) and its keys (cached
        :class:`~labelscan.selection.PartitionKeys` or the partition itself) alongside.
    rank_by : str
    adjust_pred_probs : bool
    thresholds : numpy.ndarray, shape (K,)
    """

    filter_by: str
    families: list
    rank_by: str
    adjust_pred_probs: bool
    thresholds: np.ndarray

    def __sizeof__(self) -> int:
        """Bytes held, the families' arrays included (see ``SelectionTasks.__sizeof__``)."""
        return object.__sizeof__(self) + self.thresholds.nbytes + sum(sys.getsizeof(tasks) for tasks in self.families)


def flagged_rows(part, facts: RowFacts, request: FlagRequest, cutoffs: list, family_keys) -> np.ndarray:
    """``is_label_issue`` of every row in grouped order, shape (n,), bool.

    Parameters
    ----------
    cutoffs : list of PartitionCutoffs
        Per family of ``request.families``: its cutoffs in this partition.
    family_keys : list
        Per family of ``request.families``: its keys in this partition (see
        :func:`labelscan.selection.select_rows`).
    """
    from labelscan.selection import select_rows

    if request.filter_by == "confident_learning":
        flagged = facts.off_diagonal.copy()
    elif request.filter_by == "predicted_neq_given":
        flagged = facts.predicted != part.labels
    else:
        chosen = [select_rows(keys, tasks, family_cutoffs, part.xp)
                  for keys, tasks, family_cutoffs in zip(family_keys, request.families, cutoffs)]
        flagged = chosen[0] & chosen[1] if request.filter_by == "both" else chosen[0]
    if request.filter_by not in ("low_self_confidence", "low_normalized_margin"):
        flagged &= ~facts.given_is_argmax
    return flagged
