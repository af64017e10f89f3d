"""Input and output locations are checked before any work (labelscan.io.locations and
OutputCommit.check): blank paths, an output inside the input, a destination that is a file
or holds another scan; local inputs are recorded as absolute paths."""

from __future__ import annotations

import json

import pytest
from conftest import write_noisy_set

import labelscan
from labelscan.errors import DestinationError, UsageError
from labelscan.io.locations import checked_locations


@pytest.mark.parametrize("input_path, out_path", [("", "out"), ("in", ""), ("in", "   "), ([], "out")])
def test_blank_locations_are_refused(input_path, out_path):
    with pytest.raises(UsageError, match="blank|no input"):
        checked_locations(input_path, out_path)


@pytest.mark.parametrize("input_path, out_path", [
    ("preds", "preds/scan"), ("preds/", "preds"), ("preds/**/*.parquet", "preds/a/scan"),
    ("preds/*.parquet", "preds"), ("s3://bucket/preds", "s3://bucket/preds/scan"),
    (["other", "preds"], "preds/scan"), ("file:///data/preds", "/data/preds/scan")])
def test_an_output_inside_the_input_is_refused(input_path, out_path):
    with pytest.raises(UsageError, match="inside the input"):
        checked_locations(input_path, out_path)


@pytest.mark.parametrize("input_path, out_path", [
    ("preds", "preds-scan"), ("preds/*.parquet", "preds/scan"), ("preds/x.parquet", "preds/scan"),
    ("s3://bucket/preds", "s3://bucket/scan"), ("s3://bucket/preds", "preds/scan")])
def test_outputs_beside_the_input_are_fine(input_path, out_path):
    checked_locations(input_path, out_path)


def test_local_inputs_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checked_locations("preds", "out") == str(tmp_path / "preds")
    assert checked_locations(["a", "s3://b/c"], "out") == [str(tmp_path / "a"), "s3://b/c"]


@pytest.fixture
def noisy_set(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    return str(write_noisy_set(str(folder), rows=3_000, classes=4, files=1, row_group_rows=1_000, seed=5))


def test_scan_records_the_absolute_input_and_refuses_writing_inside_it(noisy_set, tmp_path, monkeypatch,
                                                                        threaded_client):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="inside the input"):
        labelscan.scan("in", "in/scan", client=threaded_client)
    assert sorted(path.name for path in (tmp_path / "in").iterdir()) == ["part-0.parquet"]
    labelscan.scan("in", "scan", client=threaded_client)
    summary = json.loads((tmp_path / "scan" / "summary.json").read_text())
    assert summary["input"]["path"] == noisy_set


def test_a_refused_destination_fails_before_any_pass(noisy_set, tmp_path, threaded_client):
    """An existing other scan (no overwrite) and a file as destination: refused before reading."""
    seen = []
    labelscan.scan(noisy_set, str(tmp_path / "scan"), client=threaded_client, filter_by="both")
    with pytest.raises(DestinationError, match="another scan"):
        labelscan.scan(noisy_set, str(tmp_path / "scan"), client=threaded_client, progress=lambda stage, seconds: seen.append(stage))
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(DestinationError, match="is a file"):
        labelscan.scan(noisy_set, str(tmp_path / "afile"), client=threaded_client, progress=lambda stage, seconds: seen.append(stage))
    assert (tmp_path / "afile").read_text() == "mine"
    assert seen == []   # no stage ran


def test_repeated_pred_probs_columns_and_bad_scheduler_addresses_are_usage_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "wide"
    folder.mkdir()
    pq.write_table(pa.table({"label": [0, 1], "p0": [0.9, 0.2], "p1": [0.1, 0.8]}), folder / "part-0.parquet")
    with pytest.raises(UsageError, match="given more than once"):
        labelscan.scan(str(folder), str(tmp_path / "out"), pred_probs_column=["p0", "p0"])
    for address in ("tcp://localhost:notaport", "tcp://localhost"):
        with pytest.raises(UsageError, match="cannot connect to the Dask scheduler"):
            labelscan.scan(str(folder), str(tmp_path / "out"), scheduler=address)
    assert not (tmp_path / "out").exists()


def test_reading_a_missing_scan_says_there_is_none(tmp_path):
    from labelscan.errors import InputError

    with pytest.raises(InputError, match="there is no scan at"):
        labelscan.open_scan(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="there is no scan at .*no _SUCCESS and no other output"):
        labelscan.open_scan(tmp_path / "empty")
    (tmp_path / "empty" / "mask").mkdir()
    with pytest.raises(InputError, match="unfinished"):
        labelscan.open_scan(str(tmp_path / "empty"))
