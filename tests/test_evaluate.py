"""Evaluation against verified labels (labelscan.evaluate) against scikit-learn and cleanlab in memory.

The reference for each score is ``cleanlab.rank.get_label_quality_scores`` on the whole arrays,
then ``sklearn.metrics.roc_auc_score`` / ``average_precision_score`` of ``(given != true, 1 - score)``
and the lift at k = number of true errors (rows tied at the cut counted with their average error
rate). labelscan computes them from partitions (and score ranges) and must agree to 1e-9; the
mask's precision/recall/F1 must be exact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

import cleanlab.rank

try:
    import synthetic
    from test_multilabel import make_multilabel
    from test_parity_real import DATA_ROOT
except ImportError:  # tests/ imported as a package
    from tests import synthetic
    from tests.test_multilabel import make_multilabel
    from tests.test_parity_real import DATA_ROOT

import labelscan
from labelscan import evaluate as ev
from labelscan.errors import InputError, UsageError

TOLERANCE = 1e-9


def reference_lift(errors, error_scores, k):
    order = np.argsort(-error_scores, kind="stable")
    cut = error_scores[order[k - 1]]
    above, tied = error_scores > cut, error_scores == cut
    top_errors = errors[above].sum() + (k - above.sum()) * errors[tied].mean()
    return (top_errors / k) / errors.mean()


def reference(labels, pred_probs, true_labels, mask=None, variants=ev.SCORE_VARIANTS):
    errors = labels != true_labels
    scores = []
    for method, adjust in variants:
        values = 1 - cleanlab.rank.get_label_quality_scores(labels, pred_probs, method=method,
                                                             adjust_pred_probs=adjust)
        scores.append({"auroc": roc_auc_score(errors, values), "auprc": average_precision_score(errors, values),
                       "lift_at_num_errors": reference_lift(errors, values, int(errors.sum()))})
    flagged = None if mask is None else (int(mask.sum()), int((mask & errors).sum()))
    return {"num_errors": int(errors.sum()), "scores": scores, "flagged": flagged}


def assert_matches(expected, got):
    assert got["num_true_errors"] == expected["num_errors"]
    assert len(got["scores"]) == len(expected["scores"])
    for want, have in zip(expected["scores"], got["scores"]):
        assert have["error"] is None
        for key in ("auroc", "auprc", "lift_at_num_errors"):
            assert abs(have[key] - want[key]) <= TOLERANCE, (have["method"], have["adjust_pred_probs"], key,
                                                            have[key], want[key])
    if expected["flagged"] is not None:
        flagged, hits = expected["flagged"]
        assert got["mask"] == ev.mask_metrics(flagged, hits, expected["num_errors"])
        assert got["mask"]["precision"] == hits / flagged
        assert got["mask"]["recall"] == hits / expected["num_errors"]


def noisy_truth(labels, seed, rate=0.15, num_classes=None):
    """True labels: the given labels with a fraction replaced (so given != true on those rows)."""
    rng = np.random.default_rng(seed)
    num_classes = num_classes or int(labels.max()) + 1
    truth = labels.copy()
    change = rng.random(len(labels)) < rate
    truth[change] = (labels[change] + rng.integers(1, num_classes, change.sum())) % num_classes
    return truth


@pytest.mark.parametrize("case", ["cont_f32", "dirichlet_f64", "ties_f16", "ties_q16_f32", "missing_class_f32",
                                  "binary_f16"])
def test_matches_sklearn_across_partitions_and_ranges(case):
    labels, pred_probs = synthetic.make(case)
    truth = noisy_truth(labels, 1, num_classes=pred_probs.shape[1])
    mask = labelscan.find_label_issues(labels, pred_probs)
    expected = reference(labels, pred_probs, truth, mask)
    results = [ev.evaluate(mask, truth, labels=labels, pred_probs=pred_probs, num_partitions=parts,
                           range_rows=range_rows)
               for parts, range_rows in ((1, ev.RANGE_ROWS), (7, ev.RANGE_ROWS), (7, 300), (3, 7))]
    for got in results:
        assert_matches(expected, got)
    # AUROC is exact (integers); everything is independent of the partitioning
    assert [s["auroc"] for s in results[0]["scores"]] == [s["auroc"] for s in results[1]["scores"]]
    assert results[0]["scores"] == results[1]["scores"]


def test_ties_straddling_the_lift_cut():
    """Quantised scores: big tie groups everywhere; the lift counts a tie group at its error rate."""
    rng = np.random.default_rng(5)
    n = 3000
    labels = rng.integers(0, 3, n)
    pred_probs = rng.dirichlet(np.ones(3), n)
    pred_probs = np.round(pred_probs * 4) / 4
    pred_probs /= pred_probs.sum(axis=1, keepdims=True)
    truth = noisy_truth(labels, 2, rate=0.3, num_classes=3)
    variants = (("self_confidence", False), ("normalized_margin", False))
    expected = reference(labels, pred_probs, truth, variants=variants)
    for parts, range_rows in ((1, ev.RANGE_ROWS), (5, 50)):
        assert_matches(expected, ev.evaluate(None, truth, labels=labels, pred_probs=pred_probs,
                                             num_partitions=parts, range_rows=range_rows, variants=variants))


def test_mask_only_indices_and_edge_cases():
    labels, pred_probs = synthetic.make("cont_f32")
    truth = noisy_truth(labels, 3, num_classes=pred_probs.shape[1])
    ranked = labelscan.find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")
    mask = np.zeros(len(labels), bool)
    mask[ranked] = True
    by_indices = ev.evaluate(ranked, truth, labels=labels, num_partitions=4)
    assert by_indices["scores"] == [] and by_indices["mask"] == ev.evaluate(mask, truth, labels=labels)["mask"]
    perfect = ev.evaluate(labels != truth, truth, labels=labels, pred_probs=pred_probs, variants=())
    assert perfect["mask"]["precision"] == perfect["mask"]["recall"] == perfect["mask"]["f1"] == 1.0
    clean = ev.evaluate(np.zeros(len(labels), bool), labels, labels=labels, pred_probs=pred_probs)
    assert clean["num_true_errors"] == 0 and clean["mask"]["precision"] is None
    assert all(s["auroc"] is None and s["auprc"] is None and s["lift_at_num_errors"] is None
               for s in clean["scores"])
    json.dumps(clean)
    with pytest.raises(UsageError):
        ev.evaluate(mask[:-1], truth, labels=labels)


def test_entropy_of_probabilities_above_one_is_reported_not_raised():
    labels, pred_probs = synthetic.make("cont_f64")
    pred_probs = pred_probs.copy()
    pred_probs[0, labels[0]] = 1 + 5e-7      # accepted by validation, refused by the entropy
    truth = noisy_truth(labels, 4, num_classes=pred_probs.shape[1])
    got = ev.evaluate(None, truth, labels=labels, pred_probs=pred_probs, num_partitions=3)
    entropy = [s for s in got["scores"] if s["method"] == "confidence_weighted_entropy"][0]
    assert entropy["auroc"] is None and "interval [0, 1]" in entropy["error"]
    assert all(s["auroc"] is not None for s in got["scores"] if s is not entropy)


# ---------------------------------------------------------------------------------------------
# a finished scan


OUTSIDE_ROW = 2600
"""The row of the ``scanned`` input's column ``outside`` (true labels) holding K: row 400 of row
group 1 of ``part-1.parquet``."""


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, threaded_client):
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels, pred_probs = synthetic.make("dirichlet_f64")
    truth = noisy_truth(labels, 6, num_classes=pred_probs.shape[1])
    outside = truth.copy()
    outside[OUTSIDE_ROW] = pred_probs.shape[1]
    root = tmp_path_factory.mktemp("evaluate")
    (root / "in").mkdir()
    for index, (start, stop) in enumerate([(0, 1700), (1700, 4000)]):
        table = pa.table({"label": labels[start:stop], "verified": truth[start:stop].astype(np.int16),
                          "outside": outside[start:stop],
                          "pred_probs": pa.FixedSizeListArray.from_arrays(pa.array(pred_probs[start:stop].ravel()),
                                                                          pred_probs.shape[1])})
        pq.write_table(table, root / "in" / f"part-{index}.parquet", row_group_size=500)
    np.save(root / "truth.npy", truth.astype(np.uint8))
    result = labelscan.scan(str(root / "in"), str(root / "out"), client=threaded_client, rows_per_partition=500)
    return root, labels, pred_probs, truth, result


def test_scan_evaluation_matches_in_memory(scanned, threaded_client):
    root, labels, pred_probs, truth, result = scanned
    mask = result.mask()["is_label_issue"].to_numpy()
    expected = ev.evaluate(mask, truth, labels=labels, pred_probs=pred_probs)
    assert_matches(reference(labels, pred_probs, truth, mask), expected)
    by_column = ev.evaluate(str(root / "out"), "verified", client=threaded_client, range_rows=700)
    by_file = ev.evaluate(str(root / "out"), str(root / "truth.npy"), client=threaded_client,
                          output=str(root / "elsewhere.json"))
    by_array = ev.evaluate(str(root / "out"), truth, client=threaded_client, write=False)
    for got in (by_file, by_array):
        assert got["mask"] == expected["mask"] and got["scores"] == expected["scores"]
    assert by_column["mask"] == expected["mask"]
    for a, b in zip(by_column["scores"], expected["scores"]):
        assert a["auroc"] == b["auroc"] and abs(a["auprc"] - b["auprc"]) < 1e-15
        assert abs(a["lift_at_num_errors"] - b["lift_at_num_errors"]) < 1e-12
    written = json.loads((root / "out" / "evaluation.json").read_text())
    assert written["true_labels"] == {"column": "verified"} and written["scores"] == json.loads(
        json.dumps(by_column["scores"]))
    assert written["scan"]["config_hash"] == result.summary["config_hash"]
    assert json.loads((root / "elsewhere.json").read_text())["true_labels"]["path"].endswith("truth.npy")
    labelscan.open_scan(str(root / "out"))   # the manifest still verifies


def test_scan_evaluation_errors(scanned, threaded_client):
    root, labels, pred_probs, truth, result = scanned
    with pytest.raises(UsageError, match="neither a .npy file nor a column"):
        ev.evaluate(str(root / "out"), "no_such_column", client=threaded_client)
    np.save(root / "short.npy", truth[:-1])
    with pytest.raises(InputError, match=f"hold {len(truth) - 1} rows"):
        ev.evaluate(str(root / "out"), str(root / "short.npy"), client=threaded_client)
    import shutil

    tampered = root / "tampered"
    shutil.copytree(root / "out", tampered)
    part = sorted((tampered / "mask").iterdir())[1]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 1       # the footer still reads: only the checksum can tell
    part.write_bytes(bytes(data))
    with pytest.raises(InputError, match="checksum mismatch"):
        ev.evaluate(str(tampered), "verified", client=threaded_client, write=False)
    part.write_bytes(bytes(data[:-8]))
    with pytest.raises(InputError, match="cannot read the mask part"):
        ev.evaluate(str(tampered), "verified", client=threaded_client, write=False)


def test_scan_evaluation_refuses_true_labels_outside_the_classes(scanned, threaded_client):
    root, labels, pred_probs, truth, result = scanned
    num_classes = pred_probs.shape[1]
    np.save(root / "beyond.npy", np.full(len(truth), num_classes + 1))   # all 11s for K = 10, say
    with pytest.raises(InputError, match=rf"^true label values outside \[0, {num_classes}\) in "
                                         rf"{root / 'beyond.npy'}, row \d+; \d+ rows affected$"):
        ev.evaluate(str(root / "out"), str(root / "beyond.npy"), client=threaded_client, write=False)
    with pytest.raises(InputError, match=rf"^true label values outside \[0, {num_classes}\) \(column 'outside'\) "
                                         rf"in {root / 'in' / 'part-1.parquet'}, row group 1, row 400 "
                                         rf"\(global row {OUTSIDE_ROW}\); 1 row affected$"):
        ev.evaluate(str(root / "out"), "outside", client=threaded_client, variants=(), write=False)
    negative = truth.copy()
    negative[123] = -1
    with pytest.raises(InputError, match=r"outside \[0, \d+\) \(global row 123\); 1 row affected$"):
        ev.evaluate(str(root / "out"), negative, client=threaded_client, write=False)


def test_scan_evaluation_refuses_multi_label_scans(tmp_path, threaded_client):
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels, pred_probs = make_multilabel(200, 3, 0, absent=False)
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"labels": pa.array(labels, type=pa.list_(pa.int32())),
                             "pred_probs": pa.FixedSizeListArray.from_arrays(pa.array(pred_probs.ravel()), 3)}),
                   tmp_path / "in" / "part-0.parquet")
    labelscan.scan(str(tmp_path / "in"), str(tmp_path / "out"), label_column="labels", multi_label=True,
                   client=threaded_client)
    np.save(tmp_path / "truth.npy", np.zeros(len(labels), dtype=np.int64))
    with pytest.raises(UsageError, match="is a multi-label scan: evaluate supports single-label scans only"):
        ev.evaluate(str(tmp_path / "out"), str(tmp_path / "truth.npy"), client=threaded_client)


def test_cli_evaluate(scanned, threaded_client):
    from labelscan.cli import cli

    root, labels, pred_probs, truth, result = scanned
    address = threaded_client.scheduler.address
    out = CliRunner().invoke(cli, ["evaluate", str(root / "out"), "--true-labels", str(root / "truth.npy"),
                                   "--scheduler", address, "--json", "--no-write"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    payload = json.loads(out.output)
    assert payload["mask"] == ev.evaluate(result.mask()["is_label_issue"].to_numpy(), truth, labels=labels,
                                          variants=())["mask"]
    table = CliRunner().invoke(cli, ["evaluate", str(root / "out"), "--true-labels", "verified", "--mask-only",
                                     "--scheduler", address], catch_exceptions=False)
    assert table.exit_code == 0 and "precision" in table.output and "AUROC" not in table.output
    missing = CliRunner().invoke(cli, ["evaluate", str(root / "nowhere"), "--true-labels", "verified",
                                       "--scheduler", address])
    assert missing.exit_code == 3 and f"error: there is no scan at {root / 'nowhere'}" in missing.output


# ---------------------------------------------------------------------------------------------
# the real benchmark sets

DCAI = ("cifar10n_aggregate", "cifar10n_worst", "cifar10s_noise0.2_sparsity0.4")
_DCAI_SKIP = pytest.mark.skipif(not (DATA_ROOT / "dcai_benchmarks").is_dir(),
                                reason=f"real data folder ../shared/data not found: {DATA_ROOT}")


@_DCAI_SKIP
@pytest.mark.parametrize("name", DCAI)
def test_dcai_benchmarks_match_sklearn(name):
    folder = DATA_ROOT / "dcai_benchmarks" / name
    pred_probs = np.load(folder / "pred_probs.npy")
    labels = np.load(folder / "noisy_labels.npy").astype(np.int64)
    truth = np.load(folder / "true_labels.npy")
    mask = labelscan.find_label_issues(labels, pred_probs)
    expected = reference(labels, pred_probs, truth, mask)
    assert_matches(expected, ev.evaluate(mask, truth, labels=labels, pred_probs=pred_probs, num_partitions=7,
                                         range_rows=20_000))
