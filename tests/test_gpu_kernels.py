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
from labelscan.selection_flat import FlatKeys
from labelscan.stats.order import float_images
from labelscan.xp import cupy_or_none

try:
    import synthetic
except ImportError:  # tests/ imported as a package
    from tests import synthetic

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


def _tasks(kind, num_classes, dtype):
    classes = np.repeat(np.arange(num_classes), num_classes - 1 if kind == selection.NOISE_RATE else 1)
    if kind == selection.NOISE_RATE:
        columns = np.asarray([j for k in range(num_classes) for j in range(num_classes) if j != k])
    else:
        columns = np.full(num_classes, -1)
    counts = np.ones(len(classes), np.int64)
    return selection.SelectionTasks(kind, classes, columns, counts, counts, np.dtype(dtype))


def _device_images_per_task(keys: FlatKeys):
    """Task -> (grouped rows, host images) of flat device keys, per segment."""
    return {int(task): (slice(int(first), int(first + stop - start)), keys.images[start:stop].get())
            for task, first, start, stop in zip(keys.task_ids, keys.first_rows, keys.bounds[:-1], keys.bounds[1:])}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [selection.NOISE_RATE, selection.BY_CLASS])
@pytest.mark.parametrize("num_classes", [2, 7, 120])
def test_key_images_kernels_match_host(dtype, kind, num_classes):
    labels, pred_probs = _predictions(5_000, num_classes, dtype, seed=7)
    special = np.asarray([0.0, -0.0, np.inf, -np.inf, np.finfo(dtype).tiny / 4, -np.finfo(dtype).tiny / 4,
                          np.finfo(dtype).max, 1.0, 1.0 + np.finfo(dtype).eps], dtype=dtype)
    pred_probs.reshape(-1)[: special.size * 200] = np.tile(special, 200)
    host, device = _both(labels, pred_probs)
    tasks = _tasks(kind, num_classes, dtype)
    keys = selection.partition_keys(device, tasks=tasks)
    assert isinstance(keys, FlatKeys)   # device keys are flat whatever the number of classes
    got = _device_images_per_task(keys)
    with_rows = [t for t in range(len(tasks)) if host.class_counts()[tasks.classes[t]] > 0]
    assert sorted(got) == with_rows
    for task, (rows, images) in got.items():
        k = int(tasks.classes[task])
        assert rows == host.class_rows(k)
        given = host.columns[k, rows]
        with np.errstate(invalid="ignore", over="ignore"):   # inf - inf: NaN; max - (-max): inf
            keys_of_task = given - host.columns[tasks.columns[task], rows] if kind == selection.NOISE_RATE \
                else given.copy()
        expected = float_images(keys_of_task)
        assert images.dtype == expected.dtype
        np.testing.assert_array_equal(images, expected, err_msg=f"task {task}")


@pytest.mark.parametrize("filter_by", ["prune_by_noise_rate", "prune_by_class", "both"])
@pytest.mark.parametrize("num_partitions", [1, 3])
def test_flat_device_selection_with_ties_matches_host(filter_by, num_partitions):
    """Many classes (flat keys on the device) and probabilities on a coarse grid: cutoffs fall
    inside runs of tied keys, so the tie quotas of flat selection are exercised."""
    import labelscan

    labels, pred_probs = synthetic.coarse_grid_many_classes()
    kwargs = dict(filter_by=filter_by, num_partitions=num_partitions, return_indices_ranked_by="self_confidence")
    expected = labelscan.find_label_issues(labels, pred_probs, backend="numpy", **kwargs)
    got = labelscan.find_label_issues(labels, pred_probs, backend="cupy", **kwargs)
    assert len(expected) > 0
    np.testing.assert_array_equal(got, expected)


def test_histogram_merge_adds_device_histograms_on_the_device():
    from labelscan.stats import histogram as sparse_histogram

    cupy = cupy_or_none()
    rng = np.random.default_rng(5)
    shape = (3, 64)
    dense = [rng.integers(0, 50, shape).astype(np.uint32) for _ in range(3)]
    cells = rng.integers(0, shape[0] * shape[1], 20)
    sparse = sparse_histogram.SparseHistogram.of_cells(cells, shape)
    expected = sum(d.astype(np.int64) for d in dense) + sparse.dense()
    merged = sparse_histogram.merge(dense[0], cupy.asarray(dense[1]), sparse, cupy.asarray(dense[2]))
    assert isinstance(merged, cupy.ndarray) and merged.dtype == np.uint32
    np.testing.assert_array_equal(cupy.asnumpy(merged), expected)
    needs = np.array([1, 5, 100])
    on_device, on_host = selection.choose_bins(merged, needs), selection.choose_bins(expected, needs)
    for name in ("bin", "below", "inside"):   # read on the device: two small copies
        assert isinstance(on_device[name], np.ndarray)
        np.testing.assert_array_equal(on_device[name], on_host[name])


@pytest.mark.parametrize("with_images", [True, False])
@pytest.mark.parametrize("run_sizes", [(0, 0), (5, 0, 3), (3_000, 2_500, 1, 4_000)])
def test_ranking_merge_on_the_device_matches_the_host(with_images, run_sizes):
    """A GPU worker's ranking merges its runs on the device: the same order (ties across runs
    to the earlier run, i.e. the lower row), the same dtypes, string ids gathered on the host."""
    from labelscan import outcome

    rng = np.random.default_rng(len(run_sizes))
    runs, first_row = [], 0
    for size in run_sizes:
        quality = np.sort(rng.integers(0, 6, size).astype(np.float32) / 8)   # heavy ties
        run = {"row_id": first_row + np.arange(size, dtype=np.int64), "id": np.array([f"r{i}" for i in range(size)]),
               "given_label": rng.integers(0, 5, size).astype(np.uint8),
               "predicted_label": rng.integers(0, 5, size).astype(np.uint8), "label_quality": quality}
        if with_images:
            run["image"] = float_images(quality).astype(np.uint64)
        runs.append(run)
        first_row += size
    on_host = outcome.merge_ranked(runs)
    on_device = outcome.merge_ranked(runs, on_device=True)
    assert list(on_device) == list(on_host)
    for name, values in on_host.items():
        assert isinstance(on_device[name], np.ndarray) and on_device[name].dtype == values.dtype
        np.testing.assert_array_equal(on_device[name], values)
