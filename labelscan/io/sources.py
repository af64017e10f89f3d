"""Resolve what the user names as input (file, directory, glob, or a list of those) to parquet files.

Files are returned sorted by path: that order, then the row order inside each
file, is the global row order of the dataset.
"""

import datetime
import hashlib
import json
import posixpath

import fsspec

from labelscan.errors import InputError

PARQUET_SUFFIX = ".parquet"


def resolve_files(urlpath, storage_options=None):
    """List the parquet files named by ``urlpath``.

    Parameters
    ----------
    urlpath : str or list of str
        A file, a directory (every ``*.parquet`` below it, recursively, skipping
        names that start with ``_`` or ``.``), a glob, or a list of those.
        Local paths or fsspec URLs; all items must live on the same filesystem.
    storage_options : dict, optional
        Passed to the fsspec filesystem.

    Returns
    -------
    fs : fsspec.AbstractFileSystem
    files : list of (str, dict)
        ``(path, info)`` per file, sorted by path; ``info`` is fsspec's file info.
    """
    items = [urlpath] if isinstance(urlpath, str) else list(urlpath)
    if not items:
        raise InputError("no input paths given")
    fs = None
    found = {}
    for item in items:
        item_fs, path = fsspec.core.url_to_fs(item, **(storage_options or {}))
        if fs is None:
            fs = item_fs
        elif item_fs.protocol != fs.protocol:
            raise InputError(f"input paths mix filesystems ({fs.protocol} and {item_fs.protocol})",
                             path=item)
        found.update(_expand(fs, path, item))
    return fs, sorted(found.items())


def _expand(fs, path, shown):
    if fsspec.core.has_magic(path):
        matches = fs.glob(path, detail=True)
        files = {}
        for name, info in matches.items():
            files.update(_expand_dir(fs, name) if info["type"] == "directory" else {name: info})
        if not files:
            raise InputError("no parquet files match the glob", path=shown)
        return files
    if fs.isdir(path):
        files = _expand_dir(fs, path)
        if not files:
            raise InputError("no parquet files found under the directory", path=shown)
        return files
    if not fs.exists(path):
        raise InputError("no such file or directory", path=shown)
    return {path: fs.info(path)}


def _expand_dir(fs, root):
    root = root.rstrip("/")
    return {name: info for name, info in fs.find(root, detail=True).items()
            if name.endswith(PARQUET_SUFFIX) and not _is_hidden(posixpath.relpath(name, root))}


def _is_hidden(relpath):
    return any(part.startswith(("_", ".")) for part in relpath.split("/"))


def fingerprint(files, num_rows_per_file, num_classes):
    """Identify an input by its files' sizes, versions and row counts.

    Parameters
    ----------
    files : list of (str, dict)
        As returned by :func:`resolve_files`.
    num_rows_per_file : list of int
        Rows in each file, same order.
    num_classes : int

    Returns
    -------
    dict
        ``{"files": [{"path", "size", "etag" or "mtime", "rows"}], "num_rows",
        "num_classes", "sha256"}``; ``sha256`` hashes the rest of the dict.
    """
    listing = {
        "files": [{"path": path, "size": info["size"], **_version(info), "rows": rows}
                  for (path, info), rows in zip(files, num_rows_per_file)],
        "num_rows": sum(num_rows_per_file),
        "num_classes": num_classes,
    }
    canonical = json.dumps(listing, sort_keys=True, separators=(",", ":")).encode()
    return {**listing, "sha256": hashlib.sha256(canonical).hexdigest()}


def _version(info):
    """An object store's etag, else the modification time (seconds since the epoch)."""
    for key in ("ETag", "etag"):
        if info.get(key):
            return {"etag": str(info[key]).strip('"')}
    for key in ("mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            stamp = info[key]
            if isinstance(stamp, datetime.datetime):
                stamp = stamp.timestamp()
            return {"mtime": float(stamp)}
    return {}
