"""labelscan.io.grouped_read: partitions decoded straight into grouped order (whole rows for many
classes, columns for few) equal the row-order read grouped afterwards, and anything it cannot
vouch for goes to that read."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelscan.errors import InputError
from labelscan.io import grouped_read, pages
from labelscan.io.dataset import plan_dataset, read_partition
from labelscan.kernels import grouped

NUM_CLASSES = grouped.ROW_MAJOR_K + 44
"""Classes of the files (rows stored whole) unless a test says otherwise."""


@pytest.fixture(autouse=True)
def page_decoding(monkeypatch):
    """The page decoder on, whatever this machine's cores."""
    monkeypatch.setattr(pages, "MAX_CORES", 1 << 20)


def _probs(num_rows, num_classes=NUM_CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(num_classes), num_rows).astype(np.float32)


def _write(path, probs, labels, list_type="fixed", **options):
    flat = pa.array(probs.ravel())
    num_classes = probs.shape[1]
    if list_type == "fixed":
        column = pa.FixedSizeListArray.from_arrays(flat, num_classes)
    else:
        column = pa.ListArray.from_arrays(pa.array(np.arange(0, probs.size + 1, num_classes, dtype=np.int32)), flat)
    pq.write_table(pa.table({"label": labels, "pred_probs": column, "id": np.arange(len(labels)) + 10 * len(labels)}),
                   path, **options)


def _grouped_both_ways(plan, spec):
    data = grouped_read.read_partition_grouped(plan, spec)
    assert data is not None and isinstance(data.pred_probs, grouped.GroupedRows)
    fast = grouped.group_by_label(spec.row_start, data.labels, data.pred_probs, data.ids)
    reference = read_partition(plan, spec)
    slow = grouped.group_by_label(spec.row_start, reference.labels, reference.pred_probs, reference.ids)
    return fast, slow


FORMATS = [
    {},
    {"compression": "none", "use_dictionary": False},
    {"data_page_version": "2.0"},
    {"data_page_size": 3_000},                      # a page holds less than a row: rows across pages
    {"data_page_size": 50_000, "list_type": "list"},
    {"compression": "zstd", "write_page_checksum": True},
]


@pytest.mark.parametrize("options", FORMATS, ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items())
                         or "defaults")
@pytest.mark.parametrize("num_classes", [2, 10, 37, NUM_CLASSES])
def test_grouped_rows_equal_the_rows_grouped_after_reading(tmp_path, options, num_classes):
    probs = _probs(1_500, num_classes)
    labels = np.random.default_rng(1).integers(0, num_classes, 1_500)
    labels[labels == 1] = 0                         # a class without rows
    _write(tmp_path / "a.parquet", probs[:900], labels[:900], row_group_size=250, **options)
    _write(tmp_path / "b.parquet", probs[900:], labels[900:], row_group_size=250, **options)
    plan = plan_dataset(str(tmp_path), id_column="id", rows_per_partition=700)   # partitions across files
    assert grouped_read.applies(plan)
    for spec in plan.partitions:
        fast, slow = _grouped_both_ways(plan, spec)
        assert fast.row_major_storage == slow.row_major_storage == (num_classes >= grouped.ROW_MAJOR_K)
        assert fast.columns.flags.c_contiguous == slow.columns.flags.c_contiguous
        np.testing.assert_array_equal(fast.columns.view(np.uint32), slow.columns.view(np.uint32))
        np.testing.assert_array_equal(fast.order, slow.order)
        np.testing.assert_array_equal(fast.class_starts, slow.class_starts)
        np.testing.assert_array_equal(fast.grouped_positions(), grouped.inverse_permutation(slow.order))
        np.testing.assert_array_equal(fast.ids, slow.ids)


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_row_scatter_writes_pieces_of_any_boundaries(layout):
    rng = np.random.default_rng(2)
    values = rng.random((40, 7), dtype=np.float32)
    destinations = rng.permutation(40)
    rows = np.zeros_like(values) if layout == "rows" else np.zeros((7, 40), np.float32).T
    sink = pages.RowScatter(rows, destinations)
    cuts = np.sort(rng.choice(np.arange(1, values.size), 30, replace=False))
    for start, stop in zip([0, *cuts], [*cuts, values.size]):
        sink.write(int(start), values.ravel()[start:stop])
    np.testing.assert_array_equal(rows[destinations], values)
    tail = pages.RowScatter(rows, destinations).shifted(30, 40)
    assert tail.num_values == 70 and np.array_equal(tail.destinations, destinations[30:])


@pytest.mark.parametrize("num_classes", [10, NUM_CLASSES])
def test_bad_values_are_named_by_their_first_row_as_the_row_order_read_names_them(tmp_path, num_classes):
    probs = _probs(600, num_classes)
    probs[[437, 590], 5] = 1.5
    probs[[501, 20], 3] = np.nan                   # not finite: reported before out of bounds
    _write(tmp_path / "p.parquet", probs, np.arange(600)[::-1] % num_classes, row_group_size=200)
    plan = plan_dataset(str(tmp_path))
    for read in (grouped_read.read_partition_grouped, read_partition):
        with pytest.raises(InputError, match="row group 0.*row 20") as caught:
            read(plan, plan.partitions[0])
        assert (caught.value.global_row, caught.value.num_rows_affected) == (20, 2)
    probs[[501, 20], 3] = 0.5
    _write(tmp_path / "p.parquet", probs, np.arange(600)[::-1] % num_classes, row_group_size=200)
    plan = plan_dataset(str(tmp_path))
    with pytest.raises(InputError, match="outside.*row group 2.*row 37") as caught:
        grouped_read.read_partition_grouped(plan, plan.partitions[0])
    assert (caught.value.global_row, caught.value.num_rows_affected) == (437, 2)


def test_labels_outside_the_classes_are_named(tmp_path):
    labels = np.arange(600) % NUM_CLASSES
    labels[123] = NUM_CLASSES + 5
    _write(tmp_path / "p.parquet", _probs(600), labels, row_group_size=200)
    plan = plan_dataset(str(tmp_path))
    with pytest.raises(InputError, match="row group 0.*row 123"):
        grouped_read.read_partition_grouped(plan, plan.partitions[0])


def test_columns_the_page_decoder_refuses_are_left_to_arrow(tmp_path):
    rows = pa.array([list(row) if i != 3 else None for i, row in enumerate(_probs(10))],
                    pa.list_(pa.float32(), NUM_CLASSES))
    pq.write_table(pa.table({"label": np.zeros(10, np.int64), "pred_probs": rows}), tmp_path / "n.parquet")
    plan = plan_dataset(str(tmp_path))
    assert grouped_read.read_partition_grouped(plan, plan.partitions[0]) is None


def test_class_columns_float16_or_many_cores_keep_the_row_order_read(tmp_path, monkeypatch):
    probs = _probs(50, 5)
    pq.write_table(pa.table({"label": np.arange(50) % 5, **{f"p{k}": probs[:, k] for k in range(5)}}),
                   tmp_path / "columns.parquet")
    assert not grouped_read.applies(plan_dataset(str(tmp_path / "columns.parquet"), pred_probs_column="p"))
    _write(tmp_path / "half.parquet", probs.astype(np.float16), np.arange(50) % 5)
    assert not grouped_read.applies(plan_dataset(str(tmp_path / "half.parquet")))
    _write(tmp_path / "list.parquet", probs, np.arange(50) % 5)
    assert grouped_read.applies(plan_dataset(str(tmp_path / "list.parquet")))
    monkeypatch.setattr(pages, "MAX_CORES", 0)
    assert not grouped_read.applies(plan_dataset(str(tmp_path / "list.parquet")))


def test_a_scan_of_a_bad_value_names_the_row_and_writes_nothing(tmp_path, threaded_client):
    import labelscan

    probs = _probs(600)
    probs[437, 5] = 1.5
    _write(tmp_path / "in.parquet", probs, np.arange(600) % NUM_CLASSES, row_group_size=200)
    with pytest.raises(InputError, match="row group 2.*row 37") as caught:
        labelscan.scan(str(tmp_path / "in.parquet"), str(tmp_path / "out"), client=threaded_client)
    assert caught.value.global_row == 437
    assert not (tmp_path / "out" / "_SUCCESS").exists()
