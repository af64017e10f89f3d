"""Very wide K: K = 10,000 classes with few rows, exactly cleanlab 2.9's answer, bounded memory.

20,000 float32 rows in 8 files (one partition each), 2,000 of the 10,000 classes absent, on
the ``LocalCluster`` of ``test_load`` (2 worker processes x 1 thread, 3 GiB each). Checked
against ``tests/oracle.py`` (cleanlab 2.9, stable argsort): the mask, the ranked issue order,
the issues per class, the confident thresholds and the confident joint. Measured (terminal
summary and ``reliability.json``): tasks, seconds, worker peak RSS, driver RSS growth.

What keeps it bounded (``docs/reliability.md``): each partition's confident joint is sparse
(:class:`labelscan.stats.joint.JointCounts`, O(rows)); the driver densifies once for the
O(K²) plan; ``summary.json`` references the K x K statistics, stored as sparse tables
(:mod:`labelscan.summary_statistics`).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import labelscan
import oracle
from labelscan.report import write_report
from labelscan.summary_statistics import read_statistic, sparse_table
from test_load import MiB, cluster, measured_scan  # noqa: F401  (cluster: the module's fixture)

NUM_ROWS, NUM_CLASSES, NUM_FILES = 20_000, 10_000, 8


def wide_set(folder, seed=0):
    """Labels and float32 predictions with a few likely classes per row; 20 % of classes absent.

    Returns
    -------
    labels : numpy.ndarray, shape (NUM_ROWS,)
    pred_probs : numpy.ndarray, shape (NUM_ROWS, NUM_CLASSES), float32
    """
    rng = np.random.default_rng(seed)
    present = np.sort(rng.choice(NUM_CLASSES, int(NUM_CLASSES * 0.8), replace=False))
    true = rng.choice(present, NUM_ROWS)
    labels = true.copy()
    noisy = rng.random(NUM_ROWS) < 0.15
    labels[noisy] = rng.choice(present, int(noisy.sum()))
    pred_probs = rng.random((NUM_ROWS, NUM_CLASSES), dtype=np.float32)
    pred_probs *= np.float32(1e-5)
    rows = np.arange(NUM_ROWS)
    pred_probs[rows, true] += rng.uniform(0.3, 0.95, NUM_ROWS).astype(np.float32)
    pred_probs[rows, rng.choice(NUM_CLASSES, NUM_ROWS)] += rng.uniform(0, 0.3, NUM_ROWS).astype(np.float32)
    pred_probs /= pred_probs.sum(axis=1, keepdims=True, dtype=np.float32)
    folder.mkdir(parents=True)
    per_file = NUM_ROWS // NUM_FILES
    for index in range(NUM_FILES):
        block = slice(index * per_file, (index + 1) * per_file)
        values = pa.FixedSizeListArray.from_arrays(pa.array(pred_probs[block].ravel()), NUM_CLASSES)
        pq.write_table(pa.table({"label": labels[block], "pred_probs": values}),
                       folder / f"part-{index:05d}.parquet", row_group_size=per_file)
    return labels, pred_probs


def oracle_answer(labels, pred_probs) -> dict:
    """cleanlab 2.9 (stable argsort): mask, ranked issues, thresholds, raw confident joint."""
    import cleanlab.count
    import cleanlab.rank

    mask = oracle.oracle_find_label_issues(labels, pred_probs)
    with oracle.stable_cleanlab():
        ranked = cleanlab.rank.order_label_issues(mask, labels, pred_probs, rank_by="self_confidence")
        thresholds = cleanlab.count.get_confident_thresholds(labels, pred_probs)
        joint = cleanlab.count.compute_confident_joint(labels, pred_probs, calibrate=False)
    return {"mask": mask, "ranked": ranked, "thresholds": thresholds, "joint": sparse_table(np.asarray(joint))}


def test_k_10000_exact_with_bounded_memory(cluster, tmp_path, reliability_figures):  # noqa: F811
    labels, pred_probs = wide_set(tmp_path / "in")
    got = measured_scan(cluster, tmp_path / "in", tmp_path / "out", "K=10000 x 20000 rows", reliability_figures,
                        retries=0)
    expected = oracle_answer(labels, pred_probs)
    del pred_probs
    result = labelscan.open_scan(str(tmp_path / "out"))      # every checksum verified
    summary = result.summary

    np.testing.assert_array_equal(result.mask(columns=["is_label_issue"])["is_label_issue"].to_numpy(),
                                  expected["mask"])
    np.testing.assert_array_equal(result.issues(None)["row_id"].to_numpy(), expected["ranked"])
    np.testing.assert_array_equal(summary["num_issues_per_class"],
                                  np.bincount(labels[expected["mask"]], minlength=NUM_CLASSES))
    assert summary["num_issues"] == int(expected["mask"].sum()) > 0
    thresholds = summary["statistics"]["confident_thresholds"]
    np.testing.assert_array_equal(np.asarray(thresholds, dtype=expected["thresholds"].dtype), expected["thresholds"])
    stored_joint = pq.read_table(tmp_path / "out" / "statistics" / "confident_joint.parquet")
    assert stored_joint.equals(expected["joint"])

    # K x K statistics are sparse tables referenced from a small summary.json
    assert summary["statistics"]["noise_matrix"] == {"path": "statistics/noise_matrix.parquet",
                                                     "shape": [NUM_CLASSES, NUM_CLASSES], "dtype": "<f8"}
    assert (tmp_path / "out" / "summary.json").stat().st_size < 8 * MiB
    manifest = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert {"statistics/joint.parquet", "statistics/prune_counts.parquet"} <= {e["path"] for e in manifest["files"]}
    shown = [3, 7, 11]
    assert read_statistic(result.out, summary, "noise_matrix", rows=shown, columns=shown).shape == (3, 3)

    # the report shows the classes with the most issues
    page = (tmp_path / "report.html")
    write_report(result, str(page))
    assert 'id="noise-matrix"' in page.read_text() and "classes with the most issues" in page.read_text()

    assert got["tasks"] < 150                       # 8 partitions: the graph does not grow with K
    assert got["worker_peak"] < 1536 * MiB           # one partition's predictions are 100 MB
    assert got["driver_growth"] < 7 * 1024 * MiB     # the O(K²) plan: six K x K matrices of 800 MB


@pytest.mark.parametrize("num_classes", [5, 2_000])   # dense bincount / sorted cells
def test_sparse_joint_counts_merge_to_the_dense_sum(num_classes):
    from labelscan.stats.joint import JointCounts

    rng = np.random.default_rng(num_classes)
    expected = np.zeros((num_classes, num_classes), dtype=np.int64)
    states = []
    for size in (0, 1, 300, 5_000):
        given, guess = rng.integers(0, num_classes, (2, size))
        counted = rng.random(size) < 0.6 if size > 1 else None   # rows left out of the counts
        np.add.at(expected, (given, guess) if counted is None else (given[counted], guess[counted]), 1)
        states.append(JointCounts.from_rows(given, guess.astype(np.int16), num_classes, counted=counted))
    merged = JointCounts.merge(JointCounts.merge(*states[:2]), *states[2:])
    dense = merged.dense()
    assert dense.flags.f_contiguous and dense.dtype == np.int64
    np.testing.assert_array_equal(dense, expected)
    assert (np.diff(merged.cells) > 0).all() and (merged.counts > 0).all()


def test_sparse_tables_give_back_the_matrix_and_submatrices():
    from labelscan.summary_statistics import dense_matrix

    rng = np.random.default_rng(0)
    for matrix in (rng.random((6, 6)) * (rng.random((6, 6)) < 0.3), np.asfortranarray(rng.integers(0, 3, (6, 6)))):
        table = sparse_table(matrix)
        back = dense_matrix(table, matrix.shape, matrix.dtype.str)
        assert back.dtype == matrix.dtype
        np.testing.assert_array_equal(back, matrix)
        np.testing.assert_array_equal(dense_matrix(table, matrix.shape, matrix.dtype.str, [5, 0, 2], [1, 4]),
                                      matrix[np.ix_([5, 0, 2], [1, 4])])


@pytest.mark.parametrize("num_classes", [2, 64, 65, 127, 128, 129, 255, 256, 1000])
def test_first_true_is_numpys_argmax_on_every_width(num_classes):
    """The host's loop (int8 positions up to 128 classes, int16 beyond) against
    ``argmax(axis=0)``: columns with no True, a True only in the last class, only in the first."""
    from labelscan.kernels.grouped import first_true

    rng = np.random.default_rng(num_classes)
    mask = rng.random((num_classes, 3000)) < 1.5 / num_classes
    mask[:, :40] = False
    mask[:, 40:50] = False
    mask[-1, 40:50] = True
    mask[0, 50:60] = True
    np.testing.assert_array_equal(first_true(mask), mask.argmax(axis=0))
