"""``on_bad_rows="skip"`` (issue 6): bad rows are left out, the answer is cleanlab's on the rest.

Every scan here reads real parquet files on a real ``LocalCluster`` of worker processes. The
reference is cleanlab 2.9 (``tests/oracle.py``, stable sort) on the arrays with the bad rows
deleted; labelscan must flag and rank the same rows (numbered by their input row), write a
``mask/`` row for every input row (skipped ones: ``is_label_issue`` False, null scores), list
the skipped rows in ``rejected/`` and count them in ``summary.json``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import labelscan
from labelscan.cli import cli
from labelscan.errors import InputError

try:
    import oracle
    from _fixtures import load_bad_corpus
except ImportError:  # tests/ imported as a package
    from tests import oracle
    from tests._fixtures import load_bad_corpus

distributed = pytest.importorskip("distributed")

corpus = load_bad_corpus()
K = 4
FILES = 6
ROWS_PER_FILE = 500


@pytest.fixture(scope="module")
def cluster():
    """``(scheduler address, client)`` of a LocalCluster of two worker processes."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit="2GiB") as local, distributed.Client(local) as client:
        yield local.scheduler_address, client


def damaged_set(folder, seed=0, null_lists=True):
    """Six files of 500 rows (row groups of 125), float16 predictions (ties are common), ids.

    Bad rows of every row-level kind at random places; file 2 is bad throughout, so with
    small partitions some partition keeps no row at all. ``null_lists=False`` leaves out the
    null pred_probs rows (pyarrow before the fix of apache/arrow#35692 cannot read them back).

    Returns
    -------
    labels, pred_probs, ids : numpy.ndarray
        The clean arrays, (N,), (N, K) float16, (N,).
    bad : dict[str, numpy.ndarray]
        Global rows damaged, per expected reason.
    """
    rng = np.random.default_rng(seed)
    num_rows = FILES * ROWS_PER_FILE
    labels = rng.integers(0, K, num_rows)
    pred_probs = rng.dirichlet(np.full(K, 0.6), num_rows).astype(np.float16)
    noisy = rng.random(num_rows) < 0.25
    labels[noisy] = rng.integers(0, K, int(noisy.sum()))
    ids = np.arange(10_000, 10_000 + num_rows, dtype=np.int64)
    whole_file = np.arange(2 * ROWS_PER_FILE, 3 * ROWS_PER_FILE)
    scattered = rng.permutation(np.setdiff1d(np.arange(num_rows), whole_file))[:120].reshape(6, 20)
    bad = {"non_finite": np.concatenate([scattered[0], whole_file]), "out_of_bounds": scattered[1],
           "label_out_of_range": scattered[2], "null_label": scattered[3], "null_pred_probs": scattered[4],
           "null_id": scattered[5]}
    if not null_lists:
        bad["null_pred_probs"] = scattered[4][:0]
    bad = {reason: np.sort(rows) for reason, rows in bad.items()}
    stored_probs, stored_labels = pred_probs.copy(), labels.copy()
    stored_probs[bad["non_finite"], 1] = np.nan
    stored_probs[bad["out_of_bounds"], 0] = -0.25
    stored_labels[bad["label_out_of_range"]] = K
    folder.mkdir(parents=True)
    for index in range(FILES):
        rows = np.arange(index * ROWS_PER_FILE, (index + 1) * ROWS_PER_FILE)
        nulls = {reason: np.isin(rows, bad[reason]) for reason in ("null_label", "null_pred_probs", "null_id")}
        table = pa.table({
            "label": pa.array(stored_labels[rows], mask=nulls["null_label"]),
            "pred_probs": pa.FixedSizeListArray.from_arrays(pa.array(stored_probs[rows].ravel()), K,
                                                            mask=pa.array(nulls["null_pred_probs"])),
            "id": pa.array(ids[rows], mask=nulls["null_id"]),
        })
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=125)
    return labels, pred_probs, ids, bad


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("damaged") / "in"
    labels, pred_probs, ids, bad = damaged_set(folder)
    return folder, labels, pred_probs, ids, bad


def read_parts(out, name) -> pd.DataFrame:
    return pd.read_parquet(out / name)


def expected_issues(labels, pred_probs, kept, filter_by="prune_by_noise_rate", rank_by="self_confidence"):
    """Global rows cleanlab ranks as issues on the kept rows (worst first)."""
    ranked = oracle.oracle_find_label_issues(labels[kept], pred_probs[kept], filter_by=filter_by,
                                             return_indices_ranked_by=rank_by)
    return kept[ranked]


@pytest.mark.parametrize("filter_by,rank_by,cache,rows_per_partition", [
    ("prune_by_noise_rate", "self_confidence", True, 300),
    ("prune_by_noise_rate", "normalized_margin", False, 300),
    ("both", "self_confidence", False, None),
    ("prune_by_class", "confidence_weighted_entropy", True, 125),
    ("low_normalized_margin", "self_confidence", True, 300),
    ("confident_learning", "normalized_margin", False, 700),
])
def test_skipped_rows_give_cleanlabs_answer_on_the_rest(damaged, cluster, tmp_path, filter_by, rank_by, cache,
                                                        rows_per_partition):
    folder, labels, pred_probs, ids, bad = damaged
    rejected_rows = np.sort(np.concatenate(list(bad.values())))
    kept = np.setdiff1d(np.arange(len(labels)), rejected_rows)
    out = tmp_path / "out"
    result = labelscan.scan(str(folder), str(out), client=cluster[1], on_bad_rows="skip", filter_by=filter_by,
                            rank_by=rank_by, cache=cache, rows_per_partition=rows_per_partition, id_column="id")

    issues = read_parts(out, "issues")
    np.testing.assert_array_equal(issues["row_id"].to_numpy(),
                                  expected_issues(labels, pred_probs, kept, filter_by, rank_by))
    np.testing.assert_array_equal(issues["id"].to_numpy(), ids[issues["row_id"].to_numpy()])
    assert (issues["rank"].to_numpy() == np.arange(len(issues))).all()

    expected = oracle.oracle_statistics(labels[kept], pred_probs[kept])
    stats = result.summary["statistics"]
    np.testing.assert_array_equal(stats["confident_joint"], expected["confident_joint"])
    np.testing.assert_array_equal(np.asarray(stats["confident_thresholds"]),
                                  expected["confident_thresholds"].astype(np.float64))
    np.testing.assert_array_equal(stats["label_counts"], np.bincount(labels[kept], minlength=K))
    assert stats["num_label_issues"] == expected["num_label_issues"]

    mask = read_parts(out, "mask")
    assert (mask["row_id"].to_numpy() == np.arange(len(labels))).all()   # every input row, in order
    scores = oracle.oracle_scores(labels[kept], pred_probs[kept], method=rank_by)
    np.testing.assert_array_equal(mask["label_quality"].to_numpy()[kept], scores)
    assert mask["label_quality"].isna().to_numpy()[rejected_rows].all()
    assert mask["predicted_label"].isna().to_numpy()[rejected_rows].all()
    assert mask["id"].isna().to_numpy()[rejected_rows].all()
    assert not mask["is_label_issue"].to_numpy()[rejected_rows].any()
    np.testing.assert_array_equal(np.flatnonzero(mask["is_label_issue"].to_numpy()),
                                  np.sort(issues["row_id"].to_numpy()))
    assert result.summary["num_rows"] == len(labels)
    assert result.summary["num_rows_scanned"] == len(kept)
    assert result.summary["num_rows_rejected"] == len(rejected_rows)


def test_rejected_rows_are_listed_counted_and_committed(damaged, cluster, tmp_path):
    folder, labels, pred_probs, ids, bad = damaged
    out = tmp_path / "out"
    result = labelscan.scan(str(folder), str(out), client=cluster[1], on_bad_rows="skip", id_column="id",
                            rows_per_partition=300)

    rejected = read_parts(out, "rejected")
    reason_of = {int(row): reason for reason, rows in bad.items() for row in rows}
    rows = sorted(reason_of)
    assert rejected["row_id"].tolist() == rows
    assert rejected["reason"].astype(str).tolist() == [reason_of[row] for row in rows]
    file_index = np.asarray(rows) // ROWS_PER_FILE
    assert rejected["file"].astype(str).tolist() == [str(folder / f"part-{i}.parquet") for i in file_index]
    np.testing.assert_array_equal(rejected["file_row"], np.asarray(rows) % ROWS_PER_FILE)
    np.testing.assert_array_equal(rejected["row_group"], np.asarray(rows) % ROWS_PER_FILE // 125)
    np.testing.assert_array_equal(rejected["row"], np.asarray(rows) % 125)

    summary = result.summary
    assert summary["num_rows_rejected_per_reason"] == {
        reason: len(bad.get(reason, [])) for reason in summary["num_rows_rejected_per_reason"]}
    assert summary["on_bad_rows"] == "skip"
    manifest = json.loads((out / "_SUCCESS").read_text())
    listed = {entry["path"] for entry in manifest["files"]}
    parts = {f"rejected/{path.name}" for path in (out / "rejected").iterdir()}
    assert parts and parts <= listed
    assert len(parts) == summary["num_partitions"]           # one part per partition, empty ones too
    assert labelscan.open_scan(str(out)).issues(5) is not None   # every checksum verifies
    health = labelscan.health.from_summary(summary)
    assert health["overall_label_health_score"] == summary["health"]["overall_label_health_score"]


def test_resume_keeps_rejected_parts(damaged, cluster, tmp_path):
    folder = damaged[0]
    out = tmp_path / "out"
    options = dict(client=cluster[1], on_bad_rows="skip", rows_per_partition=300)
    def parts():   # summary.json holds timings
        files = json.loads((out / "_SUCCESS").read_text())["files"]
        return [entry for entry in files if entry["path"] != "summary.json"]

    labelscan.scan(str(folder), str(out), **options)
    first = parts()
    assert any(entry["path"].startswith("rejected/") for entry in first)
    (out / "_SUCCESS").unlink()
    labelscan.scan(str(folder), str(out), resume=True, **options)
    assert parts() == first


def test_evaluation_leaves_the_skipped_rows_out(damaged, cluster, tmp_path):
    folder, labels, pred_probs, ids, bad = damaged
    out = tmp_path / "out"
    labelscan.scan(str(folder), str(out), client=cluster[1], on_bad_rows="skip", rows_per_partition=300)
    truth = labels.copy()
    truth[::7] = (truth[::7] + 1) % K                       # "verified" labels disagreeing on every 7th row
    np.save(tmp_path / "truth.npy", truth)
    got = labelscan.evaluate.evaluate(str(out), str(tmp_path / "truth.npy"), client=cluster[1], write=False)
    skipped = [rows for reason, rows in bad.items() if reason != "null_id"]   # no id column here
    kept = np.setdiff1d(np.arange(len(labels)), np.concatenate(skipped))
    expected = labelscan.evaluate.evaluate(read_parts(out, "mask")["is_label_issue"].to_numpy()[kept], truth[kept],
                                           labels=labels[kept], pred_probs=pred_probs[kept])
    assert got["num_rows"] == len(kept)
    assert got["num_true_errors"] == expected["num_true_errors"]
    assert got["mask"] == expected["mask"]
    assert got["scores"] == expected["scores"]


def test_error_mode_writes_no_rejected_parts(cluster, tmp_path):
    data = corpus.build_good(tmp_path / "in")
    result = labelscan.scan(str(data), str(tmp_path / "out"), client=cluster[1])
    assert not (tmp_path / "out" / "rejected").exists()
    assert result.summary["num_rows_rejected"] == 0 and result.summary["num_rows_scanned"] == 180


# ---------------------------------------------------------------------------------------------
# the bad-input corpus with --on-bad-rows skip


def scan_cli(data, out, address, *args):
    return CliRunner().invoke(cli, ["scan", str(data), str(out), "--scheduler", address, "--quiet",
                                    "--on-bad-rows", "skip", *map(str, args)])


@pytest.mark.parametrize("name", sorted(corpus.SKIP_REASONS))
def test_row_level_corpus_cases_are_skipped(name, cluster, tmp_path):
    case = corpus.CASES[name]
    data = corpus.build(name, tmp_path / "in")
    out = tmp_path / "out"
    result = scan_cli(data, out, cluster[0], *case.args)
    assert result.exit_code == 0, result.output
    rejected = read_parts(out, "rejected")
    skipped = corpus.skipped_rows(name)
    assert rejected["row_id"].tolist() == skipped
    assert set(rejected["reason"].astype(str)) == {corpus.SKIP_REASONS[name]}
    assert set(rejected["file"].astype(str)) == {str(data / case.file)}
    labels, pred_probs, _ = corpus.good_arrays()
    kept = np.setdiff1d(np.arange(len(labels)), skipped)
    issues = read_parts(out, "issues")
    np.testing.assert_array_equal(issues["row_id"].to_numpy(), expected_issues(labels, pred_probs, kept))
    report = CliRunner().invoke(cli, ["report", str(out)])   # skipped rows have no score to plot
    assert report.exit_code == 0, report.output


@pytest.mark.parametrize("name", [name for name, case in corpus.CASES.items()
                                  if case.exit_code == 3 and name not in corpus.SKIP_REASONS])
def test_file_level_corpus_cases_still_stop_the_scan(name, cluster, tmp_path):
    case = corpus.CASES[name]
    data = corpus.build(name, tmp_path / "in")
    result = scan_cli(data, tmp_path / "out", cluster[0], *case.args)
    assert result.exit_code == 3, result.output
    assert case.message in result.output
    if case.located() is not None:
        assert case.located() in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cache", ["on", "off"])
def test_a_skipped_row_repeating_an_id_is_no_duplicate(cluster, tmp_path, cache):
    """Ids are unique among the kept rows: a bad row's id may repeat a kept row's."""
    def change(columns, labels, pred_probs, ids):
        ids[corpus.BAD_FILE_ROWS] = [1005, 1009]           # ids of part-0.parquet ...
        pred_probs[corpus.BAD_FILE_ROWS, 1] = np.nan       # ... on rows that are skipped
        columns.update(id=pa.array(ids), pred_probs=corpus.fixed_list(pred_probs))

    data = corpus.write_set(tmp_path / "in", change)
    result = scan_cli(data, tmp_path / "out", cluster[0], "--id-column", "id", "--cache", cache,
                      "--rows-per-partition", "20")
    assert result.exit_code == 0, result.output
    assert read_parts(tmp_path / "out", "rejected")["row_id"].tolist() == corpus.skipped_rows("nan_prob")


def test_every_row_rejected_is_bad_input(cluster, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    labels, pred_probs, _ = corpus.good_arrays()
    pq.write_table(pa.table({"label": np.full(len(labels), corpus.K), "pred_probs": corpus.fixed_list(pred_probs)}),
                   data / "part-0.parquet")
    result = scan_cli(data, tmp_path / "out", cluster[0])
    assert result.exit_code == 3, result.output
    assert "no rows to scan: every row of the input was skipped as bad input" in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="every row"):
        labelscan.scan(str(data), str(tmp_path / "out"), client=cluster[1], on_bad_rows="skip")
