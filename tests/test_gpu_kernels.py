"""The fused CUDA kernels against the host array code they replace, on adversarial values.

The joint-pass kernel (per-row facts, confident-joint counts, off-diagonal issue count) and the
key-image kernel must give bit-identical results to :mod:`labelscan.kernels.grouped` and
:func:`labelscan.stats.order.float_images` on the host: ties, ``±0.0``, infinities, subnormals,
every float dtype, and class counts on both sides of the shared-memory limit. Needs CuPy and a
device (skipped otherwise, as in CI).
"""

import numpy as np
import pytest

from labelscan import passes, selection
from labelscan.kernels import grouped
from labelscan.kernels.cuda_joint import SHARED_CELLS
from labelscan.stats.order import float_images
from labelscan.xp import cupy_or_none

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a CUDA device"),
]

DTYPES = [np.float16, np.float32, np.float64]
SHARED_LIMIT_K = int(np.sqrt(SHARED_CELLS - 1))   # largest K whose counts fit the block's shared memory


def _predictions(num_rows: int, num_classes: int, dtype, seed: int):
    """Labels and rows with heavy ties, signed zeros and subnormals (values on coarse grids)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_rows)
    labels[: num_rows // 10] = 0   # one crowded class
    grid = rng.integers(0, 8, (num_rows, num_classes)).astype(np.float64) / 8
    grid[rng.random(num_rows) < 0.05] = 0.0
    pred_probs = grid.astype(dtype)
    pred_probs[rng.random((num_rows, num_classes)) < 0.02] *= -1   # -0.0 and negatives
    subnormal = rng.random((num_rows, num_classes)) < 0.05   # tied subnormals of the dtype
    pred_probs[subnormal] = (rng.integers(1, 4, int(subnormal.sum())) * (np.finfo(dtype).tiny / 4)).astype(dtype)
    return labels, pred_probs


def _both(labels, pred_probs):
    import cupy

    host = grouped.group_by_label(0, labels, pred_probs)
    device = grouped.group_by_label(0, cupy.asarray(labels), cupy.asarray(pred_probs))
    return host, device


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_classes", [2, 10, SHARED_LIMIT_K, SHARED_LIMIT_K + 1, 300])
def test_row_facts_kernel_matches_host(dtype, num_classes):
    labels, pred_probs = _predictions(20_000, num_classes, dtype, seed=num_classes)
    host, device = _both(labels, pred_probs)
    thresholds = np.quantile(np.abs(pred_probs.astype(np.float64)), 0.6, axis=0).astype(dtype)
    expected = passes.row_facts(host, thresholds)
    got = passes.row_facts(device, thresholds)
    for name in ("predicted", "off_diagonal", "given_is_argmax"):
        np.testing.assert_array_equal(getattr(got, name).get(), getattr(expected, name), err_msg=name)
    np.testing.assert_array_equal(got.joint_counts.dense(), expected.joint_counts.dense())
    assert got.num_off_diagonal_issues == expected.num_off_diagonal_issues


def _tasks(kind, num_classes):
    classes = np.repeat(np.arange(num_classes), num_classes - 1 if kind == selection.NOISE_RATE else 1)
    if kind == selection.NOISE_RATE:
        columns = np.asarray([j for k in range(num_classes) for j in range(num_classes) if j != k])
    else:
        columns = np.full(num_classes, -1)
    counts = np.ones(len(classes), np.int64)
    return selection.SelectionTasks(kind, classes, columns, counts, counts, np.dtype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [selection.NOISE_RATE, selection.BY_CLASS])
@pytest.mark.parametrize("num_classes", [2, 7, 120])
def test_key_images_kernel_matches_host(dtype, kind, num_classes):
    labels, pred_probs = _predictions(5_000, num_classes, dtype, seed=7)
    special = np.asarray([0.0, -0.0, np.inf, -np.inf, np.finfo(dtype).tiny / 4, -np.finfo(dtype).tiny / 4,
                          np.finfo(dtype).max, 1.0, 1.0 + np.finfo(dtype).eps], dtype=dtype)
    pred_probs.reshape(-1)[: special.size * 200] = np.tile(special, 200)
    host, device = _both(labels, pred_probs)
    tasks = _tasks(kind, num_classes)
    got = selection.partition_keys(device, tasks=tasks)
    classes_with_rows = [k for k in range(num_classes) if host.class_rows(k).stop > host.class_rows(k).start]
    assert [int(tasks.classes[block.task_ids[0]]) for block in got.blocks] == classes_with_rows
    for block in got.blocks:
        k = int(tasks.classes[block.task_ids[0]])
        assert block.rows == host.class_rows(k)
        given = host.columns[k, block.rows][None, :]
        with np.errstate(invalid="ignore", over="ignore"):   # inf - inf: NaN; max - (-max): inf
            keys = given - host.columns[tasks.columns[block.task_ids], block.rows] if kind == selection.NOISE_RATE \
                else given.copy()
        expected = float_images(keys)
        assert block.images.dtype == expected.dtype
        np.testing.assert_array_equal(block.images.get(), expected)
