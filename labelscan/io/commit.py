"""The commit protocol of a scan's output directory.

A reader that finds ``_SUCCESS`` must never see a partial object or a mix of
two runs, also on object stores where there is no rename. So:

1. :meth:`OutputCommit.begin` refuses a destination holding another scan's
   outputs (unless ``overwrite``), removes a stale ``_SUCCESS`` first, then
   every old output (``issues/``, ``mask/``, ``rejected/``, ``statistics/``,
   ``summary.json``, ``report.html``), so no part of an earlier run (which may have had more
   parts) survives next to the new ones.
2. Workers write every object under a deterministic name, whole, in one put
   (:mod:`labelscan.io.atomic`): a task re-run after a worker died rewrites the
   same bytes.
3. :meth:`OutputCommit.commit` writes ``_SUCCESS`` last; it holds the manifest
   (every file, its size and sha256).

Resuming (``resume=True``): with ``track_progress`` every part written through
:meth:`OutputCommit.write_table` is followed by a small progress entry
``_progress/<relpath>.json`` (the part's manifest entry plus the scan identity).
:meth:`OutputCommit.begin` with ``resume`` keeps the parts whose entry carries this
scan's identity and whose object has the recorded size (the manifest of a
finished run of the same scan counts as entries), removes every other part, and
:meth:`OutputCommit.write_table` returns a kept part's entry instead of writing it
again. :meth:`OutputCommit.commit` deletes ``_progress/`` after ``_SUCCESS``.

A previous scan is identified by the ``config_hash`` and the input
fingerprint's ``sha256`` recorded in its ``_SUCCESS`` (key
``input_fingerprint``) or, for a run that never committed, in its
``summary.json`` (key ``input_fingerprint`` or ``input.fingerprint``).
"""

import hashlib
import json
import os
import posixpath
import re
import shutil
import threading
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

from labelscan.errors import DestinationError, InputError, OccupiedDestinationError, UsageError
from labelscan.io.atomic import json_bytes, put_bytes, table_pieces
from labelscan.io.redact import redact_url

SUCCESS_NAME = "_SUCCESS"
SUMMARY_NAME = "summary.json"
OUTPUT_NAMES = ("issues", "mask", "rejected", "statistics", SUMMARY_NAME, "report.html", "evaluation.json")
PROGRESS_NAME = "_progress"
RESUMABLE_FOLDERS = ("mask", "issues", "rejected")
MANIFEST_KEYS = ("files", "config_hash", "input_fingerprint")
_PART = r"part-\d{5,}"
_STAGING_SUFFIX = r"\.tmp-[0-9a-f]{32}"   # :func:`labelscan.io.atomic.put_bytes`'s staging copies
_STAGING = rf"({_STAGING_SUFFIX})?"
OWN_FILE_NAMES = {
    folder: re.compile(rf"{stem}\.parquet{_STAGING}")
    for folder, stem in [("issues", _PART), ("mask", _PART), ("rejected", _PART),
                         ("statistics", "(confident_joint|calibrated_confident_joint|joint|noise_matrix|"
                                        "inverse_noise_matrix|prune_counts)")]}
"""Per output folder, the names of the files labelscan writes there (and their staging copies)."""

TRASH_PREFIX = ".labelscan-trash-"
"""Folder at a local destination's root where :meth:`OutputCommit.begin` moves the old outputs it
replaces; a thread deletes it while the scan runs (deleting 2 GB of parts took 0.5-0.8 s, and
10M rows' 54 MB 25-30 ms, of the scan's time when done in place). A leftover of a killed
process is deleted by the next ``begin``."""


ROW_KEY_COLUMNS = ("row_id", "id")
"""Columns of a row-aligned part (``mask/``) whose min/max statistics are written: a row range
prunes row groups by them. The flag, score and class columns hold nearly every value in every
row group, so their statistics prune nothing, and leaving them out encodes a mask part ~12%
faster (``python -m benchmarks.encode``)."""


def row_key_statistics(table) -> list:
    """The :data:`ROW_KEY_COLUMNS` of ``table`` (the ``statistics`` of :meth:`OutputCommit.write_table`)."""
    return [name for name in ROW_KEY_COLUMNS if name in table.column_names]


class _Destination:
    """A directory URL whose filesystem is created lazily, so the object pickles as URL + options."""

    def __init__(self, urlpath, storage_options=None):
        self.urlpath = urlpath
        self.storage_options = dict(storage_options or {})
        self._fs_root = None

    def __getstate__(self):
        return {**self.__dict__, "_fs_root": None}

    def __repr__(self):
        return f"{type(self).__name__}({redact_url(self.urlpath)!r})"   # never the storage options

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
    track_progress : bool
        Record a progress entry under ``_progress/`` after each part written by
        :meth:`write_table`, so that an interrupted run can be resumed.
    resume : bool
        Keep the parts of an interrupted (or finished) run of the same scan instead of
        writing them again (see the module docstring).
    layout : str, optional
        Identifies everything besides the configuration and the input that decides the
        parts' bytes (partitioning, rows per issues part, library versions); a part is
        resumed only from a run with the same layout.
    """

    def __init__(self, urlpath, *, storage_options=None, overwrite=False, config_hash,
                 input_fingerprint, track_progress=False, resume=False, layout=None):
        super().__init__(urlpath, storage_options)
        self.overwrite = overwrite
        self.config_hash = config_hash
        self.input_fingerprint = input_fingerprint
        self.track_progress = track_progress or resume
        self.resume = resume
        self.layout = layout
        self._deleting: list = []   # threads deleting moved-aside old outputs (local destinations)

    def __getstate__(self):
        """What a worker's write needs: the input fingerprint's ``sha256`` alone. The full
        fingerprint lists every input file, and a copy travels with every write task (with
        thousands of files the graph would grow as files²); ``commit`` runs on the driver."""
        state = super().__getstate__()
        state["input_fingerprint"] = {"sha256": self.input_fingerprint["sha256"]}
        state["_deleting"] = []
        return state

    @property
    def _identity(self):
        return self.config_hash, self.input_fingerprint["sha256"]

    def begin(self):
        """Prepare the destination for this scan: remove a stale ``_SUCCESS``, then old outputs.

        Outputs of an earlier run of the same scan (same ``config_hash`` and input
        fingerprint) or of an unfinished, unidentified run are replaced silently;
        another scan's need ``overwrite``. Files that are not labelscan outputs
        are left alone, inside its output folders too (only names matching
        :data:`OWN_FILE_NAMES` are removed there). With ``resume``, the parts of a run
        of the same scan that have a matching progress entry (or manifest entry) are
        kept, see :meth:`_prepare_resume`.

        Raises
        ------
        DestinationError
            The destination holds another scan's outputs and ``overwrite`` is False.
        """
        previous = self.check()
        if self.resume and previous in (None, self._identity):
            self._prepare_resume()
            return
        fs = self.fs
        if fs.exists(self.path(SUCCESS_NAME)):
            fs.rm(self.path(SUCCESS_NAME))
        if fs.exists(self.path(PROGRESS_NAME)):
            fs.rm(self.path(PROGRESS_NAME), recursive=True)
        self._remove_own_outputs(OUTPUT_NAMES)

    def _own_files(self, folder) -> dict:
        """``{path: size}`` of labelscan's files under the destination's ``folder`` (one
        listing; other files are left out)."""
        if not self.fs.isdir(self.path(folder)):
            return {}
        own = OWN_FILE_NAMES[folder]
        return {path: info["size"] for path, info in self.fs.find(self.path(folder), detail=True).items()
                if own.fullmatch(posixpath.relpath(path, self.path(folder)))}

    def _remove_own_outputs(self, names) -> None:
        """Remove the output files ``names`` and labelscan's files under the output folders
        among them, then those folders where they are left empty (local filesystems)."""
        fs = self.fs
        doomed = [self.path(name) for name in names if fs.isfile(self.path(name))]
        folders = [name for name in names if fs.isdir(self.path(name))]
        doomed += [path for folder in folders for path in self._own_files(folder)]
        if not isinstance(fs, LocalFileSystem):   # object stores have no empty folders
            if doomed:
                fs.rm(doomed)
            return
        self._delete_aside(doomed)
        for folder in folders:
            if not fs.ls(self.path(folder)):
                fs.rmdir(self.path(folder))

    def _remove_staging(self, folders) -> None:
        """Remove the staging copies (``<part>.tmp-<uuid>``) left under the output ``folders``
        by writes whose worker process was killed mid-write (local filesystems: elsewhere an
        object is put whole, with no staging copy)."""
        if not isinstance(self.fs, LocalFileSystem):
            return
        stray = [path for folder in sorted(set(folders) & set(OWN_FILE_NAMES))
                 for path in self._own_files(folder) if re.search(_STAGING_SUFFIX + "$", path)]
        if stray:
            self.fs.rm(stray)

    def _delete_aside(self, paths) -> None:
        """Move ``paths`` (local files) into a :data:`TRASH_PREFIX` folder and delete it, with any
        leftover of earlier runs, on a thread (:meth:`commit` waits for it)."""
        root = self.path("")
        folders = [os.path.join(root, name) for name in (os.listdir(root) if os.path.isdir(root) else ())
                   if name.startswith(TRASH_PREFIX)]
        if paths:
            trash = os.path.join(root, TRASH_PREFIX + uuid.uuid4().hex)
            os.mkdir(trash)
            for number, path in enumerate(paths):
                os.rename(path, os.path.join(trash, str(number)))
            folders.append(trash)
        if folders:
            thread = threading.Thread(target=_delete_folders, args=(folders,), name="labelscan-delete", daemon=True)
            thread.start()
            self._deleting.append(thread)

    def check(self):
        """Refuse a destination :meth:`begin` would refuse, without changing anything there
        (scans call it before their first pass, and :meth:`begin` again before writing).

        Returns
        -------
        tuple or None
            The identity of the scan whose outputs are there, if any.

        Raises
        ------
        DestinationError
            The destination is a file, or (:class:`~labelscan.errors.OccupiedDestinationError`)
            holds another scan's outputs and ``overwrite`` is False.
        """
        if self.fs.isfile(self.path("").rstrip("/")):
            raise DestinationError(f"{redact_url(self.urlpath)} is a file: the destination must be a folder")
        previous = self._previous_identity()
        if previous not in (None, self._identity) and not self.overwrite:
            raise OccupiedDestinationError(
                f"{redact_url(self.urlpath)} holds the outputs of another scan (config_hash "
                f"{previous[0]}, input sha256 {previous[1]})")
        return previous

    def _previous_identity(self):
        for name in (SUCCESS_NAME, SUMMARY_NAME):
            try:
                record = self.read_json(name)
            except ValueError:
                return ("unreadable " + name, None)
            if record is not None:
                return _scan_identity(record)
        return None

    def _prepare_resume(self):
        """Keep the verified parts of an earlier run of this scan; remove everything else.

        A part is kept when its progress entry (or, for a finished run, its manifest
        entry) names this scan's ``config_hash`` and input sha256 and the object
        exists with the recorded size. Every other labelscan part under ``mask/``, ``rejected/``
        and ``issues/`` (staging files included) and every other progress entry is
        removed, after the stale ``_SUCCESS``, so nothing of another run survives.
        """
        fs = self.fs
        finished = self.read_json(SUCCESS_NAME)
        if fs.exists(self.path(SUCCESS_NAME)):
            fs.rm(self.path(SUCCESS_NAME))
        self._remove_own_outputs((SUMMARY_NAME, "statistics", "report.html"))
        entries = self._read_progress()
        if (finished is not None and _scan_identity(finished) == self._identity
                and finished.get("layout") == self.layout):
            for entry in finished.get("files", []):
                if entry["path"].split("/", 1)[0] in RESUMABLE_FOLDERS:
                    entries.setdefault(entry["path"], self._progress_record(entry))
        sizes = {self._relpath(path): size for folder in RESUMABLE_FOLDERS
                 for path, size in self._own_files(folder).items()}
        keep = {relpath: record for relpath, record in entries.items()
                if self._matches(record, relpath) and sizes.get(relpath) == record["bytes"]}
        stale_objects = [self.path(relpath) for relpath in sizes if relpath not in keep]
        progress_files = ([path for path in fs.find(self.path(PROGRESS_NAME))]
                          if fs.exists(self.path(PROGRESS_NAME)) else [])
        stale_progress = [path for path in progress_files
                          if self._relpath(path)[len(PROGRESS_NAME) + 1:-len(".json")] not in keep]
        if stale_objects or stale_progress:
            fs.rm(stale_objects + stale_progress)
        for relpath, record in keep.items():   # entries taken from a manifest become progress entries
            if self.path(self._progress_relpath(relpath)) not in progress_files:
                put_bytes(fs, self.path(self._progress_relpath(relpath)), json_bytes(record))

    def _read_progress(self):
        """``{relpath: progress record}`` of the readable progress entries at the destination."""
        fs = self.fs
        if not fs.exists(self.path(PROGRESS_NAME)):
            return {}
        paths = fs.find(self.path(PROGRESS_NAME))
        records = {}
        for data in (fs.cat(paths, on_error="omit") if paths else {}).values():
            try:
                record = json.loads(data)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("path"), str):
                records[record["path"]] = record
        return records

    def _relpath(self, path):
        """``path`` (as ``fs.find`` lists it) relative to the destination."""
        root = self.path("")
        return path[len(root):] if path.startswith(root) else path

    @staticmethod
    def _progress_relpath(relpath):
        return f"{PROGRESS_NAME}/{relpath}.json"

    def _progress_record(self, entry):
        return {"path": entry["path"], "bytes": entry["bytes"], "sha256": entry["sha256"],
                "config_hash": self.config_hash, "input_sha256": self.input_fingerprint["sha256"],
                "layout": self.layout}

    def _matches(self, record, relpath):
        return (isinstance(record, dict) and record.get("path") == relpath
                and (record.get("config_hash"), record.get("input_sha256")) == self._identity
                and record.get("layout") == self.layout
                and isinstance(record.get("bytes"), int) and isinstance(record.get("sha256"), str))

    def _resumed_entry(self, relpath):
        """The manifest entry of a part kept by :meth:`_prepare_resume`, or None."""
        try:
            record = self.read_json(self._progress_relpath(relpath))
        except ValueError:
            return None
        if not self._matches(record, relpath):
            return None
        return {"path": relpath, "bytes": record["bytes"], "sha256": record["sha256"]}

    def write_table(self, relpath, table, statistics=True):
        """Store a table as parquet at ``relpath`` (:func:`labelscan.io.atomic.table_pieces`), whole and deterministic.

        Parameters
        ----------
        relpath : str
            Path under the destination, e.g. ``"mask/part-00003.parquet"``.
        table : pyarrow.Table or labelscan.io.column_set.ColumnSet
        statistics : bool or list of str
            Columns whose min/max statistics are written (all by default; mask parts:
            :meth:`write_mask_part`).

        Returns
        -------
        dict
            Manifest entry ``{"path": relpath, "bytes": int, "sha256": hex}``.
        """
        if self.resume:
            entry = self._resumed_entry(relpath)
            if entry is not None:
                return entry
        entry = {"path": relpath, **put_bytes(self.fs, self.path(relpath), table_pieces(table, statistics))}
        if self.track_progress:
            put_bytes(self.fs, self.path(self._progress_relpath(relpath)),
                      json_bytes(self._progress_record(entry)))
        return entry

    def write_mask_part(self, index: int, table):
        """Store the row-aligned ``mask/part-<index>.parquet`` with min/max statistics for its
        row keys only (:func:`row_key_statistics`); returns its manifest entry."""
        return self.write_table(f"mask/part-{index:05d}.parquet", table, statistics=row_key_statistics(table))

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
        clash = set(extra) & {*MANIFEST_KEYS, "layout"}
        if clash:
            raise UsageError(f"manifest keys {sorted(clash)} are reserved")
        manifest = {
            "files": sorted(entries, key=lambda entry: entry["path"]),
            "config_hash": self.config_hash,
            "input_fingerprint": self.input_fingerprint,
            **({"layout": self.layout} if self.layout is not None else {}),
            **extra,
        }
        for thread in self._deleting:   # the old outputs moved aside are gone before _SUCCESS
            thread.join()
        self._remove_staging({entry["path"].split("/", 1)[0] for entry in entries})
        put_bytes(self.fs, self.path(SUCCESS_NAME), json_bytes(manifest))
        if self.track_progress and self.fs.exists(self.path(PROGRESS_NAME)):
            self.fs.rm(self.path(PROGRESS_NAME), recursive=True)   # listed nowhere; a leftover is harmless


def _delete_folders(folders) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


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
        There is no scan at ``urlpath`` (no folder, or no output of a scan in it), the
        scan is unfinished (no ``_SUCCESS``), or a listed file is missing or does not
        match its checksum.
    """
    destination = _Destination(urlpath, storage_options)
    try:
        manifest = destination.read_json(SUCCESS_NAME)
    except ValueError as error:
        raise InputError(f"scan at {urlpath} has an unreadable {SUCCESS_NAME} ({error})") from error
    if manifest is None:
        if not destination.fs.exists(destination.path("").rstrip("/")):
            raise InputError(f"there is no scan at {redact_url(urlpath)} (no such folder)")
        if not any(destination.fs.exists(destination.path(name)) for name in (*OUTPUT_NAMES, PROGRESS_NAME)):
            raise InputError(f"there is no scan at {redact_url(urlpath)} (no {SUCCESS_NAME} and no "
                             f"other output of a scan there)")
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
