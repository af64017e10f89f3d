"""Dataset health: cleanlab 2.9's ``cleanlab.dataset`` functions, from a scan's O(K²) states.

Everything here is a function of three things a scan already has on the driver, so no extra
pass over the data is needed:

- the joint ``p(given=i, true=j)`` (the calibrated confident joint divided by its total),
- ``num_label_issues`` (cleanlab's default ``'off_diagonal'`` count: confident off-diagonal
  rows whose given label is not the argmax),
- ``N``, the number of rows.

Two faces:

- :func:`rank_classes_by_label_quality`, :func:`find_overlapping_classes`,
  :func:`overall_label_health_score`, :func:`health_summary`: cleanlab's signatures and
  answers. ``labels, pred_probs`` in memory run labelscan's engine once
  (:func:`labelscan.estimate_statistics`, ``num_partitions=`` splits the rows); ``joint=``
  / ``confident_joint=`` / ``num_examples=`` are used exactly as cleanlab uses them (a
  ``confident_joint`` given with ``labels`` is calibrated, without ``labels`` it is used as is).
- :func:`from_summary` (a finished scan's ``summary.json``) and :func:`summary_section` (the
  JSON-ready ``"health"`` entry a scan writes into ``summary.json``).

Orderings. cleanlab sorts its tables with pandas' default (unstable, SIMD) quicksort, so the
order of classes or pairs with *equal* scores is machine-dependent there. labelscan sorts
stably: equal scores keep class-index order (pairs: row-major ``(A, B)`` order), which is what
cleanlab gives when its sort is made stable. Values are identical; only tie order is pinned.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EPSILON = 1e-6
"""Lower clip of the denominators of the per-class noise rates (cleanlab's ``EPSILON``)."""

TINY_VALUE = 1e-100
"""Lower clip of the total of a confident joint (cleanlab's ``TINY_VALUE``)."""

SUMMARY_MAX_PAIRS = 100
"""Overlapping class pairs kept in ``summary.json`` (the largest joint probabilities)."""

_MULTILABEL = {
    "rank": "For multilabel data, please instead call:  "
            "multilabel_classification.dataset.overall_multilabel_health_score()",
    "overlap": "For multilabel data, please instead call: "
               "multilabel_classification.dataset.common_multilabel_issues()",
    "health": "For multilabel data, please instead call: "
              "multilabel_classification.dataset.overall_multilabel_health_score()",
    "summary": "For multilabel data, please call multilabel_classification.dataset.health_summary",
}


# ---------------------------------------------------------------------------------------------
# the O(K²) math


def joint_from_confident_joint(confident_joint, labels=None, tie_break="stable") -> np.ndarray:
    """cleanlab's ``estimate_joint`` for a supplied confident joint.

    Parameters
    ----------
    confident_joint : array-like, shape (K, K)
        ``[given, true]`` counts.
    labels : array-like, shape (N,), optional
        With labels the matrix is calibrated first (rows sum to the label counts, total N);
        without, it is only normalised.
    tie_break : {"stable", "numpy"}
        Order of equal remainders when rounding the calibrated counts.

    Returns
    -------
    numpy.ndarray, shape (K, K), float64, summing to 1
    """
    from labelscan.stats.calibration import calibrate_confident_joint

    counts = np.asarray(confident_joint)   # keeps the caller's memory layout, as cleanlab does
    if labels is not None:
        label_counts = np.bincount(np.asarray(labels).astype(np.int64), minlength=len(counts))
        counts = calibrate_confident_joint(counts, label_counts, tie_break)
    return counts / np.clip(float(np.sum(counts)), a_min=TINY_VALUE, a_max=None)


def class_quality(joint, num_examples: int, class_names=None) -> pd.DataFrame:
    """Per-class label noise of a joint, in class order (unsorted).

    Columns (cleanlab names): ``Class Index``, ``Label Issues`` (rows given k whose true class
    is another, ``round(N · p(given=k, true≠k))``), ``Inverse Label Issues``, ``Label Noise``
    (``p(true≠k | given=k)``), ``Inverse Label Noise`` (``p(given≠k | true=k)``),
    ``Label Quality Score`` (``1 − Label Noise``); ``Class Name`` first when names are given.
    """
    joint = np.asarray(joint, dtype=float)
    diagonal = joint.diagonal()
    given_mass, true_mass = joint.sum(axis=1), joint.sum(axis=0)
    given_noise, true_noise = given_mass - diagonal, true_mass - diagonal
    given_rate = given_noise / np.clip(given_mass, a_min=EPSILON, a_max=None)
    true_rate = true_noise / np.clip(true_mass, a_min=EPSILON, a_max=None)
    frame = pd.DataFrame({
        "Class Index": np.arange(len(joint)),
        "Label Issues": (given_noise * num_examples).round().astype(int),
        "Inverse Label Issues": (true_noise * num_examples).round().astype(int),
        "Label Noise": given_rate,
        "Inverse Label Noise": true_rate,
        "Label Quality Score": 1 - given_rate,
    })
    if class_names is not None:
        frame.insert(loc=0, column="Class Name", value=list(class_names))
    return frame


def class_pairs(joint, num_examples: int, asymmetric: bool = False, class_names=None) -> pd.DataFrame:
    """Off-diagonal class pairs of a joint in row-major order (unsorted).

    Symmetric (default): one row per ``A < B`` with ``p(A, B) + p(B, A)``; asymmetric: one row
    per ``A ≠ B`` with ``p(given=A, true=B)``. Columns: ``Class Index A``, ``Class Index B``,
    ``Num Overlapping Examples`` (``round(N · p)``), ``Joint Probability``; class names first
    when given.
    """
    joint = np.asarray(joint, dtype=float)
    size = len(joint)
    if asymmetric:
        values = joint
        first, second = np.nonzero(~np.eye(size, dtype=bool))
    else:
        values = np.triu(joint) + np.tril(joint).T
        first, second = np.triu_indices(size, k=1)
    probability = values[first, second]
    frame = pd.DataFrame({"Class Index A": first.astype(int), "Class Index B": second.astype(int),
                          "Joint Probability": probability})
    frame.insert(loc=2, column="Num Overlapping Examples",
                 value=(frame["Joint Probability"] * num_examples).round().astype(int))
    if class_names is not None:
        names = list(class_names)
        frame.insert(loc=0, column="Class Name A", value=[names[k] for k in first])
        frame.insert(loc=1, column="Class Name B", value=[names[k] for k in second])
    return frame


def _sorted(frame: pd.DataFrame, column: str, ascending: bool) -> pd.DataFrame:
    """Stable sort (ties keep their current order), index reset."""
    return frame.sort_values(by=column, ascending=ascending, kind="stable").reset_index(drop=True)


def ranked_classes(joint, num_examples: int, class_names=None) -> pd.DataFrame:
    """:func:`class_quality` sorted by ascending ``Label Quality Score`` (worst class first)."""
    return _sorted(class_quality(joint, num_examples, class_names), "Label Quality Score", True)


def overlapping_pairs(joint, num_examples: int, asymmetric: bool = False, class_names=None) -> pd.DataFrame:
    """:func:`class_pairs` sorted by descending ``Joint Probability``."""
    return _sorted(class_pairs(joint, num_examples, asymmetric, class_names), "Joint Probability", False)


def _print_health(health_score, num_issues, num_examples) -> None:
    print(f" * Overall, about {(1 - health_score):.0%} ({num_issues:,} of the {num_examples:,}) "
          f"labels in your dataset have potential issues.\n"
          f" ** The overall label health score for this dataset is: {health_score:.2f}.")


# ---------------------------------------------------------------------------------------------
# cleanlab-compatible functions


def _statistics(labels, pred_probs, num_partitions):
    from labelscan.compat import estimate_statistics

    return estimate_statistics(labels, pred_probs, num_partitions=num_partitions)


def _joint(labels, pred_probs, joint, confident_joint, num_partitions):
    """cleanlab's choice of joint: given, else from a confident joint, else estimated."""
    if joint is not None:
        return np.asarray(joint)
    if confident_joint is not None:
        return joint_from_confident_joint(confident_joint, labels)
    return _statistics(labels, pred_probs, num_partitions)["joint"]


def _num_examples(labels=None, confident_joint=None) -> int:
    if labels is None and confident_joint is None:
        raise ValueError("Error: num_examples is None. You must either provide confident_joint, "
                         "or provide both num_example and joint as input parameters.")
    return len(labels) if labels is not None else np.sum(confident_joint)


def rank_classes_by_label_quality(labels=None, pred_probs=None, *, class_names=None, num_examples=None,
                                  joint=None, confident_joint=None, multi_label=False,
                                  num_partitions=1) -> pd.DataFrame:
    """Classes ranked by label quality, worst first: cleanlab's ``dataset.rank_classes_by_label_quality``.

    Give ``labels`` and ``pred_probs``, or ``joint`` and ``num_examples``, or a
    ``confident_joint`` (with ``num_examples``: as in cleanlab, the number of rows is not
    taken from a confident joint here).

    Returns
    -------
    pandas.DataFrame
        One row per class, see :func:`class_quality`; ascending ``Label Quality Score``.
    """
    if multi_label:
        raise ValueError(_MULTILABEL["rank"])
    joint = _joint(labels, pred_probs, joint, confident_joint, num_partitions)
    if num_examples is None:
        num_examples = _num_examples(labels=labels)
    return ranked_classes(joint, num_examples, class_names)


def find_overlapping_classes(labels=None, pred_probs=None, *, asymmetric=False, class_names=None,
                             num_examples=None, joint=None, confident_joint=None, multi_label=False,
                             num_partitions=1) -> pd.DataFrame:
    """Pairs of classes often confused for one another: cleanlab's ``dataset.find_overlapping_classes``.

    Returns
    -------
    pandas.DataFrame
        See :func:`class_pairs`; descending ``Joint Probability``.
    """
    if multi_label:
        raise ValueError(_MULTILABEL["overlap"])
    joint = _joint(labels, pred_probs, joint, confident_joint, num_partitions)
    if num_examples is None:
        num_examples = _num_examples(labels=labels, confident_joint=confident_joint)
    return overlapping_pairs(joint, num_examples, asymmetric, class_names)


def overall_label_health_score(labels=None, pred_probs=None, *, num_examples=None, confident_joint=None,
                               joint=None, multi_label=False, verbose=True, num_partitions=1) -> float:
    """Fraction of labels estimated correct: cleanlab's ``dataset.overall_label_health_score``.

    With ``labels`` and ``pred_probs``: ``1 − num_label_issues / N`` (cleanlab's default
    ``'off_diagonal'`` count; a supplied ``confident_joint`` is ignored for it, as in cleanlab).
    Otherwise the trace of the joint (given, or from ``confident_joint``).

    Returns
    -------
    float
    """
    if multi_label:
        raise ValueError(_MULTILABEL["health"])
    if num_examples is None:
        num_examples = _num_examples(labels=labels, confident_joint=confident_joint)
    if pred_probs is None or labels is None:
        if joint is None:
            joint = joint_from_confident_joint(confident_joint, labels) if confident_joint is not None \
                else _statistics(labels, pred_probs, num_partitions)["joint"]
        health_score = np.asarray(joint).trace()
        num_issues = int(np.round(num_examples * (1 - health_score)))
    else:
        num_issues = int(_statistics(labels, pred_probs, num_partitions)["num_label_issues"])
        health_score = 1 - num_issues / num_examples
    if verbose:
        _print_health(health_score, num_issues, num_examples)
    return health_score


def health_summary(labels=None, pred_probs=None, *, asymmetric=False, class_names=None, num_examples=None,
                   joint=None, confident_joint=None, multi_label=False, verbose=True,
                   num_partitions=1) -> dict:
    """cleanlab's ``dataset.health_summary``: overall score, joint, class ranking, overlapping pairs.

    With ``labels`` and ``pred_probs`` the engine runs once (one set of passes over the data).

    Returns
    -------
    dict
        ``overall_label_health_score`` (float), ``joint`` (K, K), ``classes_by_label_quality``
        and ``overlapping_classes`` (DataFrames).
    """
    if multi_label:
        raise ValueError(_MULTILABEL["summary"])
    statistics = None
    if joint is None:
        if confident_joint is not None:
            joint = joint_from_confident_joint(confident_joint, labels)
        else:
            statistics = _statistics(labels, pred_probs, num_partitions)
            joint = statistics["joint"]
    if num_examples is None:
        num_examples = _num_examples(labels=labels)
    if verbose:
        print(f"Dataset health summary: {num_examples:,} examples and {len(joint):,} classes.\n")
    classes = ranked_classes(joint, num_examples, class_names)
    pairs = overlapping_pairs(joint, num_examples, asymmetric, class_names)
    if verbose:
        print("Overall Class Quality and Noise across your dataset (below)")
        print("-" * 60, "\n")
        print(classes.to_string())
        print("\nClass Overlap. In some cases, you may want to merge classes in the top rows (below)\n"
              + "-" * 83 + "\n")
        print(pairs.head(20).to_string())
        print()
    if labels is not None and pred_probs is not None:
        if statistics is None:   # a given joint / confident_joint does not change the count
            statistics = _statistics(labels, pred_probs, num_partitions)
        num_issues = int(statistics["num_label_issues"])
        health_score = 1 - num_issues / num_examples
        if verbose:
            _print_health(health_score, num_issues, num_examples)
    else:
        # cleanlab does not pass the joint on: the score comes from the confident joint
        health_score = overall_label_health_score(labels, pred_probs, num_examples=num_examples,
                                                  confident_joint=confident_joint, verbose=verbose)
    return {"overall_label_health_score": health_score, "joint": joint,
            "classes_by_label_quality": classes, "overlapping_classes": pairs}


# ---------------------------------------------------------------------------------------------
# scans


def from_statistics(statistics, num_examples=None, *, asymmetric=False, class_names=None) -> dict:
    """:func:`health_summary` of a scan, from its statistics (no pass over the data).

    Parameters
    ----------
    statistics : dict or labelscan.plan.NoiseStatistics
        ``summary["statistics"]`` of a scan (lists), :meth:`NoiseStatistics.as_dict`, or the
        dict of :func:`labelscan.estimate_statistics`: needs ``joint`` and
        ``num_label_issues`` (and ``label_counts`` when ``num_examples`` is not given).
    num_examples : int, optional
        N; default ``sum(label_counts)``.

    Returns
    -------
    dict
        As :func:`health_summary` (equal to cleanlab's on the same data).
    """
    if hasattr(statistics, "as_dict"):
        statistics = vars(statistics)   # arrays, not lists
    joint = np.asarray(statistics["joint"], dtype=float)
    if num_examples is None:
        num_examples = int(np.sum(statistics["label_counts"]))
    num_issues = int(statistics["num_label_issues"])
    return {"overall_label_health_score": 1 - num_issues / num_examples, "joint": joint,
            "classes_by_label_quality": ranked_classes(joint, num_examples, class_names),
            "overlapping_classes": overlapping_pairs(joint, num_examples, asymmetric, class_names)}


def from_summary(summary: dict, *, asymmetric=False, out=None, storage_options=None) -> dict:
    """:func:`health_summary` of a finished scan, from its ``summary.json`` contents.

    Parameters
    ----------
    summary : dict
        ``ScanResult.summary`` or the parsed ``summary.json``.
    out : str, optional
        The scan's directory: needed when its joint is stored as ``statistics/joint.parquet``
        (scans of more than 256 classes, :mod:`labelscan.summary_statistics`).
    storage_options : dict, optional
        fsspec options for ``out``.
    """
    from labelscan.summary_statistics import is_reference, read_statistic

    statistics = summary["statistics"]
    if is_reference(statistics["joint"]):
        if out is None:
            raise ValueError("this scan's joint is stored in statistics/joint.parquet: pass out=<the scan's directory>")
        statistics = {**statistics, "joint": read_statistic(out, summary, "joint", storage_options)}
    return from_statistics(statistics, summary.get("num_rows_scanned", summary.get("num_rows")),
                           asymmetric=asymmetric,
                           class_names=summary.get("class_names"))


def symmetric_pairs(joint: np.ndarray):
    """The class pairs ``A < B`` with ``p(A, B) + p(B, A) > 0``, in row-major order.

    From the joint's non-zero cells only: O(K²) to find them, O(non-zero cells) memory (no
    K x K float temporaries). Each value is ``joint[A, B] + joint[B, A]``, the same float
    addition as ``np.triu(joint, 1) + np.tril(joint, -1).T``.

    Parameters
    ----------
    joint : numpy.ndarray, shape (K, K), float

    Returns
    -------
    first, second : numpy.ndarray, shape (m,), intp
        ``A`` and ``B`` of each pair.
    values : numpy.ndarray, shape (m,), float
    """
    size = len(joint)
    given, true = np.nonzero(joint)
    off_diagonal = given != true
    given, true = given[off_diagonal], true[off_diagonal]
    cells = np.minimum(given, true).astype(np.int64) * size + np.maximum(given, true)
    order = np.argsort(cells, kind="stable")
    cells, values = cells[order], joint[given[order], true[order]]
    starts = np.flatnonzero(np.diff(cells, prepend=-1))
    values = np.add.reduceat(values, starts) if len(cells) else values
    cells = cells[starts]
    positive = values > 0
    return (cells // size)[positive], (cells % size)[positive], values[positive]


def summary_section(statistics, num_examples=None, *, class_names=None,
                    max_pairs: int = SUMMARY_MAX_PAIRS) -> dict:
    """The ``"health"`` entry of ``summary.json`` (JSON-ready).

    Parameters
    ----------
    statistics : dict or labelscan.plan.NoiseStatistics
        As for :func:`from_statistics`.
    num_examples : int, optional
    class_names : list of str, optional
    max_pairs : int
        Overlapping pairs to keep.

    Returns
    -------
    dict
        ``overall_label_health_score``, ``num_label_issues``, ``classes_by_label_quality``
        (every class, worst first, records with snake_case keys), ``overlapping_classes`` (the
        ``max_pairs`` symmetric pairs with the largest non-zero joint probability, in
        :func:`find_overlapping_classes` order) and ``num_overlapping_pairs`` (all pairs with a
        non-zero joint probability). O(K²) time, O(non-zero pairs) extra memory.
    """
    stats = vars(statistics) if hasattr(statistics, "as_dict") else statistics   # arrays, not lists
    joint = np.asarray(stats["joint"], dtype=float)
    if num_examples is None:
        num_examples = int(np.sum(stats["label_counts"]))
    num_issues = int(stats["num_label_issues"])
    first, second, values = symmetric_pairs(joint)
    top = np.argsort(-values, kind="stable")[:max_pairs]
    pairs = pd.DataFrame({"Class Index A": first[top].astype(int), "Class Index B": second[top].astype(int),
                          "Num Overlapping Examples": (values[top] * num_examples).round().astype(int),
                          "Joint Probability": values[top]})
    if class_names is not None:
        names = list(class_names)
        pairs.insert(loc=0, column="Class Name A", value=[names[k] for k in pairs["Class Index A"]])
        pairs.insert(loc=1, column="Class Name B", value=[names[k] for k in pairs["Class Index B"]])
    return {
        "overall_label_health_score": 1 - num_issues / num_examples,
        "num_label_issues": num_issues,
        "classes_by_label_quality": _records(ranked_classes(joint, num_examples, class_names)),
        "overlapping_classes": _records(pairs),
        "num_overlapping_pairs": int(len(values)),
    }


def _records(frame: pd.DataFrame) -> list:
    renamed = frame.rename(columns=lambda name: name.lower().replace(" ", "_"))
    records = renamed.to_dict("records")
    return [{key: (value.item() if hasattr(value, "item") else value) for key, value in record.items()}
            for record in records]
