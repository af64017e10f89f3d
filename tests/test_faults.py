"""Failures while a scan writes its outputs (issue 5): nothing half-written is ever trusted.

- (a) an exception while a part is serialised leaves no object at its key and no ``_SUCCESS``;
- (b) the whole client process killed (SIGKILL) in the middle of the write pass: no
  ``_SUCCESS``, every object present is complete; a plain rerun and a ``resume=True`` rerun
  give byte-identical outputs to a clean run, and the resumed run does not rewrite the parts
  the killed run recorded;
- (c) a worker process killed during the write pass of a real ``LocalCluster(processes=True)``:
  the scan completes (the tasks are re-run) with byte-identical outputs.

Cases (a) and (b) run on local disk and on the moto S3 server. "Byte-identical" covers every
object but ``summary.json`` (its ``timings``; the rest of it is compared) and ``_SUCCESS`` (which
lists ``summary.json``'s checksum; its other entries are compared).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_noisy_set

import labelscan
from labelscan.errors import DestinationError, InputError

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
ROWS, CLASSES, FILES, ROW_GROUP_ROWS = 24_000, 4, 4, 500
SCAN = {"rows_per_partition": 500, "issues_per_part": 400}   # 48 mask parts, several issues parts
NUM_MASK_PARTS = ROWS // SCAN["rows_per_partition"]
KEY, SECRET = "AKIAFAULTSDUMMYKEY01", "faults-dummy-secret-0123456789"
scan_module = importlib.import_module("labelscan.scan")   # labelscan.scan is the function
commit_module = importlib.import_module("labelscan.io.commit")


# ---------------------------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def client(threaded_client):
    return threaded_client


@pytest.fixture(scope="module")
def local_set(tmp_path_factory):
    return write_noisy_set(tmp_path_factory.mktemp("data"), ROWS, CLASSES, FILES, ROW_GROUP_ROWS, seed=5)


@pytest.fixture(scope="module")
def reference(local_set, client, tmp_path_factory):
    """A clean run: ``{relpath: sha256}`` of its parts, its summary and its manifest."""
    out = tmp_path_factory.mktemp("reference") / "out"
    labelscan.scan(str(local_set), str(out), client=client, **SCAN)
    return outputs(str(out))


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path, local_set):
    """``(input URL, output URL, storage options, filesystem)`` on local disk or on moto S3."""
    if request.param == "local":
        yield str(local_set), str(tmp_path / "out"), None, fsspec.filesystem("file")
        return
    import s3fs

    url, options = request.getfixturevalue("s3_url")
    options = {**options, "key": KEY, "secret": SECRET}
    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", **options)
    for path in sorted(local_set.glob("*.parquet")):
        fs.put_file(str(path), f"{url}/data/{path.name}")
    yield f"{url}/data", f"{url}/out", options, fs
    s3fs.S3FileSystem.clear_instance_cache()


def listing(fs, url) -> dict:
    """``{relpath: path}`` of every object under ``url`` (fresh listing, no cache)."""
    fs.invalidate_cache()
    root = fsspec.core.url_to_fs(url)[1].rstrip("/") if "://" in url else url.rstrip("/")
    if not fs.exists(root):
        return {}
    return {path[len(root) + 1:]: path for path in fs.find(root)}


def outputs(url, storage_options=None) -> dict:
    """What must match between two runs: part digests, summary without timings, manifest entries."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.invalidate_cache()
    root = root.rstrip("/")
    found = {path[len(root) + 1:]: fs.cat_file(path) for path in fs.find(root)}
    summary = json.loads(found.pop("summary.json"))
    summary.pop("timings")
    summary["input"].pop("path")
    summary["input"]["fingerprint"] = summary["input"]["fingerprint"]["num_rows"]   # local vs s3
    manifest = json.loads(found.pop("_SUCCESS"))
    return {"parts": {name: hashlib.sha256(data).hexdigest() for name, data in found.items()},
            "summary": summary,
            "manifest": [entry for entry in manifest["files"] if entry["path"] != "summary.json"]}


def assert_same_outputs(url, storage_options, reference):
    got = outputs(url, storage_options)
    assert sorted(got["parts"]) == sorted(reference["parts"])   # no _progress/, no staging file
    assert got["parts"] == reference["parts"]
    assert got["summary"] == reference["summary"]
    assert got["manifest"] == reference["manifest"]
    labelscan.open_scan(url, storage_options=storage_options)   # verifies every checksum


def record_writes(monkeypatch) -> list:
    """Record the relative path of every object the commit stores from now on."""
    written = []
    put_bytes = commit_module.put_bytes

    def recording_put(fs, path, data):
        written.append(path)
        return put_bytes(fs, path, data)

    monkeypatch.setattr(commit_module, "put_bytes", recording_put)
    return written


def relpaths(paths, out_path) -> set:
    marker = out_path.split("://", 1)[-1].rstrip("/") + "/"
    return {path.split(marker, 1)[1] for path in paths}


# ---------------------------------------------------------------------------------------------
# (a) an exception during a part's write


def test_exception_while_writing_a_part_leaves_no_object(place, client, monkeypatch):
    data, out, options, fs = place
    failing_row = 7 * SCAN["rows_per_partition"]   # the first row of partition 7
    original = scan_module.mask_table

    def mask_table(result):
        table = original(result)
        if int(result.row_ids.take([0])[0]) != failing_row:
            return table
        # a table that fails inside the parquet writer, after serialisation started
        return pa.table({"u": pa.UnionArray.from_sparse(pa.array([0, 1], pa.int8()),
                                                         [pa.array([1, 2]), pa.array(["a", "b"])])})

    monkeypatch.setattr(scan_module, "mask_table", mask_table)
    with pytest.raises(pa.ArrowNotImplementedError):
        labelscan.scan(data, out, client=client, storage_options=options, retries=0, **SCAN)
    objects = listing(fs, out)
    assert "mask/part-00007.parquet" not in objects
    assert "_progress/mask/part-00007.parquet.json" not in objects
    assert "_SUCCESS" not in objects and "summary.json" not in objects
    assert not [name for name in objects if ".tmp-" in name]
    with pytest.raises(InputError, match="unfinished"):
        labelscan.open_scan(out, storage_options=options)

    # a resumed run after the failure completes the scan
    monkeypatch.setattr(scan_module, "mask_table", original)
    labelscan.scan(data, out, client=client, storage_options=options, resume=True, **SCAN)
    assert "mask/part-00007.parquet" in listing(fs, out)


# ---------------------------------------------------------------------------------------------
# (b) the client process killed in the middle of writing

CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import distributed, labelscan
from labelscan.io import commit

write_table = commit.OutputCommit.write_table

def slow_write_table(self, relpath, table, **options):   # widen the write pass so the kill lands inside it
    time.sleep(args["delay"])
    return write_table(self, relpath, table, **options)

commit.OutputCommit.write_table = slow_write_table
with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
    labelscan.scan(args["input"], args["out"], client=client, storage_options=args["options"], **args["scan"])
print("finished")
"""


def kill_while_writing(data, out, options, fs, min_parts=6, timeout=60.0):
    """Run a scan in a child process and SIGKILL it once ``min_parts`` mask parts exist."""
    arguments = json.dumps({"input": data, "out": out, "options": options, "scan": SCAN, "delay": 0.1})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, arguments], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            objects = listing(fs, out)
            if len([name for name in objects if name.startswith("mask/")
                    and name.endswith(".parquet")]) >= min_parts:
                break
            if child.poll() is not None:
                pytest.fail(f"the scan ended before it was killed:\n{child.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no mask part appeared in time")
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)   # the child and anything it started
        child.communicate()
    assert child.returncode == -signal.SIGKILL


def test_killed_client_then_rerun_and_resume(place, client, reference, monkeypatch, tmp_path):
    data, out, options, fs = place
    kill_while_writing(data, out, options, fs)

    objects = listing(fs, out)
    assert "_SUCCESS" not in objects
    with pytest.raises(InputError, match="unfinished"):
        labelscan.open_scan(out, storage_options=options)
    mask_parts = [name for name in objects if name.startswith("mask/") and name.endswith(".parquet")]
    assert 0 < len(mask_parts) < NUM_MASK_PARTS
    for name, path in objects.items():
        data_bytes = fs.cat_file(path)
        if ".tmp-" in name:   # a local staging file (of a part or a progress entry, cut short by
            assert options is None, name   # the kill), never at a key a reader looks for
        elif name.endswith(".parquet"):   # whole: exactly the clean run's object, readable
            assert hashlib.sha256(data_bytes).hexdigest() == reference["parts"][name], name
            pq.read_table(pa.BufferReader(data_bytes))
        else:
            assert name.startswith("_progress/"), name
            assert json.loads(data_bytes)["path"] == name[len("_progress/"):-len(".json")]
    recorded = {name[len("_progress/"):-len(".json")] for name in objects if name.startswith("_progress/")}
    assert recorded, "the killed run recorded no progress entry"

    # keep a copy of the interrupted state for the resumed run
    copy = f"{out}-copy" if options else str(tmp_path / "out-copy")
    if options:
        fs.copy(out.split("://", 1)[1], copy.split("://", 1)[1], recursive=True)
    else:
        shutil.copytree(out, copy)

    labelscan.scan(data, out, client=client, storage_options=options, **SCAN)   # plain rerun
    assert_same_outputs(out, options, reference)

    written = record_writes(monkeypatch)
    labelscan.scan(data, copy, client=client, storage_options=options, resume=True, **SCAN)
    rewritten = relpaths(written, copy)
    assert not (rewritten & recorded), "resume rewrote parts the killed run had finished"
    assert set(reference["parts"]) - recorded <= rewritten
    assert_same_outputs(copy, options, reference)


# ---------------------------------------------------------------------------------------------
# resume semantics, without killing anything


def test_resume_of_a_finished_scan_rewrites_no_part(tmp_path, local_set, client, reference, monkeypatch):
    out = str(tmp_path / "out")
    labelscan.scan(str(local_set), out, client=client, **SCAN)
    written = record_writes(monkeypatch)
    labelscan.scan(str(local_set), out, client=client, resume=True, **SCAN)
    assert relpaths(written, out) == {"summary.json", "_SUCCESS"} | {
        f"_progress/{name}.json" for name in reference["parts"]}   # the manifest seeds progress
    assert_same_outputs(out, None, reference)


def test_resume_reuses_nothing_of_a_different_layout_or_scan(tmp_path, local_set, client, reference,
                                                            monkeypatch):
    out = str(tmp_path / "out")
    original = scan_module.mask_table
    calls = []

    def failing_late(result):   # interrupt a run with another partitioning after a few parts
        calls.append(1)
        if len(calls) > 8:
            raise RuntimeError("interrupted")
        return original(result)

    monkeypatch.setattr(scan_module, "mask_table", failing_late)
    with pytest.raises(RuntimeError, match="interrupted"):
        labelscan.scan(str(local_set), out, client=client, retries=0,
                       **{**SCAN, "rows_per_partition": 1000})
    assert listing(fsspec.filesystem("file"), out)
    monkeypatch.setattr(scan_module, "mask_table", original)
    written = record_writes(monkeypatch)
    labelscan.scan(str(local_set), out, client=client, resume=True, **SCAN)
    assert set(reference["parts"]) <= relpaths(written, out)   # every part written again
    assert_same_outputs(out, None, reference)

    # another scan's finished outputs: refused, with or without resume, unless overwrite
    with pytest.raises(DestinationError, match="another scan"):
        labelscan.scan(str(local_set), out, client=client, resume=True, rank_by="normalized_margin", **SCAN)


def test_cli_resume_flag(tmp_path, local_set, client, monkeypatch):
    from click.testing import CliRunner

    from labelscan.cli import cli

    out = str(tmp_path / "out")
    command = ["scan", str(local_set), out, "--scheduler", client.scheduler.address, "-q",
               "--rows-per-partition", "2000"]
    first = CliRunner().invoke(cli, command)
    assert first.exit_code == 0, first.output
    before = outputs(out)
    written = record_writes(monkeypatch)
    again = CliRunner().invoke(cli, [*command, "--resume"])
    assert again.exit_code == 0, again.output
    assert not {name for name in relpaths(written, out) if name.endswith(".parquet")}
    assert outputs(out) == before


# ---------------------------------------------------------------------------------------------
# (c) a worker process killed during the write pass


def test_killed_worker_during_write_pass(tmp_path, local_set, reference, s3_url):
    import s3fs

    url, options = s3_url
    options = {**options, "key": KEY, "secret": SECRET}
    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", **options)
    for path in sorted(local_set.glob("*.parquet")):
        fs.put_file(str(path), f"{url}/data/{path.name}")
    out = f"{url}/out"

    def slow_writes():   # runs in each worker process (a restarted worker writes at full speed)
        import time as time_module

        from labelscan.io import commit

        write_table = commit.OutputCommit.write_table

        def slow_write_table(self, relpath, table, **options):
            time_module.sleep(0.1)
            return write_table(self, relpath, table, **options)

        commit.OutputCommit.write_table = slow_write_table

    killed = {}

    def killer(pids):
        watcher = fsspec.filesystem("s3", **options, skip_instance_cache=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            watcher.invalidate_cache()
            parts = watcher.find(f"{out}/mask") if watcher.exists(f"{out}/mask") else []
            if len(parts) >= 4:
                killed["parts"] = len(parts)
                killed["success"] = watcher.exists(f"{out}/_SUCCESS")
                os.kill(pids[0], signal.SIGKILL)
                return
            time.sleep(0.02)

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit="1GiB") as cluster, distributed.Client(cluster) as client:
        client.run(slow_writes)
        pids = sorted(client.run(os.getpid).values())
        thread = threading.Thread(target=killer, args=(pids,), daemon=True)
        thread.start()
        labelscan.scan(f"{url}/data", out, client=client, storage_options=options, retries=2, **SCAN)
        thread.join(timeout=5)
        assert killed and not killed["success"] and killed["parts"] < NUM_MASK_PARTS
        assert pids[0] not in client.run(os.getpid).values()   # the worker really died
        # worker processes mask the storage credentials in their own log records
        assert all(client.run(lambda: SECRET in importlib.import_module(
            "labelscan.io.redact").registered_secrets()).values())
    assert_same_outputs(out, options, reference)
    s3fs.S3FileSystem.clear_instance_cache()
