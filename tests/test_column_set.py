"""Output tables as a scan holds them (labelscan.io.column_set): the same bytes as their Arrow
tables, written piece by piece with the same sha256."""

import hashlib

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from labelscan.io import numpy_parquet
from labelscan.io.atomic import put_bytes, table_pieces
from labelscan.io.column_set import ColumnSet, Consecutive
from tests.test_numpy_parquet import numpy_file_bytes


def _issues_like(num_rows: int, first_rank: int, dtype=np.int16) -> ColumnSet:
    rng = np.random.default_rng(num_rows)
    return ColumnSet({"rank": Consecutive(first_rank, num_rows),
                      "row_id": np.sort(rng.choice(10 * num_rows + 10, num_rows, replace=False)),
                      "given_label": rng.integers(0, 7, num_rows).astype(dtype),
                      "predicted_label": rng.integers(0, 300, num_rows).astype(dtype),
                      "label_quality": np.sort(rng.random(num_rows)).astype(np.float32)},
                     types={"given_label": pa.int64(), "predicted_label": pa.int64()})


def _mask_like(num_rows: int, first_row: int) -> ColumnSet:
    rng = np.random.default_rng(num_rows)
    return ColumnSet({"row_id": Consecutive(first_row, num_rows),
                      "is_label_issue": rng.random(num_rows) < 0.2,
                      "label_quality": rng.random(num_rows).astype(np.float64),
                      "predicted_label": rng.integers(0, 3, num_rows).astype(np.int8)},
                     types={"predicted_label": pa.int64()})


@pytest.mark.parametrize("num_rows", [1, 2, 127, 128, 129, 1024, 1025, 2049, 4099])
@pytest.mark.parametrize("statistics", [True, ["row_id"], False])
@pytest.mark.parametrize("make", [_mask_like, _issues_like])
def test_a_column_set_gives_the_bytes_of_its_arrow_table(num_rows, statistics, make):
    columns = make(num_rows, 1000 * num_rows)
    table = columns.to_arrow()
    assert columns.schema() == table.schema
    assert table.schema.field("predicted_label").type == pa.int64()
    data = numpy_file_bytes(columns, statistics, row_group_rows=1024)
    assert data == numpy_file_bytes(table, statistics, row_group_rows=1024)
    assert pq.read_table(pa.BufferReader(data)).equals(table, check_metadata=True)


def test_int32_class_indices_stored_as_int64():
    columns = _issues_like(3000, 5, dtype=np.int32)
    assert numpy_file_bytes(columns) == numpy_file_bytes(columns.to_arrow())
    wide = np.random.default_rng(1).integers(0, 100_000, 3000).astype(np.int32)   # past the widest dictionary
    columns = ColumnSet({"predicted_label": wide}, types={"predicted_label": pa.int64()})
    data = numpy_file_bytes(columns, row_group_rows=1024)
    assert data == numpy_file_bytes(columns.to_arrow(), row_group_rows=1024)
    assert pq.read_table(pa.BufferReader(data)).column("predicted_label").to_numpy().tolist() == wide.tolist()


def test_consecutive_is_an_int64_range():
    values = Consecutive(-3, 5)
    assert len(values) == 5 and values.dtype == np.int64
    assert np.asarray(values).tolist() == [-3, -2, -1, 0, 1] and np.asarray(values).dtype == np.int64
    assert values.take(np.array([4, 0])).tolist() == [1, -3]
    assert values == Consecutive(-3, 5) and values != Consecutive(-3, 4)
    assert len(Consecutive(7, 0)) == 0 and np.asarray(Consecutive(7, 0)).shape == (0,)
    with pytest.raises(ValueError, match="range of -1 values"):
        Consecutive(0, -1)


def test_column_set_checks_its_columns():
    with pytest.raises(ValueError, match="different lengths"):
        ColumnSet({"a": np.zeros(3), "b": Consecutive(0, 4)})
    with pytest.raises(TypeError, match="'a': int64 values cannot be stored as int16"):
        ColumnSet({"a": np.zeros(3, np.int64)}, types={"a": pa.int16()})
    with pytest.raises(TypeError, match="cannot be stored as int64"):
        ColumnSet({"a": np.zeros(3, np.float32)}, types={"a": pa.int64()})


def test_columns_the_numpy_writer_refuses_go_to_arrow():
    strings = ColumnSet({"row_id": Consecutive(10, 3), "id": np.array(["a", "b", "c"], dtype=object),
                         "predicted_label": np.array([0, 2, 1], np.int16)}, types={"predicted_label": pa.int64()})
    with pytest.raises(numpy_parquet.NotEncodable):
        numpy_parquet.file_pieces(strings)
    pieces = table_pieces(strings)
    assert len(pieces) == 1
    table = pq.read_table(pa.BufferReader(pieces[0]))
    assert table.equals(strings.to_arrow())
    assert table.column("predicted_label").type == pa.int64() and table.column("row_id").to_pylist() == [10, 11, 12]
    empty = ColumnSet({"rank": Consecutive(4, 0), "given_label": np.zeros(0, np.int16)}, types={"given_label": pa.int64()})
    assert pq.read_table(pa.BufferReader(table_pieces(empty)[0])).schema == empty.schema()


def test_pieces_are_stored_whole_with_the_sha256_of_their_bytes(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.random(300_001).astype(np.float32)
    pieces = [b"head", memoryview(big), b"", memoryview(np.arange(5, dtype=np.int64)), bytearray(b"tail")]
    joined = b"".join(bytes(memoryview(piece).cast("B")) for piece in pieces)
    path = str(tmp_path / "out" / "part.bin")
    entry = put_bytes(LocalFileSystem(), path, pieces)
    assert entry == {"bytes": len(joined), "sha256": hashlib.sha256(joined).hexdigest()}
    assert open(path, "rb").read() == joined
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part.bin"]   # no staging file left
    assert put_bytes(LocalFileSystem(), path, joined) == entry
    memory = fsspec.filesystem("memory")   # other filesystems: joined, in one put, hashed meanwhile too
    assert put_bytes(memory, "/labelscan-test/part.bin", pieces) == entry
    assert memory.cat_file("/labelscan-test/part.bin") == joined
    memory.rm("/labelscan-test", recursive=True)
