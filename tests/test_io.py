"""Planning and reading parquet prediction sets (labelscan.io.dataset, columns, validate, sources)."""

import os
import pickle

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cleanlab.internal.validation import assert_valid_inputs

from labelscan.errors import (EXIT_BAD_INPUT, EXIT_USAGE, DestinationError, InputError,
                              LabelscanError, UsageError)
from labelscan.io import FilePiece, PartitionSpec, locate_row, plan_dataset, read_labels, read_partition
from labelscan.io.columns import decode_columns, decode_list
from labelscan.io.validate import validate_pred_probs

K = 3


def random_arrays(num_rows, num_classes=K, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_rows)
    pred_probs = rng.dirichlet(np.ones(num_classes), num_rows).astype(dtype)
    return labels, pred_probs


def list_array(pred_probs, kind="fixed"):
    """(n, K) matrix as a fixed_size_list, list or large_list arrow array."""
    values = pa.array(pred_probs.reshape(-1))
    if kind == "fixed":
        return pa.FixedSizeListArray.from_arrays(values, pred_probs.shape[1])
    offsets = np.arange(0, pred_probs.size + 1, pred_probs.shape[1])
    if kind == "list":
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def prediction_columns(layout, labels, pred_probs):
    """Columns and the matching ``pred_probs_column`` argument for a storage layout."""
    num_classes = pred_probs.shape[1]
    if layout in ("fixed", "list", "large_list"):
        return {"label": labels, "pred_probs": list_array(pred_probs, layout)}, "pred_probs"
    if layout == "columns":
        names = [f"score_{num_classes - j}" for j in range(num_classes)]  # class order = list order
        return {"label": labels, **dict(zip(names, pred_probs.T))}, names
    # prefix: columns stored out of order; class order comes from the integer suffix
    order = sorted(range(num_classes), key=str)
    return ({"label": labels, **{f"pred_probs_{j}": pred_probs[:, j] for j in order}},
            "pred_probs_")


def sample_spec(row_group_rows=(10, 10, 10), row_start=100):
    piece = FilePiece(path="data/part-0.parquet", row_groups=tuple(range(4, 4 + len(row_group_rows))),
                      row_group_rows=row_group_rows, file_row_start=40)
    return PartitionSpec(index=0, pieces=(piece,), row_start=row_start, num_rows=sum(row_group_rows))


# -- errors ----------------------------------------------------------------------------------------

def test_input_error_message_and_pickle():
    error = InputError("pred_probs values outside [0, 1]", path="data/part-3.parquet", row_group=2,
                       row=1234, global_row=51234, num_rows_affected=17)
    assert str(error) == ("pred_probs values outside [0, 1] in data/part-3.parquet, row group 2, "
                          "row 1234 (global row 51234); 17 rows affected")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is InputError and str(clone) == str(error)
    assert (clone.path, clone.row_group, clone.row, clone.global_row) == (
        "data/part-3.parquet", 2, 1234, 51234)
    assert clone.exit_code == EXIT_BAD_INPUT
    assert str(InputError("empty file", path="a.parquet")) == "empty file in a.parquet"


@pytest.mark.parametrize("cls", [LabelscanError, UsageError, DestinationError])
def test_errors_pickle(cls):
    clone = pickle.loads(pickle.dumps(cls("bad")))
    assert type(clone) is cls and str(clone) == "bad"
    assert DestinationError.exit_code == UsageError.exit_code == EXIT_USAGE


# -- resolving files and planning ------------------------------------------------------------------

def test_directory_glob_list_and_url_inputs(tmp_path, write_parquet):
    labels, pred_probs = random_arrays(40)
    table = pa.table({"label": labels, "pred_probs": list_array(pred_probs)})
    for name in ["b/part-1.parquet", "a.parquet", "b/part-0.parquet"]:
        write_parquet(str(tmp_path / name), table)
    for ignored in ["_tmp/x.parquet", ".hidden.parquet", "b/_common_metadata.parquet"]:
        write_parquet(str(tmp_path / ignored), table.slice(0, 1))
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "notes.txt").write_text("not parquet")

    expected = [str(tmp_path / name) for name in ["a.parquet", "b/part-0.parquet",
                                                  "b/part-1.parquet"]]
    as_dir = plan_dataset(str(tmp_path))
    assert [piece.path for spec in as_dir.partitions for piece in spec.pieces] == expected
    assert as_dir.num_rows == 120 and [spec.row_start for spec in as_dir.partitions] == [0]
    as_url = plan_dataset(f"file://{tmp_path}/")
    assert [piece.path for spec in as_url.partitions for piece in spec.pieces] == expected
    as_glob = plan_dataset(str(tmp_path / "b" / "part-*.parquet"))
    assert [piece.path for spec in as_glob.partitions for piece in spec.pieces] == expected[1:]
    as_list = plan_dataset([expected[2], str(tmp_path / "a.parquet"), expected[2]])
    assert [piece.path for spec in as_list.partitions for piece in spec.pieces] == [expected[0], expected[2]]
    with pytest.raises(InputError, match="no such file"):
        plan_dataset(str(tmp_path / "missing.parquet"))
    with pytest.raises(InputError, match="no parquet files"):
        plan_dataset(str(tmp_path / "nothing-*.parquet"))


def test_partitions_pack_whole_row_groups(memory_url, write_parquet):
    labels, pred_probs = random_arrays(85)
    table = pa.table({"label": labels, "pred_probs": list_array(pred_probs)})
    write_parquet(f"{memory_url}/a.parquet", table.slice(0, 45), row_group_rows=10)  # 10,10,10,10,5
    write_parquet(f"{memory_url}/b.parquet", table.slice(45, 30))                    # 30
    write_parquet(f"{memory_url}/c.parquet", table.slice(75), row_group_rows=5)     # 5,5

    plan = plan_dataset(memory_url, rows_per_partition=25)
    layout = [(s.row_start, [(os.path.basename(p.path), p.row_groups, p.row_group_rows, p.file_row_start)
                             for p in s.pieces]) for s in plan.partitions]
    assert layout == [
        (0, [("a.parquet", (0, 1), (10, 10), 0)]),
        (20, [("a.parquet", (2, 3, 4), (10, 10, 5), 20)]),
        (45, [("b.parquet", (0,), (30,), 0)]),   # a row group larger than the limit is never split
        (75, [("c.parquet", (0, 1), (5, 5), 0)]),
    ]
    assert [s.index for s in plan.partitions] == list(range(4))
    assert plan.num_rows == 85
    got = [read_partition(plan, spec) for spec in plan.partitions]
    assert [part.row_start for part in got] == [0, 20, 45, 75]
    np.testing.assert_array_equal(np.concatenate([part.pred_probs for part in got]), pred_probs)
    np.testing.assert_array_equal(np.concatenate([read_labels(plan, s) for s in plan.partitions]),
                                  labels)
    packed = plan_dataset(memory_url, rows_per_partition=40)   # files share partitions
    layout = [(s.row_start, s.num_rows, [(os.path.basename(p.path), p.row_groups, p.file_row_start)
                                         for p in s.pieces]) for s in packed.partitions]
    assert layout == [
        (0, 40, [("a.parquet", (0, 1, 2, 3), 0)]),
        (40, 40, [("a.parquet", (4,), 40), ("b.parquet", (0,), 0), ("c.parquet", (0,), 0)]),
        (80, 5, [("c.parquet", (1,), 5)]),
    ]
    got = [read_partition(packed, spec) for spec in packed.partitions]
    np.testing.assert_array_equal(np.concatenate([part.pred_probs for part in got]), pred_probs)
    np.testing.assert_array_equal(np.concatenate([read_labels(packed, s) for s in packed.partitions]),
                                  labels)
    (whole,) = plan_dataset(memory_url).partitions   # default: at most 256 MiB, the three files in one
    assert [os.path.basename(p.path) for p in whole.pieces] == ["a.parquet", "b.parquet", "c.parquet"]


def test_files_of_other_column_types_start_a_new_partition(memory_url, write_parquet):
    labels, pred_probs = random_arrays(30)
    for name, rows, label_type in [("a", slice(0, 10), pa.int64()), ("b", slice(10, 20), pa.int64()),
                                   ("c", slice(20, 30), pa.int32())]:
        write_parquet(f"{memory_url}/{name}.parquet", pa.table({
            "label": pa.array(labels[rows], label_type), "pred_probs": list_array(pred_probs[rows])}))
    plan = plan_dataset(memory_url)
    assert [[os.path.basename(p.path) for p in s.pieces] for s in plan.partitions] == [
        ["a.parquet", "b.parquet"], ["c.parquet"]]
    got = [read_partition(plan, spec) for spec in plan.partitions]
    np.testing.assert_array_equal(np.concatenate([part.labels for part in got]), labels)


def test_plan_pickles_and_reads_on_another_process_view(memory_url, write_parquet):
    labels, pred_probs = random_arrays(30)
    ids = np.array([f"ex-{i}" for i in range(30)])
    table = pa.table({"label": labels.astype(np.int8), "pred_probs": list_array(pred_probs),
                      "id": ids})
    write_parquet(f"{memory_url}/x.parquet", table, row_group_rows=7)
    plan = pickle.loads(pickle.dumps(plan_dataset(memory_url, id_column="id",
                                                  rows_per_partition=14)))
    parts = [read_partition(plan, spec) for spec in plan.partitions]
    assert all(part.labels.dtype == np.int64 for part in parts)
    np.testing.assert_array_equal(np.concatenate([part.ids for part in parts]), ids)
    np.testing.assert_array_equal(np.concatenate([part.labels for part in parts]), labels)


def test_fingerprint_tracks_file_versions(tmp_path, write_parquet):
    labels, pred_probs = random_arrays(20)
    table = pa.table({"label": labels, "pred_probs": list_array(pred_probs)})
    path = write_parquet(str(tmp_path / "x.parquet"), table)
    first = plan_dataset(str(tmp_path)).fingerprint
    assert first["num_rows"] == 20 and first["num_classes"] == K
    (entry,) = first["files"]
    assert entry["path"] == path and entry["rows"] == 20 and "mtime" in entry
    assert entry["size"] == os.path.getsize(path)
    assert plan_dataset(path).fingerprint == first
    write_parquet(path, table.slice(0, 10))
    assert plan_dataset(str(tmp_path)).fingerprint["sha256"] != first["sha256"]


def test_class_names_from_metadata(memory_url, write_parquet):
    labels, pred_probs = random_arrays(10)
    table = pa.table({"label": labels, "pred_probs": list_array(pred_probs)},
                     metadata={b"labelscan.class_names": b'["cat", "dog", "fox"]'})
    write_parquet(f"{memory_url}/a.parquet", table)
    write_parquet(f"{memory_url}/b.parquet", table.replace_schema_metadata(None))
    assert plan_dataset(memory_url).class_names == ("cat", "dog", "fox")
    write_parquet(f"{memory_url}/c.parquet", table.replace_schema_metadata(
        {b"labelscan.class_names": b'["cat", "dog"]'}))
    with pytest.raises(InputError, match="class names"):
        plan_dataset(memory_url)


# -- layouts and decoding --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_layouts_give_identical_arrays(memory_url, write_parquet, dtype):
    labels, pred_probs = random_arrays(50, num_classes=11, dtype=dtype)
    for layout in ["fixed", "list", "large_list", "columns", "prefix"]:
        columns, argument = prediction_columns(layout, labels, pred_probs)
        write_parquet(f"{memory_url}/{layout}/part.parquet", pa.table(columns), row_group_rows=16)
        plan = plan_dataset(f"{memory_url}/{layout}", pred_probs_column=argument,
                            rows_per_partition=20)
        assert plan.num_classes == 11 and plan.pred_probs_dtype == np.dtype(dtype)
        parts = [read_partition(plan, spec) for spec in plan.partitions]
        assert all(part.pred_probs.flags.c_contiguous for part in parts)
        got = np.concatenate([part.pred_probs for part in parts])
        assert got.dtype == np.dtype(dtype), layout
        np.testing.assert_array_equal(got, pred_probs, err_msg=layout)


def test_prefix_needs_columns_numbered_from_zero(memory_url, write_parquet):
    labels, pred_probs = random_arrays(5)
    write_parquet(f"{memory_url}/x.parquet", pa.table(
        {"label": labels, "p_0": pred_probs[:, 0], "p_2": pred_probs[:, 2]}))
    with pytest.raises(InputError, match="not numbered 0..K-1"):
        plan_dataset(memory_url, pred_probs_column="p_")


def test_decode_sliced_chunks_honours_offsets():
    _, pred_probs = random_arrays(12, num_classes=4, dtype=np.float64)
    spec = sample_spec((12,))
    for kind in ["fixed", "list", "large_list"]:
        whole = list_array(pred_probs, kind)
        chunked = pa.chunked_array([whole.slice(0, 3), whole.slice(3, 5), whole.slice(8)])
        got = decode_list(chunked, 4, np.dtype(np.float64), spec)
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, pred_probs, err_msg=kind)
        np.testing.assert_array_equal(
            decode_list(pa.chunked_array([whole.slice(5, 4)]), 4, np.dtype(np.float64), spec),
            pred_probs[5:9])
    names = ["a", "b", "c", "d"]
    table = pa.concat_tables([pa.table(dict(zip(names, pred_probs[:7].T))),
                              pa.table(dict(zip(names, pred_probs[7:].T)))])
    np.testing.assert_array_equal(decode_columns(table.slice(2), names, np.dtype(np.float64), spec),
                                  pred_probs[2:])


# -- validation ------------------------------------------------------------------------------------

def test_locate_row():
    spec = sample_spec((10, 5, 20))
    path = "data/part-0.parquet"
    assert locate_row(spec, 0) == (path, 4, 0)
    assert locate_row(spec, 9) == (path, 4, 9)
    assert locate_row(spec, 10) == (path, 5, 0)
    assert locate_row(spec, 16) == (path, 6, 1)
    assert locate_row(spec, 34) == (path, 6, 19)
    second = FilePiece(path="data/part-1.parquet", row_groups=(0, 1), row_group_rows=(3, 4))
    packed = PartitionSpec(index=0, pieces=(*spec.pieces, second), row_start=100, num_rows=42)
    assert locate_row(packed, 34) == (path, 6, 19)
    assert locate_row(packed, 35) == ("data/part-1.parquet", 0, 0)
    assert locate_row(packed, 41) == ("data/part-1.parquet", 1, 3)


def _cleanlab_accepts(pred_probs):
    labels = np.arange(len(pred_probs)) % pred_probs.shape[1]
    try:
        assert_valid_inputs(None, labels, pred_probs)
    except ValueError:
        return False
    return True


def _labelscan_accepts(pred_probs):
    try:
        validate_pred_probs(pred_probs, sample_spec((len(pred_probs),)))
    except InputError:
        return False
    return True


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_bounds_match_cleanlab(dtype):
    edges = [0.0, 1.0, -5e-7, -1e-6, -2e-6, -1e-3, 1 + 5e-7, 1 + 1e-6, 1 + 2e-6, 1.0009765625,
             1.001, np.nextafter(1, 2, dtype=dtype), -np.finfo(dtype).smallest_subnormal]
    for value in edges:
        pred_probs = np.array([[0.5, 0.5], [value, 0.25]], dtype=dtype)
        assert _labelscan_accepts(pred_probs) == _cleanlab_accepts(pred_probs), (dtype, value)
    assert not _labelscan_accepts(np.array([[1.0009765625, 0]], np.float16))
    assert _labelscan_accepts(np.array([[1 + 5e-7, 0]], np.float32))
    assert _labelscan_accepts(np.array([[0.7, 0.7]], dtype))           # rows need not sum to 1
    assert not _labelscan_accepts(np.array([[np.nan, 0.5]], dtype))    # cleanlab lets NaN through


BAD_ROWS = (5, 7)  # rows within row group 2 of the second file; global rows 45 and 47


def _bad_table(case, layout):
    labels, pred_probs = random_arrays(30)
    label_mask = None
    rows = [20 + row for row in BAD_ROWS]
    if case == "label out of range":
        labels[rows] = K
    elif case == "negative label":
        labels[rows] = -1
    elif case == "null label":
        label_mask = np.isin(np.arange(30), rows)
    elif case in ("negative prob", "prob above one", "nan", "inf"):
        value = {"negative prob": -0.01, "prob above one": 1.01, "nan": np.nan,
                 "inf": np.inf}[case]
        pred_probs[rows, 1] = value
    columns, argument = prediction_columns(layout, labels, pred_probs)
    columns["label"] = pa.array(labels, mask=label_mask)
    if case in ("null list entry", "null value in list", "wrong list length"):
        rows_as_lists = pred_probs.tolist()
        for row in rows:
            rows_as_lists[row] = {"null list entry": None, "wrong list length": [0.5] * (K + 1),
                                  "null value in list": [0.5, None, 0.5]}[case]
        columns["pred_probs"] = pa.array(rows_as_lists, pa.list_(pa.float32()))
    if case == "null in column":
        columns[argument[1]] = pa.array(pred_probs[:, 1], mask=np.isin(np.arange(30), rows))
    return pa.table(columns), argument


@pytest.mark.parametrize("case,layout,message", [
    ("label out of range", "fixed", "label values outside \\[0, 3\\)"),
    ("negative label", "fixed", "label values outside"),
    ("null label", "fixed", "null labels"),
    ("negative prob", "fixed", "pred_probs values outside \\[0, 1\\]"),
    ("prob above one", "columns", "pred_probs values outside \\[0, 1\\]"),
    ("nan", "fixed", "NaN or infinite"),
    ("inf", "columns", "NaN or infinite"),
    ("null list entry", "list", "null pred_probs rows"),
    ("null value in list", "list", "null values inside pred_probs rows"),
    ("wrong list length", "list", "pred_probs row holds 4 values, expected 3"),
    ("null in column", "columns", "null values in pred_probs column"),
])
@pytest.mark.parametrize("rows_per_partition", [None, 10])
def test_bad_rows_are_located(memory_url, write_parquet, case, layout, message,
                              rows_per_partition):
    good_labels, good_pred_probs = random_arrays(20)
    good, argument = prediction_columns(layout, good_labels, good_pred_probs)
    write_parquet(f"{memory_url}/part-0.parquet", pa.table(good), row_group_rows=10)
    bad, _ = _bad_table(case, layout)
    write_parquet(f"{memory_url}/part-1.parquet", bad, row_group_rows=10)
    plan = plan_dataset(memory_url, pred_probs_column=argument,
                        rows_per_partition=rows_per_partition)
    with pytest.raises(InputError, match=message) as caught:
        for spec in plan.partitions:
            read_partition(plan, spec)
    error = caught.value
    assert error.path.endswith("part-1.parquet")
    assert (error.row_group, error.row, error.global_row, error.num_rows_affected) == (2, 5, 45, 2)
    assert "part-1.parquet, row group 2, row 5 (global row 45); 2 rows affected" in str(error)
    if "label" in case:
        with pytest.raises(InputError, match=message):
            for spec in plan.partitions:
                read_labels(plan, spec)


def _replace(table, name, array):
    return table.set_column(table.schema.get_field_index(name), name, array)


@pytest.mark.parametrize("case,message", [
    ("missing label", "missing label column 'label'"),
    ("missing pred_probs", "missing pred_probs column"),
    ("float labels", "label column 'label' has type double"),
    ("int pred_probs", "holds int64; expected float16, float32 or float64"),
    ("pred_probs not a list", "has type float; expected a list"),
    ("K mismatch", "K=4 classes, but the first file has K=3"),
    ("dtype mismatch", "dtype float64 differs"),
    ("empty file", "empty file"),
    ("missing id", "missing id column 'id'"),
])
def test_bad_files_are_named(memory_url, write_parquet, case, message):
    labels, pred_probs = random_arrays(20)
    good = pa.table({"label": labels, "pred_probs": list_array(pred_probs), "id": labels})
    write_parquet(f"{memory_url}/part-0.parquet", good)
    bad = {
        "missing label": good.drop_columns(["label"]),
        "missing pred_probs": good.drop_columns(["pred_probs"]),
        "float labels": _replace(good, "label", pa.array(labels, pa.float64())),
        "int pred_probs": _replace(good, "pred_probs", pa.FixedSizeListArray.from_arrays(
            pa.array(np.zeros(60, np.int64)), K)),
        "pred_probs not a list": _replace(good, "pred_probs", pa.array(pred_probs[:, 0])),
        "K mismatch": _replace(good, "pred_probs", list_array(random_arrays(20, 4)[1])),
        "dtype mismatch": _replace(good, "pred_probs",
                                   list_array(pred_probs.astype(np.float64))),
        "empty file": good.slice(0, 0),
        "missing id": good.drop_columns(["id"]),
    }[case]
    write_parquet(f"{memory_url}/part-1.parquet", bad)
    with pytest.raises(InputError, match=message) as caught:
        plan_dataset(memory_url, id_column="id")
    assert caught.value.path.endswith("part-1.parquet")
    assert "part-1.parquet" in str(caught.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_file_is_named(memory_url, write_parquet, damage):
    labels, pred_probs = random_arrays(20)
    path = write_parquet(f"{memory_url}/part-0.parquet",
                         pa.table({"label": labels, "pred_probs": list_array(pred_probs)}))
    fs = fsspec.filesystem("memory")
    data = fs.cat_file(path)
    fs.pipe_file(path, b"x" * 100 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable parquet file") as caught:
        plan_dataset(memory_url)
    assert caught.value.path.endswith("part-0.parquet")


def test_corrupt_row_group_is_named(memory_url, write_parquet):
    labels, pred_probs = random_arrays(3000)
    path = write_parquet(f"{memory_url}/part-0.parquet",
                         pa.table({"label": labels, "pred_probs": list_array(pred_probs)}),
                         row_group_rows=1000, compression="zstd")
    plan = plan_dataset(memory_url, rows_per_partition=1000)
    fs = fsspec.filesystem("memory")
    data = bytearray(fs.cat_file(path))
    chunk = pq.ParquetFile(fs.open(path)).metadata.row_group(1).column(1)
    start = chunk.data_page_offset + 40
    data[start:start + 200] = bytes(200)
    fs.pipe_file(path, bytes(data))
    read_partition(plan, plan.partitions[0])
    with pytest.raises(InputError, match="cannot decode row group 1 ") as caught:
        read_partition(plan, plan.partitions[1])
    assert caught.value.row_group == 1 and caught.value.path.endswith("part-0.parquet")
