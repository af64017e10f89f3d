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
- :func:`scrubbed` — a context manager that redacts log records emitted while it is
  active and the message of an exception leaving it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re

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


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in each record's formatted message (and traceback)."""

    def __init__(self, secrets=frozenset()):
        super().__init__()
        self.secrets = frozenset(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
            return True
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            redact_exception(record.exc_info[1], self.secrets)
            record.exc_text = None
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        return True


def _all_handlers():
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    return {id(handler): handler for logger in loggers for handler in logger.handlers}.values()


@contextlib.contextmanager
def scrubbed(storage_options=None, urls=()):
    """Redact secrets from log records and from an exception raised inside the block.

    While active, every handler attached to a logger of this process (pytest's
    ``caplog`` and the CLI's stderr included) masks the secrets of
    ``storage_options``, of ``urls`` and of the environment; an exception leaving
    the block has its message masked (:func:`redact_exception`). Dask workers in
    other processes log with their own handlers: what labelscan ships to them
    (:class:`~labelscan.io.commit.OutputCommit`, plans) has a redacted ``repr``.
    """
    secrets = secret_values(storage_options, urls)
    log_filter = RedactingFilter(secrets)
    handlers = list(_all_handlers())
    for handler in handlers:
        handler.addFilter(log_filter)
    try:
        yield secrets
    except BaseException as error:
        clean = redact_exception(error, secrets)
        if clean is error:
            raise
        raise clean from None
    finally:
        for handler in handlers:
            handler.removeFilter(log_filter)
