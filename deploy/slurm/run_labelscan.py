"""Run a labelscan job file on SLURM workers started by dask-jobqueue.

This script is the Dask client: it runs in a small SLURM allocation (see ``labelscan.sbatch``),
asks SLURM for worker jobs through ``dask_jobqueue.SLURMCluster``, runs the scan the job file
describes on them, and releases them at the end. The job file's ``cluster:`` key is ignored
(the cluster is this SLURMCluster)::

    python deploy/slurm/run_labelscan.py jobs/demo.yaml --jobs 4 --cores 8 --memory 32GB \\
        --queue compute --account ml --walltime 02:00:00

Needs ``pip install dask-jobqueue`` next to labelscan, on a file system the worker nodes share
(the workers import labelscan and read the input).

It runs the job as ``labelscan run`` does (:func:`labelscan.cli.run_job`): the same progress
lines or JSON logs, and the same errors (:func:`labelscan.cli.command_errors`): one ``error:``
line (and a JSON ``error`` event with ``--log-format json``) and ``labelscan run``'s exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from dask_jobqueue import SLURMCluster
from distributed import Client

from labelscan.cli import command_errors, load_job_logged, run_job
from labelscan.jobs import ClusterInfo, dashboard_link
from labelscan.progress import Observer


def main(argv=None) -> int:
    """Run the job file that ``argv`` names on a SLURMCluster, as ``labelscan run`` runs it.

    Returns
    -------
    int
        0; an error exits (:class:`SystemExit`) with ``labelscan run``'s code for it.
    """
    args = _parser().parse_args(argv)
    with command_errors():
        job = load_job_logged(args.job, (), args.log_format, "slurm")
        observer = Observer(False, args.log_format, command="slurm", job=job.name)
        result = run_job(job, observer, _slurm_cluster(args, observer), job["performance_report"])
    print(f"{result.out}: {result.num_issues} issues in {result.summary['num_rows']} rows")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="job file (jobs/*.yaml)")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM worker jobs (one Dask worker each)")
    parser.add_argument("--adapt-max", type=int, help="adapt between 1 and this many worker jobs instead")
    parser.add_argument("--cores", type=int, default=8, help="cores per worker job (Dask worker threads)")
    parser.add_argument("--memory", default="32GB", help="memory per worker job")
    parser.add_argument("--queue", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account")
    parser.add_argument("--walltime", default="02:00:00", help="walltime of each worker job")
    parser.add_argument("--local-directory", default="$TMPDIR", help="node-local scratch for spilling")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    return parser


@contextlib.contextmanager
def _slurm_cluster(args, observer):
    """Yield ``(client, ClusterInfo)`` of a SLURMCluster sized by ``args`` once a worker has joined;
    release its worker jobs after."""
    cluster = SLURMCluster(
        cores=args.cores, processes=1, memory=args.memory, queue=args.queue, account=args.account,
        walltime=args.walltime, local_directory=args.local_directory,
        job_extra_directives=["--exclusive"] if args.cores >= 32 else [],
        worker_extra_args=["--preload", "labelscan.cli"],   # labelscan's own errors logged once
    )
    with cluster, Client(cluster) as client:
        if args.adapt_max:
            cluster.adapt(minimum_jobs=1, maximum_jobs=args.adapt_max)
        else:
            cluster.scale(jobs=args.jobs)
        observer.note(f"SLURM cluster: dashboard {client.dashboard_link}; waiting for a worker")
        client.wait_for_workers(1)
        yield client, ClusterInfo("slurm", True, "SLURM cluster", dashboard_link(client))


if __name__ == "__main__":
    sys.exit(main())
