"""Multi-label label issues: cleanlab 2.9's ``multilabel_classification`` answers on labelscan's engine.

cleanlab reduces a multi-label set (labels ``List[List[int]]``, pred_probs ``(N, K)`` whose rows
need not sum to 1) to K one-vs-rest binary problems: for class ``c`` the labels are
``y[:, c]`` (1 when ``c`` is among the row's labels) and the predictions are
``[1 − p_c, p_c]``. Each binary problem here runs through labelscan's own partitioned engine
(:func:`labelscan.compat.find_label_issues`, ``num_partitions=`` splits the rows), so a
multi-label answer is exactly cleanlab's with every tie broken by row order
(``CLEANLAB_SPEC.md`` §14, §15.5):

- mask = OR over classes of the binary masks (:func:`find_multilabel_issues_per_class` gives
  the per-class view);
- ``low_self_confidence`` / ``low_normalized_margin``: the ``E`` rows with the lowest default
  multi-label score (self-confidence aggregated by an exponential moving average, α = 0.8),
  ``E`` = number of multi-label ``confident_learning`` issues;
- ranked output: flagged rows sorted by the multi-label score of ``return_indices_ranked_by``
  (ties by row). For the ``low_*`` filters cleanlab scores the flagged rows in row order but
  reorders its score-ordered index array with that order; labelscan reproduces this quirk.

Scores (:func:`get_label_quality_scores`): the binary label-quality score of each class
(``rank.get_label_quality_scores`` on ``[1 − p_c, p_c]``, ``adjust_pred_probs`` with that
class's own thresholds), aggregated per row by :func:`exponential_moving_average` (default)
or :func:`softmin`.

Also the prediction rule the label-errors study used for AudioSet (:func:`audioset_predictions`):
one threshold per dataset, the one of 0.10, 0.15, …, 0.55 (``np.arange(0.1, 0.6, 0.05)``) with
the best micro-F1 of ``P > t`` against the given labels (first best on ties), then ``P > t``
with the argmax where no class passes. Its counts (true/false positives, false negatives per
threshold) are sums over partitions: :func:`threshold_counts` per partition, add, then
:func:`best_threshold`.
"""

from __future__ import annotations

import warnings

import numpy as np

from labelscan.options import FILTERS, LOW_SCORE_FILTERS, PRUNING_FILTERS, RANK_METHODS

AUDIOSET_THRESHOLDS = np.arange(0.1, 0.6, 0.05)
"""Candidate thresholds of the AudioSet rule, exactly as the study computed them (float64)."""

DEFAULT_ALPHA = 0.8
"""Forgetting factor of the default exponential-moving-average aggregation."""

DEFAULT_AGGREGATOR = {"method": "exponential_moving_average", "alpha": DEFAULT_ALPHA}

EPSILON = 1e-6
"""Smallest softmin temperature."""

FLOATING_POINT_COMPARISON = 1e-6
"""pred_probs may exceed [0, 1] by this much."""


# ---------------------------------------------------------------------------------------------
# labels


def validate_multilabel(labels, pred_probs) -> None:
    """cleanlab's multi-label input checks (same exception types and messages).

    Parameters
    ----------
    labels : list of list of int
    pred_probs : numpy.ndarray, shape (N, K)
    """
    if not isinstance(labels, (list, np.ndarray, np.generic)) and not hasattr(labels, "to_numpy"):
        raise TypeError("labels should be a numpy array or pandas Series.")
    if not isinstance(pred_probs, (np.ndarray, np.generic)):
        raise TypeError("pred_probs must be a numpy array.")
    if len(pred_probs) != len(labels):
        raise ValueError("pred_probs and labels must have same length.")
    if pred_probs.ndim != 2:
        raise ValueError("pred_probs array must have shape: num_examples x num_classes.")
    if not isinstance(labels, list) or not all(isinstance(row, list) for row in labels):
        raise AssertionError("multi-label labels must be a list of lists of class indices")
    present = [max(row) for row in labels if len(row) != 0]
    highest_class = max(present) + 1   # ValueError "max() arg is an empty sequence" if no labels
    if pred_probs.shape[1] < highest_class:
        raise ValueError(f"pred_probs must have at least {highest_class} columns, based on the largest "
                         "class index which appears in labels.")
    if any(min(row) < 0 for row in labels if len(row) != 0):
        raise ValueError("Labels must be positive integers corresponding to class indices.")
    if np.min(pred_probs) < -FLOATING_POINT_COMPARISON or np.max(pred_probs) > 1 + FLOATING_POINT_COMPARISON:
        raise ValueError("Values in pred_probs must be between 0 and 1.")


def onehot(labels, num_classes: int) -> np.ndarray:
    """Multi-hot matrix of multi-label labels (cleanlab's ``int2onehot``).

    Parameters
    ----------
    labels : list of list of int, or numpy.ndarray of shape (N, K) with 0/1 entries
    num_classes : int

    Returns
    -------
    numpy.ndarray, shape (N, K), int64
        ``y[i, c] = 1`` when class ``c`` is among the labels of row ``i``.
    """
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(f"a multi-hot label matrix must have K={num_classes} columns")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("a multi-hot label matrix must hold only 0 and 1")
        return labels.astype(np.int64)
    try:
        lengths = np.fromiter((len(row) for row in labels), dtype=np.int64, count=len(labels))
        columns = np.fromiter((k for row in labels for k in row), dtype=np.int64, count=int(lengths.sum()))
    except TypeError:
        raise ValueError("wrong format for labels, should be a list of list[indices], please check the "
                         "documentation in find_label_issues for further information") from None
    matrix = np.zeros((len(labels), num_classes), dtype=np.int64)
    matrix[np.repeat(np.arange(len(labels)), lengths), columns] = 1
    return matrix


def to_lists(multi_hot: np.ndarray) -> list:
    """``List[List[int]]`` labels of a multi-hot matrix (cleanlab's ``onehot2int``)."""
    return [np.flatnonzero(row).tolist() for row in np.asarray(multi_hot)]


def complement(class_probs: np.ndarray) -> np.ndarray:
    """One-vs-rest binary predictions ``[1 − p, p]`` of one class, shape (N, 2), dtype of ``p``."""
    return np.column_stack((1 - class_probs, class_probs))


def _labels_matrix(labels, pred_probs) -> np.ndarray:
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        return onehot(labels, pred_probs.shape[1])
    validate_multilabel(labels, pred_probs)
    return onehot(labels, pred_probs.shape[1])


# ---------------------------------------------------------------------------------------------
# scores


def exponential_moving_average(s: np.ndarray, *, alpha=None, axis: int = 1, **_) -> np.ndarray:
    """Aggregate per-class scores: sort each row descending, ``ema = s₁``, ``ema = α·sₜ + (1 − α)·ema``.

    Parameters
    ----------
    s : numpy.ndarray, shape (N, K)
    alpha : float in [0, 1], optional
        Default ``2 / (K + 1)``.

    Returns
    -------
    numpy.ndarray, shape (N,)
        Dominated by the lowest scores of the row.
    """
    num_classes = s.shape[1]
    descending = np.fliplr(np.sort(s, axis=axis))
    if alpha is None:
        alpha = float(2 / (num_classes + 1))
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in the interval [0, 1], got {alpha}")
    columns = descending.T
    average = columns[0]
    for column in columns[1:]:
        average = alpha * column + (1 - alpha) * average
    return average


def softmin(s: np.ndarray, *, temperature: float = 0.1, axis: int = 1, **_) -> np.ndarray:
    """Aggregate per-class scores: ``Σ_c s_c · softmax((1 − s) / T)_c`` (max-shifted).

    Returns
    -------
    numpy.ndarray, shape (N,)
    """
    scaled = (1 - s) / max(temperature, EPSILON)
    scaled = scaled - np.max(scaled, axis=axis, keepdims=True)
    weights = np.exp(scaled)
    weights = weights / np.sum(weights, axis=axis, keepdims=True)
    return np.einsum("ij,ij->i", s, weights)


AGGREGATORS = {"exponential_moving_average": exponential_moving_average, "softmin": softmin}


def aggregator(method="exponential_moving_average", **kwargs):
    """A function ``(N, K) scores -> (N,)`` from a method name (or callable) and its keyword arguments."""
    if isinstance(method, str):
        if method not in AGGREGATORS:
            raise ValueError(f"Invalid aggregation method specified: '{method}', must be one of the "
                             f"following: {list(AGGREGATORS)}")
        method = AGGREGATORS[method]
    if not callable(method):
        raise TypeError(f"Expected callable method, got {type(method)}")

    def aggregate(scores):
        if not (isinstance(scores, np.ndarray) and scores.ndim == 2):
            raise ValueError(f"Expected 2D array for scores, got {type(scores)} with shape "
                             f"{getattr(scores, 'shape', None)}")
        return method(scores, **{**kwargs, "axis": 1})

    return aggregate


def _check_method(method: str) -> None:
    if method not in RANK_METHODS:
        raise ValueError(f"Invalid method name: {method}")


def class_scores(multi_hot: np.ndarray, pred_probs: np.ndarray, method="self_confidence",
                 adjust_pred_probs=False) -> np.ndarray:
    """Binary label-quality score of every (row, class) annotation.

    Parameters
    ----------
    multi_hot : numpy.ndarray, shape (N, K), 0/1
    pred_probs : numpy.ndarray, shape (N, K)
    method : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
    adjust_pred_probs : bool
        Subtract each class's binary confident thresholds first (not for entropy).

    Returns
    -------
    numpy.ndarray, shape (N, K), float64
        Column ``c``: :func:`labelscan.get_label_quality_scores` of ``y[:, c]`` on ``[1 − p_c, p_c]``.
    """
    from labelscan.compat import get_label_quality_scores

    _check_method(method)
    if adjust_pred_probs and method == "confidence_weighted_entropy":
        raise ValueError("adjust_pred_probs is not currently supported for "
                         "ClassLabelScorer.CONFIDENCE_WEIGHTED_ENTROPY.")
    scores = np.zeros(multi_hot.shape)
    for c in range(multi_hot.shape[1]):
        scores[:, c] = get_label_quality_scores(multi_hot[:, c], complement(pred_probs[:, c]), method=method,
                                                adjust_pred_probs=adjust_pred_probs)
    return scores


def _check_multi_hot(multi_hot: np.ndarray, pred_probs: np.ndarray) -> None:
    """cleanlab's strict check of the multi-label scorer: a (N, K>1) matrix holding both 0 and 1."""
    is_multilabel = (multi_hot.ndim == 2 and multi_hot.shape[1] > 1
                     and np.array_equal(np.unique(multi_hot), [0, 1]))
    if not is_multilabel:
        raise ValueError("Labels must be in multi-label format.")
    if multi_hot.shape != pred_probs.shape:
        raise ValueError("Labels and predicted probabilities must have the same shape.")


def multilabel_scores(multi_hot: np.ndarray, pred_probs: np.ndarray, method="self_confidence",
                      adjust_pred_probs=False, aggregator_kwargs=None) -> np.ndarray:
    """One label-quality score per row from a multi-hot matrix (strictly validated, as cleanlab).

    Returns
    -------
    numpy.ndarray, shape (N,), float64
    """
    _check_method(method)
    aggregate = aggregator(**(aggregator_kwargs or DEFAULT_AGGREGATOR))
    _check_multi_hot(multi_hot, pred_probs)
    return aggregate(class_scores(multi_hot, pred_probs, method, adjust_pred_probs))


def get_label_quality_scores(labels, pred_probs, *, method="self_confidence", adjust_pred_probs=False,
                             aggregator_kwargs=None) -> np.ndarray:
    """cleanlab's ``multilabel_classification.rank.get_label_quality_scores``.

    Parameters
    ----------
    labels : list of list of int (or a multi-hot (N, K) matrix)
    pred_probs : numpy.ndarray, shape (N, K)
    method : {"self_confidence", "normalized_margin", "confidence_weighted_entropy"}
    adjust_pred_probs : bool
    aggregator_kwargs : dict, optional
        ``{"method": "exponential_moving_average" | "softmin" | callable, **its kwargs}``;
        default ``{"method": "exponential_moving_average", "alpha": 0.8}``.

    Returns
    -------
    numpy.ndarray, shape (N,)
        Low = the row's labels more likely contain an error.
    """
    multi_hot = _labels_matrix(labels, pred_probs)
    return multilabel_scores(multi_hot, pred_probs, method, adjust_pred_probs, aggregator_kwargs)


def get_label_quality_scores_per_class(labels, pred_probs, *, method="self_confidence",
                                       adjust_pred_probs=False) -> np.ndarray:
    """cleanlab's ``multilabel_classification.rank.get_label_quality_scores_per_class``, shape (N, K)."""
    multi_hot = _labels_matrix(labels, pred_probs)
    return class_scores(multi_hot, pred_probs, method, adjust_pred_probs)


# ---------------------------------------------------------------------------------------------
# issues


def _class_confident_joints(confident_joint, num_classes):
    if confident_joint is None:
        return None
    confident_joint = np.asarray(confident_joint)
    if confident_joint.shape == (num_classes, num_classes):
        warnings.warn("The new recommended format for `confident_joint` in multi_label settings is "
                      "(num_classes,2,2) as output by compute_confident_joint(...,multi_label=True). Your "
                      "K x K confident_joint in the old format is being ignored.", stacklevel=3)
        return None
    if confident_joint.shape != (num_classes, 2, 2):
        raise ValueError("confident_joint should be of shape (num_classes, 2, 2)")
    return confident_joint


def _per_class(multi_hot, pred_probs, *, return_indices_ranked_by, rank_by_kwargs, filter_by, frac_noise,
               num_to_remove_per_class, min_examples_per_class, confident_joint, engine):
    from labelscan.compat import find_label_issues as binary_find_label_issues

    num_classes = multi_hot.shape[1]
    joints = _class_confident_joints(confident_joint, num_classes)
    results = []
    for c in range(num_classes):
        if filter_by == "predicted_neq_given" and len(np.unique(multi_hot[:, c])) < 2:
            # cleanlab re-validates for this filter without allowing a single class
            raise ValueError("Labels must contain at least 2 classes.")
        results.append(binary_find_label_issues(
            multi_hot[:, c], complement(pred_probs[:, c]), filter_by=filter_by, frac_noise=frac_noise,
            num_to_remove_per_class=None if num_to_remove_per_class is None else [num_to_remove_per_class[c], 0],
            min_examples_per_class=min_examples_per_class,
            confident_joint=None if joints is None else joints[c],
            return_indices_ranked_by=return_indices_ranked_by, rank_by_kwargs=rank_by_kwargs, **engine))
    return results


def find_multilabel_issues_per_class(labels, pred_probs, return_indices_ranked_by=None, rank_by_kwargs=None,
                                     filter_by="prune_by_noise_rate", frac_noise=1.0,
                                     num_to_remove_per_class=None, min_examples_per_class=1,
                                     confident_joint=None, n_jobs=None, verbose=False, low_memory=False, *,
                                     num_partitions=1, tie_break="stable", backend="numpy"):
    """Which class of which row looks mis-annotated: cleanlab's ``find_multilabel_issues_per_class``.

    Returns
    -------
    numpy.ndarray, shape (N, K), bool
        Without ranking: ``[i, c]`` True when class ``c``'s annotation of row ``i`` looks wrong.
    tuple of three lists of length K
        With ``return_indices_ranked_by``: per class the ranked binary issue indices, the binary
        labels ``y[:, c]`` and the binary predictions ``[1 − p_c, p_c]``.
    """
    if low_memory:
        raise NotImplementedError("low_memory=True (cleanlab's batched approximation) is not provided; "
                                  "labelscan's exact path already works partition by partition")
    multi_hot = onehot(labels, pred_probs.shape[1])
    results = _per_class(multi_hot, pred_probs, return_indices_ranked_by=return_indices_ranked_by,
                         rank_by_kwargs=rank_by_kwargs, filter_by=filter_by, frac_noise=frac_noise,
                         num_to_remove_per_class=num_to_remove_per_class,
                         min_examples_per_class=min_examples_per_class, confident_joint=confident_joint,
                         engine=dict(num_partitions=num_partitions, tie_break=tie_break, backend=backend))
    if return_indices_ranked_by is None:
        return np.column_stack(results) if results else np.zeros(multi_hot.shape, dtype=bool)
    return (results, [multi_hot[:, c] for c in range(multi_hot.shape[1])],
            [complement(pred_probs[:, c]) for c in range(multi_hot.shape[1])])


def _check_arguments(filter_by, return_indices_ranked_by, rank_by_kwargs):
    if filter_by not in FILTERS:
        raise AssertionError(f"filter_by must be one of {FILTERS}; got {filter_by!r}")
    if return_indices_ranked_by is not None and return_indices_ranked_by not in RANK_METHODS:
        raise ValueError(f"{return_indices_ranked_by} is not a valid scoring method for rank_by!")
    if (rank_by_kwargs or {}).get("adjust_pred_probs") and return_indices_ranked_by == "confidence_weighted_entropy":
        raise ValueError("adjust_pred_probs is not currently supported for confidence_weighted_entropy.")


def find_label_issues(labels, pred_probs, return_indices_ranked_by=None, rank_by_kwargs=None,
                      filter_by="prune_by_noise_rate", frac_noise=1.0, num_to_remove_per_class=None,
                      min_examples_per_class=1, confident_joint=None, n_jobs=None, verbose=False,
                      low_memory=False, *, num_partitions=1, tie_break="stable", backend="numpy"):
    """Rows whose labels look wrong for any class: cleanlab's ``multilabel_classification.filter.find_label_issues``.

    Parameters
    ----------
    labels : list of list of int
        Given labels of each row (a row may have none); or a multi-hot (N, K) 0/1 matrix.
    pred_probs : numpy.ndarray, shape (N, K)
        Out-of-sample probability of each class (rows need not sum to 1).
    return_indices_ranked_by, rank_by_kwargs, filter_by, frac_noise, num_to_remove_per_class,
    min_examples_per_class :
        As in cleanlab (per class: ``num_to_remove_per_class[c]`` rows having class ``c``).
    confident_joint : numpy.ndarray, shape (K, 2, 2), optional
        One-vs-rest confident joints, used as is by the pruning filters.
    n_jobs, verbose :
        Accepted for compatibility.
    low_memory : bool
        Not supported (raises NotImplementedError).
    num_partitions : int
        Every binary problem is cut into this many uneven partitions.

    Returns
    -------
    numpy.ndarray
        Boolean mask (N,), or int64 indices of the flagged rows ranked by the multi-label score
        (lowest first, ties by row).
    """
    if low_memory:
        raise NotImplementedError("low_memory=True (cleanlab's batched approximation) is not provided; "
                                  "labelscan's exact path already works partition by partition")
    _check_arguments(filter_by, return_indices_ranked_by, rank_by_kwargs)
    engine = dict(num_partitions=num_partitions, tie_break=tie_break, backend=backend)
    multi_hot = onehot(labels, pred_probs.shape[1])
    common = dict(frac_noise=frac_noise, num_to_remove_per_class=num_to_remove_per_class,
                  min_examples_per_class=min_examples_per_class, engine=engine)
    if filter_by in LOW_SCORE_FILTERS:
        if isinstance(labels, list):   # cleanlab counts E through its validated entry
            validate_multilabel(labels, pred_probs)
        confident = _per_class(multi_hot, pred_probs, return_indices_ranked_by=None, rank_by_kwargs=None,
                               filter_by="confident_learning", confident_joint=confident_joint,
                               **{**common, "frac_noise": 1.0, "num_to_remove_per_class": None})
        num_errors = int(np.count_nonzero(np.column_stack(confident).any(axis=1)))
        scores = multilabel_scores(multi_hot, pred_probs)
        chosen = np.argsort(scores, kind="stable")[:num_errors]
        mask = np.zeros(len(multi_hot), dtype=bool)
        mask[chosen] = True
        if return_indices_ranked_by is None:
            return mask
        # cleanlab scores the flagged rows in row order, then reorders its score-ordered indices with it
        issue_scores = multilabel_scores(multi_hot[mask], pred_probs[mask], return_indices_ranked_by,
                                         bool((rank_by_kwargs or {}).get("adjust_pred_probs", False)))
        return chosen[np.argsort(issue_scores, kind="stable")].astype(np.int64)
    masks = _per_class(multi_hot, pred_probs, return_indices_ranked_by=None, rank_by_kwargs=None,
                       filter_by=filter_by, confident_joint=confident_joint, **common)
    mask = np.column_stack(masks).any(axis=1) if masks else np.zeros(len(multi_hot), dtype=bool)
    if return_indices_ranked_by is None:
        return mask
    issues = np.flatnonzero(mask)
    scores = multilabel_scores(multi_hot, pred_probs, return_indices_ranked_by,
                               bool((rank_by_kwargs or {}).get("adjust_pred_probs", False)))
    return issues[np.argsort(scores[issues], kind="stable")].astype(np.int64)


def find_label_issues_validated(labels, pred_probs, **kwargs):
    """``cleanlab.filter.find_label_issues(..., multi_label=True)``: validated inputs, then :func:`find_label_issues`.

    ``labels`` must be a list (TypeError otherwise), as in cleanlab.
    """
    filter_by = kwargs.get("filter_by", "prune_by_noise_rate")
    if filter_by not in FILTERS:
        raise AssertionError(f"filter_by must be one of {FILTERS}; got {filter_by!r}")
    if not isinstance(labels, list):   # a multi-hot matrix goes to multilabel.find_label_issues
        raise TypeError("`labels` must be list when `multi_label=True`.")
    validate_multilabel(labels, pred_probs)
    if kwargs.get("num_to_remove_per_class") is not None and filter_by not in PRUNING_FILTERS:
        raise ValueError("filter_by 'confident_learning', 'predicted_neq_given', 'low_normalized_margin' "
                         "or 'low_self_confidence' is not supported (yet) when setting 'num_to_remove_per_class'")
    if kwargs.get("n_jobs") is not None and kwargs["n_jobs"] < 1:
        raise AssertionError("n_jobs must be at least 1")
    return find_label_issues(labels, pred_probs, **kwargs)


# ---------------------------------------------------------------------------------------------
# the AudioSet prediction rule


def threshold_counts(multi_hot: np.ndarray, pred_probs: np.ndarray, thresholds=AUDIOSET_THRESHOLDS) -> np.ndarray:
    """Micro-F1 counts of ``P > t`` against the labels, for every threshold (one partition).

    Returns
    -------
    numpy.ndarray, shape (T, 3), int64
        ``[true positives, predicted positives, actual positives]`` per threshold; sums over
        partitions give the dataset's counts.
    """
    given = np.asarray(multi_hot).astype(bool)
    actual = int(np.count_nonzero(given))
    counts = np.zeros((len(thresholds), 3), dtype=np.int64)
    for index, threshold in enumerate(thresholds):
        predicted = pred_probs > threshold
        counts[index] = (np.count_nonzero(predicted & given), np.count_nonzero(predicted), actual)
    return counts


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """Micro-F1 ``2·tp / (predicted + actual)`` per row of :func:`threshold_counts` (0 when both are 0)."""
    counts = np.asarray(counts)
    denominator = (counts[:, 1] + counts[:, 2]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2.0 * counts[:, 0] / denominator, 0.0)
    return f1


def best_threshold(counts: np.ndarray, thresholds=AUDIOSET_THRESHOLDS):
    """The threshold with the best micro-F1 (the first on ties) and every threshold's F1."""
    f1 = micro_f1(counts)
    return float(np.asarray(thresholds)[int(np.argmax(f1))]), f1


def predict_with_threshold(pred_probs: np.ndarray, threshold: float) -> np.ndarray:
    """``P > t`` as a multi-hot uint8 matrix, with the argmax where no class passes (one partition)."""
    predicted = (pred_probs > np.float64(threshold)).astype(np.uint8)
    empty = ~predicted.any(axis=1)
    predicted[np.flatnonzero(empty), np.argmax(pred_probs[empty], axis=1)] = 1
    return predicted


def audioset_predictions(labels, pred_probs, *, thresholds=AUDIOSET_THRESHOLDS, num_partitions=1) -> dict:
    """The AudioSet prediction rule of the label-errors study, computed from mergeable counts.

    Parameters
    ----------
    labels : list of list of int, or multi-hot (N, K)
    pred_probs : numpy.ndarray, shape (N, K)
    thresholds : array-like
        Candidates (default ``np.arange(0.1, 0.6, 0.05)``).
    num_partitions : int
        Count per partition and add (the distributed plan, run in process).

    Returns
    -------
    dict
        ``threshold`` (float), ``f1`` (T,) micro-F1 of each candidate, ``counts`` (T, 3) and
        ``predictions`` (N, K) uint8.
    """
    from labelscan.compat import split_rows
    from labelscan.passes import sum_arrays
    from labelscan.runner import InProcessRunner

    multi_hot = onehot(labels, pred_probs.shape[1])
    bounds = split_rows(len(multi_hot), num_partitions)
    slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    runner = InProcessRunner()
    counts = runner.reduce("threshold-counts-merge", sum_arrays,
                           runner.map("threshold-counts", threshold_counts, [multi_hot[s] for s in slices],
                                      [pred_probs[s] for s in slices], thresholds=np.asarray(thresholds)))
    threshold, f1 = best_threshold(counts, thresholds)
    predictions = np.concatenate(runner.map("predict", predict_with_threshold, [pred_probs[s] for s in slices],
                                            threshold=threshold))
    return {"threshold": threshold, "f1": f1, "counts": counts, "predictions": predictions}
