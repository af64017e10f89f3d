"""labelscan.io.pages: a list column decoded from its pages equals Arrow's reading, or is refused."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelscan.io import pages
from labelscan.io.dataset import _range_reader, plan_dataset, read_partition
from labelscan.io.thrift import ThriftError, read_struct


def _write(path, pred_probs, list_type="fixed", labels=None, **write_options):
    num_rows, num_classes = pred_probs.shape
    flat = pa.array(pred_probs.ravel())
    if list_type == "fixed":
        column = pa.FixedSizeListArray.from_arrays(flat, num_classes)
    else:
        offsets = np.arange(0, pred_probs.size + 1, num_classes,
                            dtype=np.int64 if list_type == "large" else np.int32)
        column = (pa.LargeListArray if list_type == "large" else pa.ListArray).from_arrays(pa.array(offsets), flat)
    labels = np.arange(num_rows) % num_classes if labels is None else labels
    pq.write_table(pa.table({"label": labels, "pred_probs": column}), path, **write_options)
    return path


def _fast_values(path, num_classes):
    with pa.OSFile(str(path), "rb") as handle:
        parquet = pq.ParquetFile(handle)
        leaf = pages.list_leaf(parquet, "pred_probs", num_classes)
        assert leaf is not None
        return pages.read_list_values(parquet, _range_reader(handle), list(range(parquet.metadata.num_row_groups)), leaf)


def _arrow_values(path):
    column = pq.read_table(path, columns=["pred_probs"]).column("pred_probs")
    return np.concatenate([chunk.flatten().to_numpy() for chunk in column.chunks])


def _random_probs(num_rows, num_classes, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(num_classes), num_rows).astype(dtype)
    probs[::7] = probs[0]          # repeated rows: the dictionary holds fewer values than rows
    return probs


FORMATS = [
    {},
    {"compression": "none"},
    {"compression": "zstd"},
    {"compression": "gzip"},
    {"compression": "brotli"},
    {"compression": "lz4"},
    {"use_dictionary": False},
    {"data_page_version": "2.0"},
    {"data_page_version": "2.0", "compression": "none"},
    {"data_page_size": 3000, "row_group_size": 700},          # many pages, rows across pages
    {"data_page_size": 3000, "data_page_version": "2.0"},
    {"write_page_checksum": True},
    {"dictionary_pagesize_limit": 2000},                       # dictionary full after a few pages
]
"""Writer options of the files every reader must read like Arrow."""


def format_id(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"


@pytest.mark.parametrize("options", FORMATS, ids=format_id)
@pytest.mark.parametrize("num_classes", [2, 10, 37])
def test_values_equal_arrows(tmp_path, options, num_classes):
    probs = _random_probs(2_345, num_classes)
    path = _write(tmp_path / "p.parquet", probs, **options)
    fast = _fast_values(path, num_classes)
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(fast.view(np.uint32), _arrow_values(path).view(np.uint32))


@pytest.mark.parametrize("list_type", ["fixed", "list", "large"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_list_types_and_dtypes(tmp_path, list_type, dtype):
    probs = _random_probs(1_000, 5, dtype)
    path = _write(tmp_path / "p.parquet", probs, list_type, row_group_size=300)
    fast = _fast_values(path, 5)
    assert fast.dtype == dtype
    np.testing.assert_array_equal(fast, probs.ravel())


def test_wide_rows(tmp_path):
    probs = _random_probs(300, 1000)
    path = _write(tmp_path / "p.parquet", probs, row_group_size=128)
    np.testing.assert_array_equal(_fast_values(path, 1000), probs.ravel())


def _refused(path, num_classes):
    with pa.OSFile(str(path), "rb") as handle:
        parquet = pq.ParquetFile(handle)
        leaf = pages.list_leaf(parquet, "pred_probs", num_classes)
        if leaf is None:
            return True
        try:
            pages.read_list_values(parquet, _range_reader(handle), list(range(parquet.metadata.num_row_groups)), leaf)
        except pages.Unsupported:
            return True
    return False


def test_null_rows_and_elements_are_refused(tmp_path):
    values = pa.array([0.5, 0.5, None, 1.0, 0.25, 0.75], pa.float32())
    null_element = pa.FixedSizeListArray.from_arrays(values, 2)
    pq.write_table(pa.table({"label": [0, 1, 0], "pred_probs": null_element}), tmp_path / "e.parquet")
    assert _refused(tmp_path / "e.parquet", 2)
    null_row = pa.array([[0.5, 0.5], None, [0.25, 0.75]], pa.list_(pa.float32(), 2))
    pq.write_table(pa.table({"label": [0, 1, 0], "pred_probs": null_row}), tmp_path / "r.parquet")
    assert _refused(tmp_path / "r.parquet", 2)


def test_lists_of_other_lengths_are_refused_even_with_the_right_total(tmp_path):
    # 3 rows, 6 values, K = 2, but rows of 1, 2 and 3 values
    ragged = pa.array([[1.0], [0.5, 0.5], [0.2, 0.3, 0.5]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"label": [0, 1, 0], "pred_probs": ragged}), tmp_path / "p.parquet")
    assert _refused(tmp_path / "p.parquet", 2)


def test_a_section_remembered_as_valid_does_not_pass_other_levels(tmp_path):
    good = pa.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"label": [0, 1, 0], "pred_probs": good}), tmp_path / "good.parquet")
    assert not _refused(tmp_path / "good.parquet", 2)       # its sections are now remembered
    ragged = pa.array([[1.0], [0.5, 0.5], [0.2, 0.3, 0.5]], pa.list_(pa.float32()))
    pq.write_table(pa.table({"label": [0, 1, 0], "pred_probs": ragged}), tmp_path / "ragged.parquet")
    assert _refused(tmp_path / "ragged.parquet", 2)         # same value count, other repetition levels


def test_float16_and_non_list_columns_are_left_to_arrow(tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "MAX_CORES", 1 << 20)
    assert pages.preferred(np.float32) and pages.preferred(np.float64)
    assert not pages.preferred(np.float16)          # the files are not even opened for it
    half = pa.FixedSizeListArray.from_arrays(pa.array(np.full(4, 0.5, np.float16)), 2)
    pq.write_table(pa.table({"label": [0, 1], "pred_probs": half}), tmp_path / "h.parquet")
    assert _refused(tmp_path / "h.parquet", 2)
    pq.write_table(pa.table({"label": [0, 1], "pred_probs": [0.5, 0.5]}), tmp_path / "f.parquet")
    with pq.ParquetFile(tmp_path / "f.parquet") as parquet:
        assert pages.list_leaf(parquet, "pred_probs", 1) is None


def test_a_corrupt_page_is_refused_and_arrow_names_the_row_group(tmp_path):
    from labelscan.errors import InputError

    probs = _random_probs(2_000, 4)
    path = _write(tmp_path / "p.parquet", probs, row_group_size=500, write_page_checksum=True,
                  use_dictionary=False, compression="none")
    data = bytearray(path.read_bytes())
    chunk = pq.ParquetFile(path).metadata.row_group(2).column(1)
    data[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0x10   # a value's bits
    path.write_bytes(bytes(data))
    assert _refused(path, 4)
    plan = plan_dataset(str(tmp_path))
    with pytest.raises(InputError, match="row group 2"):
        read_partition(plan, plan.partitions[0])


def test_read_partition_uses_pages_and_matches_arrow(tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "MAX_CORES", 1 << 20)     # whatever this machine's cores
    probs = _random_probs(5_000, 6)
    _write(tmp_path / "a.parquet", probs[:3_000], list_type="list", row_group_size=1_000)
    _write(tmp_path / "b.parquet", probs[3_000:], list_type="list", row_group_size=1_000,
           labels=np.arange(2_000) % 6)
    plan = plan_dataset(str(tmp_path), rows_per_partition=2_500)
    decoded = []
    read_values = pages.read_list_values
    monkeypatch.setattr(pages, "read_list_values", lambda *args: decoded.append(args[2]) or read_values(*args))
    fast = [read_partition(plan, spec) for spec in plan.partitions]
    assert sum(map(len, decoded)) == 5      # all five row groups by their pages
    monkeypatch.setattr(pages, "MAX_CORES", 0)      # a many-core host: every piece read by Arrow
    slow = [read_partition(plan, spec) for spec in plan.partitions]
    assert sum(map(len, decoded)) == 5
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a.pred_probs, b.pred_probs)
        np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(np.concatenate([part.pred_probs for part in fast]), probs)


@pytest.mark.parametrize("bit_width", [1, 2, 3, 7, 8, 13, 18, 24, 31, 32])
def test_bit_unpacking(bit_width):
    rng = np.random.default_rng(bit_width)
    values = rng.integers(0, 1 << bit_width, 8 * 37, dtype=np.int64)
    bits = ((values[:, None] >> np.arange(bit_width)) & 1).astype(np.uint8).ravel()
    packed = np.packbits(bits, bitorder="little").tobytes()
    np.testing.assert_array_equal(pages._unpack(np.frombuffer(packed, np.uint8), bit_width), values)


def test_hybrid_runs():
    # RLE run of 5 x value 3 (width 2), then one bit-packed group of 8 values, of which 6 are used
    packed_values = [0, 1, 2, 3, 3, 2, 1, 0]
    bits = np.array([(v >> b) & 1 for v in packed_values for b in range(2)], dtype=np.uint8)
    stream = bytes([5 << 1, 3, (1 << 1) | 1]) + np.packbits(bits, bitorder="little").tobytes()
    np.testing.assert_array_equal(pages.decode_hybrid(stream, 2, 11), [3] * 5 + packed_values[:6])
    with pytest.raises(pages.Unsupported):
        pages.decode_hybrid(stream[:4], 2, 11)


def test_thrift_struct():
    # field 1 i32 = 7 (zigzag 14), field 3 struct {field 1 bool true}, field 20 (long form) i64 = -2
    encoded = bytes([0x15, 14, 0x2C, 0x11, 0x00, 0x06, 40, 3, 0x00])
    assert read_struct(encoded) == ({1: 7, 3: {1: True}, 20: -2}, len(encoded))
    with pytest.raises(ThriftError):
        read_struct(encoded[:-1])


@pytest.mark.parametrize("statistics_bytes", [0, 40, 300, 5_000])
def test_thrift_structs_round_trip_within_and_past_the_window(statistics_bytes):
    """Headers shorter and longer than the parse window (long page statistics), nested, with
    wide integers, booleans, strings and lists; every truncation is refused."""
    from labelscan.io.thrift import BINARY, BOOLEAN_TRUE, I32, I64, LIST, STRUCT, WINDOW, write_struct

    statistics = [(1, BINARY, b"x" * statistics_bytes), (2, BINARY, b"y"), (7, BOOLEAN_TRUE, False)]
    header = write_struct([(1, I32, 0), (2, I32, 1 << 30), (3, I32, -(1 << 31)), (4, I64, -(1 << 62)),
                           (5, STRUCT, [(1, I32, 262_144), (2, I32, 0), (3, I32, 3), (4, I32, 3),
                                        (5, STRUCT, statistics)]),
                           (9, LIST, (I32, [1, -2, 300])), (40, BOOLEAN_TRUE, True)])
    expected = {1: 0, 2: 1 << 30, 3: -(1 << 31), 4: -(1 << 62),
                5: {1: 262_144, 2: 0, 3: 3, 4: 3, 5: {1: None, 2: None, 7: False}}, 9: [1, -2, 300], 40: True}
    assert (len(header) > WINDOW) == (statistics_bytes > WINDOW - 40)
    body = bytes(range(256)) * 4
    stored = memoryview(np.frombuffer(b"ab" + header + body, dtype=np.uint8))
    assert read_struct(stored, 2) == (expected, 2 + len(header))
    for cut in sorted({1, len(header) // 2, len(header) - 1}):
        with pytest.raises(ThriftError):
            read_struct(memoryview(np.frombuffer(b"ab" + header[:cut], dtype=np.uint8)), 2)


def test_page_headers_missing_fields_are_refused():
    leaf = pages.ListLeaf(1, np.dtype("<f4"), 2, 3, 1, pa.list_(pa.float32(), 2))
    header_without_sizes = bytes([0x15, 0x00, 0x00])      # only field 1 (page type 0)
    with pytest.raises(pages.Unsupported):
        pages._decode_chunk(_FakeChunk(len(header_without_sizes)), lambda offset, size: header_without_sizes,
                            leaf, pages.ContiguousValues(np.empty(4, np.float32)))


class _FakeChunk:
    """The column chunk metadata :func:`pages._decode_chunk` reads."""

    compression = "UNCOMPRESSED"
    num_values = 4
    has_dictionary_page = False
    data_page_offset = 0

    def __init__(self, size):
        self.total_compressed_size = size
