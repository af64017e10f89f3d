"""The output commit protocol (labelscan.io.commit, labelscan.io.atomic)."""

import hashlib
import json
import pickle

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelscan.errors import DestinationError, InputError, UsageError
from labelscan.io import OutputCommit, plan_dataset, read_manifest, read_partition
from labelscan.io import commit as commit_module

FINGERPRINT = {"files": [], "num_rows": 3, "num_classes": 2, "sha256": "f" * 64}


def make_commit(url, config_hash="c1", fingerprint=FINGERPRINT, **kwargs):
    return OutputCommit(url, config_hash=config_hash, input_fingerprint=fingerprint, **kwargs)


def mask_table(offset=0):
    return pa.table({"row_id": np.arange(offset, offset + 3),
                     "is_label_issue": [True, False, True],
                     "label_quality": np.array([0.1, 0.9, 0.2], np.float32)})


def run_scan(url, **kwargs):
    """Write a small scan's outputs and commit them; returns the manifest entries."""
    commit = make_commit(url, **kwargs)
    commit.begin()
    entries = [commit.write_table(f"mask/part-{i:05d}.parquet", mask_table(3 * i))
               for i in (1, 0)]
    entries.append(commit.write_table("issues/part-00000.parquet", mask_table()))
    entries.append(commit.write_json("summary.json", {
        "config_hash": commit.config_hash, "input": {"fingerprint": commit.input_fingerprint},
        "num_issues": np.int64(4)}))
    commit.commit(entries, {"num_issues": 4})
    return entries


@pytest.fixture(params=["local", "memory"])
def out_url(request, tmp_path, memory_url):
    return str(tmp_path / "out") if request.param == "local" else f"{memory_url}/out"


def put(url, relpath, data):
    with fsspec.open(f"{url}/{relpath}", "wb", auto_mkdir=True) as handle:
        handle.write(data)


def listing(url):
    """The destination's files, without the old outputs a local ``begin`` moved aside (a thread
    is deleting them: ``test_local_rerun_moves_old_outputs_aside_and_deletes_them``)."""
    fs, root = fsspec.core.url_to_fs(url)
    names = (path[len(root.rstrip("/")) + 1:] for path in fs.find(root))
    return sorted(name for name in names if not name.startswith(commit_module.TRASH_PREFIX))


def test_rewrite_gives_identical_bytes(out_url):
    first = make_commit(out_url).write_table("mask/part-00000.parquet", mask_table())
    fs, root = fsspec.core.url_to_fs(out_url)
    data = fs.cat_file(f"{root}/mask/part-00000.parquet")
    second = make_commit(out_url).write_table("mask/part-00000.parquet", mask_table())
    assert first == second
    assert first == {"path": "mask/part-00000.parquet", "bytes": len(data),
                     "sha256": hashlib.sha256(data).hexdigest()}
    assert pq.read_table(fs.open(f"{root}/mask/part-00000.parquet")).equals(mask_table())
    assert listing(out_url) == ["mask/part-00000.parquet"]   # no staging files left behind


def test_json_is_deterministic_and_sorted(out_url):
    commit = make_commit(out_url)
    entry = commit.write_json("summary.json", {"b": np.float32(0.5), "a": np.arange(3)})
    fs, root = fsspec.core.url_to_fs(out_url)
    text = fs.cat_file(f"{root}/summary.json").decode()
    assert text == '{\n  "a": [\n    0,\n    1,\n    2\n  ],\n  "b": 0.5\n}\n'
    assert commit.write_json("summary.json", {"a": [0, 1, 2], "b": 0.5}) == entry


def test_success_is_written_last_and_lists_every_file(out_url, monkeypatch):
    written = []
    put_bytes = commit_module.put_bytes

    def recording_put(fs, path, data):
        written.append(path.rsplit("/out/", 1)[1])
        return put_bytes(fs, path, data)

    monkeypatch.setattr(commit_module, "put_bytes", recording_put)
    entries = run_scan(out_url)
    assert written[-1] == "_SUCCESS" and written.count("_SUCCESS") == 1
    manifest = read_manifest(out_url)
    assert manifest["files"] == sorted(entries, key=lambda entry: entry["path"])
    assert [entry["path"] for entry in manifest["files"]] == [
        "issues/part-00000.parquet", "mask/part-00000.parquet", "mask/part-00001.parquet",
        "summary.json"]
    assert manifest["config_hash"] == "c1" and manifest["input_fingerprint"] == FINGERPRINT
    assert manifest["num_issues"] == 4
    with pytest.raises(UsageError, match="reserved"):
        make_commit(out_url).commit(entries, {"config_hash": "other"})


def test_read_manifest_detects_damage(out_url):
    run_scan(out_url)
    fs, root = fsspec.core.url_to_fs(out_url)
    fs.pipe_file(f"{root}/summary.json", b"{}\n")
    with pytest.raises(InputError, match="checksum mismatch for summary.json"):
        read_manifest(out_url)
    assert read_manifest(out_url, verify=False)["num_issues"] == 4
    fs.rm(f"{root}/mask/part-00001.parquet")
    with pytest.raises(InputError, match="mask/part-00001.parquet, which is missing"):
        read_manifest(out_url)


def test_read_manifest_refuses_unfinished_scan(out_url):
    make_commit(out_url).write_table("mask/part-00000.parquet", mask_table())
    with pytest.raises(InputError, match=r"is unfinished \(no _SUCCESS\)"):
        read_manifest(out_url)


def test_failed_serialisation_leaves_nothing(out_url):
    commit = make_commit(out_url)
    commit.write_table("issues/part-00000.parquet", mask_table())
    fs, root = fsspec.core.url_to_fs(out_url)
    before = fs.cat_file(f"{root}/issues/part-00000.parquet")
    unwritable = pa.table({"u": pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])])})
    for relpath in ["issues/part-00000.parquet", "issues/part-00001.parquet"]:
        with pytest.raises(pa.ArrowNotImplementedError):
            commit.write_table(relpath, unwritable)
    assert fs.cat_file(f"{root}/issues/part-00000.parquet") == before
    assert listing(out_url) == ["issues/part-00000.parquet"]


def test_failed_local_rename_leaves_no_staging_file(tmp_path, monkeypatch):
    fs = fsspec.filesystem("file")

    def failing_move(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(type(fs), "mv", failing_move)
    with pytest.raises(OSError, match="disk gone"):
        make_commit(str(tmp_path)).write_json("summary.json", {})
    assert list(tmp_path.iterdir()) == []


def test_begin_removes_stale_success_of_the_same_scan(out_url):
    run_scan(out_url)
    put(out_url, "notes.txt", b"mine")
    make_commit(out_url).begin()
    assert listing(out_url) == ["notes.txt"]
    fs, root = fsspec.core.url_to_fs(out_url)
    top = sorted(path for path in fs.ls(root, detail=False)
                 if not path.rsplit("/", 1)[-1].startswith(commit_module.TRASH_PREFIX))   # being deleted
    assert top == [f"{root}/notes.txt"]   # emptied folders removed
    with pytest.raises(InputError, match="there is no scan"):
        read_manifest(out_url)
    run_scan(out_url)
    read_manifest(out_url)


@pytest.mark.parametrize("other", [{"config_hash": "c2"},
                                   {"fingerprint": {**FINGERPRINT, "sha256": "e" * 64}}])
def test_begin_refuses_another_scans_destination(out_url, other):
    run_scan(out_url)
    fs, root = fsspec.core.url_to_fs(out_url)
    fs.pipe_file(f"{root}/notes.txt", b"mine")
    with pytest.raises(DestinationError, match="holds the outputs of another scan .*; choose another destination or pass overwrite=True"):
        make_commit(out_url, **other).begin()
    read_manifest(out_url)   # untouched
    make_commit(out_url, overwrite=True, **other).begin()
    assert listing(out_url) == ["notes.txt"]


def test_begin_recognises_an_uncommitted_summary(out_url):
    summary = {"config_hash": "c1", "input": {"fingerprint": FINGERPRINT}}
    put(out_url, "summary.json", json.dumps(summary).encode())
    with pytest.raises(DestinationError):
        make_commit(out_url, config_hash="c2").begin()
    make_commit(out_url).begin()
    assert listing(out_url) == []


def test_begin_clears_unfinished_leftovers(out_url):
    put(out_url, "issues/part-00009.parquet", b"partial")
    put(out_url, "report.html", b"old")
    make_commit(out_url).begin()
    assert listing(out_url) == []


def test_begin_leaves_other_files_inside_output_folders(out_url):
    run_scan(out_url)
    put(out_url, "issues/keep.txt", b"mine")
    put(out_url, "statistics/notes.parquet.bak", b"mine")
    put(out_url, "statistics/keep.parquet", b"mine")
    put(out_url, "mask/part-00004.parquet.tmp-" + "a" * 32, b"staging")
    make_commit(out_url, config_hash="c2", overwrite=True).begin()
    assert listing(out_url) == ["issues/keep.txt", "statistics/keep.parquet", "statistics/notes.parquet.bak"]


def test_commit_removes_staging_copies_of_killed_writes(tmp_path):
    """A worker killed while writing a part leaves its staging copy; the part is rewritten by
    the task's retry, and the commit removes the copy before ``_SUCCESS`` (not other files)."""
    out_url = str(tmp_path / "out")
    commit = make_commit(out_url)
    commit.begin()
    entries = [commit.write_table("issues/part-00000.parquet", mask_table())]
    put(out_url, "issues/part-00000.parquet.tmp-" + "b" * 32, b"half a part")
    put(out_url, "mask/part-00003.parquet.tmp-" + "c" * 32, b"half a part")   # folder not in entries
    put(out_url, "issues/notes.tmp-" + "d" * 32, b"mine")
    commit.commit(entries, {})
    assert listing(out_url) == ["_SUCCESS", "issues/notes.tmp-" + "d" * 32, "issues/part-00000.parquet",
                                "mask/part-00003.parquet.tmp-" + "c" * 32]


def test_own_statistics_names_are_the_matrices_a_wide_scan_writes():
    from labelscan.plan import NoiseStatistics

    matrices = [name for name, field in NoiseStatistics.__dataclass_fields__.items()
                if "np.ndarray" in str(field.type) and name not in ("label_counts", "confident_thresholds", "py")]
    assert all(commit_module.OWN_FILE_NAMES["statistics"].fullmatch(f"{name}.parquet") for name in matrices)
    assert not commit_module.OWN_FILE_NAMES["statistics"].fullmatch("keep.parquet")


def test_writing_to_a_local_directory_path_is_refused(tmp_path):
    (tmp_path / "summary.json").mkdir()
    with pytest.raises(DestinationError, match="is a directory"):
        make_commit(str(tmp_path)).write_json("summary.json", {})
    assert [path.name for path in tmp_path.iterdir()] == ["summary.json"]
    assert list((tmp_path / "summary.json").iterdir()) == []


def test_begin_on_absent_destination(tmp_path):
    make_commit(str(tmp_path / "new" / "out")).begin()
    run_scan(str(tmp_path / "new" / "out"))
    read_manifest(str(tmp_path / "new" / "out"))


def test_commit_and_errors_cross_dask_workers(tmp_path, write_parquet):
    distributed = pytest.importorskip("distributed")
    out = str(tmp_path / "out")
    commit = make_commit(out)
    clone = pickle.loads(pickle.dumps(commit))
    assert clone._fs_root is None and clone.urlpath == out

    data = str(tmp_path / "data" / "part-0.parquet")
    write_parquet(data, pa.table({"label": [0, 1, 5], "pred_probs": pa.FixedSizeListArray
                                  .from_arrays(pa.array([0.5] * 6), 2)}))
    plan = plan_dataset(data)
    with distributed.Client(n_workers=1, threads_per_worker=1, processes=True,
                            dashboard_address=None) as client:
        entry = client.submit(commit.write_table, "mask/part-00000.parquet", mask_table()).result()
        with pytest.raises(InputError) as caught:
            client.submit(read_partition, plan, plan.partitions[0]).result()
    assert entry == make_commit(out).write_table("mask/part-00000.parquet", mask_table())
    assert (caught.value.row_group, caught.value.row, caught.value.num_rows_affected) == (0, 2, 1)
    assert "label values outside [0, 2)" in str(caught.value)


def test_scan_round_trip_on_s3(s3_url, write_parquet):
    url, options = s3_url
    fs = fsspec.filesystem("s3", **options)
    table = pa.table({"label": [0, 1, 1], "pred_probs": pa.FixedSizeListArray.from_arrays(
        pa.array([0.9, 0.1, 0.2, 0.8, 0.6, 0.4]), 2)})
    with fs.open(f"{url}/data/part-0.parquet", "wb") as handle:
        pq.write_table(table, handle)
    plan = plan_dataset(f"{url}/data/", storage_options=options)
    assert "etag" in plan.fingerprint["files"][0]
    np.testing.assert_array_equal(read_partition(plan, plan.partitions[0]).labels, [0, 1, 1])

    out = f"{url}/scans/one"
    run_scan(out, fingerprint=plan.fingerprint, storage_options=options)
    assert read_manifest(out, storage_options=options)["num_issues"] == 4
    with pytest.raises(DestinationError):
        make_commit(out, config_hash="c2", storage_options=options).begin()
    make_commit(out, config_hash="c2", storage_options=options, overwrite=True).begin()
    assert fs.find(out) == []


def test_parquet_bytes_are_the_python_file_encoding():
    """Encoding into an Arrow buffer (no GIL per write) gives the bytes a Python file object
    got, and they read back whole."""
    import io

    from labelscan.io.atomic import parquet_bytes, write_parquet

    table = pa.concat_tables([mask_table(3 * i) for i in range(4)])
    data = parquet_bytes([table.slice(0, 5), table.slice(5)], row_group_rows=4)
    assert isinstance(data, bytes)
    reference = io.BytesIO()
    write_parquet(reference, [table.slice(0, 5), table.slice(5)], row_group_rows=4)
    assert data == reference.getvalue()
    assert pq.read_table(pa.BufferReader(data)).equals(table)


def test_local_rerun_moves_old_outputs_aside_and_deletes_them(tmp_path, monkeypatch):
    """A local destination's old outputs leave their paths at once in ``begin`` and are deleted on
    a thread that ``commit`` waits for; a leftover trash folder of a killed run goes too."""
    url = str(tmp_path / "out")
    run_scan(url)
    stale = tmp_path / "out" / f"{commit_module.TRASH_PREFIX}{'0' * 32}"
    stale.mkdir()
    (stale / "0").write_bytes(b"left by a killed run")
    before = [*listing(url), stale.name + "/0"]
    deleting = []
    real_delete = commit_module._delete_folders
    monkeypatch.setattr(commit_module, "_delete_folders", lambda folders: deleting.append(list(folders)))
    commit = make_commit(url)
    commit.begin()
    assert not any(name.startswith(("mask/", "issues/", "summary.json", "_SUCCESS")) for name in listing(url))
    (moved,) = deleting   # one thread: the stale folder and this run's
    assert str(stale) in moved and len(moved) == 2
    trashed = list((tmp_path / "out").glob(f"{commit_module.TRASH_PREFIX}*/*"))
    assert len(trashed) == len(before) - 1   # all but _SUCCESS, which begin removes first
    real_delete(moved)
    commit.commit([], {})
    assert listing(url) == ["_SUCCESS"]
    monkeypatch.undo()
    run_scan(url)   # the thread itself, waited for by commit
    assert not list((tmp_path / "out").glob(f"{commit_module.TRASH_PREFIX}*"))
    assert pickle.loads(pickle.dumps(make_commit(url)))._deleting == []
