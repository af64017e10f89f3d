"""Host cost of a scan's output parts: encoding, hashing and storing mask parts, alone and in parallel.

A scan's flag stage turns every partition into a mask part on the host, whatever computed it
(CPU or GPU workers): it is encoded (:func:`labelscan.io.atomic.table_pieces`, NumPy-encoded;
``encode_arrow`` times Arrow's writer on the same table, :func:`labelscan.io.atomic.parquet_bytes`,
the encoder before it), and :func:`labelscan.io.atomic.put_bytes` stores its pieces (their sha256 for the
manifest, a staging file, a rename; the sha256 is also timed alone, and ``write_part`` is both
steps, as a flag task does them). This benchmark times each of those steps for one mask part as a
scan holds it (:func:`benchmarks.encode.mask_like_columns`), run by 1, 2, ... threads at once (each thread
does ``--calls-per-thread`` calls), so a machine's numbers say how much host work a partition's
outputs cost and how far it scales with cores: the bound on a GPU scan's flag stage that more
GPUs on the same host cannot lift. Records, per step and thread count: the wall seconds of the
whole batch and the per-call seconds (wall × threads ÷ calls), and the part's bytes.

Run: ``python -m benchmarks.host_writes --rows 13000000 --threads 1,8,16 --out benchmarks/results/host-writes.json``
(writes ``threads × calls-per-thread`` parts of ~60 MB under ``--dir``, removed after).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsspec.implementations.local import LocalFileSystem

from benchmarks.cpu import Recorder, machine_info, package_versions
from benchmarks.encode import mask_like_columns
from labelscan.io.atomic import parquet_bytes, put_bytes, table_pieces
from labelscan.io.commit import row_key_statistics


def steps(columns, pieces: list) -> dict:
    """The timed steps: each a function of the batch's folder and the call's index."""
    fs = LocalFileSystem()
    statistics = row_key_statistics(columns)
    table = columns.to_arrow()
    data = b"".join(pieces)

    def write_part(folder, index):
        return put_bytes(fs, str(folder / f"part-{index:05d}.parquet"), table_pieces(columns, statistics))

    return {
        "encode": lambda folder, index: table_pieces(columns, statistics),
        "encode_arrow": lambda folder, index: parquet_bytes([table], statistics=statistics),
        "sha256": lambda folder, index: hashlib.sha256(data).hexdigest(),
        "put_bytes": lambda folder, index: put_bytes(fs, str(folder / f"part-{index:05d}.parquet"), pieces),
        "write_part": write_part,
    }


def bench_host_writes(recorder: Recorder, num_rows: int, thread_counts: list[int], calls_per_thread: int,
                      folder: Path) -> None:
    columns = mask_like_columns(num_rows)
    pieces = table_pieces(columns, row_key_statistics(columns))
    size = f"{num_rows}x10"
    recorder.add("host_writes", size, "part_bytes", sum(memoryview(piece).nbytes for piece in pieces), "bytes")
    for name, step in steps(columns, pieces).items():
        step(folder, 0)   # warm-up: Arrow's memory pool, the folder
        for threads in thread_counts:
            calls = threads * calls_per_thread
            # each batch stores new files, as a scan does (it removes old outputs first): a rename
            # over an existing file makes ext4 start writing the new one back at once
            batch = folder / f"{name}-{threads}"
            batch.mkdir()
            os.sync()   # and starts without dirty pages of the previous one
            started = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda index: step(batch, index), range(calls)))
            wall = time.perf_counter() - started
            shutil.rmtree(batch)
            per_call = wall * threads / calls
            recorder.add(f"host_writes_{name}", size, f"wall_seconds_{threads}_threads", wall, "s", calls)
            recorder.add(f"host_writes_{name}", size, f"per_call_seconds_{threads}_threads", per_call, "s", calls)
            print(f"{name:10s} {threads:3d} threads {calls:4d} calls: wall {wall:.3f} s, per call {per_call * 1e3:.0f} ms",
                  flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=13_000_000, help="rows of the mask part")
    parser.add_argument("--threads", default=f"1,{max(1, (os.cpu_count() or 1) // 2)},{os.cpu_count() or 1}",
                        help="comma-separated thread counts")
    parser.add_argument("--calls-per-thread", type=int, default=2)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the parts are stored (a fresh folder in it)")
    parser.add_argument("--out", default="benchmarks/results/host-writes.json")
    args = parser.parse_args(argv)
    recorder = Recorder(machine_info(), package_versions())
    folder = Path(tempfile.mkdtemp(prefix="labelscan-host-writes-", dir=args.dir))
    try:
        bench_host_writes(recorder, args.rows, [int(count) for count in args.threads.split(",")],
                          args.calls_per_thread, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    recorder.save(args.out)


if __name__ == "__main__":
    main()
