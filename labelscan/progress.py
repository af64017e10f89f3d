"""Progress of a scan, for people (a line or a live bar per stage) and for machines (JSON lines).

A :class:`ScanProgress` is the ``progress=`` callback of :func:`labelscan.scan`: the scan calls
it with ``(stage, seconds)`` when each stage ends (``read``, ``thresholds``, ``joint``,
``cutoffs``, ``flag``, ``rank``). Given the scan's ``distributed.Client``, it also counts the
scan's tasks as they finish: every labelscan task key is ``labelscan-<step>-<token>-<i>``, and
the client knows the state of every future it holds, so no scheduler round trip is needed.

Formats:

- ``"text"`` on a terminal or in a notebook: one live line per stage, redrawn in place
  (``  joint       [########            ]  10/24 tasks    1.2 s``), left as
  ``  joint            1.23 s  (24 tasks)`` when the stage ends;
- ``"text"`` elsewhere (cron, pipes): only the final line of each stage;
- ``"json"``: one JSON object per line (:class:`JsonLog`), e.g.
  ``{"event": "stage", "stage": "joint", "seconds": 1.23, ...}``.

Task counts are sampled from the client's futures every 0.2 s while a live bar is drawn, so a
bar's total may grow as a stage submits more rounds of tasks; the stage timings are exact.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sys
import threading
import time

STAGES = ("read", "thresholds", "joint", "cutoffs", "flag", "rank")
"""A scan's stages in order, as reported to the ``progress`` callback and in ``summary.json``."""

TIMING_ORDER = ("cluster", "generate", "plan", "read", "thresholds", "joint", "scores", "cutoffs",
                "unique-ids", "flag", "rank", "evaluate")
"""Every timed step of a run, in the order it runs (``summary.json`` stores them sorted by name)."""


def in_run_order(timings: dict) -> list:
    """The keys of ``timings`` in :data:`TIMING_ORDER`, unknown ones after them, ``total`` last."""
    def position(stage):
        if stage == "total":
            return (2, 0)
        return (0, TIMING_ORDER.index(stage)) if stage in TIMING_ORDER else (1, 0)

    return sorted(timings, key=position)


STEP_STAGE = {
    "read": "read", "counts": "read",
    "thresholds": "thresholds", "threshold": "thresholds",
    "joint": "joint",
    "scores": "cutoffs", "score": "cutoffs", "keys": "cutoffs", "cutoffs": "cutoffs",
    "flag": "flag",
    "rank": "rank", "mask": "rank",   # mask parts are written while the issues are ranked
}
"""Stage of each task-name prefix's first word (``labelscan-thresholds-merge`` -> ``thresholds``)."""

BAR_WIDTH = 20
POLL_SECONDS = 0.2


def task_stage(key) -> str | None:
    """The stage of a labelscan task key (``labelscan-joint-summary-<token>-3`` -> ``"joint"``)."""
    if not isinstance(key, str) or not key.startswith("labelscan-"):
        return None
    step = key[len("labelscan-"):].split("-", 1)[0]
    return STEP_STAGE.get(step)


class TaskCounter:
    """Counts a client's labelscan tasks per stage: submitted and finished.

    Futures the client released are counted as finished (a scan releases what it gathered).
    Only keys first seen after :meth:`start` count, so earlier work on a shared client does not.
    """

    def __init__(self, client):
        self.client = client
        self._state: dict = {}      # key -> finished?
        self._ignored: set = set()

    def _snapshot(self):
        for _ in range(5):
            try:
                return {key: state.status for key, state in list(self.client.futures.items())}
            except RuntimeError:   # the client's loop changed the dict while we copied it
                continue
        return {}

    def start(self) -> None:
        self._ignored = set(self._snapshot())

    def poll(self) -> dict:
        """``{stage: (finished, submitted)}`` so far."""
        current = self._snapshot()
        for key, status in current.items():
            if key not in self._ignored and task_stage(key) is not None:
                self._state[key] = status in ("finished", "error", "cancelled", "lost")
        for key in self._state:
            if key not in current:
                self._state[key] = True
        counts: dict = {}
        for key, finished in self._state.items():
            done, total = counts.get(task_stage(key), (0, 0))
            counts[task_stage(key)] = (done + finished, total + 1)
        return counts


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return bool(shell and shell.get_ipython() and "IPKernelApp" in shell.get_ipython().config)
    except Exception:  # noqa: BLE001
        return False


class ScanProgress:
    """``progress=`` callback printing a line (or a live bar) per stage; a context manager.

    Parameters
    ----------
    client : distributed.Client, optional
        Count the scan's tasks on it (task counts and live bars need it).
    stream : file, optional
        Default ``sys.stderr``.
    live : bool, optional
        Redraw a bar while a stage runs. Default: on a terminal or in a Jupyter kernel.

    Examples
    --------
    >>> with ScanProgress(client) as progress:                      # doctest: +SKIP
    ...     labelscan.scan("preds/", "scan/", client=client, progress=progress)
    """

    def __init__(self, client=None, stream=None, live=None):
        self.stream = stream if stream is not None else sys.stderr
        self.client = client
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.live = (isatty() or _in_notebook()) if live is None else live
        self.counter = TaskCounter(client) if client is not None else None
        self.timings: dict = {}
        self._entered = self._stage_started = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._last_counts: dict = {}

    def __enter__(self):
        if self.counter is not None:
            self.counter.start()
        self._entered = self._stage_started = time.perf_counter()
        if self.live and self.counter is not None:
            self._thread = threading.Thread(target=self._redraw_loop, name="labelscan-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.live:
            with self._lock:
                self._write("\r\033[K")
        return False

    def current_stage(self) -> str | None:
        for stage in STAGES:
            if stage not in self.timings:
                return stage
        return None

    def counts(self) -> dict:
        if self.counter is None:
            return {}
        try:
            self._last_counts = self.counter.poll()
        except Exception:  # noqa: BLE001 - progress must never fail a scan
            pass
        return self._last_counts

    def _write(self, text):
        try:
            self.stream.write(text)
            self.stream.flush()
        except (ValueError, OSError):   # closed stream
            pass

    def _redraw_loop(self):
        while not self._stop.wait(POLL_SECONDS):
            stage = self.current_stage()
            if stage is None:
                continue
            done, total = self.counts().get(stage, (0, 0))
            now = time.perf_counter()
            if stage == STAGES[0] and not total:   # still planning: the first stage's clock starts later
                label, elapsed, self._stage_started = "plan", now - self._entered, now
            else:
                label, elapsed = stage, now - self._stage_started
            filled = int(BAR_WIDTH * done / total) if total else 0
            with self._lock:
                if self._stop.is_set():
                    return
                self._write(f"\r\033[K  {label:<12}[{'#' * filled}{' ' * (BAR_WIDTH - filled)}] "
                            f"{done:>5}/{total:<5} tasks {elapsed:7.1f} s")

    def __call__(self, stage, seconds):
        self.timings[stage] = seconds
        self._stage_started = time.perf_counter()
        tasks = self.counts().get(stage, (0, 0))[1] if self.counter is not None else 0
        line = f"  {stage:<12}{seconds:9.2f} s"
        with self._lock:
            self._write(("\r\033[K" if self.live else "") + line
                        + (f"  ({tasks} task{'s' if tasks > 1 else ''})" if self.live and tasks else "") + "\n")


class JsonLog:
    """Structured logs: one JSON object per line on ``stream`` (default stderr).

    Every line has ``time`` (UTC, ISO 8601), ``level`` and ``event``. Events of a scan:
    ``start`` (command, input, output), ``cluster`` (kind, dashboard), ``stage`` (stage,
    seconds), ``done`` (num_rows, num_issues, timings: every stage and total) and
    ``error`` (exit_code, message). Usable as the scan's ``progress=`` callback.
    """

    def __init__(self, stream=None, **context):
        self.stream = stream if stream is not None else sys.stderr
        self.context = context

    def emit(self, event, level="info", **fields):
        record = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                  "level": level, "event": event, **self.context, **fields}
        try:
            self.stream.write(json.dumps(record, default=_json_default, sort_keys=False) + "\n")
            self.stream.flush()
        except (ValueError, OSError):
            pass

    def __call__(self, stage, seconds):
        self.emit("stage", stage=stage, seconds=round(float(seconds), 6))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class Observer:
    """What the command line tells while it works: human lines or JSON lines, both on stderr.

    Parameters
    ----------
    quiet : bool
        No human lines (cron). JSON logs are written whenever ``log_format`` is ``"json"``.
    log_format : {"text", "json"}
    stream : file, optional
        Default ``sys.stderr``.
    **context
        Fields added to every JSON line (``command``, ``job`` ...).
    """

    def __init__(self, quiet=False, log_format="text", stream=None, **context):
        self.quiet = quiet
        self.json = log_format == "json"
        self.stream = stream if stream is not None else sys.stderr
        self.log = JsonLog(self.stream, **context) if self.json else None

    def _line(self, text):
        if not self.quiet and not self.json:
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (ValueError, OSError):
                pass

    def note(self, text, event="note", **fields):
        """A human line, or a JSON ``event`` with ``message`` and ``fields``."""
        if self.json:
            self.log.emit(event, message=text, **fields)
        else:
            self._line(text)

    def start(self, text, **fields):
        self.note(text, event="start", **fields)

    def cluster(self, client, description, started, seconds, dashboard):
        """Report the cluster: kind, size, start time and dashboard link (printed at start)."""
        workers = client.scheduler_info().get("workers", {})
        threads = sum(info.get("nthreads", 0) for info in workers.values())
        if self.json:
            self.log.emit("cluster", cluster=description, started=started, workers=len(workers),
                          threads=threads, seconds=round(seconds, 3), dashboard=dashboard)
            return
        what = (f"{description}: {len(workers)} worker(s), {threads} thread(s), "
                + (f"started in {seconds:.1f} s" if started else f"connected in {seconds:.1f} s"))
        self._line(what + (f"; dashboard {dashboard}" if dashboard else ""))

    @contextlib.contextmanager
    def progress(self, client=None):
        """Yield the ``progress=`` callback for a scan on ``client`` (None when quiet)."""
        if self.json:
            yield self.log
        elif self.quiet:
            yield None
        else:
            with ScanProgress(client, self.stream) as display:
                yield display

    def done(self, result):
        if self.json:
            summary = result.summary
            self.log.emit("done", output=_redacted(result.out), num_rows=summary["num_rows"],
                          num_issues=summary["num_issues"], timings=summary.get("timings", {}))

    @contextlib.contextmanager
    def errors(self, classify):
        """Log an escaping error as a JSON ``error`` event (``classify(error)`` gives its exit code)."""
        try:
            yield
        except BaseException as error:
            if self.json and isinstance(error, Exception):
                self.log.emit("error", level="error", exit_code=classify(error),
                              error=type(error).__name__, message=str(error))
            raise


def _redacted(url):
    from labelscan.io.redact import redact_url

    return redact_url(url) if isinstance(url, str) else url
