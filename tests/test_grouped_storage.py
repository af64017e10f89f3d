"""A grouped partition stores its predictions and ``order`` only: labels and row ids are computed
when asked, equal to what grouping used to store (``labels[order]``, row ids gathered by ``order``).
The joint pass's row facts keep their host flags as bits, read back equal, and Dask's ``sizeof``
counts their arrays."""

import numpy as np
import pytest

from labelscan.io.column_set import Consecutive
from labelscan import passes
from labelscan.kernels import grouped
from labelscan.xp import cupy_or_none


def _arrays(num_classes):
    """Labels (a class without rows) and float32 predictions of 5,000 rows."""
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, 5_000)
    labels[labels == num_classes // 2] = 0
    return labels, rng.random((5_000, num_classes), dtype=np.float32)


def _partition(xp, num_classes, row_ids=None, rejected=None):
    labels, pred_probs = _arrays(num_classes)
    part = grouped.group_by_label(70, xp.asarray(labels), xp.asarray(pred_probs), rejected=rejected, row_ids=row_ids)
    return labels, part


@pytest.mark.parametrize("num_classes", [1, 2, 10, 1000])
def test_labels_and_row_ids_are_those_of_the_grouped_rows(num_classes):
    labels, part = _partition(np, num_classes)
    order = np.argsort(labels, kind="stable")
    assert np.array_equal(part.labels, labels[order])
    assert np.array_equal(part.row_ids, 70 + order)
    positions = np.array([0, 17, 4_999, 2_500])
    assert np.array_equal(part.labels_at(positions), labels[order][positions])
    assert part.labels_at(positions).dtype == np.int64
    assert np.array_equal(part.row_ids_in_row_order(), 70 + np.arange(5_000))


@pytest.mark.parametrize("num_classes", [10, 100, grouped.ROW_MAJOR_K - 1, grouped.ROW_MAJOR_K, 1000])
def test_predictions_are_the_grouped_rows_in_either_layout(num_classes):
    """From ROW_MAJOR_K classes a host partition keeps its rows whole (the columns are the
    transpose of a row-major array, no transposing copy); either way the columns, the column
    gathers, the row-major view and the self-confidences are those of ``pred_probs[order]``."""
    labels, part = _partition(np, num_classes)
    pred_probs = _arrays(num_classes)[1]
    grouped_rows = pred_probs[np.argsort(labels, kind="stable")]
    assert part.row_major_storage == (num_classes >= grouped.ROW_MAJOR_K)
    assert (part.columns.T if part.row_major_storage else part.columns).flags.c_contiguous
    assert np.array_equal(part.columns, grouped_rows.T)
    positions = np.array([4_999, 3, 3, 2_500])
    gathered = part.columns_at(positions)
    assert np.array_equal(gathered, grouped_rows[positions].T)
    assert (gathered.T if part.row_major_storage else gathered).flags.c_contiguous
    assert np.array_equal(part.row_major(), grouped_rows)
    assert np.array_equal(grouped.self_confidence(part), grouped_rows[np.arange(5_000), part.labels])


def test_row_ids_of_kept_rows_follow_the_grouping():
    kept = np.sort(np.random.default_rng(1).choice(20_000, 5_000, replace=False)) + 70
    labels, part = _partition(np, 10, row_ids=kept, rejected=object())
    order = np.argsort(labels, kind="stable")
    assert np.array_equal(part.row_ids, kept[order])
    assert np.array_equal(part.row_ids_in_row_order(), kept)
    assert part.row_ids_in_row_order() is part.kept_row_ids   # a host partition's own ids, not a copy


@pytest.mark.gpu
@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")
@pytest.mark.parametrize("num_classes", [1, 2, 10, 1000])
def test_device_labels_and_row_ids(num_classes):
    import cupy

    labels, part = _partition(cupy, num_classes)
    order = np.argsort(labels, kind="stable")
    assert part.labels.dtype == np.int64
    assert np.array_equal(cupy.asnumpy(part.labels), labels[order])
    assert np.array_equal(cupy.asnumpy(part.row_ids), 70 + order)
    positions = cupy.asarray([0, 17, 4_999, 2_500])
    assert np.array_equal(cupy.asnumpy(part.labels_at(positions)), labels[order][[0, 17, 4_999, 2_500]])
    on_host = part.row_ids_in_row_order()   # the range itself: nothing copied from the device
    assert on_host == Consecutive(70, 5_000) and np.array_equal(on_host, 70 + np.arange(5_000))
    kept = np.sort(np.random.default_rng(1).choice(20_000, 5_000, replace=False)) + 70
    _, part = _partition(cupy, num_classes, row_ids=cupy.asarray(kept), rejected=object())
    assert isinstance(part.row_ids_in_row_order(), np.ndarray)
    assert np.array_equal(part.row_ids_in_row_order(), kept)


def test_stored_bytes_besides_predictions_are_the_cache_budgets():
    """What a kept partition holds besides its predictions is ``order`` alone: the
    ``GROUPED_ROW_BYTES`` that ``cache="auto"`` budgets per row on the device."""
    from dataclasses import fields

    from labelscan.scan import GROUPED_ROW_BYTES

    _, part = _partition(np, 10)
    stored = [getattr(part, field.name) for field in fields(part) if field.name != "columns"]
    row_arrays = [value for value in stored if isinstance(value, np.ndarray) and value.shape == (part.num_rows,)]
    assert len(row_arrays) == 1 and row_arrays[0] is part.order
    assert sum(value.nbytes for value in row_arrays) == GROUPED_ROW_BYTES * part.num_rows


@pytest.mark.parametrize("num_rows", [0, 1, 7, 8, 9, 5_000])
def test_row_facts_keep_host_flags_as_bits_and_read_them_back(num_rows):
    from dask.sizeof import sizeof

    rng = np.random.default_rng(num_rows)
    off_diagonal, given_is_argmax = rng.random(num_rows) < 0.3, rng.random(num_rows) < 0.6
    facts = passes.RowFacts(predicted=rng.integers(0, 10, num_rows).astype(np.int16), off_diagonal=off_diagonal,
                            given_is_argmax=given_is_argmax, joint_counts=None, num_off_diagonal_issues=0)
    for read, expected in ((facts.off_diagonal, off_diagonal), (facts.given_is_argmax, given_is_argmax)):
        assert read.dtype == np.bool_ and read.shape == (num_rows,) and np.array_equal(read, expected)
    assert sizeof(facts) >= 2 * num_rows + 2 * (num_rows // 8)
    assert sizeof(facts) < 2 * num_rows + 2 * (num_rows // 8) + 1_000   # not a byte a flag
