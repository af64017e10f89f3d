"""O(K²) driver-side steps: calibrating the confident joint and the prune-count matrix.

These follow the arithmetic of cleanlab 2.9 (``count.calibrate_confident_joint``,
``filter._keep_at_least_n_per_class``, ``internal.util.round_preserving_sum``), written from
the behavioural spec (``CLEANLAB_SPEC.md`` §4–§5), with one deliberate difference: every tie
between equal rounding remainders is broken deterministically (a stable sort), where cleanlab's
``np.argsort`` leaves the choice to the CPU's SIMD sort.

Layout matters: cleanlab's confident joint is Fortran-ordered, and ``np.sum`` of the scaled
matrix walks memory order, which decides exact ``x.5`` cells. Callers pass the joint as built by
:func:`fortran_counts`.
"""

from __future__ import annotations

import numpy as np

TINY_VALUE = 1e-100
"""Lower clip of denominators (cleanlab's ``TINY_VALUE``)."""

ROUNDING_TOLERANCE = 1e-6
"""Tolerance of the sum comparison in the largest-remainder loop."""

SORT_KINDS = {"stable": "stable", "numpy": None}
"""How equal rounding remainders are ordered: ``"stable"`` (canonical: by column) or ``"numpy"``
(numpy's default sort, as stock cleanlab does: machine-dependent, but then equal to stock
cleanlab run on the same machine)."""


def fortran_counts(counts: np.ndarray) -> np.ndarray:
    """Confident-joint counts as int64 in Fortran order, the layout cleanlab builds them in.

    Parameters
    ----------
    counts : numpy.ndarray, shape (K, K)
        ``counts[given, guess]``.

    Returns
    -------
    numpy.ndarray, shape (K, K), int64, F-contiguous
    """
    return np.asfortranarray(np.asarray(counts, dtype=np.int64))


def clip_diagonal_to_one(counts: np.ndarray) -> np.ndarray:
    """Set every diagonal cell to at least 1 (cleanlab does this to every confident joint), in place.

    Parameters
    ----------
    counts : numpy.ndarray, shape (K, K)
        Overwritten.

    Returns
    -------
    numpy.ndarray, shape (K, K)
        ``counts`` itself (no K x K copy).
    """
    np.fill_diagonal(counts, np.maximum(np.diagonal(counts), 1))
    return counts


def round_preserving_row_totals(matrix: np.ndarray, tie_break: str = "stable") -> np.ndarray:
    """Round every row to integers keeping its rounded total (largest-remainder method), all
    rows at once.

    Each row follows cleanlab's ``round_preserving_sum`` step for step: round half to even;
    while the rounded cells' total differs from the rounded row total, the ``min(|difference|,
    K)`` cells with the largest remainder ``value - rounded`` gain one when units are missing
    (stable ties: highest index first), those with the smallest remainder lose one when units
    are in excess (stable ties: lowest index first). Row totals are numpy's pairwise sums of
    each row, as ``np.sum`` of the row alone gives them.

    Parameters
    ----------
    matrix : numpy.ndarray, shape (K, L), float
    tie_break : {"stable", "numpy"}
        See :data:`SORT_KINDS`.

    Returns
    -------
    numpy.ndarray, shape (K, L), int64, C-contiguous
        Integer input and all-zero rows are returned as they are (nothing to round).
    """
    if np.asarray(matrix).dtype.kind in "iu":   # integers round to themselves
        return np.ascontiguousarray(matrix, dtype=np.int64)
    floats = np.ascontiguousarray(matrix, dtype=float)   # each row contiguous, summed pairwise
    rounded = floats.round()
    targets = floats.sum(axis=1).round()
    width = floats.shape[1]
    active = np.flatnonzero(floats.any(axis=1))
    while len(active):
        current = rounded[active].sum(axis=1).round()
        off = np.abs(current - targets[active]) > ROUNDING_TOLERANCE
        active, current = active[off], current[off]
        if not len(active):
            break
        difference = np.round(targets[active] - current)
        changes = np.minimum(np.abs(difference), width)[:, None]
        by_remainder = np.argsort(floats[active] - rounded[active], axis=1, kind=SORT_KINDS[tie_break])
        ranks = np.empty_like(by_remainder)
        np.put_along_axis(ranks, by_remainder, np.arange(width)[None, :], axis=1)
        gaining = (difference > 0)[:, None]
        chosen = np.where(gaining, ranks >= width - changes, ranks < changes)
        rounded[active] += np.where(gaining, 1.0, -1.0) * chosen
    return rounded.astype(np.int64)


def calibrate_confident_joint(confident_joint: np.ndarray, label_counts: np.ndarray,
                              tie_break: str = "stable") -> np.ndarray:
    """Calibrate the confident joint so row ``i`` sums to ``n_i`` and the total is ``N``.

    Parameters
    ----------
    confident_joint : numpy.ndarray, shape (K, K), int64
        Uncalibrated counts ``[given, guess]`` with the diagonal clipped to ≥ 1, in the layout
        returned by :func:`fortran_counts`.
    label_counts : numpy.ndarray, shape (K,), int64
        Number of rows per given label ``n_k``.
    tie_break : {"stable", "numpy"}
        Order of equal rounding remainders (:data:`SORT_KINDS`).

    Returns
    -------
    numpy.ndarray, shape (K, K), int64
    """
    row_totals = np.clip(confident_joint.sum(axis=1), a_min=TINY_VALUE, a_max=None)
    # one K x K float buffer, scaled in place: the same operations, values and layout as
    # cleanlab's ((cj.T / totals * counts).T / sum * N) without its temporaries
    transposed = confident_joint.T / row_totals
    transposed *= label_counts
    scaled = transposed.T
    scaled /= np.clip(np.sum(scaled), a_min=TINY_VALUE, a_max=None)
    scaled *= sum(label_counts)
    return round_preserving_row_totals(scaled, tie_break)


def keep_at_least_n_per_class(prune_counts: np.ndarray, min_examples: int, frac_noise: float) -> np.ndarray:
    """Prune-count matrix leaving ``min_examples`` rows per class, scaled by ``frac_noise``.

    Parameters
    ----------
    prune_counts : numpy.ndarray, shape (K, K)
        Transposed calibrated confident joint: ``[guess, given]``; column ``k`` is given class k.
    min_examples : int
        Rows to keep in every class (``min_examples_per_class``).
    frac_noise : float
        Fraction of the off-diagonal counts to keep (truncated toward zero).

    Returns
    -------
    numpy.ndarray, shape (K, K), int64
        ``[guess, given]`` number of rows to prune.
    """
    diagonal = np.diagonal(prune_counts)
    new_diagonal = np.maximum(diagonal, min_examples)
    increase_per_column = new_diagonal - diagonal
    # cleanlab assumes the diagonal is non-zero when counting the off-diagonal noise rates.
    noise_rates_per_column = np.maximum(np.count_nonzero(prune_counts, axis=0) - 1.0, 1.0)
    reduced = prune_counts - increase_per_column / noise_rates_per_column
    np.maximum(reduced, 0, out=reduced)
    np.fill_diagonal(reduced, new_diagonal)
    if frac_noise != 1:   # otherwise scaling changes nothing and nothing moves to the diagonal
        scaled = reduced * frac_noise
        np.fill_diagonal(scaled, np.diagonal(reduced))  # only off-diagonal counts are scaled
        np.fill_diagonal(scaled, np.diagonal(reduced) + np.sum(reduced - scaled, axis=0))
        reduced = scaled
    return round_preserving_row_totals(reduced.astype(np.int64, order="C"))


def prune_counts_for_removal(prune_counts: np.ndarray, num_to_remove_per_class, label_counts,
                             tie_break: str = "stable") -> np.ndarray:
    """Rescale a prune-count matrix so class ``k`` loses ``num_to_remove_per_class[k]`` rows.

    Parameters
    ----------
    prune_counts : numpy.ndarray, shape (K, K), int64
        Output of :func:`keep_at_least_n_per_class`.
    num_to_remove_per_class : array-like, shape (K,)
    label_counts : numpy.ndarray, shape (K,)
    tie_break : {"stable", "numpy"}

    Returns
    -------
    numpy.ndarray, shape (K, K), int64
        Rows with no noise become ``INT64_MIN`` cells (prune nothing), as in cleanlab.
    """
    remove = np.asarray(num_to_remove_per_class)
    with np.errstate(divide="ignore", invalid="ignore"):
        noise_given = prune_counts / np.sum(prune_counts, axis=1)
        noise_per_row = noise_given.sum(axis=1) - noise_given.diagonal()
        rescaled = (noise_given.T * remove / noise_per_row).T
        np.fill_diagonal(rescaled, label_counts - remove)
        return round_preserving_row_totals(rescaled, tie_break)
