"""The O(K²) plan: statistics from the reduced states, and the selection tasks.

Input: class counts ``n_k``, the confident-joint counts and the options. Output: the noise
statistics (as cleanlab reports them) and, per pruning filter, the :class:`SelectionTasks`
that say how many rows of which class to select by which key. Made on a worker, by the merge
of the joint counts (:func:`selection_planning`); the driver receives it while the first cutoff
round already runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelscan.options import ScanOptions
from labelscan.passes import ClassLayout, passing_failures
from labelscan.selection import BY_CLASS, LOW_SCORE, NOISE_RATE, SelectionPlanner, SelectionTasks
from labelscan.stats import calibration, latent
from labelscan.stats.pairwise import finish_sum, mean_from_sum, sequence_sum

BIG_THRESHOLD = 2
"""Threshold of a class with no given labels (no probability reaches it)."""

THRESHOLD_LOWER_BOUND = 2e-6
"""Lower clip of the confident thresholds."""


@passing_failures
def layout_thresholds(pieces, layout: ClassLayout, dtype: np.dtype) -> np.ndarray:
    """:func:`confident_thresholds` with the class totals of a :class:`~labelscan.passes.ClassLayout`
    (a task beside the merged pieces)."""
    return confident_thresholds(pieces, layout.totals, dtype)


def confident_thresholds(pieces, class_totals: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Per-class mean self-confidence, bit-identical to cleanlab's ``get_confident_thresholds``.

    Parameters
    ----------
    pieces : labelscan.passes.ThresholdPieces
        Merged threshold pieces of every present class.
    class_totals : numpy.ndarray, shape (K,)
    dtype : numpy.dtype
        Dtype of pred_probs.

    Returns
    -------
    numpy.ndarray, shape (K,)
        In ``dtype`` when every class has a given label, float64 otherwise (cleanlab's rule).
    """
    short = pieces.short.sequences()

    def class_sum(k: int, n: int):
        if k not in short:
            return finish_sum(pieces.states[k], n, dtype)
        if len(short[k]) != n:
            raise ValueError(f"class {k}: {len(short[k])} self-confidences merged, {n} rows")
        return sequence_sum(short[k], dtype)

    means = [mean_from_sum(class_sum(k, int(n)), int(n), dtype) if n else BIG_THRESHOLD
             for k, n in enumerate(class_totals)]
    return np.clip(means, a_min=THRESHOLD_LOWER_BOUND, a_max=None)


@dataclass
class NoiseStatistics:
    """The O(K²) results of a scan (cleanlab names).

    Attributes
    ----------
    label_counts : numpy.ndarray, shape (K,)
    confident_thresholds : numpy.ndarray, shape (K,)
    confident_joint : numpy.ndarray, shape (K, K), int64
        Uncalibrated, diagonal clipped to ≥ 1.
    calibrated_confident_joint : numpy.ndarray, shape (K, K), int64
    joint, noise_matrix, inverse_noise_matrix : numpy.ndarray, shape (K, K)
    py : numpy.ndarray, shape (K,)
    num_label_issues : int
        cleanlab's ``num_label_issues`` ('off_diagonal').
    prune_counts : numpy.ndarray or None, shape (K, K)
        ``[guess, given]`` rows to prune (pruning filters only).
    """

    label_counts: np.ndarray
    confident_thresholds: np.ndarray
    confident_joint: np.ndarray
    calibrated_confident_joint: np.ndarray
    joint: np.ndarray
    noise_matrix: np.ndarray
    inverse_noise_matrix: np.ndarray
    py: np.ndarray
    num_label_issues: int
    prune_counts: np.ndarray | None = None

    def as_dict(self) -> dict:
        """JSON-ready dict (lists)."""
        return {name: (value.tolist() if isinstance(value, np.ndarray) else value)
                for name, value in self.__dict__.items()}


def noise_statistics(label_counts, thresholds, joint_counts, num_off_diagonal_issues, options: ScanOptions):
    """Calibrate, estimate the latent matrices and the prune counts.

    Parameters
    ----------
    label_counts : numpy.ndarray, shape (K,)
    thresholds : numpy.ndarray, shape (K,)
    joint_counts : numpy.ndarray, shape (K, K)
        Summed confident-joint counts ``[given, guess]``; overwritten when it is already int64
        and Fortran-ordered (:meth:`labelscan.stats.joint.JointCounts.dense`), so that the
        driver holds one raw K x K matrix, not two.
    num_off_diagonal_issues : int
    options : ScanOptions

    Returns
    -------
    NoiseStatistics
    """
    confident_joint = calibration.clip_diagonal_to_one(calibration.fortran_counts(joint_counts))
    calibrated = calibration.calibrate_confident_joint(confident_joint, label_counts, options.tie_break)
    py, noise_matrix, inverse_noise_matrix = latent.estimate_latent(calibrated, label_counts)
    stats = NoiseStatistics(
        label_counts=np.asarray(label_counts, dtype=np.int64),
        confident_thresholds=thresholds,
        confident_joint=confident_joint,
        calibrated_confident_joint=calibrated,
        joint=latent.estimate_joint(calibrated),
        noise_matrix=noise_matrix,
        inverse_noise_matrix=inverse_noise_matrix,
        py=py,
        num_label_issues=int(num_off_diagonal_issues),
    )
    if options.filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
        pruning_joint = calibrated if options.confident_joint is None else np.asarray(options.confident_joint)
        stats.prune_counts = prune_counts(pruning_joint, label_counts, options)
    return stats


def prune_counts(calibrated_joint, label_counts, options: ScanOptions) -> np.ndarray:
    """``[guess, given]`` rows to prune (cleanlab's prune-count matrix), shape (K, K)."""
    counts = calibration.keep_at_least_n_per_class(
        calibrated_joint.T, options.min_examples_per_class, options.frac_noise)
    if options.num_to_remove_per_class is not None:
        counts = calibration.prune_counts_for_removal(counts, options.num_to_remove_per_class, label_counts,
                                                      options.tie_break)
    return counts


def _prunable(label_counts, min_examples) -> np.ndarray:
    # cleanlab skips classes with n_k <= min_examples and drops the mask of 1-row classes
    return (label_counts > min_examples) & (label_counts > 1)


def noise_rate_tasks(stats: NoiseStatistics, options: ScanOptions, dtype, outranked=None) -> SelectionTasks:
    """For each class k and other class j: the ``pcm[j, k]`` rows of k with largest ``P_j - P_k``.

    ``outranked`` (K, K): rows of given label ``k`` with ``P_j > P_k`` (see
    :func:`labelscan.passes.outranked_counts`), when the joint pass counted them.
    """
    counts = stats.prune_counts
    num_classes = len(stats.label_counts)
    prunable = _prunable(stats.label_counts, options.min_examples_per_class)
    guess, given = np.nonzero((counts > 0) & ~np.eye(num_classes, dtype=bool) & prunable[None, :])
    order = np.lexsort((guess, given))
    given, guess = given[order], guess[order]
    task_counts = counts[guess, given].astype(np.int64)
    return SelectionTasks(kind=NOISE_RATE, classes=given, columns=guess, counts=task_counts,
                          sizes=stats.label_counts[given], key_dtype=np.dtype(dtype),
                          outranked_only=None if outranked is None else _outranked_only(
                              given, task_counts <= np.asarray(outranked)[given, guess], num_classes))


def _outranked_only(classes: np.ndarray, within: np.ndarray, num_classes: int) -> np.ndarray:
    """Per task: whether every task of its class selects only rows with a negative key
    (``within``: the task's count is at most its outranked rows), shape (T,), bool."""
    class_within = np.ones(num_classes, dtype=bool)
    class_within[classes[~within]] = False
    return class_within[classes]


def by_class_tasks(stats: NoiseStatistics, options: ScanOptions, dtype) -> SelectionTasks:
    """For each class k: the ``n_k - pcm[k, k]`` rows of k with smallest ``P_k``."""
    num_remove = stats.label_counts - np.diagonal(stats.prune_counts)
    prunable = _prunable(stats.label_counts, options.min_examples_per_class)
    classes = np.flatnonzero(prunable & (num_remove >= 1))
    return SelectionTasks(kind=BY_CLASS, classes=classes, columns=np.full(len(classes), -1),
                          counts=num_remove[classes].astype(np.int64),
                          sizes=stats.label_counts[classes], key_dtype=np.dtype(dtype))


def low_score_tasks(num_issues: int, num_rows: int, score_dtype) -> SelectionTasks:
    """One task: the ``num_issues`` rows with the lowest score."""
    count = np.asarray([num_issues] if num_issues > 0 else [], dtype=np.int64)
    return SelectionTasks(kind=LOW_SCORE, classes=np.full(len(count), -1), columns=np.full(len(count), -1),
                          counts=count, sizes=np.full(len(count), num_rows, dtype=np.int64),
                          key_dtype=np.dtype(score_dtype))


def selection_families(stats: NoiseStatistics, options: ScanOptions, dtype, num_rows, score_dtype=None,
                       outranked=None):
    """The selection task families a filter needs (empty for confident_learning / predicted_neq_given).

    ``outranked``: see :func:`noise_rate_tasks`.
    """
    if options.filter_by == "prune_by_noise_rate":
        return [noise_rate_tasks(stats, options, dtype, outranked)]
    if options.filter_by == "prune_by_class":
        return [by_class_tasks(stats, options, dtype)]
    if options.filter_by == "both":
        return [by_class_tasks(stats, options, dtype), noise_rate_tasks(stats, options, dtype, outranked)]
    if options.filter_by in ("low_self_confidence", "low_normalized_margin"):
        return [low_score_tasks(stats.num_label_issues, num_rows, score_dtype)]
    return []


WORKER_PLAN_MAX_CLASSES = 512
"""Classes up to which the merge of the joint counts makes the plan on its worker
(:func:`selection_planning`); wider plans are made on the driver, as before the worker could:
the plan's six K x K matrices then do not travel back to the driver (which holds them anyway),
and a worker's memory stays bounded by its partitions (2048 classes: 200 MB of plan; 10,000 killed
the worker). 200K x 1000 on the 2-core host, this bound at 2048 then 512, alternating processes
(``benchmarks.ab``, three rounds of five scans): 2.07 / 2.33 / 2.38 -> 1.59 / 1.92 / 2.01 s."""

FAMILIES_PER_FILTER = {"prune_by_noise_rate": 1, "prune_by_class": 1, "both": 2, "low_self_confidence": 1,
                       "low_normalized_margin": 1, "confident_learning": 0, "predicted_neq_given": 0}
"""Selection families of each filter (:func:`selection_families`), known before any pass."""


@dataclass
class SelectionPlanning:
    """The plan of the cutoffs, made on a worker next to the merged joint counts.

    Attributes
    ----------
    stats : NoiseStatistics
    families : list of SelectionTasks
        :func:`selection_families`.
    planners : list of labelscan.selection.SelectionPlanner
        Per family, its planner before any round (none for a plan made on the driver).
    first_steps : list
        Per family, its planner's first ``next_refine()``: ``(active tasks, bits)``, or None
        when it resolves at once.
    """

    stats: NoiseStatistics
    families: list
    planners: list
    first_steps: list


@passing_failures
def selection_planning(joint: dict, layout: ClassLayout, thresholds: np.ndarray, options: ScanOptions, dtype,
                       score_probe=None, plan_rounds: bool = True) -> SelectionPlanning:
    """:func:`noise_statistics` and :func:`selection_families` of the merged joint summaries
    (:func:`labelscan.passes.merge_joint_summaries`), with each family's first refine step
    (none with ``plan_rounds`` false: the driver drives every round).

    Parameters
    ----------
    layout : labelscan.passes.ClassLayout
    thresholds : numpy.ndarray, shape (K,)
    dtype : numpy.dtype
        Dtype of pred_probs.
    score_probe : numpy.ndarray, optional
        An array of the filter scores' dtype (low-score filters).

    Returns
    -------
    SelectionPlanning or labelscan.passes.InputFailure
    """
    outranked = None if joint["outranked_counts"] is None else joint["outranked_counts"].dense()
    stats = noise_statistics(layout.totals, thresholds, joint["joint_counts"].dense(),
                             joint["num_off_diagonal_issues"], options)
    families = selection_families(stats, options, dtype, layout.num_rows,
                                  None if score_probe is None else score_probe.dtype, outranked)
    planners = [SelectionPlanner(tasks) for tasks in families] if plan_rounds else []
    return SelectionPlanning(stats, families, planners, [planner.next_refine() for planner in planners])
