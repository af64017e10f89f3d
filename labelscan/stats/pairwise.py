"""Exact reconstruction of numpy's pairwise float sum from partitioned data.

cleanlab's confident threshold of class ``k`` is ``np.mean(P[y == k, k])``. numpy sums a
contiguous 1-D array with a fixed recursion (``pairwise_sum`` in numpy's ``loops_utils.h``):

- a run of ``n <= 128`` values is a *leaf*, summed by numpy as one unit;
- a longer run is split at ``n2 = n // 2 - (n // 2) % 8`` and the two halves are added.

The recursion depends only on the run length, so every node of the tree is a half-open
range ``(start, stop)`` of the class-``k`` sequence (its rows in global order). A partition
that holds the slice ``[a, b)`` of that sequence sums every maximal node lying inside its
slice with ``np.sum`` (bit-identical to the node's value) and ships the raw values of the at
most two leaves its boundaries cut. The driver folds nodes bottom-up in the same order.

float16 input is summed by numpy in float32 through 8192-element buffers: each buffer is a
pairwise tree in float32, and buffer sums are added sequentially. A :class:`SumLayout`
describes both cases as a list of trees folded left to right.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

LEAF_MAX = 128
"""Longest run numpy sums as one leaf (``PW_BLOCKSIZE``)."""

FLOAT16_BUFFER = 8192
"""numpy's default ufunc buffer size: float16 sums are folded per buffer of this length."""


def accumulator_dtype(values_dtype: np.dtype) -> np.dtype:
    """Dtype numpy accumulates ``np.mean`` in: float32 for float16 input, else the input dtype."""
    values_dtype = np.dtype(values_dtype)
    return np.dtype(np.float32) if values_dtype == np.float16 else values_dtype


def tree_roots(length: int, values_dtype: np.dtype) -> list[tuple[int, int]]:
    """Ranges of the pairwise trees whose sums numpy folds left to right.

    Parameters
    ----------
    length : int
        Number of values summed (``n_k``).
    values_dtype : numpy.dtype
        Dtype of the values (float16 uses 8192-value buffers).

    Returns
    -------
    list of (int, int)
        Half-open ranges, in fold order. Empty when ``length == 0``.
    """
    if np.dtype(values_dtype) != np.float16:
        return [(0, length)] if length else []
    return [(s, min(s + FLOAT16_BUFFER, length)) for s in range(0, length, FLOAT16_BUFFER)]


def split_point(start: int, stop: int) -> int:
    """Absolute index where numpy splits the node ``[start, stop)`` (longer than a leaf)."""
    half = (stop - start) // 2
    return start + half - half % 8


@dataclass
class PairwiseSumState:
    """Mergeable pieces of one class's pairwise sum.

    Attributes
    ----------
    nodes : dict[(int, int), float]
        Exact sums of complete tree nodes, keyed by their range in the class sequence.
    fragments : dict[(int, int), list of (int, numpy.ndarray)]
        Raw values of leaves cut by partition boundaries: leaf range → pieces
        ``(first position, values)`` (at most 127 values each).
    """

    nodes: dict = field(default_factory=dict)
    fragments: dict = field(default_factory=dict)

    def merge(self, other: "PairwiseSumState") -> "PairwiseSumState":
        """Union of two states over disjoint slices of the same sequence (in place)."""
        self.nodes.update(other.nodes)
        for leaf, pieces in other.fragments.items():
            self.fragments.setdefault(leaf, []).extend(pieces)
        return self


RAW_SEQUENCE_MAX = 8 * LEAF_MAX
"""Class sequences of at most this many values travel whole (:class:`ShortSequences`) instead of
as tree pieces: a few leaves each, which partitions mostly cut into fragments anyway, and one
Python call per class at the fold instead of one per class and partition (200K x 1000 in 13
partitions: 13,000 calls; memory at most K x this many values, whatever the rows)."""


@dataclass
class ShortSequences:
    """Slices of short class sequences (:data:`RAW_SEQUENCE_MAX`), as they are: segment ``i``
    holds ``counts[i]`` values of class ``classes[i]`` from position ``starts[i]`` of its
    sequence. Mergeable by concatenation (partitions hold disjoint slices).

    Attributes
    ----------
    classes, starts, counts : numpy.ndarray, shape (S,), int64
    values : numpy.ndarray, shape (counts.sum(),)
        The segments' values one after the other.
    """

    classes: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    values: np.ndarray

    @classmethod
    def concatenate(cls, parts: list) -> "ShortSequences":
        """The segments of every part of ``parts`` (at least one)."""
        return cls(*(np.concatenate([getattr(part, item.name) for part in parts]) for item in fields(cls)))

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays."""
        return sum(getattr(self, item.name).nbytes for item in fields(self))

    def sequences(self) -> dict:
        """``{class: its values in sequence order}`` (segments sorted by class, then start)."""
        order = np.lexsort((self.starts, self.classes))
        counts = self.counts[order]
        first_values = (np.cumsum(self.counts) - self.counts)[order]
        # position of every value in ``values``, segment after segment in the sorted order
        shift = np.repeat(first_values - (np.cumsum(counts) - counts), counts)
        values = self.values[np.arange(len(shift)) + shift]
        classes, first_segments = np.unique(self.classes[order], return_index=True)
        class_counts = np.add.reduceat(counts, first_segments) if len(counts) else counts
        bounds = np.cumsum(class_counts)[:-1]
        return dict(zip(classes.tolist(), np.split(values, bounds)))


def sequence_sum(values: np.ndarray, values_dtype: np.dtype):
    """The sum :func:`finish_sum` gives for a whole sequence (``np.sum``; float16: ``np.mean``'s
    float32 accumulation)."""
    return finish_sum(partial_sums(values, 0, len(values)), len(values), values_dtype)


def partial_sums(values: np.ndarray, offset: int, length: int) -> PairwiseSumState:
    """Sum a partition's slice of one class sequence into mergeable pieces.

    Parameters
    ----------
    values : numpy.ndarray, shape (m,)
        The slice ``[offset, offset + m)`` of the class sequence, contiguous, in the input dtype.
    offset : int
        Position of ``values[0]`` in the class sequence.
    length : int
        Length of the whole class sequence (``n_k``).

    Returns
    -------
    PairwiseSumState
    """
    state = PairwiseSumState()
    stop = offset + len(values)
    if not len(values):
        return state
    acc_dtype = accumulator_dtype(values.dtype)
    for root in tree_roots(length, values.dtype):
        _collect(values, offset, stop, root, acc_dtype, state)
    return state


def _collect(values, lo, hi, node, acc_dtype, state):
    start, stop = node
    if stop <= lo or start >= hi:
        return
    if lo <= start and stop <= hi:
        segment = values[start - lo:stop - lo]
        state.nodes[node] = np.sum(segment, dtype=acc_dtype)
        return
    if stop - start <= LEAF_MAX:
        first, last = max(start, lo), min(stop, hi)
        state.fragments[node] = [(first, values[first - lo:last - lo].copy())]
        return
    middle = split_point(start, stop)
    _collect(values, lo, hi, (start, middle), acc_dtype, state)
    _collect(values, lo, hi, (middle, stop), acc_dtype, state)


def finish_sum(state: PairwiseSumState, length: int, values_dtype: np.dtype):
    """Fold a complete state into numpy's exact sum.

    Parameters
    ----------
    state : PairwiseSumState
        Pieces covering the whole sequence ``[0, length)``.
    length : int
        Length of the sequence.
    values_dtype : numpy.dtype
        Dtype of the summed values.

    Returns
    -------
    numpy scalar
        The sum ``np.sum`` (float16: ``np.mean``'s float32 accumulation) would return.
    """
    acc_dtype = accumulator_dtype(values_dtype)
    total = acc_dtype.type(0)
    for root in tree_roots(length, values_dtype):
        total = acc_dtype.type(total + _evaluate(state, root, values_dtype, acc_dtype))
    return total


def _evaluate(state, node, values_dtype, acc_dtype):
    if node in state.nodes:
        return state.nodes[node]
    start, stop = node
    if stop - start <= LEAF_MAX:
        leaf = np.empty(stop - start, dtype=values_dtype)
        for first, values in state.fragments[node]:
            leaf[first - start:first - start + len(values)] = values
        return np.sum(leaf, dtype=acc_dtype)
    middle = split_point(start, stop)
    left = _evaluate(state, (start, middle), values_dtype, acc_dtype)
    right = _evaluate(state, (middle, stop), values_dtype, acc_dtype)
    return acc_dtype.type(left + right)


def mean_from_sum(total, length: int, values_dtype: np.dtype):
    """``np.mean``'s final step: ``dtype(float64(sum) / n)``.

    Returns
    -------
    numpy scalar of ``values_dtype``
    """
    return np.dtype(values_dtype).type(np.float64(total) / np.intp(length))
