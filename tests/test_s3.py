"""Object storage in and out (issue 5): scans from s3:// to s3:// on a moto server, and credentials.

The moto server (``conftest.s3_server``) listens on 127.0.0.1 with a random free port; it accepts
any credentials, so these tests use distinctive dummy ones (``KEY``, ``SECRET``) and then look for
them in everything labelscan produces: outputs, ``repr``, log records (``caplog``, at DEBUG, with
the Dask worker threads in this process) and exception messages.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import traceback

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_noisy_set

import labelscan
from labelscan.demo_data import make_noisy_dataset
from labelscan.errors import InputError
from labelscan.io.redact import (RedactingFilter, redact, redact_exception, redact_text, redact_url,
                                 registered_secrets, scrubbed, secret_values)

pytest.importorskip("s3fs")
distributed = pytest.importorskip("distributed")

KEY = "AKIALABELSCANDUMMY01"
SECRET = "labelscan-dummy-secret-0123456789abcdef"
ROWS, CLASSES, FILES, ROW_GROUP_ROWS = 6000, 4, 3, 500
SCAN = {"rows_per_partition": 1000, "issues_per_part": 150}


@pytest.fixture(scope="module")
def client(threaded_client):
    return threaded_client


@pytest.fixture(scope="module")
def local_set(tmp_path_factory):
    """A 6000 x 4 set in three files of 500-row row groups, on local disk."""
    return write_noisy_set(tmp_path_factory.mktemp("data"), ROWS, CLASSES, FILES, ROW_GROUP_ROWS, seed=11)


@pytest.fixture
def s3(s3_url):
    """``(bucket URL, storage options with the distinctive credentials, filesystem)``."""
    import s3fs

    url, options = s3_url
    options = {**options, "key": KEY, "secret": SECRET}
    s3fs.S3FileSystem.clear_instance_cache()
    yield url, options, fsspec.filesystem("s3", **options)
    s3fs.S3FileSystem.clear_instance_cache()


def upload(fs, folder, url):
    for path in sorted(folder.glob("*.parquet")):
        fs.put_file(str(path), f"{url}/{path.name}")


def objects(url, storage_options=None) -> dict:
    """``{relative path: bytes}`` of every object under ``url``."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    root = root.rstrip("/")
    return {path[len(root) + 1:]: fs.cat_file(path) for path in sorted(fs.find(root))}


def assert_no_credentials(text: str, where: str):
    assert KEY not in text, f"access key in {where}"
    assert SECRET not in text, f"secret in {where}"


# ---------------------------------------------------------------------------------------------
# s3 -> s3 gives the local run's results, byte for byte


def test_s3_scan_matches_local_scan(tmp_path, local_set, s3, client, caplog):
    url, options, fs = s3
    upload(fs, local_set, f"{url}/data")
    local = labelscan.scan(str(local_set), str(tmp_path / "out"), client=client, **SCAN)
    caplog.set_level(logging.DEBUG)
    remote = labelscan.scan(f"{url}/data/", f"{url}/scans/one", client=client, storage_options=options, **SCAN)
    opened = labelscan.open_scan(f"{url}/scans/one", storage_options=options)
    remote_issues, remote_mask = opened.issues(None), opened.mask()
    # credentials: nowhere in the log records of labelscan's calls (the test's own reads below
    # log botocore's request headers at DEBUG, so the check comes first) or the results' repr
    assert caplog.records, "no log record captured (DEBUG level, in-process workers)"
    assert_no_credentials(caplog.text, "the logs")
    assert_no_credentials(repr(remote) + str(remote) + repr(opened), "repr")
    caplog.set_level(logging.WARNING)

    local_objects, remote_objects = objects(tmp_path / "out"), objects(f"{url}/scans/one", options)
    parts = sorted(name for name in local_objects if name.endswith(".parquet"))
    assert len([p for p in parts if p.startswith("mask/")]) == 6
    assert len([p for p in parts if p.startswith("issues/")]) >= 2
    assert parts == sorted(name for name in remote_objects if name.endswith(".parquet"))
    for name in parts:
        assert remote_objects[name] == local_objects[name], f"{name} differs"
    assert sorted(remote_objects) == ["_SUCCESS", *parts, "summary.json"]   # _progress/ is gone

    for key in ("statistics", "num_issues", "num_issues_per_class", "num_rows", "num_partitions",
                "config", "config_hash"):
        assert remote.summary[key] == local.summary[key], key
    assert remote.summary["input"]["fingerprint"]["files"][0]["etag"]
    assert remote.summary["input"]["path"] == f"{url}/data/"

    assert opened.summary == remote.summary
    assert remote_issues.equals(local.issues(None))
    assert remote_mask.equals(local.mask())
    manifest = json.loads(remote_objects["_SUCCESS"])
    for entry in manifest["files"]:
        assert hashlib.sha256(remote_objects[entry["path"]]).hexdigest() == entry["sha256"]

    for name, data in remote_objects.items():   # nor in the outputs
        if not name.endswith(".parquet"):
            assert_no_credentials(data.decode(), name)


def test_open_scan_and_report_on_s3(tmp_path, local_set, s3, client):
    from click.testing import CliRunner

    from labelscan.cli import cli

    url, options, fs = s3
    upload(fs, local_set, f"{url}/data")
    labelscan.scan(f"{url}/data", f"{url}/scan", client=client, storage_options=options, **SCAN)
    endpoint = options["client_kwargs"]["endpoint_url"]
    flags = ["--endpoint-url", endpoint, "--storage-option", f"key={KEY}", "--storage-option",
             f"secret={SECRET}"]
    result = CliRunner().invoke(cli, ["report", f"{url}/scan", *flags])
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    assert_no_credentials(result.output, "report output")

    fs.pipe_file(f"{url}/scan/mask/part-00002.parquet", b"tampered")
    with pytest.raises(InputError, match="checksum mismatch for mask/part-00002.parquet"):
        labelscan.open_scan(f"{url}/scan", storage_options=options)
    fs.rm(f"{url}/scan/_SUCCESS")
    result = CliRunner().invoke(cli, ["report", f"{url}/scan", *flags])
    assert result.exit_code == 3 and "unfinished (no _SUCCESS)" in result.output
    assert_no_credentials(result.output, "report error")


# ---------------------------------------------------------------------------------------------
# credentials in error messages


def test_bad_path_error_names_the_path_not_the_credentials(s3, client, caplog):
    url, options, _ = s3
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InputError, match="no such file or directory") as caught:
        labelscan.scan(f"{url}/missing/part-0.parquet", f"{url}/out", client=client,
                       storage_options=options)
    assert f"{url}/missing/part-0.parquet" in str(caught.value)
    assert_no_credentials("".join(traceback.format_exception(caught.value)), "the traceback")
    assert_no_credentials(caplog.text, "the logs")


def test_credentials_in_a_url_are_masked_in_errors(s3, client, caplog):
    """s3fs takes ``KEY:SECRET@bucket`` for a bucket name: botocore's error quotes it, masked."""
    url, options, _ = s3
    bucket = url[len("s3://"):]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception, match=r'Invalid bucket name "\*\*\*@') as caught:  # noqa: PT011
        labelscan.scan(f"s3://{KEY}:{SECRET}@{bucket}/data/", f"{url}/out", client=client,
                       storage_options=options)
    text = "".join(traceback.format_exception(caught.value))
    assert_no_credentials(text, "the traceback")
    assert_no_credentials(repr(caught.value), "the exception repr")
    assert_no_credentials(caplog.text, "the logs")


def test_worker_error_quoting_a_secret_is_redacted(tmp_path, local_set, s3, client, caplog, monkeypatch):
    """A task failing with a message that quotes a credential: masked on the client and in the logs."""
    url, options, fs = s3
    upload(fs, local_set, f"{url}/data")
    scan_module = importlib.import_module("labelscan.scan")   # labelscan.scan is the function

    def leaky_mask_table(result):
        raise RuntimeError(f"cannot write with secret={SECRET} and key {KEY}")

    monkeypatch.setattr(scan_module, "mask_table", leaky_mask_table)
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError, match=r"secret=\*\*\*") as caught:
        labelscan.scan(f"{url}/data", f"{url}/out", client=client, storage_options=options, retries=0,
                       **SCAN)
    assert_no_credentials("".join(traceback.format_exception(caught.value)), "the traceback")
    assert "Compute Failed" in caplog.text
    assert_no_credentials(caplog.text, "the logs")
    assert not fs.exists(f"{url}/out/_SUCCESS")


# ---------------------------------------------------------------------------------------------
# the redaction helpers


def test_redact_helpers():
    options = {"key": KEY, "secret": SECRET, "anon": False, "token": None,
               "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"},
               "credentials": {"client_email": "svc@example.com", "private_key": "-----BEGIN x"},
               "account_key": "azurekey==", "connection_string": "AccountKey=abcdefgh;Name=x"}
    clean = redact(options)
    assert clean == {"key": "***", "secret": "***", "anon": False, "token": None,
                     "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"},
                     "credentials": "***", "account_key": "***", "connection_string": "***"}
    assert options["key"] == KEY   # a copy
    assert redact_url("sftp://alice:hunter22@host/data") == "sftp://***@host/data"
    assert (redact_url("https://acct.blob.core.windows.net/c/x.parquet?sv=2020&sig=abc%2Bdef&se=1")
            == "https://acct.blob.core.windows.net/c/x.parquet?sv=2020&sig=***&se=1")
    assert (redact_url("https://b.s3.amazonaws.com/k?X-Amz-Credential=AK%2F1&X-Amz-Signature=ff&x=1")
            == "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&x=1")
    assert redact({"path": "s3://b/data", "label_column": "label"}) == {"path": "s3://b/data",
                                                                          "label_column": "label"}

    secrets = secret_values(options, ["ftp://bob:pa55word@h/x"],
                            environ={"AWS_SECRET_ACCESS_KEY": "envsecret123", "HOME": "/home/me"})
    assert {KEY, SECRET, "svc@example.com", "azurekey==", "pa55word", "envsecret123"} <= secrets
    assert "/home/me" not in secrets and "http://minio:9000" not in secrets
    text = f"failed: {SECRET} / {KEY} at ftp://bob:pa55word@h/x (envsecret123)"
    assert redact_text(text, secrets) == "failed: *** / *** at ftp://***@h/x (***)"

    outer = ValueError(f"outer {KEY}")
    outer.__cause__ = OSError(2, f"no access with {SECRET}", f"s3://b/{KEY}")
    assert redact_exception(outer, secrets) is outer
    assert str(outer) == "outer ***" and str(outer.__cause__) == "[Errno 2] no access with ***: 's3://b/***'"
    assert_no_credentials("".join(traceback.format_exception(outer)), "chained traceback")

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "options %s", ({"secret": SECRET},), None)
    RedactingFilter(secrets).filter(record)
    assert record.getMessage() == "options {'secret': '***'}"


def test_scrubbed_masks_logs_and_exceptions(caplog):
    caplog.set_level(logging.INFO)
    with pytest.raises(KeyError) as caught, scrubbed({"secret": SECRET}):
        logging.getLogger("labelscan.test").info("using %s", SECRET)
        raise KeyError(SECRET)
    assert_no_credentials(str(caught.value) + caplog.text, "scrubbed block")
    assert "using ***" in caplog.text
    logging.getLogger("labelscan.test").info("after %s, still %s", "plain", SECRET)   # for good
    assert "after plain, still ***" in caplog.text
    assert SECRET in registered_secrets()


# ---------------------------------------------------------------------------------------------
# planning reads parquet footers only


def test_planning_on_s3_reads_footers_only(s3, monkeypatch):
    import s3fs

    from labelscan.io import plan_dataset

    url, options, fs = s3
    rows = 200_000
    data = make_noisy_dataset(rows, 10, seed=3)
    table = pa.table({"label": data["labels"], "pred_probs": pa.FixedSizeListArray.from_arrays(
        pa.array(data["pred_probs"].ravel()), 10)})
    with fs.open(f"{url}/big/part-0.parquet", "wb") as handle:
        pq.write_table(table, handle, row_group_size=25_000, compression="none")
    size = fs.info(f"{url}/big/part-0.parquet")["size"]
    fetched = []
    fetch_range = s3fs.core.S3File._fetch_range

    def recording_fetch_range(self, start, end):
        fetched.append(end - start)
        return fetch_range(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", recording_fetch_range)
    plan = plan_dataset(f"{url}/big/", storage_options=options, rows_per_partition=50_000)
    assert [[piece.row_groups for piece in spec.pieces] for spec in plan.partitions] == [
        [(0, 1)], [(2, 3)], [(4, 5)], [(6, 7)]]
    assert fetched and sum(fetched) < 0.02 * size, (sum(fetched), size)
