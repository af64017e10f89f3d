"""Sample-based pivot intervals of the per-class selections (labelscan/selection_pivots.py).

- the pivot round is used (few classes, noise-rate and by-class filters) and gives cleanlab 2.9's
  answer (on a LocalCluster: tests/test_parity_scan.py);
- pivots that miss the cut (every interval below it, above it, or one single value) still give
  the exact answer: the tasks go back to the whole range;
- the sample is bounded per class, whole for small classes, and the same whatever the partitioning
  up to each partition's own stride phase;
- the pivot round's histogram counts the rows below each interval and bins only those inside.
"""

from __future__ import annotations

import numpy as np
import pytest

import labelscan
from labelscan import selection, selection_pivots
from labelscan.stats.order import float_images

try:
    import oracle
    import synthetic
except ImportError:  # tests/ imported as a package
    from tests import oracle, synthetic

FILTERS = ["prune_by_noise_rate", "prune_by_class", "both"]


def _record_rounds(monkeypatch) -> list:
    """Record every refine step the planners apply, with its misses (pivot rounds)."""
    steps = []
    original = selection.SelectionPlanner.apply_choice

    def recording(self, step, choice):
        steps.append((step.count_below, int(np.count_nonzero(choice.get("miss", [])))))
        return original(self, step, choice)

    monkeypatch.setattr(selection.SelectionPlanner, "apply_choice", recording)
    return steps


def _noisy_set(rows=40_000, classes=6, seed=3, dtype=np.float32):
    labels, pred_probs = synthetic.continuous(rows, classes, dtype, seed=seed, noise=0.1)
    return labels, pred_probs


@pytest.mark.parametrize("filter_by", FILTERS)
@pytest.mark.parametrize("parts", [1, 7])
def test_pivot_round_is_used_and_exact(monkeypatch, filter_by, parts):
    steps = _record_rounds(monkeypatch)
    labels, pred_probs = _noisy_set()
    got = labelscan.find_label_issues(labels, pred_probs, filter_by=filter_by, num_partitions=parts,
                                      return_indices_ranked_by="self_confidence")
    expected = oracle.oracle_find_label_issues(labels, pred_probs, filter_by=filter_by,
                                               return_indices_ranked_by="self_confidence")
    np.testing.assert_array_equal(got, expected)
    pivot_rounds = [misses for count_below, misses in steps if count_below]
    assert pivot_rounds, "no pivot round ran"
    assert sum(pivot_rounds) == 0, "pivots from a 2,048-row sample per class should not miss here"


def test_wide_sets_take_no_pivots(monkeypatch):
    steps = _record_rounds(monkeypatch)
    labels, pred_probs = _noisy_set(rows=20_000, classes=selection_pivots.MAX_CLASSES + 8)
    got = labelscan.find_label_issues(labels, pred_probs, num_partitions=3)
    np.testing.assert_array_equal(got, oracle.oracle_find_label_issues(labels, pred_probs))
    assert not any(count_below for count_below, _ in steps)


def _shifted_pivots(where: str):
    """A choose_pivots that returns intervals missing every cut (or pinning one value)."""
    original = selection_pivots.choose_pivots

    def shifted(tasks, sample):
        pivots = original(tasks, sample)
        if pivots is None:
            return None
        full = np.uint64((1 << (tasks.key_dtype.itemsize * 8)) - 1)
        if where == "below":      # [0, lo) before the true interval: the cut lies above
            pivots.last = np.maximum(pivots.lo, np.uint64(1)) - np.uint64(1)
            pivots.lo = np.zeros_like(pivots.lo)
        elif where == "above":    # past the true interval's end: the cut lies below
            start = np.minimum(pivots.lo + pivots.last + np.uint64(1), full)
            pivots.last = full - start
            pivots.lo = start
        else:                     # one single value, the interval's start
            pivots.last = np.zeros_like(pivots.last)
        return pivots

    return shifted


@pytest.mark.parametrize("where", ["below", "above", "single"])
@pytest.mark.parametrize("filter_by", FILTERS)
def test_missed_pivots_fall_back_exactly(monkeypatch, where, filter_by):
    monkeypatch.setattr(selection_pivots, "choose_pivots", _shifted_pivots(where))
    steps = _record_rounds(monkeypatch)
    labels, pred_probs = _noisy_set(rows=12_000, classes=5, seed=8)
    got = labelscan.find_label_issues(labels, pred_probs, filter_by=filter_by, num_partitions=4,
                                      return_indices_ranked_by="normalized_margin")
    expected = oracle.oracle_find_label_issues(labels, pred_probs, filter_by=filter_by,
                                               return_indices_ranked_by="normalized_margin")
    np.testing.assert_array_equal(got, expected)
    assert any(count_below and misses for count_below, misses in steps), "no pivot missed"


@pytest.mark.parametrize("case", ["ties_float16", "k2", "absent_class"])
def test_hard_cases_with_pivots(case):
    if case == "ties_float16":
        labels, pred_probs = synthetic.tie_heavy_float16(30_000, 8, seed=5)
    elif case == "k2":
        labels, pred_probs = _noisy_set(rows=30_000, classes=2, seed=4)
    else:
        labels, pred_probs = _noisy_set(rows=30_000, classes=6, seed=6)
        labels = np.where(labels == 2, 3, labels)   # class 2 has no given labels
    for filter_by in FILTERS:
        got = labelscan.find_label_issues(labels, pred_probs, filter_by=filter_by, num_partitions=5)
        np.testing.assert_array_equal(
            got, oracle.oracle_find_label_issues(labels, pred_probs, filter_by=filter_by), err_msg=filter_by)


def test_strides_bound_the_sample_and_take_small_classes_whole():
    totals = np.array([0, 5, 2048, 2049, 10_000_000])
    strides = selection_pivots.sample_strides(totals)
    np.testing.assert_array_equal(strides, [0, 1, 1, 2, 4883])
    sampled = -(-totals // np.maximum(strides, 1)) * (strides > 0)
    assert (sampled <= selection_pivots.SAMPLE_ROWS_PER_CLASS).all()


def test_pivots_bracket_the_cut_of_a_known_sample():
    """A class sampled whole: the pivot interval holds the exact c-th key image."""
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.ones(4), 1500).astype(np.float32)
    tasks = selection.SelectionTasks(kind="noise_rate", classes=np.zeros(3, dtype=np.int64),
                                     columns=np.array([1, 2, 3]), counts=np.array([10, 200, 700]),
                                     sizes=np.full(3, 1500), key_dtype=np.dtype(np.float32))
    pivots = selection_pivots.choose_pivots(
        tasks, selection_pivots.ClassSample(rows=rows, classes=np.zeros(1500, dtype=np.int32)))
    for t, j in enumerate([1, 2, 3]):
        images = np.sort(float_images(rows[:, 0] - rows[:, j]))
        cut = np.uint64(images[tasks.counts[t] - 1])
        assert pivots.pivoted[t]
        assert pivots.lo[t] <= cut <= pivots.lo[t] + pivots.last[t]


def test_pivot_histogram_counts_below_and_bins_inside():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 1 << 20, size=(3, 5000)).astype(np.uint32)
    lo = np.array([1000, 0, 500_000], dtype=np.uint64)
    last = np.array([70_000, (1 << 32) - 1, 0], dtype=np.uint64)
    width = np.array([int(x).bit_length() for x in last])
    counts = selection._block_histogram(images, lo, width, last, 8, count_below=True)
    for t in range(3):
        inside = (images[t] >= lo[t]) & (images[t].astype(np.uint64) <= lo[t] + last[t])
        assert counts[t, 0] == np.count_nonzero(images[t] < lo[t])
        assert counts[t, 1:].sum() == np.count_nonzero(inside)
        shift = max(width[t] - 8, 0)
        expected = np.bincount((images[t][inside].astype(np.uint64) - lo[t]) >> np.uint64(shift), minlength=256)
        np.testing.assert_array_equal(counts[t, 1:], expected)
