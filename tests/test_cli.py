"""The ``labelscan`` command line: options, outputs, exit codes (CliRunner and real processes).

Scans run on one module-wide ``LocalCluster`` reached with ``--scheduler`` (which tests that
option); the tests of ``--workers`` and of the real entry point start their own small cluster.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

import labelscan
from labelscan.cli import ExpectedErrorFilter, cli, parse_scalar, parse_storage_options
from labelscan.demo_data import make_noisy_dataset

REPO = Path(__file__).resolve().parents[1]
NUM_ROWS, NUM_CLASSES = 3000, 4


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def scheduler():
    """Address of a small LocalCluster shared by this module's scans."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0",
                      memory_limit="2GiB") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def arrays():
    data = make_noisy_dataset(NUM_ROWS, NUM_CLASSES, noise_rate=0.25, seed=7)
    return data["labels"], data["pred_probs"]


def write_set(folder: Path, labels, pred_probs, *, files=3, k_columns=False, ids=None,
              row_group_rows=250) -> Path:
    """Write a parquet set: ``label``, ``pred_probs`` (list column) or ``p0..pK-1``, optional ``id``."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(labels), files + 1).astype(int)
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        block = pred_probs[start:stop]
        columns = {"label": pa.array(labels[start:stop].astype(np.int64))}
        if k_columns:
            columns.update({f"p{k}": pa.array(block[:, k]) for k in range(block.shape[1])})
        else:
            columns["pred_probs"] = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)),
                                                                      block.shape[1])
        if ids is not None:
            columns["id"] = pa.array(ids[start:stop])
        pq.write_table(pa.table(columns), folder / f"part-{index:05d}.parquet",
                       row_group_size=row_group_rows)
    return folder


def read_parts(folder: Path):
    parts = sorted(folder.glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(part) for part in parts]).to_pandas()


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def assert_nothing_written(out: Path):
    assert not out.exists() or not any(out.iterdir()), sorted(map(str, out.rglob("*")))


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# ---------------------------------------------------------------------------------------------
# scan


SCAN_CASES = {
    "both-k-columns-ids": (
        ["--filter-by", "both", "--frac-noise", "0.7", "--min-examples-per-class", "5",
         "--rank-by", "normalized_margin", "--rows-per-partition", "400", "--cache", "off"],
        {"filter_by": "both", "frac_noise": 0.7, "min_examples_per_class": 5},
        "normalized_margin", False),
    "prune-by-class-adjusted": (
        ["--filter-by", "prune_by_class", "--num-to-remove-per-class", "30,0,10,20",
         "--adjust-pred-probs", "--cache", "on"],
        {"filter_by": "prune_by_class", "num_to_remove_per_class": [30, 0, 10, 20]},
        "self_confidence", True),
    "low-self-confidence": (
        ["--filter-by", "low_self_confidence", "--rank-by", "confidence_weighted_entropy",
         "--retries", "0"],
        {"filter_by": "low_self_confidence"},
        "confidence_weighted_entropy", False),
}


@pytest.mark.parametrize("case", list(SCAN_CASES))
def test_scan_matches_find_label_issues(case, tmp_path, scheduler, arrays):
    labels, pred_probs = arrays
    cli_args, cl_kwargs, rank_by, adjust = SCAN_CASES[case]
    k_columns = case == "both-k-columns-ids"
    ids = np.asarray([f"ex-{i}" for i in range(NUM_ROWS)]) if k_columns else None
    data = write_set(tmp_path / "data", labels, pred_probs, k_columns=k_columns, ids=ids)
    out = tmp_path / "scan"
    column_args = []
    if k_columns:
        for k in range(NUM_CLASSES):
            column_args += ["--pred-probs-column", f"p{k}"]
        column_args += ["--id-column", "id"]

    result = invoke("scan", data, out, "--scheduler", scheduler, "--json", *column_args, *cli_args)
    assert result.exit_code == 0, result.output

    expected_mask = labelscan.find_label_issues(labels, pred_probs, **cl_kwargs)
    expected_ranked = labelscan.find_label_issues(
        labels, pred_probs, **cl_kwargs, return_indices_ranked_by=rank_by,
        rank_by_kwargs={"adjust_pred_probs": adjust})
    mask = read_parts(out / "mask")
    issues = read_parts(out / "issues")
    np.testing.assert_array_equal(mask["row_id"].to_numpy(), np.arange(NUM_ROWS))
    np.testing.assert_array_equal(mask["is_label_issue"].to_numpy(), expected_mask)
    np.testing.assert_array_equal(issues["row_id"].to_numpy(), expected_ranked)
    np.testing.assert_array_equal(issues["rank"].to_numpy(), np.arange(len(expected_ranked)))
    np.testing.assert_array_equal(issues["given_label"].to_numpy(), labels[expected_ranked])
    if ids is not None:
        assert list(issues["id"]) == list(ids[expected_ranked])
        assert list(mask["id"]) == list(ids)
    assert (out / "_SUCCESS").exists()

    summary = json.loads(result.stdout)  # --json: stdout is exactly summary.json's content
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["num_issues"] == int(expected_mask.sum())
    assert summary["config"]["filter_by"] == cl_kwargs["filter_by"]
    assert summary["config"]["rank_by"] == rank_by


def test_scan_tables_progress_and_destination(tmp_path, scheduler, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=2)
    out = tmp_path / "scan"
    result = invoke("scan", data, out, "--scheduler", scheduler, "--top", "5")
    assert result.exit_code == 0, result.output
    num_issues = int(labelscan.find_label_issues(labels, pred_probs).sum())
    for stage in ("read", "thresholds", "joint", "flag", "rank"):  # progress lines (stderr)
        assert re.search(rf"^\s+{stage}\s+[\d.]+ s$", result.output, re.MULTILINE), result.output
    assert f"issues:  {num_issues:,}" in result.output
    assert "top 5 issues" in result.output and "label_quality" in result.output

    # the same scan again is fine; another scan to the same place needs --overwrite (usage, 2)
    assert invoke("scan", data, out, "--scheduler", scheduler, "-q").exit_code == 0
    clash = invoke("scan", data, out, "--scheduler", scheduler, "-q", "--filter-by", "both")
    assert clash.exit_code == 2, clash.output
    assert clash.output.startswith("error: ") and "give --overwrite to replace its outputs" in clash.output
    again = invoke("scan", data, out, "--scheduler", scheduler, "-q", "--filter-by", "both", "--overwrite")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == f"{out}: {labelscan.open_scan(str(out)).num_issues} issues in {NUM_ROWS} rows"


# ---------------------------------------------------------------------------------------------
# errors: bad input (3), usage (2)


def test_label_out_of_range_exits_3_and_writes_nothing(tmp_path, scheduler, arrays):
    labels, pred_probs = arrays
    bad = labels.copy()
    bad[2600] = NUM_CLASSES  # in the third file
    data = write_set(tmp_path / "data", bad, pred_probs)
    out = tmp_path / "scan"
    result = invoke("scan", data, out, "--scheduler", scheduler)
    assert result.exit_code == 3, result.output
    assert "error: label values outside" in result.output
    assert str(data / "part-00002.parquet") in result.output
    assert "Traceback" not in result.output
    assert_nothing_written(out)


def test_missing_column_exits_3_and_writes_nothing(tmp_path, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    out = tmp_path / "scan"
    result = invoke("scan", data, out, "--label-column", "given")  # fails before any cluster starts
    assert result.exit_code == 3, result.output
    assert "error: missing label column 'given'" in result.output
    assert str(data / "part-00000.parquet") in result.output
    assert_nothing_written(out)
    missing = invoke("scan", tmp_path / "nowhere", out)
    assert missing.exit_code == 3 and "no such file or directory" in missing.output
    assert_nothing_written(out)


def test_storage_failure_exits_4(tmp_path, scheduler, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    (tmp_path / "file").write_text("not a directory")
    result = invoke("scan", data, tmp_path / "file" / "scan", "--scheduler", scheduler)
    assert result.exit_code == 4, result.output
    assert "error: NotADirectoryError" in result.output and "Traceback" not in result.output


def test_infrastructure_errors_are_classified():
    from distributed.scheduler import KilledWorker

    from labelscan.cli import _is_infrastructure

    assert _is_infrastructure(TimeoutError()) and _is_infrastructure(ConnectionResetError())
    assert _is_infrastructure(KilledWorker.__new__(KilledWorker))
    assert not _is_infrastructure(ValueError("a bug"))


def test_storage_client_errors_are_infrastructure():
    """botocore/aiobotocore/aiohttp errors (not OSErrors) by their classes' modules, also when wrapped."""
    import aiohttp
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from labelscan.cli import _is_infrastructure

    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert _is_infrastructure(unreachable) and _is_infrastructure(NoCredentialsError())
    assert _is_infrastructure(aiohttp.ServerDisconnectedError())
    try:
        try:
            raise unreachable
        except EndpointConnectionError as error:
            raise RuntimeError("listing failed") from error
    except RuntimeError as wrapped:
        assert _is_infrastructure(wrapped)
    try:
        try:
            raise unreachable
        except EndpointConnectionError:
            raise ValueError("raised while handling it")
    except ValueError as during:
        assert _is_infrastructure(during)
    try:
        try:
            raise unreachable
        except EndpointConnectionError:
            raise ValueError("a bug") from None
    except ValueError as suppressed:
        assert not _is_infrastructure(suppressed)


UNREACHABLE_S3 = ["--endpoint-url", "http://127.0.0.1:1", "--storage-option", "key=dummy", "--storage-option",
                  "secret=dummy", "--storage-option", "config_kwargs.retries.max_attempts=1"]


@pytest.mark.parametrize("command", ["scan-input", "scan-output", "report"])
def test_unreachable_s3_endpoint_exits_4(command, tmp_path, scheduler, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    args = {"scan-input": ["scan", "s3://bucket/preds/", tmp_path / "out", "--scheduler", scheduler],
            "scan-output": ["scan", data, "s3://bucket/out", "--scheduler", scheduler],
            "report": ["report", "s3://bucket/out"]}[command]
    result = invoke(*args, *UNREACHABLE_S3)
    assert result.exit_code == 4, result.output
    assert result.stderr.splitlines()[-1].startswith("error: EndpointConnectionError: Could not connect to the "
                                                     "endpoint URL")
    assert "Traceback" not in result.output and "dummy" not in result.output
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("args", [
    ["--filter-by", "nope"],
    ["--rank-by", "margin"],
    ["--num-to-remove-per-class", "1,x"],
    ["--storage-option", "novalue"],
    ["--storage-option", "=1"],
    ["--cache", "maybe"],
    ["--workers", "0"],
    ["--frac-noise", "1.5"],
    ["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
    ["--no-such-option"],
])
def test_bad_options_exit_2(args, tmp_path):
    result = invoke("scan", tmp_path / "in", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("command", ["scan", "evaluate"])
@pytest.mark.parametrize("address, message", [
    ("/nonexistent/scheduler.json", "scheduler file /nonexistent/scheduler.json does not exist"),
    ("tcp://localhost:notaport", "'tcp://localhost:notaport' is neither a scheduler file nor an address"),
])
def test_bad_scheduler_is_named_before_anything_runs(command, address, message, tmp_path):
    extra = [tmp_path / "out"] if command == "scan" else ["--true-labels", "verified"]
    result = invoke(command, tmp_path / "in", *extra, "--scheduler", address)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--scheduler': {message}" in result.output and "Traceback" not in result.output
    assert_nothing_written(tmp_path / "out")


def test_repeated_pred_probs_column_is_refused(tmp_path, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1, k_columns=True)
    result = invoke("scan", data, tmp_path / "out", "--pred-probs-column", "p0", "--pred-probs-column", "p1",
                    "--pred-probs-column", "p0")
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--pred-probs-column': 'p0' given more than once" in result.output
    assert_nothing_written(tmp_path / "out")


@pytest.mark.parametrize("where", ["directory", "unmakeable-folder"])
def test_performance_report_path_is_checked_before_the_scan(where, tmp_path, scheduler, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    (tmp_path / "file").write_text("not a folder")
    report = {"directory": tmp_path, "unmakeable-folder": tmp_path / "file" / "sub" / "perf.html"}[where]
    out = tmp_path / "scan"
    result = invoke("scan", data, out, "--scheduler", scheduler, "--performance-report", report)
    assert result.exit_code == 2, result.output
    expected = "is a directory: give a file path" if where == "directory" else "cannot make its folder"
    assert result.output.startswith(f"error: performance report {report}") and expected in result.output
    assert_nothing_written(out)


@pytest.mark.parametrize("args, message", [
    (["--num-to-remove-per-class", "1,2"], "num_to_remove_per_class has 2 entries, expected K=4"),
    (["--filter-by", "low_self_confidence", "--num-to-remove-per-class", "1,2,3,4"],
     "num_to_remove_per_class is only supported"),
])
def test_invalid_combinations_exit_2(args, message, tmp_path, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    result = invoke("scan", data, tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert f"error: {message}" in result.output
    assert_nothing_written(tmp_path / "out")


def test_missing_argument_exits_2():
    assert invoke("scan", "only-in").exit_code == 2
    assert invoke("convert", "a.npy").exit_code == 2
    assert invoke("no-such-command").exit_code == 2


# ---------------------------------------------------------------------------------------------
# convert, scan with --workers, report


def test_convert_roundtrip_scan_and_report(tmp_path, arrays):
    labels, pred_probs = arrays
    np.save(tmp_path / "pred_probs.npy", pred_probs)
    np.save(tmp_path / "labels.npy", labels)
    data, out = tmp_path / "data", tmp_path / "scan"
    result = invoke("convert", tmp_path / "pred_probs.npy", tmp_path / "labels.npy", data,
                    "--rows-per-file", "700", "--row-group-rows", "200", "--class-names", "ant,bee,cat,dog")
    assert result.exit_code == 0, result.output
    assert "wrote 5 parquet file(s)" in result.output
    table = read_parts(data)
    np.testing.assert_array_equal(table["label"].to_numpy(), labels)
    np.testing.assert_array_equal(np.stack(table["pred_probs"].to_numpy()), pred_probs)
    assert pq.ParquetFile(data / "part-00000.parquet").metadata.num_row_groups == 4

    result = invoke("scan", data, out, "--workers", "1", "--filter-by", "confident_learning")
    assert result.exit_code == 0, result.output
    assert "local cluster: 1 worker(s)" in result.output
    expected = labelscan.find_label_issues(labels, pred_probs, filter_by="confident_learning")
    np.testing.assert_array_equal(read_parts(out / "mask")["is_label_issue"].to_numpy(), expected)
    assert "given_class" in result.output  # class names from the parquet metadata

    report = invoke("report", out, "--top", "3")
    assert report.exit_code == 0, report.output
    assert "verified" in report.output and f"issues:  {int(expected.sum()):,}" in report.output
    report_json = invoke("report", out, "--json")
    assert json.loads(report_json.stdout)["class_names"] == ["ant", "bee", "cat", "dog"]

    part = out / "mask" / "part-00000.parquet"
    part.write_bytes(part.read_bytes() + b"x")
    corrupt = invoke("report", out)
    assert corrupt.exit_code == 3 and "checksum mismatch for mask/part-00000.parquet" in corrupt.output

    (out / "_SUCCESS").unlink()
    unfinished = invoke("report", out)
    assert unfinished.exit_code == 3, unfinished.output
    assert "unfinished" in unfinished.output and "Traceback" not in unfinished.output


def test_convert_csv_with_ids_and_bad_inputs(tmp_path):
    (tmp_path / "p.csv").write_text("a,b,c\n0.5,0.25,0.25\n0.1,0.8,0.1\n0.2,0.2,0.6\n")
    (tmp_path / "y.csv").write_text("0\n1\n1\n")
    (tmp_path / "ids.csv").write_text("id\nx\ny\nz\n")
    result = invoke("convert", tmp_path / "p.csv", tmp_path / "y.csv", tmp_path / "data",
                    "--ids", tmp_path / "ids.csv")
    assert result.exit_code == 0, result.output
    assert "--id-column id" in result.output
    table = read_parts(tmp_path / "data")
    assert list(table["id"]) == ["x", "y", "z"] and list(table["label"]) == [0, 1, 1]

    (tmp_path / "short.csv").write_text("0\n1\n")
    short = invoke("convert", tmp_path / "p.csv", tmp_path / "short.csv", tmp_path / "data2")
    assert short.exit_code == 3 and "different numbers of rows" in short.output
    names = invoke("convert", tmp_path / "p.csv", tmp_path / "y.csv", tmp_path / "data3",
                   "--class-names", "a,b")
    assert names.exit_code == 2 and "class names" in names.output
    wrong_type = invoke("convert", tmp_path / "p.txt", tmp_path / "y.csv", tmp_path / "data4")
    assert wrong_type.exit_code == 2 and wrong_type.output.startswith("error: ")
    no_pred_probs = invoke("convert", tmp_path / "nope.csv", tmp_path / "y.csv", tmp_path / "data5")
    assert no_pred_probs.exit_code == 3, no_pred_probs.output
    assert no_pred_probs.output == f"error: no such pred_probs file in {tmp_path / 'nope.csv'}\n"
    no_labels = invoke("convert", tmp_path / "p.csv", tmp_path / "nope.npy", tmp_path / "data5")
    assert no_labels.exit_code == 3 and f"error: no such labels file in {tmp_path / 'nope.npy'}" in no_labels.output
    assert not (tmp_path / "data5").exists()


def test_report_and_evaluate_say_there_is_no_scan(tmp_path):
    for args in (["report"], ["evaluate", "--true-labels", "verified"]):
        result = invoke(args[0], tmp_path / "nowhere", *args[1:])
        assert result.exit_code == 3, result.output
        assert result.output == f"error: there is no scan at {tmp_path / 'nowhere'} (no such folder)\n"
    (tmp_path / "empty").mkdir()
    empty = invoke("report", tmp_path / "empty")
    assert empty.exit_code == 3 and "there is no scan at" in empty.output, empty.output
    (tmp_path / "empty" / "summary.json").write_text("{}")
    unfinished = invoke("report", tmp_path / "empty")
    assert unfinished.exit_code == 3 and "unfinished (no _SUCCESS)" in unfinished.output


def test_scan_has_an_option_for_every_scan_argument(tmp_path, scheduler, arrays):
    """README: `labelscan scan --help` lists every option of labelscan.scan (client and progress
    are objects; storage_options come from --storage-option/--endpoint-url)."""
    options = {param.name for param in cli.commands["scan"].params}
    arguments = set(inspect.signature(labelscan.scan).parameters) - {"client", "progress"}
    renamed = {"storage_options": "storage_option_pairs"}
    assert {renamed.get(name, name) for name in arguments} <= options, sorted(
        {renamed.get(name, name) for name in arguments} - options)

    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    names = ["ant, small", "bee", "cat", "dog"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "scan"
    result = invoke("scan", data, out, "--scheduler", scheduler, "--json", "--class-names",
                    f"@{tmp_path / 'names.txt'}", "--issues-per-part", "100")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["class_names"] == names
    parts = sorted((out / "issues").glob("part-*.parquet"))
    assert len(parts) > 1 and sum(pq.ParquetFile(part).metadata.num_rows for part in parts) == summary["num_issues"]
    listed = invoke("scan", data, tmp_path / "scan2", "--class-names", "a,b,c,d,e", "--scheduler", scheduler)
    assert listed.exit_code == 2 and "error: class_names has 5 names" in listed.output, listed.output


def test_report_to_a_closed_stdout_exits_quietly(tmp_path, scheduler, arrays):
    """`labelscan report OUT | head`: the reader leaves; no error line, 141 as a Unix tool killed by SIGPIPE."""
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    assert invoke("scan", data, tmp_path / "scan", "--scheduler", scheduler, "-q").exit_code == 0
    read_end, write_end = os.pipe()
    os.close(read_end)      # the reader has left before the first line
    try:
        proc = subprocess.run([sys.executable, "-m", "labelscan.cli", "report", str(tmp_path / "scan"), "--no-html"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
                              timeout=120, check=False)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == ""


def test_run_names_its_overwrite_key_and_logs_invalid_jobs(tmp_path, scheduler, arrays):
    labels, pred_probs = arrays
    data = write_set(tmp_path / "data", labels, pred_probs, files=1)
    out = tmp_path / "scan"
    assert invoke("scan", data, out, "--scheduler", scheduler, "-q").exit_code == 0
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"input": str(data), "output": str(out), "filter_by": "both",
                                   "cluster": {"scheduler": scheduler}}))
    clash = invoke("run", job, "-q")
    assert clash.exit_code == 2, clash.output
    assert "give overwrite: true (--set overwrite=true) to replace its outputs" in clash.output

    (tmp_path / "bad.yaml").write_text("input: x\n")
    invalid = invoke("run", tmp_path / "bad.yaml", "--log-format", "json")
    assert invalid.exit_code == 2, invalid.output
    (record,) = [json.loads(line) for line in invalid.stderr.splitlines() if line.startswith("{")]
    assert record["event"] == "error" and record["exit_code"] == 2 and record["job"] == "bad"
    assert "output: required key is missing" in record["message"]
    assert "error: invalid job file" in invalid.stderr


# ---------------------------------------------------------------------------------------------
# real processes: the entry point, exit codes, no tracebacks


def run_cli(*args, cwd, timeout=180):
    return subprocess.run([sys.executable, "-m", "labelscan.cli", *map(str, args)], check=False, cwd=cwd,
                          env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def test_demo_subprocess(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "--rows", "20000", "--classes", "5", "--workers", "1", "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "scan" / "_SUCCESS").exists()
    assert len(list((out / "data").glob("part-*.parquet"))) == 4
    match = re.search(r"precision (\S+)\s+recall (\S+)\s+F1 (\S+)", proc.stdout)
    assert match, proc.stdout
    precision, recall, f1 = map(float, match.groups())
    assert precision > 0.5 and recall > 0.5 and f1 > 0.5
    assert "top 10 issues" in proc.stdout and "true_label" in proc.stdout
    assert "generate" in proc.stderr and "cutoffs" in proc.stderr  # progress
    assert "Traceback" not in proc.stderr


def test_subprocess_bad_input_exit_3_without_traceback(tmp_path, arrays):
    labels, pred_probs = arrays
    bad = labels.copy()
    bad[10] = -1
    data = write_set(tmp_path / "data", bad, pred_probs, files=2)
    out = tmp_path / "scan"
    proc = run_cli("scan", data, out, cwd=tmp_path)  # default local cluster
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"error: label values outside [0, {NUM_CLASSES}) in {data / 'part-00000.parquet'}" in proc.stderr
    assert "Traceback" not in proc.stderr and "Compute Failed" not in proc.stderr
    assert_nothing_written(out)
    usage = run_cli("scan", data, out, "--filter-by", "nope", cwd=tmp_path)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


# ---------------------------------------------------------------------------------------------
# units


def test_parse_storage_options():
    assert parse_storage_options([]) is None
    assert parse_storage_options(["anon=true", "use_ssl=False", "default_block_size=1048576",
                                  "key=abc", "client_kwargs.region_name=eu-west-1", "n=-3"],
                                 endpoint_url="http://127.0.0.1:5555") == {
        "anon": True, "use_ssl": False, "default_block_size": 1048576, "key": "abc", "n": -3,
        "client_kwargs": {"region_name": "eu-west-1", "endpoint_url": "http://127.0.0.1:5555"}}
    assert parse_scalar("1.5") == "1.5" and parse_scalar("TRUE") is True


def test_expected_error_filter():
    def record(exception_text):
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1,
                                 "Compute Failed\nKey: %s\nState: %s\nTask: %s\nException: %r\nTraceback: %r\n",
                                 ("k", "executing", "task", exception_text, "tb"), None)

    keep = ExpectedErrorFilter()
    assert not keep.filter(record("InputError('label values outside [0, 4)')"))
    assert not keep.filter(record("DestinationError('x')"))
    assert keep.filter(record("TypeError('a bug')"))
    assert keep.filter(logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "other", (), None))


def test_demo_job_file_mirrors_scan_arguments():
    from labelscan.jobs import load_job

    job = yaml.safe_load((REPO / "jobs" / "demo.yaml").read_text())
    assert job["cluster"] == "local" and job["input"] and job["output"]
    parameters = inspect.signature(labelscan.scan).parameters
    unknown = set(load_job(str(REPO / "jobs" / "demo.yaml")).scan_kwargs()) - set(parameters)
    assert not unknown, f"jobs/demo.yaml keys that labelscan.scan does not take: {sorted(unknown)}"
