"""Shared pytest fixtures."""

import uuid

import fsspec
import pyarrow.parquet as pq
import pytest


@pytest.fixture
def memory_url():
    """A fresh ``memory://`` directory URL, removed after the test."""
    fs = fsspec.filesystem("memory")
    root = f"/labelscan-test-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture
def write_parquet():
    """``write_parquet(url, table, row_group_rows=None, **kwargs)`` writes a parquet file via fsspec."""

    def write(url, table, row_group_rows=None, **kwargs):
        with fsspec.open(url, "wb", auto_mkdir=True) as handle:
            pq.write_table(table, handle, row_group_size=row_group_rows, **kwargs)
        return url

    return write


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1; yields the storage options that reach it."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": f"http://{host}:{port}"}}
    yield options
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture
def s3_url(s3_server):
    """``(url, storage_options)`` of a fresh, empty bucket on the moto server."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"labelscan-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**s3_server).mkdir(bucket)
    return f"s3://{bucket}", s3_server


def write_noisy_set(folder, rows, classes, files, row_group_rows, seed):
    """Write a synthetic noisy prediction set as ``files`` parquet files under ``folder``.

    Columns ``label`` (int64) and ``pred_probs`` (fixed_size_list<float32, classes>).
    """
    import numpy as np
    import pyarrow as pa

    from labelscan.demo_data import make_noisy_dataset

    data = make_noisy_dataset(rows, classes, noise_rate=0.25, seed=seed)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        table = pa.table({"label": data["labels"][start:stop],
                          "pred_probs": pa.FixedSizeListArray.from_arrays(
                              pa.array(data["pred_probs"][start:stop].ravel()), classes)})
        pq.write_table(table, f"{folder}/part-{index}.parquet", row_group_size=row_group_rows)
    return folder


@pytest.fixture(scope="module")
def threaded_client():
    """Workers as threads of this process, so monkeypatches and ``caplog`` reach them."""
    import distributed

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=":0") as dask_client:
        yield dask_client


# ---------------------------------------------------------------------------------------------
# measured figures (tests/test_fault_kills.py, tests/test_load.py): shown after the run and
# written to <pytest basetemp>/reliability.json

_FIGURES = {}


@pytest.fixture(scope="session")
def reliability_figures(tmp_path_factory):
    """A dict that tests fill with measured figures; dumped to ``<basetemp>/reliability.json``."""
    import json

    yield _FIGURES
    path = tmp_path_factory.getbasetemp() / "reliability.json"
    path.write_text(json.dumps(_FIGURES, indent=2, sort_keys=True, default=str) + "\n")


def pytest_collection_modifyitems(config, items):
    """``slow`` tests run only when a ``-m`` expression is given (``-m slow``, ``-m "slow or not
    slow"``): the README/CI command ``python -m pytest -q`` stays within the CI time budget."""
    if config.getoption("markexpr", ""):
        return
    skip = pytest.mark.skip(reason="slow: select with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if _FIGURES:
        terminalreporter.section("labelscan reliability figures")
        for name, value in sorted(_FIGURES.items()):
            terminalreporter.write_line(f"{name}: {value}")
