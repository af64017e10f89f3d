"""Per-partition hot loops, on NumPy (CPU) or CuPy (GPU) arrays alike.

A partition is stored *grouped by given label* and *column-major*: ``columns[j]`` holds
``P[:, j]`` for the partition's rows reordered stably by class, so the rows of class ``k``
form one contiguous run in global row order (cleanlab's per-class sequences), and every
per-row reduction over classes runs along contiguous memory (``axis=0``). Grouping and
transposing happen in one ``np.take``; the row-aligned outputs are scattered back with the
stored permutation.

All arithmetic follows cleanlab 2.9's dtype rules (``CLEANLAB_SPEC.md`` §2–§8): nothing is
cast, comparisons run in the dtype numpy uses for the same expression. Scores that involve a
sum over classes (``adjust_pred_probs``, confidence-weighted entropy) are computed on a
row-major copy so numpy adds in exactly cleanlab's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelscan.io.column_set import Consecutive
from labelscan.xp import array_module, bincount, stable_argsort, to_host

FLOATING_POINT_COMPARISON = 1e-6
"""Tolerance cleanlab adds to thresholds and to the given label's probability."""

CLIPPING_LOWER_BOUND = 1e-6
"""Lower clip of self-confidence and entropy ratios in confidence-weighted entropy."""

SMALL_K = 64
"""Up to this many classes, a device partition's per-row "first true" runs as a loop over classes
(each class is a few kernel launches); host partitions loop up to 32,768 classes: numpy's
``argmax(axis=0)`` first copies the mask transposed, and the loop was 5-8x faster at K = 65-255
(125,000 rows at K=100: 1.1 ms against 10 ms)."""

ROW_MAJOR_K = 256
"""From this many classes, a host partition keeps its grouped rows whole, row-major
(:attr:`GroupedPartition.row_major_storage`): grouping copies whole rows instead of
transposing them, and the joint pass reduces rows along contiguous memory
(:func:`row_major_guesses`) without transposing them back. 200K x 1000 on the 2-core machine,
``benchmarks.cpu`` run before and after, minutes apart (the host drifts: cleanlab took 2.50 and
3.48 s in those runs): end to end 1.71 -> 1.12 s, read stage 0.91 -> 0.44 s, joint 0.35 ->
0.25 s. At K=100 it was a wash (grouping cheaper, the class blocks of the keys dearer to gather)."""

SMALL_K_GATHER = 32
"""Up to this many classes, grouping gathers along the transposed array in one ``take``."""

GATHER_BLOCK_BYTES = 1 << 20
"""Bytes of predictions per block when grouping many-class partitions: a block gathered and
transposed stays in the CPU's L2 cache (K=1000, 200K rows: 0.8 s with 65,536-row blocks,
0.22 s with 1 MiB ones)."""


@dataclass
class GroupedPartition:
    """One partition, rows grouped by given label, predictions seen column-major.

    Attributes
    ----------
    row_start : int
        Global index of the partition's first row.
    num_rows : int
        Rows in the partition (``n``).
    order : numpy.ndarray, shape (n,), intp
        ``order[i]`` = local row index of the i-th grouped row (stable by class).
    class_starts : numpy.ndarray, shape (K + 1,), intp
        Class ``k`` occupies grouped rows ``class_starts[k]:class_starts[k + 1]``.
    columns : numpy.ndarray, shape (K, n)
        ``columns[j, i]`` = ``P[order[i], j]`` (input dtype). C-contiguous, or for host
        partitions of at least :data:`ROW_MAJOR_K` classes the transpose of a C-contiguous
        ``(n, K)`` array (:attr:`row_major_storage`; gather columns with :meth:`columns_at`).
    kept_row_ids : numpy.ndarray or None, shape (n,), int64
        Global row of each row in row order when rows were left out (``rejected``); None:
        ``row_start + arange(n)``.
    ids : numpy.ndarray or None, shape (n,)
        User ids in original (not grouped) order.
    has_nan : bool
        Whether any prediction is NaN (cleanlab accepts NaN; scans reject it).
    rejected : labelscan.io.rejects.Rejections or None
        Input rows of the partition left out (skipped bad rows): ``row_ids`` then skip them.
    """

    row_start: int
    num_rows: int
    order: np.ndarray
    class_starts: np.ndarray
    columns: np.ndarray
    kept_row_ids: np.ndarray | None = None
    ids: np.ndarray | None = None
    has_nan: bool = True
    rejected: object | None = None

    @property
    def num_classes(self) -> int:
        return self.columns.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.columns.dtype

    @property
    def xp(self):
        """Array namespace of the per-row arrays (numpy or cupy)."""
        return array_module(self.columns)

    @property
    def labels(self):
        """Given labels in grouped order, shape (n,): computed from ``class_starts`` when asked
        (a partition kept between passes stores only its predictions and ``order``: 8 bytes a
        row instead of 24 with labels and row ids). int64 on the device (what its kernels
        take); on the host int16 (int32 beyond 32,767 classes), 4x cheaper to build."""
        counts = np.diff(self.class_starts)
        if self.xp is np:
            dtype = np.int16 if len(counts) <= np.iinfo(np.int16).max else np.int32
            return np.repeat(np.arange(len(counts), dtype=dtype), counts)
        return self.labels_at(self.xp.arange(self.num_rows))

    def labels_at(self, positions):
        """Given labels of the grouped rows at ``positions`` (integer array), int64."""
        if self.num_classes < 2:
            return self.xp.zeros(len(positions), dtype=np.int64)
        boundaries = self.xp.asarray(self.class_starts[1:-1])
        return self.xp.searchsorted(boundaries, positions, side="right").astype(np.int64)

    @property
    def row_ids(self):
        """Global row index of each grouped row, shape (n,), int64 (computed when asked)."""
        if self.kept_row_ids is None:
            return self.order.astype(np.int64) + self.row_start
        return self.kept_row_ids[self.order]

    def class_rows(self, k: int) -> slice:
        """Slice of the grouped rows of class ``k``."""
        return slice(int(self.class_starts[k]), int(self.class_starts[k + 1]))

    def class_counts(self) -> np.ndarray:
        """Rows per given label, shape (K,), int64."""
        return np.diff(self.class_starts).astype(np.int64)

    @property
    def row_major_storage(self) -> bool:
        """Whether ``columns`` is the transpose of a row-major ``(n, K)`` array (host partitions
        of at least :data:`ROW_MAJOR_K` classes: :func:`_grouped_columns`)."""
        return not self.columns.flags.c_contiguous and self.columns.T.flags.c_contiguous

    def columns_at(self, positions) -> np.ndarray:
        """``columns[:, positions]`` as a new contiguous array in the partition's layout, shape
        (K, m): C-contiguous for column storage, the transpose of whole rows taken for
        :attr:`row_major_storage` (NumPy's ``take`` along the columns of such an array is
        slower by orders of magnitude)."""
        if self.row_major_storage:
            return np.take(self.columns.T, positions, axis=0).T
        return self.xp.take(self.columns, positions, axis=1)

    def row_major(self) -> np.ndarray:
        """C-contiguous NumPy copy ``(n, K)`` in grouped order (on the host)."""
        return np.ascontiguousarray(to_host(self.columns).T)

    def to_row_order(self, grouped_values):
        """Per-row values from grouped order back to the partition's row order (same namespace)."""
        return self.xp.take(grouped_values, self.grouped_positions())

    def grouped_positions(self):
        """Grouped position of each row of the partition (row order), shape (n,)."""
        if not hasattr(self, "_inverse"):
            self._inverse = inverse_permutation(self.order)
        return self._inverse

    def row_ids_in_row_order(self):
        """Global row of each row, in row order (increasing), shape (n,), int64, on the host
        (what the mask part and the issues need): with no rejected rows the range itself
        (:class:`~labelscan.io.column_set.Consecutive`, no array: a mask part encodes it from
        its ends, and a device partition copies nothing), else a ``numpy.ndarray``. Both take
        positions with ``.take``."""
        if self.kept_row_ids is None:
            return Consecutive(self.row_start, self.num_rows)
        return to_host(self.kept_row_ids)


@dataclass(frozen=True)
class GroupedRows:
    """A host partition's predictions already in grouped order, in the storage of host grouped
    partitions (:func:`grouped_rows_matrix`; decoded straight to their grouped rows by
    :mod:`labelscan.io.grouped_read`).

    Attributes
    ----------
    rows : numpy.ndarray, shape (n, K)
        ``rows[i]`` = row ``order[i]`` of the partition: a C-contiguous matrix, or the
        transpose of one (n, K) for fewer than :data:`ROW_MAJOR_K` classes.
    order : numpy.ndarray, shape (n,), intp
        :func:`class_order` of the partition's labels.
    positions : numpy.ndarray, shape (n,), intp
        The inverse of ``order``: grouped position of each row.
    """

    rows: np.ndarray
    order: np.ndarray
    positions: np.ndarray


def grouped_rows_matrix(num_rows: int, num_classes: int, dtype) -> np.ndarray:
    """An uninitialised host (n, K) matrix laid out as a grouped partition stores its rows: whole
    rows (C-contiguous) from :data:`ROW_MAJOR_K` classes, else the transpose of C-contiguous
    columns (K, n), so that ``matrix.T`` is :attr:`GroupedPartition.columns` as it is."""
    if num_classes >= ROW_MAJOR_K:
        return np.empty((num_rows, num_classes), dtype=dtype)
    return np.empty((num_classes, num_rows), dtype=dtype).T


def class_order(labels, num_classes: int):
    """Row indices sorted stably by given label, shape (n,), in the namespace of ``labels``.

    Parameters
    ----------
    labels : array, shape (n,), integer in [0, K)
    num_classes : int
    """
    return stable_argsort(labels.astype(np.uint16 if num_classes <= np.iinfo(np.uint16).max else np.int64))


def inverse_permutation(order):
    """``inverse[order[i]] = i``, shape (n,), in the namespace of ``order``."""
    xp = array_module(order)
    inverse = xp.empty_like(order)
    inverse[order] = xp.arange(len(order))
    return inverse


def group_by_label(row_start: int, labels, pred_probs, ids=None, rejected=None, row_ids=None,
                   has_nan=None) -> GroupedPartition:
    """Group a partition's rows by given label (stable) and store its predictions column-major.

    Parameters
    ----------
    row_start : int
    labels : array, shape (n,), integer in [0, K)
    pred_probs : array, shape (n, K), or list of numpy.ndarray
        NumPy (the partition stays on the host) or CuPy (it lives on the device); on the host
        also a list of (rows, K) blocks in row order (gathered from without joining them), or
        :class:`GroupedRows` (already grouped, kept as they are).
    ids : numpy.ndarray or None, shape (n,)
    rejected : labelscan.io.rejects.Rejections or None
        Input rows left out of ``labels`` and ``pred_probs`` (kept with the partition).
    row_ids : numpy.ndarray or None, shape (n,), int64
        Global row of each row, increasing; kept only with ``rejected`` (otherwise they are
        ``row_start + arange(n)``).
    has_nan : bool, optional
        Whether a prediction is NaN, when the caller knows (validated input); checked otherwise.

    Returns
    -------
    GroupedPartition
    """
    if isinstance(pred_probs, list) and not _gathers_from_blocks(pred_probs):
        pred_probs = np.concatenate(pred_probs)
    if isinstance(pred_probs, GroupedRows):
        order, grouped_positions, columns = pred_probs.order, pred_probs.positions, pred_probs.rows.T
        blocks = [pred_probs.rows]
    else:
        blocks = pred_probs if isinstance(pred_probs, list) else [pred_probs]
        order = class_order(labels, blocks[0].shape[1])
        grouped_positions = inverse_permutation(order) if isinstance(pred_probs, list) else None
        columns = (_columns_from_blocks(blocks, grouped_positions) if grouped_positions is not None
                   else _grouped_columns(pred_probs, order))
    xp = array_module(blocks[0])
    num_classes = blocks[0].shape[1]
    counts = to_host(bincount(labels, num_classes))
    class_starts = np.zeros(num_classes + 1, dtype=np.intp)
    np.cumsum(counts, out=class_starts[1:])
    partition = GroupedPartition(
        row_start=int(row_start),
        num_rows=len(labels),
        order=order,
        class_starts=class_starts,
        columns=columns,
        kept_row_ids=None if rejected is None or row_ids is None else xp.asarray(row_ids, dtype=np.int64),
        ids=ids,
        has_nan=any(bool(block.size and xp.isnan(block.max())) for block in blocks) if has_nan is None else has_nan,
        rejected=rejected,
    )
    if grouped_positions is not None:   # computed for the grouping: kept for the way back to row order
        partition._inverse = grouped_positions
    return partition


def _cache_block_rows(num_classes: int, dtype) -> int:
    """Rows of a block of about :data:`GATHER_BLOCK_BYTES` of predictions (at least 64)."""
    return max(64, GATHER_BLOCK_BYTES // (num_classes * np.dtype(dtype).itemsize))


def _gathers_from_blocks(blocks: list) -> bool:
    """Whether grouping scatters straight from these row blocks (several, of few classes; many
    classes are gathered in cache-sized blocks from one joined matrix instead)."""
    return len(blocks) > 1 and blocks[0].shape[1] <= SMALL_K_GATHER


def _columns_from_blocks(blocks: list, grouped_positions: np.ndarray) -> np.ndarray:
    """``concatenate(blocks)[order].T`` as a C-contiguous (K, n) array, written block by block
    to each row's grouped position (``grouped_positions``, the inverse of ``order``; no joined
    copy of the partition)."""
    columns = np.empty((blocks[0].shape[1], len(grouped_positions)), dtype=blocks[0].dtype)
    start = 0
    for block in blocks:
        columns[:, grouped_positions[start:start + len(block)]] = block.T
        start += len(block)
    return columns


def _grouped_columns(pred_probs, order):
    """``pred_probs[order].T``, shape (K, n): C-contiguous, or from :data:`ROW_MAJOR_K` classes
    on the host the transpose of the rows taken whole (F-contiguous).

    One ``take`` along the transposed view is fastest for few classes; with more classes each
    row spans several cache lines, and gathering rows block by block, then transposing each
    cache-sized block, touches memory far less (measured 2x at K=100, 3x at K=1000).
    """
    xp = array_module(pred_probs)
    num_rows, num_classes = pred_probs.shape
    if xp is not np or num_classes <= SMALL_K_GATHER:
        return xp.take(pred_probs.T, order, axis=1)
    if num_classes >= ROW_MAJOR_K:
        return np.take(pred_probs, order, axis=0).T
    columns = np.empty((num_classes, num_rows), dtype=pred_probs.dtype)
    block_rows = _cache_block_rows(num_classes, pred_probs.dtype)
    for start in range(0, num_rows, block_rows):
        block = order[start:start + block_rows]
        columns[:, start:start + len(block)] = pred_probs[block].T
    return columns


def first_true(mask: np.ndarray) -> np.ndarray:
    """Index of the first True of each column (0 when none), like ``mask.argmax(axis=0)``.

    Parameters
    ----------
    mask : numpy.ndarray, shape (K, n), bool

    Returns
    -------
    numpy.ndarray, shape (n,), intp (on the host the narrowest of int8 and int16 that holds K - 1:
    less memory traffic)
    """
    xp = array_module(mask)
    num_classes = mask.shape[0]
    if xp is not np:
        dtype = np.intp if num_classes <= SMALL_K else None
    else:   # positions reach K - 1
        dtype = next((t for t in (np.int8, np.int16) if num_classes - 1 <= np.iinfo(t).max), None)
    if dtype is None:
        return mask.argmax(axis=0)
    position = xp.zeros(mask.shape[1], dtype=dtype)
    not_found = xp.ones(mask.shape[1], dtype=bool)
    for row in mask[:-1]:
        not_found &= ~row
        position += not_found
    not_found &= ~mask[-1]
    position[not_found] = 0
    return position


def self_confidence(part: GroupedPartition) -> np.ndarray:
    """``P[i, y_i]``, shape (n,), input dtype.

    On the host, the rows of class ``k`` are one run of grouped rows, so this is one slice of
    column ``k`` per class (a gather by two index arrays is ~30x slower); on a GPU, and for
    :attr:`~GroupedPartition.row_major_storage` (where a class's slice of a column is as
    strided as the gather, and the loop over classes costs K Python steps), one gather.
    """
    if part.xp is not np or part.row_major_storage:
        return part.columns[part.labels, part.xp.arange(part.num_rows)]
    confidences = np.empty(part.num_rows, dtype=part.dtype)
    for k in np.flatnonzero(part.class_counts()):
        rows = part.class_rows(int(k))
        confidences[rows] = part.columns[k, rows]
    return confidences


def _nan_rows(row_max):
    xp = array_module(row_max)
    return xp.flatnonzero(xp.isnan(row_max))


def argmax_rows(part: GroupedPartition, row_max=None) -> np.ndarray:
    """Row argmax with numpy's semantics (first maximum; first NaN wins), shape (n,), intp.

    ``row_max`` (``columns.max(axis=0)``, shape (n,)) may be passed when already computed.
    """
    row_max = part.columns.max(axis=0) if row_max is None else row_max
    predicted = first_true(part.columns == row_max)
    nan_rows = _nan_rows(row_max)
    if len(nan_rows):
        predicted[nan_rows] = part.columns[:, nan_rows].T.argmax(axis=1)
    return predicted


def given_label_is_argmax(part: GroupedPartition, row_max=None) -> np.ndarray:
    """``argmax(P[i] + 1e-6·e_{y_i}) == y_i`` (cleanlab's ``_reduce_issues``), shape (n,), bool.

    ``argmax`` takes the first maximum, so the bumped given label ``b`` wins iff every earlier
    class is strictly below it and every later class is at most equal. Since ``P[i, y_i] <= b``,
    that is: the row maximum is below ``b``, or equals it and no earlier class reaches it
    (checked on those few rows only). ``row_max`` as in :func:`argmax_rows`.
    """
    columns, xp = part.columns, part.xp
    row_max = columns.max(axis=0) if row_max is None else row_max
    bumped = self_confidence(part) + FLOATING_POINT_COMPARISON
    keep = row_max < bumped
    level = xp.flatnonzero(row_max == bumped)
    if len(level):
        earlier = xp.arange(part.num_classes)[:, None] < part.labels_at(level)[None, :]
        keep[level] = ~((columns[:, level] == bumped[level]) & earlier).any(axis=0)
    nan_rows = _nan_rows(row_max)
    if len(nan_rows):
        rows = xp.ascontiguousarray(columns[:, nan_rows].T)
        nan_labels = part.labels_at(nan_rows)
        rows[xp.arange(len(nan_rows)), nan_labels] += FLOATING_POINT_COMPARISON
        keep[nan_rows] = rows.argmax(axis=1) == nan_labels
    return keep


def confident_guesses(part: GroupedPartition, thresholds: np.ndarray, predicted: np.ndarray):
    """Which rows are confident and the class cleanlab's confident joint counts them in.

    Parameters
    ----------
    part : GroupedPartition
    thresholds : numpy.ndarray, shape (K,)
        Confident thresholds, in the dtype cleanlab's rule gives them.
    predicted : numpy.ndarray, shape (n,)
        Row argmax.

    Returns
    -------
    confident : numpy.ndarray, shape (n,), bool
        At least one class reaches its threshold.
    guess : numpy.ndarray, shape (n,), intp
        The argmax if several classes are confident, else the single confident class.
    """
    xp = part.xp
    above = part.columns >= xp.asarray(thresholds - FLOATING_POINT_COMPARISON)[:, None]
    # on the host an int8 count when it cannot overflow: 5x faster than int32
    count_dtype = np.int8 if xp is np and part.num_classes <= np.iinfo(np.int8).max else np.int32
    num_above = above.sum(axis=0, dtype=count_dtype)
    guess = xp.where(num_above > 1, predicted, first_true(above))
    return num_above > 0, guess


def row_major_guesses(part: GroupedPartition, thresholds: np.ndarray):
    """:func:`argmax_rows` and :func:`confident_guesses` for a host partition of many classes.

    Cache-sized blocks of rows, each per-row reduction along contiguous memory: the rows of
    a partition of :attr:`~GroupedPartition.row_major_storage` as they are (others are
    transposed block by block; see :data:`ROW_MAJOR_K`). Same comparisons, same first-maximum
    (first-NaN) rule.

    Returns
    -------
    row_max : numpy.ndarray, shape (n,)
    predicted : numpy.ndarray, shape (n,), intp
    confident : numpy.ndarray, shape (n,), bool
    guess : numpy.ndarray, shape (n,), intp
    """
    num_classes, num_rows = part.columns.shape
    limits = thresholds - FLOATING_POINT_COMPARISON
    row_max = np.empty(num_rows, dtype=part.dtype)
    predicted = np.empty(num_rows, dtype=np.intp)
    confident = np.empty(num_rows, dtype=bool)
    guess = np.empty(num_rows, dtype=np.intp)
    block_rows = _cache_block_rows(num_classes, part.dtype)
    # counting a row's classes above their threshold: bytes summed into uint16 (4x faster than
    # a bool sum into int64; a count cannot exceed K)
    count_dtype = np.uint16 if num_classes <= np.iinfo(np.uint16).max else np.int64
    for start in range(0, num_rows, block_rows):
        rows = np.ascontiguousarray(part.columns[:, start:start + block_rows].T)
        block = slice(start, start + len(rows))
        predicted[block] = rows.argmax(axis=1)   # the first maximum, or the first NaN
        row_max[block] = np.take_along_axis(rows, predicted[block, None], axis=1)[:, 0]
        above = rows >= limits
        num_above = above.view(np.uint8).sum(axis=1, dtype=count_dtype)
        confident[block] = num_above > 0
        guess[block] = np.where(num_above > 1, predicted[block], above.argmax(axis=1))
    return row_max, predicted, confident, guess


def adjust_pred_probs(pred_probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """cleanlab's ``_subtract_confident_thresholds``: ``(P - t + max t) / rowsum``, shape (n, K)."""
    adjusted = pred_probs - thresholds
    adjusted += thresholds.max()
    adjusted /= adjusted.sum(axis=1, keepdims=True)
    return adjusted


def normalized_margin_rows(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``(P[i, y_i] - max_{j != y_i} P[i, j] + 1) / 2`` on row-major rows, shape (n,)."""
    rows = np.arange(len(labels))
    others = pred_probs.copy()
    others[rows, labels] = -np.inf
    return (pred_probs[rows, labels] - others.max(axis=1) + 1) / 2


def normalized_margin(part: GroupedPartition) -> np.ndarray:
    """Normalized margin of every row (column-major), shape (n,)."""
    others = part.columns.copy()
    others[part.labels, part.xp.arange(part.num_rows)] = -np.inf
    return (self_confidence(part) - others.max(axis=0) + 1) / 2


def confidence_weighted_entropy(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``log(x + 1) / max(x, 1e-6)`` with ``x = H(P[i]) / max(P[i, y_i], 1e-6)``, shape (n,).

    Raises
    ------
    ValueError
        When a probability lies outside [0, 1] (as cleanlab's entropy does).
    """
    from scipy.special import xlogy

    if np.any(pred_probs < 0) or np.any(pred_probs > 1):
        raise ValueError("All probabilities are required to be in the interval [0, 1].")
    entropy = -np.sum(xlogy(pred_probs, pred_probs), axis=1) / np.log(pred_probs.shape[1])
    confidence = pred_probs[np.arange(len(labels)), labels]
    ratio = entropy / np.clip(confidence, a_min=CLIPPING_LOWER_BOUND, a_max=None)
    return np.log(ratio + 1) / np.clip(ratio, a_min=CLIPPING_LOWER_BOUND, a_max=None)


def label_quality_scores(part: GroupedPartition, method: str, adjust: bool, thresholds=None) -> np.ndarray:
    """cleanlab's ``get_label_quality_scores`` for every row of a partition (grouped order), shape (n,).

    Parameters
    ----------
    part : GroupedPartition
    method : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
    adjust : bool
        Subtract the confident thresholds first (``adjust_pred_probs``).
    thresholds : numpy.ndarray, shape (K,), optional
        Needed when ``adjust``.
    """
    # scores summing over classes run on the host, in numpy's (cleanlab's) order of additions
    if method == "confidence_weighted_entropy":
        return part.xp.asarray(confidence_weighted_entropy(to_host(part.labels), part.row_major()))
    if adjust:
        labels = to_host(part.labels)
        rows = adjust_pred_probs(part.row_major(), thresholds)
        if method == "self_confidence":
            return part.xp.asarray(rows[np.arange(part.num_rows), labels])
        return part.xp.asarray(normalized_margin_rows(labels, rows))
    if method == "self_confidence":
        return self_confidence(part)
    return normalized_margin(part)
