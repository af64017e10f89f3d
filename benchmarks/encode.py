"""Output encoding benchmark: a mask part encoded alone and beside threads running Python.

A scan's workers encode mask and issue parts while their other threads run Python (Dask,
CuPy launches, NumPy calls). :func:`labelscan.io.atomic.parquet_bytes` writes into an Arrow
buffer; the baseline writes the same table with the same options into a Python ``BytesIO``,
where Arrow takes the GIL for each page it writes; a third encoding writes min/max statistics
for the row keys only (:func:`labelscan.io.commit.row_key_statistics`); ``numpy`` is what scans
write their mask parts with (:func:`labelscan.io.atomic.table_pieces` on the columns as a
scan holds them, :func:`mask_like_columns`: NumPy-encoded, row-key statistics). For each number
of busy threads, each encoding of one mask-shaped table (``row_id`` int64, ``is_label_issue``
bool, ``label_quality`` float32, ``predicted_label`` int64), ``--repeat`` times; records the
median seconds and the bytes (identical for the first two: checked).

Run: ``python -m benchmarks.encode --rows 13000000 --busy 0,1,3 --out benchmarks/results/encode.json``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import threading
import time

import numpy as np
import pyarrow as pa

from benchmarks.cpu import Recorder, machine_info, package_versions
from labelscan.io.atomic import parquet_bytes, table_pieces, write_parquet
from labelscan.io.column_set import ColumnSet, Consecutive
from labelscan.io.commit import row_key_statistics


def mask_like_columns(num_rows: int, seed: int = 0, first_row: int = 0) -> ColumnSet:
    """A mask part as a scan holds it: ``num_rows`` rows from ``first_row``, 10% flagged, 10
    classes (row ids a range, class indices int16 stored as int64)."""
    rng = np.random.default_rng(seed)
    return ColumnSet({"row_id": Consecutive(first_row, num_rows),
                      "is_label_issue": rng.random(num_rows) < 0.1,
                      "label_quality": rng.random(num_rows, dtype=np.float32),
                      "predicted_label": rng.integers(0, 10, num_rows, dtype=np.int16)},
                     types={"predicted_label": pa.int64()})


def python_file_bytes(table: pa.Table) -> bytes:
    """The baseline: the same writer, into a Python ``BytesIO``."""
    sink = io.BytesIO()
    write_parquet(sink, [table])
    return sink.getvalue()


ENCODERS = {"arrow_buffer": lambda columns, table: parquet_bytes([table]),
            "row_key_statistics": lambda columns, table: parquet_bytes([table], statistics=row_key_statistics(table)),
            "python_file": lambda columns, table: python_file_bytes(table),
            "numpy": lambda columns, table: b"".join(table_pieces(columns, row_key_statistics(columns)))}
"""Encodings of one mask part, each a function of its columns and their Arrow table; ``numpy``
joins its pieces (a scan writes them unjoined) so that its bytes are counted alike."""


class BusyThreads:
    """``count`` threads running a pure-Python loop (holding the GIL whenever they can)."""

    def __init__(self, count: int):
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._spin, daemon=True) for _ in range(count)]

    def _spin(self) -> None:
        total = 0
        while not self.stop.is_set():
            for step in range(1000):
                total += step

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join()


def bench_encoding(recorder: Recorder, columns: ColumnSet, busy_counts: list[int], repeat: int) -> None:
    table = columns.to_arrow()
    size = f"{table.num_rows}x10"   # a mask part of a 10-class set
    for encode in ENCODERS.values():   # warm-up: Arrow's memory pool grows on the first call
        encode(columns, table)
    for busy in busy_counts:
        with BusyThreads(busy):
            seconds = {name: [] for name in ENCODERS}
            outputs = {}
            for _ in range(repeat):
                for name, encode in ENCODERS.items():
                    started = time.perf_counter()
                    outputs[name] = encode(columns, table)
                    seconds[name].append(time.perf_counter() - started)
        if outputs["arrow_buffer"] != outputs["python_file"]:
            raise AssertionError("the Arrow buffer and the Python file gave different bytes")
        for name, runs in seconds.items():
            recorder.add(f"encode_{name}", size, f"seconds_{busy}_busy_threads", statistics.median(runs), "s", len(runs))
            print(f"{table.num_rows} rows, {busy} busy threads, {name:18s} {statistics.median(runs):.3f} s", flush=True)
        recorder.add("encode", size, "bytes", len(outputs["arrow_buffer"]), "bytes")
        recorder.add("encode", size, "bytes_row_key_statistics", len(outputs["row_key_statistics"]), "bytes")
        recorder.add("encode", size, "bytes_numpy", len(outputs["numpy"]), "bytes")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=13_000_000, help="rows of the mask part")
    parser.add_argument("--busy", default="0,1,3", help="comma-separated counts of busy Python threads")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/encode.json")
    args = parser.parse_args(argv)
    recorder = Recorder(machine_info(), package_versions())
    bench_encoding(recorder, mask_like_columns(args.rows), [int(count) for count in args.busy.split(",")], args.repeat)
    recorder.save(args.out)


if __name__ == "__main__":
    main()
