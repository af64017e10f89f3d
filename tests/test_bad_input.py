"""Bad input is refused clearly and leaves the destination untouched (issue 6).

For every case of ``tests/data/bad/make_corpus.py`` the ``labelscan scan`` command (click's
CliRunner, reaching a real ``LocalCluster`` of worker processes with ``--scheduler``) must:

- exit 3 for bad input, 2 for a usage error;
- print one ``error:`` line naming the file and, for row-level problems, the row group, the
  row, its global row and how many rows are affected;
- leave the destination untouched: absent stays absent, and a destination holding a previous
  scan's outputs and an unrelated file keeps every byte, ``--overwrite`` given.

A bad partition is read once: input errors travel back as values from the first pass, so
Dask's ``retries`` do not read it again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import labelscan
from labelscan.cli import cli
from labelscan.errors import InputError, UsageError
from labelscan.io import FilePiece, PartitionSpec
from labelscan.io.unique import check_unique_ids, merge_buckets, overlapping
from labelscan.io.validate import rounding_allowance, validate_row_sums
from labelscan.runner import InProcessRunner

distributed = pytest.importorskip("distributed")

try:
    from _fixtures import load_bad_corpus
except ImportError:  # pragma: no cover - run from the repository root as a package
    from tests._fixtures import load_bad_corpus

corpus = load_bad_corpus()
CASE_NAMES = list(corpus.CASES)


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def cluster():
    """``(scheduler address, client)`` of a LocalCluster of one worker process."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0",
                                  memory_limit="2GiB") as local, distributed.Client(local) as client:
        yield local.scheduler_address, client


@pytest.fixture(scope="module")
def previous_scan(tmp_path_factory, cluster):
    """A destination holding a finished scan of a good set, and a file that is not labelscan's."""
    folder = tmp_path_factory.mktemp("previous")
    good = corpus.build_good(folder / "good")
    out = folder / "out"
    labelscan.scan(str(good), str(out), client=cluster[1], id_column="id")
    (out / "notes.txt").write_text("not a labelscan output\n")
    return out


def digests(folder: Path):
    """``{relpath: sha256}`` of every file under ``folder``; None when it does not exist."""
    if not folder.exists():
        return None
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def scan_cli(data, out, address, *args):
    return CliRunner().invoke(cli, ["scan", str(data), str(out), "--scheduler", address, "--quiet",
                                    *map(str, args)])


# ---------------------------------------------------------------------------------------------
# the corpus, case by case


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_is_refused_and_destination_untouched(name, tmp_path, cluster, previous_scan):
    case = corpus.CASES[name]
    data = corpus.build(name, tmp_path / "in")
    out = tmp_path / "out"
    destination = "previous" if CASE_NAMES.index(name) % 2 else "absent"
    if destination == "previous":
        shutil.copytree(previous_scan, out)
    before = digests(out)

    # --overwrite: the previous scan is another scan's, which would be refused before any pass
    overwrite = ["--overwrite"] if destination == "previous" else []
    result = scan_cli(data, out, cluster[0], *case.args, *overwrite)

    output = result.output
    assert result.exit_code == case.exit_code, output
    assert case.message in output, output
    assert "Traceback" not in output
    if case.exit_code == 3:
        (line,) = [line for line in output.splitlines() if line.startswith("error: ")]
        if case.file is not None:
            assert f" in {data / case.file}" in line, line
        if case.located() is not None:
            assert case.located() in line, line
    assert digests(out) == before, f"the destination ({destination}) changed"


def test_corpus_covers_every_kind(tmp_path):
    """The kinds the issue lists all have a case, and the script writes them all."""
    kinds = {"nan_prob", "inf_prob", "negative_prob", "prob_above_one", "row_sum_off", "label_out_of_range",
             "float_labels", "k_differs_between_files", "k_differs_between_row_groups", "null_label",
             "null_pred_probs_row", "null_in_list", "int_pred_probs", "missing_label_column",
             "missing_pred_probs_column", "empty_file", "garbage_file", "truncated_file", "corrupt_row_group",
             "duplicate_ids_in_partition", "duplicate_ids_across_files"}
    assert kinds <= set(corpus.CASES)
    assert corpus.main([str(tmp_path)]) == 0
    assert {path.name for path in tmp_path.iterdir()} == set(corpus.CASES) | {"good", "cases.json"}


# ---------------------------------------------------------------------------------------------
# a bad partition is read once, cached or not


def _count_reads():
    """A worker plugin recording every ``(path, row groups)`` read by labelscan's parquet reader."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class CountReads(WorkerPlugin):
        name = "labelscan-count-reads"

        def setup(self, worker):
            from labelscan.io import dataset

            self.original = dataset._read_table
            reads = worker.labelscan_reads = []

            def counted(plan, spec, columns):
                reads.extend((piece.path, tuple(piece.row_groups)) for piece in spec.pieces)
                return self.original(plan, spec, columns)

            dataset._read_table = counted

        def teardown(self, worker):
            from labelscan.io import dataset

            dataset._read_table = self.original

    return CountReads()


def _reads(dask_worker=None):
    return list(getattr(dask_worker, "labelscan_reads", []))


@pytest.mark.parametrize("cache", ["on", "off"])
def test_bad_partition_is_read_once_despite_retries(cache, tmp_path, cluster):
    address, client = cluster
    data = corpus.build("nan_prob", tmp_path / "in")
    bad_path = str(data / f"part-{corpus.BAD_FILE}.parquet")
    failed_before = sum("Compute Failed" in line for _, lines in client.get_worker_logs().items()
                        for _, line in lines)
    client.register_plugin(_count_reads())
    try:
        result = scan_cli(data, tmp_path / "out", address, "--retries", "3", "--cache", cache)
        reads = [read for per_worker in client.run(_reads).values() for read in per_worker]
    finally:
        client.unregister_worker_plugin("labelscan-count-reads")
    assert result.exit_code == 3, result.output
    bad_reads = [read for read in reads if read[0] == bad_path and corpus.BAD_ROW_GROUP in read[1]]
    assert len(bad_reads) == 1, reads
    failed_after = sum("Compute Failed" in line for _, lines in client.get_worker_logs().items()
                       for _, line in lines)
    assert failed_after == failed_before   # returned as a value: no failed task, nothing retried
    assert not (tmp_path / "out").exists()


def test_duplicate_ids_across_files_uncached(tmp_path, cluster):
    """Without cached partitions the global id check reads the id column alone."""
    data = corpus.build("duplicate_ids_across_files", tmp_path / "in")
    result = scan_cli(data, tmp_path / "out", cluster[0], "--id-column", "id", "--cache", "off")
    assert result.exit_code == 3, result.output
    assert corpus.CASES["duplicate_ids_across_files"].located() in result.output
    assert not (tmp_path / "out").exists()


def test_good_corpus_set_scans_with_every_check_on(tmp_path, cluster):
    data = corpus.build_good(tmp_path / "in")
    result = scan_cli(data, tmp_path / "out", cluster[0], "--id-column", "id", "--row-sum-tolerance", "0")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "_SUCCESS").exists()


# ---------------------------------------------------------------------------------------------
# units: row sums, usage, the global id check


def spec_of(num_rows, row_start=0, path="data/part-0.parquet"):
    piece = FilePiece(path=path, row_groups=(0,), row_group_rows=(num_rows,))
    return PartitionSpec(index=0, pieces=(piece,), row_start=row_start, num_rows=num_rows)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("num_classes", [2, 10, 1000])
def test_row_sum_tolerance_allows_storage_rounding(dtype, num_classes):
    rng = np.random.default_rng(num_classes)
    exact = rng.dirichlet(np.full(num_classes, 0.3), 2000)
    stored = exact.astype(dtype)
    validate_row_sums(stored, 0.0, spec_of(len(stored)))   # rounding alone never fails
    assert rounding_allowance(np.float16, 10) < 5e-4 + 1e-6
    off = stored.copy()
    off[[3, 1500]] *= dtype(0.99)
    with pytest.raises(InputError, match="do not sum to 1") as caught:
        validate_row_sums(off, 1e-3, spec_of(len(off), row_start=40))
    assert (caught.value.row, caught.value.global_row, caught.value.num_rows_affected) == (3, 43, 2)


def test_usage_errors_of_the_api(tmp_path):
    with pytest.raises(UsageError, match="on_bad_rows must be one of"):
        labelscan.scan(str(tmp_path / "in"), str(tmp_path / "out"), on_bad_rows="drop")
    with pytest.raises(UsageError, match="row_sum_tolerance must be >= 0"):
        labelscan.scan(str(tmp_path / "in"), str(tmp_path / "out"), row_sum_tolerance=-1)
    assert not (tmp_path / "out").exists()


class _Part:
    """A cached partition as the id check sees it."""

    def __init__(self, row_start, ids):
        self.row_start, self.ids = row_start, np.asarray(ids)


class _Plan:
    def __init__(self, sizes):
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.partitions = [spec_of(size, int(start), f"part-{i}.parquet")
                           for i, (size, start) in enumerate(zip(sizes, starts))]


def _brute_force(all_ids):
    seen, repeats, first = {}, 0, None
    for row, value in enumerate(value.item() if isinstance(value, np.generic) else value for value in all_ids):
        if value in seen:
            repeats += 1
            first = first if first is not None else (row, value, seen[value])
        else:
            seen[value] = row
    return repeats, first


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bucket_rows", [7, 1000])
def test_global_id_check_matches_brute_force(seed, bucket_rows):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 40, 9)
    pool = rng.choice(10_000, size=int(sizes.sum()) + 3, replace=False)
    all_ids = pool[:sizes.sum()].astype(object if seed % 2 else np.int64)
    if seed % 2:
        all_ids = np.array([f"ex-{value}" for value in all_ids], dtype=object)
    if seed >= 2:   # plant repeats across partitions
        for _ in range(seed):
            source, target = sorted(rng.choice(len(all_ids), 2, replace=False))
            if np.searchsorted(np.cumsum(sizes), source, "right") != np.searchsorted(np.cumsum(sizes), target,
                                                                                     "right"):
                all_ids[target] = all_ids[source]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    parts = [_Part(int(start), all_ids[start:start + size]) for start, size in zip(starts, sizes)]
    repeats, first = _brute_force(list(all_ids))
    plan = _Plan(sizes)
    if not repeats:
        check_unique_ids(InProcessRunner(), parts, plan, bucket_rows=bucket_rows)
        return
    with pytest.raises(InputError, match="duplicate id") as caught:
        check_unique_ids(InProcessRunner(), parts, plan, bucket_rows=bucket_rows)
    error = caught.value
    assert (error.global_row, error.num_rows_affected) == (first[0], repeats)
    assert f"duplicate id {first[1]!r} (first at global row {first[2]})" in str(error)


def test_sorted_ids_finish_without_buckets():
    parts = [_Part(10 * i, np.arange(10 * i, 10 * i + 10)) for i in range(50)]
    assert check_unique_ids(InProcessRunner(), parts, _Plan([10] * 50)) == {"partitions_compared": 0,
                                                                            "buckets": 0}
    assert list(overlapping([(0, 5), (6, 9), (9, 12), (20, 30), (1, 2)])) == [0, 1, 2, 4]
    merged = merge_buckets({"ids": np.array([3, 1]), "rows": np.array([5, 6]), "repeats": 0, "first": None},
                           {"ids": np.array([1, 2]), "rows": np.array([2, 3]), "repeats": 0, "first": None})
    assert merged["repeats"] == 1 and merged["first"] == (6, 1, 2)


def test_input_failure_passes_through_the_passes_submitted_after_the_read():
    """A scan submits every pass up to the confident joint before it knows the reads went well:
    a bad partition's failure becomes the class layout and each later pass returns it unrun."""
    from labelscan import passes, plan

    failure = passes.InputFailure(InputError("bad row"))
    layout = passes.class_layout(3, np.array([1, 0, 2]), failure)
    assert layout is failure
    assert passes.partition_threshold_pieces(object(), 0, layout) is failure
    assert passes.merge_threshold_pieces({0: None}, failure) is failure
    assert plan.layout_thresholds(failure, layout, np.float32) is failure
    assert passes.row_facts(object(), thresholds=failure) is failure
    assert passes.joint_summary(failure) is failure
    assert passes.merge_joint_summaries({}, failure) is failure
    nothing_left = passes.class_layout(2, np.zeros(2, np.int64), np.zeros(2, np.int64))
    assert isinstance(nothing_left, passes.InputFailure) and "no rows to scan" in str(nothing_left.error)
    good = passes.class_layout(2, np.array([1, 2]), np.array([3, 4]))
    np.testing.assert_array_equal(good.offsets, [[0, 0], [1, 2]])
    np.testing.assert_array_equal(good.totals, [4, 6])
    assert good.num_rows == 10
