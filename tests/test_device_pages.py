"""labelscan.io.device_pages: prediction pages read as stored and decoded on the GPU.

The page tables are checked on every machine by executing them with NumPy and pyarrow's snappy
(:func:`_execute`, what the kernels do); the kernels themselves, on a GPU (``gpu`` marker).
Either way the values must equal Arrow's reading bit for bit, and anything the device does not
decode must be refused (the scan then reads the partition with Arrow).
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelscan.io import device_pages, pages
from labelscan.io.dataset import plan_dataset
from labelscan.io.validate import LOWER_BOUND, UPPER_BOUND
from labelscan.xp import cupy_or_none
from tests.test_pages import FORMATS as PAGE_FORMATS, _arrow_values, _random_probs, _write, format_id

FORMATS = [options for options in PAGE_FORMATS if options.get("compression", "snappy") in ("snappy", "none")]
"""The writer options of :mod:`tests.test_pages` with the codecs the device decodes."""

DECODERS = ["host", pytest.param("device", marks=[pytest.mark.gpu, pytest.mark.skipif(
    cupy_or_none() is None, reason="needs CuPy and a GPU")])]
"""Page tables executed by :func:`_execute` (everywhere) or by the kernels (on a GPU)."""


def _execute(stored: device_pages.StoredPages, dtype) -> np.ndarray:
    """What :func:`labelscan.kernels.cuda_pages.launch_decode`'s kernels compute, on the host."""
    itemsize = np.dtype(dtype).itemsize
    buffer = np.zeros(stored.device_size, dtype=np.uint8)
    uploaded = np.concatenate(stored.uploads)
    buffer[:len(uploaded)] = uploaded
    snappy = stored.snappy_pages
    for source, size, output, output_size in zip(snappy["sources"], snappy["source_sizes"], snappy["outputs"],
                                                 snappy["output_sizes"]):
        expanded = pa.decompress(buffer[source:source + size].tobytes(), int(output_size), "snappy", asbytes=True)
        buffer[output:output + output_size] = np.frombuffer(expanded, dtype=np.uint8)
    values = np.zeros(stored.num_values, dtype=dtype)
    value_bytes = values.view(np.uint8)
    data = stored.data_pages
    for page in range(len(data["pages"])):
        content = buffer[data["pages"][page]:data["pages"][page] + data["page_sizes"][page]]
        levels, count, first = data["level_sizes"][page], data["counts"][page], data["first_values"][page]
        reference = buffer[data["references"][page]:data["references"][page] + levels]
        if not np.array_equal(content[:levels], reference):
            raise pages.Unsupported("levels differ")
        if data["dictionary_encoded"][page]:
            start = data["dictionaries"][page]
            dictionary = buffer[start:start + data["dictionary_sizes"][page] * itemsize].view(dtype)
            indices = pages.decode_hybrid(content[levels + 1:].tobytes(), int(content[levels]), int(count))
            values[first:first + count] = dictionary[indices]
        else:
            value_bytes[first * itemsize:(first + count) * itemsize] = content[levels:levels + count * itemsize]
    return values


def _partitions(folder, rows_per_partition=None):
    plan = plan_dataset(str(folder), rows_per_partition=rows_per_partition)
    return plan, plan.partitions


def _write_files(folder, probs, num_files, **options):
    folder.mkdir()
    for index, rows in enumerate(np.array_split(np.arange(len(probs)), num_files)):
        _write(folder / f"part-{index}.parquet", probs[rows], **options)
    return folder


def _stored_values(plan, spec, decode, leaves_of=None, bounds=(LOWER_BOUND, UPPER_BOUND)):
    leaves_of = leaves_of or device_pages.prediction_leaves(plan)
    if decode == "host":
        stored = device_pages.stored_pages(plan, spec, lambda size: np.empty(size, np.uint8), leaves_of)
        return _execute(stored, stored.dtype)
    import cupy

    return cupy.asnumpy(device_pages.read_column_on_device(plan, spec, leaves_of, *bounds))


def _check_equal_to_arrow(folder, decode, rows_per_partition=None):
    plan, partitions = _partitions(folder, rows_per_partition=rows_per_partition)
    expected = _arrow_values(str(folder))
    values = np.concatenate([_stored_values(plan, spec, decode) for spec in partitions])
    assert values.dtype == expected.dtype
    np.testing.assert_array_equal(values.view(f"u{values.itemsize}"), expected.view(f"u{values.itemsize}"))


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("options", FORMATS, ids=format_id)
@pytest.mark.parametrize("num_classes", [2, 10, 37])
def test_values_equal_arrows(tmp_path, decode, options, num_classes):
    folder = _write_files(tmp_path / "set", _random_probs(2_345, num_classes), 3, **{"row_group_size": 400, **options})
    _check_equal_to_arrow(folder, decode, rows_per_partition=1_000)


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("list_type", ["fixed", "list", "large"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_list_types_dtypes_and_wide_rows(tmp_path, decode, list_type, dtype):
    folder = _write_files(tmp_path / "set", _random_probs(1_000, 5, dtype), 2, list_type=list_type,
                          row_group_size=300)
    _check_equal_to_arrow(folder, decode, rows_per_partition=600)
    wide = _write_files(tmp_path / "wide", _random_probs(300, 1000, dtype), 1, list_type=list_type,
                        row_group_size=128)
    _check_equal_to_arrow(wide, decode)


@pytest.mark.parametrize("decode", DECODERS)
def test_a_partition_of_files_written_differently(tmp_path, decode):
    probs = _random_probs(3_000, 4)
    folder = tmp_path / "set"
    folder.mkdir()
    formats = [{}, {"compression": "none", "data_page_version": "2.0"}, {"use_dictionary": False, "data_page_size": 700}]
    for index, (rows, options) in enumerate(zip(np.array_split(np.arange(3_000), 3), formats)):
        _write(folder / f"part-{index}.parquet", probs[rows], row_group_size=400, **options)
    _check_equal_to_arrow(folder, decode, rows_per_partition=3_000)


def _write_columns(folder, probs, num_files, dtype=np.float32, **options):
    """A set of K float columns ``p0 .. p{K-1}`` (and labels)."""
    folder.mkdir()
    for index, rows in enumerate(np.array_split(np.arange(len(probs)), num_files)):
        columns = {"label": np.arange(len(rows)) % probs.shape[1]}
        columns.update((f"p{k}", probs[rows, k].astype(dtype)) for k in range(probs.shape[1]))
        pq.write_table(pa.table(columns), folder / f"part-{index}.parquet", **options)
    return folder


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("options", [{}, {"compression": "none", "data_page_version": "2.0"},
                                     {"use_dictionary": False, "data_page_size": 900}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_k_float_columns_come_column_after_column(tmp_path, decode, options, dtype):
    probs = _random_probs(2_500, 6, dtype)
    folder = _write_columns(tmp_path / "set", probs, 2, dtype, row_group_size=500, **options)
    plan = plan_dataset(str(folder), pred_probs_column="p", rows_per_partition=1_500)
    assert plan.pred_probs_columns is not None
    start = 0
    for spec in plan.partitions:
        values = _stored_values(plan, spec, decode)
        rows = probs[start:start + spec.num_rows]
        np.testing.assert_array_equal(values, rows.T.ravel())   # class 0's values, then class 1's...
        start += spec.num_rows


def test_page_tables_of_files_on_other_filesystems(tmp_path, memory_url):
    import fsspec

    folder = _write_files(tmp_path / "set", _random_probs(1_500, 6), 2, row_group_size=250)
    fs = fsspec.filesystem("memory")
    for path in sorted(folder.iterdir()):
        fs.pipe(f"{memory_url}/{path.name}", path.read_bytes())
    plan = plan_dataset(memory_url, rows_per_partition=500)
    values = np.concatenate([_stored_values(plan, spec, "host") for spec in plan.partitions])
    np.testing.assert_array_equal(values, _arrow_values(str(folder)))


def test_unreadable_page_headers_are_refused(tmp_path):
    folder = _write_files(tmp_path / "set", _random_probs(1_500, 6), 1, use_dictionary=False)
    plan, partitions = _partitions(folder)
    path = folder / "part-0.parquet"
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)
    stored = bytearray(path.read_bytes())
    stored[chunk.data_page_offset:chunk.data_page_offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(stored))
    with pytest.raises(pages.Unsupported):
        _stored_values(plan, partitions[0], "host")


def _refused(folder, decode):
    plan, partitions = _partitions(folder)
    try:
        for spec in partitions:
            _stored_values(plan, spec, decode)
    except pages.Unsupported:
        return True
    return False


def _write_list(path, column, labels=None):
    path.parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({"label": labels or [0, 1, 0], "pred_probs": column}), path)
    return path.parent


def _ragged_and_null_sets(tmp_path):
    values = pa.array([0.5, 0.5, None, 1.0, 0.25, 0.75], pa.float32())
    yield _write_list(tmp_path / "element" / "p.parquet", pa.FixedSizeListArray.from_arrays(values, 2))
    null_row = pa.array([[0.5, 0.5], None, [0.25, 0.75]], pa.list_(pa.float32(), 2))
    yield _write_list(tmp_path / "row" / "p.parquet", null_row)
    ragged = pa.array([[1.0], [0.5, 0.5], [0.2, 0.3, 0.5]], pa.list_(pa.float32()))
    yield _write_list(tmp_path / "ragged" / "p.parquet", ragged)


@pytest.mark.parametrize("decode", DECODERS)
def test_nulls_ragged_lists_and_other_codecs_are_refused(tmp_path, decode):
    good = pa.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]], pa.list_(pa.float32()))
    assert not _refused(_write_list(tmp_path / "good" / "p.parquet", good), decode)   # sections remembered
    for folder in _ragged_and_null_sets(tmp_path):
        assert _refused(folder, decode), folder
    assert _refused(_write_files(tmp_path / "zstd", _random_probs(100, 3), 1, compression="zstd"), decode)


LABEL_FORMATS = [({}, "int64"), ({"use_dictionary": False}, "int64"), ({"data_page_version": "2.0"}, "int32"),
                 ({"compression": "none", "data_page_size": 500}, "int32")]


def _label_set(folder, dtype, nullable, options):
    labels = pa.array(np.random.default_rng(1).integers(0, 7, 3_000), type=dtype)
    schema = pa.schema([pa.field("label", labels.type, nullable=nullable),
                        pa.field("pred_probs", pa.list_(pa.float32(), 7))])
    probs = pa.FixedSizeListArray.from_arrays(pa.array(_random_probs(3_000, 7).ravel()), 7)
    folder.mkdir()
    pq.write_table(pa.table([labels, probs], schema=schema), folder / "p.parquet", row_group_size=1_000, **options)
    return folder, labels.to_numpy()


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize("options,dtype", LABEL_FORMATS)
@pytest.mark.parametrize("nullable", [True, False])
def test_labels_equal_arrows(tmp_path, decode, options, dtype, nullable):
    folder, labels = _label_set(tmp_path / "set", dtype, nullable, options)
    plan, partitions = _partitions(folder, rows_per_partition=2_000)
    decoded = np.concatenate([_stored_values(plan, spec, decode, device_pages.label_leaves(plan), (0, 6))
                              for spec in partitions])
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded, labels)


def test_labels_of_other_integer_types_are_left_to_arrow(tmp_path):
    folder, _ = _label_set(tmp_path / "set", "int16", True, {})
    plan, partitions = _partitions(folder)
    with pytest.raises(pages.Unsupported):
        _stored_values(plan, partitions[0], "host", device_pages.label_leaves(plan))


def test_predictions_and_labels_read_in_one_batch_each_refused_alone(tmp_path):
    folder, _ = _label_set(tmp_path / "set", "int16", True, {})
    plan, partitions = _partitions(folder)
    allocate = lambda size: np.empty(size, np.uint8)   # noqa: E731
    predictions, labels = device_pages.stored_columns(plan, partitions[0], allocate,
                                                      [device_pages.prediction_leaves(plan), device_pages.label_leaves(plan)])
    assert isinstance(labels, pages.Unsupported)   # int16 labels: Arrow's reader; the predictions still decode
    alone = device_pages.stored_pages(plan, partitions[0], allocate, device_pages.prediction_leaves(plan))
    assert predictions.device_size == alone.device_size
    for name, table in alone.data_pages.items():
        np.testing.assert_array_equal(predictions.data_pages[name], table)
    np.testing.assert_array_equal(_execute(predictions, predictions.dtype), _execute(alone, alone.dtype))


def test_refused_predictions_refuse_the_batch_before_anything_is_read(tmp_path):
    folder = _write_files(tmp_path / "zstd", _random_probs(1_000, 3), 1, compression="zstd")
    plan, partitions = _partitions(folder)
    allocated = []
    with pytest.raises(pages.Unsupported, match="codec ZSTD"):
        device_pages.stored_columns(plan, partitions[0], allocated.append,
                                    [device_pages.prediction_leaves(plan), device_pages.label_leaves(plan)])
    assert allocated == []


def test_float16_predictions_are_left_to_the_host_reader(tmp_path):
    half = pa.FixedSizeListArray.from_arrays(pa.array(np.full(6, 0.5, np.float16)), 2)
    plan, partitions = _partitions(_write_list(tmp_path / "half" / "p.parquet", half))
    assert device_pages.read_partition_on_device(plan, partitions[0]) is None


def test_a_partition_left_to_arrow_is_reported_once_per_reason(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(device_pages, "_reported_reasons", set())
    folder = _write_files(tmp_path / "zstd", _random_probs(3_000, 3), 3, compression="zstd")
    plan, partitions = _partitions(folder, rows_per_partition=1_000)
    with caplog.at_level("WARNING", logger="labelscan.io.device_pages"):
        assert all(device_pages.read_partition_on_device(plan, spec) is None for spec in partitions)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "codec ZSTD" in message and "part-0.parquet" in message and "rows 0..999" in message


# --- on the GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")
@pytest.mark.parametrize("options", [{}, {"use_dictionary": False}, {"data_page_version": "2.0"}])
def test_corrupt_page_bytes_are_refused_or_decoded_never_a_fault(tmp_path, options):
    import cupy

    folder = _write_files(tmp_path / "set", _random_probs(3_000, 10), 1, data_page_size=4000, **options)
    path = folder / "part-0.parquet"
    stored = path.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(40):
        corrupt = bytearray(stored)
        start = int(rng.integers(4, len(stored) // 2))
        corrupt[start:start + int(rng.integers(1, 64))] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()[:1]
        path.write_bytes(bytes(corrupt))
        try:
            plan, partitions = _partitions(folder)
            _stored_values(plan, partitions[0], "device")
            outcomes.add("decoded")
        except (pages.Unsupported, Exception) as error:   # noqa: BLE001 - Arrow may refuse the footer
            outcomes.add(type(error).__name__)
        assert int(cupy.arange(4).sum()) == 6   # the device is still usable
    assert "Unsupported" in outcomes


@pytest.mark.gpu
@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")
def test_partitions_read_on_the_device_or_left_to_the_host_reader(tmp_path):
    import cupy

    probs = _random_probs(2_000, 4)
    labels = np.arange(2_000) % 4
    folder = _write_files(tmp_path / "good", probs, 1, labels=labels)
    plan, partitions = _partitions(folder)
    data = device_pages.read_partition_on_device(plan, partitions[0])
    assert isinstance(data.pred_probs, cupy.ndarray) and data.pred_probs.shape == (2_000, 4)
    np.testing.assert_array_equal(cupy.asnumpy(data.pred_probs), probs)
    assert isinstance(data.labels, cupy.ndarray) and data.labels.dtype == np.int64
    np.testing.assert_array_equal(cupy.asnumpy(data.labels), labels)
    plan, partitions = _partitions(_write_files(tmp_path / "int16", probs, 1, labels=labels.astype(np.int16)))
    data = device_pages.read_partition_on_device(plan, partitions[0])   # labels by Arrow
    assert isinstance(data.labels, np.ndarray)
    np.testing.assert_array_equal(data.labels, labels)
    plan = plan_dataset(str(_write_columns(tmp_path / "columns", probs, 1)), pred_probs_column="p")
    data = device_pages.read_partition_on_device(plan, plan.partitions[0])
    assert data.pred_probs.flags.c_contiguous and data.pred_probs.shape == (2_000, 4)
    np.testing.assert_array_equal(cupy.asnumpy(data.pred_probs), probs)
    bad = probs.copy()
    bad[1_234, 2] = np.nan
    plan, partitions = _partitions(_write_files(tmp_path / "nan", bad, 1))
    assert device_pages.read_partition_on_device(plan, partitions[0]) is None
    plan, partitions = _partitions(_write_files(tmp_path / "labels", probs, 1, labels=labels + 3))
    assert device_pages.read_partition_on_device(plan, partitions[0]) is None


@pytest.mark.gpu
@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")
def test_device_refuses_labels_out_of_bounds(tmp_path):
    folder, _ = _label_set(tmp_path / "set", "int64", True, {})
    plan, partitions = _partitions(folder)
    with pytest.raises(pages.Unsupported):   # labels 0..6, K = 6
        _stored_values(plan, partitions[0], "device", device_pages.label_leaves(plan), (0, 5))


@pytest.mark.gpu
@pytest.mark.skipif(cupy_or_none() is None, reason="needs CuPy and a GPU")
def test_a_partition_too_large_to_decode_on_the_device_goes_to_the_host_reader(tmp_path):
    import cupy

    probs = _random_probs(200_000, 10)
    plan, partitions = _partitions(_write_files(tmp_path / "set", probs, 1))
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    limit = pool.get_limit()
    pool.set_limit(size=pool.used_bytes() + 2 * probs.nbytes)   # the values fit, not the stored bytes beside
    try:
        with pytest.raises(pages.Unsupported, match="device memory"):
            _stored_values(plan, partitions[0], "device")
        assert device_pages.read_partition_on_device(plan, partitions[0]) is None
    finally:
        pool.set_limit(size=limit)
