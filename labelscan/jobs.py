"""Job files: a scan described in YAML, for scheduled and repeatable runs.

``labelscan run jobs/nightly-s3.yaml`` validates the file, starts or connects to the cluster
it names, runs :func:`labelscan.scan` and closes what it started. ``--dry-run`` validates and
prints the resolved job without touching data or clusters. The keys mirror the arguments of
:func:`labelscan.scan`; only ``input`` and ``output`` are required.

Schema
------
======================== ================================ ===================================================
key                      type (default)                   meaning
======================== ================================ ===================================================
``name``                 str (file name)                  label for logs
``input``                str or list of str (required)    parquet file, directory, glob or list; any fsspec URL
``output``               str (required)                   output directory (local path or fsspec URL)
``columns.label``        str (``label``)                  integer given-label column
``columns.pred_probs``   str or list of str               list column, column-name prefix, or K columns
                         (``pred_probs``)
``columns.id``           str (null)                       column carried into the outputs as ``id``
``class_names``          list of str (null)               K names for ``summary.json`` and the report
                                                          (default: the parquet metadata's)
``multi_label``          bool (false)                     ``columns.label`` holds class lists (``list<int>``)
                                                          or K-wide 0/1 vectors: multi-label scan
``filter_by``            enum (``prune_by_noise_rate``)   cleanlab's ``filter_by``
``rank_by``              enum (``self_confidence``)       score that ranks the issues (``label_quality``)
``adjust_pred_probs``    bool (false)                     subtract the confident thresholds before scoring
``frac_noise``           number in [0, 1] (1.0)           pruning filters only
``num_to_remove_per_class`` list of int (null)            K integers; pruning filters only
``min_examples_per_class`` int >= 0 (1)                   pruning filters only
``tie_break``            ``stable`` | ``numpy``           rounding ties of the calibrated joint
``row_sum_tolerance``    number >= 0 (null)               reject rows whose sum is further from 1
``on_bad_rows``          ``error`` | ``skip``             bad rows stop the scan, or are skipped (listed in
                                                          ``rejected/``)
``backend``              ``auto`` | ``numpy`` | ``cupy``  per-partition work on CPU or GPU
``cluster``              see below (``local``)            where the scan runs
``resources``            mapping (local clusters only)    ``workers``, ``threads_per_worker``,
                                                          ``memory_limit`` (bytes or ``"8GiB"``, per worker)
``storage_options``      mapping ({})                     fsspec options without secrets (``anon``,
                                                          ``client_kwargs.endpoint_url`` ...)
``storage_options_env``  mapping of option -> ENV_VAR     options read from environment variables at run
                                                          time (secrets); dotted option names nest
``rows_per_partition``   int >= 1 (config)                rows per partition
``cache``                ``auto`` | true | false (config) keep decoded partitions in worker memory
``issues_per_part``      int >= 1 (config)                rows per ranked issues part
``retries``              int >= 0 (config)                retries of each task (worker loss)
``timeout``              seconds or ``"90m"``/``"2h"``    wall-clock limit of the whole job (exit code 4)
                         (config)
``overwrite``            bool (false)                     replace another scan's outputs at ``output``
``resume``               bool (false)                     keep parts an interrupted run already wrote
``performance_report``   str (null)                       write a Dask performance report (HTML) there
``generate``             mapping (null)                   demo: when ``input`` holds no parquet file, write
                                                          a synthetic noisy set there first (``rows``,
                                                          ``classes``, ``noise_rate``, ``seed``)
======================== ================================ ===================================================

"(config)" defaults come from :mod:`labelscan.config` (``DASK_LABELSCAN__RETRIES=5`` ...).

``cluster`` is one of:

- ``local`` (default): start a ``LocalCluster`` (a ``LocalCUDACluster`` for ``backend: cupy``)
  sized by ``resources``, and close it after the scan;
- ``{scheduler: tcp://host:8786}``: connect to a running scheduler (a plain address string is
  accepted too);
- ``{scheduler_file: /path/scheduler.json}``: connect through a scheduler file (dask-jobqueue,
  ``dask scheduler --scheduler-file``, MPI);
- ``{gateway: {address, cluster_name, options, workers, adapt: {minimum, maximum}, shutdown}}``:
  a Dask Gateway cluster (needs ``dask-gateway``): connect to ``cluster_name``, or create one
  with ``options`` (shut down after the scan unless ``shutdown: false``); scale it to
  ``workers`` or let it ``adapt``. ``address`` defaults to dask-gateway's own configuration.

Strings of ``input``, ``output``, ``performance_report`` and of the cluster addresses may use
``${VAR}`` for environment variables; ``${LABELSCAN_DATE}`` (UTC ``YYYY-MM-DD``) and
``${LABELSCAN_TIME}`` (UTC ``YYYYMMDDTHHMMSS``) are set when the environment does not set them.
Relative paths are relative to the working directory.

Errors name the file, the line and the key (``jobs/x.yaml:12: filter_by: must be one of ...``)
and exit with code 2, before anything runs.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import os
import re
import signal
import threading
from dataclasses import dataclass, field

import yaml

from labelscan import config
from labelscan.backend import BACKENDS
from labelscan.errors import LabelscanError, UsageError, EXIT_INFRASTRUCTURE
from labelscan.options import FILTERS, RANK_METHODS

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?|[bB])?\s*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class JobError(UsageError):
    """A job file that cannot be run: each problem names the file, the line and the key (exit code 2)."""

    def __init__(self, problems):
        self.problems = list(problems) if not isinstance(problems, str) else [problems]
        super().__init__("\n  ".join(["invalid job file:", *self.problems]) if len(self.problems) > 1
                         else f"invalid job file: {self.problems[0]}")

    def __reduce__(self):
        return type(self), (self.problems,)


class JobTimeout(LabelscanError):
    """The job ran longer than its ``timeout`` (exit code 4, like other infrastructure failures)."""

    exit_code = EXIT_INFRASTRUCTURE


# ---------------------------------------------------------------------------------------------
# the schema: one small validator per key


@dataclass
class _Context:
    source: str
    problems: list = field(default_factory=list)

    def where(self, node) -> str:
        origin = getattr(node, "labelscan_origin", None)
        if origin:
            return origin
        if node.start_mark is None:
            return self.source
        return f"{self.source}:{node.start_mark.line + 1}"

    def fail(self, node, key, message):
        self.problems.append(f"{self.where(node)}: {key}: {message}" if key else f"{self.where(node)}: {message}")
        return _INVALID


_INVALID = object()


def _type_name(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)


class Field:
    """A key of the schema: how its value is checked and what it means (for ``--help``)."""

    def __init__(self, kind, default=None, *, nullable=True, choices=None, low=None, high=None, doc=""):
        self.kind, self.default, self.nullable = kind, default, nullable
        self.choices, self.low, self.high, self.doc = choices, low, high, doc

    def check(self, ctx, node, key, value):
        if value is None:
            return None if self.nullable else ctx.fail(node, key, "must not be null")
        checker = getattr(self, f"_check_{self.kind}")
        return checker(ctx, node, key, value)

    def _expect(self, ctx, node, key, value, ok, wanted):
        if not ok:
            return ctx.fail(node, key, f"must be {wanted}; got {_type_name(value)} ({value!r})")
        return value

    def _check_str(self, ctx, node, key, value):
        if not isinstance(value, str) or not value.strip():
            return ctx.fail(node, key, f"must be a non-empty string; got {_type_name(value)} ({value!r})")
        return value

    def _check_bool(self, ctx, node, key, value):
        return self._expect(ctx, node, key, value, isinstance(value, bool), "true or false")

    def _check_int(self, ctx, node, key, value):
        if self._expect(ctx, node, key, value, isinstance(value, int) and not isinstance(value, bool),
                        "an integer") is _INVALID:
            return _INVALID
        return self._bounds(ctx, node, key, value)

    def _check_number(self, ctx, node, key, value):
        if self._expect(ctx, node, key, value, isinstance(value, (int, float)) and not isinstance(value, bool),
                        "a number") is _INVALID:
            return _INVALID
        return self._bounds(ctx, node, key, float(value))

    def _bounds(self, ctx, node, key, value):
        if self.low is not None and value < self.low:
            return ctx.fail(node, key, f"must be at least {self.low}; got {value}")
        if self.high is not None and value > self.high:
            return ctx.fail(node, key, f"must be at most {self.high}; got {value}")
        return value

    def _check_enum(self, ctx, node, key, value):
        if value not in self.choices:
            suggestion = _suggest(value, self.choices)
            return ctx.fail(node, key, f"must be one of {', '.join(map(_show, self.choices))}; got "
                                       f"{value!r}{suggestion}")
        return value

    def _check_str_or_list(self, ctx, node, key, value):
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, list) and value and all(isinstance(item, str) and item for item in value):
            return list(value)
        return ctx.fail(node, key, f"must be a string or a non-empty list of strings; got {_type_name(value)}")

    def _check_str_list(self, ctx, node, key, value):
        if isinstance(value, list) and value and all(isinstance(item, (str, int)) and not isinstance(item, bool)
                                                     for item in value):
            return [str(item) for item in value]
        return ctx.fail(node, key, f"must be a non-empty list of strings; got {_type_name(value)}")

    def _check_int_list(self, ctx, node, key, value):
        if isinstance(value, list) and value and all(isinstance(item, int) and not isinstance(item, bool)
                                                     and item >= 0 for item in value):
            return list(value)
        return ctx.fail(node, key, f"must be a non-empty list of integers >= 0; got {_type_name(value)}")

    def _check_mapping(self, ctx, node, key, value):
        return self._expect(ctx, node, key, value, isinstance(value, dict), "a mapping")

    def _check_cache(self, ctx, node, key, value):
        if value == "auto" or isinstance(value, bool):
            return value
        return ctx.fail(node, key, f"must be auto, true or false; got {value!r}")

    def _check_duration(self, ctx, node, key, value):
        seconds = _seconds(value)
        if seconds is None or seconds <= 0:
            return ctx.fail(node, key, f"must be a positive number of seconds or a duration such as "
                                       f"'90m' or '2h'; got {value!r}")
        return seconds

    def _check_memory(self, ctx, node, key, value):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        if isinstance(value, str) and (_MEMORY.match(value) or value == "auto"):
            return value
        return ctx.fail(node, key, f"must be bytes or a size such as '8GiB'; got {value!r}")

    def _check_env_name(self, ctx, node, key, value):
        if isinstance(value, str) and _ENV_NAME.match(value):
            return value
        return ctx.fail(node, key, f"must be the NAME of an environment variable (letters, digits, _); "
                                   f"got {value!r}")


def _show(choice):
    return {True: "true", False: "false"}.get(choice, str(choice)) if isinstance(choice, bool) else str(choice)


def _seconds(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    return None


def _suggest(word, candidates) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


COLUMNS = {
    "label": Field("str", "label", nullable=False, doc="integer given-label column"),
    "pred_probs": Field("str_or_list", "pred_probs", nullable=False,
                        doc="list column, column-name prefix, or list of K columns"),
    "id": Field("str", None, doc="column carried into the outputs as id"),
}
RESOURCES = {
    "workers": Field("int", None, low=1, doc="worker processes (default: one using every core)"),
    "threads_per_worker": Field("int", None, low=1, doc="threads per worker process"),
    "memory_limit": Field("memory", None, doc="memory limit per worker: bytes or a size such as '8GiB'"),
}
GENERATE = {
    "rows": Field("int", 200_000, nullable=False, low=1, doc="rows of the synthetic set"),
    "classes": Field("int", 10, nullable=False, low=2, doc="classes (K)"),
    "noise_rate": Field("number", 0.2, nullable=False, low=0.0, high=1.0, doc="probability a label is wrong"),
    "seed": Field("int", 0, nullable=False, doc="random seed"),
}
GATEWAY = {
    "address": Field("str", None, doc="gateway address (default: dask-gateway's configuration)"),
    "proxy_address": Field("str", None, doc="scheduler proxy address"),
    "auth": Field("str", None, doc="authentication: kerberos | jupyterhub | basic (dask-gateway)"),
    "cluster_name": Field("str", None, doc="connect to this running cluster instead of creating one"),
    "options": Field("mapping", None, doc="cluster options of a new cluster (worker_cores, image, ...)"),
    "workers": Field("int", None, low=0, doc="scale to this many workers"),
    "adapt": Field("mapping", None, doc="adaptive scaling: {minimum, maximum}"),
    "shutdown": Field("bool", True, nullable=False, doc="shut a created cluster down after the scan"),
}
ADAPT = {
    "minimum": Field("int", 0, nullable=False, low=0, doc="fewest workers"),
    "maximum": Field("int", None, low=1, doc="most workers"),
}
SCHEMA = {
    "name": Field("str", None, doc="label for logs (default: the file name)"),
    "input": Field("str_or_list", None, nullable=False, doc="parquet file, directory, glob or list"),
    "output": Field("str", None, nullable=False, doc="output directory"),
    "columns": Field("mapping", None, doc="label, pred_probs and id column names"),
    "class_names": Field("str_list", None, doc="K class names"),
    "multi_label": Field("bool", False, nullable=False, doc="labels are class lists (multi-label scan)"),
    "filter_by": Field("enum", "prune_by_noise_rate", nullable=False, choices=FILTERS, doc="cleanlab filter_by"),
    "rank_by": Field("enum", "self_confidence", nullable=False, choices=RANK_METHODS, doc="ranking score"),
    "adjust_pred_probs": Field("bool", False, nullable=False, doc="subtract thresholds before scoring"),
    "frac_noise": Field("number", 1.0, nullable=False, low=0.0, high=1.0, doc="fraction of issues returned"),
    "num_to_remove_per_class": Field("int_list", None, doc="K integers"),
    "min_examples_per_class": Field("int", 1, nullable=False, low=0, doc="rows kept per class"),
    "tie_break": Field("enum", "stable", nullable=False, choices=("stable", "numpy"), doc="rounding ties"),
    "row_sum_tolerance": Field("number", None, low=0.0, doc="largest accepted |row sum - 1|"),
    "on_bad_rows": Field("enum", "error", nullable=False, choices=("error", "skip"), doc="stop at or skip bad rows"),
    "backend": Field("enum", "auto", nullable=False, choices=BACKENDS, doc="CPU (numpy) or GPU (cupy)"),
    "cluster": Field("cluster", "local", nullable=False, doc="local | {scheduler} | {scheduler_file} | {gateway}"),
    "resources": Field("mapping", None, doc="local cluster size"),
    "storage_options": Field("mapping", None, doc="fsspec options (no secrets)"),
    "storage_options_env": Field("mapping", None, doc="fsspec options from environment variables"),
    "rows_per_partition": Field("int", None, low=1, doc="rows per partition"),
    "cache": Field("cache", None, doc="auto | true | false"),
    "issues_per_part": Field("int", None, low=1, doc="rows per issues part"),
    "retries": Field("int", None, low=0, doc="retries of each task"),
    "timeout": Field("duration", None, doc="wall-clock limit of the job"),
    "overwrite": Field("bool", False, nullable=False, doc="replace another scan's outputs"),
    "resume": Field("bool", False, nullable=False, doc="keep parts of an interrupted run"),
    "performance_report": Field("str", None, doc="Dask performance report HTML path"),
    "generate": Field("mapping", None, doc="demo: synthetic input written when missing"),
}
NESTED = {"columns": COLUMNS, "resources": RESOURCES, "generate": GENERATE}
CLUSTER_KINDS = ("scheduler", "scheduler_file", "gateway")


# ---------------------------------------------------------------------------------------------
# reading and validating


@dataclass
class Job:
    """A validated job file.

    Attributes
    ----------
    source : str
        Where it was read from.
    values : dict
        Every schema key with its validated value or default (nested mappings as dicts;
        ``cluster`` as ``{"kind": "local"|"scheduler"|"scheduler_file"|"gateway", ...}``,
        ``timeout`` in seconds, ``storage_options`` without the environment ones).
    storage_options_env : dict
        Option path -> environment variable name.
    """

    source: str
    values: dict
    storage_options_env: dict

    def __getitem__(self, key):
        return self.values[key]

    @property
    def name(self) -> str:
        return self.values["name"] or os.path.splitext(os.path.basename(self.source))[0]

    def storage_options(self, environ=None) -> dict | None:
        """fsspec options: the literal ones plus those read from the environment.

        Raises
        ------
        JobError
            A named environment variable is not set.
        """
        environ = os.environ if environ is None else environ
        missing = _unset_variables(self.storage_options_env, environ)
        if missing:
            raise JobError(missing)
        options = _deep_copy(self.values["storage_options"] or {})
        for option, (variable, _) in self.storage_options_env.items():
            _set_dotted(options, option, _env_value(environ[variable]))
        return options or None

    def scan_kwargs(self, environ=None) -> dict:
        """Keyword arguments of :func:`labelscan.scan` (without ``client`` and ``progress``)."""
        v, columns = self.values, self.values["columns"]
        pred_probs = columns["pred_probs"]
        return {
            "input_path": v["input"], "out_path": v["output"], "label_column": columns["label"],
            "pred_probs_column": pred_probs, "id_column": columns["id"], "filter_by": v["filter_by"],
            "frac_noise": v["frac_noise"], "num_to_remove_per_class": v["num_to_remove_per_class"],
            "min_examples_per_class": v["min_examples_per_class"], "rank_by": v["rank_by"],
            "adjust_pred_probs": v["adjust_pred_probs"], "tie_break": v["tie_break"], "backend": v["backend"],
            "storage_options": self.storage_options(environ), "rows_per_partition": v["rows_per_partition"],
            "overwrite": v["overwrite"], "resume": v["resume"], "cache": v["cache"], "retries": v["retries"],
            "issues_per_part": v["issues_per_part"], "class_names": v["class_names"],
            "multi_label": v["multi_label"],
            "row_sum_tolerance": v["row_sum_tolerance"], "on_bad_rows": v["on_bad_rows"],
        }

    def describe(self) -> dict:
        """The resolved job for ``--dry-run``: environment-sourced options show their variable names."""
        shown = {key: value for key, value in self.values.items() if key != "storage_options_env"}
        shown["name"] = self.name
        shown["storage_options_env"] = {option: f"${{{variable}}}"
                                        for option, (variable, _) in self.storage_options_env.items()}
        for key in ("retries", "rows_per_partition", "cache", "issues_per_part"):
            if shown[key] is None:
                shown[key] = config.get(key.replace("_", "-"))
        return shown


def load_job(path, overrides=(), environ=None, now=None) -> Job:
    """Read and validate a job file.

    Parameters
    ----------
    path : str
        Local path of the YAML file.
    overrides : sequence of str
        ``KEY=VALUE`` pairs applied on top of the file (``--set``); dotted keys reach nested
        mappings (``generate.rows=2000``); values are YAML (``cluster={scheduler: tcp://h:8786}``).
    environ : mapping, optional
        Environment for ``${VAR}`` references (default ``os.environ``).
    now : datetime.datetime, optional
        Time behind ``${LABELSCAN_DATE}`` / ``${LABELSCAN_TIME}`` (default: now, UTC).

    Raises
    ------
    JobError
        Unreadable YAML, unknown keys, wrong types or values, unset variables; every problem
        names the file, line and key.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise JobError(f"{path}: cannot read the job file ({error.strerror or error})") from None
    return parse_job(text, source=str(path), overrides=overrides, environ=environ, now=now)


def parse_job(text: str, source: str = "<job>", overrides=(), environ=None, now=None) -> Job:
    """Validate the YAML ``text`` of a job (see :func:`load_job`)."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = f"{source}:{mark.line + 1}" if mark else source
            raise JobError(f"{line}: not valid YAML: {error.problem or error}") from None
        except yaml.YAMLError as error:
            raise JobError(f"{source}: not valid YAML: {error}") from None
        ctx = _Context(source)
        if root is None:
            raise JobError(f"{source}: the job file is empty (input and output are required)")
        if not isinstance(root, yaml.MappingNode):
            raise JobError(f"{ctx.where(root)}: a job file is a mapping of keys (input: ..., output: ...)")
        for pair in overrides:
            _apply_override(ctx, root, pair)
        if ctx.problems:
            raise JobError(ctx.problems)
        environ = environ if environ is not None else os.environ
        values, env_options = _validate(ctx, loader, root, environ, now or datetime.datetime.now(datetime.timezone.utc))
        ctx.problems += _unset_variables(env_options, environ)   # reported with the file's other problems
        if ctx.problems:
            raise JobError(ctx.problems)
        return Job(source=source, values=values, storage_options_env=env_options)
    finally:
        loader.dispose()


def _unset_variables(storage_options_env: dict, environ) -> list:
    """A problem per ``storage_options_env`` entry whose environment variable is not set."""
    return [f"{where}: storage_options_env.{option}: environment variable {variable} is not set"
            for option, (variable, where) in storage_options_env.items() if variable not in environ]


def _apply_override(ctx, root, pair):
    key, sep, text = pair.partition("=")
    if not sep or not key:
        ctx.problems.append(f"--set {pair}: expected KEY=VALUE")
        return
    try:
        value_node = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    except yaml.YAMLError as error:
        ctx.problems.append(f"--set {pair}: the value is not valid YAML ({error})")
        return
    if value_node is None:
        value_node = yaml.ScalarNode("tag:yaml.org,2002:null", "null")
    value_node.labelscan_origin = f"--set {pair}"
    *parents, leaf = key.split(".")
    mapping = root
    for parent in parents:
        child = _child(mapping, parent)
        if child is None:
            child = yaml.MappingNode("tag:yaml.org,2002:map", [])
            child.labelscan_origin = f"--set {pair}"
            mapping.value.append((_key_node(parent, pair), child))
        if not isinstance(child, yaml.MappingNode):
            ctx.problems.append(f"--set {pair}: {parent} is not a mapping")
            return
        mapping = child
    for index, (key_node, _) in enumerate(mapping.value):
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == leaf:
            mapping.value[index] = (key_node, value_node)
            return
    mapping.value.append((_key_node(leaf, pair), value_node))


def _key_node(name, pair):
    node = yaml.ScalarNode("tag:yaml.org,2002:str", name)
    node.labelscan_origin = f"--set {pair}"
    return node


def _child(mapping, name):
    for key_node, value_node in mapping.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == name:
            return value_node
    return None


def _entries(ctx, loader, node, prefix):
    """``[(key, key_node, value_node, value)]`` of a mapping node; duplicate and non-string keys fail."""
    entries, seen = [], {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            ctx.fail(key_node, None, f"{prefix}keys must be strings; got {key!r}")
            continue
        if key in seen:
            ctx.fail(key_node, prefix + key, f"given twice (first {seen[key]})")
            continue
        seen[key] = (f"on line {key_node.start_mark.line + 1}" if key_node.start_mark is not None
                     else f"in {ctx.where(key_node)}")
        entries.append((key, key_node, value_node, loader.construct_object(value_node, deep=True)))
    return entries


def _validate_mapping(ctx, loader, node, schema, prefix):
    """Validate a mapping node against ``schema``; returns every key with its value or default."""
    values = {key: _deep_copy(spec.default) for key, spec in schema.items()}
    if not isinstance(node, yaml.MappingNode):
        ctx.fail(node, prefix.rstrip("."), "must be a mapping")
        return values
    for key, key_node, value_node, value in _entries(ctx, loader, node, prefix):
        if key not in schema:
            ctx.fail(key_node, None, f"unknown key {prefix + key!r}{_suggest(key, schema)}"
                                     f" (known: {', '.join(schema)})")
            continue
        checked = schema[key].check(ctx, value_node, prefix + key, value)
        if checked is not _INVALID:
            values[key] = checked
    return values


def _validate(ctx, loader, root, environ, now):
    entries = _entries(ctx, loader, root, "")
    names = {key: key_node for key, key_node, _, _ in entries}
    nodes = {key: value_node for key, _, value_node, _ in entries}
    values = {key: _deep_copy(spec.default) for key, spec in SCHEMA.items()}
    for key, key_node in names.items():
        value_node = nodes[key]
        if key not in SCHEMA:
            ctx.fail(key_node, None, f"unknown key {key!r}{_suggest(key, SCHEMA)}")
            continue
        if key in NESTED:
            if loader.construct_object(value_node, deep=True) is None:
                values[key] = None
            else:
                values[key] = _validate_mapping(ctx, loader, value_node, NESTED[key], key + ".")
        elif key == "cluster":
            values[key] = _validate_cluster(ctx, loader, value_node)
        else:
            checked = SCHEMA[key].check(ctx, value_node, key, loader.construct_object(value_node, deep=True))
            if checked is not _INVALID:
                values[key] = checked
    for key in ("input", "output"):
        if key not in names:
            ctx.problems.append(f"{ctx.where(root)}: {key}: required key is missing")
    if values["columns"] is None:
        values["columns"] = {key: spec.default for key, spec in COLUMNS.items()}
    if values["cluster"] is _INVALID or values["cluster"] == "local":
        values["cluster"] = {"kind": "local"}
    if values["resources"] is not None and values["cluster"]["kind"] != "local":
        ctx.fail(nodes["resources"], "resources", "applies to cluster: local only (size other clusters "
                                                  "where they are started)")
    if values["resources"] is None:
        values["resources"] = {key: None for key in RESOURCES}
    if values["storage_options"] is None:
        values["storage_options"] = {}
    if values["num_to_remove_per_class"] is not None and values["filter_by"] not in (
            "prune_by_noise_rate", "prune_by_class", "both"):
        ctx.fail(nodes["num_to_remove_per_class"], "num_to_remove_per_class",
                 "only applies to filter_by prune_by_noise_rate, prune_by_class or both")
    if values["rank_by"] == "confidence_weighted_entropy" and values["adjust_pred_probs"]:
        ctx.fail(nodes["adjust_pred_probs"], "adjust_pred_probs",
                 "is not supported with rank_by: confidence_weighted_entropy")
    if values["generate"] is not None and not isinstance(values["input"], str):
        ctx.fail(nodes["generate"], "generate", "needs a single input path")
    if values["timeout"] is None:
        default_timeout = config.get("timeout")
        values["timeout"] = _seconds(default_timeout) if default_timeout is not None else None
    env_options = {}
    if "storage_options_env" in nodes and values["storage_options_env"] is not None:
        env_options = _validate_env_options(ctx, loader, nodes["storage_options_env"])
    values.pop("storage_options_env", None)
    _expand_variables(ctx, values, nodes, environ, now)
    return values, env_options


def _validate_cluster(ctx, loader, node):
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str):
        if value == "local":
            return {"kind": "local"}
        if "://" in value:
            return {"kind": "scheduler", "scheduler": value, "node": node}
        return ctx.fail(node, "cluster", f"must be local, a scheduler address (tcp://host:8786), or a mapping "
                                         f"with one of {', '.join(CLUSTER_KINDS)}; got {value!r}")
    if not isinstance(value, dict):
        return ctx.fail(node, "cluster", f"must be local or a mapping with one of {', '.join(CLUSTER_KINDS)}; "
                                         f"got {_type_name(value)}")
    entries = _entries(ctx, loader, node, "cluster.")
    unknown = [(key, key_node) for key, key_node, _, _ in entries if key not in CLUSTER_KINDS]
    for key, key_node in unknown:
        ctx.fail(key_node, None, f"unknown key 'cluster.{key}'{_suggest(key, CLUSTER_KINDS)} "
                                 f"(known: {', '.join(CLUSTER_KINDS)})")
    known = [entry for entry in entries if entry[0] in CLUSTER_KINDS]
    if unknown:
        return _INVALID
    if len(known) != 1:
        return ctx.fail(node, "cluster", f"give exactly one of {', '.join(CLUSTER_KINDS)}")
    kind, _, value_node, inner = known[0]
    if kind in ("scheduler", "scheduler_file"):
        checked = Field("str", nullable=False).check(ctx, value_node, f"cluster.{kind}", inner)
        return _INVALID if checked is _INVALID else {"kind": kind, kind: checked, "node": value_node}
    gateway = _validate_mapping(ctx, loader, value_node, GATEWAY, "cluster.gateway.")
    adapt_node = _child(value_node, "adapt") if isinstance(value_node, yaml.MappingNode) else None
    if gateway["adapt"] is not None and adapt_node is not None:
        gateway["adapt"] = _validate_mapping(ctx, loader, adapt_node, ADAPT, "cluster.gateway.adapt.")
        if gateway["workers"] is not None:
            ctx.fail(adapt_node, "cluster.gateway.adapt", "give workers or adapt, not both")
    return {"kind": "gateway", "gateway": gateway, "node": value_node}


def _validate_env_options(ctx, loader, node):
    if not isinstance(node, yaml.MappingNode):
        return {}
    options = {}
    name_field = Field("env_name", nullable=False)
    for key, key_node, value_node, value in _entries(ctx, loader, node, "storage_options_env."):
        if any(not part for part in key.split(".")):
            ctx.fail(key_node, f"storage_options_env.{key}", "empty part in the option name")
            continue
        checked = name_field.check(ctx, value_node, f"storage_options_env.{key}", value)
        if checked is not _INVALID:
            options[key] = (checked, ctx.where(value_node))
    return options


def _expand_variables(ctx, values, nodes, environ, now):
    """Replace ``${VAR}`` in paths and addresses; unset variables are problems naming key and line."""
    builtin = {"LABELSCAN_DATE": now.strftime("%Y-%m-%d"), "LABELSCAN_TIME": now.strftime("%Y%m%dT%H%M%S")}

    def expand(text, node, key):
        def one(match):
            name = match.group(1)
            if name in environ:
                return environ[name]
            if name in builtin:
                return builtin[name]
            ctx.fail(node, key, f"environment variable {name} is not set")
            return match.group(0)
        return _ENV_REFERENCE.sub(one, text)

    for key in ("output", "performance_report"):
        if isinstance(values[key], str):
            values[key] = expand(values[key], nodes[key], key)
    if isinstance(values["input"], str):
        values["input"] = expand(values["input"], nodes["input"], "input")
    elif isinstance(values["input"], list):
        values["input"] = [expand(item, nodes["input"], "input") for item in values["input"]]
    cluster = values["cluster"]
    node = cluster.pop("node", None) if isinstance(cluster, dict) else None
    if cluster.get("kind") in ("scheduler", "scheduler_file"):
        cluster[cluster["kind"]] = expand(cluster[cluster["kind"]], node, f"cluster.{cluster['kind']}")
    elif cluster.get("kind") == "gateway":
        for key in ("address", "proxy_address", "cluster_name"):
            if isinstance(cluster["gateway"][key], str):
                cluster["gateway"][key] = expand(cluster["gateway"][key], node, f"cluster.gateway.{key}")


def _deep_copy(value):
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def _set_dotted(options, dotted, value):
    *parents, leaf = dotted.split(".")
    target = options
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = value


def _env_value(text):
    """An environment value as a storage option: true/false and integers converted, else the string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return text


# ---------------------------------------------------------------------------------------------
# running


@dataclass
class ClusterInfo:
    """What :func:`job_cluster` connected to: ``kind``, whether labelscan ``started`` it, its dashboard."""

    kind: str
    started: bool
    description: str
    dashboard: str | None = None


@contextlib.contextmanager
def job_cluster(job: Job):
    """Yield ``(client, ClusterInfo)`` for the job's ``cluster``; close what was started.

    Raises
    ------
    UsageError
        The scheduler cannot be reached, the scheduler file is missing, dask-gateway is not
        installed, or dask-cuda is missing for a local GPU cluster.
    """
    from labelscan.backend import resolve_backend
    from labelscan.cluster import get_client
    from labelscan.demo import local_cluster_overrides

    cluster = job["cluster"]
    kind = cluster["kind"]
    if kind == "local":
        resources = job["resources"]
        gpu = job["backend"] == "cupy" or (job["backend"] == "auto" and resolve_backend("auto") == "cupy")
        overrides = {} if gpu else local_cluster_overrides(resources["workers"])
        if gpu and resources["workers"]:
            overrides["n_workers"] = resources["workers"]
        if resources["threads_per_worker"]:
            overrides["threads_per_worker"] = resources["threads_per_worker"]
        if resources["memory_limit"] is not None:
            overrides["memory_limit"] = resources["memory_limit"]
        with get_client(None, None, gpu=gpu, **overrides) as client:
            yield client, ClusterInfo("local", True, "local CUDA cluster" if gpu else "local cluster",
                                      dashboard_link(client))
        return
    if kind == "scheduler_file":
        path = cluster["scheduler_file"]
        if not os.path.exists(path):
            raise JobError(f"{job.source}: cluster.scheduler_file: {path} does not exist "
                           f"(is the scheduler running?)")
        with get_client(None, path) as client:
            yield client, ClusterInfo(kind, False, f"scheduler file {path}", dashboard_link(client))
        return
    if kind == "scheduler":
        with get_client(None, cluster["scheduler"]) as client:
            yield client, ClusterInfo(kind, False, f"scheduler {cluster['scheduler']}", dashboard_link(client))
        return
    with _gateway_cluster(job.source, cluster["gateway"]) as (client, info):
        yield client, info


@contextlib.contextmanager
def _gateway_cluster(source, settings):
    try:
        from dask_gateway import Gateway
    except ImportError:
        raise JobError(f"{source}: cluster.gateway needs dask-gateway: pip install dask-gateway") from None
    kwargs = {key: settings[key] for key in ("address", "proxy_address", "auth") if settings[key]}
    gateway = Gateway(**kwargs)
    started = settings["cluster_name"] is None
    cluster = (gateway.new_cluster(**(settings["options"] or {})) if started
               else gateway.connect(settings["cluster_name"]))
    try:
        if settings["adapt"] is not None:
            cluster.adapt(minimum=settings["adapt"]["minimum"], maximum=settings["adapt"]["maximum"])
        elif settings["workers"] is not None:
            cluster.scale(settings["workers"])
        with cluster.get_client() as client:
            yield client, ClusterInfo("gateway", started, f"Dask Gateway cluster {cluster.name}",
                                      getattr(cluster, "dashboard_link", None))
    finally:
        if started and settings["shutdown"]:
            cluster.shutdown()
        else:
            cluster.close()
        gateway.close()


def dashboard_link(client) -> str | None:
    """The cluster's dashboard URL, or None when it has no dashboard (bokeh missing)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a link is a nicety
        return None


@contextlib.contextmanager
def time_limit(seconds, what="the job"):
    """Raise :class:`JobTimeout` in the main thread after ``seconds`` (POSIX; no limit elsewhere).

    The exception interrupts the scan where it waits (a Dask gather), whose runner then
    cancels the scan's remaining tasks; nothing is committed.
    """
    usable = (seconds and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def expire(signum, frame):
        raise JobTimeout(f"{what} ran longer than its timeout of {_format_seconds(seconds)}; "
                         f"nothing was committed")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _format_seconds(seconds) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def ensure_input(job: Job, log=None) -> bool:
    """With ``generate``, write the synthetic set to ``input`` when it holds no parquet file.

    Returns
    -------
    bool
        Whether a set was written.
    """
    import math

    import fsspec

    from labelscan.demo import FILES, MAX_ROWS_PER_FILE
    from labelscan.demo_data import write_demo_dataset

    settings = job["generate"]
    if settings is None:
        return False
    url = job["input"]
    storage_options = job.storage_options() or {}
    fs, root = fsspec.core.url_to_fs(url, **storage_options)
    if fs.exists(root) and (not fs.isdir(root) or any(name.endswith(".parquet") for name in fs.find(root))):
        return False
    if log is not None:
        log(f"generating the input: {settings['rows']:,} rows, K={settings['classes']}, noise rate "
            f"{settings['noise_rate']}, seed {settings['seed']} -> {url}")
    rows_per_file = min(MAX_ROWS_PER_FILE, max(1, math.ceil(settings["rows"] / FILES)))
    write_demo_dataset(url.rstrip("/") or url, settings["rows"], settings["classes"], seed=settings["seed"],
                       noise_rate=settings["noise_rate"], rows_per_file=rows_per_file, overwrite=True,
                       storage_options=storage_options or None)
    return True


def run_job(job: Job, *, progress=None, on_cluster=None, log=None, performance_report=None):
    """Run a validated job: cluster, optional generated input, scan, and close what was started.

    Parameters
    ----------
    job : Job
    progress : callable(stage, seconds), optional
        Passed to :func:`labelscan.scan`.
    on_cluster : callable(client, ClusterInfo), optional
        Called once the cluster is up (the CLI prints the dashboard link there).
    log : callable(str), optional
        Human-readable notes (generated input).
    performance_report : str, optional
        Overrides the job's ``performance_report``.

    Returns
    -------
    labelscan.ScanResult
    """
    from labelscan.api import scan

    kwargs = job.scan_kwargs()          # fails early on unset environment variables
    report_path = performance_report or job["performance_report"]
    with time_limit(job["timeout"], f"job {job.name}"):
        with job_cluster(job) as (client, info):
            if on_cluster is not None:
                on_cluster(client, info)
            ensure_input(job, log)
            with performance_report_to(report_path, client):
                return scan(**kwargs, client=client, progress=progress)


@contextlib.contextmanager
def performance_report_to(path, client):
    """Wrap the block in ``distributed.performance_report`` writing ``path`` (nothing when None).

    Needs bokeh where the scheduler runs; without it, a :class:`UsageError` names the fix.
    """
    if not path:
        yield
        return
    import importlib.util

    from distributed import performance_report

    if importlib.util.find_spec("bokeh") is None:
        raise UsageError("--performance-report needs bokeh: pip install bokeh")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with client.as_current(), performance_report(filename=path):
        yield
