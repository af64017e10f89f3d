"""A/B benchmark: scans by two source trees of labelscan, in alternating processes, one command.

A host's speed drifts by 20% within minutes (docs/benchmarks.md), so comparing two versions by
two separate benchmark commands says little. This module times the same scans with a baseline
tree and a candidate tree (by default this checkout) in rounds: each round starts one process
per tree, baseline first, each process starts its own cluster (``LocalCluster`` as
:func:`benchmarks.cpu.start_cluster` does, or one ``LocalCUDACluster`` with ``--backend cupy``),
scans ``--warmup`` times untimed, then ``--scans`` times timed. Per tree and round it records the
median scan and the median of each stage; overall, the median of the round medians and the
median of the per-round ratios candidate ÷ baseline (< 1: the candidate is faster).

The baseline is a git revision of this repository (``git archive``), a source directory or a
``.tar``/``.tar.gz`` of one (on a machine without the repository's history, e.g. the lent GPU
machine: ``git archive --format=tar.gz REV -o baseline.tgz`` here, carry the file). Each
process imports ``labelscan`` from its tree; the scans themselves run this module as a script
(:func:`child`), which needs of a tree only ``labelscan.scan`` and ``labelscan.cluster``.

Run: ``python -m benchmarks.ab --baseline HEAD~3 --size 10Mx10 --backend cupy --rounds 3
--out benchmarks/results/ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

CHILD_FLAG = "--child"
REPOSITORY = Path(__file__).resolve().parent.parent


def child(folder: str, out: str, backend: str, warmup: int, scans: int) -> dict:
    """Scan ``folder`` ``warmup + scans`` times with the ``labelscan`` on ``sys.path``; return the
    timed scans' seconds and stage timings (run in a process of its own, see the module's note)."""
    from distributed import Client

    import labelscan
    from labelscan.cluster import local_cluster, local_cuda_cluster

    if backend == "cupy":
        cluster = local_cuda_cluster(dashboard_address=None)
    else:
        cluster = local_cluster(n_workers=1, threads_per_worker=os.cpu_count(), dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(len(cluster.workers))
        seconds, timings = [], []
        for scan in range(warmup + scans):
            started = time.perf_counter()
            summary = labelscan.scan(folder, out, client=client, overwrite=True, backend=backend,
                                     tie_break="numpy").summary
            if scan >= warmup:
                seconds.append(time.perf_counter() - started)
                timings.append(summary["timings"])
    return {"seconds": seconds, "stages": {stage: statistics.median(t[stage] for t in timings if stage in t)
                                           for stage in timings[0]}}


def baseline_tree(baseline: str, workdir: Path) -> Path:
    """The baseline's source directory: ``baseline`` itself, or extracted into ``workdir``."""
    path = Path(baseline)
    if path.is_dir():
        return path.resolve()
    target = workdir / "baseline"
    target.mkdir()
    if path.is_file():
        with tarfile.open(path) as archive:
            archive.extractall(target, filter="data")
    else:   # a revision of this repository
        archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", "--format=tar", baseline],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_tree(tree: Path, folder: str, out: Path, args) -> dict:
    """One process of :func:`child` importing ``labelscan`` from ``tree``."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])))
    # run as code, not as a script: a script's folder (this one) would come first on sys.path
    arguments = [CHILD_FLAG, folder, str(out), args.backend, str(args.warmup), str(args.scans)]
    command = [sys.executable, "-c", f"import runpy, sys; sys.argv = {[__file__, *arguments]!r}; "
               f"runpy.run_path({str(Path(__file__).resolve())!r}, run_name='__main__')"]
    done = subprocess.run(command, cwd=tree, env=environment, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(args) -> list[dict]:
    """The rounds (see the module's note); returns the tidy records and writes them to ``args.out``."""
    from benchmarks.cpu import Recorder, machine_info, package_versions, paired_ratio
    from benchmarks.datasets import ensure_dataset, parse_size

    rows, classes = parse_size(args.size)
    folder = ensure_dataset(args.data_dir, rows, classes, jobs=args.jobs)["folder"]
    recorder = Recorder(machine_info(), {**package_versions(), "baseline": args.baseline,
                                         "candidate": str(args.candidate), "backend": args.backend})
    with tempfile.TemporaryDirectory(prefix="labelscan-ab-") as workdir:
        trees = {"baseline": baseline_tree(args.baseline, Path(workdir)), "candidate": Path(args.candidate).resolve()}
        medians = {name: [] for name in trees}
        for round_number in range(args.rounds):
            for name, tree in trees.items():
                result = run_tree(tree, str(folder), Path(args.data_dir) / "out" / f"ab-{name}", args)
                median = statistics.median(result["seconds"])
                medians[name].append(median)
                recorder.add(name, args.size, f"round{round_number}_seconds", median, "s", len(result["seconds"]))
                for stage, value in result["stages"].items():
                    recorder.add(name, args.size, f"round{round_number}_stage_{stage}", value, "s",
                                 len(result["seconds"]))
                print(f"round {round_number} {name:>9}: median {median:.4f} s of "
                      f"{[round(s, 4) for s in result['seconds']]}", flush=True)
    for name, values in medians.items():
        recorder.add(name, args.size, "seconds", statistics.median(values), "s", len(values))
    ratio = paired_ratio(medians["candidate"], medians["baseline"])
    recorder.add("comparison", args.size, "candidate_vs_baseline_paired", ratio, "ratio", args.rounds)
    print(f"candidate ÷ baseline, median of rounds: {ratio:.3f}")
    recorder.save(args.out)
    return recorder.records


def parse_arguments(argv=None) -> argparse.Namespace:
    """The command line's options (see the module's note)."""
    from benchmarks.cpu import add_scan_options

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision, source directory or .tar/.tar.gz of one")
    parser.add_argument("--candidate", default=str(REPOSITORY), help="source directory (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    add_scan_options(parser, scans=8, out="benchmarks/results/ab.json")
    return parser.parse_args(argv)


if __name__ == "__main__":
    if sys.argv[1:2] == [CHILD_FLAG]:
        folder, out, backend, warmup, scans = sys.argv[2:7]
        print(json.dumps(child(folder, out, backend, int(warmup), int(scans))))
    else:
        compare(parse_arguments())
