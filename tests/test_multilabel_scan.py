"""``labelscan.scan(..., multi_label=True)`` on a real Dask cluster vs the stable cleanlab oracle.

Oracle: ``cleanlab.multilabel_classification.filter.find_label_issues`` (mask, and the index
array ranked by ``return_indices_ranked_by``) and ``multilabel_classification.rank.
get_label_quality_scores`` under ``oracle.stable_cleanlab()``, on the arrays the parquet set
holds. Sets: rows with no label, one label and many labels; K = 3 to 200; float16/32/64;
probabilities quantised to 1/16 (ties); a class given to no row. Each set is written as 1, 3
and 7 files of uneven sizes, one partition each.
"""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import cleanlab.multilabel_classification.filter as ml_filter
import cleanlab.multilabel_classification.rank as ml_rank

try:
    import oracle
    from test_multilabel import make_multilabel
except ImportError:  # tests/ imported as a package
    from tests import oracle
    from tests.test_multilabel import make_multilabel

import labelscan
from labelscan.cli import cli
from labelscan.compat import split_rows
from labelscan.errors import InputError
from labelscan.multilabel import AUDIOSET_THRESHOLDS, onehot, threshold_counts


SETS = {
    "k3_f64": lambda: make_multilabel(300, 3, 0, absent=False),
    "k20_f32_absent": lambda: make_multilabel(400, 20, 1, np.float32),
    "k50_f16": lambda: make_multilabel(300, 50, 2, np.float16, absent=False),
    "k50_ties_f64": lambda: make_multilabel(300, 50, 3, ties=True, absent=False),
    "k200_f32": lambda: make_multilabel(200, 200, 4, np.float32, absent=False, flip=0.002, sharp=4.0,
                                        spread=0.8),
}


@functools.lru_cache(maxsize=None)
def dataset(name):
    return SETS[name]()


def write_set(folder, labels, pred_probs, partitions, *, multi_hot=False, ids=False):
    """One file per partition (uneven sizes); labels as ``list<int>`` or a K-wide 0/1 vector."""
    folder.mkdir(parents=True, exist_ok=True)
    num_classes = pred_probs.shape[1]
    bounds = split_rows(len(labels), partitions)
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        rows = labels[start:stop]
        if multi_hot:
            matrix = onehot(rows, num_classes).astype(np.int8)
            label_column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), num_classes)
        else:
            label_column = pa.array(rows, type=pa.list_(pa.int32()))
        columns = {"labels": label_column, "pred_probs": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(pred_probs[start:stop]).reshape(-1)), num_classes)}
        if ids:
            columns["id"] = pa.array([f"row-{i}" for i in range(start, stop)])
        pq.write_table(pa.table(columns), folder / f"part-{index:03d}.parquet")
    return folder


def oracle_call(function, *args, **kwargs):
    with oracle.stable_cleanlab(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, n_jobs=1, **kwargs) if function is ml_filter.find_label_issues else \
            function(*args, **kwargs)


def run_scan(client, folder, out, **kwargs):
    return labelscan.scan(str(folder), str(out), client=client, label_column="labels", multi_label=True,
                          rows_per_partition=1, **kwargs)


def ranked_row_ids(result):
    issues = result.issues(None)
    return issues["row_id"].to_numpy() if len(issues) else np.zeros(0, dtype=np.int64)


@pytest.mark.parametrize("name", list(SETS))
def test_scan_matches_cleanlab(name, threaded_client, tmp_path):
    labels, pred_probs = dataset(name)
    expected_scores = oracle_call(ml_rank.get_label_quality_scores, labels, pred_probs)
    for filter_by in oracle.FILTERS:
        try:
            expected_mask = oracle_call(ml_filter.find_label_issues, labels, pred_probs, filter_by=filter_by)
        except ValueError as error:   # predicted_neq_given with a class given to no row
            folder = write_set(tmp_path / "refused", labels, pred_probs, 3)
            with pytest.raises(InputError, match="Labels must contain at least 2 classes"):
                run_scan(threaded_client, folder, tmp_path / f"scan-{filter_by}", filter_by=filter_by)
            assert "at least 2 classes" in str(error)
            continue
        expected_order = oracle_call(ml_filter.find_label_issues, labels, pred_probs, filter_by=filter_by,
                                     return_indices_ranked_by="self_confidence")
        assert 0 < expected_mask.sum() < len(labels) or filter_by == "predicted_neq_given"
        for partitions in (1, 3, 7):
            folder = tmp_path / f"data-{partitions}"
            if not folder.exists():
                write_set(folder, labels, pred_probs, partitions)
            result = run_scan(threaded_client, folder, tmp_path / f"scan-{filter_by}-{partitions}",
                              filter_by=filter_by)
            context = f"{name} {filter_by} partitions={partitions}"
            assert result.summary["num_partitions"] == min(partitions, len(labels)), context
            mask = result.mask()
            np.testing.assert_array_equal(mask["row_id"], np.arange(len(labels)), err_msg=context)
            np.testing.assert_array_equal(mask["is_label_issue"], expected_mask, err_msg=context)
            np.testing.assert_array_equal(mask["label_quality"], expected_scores, err_msg=context)
            assert result.num_issues == int(expected_mask.sum()), context
            np.testing.assert_array_equal(ranked_row_ids(result), expected_order, err_msg=context)


LOW_SCORE_RANKINGS = [("low_self_confidence", "self_confidence"), ("low_self_confidence", "normalized_margin"),
                      ("low_normalized_margin", "normalized_margin"), ("low_normalized_margin", "self_confidence")]


@pytest.mark.parametrize("name", ["k20_f32_absent", "k50_f16", "k50_ties_f64"])
def test_low_score_adjusted_order_matches_cleanlab(name, threaded_client, tmp_path):
    """``low_*`` filters with ``adjust_pred_probs``: cleanlab scores the flagged rows with their own thresholds."""
    labels, pred_probs = dataset(name)
    default_scores = oracle_call(ml_rank.get_label_quality_scores, labels, pred_probs)
    differs_from_whole_set = False
    for filter_by, rank_by in LOW_SCORE_RANKINGS:
        expected = oracle_call(ml_filter.find_label_issues, labels, pred_probs, filter_by=filter_by,
                               return_indices_ranked_by=rank_by, rank_by_kwargs={"adjust_pred_probs": True})
        whole_set_scores = oracle_call(ml_rank.get_label_quality_scores, labels, pred_probs, method=rank_by,
                                       adjust_pred_probs=True)
        flagged = np.sort(expected)   # row order
        chosen = flagged[np.argsort(default_scores[flagged], kind="stable")]
        whole_set_order = chosen[np.argsort(whole_set_scores[flagged], kind="stable")]   # the former scan's
        differs_from_whole_set |= not np.array_equal(whole_set_order, expected)
        for partitions in (1, 3, 7):
            folder = tmp_path / f"data-{partitions}"
            if not folder.exists():
                write_set(folder, labels, pred_probs, partitions)
            result = run_scan(threaded_client, folder, tmp_path / f"scan-{filter_by}-{rank_by}-{partitions}",
                              filter_by=filter_by, rank_by=rank_by, adjust_pred_probs=True, issues_per_part=40)
            context = f"{name} {filter_by} {rank_by} partitions={partitions}"
            np.testing.assert_array_equal(ranked_row_ids(result), expected, err_msg=context)
            np.testing.assert_array_equal(result.mask()["label_quality"], whole_set_scores, err_msg=context)
            np.testing.assert_array_equal(result.issues(None)["label_quality"], whole_set_scores[expected],
                                          err_msg=context)
    assert differs_from_whole_set   # the whole set's thresholds would give another order


def test_rankings_options_and_statistics(threaded_client, tmp_path):
    labels, pred_probs = dataset("k20_f32_absent")
    folder = write_set(tmp_path / "data", labels, pred_probs, 3, multi_hot=True, ids=True)
    cases = [dict(filter_by="both", rank_by="normalized_margin", adjust_pred_probs=True),
             dict(filter_by="prune_by_noise_rate", rank_by="confidence_weighted_entropy"),
             dict(filter_by="prune_by_class", rank_by="self_confidence", adjust_pred_probs=True, frac_noise=0.5),
             dict(filter_by="prune_by_noise_rate", rank_by="self_confidence", num_to_remove_per_class=list(range(20)),
                  min_examples_per_class=3),
             dict(filter_by="low_self_confidence", rank_by="normalized_margin", issues_per_part=7),
             dict(filter_by="low_normalized_margin", rank_by="confidence_weighted_entropy", issues_per_part=5),
             dict(filter_by="low_self_confidence", rank_by="self_confidence", issues_per_part=3)]
    for index, case in enumerate(cases):
        kwargs = {"filter_by": case["filter_by"], "return_indices_ranked_by": case["rank_by"],
                  "rank_by_kwargs": {"adjust_pred_probs": case.get("adjust_pred_probs", False)}}
        for key in ("frac_noise", "num_to_remove_per_class", "min_examples_per_class"):
            if key in case:
                kwargs[key] = case[key]
        expected = oracle_call(ml_filter.find_label_issues, labels, pred_probs, **kwargs)
        result = run_scan(threaded_client, folder, tmp_path / f"scan-{index}", id_column="id", **case)
        np.testing.assert_array_equal(ranked_row_ids(result), expected, err_msg=str(case))
        issues = result.issues(None)
        assert list(issues["id"]) == [f"row-{i}" for i in expected]
        assert [list(given) for given in issues["given_labels"]] == [labels[i] for i in expected]
    mask_part = pq.ParquetFile(tmp_path / "scan-1" / "mask" / "part-00000.parquet").metadata.row_group(0)
    assert {mask_part.column(i).path_in_schema for i in range(mask_part.num_columns)
            if mask_part.column(i).is_stats_set} == {"row_id", "id"}   # row keys only, as multiclass masks
    per_class = oracle_call(ml_filter.find_multilabel_issues_per_class, labels, pred_probs)
    summary = json.loads((tmp_path / "scan-1" / "summary.json").read_text())
    assert summary["multi_label"] is True and summary["config"]["multi_label"] is True
    assert summary["num_issues_per_class"] == per_class.sum(axis=0).tolist()
    issues = labelscan.open_scan(str(tmp_path / "scan-1")).issues(None)
    for row, classes in zip(issues["row_id"], issues["issue_classes"]):
        assert list(classes) == np.flatnonzero(per_class[row]).tolist()
    stats = summary["statistics"]
    assert stats["label_counts"] == onehot(labels, 20).sum(axis=0).tolist()
    counts = threshold_counts(onehot(labels, 20), pred_probs)
    assert stats["audioset"]["counts"] == counts.tolist()
    assert stats["audioset"]["thresholds"] == AUDIOSET_THRESHOLDS.tolist()
    from cleanlab.count import compute_confident_joint

    with oracle.stable_cleanlab():
        for calibrate, key in ((False, "class_confident_joint"), (True, "class_calibrated_confident_joint")):
            joint = compute_confident_joint(labels, pred_probs, multi_label=True, calibrate=calibrate)
            np.testing.assert_array_equal(stats[key], joint)
    assert stats["num_label_issues"] == int(oracle_call(ml_filter.find_label_issues, labels, pred_probs,
                                                        filter_by="confident_learning").sum())


def test_bad_multilabel_input_is_refused(threaded_client, tmp_path):
    labels, pred_probs = dataset("k3_f64")
    everywhere = [sorted(set(row) | {1}) for row in labels]
    folder = write_set(tmp_path / "every", everywhere, pred_probs, 2)
    with pytest.raises(InputError, match="class 1 is a label of every row"):
        run_scan(threaded_client, folder, tmp_path / "out1")
    outside = [list(row) for row in labels]
    outside[5] = [0, 3]
    folder = write_set(tmp_path / "outside", outside, pred_probs, 2)
    with pytest.raises(InputError, match=r"class indices outside \[0, 3\).*global row 5"):
        run_scan(threaded_client, folder, tmp_path / "out2")
    assert not (tmp_path / "out2" / "_SUCCESS").exists()


def test_cli_multi_label_scan(threaded_client, tmp_path):
    labels, pred_probs = dataset("k3_f64")
    folder = write_set(tmp_path / "data", labels, pred_probs, 3)
    address = threaded_client.scheduler.address
    result = CliRunner().invoke(cli, ["scan", str(folder), str(tmp_path / "out"), "--multi-label", "--label-column",
                                      "labels", "--scheduler", address, "--filter-by", "both"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected = oracle_call(ml_filter.find_label_issues, labels, pred_probs, filter_by="both",
                           return_indices_ranked_by="self_confidence")
    np.testing.assert_array_equal(ranked_row_ids(labelscan.open_scan(str(tmp_path / "out"))), expected)


def test_report_of_a_multi_label_scan(threaded_client, tmp_path):
    from labelscan.report import render_report

    labels, pred_probs = dataset("k20_f32_absent")
    folder = write_set(tmp_path / "data", labels, pred_probs, 3)
    run_scan(threaded_client, folder, tmp_path / "out", class_names=[f"c<{k}>" for k in range(20)])
    text = render_report(labelscan.open_scan(str(tmp_path / "out")), top=5)
    for element in ("summary", "issue-rate", "audioset", "top-issues"):
        assert f'id="{element}"' in text
    assert "c&lt;1&gt;" in text and "c<1>" not in text
    table = text[text.index('id="top-issues"'):]
    assert table[:table.index("</table>")].count("<tr><td") == 5
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "out"), "--top", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "report.html").exists()
