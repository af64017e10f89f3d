"""Multi-label issues and scores (labelscan.multilabel) against cleanlab 2.9.

Oracle: ``cleanlab.multilabel_classification`` under ``oracle.stable_cleanlab()`` (its multi-label
code sorts in ``cleanlab.filter`` and reaches the binary problems through
``cleanlab.filter.find_label_issues``, both covered by the patch). Masks and ranked indices must be
identical; scores identical (same float operations).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

import cleanlab.filter
import cleanlab.multilabel_classification.filter as ml_filter
import cleanlab.multilabel_classification.rank as ml_rank
from cleanlab.count import compute_confident_joint

try:
    import oracle
except ImportError:  # tests/ imported as a package
    from tests import oracle

import labelscan
from labelscan import multilabel

FILTERS = oracle.FILTERS
RANKERS = (None, "self_confidence", "normalized_margin", "confidence_weighted_entropy")


def make_multilabel(n, k, seed, dtype=np.float64, absent=True, ties=False, flip=0.03, sharp=1.5,
                    spread=1.3):
    """Rows with no label (5%), one label, and many labels (5%); a fraction ``flip`` of annotations flipped.

    ``absent``: the last class is never given. ``ties``: probabilities quantised to 1/16.
    """
    rng = np.random.default_rng(seed)
    prior = rng.uniform(0.02, 0.3, k)
    truth = rng.random((n, k)) < prior
    truth[: n // 20] = False
    truth[n // 20: n // 10] = rng.random((n // 10 - n // 20, k)) < 0.6
    single = np.arange(n // 10, n // 5)
    truth[single] = False
    truth[single, rng.integers(0, k, len(single))] = True
    logits = np.where(truth, sharp, -sharp) + rng.normal(0, spread, (n, k))
    probs = 1 / (1 + np.exp(-logits))
    if ties:
        probs = np.round(probs * 16) / 16
    given = truth ^ (rng.random((n, k)) < flip)
    if absent:
        given[:, k - 1] = False
    labels = [[int(c) for c in np.flatnonzero(row)] for row in given]
    return labels, probs.astype(dtype)


SETS = {
    "k3_f64": lambda: make_multilabel(300, 3, 0, absent=False),
    "k20_f32_absent": lambda: make_multilabel(400, 20, 1, np.float32),
    "k50_f16": lambda: make_multilabel(300, 50, 2, np.float16, absent=False),
    "k50_ties_f64": lambda: make_multilabel(300, 50, 3, ties=True),
    "k200_f32": lambda: make_multilabel(200, 200, 4, np.float32, absent=False, flip=0.002,
                                             sharp=4.0, spread=0.8),
}


@functools.lru_cache(maxsize=None)
def dataset(name):
    return SETS[name]()


def oracle_call(function, *args, **kwargs):
    with oracle.stable_cleanlab(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError, AssertionError) as error:
            return error


def labelscan_call(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError, AssertionError) as error:
            return error


def assert_same(expected, got, context=""):
    if isinstance(expected, Exception):
        assert isinstance(got, type(expected)), (context, expected, got)
        assert " ".join(str(got).split()) in " ".join(str(expected).split()), (context, expected, got)
        return
    assert not isinstance(got, Exception), (context, got)
    assert got.dtype == expected.dtype, context
    np.testing.assert_array_equal(got, expected, err_msg=context)


@pytest.mark.parametrize("name", list(SETS))
@pytest.mark.parametrize("filter_by", FILTERS)
def test_find_label_issues_matches_cleanlab(name, filter_by):
    labels, pred_probs = dataset(name)
    for rank_by in RANKERS:
        expected = oracle_call(ml_filter.find_label_issues, labels, pred_probs, filter_by=filter_by,
                               return_indices_ranked_by=rank_by, n_jobs=1)
        for parts in (1, 7):
            got = labelscan_call(multilabel.find_label_issues, labels, pred_probs, filter_by=filter_by,
                                 return_indices_ranked_by=rank_by, num_partitions=parts)
            assert_same(expected, got, f"{name} {filter_by} {rank_by} parts={parts}")
    if not isinstance(expected, Exception) and filter_by != "predicted_neq_given":
        assert 0 < len(expected) < len(labels)   # the comparison is not vacuous


@pytest.mark.parametrize("name", ["k20_f32_absent", "k50_ties_f64"])
def test_options_match_cleanlab(name):
    labels, pred_probs = dataset(name)
    num_classes = pred_probs.shape[1]
    with oracle.stable_cleanlab(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        joint = compute_confident_joint(labels, pred_probs, multi_label=True)
    remove = list(np.random.default_rng(0).integers(0, 4, num_classes))
    cases = [
        dict(filter_by="prune_by_noise_rate", frac_noise=0.5),
        dict(filter_by="both", min_examples_per_class=30),
        dict(filter_by="prune_by_class", num_to_remove_per_class=remove),
        dict(filter_by="prune_by_noise_rate", confident_joint=joint, return_indices_ranked_by="normalized_margin"),
        dict(filter_by="low_self_confidence", confident_joint=joint),
        dict(filter_by="confident_learning", confident_joint=joint),
        dict(filter_by="both", confident_joint=np.ones((num_classes, num_classes), int)),   # ignored, warns
        dict(filter_by="both", confident_joint=np.ones((num_classes, 3, 3), int)),          # ValueError
        dict(filter_by="prune_by_class", return_indices_ranked_by="self_confidence",
             rank_by_kwargs={"adjust_pred_probs": True}),
        dict(filter_by="low_normalized_margin", return_indices_ranked_by="normalized_margin",
             rank_by_kwargs={"adjust_pred_probs": True}),
        dict(filter_by="both", return_indices_ranked_by="confidence_weighted_entropy",
             rank_by_kwargs={"adjust_pred_probs": True}),                                    # ValueError
        dict(filter_by="both", return_indices_ranked_by="no_such_score"),                    # ValueError
    ]
    for kwargs in cases:
        expected = oracle_call(ml_filter.find_label_issues, labels, pred_probs, n_jobs=1, **kwargs)
        got = labelscan_call(multilabel.find_label_issues, labels, pred_probs, num_partitions=5, **kwargs)
        assert_same(expected, got, str(kwargs))


def test_per_class_view_matches_cleanlab():
    labels, pred_probs = dataset("k20_f32_absent")
    expected = oracle_call(ml_filter.find_multilabel_issues_per_class, labels, pred_probs, n_jobs=1)
    got = multilabel.find_multilabel_issues_per_class(labels, pred_probs, num_partitions=7)
    assert_same(expected, got)
    assert expected.any(axis=0).sum() > 5
    expected = oracle_call(ml_filter.find_multilabel_issues_per_class, labels, pred_probs,
                           return_indices_ranked_by="normalized_margin", filter_by="both", n_jobs=1)
    got = multilabel.find_multilabel_issues_per_class(labels, pred_probs, return_indices_ranked_by="normalized_margin",
                                                      filter_by="both", num_partitions=3)
    for expected_list, got_list in zip(expected, got):
        assert len(expected_list) == len(got_list) == pred_probs.shape[1]
        for e, g in zip(expected_list, got_list):
            np.testing.assert_array_equal(g, e)


def test_class_in_every_row_is_refused_like_cleanlab():
    labels, pred_probs = dataset("k3_f64")
    labels = [sorted(set(row) | {0}) for row in labels]
    expected = oracle_call(ml_filter.find_label_issues, labels, pred_probs, n_jobs=1)
    assert isinstance(expected, ValueError)
    assert_same(expected, labelscan_call(multilabel.find_label_issues, labels, pred_probs))


def test_find_label_issues_multi_label_flag():
    """``labelscan.find_label_issues(..., multi_label=True)`` is cleanlab's validated multi-label entry."""
    labels, pred_probs = dataset("k20_f32_absent")
    cases = [dict(), dict(filter_by="confident_learning", return_indices_ranked_by="self_confidence"),
             dict(filter_by="low_self_confidence", num_to_remove_per_class=[1] * 20),   # ValueError
             dict(filter_by="bogus")]                                                   # AssertionError
    for kwargs in cases:
        expected = oracle_call(cleanlab.filter.find_label_issues, labels, pred_probs, multi_label=True, n_jobs=1,
                               **kwargs)
        got = labelscan_call(labelscan.find_label_issues, labels, pred_probs, multi_label=True, num_partitions=3,
                             **kwargs)
        if isinstance(expected, AssertionError):
            assert isinstance(got, AssertionError)
        else:
            assert_same(expected, got, str(kwargs))
    for bad_labels, error in ((tuple(labels), TypeError), (multilabel.onehot(labels, 20), TypeError)):
        assert isinstance(oracle_call(cleanlab.filter.find_label_issues, bad_labels, pred_probs, multi_label=True),
                          error)
        with pytest.raises(error):
            labelscan.find_label_issues(bad_labels, pred_probs, multi_label=True)


@pytest.mark.parametrize("name", ["k3_f64", "k20_f32_absent", "k50_f16", "k200_f32"])
def test_scores_match_cleanlab(name):
    labels, pred_probs = dataset(name)
    aggregations = [None, {"method": "exponential_moving_average", "alpha": 0.5},
                    {"method": "exponential_moving_average", "alpha": None}, {"method": "softmin"},
                    {"method": "softmin", "temperature": 0.5}]
    for method in ("self_confidence", "normalized_margin", "confidence_weighted_entropy"):
        for adjust in (False, True):
            for aggregator_kwargs in aggregations:
                kwargs = dict(method=method, adjust_pred_probs=adjust)
                if aggregator_kwargs is not None:
                    kwargs["aggregator_kwargs"] = aggregator_kwargs
                expected = oracle_call(ml_rank.get_label_quality_scores, labels, pred_probs, **kwargs)
                got = labelscan_call(multilabel.get_label_quality_scores, labels, pred_probs, **kwargs)
                assert_same(expected, got, str(kwargs))
            expected = oracle_call(ml_rank.get_label_quality_scores_per_class, labels, pred_probs, method=method,
                                   adjust_pred_probs=adjust)
            got = labelscan_call(multilabel.get_label_quality_scores_per_class, labels, pred_probs, method=method,
                                 adjust_pred_probs=adjust)
            assert_same(expected, got, f"per class {method} {adjust}")
    for bad in ({"method": "median"}, {"method": "exponential_moving_average", "alpha": 2}):
        expected = oracle_call(ml_rank.get_label_quality_scores, labels, pred_probs, aggregator_kwargs=bad)
        assert_same(expected, labelscan_call(multilabel.get_label_quality_scores, labels, pred_probs,
                                             aggregator_kwargs=bad), str(bad))
    # a multi-hot matrix is accepted as labels too
    np.testing.assert_array_equal(
        multilabel.get_label_quality_scores(multilabel.onehot(labels, pred_probs.shape[1]), pred_probs),
        multilabel.get_label_quality_scores(labels, pred_probs))


def test_onehot_and_back():
    labels = [[], [2], [0, 3, 1], [3]]
    matrix = multilabel.onehot(labels, 5)
    assert matrix.tolist() == [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [1, 1, 0, 1, 0], [0, 0, 0, 1, 0]]
    assert multilabel.to_lists(matrix) == [[], [2], [0, 1, 3], [3]]


def reference_audioset(multi_hot, pred_probs):
    """The label-errors study's AudioSet rule, with sklearn's micro-F1 (the reference)."""
    from sklearn.metrics import f1_score

    thresholds = np.arange(0.1, 0.6, .05)
    f1s = [f1_score(multi_hot, (pred_probs > threshold).astype(np.uint8), average="micro", zero_division=0)
           for threshold in thresholds]
    threshold = thresholds[np.argmax(f1s)]
    pred = (pred_probs > threshold).astype(np.uint8)
    for i in range(len(pred)):
        if sum(pred[i]) == 0:
            pred[i][np.argmax(pred_probs[i])] = 1
    return threshold, np.asarray(f1s), pred


@pytest.mark.parametrize("name", ["k20_f32_absent", "k50_ties_f64", "k200_f32"])
def test_audioset_threshold_rule(name):
    labels, pred_probs = dataset(name)
    multi_hot = multilabel.onehot(labels, pred_probs.shape[1])
    threshold, f1s, predictions = reference_audioset(multi_hot, pred_probs)
    for parts in (1, 7):
        got = multilabel.audioset_predictions(labels, pred_probs, num_partitions=parts)
        assert got["threshold"] == threshold
        np.testing.assert_allclose(got["f1"], f1s, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(got["predictions"], predictions)
    # counts are mergeable: a sum of per-partition counts
    halves = [multilabel.threshold_counts(multi_hot[s], pred_probs[s]) for s in (slice(0, 50), slice(50, None))]
    np.testing.assert_array_equal(halves[0] + halves[1], multilabel.threshold_counts(multi_hot, pred_probs))
