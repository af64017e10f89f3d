"""The ``labelscan`` command line: one click group, thin over :mod:`labelscan.api`.

::

    labelscan demo                          generate a noisy set, scan it, score the found issues
    labelscan scan IN OUT [options]         scan a parquet prediction set
    labelscan convert PRED_PROBS LABELS OUT .npy/.csv arrays -> partitioned parquet
    labelscan report OUT                    verify a finished scan, print its summary, write report.html
    labelscan run JOB.yaml                  run the scan a job file describes (scheduled use)
    labelscan evaluate OUT --true-labels X  precision/recall, AUROC/AUPRC/lift against verified labels

Exit codes: 0 success; 2 usage (bad options, or a destination holding another scan);
3 bad input (data, or an unfinished or corrupt scan); 4 infrastructure (storage, network,
cluster); 141 (128 + SIGPIPE, as Unix tools) when stdout's reader left early
(``labelscan report OUT | head``), without a message; 1 an unexpected internal error (a bug:
the traceback is printed). Errors print one ``error: <message>`` line on stderr. Progress goes
to stderr, results to stdout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import select
import sys
import time

import click

from labelscan import __version__
from labelscan.errors import EXIT_INFRASTRUCTURE, LabelscanError, OccupiedDestinationError, UsageError
from labelscan.io.redact import redact_url
from labelscan.options import FILTERS, RANK_METHODS

CACHE_CHOICES = {"auto": "auto", "on": True, "off": False}
MAX_CLASSES_LISTED = 20
_INT = re.compile(r"[+-]?\d+")
EXIT_STDOUT_CLOSED = 128 + 13
"""Exit code when stdout's reader left early: that of a Unix tool killed by SIGPIPE (13)."""
NETWORK_MODULES = ("botocore.", "aiobotocore.", "aiohttp.")
"""Modules of optional storage clients whose exceptions are storage or network failures."""


class _Group(click.Group):
    """A click group that turns labelscan's errors into ``error: ...`` and their exit codes."""

    def invoke(self, ctx):
        with command_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def command_errors():
    """Report an escaping error the way the command line does, and exit with its code.

    labelscan's errors and infrastructure failures (:func:`_is_infrastructure`) print one
    ``error: <message>`` line on stderr and exit with their code (module docstring); a
    closed stdout ends the process quietly (:func:`_exit_stdout_closed`). Any other
    exception is a bug: it propagates with its traceback.

    Raises
    ------
    SystemExit
        With the error's exit code.
    """
    try:
        yield
    except LabelscanError as error:
        _fail(str(error), error.exit_code)
    except Exception as error:
        if isinstance(error, BrokenPipeError) and _stdout_closed():
            _exit_stdout_closed()
        if not _is_infrastructure(error):
            raise  # a bug: let the traceback show
        _fail(f"{type(error).__name__}: {error}" if str(error) else type(error).__name__, EXIT_INFRASTRUCTURE)


def _is_infrastructure(error: Exception) -> bool:
    """Whether ``error``, or an exception it was raised from or while handling, is a storage,
    network or cluster failure (:func:`_is_infrastructure_failure`)."""
    return any(_is_infrastructure_failure(link) for link in _exception_chain(error))


def _exception_chain(error: BaseException):
    """Yield ``error``, then its ``__cause__`` or ``__context__``, and so on, as a traceback shows them."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def _is_infrastructure_failure(error: BaseException) -> bool:
    """OSError (timeouts, lost connections included); an exception of the optional storage
    clients (:data:`NETWORK_MODULES`: botocore, aiobotocore, aiohttp; matched by the modules of
    its classes, so none of them is imported); Dask's KilledWorker (a task's workers kept
    dying) or FutureCancelledError."""
    if isinstance(error, OSError):
        return True
    if any(cls.__module__.startswith(NETWORK_MODULES) for cls in type(error).__mro__):
        return True
    try:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover - distributed is a dependency
        return False
    return isinstance(error, (KilledWorker, FutureCancelledError))


def _fail(message, code):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has left (``labelscan report OUT | head``)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no file descriptor (tests), or no poll()
        return False


def _exit_stdout_closed():
    """Exit with :data:`EXIT_STDOUT_CLOSED`, stdout pointed at devnull so that flushing it at
    exit does not fail again (the "Note on SIGPIPE" of Python's ``signal`` docs)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_STDOUT_CLOSED)


def exit_code(error) -> int:
    """The exit code the command line gives ``error`` (see the module docstring)."""
    if isinstance(error, LabelscanError):
        return error.exit_code
    if isinstance(error, click.exceptions.Exit):
        return error.exit_code
    if isinstance(error, click.ClickException):
        return error.exit_code
    return EXIT_INFRASTRUCTURE if _is_infrastructure(error) else 1


# ---------------------------------------------------------------------------------------------
# local workers: labelscan's own errors are reported once, by the client


def _labelscan_error_names() -> set:
    names, pending = set(), [LabelscanError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending.extend(cls.__subclasses__())
    return names


class ExpectedErrorFilter(logging.Filter):
    """Drops a worker's ``Compute Failed`` log record (with traceback) for labelscan's own errors.

    Such an error (bad input, say) travels to the client, which prints one ``error:`` line;
    the worker's log of it would repeat it with a traceback once per retry. Other task
    failures are logged as usual.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Compute Failed"):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        exception_text = str(args[3]) if len(args) > 3 else ""
        return exception_text.split("(", 1)[0] not in _labelscan_error_names()


def dask_setup(worker=None):
    """Worker preload hook (``distributed.worker.preload``): install :class:`ExpectedErrorFilter`."""
    logger = logging.getLogger("distributed.worker")
    if not any(isinstance(existing, ExpectedErrorFilter) for existing in logger.filters):
        logger.addFilter(ExpectedErrorFilter())


@contextlib.contextmanager
def _quiet_local_workers():
    """Workers of local clusters started inside this block preload :func:`dask_setup`."""
    import dask

    from labelscan.cluster import with_preload

    with dask.config.set({"distributed.worker.preload": with_preload("labelscan.cli")}):
        yield


# ---------------------------------------------------------------------------------------------
# option parsing


def parse_scalar(text: str):
    """``"true"``/``"false"`` (any case) to bool, integers to int, anything else unchanged."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)
    return text


def parse_storage_options(pairs, endpoint_url=None) -> dict | None:
    """Build fsspec ``storage_options`` from ``KEY=VALUE`` pairs.

    Dotted keys nest (``client_kwargs.region_name=eu-west-1``); values go through
    :func:`parse_scalar`; ``endpoint_url`` becomes ``client_kwargs.endpoint_url``.

    Returns
    -------
    dict or None
        None when there is nothing to pass.

    Raises
    ------
    click.BadParameter
        A pair without ``=`` or with an empty key.
    """
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--storage-option")
        *parents, leaf = key.split(".")
        target = options
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise click.BadParameter(f"{parent!r} is both a value and a group in {pair!r}",
                                         param_hint="--storage-option")
        target[leaf] = parse_scalar(value)
    if endpoint_url:
        client_kwargs = options.setdefault("client_kwargs", {})
        if not isinstance(client_kwargs, dict):
            raise click.BadParameter("client_kwargs must be a group", param_hint="--storage-option")
        client_kwargs["endpoint_url"] = endpoint_url
    return options or None


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(item) for item in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _class_names(ctx, param, value):
    """``--class-names``: ``A,B,...`` or ``@FILE`` (a local text file, one name per line)."""
    if value is None:
        return None
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as handle:
                names = [line.strip() for line in handle.read().splitlines()]
        except OSError as error:
            raise click.BadParameter(f"cannot read {value[1:]} ({error.strerror or error})") from None
    else:
        names = [name.strip() for name in value.split(",")]
    if not names or any(not name for name in names):
        raise click.BadParameter(f"empty class name in {value!r}")
    return names


def _distinct_names(ctx, param, values):
    """A repeatable name option whose names must differ."""
    from labelscan.io.columns import repeated_names

    repeated = repeated_names(values)
    if repeated:
        raise click.BadParameter(f"{', '.join(map(repr, repeated))} given more than once")
    return values


def _scheduler_address(ctx, param, value):
    """``--scheduler``: an existing scheduler file, or an address (a tcp/tls one with a numeric port)."""
    if value is None or os.path.exists(value):
        return value
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(value)
    if scheme not in ("tcp", "tls"):
        return value
    try:
        parse_host_port(location)
    except ValueError:
        if "://" not in value and (value.endswith(".json") or os.sep in value):
            raise click.BadParameter(f"scheduler file {value} does not exist") from None
        raise click.BadParameter(f"{value!r} is neither a scheduler file nor an address like "
                                 f"tcp://HOST:PORT") from None
    return value


def _check_report_path(path):
    """Refuse a performance report path that cannot be written, before anything runs.

    Its folder is made if missing (as writing the report would make it).

    Raises
    ------
    UsageError
        ``path`` is a directory, or its folder cannot be made or written to.
    """
    if os.path.isdir(path):
        raise UsageError(f"performance report {path} is a directory: give a file path (FILE.html)")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UsageError(f"performance report {path}: cannot make its folder {folder} "
                         f"({error.strerror or error})") from None
    if not os.access(path if os.path.exists(path) else folder, os.W_OK):
        raise UsageError(f"performance report {path}: {folder} is not writable")


@contextlib.contextmanager
def _naming_overwrite_option(option):
    """Name ``option``, the command's way to overwrite, in the refusal of a destination holding
    another scan's outputs."""
    try:
        yield
    except OccupiedDestinationError as error:
        raise OccupiedDestinationError(error.occupied, f"give {option}") from None


def load_job_logged(job_path, overrides, log_format, command):
    """:func:`labelscan.jobs.load_job`; with JSON logs an invalid job file is also logged as an
    ``error`` event (its ``job`` is the file name: the file's own ``name`` may be unreadable).

    Returns
    -------
    labelscan.jobs.Job

    Raises
    ------
    JobError
        The job file is invalid.
    """
    from labelscan.jobs import load_job
    from labelscan.progress import Observer

    file_name = os.path.splitext(os.path.basename(job_path))[0]
    with Observer(True, log_format, command=command, job=file_name).errors(exit_code):
        return load_job(job_path, overrides)


def _storage_option_flags(command):
    command = click.option("--endpoint-url", metavar="URL",
                           help="S3-compatible endpoint (sets storage option client_kwargs.endpoint_url).")(command)
    return click.option("--storage-option", "storage_option_pairs", multiple=True, metavar="KEY=VALUE",
                        help="fsspec storage option, repeatable; dotted keys nest; true/false and "
                             "integers are converted.")(command)


_scheduler_option = click.option("--scheduler", metavar="ADDRESS|FILE", callback=_scheduler_address,
                                 help="Dask scheduler address (tcp://HOST:PORT) or scheduler file.")
CLASS_NAMES_METAVAR = "A,B,...|@FILE"


# ---------------------------------------------------------------------------------------------
# output helpers


def _stage_printer(quiet: bool):
    if quiet:
        return None

    def report(stage, seconds):
        click.echo(f"  {stage:<12}{seconds:9.2f} s", err=True)

    return report


@contextlib.contextmanager
def _local_cluster(workers, quiet, start=True):
    """Yield a client of a started ``LocalCluster`` (closed after), or None when ``start`` is False."""
    if not start:
        yield None
        return
    from labelscan.cluster import get_client
    from labelscan.demo import local_cluster_overrides

    started = time.perf_counter()
    with get_client(None, None, **local_cluster_overrides(workers)) as client:
        if not quiet:
            link = _dashboard_link(client)
            workers_info = client.scheduler_info().get("workers", {})
            threads = sum(info.get("nthreads", 0) for info in workers_info.values())
            click.echo(f"local cluster: {len(workers_info)} worker(s), {threads} thread(s), started in "
                       f"{time.perf_counter() - started:.1f} s" + (f"; dashboard {link}" if link else ""),
                       err=True)
        yield client


def _dashboard_link(client):
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - a link is a nicety
        return None
    return link if importlib.util.find_spec("bokeh") else f"{link} (pip install bokeh to see it)"


@contextlib.contextmanager
def _scan_cluster(workers, scheduler, observer, backend="auto"):
    """Yield the client of a scan: connect to ``scheduler``, else start a local cluster (a
    ``LocalCUDACluster`` when this machine has a GPU and ``workers`` is not given); the
    observer reports it, with its dashboard link, before the scan starts."""
    from labelscan.backend import resolve_backend
    from labelscan.cluster import get_client
    from labelscan.demo import local_cluster_overrides

    started = time.perf_counter()
    if scheduler:
        with get_client(None, scheduler) as client:
            observer.cluster(client, f"scheduler {scheduler}", False, time.perf_counter() - started,
                             _dashboard_link(client))
            yield client
        return
    gpu = backend != "numpy" and (workers is None or backend == "cupy") and resolve_backend(backend) == "cupy"
    with get_client(None, None, gpu=gpu, **({} if gpu else local_cluster_overrides(workers))) as client:
        observer.cluster(client, "local CUDA cluster" if gpu else "local cluster", True,
                         time.perf_counter() - started, _dashboard_link(client))
        yield client


def _observability_flags(command):
    command = click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
                           help="stderr format: text (progress lines) or json (one JSON object per line: "
                                "start, cluster, stage timings, done, error).")(command)
    return click.option("--performance-report", metavar="FILE.html",
                        help="Write a Dask performance report (task stream, profiles) of the scan; needs "
                             "bokeh.")(command)


def _fmt_seconds(timings: dict) -> str:
    """``stage seconds`` pairs in run order, total last."""
    from labelscan.progress import in_run_order

    return " · ".join(f"{stage} {timings[stage]:.2f}" for stage in in_run_order(timings))


def _issues_table(frame, class_names=None) -> str:
    if frame is None or not len(frame):
        return "  (none)"
    frame = frame.copy()
    if class_names:
        for column in ("given_label", "predicted_label", "true_label"):
            if column in frame:
                frame[column.replace("_label", "_class")] = [class_names[int(k)] for k in frame[column]]
    formatters = {"label_quality": "{:.4g}".format} if "label_quality" in frame else None
    return frame.to_string(index=False, formatters=formatters)


def _per_class(counts, class_names) -> str:
    names = class_names or [str(k) for k in range(len(counts))]
    pairs = list(zip(names, counts))
    if len(pairs) > MAX_CLASSES_LISTED:
        pairs = sorted(pairs, key=lambda pair: -pair[1])[:10]
        return "  ".join(f"{name}: {count:,}" for name, count in pairs) + f"  (top 10 of {len(names)})"
    return "  ".join(f"{name}: {count:,}" for name, count in pairs)


def _print_summary(summary: dict, out: str, issues=None, top: int = 10) -> None:
    config = summary.get("config", {})
    rows, issues_found = summary["num_rows"], summary["num_issues"]
    share = 100.0 * issues_found / rows if rows else 0.0
    click.echo(f"scan:    {redact_url(out)}")
    click.echo(f"rows:    {rows:,}  K={summary['num_classes']}  partitions={summary.get('num_partitions')}  "
               f"pred_probs={summary.get('pred_probs_dtype')}")
    click.echo(f"config:  filter_by={config.get('filter_by')}  rank_by={config.get('rank_by')}")
    click.echo(f"issues:  {issues_found:,} ({share:.2f}% of rows)")
    click.echo(f"per class: {_per_class(summary.get('num_issues_per_class') or [], summary.get('class_names'))}")
    click.echo(f"time per stage (s): {_fmt_seconds(summary.get('timings', {}))}")
    if issues is not None and top and issues_found:
        click.echo(f"top {min(top, issues_found)} issues (lowest label_quality first):")
        click.echo(_issues_table(issues, summary.get("class_names")))


def _json_default(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------------------------------------
# commands


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="labelscan")
def cli():
    """Find label errors in large classification datasets with Confident Learning.

    Exact cleanlab 2.9 answers over partitioned parquet prediction sets, on Dask.
    Exit codes: 0 ok, 2 usage, 3 bad input, 4 infrastructure.
    """


@cli.command()
@click.option("--rows", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Rows of the synthetic set.")
@click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True, help="Classes (K).")
@click.option("--noise-rate", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Probability that a given label is wrong.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default="labelscan-demo", show_default=True,
              help="Demo directory: data/ and scan/ under it are replaced.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes of the local cluster [default: 1 using every core].")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def demo(rows, classes, noise_rate, seed, out, workers, quiet, as_json):
    """Plant label errors in a synthetic parquet set, scan it and score what was found."""
    from labelscan.demo import run_demo

    if not quiet:
        click.echo(f"labelscan demo: {rows:,} rows, K={classes}, noise rate {noise_rate}, seed {seed} "
                   f"-> {out}", err=True)
    with _quiet_local_workers(), _local_cluster(workers, quiet) as client:
        result = run_demo(rows, classes, noise_rate=noise_rate, seed=seed, out=out, client=client,
                          progress=_stage_printer(quiet))
    if as_json:
        payload = {key: None if isinstance(value, float) and math.isnan(value) else value
                   for key, value in result.items() if key not in ("summary", "top_issues")}
        payload["top_issues"] = result["top_issues"].to_dict("records")
        click.echo(json.dumps(payload, indent=2, default=_json_default))
        return
    click.echo(f"data:    {result['data']}  (parquet; column true_label holds the planted truth)")
    click.echo(f"scan:    {result['scan']}")
    click.echo(f"rows:    {result['num_rows']:,}  K={result['num_classes']}  "
               f"planted errors={result['num_planted']:,}  issues found={result['num_issues']:,}")
    click.echo(f"precision {result['precision']:.3f}  recall {result['recall']:.3f}  "
               f"F1 {result['f1']:.3f}  (flagged rows vs planted errors, given label != true label)")
    click.echo(f"noise matrix: mean absolute error of the estimate {result['noise_matrix_mae']:.4f}")
    click.echo(f"time per stage (s): {_fmt_seconds(result['timings'])}")
    click.echo(f"top {len(result['top_issues'])} issues (lowest label_quality first):")
    click.echo(_issues_table(result["top_issues"]))
    click.echo(f"next: labelscan report {result['scan']}")


@cli.command()
@click.argument("input_path", metavar="IN")
@click.argument("out_path", metavar="OUT")
@click.option("--label-column", default="label", show_default=True, help="Integer given-label column.")
@click.option("--pred-probs-column", multiple=True, metavar="NAME", callback=_distinct_names,
              help="A list column, or a column-name prefix; repeat to name K float columns in class "
                   "order [default: pred_probs].")
@click.option("--id-column", metavar="NAME", help="Column carried into the outputs.")
@click.option("--class-names", callback=_class_names, metavar=CLASS_NAMES_METAVAR,
              help="K class names for summary.json and the report, comma-separated or @FILE (a local "
                   "text file, one name per line, for names holding commas) [default: those in the "
                   "parquet metadata].")
@click.option("--multi-label", is_flag=True,
              help="The label column holds each row's class indices (list<int>) or a K-wide 0/1 vector: "
                   "cleanlab's multi-label answer (one-vs-rest per class; CPU).")
@click.option("--filter-by", type=click.Choice(FILTERS), default="prune_by_noise_rate", show_default=True)
@click.option("--frac-noise", type=click.FloatRange(0, 1), default=1.0, show_default=True)
@click.option("--num-to-remove-per-class", callback=_int_list, metavar="N0,N1,...",
              help="Rows to remove per class (K comma-separated integers).")
@click.option("--min-examples-per-class", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--rank-by", type=click.Choice(RANK_METHODS), default="self_confidence", show_default=True)
@click.option("--adjust-pred-probs", is_flag=True, help="Subtract the confident thresholds before scoring.")
@_scheduler_option
@click.option("--workers", type=click.IntRange(min=1),
              help="Start a local cluster of N worker processes [default: 1 using every core].")
@_storage_option_flags
@click.option("--rows-per-partition", type=click.IntRange(min=1),
              help="Rows per partition (whole row groups) [default: about equal rows, at most 256 MiB "
                   "of predictions each].")
@click.option("--issues-per-part", type=click.IntRange(min=1), metavar="ROWS",
              help="Rows per ranked issues part (issues/part-NNNNN.parquet) [default: config "
                   "labelscan.issues-per-part].")
@click.option("--overwrite", is_flag=True, help="Replace another scan's outputs at OUT.")
@click.option("--resume", is_flag=True,
              help="Keep the parts an interrupted run of the same scan already wrote to OUT "
                   "(see docs/storage.md).")
@click.option("--cache", type=click.Choice(list(CACHE_CHOICES)),
              help="Keep decoded partitions in worker memory between passes [default: config "
                   "labelscan.cache, auto].")
@click.option("--retries", type=click.IntRange(min=0),
              help="Retries of each task (worker loss) [default: config labelscan.retries, 2].")
@click.option("--backend", type=click.Choice(["auto", "numpy", "cupy"]), default="auto", show_default=True,
              help="Per-partition work on CPU (numpy) or GPU (cupy); auto: GPU when every worker has one.")
@click.option("--gpu", is_flag=True, help="Same as --backend cupy.")
@click.option("--tie-break", type=click.Choice(["stable", "numpy"]), default="stable", show_default=True,
              help="Rounding ties of the calibrated confident joint: stable (canonical) or numpy "
                   "(stock cleanlab's answer on this machine).")
@click.option("--row-sum-tolerance", type=click.FloatRange(min=0), metavar="TOL",
              help="Reject rows whose pred_probs sum differs from 1 by more than TOL (plus the "
                   "stored dtype's rounding) [default: no check, as cleanlab].")
@click.option("--on-bad-rows", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="error: the first bad row stops the scan (exit 3), nothing is written. "
                   "skip: rows with nulls, NaN/inf, values outside [0, 1], labels outside [0, K) or "
                   "(with --row-sum-tolerance) sums off 1 are left out and listed in OUT/rejected/; "
                   "bad files still stop the scan.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Issues shown in the table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; print one result line.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of tables.")
@_observability_flags
def scan(input_path, out_path, label_column, pred_probs_column, id_column, class_names, multi_label, filter_by,
         frac_noise, num_to_remove_per_class, min_examples_per_class, rank_by, adjust_pred_probs, scheduler,
         workers, storage_option_pairs, endpoint_url, rows_per_partition, issues_per_part, overwrite, resume,
         cache, retries, backend, gpu, tie_break, row_sum_tolerance, on_bad_rows, top, quiet, as_json,
         performance_report, log_format):
    """Scan the parquet prediction set IN (file, directory, glob or URL) and write the outputs to OUT.

    OUT receives issues/ (ranked), mask/ (row aligned), summary.json and _SUCCESS (written last).
    """
    import labelscan

    if scheduler and workers:
        raise click.UsageError("give --scheduler or --workers, not both")
    backend = "cupy" if gpu else backend
    from labelscan.scan import check_validation_options

    check_validation_options(row_sum_tolerance, on_bad_rows)   # before a cluster starts
    if performance_report:
        _check_report_path(performance_report)
    from labelscan.jobs import performance_report_to
    from labelscan.progress import Observer

    storage_options = parse_storage_options(storage_option_pairs, endpoint_url)
    columns = list(pred_probs_column) or ["pred_probs"]
    observer = Observer(quiet or as_json, log_format, command="scan")
    with observer.errors(exit_code):
        observer.start(f"labelscan scan {redact_url(input_path)} -> {redact_url(out_path)}",
                       input=redact_url(input_path), output=redact_url(out_path))
        with _quiet_local_workers(), _scan_cluster(workers, scheduler, observer, backend) as client, \
                observer.progress(client) as progress, performance_report_to(performance_report, client), \
                _naming_overwrite_option("--overwrite"):
            result = labelscan.scan(
                input_path, out_path, label_column=label_column,
                pred_probs_column=columns[0] if len(columns) == 1 else columns, id_column=id_column,
                class_names=class_names, filter_by=filter_by, frac_noise=frac_noise,
                num_to_remove_per_class=num_to_remove_per_class, min_examples_per_class=min_examples_per_class,
                rank_by=rank_by, adjust_pred_probs=adjust_pred_probs, client=client,
                storage_options=storage_options, rows_per_partition=rows_per_partition,
                issues_per_part=issues_per_part, overwrite=overwrite, resume=resume,
                cache=CACHE_CHOICES[cache] if cache else None, retries=retries, progress=progress,
                backend=backend, tie_break=tie_break, row_sum_tolerance=row_sum_tolerance,
                on_bad_rows=on_bad_rows, multi_label=multi_label)
        observer.done(result)
    if performance_report:
        observer.note(f"performance report: {performance_report}", event="performance_report",
                      path=performance_report)
    _show(result, top, quiet, as_json)


@cli.command()
@click.argument("pred_probs_path", metavar="PRED_PROBS")
@click.argument("labels_path", metavar="LABELS")
@click.argument("out_dir", metavar="OUT")
@click.option("--rows-per-file", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--row-group-rows", type=click.IntRange(min=1), default=250_000, show_default=True)
@click.option("--class-names", callback=_class_names, metavar=CLASS_NAMES_METAVAR,
              help="K class names, stored in the parquet metadata: comma-separated or @FILE (a local "
                   "text file, one name per line).")
@click.option("--ids", "ids_path", metavar="PATH", help=".npy or .csv (with a header line) of row ids.")
@click.option("--overwrite", is_flag=True, help="Replace parquet parts already in OUT.")
@_storage_option_flags
def convert(pred_probs_path, labels_path, out_dir, rows_per_file, row_group_rows, class_names, ids_path,
            overwrite, storage_option_pairs, endpoint_url):
    """Convert arrays (.npy or .csv: PRED_PROBS of shape N x K, LABELS of N) into a parquet set in OUT."""
    from labelscan.io.convert import convert_arrays

    urls = convert_arrays(pred_probs_path, labels_path, out_dir, rows_per_file=rows_per_file,
                          row_group_rows=row_group_rows, ids_path=ids_path, class_names=class_names,
                          storage_options=parse_storage_options(storage_option_pairs, endpoint_url),
                          overwrite=overwrite)
    click.echo(f"wrote {len(urls)} parquet file(s) to {out_dir}")
    click.echo(f"next: labelscan scan {out_dir} OUT" + (" --id-column id" if ids_path else ""))


@cli.command()
@click.argument("out_path", metavar="OUT")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Issues shown in the table.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of tables.")
@click.option("--html", "html_path", metavar="PATH",
              help="Where to write the HTML report [default: OUT/report.html].")
@click.option("--no-html", is_flag=True, help="Do not write the HTML report.")
@_storage_option_flags
def report(out_path, top, as_json, html_path, no_html, storage_option_pairs, endpoint_url):
    """Verify a finished scan at OUT (every file against _SUCCESS), print its summary and write
    report.html: self-contained plots (noise matrix, issue rate and label-quality histograms per
    class) and the top issues. report.html is not part of the manifest (docs/outputs.md)."""
    import labelscan
    from labelscan.report import write_report

    storage_options = parse_storage_options(storage_option_pairs, endpoint_url)
    result = labelscan.open_scan(out_path, storage_options=storage_options)
    if not as_json:
        click.echo(f"verified: every file of {redact_url(out_path)} matches its _SUCCESS manifest")
    _show(result, top, False, as_json)
    if no_html:
        return
    try:
        written = write_report(result, html_path)
    except OSError as error:
        if html_path:
            raise
        click.echo(f"warning: could not write report.html into the scan ({type(error).__name__}: {error}); "
                   f"give --html PATH to write it elsewhere", err=True)
        return
    click.echo(f"report: {redact_url(written)}", err=True)


@cli.command()
@click.argument("job_path", metavar="JOB")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the job file, repeatable; dotted keys reach nested ones "
                   "(generate.rows=2000); values are YAML (cluster='{scheduler: tcp://h:8786}').")
@click.option("--dry-run", is_flag=True, help="Validate the job and print it resolved (JSON); run nothing.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Issues shown in the table.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; print one result line (cron).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of tables.")
@_observability_flags
def run(job_path, overrides, dry_run, top, quiet, as_json, performance_report, log_format):
    """Run the scan described by the job file JOB (YAML; schema: labelscan.jobs, docs/operations.md).

    Invalid job files exit with code 2 and name the file, line and key of each problem.
    """
    from labelscan.jobs import job_cluster
    from labelscan.progress import Observer

    job = load_job_logged(job_path, overrides, log_format, "run")
    if dry_run:
        job.storage_options()   # every environment variable it names must be set
        click.echo(json.dumps(job.describe(), indent=2, default=_json_default))
        click.echo(f"job {job_path} is valid (dry run: nothing was run)", err=True)
        return
    observer = Observer(quiet or as_json, log_format, command="run", job=job.name)
    result = run_job(job, observer, job_cluster(job), performance_report or job["performance_report"])
    _show(result, top, quiet, as_json)


def run_job(job, observer, cluster, report_path=None):
    """Run the scan of a job file as ``labelscan run`` does, telling ``observer`` about it.

    Parameters
    ----------
    job : labelscan.jobs.Job
    observer : labelscan.progress.Observer
        Its JSON logs get ``start``, ``cluster``, the stages, ``done`` (or ``error``) and
        ``performance_report``.
    cluster : context manager
        Yields ``(client, labelscan.jobs.ClusterInfo)`` and closes what it started, such as
        :func:`labelscan.jobs.job_cluster`; entered within the job's timeout.
    report_path : str, optional
        Write a Dask performance report there (checked before anything runs).

    Returns
    -------
    labelscan.ScanResult
    """
    import labelscan
    from labelscan.jobs import ensure_input, performance_report_to, time_limit

    with observer.errors(exit_code):
        if report_path:
            _check_report_path(report_path)
        kwargs = job.scan_kwargs()
        observer.start(f"labelscan run {job.source} ({job.name}): {redact_url(str(job['input']))} -> "
                       f"{redact_url(job['output'])}", input=redact_url(str(job["input"])),
                       output=redact_url(job["output"]))
        started = time.perf_counter()
        with time_limit(job["timeout"], f"job {job.name}"), _quiet_local_workers(), cluster as (client, info):
            observer.cluster(client, info.description, info.started, time.perf_counter() - started,
                             info.dashboard)
            ensure_input(job, log=observer.note)
            with observer.progress(client) as progress, performance_report_to(report_path, client), \
                    _naming_overwrite_option("overwrite: true (--set overwrite=true)"):
                result = labelscan.scan(**kwargs, client=client, progress=progress)
        observer.done(result)
    if report_path:
        observer.note(f"performance report: {report_path}", event="performance_report", path=report_path)
    return result


@cli.command()
@click.argument("out_path", metavar="OUT")
@click.option("--true-labels", "true_labels", required=True, metavar="PATH|COLUMN",
              help="Verified labels: a .npy file (N integers, path or URL) or a column of the scan's input set.")
@click.option("--input", "input_path", metavar="IN",
              help="The scan's input set, if it moved since the scan [default: the path in summary.json].")
@click.option("--mask-only", is_flag=True, help="Only precision/recall/F1 of the flagged rows (no scores).")
@click.option("--output", metavar="PATH", help="Where to write evaluation.json [default: OUT/evaluation.json].")
@click.option("--no-write", is_flag=True, help="Do not write evaluation.json.")
@_scheduler_option
@click.option("--workers", type=click.IntRange(min=1),
              help="Start a local cluster of N worker processes [default: 1 using every core].")
@_storage_option_flags
@click.option("--json", "as_json", is_flag=True, help="Print evaluation.json instead of a table.")
def evaluate(out_path, true_labels, input_path, mask_only, output, no_write, scheduler, workers,
             storage_option_pairs, endpoint_url, as_json):
    """Evaluate the finished scan at OUT against verified labels: precision, recall and F1 of the
    flagged rows; AUROC, AUPRC and lift (at the number of true errors) of each label-quality score
    (self_confidence, normalized_margin with and without adjust_pred_probs,
    confidence_weighted_entropy). Reads the scan's input again; writes OUT/evaluation.json."""
    from labelscan.evaluate import SCORE_VARIANTS, evaluate as run_evaluation, table

    if scheduler and workers:
        raise click.UsageError("give --scheduler or --workers, not both")
    storage_options = parse_storage_options(storage_option_pairs, endpoint_url)
    with _quiet_local_workers(), _local_cluster(workers, as_json, start=workers is not None) as client:
        result = run_evaluation(out_path, true_labels, variants=() if mask_only else SCORE_VARIANTS,
                                input_path=input_path, storage_options=storage_options, client=client,
                                scheduler=scheduler, output=output, write=not no_write)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=_json_default))
        return
    click.echo(f"evaluation of {redact_url(out_path)} against {true_labels}")
    click.echo(table(result))
    if not no_write:
        click.echo(f"wrote {redact_url(output or out_path.rstrip('/') + '/evaluation.json')}", err=True)


def _show(result, top, quiet, as_json):
    if as_json:
        click.echo(json.dumps(result.summary, indent=2, sort_keys=True, default=_json_default))
    elif quiet:
        click.echo(f"{redact_url(result.out)}: {result.num_issues} issues in {result.summary['num_rows']} rows")
    else:
        _print_summary(result.summary, result.out, result.issues(top) if top else None, top)


def main(argv=None):
    """Entry point of the ``labelscan`` command (``labelscan = labelscan.cli:main``)."""
    return cli.main(args=argv, prog_name="labelscan")


if __name__ == "__main__":
    main()
