"""``tie_break="numpy"``: the calibrated-joint rounding ties as stock cleanlab breaks them.

Stock cleanlab orders equal rounding remainders with numpy's default (SIMD, unstable) sort,
so on continuous data its prune counts can differ from the canonical stable rule
(CLEANLAB_SPEC §4, §16.2). With ``tie_break="numpy"`` labelscan sorts those K-length vectors
the same way on the driver and, on tie-free rows, returns stock cleanlab's exact mask.
"""

import warnings

import numpy as np
import pytest

import labelscan
import oracle
import synthetic

PRUNING = ["prune_by_noise_rate", "prune_by_class", "both"]


def _cases():
    # continuous data where stock and stable rounding disagree on some seeds
    return [synthetic.continuous(20_000, k, np.float64, seed=seed) for k, seed in ((10, 3), (30, 1), (100, 2))]


@pytest.fixture(scope="module")
def cases():
    return _cases()


@pytest.mark.parametrize("filter_by", PRUNING)
def test_numpy_ties_match_stock_cleanlab(cases, filter_by):
    disagreements = 0
    for labels, pred_probs in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stock = oracle.stock_find_label_issues(labels, pred_probs, filter_by=filter_by)
            stable = oracle.oracle_find_label_issues(labels, pred_probs, filter_by=filter_by)
        ours_numpy = labelscan.find_label_issues(labels, pred_probs, filter_by=filter_by,
                                                 num_partitions=7, tie_break="numpy")
        ours_stable = labelscan.find_label_issues(labels, pred_probs, filter_by=filter_by, num_partitions=7)
        np.testing.assert_array_equal(ours_numpy, stock)
        np.testing.assert_array_equal(ours_stable, stable)
        disagreements += int((stock != stable).sum())
    if filter_by == "prune_by_noise_rate":
        # the cases are chosen so the two rules really differ somewhere
        assert disagreements > 0


def test_tie_break_is_validated():
    labels, pred_probs = synthetic.continuous(500, 3, np.float32, seed=0)
    with pytest.raises(labelscan.errors.UsageError):
        labelscan.find_label_issues(labels, pred_probs, tie_break="random")
