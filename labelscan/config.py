"""labelscan's configuration defaults, kept in Dask's configuration system.

The defaults live in ``labelscan/labelscan.yaml`` and are registered under the ``labelscan``
namespace of :mod:`dask.config` when labelscan is imported, so they can be overridden like any
Dask setting: environment variables (``DASK_LABELSCAN__RETRIES=5``), a YAML file in
``~/.config/dask/`` or ``$DASK_CONFIG``, or ``dask.config.set({"labelscan.retries": 5})``.
An explicit argument always wins over the configuration.

=====================================  =======  ==============================================
key                                    default  meaning
=====================================  =======  ==============================================
``labelscan.retries``                  2        retries of each task (worker loss)
``labelscan.rows-per-partition``       null     rows per partition (null: ≤ 256 MiB of predictions each)
``labelscan.cache``                    auto     keep decoded partitions in worker memory
``labelscan.issues-per-part``          4000000  target rows per ranked issues part
``labelscan.timeout``                  null     wall-clock limit of ``labelscan run`` jobs
``labelscan.host-threads``             null     output encodings a worker runs at once
``labelscan.batch-interval``           auto     Dask's message batching (:mod:`labelscan.batching`)
``labelscan.gpu-page-decoding``        true     GPU workers decode prediction pages on the device
``labelscan.report.top-issues``        50       ``report.html``: issues in the top-issues table
``labelscan.report.max-classes``       40       ``report.html``: classes shown in the plots
``labelscan.report.histogram-bins``    20       ``report.html``: bins of the label-quality histograms
``labelscan.report.top-pairs``         20       ``report.html``: overlapping class pairs shown
=====================================  =======  ==============================================
"""

from __future__ import annotations

import os

import dask.config
import yaml

DEFAULTS_PATH = os.path.join(os.path.dirname(__file__), "labelscan.yaml")

with open(DEFAULTS_PATH) as _handle:
    DEFAULTS = yaml.safe_load(_handle)

dask.config.update_defaults(DEFAULTS)

_UNSET = object()


def get(key: str, value=_UNSET):
    """``value`` unless it is None (or not given), else ``labelscan.<key>`` from dask.config.

    Parameters
    ----------
    key : str
        Key under the ``labelscan`` namespace, e.g. ``"retries"`` or ``"report.max-classes"``
        (``-`` and ``_`` are interchangeable).
    value : optional
        An explicit setting; returned as is when not None.
    """
    if value is not _UNSET and value is not None:
        return value
    return dask.config.get(f"labelscan.{key}")


def cache_setting(value):
    """Normalise a cache setting: ``"auto"``, ``True`` or ``False`` (strings from YAML/env too)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered == "auto":
            return "auto"
        if lowered in ("true", "on", "yes", "1"):
            return True
        if lowered in ("false", "off", "no", "0"):
            return False
        raise ValueError(f"cache must be auto, true or false; got {value!r}")
    return bool(value) if value is not None else "auto"
