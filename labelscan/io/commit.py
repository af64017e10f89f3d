"""The commit protocol of a scan's output directory.

A reader that finds ``_SUCCESS`` must never see a partial object or a mix of
two runs, also on object stores where there is no rename. So:

1. :meth:`OutputCommit.begin` refuses a destination holding another scan's
   outputs (unless ``overwrite``), removes a stale ``_SUCCESS`` first, then
   every old output (``issues/``, ``mask/``, ``summary.json``,
   ``report.html``), so no part of an earlier run (which may have had more
   parts) survives next to the new ones.
2. Workers write every object under a deterministic name, whole, in one put
   (:mod:`labelscan.io.atomic`): a task re-run after a worker died rewrites the
   same bytes.
3. :meth:`OutputCommit.commit` writes ``_SUCCESS`` last; it holds the manifest
   (every file, its size and sha256).

A previous scan is identified by the ``config_hash`` and the input
fingerprint's ``sha256`` recorded in its ``_SUCCESS`` (key
``input_fingerprint``) or, for a run that never committed, in its
``summary.json`` (key ``input_fingerprint`` or ``input.fingerprint``).
"""

import hashlib
import json

import fsspec

from labelscan.errors import DestinationError, InputError, UsageError
from labelscan.io.atomic import json_bytes, parquet_bytes, put_bytes

SUCCESS_NAME = "_SUCCESS"
SUMMARY_NAME = "summary.json"
OUTPUT_NAMES = ("issues", "mask", SUMMARY_NAME, "report.html")
MANIFEST_KEYS = ("files", "config_hash", "input_fingerprint")


class _Destination:
    """A directory URL whose filesystem is created lazily, so the object pickles as URL + options."""

    def __init__(self, urlpath, storage_options=None):
        self.urlpath = urlpath
        self.storage_options = dict(storage_options or {})
        self._fs_root = None

    def __getstate__(self):
        return {**self.__dict__, "_fs_root": None}

    @property
    def fs(self):
        return self._resolve()[0]

    def path(self, relpath):
        """The filesystem path of ``relpath`` under the destination."""
        return f"{self._resolve()[1].rstrip('/')}/{relpath}"

    def _resolve(self):
        if self._fs_root is None:
            self._fs_root = fsspec.core.url_to_fs(self.urlpath, **self.storage_options)
        return self._fs_root

    def read_json(self, relpath):
        """The parsed JSON object at ``relpath``, or None when there is none."""
        try:
            return json.loads(self.fs.cat_file(self.path(relpath)))
        except FileNotFoundError:
            return None


class OutputCommit(_Destination):
    """Writes a scan's outputs under ``urlpath`` and commits them with ``_SUCCESS``.

    Picklable (URL, options and identity only); :meth:`write_table` and
    :meth:`write_json` may run on Dask workers.

    Parameters
    ----------
    urlpath : str
        Output directory, local path or fsspec URL.
    storage_options : dict, optional
        Passed to the fsspec filesystem.
    overwrite : bool
        Replace another scan's outputs found at ``urlpath`` instead of refusing.
    config_hash : str
        Identifies the scan's configuration.
    input_fingerprint : dict
        The input's fingerprint (``DatasetPlan.fingerprint``), with a ``"sha256"`` key.
    """

    def __init__(self, urlpath, *, storage_options=None, overwrite=False, config_hash,
                 input_fingerprint):
        super().__init__(urlpath, storage_options)
        self.overwrite = overwrite
        self.config_hash = config_hash
        self.input_fingerprint = input_fingerprint

    @property
    def _identity(self):
        return self.config_hash, self.input_fingerprint["sha256"]

    def begin(self):
        """Prepare the destination for this scan: remove a stale ``_SUCCESS``, then old outputs.

        Outputs of an earlier run of the same scan (same ``config_hash`` and input
        fingerprint) or of an unfinished, unidentified run are replaced silently;
        another scan's need ``overwrite``. Files that are not labelscan outputs
        are left alone.

        Raises
        ------
        DestinationError
            The destination holds another scan's outputs and ``overwrite`` is False.
        """
        previous = self._previous_identity()
        if previous not in (None, self._identity) and not self.overwrite:
            raise DestinationError(
                f"{self.urlpath} holds the outputs of another scan (config_hash "
                f"{previous[0]}, input sha256 {previous[1]}); choose another destination or "
                f"overwrite it")
        fs = self.fs
        for name in (SUCCESS_NAME, *OUTPUT_NAMES):
            if fs.exists(self.path(name)):
                fs.rm(self.path(name), recursive=True)

    def _previous_identity(self):
        for name in (SUCCESS_NAME, SUMMARY_NAME):
            try:
                record = self.read_json(name)
            except ValueError:
                return ("unreadable " + name, None)
            if record is not None:
                return _scan_identity(record)
        return None

    def write_table(self, relpath, table):
        """Store a table as zstd parquet at ``relpath``, whole and deterministic.

        Parameters
        ----------
        relpath : str
            Path under the destination, e.g. ``"mask/part-00003.parquet"``.
        table : pyarrow.Table

        Returns
        -------
        dict
            Manifest entry ``{"path": relpath, "bytes": int, "sha256": hex}``.
        """
        return {"path": relpath, **put_bytes(self.fs, self.path(relpath), parquet_bytes([table]))}

    def write_json(self, relpath, obj):
        """Store ``obj`` as JSON (sorted keys, indent 2) at ``relpath``; returns its manifest entry."""
        return {"path": relpath, **put_bytes(self.fs, self.path(relpath), json_bytes(obj))}

    def commit(self, entries, extra):
        """Write ``_SUCCESS``, making the scan visible. Call after every output is written.

        Parameters
        ----------
        entries : list of dict
            Manifest entries returned by :meth:`write_table` / :meth:`write_json`.
        extra : dict
            More top-level manifest fields; may not use the keys ``files``,
            ``config_hash`` or ``input_fingerprint``.
        """
        clash = set(extra) & set(MANIFEST_KEYS)
        if clash:
            raise UsageError(f"manifest keys {sorted(clash)} are reserved")
        manifest = {
            "files": sorted(entries, key=lambda entry: entry["path"]),
            "config_hash": self.config_hash,
            "input_fingerprint": self.input_fingerprint,
            **extra,
        }
        put_bytes(self.fs, self.path(SUCCESS_NAME), json_bytes(manifest))


def _scan_identity(record):
    """``(config_hash, input sha256)`` recorded in a manifest or a summary."""
    fingerprint = record.get("input_fingerprint") or record.get("input", {}).get("fingerprint")
    return record.get("config_hash"), (fingerprint or {}).get("sha256")


def read_manifest(urlpath, storage_options=None, verify=True):
    """Read the manifest of a finished scan.

    Parameters
    ----------
    urlpath : str
        The scan's output directory.
    storage_options : dict, optional
    verify : bool
        Read every listed file and check its size and sha256.

    Returns
    -------
    dict
        The contents of ``_SUCCESS``.

    Raises
    ------
    InputError
        The scan is unfinished (no ``_SUCCESS``), or a listed file is missing or
        does not match its checksum.
    """
    destination = _Destination(urlpath, storage_options)
    try:
        manifest = destination.read_json(SUCCESS_NAME)
    except ValueError as error:
        raise InputError(f"scan at {urlpath} has an unreadable {SUCCESS_NAME} ({error})") from error
    if manifest is None:
        raise InputError(f"scan at {urlpath} is unfinished (no {SUCCESS_NAME})")
    if verify:
        for entry in manifest["files"]:
            _verify(destination, entry)
    return manifest


def _verify(destination, entry):
    try:
        data = destination.fs.cat_file(destination.path(entry["path"]))
    except FileNotFoundError as error:
        raise InputError(f"scan at {destination.urlpath} lists {entry['path']}, which is "
                         f"missing") from error
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise InputError(f"checksum mismatch for {entry['path']} in scan at "
                         f"{destination.urlpath}")
