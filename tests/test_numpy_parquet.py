"""The NumPy parquet writer (labelscan.io.numpy_parquet): every reader gets the written table back."""

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from benchmarks.encode import mask_like_columns
from labelscan.io import numpy_parquet, parquet_encodings
from labelscan.io.atomic import table_pieces
from labelscan.io.numpy_parquet import NotEncodable


def _read(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def _metadata(data: bytes):
    return pq.ParquetFile(pa.BufferReader(data)).metadata


def _mask_like(num_rows: int, seed: int = 0, start: int = 0) -> pa.Table:
    return mask_like_columns(num_rows, seed, start).to_arrow()


def table_bytes(table) -> bytes:
    """What a scan stores for ``table`` (:func:`labelscan.io.atomic.table_pieces`), joined."""
    return b"".join(table_pieces(table))


def numpy_file_bytes(table, statistics=True, row_group_rows=numpy_parquet.ROW_GROUP_ROWS) -> bytes:
    """The NumPy writer's file of ``table``, joined."""
    return b"".join(numpy_parquet.file_pieces(table, statistics, row_group_rows))


@pytest.mark.parametrize("num_rows", [1, 2, 7, 8, 9, 31, 33, 127, 128, 129, 130, 257, 1000, 4099])
def test_mask_like_tables_round_trip(num_rows):
    table = _mask_like(num_rows, seed=num_rows, start=10 * num_rows)
    data = numpy_file_bytes(table, statistics=["row_id"], row_group_rows=1024)
    assert _read(data).equals(table, check_metadata=True)
    assert _read(data).schema.equals(table.schema, check_metadata=True)
    assert _metadata(data).num_row_groups == -(-num_rows // 1024)
    assert numpy_file_bytes(table, statistics=["row_id"], row_group_rows=1024) == data


INTEGER_CASES = {
    "constant": lambda rng, n: np.full(n, 5),
    "range_step_3": lambda rng, n: np.arange(n) * 3 - 100,
    "descending": lambda rng, n: np.arange(n)[::-1].copy(),
    "labels_k2": lambda rng, n: rng.integers(0, 2, n),
    "labels_k3": lambda rng, n: rng.integers(0, 3, n),
    "labels_k16": lambda rng, n: rng.integers(0, 16, n),
    "labels_k17": lambda rng, n: rng.integers(0, 17, n),
    "labels_k257": lambda rng, n: rng.integers(0, 257, n),
    "labels_k65536": lambda rng, n: rng.integers(0, 65536, n),
    "negative": lambda rng, n: rng.integers(-1000, 1000, n),
    "wide_ids": lambda rng, n: rng.integers(0, 2**31, n),
    "wider_than_32_bits": lambda rng, n: rng.integers(-2**40, 2**40, n),
    "int64_extremes": lambda rng, n: rng.choice(np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1]), n),
}


@pytest.mark.parametrize("case", sorted(INTEGER_CASES))
@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64"])
@pytest.mark.parametrize("num_rows", [1, 129, 3001])
def test_integer_columns_round_trip_with_statistics(case, dtype, num_rows):
    values = INTEGER_CASES[case](np.random.default_rng(num_rows), num_rows)
    info = np.iinfo(dtype)
    values = np.clip(values, info.min, info.max).astype(dtype)
    table = pa.table({"values": values})
    data = numpy_file_bytes(table, row_group_rows=1024)
    assert _read(data).equals(table)
    for group in range(_metadata(data).num_row_groups):
        stats = _metadata(data).row_group(group).column(0).statistics
        chunk = values[group * 1024:(group + 1) * 1024]
        assert stats.has_min_max and (stats.min, stats.max) == (chunk.min(), chunk.max())
        assert stats.null_count == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_columns_round_trip_with_nan_aware_statistics(dtype):
    values = np.array([0.5, np.nan, -0.0, 0.0, np.inf, -3.25, 1e-30], dtype=dtype)
    table = pa.table({"scores": values, "all_nan": np.full(len(values), np.nan, dtype),
                      "zeros": np.zeros(len(values), dtype)})
    data = numpy_file_bytes(table)
    read = _read(data)
    assert read.schema.equals(table.schema)
    for name in table.column_names:   # bit for bit: NaN and -0.0 included
        assert read.column(name).to_numpy().tobytes() == table.column(name).to_numpy().tobytes()
    group = _metadata(data).row_group(0)
    scores, all_nan, zeros = (group.column(index).statistics for index in range(3))
    assert (scores.min, scores.max) == (-3.25, np.inf)
    assert not all_nan.has_min_max
    assert np.signbit(zeros.min) and not np.signbit(zeros.max)


def test_statistics_only_for_the_named_columns():
    data = numpy_file_bytes(_mask_like(3000), statistics=["row_id"])
    group = _metadata(data).row_group(0)
    assert group.column(0).statistics.has_min_max
    assert [group.column(index).statistics for index in (1, 2, 3)] == [None, None, None]
    none = _metadata(numpy_file_bytes(_mask_like(3000), statistics=False)).row_group(0)
    assert none.column(0).statistics is None


def test_row_key_statistics_prune_row_groups(tmp_path):
    path = tmp_path / "mask.parquet"
    path.write_bytes(numpy_file_bytes(_mask_like(10_000, start=500), statistics=["row_id"],
                                               row_group_rows=1024))
    dataset = ds.dataset(path, format="parquet")
    fragment = next(dataset.get_fragments())
    kept = fragment.subset(ds.field("row_id") >= 8_600).row_groups
    assert [group.id for group in kept] == [7, 8, 9]
    selected = pq.read_table(path, filters=[("row_id", ">=", 8_600)])
    assert selected.column("row_id").to_pylist() == list(range(8_600, 10_500))


def test_non_nullable_fields_and_schema_metadata_survive():
    schema = pa.schema([pa.field("rank", pa.int64(), nullable=False), pa.field("flag", pa.bool_())],
                       metadata={b"origin": b"labelscan"})
    table = pa.table({"rank": np.arange(300), "flag": np.arange(300) % 3 == 0}, schema=schema)
    data = numpy_file_bytes(table)
    assert _read(data).equals(table, check_metadata=True)
    assert not _read(data).schema.field("rank").nullable
    assert _metadata(data).metadata[b"origin"] == b"labelscan"


def test_pandas_reads_the_table():
    table = _mask_like(2000)
    frame = pq.read_table(pa.BufferReader(numpy_file_bytes(table))).to_pandas()
    assert frame.equals(table.to_pandas())


@pytest.mark.parametrize("table, reason", [
    (pa.table({"x": pa.array([1, None, 3])}), "nulls"),
    (pa.table({"x": pa.array(["a", "b"])}), "type string"),
    (pa.table({"x": pa.array(np.ones(3, np.float16))}), "type halffloat"),
    (pa.table({"x": pa.array(np.ones(3, np.uint8))}), "type uint8"),
    (pa.table({"x": pa.array([], pa.int64())}), "without rows"),
])
def test_tables_outside_the_writer_are_refused_and_written_by_arrow(table, reason):
    with pytest.raises(NotEncodable, match=reason):
        numpy_file_bytes(table)
    data = table_bytes(table)
    assert _read(data).equals(table)
    assert _metadata(data).created_by.startswith("parquet-cpp-arrow")


def test_table_bytes_uses_the_numpy_writer_when_it_can():
    data = table_bytes(_mask_like(100))
    assert _metadata(data).created_by.startswith("labelscan version")


def test_packed_width_and_bit_pack():
    assert [parquet_encodings.packed_width(span) for span in (0, 1, 2, 3, 4, 15, 16, 255, 256, 2**31)] == \
        [0, 1, 2, 2, 4, 4, 8, 8, 16, 32]
    with pytest.raises(parquet_encodings.TooWide):
        parquet_encodings.packed_width(2**32)
    with pytest.raises(parquet_encodings.TooWide):
        parquet_encodings.packed_width(2**16, widest=16)
    values = np.arange(16) % 4
    packed = parquet_encodings.bit_pack(values, 2)
    assert packed.tolist() == [0b11100100] * 4


def _read_with(reader: str, path) -> dict:
    """Each column of a parquet file as read by an independent implementation."""
    if reader == "duckdb":
        duckdb = pytest.importorskip("duckdb", reason="the duckdb reader is a test extra")
        result = duckdb.sql(f"select * from '{path}'").arrow()
        table = result.read_all() if hasattr(result, "read_all") else result
        return {name: table.column(name).to_numpy() for name in table.column_names}
    polars = pytest.importorskip("polars", reason="the polars reader is a test extra")
    frame = polars.read_parquet(path)
    return {name: frame[name].to_numpy() for name in frame.columns}


@pytest.mark.parametrize("reader", ["duckdb", "polars"])
def test_independent_readers_get_the_same_columns(reader, tmp_path):
    """DuckDB (C++) and Polars (Rust) decode every encoding the writer uses: delta ranges and
    random ids, dictionary indices at 2 and 16 bits, values too wide for delta, int8 and int16
    logical types, bit-packed booleans, several row groups."""
    rng = np.random.default_rng(11)
    num_rows = 5_000
    table = pa.table({"rank": np.arange(7, 7 + num_rows), "row_id": rng.permutation(40 * num_rows)[:num_rows],
                      "given_label": rng.integers(0, 1000, num_rows), "predicted_label": rng.integers(0, 3, num_rows).astype(np.int16),
                      "small": rng.integers(-100, 100, num_rows).astype(np.int8),
                      "wide": rng.integers(-2**50, 2**50, num_rows), "flag": rng.random(num_rows) < 0.1,
                      "label_quality": rng.random(num_rows).astype(np.float32), "score": rng.random(num_rows)})
    path = tmp_path / "part.parquet"
    path.write_bytes(numpy_file_bytes(table, row_group_rows=1024))
    columns = _read_with(reader, path)
    for name in table.column_names:
        np.testing.assert_array_equal(np.asarray(columns[name]), table.column(name).to_numpy(), err_msg=name)


def _swapped_range():
    values = np.arange(3000)
    values[[100, 200]] = values[[200, 100]]
    return values


@pytest.mark.parametrize("values", [
    np.arange(5, 5 + 3000),                # a range: delta pages of width 0, bounds from the ends
    _swapped_range(),                      # last - first = n - 1, but not a range
    np.concatenate([np.arange(1024), np.arange(10_000, 11_024), np.arange(2048, 3000)]),   # a range a row group
])
def test_columns_that_look_like_ranges_get_exact_statistics(values):
    values = np.asarray(values, dtype=np.int64)
    table = pa.table({"row_id": values})
    data = numpy_file_bytes(table, row_group_rows=1024)
    assert _read(data).equals(table)
    for group in range(_metadata(data).num_row_groups):
        chunk = values[group * 1024:(group + 1) * 1024]
        stats = _metadata(data).row_group(group).column(0).statistics
        assert (stats.min, stats.max) == (chunk.min(), chunk.max())
