"""Converting arrays to parquet sets (labelscan.io.convert) and the synthetic demo data."""

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from cleanlab.filter import find_label_issues

from labelscan import demo_data
from labelscan.errors import DestinationError, InputError, UsageError
from labelscan.io import convert, convert_arrays, plan_dataset, read_partition


def read_back(urls, id_column=None):
    """Labels, predictions and ids of a written set, through the reader the scan uses."""
    plan = plan_dataset(urls, id_column=id_column)
    parts = [read_partition(plan, spec) for spec in plan.partitions]
    ids = np.concatenate([part.ids for part in parts]) if id_column else None
    return (plan, np.concatenate([part.labels for part in parts]),
            np.concatenate([part.pred_probs for part in parts]), ids)


def arrays(num_rows, num_classes, dtype, seed=0):
    dataset = demo_data.make_noisy_dataset(num_rows, num_classes, dtype=dtype, seed=seed)
    return dataset["labels"], dataset["pred_probs"]


@pytest.fixture
def small_npy_blocks(monkeypatch):
    """Read .npy files in blocks of a few hundred bytes, to cross row-group boundaries."""
    monkeypatch.setattr(convert, "NPY_BLOCK_BYTES", 256)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_npy_round_trip(tmp_path, small_npy_blocks, dtype):
    labels, pred_probs = arrays(1003, 4, dtype)
    ids = np.arange(1003) * 10 + 7
    for name, array in [("p", pred_probs), ("y", labels.astype(np.int16)), ("ids", ids)]:
        np.save(tmp_path / f"{name}.npy", array)
    urls = convert_arrays(str(tmp_path / "p.npy"), str(tmp_path / "y.npy"), str(tmp_path / "out"),
                          rows_per_file=400, row_group_rows=150, ids_path=str(tmp_path / "ids.npy"),
                          class_names=["a", "b", "c", "d"])
    assert [url.rsplit("/", 1)[1] for url in urls] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    metadata = pq.ParquetFile(urls[0]).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [150, 150,
                                                                                          100]
    assert pq.ParquetFile(urls[2]).metadata.num_rows == 203
    plan, got_labels, got_pred_probs, got_ids = read_back(str(tmp_path / "out"), id_column="id")
    assert plan.class_names == ("a", "b", "c", "d")
    assert got_pred_probs.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got_pred_probs, pred_probs)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(got_ids, ids)


def test_npy_big_endian_and_remote(memory_url):
    labels, pred_probs = arrays(50, 3, np.float64)
    fs = fsspec.filesystem("memory")
    for name, array in [("p", pred_probs.astype(">f8")), ("y", labels.astype(">i4"))]:
        with fs.open(f"{memory_url}/{name}.npy", "wb") as handle:
            np.save(handle, array)
    urls = convert_arrays(f"{memory_url}/p.npy", f"{memory_url}/y.npy", f"{memory_url}/out")
    assert urls == [f"{memory_url}/out/part-00000.parquet"]
    _, got_labels, got_pred_probs, _ = read_back(urls)
    np.testing.assert_array_equal(got_pred_probs, pred_probs)
    np.testing.assert_array_equal(got_labels, labels)


@pytest.mark.parametrize("header", [True, False])
def test_csv_round_trip(tmp_path, monkeypatch, header):
    monkeypatch.setattr(convert, "CSV_BLOCK_BYTES", 4096)
    labels, pred_probs = arrays(700, 5, np.float64)
    np.savetxt(tmp_path / "p.csv", pred_probs, fmt="%.17g", delimiter=",",
               header=",".join(f"p{k}" for k in range(5)) if header else "", comments="")
    np.savetxt(tmp_path / "y.csv", labels, fmt="%d", header="label" if header else "",
               comments="")
    (tmp_path / "ids.csv").write_text("id\n" + "\n".join(f"ex{i}" for i in range(700)) + "\n")
    urls = convert_arrays(str(tmp_path / "p.csv"), str(tmp_path / "y.csv"), str(tmp_path / "out"),
                          rows_per_file=300, row_group_rows=128, ids_path=str(tmp_path / "ids.csv"))
    assert len(urls) == 3
    _, got_labels, got_pred_probs, got_ids = read_back(urls, id_column="id")
    np.testing.assert_array_equal(got_pred_probs, pred_probs)
    np.testing.assert_array_equal(got_labels, labels)
    assert list(got_ids) == [f"ex{i}" for i in range(700)]


def test_mixed_npy_and_csv(tmp_path):
    labels, pred_probs = arrays(20, 3, np.float32)
    np.save(tmp_path / "p.npy", pred_probs)
    (tmp_path / "y.csv").write_text("\n".join(map(str, labels)) + "\n")
    _, got_labels, got_pred_probs, _ = read_back(
        convert_arrays(str(tmp_path / "p.npy"), str(tmp_path / "y.csv"), str(tmp_path / "out")))
    np.testing.assert_array_equal(got_pred_probs, pred_probs)
    np.testing.assert_array_equal(got_labels, labels)


def test_bad_conversions(tmp_path):
    labels, pred_probs = arrays(20, 3, np.float32)
    paths = {}
    for name, array in [("p", pred_probs), ("y", labels), ("short", labels[:19]),
                        ("float_labels", labels.astype(float)), ("p1d", pred_probs[:, 0]),
                        ("fortran", np.asfortranarray(pred_probs))]:
        np.save(tmp_path / f"{name}.npy", array)
        paths[name] = str(tmp_path / f"{name}.npy")
    out = str(tmp_path / "out")
    with pytest.raises(InputError, match="labels ends after 19 rows, pred_probs has more"):
        convert_arrays(paths["p"], paths["short"], out)
    with pytest.raises(InputError, match="labels must be integers"):
        convert_arrays(paths["p"], paths["float_labels"], out)
    with pytest.raises(InputError, match="pred_probs must be a 2-D"):
        convert_arrays(paths["p1d"], paths["y"], out)
    with pytest.raises(InputError, match="Fortran-ordered"):
        convert_arrays(paths["fortran"], paths["y"], out)
    with pytest.raises(UsageError, match="2 class names given for K=3"):
        convert_arrays(paths["p"], paths["y"], out, class_names=["a", "b"])
    with pytest.raises(UsageError, match=".npy or .csv"):
        convert_arrays(str(tmp_path / "p.parquet"), paths["y"], out)
    (tmp_path / "short.csv").write_text("\n".join(map(str, labels[:15])) + "\n")
    with pytest.raises(InputError, match="labels ends after 15 rows, pred_probs has more"):
        convert_arrays(paths["p"], str(tmp_path / "short.csv"), out, rows_per_file=4)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    (tmp_path / "bad.csv").write_text("0.5,0.5\n0.5,oops\n")
    with pytest.raises(InputError, match="cannot parse CSV"):
        convert_arrays(str(tmp_path / "bad.csv"), paths["y"], str(tmp_path / "out-csv"))


def test_missing_inputs_are_named(tmp_path, memory_url):
    labels, pred_probs = arrays(20, 3, np.float32)
    np.save(tmp_path / "p.npy", pred_probs)
    np.save(tmp_path / "y.npy", labels)
    for role, missing, pred_probs_path, labels_path in [
            ("pred_probs", str(tmp_path / "nope.npy"), str(tmp_path / "nope.npy"), str(tmp_path / "y.npy")),
            ("labels", f"{memory_url}/nope.csv", str(tmp_path / "p.npy"), f"{memory_url}/nope.csv")]:
        with pytest.raises(InputError) as raised:
            convert_arrays(pred_probs_path, labels_path, str(tmp_path / "out"))
        assert str(raised.value) == f"no such {role} file in {missing}" and raised.value.path == missing
    with pytest.raises(InputError, match=f"no such ids file in {tmp_path / 'ids.npy'}"):
        convert_arrays(str(tmp_path / "p.npy"), str(tmp_path / "y.npy"), str(tmp_path / "out"),
                       ids_path=str(tmp_path / "ids.npy"))
    assert not (tmp_path / "out").exists()


def test_existing_parts_need_overwrite(tmp_path):
    labels, pred_probs = arrays(30, 3, np.float32)
    np.save(tmp_path / "p.npy", pred_probs)
    np.save(tmp_path / "y.npy", labels)
    args = (str(tmp_path / "p.npy"), str(tmp_path / "y.npy"), str(tmp_path / "out"))
    assert len(convert_arrays(*args, rows_per_file=10)) == 3
    with pytest.raises(DestinationError, match="already holds 3 parquet parts"):
        convert_arrays(*args)
    assert len(convert_arrays(*args, overwrite=True)) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00000.parquet"]


# -- demo data -------------------------------------------------------------------------------------

def test_noisy_dataset_is_realistic():
    dataset = demo_data.make_noisy_dataset(20_000, 10, noise_rate=0.2, seed=3)
    labels, true_labels = dataset["labels"], dataset["true_labels"]
    pred_probs, noise_matrix = dataset["pred_probs"], dataset["noise_matrix"]
    assert labels.dtype == true_labels.dtype == np.int64 and pred_probs.dtype == np.float32
    np.testing.assert_allclose(noise_matrix.sum(axis=0), 1)
    np.testing.assert_allclose(np.diag(noise_matrix), 0.8)
    np.testing.assert_allclose(pred_probs.sum(axis=1), 1, rtol=1e-5)
    is_error = labels != true_labels
    assert 0.18 < is_error.mean() < 0.22
    found = find_label_issues(labels, pred_probs)
    precision = (found & is_error).sum() / found.sum()
    recall = (found & is_error).sum() / is_error.sum()
    assert 0.7 < precision < 0.95 and 0.7 < recall < 0.95


def test_class_imbalance():
    counts = np.bincount(demo_data.make_noisy_dataset(20_000, 4, class_imbalance=np.log(8),
                                                      noise_rate=0.0)["true_labels"])
    assert 6 < counts[0] / counts[3] < 10


def test_demo_dataset_files_match_in_memory_generation(memory_url):
    written = demo_data.write_demo_dataset(memory_url, num_rows=2_500, num_classes=5,
                                           rows_per_file=1_000, row_group_rows=300, seed=7,
                                           dtype=np.float16)
    assert len(written["paths"]) == 3 and written["num_rows"] == 2_500
    plan, labels, pred_probs, _ = read_back(written["paths"])
    assert plan.num_rows == 2_500 and plan.pred_probs_dtype == np.float16
    first = demo_data.make_noisy_dataset(1_000, 5, seed=7, dtype=np.float16)
    np.testing.assert_array_equal(pred_probs[:1_000], first["pred_probs"])
    np.testing.assert_array_equal(labels[:1_000], first["labels"])
    np.testing.assert_array_equal(written["noise_matrix"], first["noise_matrix"])
    true_labels = pq.read_table(fsspec.open(written["paths"][0]).open(),
                                columns=["true_label"]).column(0).to_numpy()
    np.testing.assert_array_equal(true_labels, first["true_labels"])
