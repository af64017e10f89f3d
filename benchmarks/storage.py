"""Object storage benchmark: the same scan from/to a local moto S3 server and from/to local disk.

One command, one cluster, one dataset: the set (``benchmarks.datasets``, cached on disk) is
uploaded once to a moto server started as a child process on 127.0.0.1 (a random free port;
dummy credentials, endpoint through ``client_kwargs``), then scanned

- ``local``: local parquet files -> local output directory;
- ``s3``:    ``s3://`` -> ``s3://`` on the moto server,

alternately, ``--repeat`` times each (median recorded). Both runs must give byte-identical
mask and issues parts (checked, recorded as ``identical_parts``). moto is an in-memory Python
server on the same machine: it measures labelscan's object-storage path (ranged GETs of row
groups, one PUT per output object, listing, ``_SUCCESS``), not a real S3's throughput.

Results: tidy JSON records (``benchmark``, ``size``, ``metric``, ``value``, ``unit``, ...) in
``--out`` (default ``benchmarks/results/storage.json``), the same shape as ``benchmarks.cpu``.

    python -m benchmarks.storage                  # 10M x 10
    python -m benchmarks.storage --size 1Mx10     # smaller
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from benchmarks.cpu import Recorder, machine_info, package_versions, start_cluster
from benchmarks.datasets import ensure_dataset, format_size, list_files, parse_size

DEFAULT_SIZE = "10Mx10"
CREDENTIALS = {"key": "benchmark-dummy-key", "secret": "benchmark-dummy-secret"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server in a child process; returns it and its endpoint URL."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto server did not start")


def digests(url, storage_options=None) -> dict:
    """sha256 of every mask and issues part under ``url``."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    fs.invalidate_cache()
    root = root.rstrip("/")
    return {path[len(root) + 1:]: hashlib.sha256(fs.cat_file(path)).hexdigest()
            for path in sorted(fs.find(root)) if path.endswith(".parquet")}


def scan_once(source, out, client, storage_options=None) -> tuple[float, dict]:
    import labelscan

    started = time.perf_counter()
    summary = labelscan.scan(source, out, client=client, storage_options=storage_options,
                             overwrite=True).summary
    return time.perf_counter() - started, summary


def run(args) -> list[dict]:
    import fsspec

    rows, classes = parse_size(args.size)
    size = format_size(rows, classes)
    recorder = Recorder({**machine_info(), "note": args.note} if args.note else machine_info(),
                        package_versions())
    data = ensure_dataset(args.data_dir, rows, classes, verbose=True)
    folder = Path(data["folder"])
    data_bytes = sum(path.stat().st_size for path in list_files(folder))
    recorder.add("storage", size, "input_bytes", data_bytes, "bytes")

    server, endpoint = start_moto()
    cluster = client = None
    try:
        options = {**CREDENTIALS, "client_kwargs": {"endpoint_url": endpoint}}
        fs = fsspec.filesystem("s3", **options)
        bucket = f"labelscan-bench-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)
        started = time.perf_counter()
        fs.put([str(path) for path in list_files(folder)], f"{bucket}/data/")
        recorder.add("storage", size, "upload_seconds", time.perf_counter() - started, "s")

        cluster, client, start_s = start_cluster(args.threads)
        recorder.add("storage", size, "cluster_start_seconds", start_s, "s")
        local_out = Path(args.data_dir) / f"storage-out-{size}"
        places = {"local": (str(folder), str(local_out), None),
                  "s3": (f"s3://{bucket}/data/", f"s3://{bucket}/out", options)}
        if args.warm_up:
            scan_once(*places["local"][:2], client)
        seconds = {name: [] for name in places}
        summaries = {}
        for _ in range(args.repeat):
            for name, (source, out, storage_options) in places.items():
                elapsed, summaries[name] = scan_once(source, out, client, storage_options)
                seconds[name].append(elapsed)
                print(f"{name:>5}: {elapsed:7.2f} s", file=sys.stderr)
        for name, values in seconds.items():
            recorder.add(f"storage-{name}", size, "seconds", statistics.median(values), "s", len(values))
            recorder.add(f"storage-{name}", size, "seconds_min", min(values), "s", len(values))
            for stage, value in summaries[name]["timings"].items():
                recorder.add(f"storage-{name}", size, f"stage_{stage}_seconds", value, "s")
        recorder.add("storage", size, "s3_over_local", statistics.median(seconds["s3"])
                     / statistics.median(seconds["local"]), "ratio", args.repeat)
        identical = digests(places["local"][1]) == digests(places["s3"][1], options)
        recorder.add("storage", size, "identical_parts", identical, "bool")
        recorder.add("storage", size, "num_issues", summaries["s3"]["num_issues"], "rows")
    finally:
        if client is not None:
            client.close()
            cluster.close()
        server.terminate()
        server.wait(timeout=30)
    return recorder.records


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.storage", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default=DEFAULT_SIZE, help=f"NxK (default {DEFAULT_SIZE})")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each place (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="worker threads")
    parser.add_argument("--data-dir", default="/tmp/labelscan-bench", help="datasets and local outputs")
    parser.add_argument("--out", default="benchmarks/results/storage.json", help="JSON results file")
    parser.add_argument("--note", default="", help="free text stored with the machine info")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the untimed first scan")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    records = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1) + "\n")
    index = {(r["benchmark"], r["metric"]): r["value"] for r in records}
    print(f"{args.size}: local {index[('storage-local', 'seconds')]:.2f} s, "
          f"s3 (moto) {index[('storage-s3', 'seconds')]:.2f} s, "
          f"ratio {index[('storage', 's3_over_local')]:.2f}, "
          f"identical parts {index[('storage', 'identical_parts')]} -> {out}")


if __name__ == "__main__":
    main()
