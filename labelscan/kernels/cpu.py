"""Per-partition hot loops on NumPy.

A partition is first *grouped by given label*: rows are reordered stably by class, so the
rows of class ``k`` form one contiguous block in global row order. Every later step works on
blocks (the per-class sequences of cleanlab's thresholds, the per-class pruning) and the
row-aligned outputs are scattered back with the stored permutation.

All arithmetic follows cleanlab 2.9's dtype rules (``CLEANLAB_SPEC.md`` §2–§8): nothing is
cast, comparisons run in the dtype numpy would use for the same expression.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOATING_POINT_COMPARISON = 1e-6
"""Tolerance cleanlab adds to thresholds and to the given label's probability."""

CLIPPING_LOWER_BOUND = 1e-6
"""Lower clip of self-confidence and entropy ratios in confidence-weighted entropy."""


@dataclass
class GroupedPartition:
    """One partition with its rows grouped by given label.

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
    labels : numpy.ndarray, shape (n,), int64
        Given labels in grouped order.
    pred_probs : numpy.ndarray, shape (n, K)
        Predicted probabilities in grouped order (input dtype).
    row_ids : numpy.ndarray, shape (n,), int64
        Global row index of each grouped row.
    ids : numpy.ndarray or None, shape (n,)
        User ids in original (not grouped) order.
    """

    row_start: int
    num_rows: int
    order: np.ndarray
    class_starts: np.ndarray
    labels: np.ndarray
    pred_probs: np.ndarray
    row_ids: np.ndarray
    ids: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return self.pred_probs.shape[1]

    def class_rows(self, k: int) -> slice:
        """Slice of the grouped rows of class ``k``."""
        return slice(int(self.class_starts[k]), int(self.class_starts[k + 1]))

    def class_counts(self) -> np.ndarray:
        """Rows per given label, shape (K,), int64."""
        return np.diff(self.class_starts).astype(np.int64)

    def to_row_order(self, grouped_values: np.ndarray) -> np.ndarray:
        """Scatter per-row values from grouped order back to the partition's row order."""
        values = np.empty_like(grouped_values)
        values[self.order] = grouped_values
        return values


def group_by_label(row_start: int, labels: np.ndarray, pred_probs: np.ndarray, ids=None) -> GroupedPartition:
    """Group a partition's rows by given label (stable).

    Parameters
    ----------
    row_start : int
    labels : numpy.ndarray, shape (n,), integer in [0, K)
    pred_probs : numpy.ndarray, shape (n, K)
    ids : numpy.ndarray or None, shape (n,)

    Returns
    -------
    GroupedPartition
    """
    num_classes = pred_probs.shape[1]
    small = labels.astype(np.uint16 if num_classes <= np.iinfo(np.uint16).max else np.int64)
    order = np.argsort(small, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    class_starts = np.zeros(num_classes + 1, dtype=np.intp)
    np.cumsum(counts, out=class_starts[1:])
    return GroupedPartition(
        row_start=int(row_start),
        num_rows=len(labels),
        order=order,
        class_starts=class_starts,
        labels=np.ascontiguousarray(labels[order], dtype=np.int64),
        pred_probs=np.ascontiguousarray(pred_probs[order]),
        row_ids=(row_start + order).astype(np.int64),
        ids=ids,
    )


def self_confidence(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``P[i, y_i]``, shape (n,), input dtype."""
    return pred_probs[np.arange(len(labels)), labels]


def argmax_rows(pred_probs: np.ndarray) -> np.ndarray:
    """Row argmax with numpy's semantics (first maximum; first NaN wins), shape (n,), intp."""
    return pred_probs.argmax(axis=1)


def given_label_is_argmax(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``argmax(P[i] + 1e-6·e_{y_i}) == y_i`` (cleanlab's ``_reduce_issues``), shape (n,), bool."""
    bumped = pred_probs.copy()
    bumped[np.arange(len(labels)), labels] += FLOATING_POINT_COMPARISON
    return bumped.argmax(axis=1) == labels


def confident_guesses(pred_probs: np.ndarray, thresholds: np.ndarray, predicted: np.ndarray):
    """Which rows are confident and the class cleanlab's confident joint counts them in.

    Parameters
    ----------
    pred_probs : numpy.ndarray, shape (n, K)
    thresholds : numpy.ndarray, shape (K,)
        Confident thresholds, in the dtype cleanlab's rule gives them.
    predicted : numpy.ndarray, shape (n,)
        ``argmax(pred_probs, axis=1)``.

    Returns
    -------
    confident : numpy.ndarray, shape (n,), bool
        At least one class reaches its threshold.
    guess : numpy.ndarray, shape (n,), intp
        The argmax if several classes are confident, else the single confident class.
    """
    above = pred_probs >= thresholds - FLOATING_POINT_COMPARISON
    num_above = above.sum(axis=1)
    guess = np.where(num_above > 1, predicted, above.argmax(axis=1))
    return num_above > 0, guess


def adjust_pred_probs(pred_probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """cleanlab's ``_subtract_confident_thresholds``: ``(P - t + max t) / rowsum``, shape (n, K)."""
    adjusted = pred_probs - thresholds
    adjusted += thresholds.max()
    adjusted /= adjusted.sum(axis=1, keepdims=True)
    return adjusted


def normalized_margin(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """``(P[i, y_i] - max_{j != y_i} P[i, j] + 1) / 2``, shape (n,)."""
    rows = np.arange(len(labels))
    others = pred_probs.copy()
    others[rows, labels] = -np.inf
    return (pred_probs[rows, labels] - others.max(axis=1) + 1) / 2


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
    confidence = np.clip(self_confidence(labels, pred_probs), a_min=CLIPPING_LOWER_BOUND, a_max=None)
    ratio = entropy / confidence
    return np.log(ratio + 1) / np.clip(ratio, a_min=CLIPPING_LOWER_BOUND, a_max=None)


SCORE_FUNCTIONS = {
    "self_confidence": self_confidence,
    "normalized_margin": normalized_margin,
    "confidence_weighted_entropy": confidence_weighted_entropy,
}


def label_quality_scores(labels, pred_probs, method: str, adjust: bool, thresholds=None) -> np.ndarray:
    """cleanlab's ``get_label_quality_scores`` on a block of rows, shape (n,).

    Parameters
    ----------
    labels : numpy.ndarray, shape (n,)
    pred_probs : numpy.ndarray, shape (n, K)
    method : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
    adjust : bool
        Subtract the confident thresholds first (``adjust_pred_probs``).
    thresholds : numpy.ndarray, shape (K,), optional
        Needed when ``adjust``.
    """
    if adjust:
        pred_probs = adjust_pred_probs(pred_probs, thresholds)
    return SCORE_FUNCTIONS[method](labels, pred_probs)
