"""Checks and normal forms of a scan's input and output locations, before any work.

A blank path would name the current directory (a scan writing its outputs there, or
reading everything below it), and an output folder inside an input folder would be read
back as input by the next run of the same scan: both are refused. Local input paths are
made absolute, so a finished scan's ``summary.json`` names its input from anywhere
(``labelscan evaluate`` reads it back).
"""

from __future__ import annotations

import glob
import os
import posixpath

from fsspec.core import split_protocol

from labelscan.errors import UsageError
from labelscan.io.redact import redact_url

LOCAL_PROTOCOLS = (None, "file", "local")


def as_strings(input_path, out_path) -> tuple:
    """``(input_path, out_path)`` with path-like objects (``pathlib.Path``) made strings; an input
    list stays a list."""
    def text(location):
        return os.fspath(location) if isinstance(location, os.PathLike) else location

    if isinstance(input_path, (str, os.PathLike)):
        return text(input_path), text(out_path)
    return [text(location) for location in input_path], text(out_path)


def checked_locations(input_path, out_path):
    """The input location(s) with local paths made absolute, after checking both locations.

    Parameters
    ----------
    input_path : str or list of str
        Input file, folder, glob or URL, or a list of them.
    out_path : str
        Output folder, local path or URL.

    Returns
    -------
    str or list of str
        ``input_path`` in the same form, local paths absolute.

    Raises
    ------
    UsageError
        A blank location, or ``out_path`` equal to or inside a folder the input reads.
    """
    inputs = [input_path] if isinstance(input_path, str) else list(input_path)
    if not inputs:
        raise UsageError("no input given")
    for name, location in [("output", out_path), *[("input", path) for path in inputs]]:
        if not isinstance(location, (str, os.PathLike)) or not str(location).strip():
            raise UsageError(f"the {name} location is blank: give a path or URL")
    inputs = [_absolute(str(path)) for path in inputs]
    destination = _absolute(str(out_path))
    for path in inputs:
        if _protocol(path) == _protocol(destination) and _reads_below(path, _bare(destination)):
            raise UsageError(f"the output folder {redact_url(str(out_path))} is inside the input "
                             f"{redact_url(path)}: a later scan would read its outputs as input; "
                             "choose a destination outside the input")
    return inputs[0] if isinstance(input_path, str) else inputs


def _protocol(location: str):
    protocol = split_protocol(location)[0]
    return None if protocol in LOCAL_PROTOCOLS else protocol


def _bare(location: str) -> str:
    """The location without its protocol and trailing slashes."""
    return split_protocol(location)[1].rstrip("/") or "/"


def _absolute(location: str) -> str:
    """A local path made absolute (``file://`` URLs kept as given); URLs unchanged."""
    protocol, path = split_protocol(location)
    if protocol is None:
        return os.path.abspath(os.path.expanduser(path))
    return location


def _reads_below(location: str, folder: str) -> bool:
    """Whether reading the input ``location`` may read files below ``folder`` (bare path):
    ``folder`` is the input folder or inside it; for a glob, the glob's folder itself, or any
    folder below it when the glob is recursive (``**``)."""
    if not glob.has_magic(location):
        return _is_within(folder, _bare(location))
    head = location[:min(location.index(c) for c in "*?[" if c in location)]
    glob_folder = _bare(head if head.endswith("/") else posixpath.dirname(head))
    return folder == glob_folder or ("**" in location and _is_within(folder, glob_folder))


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
