"""Keep credentials out of everything labelscan prints, logs, raises or writes.

Storage credentials reach labelscan in three ways: ``storage_options`` (``key``,
``secret``, ``token``, ``account_key``, ``connection_string``...), the userinfo or
query of a URL (``sftp://user:password@host/...``, ``https://...?sig=...``), and
the environment (``AWS_SECRET_ACCESS_KEY``...). None of them may appear in
``summary.json``, ``_SUCCESS``, a result's ``repr``, a log line or an exception
message. This module provides:

- :func:`redact` — a copy of a dict/list/str with sensitive values replaced by ``"***"``;
- :func:`redact_url` / :func:`redact_text` — URLs and free text with userinfo, sensitive
  query parameters and known secret values replaced;
- :func:`secret_values` — the secret strings to look for (options, URLs, environment);
- :func:`scrubbed` — a context manager that registers those secrets with a log record
  factory of this process (:func:`register_secrets`: every later record is masked) and
  masks the message of an exception leaving it;
- :func:`protect_workers` — the same for the log records of Dask worker processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import threading

MASK = "***"

SENSITIVE_KEY = re.compile(
    r"key|secret|token|passw|pwd|credential|signature|\bsig\b|sas|auth|session|cookie|"
    r"connection_string|private",
    re.IGNORECASE)
"""Names (dict keys, query parameters, environment variables) whose values are secrets."""

NOT_SENSITIVE = frozenset({"key_column", "id_column", "sort_key", "partition_key"})
"""Names matched by :data:`SENSITIVE_KEY` that hold no secret."""

ENV_SENSITIVE = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|ACCESS_KEY|ACCOUNT_KEY|STORAGE_KEY|API_KEY|KEY_ID|CONNECTION_STRING|"
    r"CREDENTIALS", re.IGNORECASE)
"""Environment variables whose values are secrets (``AWS_SECRET_ACCESS_KEY``, ``AZURE_STORAGE_KEY``...)."""

MIN_SECRET_LENGTH = 6
"""Shorter option values (``"anon"``, ``True``...) are not searched for in free text."""

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#@\s'\"]+)@")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[A-Za-z0-9_.-]+)=)(?P<value>[^&;#\s'\"]*)")


def is_sensitive(name) -> bool:
    """Whether a dict key, query parameter or environment variable name holds a secret."""
    name = str(name)
    return name.lower() not in NOT_SENSITIVE and bool(SENSITIVE_KEY.search(name))


def redact(obj):
    """A copy of ``obj`` with every secret replaced by ``"***"``.

    Dict values under sensitive keys (:func:`is_sensitive`) are masked whatever
    their type (None and False stay, they reveal nothing); strings anywhere go
    through :func:`redact_url`; lists, tuples and nested dicts are walked.

    Examples
    --------
    >>> redact({"key": "AKIA123", "client_kwargs": {"endpoint_url": "http://u:p@h:9000"}})
    {'key': '***', 'client_kwargs': {'endpoint_url': 'http://***@h:9000'}}
    """
    if isinstance(obj, dict):
        return {name: (MASK if is_sensitive(name) and value not in (None, False) else redact(value))
                for name, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(value) for value in obj)
    if isinstance(obj, str):
        return redact_url(obj)
    return obj


def redact_url(text: str) -> str:
    """``text`` with URL userinfo and sensitive query parameter values masked.

    Examples
    --------
    >>> redact_url("sftp://alice:hunter2@host/data?sig=abc&part=1")
    'sftp://***@host/data?sig=***&part=1'
    """
    text = _USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", text)
    return _QUERY_PARAM.sub(
        lambda match: match["lead"] + (MASK if is_sensitive(match["name"]) else match["value"]), text)


def secret_values(storage_options=None, urls=(), environ=None) -> frozenset:
    """The secret strings that must not appear in free text.

    Parameters
    ----------
    storage_options : dict, optional
        Every string under a sensitive key, at any depth (a whole credentials
        dict's leaves included).
    urls : str or iterable of str
        Userinfo (user and password) and sensitive query values of these URLs.
    environ : mapping, optional
        Values of sensitive environment variables (default ``os.environ``).

    Returns
    -------
    frozenset of str
        Only strings of at least :data:`MIN_SECRET_LENGTH` characters.
    """
    found = set()
    _collect(storage_options or {}, False, found)
    for url in [urls] if isinstance(urls, str) else list(urls or ()):
        if not isinstance(url, str):
            continue
        for match in _USERINFO.finditer(url):
            found.add(match["userinfo"])
            found.update(match["userinfo"].split(":", 1))
        found.update(match["value"] for match in _QUERY_PARAM.finditer(url) if is_sensitive(match["name"]))
    environ = os.environ if environ is None else environ
    found.update(value for name, value in environ.items() if ENV_SENSITIVE.search(name))
    return frozenset(value for value in found if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH)


def _collect(obj, under_sensitive, found):
    if isinstance(obj, dict):
        for name, value in obj.items():
            _collect(value, under_sensitive or is_sensitive(name), found)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _collect(value, under_sensitive, found)
    elif isinstance(obj, str):
        if under_sensitive:
            found.add(obj)
        for match in _USERINFO.finditer(obj):
            found.update(match["userinfo"].split(":", 1))


def redact_text(text: str, secrets=frozenset()) -> str:
    """``text`` with URL secrets (:func:`redact_url`) and every string of ``secrets`` masked."""
    text = redact_url(text)
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_exception(error: BaseException, secrets=frozenset()) -> BaseException:
    """Mask secrets in ``error``'s message, in place, and in the exceptions it chains.

    Rewrites ``args``, string attributes (``path``, ``message``, ``filename``...) and,
    for an exception whose ``str`` still shows a secret (a custom ``__str__``),
    returns a :class:`~labelscan.errors.LabelscanError` carrying the redacted text
    instead. Returns the exception to raise.
    """
    seen = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        _redact_in_place(current, secrets)
        pending.extend([current.__cause__, current.__context__])
    if _leaks(str(error), secrets) or _leaks(repr(error), secrets):
        from labelscan.errors import LabelscanError

        replacement = LabelscanError(f"{type(error).__name__}: {redact_text(str(error), secrets)}")
        replacement.exit_code = getattr(error, "exit_code", replacement.exit_code)
        return replacement
    return error


def _leaks(text, secrets) -> bool:
    return redact_text(text, secrets) != text


def _redact_in_place(error, secrets):
    with contextlib.suppress(Exception):
        error.args = tuple(redact_text(arg, secrets) if isinstance(arg, str) else arg for arg in error.args)
    for name, value in list(vars(error).items()) if hasattr(error, "__dict__") else []:
        if isinstance(value, str):
            with contextlib.suppress(Exception):
                setattr(error, name, redact_text(value, secrets))
    if isinstance(error, OSError):
        for name in ("strerror", "filename", "filename2"):
            value = getattr(error, name, None)
            if isinstance(value, str):
                with contextlib.suppress(Exception):
                    setattr(error, name, redact_text(value, secrets))
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        notes[:] = [redact_text(note, secrets) if isinstance(note, str) else note for note in notes]


def redact_record(record: logging.LogRecord, secrets) -> logging.LogRecord:
    """Mask ``secrets`` (and URL userinfo) in a log record's message and exception, in place."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
        return record
    clean = redact_text(message, secrets)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[1] is not None:
        redact_exception(record.exc_info[1], secrets)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text, secrets)
    return record


class RedactingFilter(logging.Filter):
    """A filter (for a handler of your own) that masks ``secrets`` in every record it sees."""

    def __init__(self, secrets=frozenset()):
        super().__init__()
        self.secrets = frozenset(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, self.secrets)
        return True


_registry_lock = threading.Lock()
_registered: set = set()
_factory_installed = False


def register_secrets(secrets) -> None:
    """Mask ``secrets`` in every log record created in this process from now on.

    Installs (once) a log record factory that redacts each new record, whatever
    logger or handler it goes to, so records of tasks that outlive a failed scan
    are covered too. Secrets stay registered for the life of the process.
    """
    global _factory_installed
    secrets = {secret for secret in secrets if isinstance(secret, str) and len(secret) >= MIN_SECRET_LENGTH}
    with _registry_lock:
        _registered.update(secrets)
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def redacting_factory(*args, **kwargs):
            record = previous(*args, **kwargs)
            if _registered or "@" in str(record.msg):
                redact_record(record, frozenset(_registered))
            return record

        logging.setLogRecordFactory(redacting_factory)
        _factory_installed = True


def registered_secrets() -> frozenset:
    """The secrets :func:`register_secrets` has seen in this process."""
    with _registry_lock:
        return frozenset(_registered)


@contextlib.contextmanager
def scrubbed(storage_options=None, urls=()):
    """Keep the credentials of ``storage_options``, ``urls`` and the environment out of logs and errors.

    Registers them with :func:`register_secrets` (every later log record of this
    process is masked, Dask worker threads of an in-process cluster included) and
    masks the message of an exception leaving the block (:func:`redact_exception`).
    Worker processes mask their own records once :func:`protect_workers` ran.

    Yields
    ------
    frozenset of str
        The secrets looked for.
    """
    secrets = secret_values(storage_options, urls)
    register_secrets(secrets)
    try:
        yield secrets
    except BaseException as error:
        clean = redact_exception(error, secrets)
        if clean is error:
            raise
        raise clean from None


def _worker_plugin_class():
    """:class:`RedactWorkerLogs`, built on first use (``distributed`` is imported only then)."""
    global _plugin_class
    if _plugin_class is None:
        from distributed.diagnostics.plugin import WorkerPlugin

        class RedactWorkerLogs(WorkerPlugin):
            """Dask worker plugin: :func:`register_secrets` in each worker process (restarted ones too).

            Carries the storage options' and URLs' secrets only (workers receive those with
            their tasks anyway); each worker adds its own environment's credentials.
            """

            idempotent = True

            def __init__(self, secrets):
                self.secrets = frozenset(secrets)

            def setup(self, worker=None):
                register_secrets(self.secrets | secret_values())

            def teardown(self, worker=None):
                """Secrets stay registered: records of tasks still running must stay masked."""

        RedactWorkerLogs.__module__ = __name__
        _plugin_class = RedactWorkerLogs
    return _plugin_class


_plugin_class = None


def __getattr__(name):   # PEP 562: ``redact.RedactWorkerLogs`` (and unpickling it) builds the class
    if name == "RedactWorkerLogs":
        return _worker_plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def protect_workers(client, storage_options=None, urls=()) -> None:
    """Register the secrets of ``storage_options`` and ``urls`` on every worker of ``client``.

    A no-op when there are none. The plugin's name derives from the secrets, so the same
    options register once; restarted workers get it again from the scheduler.
    """
    secrets = secret_values(storage_options, urls, environ={})
    if not secrets:
        return
    name = "labelscan-redact-" + hashlib.sha256("\0".join(sorted(secrets)).encode()).hexdigest()[:16]
    try:
        client.register_plugin(_worker_plugin_class()(secrets), name=name)
    except Exception as error:  # noqa: BLE001 - redaction in worker logs is best effort
        logging.getLogger(__name__).warning("could not install log redaction on the workers (%s)",
                                            type(error).__name__)
