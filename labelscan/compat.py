"""cleanlab-compatible functions on in-memory arrays.

``find_label_issues`` has cleanlab 2.9's signature and returns its answer (with ties broken by
row order, see ``CLEANLAB_SPEC.md`` §15.5). The arrays are cut into partitions and run
through the same engine as a distributed scan, in this process: what is tested here is what
runs on a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelscan import engine, outcome
from labelscan.kernels import grouped
from labelscan.options import FILTERS, PRUNING_FILTERS, RANK_METHODS, ScanOptions
from labelscan.backend import resolve_backend
from labelscan.runner import InProcessRunner

PROBABILITY_TOLERANCE = 1e-6
"""pred_probs may exceed [0, 1] by this much (cleanlab's bound)."""


@dataclass
class ArraySource:
    """A partition of in-memory arrays (a slice of rows), computed on ``backend``."""

    row_start: int
    labels: np.ndarray
    pred_probs: np.ndarray
    backend: str = "numpy"

    def load(self):
        return self.row_start, self.labels, self.pred_probs, None


def split_rows(num_rows: int, num_partitions: int) -> np.ndarray:
    """Deterministic, uneven partition boundaries.

    Returns
    -------
    numpy.ndarray, shape (P + 1,)
        ``0 = b_0 < b_1 < … < b_P = num_rows`` (fewer partitions if there are fewer rows).
    """
    num_partitions = max(1, min(int(num_partitions), max(num_rows, 1)))
    rng = np.random.default_rng(num_partitions)
    inner = np.sort(rng.choice(np.arange(1, max(num_rows, 1)), size=num_partitions - 1, replace=False))
    return np.concatenate([[0], inner, [num_rows]]).astype(np.int64)


def validate_arrays(labels, pred_probs, allow_one_class: bool = False):
    """cleanlab's ``assert_valid_inputs`` checks (same exception types), returning int64 labels.

    Returns
    -------
    numpy.ndarray, shape (N,), int64
    """
    if not isinstance(labels, (list, np.ndarray, np.generic)) and not hasattr(labels, "to_numpy"):
        raise TypeError("labels should be a numpy array or pandas Series.")
    if not isinstance(pred_probs, np.ndarray):
        raise TypeError("pred_probs must be a numpy array.")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("Labels must be 1D numpy array.")
    if labels.dtype.kind in "US":
        raise ValueError("Labels cannot be strings, they must be zero-indexed integers corresponding to class indices.")
    if len(labels) == 0:
        raise ValueError("min() arg is an empty sequence")
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError("Labels must be zero-indexed integers corresponding to class indices.")
    if pred_probs.ndim != 2:
        raise ValueError("pred_probs array must have shape: num_examples x num_classes.")
    if len(labels) != len(pred_probs):
        raise ValueError("pred_probs and labels must have same length.")
    if labels.min() < 0:
        raise ValueError("Labels must be positive integers corresponding to class indices.")
    if labels.max() >= pred_probs.shape[1]:
        raise ValueError(f"pred_probs must have at least {int(labels.max()) + 1} columns, based on the "
                         "largest class index which appears in labels.")
    if len(np.unique(labels)) < 2 and not allow_one_class:
        raise ValueError("Labels must contain at least 2 classes.")
    if np.min(pred_probs) < -PROBABILITY_TOLERANCE or np.max(pred_probs) > 1 + PROBABILITY_TOLERANCE:
        raise ValueError("Values in pred_probs must be between 0 and 1.")
    return labels.astype(np.int64)


def _analyse(labels, pred_probs, options: ScanOptions, num_partitions: int, backend: str = "numpy"):
    bounds = split_rows(len(labels), num_partitions)
    backend = resolve_backend(backend)
    sources = [ArraySource(int(a), labels[a:b], np.ascontiguousarray(pred_probs[a:b]), backend)
               for a, b in zip(bounds[:-1], bounds[1:])]
    runner = InProcessRunner()
    analysis = engine.analyse(runner, sources, pred_probs.shape[1], pred_probs.dtype, options)
    engine.wait_for_cutoffs(runner, analysis)
    return runner, analysis


def _outcomes(runner, analysis):
    return runner.map("flag", outcome.partition_outcome, analysis.parts, analysis.facts, analysis.family_keys,
                      list(range(len(analysis.parts))), family_cutoffs=analysis.family_cutoffs,
                      request=analysis.request)


def find_label_issues(labels, pred_probs, *, return_indices_ranked_by=None, rank_by_kwargs=None,
                      filter_by="prune_by_noise_rate", frac_noise=1.0, num_to_remove_per_class=None,
                      min_examples_per_class=1, confident_joint=None, n_jobs=None, verbose=False,
                      multi_label=False, num_partitions=1, tie_break="stable", backend="numpy"):
    """Find label issues in in-memory arrays: cleanlab 2.9's ``filter.find_label_issues``, with
    its signature (every argument after ``pred_probs`` keyword-only) and three more keywords.

    Parameters
    ----------
    labels : array-like, shape (N,)
        Given labels in ``[0, K)``.
    pred_probs : numpy.ndarray, shape (N, K)
        Out-of-sample predicted probabilities (float16, float32 or float64; never cast).
    filter_by, frac_noise, num_to_remove_per_class, min_examples_per_class, confident_joint :
        As in cleanlab.
    return_indices_ranked_by : {None, "self_confidence", "normalized_margin", "confidence_weighted_entropy"}
    rank_by_kwargs : dict, optional
        ``{"adjust_pred_probs": bool}``.
    n_jobs : int, optional
        Accepted for compatibility; results never depend on it.
    verbose : bool
        Accepted for compatibility; labelscan prints nothing here.
    multi_label : bool
        ``labels`` is a list of lists of class indices: cleanlab's multi-label answer
        (:func:`labelscan.multilabel.find_label_issues`).
    num_partitions : int
        Cut the rows into this many uneven partitions (exercises the distributed plan).
    tie_break : {"stable", "numpy"}
        Order of equal remainders when rounding the calibrated confident joint; ``"numpy"``
        reproduces stock cleanlab on this machine (see :class:`labelscan.options.ScanOptions`).
    backend : {"numpy", "cupy", "auto"}
        Where the per-partition work runs (same answer on every backend).

    Returns
    -------
    numpy.ndarray
        Boolean mask, shape (N,), or int64 indices of the issues ranked by the score.
    """
    if multi_label:
        from labelscan.multilabel import find_label_issues_validated

        return find_label_issues_validated(
            labels, pred_probs, return_indices_ranked_by=return_indices_ranked_by, rank_by_kwargs=rank_by_kwargs,
            filter_by=filter_by, frac_noise=frac_noise, num_to_remove_per_class=num_to_remove_per_class,
            min_examples_per_class=min_examples_per_class, confident_joint=confident_joint, n_jobs=n_jobs,
            num_partitions=num_partitions, tie_break=tie_break, backend=backend)
    if filter_by not in FILTERS:
        raise AssertionError(f"filter_by must be one of {FILTERS}; got {filter_by!r}")
    if n_jobs is not None and n_jobs < 1:
        raise AssertionError("n_jobs must be at least 1")
    if return_indices_ranked_by is not None and return_indices_ranked_by not in RANK_METHODS:
        raise ValueError(f"{return_indices_ranked_by} is not a valid scoring method for rank_by!")
    if (rank_by_kwargs or {}).get("adjust_pred_probs") and return_indices_ranked_by == "confidence_weighted_entropy":
        raise ValueError("adjust_pred_probs is not currently supported for confidence_weighted_entropy.")
    if num_to_remove_per_class is not None and filter_by not in PRUNING_FILTERS:
        raise ValueError("filter_by 'confident_learning', 'predicted_neq_given', 'low_normalized_margin' "
                         "or 'low_self_confidence' is not supported (yet) when setting 'num_to_remove_per_class'")
    allow_one_class = set(np.asarray(labels).tolist()) == {0} if np.ndim(labels) == 1 else False
    # cleanlab's predicted_neq_given validates again without the all-zero-labels exception
    allow_one_class &= filter_by != "predicted_neq_given"
    labels = validate_arrays(labels, pred_probs, allow_one_class=allow_one_class)
    rank_by_kwargs = dict(rank_by_kwargs or {})
    options = ScanOptions(
        filter_by=filter_by, frac_noise=frac_noise,
        num_to_remove_per_class=None if num_to_remove_per_class is None else tuple(num_to_remove_per_class),
        min_examples_per_class=min_examples_per_class,
        rank_by=return_indices_ranked_by or "self_confidence",
        adjust_pred_probs=bool(rank_by_kwargs.get("adjust_pred_probs", False)) and return_indices_ranked_by is not None,
        confident_joint=None if confident_joint is None or filter_by == "confident_learning" else np.asarray(confident_joint),
        tie_break=tie_break,
    )
    runner, analysis = _analyse(labels, pred_probs, options, num_partitions, backend)
    results = _outcomes(runner, analysis)
    if return_indices_ranked_by is None:
        return np.concatenate([r.is_label_issue for r in results])
    return outcome.merge_ranked([r.issues for r in results])["row_id"].astype(np.int64)


def estimate_statistics(labels, pred_probs, *, num_partitions=1, backend="numpy") -> dict:
    """Confident thresholds, confident joints, noise matrices and issue counts of a dataset.

    Returns
    -------
    dict
        ``confident_thresholds`` (K,), ``confident_joint`` (K, K) uncalibrated,
        ``calibrated_confident_joint``, ``joint``, ``noise_matrix``, ``inverse_noise_matrix``,
        ``py``, ``num_label_issues`` and ``num_label_issues_per_class`` (K,) for the default
        filter.
    """
    labels = validate_arrays(labels, pred_probs)
    runner, analysis = _analyse(labels, pred_probs, ScanOptions(), num_partitions, backend)
    stats = analysis.stats
    per_class = np.sum([r.issues_per_class for r in _outcomes(runner, analysis)], axis=0)
    return {
        "confident_thresholds": stats.confident_thresholds,
        "confident_joint": stats.confident_joint,
        "calibrated_confident_joint": stats.calibrated_confident_joint,
        "joint": stats.joint,
        "noise_matrix": stats.noise_matrix,
        "inverse_noise_matrix": stats.inverse_noise_matrix,
        "py": stats.py,
        "num_label_issues": stats.num_label_issues,
        "num_label_issues_per_class": per_class.astype(np.int64),
    }


def get_label_quality_scores(labels, pred_probs, method="self_confidence", adjust_pred_probs=False):
    """cleanlab's ``rank.get_label_quality_scores``, shape (N,)."""
    labels = validate_arrays(labels, pred_probs, allow_one_class=True)
    if method not in RANK_METHODS:
        raise ValueError(f"{method} is not a valid scoring method for rank_by!")
    if adjust_pred_probs and method == "confidence_weighted_entropy":
        raise ValueError(f"adjust_pred_probs is not currently supported for {method}.")
    thresholds = None
    if adjust_pred_probs:
        runner, analysis = _analyse(labels, pred_probs, ScanOptions(filter_by="confident_learning"), 1)
        thresholds = analysis.stats.confident_thresholds
    part = grouped.group_by_label(0, labels, pred_probs)
    return part.to_row_order(grouped.label_quality_scores(part, method, adjust_pred_probs, thresholds))
