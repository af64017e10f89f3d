"""The confident thresholds' pieces: short class sequences travel whole, longer ones as pairwise
tree pieces; either way the fold gives numpy's own mean of each class's self-confidences, bit for
bit, whatever the partitions and the order of the merges."""

from __future__ import annotations

import numpy as np
import pytest

from labelscan import passes, plan
from labelscan.kernels import grouped
from labelscan.stats.pairwise import LEAF_MAX, RAW_SEQUENCE_MAX, ShortSequences

CLASS_ROWS = [1, LEAF_MAX - 1, LEAF_MAX, LEAF_MAX + 1, RAW_SEQUENCE_MAX, RAW_SEQUENCE_MAX + 1, 9_000]


def _pieces_of_partitions(labels, pred_probs, bounds):
    """Every partition's threshold pieces (rows ``bounds[i]:bounds[i+1]``), class offsets as the
    engine's layout gives them."""
    num_classes = pred_probs.shape[1]
    counts = [np.bincount(labels[a:b], minlength=num_classes) for a, b in zip(bounds[:-1], bounds[1:])]
    offsets = np.cumsum([np.zeros(num_classes, np.int64), *counts[:-1]], axis=0)
    totals = np.bincount(labels, minlength=num_classes)
    return [passes.threshold_pieces(grouped.group_by_label(a, labels[a:b], pred_probs[a:b]), offsets[i], totals)
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))], totals


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("num_parts", [1, 5, 40])
def test_thresholds_are_numpys_means_for_short_and_long_classes(dtype, num_parts):
    rng = np.random.default_rng(num_parts)
    labels = rng.permutation(np.repeat(np.arange(len(CLASS_ROWS)), CLASS_ROWS))
    pred_probs = rng.dirichlet(np.ones(len(CLASS_ROWS)), len(labels)).astype(dtype)
    pred_probs[::9] = np.round(pred_probs[::9], 1)   # repeated values
    bounds = np.unique(np.r_[0, np.sort(rng.integers(0, len(labels), num_parts - 1)), len(labels)])
    pieces, totals = _pieces_of_partitions(labels, pred_probs, bounds)
    order = rng.permutation(len(pieces))   # merged in any grouping: partitions hold disjoint slices
    halves = [[pieces[i] for i in order[::2]], [pieces[i] for i in order[1::2]]]
    merged = passes.merge_threshold_pieces(*[passes.merge_threshold_pieces(*half) for half in halves if half])
    got = plan.confident_thresholds(merged, totals, dtype)
    expected = np.array([np.mean(pred_probs[labels == k, k]) for k in range(len(CLASS_ROWS))], dtype=dtype)
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), expected.view(f"u{expected.itemsize}"))
    assert sorted(merged.states) == [k for k, n in enumerate(CLASS_ROWS) if n > RAW_SEQUENCE_MAX]
    assert sorted(set(merged.short.classes.tolist())) == [k for k, n in enumerate(CLASS_ROWS)
                                                          if n <= RAW_SEQUENCE_MAX]


def test_short_sequences_put_segments_back_in_class_and_position_order():
    segments = ShortSequences(classes=np.array([3, 1, 3, 1, 3]), starts=np.array([4, 2, 0, 0, 2]),
                              counts=np.array([1, 3, 2, 2, 2]),
                              values=np.array([34, 12, 13, 14, 30, 31, 10, 11, 32, 33], dtype=np.float32))
    found = segments.sequences()
    assert list(found) == [1, 3]
    np.testing.assert_array_equal(found[1], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(found[3], [30, 31, 32, 33, 34])
    empty = ShortSequences.concatenate([ShortSequences(*(np.zeros(0, np.int64),) * 3, np.zeros(0, np.float32))])
    assert empty.sequences() == {}


def test_a_missing_slice_of_a_short_class_is_an_error():
    labels = np.repeat([0, 1], [10, 10])
    pred_probs = np.full((20, 2), 0.5, dtype=np.float32)
    pieces, totals = _pieces_of_partitions(labels, pred_probs, [0, 5, 20])
    with pytest.raises(ValueError, match="class 0: 5 self-confidences merged, 10 rows"):
        plan.confident_thresholds(pieces[1], totals, np.float32)
